"""The blur schedulers: ColdDiffusionScheduler and BlurringDiffusionScheduler (numbers against formulas and against
the single class they were split from, saved in tests/data), and GaussianBlurScheduler, which builds and loads them
from that class's settings and saved folders."""

import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ddpm_kiit import (
    BlurringDiffusionScheduler,
    ColdDiffusionScheduler,
    GaussianBlurScheduler,
    KiitDDPMPipeline,
    SimpleUNet2DModel,
)
from ddpm_kiit.pipelines import forward_process_strip
from ddpm_kiit.training.loop import loss_weights, training_target

sys.path.insert(0, str(Path(__file__).parent / "data"))
import make_blur_expected  # noqa: E402

SCHEDULERS = {"cold": ColdDiffusionScheduler, "blurring_diffusion": BlurringDiffusionScheduler}


def _images(batch=4, channels=3, size=16, seed=0):
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("boundary", ["reflect", "circular"])
def test_no_blur_at_t0_is_the_identity(boundary):
    scheduler = ColdDiffusionScheduler(boundary=boundary)
    x = _images()
    torch.testing.assert_close(scheduler.blur(x, 0), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(scheduler.blur(x, -1), x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("schedule, sigma_min", [("linear", 0.0), ("geometric", 0.5)])
def test_blur_width_and_effect_grow_with_t(schedule, sigma_min):
    scheduler = ColdDiffusionScheduler(blur_schedule=schedule, sigma_min=sigma_min)
    assert torch.all(scheduler.sigmas[1:] > scheduler.sigmas[:-1])
    x = _images(batch=1)
    # Blur only removes detail: the distance to the image's mean colour shrinks as t grows.
    detail = [(scheduler.blur(x, t) - x.mean(dim=(2, 3), keepdim=True)).norm().item() for t in range(0, 50, 7)]
    assert detail == sorted(detail, reverse=True)


def test_reflect_blur_matches_a_spatial_gaussian_with_reflection():
    # A 3-sigma kernel must fit inside one reflection of the image for the spatial reference: sigma_max = 8 px.
    scheduler = ColdDiffusionScheduler(boundary="reflect", sigma_max=8.0)
    x = _images(batch=1, channels=1, size=32).double()
    t = 20  # sigma = 3.3 px; below about 1.5 px a sampled kernel aliases and the two differ by up to 2e-3
    sigma = float(scheduler.sigmas[t])
    radius = 20
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    # Half-sample symmetric extension, as the DCT-II assumes: x[-1] = x[0], x[-2] = x[1], ...
    extended = torch.cat([x.flip(-2)[..., -radius:, :], x, x.flip(-2)[..., :radius, :]], dim=-2)
    extended = torch.cat([extended.flip(-1)[..., -radius:], extended, extended.flip(-1)[..., :radius]], dim=-1)
    rows = torch.nn.functional.conv2d(extended, kernel.view(1, 1, -1, 1))
    spatial = torch.nn.functional.conv2d(rows, kernel.view(1, 1, 1, -1))
    torch.testing.assert_close(scheduler.blur(x, t), spatial, rtol=0, atol=1e-6)


def test_per_sample_timesteps_match_one_at_a_time():
    scheduler = ColdDiffusionScheduler()
    x = _images()
    t = torch.tensor([0, 10, 25, 49])
    batched = scheduler.add_noise(x, torch.zeros_like(x), t)
    for i in range(4):
        torch.testing.assert_close(batched[i : i + 1], scheduler.blur(x[i : i + 1], int(t[i])), rtol=0, atol=1e-6)


def test_a_constant_image_is_a_fixed_point():
    scheduler = ColdDiffusionScheduler(boundary="reflect")
    flat = torch.full((2, 3, 16, 16), 0.3)
    for t in (0, 20, 49):
        torch.testing.assert_close(scheduler.blur(flat, t), flat, rtol=0, atol=1e-6)


def test_improved_sampler_with_a_perfect_predictor_recovers_x0_exactly():
    scheduler = ColdDiffusionScheduler(sampler="improved")
    x0 = _images(batch=2)
    scheduler.set_timesteps()
    sample = scheduler.blur(x0, int(scheduler.timesteps[0]))
    for t in scheduler.timesteps:
        sample = scheduler.step(x0, t, sample).prev_sample
    torch.testing.assert_close(sample, x0, rtol=0, atol=1e-5)


def test_naive_sampler_ends_at_the_prediction():
    scheduler = ColdDiffusionScheduler(sampler="naive")
    x0 = _images(batch=2)
    scheduler.set_timesteps(10)
    out = scheduler.step(x0, int(scheduler.timesteps[-1]), scheduler.blur(x0, 0))
    torch.testing.assert_close(out.prev_sample, x0, rtol=0, atol=1e-5)


def _pipeline(process):
    unet = SimpleUNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16)).eval()
    scheduler = SCHEDULERS[process](num_train_timesteps=10)
    if process == "cold":
        scheduler.fit_initial_distribution(
            _images(batch=64, seed=3) * 0.5 + torch.linspace(-0.4, 0.4, 64)[:, None, None, None]
        )
    pipe = KiitDDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("process", ["cold", "blurring_diffusion"])
def test_samples_differ_across_seeds_and_round_trip_through_disk(process, tmp_path):
    pipe = _pipeline(process)
    first = pipe(batch_size=2, generator=torch.manual_seed(0), output_type="np").images
    again = pipe(batch_size=2, generator=torch.manual_seed(0), output_type="np").images
    other = pipe(batch_size=2, generator=torch.manual_seed(1), output_type="np").images
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 1e-3
    pipe.save_pretrained(tmp_path)
    loaded = KiitDDPMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is SCHEDULERS[process]
    assert loaded.scheduler.config == pipe.scheduler.config
    np.testing.assert_array_equal(first, loaded(batch_size=2, generator=torch.manual_seed(0), output_type="np").images)


def test_cold_sampling_without_a_fitted_start_explains_the_fix():
    unet = SimpleUNet2DModel(sample_size=16, block_out_channels=(8, 16))
    pipe = KiitDDPMPipeline(unet=unet, scheduler=ColdDiffusionScheduler(num_train_timesteps=5))
    with pytest.raises(ValueError, match="fit_initial_distribution"):
        pipe(batch_size=1)


def test_fitted_mixture_reproduces_the_channel_means():
    scheduler = ColdDiffusionScheduler()
    means = torch.cat([torch.full((300,), -0.6), torch.full((300,), 0.5)])
    images = means[:, None, None, None] + 0.01 * torch.randn(600, 1, 8, 8)
    scheduler.fit_initial_distribution(images, num_components=2)
    start = scheduler.initial_sample((2000, 1, 8, 8), generator=torch.manual_seed(0))
    drawn = start.mean(dim=(1, 2, 3))
    assert abs((drawn < 0).float().mean().item() - 0.5) < 0.05
    assert abs(drawn[drawn < 0].mean().item() + 0.6) < 0.02 and abs(drawn[drawn > 0].mean().item() - 0.5) < 0.02


def test_forward_strip_shows_each_level():
    strip = forward_process_strip(ColdDiffusionScheduler(), _images(batch=2), count=5)
    assert strip.size == (5 * 16, 2 * 16)


@pytest.mark.parametrize("cls", [ColdDiffusionScheduler, BlurringDiffusionScheduler])
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sigma_min": -1.0}, "Blur widths must be >= 0"),
        ({"sigma_max": None}, "Blur widths are numbers of pixels"),
        ({"sigma_min": 4.0, "sigma_max": 2.0}, "must be larger than `sigma_min`"),
        ({"blur_schedule": "geometric"}, "needs `sigma_min` > 0"),
        ({"blur_schedule": "cosine"}, "`blur_schedule` must be one of"),
        ({"boundary": "zero"}, "`boundary` must be one of"),
        ({"num_train_timesteps": 0}, "`num_train_timesteps` must be a positive integer"),
    ],
)
def test_bad_blur_configs(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ColdDiffusionScheduler(sampler="ddim"), "`sampler` must be one of"),
        (lambda: ColdDiffusionScheduler(noise_std=-0.1), "must be >= 0"),
        (
            lambda: ColdDiffusionScheduler(prediction_type="epsilon"),
            "cold process trains the model to predict 'sample'",
        ),
        (lambda: BlurringDiffusionScheduler(prediction_type="sample"), "Blurring diffusion .* predict 'epsilon'"),
        (lambda: GaussianBlurScheduler(process="heat"), "`process` must be one of"),
        (
            lambda: GaussianBlurScheduler(prediction_type="epsilon"),
            "cold process trains the model to predict 'sample'",
        ),
    ],
)
def test_bad_process_settings_name_the_fix(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_blurring_diffusion_step_keeps_the_forward_marginals():
    # With a perfect epsilon, one reverse step from z_t ~ q(z_t | x0) must land on q(z_s | x0) = N(a_s D_s x0, s_s^2).
    scheduler = BlurringDiffusionScheduler(num_train_timesteps=20, clip_sample=False)
    scheduler.set_timesteps()
    x0 = _images(batch=1, channels=1, size=8).double().expand(4000, -1, -1, -1)
    t, s = 12, 11
    noise = torch.randn(x0.shape, generator=torch.manual_seed(0), dtype=torch.float64)
    z_t = scheduler.add_noise(x0, noise, torch.full((4000,), t))
    z_s = scheduler.step(noise, t, z_t, generator=torch.manual_seed(1)).prev_sample
    expected_mean = scheduler.alphas[s] * scheduler.blur(x0[:1], s)
    assert (z_s.mean(0) - expected_mean[0]).abs().max() < 4 * float(scheduler.noise_sigmas[s]) / 4000**0.5 + 1e-3
    assert abs(z_s.var(0).mean().item() - float(scheduler.noise_sigmas[s]) ** 2) < 0.03


def test_blurring_diffusion_first_step_does_not_amplify_the_models_error():
    # At t = T - 1, alpha_t is tiny and the posterior mean divides the epsilon error by alpha_{t|s} (about 300x here).
    # With `clip_sample`, the blurred x0 estimate is bounded instead, as DDPM bounds x0: the step moves at most a few
    # times the error. (Trained models sampled pure noise before this; z grew to 1e5.)
    scheduler = BlurringDiffusionScheduler()
    scheduler.set_timesteps(50)
    x0 = _images(batch=64, channels=1, size=16)
    t = int(scheduler.timesteps[0])
    noise = torch.randn(x0.shape, generator=torch.manual_seed(0))
    z_t = scheduler.add_noise(x0, noise, torch.full((64,), t))
    error = 0.04 * torch.randn(x0.shape, generator=torch.manual_seed(1))
    exact = scheduler.step(noise, t, z_t, generator=torch.manual_seed(2)).prev_sample
    perturbed = scheduler.step(noise + error, t, z_t, generator=torch.manual_seed(2)).prev_sample
    assert (perturbed - exact).std() < 3 * error.std()
    unclipped = BlurringDiffusionScheduler(clip_sample=False)
    unclipped.set_timesteps(50)
    amplified = unclipped.step(noise + error, t, z_t, generator=torch.manual_seed(2)).prev_sample
    assert (amplified - exact).std() > 30 * error.std()  # the failure the clipping prevents


def test_a_chain_can_start_part_way():
    scheduler = ColdDiffusionScheduler(num_train_timesteps=20)
    scheduler.set_timesteps(timesteps=[7, 4, 0])
    assert scheduler.timesteps.tolist() == [7, 4, 0] and scheduler.num_inference_steps == 3
    assert scheduler.previous_timestep(torch.tensor([7, 4, 0])).tolist() == [4, 0, -1]
    for bad, message in [([4, 7], "strictly decreasing"), ([], "non-empty"), ([20, 3], r"lie in \[0, 20\)")]:
        with pytest.raises(ValueError, match=message):
            scheduler.set_timesteps(timesteps=bad)
    with pytest.raises(ValueError, match="either `num_inference_steps` or `timesteps`"):
        scheduler.set_timesteps(3, timesteps=[2, 1])


def test_default_blur_width_depends_on_the_process_and_is_saved(tmp_path):
    cold, blurring = ColdDiffusionScheduler(), BlurringDiffusionScheduler()
    assert cold.config.sigma_max == 32.0 and float(cold.sigmas[-1]) == 32.0
    assert blurring.config.sigma_max == 8.0 and float(blurring.sigmas[-1]) == 8.0
    blurring.save_pretrained(tmp_path)
    assert BlurringDiffusionScheduler.from_pretrained(tmp_path).config.sigma_max == 8.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s, x: s.add_noise(x, x, torch.tensor([10])), r"`timesteps` must hold integers in \[0, 9\].*got 10"),
        (lambda s, x: s.add_noise(x, x, torch.tensor([-1, 2])), r"`timesteps` must hold integers in \[0, 9\].*got -1"),
        (lambda s, x: s.step(x, -1, x), r"`timestep` must be an integer in \[0, 9\].*got -1"),
        (lambda s, x: s.step(x, torch.tensor([3, 12]), x), r"`timestep` must hold integers in \[0, 9\].*got 12"),
        (lambda s, x: s.step(x, torch.tensor([3.0, 2.0]), x), "got a float tensor"),
        (lambda s, x: s.scale_model_input(x, 10), r"`timestep` must be an integer in \[0, 9\]"),
        (lambda s, x: s.blur(x, -2), r"`timesteps` must be an integer in \[-1, 9\].*got -2"),
        (lambda s, x: s.previous_timestep(torch.tensor([10])), r"`timestep` must hold integers in \[0, 9\]"),
        (lambda s, x: s.add_noise(x, x, torch.tensor([1, 2, 3])), r"one value per sample \(2\), got 3 values"),
    ],
)
def test_timesteps_are_checked_where_they_enter(call, message):
    scheduler = BlurringDiffusionScheduler(num_train_timesteps=10)
    with pytest.raises(ValueError, match=message):
        call(scheduler, torch.zeros(2, 1, 8, 8))


def test_own_timesteps_skip_the_range_check(monkeypatch):
    scheduler = ColdDiffusionScheduler(num_train_timesteps=10)
    scheduler.set_timesteps(5)
    calls = []
    real = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda t: calls.append(t) or real(t))
    x = torch.zeros(2, 1, 8, 8)
    for i in range(len(scheduler.timesteps) - 1):
        scheduler.step(x, scheduler.timesteps[i : i + 2], x)
    assert calls == []
    scheduler.step(x, torch.tensor([4, 2]), x)
    assert len(calls) == 1


# The split: the same numbers as the single class the two schedulers came from


@pytest.fixture(scope="module")
def old_numbers():
    return load_file(str(make_blur_expected.EXPECTED))


@pytest.mark.parametrize("case", list(make_blur_expected.CASES))
def test_each_scheduler_computes_exactly_what_the_old_class_did(case, old_numbers):
    process, settings = make_blur_expected.CASES[case]
    new = make_blur_expected.outputs(lambda process, settings: SCHEDULERS[process](**settings), case)
    if process == "blurring_diffusion":
        new["snr"] = BlurringDiffusionScheduler(**settings).signal_to_noise_ratio(
            torch.arange(settings["num_train_timesteps"])
        )
    expected = {key.split("/", 1)[1]: value for key, value in old_numbers.items() if key.startswith(f"{case}/")}
    assert set(new) == set(expected)
    for key, value in new.items():
        assert value.dtype == expected[key].dtype, key
        # Recorded on one CPU: another vectorises the blur's float sums differently (AVX2 against AVX-512), so
        # the numbers agree to float32 rounding, not bit for bit; a changed formula is off by far more. The rounding
        # is relative to the tensor's largest entry, not each entry's own size: the unclipped circular chain's
        # deblurring grows its values to about 2e7, and entries that cancel to a few hundred keep the big ones' error.
        scale = expected[key].abs().max().item() if expected[key].is_floating_point() else 0.0
        torch.testing.assert_close(
            value, expected[key], rtol=1e-4, atol=1e-4 * max(scale, 1.0), msg=lambda m, key=key: f"{case}/{key}: {m}"
        )


def test_each_process_answers_what_the_model_learns_and_its_snr():
    x, noise = _images(batch=4), _images(batch=4, seed=1)
    t = torch.tensor([0, 3, 6, 9])
    cold = ColdDiffusionScheduler(num_train_timesteps=10)
    assert training_target(cold, x, noise, t) is x  # cold diffusion's model predicts x0
    assert cold.signal_to_noise_ratio(t) is None and loss_weights(cold, t, snr_gamma=5.0) is None
    blurring = BlurringDiffusionScheduler(num_train_timesteps=10)
    assert training_target(blurring, x, noise, t) is noise
    snr = blurring.signal_to_noise_ratio(t)
    alpha = blurring.alphas[t]  # alpha_t^2 / sigma_t^2, sigma_t^2 = 1 - alpha_t^2
    assert snr.dtype == torch.float32
    torch.testing.assert_close(snr, (alpha**2 / blurring.noise_sigmas[t] ** 2).float(), rtol=1e-5, atol=0)
    assert torch.all(snr[1:] < snr[:-1])
    # Min-SNR-gamma for an epsilon model: min(SNR, gamma) / SNR.
    torch.testing.assert_close(loss_weights(blurring, t, snr_gamma=5.0), snr.clamp(max=5.0) / snr, rtol=0, atol=0)
    assert float(blurring.signal_to_noise_ratio(3)) == float(snr[1])


# GaussianBlurScheduler: the old class's settings, configs and folders

OLD_PARAMETERS = {
    "num_train_timesteps": 50,
    "blur_schedule": "linear",
    "sigma_min": 0.0,
    "sigma_max": None,
    "boundary": "reflect",
    "process": "cold",
    "sampler": "improved",
    "noise_std": 0.0,
    "initial_noise_std": 0.002,
    "gmm_weights": None,
    "gmm_means": None,
    "gmm_stds": None,
    "prediction_type": None,
    "clip_sample": True,
}


def test_the_compatibility_class_takes_the_old_parameters_in_their_order():
    parameters = inspect.signature(GaussianBlurScheduler.__init__).parameters
    assert {name: p.default for name, p in list(parameters.items())[1:]} == OLD_PARAMETERS
    cold = GaussianBlurScheduler(12, "geometric", 0.5, None, "circular", "cold", "naive")  # positional, as before
    assert type(cold) is ColdDiffusionScheduler
    assert (cold.config.num_train_timesteps, cold.config.sigma_max, cold.config.sampler) == (12, 32.0, "naive")
    assert cold.config.boundary == "circular" and cold.config.prediction_type == "sample"


def test_the_compatibility_class_builds_the_new_ones():
    cold = GaussianBlurScheduler(num_train_timesteps=10, sampler="naive", noise_std=0.1)
    assert (
        type(cold) is ColdDiffusionScheduler
        and cold.config == ColdDiffusionScheduler(10, sampler="naive", noise_std=0.1).config
    )
    # The old class ignored the cold-only settings for blurring diffusion; so does the new one's builder.
    blurring = GaussianBlurScheduler(process="blurring_diffusion", sampler="naive", initial_noise_std=0.5)
    assert type(blurring) is BlurringDiffusionScheduler and blurring.config == BlurringDiffusionScheduler().config
    assert "sampler" not in blurring.config and "process" not in blurring.config
    assert isinstance(cold, GaussianBlurScheduler) and isinstance(blurring, GaussianBlurScheduler)
    assert not isinstance(KiitDDPMPipeline, GaussianBlurScheduler)


def _old_config(new_config: dict, process: str) -> dict:
    """A scheduler_config.json as the old class wrote it: every old key, `process`, and its class name."""
    old = {key: new_config.get(key, default) for key, default in OLD_PARAMETERS.items()}
    old.update(process=process, _class_name="GaussianBlurScheduler", _diffusers_version="0.31.0")
    return old


@pytest.mark.parametrize("process", ["cold", "blurring_diffusion"])
def test_old_configs_load_as_the_new_class(process, tmp_path):
    new = _pipeline(process).scheduler
    old = _old_config(dict(new.config), process)
    if process == "blurring_diffusion":
        old.update(sampler="naive", gmm_weights=[1.0], gmm_means=[[0.0]], gmm_stds=[[1.0]])  # ignored, as before
    (tmp_path / "scheduler_config.json").write_text(json.dumps(old))
    settings = {key: value for key, value in new.config.items() if not key.startswith("_")}
    for scheduler in (GaussianBlurScheduler.from_config(old), GaussianBlurScheduler.from_pretrained(tmp_path)):
        assert type(scheduler) is SCHEDULERS[process]
        assert {key: value for key, value in scheduler.config.items() if not key.startswith("_")} == settings
    # The new class reads an old config too; like any Diffusers scheduler it keeps the keys it does not use.
    for scheduler in (SCHEDULERS[process].from_config(old), SCHEDULERS[process].from_pretrained(tmp_path)):
        assert type(scheduler) is SCHEDULERS[process]
        assert {key: scheduler.config[key] for key in settings} == settings
    # kwargs override an old config as they always did; a new config goes back to its own class
    assert GaussianBlurScheduler.from_config(old, num_train_timesteps=7).config.num_train_timesteps == 7
    assert type(GaussianBlurScheduler.from_config(new.config)) is SCHEDULERS[process]
    GaussianBlurScheduler.from_pretrained(tmp_path).save_pretrained(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == SCHEDULERS[process].__name__ and "process" not in saved


@pytest.mark.parametrize("process", ["cold", "blurring_diffusion"])
@pytest.mark.parametrize(
    "entry", [["ddpm_kiit", "GaussianBlurScheduler"], ["scheduling_gaussian_blur", "GaussianBlurScheduler"]]
)
def test_old_pipeline_folders_load_and_sample_the_same_images(process, entry, tmp_path):
    from diffusers import DiffusionPipeline

    pipe = _pipeline(process)
    expected = pipe(batch_size=2, num_inference_steps=5, generator=torch.manual_seed(0), output_type="np").images
    folder = tmp_path / "old"
    pipe.save_pretrained(folder)
    scheduler_folder = folder / "scheduler"
    for path in scheduler_folder.glob("*.py"):
        path.unlink()
    config = _old_config(json.loads((scheduler_folder / "scheduler_config.json").read_text()), process)
    (scheduler_folder / "scheduler_config.json").write_text(json.dumps(config, indent=2))
    if entry[0] == "scheduling_gaussian_blur":  # the old generated module; with ddpm-kiit installed it never runs
        (scheduler_folder / "scheduling_gaussian_blur.py").write_text('raise RuntimeError("this file ran")\n')
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = entry
    (folder / "model_index.json").write_text(json.dumps(index))

    for loader in (KiitDDPMPipeline, DiffusionPipeline):
        loaded = loader.from_pretrained(folder)
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded.scheduler) is SCHEDULERS[process]
        images = loaded(batch_size=2, num_inference_steps=5, generator=torch.manual_seed(0), output_type="np").images
        np.testing.assert_array_equal(images, expected)
    loaded.save_pretrained(tmp_path / "resaved")
    index = json.loads((tmp_path / "resaved" / "model_index.json").read_text())
    module = {"cold": "scheduling_cold_diffusion", "blurring_diffusion": "scheduling_blurring_diffusion"}[process]
    assert index["scheduler"] == [module, SCHEDULERS[process].__name__]
    assert (tmp_path / "resaved" / "scheduler" / f"{module}.py").is_file()
