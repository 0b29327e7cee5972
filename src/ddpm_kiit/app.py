# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""
`ddpm-kiit app`: one Gradio page to generate with any of our pipelines and schedulers, and to learn what the
forward and reverse processes do (the talk's "Gradio inference page" and its first-year students' game).

The work is done by plain functions (`generate`, `forward`, `reverse`, `new_quiz`, `score_guess`) that check their
inputs against `AppLimits` and raise `ValueError` with the fix; `build_app` wires them into `gradio.Blocks`, where each
is also an API endpoint (`/generate`, `/forward`, `/reverse`, `/quiz_new`, `/quiz_guess`) for `gradio_client`.
"""

import atexit
import functools
import inspect
import math
import os
import re
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from diffusers.utils import make_image_grid
from PIL import Image

from .images import model_image_size, pil_to_tensor, tensor_to_pil
from .pipelines import KiitDDPMPipeline, KiitTextToImagePipeline
from .pipelines.pipeline_kiit_ddpm import DEFAULT_GUIDANCE_SCALE
from .remote_code import pipeline_class_name, remote_code_paths
from .sampling import (
    SCHEDULERS,
    VARIANCE_TYPES,
    check_scheduler_options,
    check_variance_fits_model,
    condition_kwargs,
    describe_options,
    scheduler_options,
    swap_scheduler,
)
from .schedulers import BlurringDiffusionScheduler, BlurSchedulerMixin, ColdDiffusionScheduler, KiitDDPMScheduler
from .visualize import DenoisingRecorder, image_grid

# The blur pipelines' own samplers, beside the noise schedulers of `sampling.SCHEDULERS`.
BLUR_SAMPLERS = {"blur-improved": "improved", "blur-naive": "naive"}
SCHEDULER_CHOICES = ["default", *SCHEDULERS, *BLUR_SAMPLERS]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_VIEW_SIZE = 128  # pixels of the Learn tab's pictures: 32x32 digits are unreadable at their own size


@dataclass(frozen=True)
class AppLimits:
    """What one request may ask for: keeps a shared server up."""

    max_images: int = 16
    max_steps: int = 1000
    max_sample_size: int = 128
    max_cached_pipelines: int = 3
    queue_size: int = 8
    concurrency: int = 1
    max_download_mb: float = 200.0  # all the files a Hub pipeline needs, together
    max_saved_downloads: int = 32  # grids kept for the download button; older ones are deleted


# What a pipeline needs from a Hub repository: its index and, in each component's folder, configs, safetensors
# weights and tokenizer files. Never pickles; of code, only the module files ddpm-kiit generates, which the app
# never runs (the installed package's classes stand for them).
_NEEDED_SUFFIXES = (".json", ".safetensors", ".txt", ".model")
_APP_PIPELINES = {KiitDDPMPipeline.__name__, KiitTextToImagePipeline.__name__}


def hub_files_to_fetch(repo_id: str, max_download_mb: float, revision: Optional[str] = None) -> Tuple[str, list]:
    """
    Decides, from the repository's file list (one metadata request) and its `model_index.json`, whether the app may
    load `repo_id`: it must be one of our pipelines and the files it needs must weigh at most `max_download_mb`.
    Returns the commit checked and the files to fetch, so that the download gets exactly what was checked.
    """
    import json

    from huggingface_hub import HfApi, hf_hub_download

    info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    sizes = {sibling.rfilename: sibling.size for sibling in info.siblings or []}
    if "model_index.json" not in sizes:
        raise ValueError(f"{repo_id!r} holds no model_index.json: it is not a Diffusers pipeline.")
    index = json.loads(Path(hf_hub_download(repo_id, "model_index.json", revision=info.sha)).read_text())
    class_name = pipeline_class_name(index)
    if class_name not in _APP_PIPELINES:
        raise ValueError(f"{repo_id!r} is a {class_name!r}; this app serves {', '.join(sorted(_APP_PIPELINES))}.")
    components = [name for name, value in index.items() if not name.startswith("_") and isinstance(value, list)]
    needed = ["model_index.json"] + [
        path
        for path in sizes
        if path.split("/", 1)[0] in components and path.count("/") == 1 and path.endswith(_NEEDED_SUFFIXES)
    ]
    # The modules ddpm-kiit generated for the remote-code route: Diffusers finds a component's class through them,
    # and with the package imported the package's own classes serve them (nothing of the repository runs).
    needed += [path for path in remote_code_paths(index) if path in sizes]
    missing = [name for name in ("unet", "scheduler") if not any(p.startswith(f"{name}/") for p in needed)]
    if missing:
        raise ValueError(f"{repo_id!r} lacks the {' and '.join(missing)} folder(s) a pipeline needs.")
    unknown = [path for path in needed if sizes.get(path) is None]
    if unknown:
        raise ValueError(f"The Hub did not give the size of {unknown[0]!r} in {repo_id!r}: not loading it.")
    total_mb = sum(sizes[path] for path in needed) / 2**20
    if total_mb > max_download_mb:
        raise ValueError(
            f"{repo_id!r} needs {total_mb:.1f} MB of files; this app downloads at most {max_download_mb:g} MB "
            f"(start it with --max-download-mb to change that)."
        )
    return info.sha, needed


class DownloadFolder:
    """
    The app's own folder for the files its download buttons offer: at most `max_files` (the oldest go first), and
    removed, with everything in it, when the app stops (or, at the latest, when the process exits).
    """

    def __init__(self, max_files: int = 32, parent: Optional[os.PathLike] = None):
        self._directory = tempfile.TemporaryDirectory(prefix="ddpm-kiit-app-", dir=parent)
        self.path = Path(self._directory.name)
        self.max_files = max_files
        self._lock = threading.Lock()
        atexit.register(self.cleanup)

    def save(self, image: Image.Image, stem: str) -> Path:
        path = self.path / f"{stem}-{time.time_ns()}.png"
        with self._lock:
            image.save(path)
            saved = sorted(self.path.glob("*.png"), key=lambda entry: entry.stat().st_mtime_ns)
            for old in saved[: max(0, len(saved) - self.max_files)]:
                old.unlink(missing_ok=True)
        return path

    def cleanup(self) -> None:
        self._directory.cleanup()


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}.")
    return int(value)


class PipelineCache:
    """
    Loads pipelines by local folder or Hub id, keeping the last `max_entries` in memory so that switching back is
    instant. Local folders must lie inside `allowed_dirs`: a server should not read arbitrary paths for its clients.
    With `fast_inference`, every loaded pipeline samples with `KiitDDPMPipeline.enable_fast_inference()` (bf16
    autocast where the device computes it natively, channels_last, inference_mode). Pipelines run on `device`.
    """

    def __init__(
        self,
        allowed_dirs: Sequence[os.PathLike],
        limits: AppLimits = AppLimits(),
        allow_hub: bool = False,
        fast_inference: bool = False,
        device: str = "cpu",
        allowed_repos: Sequence[str] = (),
    ):
        self.allowed_dirs = [Path(d).resolve() for d in allowed_dirs]
        self.allowed_repos = set(allowed_repos)
        self.device = device
        self.limits = limits
        self.allow_hub = allow_hub
        self.fast_inference = fast_inference
        self._pipelines: "OrderedDict[str, KiitDDPMPipeline]" = OrderedDict()
        self._lock = threading.Lock()
        self.samples = SampleCache()

    def _local_path(self, reference: str) -> Optional[Path]:
        """The folder `reference` names, checked against the allowed folders; `None` for a Hub id (or a bare name).
        An existing folder wins over a Hub id of the same spelling, as in `from_pretrained`."""
        path = Path(reference).expanduser()
        if not path.exists() and (_HUB_ID.match(reference) or os.path.sep not in reference):
            return None
        resolved = path.resolve()
        if not any(resolved == root or root in resolved.parents for root in self.allowed_dirs):
            allowed = ", ".join(str(d) for d in self.allowed_dirs) or "none"
            raise ValueError(
                f"{reference!r} is outside the folders this app may read ({allowed}). Move the pipeline there, or "
                f"start the app with `--allow-dir` naming its folder."
            )
        if not (resolved / "model_index.json").is_file():
            raise ValueError(f"{reference!r} is not a saved pipeline folder (no model_index.json in it).")
        return resolved

    def get(self, reference: str) -> KiitDDPMPipeline:
        reference = (reference or "").strip()
        if not reference:
            raise ValueError("Choose a pipeline: a saved pipeline folder or a Hub id such as `user/ddpm-kiit-mnist`.")
        local = self._local_path(reference)
        key = str(local) if local else reference
        with self._lock:
            if key in self._pipelines:
                self._pipelines.move_to_end(key)
                return self._pipelines[key]
        if local is None:
            if not _HUB_ID.match(reference):
                raise ValueError(f"{reference!r} is neither a pipeline folder nor a Hub id of the form `user/name`.")
            if not self.allow_hub and reference not in self.allowed_repos:
                raise ValueError(
                    f"This app loads Hub ids only when started with --allow-hub or --allow-repo {reference}: give a "
                    f"local pipeline folder instead."
                )
        try:
            if local is None:
                from huggingface_hub import snapshot_download

                revision, files = hub_files_to_fetch(reference, self.limits.max_download_mb)
                local = Path(snapshot_download(reference, revision=revision, allow_patterns=files))
            pipe = KiitDDPMPipeline.from_pretrained(str(local))
        except ValueError:
            raise
        except Exception as error:  # the Hub client's errors are many and long; keep the first line
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(
                f"Could not load {reference!r}: {reason}. Check the id (and your network or HF_TOKEN), or give a "
                f"local pipeline folder."
            ) from error
        size = pipe.unet.config.sample_size
        if max(size if isinstance(size, (list, tuple)) else [size]) > self.limits.max_sample_size:
            raise ValueError(
                f"{reference!r} makes {size}-pixel images; this app serves at most {self.limits.max_sample_size}."
            )
        pipe.set_progress_bar_config(disable=True)
        pipe.to(self.device)
        if self.fast_inference:
            pipe.enable_fast_inference()
        with self._lock:
            self._pipelines[key] = pipe
            while len(self._pipelines) > self.limits.max_cached_pipelines:
                self._pipelines.popitem(last=False)
        return pipe


def _blurs(scheduler) -> bool:
    return isinstance(scheduler, BlurSchedulerMixin)


def _unconditional(pipe: KiitDDPMPipeline) -> Dict:
    """What a pipeline call needs to draw without a condition: the empty prompt for a text-to-image pipeline (once,
    unguided); nothing for the others (a class model then uses its null label)."""
    return {"prompt": "", "guidance_scale": 1.0} if isinstance(pipe, KiitTextToImagePipeline) else {}


def _quick_sampling(pipe: KiitDDPMPipeline) -> Tuple[str, int]:
    """The scheduler and step count the Learn tab samples with: a blur pipeline's own sampler over every level, a
    distilled student's own scheduler and step count, and DDIM in 50 steps for other noise pipelines."""
    total = pipe.scheduler.config.num_train_timesteps
    if _blurs(pipe.scheduler):
        return "default", total
    own_steps = pipe.config.get("default_num_inference_steps")
    if own_steps:
        return "default", own_steps
    return "ddim", min(50, total)


def with_scheduler(pipe: KiitDDPMPipeline, name: str, **options) -> KiitDDPMPipeline:
    """A pipeline sharing `pipe`'s model with the scheduler called `name`; `pipe` itself is left as it was.
    `options` (variance_type, thresholding, sample_max_value: see `sampling.swap_scheduler`) go to a noise
    scheduler that takes them."""
    if name not in SCHEDULER_CHOICES:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of {SCHEDULER_CHOICES}.")
    config = pipe.scheduler.config
    blurs = _blurs(pipe.scheduler)
    options = check_scheduler_options(options)
    if blurs and options:
        raise ValueError("Variance types and thresholding are for noise pipelines; this one blurs. Leave them off.")
    copy = type(pipe)(**pipe.components)  # the same modules; its scheduler is replaced below
    if name == "default":
        copy.scheduler = type(pipe.scheduler).from_config(config, **scheduler_options(type(pipe.scheduler), options))
        if not blurs:
            check_variance_fits_model(pipe.unet, copy.scheduler)
    elif blurs:
        cold = isinstance(pipe.scheduler, ColdDiffusionScheduler)
        if name not in BLUR_SAMPLERS or not cold:
            allowed = ["default", *BLUR_SAMPLERS] if cold else ["default"]
            raise ValueError(f"This pipeline blurs instead of adding noise; choose a scheduler from {allowed}.")
        copy.scheduler = ColdDiffusionScheduler.from_config(config, sampler=BLUR_SAMPLERS[name])
    elif name in BLUR_SAMPLERS:
        raise ValueError(f"{name!r} is for blur pipelines; this one adds noise. Choose one of {list(SCHEDULERS)}.")
    else:
        swap_scheduler(copy, name, **options)
    copy.set_progress_bar_config(disable=True)
    # The unet (channels_last, compiled or not) is shared; the sampling settings live on the pipeline object.
    copy._autocast_dtype, copy._inference_mode = pipe._autocast_dtype, pipe._inference_mode
    return copy


def _enlarge(image: Image.Image, tile, least: int = 64) -> Image.Image:
    """`image` (a grid of `tile`-pixel tiles) scaled up by a whole factor so that each tile is at least `least` px."""
    tile = min(tile) if isinstance(tile, (list, tuple)) else tile
    factor = max(1, -(-least // tile))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def _upscale(image: Image.Image, size: int = _VIEW_SIZE) -> Image.Image:
    return image.convert("RGB").resize((size, size), Image.NEAREST) if image.width < size else image


def generate(
    cache: PipelineCache,
    pipeline: str,
    scheduler: str = "default",
    steps: int = 50,
    seed: int = 0,
    num_images: int = 4,
    strip_points: int = 8,
    on_step: Optional[Callable[[int, int], None]] = None,
    variance_type: Optional[str] = None,
    thresholding: bool = False,
    sample_max_value: Optional[float] = None,
    class_label: Optional[int] = None,
    prompt: Optional[str] = None,
    negative_prompt: Optional[str] = None,
    guidance_scale: Optional[float] = None,
) -> Dict:
    """Samples `num_images` images; returns them, the denoising strip of the first one, a grid and the seconds.
    `variance_type` (DDPM schedulers) and `thresholding` with `sample_max_value` (every scheduler that has it) are
    applied where the scheduler takes them; the info line names those used. `class_label` (class-conditional
    pipelines) or `prompt` and `negative_prompt` (text-to-image pipelines) say what to draw, with classifier-free
    guidance of `guidance_scale`."""
    limits = cache.limits
    num_images = _check_int("Number of images", num_images, 1, limits.max_images)
    seed = _check_int("Seed", seed, 0, 2**32 - 1)
    options = {
        "variance_type": None if variance_type == "default" else variance_type,
        "thresholding": thresholding or None,
    }
    options["sample_max_value"] = sample_max_value if thresholding else None
    pipe = with_scheduler(cache.get(pipeline), scheduler, **options)
    total = pipe.scheduler.config.num_train_timesteps
    steps = _check_int("Steps", steps, 1, min(limits.max_steps, total))
    recorder = DenoisingRecorder.evenly(steps, count=strip_points)

    def callback(p, index, timestep, tensors):
        recorder(p, index, timestep, tensors)
        if on_step is not None:
            on_step(index + 1, steps)
        return {}

    conditional = class_label is not None or prompt is not None
    asked = condition_kwargs(
        pipe, num_images, class_label, prompt, negative_prompt, guidance_scale if conditional else None
    )
    start = time.perf_counter()
    images = pipe(
        **asked,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=steps,
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=DenoisingRecorder.tensor_inputs,
    ).images
    seconds = time.perf_counter() - start
    precision = f", {str(pipe.autocast_dtype).replace('torch.', '')} autocast" if pipe.autocast_dtype else ""
    return {
        "images": images,
        "strip": _enlarge(recorder.strip(0), pipe.unet.config.sample_size),
        "grid": image_grid(images),
        "seconds": seconds,
        "info": (
            f"{num_images} image(s){_describe_condition(asked)}, {type(pipe.scheduler).__name__}"
            f"{describe_options(scheduler_options(type(pipe.scheduler), check_scheduler_options(options)))}, "
            f"{steps} steps, seed {seed}{precision}: "
            f"{seconds:.2f} s. "
            f"The strip shows x_t (top) and the predicted x0 (bottom) at {len(recorder.steps)} steps."
        ),
    }


def _describe_condition(asked: Dict) -> str:
    """What was asked for, for the info line: ' of class 7 (guidance 3)', ' of "red apple" (guidance 3)'."""
    if "prompt" in asked:
        negative = f', not "{asked["negative_prompt"]}"' if asked.get("negative_prompt") else ""
        what = f' of "{asked["prompt"]}"{negative}'
    elif "class_labels" in asked:
        what = f" of class {asked['class_labels']}"
    else:
        return ""
    return what + (f" (guidance {asked['guidance_scale']:g})" if "guidance_scale" in asked else "")


def _to_tensor(image, pipe: KiitDDPMPipeline) -> torch.Tensor:
    """An uploaded picture (PIL, or the array Gradio may send) as the model's input `(1, channels, size, size)`."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    config = pipe.unet.config
    return pil_to_tensor(image, model_image_size(pipe.unet), config.in_channels)


def _to_image(tensor: torch.Tensor) -> Image.Image:
    return tensor_to_pil(tensor[0])


class SampleCache:
    """The model's own samples, per unet and seed, for the Learn tab when nothing is uploaded: the last
    `max_seeds` seeds of each unet, dropped with the unet."""

    def __init__(self, max_seeds: int = 16):
        self.max_seeds = max_seeds
        self._lock = threading.Lock()
        self._samples: "weakref.WeakKeyDictionary[torch.nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()

    def get(self, pipe: KiitDDPMPipeline, seed: int) -> torch.Tensor:
        with self._lock:
            if seed in self._samples.get(pipe.unet, {}):
                return self._samples[pipe.unet][seed]
        name, steps = _quick_sampling(pipe)
        fast = with_scheduler(pipe, name)
        sample = fast(
            generator=torch.Generator().manual_seed(seed), num_inference_steps=steps, output_type="pt",
            **_unconditional(fast),
        )  # fmt: skip
        sample = sample.images.cpu() * 2 - 1
        with self._lock:
            seeds = self._samples.setdefault(pipe.unet, OrderedDict())
            seeds[seed] = sample
            while len(seeds) > self.max_seeds:
                seeds.popitem(last=False)
        return sample


def _clean_image(cache: PipelineCache, pipe: KiitDDPMPipeline, image: Optional[Image.Image], seed: int):
    """The Learn tab's x0: the uploaded picture, or (none given) the model's own sample for `seed`."""
    return _to_tensor(image, pipe) if image is not None else cache.samples.get(pipe, seed)


def describe_level(scheduler, t: int) -> str:
    """What the forward process does at t, in numbers: alpha_bar_t and the SNR for noise, the blur width for blur."""
    total = scheduler.config.num_train_timesteps
    if _blurs(scheduler):
        text = f"t = {t} of {total - 1}: blur width sigma_t = {float(scheduler.sigmas[t]):.2f} px"
        if isinstance(scheduler, BlurringDiffusionScheduler):
            alpha, sigma = float(scheduler.alphas[t]), float(scheduler.noise_sigmas[t])
            text += f", signal alpha_t = {alpha:.3f}, noise sigma_t = {sigma:.3f}"
        return text + "."
    if not hasattr(scheduler, "signal_to_noise_ratio"):  # a stock scheduler saved in the folder: same schedule
        scheduler = KiitDDPMScheduler.from_config(scheduler.config)
    alpha_bar = float(scheduler.alphas_cumprod[t])
    snr = float(scheduler.signal_to_noise_ratio(torch.tensor([t])))
    decibels = 10 * math.log10(snr) if snr > 0 else float("-inf")
    return (
        f"t = {t} of {total - 1}: alpha_bar_t = {alpha_bar:.4f} (the share of the image's variance left), "
        f"signal-to-noise ratio = {snr:.3g} ({decibels:.1f} dB)."
    )


def forward(
    cache: PipelineCache, pipeline: str, image: Optional[Image.Image] = None, t: int = 0, seed: int = 0
) -> Dict:
    """x_t of the pipeline's forward process (noise or blur) for an image at level t, with its numbers."""
    pipe = cache.get(pipeline)
    seed = _check_int("Seed", seed, 0, 2**32 - 1)
    t = _check_int("t", t, 0, pipe.scheduler.config.num_train_timesteps - 1)
    clean = _clean_image(cache, pipe, image, seed)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    noisy = pipe.scheduler.add_noise(clean, noise, torch.tensor([t]))
    return {
        "clean": _upscale(_to_image(clean)),
        "noisy": _upscale(_to_image(noisy)),
        "info": describe_level(pipe.scheduler, t),
    }


def reverse(
    cache: PipelineCache,
    pipeline: str,
    image: Optional[Image.Image] = None,
    t: int = 0,
    seed: int = 0,
    points: int = 8,
    on_step: Optional[Callable[[int, int], None]] = None,
) -> Dict:
    """Noises (or blurs) an image to level t and lets the model take it back to t = 0: a strip of x_t over x0_hat.

    Noise pipelines run DDIM on 50 evenly spaced levels (the chain starts at the largest of them not above t), a
    distilled student its own few steps; blur pipelines run their own sampler over every level from t down. All
    through the pipeline (`image`, `start_timestep`), with a `DenoisingRecorder` for the strip.
    """
    pipe = cache.get(pipeline)
    seed = _check_int("Seed", seed, 0, 2**32 - 1)
    total = pipe.scheduler.config.num_train_timesteps
    t = _check_int("t", t, 0, total - 1)
    clean = _clean_image(cache, pipe, image, seed)
    name, steps = _quick_sampling(pipe)
    fast = with_scheduler(pipe, name)
    chain = len(fast.get_timesteps(steps, "cpu", start_timestep=t))
    recorder = DenoisingRecorder(np.linspace(0, chain - 1, min(points, chain)).round().astype(int))

    def callback(p, index, timestep, tensors):
        recorder(p, index, timestep, tensors)
        if on_step is not None:
            on_step(index + 1, chain)
        return {}

    result = fast(
        **_unconditional(fast),
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=steps,
        image=clean,
        start_timestep=t,
        output_type="pt",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=DenoisingRecorder.tensor_inputs,
    ).images
    start = recorder.timesteps[0]
    # The chain's start, drawn again from the same seed: the pipeline's first draw is this noise.
    noisy = fast.prepare_latents(
        clean.shape, torch.Generator().manual_seed(seed), clean.device, clean.dtype, image=clean, timestep=start
    )
    tops, bottoms = recorder.rows(0)
    tiles = [_to_image(noisy), *tops, _to_image(clean), *bottoms]
    return {
        "strip": make_image_grid([_upscale(tile, 64) for tile in tiles], rows=2, cols=len(tops) + 1),
        "result": _upscale(_to_image(result * 2 - 1)),
        "info": (
            f"Started at t = {start} and took {chain} model steps back to 0. Top: the noisy image, then x_t along "
            f"the way. Bottom: the clean image, then the model's guess of it at each step."
        ),
    }


def new_quiz(cache: PipelineCache, pipeline: str, image: Optional[Image.Image] = None, seed: int = 0) -> Dict:
    """The game: an image at a hidden level t drawn from `seed`; guess t."""
    pipe = cache.get(pipeline)
    seed = _check_int("Seed", seed, 0, 2**32 - 1)
    total = pipe.scheduler.config.num_train_timesteps
    t = int(torch.randint(0, total, (1,), generator=torch.Generator().manual_seed(seed + 1)))
    shown = forward(cache, pipeline, image, t, seed)["noisy"]
    return {"image": shown, "t": t, "total": total}


def score_guess(guess: int, t: int, total: int) -> Tuple[int, str]:
    """Points for guessing level `t` of `total` as `guess`: 100 if exact, falling quadratically to 0 a third off."""
    total = _check_int("The number of levels", total, 1, 10**6)
    t = _check_int("The hidden t", t, 0, total - 1)
    guess = _check_int("Your guess", guess, 0, total - 1)
    off = abs(guess - t) / total
    points = int(round(100 * max(0.0, 1 - 3 * off) ** 2))
    return points, f"It was t = {t}. You guessed {guess}: off by {abs(guess - t)}, {points} points."


# ------------------------------------------------------------------------------------------------------- the UI


def _class_from_text(text) -> Optional[int]:
    """The class box's text as a label: empty for none, else a whole number."""
    text = "" if text is None else str(text).strip()
    if not text:
        return None
    if not text.isdigit():
        raise ValueError(f"The class must be a whole number such as 7, or empty for none; got {text!r}.")
    return int(text)


class _Handlers:
    """The functions behind the app's buttons: they call the plain functions above and turn their errors into
    messages for the page."""

    def __init__(self, cache: PipelineCache, downloads: DownloadFolder, gr):
        self.cache, self.downloads, self.gr = cache, downloads, gr

    def shown_errors(self, function):
        """Errors reach the user as a message, never as a traceback."""
        gr = self.gr

        @functools.wraps(function)  # Gradio reads the signature (the progress argument) through __wrapped__
        def wrapped(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except ValueError as error:
                raise gr.Error(str(error), print_exception=False) from error
            except Exception as error:
                raise gr.Error(f"Something went wrong ({type(error).__name__}): {error}") from error

        return wrapped

    def _progress(self, progress):
        return lambda done, total: progress(done / total, desc=f"step {done} of {total}")

    def generate(
        self,
        pipeline,
        scheduler,
        steps,
        seed,
        num_images,
        variance="default",
        thresholding=False,
        threshold=1.5,
        class_label="",
        prompt="",
        negative_prompt="",
        guidance=DEFAULT_GUIDANCE_SCALE,
        progress=None,
    ):
        result = generate(
            self.cache,
            pipeline,
            scheduler,
            steps,
            seed,
            num_images,
            on_step=self._progress(progress),
            variance_type=None if variance == "default" else variance,
            thresholding=bool(thresholding),
            sample_max_value=threshold,
            class_label=_class_from_text(class_label),
            prompt=prompt or None,
            negative_prompt=negative_prompt or None,
            guidance_scale=guidance,
        )
        path = self.downloads.save(result["grid"], f"samples-seed{int(seed)}")
        return result["images"], result["strip"], result["info"], str(path)

    def forward(self, pipeline, image, t, seed):
        result = forward(self.cache, pipeline, image, t, seed)
        return result["clean"], result["noisy"], result["info"]

    def reverse(self, pipeline, image, t, seed, progress=None):
        result = reverse(self.cache, pipeline, image, t, seed, on_step=self._progress(progress))
        return result["strip"], result["result"], result["info"]

    def quiz(self, pipeline, image, seed):
        quiz = new_quiz(self.cache, pipeline, image, seed)
        prompt = f"Guess t (0 to {quiz['total'] - 1}): how much noise or blur do you see?"
        return quiz["image"], {"t": quiz["t"], "total": quiz["total"]}, prompt

    @staticmethod
    def guess(guess, quiz, score):
        if not quiz:
            raise ValueError("Start a round first with 'New image'.")
        points, message = score_guess(guess, quiz["t"], quiz["total"])
        score = {"points": score.get("points", 0) + points, "rounds": score.get("rounds", 0) + 1}
        return f"{message} Total: {score['points']} points in {score['rounds']} round(s).", score

    def pipeline_changed(self, pipeline, steps, level):
        """Fits the sliders to the chosen pipeline's number of levels (quietly skipped while the box is empty), and
        the steps to a distilled student's own count."""
        gr, limits = self.gr, self.cache.limits
        if not (pipeline or "").strip():
            return gr.skip(), gr.skip()
        pipe = self.shown_errors(self.cache.get)(pipeline)
        total = pipe.scheduler.config.num_train_timesteps
        most_steps = min(limits.max_steps, total)
        own_steps = pipe.config.get("default_num_inference_steps")
        # Values are sent only when they must shrink, or for a student (trained for its own step count, and worse
        # at others): a value in the update would overwrite what the user typed while the pipeline was loading.
        if own_steps:
            steps_update = gr.Slider(maximum=most_steps, value=min(own_steps, most_steps))
        elif steps <= most_steps:
            steps_update = gr.Slider(maximum=most_steps)
        else:
            steps_update = gr.Slider(maximum=most_steps, value=most_steps)
        return (
            steps_update,
            gr.Slider(maximum=total - 1) if level <= total - 1 else gr.Slider(maximum=total - 1, value=total - 1),
        )

    def with_progress(self, method):
        """`method` as a Gradio handler: its `progress` argument defaults to `gr.Progress()`, which is how Gradio
        knows to pass the page's progress bar (it reads the handler's signature)."""
        signature = inspect.signature(method)
        parameters = [
            parameter.replace(default=self.gr.Progress()) if parameter.name == "progress" else parameter
            for parameter in signature.parameters.values()
        ]

        def handler(*args, **kwargs):
            return method(*args, **kwargs)

        handler.__signature__ = signature.replace(parameters=parameters)
        return self.shown_errors(handler)


def _generate_tab(gr, limits: AppLimits) -> Dict:
    with gr.Tab("Generate"):
        with gr.Row():
            scheduler = gr.Dropdown(SCHEDULER_CHOICES, value="default", label="Scheduler", elem_id="scheduler")
            steps = gr.Slider(
                1, limits.max_steps, value=min(50, limits.max_steps), step=1, label="Steps", elem_id="steps"
            )
            seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="seed")
            count = gr.Slider(1, limits.max_images, value=4, step=1, label="Images")
        with gr.Row():
            variance = gr.Dropdown(
                ["default", *VARIANCE_TYPES],
                value="default",
                label="DDPM variance (learned ones need a model that predicts it)",
                elem_id="variance",
            )
            thresholding = gr.Checkbox(False, label="Dynamic thresholding of x0", elem_id="thresholding")
            threshold = gr.Number(
                value=1.5, minimum=0.01, label="Threshold max (sample_max_value; 1 = clipping)", elem_id="threshold"
            )
        with gr.Row():
            conditions = [
                gr.Textbox("", label="Class: a number (class-conditional pipelines; empty: none)", elem_id="class"),
                gr.Textbox("", label="Prompt (text-to-image pipelines)", elem_id="prompt"),
                gr.Textbox("", label="Negative prompt", elem_id="negative-prompt"),
                gr.Slider(
                    0,
                    10,
                    value=DEFAULT_GUIDANCE_SCALE,
                    step=0.25,
                    label="Guidance scale (measured best: 1.5 for the shipped digits, 2 for emoji prompts)",
                    elem_id="guidance",
                ),
            ]
        return {
            "inputs": [scheduler, steps, seed, count, variance, thresholding, threshold, *conditions],
            "steps": steps,
            "run": gr.Button("Generate", variant="primary", elem_id="generate"),
            "outputs": [
                gr.Gallery(label="Samples", columns=4, elem_id="gallery"),
                gr.Image(format="png", label="Denoising: x_t (top) and predicted x0 (bottom)", elem_id="strip"),
                gr.Markdown(elem_id="generate-info"),
                gr.File(label="Download the grid (PNG)"),
            ],
        }


def _learn_tab(gr) -> Dict:
    with gr.Tab("Learn"):
        with gr.Row():
            upload = gr.Image(type="pil", label="Your image (empty: the model's own sample)", elem_id="upload")
            clean = gr.Image(format="png", label="x0", elem_id="clean")
            noisy = gr.Image(format="png", label="x_t", elem_id="noisy")
        with gr.Row():
            level = gr.Slider(0, 999, value=0, step=1, label="t", elem_id="level")
            seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
        level_info = gr.Markdown(elem_id="level-info")
        back = gr.Button("Let the model reverse it", elem_id="reverse")
        reverse_outputs = [
            gr.Image(format="png", label="Reverse process", elem_id="reverse-strip"),
            gr.Image(format="png", label="Result at t = 0"),
            gr.Markdown(),
        ]
    return {
        "upload": upload,
        "level": level,
        "seed": seed,
        "forward_outputs": [clean, noisy, level_info],
        "back": back,
        "reverse_outputs": reverse_outputs,
    }


def _quiz_tab(gr) -> Dict:
    with gr.Tab("Quiz"):
        gr.Markdown("How noisy is it? Guess the timestep t of the image; 100 points for an exact guess.")
        quiz_state, score_state = gr.State({}), gr.State({})
        image = gr.Image(format="png", label="Which t?", elem_id="quiz-image")
        prompt = gr.Markdown()
        with gr.Row():
            new_round = gr.Button("New image", elem_id="quiz-new")
            guess = gr.Number(value=0, precision=0, label="Your guess of t")
            submit = gr.Button("Guess", elem_id="quiz-guess")
        verdict = gr.Markdown(elem_id="quiz-verdict")
    return {
        "new_round": new_round,
        "new_outputs": [image, quiz_state, prompt],
        "submit": submit,
        "guess_inputs": [guess, quiz_state, score_state],
        "guess_outputs": [verdict, score_state],
    }


def _wire(demo, handlers: _Handlers, pipeline_box, generate_tab: Dict, learn: Dict, quiz: Dict) -> None:
    """Connects the components to the handlers; each button is also an API endpoint."""
    shown = handlers.shown_errors
    for event in (pipeline_box.submit, pipeline_box.blur, demo.load):
        event(
            handlers.pipeline_changed,
            [pipeline_box, generate_tab["steps"], learn["level"]],
            [generate_tab["steps"], learn["level"]],
            api_visibility="private",
        )
    generate_tab["run"].click(
        handlers.with_progress(handlers.generate),
        [pipeline_box, *generate_tab["inputs"]],
        generate_tab["outputs"],
        api_name="generate",
    )
    learn_inputs = [pipeline_box, learn["upload"], learn["level"], learn["seed"]]
    learn["level"].change(
        shown(handlers.forward),
        learn_inputs,
        learn["forward_outputs"],
        api_name="forward",
        trigger_mode="always_last",  # while the slider is dragged, only the latest position is computed
    )
    learn["back"].click(
        handlers.with_progress(handlers.reverse), learn_inputs, learn["reverse_outputs"], api_name="reverse"
    )
    quiz["new_round"].click(
        shown(handlers.quiz),
        [pipeline_box, learn["upload"], learn["seed"]],
        quiz["new_outputs"],
        api_name="quiz_new",
    )
    quiz["submit"].click(shown(handlers.guess), quiz["guess_inputs"], quiz["guess_outputs"], api_name="quiz_guess")


def build_app(
    pipeline: Optional[str] = None,
    allowed_dirs: Sequence[os.PathLike] = (".",),
    limits: AppLimits = AppLimits(),
    *,
    allow_hub: bool = False,
    fast_inference: bool = False,
    device: str = "cpu",
    allowed_repos: Sequence[str] = (),
):
    """The `gradio.Blocks` app. `pipeline` fills the pipeline box (default: the shipped quick-preview pipeline, a
    distilled student, else the first shipped one); local pipelines must lie in `allowed_dirs` or be shipped with the
    package. `fast_inference`, `device`: see `PipelineCache`. Hub ids load only with `allow_hub` or when listed in
    `allowed_repos`, after `hub_files_to_fetch` has checked them."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from .pretrained import QUICK_PREVIEW_SHIPPED, shipped_pipelines

    shipped = {name: str(path) for name, path in shipped_pipelines().items()}
    pipeline = pipeline or shipped.get(QUICK_PREVIEW_SHIPPED) or next(iter(shipped.values()), None)
    allowed_dirs = [*allowed_dirs, *(Path(path).parent for path in shipped.values())]
    cache = PipelineCache(allowed_dirs, limits, allow_hub, fast_inference, device, allowed_repos)
    handlers = _Handlers(cache, DownloadFolder(limits.max_saved_downloads), gr)

    with gr.Blocks(title="ddpm-kiit", delete_cache=(600, 3600)) as demo:
        gr.Markdown(
            "# ddpm-kiit\nGenerate with a diffusion pipeline, compare schedulers, and see what the forward and "
            "reverse processes do. Every button is also an API endpoint (see *Use via API* at the bottom)."
        )
        pipeline_box = gr.Textbox(
            value=pipeline or "", label="Pipeline", placeholder="a saved pipeline folder, or a Hub id: user/name"
        )
        if shipped:
            gr.Examples(
                [[path] for path in shipped.values()],
                inputs=pipeline_box,
                label="Shipped with ddpm-kiit",
                example_labels=list(shipped),
            )
        _wire(demo, handlers, pipeline_box, _generate_tab(gr, limits), _learn_tab(gr), _quiz_tab(gr))

    demo.queue(default_concurrency_limit=limits.concurrency, max_size=limits.queue_size)
    demo.ddpm_kiit_cache = cache  # for tests and embedding applications
    demo.ddpm_kiit_downloads = handlers.downloads
    return demo


def launch(
    pipeline: Optional[str] = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    allowed_dirs: Sequence[os.PathLike] = (".",),
    allow_hub: bool = False,
    fast_inference: bool = False,
    device: str = "cpu",
    allowed_repos: Sequence[str] = (),
    limits: AppLimits = AppLimits(),
    **launch_kwargs,
):
    """Builds the app and serves it (on loopback unless `host` says otherwise); its download folder goes with it."""
    allowed = list(allowed_dirs)
    if pipeline and Path(pipeline).expanduser().exists():
        allowed.append(Path(pipeline).expanduser().resolve().parent)
    demo = build_app(
        pipeline,
        allowed,
        limits,
        allow_hub=allow_hub,
        fast_inference=fast_inference,
        device=device,
        allowed_repos=allowed_repos,
    )
    demo.launch(server_name=host, server_port=port, **launch_kwargs)
    if not launch_kwargs.get("prevent_thread_lock"):  # the server has stopped (Ctrl+C)
        demo.ddpm_kiit_downloads.cleanup()
    return demo
