# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""The DDPM of the KIIT talk (Ho et al. 2020) as a Diffusers scheduler: linear betas, T = 300 by default."""

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .timestep_checks import TimestepCheck, UnscaledModelInput

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")
MIN_VARIANCE = 1e-20  # DDPMScheduler's floor under the posterior variance before its log is taken


@dataclass
class KiitDDPMSchedulerOutput(BaseOutput):
    """
    Output of [`KiitDDPMScheduler.step`].

    Args:
        prev_sample (`torch.Tensor`): x_{t-1}, the input of the next denoising step.
        pred_original_sample (`torch.Tensor`): The predicted clean image x0 (clipped when `clip_sample=True`,
            thresholded when `thresholding=True`).
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
    if (
        beta_schedule == "sigmoid"
    ):  # GeoDiff (Xu et al. 2022): a sigmoid over [-6, 6] stretched to [beta_start, beta_end]
        steps = torch.linspace(-6, 6, num_train_timesteps, dtype=torch.float64)
        return torch.sigmoid(steps) * (beta_end - beta_start) + beta_start
    # "squaredcos_cap_v2": Nichol & Dhariwal 2021, eq. 17, with betas capped at 0.999. Diffusers' own helper
    # returns float32; we need the schedule in float64 so every derived tensor is exact before the final cast.
    steps = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    alpha_bar = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)


class KiitDDPMScheduler(UnscaledModelInput, SchedulerMixin, ConfigMixin):
    """
    The denoising diffusion probabilistic model of Ho et al. 2020 with the KIIT talk's defaults.

    A drop-in superset of [`~diffusers.DDPMScheduler`]: the same config keys, options and methods with the same
    meaning (docs/schedulers.md lists where ours is stricter, and why). Every schedule tensor is computed once in
    float64 and cast to float32 at the end, so `betas`, `alphas`, `alphas_cumprod`, `alphas_cumprod_prev`,
    `sqrt_recip_alphas`, `sqrt_alphas_cumprod`, `sqrt_one_minus_alphas_cumprod` and `posterior_variance` are within
    float32 rounding of their formulas, and so are the per-step coefficients that `step` reads from a table.
    `step`, `add_noise` and `get_velocity` take one timestep for the batch or one per sample.

    The talk's schedule (T = 300, betas from 1e-4 to 0.02, values tuned for T = 1000) ends at
    alpha_bar_T = 0.048: x_T still holds 22% of the image's amplitude, so sampling from pure noise starts from a
    state the model never saw. It stays the default for faithfulness; `rescale_betas_zero_snr=True` (best with
    `prediction_type="v_prediction"`) or `beta_schedule="squaredcos_cap_v2"` fix it.

    The config keys are those of [`~diffusers.DDPMScheduler`], so `DDIMScheduler.from_config(scheduler.config)`
    and the other stock schedulers pick up the same betas.

    Args:
        num_train_timesteps (`int`, defaults to 300): Number of diffusion steps T (>= 2).
        beta_start (`float`, defaults to 1e-4): beta_1.
        beta_end (`float`, defaults to 0.02): beta_T.
        beta_schedule (`str`, defaults to `"linear"`): `"linear"`, `"scaled_linear"`, `"squaredcos_cap_v2"` or
            `"sigmoid"`.
        trained_betas (`np.ndarray` or `List[float]`, *optional*): Betas to use instead of a schedule, one per
            timestep (`num_train_timesteps` of them).
        variance_type (`str`, defaults to `"fixed_small"`): The variance of each reverse step:
            `"fixed_small"`: the posterior variance beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) of the talk;
            `"fixed_large"`: beta_t; `"fixed_small_log"`, `"fixed_large_log"`: the same variances computed through
            their logarithm (as GLIDE and improved DDPM do); `"learned"`: the model predicts the variance;
            `"learned_range"`: the model predicts v in [-1, 1] and the log-variance is the interpolation
            (1 + v) / 2 log(beta_t) + (1 - v) / 2 log(posterior variance) (Nichol & Dhariwal 2021, eq. 15). The two
            learned types need a model with 2C output channels: the prediction, then the variance.
        clip_sample (`bool`, defaults to `True`): Clip the predicted x0 (never x_t) to `clip_sample_range`.
        prediction_type (`str`, defaults to `"epsilon"`): What the model predicts: `"epsilon"`, `"sample"` or
            `"v_prediction"`.
        thresholding (`bool`, defaults to `False`): Imagen's dynamic thresholding of the predicted x0 (Saharia et al.
            2022), used instead of `clip_sample`: per image, s is the `dynamic_thresholding_ratio` quantile of |x0|,
            kept in [1, `sample_max_value`]; x0 is clipped to [-s, s] and divided by s.
        dynamic_thresholding_ratio (`float`, defaults to 0.995): The quantile of `thresholding`, in [0, 1].
        clip_sample_range (`float`, defaults to 1.0): Half-width of the clipping interval.
        sample_max_value (`float`, defaults to 1.0): The largest s of `thresholding` (1.0: plain clipping to [-1, 1]).
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
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
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
        self.custom_timesteps = False
        self._check_timesteps = TimestepCheck(num_train_timesteps)
        self._coefficient_cache = {}
        self._set_chain(np.arange(num_train_timesteps)[::-1].copy())

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """[`~ConfigMixin.from_config`], except that every value in `config` counts as set. A stock scheduler's
        in-memory config lists the keys it took by default (`_use_default_values`), and stock `from_config` fills
        those with the new class's defaults: `KiitDDPMScheduler.from_config(DDPMScheduler().config)` would get our
        T = 300 instead of the T = 1000 that scheduler used. Same config, same schedule."""
        if config is not None and hasattr(config, "get") and config.get("_use_default_values"):
            config = {key: value for key, value in config.items() if key != "_use_default_values"}
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    def _check_config(self):
        config = self.config
        total = config.num_train_timesteps
        if not isinstance(total, int) or total < 2:
            raise ValueError(
                f"`num_train_timesteps` must be an integer >= 2, got {total!r}: one level leaves no diffusion to "
                "learn. The talk uses 300, Ho et al. 1000."
            )
        if config.trained_betas is not None:
            betas = np.asarray(config.trained_betas, dtype=np.float64)
            if betas.ndim == 1 and len(betas) >= 2 and betas.shape != (total,):
                raise ValueError(
                    f"`trained_betas` must hold {total} values (one per timestep: `num_train_timesteps`={total}), "
                    f"got {len(betas)}; pass `num_train_timesteps={len(betas)}` with them."
                )
            if betas.shape != (total,) or not ((betas > 0) & (betas < 1)).all():
                low, high = (betas.min(), betas.max()) if betas.size else (float("nan"), float("nan"))
                raise ValueError(
                    f"`trained_betas` must hold {total} values (`num_train_timesteps`), each strictly between 0 and "
                    f"1; got shape {betas.shape}, range [{low:.3g}, {high:.3g}]."
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
        if not config.clip_sample_range > 0:
            raise ValueError(f"`clip_sample_range` must be positive, got {config.clip_sample_range!r}.")
        if not 0 <= config.dynamic_thresholding_ratio <= 1:
            raise ValueError(
                f"`dynamic_thresholding_ratio` is a quantile and must lie in [0, 1], got "
                f"{config.dynamic_thresholding_ratio!r}; Imagen uses 0.995 (the default), DeepFloyd IF 0.95."
            )
        if not config.sample_max_value > 0:
            raise ValueError(
                f"`sample_max_value` must be positive, got {config.sample_max_value!r}; 1.0 (the default) makes "
                "thresholding plain clipping to [-1, 1], DeepFloyd IF uses 1.5."
            )
        if not isinstance(config.steps_offset, int) or config.steps_offset < 0:
            raise ValueError(f"`steps_offset` must be an integer >= 0, got {config.steps_offset!r}.")

    def set_timesteps(
        self,
        num_inference_steps: Optional[int] = None,
        device: Union[str, torch.device] = None,
        timesteps: Optional[Sequence[int]] = None,
    ):
        """
        Chooses the timesteps of the sampling chain. With fewer steps than `num_train_timesteps`, each step jumps
        between kept timesteps s > s' with the betas implied by the kept alpha_bar values,
        beta = 1 - alpha_bar_s / alpha_bar_s' (Nichol & Dhariwal 2021, section 4), so the chain stays a DDPM.

        Args:
            num_inference_steps (`int`, *optional*): Number of steps, spaced per `timestep_spacing`; `None` (and no
                `timesteps`) means every training timestep.
            device (`str` or `torch.device`, *optional*): Where to put `timesteps`.
            timesteps (`List[int]`, *optional*): A custom chain instead: strictly decreasing integers in
                [0, `num_train_timesteps` - 1]. Not together with `num_inference_steps`.
        """
        total = self.config.num_train_timesteps
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError(
                    "Can only pass one of `num_inference_steps` or `custom_timesteps`: got num_inference_steps="
                    f"{num_inference_steps!r} and timesteps. Pass `timesteps` alone for a custom chain."
                )
            timesteps = self._custom_chain(timesteps)
            num_inference_steps = len(timesteps)
            self.custom_timesteps = True
        else:
            if num_inference_steps is None:
                num_inference_steps = total
            if (
                isinstance(num_inference_steps, bool)
                or not isinstance(num_inference_steps, (int, np.integer))
                or not 1 <= num_inference_steps <= total
            ):
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
                # arange's floating-point steps can yield one more value, ~0, which DDPMScheduler keeps as timestep
                # -1 (e.g. 7 steps of T = 300); the chain has `num_inference_steps` timesteps.
                timesteps = np.round(np.arange(total, 0, -total / num_inference_steps)[:num_inference_steps]) - 1
            timesteps = timesteps.astype(np.int64)
            if timesteps.max() >= total or timesteps.min() < 0 or len(np.unique(timesteps)) != len(timesteps):
                raise ValueError(
                    f"`steps_offset`={self.config.steps_offset} with {num_inference_steps} {spacing!r} steps gives "
                    f"timesteps outside [0, {total - 1}] or repeated ones (from {timesteps[:3].tolist()}); lower "
                    "`steps_offset` or the number of steps."
                )
            self.custom_timesteps = False
        self.num_inference_steps = int(num_inference_steps)
        self._set_chain(timesteps.copy(), device)

    def _custom_chain(self, timesteps) -> np.ndarray:
        """`set_timesteps(timesteps=...)`: DDPMScheduler's checks and messages, and ours (integers, >= 0)."""
        total = self.config.num_train_timesteps
        values = np.asarray(timesteps.cpu() if torch.is_tensor(timesteps) else timesteps)
        shown = f"{values.tolist()!r:.200}"
        if values.dtype.kind == "f" and np.isfinite(values).all() and (values == np.round(values)).all():
            values = values.astype(np.int64)
        if values.ndim != 1 or len(values) == 0 or values.dtype.kind not in "iu":
            raise ValueError(f"`timesteps` must be a non-empty list of integers, got {shown}.")
        values = values.astype(np.int64)
        rises = np.flatnonzero(np.diff(values) >= 0)
        if len(rises):
            i = int(rises[0])
            raise ValueError(
                f"`custom_timesteps` must be in descending order: got {shown}, where {values[i]} is followed by "
                f"{values[i + 1]}. Pass strictly decreasing timesteps, the noisiest first."
            )
        if values[0] >= total:
            raise ValueError(
                f"`timesteps` must start before `self.config.train_timesteps`: {total}; got {shown}, which starts "
                f"at {values[0]}. Timesteps index the schedule: integers in [0, {total - 1}]."
            )
        if values[-1] < 0:
            raise ValueError(
                f"`timesteps` must be integers in [0, {total - 1}]; got {shown}, which ends at {values[-1]}. "
                "The chain ends at 0 (or above) and steps from its last timestep to x0."
            )
        return values

    def _set_chain(self, timesteps: np.ndarray, device=None):
        """Precomputes, for each timestep of the chain, the coefficients of one reverse step (float64, then cast)."""
        total = self.config.num_train_timesteps
        self.timesteps = torch.from_numpy(timesteps).to(device)
        self._check_timesteps.trust(self.timesteps)
        previous = np.full(total, -1, dtype=np.int64)
        previous[timesteps[:-1]] = timesteps[1:]
        self._previous_timestep = previous.tolist()
        self._previous_table = torch.from_numpy(previous)

        alphas_cumprod = self._alphas_cumprod_float64
        prev_index = torch.from_numpy(previous)
        alpha_bar = alphas_cumprod
        alpha_bar_prev = torch.where(prev_index >= 0, alphas_cumprod[prev_index.clamp(min=0)], torch.ones(1).double())
        beta = 1.0 - alpha_bar / alpha_bar_prev  # the chain's beta_t: the talk's beta_t when no step is skipped
        # Posterior q(x_prev | x_t, x0) = N(coef_x0 * x0 + coef_xt * x_t, variance), Ho et al. 2020, eq. 6-7.
        coef_x0 = alpha_bar_prev.sqrt() * beta / (1.0 - alpha_bar)
        coef_xt = (1.0 - beta).sqrt() * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        small = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        live = prev_index >= 0  # the chain's last step adds no noise (Ho et al. 2020, Algorithm 2: z = 0 at t = 1)
        zero = torch.zeros(1).double()
        variance_type = self.config.variance_type
        if variance_type == "fixed_small":
            std = small.sqrt()
        elif variance_type == "fixed_large":
            std = torch.where(live, beta, zero).sqrt()
        elif variance_type == "fixed_small_log":
            std = torch.where(live, torch.exp(0.5 * torch.log(small.clamp(min=MIN_VARIANCE))), zero)
        elif variance_type == "fixed_large_log":
            std = torch.where(live, torch.exp(0.5 * torch.log(beta)), zero)
        else:  # learned: the model gives the variance; this row only says whether the step adds noise
            std = live.double()
        # With a zero-terminal-SNR schedule alpha_bar_T = 0 and an epsilon model cannot say anything about x0;
        # floor it as Diffusers' DDIM does so x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) stays finite.
        alpha_bar_floored = alpha_bar.clamp(min=2**-24)
        table = torch.stack(
            [
                alpha_bar_floored.sqrt(),
                (1.0 - alpha_bar).sqrt(),
                coef_x0,
                coef_xt,
                std,
                # learned_range interpolates between these log-variances (Nichol & Dhariwal 2021, eq. 15)
                torch.log(small.clamp(min=MIN_VARIANCE)),
                torch.log(beta),
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

    def previous_timestep(self, timestep: Union[int, torch.Tensor]) -> Union[int, torch.Tensor]:
        """The timestep the chain moves to from `timestep` (-1 after the last step): an int for an int, a tensor of
        the same shape for a tensor (one per sample). A timestep that is not on the current chain gives -1."""
        if not torch.is_tensor(timestep):
            return self._previous_timestep[self._check_timesteps(timestep, "timestep")]
        checked = self._check_timesteps(timestep, "timestep")
        if isinstance(checked, int):
            return torch.tensor(self._previous_timestep[checked])
        key = ("previous", checked.device)
        if key not in self._coefficient_cache:
            self._coefficient_cache[key] = self._previous_table.to(checked.device)
        return self._coefficient_cache[key][checked.long()].reshape(timestep.shape)

    @staticmethod
    def _per_sample(values: torch.Tensor, ndim: int) -> torch.Tensor:
        return values.reshape(values.shape + (1,) * (ndim - values.ndim))

    def _split_model_output(self, model_output: torch.Tensor, sample: torch.Tensor):
        """The model's prediction and, for the learned variance types, its variance channels."""
        channels = sample.shape[1] if sample.ndim > 1 else None
        given = model_output.shape[1] if model_output.ndim > 1 else None
        variance_type = self.config.variance_type
        if variance_type in LEARNED_VARIANCE_TYPES:
            if channels is None or given != 2 * channels:
                raise ValueError(
                    f"`variance_type`={variance_type!r} needs a model that also predicts the variance: 2 x {channels} "
                    f"channels (the prediction, then the variance), got `model_output` with {given} channels for a "
                    f"{channels}-channel sample. Use a model with out_channels = 2 x in_channels, or a fixed "
                    "variance type such as 'fixed_small'."
                )
            prediction, variance = model_output.split(channels, dim=1)
            return prediction, variance
        if given != channels:
            raise ValueError(
                f"`model_output` has {given} channels but `sample` has {channels}. A model with 2 x {channels} "
                "channels predicts the variance too: use it with variance_type='learned_range' (or 'learned')."
            )
        return model_output, None

    def _threshold_sample(self, sample: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding (Saharia et al. 2022, section 2.3), per image: s = the `dynamic_thresholding_ratio`
        quantile of |x0|, kept in [1, `sample_max_value`]; x0 is clipped to [-s, s] and divided by s. Computed in
        float32 for half-precision input (`torch.quantile` needs float32 or float64)."""
        dtype = sample.dtype
        flat = sample.reshape(sample.shape[0], -1)
        if dtype not in (torch.float32, torch.float64):
            flat = flat.float()
        s = torch.quantile(flat.abs(), self.config.dynamic_thresholding_ratio, dim=1, keepdim=True)
        s = s.clamp(min=1, max=self.config.sample_max_value)
        return (flat.clamp(-s, s) / s).reshape(sample.shape).to(dtype)

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
        clipped or thresholded. No noise is added on the chain's last step (t = 0 for the full chain).

        Args:
            model_output (`torch.Tensor`): The model's prediction (epsilon, x0 or v, per `prediction_type`); for the
                learned variance types 2C channels, the prediction then the variance.
            timestep (`int` or `torch.Tensor`): The current timestep, one for the batch or one per sample: integers
                in [0, `num_train_timesteps` - 1].
            sample (`torch.Tensor`): x_t.
            generator (`torch.Generator`, *optional*): Random generator for the noise z.
            return_dict (`bool`, defaults to `True`): Return a [`KiitDDPMSchedulerOutput`] instead of a tuple.
        """
        timestep = self._check_timesteps(timestep, "timestep", sample.shape[0])
        model_output, predicted_variance = self._split_model_output(model_output, sample)
        table = self._table(sample.device, sample.dtype)
        if torch.is_tensor(timestep):
            coefficients = table[:, timestep.to(sample.device)]
            coefficients = self._per_sample(coefficients, sample.ndim + 1)
            needs_noise = True  # the std of samples at the chain's end is 0, so their noise vanishes
        else:  # an int: index on the host, no device copy involved (a pipeline's 0-d CPU timestep arrives so)
            coefficients = table[:, timestep]
            needs_noise = self._previous_timestep[timestep] >= 0
        sqrt_alpha_bar, sqrt_one_minus_alpha_bar, coef_x0, coef_xt, std, log_small, log_large = coefficients

        # Fused multiply-adds (addcmul) keep this at a few passes over the batch; the arithmetic is that of the
        # docstring.
        prediction_type = self.config.prediction_type
        if prediction_type == "epsilon":
            pred_original_sample = torch.addcmul(sample, model_output, -sqrt_one_minus_alpha_bar).div_(sqrt_alpha_bar)
        elif prediction_type == "sample":
            pred_original_sample = model_output
        else:  # v_prediction, Salimans & Ho 2022: x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v
            pred_original_sample = torch.addcmul(sample * sqrt_alpha_bar, model_output, -sqrt_one_minus_alpha_bar)
        if self.config.thresholding:
            pred_original_sample = self._threshold_sample(pred_original_sample)
        elif self.config.clip_sample:
            limit = self.config.clip_sample_range
            pred_original_sample = pred_original_sample.clamp(-limit, limit)

        prev_sample = torch.addcmul(pred_original_sample * coef_x0, sample, coef_xt)
        if needs_noise:
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            if predicted_variance is not None:
                std = self._learned_std(
                    predicted_variance, std, log_small, log_large, per_sample=torch.is_tensor(timestep)
                )
            prev_sample.addcmul_(noise, std)

        if not return_dict:
            return (prev_sample, pred_original_sample)
        return KiitDDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def _learned_std(self, predicted_variance, live, log_small, log_large, per_sample: bool) -> torch.Tensor:
        """The noise's standard deviation from the model's variance channels, as DDPMScheduler reads them:
        `"learned"`: the variance itself; `"learned_range"`: v in [-1, 1], log-variance
        (1 + v) / 2 log(beta_t) + (1 - v) / 2 log(posterior variance) (Nichol & Dhariwal 2021, eq. 15)."""
        if self.config.variance_type == "learned":
            std = predicted_variance.sqrt()
        else:
            fraction = (predicted_variance + 1) / 2
            std = torch.exp(0.5 * (fraction * log_large + (1 - fraction) * log_small))
        # Samples at the chain's end (per-sample timesteps only: a scalar one skips the noise) add none.
        return torch.where(live > 0, std, 0.0) if per_sample else std

    def _gather(self, values: torch.Tensor, timesteps, like: torch.Tensor) -> torch.Tensor:
        index = timesteps if isinstance(timesteps, int) else timesteps.to(like.device)
        values = values.to(device=like.device, dtype=like.dtype)[index]
        return self._per_sample(values, like.ndim)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: Union[int, torch.Tensor]
    ) -> torch.Tensor:
        """q(x_t | x_0): sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (Ho et al. 2020, eq. 4), per sample."""
        timesteps = self._check_timesteps(timesteps, "timesteps", original_samples.shape[0])
        sqrt_alpha_bar = self._gather(self.sqrt_alphas_cumprod, timesteps, original_samples)
        sqrt_one_minus_alpha_bar = self._gather(self.sqrt_one_minus_alphas_cumprod, timesteps, original_samples)
        return torch.addcmul(original_samples * sqrt_alpha_bar, noise, sqrt_one_minus_alpha_bar)

    def get_velocity(
        self, sample: torch.Tensor, noise: torch.Tensor, timesteps: Union[int, torch.Tensor]
    ) -> torch.Tensor:
        """The v-prediction target sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x0 (Salimans & Ho 2022)."""
        timesteps = self._check_timesteps(timesteps, "timesteps", sample.shape[0])
        sqrt_alpha_bar = self._gather(self.sqrt_alphas_cumprod, timesteps, sample)
        sqrt_one_minus_alpha_bar = self._gather(self.sqrt_one_minus_alphas_cumprod, timesteps, sample)
        return sqrt_alpha_bar * noise - sqrt_one_minus_alpha_bar * sample

    def training_target(
        self, sample: torch.Tensor, noise: torch.Tensor, timesteps: Union[int, torch.Tensor]
    ) -> torch.Tensor:
        """
        What the model learns to predict from x_t = `add_noise(sample, noise, timesteps)`, per `prediction_type`:
        the noise (`"epsilon"`), x0 itself (`"sample"`) or v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x0
        (`"v_prediction"`, see `get_velocity`).

        Args:
            sample (`torch.Tensor`): The clean images x0.
            noise (`torch.Tensor`): The noise that `add_noise` mixed in.
            timesteps (`int` or `torch.Tensor`): One timestep for the batch or one per sample.
        """
        prediction_type = self.config.prediction_type
        if prediction_type == "epsilon":
            return noise
        if prediction_type == "sample":
            return sample
        return self.get_velocity(sample, noise, timesteps)

    def signal_to_noise_ratio(self, timesteps: Union[int, torch.Tensor]) -> torch.Tensor:
        """The signal-to-noise ratio of x_t per timestep, SNR(t) = alpha_bar_t / (1 - alpha_bar_t) (Kingma et al.
        2021, eq. 2, for x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise), float32 on `timesteps`' device.
        Computed from the float32 `alphas_cumprod`, as training's loss weighting always has (near t = 0, where
        alpha_bar_t is close to 1, that costs up to 2e-4 of relative precision); the denominator is floored at 1e-8."""
        checked = self._check_timesteps(timesteps, "timesteps")
        index = torch.as_tensor(checked).long()
        alpha_bar = self.alphas_cumprod.to(index.device)[index]
        return alpha_bar / (1 - alpha_bar).clamp(min=1e-8)

    @property
    def terminal_alpha_bar(self) -> float:
        """alpha_bar at the last timestep T - 1: the share of the image's power left in x_T, which sampling replaces
        by pure noise: the larger it is, the further the first step starts from what the model saw in training
        (Lin et al. 2023, section 3.1). The talk's schedule leaves 0.048; a zero-terminal-SNR schedule leaves 0."""
        return float(self.alphas_cumprod[-1])

    def __len__(self):
        return self.config.num_train_timesteps
