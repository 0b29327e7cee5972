"""Checkpoints of the talk's notebook (`model_weights.pth`, a plain state dict) -> our classes and pipeline folders."""

import os
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from diffusers.utils import logging

from .io_utils import atomic_directory
from .models import SimpleUNet2DModel

logger = logging.get_logger(__name__)

# Original module name -> ours, applied in order to every key (after a DataParallel "module." prefix is removed).
KEY_RULES = [
    (r"^time_mlp\.1\.", "time_embedding.linear_1."),
    (r"^conv0\.", "conv_in."),
    (r"^output\.", "conv_out."),
    (r"^(down|up)_blocks\.(\d+)\.time_mlp\.", r"\1_blocks.\2.time_proj."),
    (r"^(down|up)_blocks\.(\d+)\.batch_norm([12])\.", r"\1_blocks.\2.norm\3."),
    (r"\.cbam\.channel_attn\.1\.", ".cbam.channel_fc1."),
    (r"\.cbam\.channel_attn\.3\.", ".cbam.channel_fc2."),
    (r"\.cbam\.spatial_attn\.0\.", ".cbam.spatial_conv."),
    (r"^self_attention\.norm\.", "mid_attention.norm1."),
    (r"^self_attention\.norm2\.", "mid_attention.norm2."),
    (r"^self_attention\.attn\.in_proj_(weight|bias)$", r"mid_attention.to_qkv.\1"),
    (r"^self_attention\.attn\.out_proj\.", "mid_attention.to_out."),
    (r"^self_attention\.ffn\.(0|2)\.", r"mid_attention.ff.\1."),
]


def convert_key(key: str) -> str:
    """Our name for one tensor of the talk's checkpoints."""
    key = key.removeprefix("module.")
    for pattern, replacement in KEY_RULES:
        key = re.sub(pattern, replacement, key)
    return key


def load_seed_state_dict(path: os.PathLike) -> Dict[str, torch.Tensor]:
    """Reads a notebook checkpoint without running any code from it.

    `.safetensors` files are read as such; anything else goes through `torch.load(weights_only=True)`, which
    refuses pickles that would construct arbitrary objects.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Checkpoint {str(path)!r} does not exist or is not a file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as error:
            raise ValueError(f"{str(path)!r} is not a readable safetensors file ({error}).") from error
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"Refusing to load {str(path)!r}: it is not a plain PyTorch state dict that loads with "
            f"`weights_only=True` ({type(error).__name__}: {str(error).splitlines()[0][:200]}). Save the weights "
            f"with `torch.save(model.state_dict(), path)` or as safetensors."
        ) from error
    if isinstance(state_dict, dict) and "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise ValueError(
            f"{str(path)!r} does not hold a state dict (names mapped to tensors); got {type(state_dict).__name__}."
        )
    return state_dict


def detect_seed_config(state_dict: Dict[str, torch.Tensor], sample_size: int = 32) -> dict:
    """Reads the variant and sizes of a talk model from its tensor names and shapes."""
    keys = {k.removeprefix("module.") for k in state_dict}
    tensors = {k.removeprefix("module."): v for k, v in state_dict.items()}
    required = ("conv0.weight", "time_mlp.1.weight", "output.weight", "down_blocks.0.conv1.weight")
    missing = [k for k in required if k not in keys]
    if missing:
        raise ValueError(
            f"This does not look like a checkpoint of the talk's SimpleUnet family: keys {missing} are missing. "
            f"Expected names such as 'conv0.weight', 'down_blocks.0.conv1.weight', 'output.weight'."
        )
    num_down = 1 + max(int(m.group(1)) for k in keys if (m := re.match(r"down_blocks\.(\d+)\.conv1\.weight$", k)))
    widths = [tensors["conv0.weight"].shape[0]]
    widths += [tensors[f"down_blocks.{i}.conv1.weight"].shape[0] for i in range(num_down)]
    if any(".cbam." in k for k in keys):
        attention_type = "cbam"
        hidden = tensors["down_blocks.0.cbam.channel_attn.1.weight"].shape[0]
        reduction = widths[1] // hidden
    elif "self_attention.attn.in_proj_weight" in keys:
        attention_type, reduction = "self_attention", 16
    else:
        attention_type, reduction = None, 16
    return {
        "sample_size": sample_size,
        "in_channels": tensors["conv0.weight"].shape[1],
        "out_channels": tensors["output.weight"].shape[0],
        "block_out_channels": tuple(widths),
        "time_embedding_dim": tensors["time_mlp.1.weight"].shape[1],
        "attention_type": attention_type,
        "cbam_reduction": reduction,
    }


def convert_seed_state_dict(
    state_dict: Dict[str, torch.Tensor], sample_size: int = 32, num_attention_heads: int = 1
) -> SimpleUNet2DModel:
    """Builds the [`SimpleUNet2DModel`] a talk checkpoint describes and loads every one of its tensors into it.

    Raises a `ValueError` naming the tensors if any would be left over, missing, or of the wrong shape.
    `num_attention_heads` cannot be read from the weights (`nn.MultiheadAttention` packs all heads); the talk used 1.
    """
    config = detect_seed_config(state_dict, sample_size=sample_size)
    model = SimpleUNet2DModel(**config, num_attention_heads=num_attention_heads)
    converted = {convert_key(k): v for k, v in state_dict.items()}
    expected = model.state_dict()
    unexpected = sorted(set(converted) - set(expected))
    missing = sorted(set(expected) - set(converted))
    wrong_shape = sorted(
        f"{k}: {tuple(converted[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(converted) & set(expected)
        if converted[k].shape != expected[k].shape
    )
    if unexpected or missing or wrong_shape:
        raise ValueError(
            f"The checkpoint does not match the {config['attention_type'] or 'simple'} SimpleUnet it looks like: "
            f"unused tensors {unexpected[:5]}, missing tensors {missing[:5]}, wrong shapes {wrong_shape[:5]}."
        )
    model.load_state_dict(converted, strict=True)
    return model.eval()


def convert_seed_checkpoint(
    checkpoint: os.PathLike,
    output_dir: os.PathLike,
    sample_size: int = 32,
    num_attention_heads: int = 1,
    overwrite: bool = False,
) -> Tuple[Path, Optional[str]]:
    """Writes a complete pipeline folder (safetensors weights, configs, model card) for a notebook checkpoint.

    The folder is written next to `output_dir` under a temporary name and renamed when complete, so a failure never
    leaves a half-written pipeline, and an existing `output_dir` is only replaced with `overwrite=True`.
    Returns the folder and the detected variant.
    """
    from .pipelines import KiitDDPMPipeline
    from .schedulers import KiitDDPMScheduler

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ValueError(f"{str(output_dir)!r} exists and is not empty; choose another folder or pass overwrite=True.")
    unet = convert_seed_state_dict(load_seed_state_dict(checkpoint), sample_size, num_attention_heads)
    pipe = KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler())

    with atomic_directory(output_dir) as staging:
        command = f"`ddpm-kiit convert-seed {Path(checkpoint).name} {output_dir.name}`"
        card = {"training_command": f"Converted with {command} from a checkpoint of the talk's notebook."}
        pipe.save_pretrained(staging, safe_serialization=True, model_card_kwargs=card)
    variant = unet.config.attention_type or "simple"
    logger.info(f"Converted {checkpoint} ({variant}) to {output_dir}")
    return output_dir, variant
