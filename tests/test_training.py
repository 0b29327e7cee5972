import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.cli import train_main
from ddpm_kiit.training import NonFiniteLossError, parse_args, train
from ddpm_kiit.training import loop as training_loop

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = json.dumps({"block_out_channels": [8, 16], "time_embedding_dim": 8, "norm_num_groups": 4})


def tiny_args(tmp_path, *extra):
    return [
        "--dataset_name", "mnist",
        "--cache_dir", str(tmp_path / "cache"),
        "--max_train_samples", "64",
        "--resolution", "16",
        "--model_config", TINY_MODEL,
        "--train_batch_size", "8",
        "--ddpm_num_steps", "20",
        "--num_sample_images", "4",
        "--logger", "none",
        "--mixed_precision", "no",
        "--output_dir", str(tmp_path / "out"),
        *extra,
    ]  # fmt: skip


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _launch(processes: int = 2) -> list:
    """`accelerate launch` of `processes` local processes, on a free port (a port left in TIME_WAIT by the previous
    launch, or taken by anything else, must not make the run depend on what ran before)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--main_process_port", str(port),
    ]  # fmt: skip


def _failed(result) -> str:
    """What a failed launch printed, every process's traceback included (not only the last process's)."""
    return "\n".join(line for line in result.stderr.splitlines() if "it/s]" not in line)[-12000:]


def _unet_state(folder):
    return SimpleUNet2DModel.from_pretrained(folder, subfolder="unet").state_dict()


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    unet = SimpleUNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        norm_type="group",
        norm_num_groups=8,
    )
    scheduler = KiitDDPMScheduler()
    clean = torch.rand(16, 1, 16, 16) * 2 - 1
    noise, timesteps = torch.randn_like(clean), torch.randint(0, 300, (16,))
    noisy = scheduler.add_noise(clean, noise, timesteps)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(unet(noisy, timesteps).sample, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_training_writes_a_loadable_pipeline_with_card_and_grid(tmp_path):
    out = train(parse_args(tiny_args(tmp_path, "--max_train_steps", "4", "--checkpointing_steps", "2")))
    pipe = KiitDDPMPipeline.from_pretrained(out)
    assert pipe.unet.config.in_channels == 1 and pipe.unet.config.sample_size == 16
    assert pipe.scheduler.config.num_train_timesteps == 20
    card = (out / "README.md").read_text()
    assert "accelerate launch examples/train.py" in card and "--max_train_steps 4" in card
    assert (out / "samples.png").is_file() and (out / "samples" / "step-000004.png").is_file()
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    assert not list(out.glob(".*")), "no temporary folders left behind"


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    common = ["--lr_scheduler", "constant_with_warmup", "--lr_warmup_steps", "2", "--checkpointing_steps", "3"]
    straight = train(parse_args(tiny_args(tmp_path / "a", "--max_train_steps", "6", *common)))
    first = tiny_args(tmp_path / "b", "--max_train_steps", "3", *common)
    train(parse_args(first))
    resumed = train(
        parse_args(tiny_args(tmp_path / "b", "--max_train_steps", "6", "--resume_from_checkpoint", "latest", *common))
    )
    expected, actual = _unet_state(straight), _unet_state(resumed)
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    real_target = training_loop.training_target
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        target = real_target(*args)
        return target * float("nan") if calls["n"] >= 4 else target

    monkeypatch.setattr(training_loop, "training_target", poisoned)
    with pytest.raises(
        NonFiniteLossError,
        match=r"loss became \[nan\] at step 4 \(non-finite at timesteps \[\d+(, \d+)*\] on process 0\).*"
        r"last good checkpoint is .*checkpoint-2",
    ):
        train(parse_args(tiny_args(tmp_path, "--max_train_steps", "10", "--checkpointing_steps", "2")))
    out = tmp_path / "out"
    assert (out / "checkpoint-2" / "training_state.json").is_file()
    assert not (out / "model_index.json").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dataset_name", "no-such-dataset-xyz"], "Could not load dataset 'no-such-dataset-xyz'"),
        (["--image_column", "picture"], "Column 'picture' is not in the dataset"),
        (["--resume_from_checkpoint", "latest"], "no checkpoint-\\* folder"),
        (["--num_epochs", "1", "--max_train_steps", "5"], "not both"),
        (["--mixed_precision", "fp16"], "fp16 needs a GPU"),
        (["--model_config", '{"widths": [8]}'], r"unknown keys \['widths'\]"),
        (["--learning_rate", "0"], "--learning_rate must be positive"),
        (["--push_to_hub"], "--push_to_hub needs --hub_model_id"),
        (["--max_train_samples", "4"], r"The dataset has 4 images, fewer than one batch \(8 per process x 1"),
    ],
)
def test_bad_training_flags_fail_before_work(tmp_path, extra, message, capsys):
    assert train_main(tiny_args(tmp_path, "--max_train_steps", "2", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("train: error:")
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "out" / "model_index.json").exists()


def test_resolution_the_model_cannot_take(tmp_path, capsys):
    args = tiny_args(
        tmp_path,
        "--max_train_steps",
        "2",
        "--resolution",
        "30",
        "--model_config",
        '{"block_out_channels": [8, 16, 32]}',
    )
    assert train_main(args) == 2
    assert (
        "--resolution 30 is not divisible by 4, which this model's 2 down blocks need; use one of [28, 32]"
        in capsys.readouterr().err
    )


def test_resolution_the_patched_model_cannot_take(tmp_path, capsys):
    model_config = '{"block_out_channels": [8, 16, 32], "patch_size": 2}'
    args = tiny_args(tmp_path, "--max_train_steps", "2", "--resolution", "28", "--model_config", model_config)
    assert train_main(args) == 2
    assert (
        "--resolution 28 is not divisible by 8, which this model's 2 down blocks and patches of 2 need; use one of "
        "[24, 32]" in capsys.readouterr().err
    )


def test_folder_without_images_fails_before_work(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a for a in tiny_args(tmp_path, "--max_train_steps", "2") if a not in ("--dataset_name", "mnist")]
    assert train_main(args + ["--train_data_dir", str(empty)]) == 2
    assert "holds no images" in capsys.readouterr().err


def test_non_writable_output_dir(tmp_path, capsys):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("a file, not a folder")
        output = blocker / "out"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        output = locked / "out"
    args = tiny_args(tmp_path, "--max_train_steps", "2")
    args[args.index("--output_dir") + 1] = str(output)
    assert train_main(args) == 2
    assert f"--output_dir '{output}' is not writable" in capsys.readouterr().err


def test_finished_pipeline_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model_index.json").write_text("{}")
    assert train_main(tiny_args(tmp_path, "--max_train_steps", "2")) == 2
    assert "already holds a trained pipeline" in capsys.readouterr().err
    assert (out / "model_index.json").read_text() == "{}"


def test_two_processes_train_data_parallel_with_identical_weights(tmp_path):
    command = [
        *_launch(2), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(ROOT / "examples" / "train.py"),
        *tiny_args(tmp_path, "--max_train_steps", "3", "--checkpointing_steps", "3"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, _failed(result)
    state = json.loads((tmp_path / "out" / "checkpoint-3" / "training_state.json").read_text())
    assert state["num_processes"] == 2
    first, second = state["weights_checksums"]
    assert first == second
    KiitDDPMPipeline.from_pretrained(tmp_path / "out")


def test_eval_steps_log_kid_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ddpm_kiit.evaluation.features import classifier_weights_path

    if not classifier_weights_path("mnist").is_file():
        pytest.skip("shipped MNIST classifier missing")
    args = tiny_args(tmp_path, "--max_train_steps", "4", "--eval_steps", "2", "--eval_num_samples", "8")
    args[args.index("--resolution") + 1] = "32"
    args[args.index("--logger") + 1] = "tensorboard"
    args += ["--num_inference_steps", "3", "--sample_scheduler", "ddim", "--logging_steps", "1"]
    train(parse_args(args))
    events = [p for p in (tmp_path / "out" / "logs").rglob("events.out.tfevents.*")]
    assert events
    accumulator = EventAccumulator(str(events[0].parent)).Reload()
    kid_steps = [event.step for event in accumulator.Scalars("eval/kid_mean")]
    assert kid_steps == [2, 4]
    assert len(accumulator.Scalars("loss")) == 4


@pytest.mark.parametrize("scheduler", ["gaussian_blur", "blurring_diffusion"])
def test_blur_processes_train_with_the_same_loop(tmp_path, scheduler):
    from ddpm_kiit import GaussianBlurScheduler

    extra = ["--scheduler", scheduler, "--scheduler_config", '{"num_train_timesteps": 8}', "--max_train_steps", "3"]
    out = train(parse_args(tiny_args(tmp_path, *extra)))
    pipe = KiitDDPMPipeline.from_pretrained(out)
    assert isinstance(pipe.scheduler, GaussianBlurScheduler)
    assert pipe.scheduler.config.num_train_timesteps == 8
    if scheduler == "gaussian_blur":
        assert pipe.scheduler.config.gmm_weights is not None  # the start distribution was fitted and saved
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, generator=torch.manual_seed(0), output_type="np").images
    assert images.shape == (2, 16, 16, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training needs a GPU (none on this machine)")
def test_fp16_training_scales_the_loss_and_samples_are_not_black(tmp_path):
    # Accelerate wraps fp16 runs in a GradScaler; Diffusers' example is known to produce black images when the
    # gradients underflow or the weights overflow. Our grid must hold real pixel variation.
    import numpy as np
    from PIL import Image

    flags = [a for a in tiny_args(tmp_path) if a != "no"]  # drops "--mixed_precision no"'s value
    flags.remove("--mixed_precision")
    out = train(parse_args([*flags, "--mixed_precision", "fp16", "--max_train_steps", "20"]))
    grid = np.asarray(Image.open(out / "samples.png").convert("L"), dtype=float)
    assert np.isfinite(grid).all() and grid.std() > 5


def _clean_launch_env(tmp_path):
    """A shell as a new user has it: no thread setting of their own and no Accelerate config file."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # Accelerate's default config lives under it: there is none
    return env


def _plain_python_threads(env) -> int:
    probe = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
    return int(subprocess.run(probe, capture_output=True, text=True, env=env, check=True).stdout)


def test_accelerate_launch_without_config_trains_on_every_core(tmp_path):
    env = _clean_launch_env(tmp_path)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", str(ROOT / "examples" / "train.py"),
        *tiny_args(tmp_path, "--max_train_steps", "2"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    plain = _plain_python_threads(env)
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["threads_per_process"] == [plain]
    assert f"Process 0 of 1 on cpu: {plain} CPU thread(s) per process" in result.stderr


def test_two_local_processes_split_the_cores_and_a_user_setting_wins(tmp_path):
    env = _clean_launch_env(tmp_path)
    plain = _plain_python_threads(env)
    launch = _launch(2)
    script = [str(ROOT / "examples" / "train.py"), *tiny_args(tmp_path, "--max_train_steps", "1")]
    result = subprocess.run([*launch, *script], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, _failed(result)
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["threads_per_process"] == [max(1, plain // 2)] * 2
    for rank in (0, 1):
        assert f"Process {rank} of 2 on cpu: {max(1, plain // 2)} CPU thread(s)" in result.stderr

    # The user's own choice, here through the launcher's flag, is kept as it is.
    chosen = [*launch[:3], "--num_cpu_threads_per_process", "1", *script, "--overwrite_output_dir"]
    result = subprocess.run(chosen, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, _failed(result)
    assert json.loads((tmp_path / "out" / "train_summary.json").read_text())["threads_per_process"] == [1]


def test_num_threads_flag_overrides_the_launcher(tmp_path):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", str(ROOT / "examples" / "train.py"),
        *tiny_args(tmp_path, "--max_train_steps", "1", "--num_threads", "1"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_clean_launch_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "train_summary.json").read_text())["threads_per_process"] == [1]
    assert "1 CPU thread(s) per process (--num_threads)" in result.stderr
