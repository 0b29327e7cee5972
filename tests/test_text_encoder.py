"""The text encoder trained from scratch: a small `CLIPModel` fitted contrastively to images and their captions,
whose text half and tokenizer are saved in `transformers`' own format and read back by `transformers` alone."""

import pytest
import torch
from transformers import AutoTokenizer, CLIPTextModel

from ddpm_kiit.text import caption_ranks, save_text_encoder, train_clip, train_clip_model

COLOURS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0), "yellow": (1.0, 1.0, -1.0)}
SHAPES = ("square", "circle", "cross", "triangle")
# Each of the 16 captions is shared by 4 images (the shape moved by a pixel), so batches meet repeated captions.
OFFSETS = ((0, 0), (1, -1), (-1, 1), (1, 1))
TINY = {
    "hidden_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "vision_hidden_size": 32,
    "vision_num_layers": 1,
    "projection_dim": 32,
    "learning_rate": 3e-3,
    "show_progress": False,
}


def _shape(shape: str, offset, size: int = 16, radius: int = 5) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    dy, dx = y - (size - 1) / 2 - offset[0], x - (size - 1) / 2 - offset[1]
    if shape == "square":
        return (dy.abs() <= radius) & (dx.abs() <= radius)
    if shape == "circle":
        return dy**2 + dx**2 <= radius**2
    if shape == "cross":
        return ((dy.abs() <= 1.5) & (dx.abs() <= radius)) | ((dx.abs() <= 1.5) & (dy.abs() <= radius))
    return (dy.abs() <= radius) & (dx.abs() <= (dy + radius) / 2)  # triangle, apex up


def coloured_shapes():
    """64 images of 16x16 in [-1, 1]: 4 colours x 4 shapes x 4 positions on white, captioned "red square" etc."""
    images, captions = [], []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            for offset in OFFSETS:
                image = torch.ones(3, 16, 16)
                image[:, _shape(shape, offset)] = torch.tensor(rgb)[:, None]
                images.append(image)
                captions.append(f"{colour} {shape}")
    return torch.stack(images), captions


@pytest.fixture(scope="module")
def shapes():
    return coloured_shapes()


@pytest.fixture(scope="module")
def trained(shapes):
    return train_clip(*shapes, num_train_steps=100, validation_fraction=0, seed=0, **TINY)


def test_retrieval_well_above_chance(trained):
    text_encoder, tokenizer, metrics = trained
    assert metrics["train_captions"] == 16
    chance = 1 / metrics["train_captions"]
    assert metrics["train_top1"] >= 8 * chance, metrics
    assert metrics["train_top5"] >= 0.9, metrics
    # Batches of 16 images drawn without regard to captions would repeat captions, and an image cannot prefer one of
    # two identical captions: the loss could not fall below about 0.45 on average. Batches of distinct captions can.
    assert metrics["steps"] == 100 and metrics["loss"] < 0.2, metrics
    assert "heldout_top1" not in metrics  # nothing was held out
    assert isinstance(text_encoder, CLIPTextModel) and not text_encoder.training


@pytest.fixture(scope="module")
def judge(shapes):
    return train_clip_model(*shapes, num_train_steps=100, validation_fraction=0, seed=0, **TINY)


def test_train_clip_is_the_text_half_of_train_clip_model(trained, judge):
    text_encoder, _, metrics = trained
    model, _, judge_metrics = judge
    assert metrics == judge_metrics
    expected = model.text_model.state_dict()
    actual = getattr(text_encoder, "text_model", text_encoder).state_dict()
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


def test_caption_ranks_reproduce_the_training_retrieval(shapes, judge):
    images, captions = shapes
    model, tokenizer, metrics = judge
    distinct = sorted(set(captions))
    ranks = caption_ranks(model, tokenizer, images, distinct, [distinct.index(caption) for caption in captions])
    assert ranks.shape == (64,) and ranks.dtype == torch.long and 0 <= ranks.min() and ranks.max() < 16
    assert (ranks < 1).float().mean().item() == pytest.approx(metrics["train_top1"])
    assert (ranks < 5).float().mean().item() == pytest.approx(metrics["train_top5"])
    # The same images against the wrong captions (each shifted to the next colour) rank far lower.
    wrong = [(distinct.index(caption) + 4) % 16 for caption in captions]
    assert caption_ranks(model, tokenizer, images, distinct, wrong).float().mean() > ranks.float().mean() + 3


def test_caption_ranks_refuse_images_of_another_size(shapes, judge):
    images, captions = shapes
    model, tokenizer, _ = judge
    with pytest.raises(ValueError, match="reads 16x16 images, not 32x32"):
        caption_ranks(model, tokenizer, torch.zeros(2, 3, 32, 32), captions[:2], [0, 1])


def test_heldout_split_is_measured(shapes):
    _, _, metrics = train_clip(*shapes, num_train_steps=5, validation_fraction=0.25, **TINY)
    assert metrics["heldout_captions"] <= 16 and metrics["train_captions"] == 16
    for key in ("train_top1", "train_top5", "heldout_top1", "heldout_top5"):
        assert 0 <= metrics[key] <= 1
    assert metrics["heldout_top5"] >= metrics["heldout_top1"]


def test_text_encoder_separates_its_captions(trained):
    text_encoder, tokenizer, _ = trained
    prompts = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
    ids = tokenizer(prompts, padding="max_length", return_tensors="pt").input_ids
    assert ids.shape[1] == tokenizer.model_max_length == 16
    with torch.no_grad():
        pooled = text_encoder(ids).pooler_output
    distances = torch.cdist(pooled, pooled)
    assert (distances + torch.eye(len(prompts)) * 1e9).min() > 1e-3  # no two captions share an embedding


def test_same_seed_same_weights(shapes):
    first, _, first_metrics = train_clip(*shapes, num_train_steps=10, seed=3, **TINY)
    torch.manual_seed(99)  # the global random state plays no part
    second, _, second_metrics = train_clip(*shapes, num_train_steps=10, seed=3, **TINY)
    other, _, _ = train_clip(*shapes, num_train_steps=10, seed=4, **TINY)
    first, second, other = first.state_dict(), second.state_dict(), other.state_dict()
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0, msg=name)
    assert first_metrics == second_metrics
    assert any(not torch.equal(first[name], other[name]) for name in first)


def test_does_not_touch_global_random_state(shapes):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    train_clip(*shapes, num_train_steps=2, **TINY)
    torch.testing.assert_close(torch.rand(3), expected)


def test_greyscale_images_train(shapes):
    images, captions = shapes
    text_encoder, _, metrics = train_clip(images.mean(dim=1, keepdim=True), captions, num_train_steps=3, **TINY)
    assert isinstance(text_encoder, CLIPTextModel) and metrics["steps"] == 3


def test_saved_encoder_reloads_in_transformers_alone(trained, tmp_path):
    text_encoder, tokenizer, _ = trained
    assert save_text_encoder(text_encoder, tokenizer, tmp_path / "pipe") == tmp_path / "pipe"
    assert (tmp_path / "pipe" / "text_encoder" / "model.safetensors").is_file()
    assert (tmp_path / "pipe" / "text_encoder" / "config.json").is_file()
    assert (tmp_path / "pipe" / "tokenizer" / "tokenizer.json").is_file()

    reloaded = CLIPTextModel.from_pretrained(tmp_path / "pipe" / "text_encoder").eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "pipe" / "tokenizer")
    prompts = ["red square", "Blue  Circle", "yellow triangle", "purple hexagon"]  # case, spacing, unknown words
    kwargs = {"padding": "max_length", "truncation": True, "return_tensors": "pt"}
    ids = tokenizer(prompts, **kwargs).input_ids
    torch.testing.assert_close(reloaded_tokenizer(prompts, **kwargs).input_ids, ids, rtol=0, atol=0)
    assert reloaded_tokenizer.model_max_length == tokenizer.model_max_length
    with torch.no_grad():
        expected = text_encoder(ids).last_hidden_state
        actual = reloaded(ids).last_hidden_state
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)

    # Saving again replaces the folders in place.
    save_text_encoder(text_encoder, tokenizer, tmp_path / "pipe")
    assert sorted(path.name for path in (tmp_path / "pipe").iterdir()) == ["text_encoder", "tokenizer"]


@pytest.mark.parametrize(
    "images, captions, match",
    [
        (torch.zeros(4, 3, 16, 16), ["a", "b", "c"], "4 images and 3 captions"),
        (torch.zeros(0, 3, 16, 16), [], "0 images and 0 captions"),
        ([], [], "0 images and 0 captions"),
        (torch.zeros(4, 3, 16, 16), [], "4 images and 0 captions"),
        (torch.zeros(2, 3, 16), ["a", "b"], r"shape \(N, C, H, W\)"),
        (torch.zeros(2, 4, 16, 16), ["a", "b"], "4 channels"),
        (torch.zeros(2, 3, 16, 8), ["a", "b"], "squares"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), ["a", "b"], "floats in"),
        (torch.full((2, 3, 16, 16), 255.0), ["a", "b"], r"\[-1, 1\]"),
        (torch.zeros(2, 3, 16, 16), ["a", None], "string"),
        (torch.zeros(3, 3, 16, 16), ["same", "Same", "SAME"], "at least two"),
    ],
)
def test_bad_inputs_raise_clear_errors(images, captions, match):
    with pytest.raises(ValueError, match=match):
        train_clip(images, captions, num_train_steps=1, validation_fraction=0, **TINY)


def test_bad_settings_raise_clear_errors(shapes):
    images, captions = shapes
    with pytest.raises(ValueError, match="does not divide"):
        train_clip(images, captions, patch_size=5, **TINY)
    with pytest.raises(ValueError, match="validation_fraction"):
        train_clip(images, captions, validation_fraction=1.0, **TINY)
    with pytest.raises(ValueError, match="mixed_precision"):
        train_clip(images, captions, mixed_precision="fp16", **TINY)
