"""Four steps at the quality of three hundred? A distilled student against its teacher's samplers, side by side.

    python benchmarks/few_step.py STUDENT [STUDENT ...] [--teacher mnist] [--num-samples 2000] [--out JSON]
    python benchmarks/few_step.py --quick     # a tiny teacher distilled for a few steps: the smoke test

One run prints, for the teacher with its own 300-step sampler, DDIM at 10/20/50 steps (trailing spacing, its better
one on our zero-terminal-SNR schedules) and SDE-DPM-Solver++ at 10/20 (leading), and for each student (a pipeline
folder that `ddpm-kiit distill` wrote) at 1/2/4/8 steps: U-Net calls per image, seconds per 16-image grid (median of
three, after a warm-up), FID, KID, precision and recall at n = `--num-samples` against the same held-out digits
(`evaluate_pipeline`, classifier features, one `EvaluationCache`), and each distillation's training minutes as the
student's `distill_summary.json` recorded them (a student of a student: the whole chain). Every row samples with the
same seeds and fast-inference settings. The teacher is the pipeline the students' distillations started from.

Targets (issue 28): a student's FID at 4 steps within 10% of the teacher's 300-step FID, at 2 steps within 25%. Each
target is judged on the student made to sample in that many steps (its `default_num_inference_steps`), or on the only
student given.
"""

import argparse
import json
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Optional

import torch

from ddpm_kiit import KiitDDPMPipeline
from ddpm_kiit.evaluation import evaluate_pipeline
from ddpm_kiit.evaluation.evaluate import EvaluationCache
from ddpm_kiit.pretrained import resolve_pipeline
from ddpm_kiit.sampling import DDPM_SCHEDULERS, swap_scheduler
from ddpm_kiit.training.distill import first_teacher, total_train_seconds

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_argument, call_seconds, machine, resolve_device, results_path  # noqa: E402

RESULTS = Path(__file__).parent / "results"
# (row label, sampler name of `ddpm_kiit.sampling.SCHEDULERS` or None for the pipeline's own, steps, spacing)
TEACHER_ROWS = [
    ("teacher", "kiit", None, None),  # the 300-step ancestral sampler the teachers were trained with
    *[("teacher", "ddim", steps, "trailing") for steps in (10, 20, 50)],
    *[("teacher", "dpm-solver++-sde", steps, "leading") for steps in (10, 20)],
]
STUDENT_STEPS = (1, 2, 4, 8)
TARGETS = {4: 1.10, 2: 1.25}  # student FID / teacher 300-step FID


def _quick_student(folder: Path) -> tuple:
    """A tiny v-prediction teacher at 32x32 (the classifier's size) and a student distilled from it in a few steps."""
    from ddpm_kiit import KiitDDPMScheduler, SimpleUNet2DModel
    from ddpm_kiit.cli import distill_main

    torch.manual_seed(0)
    unet = SimpleUNet2DModel(
        sample_size=32, in_channels=1, out_channels=1, block_out_channels=(8, 16), time_embedding_dim=8,
        norm_num_groups=4, norm_type="group",
    )  # fmt: skip
    scheduler = KiitDDPMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True)
    KiitDDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder / "teacher")
    argv = [
        str(folder / "teacher"), "--dataset_name", "mnist", "--steps", "4", "--teacher_steps", "8",
        "--max_train_steps", "4", "--train_batch_size", "8", "--mixed_precision", "no", "--num_sample_images", "1",
        "--output_dir", str(folder / "student"),
    ]  # fmt: skip
    if distill_main(argv) != 0:
        raise SystemExit("the quick distillation failed")
    return str(folder / "teacher"), [str(folder / "student")]


def _rows(teacher, students: dict) -> list:
    rows = [(teacher, *row) for row in TEACHER_ROWS]
    return rows + [(pipe, name, None, steps, None) for name, pipe in students.items() for steps in STUDENT_STEPS]


def student_name(folder: str) -> str:
    """A student's row label: its folder's name, less the shipped folders' `ddpm-kiit-` prefix."""
    return Path(folder).resolve().name.removeprefix("ddpm-kiit-")


def judged_student(students: dict, steps: int) -> Optional[str]:
    """The student a target at `steps` is judged on: the one whose default step count it is, or the only one."""
    if len(students) == 1:
        return next(iter(students))
    made_for = [name for name, pipe in students.items() if pipe.config.get("default_num_inference_steps") == steps]
    return made_for[0] if made_for else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("students", nargs="*", help="Students' pipeline folders (what `ddpm-kiit distill` wrote).")
    parser.add_argument("--teacher", default=None, help="Default: the pipeline the distillations started from.")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--dataset", default="mnist-full", help="Held-out digits to compare against.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="A tiny teacher and student, 20 samples; no results.")
    parser.add_argument("--out", default=None, help="Default: results/few_step.json (_cuda on a GPU).")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if bool(args.students) == args.quick:
        parser.error("give the students' folders, or --quick")
    device = resolve_device(args.device)
    out = Path(args.out) if args.out else results_path(str(RESULTS / "few_step.json"), device)
    with tempfile.TemporaryDirectory() as scratch:
        if args.quick:
            teacher_name, student_paths = _quick_student(Path(scratch))
            num_samples, dataset = 20, "mnist"
        else:
            teacher_name, student_paths = args.teacher, args.students
            num_samples, dataset = args.num_samples, args.dataset
            for path in student_paths:
                if not (Path(path) / "distill_summary.json").is_file():
                    parser.error(f"{path} has no distill_summary.json: pass folders that `ddpm-kiit distill` wrote")
        summaries = {
            student_name(path): json.loads((Path(path) / "distill_summary.json").read_text()) for path in student_paths
        }
        if len(summaries) != len(student_paths):
            parser.error("two students have the same folder name; rename one")
        if teacher_name is None:
            started_from = {first_teacher(summary) for summary in summaries.values()}
            if len(started_from) != 1:
                parser.error(f"the students started from different teachers {sorted(started_from)}; pass --teacher")
            teacher_name = started_from.pop()
        teacher = KiitDDPMPipeline.from_pretrained(resolve_pipeline(teacher_name)).to(device).enable_fast_inference()
        students = {
            name: KiitDDPMPipeline.from_pretrained(path).to(device).enable_fast_inference()
            for name, path in zip(summaries, student_paths)
        }
        rows = _measure(_rows(teacher, students), num_samples, dataset, args.seed, device)
        judged = {steps: judged_student(students, steps) for steps in TARGETS}
    reference = rows[0]["fid"]
    for name, summary in summaries.items():
        minutes = total_train_seconds(summary) / 60
        chain = f", from {first_teacher(summary)} through {summary['teacher']}" if "first_teacher" in summary else ""
        print(f"{name}: distilled in {minutes:.1f} min ({summary['method']}, {summary['optimizer_steps']} optimizer "
              f"steps{chain})")  # fmt: skip
    for steps, bound in TARGETS.items():
        if judged[steps] is None:
            print(f"at {steps} steps: no student samples in {steps} steps by default (target {bound:.2f}x: unjudged)")
            continue
        row = next(r for r in rows if r["model"] == judged[steps] and r["steps"] == steps)
        ratio = row["fid"] / reference
        verdict = "met" if ratio <= bound else "not met"
        print(
            f"{judged[steps]} at {steps} steps: {ratio:.2f}x the teacher's {rows[0]['steps']}-step FID "
            f"(target {bound:.2f}x: {verdict})"
        )
    if not args.quick:
        result = {
            "machine": machine(device),
            "command": "python benchmarks/few_step.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "num_samples": num_samples,
            "seed": args.seed,
            "teacher": str(teacher_name),
            "distillations": summaries,
            "judged": {str(steps): name for steps, name in judged.items()},
            "rows": rows,
        }
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def _measure(configs, num_samples: int, dataset: str, seed: int, device) -> list:
    rows, cache = [], EvaluationCache()  # one feature network and real side for every row
    for pipe, model, sampler, steps, spacing in configs:
        own = pipe.scheduler
        if sampler is not None:
            swap_scheduler(pipe, sampler)
            if spacing:
                pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, timestep_spacing=spacing)
        if steps is None and sampler in DDPM_SCHEDULERS:  # every training timestep, whatever the pipeline's default
            steps = pipe.scheduler.config.num_train_timesteps
        try:
            report = evaluate_pipeline(pipe, dataset, num_samples, seed=seed, num_inference_steps=steps, cache=cache)
            grid = partial(pipe, batch_size=16, generator=torch.manual_seed(seed), num_inference_steps=steps)
            seconds = sorted(call_seconds(grid, 3, device))[1]
        finally:
            pipe.scheduler = own
        calls = steps or pipe.default_inference_steps
        row = {
            "model": model,
            "sampler": sampler or type(own).__name__,
            "steps": calls,
            "unet_calls": calls,
            "seconds_per_grid": round(seconds, 3),
            **{key: report["scores"][key] for key in ("fid", "kid_mean", "kid_std", "precision", "recall")},
            "floor_fid": report["floor"]["fid"],
        }
        rows.append(row)
        print(
            f"{model:<14}{row['sampler']:<18}{calls:>4} U-Net calls  {seconds:6.2f} s/grid  FID {row['fid']:7.2f}  "
            f"KID {row['kid_mean']:7.2f}  precision {row['precision']:.3f}  recall {row['recall']:.3f}",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
