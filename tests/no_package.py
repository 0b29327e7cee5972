"""Runs Python code in a fresh process where ddpm-kiit is not importable, as on a machine that never installed it.

The package is installed in editable mode (a meta-path finder, not just a `sys.path` entry), so the script first sets
`sys.modules["ddpm_kiit"] = None`, which makes every `import ddpm_kiit` raise `ImportError`, drops any `sys.path`
entry that holds a `ddpm_kiit` folder, and checks that the import does fail before running the code. The child uses
the parent's torch thread count, so that float reductions split the same way and images compare bit for bit.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import numpy as np
import torch

PRELUDE = """\
import os
import sys

sys.modules["ddpm_kiit"] = None  # as if ddpm-kiit were not installed
sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "ddpm_kiit"))]
try:
    import ddpm_kiit  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("ddpm_kiit is importable in the no-package process")

import numpy as np
import torch

torch.set_num_threads({threads})


def sample(pipe):  # the same call as `no_package.sample` in the test process
    pipe.set_progress_bar_config(disable=True)
    ask = {{"prompt": ["red apple", "grinning face"]}} if "text_encoder" in pipe.components else {{"batch_size": 2}}
    return pipe(**ask, num_inference_steps=5, generator=torch.manual_seed(0), output_type="np").images
"""


def sample(pipe) -> np.ndarray:
    """Images that a test compares across processes: few steps, a fixed seed, floats (as the child's `sample`); two
    prompts for a text-to-image pipeline."""
    pipe.set_progress_bar_config(disable=True)
    ask = {"prompt": ["red apple", "grinning face"]} if "text_encoder" in pipe.components else {"batch_size": 2}
    return pipe(**ask, num_inference_steps=5, generator=torch.manual_seed(0), output_type="np").images


def run_without_package(code: str, workdir: Path, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Runs `code` after the prelude in `workdir`; the modules Diffusers copies from folders go under `workdir`
    (unless the environment already names an HF_HOME, as the loopback Hub's fixture does). Returns the finished
    process; the caller checks `returncode`, `stdout` and `stderr`."""
    script = PRELUDE.format(threads=torch.get_num_threads()) + textwrap.dedent(code)
    environment = {**os.environ, **(env or {})}
    environment.setdefault("HF_HOME", str(Path(workdir) / "hf_home"))
    environment.setdefault("HF_MODULES_CACHE", str(Path(environment["HF_HOME"]) / "modules"))
    environment.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, env=environment, capture_output=True, text=True, timeout=300
    )


def check(process: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert process.returncode == 0, f"the no-package process failed:\n{process.stdout}\n{process.stderr[-4000:]}"
    return process
