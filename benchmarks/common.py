"""What the benchmark scripts share: quick-mode settings and a training run that leaves no global state behind."""

import argparse
import time
from typing import Callable

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


def call_seconds(function: Callable[[], object], repeats: int) -> list:
    """Seconds of each of `repeats` timed calls of `function`, after one untimed warm-up call (allocations, first
    kernels)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def best_seconds(function: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` timed calls: the least disturbed measure on a shared machine."""
    return min(call_seconds(function, repeats))
