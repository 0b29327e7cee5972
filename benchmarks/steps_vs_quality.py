"""Fewer sampling steps at the same quality: the shipped MNIST pipeline under several samplers and step counts.

    python benchmarks/steps_vs_quality.py [--quick] [--full] [--num-samples 500] [--seed 0] [--configs kiit ddim:20]

Scores (FID, KID, precision, recall: `evaluate_pipeline`, classifier features, against mnist-full's test digits, the
real-vs-real floor beside them) and seconds per image for our 300-step sampler (`KiitDDPMScheduler`, every training
timestep) against 20-step samplers: ours respaced, and DDIM, DPM-Solver++, SDE-DPM-Solver++ and UniPC (stock
Diffusers schedulers built from the pipeline's scheduler config), each with the timestep spacing that scored best
for it in the full sweep (4.2 minutes here). `--full` runs the full sweep (13 minutes here): every sampler at 50, 20
and 10 steps, the stock ones with leading and with trailing spacing. Every configuration samples the same seeds with
the same fast-inference settings (bf16 autocast, channels_last, inference_mode where the device supports bf16).

Target (issue 10): a 20-step configuration within 10% of the 300-step FID, that is 15x fewer U-Net calls.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.evaluation import evaluate_pipeline
from ddpm_kiit.evaluation.evaluate import EvaluationCache
from ddpm_kiit.pretrained import shipped_pipeline
from ddpm_kiit.sampling import swap_scheduler

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_argument, machine, resolve_device, results_path  # noqa: E402

# (sampler, steps, timestep spacing): the stock solvers with the spacing the pipeline's config has ("leading", which
# never starts at the last training timestep) and with "trailing", which does: Lin et al. 2024 recommend it for models
# trained to zero terminal SNR, as ours are, since only the last timestep is pure noise.
# Our own sampler respaced (ancestral DDPM steps between the kept timesteps) is the stochastic counterpart of DDIM.
# SDE-DPM-Solver++ (Lu et al. 2022, the stochastic second-order solver) and UniPC (Zhao et al. 2023) join them.
FULL_SWEEP = [
    ("kiit", None, None),
    *[("kiit", steps, "leading") for steps in (50, 20, 10)],
    *[
        (name, steps, spacing)
        for spacing in ("leading", "trailing")
        for name in ("ddim", "dpm-solver++", "dpm-solver++-sde", "unipc")
        for steps in (50, 20, 10)
    ],
]
# The target's step count, each stock solver with its better spacing in the full sweep at n = 500.
DEFAULT_CONFIGS = [
    ("kiit", None, None),
    ("kiit", 20, "leading"),
    ("ddim", 20, "trailing"),
    ("dpm-solver++", 20, "trailing"),
    ("dpm-solver++-sde", 20, "leading"),
    ("unipc", 20, "trailing"),
]
RESULTS = Path(__file__).parent / "results"


def parse_config(text: str):
    """`SAMPLER[:STEPS[:SPACING]]` as a (sampler, steps, spacing) entry of `FULL_SWEEP`."""
    from ddpm_kiit.sampling import SCHEDULERS

    name, steps, spacing = (text.split(":") + [None, None])[:3]
    if name not in SCHEDULERS:
        raise argparse.ArgumentTypeError(f"unknown sampler {name!r}; choose one of {sorted(SCHEDULERS)}")
    if steps is not None and not steps.isdigit():
        raise argparse.ArgumentTypeError(f"steps must be a positive integer, got {steps!r} in {text!r}")
    if spacing not in (None, "leading", "trailing", "linspace"):
        raise argparse.ArgumentTypeError(f"spacing must be leading, trailing or linspace, got {spacing!r}")
    return name, int(steps) if steps else None, spacing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="An untrained tiny model, 16 samples, 2 configurations.")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument(
        "--seed", type=int, default=0, help="Seeds the samples and the held-out images they are scored against."
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        type=parse_config,
        default=None,
        metavar="SAMPLER[:STEPS[:SPACING]]",
        help="Run only these, e.g. `kiit dpm-solver++-sde:20:leading` (default: the 300-step sampler and the 20-step "
        "ones). The first is the reference of the target.",
    )
    parser.add_argument("--full", action="store_true", help="The full sweep: 50, 20 and 10 steps, both spacings.")
    parser.add_argument(
        "--out",
        default=None,
        help="Default: results/steps_vs_quality.json (steps_vs_quality_full.json with --full; _cuda on a GPU).",
    )
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if args.full and args.configs:
        parser.error("--full runs the whole sweep; give either --full or --configs")
    device = resolve_device(args.device)
    name = "steps_vs_quality_full.json" if args.full else "steps_vs_quality.json"
    out = Path(args.out) if args.out else results_path(str(RESULTS / name), device)
    if args.quick:
        torch.manual_seed(0)
        unet = SimpleUNet2DModel(block_out_channels=(8, 16, 32), time_embedding_dim=8, in_channels=1, out_channels=1)
        pipe = KiitDDPMPipeline(unet=unet.eval(), scheduler=KiitDDPMScheduler(num_train_timesteps=20))
        configs, num_samples, dataset = [("kiit", None, None), ("ddim", 5, "trailing")], 16, "mnist"
    else:
        pipe = KiitDDPMPipeline.from_pretrained(shipped_pipeline("mnist"))
        configs = args.configs or (FULL_SWEEP if args.full else DEFAULT_CONFIGS)
        num_samples, dataset = args.num_samples, "mnist-full"
    pipe.to(device).enable_fast_inference()
    bf16 = pipe.autocast_dtype == torch.bfloat16
    training_scheduler = pipe.scheduler

    rows = []
    cache = EvaluationCache()  # one feature network and real side for every sampler
    for name, steps, spacing in configs:
        pipe.scheduler = training_scheduler
        swap_scheduler(pipe, name)
        if spacing:
            pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, timestep_spacing=spacing)
        # No step count: every training timestep (the shipped pipeline's own default is its 20-step solver's).
        steps = steps or training_scheduler.config.num_train_timesteps
        report = evaluate_pipeline(pipe, dataset, num_samples, seed=args.seed, num_inference_steps=steps, cache=cache)
        row = {
            "sampler": name,
            "steps": steps,
            "timestep_spacing": spacing,
            **{key: report["scores"][key] for key in ("fid", "kid_mean", "kid_std", "precision", "recall")},
            "seconds_per_image": report["sampling_seconds"] / num_samples,
        }
        rows.append(row)
        print(
            f"{name:<18}{spacing or '':<9}{steps:>5} steps  FID {row['fid']:8.2f}  KID {row['kid_mean']:8.2f}"
            f" +- {row['kid_std']:6.2f}  {row['seconds_per_image'] * 1000:7.1f} ms/image",
            flush=True,
        )
    floor = report["floor"]["fid"]
    reference = rows[0]["fid"]
    within = [r for r in rows if r["steps"] <= 20 and r["fid"] <= 1.1 * reference]
    print(f"real-vs-real floor FID {floor:.2f} at n = {num_samples}; {rows[0]['steps']}-step FID {reference:.2f}")
    if within:
        best = min(within, key=lambda r: (r["steps"], r["fid"]))
        print(
            f"target met: {best['sampler']} ({best['timestep_spacing']} spacing) in {best['steps']} steps, "
            f"FID {best['fid']:.2f} ({best['fid'] / reference:.2f}x the {rows[0]['steps']}-step FID)"
        )
    else:
        print("target not met: no configuration of 20 steps or fewer is within 10% of the all-steps FID")
    if not args.quick:
        result = {
            "machine": machine(device),
            "num_samples": num_samples,
            "seed": args.seed,
            "bf16_autocast": bf16,
            "floor_fid": floor,
            "rows": rows,
        }
        out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
