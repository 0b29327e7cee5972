"""Loading pipelines, swapping schedulers and writing sample grids: what `generate` and the comparison share."""

import inspect
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

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
from PIL import Image

from .io_utils import atomic_file
from .pipelines import KiitDDPMPipeline
from .schedulers import KiitDDPMScheduler
from .visualize import grid_shape, label_width, labelled  # noqa: F401 (grid_shape re-exported)

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


# Options a Diffusers user sets as config keys: `variance_type` of the DDPM schedulers, and dynamic thresholding of
# the predicted x0 (Imagen) for every scheduler that has it (all but the Euler ones).
DDPM_SCHEDULERS = ("kiit", "ddpm")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")
THRESHOLDING_KEYS = ("thresholding", "sample_max_value", "dynamic_thresholding_ratio")


def check_scheduler_options(options: Dict) -> Dict:
    """`options` without the unset (None) ones; refuses values no scheduler takes, before any sampling."""
    options = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(options) - {"variance_type", *THRESHOLDING_KEYS})
    if unknown:
        raise ValueError(f"Unknown scheduler options {unknown}; known: variance_type, {', '.join(THRESHOLDING_KEYS)}.")
    if "variance_type" in options and options["variance_type"] not in VARIANCE_TYPES:
        raise ValueError(f"variance type must be one of {VARIANCE_TYPES}, got {options['variance_type']!r}.")
    if not options.get("thresholding") and ({"sample_max_value", "dynamic_thresholding_ratio"} & set(options)):
        raise ValueError(
            "sample_max_value and dynamic_thresholding_ratio only apply with thresholding on (--thresholding)."
        )
    if not options.get("sample_max_value", 1.0) > 0:
        raise ValueError(
            f"sample_max_value must be positive (1.0: plain clipping), got {options['sample_max_value']}."
        )
    if not 0 <= options.get("dynamic_thresholding_ratio", 0.995) <= 1:
        raise ValueError(
            f"dynamic_thresholding_ratio is a quantile in [0, 1], got {options['dynamic_thresholding_ratio']}."
        )
    return options


def scheduler_options(scheduler, options: Dict) -> Dict:
    """The part of `options` that `scheduler` (a name in `SCHEDULERS`, or a class) takes: `variance_type` for the
    DDPM schedulers, the thresholding keys for those whose config has them."""
    scheduler_class = SCHEDULERS[scheduler][0] if isinstance(scheduler, str) else scheduler
    accepted = set(inspect.signature(scheduler_class.__init__).parameters)
    ddpm = issubclass(scheduler_class, (KiitDDPMScheduler, DDPMScheduler))
    return {
        key: value
        for key, value in options.items()
        if value is not None and key in accepted and (key != "variance_type" or ddpm)
    }


def check_variance_fits_model(unet, scheduler) -> None:
    """A model that predicts its variance too (out_channels = 2 x in_channels) needs a DDPM scheduler with a learned
    variance type, and such a scheduler needs that model."""
    config = unet.config
    in_channels, out_channels = config.in_channels, getattr(config, "out_channels", config.in_channels)
    variance_type = scheduler.config.get("variance_type")
    learned = isinstance(scheduler, (KiitDDPMScheduler, DDPMScheduler)) and variance_type in LEARNED_VARIANCE_TYPES
    name = type(scheduler).__name__
    if learned and out_channels != 2 * in_channels:
        raise ValueError(
            f"variance_type={variance_type!r} needs a model that predicts its variance too (2 x {in_channels} output "
            f"channels); this one has {out_channels}. Choose a fixed variance type, e.g. 'fixed_small'."
        )
    if not learned and out_channels == 2 * in_channels != in_channels:
        raise ValueError(
            f"This model predicts its variance too ({out_channels} output channels for {in_channels} input ones): "
            f"only {' and '.join(DDPM_SCHEDULERS)} with variance type 'learned_range' or 'learned' use it, not {name}"
            f"{f' with {variance_type!r}' if variance_type else ''}."
        )


def swap_scheduler(pipe, name: str, **options):
    """Replaces `pipe.scheduler` by the scheduler called `name` (see `SCHEDULERS`), built from the same config.
    `options` (config keys: `variance_type`, `thresholding`, `sample_max_value`, `dynamic_thresholding_ratio`) go to
    the schedulers that take them (see `scheduler_options`)."""
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}.")
    scheduler_class, overrides = SCHEDULERS[name]
    options = scheduler_options(name, check_scheduler_options(options))
    scheduler = scheduler_class.from_config(pipe.scheduler.config, **overrides, **options)
    check_variance_fits_model(pipe.unet, scheduler)
    pipe.scheduler = scheduler
    return pipe


def describe_options(options: Dict) -> str:
    """A comparison row's label suffix, e.g. ' (fixed_large, thresholded at 1.5)'; empty without options."""
    parts = [options["variance_type"]] if "variance_type" in options else []
    if options.get("thresholding"):
        parts.append(f"thresholded at {options.get('sample_max_value', 1.0):g}")
    return f" ({', '.join(parts)})" if parts else ""


def condition_kwargs(
    pipe,
    num_images: int,
    class_label: Optional[int] = None,
    prompt: Optional[str] = None,
    negative_prompt: Optional[str] = None,
    guidance_scale: Optional[float] = None,
) -> Dict:
    """The pipeline call's arguments for `num_images` images of `class_label` or `prompt` (what the command line's
    and the app's class and prompt inputs mean), refused where the pipeline cannot take them."""
    from .pipelines import KiitTextToImagePipeline

    guidance = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
    if isinstance(pipe, KiitTextToImagePipeline):
        if prompt is None or class_label is not None:
            raise ValueError("This is a text-to-image pipeline: say what to draw with a prompt (and no class).")
        return {"prompt": prompt, "negative_prompt": negative_prompt, "num_images_per_prompt": num_images, **guidance}
    if prompt is not None or negative_prompt is not None:
        raise ValueError("This pipeline takes no prompt; prompts are for text-to-image pipelines.")
    if class_label is None:
        if guidance:
            raise ValueError("A guidance scale guides towards a class (or a prompt); give one.")
        return {"batch_size": num_images}
    return {"batch_size": num_images, "class_labels": class_label, **guidance}


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


@torch.no_grad()
def compare_schedulers(
    pipe,
    schedulers: Sequence[str],
    steps: Sequence[int],
    num_images: int = 4,
    seed: int = 0,
    options: Optional[Dict] = None,
) -> Dict[str, object]:
    """Samples with each scheduler at each step count from the same seed. `options` (see `swap_scheduler`) apply
    to the schedulers that take them; each row's label names those it used.

    Returns the labelled comparison grid (one row per scheduler and step count), the seconds each run took and the
    rows' labels.
    """
    original = pipe.scheduler
    options = check_scheduler_options(options or {})
    samples: List[tuple] = []
    seconds: Dict[str, float] = {}
    try:
        for name in schedulers:  # every scheduler is built and checked against the model before any sampling
            swap_scheduler(pipe, name, **options)
            pipe.scheduler = original
        for name in schedulers:
            for count in steps:
                pipe.scheduler = original
                swap_scheduler(pipe, name, **options)
                start = time.perf_counter()
                images = pipe(
                    batch_size=num_images, generator=torch.manual_seed(seed), num_inference_steps=count
                ).images
                elapsed = time.perf_counter() - start
                label = f"{name}{describe_options(scheduler_options(name, options))}, {count} steps, {elapsed:.1f}s"
                seconds[f"{name}@{count}"] = elapsed
                samples.append((make_image_grid(images, rows=1, cols=len(images)), label))
    finally:
        pipe.scheduler = original
    width = max(label_width(label) for _, label in samples)  # every label whole, every row as wide
    rows = [labelled(images, label, width) for images, label in samples]
    grid = make_image_grid(rows, rows=len(rows), cols=1)
    return {"grid": grid, "seconds": seconds, "labels": [label for _, label in samples]}
