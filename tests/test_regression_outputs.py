"""Refactoring guard: seeded outputs of the pipeline (noise and both blur processes) and of a 20-step training run,
fixed before the "one home per concept" refactoring, must not change. Regenerate (only for an intended change of
numbers, and say so in the commit) with `python tests/test_regression_outputs.py`.

Tolerances: images are in [0, 1]. Sampling alone is compared to 1e-5 (float32 kernels may differ in the last bits
between CPUs); the trained run to 1e-3, since 20 optimizer steps amplify such bits."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from test_training import tiny_args  # noqa: E402

from ddpm_kiit import GaussianBlurScheduler, KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel  # noqa: E402
from ddpm_kiit.training import parse_args, train  # noqa: E402

EXPECTED = Path(__file__).parent / "data" / "regression_outputs.safetensors"
SMALL = {"block_out_channels": (16, 32), "time_embedding_dim": 16, "norm_num_groups": 4}


def _sample(scheduler, steps):
    torch.manual_seed(0)
    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, **SMALL).eval()
    pipe = KiitDDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=2, num_inference_steps=steps, generator=torch.manual_seed(1), output_type="np").images


def pipeline_outputs() -> dict:
    cold = GaussianBlurScheduler(num_train_timesteps=10)
    cold.fit_initial_distribution(torch.rand(32, 1, 16, 16, generator=torch.manual_seed(2)) * 2 - 1)
    return {
        "noise_full_chain": _sample(KiitDDPMScheduler(num_train_timesteps=20), None),
        "noise_respaced_v": _sample(
            KiitDDPMScheduler(
                prediction_type="v_prediction", rescale_betas_zero_snr=True, variance_type="fixed_large"
            ),
            7,
        ),
        "cold_blur": _sample(cold, None),
        "blurring_diffusion": _sample(GaussianBlurScheduler(num_train_timesteps=10, process="blurring_diffusion"), 5),
    }


def trained_outputs(tmp_path) -> dict:
    from conftest import reset_accelerate

    out = train(parse_args(tiny_args(tmp_path, "--max_train_steps", "20", "--checkpointing_steps", "1000")))
    reset_accelerate()
    pipe = KiitDDPMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=10, generator=torch.manual_seed(0), output_type="np").images
    return {"trained_20_steps": images}


@pytest.fixture(scope="module")
def expected():
    assert EXPECTED.is_file(), f"{EXPECTED} is missing: run `python {Path(__file__).name}` to record it"
    return load_file(str(EXPECTED))


@pytest.mark.parametrize("name", ["noise_full_chain", "noise_respaced_v", "cold_blur", "blurring_diffusion"])
def test_seeded_pipeline_outputs_are_unchanged(expected, name):
    np.testing.assert_allclose(pipeline_outputs()[name], expected[name], rtol=0, atol=1e-5)


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_a_seeded_20_step_training_run_is_unchanged(expected, tmp_path):
    np.testing.assert_allclose(trained_outputs(tmp_path)["trained_20_steps"], expected["trained_20_steps"], atol=1e-3)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        arrays = {**pipeline_outputs(), **trained_outputs(Path(folder))}
    EXPECTED.parent.mkdir(exist_ok=True)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}, str(EXPECTED))
    print(f"wrote {EXPECTED}: {', '.join(f'{k} {v.shape}' for k, v in arrays.items())}")
