"""Crashes lose nothing: a training process killed with SIGKILL at several points (between checkpoints, halfway
through writing one, right after one appeared, while the finished pipeline is written) resumes with
`--resume_from_checkpoint latest` and ends with exactly the weights of an uninterrupted run."""

import json
import signal
import subprocess
import sys

import pytest
import torch
from conftest import reset_accelerate

from ddpm_kiit import KiitDDPMPipeline, SimpleUNet2DModel
from ddpm_kiit.training import parse_args, train

TINY_MODEL = json.dumps({"block_out_channels": [8, 16], "time_embedding_dim": 8, "norm_num_groups": 4})

# Runs training with one function replaced by a version that kills the process (SIGKILL: no cleanup, no finally)
# on its n-th call; the library itself has no test hooks.
KILLER = """
import importlib, os, signal, sys
module_name, owner, attribute, nth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
target = importlib.import_module(module_name)
if owner != "-":
    target = getattr(target, owner)
original = getattr(target, attribute)
calls = [0]
def killing(*args, **kwargs):
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(target, attribute, killing)
from ddpm_kiit.cli import train_main
sys.exit(train_main(sys.argv[5:]))
"""

KILL_POINTS = {
    "between checkpoints (step 5 of 6)": ("diffusers.training_utils", "EMAModel", "step", 5),
    "halfway through writing checkpoint-4": ("diffusers.training_utils", "EMAModel", "save_pretrained", 2),
    "right after checkpoint-4 appeared": ("ddpm_kiit.training.checkpoints", "-", "list_checkpoints", 3),
    "while writing the finished pipeline": (
        "ddpm_kiit.pipelines.pipeline_kiit_ddpm", "KiitDDPMPipeline", "save_pretrained", 1,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kill-cache")


def _args(output_dir, cache, *extra):
    return [
        "--dataset_name", "mnist", "--cache_dir", str(cache), "--max_train_samples", "64", "--resolution", "16",
        "--model_config", TINY_MODEL, "--train_batch_size", "8", "--ddpm_num_steps", "20", "--num_sample_images", "2",
        "--logger", "none", "--mixed_precision", "no", "--max_train_steps", "6", "--checkpointing_steps", "2",
        "--lr_scheduler", "constant_with_warmup", "--lr_warmup_steps", "2", "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache):
    folder = train(parse_args(_args(tmp_path_factory.mktemp("straight") / "out", cache)))
    reset_accelerate()
    return SimpleUNet2DModel.from_pretrained(folder, subfolder="unet").state_dict()


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_a_killed_run_resumes_to_the_same_weights(point, tmp_path, cache, uninterrupted):
    out = tmp_path / "out"
    module, owner, attribute, nth = KILL_POINTS[point]
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, module, owner, attribute, str(nth), *_args(out, cache)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # Nothing half-written is visible: the pipeline folder is either absent or complete, checkpoints complete.
    assert not (out / "model_index.json").exists()
    for checkpoint in out.glob("checkpoint-*"):
        assert (checkpoint / "training_state.json").is_file() and (checkpoint / "unet_ema").is_dir(), checkpoint

    resumed = train(parse_args(_args(out, cache, "--resume_from_checkpoint", "latest")))
    actual = KiitDDPMPipeline.from_pretrained(resumed).unet.state_dict()
    for key, expected in uninterrupted.items():
        assert torch.equal(expected, actual[key]), f"{point}: {key} differs after resuming"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary folders left behind"


KILL_BEFORE_INDEX = """
import os, signal, sys
original = os.replace
def replace(source, target, *args, **kwargs):
    if os.path.basename(str(source)) == "model_index.json":
        os.kill(os.getpid(), signal.SIGKILL)
    return original(source, target, *args, **kwargs)
os.replace = replace
from ddpm_kiit.cli import train_main
sys.exit(train_main(sys.argv[1:]))
"""


def test_the_pipeline_appears_only_when_complete(tmp_path, cache, uninterrupted):
    # Killed after the weights, scheduler and card moved into place, just before model_index.json: no pipeline yet.
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", KILL_BEFORE_INDEX, *_args(out, cache)], capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "unet").is_dir() and not (out / "model_index.json").exists()
    resumed = train(parse_args(_args(out, cache, "--resume_from_checkpoint", "latest")))
    actual = KiitDDPMPipeline.from_pretrained(resumed).unet.state_dict()
    assert all(torch.equal(expected, actual[key]) for key, expected in uninterrupted.items())
