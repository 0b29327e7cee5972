"""Tensors in [-1, 1] <-> PIL images: the one conversion pair of the package (pipeline outputs go through
Diffusers' own `numpy_to_pil`)."""

from typing import Optional

import torch
from PIL import Image

from .data import ImageTransform


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One `(channels, height, width)` image in [-1, 1] as an RGB picture (one channel is shown as grey)."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"Expected one image shaped (1 or 3, height, width), got {tuple(image.shape)}.")
    array = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    if array.shape[-1] == 1:
        return Image.fromarray(array[..., 0], mode="L").convert("RGB")
    return Image.fromarray(array)


def pil_to_tensor(image: Image.Image, size: int, channels: int, pad_smaller: bool = False) -> torch.Tensor:
    """A picture as a model input `(1, channels, size, size)` in [-1, 1]: converted the way a person sees it,
    resized so its shorter side is `size` and cropped in the centre (the training transform without randomness;
    `pad_smaller` pads small images instead, as training does for 28 x 28 digits)."""
    transform = ImageTransform(size, channels, center_crop=True, random_flip=False, pad_smaller=pad_smaller)
    return transform(image)[None]


def model_image_size(unet) -> Optional[int]:
    """The square side a unet samples at (`sample_size` as an int or a pair)."""
    size = unet.config.sample_size
    return size if isinstance(size, int) else size[0]
