# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""Blurring Diffusion (Hoogeboom & Salimans 2022, https://huggingface.co/papers/2209.05557): Gaussian blur and
Gaussian noise together as the forward process, starting from pure noise like DDPM."""

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .blur_operator import BlurSchedulerMixin

# Every frequency keeps at least this factor d_min: the reverse step divides by the blur factors, and without a floor
# the removed frequencies would amplify the noise predictor's error without bound.
BLURRING_DIFFUSION_MIN_TRANSFER = 1e-3


@dataclass
class BlurringDiffusionSchedulerOutput(BaseOutput):
    """
    Output of [`BlurringDiffusionScheduler.step`].

    Args:
        prev_sample (`torch.Tensor`): z_s, the input of the next step.
        pred_original_sample (`torch.Tensor`): The predicted clean image x0 (clipped when `clip_sample=True`).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class BlurringDiffusionScheduler(BlurSchedulerMixin):
    """
    Blurring Diffusion: q(z_t | x0) = N(alpha_t D_t x0, sigma_t^2 I), where D_t is a Gaussian blur of width
    `sigma_blur_t` pixels (from `sigma_min` at t = 0 to `sigma_max` at t = T - 1) with every frequency's factor floored
    at d_min = 0.001, and alpha_t = cos(pi/2 s), sigma_t = sin(pi/2 s), s = (t + 1) / T, is the cosine noise
    schedule. The model predicts the noise (`prediction_type="epsilon"`); `step` samples the per-frequency posterior
    q(z_s | z_t, x0_hat) of the paper's eq. 11-13, in the frequency basis where the blur is diagonal. Sampling starts
    from pure Gaussian noise.

    Args:
        num_train_timesteps (`int`, defaults to 50): Number of levels T.
        blur_schedule (`str`, defaults to `"linear"`): How the blur width grows with t: `"linear"` or `"geometric"`.
        sigma_min (`float`, defaults to 0.0): Blur at t = 0, in pixels.
        sigma_max (`float`, defaults to 8.0): Blur at t = T - 1, in pixels. The process ends in noise anyway; with
            32 px it sampled noise in 50 steps (benchmarks/blur_vs_noise.py).
        boundary (`str`, defaults to `"reflect"`): `"reflect"` (DCT) or `"circular"` (DFT).
        prediction_type (`str`, defaults to `"epsilon"`): What the model predicts; the only choice is `"epsilon"`.
        clip_sample (`bool`, defaults to `True`): Clip the blurred x0 estimate D_t x0_hat to [-1, 1] inside `step`, and
            the returned x0 prediction.

    Attributes:
        alphas (`torch.Tensor`): alpha_t per level (float64), clipped to at least 1e-4.
        noise_sigmas (`torch.Tensor`): sigma_t = sqrt(1 - alpha_t^2) per level (float64).
    """

    output_class = BlurringDiffusionSchedulerOutput

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 50,  # T: the number of blur and noise levels
        blur_schedule: str = "linear",
        sigma_min: float = 0.0,
        sigma_max: float = 8.0,
        boundary: str = "reflect",
        prediction_type: str = "epsilon",
        clip_sample: bool = True,
    ):
        self._init_blur(
            num_train_timesteps, blur_schedule, sigma_min, sigma_max, boundary, BLURRING_DIFFUSION_MIN_TRANSFER
        )
        if prediction_type != "epsilon":
            raise ValueError(
                f"Blurring diffusion trains the model to predict 'epsilon' (the noise); got {prediction_type!r}. "
                "Leave `prediction_type` out, or use ColdDiffusionScheduler for a model that predicts the image."
            )
        # The cosine noise schedule: alpha_t = cos(pi/2 * s), sigma_t = sin(pi/2 * s), s = (t + 1) / T in (0, 1].
        s = (np.arange(num_train_timesteps, dtype=np.float64) + 1) / num_train_timesteps
        self.alphas = torch.from_numpy(np.clip(np.cos(np.pi / 2 * s), 1e-4, 1.0))
        self.noise_sigmas = torch.from_numpy(np.sqrt(1 - self.alphas.numpy() ** 2))
        self._alphas_squared = (self.alphas**2).float()  # for `signal_to_noise_ratio`

    # ------------------------------------------------------------------------------------------ training contract

    def _per_sample(self, values: torch.Tensor, t: torch.Tensor, dtype) -> torch.Tensor:
        return values.to(t.device)[t].to(dtype).reshape(-1, 1, 1, 1)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: Union[int, torch.Tensor]
    ) -> torch.Tensor:
        """The training input at t: z_t = alpha_t D_t x0 + sigma_t noise, a draw from q(z_t | x0)."""
        t = self._as_tensor(timesteps, original_samples, "timesteps")
        blurred = self.gaussian_blur(original_samples, t)
        alpha = self._per_sample(self.alphas, t, original_samples.dtype)
        sigma = self._per_sample(self.noise_sigmas, t, original_samples.dtype)
        return alpha * blurred + sigma * noise

    def training_target(
        self, sample: torch.Tensor, noise: torch.Tensor, timesteps: Union[int, torch.Tensor]
    ) -> torch.Tensor:
        """What the model learns to predict from z_t: the noise."""
        return noise

    def signal_to_noise_ratio(self, timesteps: Union[int, torch.Tensor]) -> torch.Tensor:
        """The signal-to-noise ratio alpha_t^2 / sigma_t^2 of z_t per timestep (float32, on `timesteps`' device), with
        sigma_t^2 = 1 - alpha_t^2 (a variance-preserving schedule) floored at 1e-8. It counts the noise against the
        signal's scale alpha_t, not the blur."""
        checked = self._check_timesteps(timesteps, "timesteps")
        index = torch.as_tensor(checked).long()
        alphas_squared = self._alphas_squared.to(index.device)[index]
        return alphas_squared / (1 - alphas_squared).clamp(min=1e-8)

    # ---------------------------------------------------------------------------------------------------- sampling

    def initial_sample(self, shape, generator=None, device=None, dtype=None) -> torch.Tensor:
        """z_T to start sampling from: pure Gaussian noise."""
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)

    def _reverse_step(self, eps, t, t_prev, z_t, generator):
        """A draw of z_s from q(z_s | z_t, x0_hat), eq. 11-13, with x0_hat from the model's noise prediction `eps`; at
        the chain's end (s = -1) alpha_s = 1, sigma_s = 0 and there is no blur."""
        dtype = z_t.dtype
        alpha_t = self._per_sample(self.alphas, t, dtype)
        sigma_t = self._per_sample(self.noise_sigmas, t, dtype)
        last = t_prev < 0
        prev_index = t_prev.clamp(min=0)
        alpha_s = torch.where(last, 1.0, self.alphas.to(t.device)[prev_index]).to(dtype).reshape(-1, 1, 1, 1)
        sigma_s = torch.where(last, 0.0, self.noise_sigmas.to(t.device)[prev_index]).to(dtype).reshape(-1, 1, 1, 1)
        blur = self.gaussian_blur
        d_t = blur.transfer(t, z_t)  # per-frequency blur factors, (batch, 1, H, W')
        d_s = blur.transfer(t_prev, z_t)
        # The blurred clean image D_t x0 = (z_t - sigma_t eps) / alpha_t. Near t = T, alpha_t is tiny and divides the
        # model's error by it; like DDPM's x0 clipping, `clip_sample` bounds it to [-1, 1], which holds exactly for
        # every blurred image: the floored blur is a positive kernel of unit sum. (x0 itself is not clipped here:
        # undoing the blur multiplies the removed frequencies by up to 1 / d_min, and clipping that in pixel space
        # would spread the amplified error over all frequencies.)
        blurred_x0 = (z_t - sigma_t * eps) / alpha_t
        if self.config.clip_sample:
            blurred_x0 = blurred_x0.clamp(-1, 1)
        x0 = blur.scale_frequencies(blurred_x0, 1.0 / d_t)
        # Eq. 11-13, per frequency: alpha_{t|s} = alpha_t d_t / (alpha_s d_s),
        # sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2, the posterior mean
        # (alpha_{t|s} sigma_s^2 / sigma_t^2) z_t + (sigma_{t|s}^2 alpha_s d_s / sigma_t^2) x0
        # and its standard deviation sigma_{t|s} sigma_s / sigma_t.
        alpha_ts = alpha_t * d_t / (alpha_s * d_s)
        sigma_ts_sq = (sigma_t**2 - alpha_ts**2 * sigma_s**2).clamp(min=1e-12)
        mean = blur.scale_frequencies(z_t, alpha_ts * sigma_s**2 / sigma_t**2) + blur.scale_frequencies(
            x0, sigma_ts_sq * alpha_s * d_s / sigma_t**2
        )
        std = (sigma_ts_sq * sigma_s**2 / sigma_t**2).sqrt()
        noise = randn_tensor(z_t.shape, generator=generator, device=z_t.device, dtype=dtype)
        prev = mean + blur.scale_frequencies(noise, std)
        if self.config.clip_sample:
            x0 = x0.clamp(-1, 1)
        return prev, x0
