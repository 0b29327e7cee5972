# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""The Gaussian blur that both blur schedulers degrade images with, and the timestep handling they share.

`GaussianBlur` is the operator D(x, t): a Gaussian of standard deviation sigma_t pixels, computed exactly in the
frequency domain. Each DCT mode (k, l) of an H x W image (boundary `"reflect"`: the image mirrored at its edges) or
each DFT mode (`"circular"`) is multiplied by the Gaussian's transfer function exp(-2 pi^2 sigma^2 (f_k^2 + f_l^2)):
the continuous Gaussian, which a sampled spatial kernel matches to 1e-6 from sigma = 1.5 px up (below that the sampled
kernel aliases). The cost is the same for any sigma and any per-sample t, whereas a spatial kernel grows with sigma
and cannot exceed the image under reflection (`benchmarks/blur_speed.py` compares them).

`BlurSchedulerMixin` is the base of [`ColdDiffusionScheduler`] and [`BlurringDiffusionScheduler`]: the blur-width
schedule, `blur`, and the sampling chain (`set_timesteps`, `previous_timestep`, the timestep checks).
"""

import math
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from .timestep_checks import TimestepCheck, UnscaledModelInput

BLUR_SCHEDULES = ("linear", "geometric")
BOUNDARIES = ("reflect", "circular")


def _dct_matrix(size: int, dtype=torch.float64) -> torch.Tensor:
    """The orthonormal DCT-II matrix: its rows are the cosine modes of a signal reflected at both ends."""
    n = torch.arange(size, dtype=dtype)
    matrix = torch.cos(math.pi * (n[None, :] + 0.5) * n[:, None] / size) * math.sqrt(2.0 / size)
    matrix[0] /= math.sqrt(2.0)
    return matrix


def blur_widths(num_train_timesteps: int, blur_schedule: str, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """sigma_t in pixels for t = 0 .. T - 1 (float64), from `sigma_min` to `sigma_max`: evenly spaced (`"linear"`) or
    with a constant ratio (`"geometric"`, which needs `sigma_min` > 0). Raises ValueError for a bad schedule."""
    if blur_schedule not in BLUR_SCHEDULES:
        raise ValueError(f"`blur_schedule` must be one of {BLUR_SCHEDULES}, got {blur_schedule!r}.")
    if sigma_min is None or sigma_max is None:
        raise ValueError(f"Blur widths are numbers of pixels, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}.")
    if sigma_min < 0 or sigma_max <= 0:
        raise ValueError(f"Blur widths must be >= 0, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}.")
    if sigma_max <= sigma_min:
        raise ValueError(f"`sigma_max` ({sigma_max}) must be larger than `sigma_min` ({sigma_min}).")
    if blur_schedule == "geometric" and sigma_min == 0:
        raise ValueError("A geometric blur schedule needs `sigma_min` > 0 (e.g. 0.5).")
    steps = np.arange(num_train_timesteps, dtype=np.float64) / max(num_train_timesteps - 1, 1)
    if blur_schedule == "linear":
        sigmas = sigma_min + (sigma_max - sigma_min) * steps
    else:
        sigmas = sigma_min * (sigma_max / sigma_min) ** steps
    return torch.from_numpy(sigmas)


class GaussianBlur:
    """
    D(x, t): Gaussian blur of width `sigmas[t]` pixels (t = -1: no blur), in the frequency domain (see the module
    docstring). Keeps one frequency basis per (height, width, device, dtype).

    Args:
        sigmas (`torch.Tensor`): Blur width per level t, in pixels (float64).
        boundary (`str`): `"reflect"` (DCT) or `"circular"` (DFT).
        min_transfer (`float`, defaults to 0.0): A floor d_min under every frequency's factor:
            d = (1 - d_min) exp(-2 pi^2 sigma^2 f^2) + d_min, so that no frequency is removed entirely.
    """

    def __init__(self, sigmas: torch.Tensor, boundary: str, min_transfer: float = 0.0):
        if boundary not in BOUNDARIES:
            raise ValueError(f"`boundary` must be one of {BOUNDARIES}, got {boundary!r}.")
        self.sigmas = sigmas
        self.boundary = boundary
        self.min_transfer = min_transfer
        self._bases = {}

    def _basis(self, height: int, width: int, device, dtype):
        key = (height, width, device, dtype)
        if key not in self._bases:
            if self.boundary == "reflect":
                rows, cols = _dct_matrix(height), _dct_matrix(width)
                freq_h = torch.arange(height, dtype=torch.float64) / (2 * height)
                freq_w = torch.arange(width, dtype=torch.float64) / (2 * width)
                self._bases[key] = (
                    rows.to(device, dtype),
                    cols.to(device, dtype),
                    (freq_h[:, None] ** 2 + freq_w[None, :] ** 2).to(device, dtype),
                )
            else:
                freq_h = torch.fft.fftfreq(height, dtype=torch.float64)
                freq_w = torch.fft.rfftfreq(width, dtype=torch.float64)
                self._bases[key] = (None, None, (freq_h[:, None] ** 2 + freq_w[None, :] ** 2).to(device, dtype))
        return self._bases[key]

    def sigma_for(self, timesteps: torch.Tensor) -> torch.Tensor:
        """sigma_t per sample; t = -1 means no blur (the chain's end)."""
        sigmas = torch.cat([torch.zeros(1, dtype=torch.float64), self.sigmas]).to(timesteps.device)
        return sigmas[timesteps.long() + 1]

    def scale_frequencies(self, images: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Multiplies each frequency mode of `images` by `scale` (broadcast over batch, channel and modes)."""
        height, width = images.shape[-2:]
        rows, cols, _ = self._basis(height, width, images.device, images.dtype)
        if self.boundary == "reflect":
            coefficients = rows @ images @ cols.T
            return rows.T @ (coefficients * scale) @ cols
        spectrum = torch.fft.rfft2(images)
        return torch.fft.irfft2(spectrum * scale, s=(height, width))

    def transfer(self, timesteps: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The factor of each frequency mode of `images` at each sample's t: shape (batch, 1, H, W) for the DCT,
        (batch, 1, H, W // 2 + 1) for the DFT, in `images`' dtype."""
        height, width = images.shape[-2:]
        _, _, frequencies = self._basis(height, width, images.device, images.dtype)
        sigma = self.sigma_for(timesteps).to(images.dtype).reshape(-1, 1, 1, 1)
        transfer = torch.exp(-2 * math.pi**2 * sigma**2 * frequencies)
        if self.min_transfer:
            transfer = (1 - self.min_transfer) * transfer + self.min_transfer
        return transfer

    def __call__(self, images: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """D(images, t) for timesteps already checked: one per sample, in [-1, T - 1]. Computed in float32 (float64
        for float64 images) and returned in `images`' dtype."""
        compute_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
        images_compute = images.to(compute_dtype)
        blurred = self.scale_frequencies(images_compute, self.transfer(timesteps, images_compute))
        return blurred.to(images.dtype)


class BlurSchedulerMixin(UnscaledModelInput, SchedulerMixin, ConfigMixin):
    """
    What [`ColdDiffusionScheduler`] and [`BlurringDiffusionScheduler`] share: the blur-width schedule and `blur`, and
    the sampling chain. A subclass's `__init__` calls `_init_blur` with its config; it defines `_reverse_step` (its
    process's reverse step, which `step` calls) and `output_class` (what `step` returns).

    Attributes:
        sigmas (`torch.Tensor`): Blur width per level t, in pixels (float64).
        timesteps (`torch.Tensor`): The sampling chain, from T - 1 down to 0 (see `set_timesteps`).
    """

    order = 1

    def _init_blur(
        self,
        num_train_timesteps: int,
        blur_schedule: str,
        sigma_min: float,
        sigma_max: float,
        boundary: str,
        min_transfer: float = 0.0,
    ):
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
            raise ValueError(f"`num_train_timesteps` must be a positive integer, got {num_train_timesteps!r}.")
        self.gaussian_blur = GaussianBlur(
            blur_widths(num_train_timesteps, blur_schedule, sigma_min, sigma_max), boundary, min_transfer
        )
        self.sigmas = self.gaussian_blur.sigmas
        # Stock `from_config` would drop default-valued keys (see KiitDDPMScheduler); record all as explicit.
        self.register_to_config(_use_default_values=[])
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)
        # Timesteps are checked where they enter (see timestep_checks); our own `timesteps` are valid by construction.
        self._check_timesteps = TimestepCheck(num_train_timesteps)
        self._check_timesteps.trust(self.timesteps)
        self._previous = None

    def blur(self, images: torch.Tensor, timesteps: Union[int, torch.Tensor]) -> torch.Tensor:
        """D(images, t): Gaussian blur of width sigma_t, one t for the batch or one per sample (t = -1: identity)."""
        return self.gaussian_blur(images, self._as_tensor(timesteps, images, "timesteps", low=-1))

    def _as_tensor(self, timesteps, images: torch.Tensor, name: str = "timestep", low: int = 0) -> torch.Tensor:
        """`timesteps` checked (integers in [low, T - 1], one or one per sample) as one value per sample."""
        checked = self._check_timesteps(timesteps, name, images.shape[0], low=low)
        if isinstance(checked, int):
            checked = torch.tensor([checked], device=images.device)
        return checked.to(images.device).reshape(-1).expand(images.shape[0])

    def set_timesteps(
        self,
        num_inference_steps: Optional[int] = None,
        device: Union[str, torch.device] = None,
        timesteps: Optional[List[int]] = None,
    ):
        """
        Degradation levels of the sampling chain, from T - 1 down to 0 evenly spaced, or the strictly decreasing
        `timesteps` given (for example a chain that starts part-way, at an image blurred to level t).

        Args:
            num_inference_steps (`int`, *optional*): Number of steps; `None` (and no `timesteps`) means every level.
            device (`str` or `torch.device`, *optional*): The device of the chain's `timesteps`.
            timesteps (`List[int]`, *optional*): The chain itself, strictly decreasing blur levels in
                [0, `num_train_timesteps` - 1], instead of `num_inference_steps` (not both).
        """
        total = self.config.num_train_timesteps
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("Pass either `num_inference_steps` or `timesteps`, not both.")
            timesteps = np.asarray(timesteps, dtype=np.int64)
            if timesteps.ndim != 1 or len(timesteps) == 0 or np.any(np.diff(timesteps) >= 0):
                raise ValueError(f"`timesteps` must be non-empty and strictly decreasing, got {timesteps.tolist()}.")
            if timesteps[0] >= total or timesteps[-1] < 0:
                raise ValueError(f"`timesteps` must lie in [0, {total}), got {timesteps.tolist()}.")
            num_inference_steps = len(timesteps)
        else:
            if num_inference_steps is None:
                num_inference_steps = total
            if not isinstance(num_inference_steps, (int, np.integer)) or not 1 <= num_inference_steps <= total:
                raise ValueError(
                    f"`num_inference_steps` must be an integer between 1 and `num_train_timesteps`={total}, "
                    f"got {num_inference_steps!r}."
                )
            timesteps = np.linspace(total - 1, 0, num_inference_steps).round().astype(np.int64)
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.from_numpy(timesteps).to(device)
        self._check_timesteps.trust(self.timesteps)
        previous = np.full(total, -1, dtype=np.int64)
        previous[timesteps[:-1]] = timesteps[1:]
        self._previous = torch.from_numpy(previous)

    def previous_timestep(self, timestep: Union[int, torch.Tensor]) -> torch.Tensor:
        """The level the chain moves to from `timestep` (-1 after the last step), as a tensor of `timestep`'s shape.
        A timestep that is not on the current chain gives -1."""
        checked = self._check_timesteps(timestep, "timestep")
        index = torch.as_tensor(checked)
        previous = self._previous_of(index)
        return previous.reshape(timestep.shape) if torch.is_tensor(timestep) else previous

    def _previous_of(self, timesteps: torch.Tensor) -> torch.Tensor:
        if self._previous is None:
            self.set_timesteps()
        return self._previous.to(timesteps.device)[timesteps.long()]

    def step(
        self,
        model_output: torch.Tensor,  # x0 for cold diffusion, epsilon for blurring diffusion
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
    ) -> Union[BaseOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """
        One reverse step from level t = `timestep` to the chain's previous level s (-1 after the chain's last step:
        no blur), by the process's own rule (see the class docstring).

        Args:
            model_output (`torch.Tensor`): The model's prediction (x0 for cold diffusion, the noise for blurring
                diffusion).
            timestep (`int` or `torch.Tensor`): The current level t, one for the batch or one per sample.
            sample (`torch.Tensor`): The current sample at level t.
            generator (`torch.Generator`, *optional*): Random generator for the step's noise, if it draws any.
            return_dict (`bool`, defaults to `True`): Return the scheduler's `output_class` instead of a tuple.

        Returns:
            `output_class` (`prev_sample`, `pred_original_sample`) or the tuple (prev_sample, pred_original_sample).
        """
        t = self._as_tensor(timestep, sample)
        prev, x0 = self._reverse_step(model_output, t, self._previous_of(t), sample, generator)
        if not return_dict:
            return (prev, x0)
        return self.output_class(prev_sample=prev, pred_original_sample=x0)

    def __len__(self):
        return self.config.num_train_timesteps
