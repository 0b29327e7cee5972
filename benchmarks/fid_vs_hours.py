"""FID against training hours: where does a long run's curve flatten?

    python benchmarks/fid_vs_hours.py RUN_DIR [--dataset mnist-full] [--num-samples 2000] [--features classifier]
        [--scheduler dpm-solver++-sde] [--steps 20] [--continues JSON] [--out JSON] [--plot PNG] [--quick]

RUN_DIR is the output folder of a finished `examples/train.py` run that kept its checkpoints
(`--checkpoints_total_limit` at least `max_train_steps / checkpointing_steps`). Each `checkpoint-<step>` holds the EMA
weights of that step (`unet_ema/`); this script puts them into the run's pipeline in turn and scores each exactly as
`ddpm-kiit evaluate RUN_DIR --dataset ... --num-samples ... --scheduler ... --steps ... --fast-inference` scores the
final pipeline (same samples' seed, same reference, same floor). Hours are the step count at the run's own measured
speed (`train_summary.json`: steps and training seconds of its last piece), so a run resumed in pieces on machines of
one kind reads right. Writes the JSON (`--out`) and a plot of FID against hours beside the real-vs-real floor and the
1.5x-floor target (`--plot`). A run that fine-tuned an earlier run's pipeline (`--pretrained_model_name_or_path`)
continues that run's curve: `--continues EARLIER_JSON` (this script's output for the earlier run, scored the same
way) puts the earlier points first and counts this run's hours from the earlier run's last, so the plot shows the
whole chain and where each piece began. `--quick` trains a tiny run with three checkpoints and scores a handful of
samples (the smoke test; it writes nothing).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ddpm_kiit import KiitDDPMPipeline, SimpleUNet2DModel
from ddpm_kiit.evaluation import evaluate_pipeline
from ddpm_kiit.evaluation.evaluate import EvaluationCache
from ddpm_kiit.sampling import SCHEDULERS, swap_scheduler
from ddpm_kiit.training.checkpoints import list_checkpoints, load_ema_unet

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, train_run  # noqa: E402

TARGET_RATIO = 1.5  # the shipped pipelines' bar: at most 1.5x the real-vs-real floor


def checkpoint_unet(checkpoint: Path) -> SimpleUNet2DModel:
    """The pipeline's unet at a checkpoint's step: the EMA weights it holds."""
    ema = checkpoint / "unet_ema"
    if not ema.is_dir():
        raise ValueError(f"{checkpoint} has no unet_ema/: this script scores EMA runs (the default of train.py).")
    return load_ema_unet(ema)


def seconds_per_step(run_dir: Path) -> float:
    summary_file = run_dir / "train_summary.json"
    if not summary_file.is_file():
        raise ValueError(f"{run_dir} has no train_summary.json: let the run finish (or resume it) first.")
    summary = json.loads(summary_file.read_text())
    return summary["train_seconds"] / summary["steps"]


def measure(run_dir: Path, args) -> dict:
    checkpoints = list_checkpoints(run_dir)
    if len(checkpoints) < 2:
        raise ValueError(
            f"{run_dir} keeps {len(checkpoints)} checkpoint(s); train with --checkpoints_total_limit large enough to "
            "keep every --checkpointing_steps checkpoint."
        )
    per_step = seconds_per_step(run_dir)
    pipe = KiitDDPMPipeline.from_pretrained(run_dir)
    pipe = swap_scheduler(pipe, args.scheduler)
    pipe.set_progress_bar_config(disable=True)
    cache, points = EvaluationCache(), []
    for checkpoint in tqdm(checkpoints, desc="Checkpoints"):
        pipe.unet = checkpoint_unet(checkpoint).eval()
        if args.fast_inference:
            pipe.enable_fast_inference()
        report = evaluate_pipeline(
            pipe, args.dataset, args.num_samples, args.features, seed=args.seed, num_inference_steps=args.steps,
            cache=cache,
        )  # fmt: skip
        step = int(checkpoint.name.split("-")[-1])
        points.append({"step": step, "hours": step * per_step / 3600, **report["scores"]})
        print(f"step {step:>6}  {points[-1]['hours']:.2f} h  FID {report['scores']['fid']:.2f}", flush=True)
    return {
        "run": str(run_dir),
        "dataset": args.dataset,
        "num_samples": args.num_samples,
        "features": args.features,
        "scheduler": report["scheduler"],
        "steps": args.steps,
        "floor": report["floor"],
        "seconds_per_training_step": per_step,
        "points": points,
    }


def continue_from(earlier: dict, results: dict) -> dict:
    """`results` as the second piece of a chain whose first piece is `earlier` (both scored alike)."""
    for key in ("dataset", "num_samples", "features", "scheduler", "steps"):
        if earlier[key] != results[key]:
            raise ValueError(
                f"--continues: the earlier run was scored with {key} = {earlier[key]!r}, this one with "
                f"{results[key]!r}; score both alike (the same flags) so that their points share one curve."
            )
    pieces = earlier.get("pieces") or [{"run": earlier["run"], "points": len(earlier["points"])}]
    last = earlier["points"][-1]
    points = [dict(p, piece=p.get("piece", 0)) for p in earlier["points"]]
    for point in results["points"]:
        points.append(
            dict(point, step=last["step"] + point["step"], hours=last["hours"] + point["hours"], piece=len(pieces))
        )
    pieces = [*pieces, {"run": results["run"], "points": len(results["points"])}]
    return {**results, "points": points, "pieces": pieces}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = results["points"]
    floor = results["floor"]["fid"]
    figure, axis = plt.subplots(figsize=(6, 3.6))
    pieces = results.get("pieces") or [{"run": results["run"]}]
    for index, piece in enumerate(pieces):
        # Each piece's line starts at the previous piece's last point, the weights it started from.
        own = [p for p in points if p.get("piece", 0) == index]
        earlier = [p for p in points if p.get("piece", 0) == index - 1][-1:]
        label = "EMA weights" if len(pieces) == 1 else f"EMA weights, {Path(piece['run']).name}"
        line = earlier + own
        axis.plot([p["hours"] for p in line], [p["fid"] for p in line], marker="o", label=label)
    axis.axhline(floor, color="grey", linestyle="--", label=f"real vs real ({floor:.2f})")
    axis.axhline(TARGET_RATIO * floor, color="C2", linestyle=":", label=f"target, {TARGET_RATIO}x floor")
    axis.set_yscale("log")
    axis.set(
        xlabel="training hours (this run's measured speed)",
        ylabel=f"FID, n = {results['num_samples']} (log scale)",
        title=f"{' + '.join(Path(p['run']).name for p in pieces)}: {results['scheduler']}, "
        f"{results['steps'] or 'all'} steps",
    )
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", default=None, help="A finished training run that kept its checkpoints.")
    parser.add_argument("--dataset", default="mnist-full")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--features", choices=("classifier", "inception"), default="classifier")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="dpm-solver++-sde")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fast-inference", dest="fast_inference", action="store_false")
    parser.add_argument(
        "--continues", default=None, help="This script's JSON for the run that this run fine-tuned (see above)."
    )
    parser.add_argument("--out", default=None, help="The JSON to write (default: print only).")
    parser.add_argument("--plot", default=None, help="The plot to write.")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        if args.quick:
            args.run_dir = str(Path(scratch) / "tiny")
            flags = ["--resolution", "32", "--checkpointing_steps", "1", "--checkpoints_total_limit", "3"]
            train_run(args.run_dir, 3, flags, quick=True)
            args.dataset, args.num_samples, args.steps, args.out, args.plot = "mnist", 20, 2, None, None
        if args.run_dir is None:
            parser.error("name a training run's output folder (or pass --quick)")
        earlier = json.loads(Path(args.continues).read_text()) if args.continues else None
        results = measure(Path(args.run_dir), args)
    if earlier is not None:
        results = continue_from(earlier, results)
    results["machine"] = machine(torch.device("cpu"))
    results["command"] = " ".join(["python benchmarks/fid_vs_hours.py", *(sys.argv[1:] if argv is None else argv)])
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot(results, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
