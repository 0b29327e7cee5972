"""The talk's question answered with numbers: Gaussian noise vs Gaussian blur as the forward process.

    python benchmarks/blur_vs_noise.py [--steps 1000] [--num-samples 2000] [--eval-dataset mnist-full]
    python benchmarks/blur_vs_noise.py --dataset emoji --eval-dataset emoji --num-samples 393 --features inception

Trains the default model on a built-in dataset (`mnist`, or the colour `emoji` at 32x32) for the same number of steps
with each forward process, then scores each with `ddpm_kiit.evaluation.evaluate_pipeline` (n samples, real-vs-real
floor beside it; classifier features for digits, Inception for colour):
- noise: our DDPM with the training defaults (zero terminal SNR, v-prediction), sampled with DDIM in 50 steps;
- cold blur (Bansal et al. 2022), T = 50, sampled with Algorithm 1 (naive) and Algorithm 2 (improved): one model;
- blurring diffusion (Hoogeboom & Salimans 2022), T = 50, its own 50-step sampler.
Writes benchmarks/results/blur_vs_noise[_<dataset>].json, one sample grid per row under docs/, and prints a Markdown
table.
"""

import json
import sys
import tempfile
from pathlib import Path

import torch
from diffusers.utils import make_image_grid

from ddpm_kiit import KiitDDPMPipeline
from ddpm_kiit.evaluation import evaluate_pipeline
from ddpm_kiit.evaluation.evaluate import EvaluationCache
from ddpm_kiit.sampling import swap_scheduler

sys.path.insert(0, str(Path(__file__).parent))
from common import apply_quick, quality_parser, train_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "noise (DDPM, zero-SNR + v)": (["--scheduler", "kiit"], [("DDIM, 50 steps", "ddim", 50)]),  # the default
    "cold blur": (
        ["--scheduler", "gaussian_blur"],
        [
            ("Algorithm 1 (naive), 50 steps", {"sampler": "naive"}, None),
            ("Algorithm 2 (improved), 50 steps", {}, None),
        ],
    ),
    "blurring diffusion": (["--scheduler", "blurring_diffusion"], [("50 steps", {}, None)]),
}


def main(argv=None):
    cache = EvaluationCache()  # one feature network and real side for every row
    parser = quality_parser(__doc__)
    parser.add_argument(
        "--noise-from",
        default=None,
        help="Take the noise row from this schedule_flaw.json (its zero-SNR + v-prediction row is the training "
        "default) instead of training it again.",
    )
    parser.add_argument("--dataset", default="mnist", help="Built-in training set: mnist or emoji.")
    parser.add_argument("--features", default="classifier", choices=("classifier", "inception"))
    args = apply_quick(parser.parse_args(argv))
    suffix = "" if args.dataset == "mnist" else f"_{args.dataset}"
    data_flags = ["--dataset_name", args.dataset]
    rows = []
    runs = dict(RUNS)
    if args.noise_from:
        flaw = json.loads(Path(args.noise_from).read_text())
        default = next(row for row in flaw["rows"] if row["schedule"].startswith("zero terminal SNR"))
        if (flaw["steps"], flaw["num_samples"], flaw["eval_dataset"]) != (
            args.steps,
            args.num_samples,
            args.eval_dataset,
        ):
            raise ValueError(f"{args.noise_from} was measured with other settings; drop --noise-from.")
        rows.append(
            {
                "process": "noise (DDPM, zero-SNR + v)",
                "sampler": "DDIM, 50 steps",
                "flags": default["flags"],
                "train_seconds": default["train_seconds"],
                **{k: default[k] for k in ("fid", "kid_mean", "precision", "recall", "floor_fid")},
                "sampling_seconds": None,
                "grid": None,
                "from": args.noise_from,
            }
        )
        runs.pop("noise (DDPM, zero-SNR + v)")
    for process, (flags, samplers) in runs.items():
        with tempfile.TemporaryDirectory() as out:
            train_seconds = train_run(out, args.steps, data_flags + flags, args.quick)
            for label, sampler, steps in samplers:
                pipe = KiitDDPMPipeline.from_pretrained(out)
                if isinstance(sampler, str):
                    swap_scheduler(pipe, sampler)
                elif sampler:
                    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **sampler)
                report = evaluate_pipeline(
                    pipe,
                    dataset=args.eval_dataset,
                    num_samples=args.num_samples,
                    features=args.features,
                    num_inference_steps=steps,
                    cache=cache,
                )
                slug = f"{process} {label}".split(",")[0].replace(" ", "_").replace("(", "").replace(")", "")
                grid = None
                if not args.quick:
                    pipe.set_progress_bar_config(disable=True)
                    images = pipe(batch_size=16, generator=torch.manual_seed(0), num_inference_steps=steps).images
                    grid = ROOT / "docs" / f"blur_vs_noise{suffix}_{slug}.png"
                    make_image_grid(images, 4, 4).save(grid)
                rows.append(
                    {
                        "process": process,
                        "sampler": label,
                        "flags": " ".join(flags),
                        "train_seconds": round(train_seconds, 1),
                        **{k: report["scores"][k] for k in ("fid", "kid_mean", "precision", "recall")},
                        "floor_fid": report["floor"]["fid"],
                        "sampling_seconds": report["sampling_seconds"],
                        "grid": str(grid.relative_to(ROOT)) if grid else None,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    if not args.quick:
        result = {
            "steps": args.steps,
            "num_samples": args.num_samples,
            "dataset": args.dataset,
            "eval_dataset": args.eval_dataset,
            "features": args.features,
            "rows": rows,
        }
        (ROOT / "benchmarks" / "results" / f"blur_vs_noise{suffix}.json").write_text(json.dumps(result, indent=2))
    print(f"\n| process | sampler | FID (floor {rows[0]['floor_fid']:.1f}) | KID | precision | recall |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['process']} | {row['sampler']} | {row['fid']:.1f} | {row['kid_mean']:.3g} | "
            f"{row['precision']:.3f} | {row['recall']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
