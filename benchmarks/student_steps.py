"""Which step of a progressive student loses quality? Each of its steps swapped for its teacher's two, one at a time.

    python benchmarks/student_steps.py STUDENT [--teacher NAME] [--num-samples 2000] [--out results/student_steps.json]
    python benchmarks/student_steps.py --quick     # a tiny teacher distilled for a few steps: the smoke test

A progressive student trained for N steps learns, at each point of its teacher's N-step DDIM grid, one step that lands
where the teacher's two steps on the 2N-step grid land. This samples, from the same noise: the teacher on its 2N-step
grid, the student on its N-step grid, and for each student step k the hybrid that takes the teacher's two steps
everywhere except at k (N + 1 U-Net calls where the student takes 1 at k), and scores each by FID, KID, precision
and recall at n = `--num-samples` (`score_samples`, classifier features, one `EvaluationCache`). A step whose hybrid
scores near the teacher is one the student learned well; one near the student's own score is where it loses. A student
on a grid of its own (`ddpm-kiit distill --timesteps`) is taken apart the same way: each of its steps replaces the
teacher's steps up to its next grid point, on the teacher's `--teacher_steps` grid.

The teacher must be the student's last round's: by default the one its `distill_summary.json` names, which is that
only for a one-round distillation (`--teacher_steps` = 2 x `--steps`, like `mnist-2-step`'s); for a student of several
rounds pass `--teacher` (its checkpoints keep each round's teacher in their `teacher` folder).

The steps are deterministic DDIM steps (`ddim_step`, the same arithmetic as the stock `DDIMScheduler.step`, tested in
tests/test_distill.py) between the grids' levels, in bf16 autocast like the pipelines' fast inference.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ddpm_kiit import KiitDDPMPipeline
from ddpm_kiit.evaluation.evaluate import EvaluationCache, score_samples
from ddpm_kiit.pretrained import resolve_pipeline
from ddpm_kiit.training.distill import _NoiseLevels, ddim_step, teacher_grid, teacher_spans

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, results_path  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def plans(scheduler, student_steps: int, timesteps=None, teacher_steps=None) -> dict:
    """Sampling plans as lists of (who, from level, to level): the teacher's steps, the student's, and each hybrid.
    A uniform student (`timesteps` None) steps on DDIM's trailing N-step grid, each step replacing two of its
    teacher's on the 2N-step grid; a student of `ddpm-kiit distill --timesteps` steps on its own grid, each step
    replacing the teacher's steps up to its next grid point on the `teacher_steps` grid (`teacher_spans`). Level -1
    is the clean image, as `ddpm_kiit.training.distill` trains them."""
    if timesteps is None:
        fine, teacher_steps = teacher_grid(scheduler.config, 2 * student_steps), 2 * student_steps
        timesteps = fine[::2]
        if timesteps != teacher_grid(scheduler.config, student_steps):
            raise ValueError(f"The {student_steps}-step grid does not nest in the {teacher_steps}-step one.")
    else:
        fine = teacher_grid(scheduler.config, teacher_steps)
    levels, spans = fine + [-1], teacher_spans(timesteps, fine)

    def teacher_span(k):
        start, end = spans[k]
        return [("teacher", levels[p], levels[p + 1]) for p in range(start, end)]

    def student_step(k):
        start, end = spans[k]
        return [("student", levels[start], levels[end])]

    steps = range(len(spans))
    result = {
        f"teacher, {teacher_steps} steps": [s for k in steps for s in teacher_span(k)],
        f"student, {len(spans)} steps": [s for k in steps for s in student_step(k)],
    }
    for swapped in steps:
        name = f"student at step {swapped + 1} (t = {timesteps[swapped]}), teacher elsewhere"
        result[name] = [s for k in steps for s in (student_step(k) if k == swapped else teacher_span(k))]
    return result


@torch.no_grad()
def sample(nets: dict, plan: list, levels, prediction_type: str, shape, num_samples: int, seed: int, batch_size=250):
    """`num_samples` images in [-1, 1], 8-bit rounded like a saved PNG, each batch seeded from `seed` and its index."""
    batches = []
    for index, start in enumerate(range(0, num_samples, batch_size)):
        count = min(batch_size, num_samples - start)
        generator = torch.Generator().manual_seed(seed * 100_003 + index)
        sample = torch.randn(count, *shape, generator=generator)
        for who, level, to in plan:
            t, t_to = torch.full((count,), level), torch.full((count,), to)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                prediction = nets[who](sample, t).sample
            sample = ddim_step(prediction.float(), sample, t, t_to, levels, prediction_type)
        batches.append(((sample.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1)
    return torch.cat(batches)


def _quick_student(folder: Path) -> tuple:
    from few_step import _quick_student as make

    teacher, (student,) = make(folder)
    return teacher, student


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("student", nargs="?", help="A progressive student's folder (what `ddpm-kiit distill` wrote).")
    parser.add_argument("--teacher", default=None, help="Default: the teacher its distill_summary.json names.")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--dataset", default="mnist-full", help="Held-out images to compare against.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="A tiny teacher and student, 20 samples; no results.")
    parser.add_argument("--out", default=None, help="Default: results/student_steps.json.")
    args = parser.parse_args(argv)
    if (args.student is None) != args.quick:
        parser.error("give the student's folder, or --quick")
    with tempfile.TemporaryDirectory() as scratch:
        if args.quick:
            teacher_name, student_path = _quick_student(Path(scratch))
            num_samples, dataset = 20, "mnist"
        else:
            student_path, num_samples, dataset = args.student, args.num_samples, args.dataset
            teacher_name = args.teacher
            if not (Path(student_path) / "distill_summary.json").is_file():
                parser.error(f"{student_path} has no distill_summary.json; pass a folder `ddpm-kiit distill` wrote")
        # What it learned (its default may differ, like mnist-fast's): the grid its hybrids are built on.
        trained = json.loads((Path(student_path) / "distill_summary.json").read_text())
        if trained["method"] != "progressive":
            parser.error(f"{student_path} is a {trained['method']} student; this takes progressive ones")
        teacher_name = teacher_name or trained["teacher"]
        student = KiitDDPMPipeline.from_pretrained(student_path)
        teacher = KiitDDPMPipeline.from_pretrained(resolve_pipeline(teacher_name))
        steps = student.config.get("default_num_inference_steps")
        scheduler = student.scheduler
        levels = _NoiseLevels(scheduler.alphas_cumprod, "cpu")
        nets = {"student": student.unet.eval(), "teacher": teacher.unet.eval()}
        config = student.unet.config
        cache, rows = EvaluationCache(), []
        for name, plan in tqdm(
            plans(scheduler, trained["steps"], trained.get("timesteps"), trained.get("teacher_steps")).items(),
            desc="Plans",
        ):
            images = sample(
                nets, plan, levels, scheduler.config.prediction_type, (config.in_channels, config.sample_size,
                config.sample_size), num_samples, args.seed,
            )  # fmt: skip
            report = score_samples(images, dataset, seed=args.seed, cache=cache)
            row = {
                "plan": name,
                "unet_calls": len(plan),
                **{key: report["scores"][key] for key in ("fid", "kid_mean", "precision", "recall")},
                "floor_fid": report["floor"]["fid"],
            }
            rows.append(row)
            print(f"{name:<52}{len(plan):>3} U-Net calls  FID {row['fid']:7.2f}  precision {row['precision']:.3f}  "
                  f"recall {row['recall']:.3f}", flush=True)  # fmt: skip
    if not args.quick:
        out = Path(args.out) if args.out else results_path(str(RESULTS / "student_steps.json"), torch.device("cpu"))
        result = {
            "machine": machine(torch.device("cpu")),
            "command": "python benchmarks/student_steps.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "student": str(student_path),
            "teacher": str(teacher_name),
            "student_default_steps": steps,
            "num_samples": num_samples,
            "seed": args.seed,
            "rows": rows,
        }
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
