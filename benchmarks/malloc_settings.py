"""Which memory-allocator setting makes CPU training steady and fast, measured side by side in one run.

    python benchmarks/malloc_settings.py [--quick] [--rounds 2] [--steps 6]

Times training steps of the talk's plain model (62M parameters, batch 64, 32x32, bf16 autocast where the CPU has
it, AdamW) in a fresh process per setting, settings alternating round by round: glibc's malloc as it comes, each of
the three glibc settings alone, the three together, and jemalloc and tcmalloc through LD_PRELOAD where they are
installed (Debian: `apt-get install libjemalloc2 libtcmalloc-minimal4`), and the three settings made from inside
the process by `ddpm_kiit.training.allocator.keep_freed_memory` (what `examples/train.py` does by default). glibc
returns large freed blocks to the system and asks for them again at every step (mmap, page faults); the settings keep
them.

Prints each setting's median and spread of step time and its speed-up over the default.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

GLIBC = {
    "MALLOC_MMAP_THRESHOLD_": "17179869184",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "1073741824",
}
PRELOADS = {
    "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
}
WORKER = r"""
import json, sys, time, torch
from ddpm_kiit import SimpleUNet2DModel
from ddpm_kiit.training.loop import default_mixed_precision
steps, quick = int(sys.argv[1]), sys.argv[2] == "1"
if sys.argv[3] == "1":
    from ddpm_kiit.training.allocator import keep_freed_memory
    assert keep_freed_memory() == "set"
torch.manual_seed(0)
overrides = {"block_out_channels": (16, 32, 64)} if quick else {}
model = SimpleUNet2DModel.from_seed_variant("simple", in_channels=1, out_channels=1, **overrides)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
batch = 8 if quick else 64
x, t = torch.randn(batch, 1, 32, 32), torch.randint(0, 300, (batch,))
enabled = default_mixed_precision() == "bf16"
times = []
for step in range(steps + 1):
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
        loss = torch.nn.functional.mse_loss(model(x, t).sample.float(), x)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if step:  # the first step allocates everything once
        times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


# train.py's default (`--tune_malloc`): the same three settings through mallopt(3) from inside the process.
IN_PROCESS = "mallopt in the process"


def settings() -> dict:
    found = {"default": {}}
    found.update({name: {name: value} for name, value in GLIBC.items()})
    found["all three glibc settings"] = dict(GLIBC)
    found[IN_PROCESS] = {}
    for name, library in PRELOADS.items():
        if Path(library).is_file():
            found[name] = {"LD_PRELOAD": library}
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A small model, 2 steps, one round.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="Timed steps per process.")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "malloc_settings.json"))
    args = parser.parse_args(argv)
    rounds, steps = (1, 2) if args.quick else (args.rounds, args.steps)
    base_env = {k: v for k, v in os.environ.items() if k not in GLIBC and k != "LD_PRELOAD"}
    times = {name: [] for name in settings()}
    for _ in range(rounds):
        for name, extra in settings().items():
            output = subprocess.run(
                [sys.executable, "-c", WORKER, str(steps), str(int(args.quick)), str(int(name == IN_PROCESS))],
                env={**base_env, **extra},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            times[name] += json.loads(output.strip().splitlines()[-1])
    base = statistics.median(times["default"])
    rows = {}
    print(f"{'setting':<28}{'median s/step':>14}{'min':>8}{'max':>8}{'speed-up':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        rows[name] = {
            "median_seconds": round(median, 3),
            "min_seconds": round(min(values), 3),
            "max_seconds": round(max(values), 3),
            "speedup": round(base / median, 2),
            "env": settings()[name],
        }
        print(f"{name:<28}{median:>14.3f}{min(values):>8.3f}{max(values):>8.3f}{base / median:>9.2f}x")
    if not args.quick:
        result = {"machine": f"{os.cpu_count()}-core CPU", "steps_per_process": steps, "rounds": rounds, "rows": rows}
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
