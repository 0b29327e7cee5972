"""Loading pipelines, swapping schedulers and writing sample grids: what `generate` and the comparison share."""

import os
import time
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils import make_image_grid
from PIL import Image, ImageDraw

from .io_utils import atomic_file
from .pipelines import KiitDDPMPipeline
from .schedulers import KiitDDPMScheduler

SCHEDULERS = {
    "kiit": (KiitDDPMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "dpm-solver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpm-solver++-sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-ancestral": (EulerAncestralDiscreteScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
}


def swap_scheduler(pipe, name: str):
    """Replaces `pipe.scheduler` by the scheduler called `name` (see `SCHEDULERS`), built from the same config."""
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}.")
    scheduler_class, overrides = SCHEDULERS[name]
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, **overrides)
    return pipe


def load_pipeline(path_or_id: str, device: str = "cpu") -> KiitDDPMPipeline:
    """Loads a saved pipeline (folder or Hub id) for sampling."""
    if os.path.sep in path_or_id or path_or_id.startswith("."):
        if not Path(path_or_id, "model_index.json").is_file():
            raise ValueError(
                f"{path_or_id!r} is not a saved pipeline folder (no model_index.json in it). Pass the folder that "
                f"`save_pretrained` or `ddpm-kiit train` wrote, or a Hub id."
            )
    return KiitDDPMPipeline.from_pretrained(path_or_id).to(device)


def write_image_atomically(image: Image.Image, out: os.PathLike, overwrite: bool = False) -> Path:
    """Saves `image` to `out` through a temporary file, so a crash never leaves a truncated picture behind."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ValueError(f"{str(out)!r} already exists; choose another --out or pass --overwrite.")
    with atomic_file(out) as partial:
        image.save(partial)
    return out


def grid_shape(count: int) -> tuple:
    """Rows and columns of the most nearly square grid that holds `count` images."""
    cols = int(count**0.5 + 0.999999)
    while count % cols:
        cols += 1
    return count // cols, cols


def label_width(label: str) -> int:
    """Pixels that `label` needs in `labelled`'s band (PIL's default font)."""
    return int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(label)) + 4


def labelled(image: Image.Image, label: str, width: int = 0) -> Image.Image:
    """`image` with a white band on top carrying `label`, on a canvas at least `width` pixels wide."""
    band = 14
    canvas = Image.new("RGB", (max(image.width, width), image.height + band), "white")
    canvas.paste(image.convert("RGB"), (0, band))
    ImageDraw.Draw(canvas).text((2, 1), label, fill="black")
    return canvas


@torch.no_grad()
def compare_schedulers(
    pipe, schedulers: Sequence[str], steps: Sequence[int], num_images: int = 4, seed: int = 0
) -> Dict[str, object]:
    """Samples with each scheduler at each step count from the same seed.

    Returns the labelled comparison grid (one row per scheduler and step count) and the seconds each run took.
    """
    original = pipe.scheduler
    samples: List[tuple] = []
    seconds: Dict[str, float] = {}
    try:
        for name in schedulers:
            for count in steps:
                pipe.scheduler = original
                swap_scheduler(pipe, name)
                start = time.perf_counter()
                images = pipe(
                    batch_size=num_images, generator=torch.manual_seed(seed), num_inference_steps=count
                ).images
                elapsed = time.perf_counter() - start
                label = f"{name}, {count} steps, {elapsed:.1f}s"
                seconds[f"{name}@{count}"] = elapsed
                samples.append((make_image_grid(images, rows=1, cols=len(images)), label))
    finally:
        pipe.scheduler = original
    width = max(label_width(label) for _, label in samples)  # every label whole, every row as wide
    rows = [labelled(images, label, width) for images, label in samples]
    grid = make_image_grid(rows, rows=len(rows), cols=1)
    return {"grid": grid, "seconds": seconds}
