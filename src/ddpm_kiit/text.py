"""Small text encoders built from scratch with `transformers` and `tokenizers`, for text-to-image models trained
offline: a word-level tokenizer fitted to the captions, saved as a `transformers` fast tokenizer, and a
`CLIPTextModel` of the chosen size. (Where a network is available, any pretrained CLIP text encoder and tokenizer,
e.g. `openai/clip-vit-base-patch32`, can be used instead.)"""

from typing import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

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
