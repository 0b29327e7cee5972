"""Cost of the Gaussian blur forward process against our DDPM `add_noise`, on the same batch, side by side.

    python benchmarks/blur_speed.py [--batch 64] [--channels 3] [--size 32] [--repeats 50]

Times `ColdDiffusionScheduler.add_noise` (per-sample t) with the DCT (reflect) and DFT (circular) implementations,
a separable spatial convolution with per-sample kernels (the alternative that `schedulers/blur_operator.py` argues
against), and `KiitDDPMScheduler.add_noise`, then prints each as a ratio to the DDPM one and writes them to
`results/blur_speed.json`.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from ddpm_kiit import ColdDiffusionScheduler, KiitDDPMScheduler

sys.path.insert(0, str(Path(__file__).parent))
from common import call_seconds, machine  # noqa: E402


def separable_blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur by grouped separable convolution with zero padding (reflect padding cannot exceed
    the image, and the kernel for sigma = 8 px is 49 taps wide)."""
    batch, channels, height, width = images.shape
    radius = int(3 * float(sigmas.max())) + 1
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernels = torch.exp(-(offsets[None] ** 2) / (2 * sigmas[:, None].clamp(min=1e-3) ** 2))
    kernels = (kernels / kernels.sum(1, keepdim=True)).repeat_interleave(channels, 0)  # (batch*channels, taps)
    flat = images.reshape(1, batch * channels, height, width)
    rows = F.conv2d(flat, kernels[:, None, :, None], padding=(radius, 0), groups=batch * channels)
    return F.conv2d(rows, kernels[:, None, None, :], padding=(0, radius), groups=batch * channels).reshape(
        images.shape
    )


def timed(function, repeats: int) -> float:
    return statistics.median(call_seconds(function, repeats))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A few repeats, for the smoke test.")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "blur_speed.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batch = 2, 8
    torch.manual_seed(0)
    images = torch.rand(args.batch, args.channels, args.size, args.size) * 2 - 1
    noise = torch.randn_like(images)
    ddpm = KiitDDPMScheduler()
    reflect, circular = ColdDiffusionScheduler(), ColdDiffusionScheduler(boundary="circular")
    t_ddpm = torch.randint(0, 300, (args.batch,))
    t_blur = torch.randint(0, 50, (args.batch,))
    sigmas = reflect.sigmas[t_blur].float()
    results = {
        "ddpm add_noise": timed(lambda: ddpm.add_noise(images, noise, t_ddpm), args.repeats),
        "blur add_noise, DCT (reflect)": timed(lambda: reflect.add_noise(images, noise, t_blur), args.repeats),
        "blur add_noise, DFT (circular)": timed(lambda: circular.add_noise(images, noise, t_blur), args.repeats),
        "separable conv, per-sample kernels": timed(lambda: separable_blur(images, sigmas), args.repeats),
    }
    base = results["ddpm add_noise"]
    print(f"batch {args.batch} x {args.channels} x {args.size} x {args.size}, {torch.get_num_threads()} threads")
    for name, seconds in results.items():
        print(f"{name:<38} {seconds * 1e6:9.0f} us  {seconds / base:6.2f}x ddpm")
    if not args.quick:
        result = {
            "machine": machine(torch.device("cpu")),
            "threads": torch.get_num_threads(),
            "shape": [args.batch, args.channels, args.size, args.size],
            "repeats": args.repeats,
            "rows": {
                name: {"microseconds": round(s * 1e6, 1), "vs_ddpm": round(s / base, 2)} for name, s in results.items()
            },
        }
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
