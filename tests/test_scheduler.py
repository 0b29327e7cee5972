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
        ({"variance_type": "learned_small"}, "`variance_type` must be one of"),
        ({"num_train_timesteps": 1}, "`num_train_timesteps` must be an integer >= 2"),
        ({"trained_betas": [0.1, 1.5], "num_train_timesteps": 2}, "strictly between 0 and 1"),
        ({"trained_betas": [0.1, 0.2, 0.3], "num_train_timesteps": 2}, r"pass `num_train_timesteps=3`"),
        ({"dynamic_thresholding_ratio": 1.5}, r"`dynamic_thresholding_ratio` is a quantile and must lie in \[0, 1\]"),
        ({"sample_max_value": 0.0}, "`sample_max_value` must be positive"),
        ({"steps_offset": -1}, "`steps_offset` must be an integer >= 0"),
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
    with pytest.raises(ValueError, match=r"`timestep` must be an integer in \[0, 299\].*got 300"):
        scheduler.step(x, 300, x)
    with pytest.raises(ValueError, match="one value per sample"):
        scheduler.step(x, torch.tensor([1, 2, 3]), x)


# ----------------------------------------------------------------------------------------------------------------
# Regression: `step` gained variance types, thresholding and timestep checks (docs/schedulers.md). The configurations
# that existed before must give the same numbers bit for bit. `_frozen_step` is a copy of `step` and of its
# coefficient table as they were before (commit f5b6ac2), kept here unchanged on purpose: do not "fix" it.


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


# ----------------------------------------------------------------------------------------------------------------
# Timesteps are checked where they enter: integers in [0, T - 1], else a ValueError naming the argument,
# the bad values and the range.


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda s, x: s.add_noise(x, x, torch.tensor([300])),
            r"`timesteps` must hold integers in \[0, 299\].*got 300",
        ),
        (lambda s, x: s.add_noise(x, x, torch.tensor([-1])), r"`timesteps` must hold integers in \[0, 299\].*got -1"),
        (lambda s, x: s.add_noise(x, x, -1), r"`timesteps` must be an integer in \[0, 299\].*got -1"),
        (lambda s, x: s.get_velocity(x, x, torch.tensor([5, 400])), r"`timesteps` must hold.*got 400"),
        (lambda s, x: s.step(x, torch.tensor([7, -3]), x), r"`timestep` must hold integers in \[0, 299\].*got -3"),
        (lambda s, x: s.step(x, torch.tensor(300), x), r"`timestep` must be an integer in \[0, 299\].*got 300"),
        (lambda s, x: s.step(x, 2.0, x), "`timestep` must be an integer or a tensor of integers"),
        (lambda s, x: s.scale_model_input(x, 300), r"`timestep` must be an integer in \[0, 299\]"),
        (lambda s, x: s.add_noise(x, x, torch.tensor([1.0, 2.0])), "got a float tensor"),
        (lambda s, x: s.add_noise(x, x, torch.tensor([True, False])), "must hold integers"),
        (lambda s, x: s.previous_timestep(-1), r"`timestep` must be an integer in \[0, 299\]"),
    ],
)
def test_timesteps_are_checked_where_they_enter(call, message):
    with pytest.raises(ValueError, match=message):
        call(KiitDDPMScheduler(), torch.zeros(2, 1, 4, 4))


def test_bad_timestep_error_lists_the_bad_values():
    timesteps = torch.tensor([-4, 3, 300, 301, -4, 999])
    with pytest.raises(ValueError, match=r"got -4, 300, 301, 999\.$"):
        KiitDDPMScheduler().add_noise(torch.zeros(6, 1, 2, 2), torch.zeros(6, 1, 2, 2), timesteps)


def test_minus_one_no_longer_reads_the_last_alpha_bar():
    # torch.tensor([-1]) used to give alpha_bar of t = 299 silently; now only [0, 299] is accepted.
    scheduler = KiitDDPMScheduler()
    x = torch.ones(1, 1, 2, 2)
    with pytest.raises(ValueError):
        scheduler.add_noise(x, x, torch.tensor([-1]))
    assert torch.equal(scheduler.add_noise(x, x, torch.tensor([0])), scheduler.add_noise(x, x, 0))


def test_own_timesteps_skip_the_range_check_until_modified(monkeypatch):
    """The pipeline's own timesteps are valid by construction: no min/max reduction (a device sync on CUDA) for
    them; once modified in place they are checked again."""
    scheduler = KiitDDPMScheduler()
    scheduler.set_timesteps(10)
    calls = []
    real = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda t: calls.append(t) or real(t))
    x = torch.zeros(2, 1, 4, 4)
    for i in range(len(scheduler.timesteps) - 1):
        view = scheduler.timesteps[i : i + 2]  # a view, as a pipeline's per-sample timesteps would be
        scheduler.scale_model_input(x, view)
        scheduler.step(x, view, x, generator=torch.manual_seed(0))
    assert calls == []
    scheduler.step(x, scheduler.timesteps[:2].clone(), x)  # a copy is someone else's tensor: checked
    assert len(calls) == 1
    scheduler.timesteps[0] = 300
    with pytest.raises(ValueError, match="got 300"):
        scheduler.step(x, scheduler.timesteps[:2], x)


def test_a_training_step_checks_its_timesteps_once(monkeypatch):
    scheduler = KiitDDPMScheduler(prediction_type="v_prediction")
    calls = []
    real = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda t: calls.append(t) or real(t))
    x0, noise, timesteps = torch.zeros(4, 1, 2, 2), torch.zeros(4, 1, 2, 2), torch.randint(0, 300, (4,))
    scheduler.add_noise(x0, noise, timesteps)
    scheduler.get_velocity(x0, noise, timesteps)
    assert len(calls) == 1
    timesteps[0] = 300  # modified in place: checked again
    with pytest.raises(ValueError, match="got 300"):
        scheduler.get_velocity(x0, noise, timesteps)


def test_timesteps_made_under_inference_mode_are_checked():
    scheduler = KiitDDPMScheduler()
    x = torch.zeros(2, 1, 2, 2)
    with torch.inference_mode():
        scheduler.set_timesteps(5)
        assert scheduler.step(x, scheduler.timesteps[:2], x).prev_sample.shape == x.shape
        with pytest.raises(ValueError, match="got 300"):
            scheduler.add_noise(x, x, torch.tensor([1, 300]))


def test_previous_timestep_per_sample():
    scheduler = KiitDDPMScheduler()
    scheduler.set_timesteps(timesteps=[200, 100, 7])
    assert scheduler.previous_timestep(200) == 100 and scheduler.previous_timestep(7) == -1
    assert scheduler.previous_timestep(torch.tensor([[200], [7]])).tolist() == [[100], [-1]]
    assert scheduler.previous_timestep(torch.tensor(100)).item() == 7


@pytest.mark.parametrize("variance_type", ["learned", "learned_range"])
def test_learned_variance_needs_twice_the_channels(variance_type):
    scheduler = KiitDDPMScheduler(variance_type=variance_type)
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"needs a model that also predicts the variance: 2 x 3 channels"):
        scheduler.step(x, 10, x)
    assert scheduler.step(torch.zeros(1, 6, 4, 4), 10, x).prev_sample.shape == x.shape


def test_fixed_variance_refuses_a_variance_predicting_model():
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="use it with variance_type='learned_range'"):
        KiitDDPMScheduler().step(torch.zeros(1, 6, 4, 4), 10, x)


def test_log_variance_types_equal_their_plain_ones():
    sample, output = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    for log_type, plain in (("fixed_small_log", "fixed_small"), ("fixed_large_log", "fixed_large")):
        a, b = KiitDDPMScheduler(variance_type=log_type), KiitDDPMScheduler(variance_type=plain)
        for t in (299, 150, 1, 0):
            first = a.step(output, t, sample, generator=torch.manual_seed(t)).prev_sample
            second = b.step(output, t, sample, generator=torch.manual_seed(t)).prev_sample
            torch.testing.assert_close(first, second, rtol=0, atol=1e-6)


def test_thresholding_keeps_each_image_in_range_and_rescales_it():
    scheduler = KiitDDPMScheduler(thresholding=True, sample_max_value=2.0, prediction_type="sample")
    x0 = torch.stack([torch.linspace(-3, 3, 16).reshape(1, 4, 4), torch.linspace(-0.5, 0.5, 16).reshape(1, 4, 4)])
    out = scheduler.step(x0, 100, torch.zeros_like(x0)).pred_original_sample
    assert out[0].abs().max() == 1.0  # s clamped to sample_max_value = 2, then divided by it
    torch.testing.assert_close(out[0], x0[0].clamp(-2, 2) / 2)
    torch.testing.assert_close(out[1], x0[1])  # s = max(quantile, 1) = 1: unchanged


# The training contract: what the model learns to predict, and the signal-to-noise ratio


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_training_target_is_what_each_prediction_type_predicts(prediction_type):
    scheduler = KiitDDPMScheduler(prediction_type=prediction_type)
    x0, noise = torch.randn(3, 1, 4, 4, generator=torch.manual_seed(0)), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 150, 299])
    target = scheduler.training_target(x0, noise, t)
    alpha_bar = torch.from_numpy(_formulas(np.linspace(1e-4, 0.02, T))["alphas_cumprod"])[t].reshape(-1, 1, 1, 1)
    expected = {
        "epsilon": noise,
        "sample": x0,
        "v_prediction": (alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0).float(),  # Salimans & Ho 2022
    }[prediction_type]
    torch.testing.assert_close(target, expected, rtol=0, atol=1e-6)
    # A model that predicts the target exactly recovers x0 from x_t (the step's own reading of the prediction).
    x_t = scheduler.add_noise(x0, noise, t)
    for i in range(3):
        x0_hat = scheduler.step(target[i : i + 1], int(t[i]), x_t[i : i + 1]).pred_original_sample
        torch.testing.assert_close(x0_hat, x0[i : i + 1].clamp(-1, 1), rtol=0, atol=2e-3)


def test_signal_to_noise_ratio_is_alpha_bar_over_one_minus_alpha_bar():
    scheduler = KiitDDPMScheduler()
    alpha_bar = _formulas(np.linspace(1e-4, 0.02, T))["alphas_cumprod"]
    snr = scheduler.signal_to_noise_ratio(torch.arange(T))
    assert snr.dtype == torch.float32 and snr.shape == (T,)
    # From the float32 alpha_bar, as training has always computed it: 1 - alpha_bar loses digits near t = 0.
    np.testing.assert_allclose(snr.numpy(), alpha_bar / (1 - alpha_bar), rtol=2e-4)
    np.testing.assert_allclose(snr[10:].numpy(), (alpha_bar / (1 - alpha_bar))[10:], rtol=1e-5)
    assert torch.all(snr[1:] < snr[:-1])
    assert float(scheduler.signal_to_noise_ratio(299)) == float(snr[-1])
    # Zero terminal SNR: alpha_bar_T = 0, so SNR_T = 0 (the floor keeps alpha_bar = 1 finite at the other end).
    assert float(KiitDDPMScheduler(rescale_betas_zero_snr=True).signal_to_noise_ratio(torch.tensor([299]))) == 0.0
    with pytest.raises(ValueError, match=r"`timesteps` must hold integers in \[0, 299\]"):
        scheduler.signal_to_noise_ratio(torch.tensor([300]))


def test_terminal_alpha_bar_says_how_much_image_x_T_keeps():
    assert abs(KiitDDPMScheduler().terminal_alpha_bar - 0.048) < 5e-4  # the talk's schedule
    assert KiitDDPMScheduler(rescale_betas_zero_snr=True).terminal_alpha_bar < 1e-6
    cosine = KiitDDPMScheduler(beta_schedule="squaredcos_cap_v2")
    assert cosine.terminal_alpha_bar == float(cosine.alphas_cumprod[-1]) < 1e-3
