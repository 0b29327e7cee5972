"""Sinusoidal timestep embedding of the talk, as a module with no state of its own."""

import torch
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn


class SinusoidalTimestepEmbedding(nn.Module):
    """Maps integer or fractional timesteps to `dim` features, then through one linear layer.

    The features are the talk's `SinusoidalPositionEmbeddings`: frequencies `10000^(-i / (dim/2 - 1))`,
    concatenated as `[sin, cos]`. That is `diffusers.models.embeddings.get_timestep_embedding` with
    `downscale_freq_shift=1`, so we call it instead of writing the formula again.
    """

    def __init__(self, dim: int, act_fn: nn.Module):
        super().__init__()
        if not isinstance(dim, int) or dim < 4 or dim % 2:
            raise ValueError(
                f"`time_embedding_dim` must be an even integer >= 4 (half of it are sines, half cosines, and the "
                f"frequency spacing divides by dim/2 - 1), got {dim!r}. Use for example 32."
            )
        self.dim = dim
        self.linear_1 = nn.Linear(dim, dim)
        self.act = act_fn

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        features = get_timestep_embedding(timesteps, self.dim, flip_sin_to_cos=False, downscale_freq_shift=1)
        features = features.to(self.linear_1.weight.dtype)
        return self.act(self.linear_1(features))
