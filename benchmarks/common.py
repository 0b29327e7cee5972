"""What the benchmark scripts share: quick-mode settings and a training run that leaves no global state behind."""

import argparse
import os
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from ddpm_kiit.training import parse_args, train

QUICK_MODEL = '{"block_out_channels": [8, 16], "time_embedding_dim": 8, "norm_num_groups": 4, "attention_type": null}'
QUICK_TRAIN_FLAGS = ["--max_train_samples", "64", "--train_batch_size", "8", "--model_config", QUICK_MODEL]


def reset_accelerate():
    """Accelerate keeps its state in process-wide singletons; a second run in the same process needs them reset."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def train_run(output_dir: str, steps: int, flags: list, quick: bool) -> float:
    """Trains the default configuration with `flags` into `output_dir`; returns the wall-clock seconds."""
    command = ["--output_dir", output_dir, "--max_train_steps", str(steps), "--logger", "none", "--num_sample_images"]
    command += ["4", *flags, *(QUICK_TRAIN_FLAGS if quick else [])]
    start = time.perf_counter()
    train(parse_args(command))
    reset_accelerate()
    return time.perf_counter() - start


def quality_parser(description: str) -> argparse.ArgumentParser:
    """Flags of the train-then-evaluate comparisons."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A tiny run, for the smoke test; writes no results.")
    parser.add_argument("--steps", type=int, default=1000, help="Training steps of each configuration.")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--eval-dataset", default="mnist-full", help="Held-out digits to compare against.")
    return parser


def apply_quick(args):
    if args.quick:
        args.steps, args.num_samples, args.eval_dataset = 2, 20, "mnist"
    return args


def call_seconds(function: Callable[[], object], repeats: int, device: Optional[torch.device] = None) -> list:
    """Seconds of each of `repeats` timed calls of `function`, after one untimed warm-up call (allocations, first
    kernels); on a GPU each call is timed to the end of its kernels."""
    function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def best_seconds(function: Callable[[], object], repeats: int, device: Optional[torch.device] = None) -> float:
    """The fastest of `repeats` timed calls: the least disturbed measure on a shared machine."""
    return min(call_seconds(function, repeats, device))


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, or auto (cuda where there is one). Results on a GPU go to a `*_cuda.json` file beside the "
        "CPU's, which they never overwrite.",
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: this machine has no CUDA device; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name}: the benchmarks run on cpu or cuda")
    return device


def synchronize(device: Optional[torch.device]) -> None:
    """Waits for the device's queued kernels, so that a timer read after it measures them (a no-op on the CPU)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{os.cpu_count()}-core CPU, torch {torch.__version__}"


def results_path(path: str, device: torch.device) -> Path:
    """`path` on the CPU; `name_cuda.json` beside it on a GPU, so that the two machines' figures both stay."""
    path = Path(path)
    return path if device.type == "cpu" else path.with_name(f"{path.stem}_{device.type}{path.suffix}")


def write_card_section(folder: Path, title: str, section: str) -> None:
    """Replaces the `## title` section of the model card in the pipeline folder `folder` with `section` (or adds it),
    writing the card atomically."""
    from ddpm_kiit.hub import _replace_section
    from ddpm_kiit.io_utils import write_text_atomically

    card = Path(folder) / "README.md"
    write_text_atomically(card, _replace_section(card.read_text(encoding="utf-8"), title, section))


def card_table(title: str, intro: str, header: list, rows: list) -> str:
    """A model card section: `## title`, the paragraph `intro`, and a Markdown table of `rows` (lists of cells)."""
    lines = [f"## {title}", "", intro, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
