"""Pipeline overhead: `KiitDDPMPipeline.__call__` against a bare loop of the same unet and scheduler calls.

    python benchmarks/pipeline_overhead.py [--quick] [--batch 16] [--steps 100] [--rounds 5] [--device cpu]

Both generate the same images (same generator, same calls); the bare loop skips input checks, the progress bar,
callbacks and output conversion. Rounds alternate. Target: the pipeline within 2% of the bare loop.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers.utils.torch_utils import randn_tensor

from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.training import DEFAULT_MODEL_CONFIG

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_argument, machine, resolve_device, results_path, synchronize  # noqa: E402


@torch.no_grad()
def bare_loop(unet, scheduler, batch: int, steps: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)  # on the CPU, as `torch.manual_seed` gives the pipeline
    config = unet.config
    shape = (batch, config.in_channels, config.sample_size, config.sample_size)
    latents = randn_tensor(shape, generator=generator, device=unet.device)
    scheduler.set_timesteps(steps, device=unet.device)
    for t in scheduler.timesteps:
        latents = scheduler.step(unet(latents, t).sample, t, latents, generator=generator).prev_sample
    images = (latents / 2 + 0.5).clamp(0, 1)
    synchronize(images.device)
    return images


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
    unet = unet.eval().to(device)
    pipe = KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    bare_scheduler = KiitDDPMScheduler()
    piped = pipe(batch_size=args.batch, num_inference_steps=steps, generator=torch.manual_seed(1), output_type="pt")
    bare = bare_loop(unet, bare_scheduler, args.batch, steps, 1)
    torch.testing.assert_close(piped.images.to(bare.device), bare)  # the same work
    pipeline_times, bare_times = [], []
    for round_index in range(rounds):
        start = time.perf_counter()
        images = pipe(
            batch_size=args.batch,
            num_inference_steps=steps,
            generator=torch.manual_seed(round_index),
            output_type="pt",
        ).images
        synchronize(images.device)
        pipeline_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        bare_loop(unet, bare_scheduler, args.batch, steps, round_index)
        bare_times.append(time.perf_counter() - start)
    ratio = statistics.median(pipeline_times) / statistics.median(bare_times)
    print(f"pipeline {[round(t, 3) for t in pipeline_times]} s, bare {[round(t, 3) for t in bare_times]} s")
    print(f"pipeline / bare = {ratio:.4f} (target <= 1.02), batch {args.batch}, {steps} steps")
    if not args.quick:
        result = {"pipeline_s": pipeline_times, "bare_s": bare_times, "ratio": round(ratio, 4), "steps": steps}
        result["machine"] = machine(device)
        results_path(args.out, device).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
