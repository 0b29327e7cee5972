"""How far training and sampling are from this machine's limit, measured side by side in one run.

    python benchmarks/machine_limit.py [--quick] [--device cpu]

- FLOPs of one forward pass of the shipped MNIST model's architecture (`torch.utils.flop_counter.FlopCounterMode`;
  a training step counts 3x: forward, and backward for inputs and weights);
- achieved GFLOP/s of a training step (batch 64, bf16 autocast where the CPU has it, AdamW) and of a sampling step
  (batch 16, the pipeline's fast-inference settings), against large fp32 and bf16 matrix products on the same
  machine in the same run;
- where the time of one sampling step goes: the top operators of `torch.profiler` (by device time on a GPU).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ddpm_kiit import SimpleUNet2DModel
from ddpm_kiit.devices import native_bf16
from ddpm_kiit.models import IMPROVED_CONFIG

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_argument, best_seconds, machine, resolve_device, results_path  # noqa: E402


def matmul_gflops(dtype: torch.dtype, size: int, repeats: int, device: torch.device) -> float:
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    return 2 * size**3 / best_seconds(lambda: a @ b, repeats, device) / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A tiny model and small matrices.")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "machine_limit.json"))
    add_device_argument(parser)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    config = {**IMPROVED_CONFIG, "in_channels": 1, "out_channels": 1}
    if args.quick:
        config = {"block_out_channels": (8, 16), "time_embedding_dim": 8, "in_channels": 1, "out_channels": 1}
    # A GPU's matmul peak needs larger products than the CPU's to show.
    repeats, size = (1, 256) if args.quick else (5, 2048 if device.type == "cpu" else 8192)
    bf16 = native_bf16(device.type)
    autocast = {"device_type": device.type, "dtype": torch.bfloat16, "enabled": bf16}
    torch.manual_seed(0)
    model = SimpleUNet2DModel(**config).to(device, memory_format=torch.channels_last)

    sample = torch.randn(1, 1, 32, 32, device=device)
    with FlopCounterMode(display=False) as counter:
        model(sample, torch.tensor([10], device=device))
    forward_flops = counter.get_total_flops()

    train_batch, sample_batch = 64, 16
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(train_batch, 1, 32, 32, device=device).to(memory_format=torch.channels_last)
    t = torch.randint(0, 300, (train_batch,), device=device)

    def train_step():
        with torch.autocast(**autocast):
            loss = torch.nn.functional.mse_loss(model(x, t).sample.float(), x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    y = torch.randn(sample_batch, 1, 32, 32, device=device).to(memory_format=torch.channels_last)
    step_timestep = torch.tensor([10], device=device)

    def sampling_step():
        with torch.inference_mode(), torch.autocast(**autocast):
            model(y, step_timestep)

    train_seconds = best_seconds(train_step, repeats, device)
    model.eval()
    sample_seconds = best_seconds(sampling_step, repeats, device)
    fp32_peak = matmul_gflops(torch.float32, size, repeats, device)
    bf16_peak = matmul_gflops(torch.bfloat16, size, repeats, device)
    train_gflops = 3 * forward_flops * train_batch / train_seconds / 1e9
    sample_gflops = forward_flops * sample_batch / sample_seconds / 1e9
    peak = bf16_peak if bf16 else fp32_peak

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        sampling_step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(profiler.key_averages(), key=lambda e: getattr(e, attribute), reverse=True)
    total = sum(getattr(e, attribute) for e in events)
    top = [{"op": e.key, "share": round(getattr(e, attribute) / total, 3), "calls": e.count} for e in events[:8]]

    print(f"forward pass: {forward_flops / 1e9:.3f} GFLOP per 32x32 image")
    print(f"large matmul ({size}x{size}): fp32 {fp32_peak:.0f} GFLOP/s, bf16 {bf16_peak:.0f} GFLOP/s")
    print(
        f"training step (batch {train_batch}): {train_gflops:.0f} GFLOP/s = {train_gflops / peak:.2f} of the "
        f"{'bf16' if bf16 else 'fp32'} matmul"
    )
    print(f"sampling step (batch {sample_batch}): {sample_gflops:.0f} GFLOP/s = {sample_gflops / peak:.2f} of it")
    print(f"one sampling step, self {'GPU' if device.type == 'cuda' else 'CPU'} time by operator:")
    for row in top:
        print(f"  {row['share']:6.1%}  {row['op']} ({row['calls']} calls)")
    if not args.quick:
        result = {
            "machine": machine(device),
            "forward_gflop_per_image": forward_flops / 1e9,
            "matmul_gflops": {"fp32": fp32_peak, "bf16": bf16_peak, "size": size},
            "train_step_gflops": train_gflops,
            "sampling_step_gflops": sample_gflops,
            "bf16_autocast": bf16,
            "sampling_step_profile": top,
        }
        results_path(args.out, device).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
