import re

import torch
from huggingface_hub import ModelCard
from no_package import check, run_without_package

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


def _snippets(folder):
    return re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S)


def test_card_usage_snippet_runs_as_written(tmp_path, monkeypatch):
    pipe = _pipe()
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder, model_card_kwargs={"repo_id_or_path": str(folder)})
    package_route = _snippets(folder)[0]
    assert "import ddpm_kiit" in package_route and "trust_remote_code" not in package_route
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(compile(package_route, "model-card-usage", "exec"), {})
    assert (tmp_path / "sample.png").is_file()


def test_card_remote_code_snippet_runs_as_written_where_ddpm_kiit_is_not_installed(tmp_path):
    folder = tmp_path / "pipe"
    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16)).eval()
    pipe = KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler(num_train_timesteps=20))  # the snippet runs all T
    pipe.save_pretrained(folder, model_card_kwargs={"repo_id_or_path": str(folder)})
    remote_route = _snippets(folder)[1]
    assert "trust_remote_code=True" in remote_route and "ddpm_kiit" not in remote_route
    work = tmp_path / "work"
    work.mkdir()
    check(run_without_package(remote_route, work))
    assert (work / "sample.png").is_file()


def test_card_says_what_trust_remote_code_runs_and_how_to_pin_it(tmp_path):
    _pipe().save_pretrained(tmp_path)
    text = (tmp_path / "README.md").read_text()
    for path in ("pipeline_kiit_ddpm.py", "unet/unet_kiit_simple.py", "scheduler/scheduling_kiit_ddpm.py"):
        assert f"`{path}`" in text and (tmp_path / path).is_file()
    assert 'revision="<commit sha>"' in text
    assert "Pass `trust_remote_code=True`" in text and "`import ddpm_kiit` first" in text


def test_card_of_a_pipeline_with_a_stock_scheduler_lists_only_the_code_it_carries():
    from diffusers import DDIMScheduler

    pipe = _pipe()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    text = render_model_card(pipe).text
    assert "`unet/unet_kiit_simple.py`" in text and "scheduler/scheduling" not in text


def test_updating_the_usage_section_keeps_the_rest_of_the_card(tmp_path):
    from ddpm_kiit.hub import update_card_usage

    pipe = _pipe()
    pipe.save_pretrained(tmp_path, model_card_kwargs={"training_command": "`python train.py --steps 3`"})
    path = tmp_path / "README.md"
    old = re.sub(
        r"## Usage\n.*?(?=^## )",
        '## Usage\n\nDiffusionPipeline.from_pretrained("me/old")\n\n',
        path.read_text(),
        flags=re.M | re.S,
    )
    path.write_text(old)
    update_card_usage(tmp_path, pipe)
    text = path.read_text()
    assert 'from_pretrained("me/old", trust_remote_code=True)' in text  # the card's own repo id is kept
    assert "`python train.py --steps 3`" in text and "## Limitations" in text
    assert ModelCard.load(path).data.to_dict()["library_name"] == "diffusers"


def test_card_states_the_flaw_for_a_stock_scheduler_on_the_talks_schedule():
    from diffusers import DDIMScheduler

    pipe = _pipe()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    assert "alpha_bar_T = 0.048" in render_model_card(pipe).text


def test_card_describes_each_blur_process_and_an_old_blur_config():
    from diffusers.configuration_utils import FrozenDict

    from ddpm_kiit import BlurringDiffusionScheduler, ColdDiffusionScheduler
    from ddpm_kiit.hub import _describe_scheduler

    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16)).eval()
    cold = render_model_card(KiitDDPMPipeline(unet=unet, scheduler=ColdDiffusionScheduler(sampler="naive"))).text
    assert "T = 50, Gaussian blur from 0 to 32 px (linear), cold diffusion (Bansal et al. 2022), naive sampler" in cold
    assert "predicting sample" in cold and "alpha_bar_T" not in cold
    blurring = render_model_card(KiitDDPMPipeline(unet=unet, scheduler=BlurringDiffusionScheduler())).text
    assert "Gaussian blur from 0 to 8 px (linear), blurring diffusion (Hoogeboom & Salimans 2022)" in blurring
    assert "predicting epsilon" in blurring and "alpha_bar_T" not in blurring
    # A config as the old GaussianBlurScheduler wrote it names the process.
    old = FrozenDict(dict(BlurringDiffusionScheduler().config, process="blurring_diffusion", sampler="improved"))
    assert "blurring diffusion (Hoogeboom" in _describe_scheduler(old)
