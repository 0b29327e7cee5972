"""`KiitDDPMScheduler` against Diffusers' own `DDPMScheduler`: every feature, same config, same inputs, on
the talk's T = 300 and on T = 1000.

Each output is compared with two references:

- `stock`: `DDPMScheduler` as it ships. Its schedule is float32 from the start (float32 betas, a float32 cumprod),
  and near t = 0, where beta_t and 1 - alpha_bar_t are ~1e-4, a float32 difference such as 1 - alpha_bar_t carries a
  relative error of up to ~1e-3. That is the rounding our float64 tables remove, so the stock tolerance adds that
  rounding (`STOCK_TABLES`, per T, relative to the inputs' size) to float32's.
- `exact`: the same `DDPMScheduler` code with its schedule tensors replaced by float64 ones computed here in NumPy
  (`_float64_tables`): Diffusers' arithmetic without the table rounding. Ours must match it to float32 rounding of
  the arithmetic on the samples (`ARITHMETIC`, two float32 ulps of the inputs' size, divided by sqrt(alpha_bar_t)
  where x0 is divided by it). This checks that the formulas are the same; the stock one checks the numbers a user
  sees.

docs/schedulers.md states the same tolerances and lists where ours deliberately differs.
"""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.schedulers import scheduling_ddpm
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr
from diffusers.utils.torch_utils import randn_tensor

from ddpm_kiit import KiitDDPMScheduler

T_VALUES = (300, 1000)
VARIANCE_TYPES = ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]
PREDICTION_TYPES = ["epsilon", "sample", "v_prediction"]
# One step (see `_tolerance`): float32 rounding of the arithmetic, relative to the inputs' size and divided by
# sqrt(alpha_bar_t); for stock DDPMScheduler, plus the rounding of its float32 tables, relative to the inputs' size.
# The gaps measured against these limits: docs/schedulers.md.
ARITHMETIC = 5e-7
STOCK_TABLES = {300: 1.5e-4, 1000: 1.5e-4}
# Whole DDPMPipeline runs, images in [0, 1]: see test_stock_ddpm_pipeline_gives_diffusers_images.
PIPELINE_STOCK_ATOL = 2e-4
PIPELINE_EXACT_ATOL = 5e-6


# ------------------------------------------------------------------------------------------------------ helpers


def _betas_float64(config) -> torch.Tensor:
    """The betas of `config`, in float64, written independently of both schedulers."""
    total, start, end = config.num_train_timesteps, config.beta_start, config.beta_end
    if config.trained_betas is not None:
        betas = np.asarray(config.trained_betas, dtype=np.float64)
    elif config.beta_schedule == "linear":
        betas = np.linspace(start, end, total, dtype=np.float64)
    elif config.beta_schedule == "scaled_linear":
        betas = np.linspace(start**0.5, end**0.5, total, dtype=np.float64) ** 2
    elif config.beta_schedule == "sigmoid":
        betas = 1 / (1 + np.exp(-np.linspace(-6, 6, total, dtype=np.float64))) * (end - start) + start
    else:  # squaredcos_cap_v2

        def alpha_bar(s):
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array([min(1 - alpha_bar((i + 1) / total) / alpha_bar(i / total), 0.999) for i in range(total)])
    betas = torch.from_numpy(betas)
    return rescale_zero_terminal_snr(betas) if config.rescale_betas_zero_snr else betas


def _float64_tables(scheduler: DDPMScheduler) -> DDPMScheduler:
    """`scheduler` computing with float64 schedule tensors (its arithmetic on the samples stays in their dtype)."""
    betas = _betas_float64(scheduler.config)
    scheduler.betas, scheduler.alphas = betas, 1.0 - betas
    scheduler.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


def _trio(total, steps=None, timesteps=None, **config):
    """Ours, stock DDPMScheduler and the float64-table DDPMScheduler, from one config, on the same chain."""
    ours = KiitDDPMScheduler(num_train_timesteps=total, **config)
    stock = DDPMScheduler.from_config(ours.config)
    exact = _float64_tables(DDPMScheduler.from_config(ours.config))
    if steps is not None or timesteps is not None:
        for scheduler in (ours, stock, exact):
            scheduler.set_timesteps(steps, timesteps=timesteps)
    return ours, stock, exact


def _inputs(variance_type="fixed_small", batch=3, channels=2, size=5, scale=1.5, seed=0):
    """x_t and a model output (with the variance channels the learned types need: a variance for "learned", v in
    [-1, 1] for "learned_range")."""
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, channels, size, size, generator=generator) * scale
    model_output = torch.randn(batch, channels, size, size, generator=generator) * scale
    if variance_type == "learned":
        variance = torch.rand(batch, channels, size, size, generator=generator) * 0.02 + 1e-5
        model_output = torch.cat([model_output, variance], dim=1)
    elif variance_type == "learned_range":
        model_output = torch.cat(
            [model_output, torch.rand(batch, channels, size, size, generator=generator) * 2 - 1], 1
        )
    return sample, model_output


def _tolerance(kind, ours, timestep, sample, model_output, total):
    """How far a step of ours may be from a reference. Float32 rounding of the arithmetic on the samples, relative
    to their size, divided by sqrt(alpha_bar_t) as x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) divides
    it (158x at t = 999 of T = 1000); for stock DDPMScheduler plus the rounding of its float32 tables."""
    size = max(1.0, sample.abs().max().item(), model_output.abs().max().item())
    alpha_bar = ours.alphas_cumprod[torch.as_tensor(timestep).cpu()].min().clamp(min=2**-24).item()
    rounding = ARITHMETIC * size / math.sqrt(alpha_bar)
    return rounding if kind == "exact" else rounding + STOCK_TABLES[total] * size


def _assert_step_matches(ours, references, model_output, timestep, sample, seed=5):
    """One `step` of ours against each reference, (scheduler, "exact" or "stock"), within `_tolerance`."""
    mine = ours.step(model_output, timestep, sample, generator=torch.manual_seed(seed))
    total = ours.config.num_train_timesteps
    for reference, kind in references:
        theirs = reference.step(model_output, timestep, sample, generator=torch.manual_seed(seed))
        atol = _tolerance(kind, ours, timestep, sample, model_output, total)
        for name in ("prev_sample", "pred_original_sample"):
            gap = (getattr(mine, name) - getattr(theirs, name)).abs().max().item()
            assert gap <= atol, f"{kind} {name} at t={timestep}: {gap:.3g} > {atol:.3g}"


def _both(stock, exact):
    return [(exact, "exact"), (stock, "stock")]


# -------------------------------------------------------------------------------------------- schedule, chains


@pytest.mark.parametrize("total", T_VALUES)
@pytest.mark.parametrize(
    "config",
    [
        {},
        {"beta_schedule": "scaled_linear", "beta_end": 0.012},
        {"beta_schedule": "squaredcos_cap_v2"},
        {"beta_schedule": "sigmoid"},
        {"rescale_betas_zero_snr": True},
    ],
    ids=["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "zero_snr"],
)
def test_schedule_tensors_match(total, config):
    ours, stock, exact = _trio(total, **config)
    for name in ("betas", "alphas", "alphas_cumprod"):
        mine, theirs = getattr(ours, name), getattr(stock, name)
        assert mine.dtype == theirs.dtype == torch.float32 and mine.shape == theirs.shape == (total,)
        # float64 is the point here: ours is the float64 value rounded once, within half a float32 ulp of it.
        torch.testing.assert_close(mine.double(), getattr(exact, name), rtol=2**-24, atol=1e-30)
        # stock computes in float32 from the start, and loses more in its zero-SNR rescaling (a float32 cumprod,
        # square roots and a division).
        atol = 3e-6 if config.get("rescale_betas_zero_snr") else 1e-6
        torch.testing.assert_close(mine, theirs, rtol=0, atol=atol)


@pytest.mark.parametrize("total", T_VALUES)
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("offset", [0, 1])
def test_set_timesteps_gives_diffusers_chain(total, spacing, offset):
    for steps in (1, 7, 10, 50, 99, total // 3, total - 1 - offset, total - offset):
        ours, stock, _ = _trio(total, steps, timestep_spacing=spacing, steps_offset=offset)
        theirs = stock.timesteps
        if len(theirs) == steps + 1:
            # A difference on purpose: DDPMScheduler's "trailing" takes np.arange(T, 0, -T / steps), whose
            # floating-point steps can give one more value, ~0, which becomes timestep -1 (step would then read
            # alpha_bar of t = T - 1). Ours keeps the `steps` timesteps.
            assert spacing == "trailing" and theirs[-1] == -1
            theirs = theirs[:-1]
        assert torch.equal(ours.timesteps, theirs), (steps, ours.timesteps[-5:], theirs[-5:])
        assert ours.timesteps.dtype == torch.int64 and ours.num_inference_steps == steps
        assert not ours.custom_timesteps


@pytest.mark.parametrize("total", T_VALUES)
def test_set_timesteps_places_timesteps_on_the_device_given(total):
    ours, stock, _ = _trio(total)
    for scheduler in (ours, stock):
        scheduler.set_timesteps(10, device="meta")
    assert ours.timesteps.device == stock.timesteps.device == torch.device("meta")


@pytest.mark.parametrize("total", T_VALUES)
def test_custom_timesteps_and_previous_timestep(total):
    # Diffusers' own test_custom_timesteps, on both schedulers.
    custom = [100, 87, 50, 1, 0]
    ours, stock, _ = _trio(total, timesteps=custom)
    assert torch.equal(ours.timesteps, stock.timesteps) and ours.custom_timesteps and stock.custom_timesteps
    for i, timestep in enumerate(ours.timesteps):
        expected = custom[i + 1] if i + 1 < len(custom) else -1
        assert ours.previous_timestep(timestep).item() == stock.previous_timestep(timestep).item() == expected
        assert ours.previous_timestep(int(timestep)) == expected  # an int for an int
    # one per sample, which DDPMScheduler does not offer
    assert ours.previous_timestep(torch.tensor(custom)).tolist() == custom[1:] + [-1]


@pytest.mark.parametrize("total", T_VALUES)
@pytest.mark.parametrize(
    "chain",
    [{}, {"steps": 10}, {"steps": 13, "timestep_spacing": "trailing"}, {"steps": 7, "timestep_spacing": "linspace"}],
    ids=["full", "leading", "trailing", "linspace"],
)
def test_previous_timestep_on_every_chain(total, chain):
    chain = dict(chain)
    ours, stock, _ = _trio(total, chain.pop("steps", None), **chain)
    for timestep in ours.timesteps:
        assert ours.previous_timestep(timestep).item() == int(stock.previous_timestep(timestep))
        assert ours.previous_timestep(int(timestep)) == int(stock.previous_timestep(int(timestep)))
    batched = ours.previous_timestep(ours.timesteps)
    assert batched.tolist() == [int(stock.previous_timestep(t)) for t in stock.timesteps]


# --------------------------------------------------------------------------------------------------------- step


@pytest.mark.parametrize("total", T_VALUES)
@pytest.mark.parametrize("variance_type", VARIANCE_TYPES)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_step_each_variance_and_prediction_type(total, variance_type, prediction_type):
    config = {"variance_type": variance_type, "prediction_type": prediction_type}
    sample, model_output = _inputs(variance_type)
    for steps in (None, 10):
        ours, stock, exact = _trio(total, steps, **config)
        if variance_type == "fixed_large_log":
            # DDPMScheduler.step takes the square root of log(beta_t) here and returns NaN; ours gives the variance
            # the name means (GLIDE, improved DDPM): exp(log beta_t) = beta_t, which is fixed_large's.
            _, stock, exact = _trio(total, steps, **{**config, "variance_type": "fixed_large"})
            shipped = DDPMScheduler.from_config(ours.config)
            if steps:
                shipped.set_timesteps(steps)
            theirs = shipped.step(model_output, int(ours.timesteps[0]), sample, generator=torch.manual_seed(5))
            if torch.isfinite(theirs.prev_sample).all():  # should Diffusers fix it, ours must agree with theirs
                stock = shipped
        timesteps = ours.timesteps
        for timestep in (timesteps[0], timesteps[len(timesteps) // 2], timesteps[-2], timesteps[-1]):
            _assert_step_matches(ours, _both(stock, exact), model_output, timestep, sample)
            _assert_step_matches(ours, _both(stock, exact), model_output, int(timestep), sample)


CHAINS = {
    "full": {},
    "leading 10": {"steps": 10},
    "leading 10, steps_offset 1": {"steps": 10, "steps_offset": 1},
    "linspace 13": {"steps": 13, "timestep_spacing": "linspace"},
    "trailing 9": {"steps": 9, "timestep_spacing": "trailing"},
    "custom to 0": {"timesteps": [250, 200, 120, 60, 21, 5, 0]},
    "custom to 3": {"timesteps": [280, 140, 70, 3]},
}


@pytest.mark.parametrize("total", T_VALUES)
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_whole_chain_step_by_step(total, chain):
    """Every step of each kind of chain, fed the same x_t; a dummy model like Diffusers' own scheduler tests use."""
    settings = dict(CHAINS[chain])
    ours, stock, exact = _trio(total, settings.pop("steps", None), settings.pop("timesteps", None), **settings)
    sample, _ = _inputs(seed=1)
    for i, timestep in enumerate(ours.timesteps):
        model_output = sample * int(timestep) / (int(timestep) + 1)
        # A chain that ends above 0 ends noise-free in ours; DDPMScheduler adds noise there too, of std 1e-10 for
        # fixed_small (its variance floor), far inside the tolerance. test_chain_end_adds_no_noise has the others.
        _assert_step_matches(ours, _both(stock, exact), model_output, timestep, sample, seed=i)
        sample = ours.step(model_output, timestep, sample, generator=torch.manual_seed(i)).prev_sample


@pytest.mark.parametrize("variance_type", VARIANCE_TYPES)
@pytest.mark.parametrize("chain", ["custom to 3", "leading 10, steps_offset 1"])
def test_chain_end_adds_no_noise(variance_type, chain):
    """A difference on purpose: ours ends every chain as Ho et al.'s Algorithm 2 does (z = 0 on the last step), also
    when the chain ends above t = 0, where DDPMScheduler (`if t > 0`) still adds noise, for fixed_large of std
    sqrt(1 - alpha_bar_t). The last step's output is then the posterior mean: DDPMScheduler's fixed_small output."""
    settings = dict(CHAINS[chain])
    config = {"variance_type": variance_type, **{k: v for k, v in settings.items() if k == "steps_offset"}}
    ours, _, _ = _trio(300, settings.get("steps"), settings.get("timesteps"), **config)
    _, _, mean_only = _trio(
        300, settings.get("steps"), settings.get("timesteps"), **{**config, "variance_type": "fixed_small"}
    )
    last = ours.timesteps[-1]
    assert int(last) > 0 and ours.previous_timestep(last).item() == -1
    sample, model_output = _inputs(variance_type)
    first = ours.step(model_output, last, sample, generator=torch.manual_seed(1)).prev_sample
    second = ours.step(model_output, last, sample, generator=torch.manual_seed(2)).prev_sample
    assert torch.equal(first, second)
    expected = mean_only.step(model_output[:, : sample.shape[1]], last, sample, generator=torch.manual_seed(1))
    assert (first - expected.prev_sample).abs().max() <= _tolerance("exact", ours, last, sample, model_output, 300)


CLIPPING = {
    "clip 1.0": {"clip_sample": True},
    "clip 0.5": {"clip_sample": True, "clip_sample_range": 0.5},
    "clip 2.5": {"clip_sample": True, "clip_sample_range": 2.5},
    "no clip": {"clip_sample": False},
    "threshold 1.0": {"thresholding": True},
    "threshold 1.5, ratio 0.95": {"thresholding": True, "sample_max_value": 1.5, "dynamic_thresholding_ratio": 0.95},
    "threshold 2.0, no clip": {"thresholding": True, "sample_max_value": 2.0, "clip_sample": False},
    "threshold 0.5": {"thresholding": True, "sample_max_value": 0.5},
}


@pytest.mark.parametrize("total", T_VALUES)
@pytest.mark.parametrize("setting", sorted(CLIPPING))
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_clip_sample_range_and_thresholding(total, setting, prediction_type):
    ours, stock, exact = _trio(total, prediction_type=prediction_type, **CLIPPING[setting])
    sample, model_output = _inputs(scale=3.0, size=8)  # x0 estimates well outside [-1, 1]
    for timestep in (total - 1, total // 2, 40, 3, 0):
        _assert_step_matches(ours, _both(stock, exact), model_output, timestep, sample)
    settings = CLIPPING[setting]
    bound = 1.0 if settings.get("thresholding") else settings.get("clip_sample_range", 1.0)
    x0 = ours.step(model_output, total // 2, sample).pred_original_sample
    assert (
        (x0.abs().max() <= bound)
        if settings.get("clip_sample") or settings.get("thresholding")
        else x0.abs().max() > 3
    )


@pytest.mark.parametrize("total", T_VALUES)
@pytest.mark.parametrize(
    "config",
    [{"variance_type": v} for v in VARIANCE_TYPES]
    + [{"prediction_type": "v_prediction", "thresholding": True, "sample_max_value": 1.5}]
    + [{"prediction_type": "sample", "clip_sample_range": 0.5, "variance_type": "learned_range"}],
    ids=VARIANCE_TYPES + ["v_prediction thresholded", "sample learned_range clipped"],
)
@pytest.mark.parametrize("steps", [None, 10])
def test_per_sample_timesteps_match_diffusers_one_sample_at_a_time(total, config, steps, monkeypatch):
    """One `step` with a timestep per sample equals DDPMScheduler's steps one sample at a time, given each sample
    the noise ours drew for it (DDPMScheduler takes one timestep per call)."""
    reference_config = dict(config)
    if config.get("variance_type") == "fixed_large_log":  # see test_step_each_variance_and_prediction_type
        reference_config["variance_type"] = "fixed_large"
    ours, _, _ = _trio(total, steps, **config)
    _, stock, exact = _trio(total, steps, **reference_config)
    chain = ours.timesteps
    timesteps = torch.stack([chain[0], chain[1], chain[len(chain) // 2], chain[-2], chain[-1]])
    sample, model_output = _inputs(config.get("variance_type", "fixed_small"), batch=len(timesteps))
    mine = ours.step(model_output, timesteps, sample, generator=torch.manual_seed(9))
    noise = randn_tensor(sample.shape, generator=torch.manual_seed(9), dtype=sample.dtype)
    current = {}
    monkeypatch.setattr(scheduling_ddpm, "randn_tensor", lambda shape, **kwargs: noise[current["i"]][None])
    for reference, kind in ((exact, "exact"), (stock, "stock")):
        for i, timestep in enumerate(timesteps):
            current["i"] = i
            theirs = reference.step(model_output[i : i + 1], timestep, sample[i : i + 1])
            atol = _tolerance(kind, ours, timestep, sample[i : i + 1], model_output[i : i + 1], total)
            for name in ("prev_sample", "pred_original_sample"):
                gap = (getattr(mine, name)[i : i + 1] - getattr(theirs, name)).abs().max().item()
                assert gap <= atol, f"{kind} {name}, sample {i} at t={int(timestep)}: {gap:.3g} > {atol:.3g}"


# ---------------------------------------------------------------------------------------- add_noise, velocity


@pytest.mark.parametrize("total", T_VALUES)
@pytest.mark.parametrize("config", [{}, {"rescale_betas_zero_snr": True}, {"beta_schedule": "squaredcos_cap_v2"}])
def test_add_noise_and_get_velocity(total, config):
    ours, stock, exact = _trio(total, **config)
    timesteps = torch.tensor([0, 1, 2, total // 2, total - 2, total - 1])
    x0, noise = _inputs(batch=len(timesteps))
    for method in ("add_noise", "get_velocity"):
        mine = getattr(ours, method)(x0, noise, timesteps)
        # float64 is the point: DDPMScheduler computes sqrt(1 - alpha_bar_t) in the samples' dtype, which at t = 0
        # loses three digits in float32; given float64 samples it is exact, and ours is within float32 rounding.
        reference = getattr(exact, method)(x0.double(), noise.double(), timesteps)
        torch.testing.assert_close(mine.double(), reference, rtol=1e-6, atol=1e-6)
        size = max(x0.abs().max().item(), noise.abs().max().item())
        torch.testing.assert_close(
            mine, getattr(stock, method)(x0, noise, timesteps), rtol=0, atol=STOCK_TABLES[total] * size
        )
        for i, timestep in enumerate(timesteps):  # one timestep for the batch: a tensor, a 0-d tensor, an int
            single = getattr(ours, method)(x0[i : i + 1], noise[i : i + 1], int(timestep))
            assert torch.equal(single, mine[i : i + 1])
            assert torch.equal(getattr(ours, method)(x0[i : i + 1], noise[i : i + 1], timestep), single)


# ------------------------------------------------------------------------------------------------------- config


NEW_KEYS = {
    "variance_type": "learned_range",
    "thresholding": True,
    "dynamic_thresholding_ratio": 0.9,
    "sample_max_value": 1.7,
    "clip_sample_range": 2.5,
    "timestep_spacing": "trailing",
    "steps_offset": 1,
    "beta_schedule": "sigmoid",
}


def test_every_new_config_key_survives_save_and_reload(tmp_path):
    ours = KiitDDPMScheduler(**NEW_KEYS)
    ours.save_pretrained(tmp_path / "ours")
    loaded = KiitDDPMScheduler.from_pretrained(tmp_path / "ours")
    assert {key: loaded.config[key] for key in NEW_KEYS} == NEW_KEYS
    assert torch.equal(loaded.alphas_cumprod, ours.alphas_cumprod)
    sample, model_output = _inputs("learned_range")
    for scheduler in (ours, loaded):
        scheduler.set_timesteps(20)
    first = ours.step(model_output, ours.timesteps[3], sample, generator=torch.manual_seed(0))
    second = loaded.step(model_output, loaded.timesteps[3], sample, generator=torch.manual_seed(0))
    assert torch.equal(first.prev_sample, second.prev_sample) and torch.equal(ours.timesteps, loaded.timesteps)


def test_config_moves_between_ours_and_ddpm_scheduler_both_ways(tmp_path):
    stock = DDPMScheduler.from_config(KiitDDPMScheduler(**NEW_KEYS).config)
    assert {key: stock.config[key] for key in NEW_KEYS} == NEW_KEYS and stock.config.num_train_timesteps == 300
    DDPMScheduler(**NEW_KEYS).save_pretrained(tmp_path / "stock")
    ours = KiitDDPMScheduler.from_pretrained(tmp_path / "stock")
    assert {key: ours.config[key] for key in NEW_KEYS} == NEW_KEYS
    assert ours.config.num_train_timesteps == 1000  # DDPMScheduler's default, as saved
    # In memory the config marks the keys DDPMScheduler took by default; stock from_config would fill those with
    # our defaults (T = 300, a different schedule). Ours takes the values the source scheduler used.
    swapped = KiitDDPMScheduler.from_config(DDPMScheduler().config)
    assert swapped.config.num_train_timesteps == 1000
    assert torch.allclose(swapped.alphas_cumprod, DDPMScheduler().alphas_cumprod, rtol=5e-5)


# ------------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("total", T_VALUES)
def test_set_timesteps_errors_match_diffusers(total):
    """Diffusers' error cases (its test_custom_timesteps_*): both refuse with a ValueError, ours with Diffusers'
    message and what to pass instead."""
    cases = [
        ({"num_inference_steps": 5, "timesteps": [100, 87, 50, 1, 0]}, "Can only pass one of `num_inference_steps`"),
        ({"timesteps": [100, 87, 50, 51, 0]}, "`custom_timesteps` must be in descending order"),
        ({"timesteps": [100, 87, 87, 0]}, "`custom_timesteps` must be in descending order"),
        ({"timesteps": [total]}, f"`timesteps` must start before `self.config.train_timesteps`: {total}"),
        ({"num_inference_steps": total + 1}, f"between 1 and `num_train_timesteps`={total}"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError):
            DDPMScheduler(num_train_timesteps=total).set_timesteps(**kwargs)
        with pytest.raises(ValueError, match=message.replace("[", r"\[")):
            KiitDDPMScheduler(num_train_timesteps=total).set_timesteps(**kwargs)


@pytest.mark.parametrize(
    "timesteps, message",
    [
        ([5, -1], r"integers in \[0, 299\]; got \[5, -1\], which ends at -1"),
        ([], "non-empty list of integers"),
        ([10.5, 3], "non-empty list of integers"),
    ],
)
def test_custom_timesteps_stricter_than_diffusers(timesteps, message):
    with pytest.raises(ValueError, match=message):
        KiitDDPMScheduler().set_timesteps(timesteps=timesteps)


def test_custom_timesteps_accept_arrays_tensors_and_whole_floats():
    for given in (np.array([9, 4, 0]), torch.tensor([9, 4, 0]), [9.0, 4.0, 0.0], (9, 4, 0)):
        scheduler = KiitDDPMScheduler()
        scheduler.set_timesteps(timesteps=given)
        assert scheduler.timesteps.tolist() == [9, 4, 0] and scheduler.num_inference_steps == 3


# ----------------------------------------------------------------------------------------- a stock DDPMPipeline


def _tiny_unet(out_channels=1):
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=out_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


PIPELINES = {
    "T=300, every step": (300, 300, {}),
    "T=1000, every step": (1000, 1000, {}),
    "T=1000, 50 trailing steps, v_prediction": (
        1000,
        50,
        {"timestep_spacing": "trailing", "prediction_type": "v_prediction", "clip_sample": False},
    ),
    "T=300, learned_range": (300, 300, {"variance_type": "learned_range"}),
    "T=300, thresholding": (300, 100, {"thresholding": True, "sample_max_value": 1.5, "variance_type": "fixed_large"}),
}


@pytest.mark.parametrize("case", sorted(PIPELINES))
def test_stock_ddpm_pipeline_gives_diffusers_images(case):
    """KiitDDPMScheduler swapped into Diffusers' DDPMPipeline gives DDPMScheduler's images, same config and seed.
    Images in [0, 1]: within PIPELINE_STOCK_ATOL of stock DDPMScheduler's, the rounding of its float32 tables; within
    PIPELINE_EXACT_ATOL of DDPMScheduler with float64 tables (measured gaps: docs/schedulers.md)."""
    total, steps, config = PIPELINES[case]
    ours, stock, exact = _trio(total, **config)
    unet = _tiny_unet(out_channels=2 if config.get("variance_type") == "learned_range" else 1)
    images = {}
    for name, scheduler in (("ours", ours), ("stock", stock), ("exact", exact)):
        pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        images[name] = pipe(batch_size=2, generator=torch.manual_seed(0), num_inference_steps=steps, output_type="np")
    ours_images = torch.from_numpy(images["ours"].images)
    exact_gap = (ours_images - torch.from_numpy(images["exact"].images)).abs().max().item()
    stock_gap = (ours_images - torch.from_numpy(images["stock"].images)).abs().max().item()
    assert exact_gap <= PIPELINE_EXACT_ATOL and stock_gap <= PIPELINE_STOCK_ATOL, (exact_gap, stock_gap)
    assert 0.05 < ours_images.std() and ours_images.min() >= 0 and ours_images.max() <= 1  # images, not a blank
