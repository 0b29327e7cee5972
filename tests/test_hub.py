"""Sharing on the Hub, against the loopback fake Hub of `fake_hub.py` with the real `huggingface_hub` client."""

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from fake_hub import fake_hub_fixture, set_hub_offline  # noqa: F401
from huggingface_hub import ModelCard
from test_training import tiny_args

from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.cli import main, train_main

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _images(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=2, num_inference_steps=5, generator=torch.manual_seed(0), output_type="np").images


def test_train_push_then_load_by_id_with_both_documented_calls(fake_hub, tmp_path, monkeypatch):
    repo_id = "test-user/ddpm-kiit-tiny"
    args = tiny_args(tmp_path, "--max_train_steps", "2", "--push_to_hub", "--hub_model_id", repo_id)
    assert train_main(args + ["--hub_token", fake_hub.token]) == 0
    stored = fake_hub.repos[repo_id].files
    assert {"model_index.json", "unet/diffusion_pytorch_model.safetensors", "README.md", "samples.png"} <= set(stored)
    assert not any(name.startswith(("checkpoint-", "logs/", "samples/")) for name in stored)
    assert not any(name.endswith((".bin", ".pth", ".pkl")) for name in stored)

    local = _images(KiitDDPMPipeline.from_pretrained(tmp_path / "out"))
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    np.testing.assert_array_equal(local, _images(KiitDDPMPipeline.from_pretrained(repo_id)))
    np.testing.assert_array_equal(local, _images(DiffusionPipeline.from_pretrained(repo_id)))

    card = ModelCard.load(repo_id)
    assert card.data.library_name == "diffusers" and "ddpm_kiit" in card.data.tags
    assert "accelerate launch examples/train.py" in card.text and repo_id in card.text

    set_hub_offline(monkeypatch)
    np.testing.assert_array_equal(local, _images(KiitDDPMPipeline.from_pretrained(repo_id)))


def test_pipeline_push_to_hub_lands_our_card_on_a_first_push(fake_hub):
    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16)).eval()
    pipe = KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler())
    pipe.push_to_hub("test-user/first-push", token=fake_hub.token, private=True)
    repo = fake_hub.repos["test-user/first-push"]
    assert repo.private
    card = repo.files["README.md"].decode()
    assert "ddpm_kiit-simple" in card and "alpha_bar_T = 0.048" in card
    assert "This is the model card of a 🧨 diffusers model" not in card  # Diffusers' bare template


@pytest.mark.parametrize(
    "repo_id, token, message",
    [
        ("forbidden/nope", "hf_test_token", "the Hub refused to create or write 'forbidden/nope'"),
        ("test-user/needs-token", None, "the Hub needs a valid token"),
    ],
)
def test_failed_push_is_clear_and_leaves_local_files(fake_hub, tmp_path, capsys, repo_id, token, message):
    args = tiny_args(tmp_path, "--max_train_steps", "2", "--push_to_hub", "--hub_model_id", repo_id)
    if token:
        args += ["--hub_token", token]
    assert train_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err and "The local files are unchanged" in err
    out = tmp_path / "out"
    assert (out / "model_index.json").is_file() and (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    KiitDDPMPipeline.from_pretrained(out)
    # and the documented retry works once the problem is fixed
    if not token:
        assert main(["push", str(out), repo_id, "--token", fake_hub.token]) == 0
        assert "model_index.json" in fake_hub.repos[repo_id].files
