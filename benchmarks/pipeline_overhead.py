"""Pipeline overhead: the time `KiitDDPMPipeline.__call__` spends outside the unet and `scheduler.step`.

    python benchmarks/pipeline_overhead.py [--quick] [--batch 16] [--steps 100] [--rounds 5] [--device cpu]

The pipeline runs as users run it; hooks time each unet forward and each `scheduler.step` inside it, so there is no
second, hand-written sampling loop to keep in step with the real one. What remains of the call (input checks, the
progress bar, the per-step non-finite check, callbacks, output conversion) is the overhead. The ratio printed is the
call's time over the time of its unet and scheduler work (median over rounds). Target: at most 1.02.
"""

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.training import DEFAULT_MODEL_CONFIG

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_argument, machine, resolve_device, results_path, synchronize  # noqa: E402


class WorkTimer:
    """Adds up the seconds spent in the unet's forward and in `scheduler.step` during pipeline calls."""

    def __init__(self, pipe: KiitDDPMPipeline, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self._started = None
        pipe.unet.register_forward_pre_hook(lambda module, args: self._start())
        pipe.unet.register_forward_hook(lambda module, args, output: self._stop())
        step = pipe.scheduler.step

        @functools.wraps(step)  # the pipeline reads the signature to pass `generator`
        def timed_step(*args, **kwargs):
            self._start()
            output = step(*args, **kwargs)
            self._stop()
            return output

        pipe.scheduler.step = timed_step

    def _start(self):
        synchronize(self.device)
        self._started = time.perf_counter()

    def _stop(self):
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pipeline_overhead.json"))
    add_device_argument(parser)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    steps, rounds = (10, 2) if args.quick else (args.steps, args.rounds)
    torch.manual_seed(0)
    unet = SimpleUNet2DModel(**{**DEFAULT_MODEL_CONFIG, "in_channels": 1, "out_channels": 1, "sample_size": 32})
    pipe = KiitDDPMPipeline(unet=unet.eval().to(device), scheduler=KiitDDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    timer = WorkTimer(pipe, torch.device(device))
    pipe(batch_size=args.batch, num_inference_steps=2, generator=torch.manual_seed(0))  # warm-up
    call_times, work_times = [], []
    for round_index in range(rounds):
        timer.seconds = 0.0
        start = time.perf_counter()
        pipe(batch_size=args.batch, num_inference_steps=steps, generator=torch.manual_seed(round_index))
        synchronize(device)
        call_times.append(time.perf_counter() - start)
        work_times.append(timer.seconds)
    ratio = statistics.median(c / w for c, w in zip(call_times, work_times))
    rounded = {name: [round(t, 3) for t in times] for name, times in (("call", call_times), ("work", work_times))}
    print(f"pipeline call {rounded['call']} s, of which unet + step {rounded['work']} s")
    print(f"call / (unet + step) = {ratio:.4f} (target <= 1.02), batch {args.batch}, {steps} steps, PIL output")
    if not args.quick:
        result = {"call_s": call_times, "unet_and_step_s": work_times, "ratio": round(ratio, 4), "steps": steps}
        result["machine"] = machine(device)
        results_path(args.out, device).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
