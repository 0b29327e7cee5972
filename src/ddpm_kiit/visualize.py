"""Pictures of diffusion: the denoising process recorded from a pipeline call, the forward process of a scheduler,
and the labelled grids that compare samplers."""

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from diffusers.utils import make_image_grid
from PIL import Image, ImageDraw

from .images import tensor_to_pil


class DenoisingRecorder:
    """
    A `callback_on_step_end` that keeps x_t and the predicted x0 at chosen steps, to show the denoising process
    (the talk's "10 step samples" figure).

    ```py
    >>> recorder = DenoisingRecorder.evenly(pipe.scheduler.config.num_train_timesteps, count=10)
    >>> pipe(generator=torch.manual_seed(0), callback_on_step_end=recorder,
    ...      callback_on_step_end_tensor_inputs=recorder.tensor_inputs)
    >>> recorder.strip().save("denoising.png")  # top row x_t, bottom row predicted x0
    ```

    Args:
        steps (`Sequence[int]`): Step indices (0 is the first denoising step) to record.
    """

    tensor_inputs = ["latents", "pred_original_sample"]

    def __init__(self, steps: Sequence[int]):
        steps = sorted(set(int(s) for s in steps))
        if not steps or steps[0] < 0:
            raise ValueError(f"`steps` must be a non-empty list of step indices >= 0, got {steps!r}.")
        self.steps = steps
        self.timesteps: List[int] = []
        self.latents: List[torch.Tensor] = []
        self.pred_original_samples: List[Optional[torch.Tensor]] = []

    @classmethod
    def evenly(cls, num_inference_steps: int, count: int = 10) -> "DenoisingRecorder":
        """Records `count` steps spread evenly over a chain of `num_inference_steps`, the last one included."""
        if count < 1 or num_inference_steps < 1:
            raise ValueError(
                f"Need `count` >= 1 and `num_inference_steps` >= 1, got {count} and {num_inference_steps}."
            )
        return cls(np.linspace(0, num_inference_steps - 1, min(count, num_inference_steps)).round().astype(int))

    def __call__(self, pipe, step_index: int, timestep, callback_kwargs: Dict) -> Dict:
        if step_index in self.steps:
            self.timesteps.append(int(timestep))
            self.latents.append(callback_kwargs["latents"].detach().cpu())
            x0 = callback_kwargs.get("pred_original_sample")
            self.pred_original_samples.append(None if x0 is None else x0.detach().cpu())
        return {}

    def rows(self, image_index: int = 0) -> List[List[Image.Image]]:
        """The recorded pictures of one image: x_t at each recorded step, then the predicted x0 (where the scheduler
        gives it)."""
        if not self.latents:
            raise ValueError("Nothing recorded: pass the recorder as `callback_on_step_end` to a pipeline call first.")
        rows = [[tensor_to_pil(latent[image_index]) for latent in self.latents]]
        if all(x0 is not None for x0 in self.pred_original_samples):
            rows.append([tensor_to_pil(x0[image_index]) for x0 in self.pred_original_samples])
        return rows

    def strip(self, image_index: int = 0) -> Image.Image:
        """One image: x_t at each recorded step on top, the predicted x0 below (when the scheduler gives it)."""
        rows = self.rows(image_index)
        return make_image_grid([image for row in rows for image in row], rows=len(rows), cols=len(rows[0]))


@torch.no_grad()
def forward_process_strip(scheduler, images: torch.Tensor, count: int = 10, seed: int = 0) -> Image.Image:
    """The forward process of any of our schedulers at `count` evenly spaced t, one row per image in [-1, 1].

    Noise (DDPM) or blur (cold diffusion, blurring diffusion): it calls `scheduler.add_noise` with one fixed noise
    draw, so the strip shows exactly what the model sees during training.
    """
    total = scheduler.config.num_train_timesteps
    timesteps = np.linspace(0, total - 1, min(count, total)).round().astype(int)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    tiles = []
    for image, image_noise in zip(images, noise):
        for t in timesteps:
            noisy = scheduler.add_noise(image[None], image_noise[None], torch.tensor([int(t)]))
            tiles.append(tensor_to_pil(noisy[0]))
    return make_image_grid(tiles, rows=len(images), cols=len(timesteps))


def grid_shape(count: int) -> tuple:
    """Rows and columns of the most nearly square grid that holds `count` images."""
    cols = int(count**0.5 + 0.999999)
    while count % cols:
        cols += 1
    return count // cols, cols


def image_grid(images: Sequence[Image.Image]) -> Image.Image:
    """`images` in the most nearly square grid (`grid_shape`)."""
    rows, cols = grid_shape(len(images))
    return make_image_grid(list(images), rows, cols)


def label_width(label: str) -> int:
    """Pixels that `label` needs in `labelled`'s band (PIL's default font)."""
    return int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(label)) + 4


def labelled(image: Image.Image, label: str, width: int = 0) -> Image.Image:
    """`image` with a white band on top carrying `label`, on a canvas at least `width` pixels wide."""
    band = 14
    canvas = Image.new("RGB", (max(image.width, width), image.height + band), "white")
    canvas.paste(image.convert("RGB"), (0, band))
    ImageDraw.Draw(canvas).text((2, 1), label, fill="black")
    return canvas
