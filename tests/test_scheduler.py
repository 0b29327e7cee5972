import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)

from ddpm_kiit import KiitDDPMScheduler

T = 300


def _formulas(betas):
    """The talk's schedule tensors, in float64."""
    alphas = 1 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
    return {
        "betas": betas,
        "alphas": alphas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_recip_alphas": 1 / np.sqrt(alphas),
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - alphas_cumprod),
        "posterior_variance": betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod),
    }


EXPECTED = _formulas(np.linspace(1e-4, 0.02, T, dtype=np.float64))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_schedule_tensor_within_1e7_of_float64_formula(name):
    ours = getattr(KiitDDPMScheduler(), name)
    assert isinstance(ours, torch.Tensor) and ours.shape == (T,)
    error = np.abs(ours.double().numpy() - EXPECTED[name]).max()
    assert error < 1e-7, f"{name}: max abs error {error:.3g}"


def test_talk_schedule_leaves_signal_at_T():
    assert KiitDDPMScheduler().alphas_cumprod[-1].item() == pytest.approx(0.0481, abs=1e-4)


def test_zero_snr_and_cosine_fixes_reach_noise():
    assert KiitDDPMScheduler(rescale_betas_zero_snr=True).alphas_cumprod[-1].item() == 0.0
    assert KiitDDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod[-1].item() < 1e-4


def test_add_noise_with_per_sample_timesteps():
    scheduler = KiitDDPMScheduler()
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 100, 299])
    noisy = scheduler.add_noise(x0, noise, t)
    for i, ti in enumerate(t.tolist()):
        expected = (
            np.sqrt(EXPECTED["alphas_cumprod"][ti]) * x0[i].double()
            + np.sqrt(1 - EXPECTED["alphas_cumprod"][ti]) * noise[i].double()
        )
        torch.testing.assert_close(noisy[i].double(), expected, rtol=0, atol=1e-6)


def test_one_reverse_step_is_the_talks_formula():
    scheduler = KiitDDPMScheduler(clip_sample=False)
    sample, eps = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    t = 137
    out = scheduler.step(eps, t, sample, generator=torch.manual_seed(5))
    z = torch.randn(sample.shape, generator=torch.manual_seed(5))
    e = {k: float(v[t]) for k, v in EXPECTED.items()}
    mean = (sample.double() - e["betas"] / np.sqrt(1 - e["alphas_cumprod"]) * eps.double()) / np.sqrt(e["alphas"])
    expected = mean + np.sqrt(e["posterior_variance"]) * z.double()
    error = (out.prev_sample.double() - expected).abs().max().item()
    assert error < 1e-5, f"max abs error {error:.3g}"
    x0 = (sample.double() - np.sqrt(1 - e["alphas_cumprod"]) * eps.double()) / np.sqrt(e["alphas_cumprod"])
    torch.testing.assert_close(out.pred_original_sample.double(), x0, rtol=0, atol=1e-5)


def test_no_noise_at_t0_and_x0_is_returned():
    scheduler = KiitDDPMScheduler(clip_sample=False)
    sample, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    a = scheduler.step(eps, 0, sample, generator=torch.manual_seed(0)).prev_sample
    b = scheduler.step(eps, 0, sample, generator=torch.manual_seed(1)).prev_sample
    assert torch.equal(a, b)
    x0 = (sample - EXPECTED["sqrt_one_minus_alphas_cumprod"][0] * eps) / EXPECTED["sqrt_alphas_cumprod"][0]
    torch.testing.assert_close(a, x0.float(), rtol=0, atol=1e-5)


def test_per_sample_timesteps_match_one_at_a_time():
    # The talk's `if t == 0` raised on a batch of timesteps.
    scheduler = KiitDDPMScheduler()
    sample, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 5, 299])
    batched = scheduler.step(eps, t, sample, generator=torch.manual_seed(0))
    noise = torch.randn(sample.shape, generator=torch.manual_seed(0))
    for i, ti in enumerate(t.tolist()):
        std = np.sqrt(EXPECTED["posterior_variance"][ti])
        single = scheduler.step(eps[i : i + 1], ti, sample[i : i + 1], generator=torch.manual_seed(9))
        mean = single.prev_sample - (std * torch.randn(1, 1, 4, 4, generator=torch.manual_seed(9)) if ti else 0)
        torch.testing.assert_close(batched.prev_sample[i], (mean[0] + std * noise[i]).float(), rtol=0, atol=1e-5)
        torch.testing.assert_close(batched.pred_original_sample[i], single.pred_original_sample[0])


def test_clipping_applies_to_predicted_x0_not_to_x_t():
    scheduler = KiitDDPMScheduler(clip_sample=True)
    sample = torch.full((1, 1, 2, 2), 5.0)  # far outside [-1, 1]: the talk clamped it
    out = scheduler.step(torch.zeros_like(sample), 200, sample, generator=torch.manual_seed(0))
    assert out.pred_original_sample.max() <= 1.0
    coefficient_xt = (
        np.sqrt(EXPECTED["alphas"][200])
        * (1 - EXPECTED["alphas_cumprod_prev"][200])
        / (1 - EXPECTED["alphas_cumprod"][200])
    )
    assert out.prev_sample.max() > coefficient_xt * 5.0 - 1  # x_t's contribution kept whole


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_prediction_types_recover_x0(prediction_type):
    scheduler = KiitDDPMScheduler(prediction_type=prediction_type, clip_sample=False)
    x0, noise = torch.randn(2, 1, 4, 4).clamp(-1, 1), torch.randn(2, 1, 4, 4)
    t = torch.tensor([40, 250])
    noisy = scheduler.add_noise(x0, noise, t)
    target = x0 if prediction_type == "sample" else scheduler.get_velocity(x0, noise, t)
    out = scheduler.step(target, t, noisy, generator=torch.manual_seed(0))
    torch.testing.assert_close(out.pred_original_sample, x0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("steps", [50, 10])
def test_respaced_chain_uses_the_implied_betas(steps):
    scheduler = KiitDDPMScheduler(clip_sample=False)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.tolist()
    assert len(timesteps) == steps and timesteps == sorted(timesteps, reverse=True) and timesteps[-1] == 0
    # A chain that feeds the exact noise back recovers x0: every step is the posterior of the kept alpha_bars.
    x0, noise = torch.rand(2, 1, 4, 4) * 2 - 1, torch.randn(2, 1, 4, 4)
    ab = EXPECTED["alphas_cumprod"]
    for s, s_prev in zip(timesteps[:-1], timesteps[1:]):
        beta = 1 - ab[s] / ab[s_prev]
        variance = beta * (1 - ab[s_prev]) / (1 - ab[s])
        z = torch.randn(2, 1, 4, 4, generator=torch.manual_seed(s))
        x_t = scheduler.add_noise(x0, noise, torch.tensor([s, s]))
        eps = (x_t - np.sqrt(ab[s]) * x0) / np.sqrt(1 - ab[s])
        out = scheduler.step(eps.float(), s, x_t, generator=torch.manual_seed(s)).prev_sample
        mean = np.sqrt(ab[s_prev]) * beta / (1 - ab[s]) * x0 + np.sqrt(1 - beta) * (1 - ab[s_prev]) / (1 - ab[s]) * x_t
        torch.testing.assert_close(out, (mean + np.sqrt(variance) * z).float(), rtol=0, atol=1e-5)


def test_respaced_sampling_with_exact_noise_returns_x0():
    scheduler = KiitDDPMScheduler(clip_sample=False)
    x0, noise = torch.rand(1, 1, 4, 4) * 2 - 1, torch.randn(1, 1, 4, 4)
    scheduler.set_timesteps(10)
    sample = scheduler.add_noise(x0, noise, scheduler.timesteps[:1])
    for t in scheduler.timesteps:
        ab = float(scheduler.alphas_cumprod[t])
        eps = (sample - np.sqrt(ab) * x0) / np.sqrt(1 - ab)
        sample = scheduler.step(eps, t, sample, generator=torch.manual_seed(int(t))).prev_sample
    torch.testing.assert_close(sample, x0, rtol=0, atol=1e-4)


@pytest.mark.parametrize("stock", [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler])
@pytest.mark.parametrize("default_constructed", [True, False])
def test_stock_schedulers_get_the_same_300_step_betas(stock, default_constructed):
    ours = KiitDDPMScheduler() if default_constructed else KiitDDPMScheduler(num_train_timesteps=300, beta_end=0.02)
    theirs = stock.from_config(ours.config)
    assert theirs.config.num_train_timesteps == 300
    error = (theirs.betas.double() - torch.from_numpy(EXPECTED["betas"])).abs().max().item()
    assert error < 1e-7, f"max abs beta error {error:.3g}"


def test_config_round_trip_through_disk(tmp_path):
    scheduler = KiitDDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    scheduler.save_pretrained(tmp_path)
    loaded = KiitDDPMScheduler.from_pretrained(tmp_path)
    assert torch.equal(loaded.alphas_cumprod, scheduler.alphas_cumprod)
    assert loaded.config.prediction_type == "v_prediction"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beta_start": 0.02, "beta_end": 0.01}, "Need 0 < `beta_start` < `beta_end` < 1"),
        ({"beta_schedule": "cosine"}, "`beta_schedule` must be one of"),
        ({"prediction_type": "noise"}, "`prediction_type` must be one of"),
        ({"variance_type": "learned"}, "`variance_type` must be one of"),
        ({"num_train_timesteps": 1}, "`num_train_timesteps` must be an integer >= 2"),
        ({"trained_betas": [0.1, 1.5], "num_train_timesteps": 2}, "strictly between 0 and 1"),
    ],
)
def test_bad_scheduler_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KiitDDPMScheduler(**kwargs)


@pytest.mark.parametrize("steps", [0, 301, -3])
def test_bad_num_inference_steps(steps):
    with pytest.raises(ValueError, match=f"between 1 and `num_train_timesteps`=300.*got {steps}"):
        KiitDDPMScheduler().set_timesteps(steps)


def test_bad_timesteps_in_step():
    scheduler = KiitDDPMScheduler()
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"integer in \[0, 300\), got 300"):
        scheduler.step(x, 300, x)
    with pytest.raises(ValueError, match="one value per sample"):
        scheduler.step(x, torch.tensor([1, 2, 3]), x)


# ----------------------------------------------------------------------------------------------------------------
# Regression: issue 25 added variance types, thresholding and timestep checks to `step`. The configurations that
# existed before must give the same numbers bit for bit. `_frozen_step` is a copy of `step` and of its coefficient
# table as they were before issue 25 (commit f5b6ac2), kept here unchanged on purpose: do not "fix" it.


def _frozen_table(scheduler):
    config = scheduler.config
    total = config.num_train_timesteps
    if config.trained_betas is not None:
        betas = torch.as_tensor(np.asarray(config.trained_betas, dtype=np.float64))
    elif config.beta_schedule == "linear":
        betas = torch.linspace(config.beta_start, config.beta_end, total, dtype=torch.float64)
    elif config.beta_schedule == "scaled_linear":
        betas = torch.linspace(config.beta_start**0.5, config.beta_end**0.5, total, dtype=torch.float64) ** 2
    else:
        steps = torch.arange(total + 1, dtype=torch.float64) / total
        alpha_bar = torch.cos((steps + 0.008) / 1.008 * np.pi / 2) ** 2
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    if config.rescale_betas_zero_snr:
        from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

        betas = rescale_zero_terminal_snr(betas)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    timesteps = scheduler.timesteps.cpu().numpy()
    previous = np.full(total, -1, dtype=np.int64)
    previous[timesteps[:-1]] = timesteps[1:]
    prev_index = torch.from_numpy(previous)
    alpha_bar = alphas_cumprod
    alpha_bar_prev = torch.where(prev_index >= 0, alphas_cumprod[prev_index.clamp(min=0)], torch.ones(1).double())
    beta = 1.0 - alpha_bar / alpha_bar_prev
    coef_x0 = alpha_bar_prev.sqrt() * beta / (1.0 - alpha_bar)
    coef_xt = (1.0 - beta).sqrt() * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    if config.variance_type == "fixed_small":
        variance = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    else:
        variance = torch.where(prev_index >= 0, beta, torch.zeros(1).double())
    alpha_bar_floored = alpha_bar.clamp(min=2**-24)
    table = torch.stack([alpha_bar_floored.sqrt(), (1.0 - alpha_bar).sqrt(), coef_x0, coef_xt, variance.sqrt()])
    return table.float(), previous.tolist()


def _frozen_step(scheduler, model_output, timestep, sample, generator):
    table, previous = _frozen_table(scheduler)
    table = table.to(device=sample.device, dtype=sample.dtype)
    if torch.is_tensor(timestep) and timestep.ndim == 0 and timestep.device.type == "cpu":
        timestep = int(timestep)
    if torch.is_tensor(timestep):
        coefficients = table[:, timestep.to(sample.device)]
        coefficients = coefficients.reshape(coefficients.shape + (1,) * (sample.ndim + 1 - coefficients.ndim))
        needs_noise = True
    else:
        coefficients = table[:, timestep]
        needs_noise = previous[timestep] >= 0
    sqrt_alpha_bar, sqrt_one_minus_alpha_bar, coef_x0, coef_xt, std = coefficients
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        pred_original_sample = torch.addcmul(sample, model_output, -sqrt_one_minus_alpha_bar).div_(sqrt_alpha_bar)
    elif prediction_type == "sample":
        pred_original_sample = model_output
    else:
        pred_original_sample = torch.addcmul(sample * sqrt_alpha_bar, model_output, -sqrt_one_minus_alpha_bar)
    if scheduler.config.clip_sample:
        limit = scheduler.config.clip_sample_range
        pred_original_sample = pred_original_sample.clamp(-limit, limit)
    prev_sample = torch.addcmul(pred_original_sample * coef_x0, sample, coef_xt)
    if needs_noise:
        from diffusers.utils.torch_utils import randn_tensor

        noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        prev_sample.addcmul_(noise, std)
    return prev_sample, pred_original_sample


REGRESSION_CHAINS = {
    "full": {},
    "leading 10": {"steps": 10},
    "leading 7, offset 1": {"steps": 7, "steps_offset": 1},
    "linspace 13": {"steps": 13, "timestep_spacing": "linspace"},
    "trailing 9": {"steps": 9, "timestep_spacing": "trailing"},
    "zero snr": {"rescale_betas_zero_snr": True},
    "cosine 20": {"steps": 20, "beta_schedule": "squaredcos_cap_v2"},
    "scaled linear, T=1000": {"beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "beta_end": 0.012},
}


@pytest.mark.parametrize("chain", sorted(REGRESSION_CHAINS))
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("clip", [None, 1.0, 0.5])
def test_step_of_existing_configurations_is_unchanged_bit_for_bit(chain, variance_type, prediction_type, clip):
    settings = dict(REGRESSION_CHAINS[chain])
    steps = settings.pop("steps", None)
    scheduler = KiitDDPMScheduler(
        variance_type=variance_type,
        prediction_type=prediction_type,
        clip_sample=clip is not None,
        clip_sample_range=clip or 1.0,
        **settings,
    )
    if steps:
        scheduler.set_timesteps(steps)
    chain_timesteps = scheduler.timesteps
    inputs = torch.Generator().manual_seed(len(chain) + 7 * len(variance_type) + len(prediction_type))
    sample = torch.randn(3, 2, 5, 5, generator=inputs) * 1.5
    model_output = torch.randn(3, 2, 5, 5, generator=inputs) * 1.5
    picks = [chain_timesteps[0], chain_timesteps[len(chain_timesteps) // 2], chain_timesteps[-1]]
    calls = [int(t) for t in picks] + picks + [torch.stack(picks), chain_timesteps[:1]]
    for timestep in calls:
        ours = scheduler.step(model_output, timestep, sample, generator=torch.manual_seed(3), return_dict=False)
        frozen = _frozen_step(scheduler, model_output, timestep, sample, torch.manual_seed(3))
        assert torch.equal(ours[0], frozen[0]) and torch.equal(ours[1], frozen[1]), (chain, timestep)
