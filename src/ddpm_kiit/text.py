"""Small text encoders built from scratch with `transformers` and `tokenizers`, for text-to-image models trained
offline: a word-level tokenizer fitted to the captions, saved as a `transformers` fast tokenizer, and a
`CLIPTextModel` of the chosen size, either random (`new_text_encoder`) or the text half of a small `CLIPModel`
trained contrastively on the images and their captions (`train_clip`). (Where a network is available, any
pretrained CLIP text encoder and tokenizer, e.g. `openai/clip-vit-base-patch32`, can be used instead.)"""

import math
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from diffusers.optimization import get_cosine_schedule_with_warmup
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    PreTrainedTokenizerFast,
)

SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


def train_caption_tokenizer(
    captions: Iterable[str], max_length: int = 16, min_frequency: int = 1
) -> PreTrainedTokenizerFast:
    """A lower-cased word-level tokenizer over `captions` (words split at spaces and punctuation), framed as
    `<s> words </s>` and padded with `<pad>` to `max_length` tokens."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS.values()), min_frequency=min_frequency)
    tokenizer.train_from_iterator(captions, trainer)
    bos, eos = SPECIAL_TOKENS["bos_token"], SPECIAL_TOKENS["eos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        special_tokens=[(bos, tokenizer.token_to_id(bos)), (eos, tokenizer.token_to_id(eos))],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_length, **SPECIAL_TOKENS)


def new_text_encoder(
    tokenizer: PreTrainedTokenizerFast, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4
) -> CLIPTextModel:
    """A randomly initialised `CLIPTextModel` for `tokenizer`'s vocabulary and length."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return CLIPTextModel(config)


# ------------------------------------------------------------------------------------- contrastive pre-training


def _patch_size_for(image_size: int, patch_size: Optional[int]) -> int:
    if patch_size is None:
        patch_size = next((size for size in range(8, 1, -1) if image_size % size == 0), image_size)
    if image_size % patch_size:
        raise ValueError(
            f"`patch_size` {patch_size} does not divide the image size {image_size}; pass a divisor of it, or leave "
            "`patch_size=None` to pick the largest divisor up to 8."
        )
    return patch_size


def _check_clip_inputs(images: torch.Tensor, captions: List[str]) -> torch.Tensor:
    """`images` as float RGB `(N, 3, H, H)`, after checking them against `captions`."""
    if len(images) == 0 or len(captions) == 0:
        raise ValueError(
            f"`train_clip` got {len(images)} images and {len(captions)} captions; give it the images to train on "
            "with one caption each."
        )
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(
            "`images` must be one float tensor of shape (N, C, H, W); stack the images with `torch.stack` first."
        )
    if len(images) != len(captions):
        raise ValueError(
            f"`train_clip` got {len(images)} images and {len(captions)} captions; give exactly one caption per image "
            "(repeat a caption for images that share it)."
        )
    if any(not isinstance(caption, str) for caption in captions):
        raise ValueError("Every caption must be a string; map missing captions to text (or drop those images) first.")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"`images` have {images.shape[1]} channels; pass greyscale (1) or RGB (3) images.")
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"`images` are {images.shape[2]}x{images.shape[3]}; crop or resize them to squares first.")
    if not images.is_floating_point():
        raise ValueError("`images` must be floats in [-1, 1]; convert with `images.float() / 127.5 - 1`.")
    low, high = images.min().item(), images.max().item()
    if low < -1.001 or high > 1.001:
        raise ValueError(
            f"`images` must lie in [-1, 1] (the range the diffusion models train on); these span [{low:.3g}, "
            f"{high:.3g}]. Rescale them, e.g. `images * 2 - 1` for images in [0, 1]."
        )
    return images.float().expand(-1, 3, -1, -1) if images.shape[1] == 1 else images.float()


def _embeddings(features) -> torch.Tensor:
    # `get_text_features` and `get_image_features` return the projected embeddings themselves before transformers 5,
    # and as the `pooler_output` of a model output since.
    return features if isinstance(features, torch.Tensor) else features.pooler_output


@torch.no_grad()
def _ranks(
    model: CLIPModel,
    pixels: torch.Tensor,
    input_ids: torch.Tensor,
    targets: torch.Tensor,
    autocast: bool,
    batch_size: int = 256,
) -> torch.Tensor:
    """For each image of `pixels`, the rank (0: first) of its caption, row `targets[i]` of `input_ids`, among all
    the rows of `input_ids` by CLIP's cosine similarity. Ties count against the image: its caption ranks first only
    when no other caption scores as high."""
    device = model.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        text = torch.cat(
            [
                _embeddings(model.get_text_features(input_ids=chunk.to(device))).float()
                for chunk in input_ids.split(batch_size)
            ]
        )
    image = image_embeddings(model, pixels, batch_size, "bf16" if autocast else "no").to(device)
    scores = torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
    own = scores.gather(1, targets.to(device)[:, None])
    return ((scores >= own).sum(dim=1) - 1).cpu()


@torch.no_grad()
def image_embeddings(
    model: CLIPModel, images: torch.Tensor, batch_size: int = 256, mixed_precision: Optional[str] = None
) -> torch.Tensor:
    """CLIP's projected image embeddings `(N, projection_dim)` of float images `(N, C, H, W)` in [-1, 1] (greyscale
    repeated to RGB), on the CPU in float32: a feature space for comparing image sets, as FID compares Inception's."""
    from .devices import native_bf16

    pixels = images.float().expand(-1, 3, -1, -1) if images.shape[1] == 1 else images.float()
    device = model.device
    autocast = native_bf16(device.type) if mixed_precision is None else mixed_precision == "bf16"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        return torch.cat(
            [
                _embeddings(model.get_image_features(pixel_values=chunk.to(device))).float().cpu()
                for chunk in pixels.split(batch_size)
            ]
        )


def _retrieval(
    model: CLIPModel, images: torch.Tensor, caption_of_image: torch.Tensor, input_ids: torch.Tensor, autocast: bool
) -> Tuple[float, float, int]:
    """Top-1 and top-5 accuracy of ranking, for each image, its caption among the distinct captions of `images`
    (rows of `input_ids` indexed by `caption_of_image`), and how many distinct captions there were."""
    used, caption_of_image = torch.unique(caption_of_image, return_inverse=True)
    rank = _ranks(model, images, input_ids[used], caption_of_image, autocast)
    return (rank < 1).float().mean().item(), (rank < 5).float().mean().item(), len(used)


def caption_ranks(
    model: CLIPModel,
    tokenizer: PreTrainedTokenizerFast,
    images: torch.Tensor,
    captions: List[str],
    targets: List[int],
    mixed_precision: Optional[str] = None,
) -> torch.Tensor:
    """
    How a CLIP model (such as one from `train_clip_model`) ranks each image's own caption among `captions`: the
    retrieval test of prompt fidelity, where a generated image should rank the prompt it was drawn for first.

    Args:
        model: A `CLIPModel` whose image encoder takes images of the size of `images`.
        tokenizer: Its tokenizer.
        images: Float tensor `(N, C, H, W)` in [-1, 1], greyscale (repeated to RGB) or RGB.
        captions: The candidate captions.
        targets: For each image, the index of its own caption in `captions`.
        mixed_precision: `"bf16"` or `"no"`; by default bf16 where the model's device computes it natively.

    Returns:
        Long tensor `(N,)`: 0 where the image's caption scores highest, k where k captions score at least as high.
    """
    from .devices import native_bf16

    pixels = _check_clip_inputs(images, [captions[target] for target in targets])
    expected = model.config.vision_config.image_size
    if pixels.shape[-1] != expected:
        raise ValueError(
            f"The CLIP model reads {expected}x{expected} images, not {pixels.shape[-1]}x{pixels.shape[-1]}; resize "
            "the images (or judge with a CLIP trained at their size)."
        )
    input_ids = tokenizer(
        list(captions), padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids  # fmt: skip
    autocast = native_bf16(model.device.type) if mixed_precision is None else mixed_precision == "bf16"
    return _ranks(model.eval(), pixels, input_ids, torch.as_tensor(targets), autocast)


def train_clip_model(
    images: torch.Tensor,
    captions: List[str],
    max_length: int = 16,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    vision_hidden_size: int = 128,
    vision_num_layers: int = 3,
    patch_size: Optional[int] = None,
    projection_dim: int = 128,
    num_train_steps: int = 300,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.05,
    validation_fraction: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
    mixed_precision: Optional[str] = None,
    show_progress: bool = True,
) -> Tuple[CLIPModel, PreTrainedTokenizerFast, Dict[str, float]]:
    """
    Trains a small `CLIPModel` from scratch on `images` and their `captions` with CLIP's contrastive loss, and returns
    it with the word-level tokenizer it reads. `train_clip` keeps its text half, the text encoder of a text-to-image
    pipeline; the whole model is a judge of prompt fidelity (`caption_ranks`) for a model it did not condition.

    Several images may share one caption. Each training batch holds distinct captions, each with one of its images
    chosen at random, so CLIP's loss (which takes every other pair of the batch as a negative) never pushes an image
    away from its own caption; a caption with many images counts as much as a caption with one.

    Args:
        images: Float tensor `(N, C, H, W)` in [-1, 1], square, greyscale (repeated to RGB) or RGB.
        captions: One caption per image.
        max_length: Tokens per prompt, `<s>` and `</s>` included (longer captions are truncated).
        hidden_size, num_layers, num_heads: Size of the text encoder (as in `new_text_encoder`).
        vision_hidden_size, vision_num_layers: Size of the image encoder, which is discarded after training.
        patch_size: Side of the image encoder's patches; `None` picks the largest divisor of the image size up to 8.
        projection_dim: Size of the joint embedding space.
        num_train_steps: Optimiser steps of `batch_size` image-caption pairs.
        batch_size: Pairs per step (at most the number of distinct training captions).
        learning_rate, weight_decay: AdamW's, with a linear warm-up over the first 5% of steps and cosine decay.
        validation_fraction: Share of the images held out of training to measure retrieval on (0 for none).
        seed: Seeds the initial weights, the held-out split and the batches: the same seed gives the same model.
        device: Where to train (`"cpu"`, `"cuda"`, ...).
        mixed_precision: `"bf16"` or `"no"`; by default bf16 autocast where the device computes bf16 natively.
        show_progress: Show a progress bar.

    Returns:
        `(model, tokenizer, metrics)`. `model` is in eval mode on the CPU, `tokenizer` pads to
        `max_length`, and `metrics` holds `loss` (mean contrastive loss over the last 50 steps), `steps`, and for the
        training images and (when `validation_fraction > 0`) the held-out ones, `{split}_top1` and `{split}_top5`:
        how often an image's caption ranks first, or in the top 5, among the distinct captions of that split, with
        `{split}_captions`, the number of those captions (chance top-1 is one over it).
    """

    from .devices import native_bf16

    captions = list(captions)
    pixels = _check_clip_inputs(images, captions)
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"`validation_fraction` must be in [0, 1), not {validation_fraction}.")
    if num_train_steps < 1 or batch_size < 2:
        raise ValueError("`train_clip` needs `num_train_steps >= 1` and `batch_size >= 2` (contrast needs pairs).")
    if mixed_precision not in (None, "no", "bf16"):
        raise ValueError(f"`mixed_precision` must be 'bf16', 'no' or None (automatic), not {mixed_precision!r}.")
    device_type = torch.device(device).type
    autocast = native_bf16(device_type) if mixed_precision is None else mixed_precision == "bf16"

    tokenizer = train_caption_tokenizer(captions, max_length=max_length)
    input_ids = tokenizer(
        captions, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    ).input_ids
    # Captions that tokenize alike (differing only in case, or past `max_length`) are one caption to the model.
    input_ids, caption_of_image = torch.unique(input_ids, dim=0, return_inverse=True)

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pixels), generator=generator)
    num_heldout = int(len(pixels) * validation_fraction)
    heldout, train = order[:num_heldout], order[num_heldout:]
    batches = _CaptionBatches(train, caption_of_image, batch_size, generator)
    vision = {"hidden_size": vision_hidden_size, "num_hidden_layers": vision_num_layers, "patch_size": patch_size}
    text = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads}
    with torch.random.fork_rng(devices=[]):  # the seed alone decides the weights; the caller's state is kept
        torch.manual_seed(seed)
        model = _new_clip(tokenizer, text, pixels.shape[-1], vision, projection_dim)
    losses = _fit_clip(
        model.to(device), batches, input_ids, pixels, num_train_steps, (learning_rate, weight_decay), autocast,
        show_progress,
    )  # fmt: skip
    model.eval()
    metrics: Dict[str, float] = {"loss": sum(losses[-50:]) / len(losses[-50:]), "steps": num_train_steps}
    for split, rows in (("train", train), ("heldout", heldout)):
        if len(rows):
            top1, top5, distinct = _retrieval(model, pixels[rows], caption_of_image[rows], input_ids, autocast)
            metrics.update({f"{split}_top1": top1, f"{split}_top5": top5, f"{split}_captions": distinct})
    return model.cpu(), tokenizer, metrics


def train_clip(
    images: torch.Tensor, captions: List[str], **kwargs
) -> Tuple[CLIPTextModel, PreTrainedTokenizerFast, Dict]:
    """
    The text encoder of a text-to-image pipeline, made offline without downloading any weights: the text half of
    `train_clip_model(images, captions, **kwargs)` as a standalone `CLIPTextModel` (eval mode, on the CPU), with its
    tokenizer and the training metrics. Takes `train_clip_model`'s arguments.
    """
    model, tokenizer, metrics = train_clip_model(images, captions, **kwargs)
    return _text_half(model), tokenizer, metrics


def _fit_clip(model, batches, input_ids, pixels, num_train_steps: int, adamw: Tuple, autocast: bool, show_progress):
    """CLIP's contrastive training: AdamW with a warm-up over the first 5% of steps and cosine decay; returns the
    losses."""
    from tqdm.auto import tqdm

    device = model.device
    learning_rate, weight_decay = adamw
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, num_train_steps // 20), num_train_steps)
    progress = tqdm(range(num_train_steps), desc="Training CLIP", disable=not show_progress)
    losses = []
    model.train()
    for _ in progress:
        captions, rows = batches.next()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            output = model(
                input_ids=input_ids[captions].to(device), pixel_values=pixels[rows].to(device), return_loss=True
            )
        output.loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():  # CLIP's clamp on the temperature, so the logits stay at most 100
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(output.loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


class _CaptionBatches:
    """Batches of distinct captions, each with one of its training images drawn at random, in a new order on each
    pass over the captions: CLIP's loss takes every other pair of a batch as a negative, so a batch must never hold
    one caption twice."""

    def __init__(self, train: torch.Tensor, caption_of_image: torch.Tensor, batch_size: int, generator):
        # Caption c owns the training images by_caption[start[c] : start[c] + count[c]].
        self.by_caption = train[torch.argsort(caption_of_image[train], stable=True)]
        self.captions, self.count = torch.unique(caption_of_image[self.by_caption], return_counts=True)
        self.start = torch.cumsum(self.count, 0) - self.count
        if len(self.captions) < 2:
            raise ValueError(
                f"The training images have {len(self.captions)} distinct caption; contrastive training needs at "
                "least two. Give the images different captions, or lower `validation_fraction`."
            )
        self.batch_size = min(batch_size, len(self.captions))
        self.generator = generator
        self.queue = torch.empty(0, dtype=torch.long)

    def next(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The next batch: caption ids and the rows of their images."""
        if len(self.queue) < self.batch_size:
            self.queue = torch.randperm(len(self.captions), generator=self.generator)
        batch, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size :]
        pick = self.start[batch] + (torch.rand(len(batch), generator=self.generator) * self.count[batch]).long()
        return self.captions[batch], self.by_caption[pick]


def _new_clip(tokenizer, text: Dict, image_size: int, vision: Dict, projection_dim: int) -> CLIPModel:
    vision_config = CLIPVisionConfig(
        image_size=image_size,
        patch_size=_patch_size_for(image_size, vision["patch_size"]),
        num_channels=3,
        hidden_size=vision["hidden_size"],
        intermediate_size=4 * vision["hidden_size"],
        num_hidden_layers=vision["num_hidden_layers"],
        num_attention_heads=max(1, vision["hidden_size"] // 32),
    )
    text_config = new_text_encoder(tokenizer, **text).config
    config = CLIPConfig(
        text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), projection_dim=projection_dim
    )
    return CLIPModel(config)


def _text_half(model: CLIPModel) -> CLIPTextModel:
    """The text encoder of a trained `CLIPModel` as a standalone `CLIPTextModel`, in eval mode on the CPU."""
    with torch.random.fork_rng(devices=[]):
        text_encoder = CLIPTextModel(model.config.text_config)
    # transformers 5 keeps the text model's weights at the top of `CLIPTextModel`, earlier versions one level down.
    getattr(text_encoder, "text_model", text_encoder).load_state_dict(model.text_model.cpu().state_dict())
    return text_encoder.eval()


def save_text_encoder(text_encoder: CLIPTextModel, tokenizer: PreTrainedTokenizerFast, folder: os.PathLike) -> Path:
    """
    Writes `text_encoder` to `folder/text_encoder` (safetensors) and `tokenizer` to `folder/tokenizer` in
    `transformers`' own format, as in a Stable Diffusion pipeline folder: `CLIPTextModel.from_pretrained` and
    `AutoTokenizer.from_pretrained` read them back with nothing from this package. Each subfolder is written aside
    and renamed into place, replacing what was there.

    Args:
        text_encoder: The text encoder to save.
        tokenizer: Its tokenizer.
        folder: The pipeline folder (created if missing).

    Returns:
        `folder`, as a `Path`.
    """
    from .io_utils import atomic_directory

    folder = Path(folder)
    with atomic_directory(folder / "text_encoder") as staging:
        text_encoder.save_pretrained(staging)
    with atomic_directory(folder / "tokenizer") as staging:
        tokenizer.save_pretrained(staging)
    return folder
