"""Inference speed-ups of `KiitDDPMPipeline.enable_fast_inference`, each against fp32 eager, side by side in one run.

    python benchmarks/inference_speed.py [--quick] [--steps 300] [--rounds 2] [--fid-samples 1000] [--device cpu]

A full sampling run (all 300 steps of the pipeline's own sampler, batch 16, 32x32) of the shipped MNIST pipeline for
each configuration; configurations alternate within each round and the best round counts. A short warm-up run of
each configuration comes first, outside the timing: it pays `torch.compile`'s compile time (reported). Printed:
seconds, speed-up over fp32 eager, and the largest pixel difference from fp32 eager's images (same seed).

"Exact" configurations compute in float32 throughout; they differ from fp32 eager only by floating-point rounding
(another convolution algorithm for channels_last, fused kernels for `torch.compile`: the printed max |diff| is about
1e-5 of a pixel range of 1). bf16 autocast keeps 8 bits of mantissa and is not exact: with `--fid-samples`, the
fastest inexact configuration and fp32 eager are scored with `evaluate_pipeline` (SDE-DPM-Solver++, 20 steps, the
README's fast sampler; classifier features against mnist-full's test digits) beside the real-vs-real floor.

Targets (issue 10): the best exact configuration at least 1.1x; the best configuration whose FID stays within the
real-vs-real floor's spread at least 3x.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.pretrained import shipped_pipeline

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_argument, machine, resolve_device, results_path, synchronize  # noqa: E402

CONFIGS = {
    "fp32 eager": None,
    "inference_mode": {"channels_last": False, "autocast_dtype": None, "inference_mode": True},
    "channels_last": {"channels_last": True, "autocast_dtype": None, "inference_mode": False},
    "channels_last + inference_mode": {"channels_last": True, "autocast_dtype": None, "inference_mode": True},
    "compile + channels_last + inference_mode": {"channels_last": True, "autocast_dtype": None, "compile": True},
    "bf16 autocast": {"channels_last": False, "autocast_dtype": torch.bfloat16, "inference_mode": False},
    "bf16 + channels_last + inference_mode": {"channels_last": True, "autocast_dtype": torch.bfloat16},
    "compile + bf16 + channels_last + inference_mode": {
        "channels_last": True,
        "autocast_dtype": torch.bfloat16,
        "compile": True,
    },
}
WARM_UP_STEPS = 3
FID_SAMPLER, FID_STEPS = "dpm-solver++-sde", 20


def build(config, quick: bool, device: torch.device) -> KiitDDPMPipeline:
    if quick:
        torch.manual_seed(0)  # the same weights for every configuration
        unet = SimpleUNet2DModel(block_out_channels=(8, 16), time_embedding_dim=8, in_channels=1, out_channels=1)
        pipe = KiitDDPMPipeline(unet=unet.eval(), scheduler=KiitDDPMScheduler())
    else:
        pipe = KiitDDPMPipeline.from_pretrained(shipped_pipeline("mnist"))
    pipe.to(device).set_progress_bar_config(disable=True)
    return pipe.enable_fast_inference(**config) if config is not None else pipe


def exact(config) -> bool:
    """Float32 throughout (no autocast): the same computation as fp32 eager up to rounding."""
    return config is None or config.get("autocast_dtype") is None


def run(pipe, batch: int, steps: int):
    start = time.perf_counter()
    images = pipe(batch_size=batch, num_inference_steps=steps, generator=torch.manual_seed(0), output_type="pt").images
    synchronize(images.device)
    return time.perf_counter() - start, images


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A tiny model, 3 steps, no compile, no FID.")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300, help="Steps of each run (300: all; fewer respace).")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fid-samples", type=int, default=1000, help="0 skips the FID check.")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "inference_speed.json"))
    add_device_argument(parser)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    configs = {k: v for k, v in CONFIGS.items() if not (args.quick and v and v.get("compile"))}
    steps, rounds = (3, 1) if args.quick else (args.steps, args.rounds)
    pipes = {name: build(config, args.quick, device) for name, config in configs.items()}

    warm_up = {name: run(pipe, args.batch, WARM_UP_STEPS)[0] for name, pipe in pipes.items()}  # compiles here
    times = {name: [] for name in pipes}
    differences = {}
    reference = None
    for _ in range(rounds):
        for name, pipe in pipes.items():  # fp32 eager first: its first round's images are the reference
            seconds, images = run(pipe, args.batch, steps)
            times[name].append(seconds)
            reference = images if reference is None else reference
            difference = float((images.float() - reference.float()).abs().max())
            differences[name] = max(differences.get(name, 0.0), difference)
    best = {name: min(values) for name, values in times.items()}
    base = best["fp32 eager"]
    rows = {
        name: {
            "seconds": round(best[name], 3),
            "speedup": round(base / best[name], 2),
            "max_pixel_difference": round(differences[name], 5),
            "exact": exact(configs[name]),
            # the warm-up's time beyond its steps' share of a timed run: compiling, for the compiled ones
            "warm_up_extra_seconds": round(warm_up[name] - best[name] * WARM_UP_STEPS / steps, 1),
        }
        for name in pipes
    }
    print(f"{'configuration':<50}{'seconds':>9}{'speed-up':>10}{'max |diff|':>12}{'warm-up +s':>12}")
    for name, row in rows.items():
        print(
            f"{name:<50}{row['seconds']:>9.3f}{row['speedup']:>9.2f}x{row['max_pixel_difference']:>12.5f}"
            f"{row['warm_up_extra_seconds']:>12.1f}"
        )
    exact_best = max((r["speedup"], n) for n, r in rows.items() if r["exact"] and n != "fp32 eager")
    fastest = max((r["speedup"], n) for n, r in rows.items() if not r["exact"])
    print(f"best exact: {exact_best[1]} {exact_best[0]:.2f}x (target 1.1x)")
    print(f"fastest inexact: {fastest[1]} {fastest[0]:.2f}x (target 3x with FID within the floor's spread)")

    result = {
        "machine": machine(device),
        "batch": args.batch,
        "steps": steps,
        "rounds": rounds,
        "fid_sampler": f"{FID_SAMPLER}, {FID_STEPS} steps",
        "rows": rows,
    }
    if args.fid_samples and not args.quick:
        from ddpm_kiit.evaluation import evaluate_pipeline
        from ddpm_kiit.sampling import swap_scheduler

        result["fid"] = {}
        for name in ("fp32 eager", fastest[1]):
            pipe = swap_scheduler(pipes[name], FID_SAMPLER)
            report = evaluate_pipeline(pipe, "mnist-full", args.fid_samples, num_inference_steps=FID_STEPS)
            result["fid"][name] = {"scores": report["scores"], "floor": report["floor"]}
            print(
                f"FID {name}: {report['scores']['fid']:.2f} (floor {report['floor']['fid']:.2f}, n={args.fid_samples})"
            )
        fids = [result["fid"][name]["scores"]["fid"] for name in result["fid"]]
        floor = result["fid"]["fp32 eager"]["floor"]["fid"]
        within = abs(fids[1] - fids[0]) <= floor
        result["fid_within_floor"] = within
        print(
            f"{fastest[1]}: FID differs from fp32 eager's by {abs(fids[1] - fids[0]):.2f}, "
            f"{'within' if within else 'outside'} the real-vs-real floor ({floor:.2f}) at this n"
        )
    if not args.quick:
        results_path(args.out, device).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
