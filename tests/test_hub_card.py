import re

import torch
from huggingface_hub import ModelCard

from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.hub import render_model_card


def _pipe(schedule="linear"):
    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16))
    return KiitDDPMPipeline(unet=unet.eval(), scheduler=KiitDDPMScheduler(beta_schedule=schedule))


def test_save_pretrained_writes_a_card_that_round_trips(tmp_path):
    pipe = _pipe()
    pipe.save_pretrained(tmp_path, model_card_kwargs={"training_command": "`python train.py --steps 3`"})
    card = ModelCard.load(tmp_path / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "diffusers"
    assert data["pipeline_tag"] == "unconditional-image-generation"
    assert data["license"] == "apache-2.0"
    assert {"ddpm", "ddpm_kiit", "ddpm_kiit-simple"} <= set(data["tags"])
    assert "`python train.py --steps 3`" in card.text
    assert "alpha_bar_T = 0.048" in card.text  # the talk's schedule flaw is stated when it is used
    assert ModelCard(str(card)).data.to_dict() == data


def test_card_names_the_improved_backbone_as_such():
    from ddpm_kiit.models import IMPROVED_CONFIG

    unet = SimpleUNet2DModel(**{**IMPROVED_CONFIG, "block_out_channels": (8, 16), "norm_num_groups": 4})
    card = render_model_card(KiitDDPMPipeline(unet=unet.eval(), scheduler=KiitDDPMScheduler()))
    assert "ddpm_kiit-improved" in card.data.to_dict()["tags"]
    assert card.text.lstrip().startswith("# ddpm-kiit improved SimpleUNet")
    assert "residual blocks" in card.text


def test_card_does_not_claim_the_flaw_for_a_fixed_schedule():
    card = render_model_card(_pipe("squaredcos_cap_v2"))
    assert "alpha_bar_T" not in card.text
    assert "zero terminal SNR" not in card.text
    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16))
    rescaled = KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler(rescale_betas_zero_snr=True))
    card = render_model_card(rescaled)
    assert "linear betas 0.0001 to 0.02 rescaled to zero terminal SNR" in card.text
    assert "alpha_bar_T" not in card.text
    assert "not recorded" in card.text


def test_card_usage_snippet_runs_as_written(tmp_path, monkeypatch):
    pipe = _pipe()
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder, model_card_kwargs={"repo_id_or_path": str(folder)})
    snippet = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(compile(snippet, "model-card-usage", "exec"), {})
    assert (tmp_path / "sample.png").is_file()
