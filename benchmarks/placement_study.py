"""Where do self-attention, CBAM and attention gates belong in the U-Net? Issue 8's study, as one script.

    python benchmarks/placement_study.py                       # every stage, here
    python benchmarks/placement_study.py --stage train --jobs 8  # on a GPU machine: trainings side by side
    python benchmarks/placement_study.py --quick               # a tiny run of two rows, for the smoke test

Every row is trained by our own `examples/train.py` (the command is recorded with the row) with the same data,
steps, batch, learning rate, EMA and noise schedule (the training defaults: the talk's linear betas rescaled to zero
terminal SNR, v-prediction, min-SNR-5), then sampled with the same sampler (DDIM, 50 steps, seed 0, bf16 autocast
where the hardware has it) and scored with `ddpm_kiit.evaluation.score_samples` beside the real-vs-real floor at the
same n.

Rows: the talk's three models as they are (62-75M parameters: BatchNorm, the doubly ReLU'd time embedding,
self-attention at the 2x2 bottleneck, CBAM gating the main path of every block); then one backbone, the improved
one (`IMPROVED_CONFIG`: GroupNorm residual blocks, scale-and-shift time embedding, full-resolution skip), with each
placement in turn: none, the talk's bottleneck self-attention, self-attention at 16x16 and 8x8, the talk's CBAM on
the main path, Woo et al.'s CBAM on the residual branch, attention gates on the skips (Oktay et al.), and those
gates also driven by the time embedding.

Stages (each reads and extends the results JSON, so they can run on different machines):
- train: trains the rows, `--jobs` at a time, each in its own process, into `--work-dir`;
- sample: DDIM-50 samples of every trained row (n per dataset), saved as 8-bit safetensors, plus a sample grid;
  scores them at once unless the dataset's features are deferred with `--defer-scoring` (Inception on a GPU machine
  that cannot carry its weights);
- score: scores saved samples that have no score yet;
- speed: training and sampling images per second of each row's model on this machine (bf16 autocast where the CPU
  supports it), measured one after the other in one run;
- report: prints the README table and the winner of each dataset.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import best_seconds  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "placement_study.json"
GRIDS = ROOT / "docs" / "placement_study"

# dataset name -> what it is trained on, the feature space of its scores, and n (samples = held-out images).
# The colour set is the Noto emoji: its held-out split has 393 images, all of them used (n = 2000 would need 4,000
# held-out images for the floor; no offline colour set has them).
DATASETS = {
    "mnist": {"train": "mnist-full", "features": "classifier", "num_samples": 2000},
    "emoji": {"train": "emoji", "features": "inception", "num_samples": 393},
}
NO_PLACEMENT = {
    "attention_type": None,
    "attention_resolutions": [],
    "cbam_placement": None,
    "cbam_resolutions": None,
    "skip_attention_gates": None,
}
IMPROVED_PLACEMENTS = {
    "plain": {},
    "bottleneck-attention": {"attention_type": "self_attention"},
    "attention-16-8": {"attention_resolutions": [16, 8]},
    "cbam-main-path": {"cbam_placement": "main_path"},
    "cbam-residual": {"cbam_placement": "residual_branch"},
    "gates": {"skip_attention_gates": "decoder"},
    "gates-time": {"skip_attention_gates": "decoder_time"},
}
ROWS = {
    "talk-plain": ["--model_variant", "simple"],
    "talk-self-attention": ["--model_variant", "self_attention"],
    "talk-cbam": ["--model_variant", "cbam"],
    **{
        f"improved-{name}": [
            "--model_variant",
            "improved",
            "--model_config",
            json.dumps({**NO_PLACEMENT, "num_attention_heads": 4, **placement}, separators=(",", ":")),
        ]
        for name, placement in IMPROVED_PLACEMENTS.items()
    },
}
QUICK_ROWS = ["talk-cbam", "improved-gates-time"]
QUICK_TALK = ["--model_config", '{"block_out_channels":[16,32,64],"time_embedding_dim":8}']


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("all", "train", "sample", "score", "speed", "report"), default="all")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=None, help="Default: every row.")
    parser.add_argument("--steps", type=int, default=1000, help="Training steps of every row.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--jobs", type=int, default=1, help="Trainings run side by side (a GPU takes several).")
    parser.add_argument("--deadline-minutes", type=float, default=None, help="Stop trainings still running then.")
    parser.add_argument("--inference-steps", type=int, default=50, help="DDIM steps of the scored samples.")
    parser.add_argument("--defer-scoring", nargs="*", default=[], help="Datasets sampled now and scored later.")
    parser.add_argument("--work-dir", default=str(ROOT / "outputs" / "placement_study"))
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--grids", default=str(GRIDS))
    parser.add_argument("--quick", action="store_true", help="Two tiny rows on the built-in mnist, in a temp folder.")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows = args.rows or QUICK_ROWS
        args.datasets, args.steps, args.batch_size, args.inference_steps = ["mnist"], 2, 8, 2
    args.rows = args.rows or list(ROWS)
    return args


def num_samples(args, dataset: str) -> int:
    return 16 if args.quick else DATASETS[dataset]["num_samples"]


def train_dataset(args, dataset: str) -> str:
    return "mnist" if args.quick else DATASETS[dataset]["train"]


# --------------------------------------------------------------------------------------------------------- results


def load_results(path) -> dict:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {"rows": {}}


def save_results(results: dict, path):
    """Writes through a temporary file: an interrupted stage never leaves a truncated results file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(partial, path)


def row_key(dataset: str, row: str) -> str:
    return f"{dataset}/{row}"


# ----------------------------------------------------------------------------------------------------------- train


def train_command(args, dataset: str, row: str, output_dir: Path) -> list:
    flags = ["examples/train.py", "--dataset_name", train_dataset(args, dataset), "--resolution", "32"]
    flags += ["--output_dir", str(output_dir), "--overwrite_output_dir", *ROWS[row]]
    flags += ["--max_train_steps", str(args.steps), "--train_batch_size", str(args.batch_size)]
    flags += ["--learning_rate", str(args.learning_rate), "--lr_warmup_steps", str(min(100, args.steps // 10))]
    flags += ["--checkpointing_steps", str(args.steps), "--logger", "none", "--seed", "0", "--channels_last"]
    if args.quick:
        flags += ["--max_train_samples", "64", "--num_sample_images", "4", "--num_inference_steps", "2"]
        if row.startswith("talk"):
            flags += QUICK_TALK
    return flags


def stage_train(args, results: dict):
    """Runs the trainings, heaviest (the talk's models) first, `--jobs` at a time."""
    work = Path(args.work_dir)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    queue = [(d, r) for r in args.rows for d in args.datasets]
    deadline = time.time() + 60 * args.deadline_minutes if args.deadline_minutes else None
    running = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    while queue or running:
        while queue and len(running) < args.jobs:
            dataset, row = queue.pop(0)
            output_dir = work / dataset / row
            command = train_command(args, dataset, row, output_dir)
            log = open(work / "logs" / f"{dataset}-{row}.log", "w")
            process = subprocess.Popen(
                [sys.executable, *command], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
            )
            running[(dataset, row)] = (process, time.time(), log, command, output_dir)
            print(f"started {dataset}/{row}", flush=True)
        time.sleep(1)
        for key, (process, started, log, command, output_dir) in list(running.items()):
            late = deadline is not None and time.time() > deadline
            if process.poll() is None and not late:
                continue
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
            del running[key]
            summary_file = output_dir / "train_summary.json"
            entry = results["rows"].setdefault(row_key(*key), {})
            entry.update(dataset=key[0], row=key[1], command="python " + " ".join(_quote(c) for c in command))
            entry["train"] = {
                "returncode": process.returncode,
                "wall_seconds": round(time.time() - started, 1),
                "device": "cuda" if torch.cuda.is_available() else "cpu",
                "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                "parallel_jobs": args.jobs,
                "steps": args.steps,
                "batch_size": args.batch_size,
                "learning_rate": args.learning_rate,
                **(json.loads(summary_file.read_text()) if summary_file.is_file() else {}),
            }
            if process.returncode != 0:
                tail = (work / "logs" / f"{key[0]}-{key[1]}.log").read_text().replace("\r", "\n").splitlines()[-5:]
                entry["train"]["error"] = "killed at the deadline" if late else "\n".join(tail)
            print(f"finished {key[0]}/{key[1]}: returncode {process.returncode}", flush=True)
            save_results(results, args.results)


def _quote(text: str) -> str:
    return f"'{text}'" if re.search(r"[^\w@%+=:,./-]", text) else text


# ---------------------------------------------------------------------------------------------------------- sample


@torch.no_grad()
def stage_sample(args, results: dict):
    from diffusers.utils import make_image_grid
    from safetensors.torch import save_file

    from ddpm_kiit import KiitDDPMPipeline
    from ddpm_kiit.evaluation import score_samples
    from ddpm_kiit.evaluation.evaluate import EvaluationCache, generate_samples

    cache = EvaluationCache()
    from ddpm_kiit.sampling import swap_scheduler

    device = "cuda" if torch.cuda.is_available() else "cpu"
    work, grids = Path(args.work_dir), Path(args.grids)
    for dataset in args.datasets:
        for row in args.rows:
            entry = results["rows"].get(row_key(dataset, row))
            folder = work / dataset / row
            if entry is None or not (folder / "model_index.json").is_file():
                print(f"skipped {dataset}/{row}: not trained", flush=True)
                continue
            pipe = swap_scheduler(KiitDDPMPipeline.from_pretrained(folder), "ddim").to(device)
            # The same fast-inference settings for every row: bf16 autocast where the hardware has it (2.5x faster
            # on the study's sampling here), channels_last, inference_mode.
            pipe.enable_fast_inference()
            entry["params"] = sum(p.numel() for p in pipe.unet.parameters())
            entry["weights_mb"] = round(
                (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size / 2**20, 2
            )
            start = time.perf_counter()
            samples = generate_samples(pipe, num_samples(args, dataset), 500, 0, args.inference_steps)
            seconds = time.perf_counter() - start
            samples_uint8 = ((samples + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            (work / "samples").mkdir(parents=True, exist_ok=True)
            save_file({"samples": samples_uint8}, str(work / "samples" / f"{dataset}-{row}.safetensors"))
            grid = [_to_pil(image) for image in samples_uint8[:64]]
            grids.mkdir(parents=True, exist_ok=True)
            make_image_grid(grid, rows=4, cols=len(grid) // 4).save(grids / f"{dataset}-{row}.png")
            entry["sample"] = {
                "scheduler": "DDIMScheduler",
                "bf16_autocast": pipe.autocast_dtype == torch.bfloat16,
                "num_inference_steps": args.inference_steps,
                "seed": 0,
                "num_samples": len(samples_uint8),
                "seconds": round(seconds, 2),
                "device": device,
            }
            if dataset not in args.defer_scoring:
                features = DATASETS[dataset]["features"]
                entry["eval"] = score_samples(
                    samples_uint8.float() / 127.5 - 1, train_dataset(args, dataset), features, cache=cache
                )
            print(f"sampled {dataset}/{row}", flush=True)
            save_results(results, args.results)
            del pipe
            if device == "cuda":
                torch.cuda.empty_cache()


def _to_pil(image: torch.Tensor):
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def stage_score(args, results: dict):
    from safetensors.torch import load_file

    from ddpm_kiit.evaluation import score_samples
    from ddpm_kiit.evaluation.evaluate import EvaluationCache

    cache = EvaluationCache()
    for dataset in args.datasets:
        for row in args.rows:
            entry = results["rows"].get(row_key(dataset, row))
            path = Path(args.work_dir) / "samples" / f"{dataset}-{row}.safetensors"
            if entry is None or "eval" in entry or not path.is_file():
                continue
            samples = load_file(str(path))["samples"].float() / 127.5 - 1
            entry["eval"] = score_samples(
                samples, train_dataset(args, dataset), DATASETS[dataset]["features"], cache=cache
            )
            print(f"scored {dataset}/{row}: FID {entry['eval']['scores']['fid']:.1f}", flush=True)
            save_results(results, args.results)


# ----------------------------------------------------------------------------------------------------------- speed


def stage_speed(args, results: dict):
    """Images per second of each row's model alone on this machine: one AdamW training step at batch 64, and one
    DDIM-50 sample (50 forward passes at batch 64), bf16 autocast where the CPU has it, as the training loop uses."""
    from ddpm_kiit import SimpleUNet2DModel
    from ddpm_kiit.training import parse_args
    from ddpm_kiit.training.args import load_model_config
    from ddpm_kiit.training.loop import default_mixed_precision

    batch, repeats = (4, 1) if args.quick else (64, 3)
    dtype = torch.bfloat16 if default_mixed_precision() == "bf16" else None
    for dataset in args.datasets:
        channels = 1 if dataset == "mnist" else 3
        for row in args.rows:
            flags = train_command(args, dataset, row, Path("unused"))[1:]
            config = load_model_config(parse_args(flags))
            torch.manual_seed(0)
            model = SimpleUNet2DModel(**{**config, "in_channels": channels, "out_channels": channels})
            train_seconds, forward_seconds = _time_model(model, batch, repeats, dtype)
            entry = results["rows"].setdefault(row_key(dataset, row), {"dataset": dataset, "row": row})
            entry["params"] = sum(p.numel() for p in model.parameters())
            entry["speed"] = {
                "train_images_per_second": round(batch / train_seconds, 1),
                "sample_images_per_second": round(batch / (forward_seconds * args.inference_steps), 2),
                "batch_size": batch,
                "dtype": "bf16 autocast" if dtype is not None else "fp32",
                "machine": f"{os.cpu_count()}-core CPU, torch {torch.__version__}",
            }
            print(f"speed {dataset}/{row}: {entry['speed']}", flush=True)
            save_results(results, args.results)


def _time_model(model, batch: int, repeats: int, dtype):
    """Seconds of one training step and of one forward pass at `batch`, each the best of `repeats`."""
    channels = model.config.in_channels
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sample = torch.randn(batch, channels, 32, 32).to(memory_format=torch.channels_last)
    timesteps = torch.randint(0, 300, (batch,))
    autocast = {"device_type": "cpu", "dtype": dtype, "enabled": dtype is not None}

    def train_step():
        with torch.autocast(**autocast):
            loss = torch.nn.functional.mse_loss(model(sample, timesteps).sample.float(), sample)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def forward():
        with torch.inference_mode(), torch.autocast(**autocast):
            model(sample, timesteps)

    train_seconds = best_seconds(train_step, repeats)
    model.eval()
    return train_seconds, best_seconds(forward, repeats)


# ---------------------------------------------------------------------------------------------------------- report


def report(args, results: dict) -> str:
    lines = []
    for dataset in args.datasets:
        rows = [(row, results["rows"].get(row_key(dataset, row), {})) for row in args.rows]
        floor = next((e["eval"]["floor"] for _, e in rows if "eval" in e), None)
        lines.append(
            f"\n{dataset}: n = {num_samples(args, dataset)}, {DATASETS[dataset]['features']} features"
            + (f", real-vs-real floor FID {floor['fid']:.1f}" if floor else "")
        )
        # KID in Inception features is a few hundredths: shown x1000, as is usual; in the classifier's, as it is.
        kid_scale = 1000 if DATASETS[dataset]["features"] == "inception" else 1
        kid_header = "KID x1000" if kid_scale > 1 else "KID"
        columns = ["row", "parameters", "FID", kid_header, "precision", "recall", "train img/s", "sample img/s"]
        columns.append("grid")
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for row, entry in rows:
            scores = entry.get("eval", {}).get("scores")
            speed = entry.get("speed", {})
            cells = [row, f"{entry['params'] / 1e6:.1f}M" if "params" in entry else ""]
            if scores:
                cells += [
                    f"{scores['fid']:.1f}",
                    f"{scores['kid_mean'] * kid_scale:.0f} +- {scores['kid_std'] * kid_scale:.0f}",
                    f"{scores['precision']:.2f}",
                    f"{scores['recall']:.2f}",
                ]
            else:
                status = "sampled, not scored yet" if "sample" in entry else "not run"
                cells += [entry.get("train", {}).get("error", status)[:40].replace("\n", " ")] + [""] * 3
            cells += [str(speed.get("train_images_per_second", "")), str(speed.get("sample_images_per_second", ""))]
            cells.append(f"![](docs/placement_study/{dataset}-{row}.png)" if scores else "")
            lines.append("| " + " | ".join(cells) + " |")
        scored = sorted((e["eval"]["scores"]["fid"], row, e) for row, e in rows if "eval" in e)
        if len(scored) >= 2:
            (best_fid, best, best_entry), (second_fid, second, second_entry) = scored[0], scored[1]
            kid_gap = best_entry["eval"]["scores"]["kid_mean"] - second_entry["eval"]["scores"]["kid_mean"]
            kid_noise = best_entry["eval"]["scores"]["kid_std"] + second_entry["eval"]["scores"]["kid_std"]
            verdict = "outside" if abs(kid_gap) > kid_noise else "within"
            lines.append(
                f"best: {best} (FID {best_fid:.1f}); next: {second} (FID {second_fid:.1f}); their KID gap "
                f"{abs(kid_gap) * kid_scale:.1f} is {verdict} the sum of their KID standard deviations "
                f"({kid_noise * kid_scale:.1f}{', both x1000' if kid_scale > 1 else ''})."
            )
    return "\n".join(lines)


def main(argv=None):
    args = parse_arguments(argv)
    if args.quick:
        import tempfile

        temp = Path(tempfile.mkdtemp(prefix="placement-study-"))
        args.work_dir, args.results, args.grids = str(temp / "work"), str(temp / "results.json"), str(temp / "grids")
    results = load_results(args.results)
    settings = results.setdefault("settings", {})
    settings.update(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        sampler=f"DDIM {args.inference_steps} steps, seed 0",
    )
    # Merged, not replaced: a run on one dataset keeps the other's entry.
    settings.setdefault("datasets", {}).update(
        {d: {**DATASETS[d], "num_samples": num_samples(args, d)} for d in args.datasets}
    )
    stages = ["train", "sample", "score", "speed", "report"] if args.stage == "all" else [args.stage]
    if "train" in stages:
        stage_train(args, results)
    if "sample" in stages:
        stage_sample(args, results)
    if "score" in stages:
        stage_score(args, results)
    if "speed" in stages:
        stage_speed(args, results)
    save_results(results, args.results)
    print(report(args, results))
    if args.quick:
        shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
