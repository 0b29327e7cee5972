"""Device choice (`--device auto`) and CPU threads."""

import pytest
import torch

from ddpm_kiit import devices
from ddpm_kiit.cli import main


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert devices.resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert devices.resolve_device("auto") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == "cuda"
    assert devices.resolve_device("cpu") == "cpu"


def test_a_device_that_is_not_there_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device; pass --device auto or --device cpu"):
        devices.resolve_device("cuda:1")
    with pytest.raises(ValueError, match="is not a device; choose one of auto, cpu, cuda, mps"):
        devices.resolve_device("tpu")


def test_generate_defaults_to_the_best_device_and_explains_a_missing_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "grid.png"
    assert main(["generate", "--num-images", "1", "--scheduler", "ddim", "--steps", "2", "--out", str(out)]) == 0
    assert out.is_file()
    code = main(["generate", "--device", "cuda", "--out", str(tmp_path / "other.png")])
    assert code == 2
    assert "ddpm-kiit generate: error: --device cuda: this machine has no CUDA device" in capsys.readouterr().err


def test_without_a_launcher_the_thread_count_is_left_alone(monkeypatch):
    for name in ("ACCELERATE_DYNAMO_BACKEND", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's own choice
    before = torch.get_num_threads()
    setting = devices.configure_cpu_threads()
    assert setting.threads == before and setting.reason == "OMP_NUM_THREADS"
    with pytest.raises(ValueError, match="--num_threads must be at least 1, got 0"):
        devices.configure_cpu_threads(0)
