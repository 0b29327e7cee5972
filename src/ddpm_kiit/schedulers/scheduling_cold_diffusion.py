# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""Cold Diffusion (Bansal et al. 2022, https://huggingface.co/papers/2208.09392) with Gaussian blur as the
degradation: the talk's open question "try implementing a forward noise using gaussian blur"."""

from dataclasses import dataclass
from typing import List, Optional, Union

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .blur_operator import BlurSchedulerMixin

SAMPLERS = ("naive", "improved")


@dataclass
class ColdDiffusionSchedulerOutput(BaseOutput):
    """
    Output of [`ColdDiffusionScheduler.step`].

    Args:
        prev_sample (`torch.Tensor`): x_{t-1}, the input of the next step.
        pred_original_sample (`torch.Tensor`): The predicted clean image x0 (clipped when `clip_sample=True`).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class ColdDiffusionScheduler(BlurSchedulerMixin):
    """
    Cold Diffusion with Gaussian blur: x_t = D(x0, t), where D convolves x0 with a Gaussian of standard deviation
    `sigma_t` pixels, `sigma_t` growing from `sigma_min` (t = 0) to `sigma_max` (t = T - 1); see
    `ddpm_kiit.schedulers.blur_operator` for how the blur is computed. The degradation is deterministic: the model
    learns to predict x0 (`prediction_type="sample"`), and `step` restores one level at a time with Algorithm 1
    (`sampler="naive"`) or Algorithm 2 (`"improved"`) of the paper.

    Full blur sends every image to its mean colour, so sampling starts from a flat image whose channel means are drawn
    from a Gaussian mixture fitted to the training set (`fit_initial_distribution`, which training calls), plus
    `initial_noise_std` noise, as the paper does (`initial_sample`).

    Args:
        num_train_timesteps (`int`, defaults to 50): Number of degradation levels T.
        blur_schedule (`str`, defaults to `"linear"`): How sigma grows with t: `"linear"` or `"geometric"`.
        sigma_min (`float`, defaults to 0.0): Blur at t = 0 (0: D(x0, 0) = x0).
        sigma_max (`float`, defaults to 32.0): Blur at t = T - 1, in pixels. The flat start needs the last level to
            be flat too: on a 32 x 32 image, 32 px leaves the lowest cosine mode at 0.7%; 8 px left 73%, and samples
            came out with frames and smears (benchmarks/blur_vs_noise.py).
        boundary (`str`, defaults to `"reflect"`): `"reflect"` (DCT) or `"circular"` (DFT).
        sampler (`str`, defaults to `"improved"`): Algorithm 1 (`"naive"`) or Algorithm 2 (`"improved"`).
        noise_std (`float`, defaults to 0.0): Standard deviation of extra Gaussian noise on the training input.
        initial_noise_std (`float`, defaults to 0.002): Noise added to the flat start image.
        gmm_weights, gmm_means, gmm_stds (`List`, *optional*): The fitted start distribution (one row per component,
            one column per channel); set by `fit_initial_distribution` and saved with the config.
        prediction_type (`str`, defaults to `"sample"`): What the model predicts; the only choice is `"sample"`.
        clip_sample (`bool`, defaults to `True`): Clip the predicted x0 to [-1, 1].
    """

    output_class = ColdDiffusionSchedulerOutput

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 50,
        blur_schedule: str = "linear",
        sigma_min: float = 0.0,
        sigma_max: float = 32.0,
        boundary: str = "reflect",
        sampler: str = "improved",
        noise_std: float = 0.0,
        initial_noise_std: float = 0.002,
        gmm_weights: Optional[List[float]] = None,
        gmm_means: Optional[List[List[float]]] = None,
        gmm_stds: Optional[List[List[float]]] = None,
        prediction_type: str = "sample",
        clip_sample: bool = True,
    ):
        self._init_blur(num_train_timesteps, blur_schedule, sigma_min, sigma_max, boundary)
        if sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}.")
        if noise_std < 0 or initial_noise_std < 0:
            raise ValueError("`noise_std` and `initial_noise_std` must be >= 0.")
        if prediction_type != "sample":
            raise ValueError(
                f"The cold process trains the model to predict 'sample' (the clean image); got {prediction_type!r}. "
                "Leave `prediction_type` out, or use BlurringDiffusionScheduler for an epsilon model."
            )

    # ------------------------------------------------------------------------------------------ training contract

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: Union[int, torch.Tensor]
    ) -> torch.Tensor:
        """The training input at t: x_t = D(x0, t), plus `noise_std` * noise when `noise_std` > 0."""
        t = self._as_tensor(timesteps, original_samples, "timesteps")
        blurred = self.gaussian_blur(original_samples, t)
        return blurred + self.config.noise_std * noise if self.config.noise_std else blurred

    def training_target(
        self, sample: torch.Tensor, noise: torch.Tensor, timesteps: Union[int, torch.Tensor]
    ) -> torch.Tensor:
        """What the model learns to predict from x_t: the clean image x0 (`sample`) itself."""
        return sample

    def signal_to_noise_ratio(self, timesteps: Union[int, torch.Tensor]) -> None:
        """None: a deterministic degradation has no signal-to-noise ratio (x_t holds no noise to compare with), so
        SNR-based loss weighting does not apply."""
        return None

    # ------------------------------------------------------------------------------------------- start of sampling

    def fit_initial_distribution(self, images: torch.Tensor, num_components: int = 10, iterations: int = 100):
        """Fits the start distribution: a diagonal Gaussian mixture over the channel means of the training images
        (which is what full blur leaves of them), by EM. Stored in the config, so it is saved.

        Args:
            images (`torch.Tensor`): Training images, (n, channels, height, width), in [-1, 1].
            num_components (`int`, defaults to 10): Mixture components (at most n).
            iterations (`int`, defaults to 100): EM iterations.
        """
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
        """x_T to start sampling from: a flat image whose channel means are drawn from the fitted mixture, plus
        `initial_noise_std` noise, as Bansal et al. 2022 generate from a blur model."""
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

    def _reverse_step(self, x0_hat, t, t_prev, x_t, generator):
        """x_s from x_t and the model's x0_hat (the step is deterministic: `generator` is unused)."""
        x0 = x0_hat.clamp(-1, 1) if self.config.clip_sample else x0_hat
        if self.config.sampler == "naive":  # Algorithm 1: x_s = D(x0_hat, s)
            prev = self.gaussian_blur(x0, t_prev)
        else:  # Algorithm 2: x_s = x_t - D(x0_hat, t) + D(x0_hat, s)
            prev = x_t - self.gaussian_blur(x0, t) + self.gaussian_blur(x0, t_prev)
        return prev, x0
