"""Scheduler overhead per call: our `step` and `add_noise` against Diffusers' `DDPMScheduler`, same tensors.

    python benchmarks/scheduler_step.py [--quick] [--batch 16] [--calls 2000] [--device cpu]

Batch 16 x 3 x 32 x 32 on the CPU (the target's machine; `--device cuda` on a GPU), both schedulers built with
the talk's config (T = 300, linear betas), timesteps cycling over the whole chain; rounds alternate between the two
so machine noise hits both. Prints microseconds per call and the ratios. Targets: `step` at most 0.75x Diffusers'
time, `add_noise` no slower.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from ddpm_kiit import KiitDDPMScheduler

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_argument, machine, resolve_device, results_path, synchronize  # noqa: E402


def per_call(function, calls: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for i in range(calls):
        function(i)
    synchronize(device)
    return (time.perf_counter() - start) / calls * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A few hundred calls, for the smoke test.")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "scheduler_step.json"))
    add_device_argument(parser)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    calls, rounds = (200, 2) if args.quick else (args.calls, args.rounds)
    torch.manual_seed(0)
    sample = torch.randn(args.batch, 3, 32, 32, device=device)
    model_output = torch.randn_like(sample)
    noise = torch.randn_like(sample)
    ours, theirs = KiitDDPMScheduler(), DDPMScheduler(num_train_timesteps=300)
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(300, device=device)
    timesteps = ours.timesteps  # the same int64 tensor of timesteps for both, as a pipeline passes them
    per_sample = [torch.randint(0, 300, (args.batch,), device=device) for _ in range(64)]
    generator = torch.Generator(device).manual_seed(0)

    def step(scheduler):
        return lambda i: scheduler.step(model_output, timesteps[i % 300], sample, generator=generator)

    def add_noise(scheduler):
        return lambda i: scheduler.add_noise(sample, noise, per_sample[i % 64])

    results = {"step": {"ours": [], "diffusers": []}, "add_noise": {"ours": [], "diffusers": []}}
    for _ in range(rounds):
        for name, factory in (("step", step), ("add_noise", add_noise)):
            results[name]["ours"].append(per_call(factory(ours), calls, device))
            results[name]["diffusers"].append(per_call(factory(theirs), calls, device))
    summary = {"machine": machine(device), "threads": torch.get_num_threads(), "batch": args.batch}
    for name, targets in (("step", 0.75), ("add_noise", 1.0)):
        mine, stock = statistics.median(results[name]["ours"]), statistics.median(results[name]["diffusers"])
        summary[name] = {"ours_us": round(mine, 1), "diffusers_us": round(stock, 1), "ratio": round(mine / stock, 3)}
        print(
            f"{name:<10} ours {mine:7.1f} us   diffusers {stock:7.1f} us   ratio {mine / stock:.3f} (target {targets})"
        )
    if not args.quick:
        out = results_path(args.out, device)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
