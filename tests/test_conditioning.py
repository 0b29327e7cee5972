"""Class and text conditioning: the unet's embeddings and cross-attention, classifier-free guidance in the pipelines,
and round trips of conditional pipelines through disk."""

import numpy as np
import pytest
import torch
from conftest import SMALL

from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.pipelines.pipeline_kiit_text2img import KiitTextToImagePipeline
from ddpm_kiit.text import new_text_encoder, train_caption_tokenizer

CAPTIONS = ["red apple", "green apple", "woman: medium skin tone", "flag: India", "grinning face"]
TINY = {"block_out_channels": (8, 16, 16), "time_embedding_dim": 8, "norm_type": "group", "norm_num_groups": 4}


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    # Zero-initialised output layers make a fresh conditional model ignore its condition; random weights show the
    # wiring.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return module


@pytest.fixture
def class_pipe():
    unet = _randomise(SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, num_class_embeds=10, **SMALL))
    pipe = KiitDDPMPipeline(unet=unet.eval(), scheduler=KiitDDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def text_pipe():
    tokenizer = train_caption_tokenizer(CAPTIONS, max_length=8)
    torch.manual_seed(0)
    encoder = new_text_encoder(tokenizer, hidden_size=32, num_layers=1, num_heads=2).eval()
    unet = SimpleUNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, cross_attention_dim=32, cross_attention_resolutions=(8,), **TINY
    )
    pipe = KiitTextToImagePipeline(_randomise(unet).eval(), KiitDDPMScheduler(), encoder, tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(pipe, seed=0, steps=4, **kwargs):
    return pipe(num_inference_steps=steps, generator=torch.manual_seed(seed), output_type="np", **kwargs).images


def test_unconditional_configs_build_no_conditioning_layers():
    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, **SMALL)
    assert not any("class_embedding" in name or "cross_attention" in name for name, _ in unet.named_parameters())


def test_class_labels_change_the_prediction_and_none_is_the_null_label(class_pipe):
    unet, sample = class_pipe.unet, torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        three, seven = (unet(sample, 10, class_labels=torch.tensor([c, c])).sample for c in (3, 7))
        null, none = unet(sample, 10, class_labels=torch.tensor([10, 10])).sample, unet(sample, 10).sample
    assert (three - seven).abs().max() > 1e-3
    torch.testing.assert_close(null, none, rtol=0, atol=0)


def test_guidance_scale_one_is_the_conditional_model_alone(class_pipe):
    calls = []
    class_pipe.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    guided = _sample(class_pipe, class_labels=7, guidance_scale=1.0, batch_size=2)
    assert calls == [2] * 4, "scale 1 runs only the conditional half"

    unguided = _sample(class_pipe, class_labels=[7, 7], guidance_scale=1.0, batch_size=2)
    np.testing.assert_array_equal(guided, unguided)


def test_guidance_combines_both_halves_as_in_the_formula(class_pipe):
    # uncond + w (cond - uncond), from one batched call per step.
    unet, scheduler = class_pipe.unet, class_pipe.scheduler
    calls = []
    unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    result = class_pipe(
        batch_size=2,
        class_labels=3,
        guidance_scale=2.5,
        num_inference_steps=3,
        generator=torch.manual_seed(0),
        output_type="pt",
    ).images
    assert calls == [4] * 3

    scheduler = KiitDDPMScheduler.from_config(scheduler.config)
    scheduler.set_timesteps(3)
    generator = torch.manual_seed(0)
    sample = torch.randn((2, 1, 16, 16), generator=generator)
    with torch.no_grad():
        for t in scheduler.timesteps:
            cond = unet(sample, t, class_labels=torch.tensor([3, 3])).sample
            uncond = unet(sample, t, class_labels=torch.tensor([10, 10])).sample
            sample = scheduler.step(uncond + 2.5 * (cond - uncond), t, sample, generator=generator).prev_sample
    # One batch of four against two batches of two: the convolutions' float sums split differently (up to 1e-4 on
    # an AVX2 CPU); a wrong formula is off by more than 1e-2.
    torch.testing.assert_close(result, (sample / 2 + 0.5).clamp(0, 1), rtol=0, atol=5e-4)


def test_class_pipeline_round_trips_through_disk(tmp_path, class_pipe):
    from diffusers import DiffusionPipeline

    class_pipe.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.unet.config.num_class_embeds == 10
    np.testing.assert_array_equal(_sample(loaded, class_labels=4), _sample(class_pipe, class_labels=4))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"class_labels": 10}, r"must lie in 0..9 \(this unet's 10 classes\), got \[10\]"),
        ({"class_labels": -1}, r"must lie in 0..9"),
        ({"class_labels": [1, 2, 3], "batch_size": 2}, "one integer or one per image"),
        ({"class_labels": 2.5}, "one integer or one per image"),
        ({"class_labels": 1, "guidance_scale": -1.0}, "`guidance_scale` must be a finite number >= 0"),
        ({"class_labels": 1, "guidance_scale": float("nan")}, "`guidance_scale` must be a finite number >= 0"),
    ],
)
def test_bad_class_requests_are_refused(class_pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        class_pipe(num_inference_steps=2, **kwargs)


def test_class_labels_on_an_unconditional_pipeline_are_refused(small_pipe):
    with pytest.raises(ValueError, match="this pipeline's unet is unconditional"):
        small_pipe(class_labels=3, num_inference_steps=2)
    with pytest.raises(ValueError, match="this model is unconditional"):
        small_pipe.unet(torch.zeros(1, 1, 16, 16), 0, class_labels=torch.tensor([3]))


def test_prompts_steer_the_text_pipeline_and_scale_one_skips_the_negative_half(text_pipe):
    apple, flag = _sample(text_pipe, prompt="red apple"), _sample(text_pipe, prompt="flag: India")
    assert np.abs(apple - flag).max() > 1e-3
    again = _sample(text_pipe, prompt="red apple")
    np.testing.assert_array_equal(apple, again)
    embeds = text_pipe.encode_prompt(["red apple"], "cpu")
    np.testing.assert_array_equal(_sample(text_pipe, prompt_embeds=embeds), apple)
    calls = []
    text_pipe.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    _sample(text_pipe, prompt=["red apple", "grinning face"], num_images_per_prompt=3, guidance_scale=1.0)
    assert calls == [6] * 4


def test_only_prompts_longer_than_the_tokenizer_are_reported_cut(text_pipe, caplog):
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            text_pipe.encode_prompt(["red apple", "red apple grinning face red apple grinning face red"], "cpu")
    finally:
        diffusers_logging.disable_propagation()
    cut = [record.getMessage() for record in caplog.records if "longer than the tokenizer" in record.getMessage()]
    assert len(cut) == 1 and "red apple grinning face red apple" in cut[0], cut


def test_text_pipeline_round_trips_and_its_parts_load_in_transformers_alone(tmp_path, text_pipe):
    from diffusers import DiffusionPipeline
    from transformers import AutoTokenizer, CLIPTextModel

    text_pipe.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded).__name__ == "KiitTextToImagePipeline"
    np.testing.assert_array_equal(_sample(loaded, prompt="green apple"), _sample(text_pipe, prompt="green apple"))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(tmp_path / "text_encoder")
    ids = torch.tensor(tokenizer(["green apple"], padding="max_length", max_length=8).input_ids)
    torch.testing.assert_close(encoder(ids).last_hidden_state, text_pipe.encode_prompt(["green apple"], "cpu"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "Pass exactly one of `prompt` and `prompt_embeds`"),
        ({"prompt": 3}, "`prompt` must be a string or a non-empty list of strings"),
        ({"prompt": []}, "`prompt` must be a string or a non-empty list of strings"),
        ({"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"]}, "holds 3 prompts for 2 prompts"),
        ({"prompt": "red apple", "guidance_scale": -2}, "`guidance_scale` must be a finite number >= 0"),
        ({"prompt": "red apple", "num_images_per_prompt": 0}, "`num_images_per_prompt` must be a positive integer"),
    ],
)
def test_bad_prompts_are_refused(text_pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        text_pipe(num_inference_steps=2, **kwargs)


def test_a_prompt_embedding_of_the_wrong_width_names_the_text_encoder(text_pipe):
    with pytest.raises(ValueError, match="`cross_attention_dim` is 32: use the text encoder it was trained with"):
        text_pipe(prompt_embeds=torch.zeros(1, 8, 16), num_inference_steps=2)


def test_a_text_model_without_encoder_hidden_states_says_what_it_needs(text_pipe):
    with pytest.raises(ValueError, match="This model is text-conditional: pass `encoder_hidden_states`"):
        text_pipe.unet(torch.zeros(1, 3, 16, 16), 0)


def test_text_and_class_pipelines_load_without_the_package_through_remote_code(tmp_path, text_pipe, class_pipe):
    from no_package import check, run_without_package

    text_pipe.save_pretrained(tmp_path / "text")
    class_pipe.save_pretrained(tmp_path / "class")
    check(
        run_without_package(
            f"""
            from diffusers import DiffusionPipeline

            text = DiffusionPipeline.from_pretrained({str(tmp_path / "text")!r}, trust_remote_code=True)
            assert type(text).__name__ == "KiitTextToImagePipeline"
            text.set_progress_bar_config(disable=True)
            images = text("red apple", num_inference_steps=4, generator=torch.manual_seed(0), output_type="np")
            np.save("text.npy", images.images)
            labelled = DiffusionPipeline.from_pretrained({str(tmp_path / "class")!r}, trust_remote_code=True)
            labelled.set_progress_bar_config(disable=True)
            images = labelled(class_labels=4, num_inference_steps=4, generator=torch.manual_seed(0), output_type="np")
            np.save("class.npy", images.images)
            """,
            tmp_path,
        )
    )
    np.testing.assert_array_equal(np.load(tmp_path / "text.npy"), _sample(text_pipe, prompt="red apple"))
    np.testing.assert_array_equal(np.load(tmp_path / "class.npy"), _sample(class_pipe, class_labels=4))


def test_cli_generates_a_class_and_a_prompt_and_refuses_the_wrong_one(tmp_path, text_pipe, class_pipe, capsys):
    from PIL import Image

    from ddpm_kiit.cli import main

    text_pipe.save_pretrained(tmp_path / "text")
    class_pipe.save_pretrained(tmp_path / "class")
    common = ["--num-images", "2", "--steps", "3", "--scheduler", "ddim"]
    digits, apples = tmp_path / "sevens.png", tmp_path / "apples.png"
    assert main(["generate", str(tmp_path / "class"), "--class", "7", *common, "--out", str(digits)]) == 0
    assert main(["generate", str(tmp_path / "text"), "--prompt", "red apple", *common, "--out", str(apples)]) == 0
    assert Image.open(digits).size == Image.open(apples).size == (32, 16)
    refused = {
        "class": ["--prompt", "red apple"],
        "text": ["--class", "3"],
    }
    for folder, flags in refused.items():
        out = tmp_path / f"{folder}-refused.png"
        assert main(["generate", str(tmp_path / folder), *flags, *common, "--out", str(out)]) == 2
        assert not out.exists()
    errors = capsys.readouterr().err
    assert "takes no prompt" in errors and "say what to draw with a prompt" in errors
    assert main(["generate", str(tmp_path / "class"), "--class", "10", *common, "--out", str(digits), "--overwrite"])
    assert "must lie in 0..9" in capsys.readouterr().err


def test_cards_of_conditional_pipelines_show_how_to_ask(tmp_path, text_pipe, class_pipe):
    class_pipe.save_pretrained(tmp_path / "class")
    text_pipe.save_pretrained(tmp_path / "text")
    class_card = (tmp_path / "class" / "README.md").read_text()
    text_card = (tmp_path / "text" / "README.md").read_text()
    assert "pipe(class_labels=[7] * 4, batch_size=4" in class_card
    assert "It draws one of 10 classes" in class_card and "Unconditional: there is no way" not in class_card
    assert 'pipe("red apple", num_images_per_prompt=4' in text_card
    assert "pipeline_tag: text-to-image" in text_card


def test_half_precision_variant_folders_load_in_float32_without_naming_the_variant(tmp_path, class_pipe):
    from diffusers import DiffusionPipeline

    class_pipe.unet.half()
    class_pipe.save_pretrained(tmp_path, variant="fp16")
    assert [p.name for p in (tmp_path / "unet").glob("*.safetensors")] == ["diffusion_pytorch_model.fp16.safetensors"]
    assert 'from_pretrained("path/to/this/folder", variant="fp16")' in (tmp_path / "README.md").read_text()
    loaded = KiitDDPMPipeline.from_pretrained(tmp_path)
    assert loaded.unet.dtype == torch.float32
    stock = DiffusionPipeline.from_pretrained(tmp_path, variant="fp16")
    for ours, theirs in zip(loaded.unet.parameters(), stock.unet.parameters()):
        assert torch.equal(ours, theirs)
    class_pipe.unet.float()
    for ours, original in zip(loaded.unet.parameters(), class_pipe.unet.parameters()):
        torch.testing.assert_close(ours, original.half().float(), rtol=0, atol=0)


def test_evaluation_samples_a_text_pipeline_from_the_empty_prompt(text_pipe):
    from ddpm_kiit.evaluation.evaluate import generate_samples

    samples = generate_samples(text_pipe, 3, batch_size=2, seed=1, num_inference_steps=2)
    assert samples.shape == (3, 3, 16, 16) and samples.min() >= -1 and samples.max() <= 1
    expected = [
        text_pipe(
            prompt=[""] * count, guidance_scale=1.0, num_inference_steps=2, output_type="pt",
            generator=torch.Generator().manual_seed(100_003 + index),
        ).images * 2 - 1
        for index, count in enumerate((2, 1))
    ]  # fmt: skip
    torch.testing.assert_close(samples, torch.cat(expected), rtol=0, atol=0)
