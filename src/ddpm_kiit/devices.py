# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""Which device to run on, what it computes natively, and how many CPU threads a process should use."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def native_bf16(device_type: str) -> bool:
    """Whether `device_type` computes bf16 natively: a GPU that supports it, or a CPU with AVX-512 BF16 or AMX."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return device_type == "cpu" and (
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    )


def default_mixed_precision() -> str:
    """bf16 where the hardware computes it natively (a GPU that supports it, or a CPU with AVX-512 BF16 or AMX)."""
    return "bf16" if native_bf16("cuda" if torch.cuda.is_available() else "cpu") else "no"


def resolve_device(name: str = "auto") -> str:
    """
    `"auto"` is the best device present: CUDA, then Apple's MPS, then the CPU, as Diffusers users on a GPU expect.
    Any other name (`"cpu"`, `"cuda"`, `"cuda:1"`, `"mps"`) is checked and returned as it is.
    """
    name = (name or "auto").strip()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this machine has no CUDA device; pass --device auto or --device cpu.")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: MPS is not available here; pass --device auto or --device cpu.")
    if kind not in DEVICE_CHOICES:
        raise ValueError(f"--device {name!r} is not a device; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N).")
    return name


def physical_cores() -> int:
    """Cores this process may run on, counting each physical core once (what torch uses by default)."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:  # psutil comes with accelerate; without it, count logical CPUs
        physical = os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))  # a container or `taskset` may allow fewer
    except AttributeError:  # macOS, Windows
        allowed = physical
    return max(1, min(physical, allowed))


def local_world_size() -> int:
    """How many processes of this run share this machine (set by `accelerate launch`, `torchrun`, MPI)."""
    for name in ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        if os.environ.get(name, "").isdigit():
            return max(1, int(os.environ[name]))
    return 1


def _parent_environment_and_command() -> Optional[tuple]:
    """The launcher's environment as it started, and its command line (Linux only: read from /proc)."""
    proc = Path("/proc") / str(os.getppid())
    try:
        environ = (proc / "environ").read_bytes().split(b"\0")
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    names = {entry.split(b"=", 1)[0].decode(errors="replace") for entry in environ if b"=" in entry}
    return names, [part.decode(errors="replace") for part in cmdline if part]


def launcher_imposed_threads() -> bool:
    """
    Whether `OMP_NUM_THREADS` was set by a launcher's default rather than by the user. With no `accelerate config`,
    `accelerate launch` sets it to 1 for the process it starts, and `torchrun` does the same when it starts more than
    one process: a small model then trains on one core of many. It counts as the user's own choice when the
    launcher's own environment already had `OMP_NUM_THREADS`, or its command line passed
    `--num_cpu_threads_per_process`.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        return False
    launched = "ACCELERATE_DYNAMO_BACKEND" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ
    if not launched:
        return False
    parent = _parent_environment_and_command()
    if parent is None:  # not Linux: trust only a launcher's value of 1, which is its default
        return os.environ["OMP_NUM_THREADS"] == "1"
    names, command = parent
    if "OMP_NUM_THREADS" in names:
        return False
    return not any(part.startswith("--num_cpu_threads_per_process") for part in command)


@dataclass(frozen=True)
class ThreadSetting:
    threads: int
    reason: str

    def __str__(self) -> str:
        return f"{self.threads} CPU thread(s) per process ({self.reason})"


def configure_cpu_threads(num_threads: Optional[int] = None) -> ThreadSetting:
    """
    Sets how many threads torch uses in this process and says why:
    - `num_threads` given (`--num_threads`): that many;
    - a launcher imposed its default (see `launcher_imposed_threads`): this process's share of the physical cores,
      `physical_cores() // local_world_size()`, at least 1;
    - otherwise what the user's environment chose (`OMP_NUM_THREADS`, `--num_cpu_threads_per_process`) or torch's
      default, left as it is.
    """
    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"--num_threads must be at least 1, got {num_threads}.")
        torch.set_num_threads(num_threads)
        return ThreadSetting(num_threads, "--num_threads")
    if launcher_imposed_threads():
        processes = local_world_size()
        share = max(1, physical_cores() // processes)
        torch.set_num_threads(share)
        os.environ["OMP_NUM_THREADS"] = str(share)  # for subprocesses this one starts
        launcher = "torchrun" if "ACCELERATE_DYNAMO_BACKEND" not in os.environ else "accelerate launch"
        return ThreadSetting(
            share, f"{launcher} set OMP_NUM_THREADS=1 by default; {physical_cores()} core(s) / {processes} process(es)"
        )
    source = "OMP_NUM_THREADS" if "OMP_NUM_THREADS" in os.environ else "torch's default"
    return ThreadSetting(torch.get_num_threads(), source)


__all__ = [
    "DEVICE_CHOICES",
    "ThreadSetting",
    "configure_cpu_threads",
    "default_mixed_precision",
    "launcher_imposed_threads",
    "native_bf16",
    "physical_cores",
    "resolve_device",
]
