"""Training speed of the emoji model at 64x64 with and without patches, beside the 32x32 model, side by side.

    python benchmarks/patch_speed.py [--steps 60] [--rounds 2] [--batch_size 64]

Each configuration is a real `ddpm_kiit.training.train` run on the built-in emoji at the shipped emoji model's
widths (self-attention where the blocks' maps are 16 and 8 wide): the 32x32 model, the same widths at 64x64
without patches (attention at 32 and 16, where the maps are then), and at 64x64 with `patch_size=2` (the network runs
on 32x32 maps of 12 channels). Speed is `train_summary.json`'s steps per second, which leaves out data preparation
and the sample grid. Rounds alternate the configurations so that machine noise hits all; medians and their ratios
are printed and written to results/patch_speed.json (`_cuda.json` on a GPU).
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from ddpm_kiit.training import parse_args, train

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, reset_accelerate, results_path  # noqa: E402

WIDTHS = {"attention_type": None, "cbam_placement": None, "cbam_resolutions": None, "skip_attention_gates": None}
CONFIGS = {  # name: (resolution, model overrides)
    "32x32": (32, {"attention_resolutions": [16, 8]}),
    "64x64": (64, {"attention_resolutions": [32, 16]}),
    "64x64, patches of 2": (64, {"attention_resolutions": [16, 8], "patch_size": 2}),
}
QUICK_WIDTHS = {"block_out_channels": [8, 16, 16, 16], "time_embedding_dim": 8, "norm_num_groups": 4}


def steps_per_second(resolution: int, overrides: dict, steps: int, batch_size: int, quick: bool) -> float:
    model_config = {**WIDTHS, "num_attention_heads": 4, **overrides, **(QUICK_WIDTHS if quick else {})}
    with tempfile.TemporaryDirectory() as out:
        args = parse_args(
            [
                "--output_dir", out, "--dataset_name", "emoji", "--resolution", str(resolution),
                "--model_variant", "improved", "--model_config", json.dumps(model_config),
                "--max_train_steps", str(steps), "--train_batch_size", str(batch_size),
                "--checkpointing_steps", str(steps + 1), "--logger", "none", "--num_sample_images", "1",
                "--num_inference_steps", "2", "--sample_scheduler", "ddim",
                *(["--max_train_samples", "64"] if quick else []),
            ]
        )  # fmt: skip
        folder = train(args)
        summary = json.loads((folder / "train_summary.json").read_text())
    reset_accelerate()
    return summary["steps"] / summary["train_seconds"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A few steps of tiny models, for the smoke test.")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.batch_size = 2, 1, 4

    speeds = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name, (resolution, overrides) in CONFIGS.items():
            speeds[name].append(steps_per_second(resolution, overrides, args.steps, args.batch_size, args.quick))
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    patched = medians["64x64, patches of 2"]
    results = {
        "machine": machine(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "steps": args.steps,
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "steps_per_second": medians,
        "patched_over_unpatched_64": patched / medians["64x64"],
        "patched_64_over_32": patched / medians["32x32"],
    }
    for name, value in medians.items():
        print(f"{name}: {value:.3f} steps of {args.batch_size} a second")
    print(
        f"64x64 with patches of 2: {results['patched_over_unpatched_64']:.2f}x the speed without, "
        f"{results['patched_64_over_32']:.2f}x the 32x32 model's"
    )
    if not args.quick:
        path = results_path("patch_speed.json", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
