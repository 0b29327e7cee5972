"""Every benchmark runs in --quick mode, so that none of them rots."""

import re
import runpy
import sys
from pathlib import Path

import pytest

from ddpm_kiit.data import NOTO_EMOJI_FONT, UNICODE_EMOJI_TEST

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.mark.parametrize(
    "script",
    [
        "scheduler_step.py",
        "pipeline_overhead.py",
        "blur_speed.py",
        "train_throughput.py",
        "schedule_flaw.py",
        "blur_vs_noise.py",
        "time_to_quality.py",
        "placement_study.py",
        "inference_speed.py",
        "steps_vs_quality.py",
        "machine_limit.py",
        "malloc_settings.py",
        "main_job.py",
        "class_guidance.py",
        "fid_vs_hours.py",
        "few_step.py",
        "student_steps.py",
        pytest.param(
            "text_guidance.py",
            marks=pytest.mark.skipif(
                not (NOTO_EMOJI_FONT.is_file() and UNICODE_EMOJI_TEST.is_file()),
                reason="the built-in emoji need fonts-noto-color-emoji and unicode-data (apt)",
            ),
        ),
        *[
            pytest.param(
                script,
                marks=pytest.mark.skipif(
                    not NOTO_EMOJI_FONT.is_file(), reason="the built-in emoji need fonts-noto-color-emoji (apt)"
                ),
            )
            for script in ("edge_sharpness.py", "patch_speed.py")
        ],
    ],
)
def test_benchmark_runs_in_quick_mode(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, "--quick"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
    assert exit_info.value.code == 0
    output = capsys.readouterr().out
    assert re.search(r"\d+\.\d+", output), f"{script} printed no figure: {output!r}"


def test_steps_vs_quality_reads_the_configs_it_is_given():
    import argparse

    parse = runpy.run_path(str(BENCHMARKS / "steps_vs_quality.py"))["parse_config"]
    assert parse("kiit") == ("kiit", None, None)
    assert parse("dpm-solver++-sde:20:leading") == ("dpm-solver++-sde", 20, "leading")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown sampler 'dpm'"):
        parse("dpm:20")
    with pytest.raises(argparse.ArgumentTypeError, match="steps must be a positive integer, got 'x'"):
        parse("ddim:x")
    with pytest.raises(argparse.ArgumentTypeError, match="spacing must be leading, trailing or linspace"):
        parse("ddim:20:late")


def test_gpu_results_never_overwrite_the_cpu_ones():
    import torch

    common = runpy.run_path(str(BENCHMARKS / "common.py"))
    assert common["results_path"]("results/x.json", torch.device("cpu")) == Path("results/x.json")
    assert common["results_path"]("results/x.json", torch.device("cuda", 0)) == Path("results/x_cuda.json")
    assert common["resolve_device"]("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert common["resolve_device"]("auto") == torch.device("cpu")
        with pytest.raises(SystemExit, match="--device cuda: this machine has no CUDA device; use --device cpu"):
            common["resolve_device"]("cuda")
    with pytest.raises(SystemExit, match="--device mps: the benchmarks run on cpu or cuda"):
        common["resolve_device"]("mps")


def test_steps_vs_quality_refuses_full_with_configs(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["steps_vs_quality.py", "--full", "--configs", "kiit"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(BENCHMARKS / "steps_vs_quality.py"), run_name="__main__")
    assert exit_info.value.code == 2
    assert "give either --full or --configs" in capsys.readouterr().err


def test_student_steps_swaps_one_student_step_for_the_teachers_two_on_ddims_grids():
    from ddpm_kiit import KiitDDPMScheduler
    from ddpm_kiit.training.distill import student_scheduler

    plans = runpy.run_path(str(BENCHMARKS / "student_steps.py"))["plans"]
    teacher = KiitDDPMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True)
    result = plans(student_scheduler(teacher, "progressive", 4), 2)
    teacher_pairs = [("teacher", 299, 224), ("teacher", 224, 149), ("teacher", 149, 74), ("teacher", 74, -1)]
    assert result == {
        "teacher, 4 steps": teacher_pairs,
        "student, 2 steps": [("student", 299, 149), ("student", 149, -1)],
        "student at step 1 (t = 299), teacher elsewhere": [("student", 299, 149), *teacher_pairs[2:]],
        "student at step 2 (t = 149), teacher elsewhere": [*teacher_pairs[:2], ("student", 149, -1)],
    }


def test_student_steps_swaps_a_grid_students_step_for_the_teacher_steps_it_replaced():
    from ddpm_kiit import KiitDDPMScheduler

    plans = runpy.run_path(str(BENCHMARKS / "student_steps.py"))["plans"]
    teacher = KiitDDPMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True)
    result = plans(teacher, 2, timesteps=[299, 224], teacher_steps=4)
    teacher_steps = [("teacher", 299, 224), ("teacher", 224, 149), ("teacher", 149, 74), ("teacher", 74, -1)]
    assert result == {
        "teacher, 4 steps": teacher_steps,
        "student, 2 steps": [("student", 299, 224), ("student", 224, -1)],
        "student at step 1 (t = 299), teacher elsewhere": [("student", 299, 224), *teacher_steps[1:]],
        "student at step 2 (t = 224), teacher elsewhere": [teacher_steps[0], ("student", 224, -1)],
    }


def test_fid_vs_hours_continues_an_earlier_pieces_curve(tmp_path):
    script = runpy.run_path(str(BENCHMARKS / "fid_vs_hours.py"))
    scoring = {"dataset": "mnist-full", "num_samples": 2000, "features": "classifier", "steps": 20}
    scoring["scheduler"] = "DPMSolverMultistepScheduler"
    earlier = {**scoring, "run": "/r/first", "points": [{"step": 100, "hours": 0.5, "fid": 9.0}]}
    later = {**scoring, "run": "/r/second", "points": [{"step": 50, "hours": 0.25, "fid": 8.0}, {"step": 100,
             "hours": 0.5, "fid": 7.0}], "floor": {"fid": 4.0}}  # fmt: skip
    chained = script["continue_from"](earlier, later)
    assert [(p["step"], p["hours"], p["fid"], p["piece"]) for p in chained["points"]] == [
        (100, 0.5, 9.0, 0), (150, 0.75, 8.0, 1), (200, 1.0, 7.0, 1)
    ]  # fmt: skip
    assert chained["pieces"] == [{"run": "/r/first", "points": 1}, {"run": "/r/second", "points": 2}]
    third = script["continue_from"](chained, {**later, "run": "/r/third"})  # a chain of three pieces
    assert [p["piece"] for p in third["points"]] == [0, 1, 1, 2, 2] and third["points"][-1]["hours"] == 1.5
    script["plot"](third, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0
    with pytest.raises(ValueError, match="the earlier run was scored with steps = 20, this one with 50"):
        script["continue_from"](earlier, {**later, "steps": 50})
