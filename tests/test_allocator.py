import subprocess
import sys

import pytest

from ddpm_kiit.training.allocator import ENVIRONMENT, keep_freed_memory

# Allocates, touches and frees 64 MiB through the C library, then prints how much of it the process still holds.
PROBE = r"""
import ctypes, ctypes.util, sys
from ddpm_kiit.training.allocator import keep_freed_memory
if sys.argv[1] == "1":
    assert keep_freed_memory() == "set"
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20

def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

pointer = libc.malloc(size)
ctypes.memset(pointer, 1, size)
held = resident()
libc.free(pointer)
print((held - resident()) / size)
"""


def released_share(tuned: bool) -> float:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* or LD_PRELOAD from the test runner's environment
    run = subprocess.run([sys.executable, "-c", PROBE, str(int(tuned))], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return float(run.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_kept_for_the_next_step_only_when_tuned():
    # glibc's default serves a 64 MiB block with mmap and unmaps it on free; tuned, it stays in the heap.
    assert released_share(tuned=False) > 0.9
    assert released_share(tuned=True) < 0.1


@pytest.mark.parametrize("name", ENVIRONMENT)
def test_the_users_own_settings_are_left_alone(monkeypatch, name):
    monkeypatch.setenv(name, "1")
    assert keep_freed_memory() == "skipped: MALLOC_* settings come from the environment"


def test_a_preloaded_allocator_is_left_alone(monkeypatch):
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    assert keep_freed_memory() == "skipped: another allocator is preloaded"
