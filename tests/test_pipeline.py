import numpy as np
import pytest
import torch
from conftest import SMALL
from diffusers import DiffusionPipeline

from ddpm_kiit import DenoisingRecorder, KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.cli import main
from ddpm_kiit.sampling import SCHEDULERS, swap_scheduler


def _images(pipe, steps=10, seed=0, batch_size=2):
    return pipe(
        batch_size=batch_size, num_inference_steps=steps, generator=torch.manual_seed(seed), output_type="np"
    ).images


@pytest.mark.parametrize("channels", [1, 3])
def test_pipeline_generates_deterministic_images(channels):
    unet = SimpleUNet2DModel(sample_size=16, in_channels=channels, out_channels=channels, **SMALL).eval()
    pipe = KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    first, second = _images(pipe), _images(pipe)
    assert first.shape == (2, 16, 16, channels)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, _images(pipe, seed=1))


def test_default_steps_are_every_training_timestep(small_pipe):
    seen = []
    small_pipe(callback_on_step_end=lambda p, i, t, kw: seen.append(int(t)) or {}, output_type="np")
    assert seen == list(range(299, -1, -1))


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_stock_schedulers_drop_in(small_pipe, name):
    swap_scheduler(small_pipe, name)
    assert small_pipe.scheduler.config.num_train_timesteps == 300
    first, second = _images(small_pipe, steps=8), _images(small_pipe, steps=8)
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("option", ["use_karras_sigmas", "use_exponential_sigmas"])
def test_sigma_spacings_that_repeat_timesteps_are_refused_before_sampling(small_pipe, option):
    # On a zero-terminal-SNR schedule (largest sigma 4096) these spacings repeat the first timesteps; Diffusers'
    # index lookup then steps past the last sigma and fails with an IndexError at the end of the run.
    from diffusers import DPMSolverMultistepScheduler

    config = {**small_pipe.scheduler.config, "rescale_betas_zero_snr": True}
    small_pipe.scheduler = DPMSolverMultistepScheduler.from_config(config, **{option: True})
    calls = []
    small_pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(
        ValueError, match=rf"DPMSolverMultistepScheduler repeats \d+ of its 20 timesteps .*`{option}`"
    ) as error:
        _images(small_pipe, steps=20)
    assert not calls, "refused before the first U-Net call"
    assert f"from_config(pipe.scheduler.config, {option}=False)" in str(error.value)
    # the suggested fix works
    small_pipe.scheduler = DPMSolverMultistepScheduler.from_config(small_pipe.scheduler.config, **{option: False})
    assert np.isfinite(_images(small_pipe, steps=20)).all()


def test_ddim_eta_adds_seeded_noise_and_other_schedulers_refuse_it(small_pipe):
    swap_scheduler(small_pipe, "ddim")

    def run(eta, seed=0):
        return small_pipe(num_inference_steps=8, eta=eta, generator=torch.manual_seed(seed), output_type="np").images

    deterministic, stochastic = run(0.0), run(1.0)
    assert not np.array_equal(deterministic, stochastic)
    np.testing.assert_array_equal(stochastic, run(1.0))  # the generator drives the fresh noise
    assert not np.array_equal(stochastic, run(1.0, seed=1))
    with pytest.raises(ValueError, match=r"`eta` must be a number in \[0, 1\].*got 1.5"):
        run(1.5)
    swap_scheduler(small_pipe, "kiit")
    with pytest.raises(ValueError, match="KiitDDPMScheduler does not. Swap in DDIMScheduler"):
        run(0.5)


def test_schedulers_whose_step_takes_no_generator_drop_in(small_pipe):
    # UniPC's `step` takes neither `generator` nor `eta`: the pipeline passes only what a scheduler's step accepts.
    swap_scheduler(small_pipe, "unipc")
    assert small_pipe.prepare_extra_step_kwargs(torch.manual_seed(0), 0.0) == {}
    assert np.isfinite(_images(small_pipe, steps=8)).all()


@pytest.mark.parametrize("loader", ["ours", "diffusion_pipeline"])
def test_saved_pipeline_reloads_and_gives_identical_images(tmp_path, small_pipe, loader):
    small_pipe.save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    if loader == "ours":
        loaded = KiitDDPMPipeline.from_pretrained(tmp_path)
    else:
        loaded = DiffusionPipeline.from_pretrained(tmp_path)  # works once `ddpm_kiit` is imported
    assert isinstance(loaded, KiitDDPMPipeline) and isinstance(loaded.unet, SimpleUNet2DModel)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(_images(small_pipe), _images(loaded))


def test_denoising_recorder_keeps_chosen_steps_and_renders_a_strip(small_pipe):
    recorder = DenoisingRecorder.evenly(20, count=5)
    small_pipe(
        num_inference_steps=20,
        generator=torch.manual_seed(0),
        callback_on_step_end=recorder,
        callback_on_step_end_tensor_inputs=recorder.tensor_inputs,
    )
    assert recorder.steps == [0, 5, 10, 14, 19]
    assert len(recorder.latents) == 5 and recorder.timesteps[-1] == 0
    strip = recorder.strip()
    assert strip.size == (5 * 16, 2 * 16)


def test_callback_can_replace_latents(small_pipe):
    def zero(pipe, i, t, kwargs):
        return {"latents": torch.zeros_like(kwargs["latents"])}

    images = small_pipe(num_inference_steps=3, callback_on_step_end=zero, output_type="np").images
    np.testing.assert_array_equal(images, np.full_like(images, 0.5))


@pytest.mark.parametrize("name, steps, start", [("ddim", 50, 137), ("kiit", 300, 40), ("euler", 20, 200)])
def test_an_image_degraded_to_start_timestep_is_denoised_from_there(small_pipe, name, steps, start):
    # SDEdit: the chain of `steps` is cut to its timesteps not above `start`; x at its first one is
    # scheduler.add_noise(image, noise, t) with the generator's first draw, then the ordinary reverse steps follow.
    swap_scheduler(small_pipe, name)
    image = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    seen = []
    result = small_pipe(
        num_inference_steps=steps,
        image=image,
        start_timestep=start,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        callback_on_step_end=lambda p, i, t, kw: seen.append(int(t)) or {},
    ).images

    scheduler = type(small_pipe.scheduler).from_config(small_pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    chain = [int(t) for t in scheduler.timesteps if t <= start]
    assert seen == chain and 0 < len(chain) < steps
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(steps - len(chain))
    generator = torch.Generator().manual_seed(0)
    sample = scheduler.add_noise(image, torch.randn(image.shape, generator=generator), torch.tensor([chain[0]]))
    step_kwargs = small_pipe.prepare_extra_step_kwargs(generator, 0.0)
    with torch.no_grad():
        for t in scheduler.timesteps[steps - len(chain) :]:
            output = small_pipe.unet(scheduler.scale_model_input(sample, t), t).sample
            sample = scheduler.step(output, t, sample, **step_kwargs).prev_sample
    torch.testing.assert_close(result, (sample / 2 + 0.5).clamp(0, 1), rtol=0, atol=1e-6)


def test_an_image_start_needs_an_image_of_the_model_shape(small_pipe):
    with pytest.raises(ValueError, match="pass an `image` with it"):
        small_pipe(start_timestep=10)
    with pytest.raises(ValueError, match=r"shaped \(batch_size or 1, 1, 16, 16\).*got \(1, 3, 16, 16\)"):
        small_pipe(image=torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="finite values in \\[-1, 1\\]"):
        small_pipe(image=torch.full((1, 1, 16, 16), 2.0))
    with pytest.raises(ValueError, match="holds 2 images; pass 1 or `batch_size`=3"):
        small_pipe(image=torch.zeros(2, 1, 16, 16), batch_size=3)
    with pytest.raises(ValueError, match=r"`start_timestep` must be an integer in \[0, 299\], got 300"):
        small_pipe(image=torch.zeros(1, 1, 16, 16), start_timestep=300)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": -1}, "`batch_size` must be a positive integer, got -1"),
        ({"batch_size": 0}, "`batch_size` must be a positive integer, got 0"),
        ({"num_inference_steps": 0}, "between 1 and the scheduler's `num_train_timesteps`=300"),
        ({"num_inference_steps": 301}, "between 1 and the scheduler's `num_train_timesteps`=300"),
        ({"output_type": "jpeg"}, "`output_type` must be one of"),
        ({"callback_on_step_end_tensor_inputs": ["noise"]}, "may only name"),
        ({"timesteps": [299, 150], "num_inference_steps": 2}, "Pass `num_inference_steps` or `timesteps`, not both"),
        ({"timesteps": [150, 299]}, "integers in \\[0, 299\\] in decreasing order"),
        ({"timesteps": [300, 150]}, "integers in \\[0, 299\\] in decreasing order"),
        ({"timesteps": []}, "must be a non-empty list"),
        ({"timesteps": [299.0, 150.0]}, "must be a non-empty list of integers"),
    ],
)
def test_bad_pipeline_calls(small_pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_pipe(**kwargs)


def test_unet_with_mismatched_channels_is_reported(small_pipe):
    with pytest.raises(ValueError, match="has 3 channels but this model has `in_channels`=1"):
        small_pipe.unet(torch.zeros(1, 3, 16, 16), 0)


def test_cli_generate_writes_grid_and_strip_and_refuses_to_overwrite(tmp_path, small_pipe, capsys):
    small_pipe.save_pretrained(tmp_path / "pipe")
    grid, strip = tmp_path / "grid.png", tmp_path / "strip.png"
    args = ["generate", str(tmp_path / "pipe"), "--num-images", "4", "--scheduler", "ddim", "--steps", "5"]
    assert main(args + ["--out", str(grid), "--strip", str(strip)]) == 0
    from PIL import Image

    assert Image.open(grid).size == (32, 32)
    assert Image.open(strip).size == (5 * 16, 2 * 16)
    before = grid.read_bytes()
    assert main(args + ["--out", str(grid)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert grid.read_bytes() == before


def test_cli_generate_fast_inference_samples_under_bf16_autocast(tmp_path, small_pipe, monkeypatch):
    from ddpm_kiit.pipelines import pipeline_kiit_ddpm

    small_pipe.save_pretrained(tmp_path / "pipe")
    monkeypatch.setattr(pipeline_kiit_ddpm, "native_bf16", lambda device_type: True)  # as on an AMX or recent GPU
    seen = []
    real_forward = SimpleUNet2DModel.forward
    monkeypatch.setattr(
        SimpleUNet2DModel,
        "forward",
        lambda self, *args, **kwargs: (
            seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            or real_forward(self, *args, **kwargs)
        ),
    )
    args = ["generate", str(tmp_path / "pipe"), "--num-images", "2", "--steps", "3"]
    assert main(args + ["--out", str(tmp_path / "plain.png")]) == 0
    assert set(seen) == {None}
    seen.clear()
    assert main(args + ["--out", str(tmp_path / "fast.png"), "--fast-inference"]) == 0
    assert set(seen) == {torch.bfloat16}
    assert (tmp_path / "fast.png").is_file()


def test_cli_compare_schedulers(tmp_path, small_pipe, capsys):
    small_pipe.save_pretrained(tmp_path / "pipe")
    out = tmp_path / "compare.png"
    code = main(
        [
            "compare-schedulers",
            str(tmp_path / "pipe"),
            "--schedulers",
            "kiit,ddim",
            "--steps",
            "3,5",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "ddim@5" in capsys.readouterr().out
    from PIL import Image

    from ddpm_kiit.sampling import label_width

    assert Image.open(out).size[1] == 4 * (16 + 14)
    # four 16-pixel images make a 64-pixel row; the canvas widens so that no label is cut off
    assert Image.open(out).size[0] >= label_width("ddim, 5 steps, 0.0s") > 4 * 16


def test_cli_rejects_a_folder_that_is_not_a_pipeline(tmp_path, capsys):
    assert main(["generate", str(tmp_path), "--out", str(tmp_path / "g.png")]) == 2
    assert "no model_index.json" in capsys.readouterr().err


def test_saved_folder_names_the_modules_it_carries(tmp_path, small_pipe):
    import json

    small_pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    # Diffusers' remote-code form (issue 23; tests/test_remote_code.py): the files sit beside the weights.
    assert index["_class_name"] == ["pipeline_kiit_ddpm", "KiitDDPMPipeline"]
    assert index["unet"] == ["unet_kiit_simple", "SimpleUNet2DModel"]
    assert index["scheduler"] == ["scheduling_kiit_ddpm", "KiitDDPMScheduler"]


def test_non_finite_samples_are_reported_with_step_and_timestep(small_pipe):
    real_forward, calls = small_pipe.unet.forward, {"n": 0}

    def overflowing(sample, timestep, *args, **kwargs):
        calls["n"] += 1
        output = real_forward(sample, timestep, *args, **kwargs)
        if calls["n"] == 3:
            output.sample[0, 0, 0, 0] = float("nan")  # (inf would be clipped away with x0)
        return output

    small_pipe.unet.forward = overflowing
    small_pipe.scheduler.set_timesteps(10)
    third = int(small_pipe.scheduler.timesteps[2])
    with pytest.raises(FloatingPointError, match=rf"non-finite values at step 2 \(timestep {third}\)"):
        small_pipe(num_inference_steps=10, generator=torch.manual_seed(0))


def test_swap_scheduler_options_reach_the_schedulers_that_take_them(small_pipe):
    options = {"thresholding": True, "sample_max_value": 1.5, "variance_type": "fixed_large"}
    original = small_pipe.scheduler
    swapped = {}
    for name in ("kiit", "ddim", "euler"):
        small_pipe.scheduler = original
        swapped[name] = swap_scheduler(small_pipe, name, **options).scheduler.config
    assert swapped["kiit"].thresholding and swapped["kiit"].sample_max_value == 1.5
    assert swapped["kiit"].variance_type == "fixed_large"
    assert swapped["ddim"].thresholding and swapped["ddim"].sample_max_value == 1.5
    assert swapped["ddim"].get("variance_type") == "fixed_small"  # carried over unused: DDIM has no variance type
    assert not swapped["euler"].get("thresholding")  # Euler has none: the key is carried over unused, off
    small_pipe.scheduler = original
    with pytest.raises(ValueError, match="needs a model that predicts its variance too"):
        swap_scheduler(small_pipe, "kiit", variance_type="learned_range")


def test_cli_compare_schedulers_with_thresholding_and_a_variance_type(tmp_path, small_pipe, capsys):
    from ddpm_kiit.sampling import compare_schedulers

    options = {"thresholding": True, "sample_max_value": 1.5, "variance_type": "fixed_large"}
    result = compare_schedulers(small_pipe, ["kiit", "ddim", "euler"], [2], num_images=1, options=options)
    labels = [label.rsplit(",", 1)[0] for label in result["labels"]]
    assert labels == [
        "kiit (fixed_large, thresholded at 1.5), 2 steps",
        "ddim (thresholded at 1.5), 2 steps",
        "euler, 2 steps",
    ]
    assert type(small_pipe.scheduler) is KiitDDPMScheduler and not small_pipe.scheduler.config.thresholding
    small_pipe.save_pretrained(tmp_path / "pipe")
    args = ["compare-schedulers", str(tmp_path / "pipe"), "--schedulers", "kiit,ddpm", "--steps", "2"]
    extra = ["--thresholding", "--sample-max-value", "1.5", "--variance-type", "fixed_small_log"]
    assert main(args + extra + ["--out", str(tmp_path / "c.png")]) == 0
    assert main(args + ["--variance-type", "learned_range", "--out", str(tmp_path / "d.png")]) == 2
    assert "needs a model that predicts its variance too" in capsys.readouterr().err
    assert not (tmp_path / "d.png").exists()


def test_a_variance_predicting_model_samples_with_learned_variance_only(tmp_path):
    torch.manual_seed(0)
    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=2, **SMALL).eval()
    pipe = KiitDDPMPipeline(
        unet=unet, scheduler=KiitDDPMScheduler(num_train_timesteps=20, variance_type="learned_range")
    )
    pipe.set_progress_bar_config(disable=True)
    assert _images(pipe, steps=5).shape == (2, 16, 16, 1)
    assert _images(swap_scheduler(pipe, "ddpm"), steps=5).shape == (2, 16, 16, 1)
    with pytest.raises(ValueError, match="only kiit and ddpm with variance type 'learned_range' or 'learned'"):
        swap_scheduler(pipe, "ddim")


def _step_calls(pipe, **kwargs):
    calls = []
    pipe(output_type="np", callback_on_step_end=lambda p, i, t, kw: calls.append(int(t)) or {}, **kwargs)
    return calls


def test_custom_timesteps_run_on_schedulers_that_take_them_and_are_refused_by_the_others(small_pipe):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    assert _step_calls(small_pipe, timesteps=[299, 200, 50]) == [299, 200, 50]
    small_pipe.scheduler = DPMSolverMultistepScheduler.from_config(small_pipe.scheduler.config, solver_order=1)
    assert _step_calls(small_pipe, timesteps=torch.tensor([299, 224])) == [299, 224]
    small_pipe.scheduler = DDIMScheduler.from_config(small_pipe.scheduler.config)
    with pytest.raises(ValueError, match="DDIMScheduler.set_timesteps takes no custom `timesteps`") as error:
        small_pipe(timesteps=[299, 224])
    assert "DPMSolverMultistepScheduler.from_config(" in str(error.value)


def test_default_timesteps_survive_a_round_trip_and_only_schedulers_that_take_them_follow_them(
    tmp_path, small_pipe, caplog
):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
    from diffusers.utils import logging as diffusers_logging

    config = small_pipe.scheduler.config
    scheduler = DPMSolverMultistepScheduler.from_config(config, solver_order=1, timestep_spacing="trailing")
    pipe = KiitDDPMPipeline(unet=small_pipe.unet, scheduler=scheduler, default_timesteps=[299, 224])
    assert pipe.config.default_num_inference_steps == 2
    pipe.save_pretrained(tmp_path / "pipe")
    pipe = KiitDDPMPipeline.from_pretrained(tmp_path / "pipe")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.default_timesteps == [299, 224]
    assert _step_calls(pipe) == [299, 224] and _step_calls(pipe, num_inference_steps=2) == [299, 224]
    assert _step_calls(pipe, num_inference_steps=3) == [299, 199, 99]
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            assert _step_calls(pipe) == [299, 149]  # its own 2-step grid, said aloud
    finally:
        diffusers_logging.disable_propagation()
    assert any("distilled for the grid [299, 224], which DDIMScheduler cannot follow" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    with pytest.raises(ValueError, match="`default_num_inference_steps`=3 disagrees with the 2 `default_timesteps`"):
        KiitDDPMPipeline(unet=pipe.unet, scheduler=scheduler, default_num_inference_steps=3, default_timesteps=[9, 5])
    with pytest.raises(ValueError, match="`default_timesteps` must be a non-empty list"):
        KiitDDPMPipeline(unet=pipe.unet, scheduler=scheduler, default_timesteps=[5, 9])
