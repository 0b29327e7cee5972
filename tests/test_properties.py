"""Property tests (hypothesis) for the schedulers and the data transforms."""

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ddpm_kiit import GaussianBlurScheduler, KiitDDPMScheduler
from ddpm_kiit.data import ImageTransform


@st.composite
def ddpm_configs(draw):
    schedule = draw(st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"]))
    steps = draw(st.integers(2, 1000))
    start = draw(st.floats(1e-5, 0.05))
    end = draw(st.floats(start * 1.01, 0.3))
    zero_snr = draw(st.booleans()) and schedule != "squaredcos_cap_v2"
    return {
        "num_train_timesteps": steps,
        "beta_schedule": schedule,
        "beta_start": start,
        "beta_end": end,
        "rescale_betas_zero_snr": zero_snr,
    }


@settings(max_examples=60, deadline=None)
@given(ddpm_configs())
def test_any_valid_schedule_is_a_diffusion(config):
    scheduler = KiitDDPMScheduler(**config)
    betas = scheduler.betas.double()
    assert torch.all(betas > 0) and torch.all(betas <= 1)
    if not config["rescale_betas_zero_snr"]:
        assert torch.all(betas < 1)
    alpha_bar = scheduler._alphas_cumprod_float64
    assert torch.all(alpha_bar[1:] < alpha_bar[:-1])
    assert torch.all(scheduler.posterior_variance >= 0) and scheduler.posterior_variance[0] == 0


@settings(max_examples=60, deadline=None)
@given(ddpm_configs(), st.integers(0, 2**31 - 1))
def test_add_noise_inverts_exactly_with_the_true_noise(config, seed):
    config["rescale_betas_zero_snr"] = False  # at alpha_bar_T = 0 the image is gone and cannot be recovered
    scheduler = KiitDDPMScheduler(**config)
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.rand(3, 1, 4, 4, generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(3, 1, 4, 4, generator=generator, dtype=torch.float64)
    t = torch.randint(0, config["num_train_timesteps"], (3,), generator=generator)
    noisy = scheduler.add_noise(x0, noise, t)
    alpha_bar = scheduler._alphas_cumprod_float64[t][:, None, None, None]
    recovered = (noisy - (1 - alpha_bar).sqrt() * noise) / alpha_bar.sqrt()
    tolerance = 1e-6 / float(alpha_bar.min().sqrt())
    torch.testing.assert_close(recovered, x0, rtol=0, atol=tolerance)


@settings(max_examples=40, deadline=None)
@given(ddpm_configs())
def test_stock_schedulers_get_the_same_config(config):
    ours = KiitDDPMScheduler(**config)
    for stock in (DDPMScheduler, DDIMScheduler):
        theirs = stock.from_config(ours.config)
        assert theirs.config.num_train_timesteps == config["num_train_timesteps"]
        assert theirs.config.beta_schedule == config["beta_schedule"]
        if config["beta_schedule"] != "squaredcos_cap_v2" and not config["rescale_betas_zero_snr"]:
            assert (theirs.betas.double() - ours.betas.double()).abs().max() < 1e-6


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 3.0), st.floats(0.5, 20.0), st.integers(2, 200), st.sampled_from(["reflect", "circular"]))
def test_any_blur_schedule_is_monotone_and_mean_preserving(sigma_min, extra, steps, boundary):
    scheduler = GaussianBlurScheduler(
        num_train_timesteps=steps, sigma_min=sigma_min, sigma_max=sigma_min + extra, boundary=boundary
    )
    assert torch.all(scheduler.sigmas[1:] > scheduler.sigmas[:-1])
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    blurred = scheduler.blur(x, torch.tensor([0, steps - 1]))
    torch.testing.assert_close(blurred.mean(dim=(2, 3)), x.mean(dim=(2, 3)), rtol=0, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(
    width=st.integers(1, 80),
    height=st.integers(1, 80),
    mode=st.sampled_from(["L", "RGB", "RGBA", "P", "1", "I;16", "F", "LA", "CMYK"]),
    channels=st.sampled_from([1, 3]),
    resolution=st.sampled_from([8, 16, 32]),
    center_crop=st.booleans(),
    random_flip=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_transform_output_range_and_shape_for_any_image(
    width, height, mode, channels, resolution, center_crop, random_flip, seed
):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    transform = ImageTransform(resolution, channels, center_crop, random_flip, generator=np.random.default_rng(seed))
    tensor = transform(image)
    assert tensor.shape == (channels, resolution, resolution)
    assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all()
    assert tensor.min() >= -1 and tensor.max() <= 1
