"""Every benchmark runs in --quick mode, so that none of them rots."""

import re
import runpy
import sys
from pathlib import Path

import pytest

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
    ],
)
def test_benchmark_runs_in_quick_mode(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, "--quick"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
    assert exit_info.value.code == 0
    output = capsys.readouterr().out
    assert re.search(r"\d+\.\d+", output), f"{script} printed no figure: {output!r}"
