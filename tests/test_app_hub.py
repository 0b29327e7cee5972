"""What the app may load from the Hub, checked against the loopback Hub before any weight is downloaded, and where
its download files live."""

import json

import pytest
import torch
from fake_hub import fake_hub_fixture  # noqa: F401
from huggingface_hub import HfApi

from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.app import AppLimits, DownloadFolder, PipelineCache

pytest.importorskip("gradio", reason="the app needs the [app] extra: pip install -e '.[app]'")

TINY = {"block_out_channels": (8, 16), "time_embedding_dim": 8, "norm_num_groups": 4, "attention_type": None}


def _push_tiny_pipeline(fake_hub, tmp_path, repo_id, extra_files=None):
    torch.manual_seed(0)
    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, **TINY)
    folder = tmp_path / repo_id.replace("/", "--")
    KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler(num_train_timesteps=20)).save_pretrained(folder)
    for name, content in (extra_files or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    api = HfApi(token=fake_hub.token)
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder)
    return folder


def _fetched(fake_hub, since: int):
    """Paths of the repository files the client asked for (HEAD or GET) since request number `since`."""
    return [path for _, path in fake_hub.requests[since:] if "/resolve/" in path]


def test_hub_ids_are_refused_unless_allowed(fake_hub, tmp_path):
    _push_tiny_pipeline(fake_hub, tmp_path, "test-user/tiny")
    closed = PipelineCache([tmp_path])
    start = len(fake_hub.requests)
    with pytest.raises(ValueError, match="only when started with --allow-hub or --allow-repo test-user/tiny"):
        closed.get("test-user/tiny")
    assert fake_hub.requests[start:] == []  # not even a metadata request
    listed = PipelineCache([tmp_path], allowed_repos=["test-user/tiny"])
    assert isinstance(listed.get("test-user/tiny"), KiitDDPMPipeline)
    with pytest.raises(ValueError, match="--allow-hub"):
        listed.get("test-user/other")


def test_only_the_files_the_pipeline_needs_are_downloaded(fake_hub, tmp_path):
    extras = {"big/blob.bin": b"\0" * 4096, "notes/train.log": b"log", "unet/old_weights.bin": b"pickle"}
    local = _push_tiny_pipeline(fake_hub, tmp_path, "test-user/tiny", extras)
    start = len(fake_hub.requests)
    pipe = PipelineCache([tmp_path], allow_hub=True).get("test-user/tiny")
    fetched = _fetched(fake_hub, start)
    assert not any(name in path for path in fetched for name in ("big/", "notes/", ".bin", "README.md"))
    assert any("unet/diffusion_pytorch_model.safetensors" in path for path in fetched)
    # One metadata request decides, before anything is fetched.
    assert fake_hub.requests[start] == ("GET", "/api/models/test-user/tiny?blobs=true")
    expected = KiitDDPMPipeline.from_pretrained(local).unet.state_dict()
    for name, tensor in pipe.unet.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)


def test_a_pipeline_over_the_size_limit_is_refused_before_its_weights_are_fetched(fake_hub, tmp_path):
    _push_tiny_pipeline(fake_hub, tmp_path, "test-user/tiny")
    start = len(fake_hub.requests)
    small = PipelineCache([tmp_path], AppLimits(max_download_mb=0.01), allow_hub=True)
    with pytest.raises(ValueError, match=r"needs 0\.\d MB of files; this app downloads at most 0.01 MB"):
        small.get("test-user/tiny")
    assert not any(".safetensors" in path for path in _fetched(fake_hub, start))


def test_a_repository_that_is_not_our_pipeline_is_refused_before_download(fake_hub, tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (folder / "unet").mkdir()
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 1024)
    api = HfApi(token=fake_hub.token)
    api.create_repo("test-user/sd")
    api.upload_folder(repo_id="test-user/sd", folder_path=folder)
    start = len(fake_hub.requests)
    with pytest.raises(ValueError, match="'test-user/sd' is a 'StableDiffusionPipeline'; this app serves"):
        PipelineCache([tmp_path], allow_hub=True).get("test-user/sd")
    assert not any(".safetensors" in path for path in _fetched(fake_hub, start))


def test_download_folder_keeps_at_most_its_cap_and_is_removed(tmp_path):
    from PIL import Image

    downloads = DownloadFolder(max_files=3, parent=tmp_path)
    paths = [downloads.save(Image.new("RGB", (2, 2)), f"grid-{i}") for i in range(5)]
    assert sorted(p.name for p in downloads.path.iterdir()) == sorted(p.name for p in paths[-3:])
    assert downloads.path.parent == tmp_path
    downloads.cleanup()
    assert not downloads.path.exists()
