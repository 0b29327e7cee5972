"""Edge sharpness of emoji pipelines against the real emoji: sharp edges, or soft blobs?

    python benchmarks/edge_sharpness.py PIPELINE [PIPELINE ...] [--num-samples 393] [--scheduler ddim] [--steps 50]
        [--resolution 64] [--out JSON] [--grid PNG] [--quick]

Each PIPELINE (a shipped name such as `emoji`, or a folder) draws `--num-samples` images, seeded as
`ddpm-kiit evaluate` seeds them, with `--scheduler` in `--steps` steps. Images smaller than `--resolution` are
enlarged bilinearly, as a browser shows a small image at a larger size. The score is the share of neighbouring pixel
pairs (across and down) whose colours differ by more than 0.25 of the range in some channel: a sharp edge is one such
jump, and blurring spreads it over several small steps that stay under the threshold
(`ddpm_kiit.evaluation.edge_share`). The held-out emoji at `--resolution` are the yardstick; each pipeline's share
is printed beside theirs and as a ratio. `--grid` writes a picture: a row of real emoji, then a row per pipeline.
`--quick` scores four samples of two steps from the shipped `emoji` (the smoke test; it writes nothing).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.utils import make_image_grid

from ddpm_kiit.evaluation import edge_share
from ddpm_kiit.evaluation.evaluate import generate_samples, reference_images
from ddpm_kiit.images import tensor_to_pil
from ddpm_kiit.pretrained import resolve_pipeline
from ddpm_kiit.sampling import SCHEDULERS, load_pipeline, swap_scheduler

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

GRID_COLUMNS = 8
JUMP = 0.25  # edge_share's threshold, recorded with the results


def at_resolution(images: torch.Tensor, resolution: int) -> torch.Tensor:
    if images.shape[-1] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False).clamp(-1, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipelines", nargs="*", default=["emoji"])
    parser.add_argument("--num-samples", type=int, default=393)
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="The JSON to write (default: print only).")
    parser.add_argument("--grid", default=None, help="The picture to write.")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.pipelines, args.num_samples, args.steps, args.out, args.grid = ["emoji"], 4, 2, None, None

    real = reference_images("emoji", "test", 3, args.resolution)
    real = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(args.seed))[: args.num_samples]]
    real_share = edge_share(real, JUMP)
    results = {
        "machine": machine(torch.device("cpu")),
        "num_samples": len(real),
        "resolution": args.resolution,
        "jump": JUMP,
        "scheduler": args.scheduler,
        "steps": args.steps,
        "real": real_share,
        "pipelines": {},
    }
    print(f"held-out emoji at {args.resolution}x{args.resolution}: {real_share:.4f} of neighbour pairs are edges")
    rows = [real[:GRID_COLUMNS]]
    for name in args.pipelines:
        pipe = swap_scheduler(load_pipeline(resolve_pipeline(name)), args.scheduler)
        images = generate_samples(pipe, args.num_samples, seed=args.seed, num_inference_steps=args.steps)
        drawn_at = images.shape[-1]
        images = at_resolution(images, args.resolution)
        share = edge_share(images, JUMP)
        results["pipelines"][name] = {"drawn_at": drawn_at, "edges": share, "ratio_to_real": share / real_share}
        rows.append(images[:GRID_COLUMNS])
        print(f"{name} (drawn at {drawn_at}x{drawn_at}): {share:.4f}, {share / real_share:.2f}x the real emoji's")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    if args.grid:
        pictures = [tensor_to_pil(image) for row in rows for image in row]
        make_image_grid(pictures, rows=len(rows), cols=GRID_COLUMNS).save(args.grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
