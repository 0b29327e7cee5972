"""What a conditional training run feeds the unet beside the noisy images: class labels, or the text encoder's
embeddings of the captions, with conditioning dropout (the null label, the empty prompt) so that one model samples
with and without classifier-free guidance."""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
from diffusers.utils import logging

logger = logging.get_logger(__name__)

CONDITIONINGS = ("none", "class", "text")
# Where a text model's blocks attend to the prompt besides the bottleneck: the coarse feature maps, where attention
# over the pixels is cheap.
MAX_CROSS_ATTENTION_RESOLUTION = 8


@dataclass
class TrainingConditions:
    """
    One row per training image: its class label (`kind="class"`), or the index of its caption among
    `captions` (`kind="text"`), whose embeddings are computed once by the frozen text encoder. The last row of
    `caption_embeddings` is the empty prompt.
    """

    kind: str
    labels: torch.Tensor
    num_classes: Optional[int] = None
    captions: Optional[List[str]] = None
    caption_embeddings: Optional[torch.Tensor] = None
    text_encoder: Optional[torch.nn.Module] = None
    tokenizer: Optional[object] = None

    def model_config(self, unet_config: Dict) -> Dict:
        """The unet config keys this conditioning needs, for a unet of `unet_config`: the class count, or the text
        encoder's width and cross-attention at the blocks of at most `MAX_CROSS_ATTENTION_RESOLUTION` pixels (the
        bottleneck always attends)."""
        if self.kind == "class":
            return {"num_class_embeds": self.num_classes}
        stages = len(unet_config["block_out_channels"]) - 1
        sizes = [unet_config["sample_size"] // 2**stage for stage in range(stages)]
        return {
            "cross_attention_dim": self.caption_embeddings.shape[-1],
            "cross_attention_resolutions": tuple(size for size in sizes if size <= MAX_CROSS_ATTENTION_RESOLUTION),
        }

    def to(self, device) -> "TrainingConditions":
        """Puts the labels, the caption embeddings and the text encoder (which samples the grids) on `device`."""
        self.labels = self.labels.to(device)
        if self.caption_embeddings is not None:
            self.caption_embeddings = self.caption_embeddings.to(device)
            self.text_encoder.to(device)
        return self

    def unet_kwargs(self, rows: torch.Tensor, generator: torch.Generator, dropout_prob: float) -> Dict:
        """The unet's conditioning for training images `rows`; each is dropped (null label, empty prompt) with
        probability `dropout_prob`, drawn from `generator`."""
        labels = self.labels[rows]
        dropped = torch.rand(labels.shape, generator=generator, device=labels.device) < dropout_prob
        if self.kind == "class":
            return {"class_labels": torch.where(dropped, torch.full_like(labels, self.num_classes), labels)}
        empty = len(self.caption_embeddings) - 1
        return {"encoder_hidden_states": self.caption_embeddings[torch.where(dropped, empty, labels)]}

    def sample_kwargs(self, count: int) -> Dict:
        """Pipeline arguments for a grid of `count` samples during training: classes in turn, or the first
        captions in turn."""
        if self.kind == "class":
            return {"class_labels": [index % self.num_classes for index in range(count)]}
        return {"prompt": [self.captions[index % len(self.captions)] for index in range(count)]}


def _column(dataset, name: str, flag: str) -> list:
    if name not in dataset.column_names:
        raise ValueError(
            f"The dataset has no {name!r} column (its columns: {dataset.column_names}); name the column that holds "
            f"it with {flag}."
        )
    return dataset[name]


@torch.no_grad()
def embed_captions(text_encoder, tokenizer, captions: List[str], batch_size: int = 256) -> torch.Tensor:
    """The text encoder's last hidden states of `captions` and then of the empty prompt, padded as the pipeline
    pads prompts: `(len(captions) + 1, tokens, width)`."""
    from tqdm.auto import tqdm

    from ..pipelines.pipeline_kiit_text2img import encode_prompts

    texts = [*captions, ""]
    text_encoder.eval()
    batches = tqdm(range(0, len(texts), batch_size), desc="Embedding captions", leave=False)
    return torch.cat(
        [
            encode_prompts(text_encoder, tokenizer, texts[start : start + batch_size], text_encoder.device)
            .float()
            .cpu()
            for start in batches
        ]
    )


def load_text_encoder(name_or_path: str, cache_dir: Optional[str] = None):
    """A `transformers` CLIP text encoder and tokenizer: a pipeline folder of ours (`text_encoder/`, `tokenizer/`),
    a folder or Hub id of a CLIP model (e.g. `openai/clip-vit-base-patch32`), frozen."""
    from transformers import AutoTokenizer, CLIPTextModel

    root = Path(name_or_path)
    encoder_path = root / "text_encoder" if (root / "text_encoder").is_dir() else name_or_path
    tokenizer_path = root / "tokenizer" if (root / "tokenizer").is_dir() else name_or_path
    text_encoder = CLIPTextModel.from_pretrained(encoder_path, cache_dir=cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, cache_dir=cache_dir)
    return text_encoder.requires_grad_(False).eval(), tokenizer


def _keep_labelled(values: list, missing, images: torch.Tensor, what: str):
    """Leaves out the images without a label or caption (`missing`), saying how many."""
    keep = [value is not None and value != missing for value in values]
    if not any(keep):
        raise ValueError(f"No image of the dataset has a {what}; choose the column that holds them.")
    if not all(keep):
        logger.warning(f"Training on the {sum(keep)} of {len(keep)} images that have a {what}; the others have none.")
    kept = [value for value, use in zip(values, keep) if use]
    return kept, images[torch.tensor(keep)]


def load_conditions(config, dataset, images: torch.Tensor):
    """The conditioning of a run (`--conditioning`), read from the dataset's `label` or `caption` column, and the
    images that have one (all of them for `--conditioning none`)."""
    kind = config.conditioning or "none"
    if kind == "none":
        return None, images
    if len(dataset) != len(images):
        raise ValueError(
            f"{len(dataset) - len(images)} images could not be read, and a conditional run needs every image's "
            f"label or caption: remove the unreadable images instead of passing --skip_bad_images."
        )
    if kind == "class":
        values, images = _keep_labelled(_column(dataset, "label", "--class_column"), -1, images, "class label")
        labels = torch.tensor(values, dtype=torch.long)
        feature = dataset.features.get("label")
        names = list(getattr(feature, "names", None) or [])
        num_classes = len(names) or int(labels.max()) + 1
        if labels.min() < 0:
            raise ValueError("Class labels must be >= 0; the dataset holds negative ones other than -1 (no label).")
        return TrainingConditions("class", labels, num_classes), images
    values, images = _keep_labelled(_column(dataset, "caption", "--caption_column"), None, images, "caption")
    captions_per_image = [str(caption) for caption in values]
    captions = sorted(set(captions_per_image))
    index = {caption: position for position, caption in enumerate(captions)}
    labels = torch.tensor([index[caption] for caption in captions_per_image], dtype=torch.long)
    if config.text_encoder_name_or_path:
        text_encoder, tokenizer = load_text_encoder(config.text_encoder_name_or_path, config.cache_dir)
    else:
        from ..text import train_clip

        logger.info(f"Training a CLIP text encoder on the {len(captions)} captions (no --text_encoder_name_or_path).")
        text_encoder, tokenizer, metrics = train_clip(images, captions_per_image, seed=config.seed)
        logger.info(f"Text encoder: {metrics}")
        text_encoder = text_encoder.requires_grad_(False).eval()
    embeddings = embed_captions(text_encoder, tokenizer, captions)
    conditions = TrainingConditions(
        "text", labels, captions=captions, caption_embeddings=embeddings, text_encoder=text_encoder,
        tokenizer=tokenizer,
    )  # fmt: skip
    return conditions, images
