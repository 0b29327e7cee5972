# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""Gaussian blur as the forward process: Cold Diffusion (Bansal et al. 2022) and Blurring Diffusion
(Hoogeboom & Salimans 2022), the talk's open question "try implementing a forward noise using gaussian blur"."""

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .timestep_checks import TimestepCheck

BLUR_SCHEDULES = ("linear", "geometric")
BOUNDARIES = ("reflect", "circular")
SAMPLERS = ("naive", "improved")
PROCESSES = ("cold", "blurring_diffusion")
BLURRING_DIFFUSION_MIN_TRANSFER = 1e-3


@dataclass
class GaussianBlurSchedulerOutput(BaseOutput):
    """
    Output of [`GaussianBlurScheduler.step`].

    Args:
        prev_sample (`torch.Tensor`): x_{t-1}.
        pred_original_sample (`torch.Tensor`): The predicted clean image x0.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def _dct_matrix(size: int, dtype=torch.float64) -> torch.Tensor:
    """The orthonormal DCT-II matrix: its rows are the cosine modes of a signal reflected at both ends."""
    n = torch.arange(size, dtype=dtype)
    matrix = torch.cos(math.pi * (n[None, :] + 0.5) * n[:, None] / size) * math.sqrt(2.0 / size)
    matrix[0] /= math.sqrt(2.0)
    return matrix


class GaussianBlurScheduler(SchedulerMixin, ConfigMixin):
    """
    Blurs instead of adding noise. The degradation D(x0, t) convolves x0 with a Gaussian of standard deviation
    `sigma_t` pixels, `sigma_t` growing from `sigma_min` (t = 0) to `sigma_max` (t = T - 1).

    The blur is computed exactly in the frequency domain: each DCT mode (k, l) of an H x W image (boundary
    `"reflect"`: the image mirrored at its edges) or each DFT mode (`"circular"`) is multiplied by the Gaussian's
    transfer function exp(-2 pi^2 sigma^2 (f_k^2 + f_l^2)): the continuous Gaussian, which a sampled spatial kernel
    matches to 1e-6 from sigma = 1.5 px up (below that the sampled kernel aliases). The cost is the same for any
    sigma and any per-sample t, whereas a spatial kernel grows with sigma and cannot exceed the image under
    reflection (`benchmarks/blur_speed.py` compares them).

    Two processes, chosen with `process`:
    - `"cold"` (Bansal et al. 2022): x_t = D(x0, t) (+ `noise_std` noise). `step` is their Algorithm 1
      (`sampler="naive"`: x_{t-1} = D(x0_hat, t-1)) or Algorithm 2 (`"improved"`: x_{t-1} = x_t - D(x0_hat, t) +
      D(x0_hat, t-1)). Deterministic blur sends every image to its mean colour, so sampling starts from a flat image
      whose channel means are drawn from a Gaussian mixture fitted to the training set (`fit_initial_distribution`),
      plus `initial_noise_std` noise, as the paper does.
    - `"blurring_diffusion"` (Hoogeboom & Salimans 2022): q(z_t | x0) = N(alpha_t D(x0, t), sigma_t^2 I) with the
      cosine noise schedule, starting from pure noise like DDPM. The model predicts epsilon; `step` is the
      frequency-wise posterior of their eq. 11-13.

    Args:
        num_train_timesteps (`int`, defaults to 50): Number of degradation levels T.
        blur_schedule (`str`, defaults to `"linear"`): How sigma grows with t: `"linear"` or `"geometric"`.
        sigma_min (`float`, defaults to 0.0): Blur at t = 0 (0: D(x0, 0) = x0).
        sigma_max (`float`, *optional*): Blur at t = T - 1, in pixels. Default: 32 for the cold process, whose flat
            start needs the last level to be flat too (on a 32 x 32 image, 32 px leaves the lowest cosine mode at
            0.7%; 8 px left 73%, and samples came out with frames and smears); 8 for blurring diffusion, which ends in
            noise anyway and sampled noise at 32 px in 50 steps (benchmarks/blur_vs_noise.py).
        boundary (`str`, defaults to `"reflect"`): `"reflect"` (DCT) or `"circular"` (DFT).
        process (`str`, defaults to `"cold"`): `"cold"` or `"blurring_diffusion"`.
        sampler (`str`, defaults to `"improved"`): Cold Diffusion's Algorithm 1 (`"naive"`) or 2 (`"improved"`).
        noise_std (`float`, defaults to 0.0): Extra noise of the cold process during training.
        initial_noise_std (`float`, defaults to 0.002): Noise added to the flat start image of the cold process.
        gmm_weights, gmm_means, gmm_stds (`List`, *optional*): The fitted start distribution (one row per component,
            one column per channel); set by `fit_initial_distribution` and saved with the config.
        prediction_type (`str`): `"sample"` for the cold process, `"epsilon"` for blurring diffusion.
        clip_sample (`bool`, defaults to `True`): Clip the predicted x0 to [-1, 1].
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 50,
        blur_schedule: str = "linear",
        sigma_min: float = 0.0,
        sigma_max: Optional[float] = None,
        boundary: str = "reflect",
        process: str = "cold",
        sampler: str = "improved",
        noise_std: float = 0.0,
        initial_noise_std: float = 0.002,
        gmm_weights: Optional[List[float]] = None,
        gmm_means: Optional[List[List[float]]] = None,
        gmm_stds: Optional[List[List[float]]] = None,
        prediction_type: Optional[str] = None,
        clip_sample: bool = True,
    ):
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
            raise ValueError(f"`num_train_timesteps` must be a positive integer, got {num_train_timesteps!r}.")
        if blur_schedule not in BLUR_SCHEDULES:
            raise ValueError(f"`blur_schedule` must be one of {BLUR_SCHEDULES}, got {blur_schedule!r}.")
        if process not in PROCESSES:
            raise ValueError(f"`process` must be one of {PROCESSES}, got {process!r}.")
        if sigma_max is None:
            sigma_max = 32.0 if process == "cold" else 8.0
            self.register_to_config(sigma_max=sigma_max)
        if sigma_min < 0 or sigma_max <= 0:
            raise ValueError(f"Blur widths must be >= 0, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}.")
        if sigma_max <= sigma_min:
            raise ValueError(f"`sigma_max` ({sigma_max}) must be larger than `sigma_min` ({sigma_min}).")
        if blur_schedule == "geometric" and sigma_min == 0:
            raise ValueError("A geometric blur schedule needs `sigma_min` > 0 (e.g. 0.5).")
        if boundary not in BOUNDARIES:
            raise ValueError(f"`boundary` must be one of {BOUNDARIES}, got {boundary!r}.")
        if sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}.")
        if noise_std < 0 or initial_noise_std < 0:
            raise ValueError("`noise_std` and `initial_noise_std` must be >= 0.")
        expected = "sample" if process == "cold" else "epsilon"
        if prediction_type is None:
            self.register_to_config(prediction_type=expected)
        elif prediction_type != expected:
            raise ValueError(
                f"The {process} process trains the model to predict {expected!r}; got {prediction_type!r}."
            )
        # Stock `from_config` would drop default-valued keys (see KiitDDPMScheduler); record all as explicit.
        self.register_to_config(_use_default_values=[])

        steps = np.arange(num_train_timesteps, dtype=np.float64) / max(num_train_timesteps - 1, 1)
        if blur_schedule == "linear":
            sigmas = sigma_min + (sigma_max - sigma_min) * steps
        else:
            sigmas = sigma_min * (sigma_max / sigma_min) ** steps
        self.sigmas = torch.from_numpy(sigmas)  # float64; blur widths in pixels, per t
        # Blurring diffusion's noise schedule: alpha_t = cos(pi/2 * s), sigma_t = sin(pi/2 * s), s in (0, 1].
        s = (np.arange(num_train_timesteps, dtype=np.float64) + 1) / num_train_timesteps
        self.alphas = torch.from_numpy(np.clip(np.cos(np.pi / 2 * s), 1e-4, 1.0))
        self.noise_sigmas = torch.from_numpy(np.sqrt(1 - self.alphas.numpy() ** 2))
        if process == "blurring_diffusion":
            # The signal-to-noise ratio alpha_t^2 / sigma_t^2, in the form training's min-SNR weighting reads.
            self.alphas_cumprod = (self.alphas**2).float()
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)
        # Timesteps are checked where they enter (see timestep_checks); our own `timesteps` are valid by construction.
        self._check_timesteps = TimestepCheck(num_train_timesteps)
        self._check_timesteps.trust(self.timesteps)
        self._bases = {}

    # ------------------------------------------------------------------------------------------- the degradation

    def _basis(self, height: int, width: int, device, dtype):
        key = (height, width, device, dtype)
        if key not in self._bases:
            if self.config.boundary == "reflect":
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

    def _sigma_for(self, timesteps: torch.Tensor) -> torch.Tensor:
        """sigma_t per sample; t = -1 means no blur (the chain's end)."""
        sigmas = torch.cat([torch.zeros(1, dtype=torch.float64), self.sigmas]).to(timesteps.device)
        return sigmas[timesteps.long() + 1]

    def _scale_frequencies(self, images: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Multiplies each frequency mode of `images` by `scale` (broadcast over batch, channel and modes)."""
        height, width = images.shape[-2:]
        rows, cols, _ = self._basis(height, width, images.device, images.dtype)
        if self.config.boundary == "reflect":
            coefficients = rows @ images @ cols.T
            return rows.T @ (coefficients * scale) @ cols
        spectrum = torch.fft.rfft2(images)
        return torch.fft.irfft2(spectrum * scale, s=(height, width))

    def _transfer(self, sigma: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        _, _, frequencies = self._basis(height, width, images.device, images.dtype)
        sigma = sigma.to(images.dtype).reshape(-1, 1, 1, 1)
        transfer = torch.exp(-2 * math.pi**2 * sigma**2 * frequencies)
        if self.config.process == "blurring_diffusion":
            # Hoogeboom & Salimans 2022 keep every frequency at least at d_min = 0.001: the reverse step divides by
            # these factors, and without a floor the removed frequencies would amplify the noise predictor's error.
            transfer = (1 - BLURRING_DIFFUSION_MIN_TRANSFER) * transfer + BLURRING_DIFFUSION_MIN_TRANSFER
        return transfer

    def blur(self, images: torch.Tensor, timesteps: Union[int, torch.Tensor]) -> torch.Tensor:
        """D(images, t): Gaussian blur of width sigma_t, one t for the batch or one per sample (t = -1: identity)."""
        return self._blur(images, self._as_tensor(timesteps, images, "timesteps", low=-1))

    def _blur(self, images: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """`blur` for timesteps already checked: one per sample, in [-1, T - 1]."""
        compute_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
        blurred = self._scale_frequencies(
            images.to(compute_dtype), self._transfer(self._sigma_for(timesteps), images.to(compute_dtype))
        )
        return blurred.to(images.dtype)

    def _as_tensor(self, timesteps, images: torch.Tensor, name: str = "timestep", low: int = 0) -> torch.Tensor:
        """`timesteps` checked (integers in [low, T - 1], one or one per sample) as one value per sample."""
        checked = self._check_timesteps(timesteps, name, images.shape[0], low=low)
        if isinstance(checked, int):
            checked = torch.tensor([checked], device=images.device)
        return checked.to(images.device).reshape(-1).expand(images.shape[0])

    # ------------------------------------------------------------------------------------------ training contract

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The training input at t: D(x0, t) (+ noise_std * noise) for the cold process, alpha_t D(x0, t) + sigma_t
        noise for blurring diffusion."""
        t = self._as_tensor(timesteps, original_samples, "timesteps")
        blurred = self._blur(original_samples, t)
        if self.config.process == "cold":
            return blurred + self.config.noise_std * noise if self.config.noise_std else blurred
        alpha = self.alphas.to(t.device)[t].to(original_samples.dtype).reshape(-1, 1, 1, 1)
        sigma = self.noise_sigmas.to(t.device)[t].to(original_samples.dtype).reshape(-1, 1, 1, 1)
        return alpha * blurred + sigma * noise

    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[int] = None) -> torch.Tensor:
        if timestep is not None:
            self._check_timesteps(timestep, "timestep", sample.shape[0] if sample.ndim else None)
        return sample

    def set_timesteps(
        self,
        num_inference_steps: Optional[int] = None,
        device: Union[str, torch.device] = None,
        timesteps: Optional[List[int]] = None,
    ):
        """Degradation levels of the sampling chain, from T - 1 down to 0 evenly spaced, or the strictly decreasing
        `timesteps` given (for example a chain that starts part-way, at an image blurred to level t)."""
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

    def previous_timestep(self, timestep) -> torch.Tensor:
        checked = self._check_timesteps(timestep, "timestep")
        index = torch.as_tensor(checked)
        previous = self._previous_of(index)
        return previous.reshape(timestep.shape) if torch.is_tensor(timestep) else previous

    def _previous_of(self, timesteps: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_previous", None) is None:
            self.set_timesteps()
        return self._previous.to(timesteps.device)[timesteps.long()]

    # ------------------------------------------------------------------------------------------- start of sampling

    def fit_initial_distribution(self, images: torch.Tensor, num_components: int = 10, iterations: int = 100):
        """Fits the cold process's start distribution: a diagonal Gaussian mixture over the channel means of the
        training images (which is what full blur leaves of them), by EM. Stored in the config, so it is saved."""
        means = images.double().mean(dim=(2, 3))  # (n, channels)
        count = len(means)
        components = max(1, min(num_components, count))
        generator = torch.Generator().manual_seed(0)
        centres = means[torch.randperm(count, generator=generator)[:components]].clone()
        stds = means.std(0, keepdim=True).clamp(min=1e-3).repeat(components, 1)
        weights = torch.full((components,), 1.0 / components, dtype=torch.float64)
        for _ in range(iterations):
            log_prob = (
                -0.5 * (((means[:, None, :] - centres[None]) / stds[None]) ** 2).sum(-1)
                - stds.log().sum(-1)[None]
                + weights.log()[None]
            )
            responsibility = torch.softmax(log_prob, dim=1)  # (n, components)
            mass = responsibility.sum(0).clamp(min=1e-9)
            weights = mass / count
            centres = (responsibility.T @ means) / mass[:, None]
            variance = (responsibility.T @ means**2) / mass[:, None] - centres**2
            stds = variance.clamp(min=1e-6).sqrt()
        self.register_to_config(gmm_weights=weights.tolist(), gmm_means=centres.tolist(), gmm_stds=stds.tolist())
        return self

    def initial_sample(self, shape, generator=None, device=None, dtype=None) -> torch.Tensor:
        """x_T to start sampling from: pure noise for blurring diffusion; for the cold process a flat image whose
        channel means are drawn from the fitted mixture, plus `initial_noise_std` noise (Bansal et al. 2022)."""
        if self.config.process == "blurring_diffusion":
            return randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if self.config.gmm_weights is None:
            raise ValueError(
                "The cold process samples from a start distribution fitted to the training data; call "
                "`scheduler.fit_initial_distribution(images)` (training does it) before generating."
            )
        batch, channels = shape[0], shape[1]
        weights = torch.tensor(self.config.gmm_weights, dtype=torch.float64)
        means, stds = torch.tensor(self.config.gmm_means), torch.tensor(self.config.gmm_stds)
        if means.shape[1] != channels:
            raise ValueError(f"The start distribution was fitted on {means.shape[1]} channels, not {channels}.")
        gen_device = generator.device if isinstance(generator, torch.Generator) else torch.device("cpu")
        component = torch.multinomial(weights.float().to(gen_device), batch, replacement=True, generator=generator)
        unit = torch.randn((batch, channels), generator=generator, device=gen_device, dtype=torch.float64)
        channel_means = means.to(gen_device)[component] + stds.to(gen_device)[component] * unit
        flat = channel_means[:, :, None, None].expand(shape).to(device=device, dtype=dtype)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        return flat + self.config.initial_noise_std * noise

    # ---------------------------------------------------------------------------------------------------- sampling

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
    ) -> Union[GaussianBlurSchedulerOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """One reverse step from `timestep` to the chain's previous level (see the class docstring)."""
        t = self._as_tensor(timestep, sample)
        t_prev = self._previous_of(t)
        if self.config.process == "cold":
            x0 = model_output.clamp(-1, 1) if self.config.clip_sample else model_output
            if self.config.sampler == "naive":  # Algorithm 1
                prev = self._blur(x0, t_prev)
            else:  # Algorithm 2: x_{t-1} = x_t - D(x0_hat, t) + D(x0_hat, t-1)
                prev = sample - self._blur(x0, t) + self._blur(x0, t_prev)
        else:
            prev, x0 = self._blurring_diffusion_step(model_output, t, t_prev, sample, generator)
        if not return_dict:
            return (prev, x0)
        return GaussianBlurSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    def _blurring_diffusion_step(self, eps, t, t_prev, z_t, generator):
        """Hoogeboom & Salimans 2022, eq. 11-13, in the frequency basis where the blur is diagonal."""
        dtype = z_t.dtype
        shape4 = (-1, 1, 1, 1)
        alpha_t = self.alphas.to(t.device)[t].to(dtype).reshape(shape4)
        sigma_t = self.noise_sigmas.to(t.device)[t].to(dtype).reshape(shape4)
        last = t_prev < 0
        prev_index = t_prev.clamp(min=0)
        alpha_s = torch.where(last, 1.0, self.alphas.to(t.device)[prev_index]).to(dtype).reshape(shape4)
        sigma_s = torch.where(last, 0.0, self.noise_sigmas.to(t.device)[prev_index]).to(dtype).reshape(shape4)
        d_t = self._transfer(self._sigma_for(t), z_t)  # per-frequency blur factors, (batch, 1, H, W')
        d_s = self._transfer(self._sigma_for(t_prev), z_t)
        # The blurred clean image D_t x0 = (z_t - sigma_t eps) / alpha_t. Near t = T, alpha_t is tiny and divides the
        # model's error by it; like DDPM's x0 clipping, `clip_sample` bounds it to [-1, 1], which holds exactly for
        # every blurred image: the floored blur is a positive kernel of unit sum. (x0 itself is not clipped here:
        # undoing the blur multiplies the removed frequencies by up to 1 / d_min, and clipping that in pixel space
        # would spread the amplified error over all frequencies.)
        blurred_x0 = (z_t - sigma_t * eps) / alpha_t
        if self.config.clip_sample:
            blurred_x0 = blurred_x0.clamp(-1, 1)
        x0 = self._scale_frequencies(blurred_x0, 1.0 / d_t)
        alpha_ts = alpha_t * d_t / (alpha_s * d_s)  # per frequency
        sigma_ts_sq = (sigma_t**2 - alpha_ts**2 * sigma_s**2).clamp(min=1e-12)
        mean = self._scale_frequencies(z_t, alpha_ts * sigma_s**2 / sigma_t**2) + self._scale_frequencies(
            x0, sigma_ts_sq * alpha_s * d_s / sigma_t**2
        )
        std = (sigma_ts_sq * sigma_s**2 / sigma_t**2).sqrt()
        noise = randn_tensor(z_t.shape, generator=generator, device=z_t.device, dtype=dtype)
        prev = mean + self._scale_frequencies(noise, std)
        if self.config.clip_sample:
            x0 = x0.clamp(-1, 1)
        return prev, x0

    def __len__(self):
        return self.config.num_train_timesteps
