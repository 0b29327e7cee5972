"""Records `blur_schedulers_expected.safetensors`: what the single `GaussianBlurScheduler` (both blur processes in one
class, switched by `process`) computed before it was split into `ColdDiffusionScheduler` and
`BlurringDiffusionScheduler`. tests/test_blur_scheduler.py runs `outputs` on the new classes with the same settings and
compares to these numbers, bit for bit.

The old class is read from git, at the last commit that had it, so this script still runs (from the repository root,
in a git checkout) after the old class is gone:

    python tests/data/make_blur_expected.py

It never needs to run again: the file records the old behaviour, which is fixed.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

OLD_COMMIT = "acee022634450e7a06be64e8f6813c7a6491945d"
OLD_PATH = "src/ddpm_kiit/schedulers/scheduling_gaussian_blur.py"
EXPECTED = Path(__file__).parent / "blur_schedulers_expected.safetensors"

# name -> (process, settings): every option of either process appears in at least one case.
CASES = {
    "cold_default": ("cold", {"num_train_timesteps": 10}),
    "cold_naive_circular_geometric": (
        "cold",
        {
            "num_train_timesteps": 12,
            "blur_schedule": "geometric",
            "sigma_min": 0.5,
            "sigma_max": 6.0,
            "boundary": "circular",
            "sampler": "naive",
            "noise_std": 0.05,
            "initial_noise_std": 0.01,
            "clip_sample": False,
        },
    ),
    "blurring_default": ("blurring_diffusion", {"num_train_timesteps": 10}),
    "blurring_circular_geometric": (
        "blurring_diffusion",
        {
            "num_train_timesteps": 12,
            "blur_schedule": "geometric",
            "sigma_min": 0.5,
            "sigma_max": 5.0,
            "boundary": "circular",
            "clip_sample": False,
        },
    ),
}


def _images(shape, seed, dtype=torch.float32):
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1).to(dtype)


def _model(sample: torch.Tensor, t) -> torch.Tensor:
    """A fixed stand-in for a trained model: smooth, bounded and dependent on t."""
    return torch.tanh(0.7 * sample + 0.01 * torch.as_tensor(t, dtype=sample.dtype).reshape(-1, 1, 1, 1))


def outputs(make, name: str) -> dict:
    """Everything the scheduler `make(process, settings)` of case `name` computes, by key."""
    process, settings = CASES[name]
    scheduler = make(process, settings)
    total = settings["num_train_timesteps"]
    x = _images((4, 3, 8, 6), seed=1)  # not square: height and width must not be swapped
    noise = _images((4, 3, 8, 6), seed=2)
    t = torch.tensor([0, 3, total // 2, total - 1])
    out = {
        "sigmas": scheduler.sigmas,
        "blur": scheduler.blur(x, torch.tensor([-1, 2, 5, total - 1])),
        "blur_float64": scheduler.blur(x.double(), 4),
        "add_noise": scheduler.add_noise(x, noise, t),
    }
    if process == "cold":
        means = torch.cat([torch.full((20,), -0.5), torch.full((20,), 0.4)])
        scheduler.fit_initial_distribution(means[:, None, None, None] + 0.1 * _images((40, 3, 8, 6), seed=3), 3)
        for key in ("gmm_weights", "gmm_means", "gmm_stds"):
            out[key] = torch.tensor(scheduler.config[key], dtype=torch.float64)
    else:
        out["alphas"], out["noise_sigmas"] = scheduler.alphas, scheduler.noise_sigmas
    out["initial_sample"] = scheduler.initial_sample((4, 3, 8, 6), generator=torch.manual_seed(4))
    # One step per sample at mixed timesteps of the full chain (the last one ends the chain).
    step = scheduler.step(_model(x, t), t, noise, generator=torch.manual_seed(5))
    out["step_prev_sample"], out["step_pred_original_sample"] = step.prev_sample, step.pred_original_sample
    # A whole sampling chain of 4 steps from the scheduler's own start.
    scheduler.set_timesteps(4)
    sample = scheduler.initial_sample((2, 3, 8, 6), generator=torch.manual_seed(6))
    generator = torch.manual_seed(7)
    for timestep in scheduler.timesteps:
        sample = scheduler.step(_model(sample, timestep), timestep, sample, generator=generator).prev_sample
    out["chain"] = sample
    out["chain_timesteps"] = scheduler.timesteps
    return {key: value.contiguous() for key, value in out.items()}


def _old_class():
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:{OLD_PATH}"], check=True, capture_output=True, text=True
    ).stdout
    name = "ddpm_kiit.schedulers._scheduling_gaussian_blur_before_the_split"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "ddpm_kiit.schedulers"  # for its relative import of timestep_checks
    sys.modules[name] = module
    exec(compile(source, OLD_PATH, "exec"), module.__dict__)
    return module.GaussianBlurScheduler


def main():
    from safetensors.torch import save_file

    old = _old_class()
    recorded = {}
    for name, (process, _) in CASES.items():
        for key, value in outputs(lambda process, settings: old(process=process, **settings), name).items():
            recorded[f"{name}/{key}"] = value
        if process == "blurring_diffusion":
            # What training's min-SNR weighting read: the SNR from the `alphas_cumprod` the old class set for it.
            scheduler = old(process=process, **CASES[name][1])
            alphas_cumprod = scheduler.alphas_cumprod
            recorded[f"{name}/snr"] = alphas_cumprod / (1 - alphas_cumprod).clamp(min=1e-8)
    save_file(recorded, str(EXPECTED), metadata={"old_class": f"{OLD_PATH} at {OLD_COMMIT}"})
    print(f"wrote {len(recorded)} tensors to {EXPECTED}")


if __name__ == "__main__":
    main()
