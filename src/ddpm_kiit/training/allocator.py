"""Keeps glibc's malloc from handing a training step's freed memory back to the system.

With its defaults, glibc serves blocks above a (dynamic) size with `mmap` and trims the heap top when much of it is
free, so on a CPU every training step unmaps its activations and gradients and maps them again with fresh page faults:
on a 2-core VM that made a step of the talk's model swing between 1.0 and 3.4 s. `benchmarks/malloc_settings.py`
measures the settings side by side. They can be set from outside (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
`MALLOC_TOP_PAD_`) but only before the process starts, which `accelerate launch` users rarely do; `mallopt(3)` sets
the same three from inside. No maintained Python package wraps `mallopt`, hence ctypes here.
"""

import ctypes
import ctypes.util
import os
import sys

# Parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
# mallopt takes a C int; INT_MAX bytes (2 GiB) is above any single tensor a small diffusion model allocates.
NEVER = 2**31 - 1
SETTINGS = {M_MMAP_THRESHOLD: NEVER, M_TRIM_THRESHOLD: NEVER, M_TOP_PAD: 1 << 30}
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> str:
    """
    Sets glibc's mmap threshold and trim threshold to 2 GiB and its top pad to 1 GiB in this process, so that memory
    freed by one training step is reused by the next. Memory the process holds then stays at its peak until it exits.

    Returns what was done, for the run's log: "set", or why nothing was (not Linux with glibc, another allocator
    preloaded, or the user's own `MALLOC_*` settings, which are left alone).
    """
    if not sys.platform.startswith("linux"):
        return "skipped: not Linux"
    if any(name in os.environ for name in ENVIRONMENT):
        return "skipped: MALLOC_* settings come from the environment"
    if "malloc" in os.environ.get("LD_PRELOAD", ""):
        return "skipped: another allocator is preloaded"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return "skipped: no C library found"
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc's own symbol: musl has no such mallopt settings
        return "skipped: the C library is not glibc"
    if not all(libc.mallopt(param, value) == 1 for param, value in SETTINGS.items()):
        return "skipped: glibc refused a mallopt setting"
    return "set"
