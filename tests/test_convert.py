import pickle

import pytest
import torch
from talk_reference import TalkSimpleUnet

from ddpm_kiit import KiitDDPMPipeline, SimpleUNet2DModel
from ddpm_kiit.cli import main
from ddpm_kiit.convert import convert_key, convert_seed_state_dict, load_seed_state_dict

NARROW = (16, 32, 64, 128, 256)


def _trained_like(model):
    """Random weights and BatchNorm statistics, so that a mapping mistake cannot hide behind default values."""
    torch.manual_seed(1)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.05 + (1.0 if tensor.ndim == 1 else 0.0))
    return model.eval()


@pytest.mark.parametrize(
    "variant, kwargs",
    [("simple", {}), ("self_attention", {"self_attention": True}), ("cbam", {"cbam": True})],
)
def test_full_size_seed_checkpoints_use_every_tensor(variant, kwargs):
    original = TalkSimpleUnet(**kwargs)
    ours = SimpleUNet2DModel.from_seed_variant(variant)
    converted = {convert_key(k) for k in original.state_dict()}
    assert converted == set(ours.state_dict()), "every original tensor maps onto exactly one of ours"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    "variant, kwargs",
    [("simple", {}), ("self_attention", {"self_attention": True}), ("cbam", {"cbam": True})],
)
def test_converted_model_gives_the_originals_output(variant, kwargs, channels):
    original = _trained_like(TalkSimpleUnet(image_channels=channels, down_channels=NARROW, **kwargs))
    ours = convert_seed_state_dict(original.state_dict())
    assert (ours.config.attention_type or "simple") == variant
    assert ours.config.in_channels == channels and tuple(ours.config.block_out_channels) == NARROW
    x = torch.randn(3, channels, 32, 32)
    t = torch.tensor([0, 150, 299])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t).sample, original(x, t), rtol=1e-4, atol=1e-4)


def test_dataparallel_prefix_is_accepted():
    original = TalkSimpleUnet(image_channels=1, down_channels=NARROW)
    state_dict = {f"module.{k}": v for k, v in original.state_dict().items()}
    assert convert_seed_state_dict(state_dict).config.in_channels == 1


def test_leftover_or_missing_tensors_are_named():
    state_dict = TalkSimpleUnet(image_channels=1, down_channels=NARROW).state_dict()
    state_dict["extra_head.weight"] = torch.zeros(2)
    del state_dict["up_blocks.1.conv2.bias"]
    with pytest.raises(
        ValueError, match=r"unused tensors \['extra_head.weight'\].*missing tensors \['up_blocks.1.conv2.bias'\]"
    ):
        convert_seed_state_dict(state_dict)


def test_not_a_talk_checkpoint_is_refused():
    with pytest.raises(ValueError, match="does not look like a checkpoint of the talk's SimpleUnet"):
        convert_seed_state_dict({"weight": torch.zeros(3)})


class _Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickle_that_runs_code_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "model_weights.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv0.weight": _Exploit()}, f)
    with pytest.raises(ValueError, match="Refusing to load.*weights_only=True"):
        load_seed_state_dict(path)
    assert not (tmp_path / "PWNED").exists()


def test_cli_converts_a_checkpoint_into_a_loadable_pipeline(tmp_path, capsys):
    original = _trained_like(TalkSimpleUnet(image_channels=1, down_channels=NARROW, self_attention=True))
    checkpoint = tmp_path / "model_weights.pth"
    torch.save(original.state_dict(), checkpoint)
    out = tmp_path / "converted"
    assert main(["convert-seed", str(checkpoint), str(out)]) == 0
    # Written through a private staging folder, the output still gets the permissions of any folder made here.
    (tmp_path / "made").mkdir()
    assert out.stat().st_mode & 0o777 == (tmp_path / "made").stat().st_mode & 0o777
    assert "self_attention" in capsys.readouterr().out
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert "library_name: diffusers" in (out / "README.md").read_text()
    pipe = KiitDDPMPipeline.from_pretrained(out)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pipe.unet(x, 5).sample, original(x, torch.tensor([5, 5])), rtol=1e-4, atol=1e-4)


def test_cli_does_not_overwrite_an_existing_folder(tmp_path, capsys):
    checkpoint = tmp_path / "model_weights.pth"
    torch.save(TalkSimpleUnet(image_channels=1, down_channels=NARROW).state_dict(), checkpoint)
    out = tmp_path / "converted"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["convert-seed", str(checkpoint), str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted", "model_weights.pth"], "no staging left over"
