"""Conditional training: class labels and captions reach the unet, conditioning dropout, exact resume, and the
saved pipelines (class: KiitDDPMPipeline with class_labels; text: KiitTextToImagePipeline with its encoder)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_training import TINY_MODEL, _unet_state, tiny_args

from ddpm_kiit.text import new_text_encoder, train_caption_tokenizer
from ddpm_kiit.training import parse_args, train

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


def _captioned_folder(folder):
    """16 small pictures of four colours, with their captions in `metadata.jsonl` (column `text`)."""
    folder.mkdir(parents=True)
    rows = []
    for index in range(16):
        name = list(COLOURS)[index % 4]
        Image.new("RGB", (16, 16), COLOURS[name]).save(folder / f"{index}.png")
        rows.append(json.dumps({"file_name": f"{index}.png", "text": f"a {name} square"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def _text_encoder_folder(folder):
    tokenizer = train_caption_tokenizer([f"a {name} square" for name in COLOURS], max_length=6)
    torch.manual_seed(0)
    encoder = new_text_encoder(tokenizer, hidden_size=16, num_layers=1, num_heads=2)
    encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    return folder


def test_a_class_conditional_run_saves_a_pipeline_that_takes_class_labels(tmp_path):
    from diffusers import DiffusionPipeline

    out = train(parse_args(tiny_args(tmp_path, "--conditioning", "class", "--max_train_steps", "2")))
    pipe = DiffusionPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.num_class_embeds == 10
    images = pipe(class_labels=[3, 7], batch_size=2, num_inference_steps=3, output_type="np").images
    assert images.shape == (2, 16, 16, 1) and np.isfinite(images).all()
    card = (out / "README.md").read_text()
    assert "conditioning" in card and "class" in card


def test_conditioning_dropout_replaces_labels_by_the_null_label(tmp_path, monkeypatch):
    from ddpm_kiit.training import loop as training_loop

    seen = []
    real = training_loop.SimpleUNet2DModel.forward

    def spy(self, sample, timestep, return_dict=True, **kwargs):
        seen.append(kwargs["class_labels"].clone())
        return real(self, sample, timestep, return_dict, **kwargs)

    monkeypatch.setattr(training_loop.SimpleUNet2DModel, "forward", spy)
    common = ["--conditioning", "class", "--max_train_steps", "4", "--num_sample_images", "1"]
    train(parse_args(tiny_args(tmp_path / "all", *common, "--conditioning_dropout_prob", "0.99")))
    dropped = torch.cat(seen[:4])
    assert (dropped == 10).float().mean() > 0.9, "almost every label is the null label"
    seen.clear()
    train(parse_args(tiny_args(tmp_path / "none", *common, "--conditioning_dropout_prob", "0")))
    assert (torch.cat(seen[:4]) < 10).all(), "no label dropped"


def test_an_interrupted_class_run_resumes_to_the_same_weights(tmp_path):
    common = ["--conditioning", "class", "--checkpointing_steps", "2", "--lr_scheduler", "constant"]
    straight = train(parse_args(tiny_args(tmp_path / "a", "--max_train_steps", "4", *common)))
    train(parse_args(tiny_args(tmp_path / "b", "--max_train_steps", "2", *common)))
    resumed = train(
        parse_args(tiny_args(tmp_path / "b", "--max_train_steps", "4", "--resume_from_checkpoint", "latest", *common))
    )
    expected, actual = _unet_state(straight), _unet_state(resumed)
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_a_text_run_trains_on_captions_and_saves_a_text_to_image_pipeline(tmp_path):
    from diffusers import DiffusionPipeline

    data, encoder = _captioned_folder(tmp_path / "data"), _text_encoder_folder(tmp_path / "encoder")
    argv = [
        "--train_data_dir", str(data), "--caption_column", "text", "--conditioning", "text",
        "--text_encoder_name_or_path", str(encoder), "--resolution", "16", "--model_config", TINY_MODEL,
        "--train_batch_size", "8", "--ddpm_num_steps", "20", "--num_sample_images", "2", "--logger", "none",
        "--mixed_precision", "no", "--max_train_steps", "2", "--output_dir", str(tmp_path / "out"),
    ]  # fmt: skip
    out = train(parse_args(argv))
    assert (out / "text_encoder" / "config.json").is_file() and (out / "tokenizer").is_dir()
    pipe = DiffusionPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == "KiitTextToImagePipeline" and pipe.unet.config.cross_attention_dim == 16
    images = pipe("a red square", num_images_per_prompt=2, num_inference_steps=3, output_type="np").images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--conditioning_dropout_prob", "1.5"], "--conditioning_dropout_prob must be in \\[0, 1\\)"),
        (["--conditioning", "text", "--eval_steps", "5"], "a text model has none"),
        (["--conditioning", "text"], "caption"),
    ],
)
def test_bad_conditioning_flags_are_refused_before_training(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        train(parse_args(tiny_args(tmp_path, "--max_train_steps", "1", *extra)))
    assert not (tmp_path / "out").exists(), "nothing written"
