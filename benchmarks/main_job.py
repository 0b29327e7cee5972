"""The README's main job, run exactly as a user types it, and its speed against `python examples/train.py`.

    python benchmarks/main_job.py                  # speed check, then the full main job and its FID (about 45 min)
    python benchmarks/main_job.py --skip-full      # the speed check only (about 15 min)
    python benchmarks/main_job.py --skip-speed     # the main job only (about 35 min)
    python benchmarks/main_job.py --quick          # a tiny run of both, for the smoke test; writes no results

1. Speed, side by side: `accelerate launch examples/train.py` (no Accelerate config) and `python examples/train.py`,
   each with `--max_train_steps N` added, alternating for `--rounds` rounds so that machine noise hits both. Images/s
   come from each run's `train_summary.json` (the training loop's own clock). Target: accelerate >= 0.95x python.
2. The main job: the README's first command's last part (read from README.md, so the two cannot drift apart), run
   unchanged in a scratch folder that holds links to `examples/` and this virtual environment, with no
   `OMP_NUM_THREADS` and no Accelerate config (`HF_HOME` points to an empty folder). Its minutes, images/s and threads
   come from its `train_summary.json`, its wall-clock from this script's clock.
3. Its quality: `ddpm-kiit evaluate` on the pipeline it wrote, with the pipeline's own 300-step sampler under
   `--fast-inference` (bf16 autocast: float32 sampling of 1,000 images takes over half an hour on 2 cores), against
   the `mnist-full` test digits (`--num-samples`, default 1,000), real-vs-real floor beside it.

Results: results/main_job.json.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "main_job.json"
QUICK_MODEL = '{"block_out_channels": [8, 16], "time_embedding_dim": 8, "norm_num_groups": 4, "attention_type": null}'
QUICK_FLAGS = ["--max_train_samples", "64", "--train_batch_size", "8", "--model_config", QUICK_MODEL]


def readme_main_command() -> str:
    """The part of the README's first command that runs the job (after the set-up steps joined by `&&`)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)\n```", readme, re.S)
    if block is None:
        raise SystemExit("README.md has no ```bash block: where did the main command go?")
    command = block.group(1).strip().split(" && ")[-1]
    if "examples/train.py" not in command:
        raise SystemExit(f"README.md's first command does not end with the training job: {command!r}")
    return command


def user_environment(scratch: Path) -> dict:
    """A new user's shell: no thread setting, no Accelerate config, nothing of this process's launcher."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env = {k: v for k, v in env.items() if not k.startswith(("ACCELERATE_", "TORCHELASTIC_"))}
    env["HF_HOME"] = str(scratch / "hf-home")
    return env


def scratch_folder(parent: Path, name: str) -> Path:
    """A working folder in which the README's relative paths (`.venv/bin/...`, `examples/...`) resolve."""
    folder = parent / name
    folder.mkdir()
    (folder / "examples").symlink_to(ROOT / "examples")
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


def run(command: str, cwd: Path, env: dict, log: Path) -> float:
    """Runs `command` in a shell, its output to `log`; returns the wall-clock seconds. Fails loudly with the log."""
    start = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(command, shell=True, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"`{command}` failed ({result.returncode}); the end of its output:\n{tail}")
    return seconds


def speed_check(work: Path, steps: int, rounds: int, extra: list) -> dict:
    flags = " ".join([f"--max_train_steps {steps}", "--checkpointing_steps 100000", shlex.join(extra)])
    commands = {
        "accelerate launch": f".venv/bin/accelerate launch examples/train.py {flags}",
        "python": f".venv/bin/python examples/train.py {flags}",
    }
    rates = {name: [] for name in commands}
    threads = {}
    for round_index in range(rounds):
        for name, command in commands.items():
            folder = scratch_folder(work, f"speed-{round_index}-{name.split()[0]}")
            run(command, folder, user_environment(folder), folder / "log.txt")
            summary = json.loads((folder / "outputs" / "ddpm-kiit-mnist" / "train_summary.json").read_text())
            rates[name].append(summary["images_per_second"])
            threads[name] = summary["threads_per_process"]
            print(f"  {name}: {summary['images_per_second']:.1f} images/s, threads {summary['threads_per_process']}")
    ratio = statistics.median(rates["accelerate launch"]) / statistics.median(rates["python"])
    return {"steps": steps, "commands": commands, "images_per_second": rates, "threads": threads, "ratio": ratio}


def main_job(work: Path, command: str, num_samples: int, extra: list, evaluate: bool, reuse: bool = False) -> dict:
    folder = work / "main-job"
    command = " ".join([command, shlex.join(extra)]).strip()
    output = folder / "outputs" / "ddpm-kiit-mnist"
    if reuse and (output / "train_summary.json").is_file():  # a finished run of an earlier call: score it only
        wall = (
            json.loads((folder / "wall_seconds.json").read_text())
            if (folder / "wall_seconds.json").is_file()
            else None
        )
    else:
        folder = scratch_folder(work, "main-job")
        wall = run(command, folder, user_environment(folder), folder / "log.txt")
        (folder / "wall_seconds.json").write_text(json.dumps(wall))
    summary = json.loads((output / "train_summary.json").read_text())
    result = {"command": command, "wall_minutes": None if wall is None else round(wall / 60, 2), **summary}
    result["train_minutes"] = round(summary["train_seconds"] / 60, 2)
    shutil.copyfile(output / "samples.png", work / "main_job_samples.png")
    if evaluate:
        report = folder / "evaluate.json"
        evaluate_command = (
            f".venv/bin/ddpm-kiit evaluate outputs/ddpm-kiit-mnist --dataset mnist-full "
            f"--num-samples {num_samples} --fast-inference --out {report} --overwrite"
        )
        result["evaluate_command"] = evaluate_command
        if not (reuse and report.is_file()):
            seconds = run(evaluate_command, folder, user_environment(folder), folder / "evaluate-log.txt")
            (folder / "evaluate_seconds.json").write_text(json.dumps(seconds))
        seconds_file = folder / "evaluate_seconds.json"
        seconds = json.loads(seconds_file.read_text()) if seconds_file.is_file() else None
        result["evaluate_minutes"] = None if seconds is None else round(seconds / 60, 2)
        result["evaluation"] = json.loads(report.read_text())
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny runs, for the smoke test; writes no results.")
    parser.add_argument("--speed-steps", type=int, default=300, help="Training steps of each speed-check run.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=1000, help="Samples for the main job's FID.")
    parser.add_argument("--skip-full", action="store_true", help="Only the speed check.")
    parser.add_argument("--skip-speed", action="store_true", help="Only the main job (keeps the last speed check).")
    parser.add_argument("--keep", default=None, help="Keep the runs' folders here (default: a temporary folder).")
    parser.add_argument(
        "--reuse", action="store_true", help="With --keep: score the main job already finished there, do not retrain."
    )
    args = parser.parse_args(argv)
    extra = QUICK_FLAGS + ["--resolution", "16"] if args.quick else []
    if args.quick:
        args.speed_steps, args.rounds = 2, 1

    command = readme_main_command()
    work = Path(args.keep or tempfile.mkdtemp(prefix="ddpm-kiit-main-job-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"README's main command: {command}\nrunning in {work}")
    # Each part replaces its own entry of the last results, so the two parts may run at different times.
    result = json.loads(RESULTS.read_text()) if RESULTS.is_file() and not args.quick else {}
    result.update({"readme_command": command, "machine": f"{os.cpu_count()}-core CPU"})
    if not args.skip_speed:
        print(f"Speed, {args.rounds} round(s) of {args.speed_steps} steps each:")
        result["speed"] = speed_check(work, args.speed_steps, args.rounds, extra)
        print(f"accelerate launch / python = {result['speed']['ratio']:.3f} (target >= 0.95)")
    if not args.skip_full:
        print("The main job, as typed:")
        job_extra = extra + ["--max_train_steps", "2"] if args.quick else extra  # the smoke test: a few steps only
        job = main_job(work, command, args.num_samples, job_extra, evaluate=not args.quick, reuse=args.reuse)
        result["main_job"] = job
        print(
            f"main job: {job['train_minutes']:.1f} min of training ({job['wall_minutes']} min wall-clock), "
            f"{job['images_per_second']:.1f} images/s, {job['steps']} steps, threads {job['threads_per_process']}"
        )
        if "evaluation" in job:
            scores = job["evaluation"]
            fid, floor = scores["scores"]["fid"], scores["floor"]["fid"]
            print(f"FID {fid:.2f} at n = {scores['num_samples']} (floor {floor:.2f})")
    if not args.quick:
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        if not args.skip_full:
            shutil.copyfile(work / "main_job_samples.png", ROOT / "docs" / "main_job_samples.png")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
