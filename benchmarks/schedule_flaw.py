"""The talk's schedule flaw, measured: the same model and training budget under three noise schedules.

    python benchmarks/schedule_flaw.py [--steps 1000] [--num-samples 2000] [--eval-dataset mnist-full]

Trains the default model on the built-in `mnist` with (1) the talk's linear betas 1e-4..0.02 at T = 300
(alpha_bar_T = 0.048), (2) the same betas rescaled to zero terminal SNR (with v-prediction, as Lin et al. 2023
require: an epsilon model cannot predict x0 from pure noise), (3) the cosine schedule. Each is scored with
`ddpm_kiit.evaluation.evaluate_pipeline` (DDIM, 50 steps, classifier features) against held-out digits, with the
real-vs-real floor at the same n. Writes benchmarks/results/schedule_flaw.json and prints a Markdown table.
"""

import json
import sys
import tempfile
from pathlib import Path

from ddpm_kiit import KiitDDPMPipeline
from ddpm_kiit.evaluation import evaluate_pipeline
from ddpm_kiit.sampling import swap_scheduler

sys.path.insert(0, str(Path(__file__).parent))
from common import apply_quick, quality_parser, train_run  # noqa: E402

# Every flag spelled out: the training defaults changed to the second row after this comparison.
EPSILON = ["--no-rescale_betas_zero_snr", "--prediction_type", "epsilon"]
SCHEDULES = {
    "talk: linear 1e-4..0.02, T=300": ["--ddpm_beta_schedule", "linear", *EPSILON],
    "zero terminal SNR + v-prediction": [
        "--ddpm_beta_schedule", "linear", "--rescale_betas_zero_snr", "--prediction_type", "v_prediction",
    ],
    "cosine (squaredcos_cap_v2)": ["--ddpm_beta_schedule", "squaredcos_cap_v2", *EPSILON],
}  # fmt: skip


def main(argv=None):
    parser = quality_parser(__doc__)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "schedule_flaw.json"))
    args = apply_quick(parser.parse_args(argv))
    rows = []
    for name, flags in SCHEDULES.items():
        with tempfile.TemporaryDirectory() as out:
            grid_flags = ["--sample_scheduler", "ddim", "--num_inference_steps", "50"]
            train_seconds = train_run(out, args.steps, flags + grid_flags, args.quick)
            pipe = KiitDDPMPipeline.from_pretrained(out)
            alpha_bar_T = pipe.scheduler.terminal_alpha_bar  # the trained schedule's, before DDIM samples it
            pipe = swap_scheduler(pipe, "ddim")
            report = evaluate_pipeline(
                pipe,
                dataset=args.eval_dataset,
                num_samples=args.num_samples,
                num_inference_steps=2 if args.quick else 50,
            )
        rows.append(
            {
                "schedule": name,
                "flags": " ".join(flags),
                "alpha_bar_T": alpha_bar_T,
                "train_seconds": round(train_seconds, 1),
                **{k: report["scores"][k] for k in ("fid", "kid_mean", "precision", "recall")},
                "floor_fid": report["floor"]["fid"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    result = {"steps": args.steps, "num_samples": args.num_samples, "eval_dataset": args.eval_dataset, "rows": rows}
    if not args.quick:
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\n| schedule | alpha_bar_T | FID (floor {rows[0]['floor_fid']:.1f}) | KID | precision | recall |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['schedule']} | {row['alpha_bar_T']:.3f} | {row['fid']:.1f} | {row['kid_mean']:.3g} | "
            f"{row['precision']:.3f} | {row['recall']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
