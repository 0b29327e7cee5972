# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""The DDPM of the KIIT talk (Ho et al. 2020) as a Diffusers scheduler: linear betas, T = 300 by default."""

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
VARIANCE_TYPES = ("fixed_small", "fixed_large")
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")


@dataclass
class KiitDDPMSchedulerOutput(BaseOutput):
    """
    Output of [`KiitDDPMScheduler.step`].

    Args:
        prev_sample (`torch.Tensor`): x_{t-1}, the input of the next denoising step.
        pred_original_sample (`torch.Tensor`): The predicted clean image x0 (clipped when `clip_sample=True`).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def _betas_float64(
    num_train_timesteps: int, beta_start: float, beta_end: float, beta_schedule: str, trained_betas
) -> torch.Tensor:
    if trained_betas is not None:
        return torch.as_tensor(np.asarray(trained_betas, dtype=np.float64))
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    # "squaredcos_cap_v2": Nichol & Dhariwal 2021, eq. 17, with betas capped at 0.999. Diffusers' own helper
    # returns float32; we need the schedule in float64 so every derived tensor is exact before the final cast.
    steps = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    alpha_bar = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)


class KiitDDPMScheduler(SchedulerMixin, ConfigMixin):
    """
    The denoising diffusion probabilistic model of Ho et al. 2020 with the KIIT talk's defaults.

    Every schedule tensor is computed once in float64 and cast to float32 at the end, so `betas`, `alphas`,
    `alphas_cumprod`, `alphas_cumprod_prev`, `sqrt_recip_alphas`, `sqrt_alphas_cumprod`,
    `sqrt_one_minus_alphas_cumprod` and `posterior_variance` are within float32 rounding of their formulas.

    The talk's schedule (T = 300, betas from 1e-4 to 0.02, values tuned for T = 1000) ends at
    alpha_bar_T = 0.048: x_T still holds 22% of the image's amplitude, so sampling from pure noise starts from a
    state the model never saw. It stays the default for faithfulness; `rescale_betas_zero_snr=True` (best with
    `prediction_type="v_prediction"`) or `beta_schedule="squaredcos_cap_v2"` fix it.

    The config keys are those of [`~diffusers.DDPMScheduler`], so `DDIMScheduler.from_config(scheduler.config)`
    and the other stock schedulers pick up the same betas.

    Args:
        num_train_timesteps (`int`, defaults to 300): Number of diffusion steps T.
        beta_start (`float`, defaults to 1e-4): beta_1.
        beta_end (`float`, defaults to 0.02): beta_T.
        beta_schedule (`str`, defaults to `"linear"`): `"linear"`, `"scaled_linear"` or `"squaredcos_cap_v2"`.
        trained_betas (`np.ndarray` or `List[float]`, *optional*): Betas to use instead of a schedule.
        variance_type (`str`, defaults to `"fixed_small"`):
            `"fixed_small"`: the posterior variance beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) of the talk;
            `"fixed_large"`: beta_t.
        clip_sample (`bool`, defaults to `True`): Clip the predicted x0 (never x_t) to `clip_sample_range`.
        clip_sample_range (`float`, defaults to 1.0): Half-width of the clipping interval.
        prediction_type (`str`, defaults to `"epsilon"`): What the model predicts: `"epsilon"`, `"sample"` or
            `"v_prediction"`.
        timestep_spacing (`str`, defaults to `"leading"`): How `set_timesteps` picks a shorter chain, as in
            Table 2 of https://huggingface.co/papers/2305.08891.
        steps_offset (`int`, defaults to 0): Offset added to `"leading"` timesteps.
        rescale_betas_zero_snr (`bool`, defaults to `False`): Rescale the betas to reach alpha_bar_T = 0
            (Lin et al. 2023, Algorithm 1).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 300,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        self._check_config()
        # Stock `from_config` drops every key the object was built with by default (its `_use_default_values`),
        # so `DDIMScheduler.from_config(KiitDDPMScheduler().config)` would silently get T = 1000. Our defaults are
        # not Diffusers' defaults: record every key as explicitly set.
        self.register_to_config(_use_default_values=[])

        betas = _betas_float64(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        # Ho et al. 2020, eq. 7: the variance of q(x_{t-1} | x_t, x_0).
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)

        self._alphas_cumprod_float64 = alphas_cumprod
        self.betas = betas.float()
        self.alphas = alphas.float()
        self.alphas_cumprod = alphas_cumprod.float()
        self.alphas_cumprod_prev = alphas_cumprod_prev.float()
        self.sqrt_recip_alphas = (1.0 / alphas.sqrt()).float()
        self.sqrt_alphas_cumprod = alphas_cumprod.sqrt().float()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod).sqrt().float()
        self.posterior_variance = posterior_variance.float()

        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self._coefficient_cache = {}
        self._set_chain(np.arange(num_train_timesteps)[::-1].copy())

    def _check_config(self):
        config = self.config
        if not isinstance(config.num_train_timesteps, int) or config.num_train_timesteps < 2:
            raise ValueError(f"`num_train_timesteps` must be an integer >= 2, got {config.num_train_timesteps!r}.")
        if config.trained_betas is not None:
            betas = np.asarray(config.trained_betas, dtype=np.float64)
            if betas.shape != (config.num_train_timesteps,) or not ((betas > 0) & (betas < 1)).all():
                raise ValueError(
                    f"`trained_betas` must hold {config.num_train_timesteps} values (`num_train_timesteps`), each "
                    f"strictly between 0 and 1; got shape {betas.shape}, range [{betas.min():.3g}, {betas.max():.3g}]."
                )
        elif config.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"`beta_schedule` must be one of {BETA_SCHEDULES}, got {config.beta_schedule!r}.")
        elif config.beta_schedule != "squaredcos_cap_v2" and not 0 < config.beta_start < config.beta_end < 1:
            raise ValueError(
                f"Need 0 < `beta_start` < `beta_end` < 1, got beta_start={config.beta_start!r}, "
                f"beta_end={config.beta_end!r}. The talk uses beta_start=1e-4, beta_end=0.02."
            )
        if config.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"`prediction_type` must be one of {PREDICTION_TYPES}, got {config.prediction_type!r}.")
        if config.variance_type not in VARIANCE_TYPES:
            raise ValueError(f"`variance_type` must be one of {VARIANCE_TYPES}, got {config.variance_type!r}.")
        if config.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(
                f"`timestep_spacing` must be one of {TIMESTEP_SPACINGS}, got {config.timestep_spacing!r}."
            )
        if config.clip_sample_range <= 0:
            raise ValueError(f"`clip_sample_range` must be positive, got {config.clip_sample_range!r}.")

    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[int] = None) -> torch.Tensor:
        """DDPM does not scale its input; here for interchangeability with the other schedulers."""
        return sample

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device: Union[str, torch.device] = None):
        """
        Chooses the timesteps of the sampling chain. With fewer steps than `num_train_timesteps`, each step jumps
        between kept timesteps s > s' with the betas implied by the kept alpha_bar values,
        beta = 1 - alpha_bar_s / alpha_bar_s' (Nichol & Dhariwal 2021, section 4), so the chain stays a DDPM.

        Args:
            num_inference_steps (`int`, *optional*): Number of steps; `None` means every training timestep.
            device (`str` or `torch.device`, *optional*): Where to put `timesteps`.
        """
        total = self.config.num_train_timesteps
        if num_inference_steps is None:
            num_inference_steps = total
        if not isinstance(num_inference_steps, (int, np.integer)) or not 1 <= num_inference_steps <= total:
            raise ValueError(
                f"`num_inference_steps` must be an integer between 1 and `num_train_timesteps`={total}, "
                f"got {num_inference_steps!r}."
            )
        spacing = self.config.timestep_spacing
        if spacing == "linspace":
            timesteps = np.linspace(0, total - 1, num_inference_steps).round()[::-1]
        elif spacing == "leading":
            step_ratio = total // num_inference_steps
            timesteps = (np.arange(num_inference_steps) * step_ratio)[::-1] + self.config.steps_offset
        else:
            timesteps = np.round(np.arange(total, 0, -total / num_inference_steps)) - 1
        timesteps = timesteps.astype(np.int64)
        if timesteps.max() >= total or len(np.unique(timesteps)) != len(timesteps):
            raise ValueError(
                f"`steps_offset`={self.config.steps_offset} with {num_inference_steps} steps gives timesteps outside "
                f"[0, {total}) or repeated ones; lower `steps_offset` or the number of steps."
            )
        self.num_inference_steps = num_inference_steps
        self._set_chain(timesteps.copy())
        self.timesteps = self.timesteps.to(device)

    def _set_chain(self, timesteps: np.ndarray):
        """Precomputes, for each timestep of the chain, the coefficients of one reverse step (float64, then cast)."""
        total = self.config.num_train_timesteps
        self.timesteps = torch.from_numpy(timesteps)
        previous = np.full(total, -1, dtype=np.int64)
        previous[timesteps[:-1]] = timesteps[1:]
        self._previous_timestep = previous.tolist()

        alphas_cumprod = self._alphas_cumprod_float64
        prev_index = torch.from_numpy(previous)
        alpha_bar = alphas_cumprod
        alpha_bar_prev = torch.where(prev_index >= 0, alphas_cumprod[prev_index.clamp(min=0)], torch.ones(1).double())
        beta = 1.0 - alpha_bar / alpha_bar_prev  # the chain's beta_t: the talk's beta_t when no step is skipped
        # Posterior q(x_prev | x_t, x0) = N(coef_x0 * x0 + coef_xt * x_t, variance), Ho et al. 2020, eq. 6-7.
        coef_x0 = alpha_bar_prev.sqrt() * beta / (1.0 - alpha_bar)
        coef_xt = (1.0 - beta).sqrt() * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        if self.config.variance_type == "fixed_small":
            variance = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        else:
            variance = torch.where(prev_index >= 0, beta, torch.zeros(1).double())
        # With a zero-terminal-SNR schedule alpha_bar_T = 0 and an epsilon model cannot say anything about x0;
        # floor it as Diffusers' DDIM does so x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) stays finite.
        alpha_bar_floored = alpha_bar.clamp(min=2**-24)
        table = torch.stack(
            [
                alpha_bar_floored.sqrt(),
                (1.0 - alpha_bar).sqrt(),
                coef_x0,
                coef_xt,
                variance.sqrt(),
            ]
        ).float()
        self._coefficients = table
        self._coefficient_cache = {}

    def _table(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        # One copy per (device, dtype) so that `step` never moves data between host and device.
        key = (device, dtype)
        if key not in self._coefficient_cache:
            self._coefficient_cache[key] = self._coefficients.to(device=device, dtype=dtype)
        return self._coefficient_cache[key]

    def previous_timestep(self, timestep: int) -> int:
        """The timestep the chain moves to from `timestep` (-1 after the last step)."""
        return self._previous_timestep[int(timestep)]

    def _check_timestep(self, timestep, batch: int):
        total = self.config.num_train_timesteps
        if torch.is_tensor(timestep):
            if timestep.ndim > 1 or (timestep.ndim == 1 and timestep.shape[0] not in (1, batch)):
                raise ValueError(
                    f"`timestep` must be a scalar or hold one value per sample ({batch}), "
                    f"got shape {tuple(timestep.shape)}."
                )
            if timestep.is_floating_point():
                raise ValueError("`timestep` must hold integers (indices into the schedule), got a float tensor.")
        elif not isinstance(timestep, (int, np.integer)) or not 0 <= timestep < total:
            raise ValueError(f"`timestep` must be an integer in [0, {total}), got {timestep!r}.")

    @staticmethod
    def _per_sample(values: torch.Tensor, ndim: int) -> torch.Tensor:
        return values.reshape(values.shape + (1,) * (ndim - values.ndim))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
    ) -> Union[KiitDDPMSchedulerOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """
        One reverse step x_t -> x_{t-1}. For an epsilon model without clipping this is the talk's (Ho et al. 2020,
        Algorithm 2)
        x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) + sqrt(posterior_variance_t) z;
        it is computed as the posterior mean from the predicted x0 (eq. 7), which is the same number and lets x0 be
        clipped. No noise is added on the chain's last step (t = 0 for the full chain).

        Args:
            model_output (`torch.Tensor`): The model's prediction (epsilon, x0 or v, per `prediction_type`).
            timestep (`int` or `torch.Tensor`): The current timestep, one for the batch or one per sample.
            sample (`torch.Tensor`): x_t.
            generator (`torch.Generator`, *optional*): Random generator for the noise z.
            return_dict (`bool`, defaults to `True`): Return a [`KiitDDPMSchedulerOutput`] instead of a tuple.
        """
        self._check_timestep(timestep, sample.shape[0])
        table = self._table(sample.device, sample.dtype)
        if torch.is_tensor(timestep) and timestep.ndim == 0 and timestep.device.type == "cpu":
            timestep = int(timestep)  # a pipeline's 0-d CPU timestep: index on the host, no device copy involved
        if torch.is_tensor(timestep):
            coefficients = table[:, timestep.to(sample.device)]
            coefficients = self._per_sample(coefficients, sample.ndim + 1)
            needs_noise = True  # the std of samples at the chain's end is 0, so their noise vanishes
        else:
            coefficients = table[:, timestep]
            needs_noise = self._previous_timestep[timestep] >= 0
        sqrt_alpha_bar, sqrt_one_minus_alpha_bar, coef_x0, coef_xt, std = coefficients

        # Fused multiply-adds (addcmul) keep this at a few passes over the batch; the arithmetic is that of the
        # docstring.
        prediction_type = self.config.prediction_type
        if prediction_type == "epsilon":
            pred_original_sample = torch.addcmul(sample, model_output, -sqrt_one_minus_alpha_bar).div_(sqrt_alpha_bar)
        elif prediction_type == "sample":
            pred_original_sample = model_output
        else:  # v_prediction, Salimans & Ho 2022: x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v
            pred_original_sample = torch.addcmul(sample * sqrt_alpha_bar, model_output, -sqrt_one_minus_alpha_bar)
        if self.config.clip_sample:
            limit = self.config.clip_sample_range
            pred_original_sample = pred_original_sample.clamp(-limit, limit)

        prev_sample = torch.addcmul(pred_original_sample * coef_x0, sample, coef_xt)
        if needs_noise:
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            prev_sample.addcmul_(noise, std)

        if not return_dict:
            return (prev_sample, pred_original_sample)
        return KiitDDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def _gather(self, values: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        values = values.to(device=like.device, dtype=like.dtype)[timesteps.to(like.device)]
        return self._per_sample(values, like.ndim)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0): sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (Ho et al. 2020, eq. 4), per sample."""
        sqrt_alpha_bar = self._gather(self.sqrt_alphas_cumprod, timesteps, original_samples)
        sqrt_one_minus_alpha_bar = self._gather(self.sqrt_one_minus_alphas_cumprod, timesteps, original_samples)
        return torch.addcmul(original_samples * sqrt_alpha_bar, noise, sqrt_one_minus_alpha_bar)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v-prediction target sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x0 (Salimans & Ho 2022)."""
        sqrt_alpha_bar = self._gather(self.sqrt_alphas_cumprod, timesteps, sample)
        sqrt_one_minus_alpha_bar = self._gather(self.sqrt_one_minus_alphas_cumprod, timesteps, sample)
        return sqrt_alpha_bar * noise - sqrt_one_minus_alpha_bar * sample

    def __len__(self):
        return self.config.num_train_timesteps
