"""Images per second of our training loop against a bare PyTorch loop doing the same work, side by side.

    python benchmarks/train_throughput.py [--steps 150] [--rounds 2] [--batch_size 64]

Both train the default model (`ddpm_kiit.training.DEFAULT_MODEL_CONFIG`) on the built-in MNIST held in memory, with
AdamW, gradient clipping, EMA and the same mixed precision. "Ours" is `ddpm_kiit.training.train` (Accelerate,
seeded per-step noise, loss gathering, progress bar, logging); its loop time comes from `train_summary.json`, which
excludes data preparation and the final sample grid. The bare loop is what one would write by hand. Runs alternate
so that machine noise hits both; the ratio of medians is printed. Target: ours >= 0.95x the bare loop.
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
from common import reset_accelerate  # noqa: E402


def bare_loop(images: torch.Tensor, steps: int, batch_size: int, mixed_precision: str) -> float:
    torch.manual_seed(0)
    unet = SimpleUNet2DModel(**{**DEFAULT_MODEL_CONFIG, "sample_size": 32, "in_channels": 1, "out_channels": 1})
    scheduler = KiitDDPMScheduler()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    ema = EMAModel(unet.parameters(), decay=0.999, use_ema_warmup=True, power=3 / 4)
    dtype = torch.bfloat16 if mixed_precision == "bf16" else None
    unet.train()
    start = time.perf_counter()
    for _ in range(steps):
        clean = images[torch.randint(0, len(images), (batch_size,))]
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, 300, (batch_size,))
        noisy = scheduler.add_noise(clean, noise, timesteps)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            prediction = unet(noisy, timesteps).sample
        loss = F.mse_loss(prediction.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
        loss.item()  # the hand-written loop logs its loss too
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
    images = dataset_to_tensor(load_image_dataset("mnist"), ImageTransform(32, 1))
    ours, bare = [], []
    for _ in range(args.rounds):
        ours.append(our_loop(args.steps, args.batch_size, mixed_precision))
        bare.append(bare_loop(images, args.steps, args.batch_size, mixed_precision))
    ratio = statistics.median(ours) / statistics.median(bare)
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}, mixed precision {mixed_precision}")
    print(f"ours: {[round(x, 1) for x in ours]} images/s")
    print(f"bare: {[round(x, 1) for x in bare]} images/s")
    print(f"ours / bare = {ratio:.3f} (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
