"""`--pretrained_model_name_or_path`: training that starts from a saved pipeline's unet (issue 27's longer runs)."""

import pytest
import torch

from ddpm_kiit import KiitDDPMPipeline, SimpleUNet2DModel
from ddpm_kiit.cli import train_main
from ddpm_kiit.pretrained import shipped_pipeline
from ddpm_kiit.training import parse_args, train

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _model(unet) -> dict:
    return {key: value for key, value in unet.config.items() if not key.startswith("_")}


def _args(tmp_path, out, *extra):
    return [
        "--dataset_name", "mnist",
        "--cache_dir", str(tmp_path / "cache"),
        "--max_train_samples", "16",
        "--train_batch_size", "8",
        "--num_sample_images", "2",
        "--num_inference_steps", "2",
        "--logger", "none",
        "--mixed_precision", "no",
        "--no-use_ema",
        "--output_dir", str(tmp_path / out),
        *extra,
    ]  # fmt: skip


def test_fine_tuning_starts_from_the_shipped_weights_and_keeps_their_model(tmp_path):
    # A learning rate too small to move the weights: what the run saves is what it started from, in float32,
    # and the model is the shipped one (its fp16 variant read by name).
    shipped = KiitDDPMPipeline.from_pretrained(shipped_pipeline("mnist")).unet
    out = train(
        parse_args(
            _args(tmp_path, "ft", "--pretrained_model_name_or_path", "mnist", "--max_train_steps", "1",
                  "--learning_rate", "1e-12")
        )
    )  # fmt: skip
    tuned = SimpleUNet2DModel.from_pretrained(out, subfolder="unet")
    assert tuned.dtype == torch.float32 and _model(tuned) == _model(shipped)
    for key, value in shipped.state_dict().items():
        torch.testing.assert_close(tuned.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    card = (out / "README.md").read_text()
    assert "--pretrained_model_name_or_path mnist" in card
    assert "| pretrained_model_name_or_path | mnist |" in card


def test_fine_tuning_a_folder_moves_its_weights_with_a_real_learning_rate(tmp_path):
    tiny = '{"block_out_channels": [8, 16], "time_embedding_dim": 8, "norm_num_groups": 4}'
    base = train(
        parse_args(_args(tmp_path, "base", "--resolution", "16", "--model_config", tiny, "--ddpm_num_steps", "20",
                         "--max_train_steps", "2"))
    )  # fmt: skip
    tuned = train(
        parse_args(_args(tmp_path, "ft", "--resolution", "16", "--ddpm_num_steps", "20", "--max_train_steps", "2",
                         "--pretrained_model_name_or_path", str(base)))
    )  # fmt: skip
    before = SimpleUNet2DModel.from_pretrained(base, subfolder="unet")
    after = SimpleUNet2DModel.from_pretrained(tuned, subfolder="unet")
    assert _model(after) == _model(before)
    changes = [(after.state_dict()[k] - v).abs().max().item() for k, v in before.state_dict().items()]
    # Two AdamW steps at 2e-3 (the warm-up's first two rates): each weight moves by at most their sum.
    assert 0 < max(changes) <= 2 * 2e-3 * (1 + 1e-3)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model_variant", "simple"], "drop --model_variant and --model_config"),
        (["--model_config", '{"norm_num_groups": 4}'], "drop --model_variant and --model_config"),
        (["--resolution", "16"], "--resolution 16 differs from the pretrained unet's sample_size 32"),
        (["--conditioning", "class"], "has an unconditional unet and --conditioning is class"),
        (["--prediction_type", "epsilon"], r"--prediction_type epsilon \(the pipeline's prediction_type is v_pred"),
        (["--ddpm_num_steps", "1000"], r"--ddpm_num_steps 1000 \(the pipeline's num_train_timesteps is 300\)"),
        (["--scheduler", "gaussian_blur"], "--scheduler gaussian_blur"),
    ],
)
def test_flags_that_would_change_the_pretrained_model_are_refused(tmp_path, extra, message, capsys):
    args = _args(tmp_path, "ft", "--pretrained_model_name_or_path", "mnist", "--max_train_steps", "1", *extra)
    assert train_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("train: error:") and __import__("re").search(message, err), err
    assert not (tmp_path / "ft").exists(), "nothing written"


def test_a_folder_that_is_not_a_pipeline_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert train_main(_args(tmp_path, "ft", "--pretrained_model_name_or_path", str(tmp_path / "empty"))) == 2
    assert "is not a saved pipeline with a unet (no unet/config.json in it)" in capsys.readouterr().err
