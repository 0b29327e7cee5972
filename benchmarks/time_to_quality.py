"""How fast does the default training reach recognisable digits, against the usual Diffusers recipe, on this machine?

    python benchmarks/time_to_quality.py [--minutes 15] [--eval-every 3] [--num-samples 1000] [--only ours ...]
                                         [--sampler ddim|own] [--sampler-steps 50]

Trains three configurations for the same wall-clock budget on the built-in `mnist` (held in memory as tensors), one
after the other in this process, and scores each at fixed points of training time with `evaluate_pipeline`
(classifier features, n samples from the EMA weights with DDIM in 50 steps, or with `--sampler own` each run's own
training scheduler respaced to `--sampler-steps` (300: our pipeline's default sampler), against the `mnist-full` test
digits, the real-vs-real floor beside it). The clock stops while a point is scored.

- ours: `ddpm_kiit.training.train` with every default: the README's main job, whose default step count is what
  fits 15 minutes on this machine, so that its learning-rate schedule ends with the budget;
- previous: the same with the main job's model before issue 12 (`PREVIOUS_DEFAULT`: simple GroupNorm stages to 256
  channels, bottleneck self-attention), to show what the change of default bought;
- baseline: the recipe of Diffusers' `train_unconditional.py` scaled to 32x32 digits: a 4.3M-parameter `UNet2DModel`
  (widths 32-64-64-128, two layers per block, attention at 8x8), `DDPMScheduler` (T = 1000, linear betas,
  epsilon), AdamW 2e-4 (betas 0.95/0.999, weight decay 1e-6) with 500 warm-up steps and cosine decay, EMA (power 3/4,
  up to 0.9999), bf16 autocast, batch 64, MSE on epsilon; written out here as a plain loop over the same tensors.

Writes benchmarks/results/time_to_quality.json and .png (score against minutes), each run's final sample grid to
docs/time_to_quality_{ours,previous,baseline}.png (with `--sampler own`: time_to_quality_own_sampler*), and prints
the targets of issue 12: ours at most 3x the floor within the budget, and at least 4x sooner than the baseline to
the baseline's final score.
"""

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.utils import make_image_grid

from ddpm_kiit.data import ImageTransform, dataset_to_tensor, load_image_dataset
from ddpm_kiit.evaluation import evaluate_pipeline
from ddpm_kiit.evaluation.evaluate import EvaluationCache
from ddpm_kiit.sampling import swap_scheduler
from ddpm_kiit.training import parse_args, train
from ddpm_kiit.training.allocator import keep_freed_memory
from ddpm_kiit.training.args import DEFAULT_MAX_TRAIN_STEPS
from ddpm_kiit.training.loop import sampling_pipeline

sys.path.insert(0, str(Path(__file__).parent))
from common import QUICK_TRAIN_FLAGS, reset_accelerate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASELINE_UNET = {
    "sample_size": 32,
    "in_channels": 1,
    "out_channels": 1,
    "layers_per_block": 2,
    "block_out_channels": (32, 64, 64, 128),
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
}
# The main job's model before IMPROVED_CONFIG became the default: 4.7M parameters, four simple GroupNorm stages up to
# 256 channels, four-head self-attention at the 4x4 bottleneck, no full-resolution skip, no skip gates.
PREVIOUS_DEFAULT = {
    "block_out_channels": [32, 64, 128, 256],
    "block_type": "simple",
    "skip_conv_in": False,
    "skip_attention_gates": None,
    "attention_type": "self_attention",
    "num_attention_heads": 4,
}
PREVIOUS_FLAGS = ("--model_config", json.dumps(PREVIOUS_DEFAULT, separators=(",", ":")))
QUICK_BASELINE_UNET = {**BASELINE_UNET, "block_out_channels": (8, 8, 16, 16), "norm_num_groups": 4}


class TrainingClock:
    """Seconds of training: runs from `start()`, stands still between `pause()` and `resume()`."""

    def __init__(self):
        self.spent, self.since = 0.0, None

    def start(self):
        self.since = time.perf_counter()

    resume = start

    def pause(self):
        self.spent += time.perf_counter() - self.since
        self.since = None

    @property
    def seconds(self) -> float:
        return self.spent + (time.perf_counter() - self.since if self.since is not None else 0.0)


class Checkpoints:
    """Decides when to score: at every `every` minutes of training and once at the end (of the budget or of
    `max_steps`, whichever comes first)."""

    def __init__(self, budget_minutes: float, every_minutes: float, score, label: str, max_steps: int):
        self.budget, self.every, self.score, self.label = budget_minutes * 60, every_minutes * 60, score, label
        self.max_steps = max_steps
        self.next, self.points, self.clock = self.every, [], TrainingClock()

    def __call__(self, step: int, make_pipeline) -> bool:
        """Call after each optimizer step; returns True when the budget is spent."""
        seconds = self.clock.seconds
        done = seconds >= self.budget or step >= self.max_steps
        if seconds >= self.next or done:
            self.clock.pause()
            with make_pipeline() as pipe:
                report = self.score(pipe)
            point = {"minutes": round(seconds / 60, 2), "steps": step, **report}
            self.points.append(point)
            print(f"[{self.label}] {json.dumps(point)}", flush=True)
            while self.next <= seconds:
                self.next += self.every
            self.clock.resume()
        return done


SAMPLERS = {
    "ddim": "DDIM (deterministic), built from the run's scheduler config",
    "own": "the run's own training scheduler respaced (ancestral DDPM steps)",
}


def scorer(args):
    cache = EvaluationCache()  # one feature network and real side for every scored point

    def score(pipe):
        if args.sampler == "ddim":
            swap_scheduler(pipe, "ddim")
        report = evaluate_pipeline(
            pipe,
            dataset=args.eval_dataset,
            num_samples=args.num_samples,
            num_inference_steps=args.sampler_steps,
            cache=cache,
        )
        scores = report["scores"]
        return {
            "fid": scores["fid"],
            "kid_mean": scores["kid_mean"],
            "kid_std": scores["kid_std"],
            "precision": scores["precision"],
            "recall": scores["recall"],
            "floor_fid": report["floor"]["fid"],
        }

    return score


RUNS = ("ours", "previous", "baseline")
LABELS = {"ours": "ours (the main job)", "previous": "previous default model", "baseline": "Diffusers recipe"}


def run_ours(args, label: str = "ours", flags: tuple = ()) -> dict:
    """Our training loop with every default, or with `flags` added (the previous default's model)."""
    checkpoints = Checkpoints(args.minutes, args.eval_every, scorer(args), label, args.ours_steps)
    with tempfile.TemporaryDirectory() as out:
        command = ["--output_dir", out, "--max_train_steps", str(args.ours_steps), "--logger", "none"]
        command += ["--num_sample_images", "16", "--checkpointing_steps", "1000000", *flags]
        train_args = parse_args(command + (QUICK_TRAIN_FLAGS if args.quick else []))

        def callback(step, unet, ema_model, scheduler):
            sample_with = train_args.sample_scheduler
            return checkpoints(step, lambda: sampling_pipeline(unet, ema_model, scheduler, sample_with))

        checkpoints.clock.start()
        train(train_args, step_callback=callback)
        reset_accelerate()
        if not args.quick:  # the run's own grid: the pipeline's sampler (all 300 steps), EMA weights, seed 0
            shutil.copyfile(Path(out) / "samples.png", ROOT / "docs" / f"{args.stem}_{label}.png")
    command = "accelerate launch examples/train.py" + (
        f" --max_train_steps {args.ours_steps}" if args.ours_steps != DEFAULT_MAX_TRAIN_STEPS else ""
    )
    command += "".join(f" {shlex.quote(flag)}" for flag in flags)
    return {"command": command, **_summary(checkpoints, train_args.train_batch_size)}


def _summary(checkpoints, batch) -> dict:
    last = checkpoints.points[-1]
    rate = last["steps"] * batch / max(last["minutes"] * 60, 1e-9)
    return {"points": checkpoints.points, "images_per_second": round(rate, 1)}


def run_baseline(args) -> dict:
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    keep_freed_memory()  # the allocator settings our loop makes, so that only the recipes differ
    torch.manual_seed(0)
    config = QUICK_BASELINE_UNET if args.quick else BASELINE_UNET
    unet = UNet2DModel(**config)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=2e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=500, num_training_steps=args.baseline_steps)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    limit = 64 if args.quick else None
    images = dataset_to_tensor(load_image_dataset("mnist", split="train"), ImageTransform(32, 1))[:limit]
    generator = torch.Generator().manual_seed(0)
    batch = 8 if args.quick else 64

    # The training loop's own EMA-swapping context; the baseline samples with its DDPMScheduler (swapped to DDIM).

    def ema_pipeline():
        return sampling_pipeline(unet, ema, scheduler)

    checkpoints = Checkpoints(args.minutes, args.baseline_eval_every, scorer(args), "baseline", args.baseline_steps)
    checkpoints.clock.start()
    step = 0
    unet.train()
    while True:
        clean = images[torch.randint(0, len(images), (batch,), generator=generator)]
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, 1000, (batch,), generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            prediction = unet(scheduler.add_noise(clean, noise, timesteps), timesteps).sample
        loss = F.mse_loss(prediction.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
        step += 1
        if checkpoints(step, ema_pipeline):
            break
    if not args.quick:
        with ema_pipeline() as pipe:
            if args.sampler == "ddim":
                swap_scheduler(pipe, "ddim")
            grid = pipe(batch_size=16, generator=torch.manual_seed(0), num_inference_steps=args.sampler_steps).images
        make_image_grid(grid, 4, 4).save(ROOT / "docs" / f"{args.stem}_baseline.png")
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    return {"config": config, "parameters": sum(p.numel() for p in unet.parameters()), **_summary(checkpoints, batch)}


def first_minute_at_or_below(points, fid):
    """Training minutes at which a run first scored `fid` or better (linear between scored points), or None."""
    previous = None
    for point in points:
        if point["fid"] <= fid:
            if previous is None:
                return point["minutes"]
            share = (previous["fid"] - fid) / max(previous["fid"] - point["fid"], 1e-9)
            return previous["minutes"] + share * (point["minutes"] - previous["minutes"])
        previous = point
    return None


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8.4, 4))
    for name, run in result["runs"].items():
        points = run["points"]
        axis.plot([p["minutes"] for p in points], [p["fid"] for p in points], marker="o", label=LABELS.get(name, name))
    floor = next(iter(result["runs"].values()))["points"][-1]["floor_fid"]
    axis.axhline(floor, color="grey", linestyle=":", label=f"real-vs-real floor ({floor:.1f})")
    axis.axhline(3 * floor, color="grey", linestyle="--", label="target: 3x floor")
    axis.set_yscale("log")
    axis.set_xlabel("minutes of training (2-core CPU)")
    axis.set_ylabel(f"FID, classifier features, n = {result['num_samples']}")
    if "sampler" in result:
        axis.set_title(f"sampled with {result['sampler']}", fontsize="small")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def targets(runs: dict) -> dict:
    """Issue 12's targets from the scored points: ours against the floor and against the baseline's final score, and
    the previous default's final score with the minutes ours took to reach it."""
    found = {}
    if "ours" in runs:
        ours = runs["ours"]["points"]
        floor = ours[-1]["floor_fid"]
        found.update(
            ours_final_fid=ours[-1]["fid"],
            ours_final_minutes=ours[-1]["minutes"],
            floor_fid=floor,
            ours_final_over_floor=ours[-1]["fid"] / floor,
            target_over_floor=3.0,
        )
        for other in ("baseline", "previous"):
            if other in runs:
                final = runs[other]["points"][-1]
                minutes = first_minute_at_or_below(ours, final["fid"])
                found[f"{other}_final_fid"] = final["fid"]
                found[f"{other}_final_minutes"] = final["minutes"]
                # With no earlier point, reaching it at the first scored point is an upper bound on the minutes.
                found[f"ours_minutes_to_{other}_final"] = minutes
                found[f"speedup_to_{other}_final"] = final["minutes"] / minutes if minutes else None
        found["target_speedup_to_baseline_final"] = 4.0
    return found


def replot(path):
    """Recomputes the targets and draws the curve of a results file again (after an `--only` run, or a change of the
    figure or of the targets)."""
    result = json.loads(Path(path).read_text())
    result["targets"] = targets(result["runs"])
    Path(path).write_text(json.dumps(result, indent=2))
    plot(result, Path(path).with_suffix(".png"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A tiny run, for the smoke test; writes no results.")
    parser.add_argument("--minutes", type=float, default=15.0, help="Training budget of each configuration.")
    parser.add_argument("--eval-every", type=float, default=3.0, help="Minutes of training between our scores.")
    parser.add_argument("--baseline-eval-every", type=float, default=7.5, help="The same for the (slower) baseline.")
    parser.add_argument("--ours-steps", type=int, default=DEFAULT_MAX_TRAIN_STEPS, help="The default run's steps.")
    parser.add_argument("--baseline-steps", type=int, default=800, help="About what the baseline does in --minutes.")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--sampler-steps", type=int, default=50)
    parser.add_argument(
        "--sampler",
        choices=sorted(SAMPLERS),
        default="ddim",
        help="How each scored point samples; 'own' writes time_to_quality_own_sampler.json and its grids instead.",
    )
    parser.add_argument("--eval-dataset", default="mnist-full")
    parser.add_argument(
        "--only",
        choices=RUNS,
        nargs="+",
        default=None,
        help="Run these configurations; the others' runs are kept from the results file when its settings match.",
    )
    parser.add_argument("--replot", default=None, help="Only recompute the targets and redraw the PNG of this JSON.")
    args = parser.parse_args(argv)
    if args.replot:
        replot(args.replot)
        return 0
    if args.quick:
        args.minutes, args.eval_every, args.baseline_eval_every = 0.03, 0.03, 0.03
        args.ours_steps, args.baseline_steps, args.num_samples, args.eval_dataset = 20, 20, 20, "mnist"
        args.sampler_steps = 2

    args.stem = "time_to_quality" + ("" if args.sampler == "ddim" else f"_{args.sampler}_sampler")
    runs = {}
    for name in args.only or RUNS:
        if name == "ours":
            runs[name] = run_ours(args)
        elif name == "previous":
            runs[name] = run_ours(args, "previous", PREVIOUS_FLAGS)
        else:
            runs[name] = run_baseline(args)
    result = {
        "minutes": args.minutes,
        "num_samples": args.num_samples,
        "eval_dataset": args.eval_dataset,
        "sampler": f"{SAMPLERS[args.sampler]}, {args.sampler_steps} steps",
    }
    folder = Path(tempfile.mkdtemp()) if args.quick else ROOT / "benchmarks" / "results"
    out = folder / f"{args.stem}.json"
    if args.only and out.is_file():  # keep the other configuration's run from an earlier --only run, if comparable
        earlier = json.loads(out.read_text())
        if all(earlier.get(k) == result[k] for k in result):
            runs = {**{k: v for k, v in earlier["runs"].items() if k not in args.only}, **runs}
    result["runs"] = {name: runs[name] for name in RUNS if name in runs}
    result["targets"] = targets(result["runs"])
    print(json.dumps(result["targets"], indent=2))
    # A quick run writes its (meaningless) curve to a temporary folder, so that the writing is tested too.
    out.write_text(json.dumps(result, indent=2))
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
