"""Images per second of our training loop against a bare PyTorch loop doing the same work, side by side.

    python benchmarks/train_throughput.py [--steps 150] [--rounds 2] [--batch_size 64]

Both train the default model (`ddpm_kiit.training.DEFAULT_MODEL_CONFIG`) on the built-in MNIST held in memory, with
AdamW, gradient clipping, EMA and the same mixed precision. "Ours" is `ddpm_kiit.training.train` (Accelerate,
seeded per-step noise, loss gathering, progress bar, logging); its loop time comes from `train_summary.json`, which
excludes data preparation and the final sample grid. The bare loop is what one would write by hand. Runs alternate
so that machine noise hits both; the ratio of medians is printed and written to results/train_throughput.json
(`_cuda.json` on a GPU, which both loops use where there is one, as `train` does). Target: ours >= 0.95x the bare loop.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel

from ddpm_kiit import KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.data import ImageTransform, dataset_to_tensor, load_image_dataset
from ddpm_kiit.training import DEFAULT_MODEL_CONFIG, parse_args, train
from ddpm_kiit.training.allocator import keep_freed_memory
from ddpm_kiit.training.loop import default_mixed_precision

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, reset_accelerate, results_path  # noqa: E402


def bare_loop(images: torch.Tensor, steps: int, batch_size: int, mixed_precision: str) -> float:
    torch.manual_seed(0)
    device = images.device
    unet = SimpleUNet2DModel(**{**DEFAULT_MODEL_CONFIG, "sample_size": 32, "in_channels": 1, "out_channels": 1})
    unet.to(device)
    scheduler = KiitDDPMScheduler()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    ema = EMAModel(unet.parameters(), decay=0.999, use_ema_warmup=True, power=3 / 4)
    dtype = torch.bfloat16 if mixed_precision == "bf16" else None
    unet.train()
    start = time.perf_counter()
    for _ in range(steps):
        clean = images[torch.randint(0, len(images), (batch_size,), device=device)]
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, 300, (batch_size,), device=device)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            prediction = unet(noisy, timesteps).sample
        loss = F.mse_loss(prediction.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
        loss.item()  # the hand-written loop logs its loss too (and so waits for the device)
    return steps * batch_size / (time.perf_counter() - start)


def our_loop(steps: int, batch_size: int, mixed_precision: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        args = parse_args(
            [
                "--output_dir", out, "--max_train_steps", str(steps), "--train_batch_size", str(batch_size),
                "--checkpointing_steps", str(steps + 1), "--logger", "none", "--mixed_precision", mixed_precision,
                "--num_sample_images", "1", "--num_inference_steps", "2", "--sample_scheduler", "ddim",
            ]
        )  # fmt: skip
        folder = train(args)
        summary = json.loads((folder / "train_summary.json").read_text())
    reset_accelerate()
    return summary["images_per_second"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A few steps, for the smoke test.")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.batch_size = 3, 1, 8
    mixed_precision = default_mixed_precision()
    keep_freed_memory()  # what `train` does (--tune_malloc), made before either loop runs so that both have it
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # what `train` (Accelerate) picks
    images = dataset_to_tensor(load_image_dataset("mnist"), ImageTransform(32, 1)).to(device)
    ours, bare = [], []
    for _ in range(args.rounds):
        ours.append(our_loop(args.steps, args.batch_size, mixed_precision))
        bare.append(round(bare_loop(images, args.steps, args.batch_size, mixed_precision), 1))
    ratio = statistics.median(ours) / statistics.median(bare)
    print(f"machine: {machine(device)}, mixed precision {mixed_precision}")
    print(f"ours: {[round(x, 1) for x in ours]} images/s")
    print(f"bare: {[round(x, 1) for x in bare]} images/s")
    print(f"ours / bare = {ratio:.3f} (target >= 0.95)")
    if not args.quick:
        result = {
            "machine": machine(device),
            "mixed_precision": mixed_precision,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "ours_images_per_second": ours,
            "bare_images_per_second": bare,
            "ratio": round(ratio, 3),
        }
        out = results_path(str(Path(__file__).parent / "results" / "train_throughput.json"), device)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
