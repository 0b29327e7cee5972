"""Attention layers of the SimpleUNet family: multi-head self-attention, CBAM and skip-connection attention gates."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttentionBlock(nn.Module):
    """Pre-norm transformer block over the pixels of a feature map.

    tokens = tokens + Attention(LayerNorm(tokens)); tokens = tokens + FFN(LayerNorm(tokens)), as in the talk's
    `SelfAttention` module, which wrapped `nn.MultiheadAttention`. We keep its packed q/k/v projection (`to_qkv`
    holds what `in_proj_weight` held) and call `F.scaled_dot_product_attention`, which picks a fused kernel and
    takes any number of heads.
    """

    def __init__(self, channels: int, num_heads: int = 1, ff_mult: int = 4, zero_init: bool = False):
        super().__init__()
        if num_heads < 1 or channels % num_heads:
            raise ValueError(
                f"`num_attention_heads`={num_heads} must be >= 1 and divide the {channels} channels it attends over; "
                f"valid choices include {[h for h in (1, 2, 4, 8, 16) if channels % h == 0]}."
            )
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(channels)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.to_out = nn.Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
        self.ff = nn.Sequential(
            nn.Linear(channels, ff_mult * channels), nn.GELU(), nn.Linear(ff_mult * channels, channels)
        )
        if zero_init:
            # Both residual branches start at zero, so a block added to a network leaves its output unchanged at
            # initialisation (as Diffusers' attention blocks and improved DDPM's `zero_module` do).
            for layer in (self.to_out, self.ff[-1]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = hidden_states.shape
        tokens = hidden_states.flatten(2).transpose(1, 2)  # (batch, height * width, channels)
        query, key, value = self.to_qkv(self.norm1(tokens)).chunk(3, dim=-1)
        query, key, value = (
            x.reshape(batch, height * width, self.num_heads, -1).transpose(1, 2) for x in (query, key, value)
        )
        attended = F.scaled_dot_product_attention(query, key, value)
        tokens = tokens + self.to_out(attended.transpose(1, 2).reshape(batch, height * width, channels))
        tokens = tokens + self.ff(self.norm2(tokens))
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018).

    Channel gate: sigmoid(MLP(avgpool(x))), the MLP being two 1x1 convolutions with a `reduction` bottleneck; with
    `max_pool=True` it is sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), Woo et al.'s eq. 2 (the talk pooled only by
    average). Spatial gate: sigmoid(conv7x7([mean_c(x), max_c(x)])), eq. 3.
    """

    def __init__(self, channels: int, reduction: int = 16, max_pool: bool = False):
        super().__init__()
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(
                f"`cbam_reduction`={reduction} leaves no hidden channels for a block of {channels} channels; "
                f"use a value between 1 and {channels}."
            )
        hidden = channels // reduction
        self.max_pool = max_pool
        self.channel_fc1 = nn.Conv2d(channels, hidden, 1)
        self.channel_fc2 = nn.Conv2d(hidden, channels, 1)
        self.spatial_conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        pooled = hidden_states.mean(dim=(2, 3), keepdim=True)
        channel_logits = self.channel_fc2(F.relu(self.channel_fc1(pooled)))
        if self.max_pool:
            pooled_max = hidden_states.amax(dim=(2, 3), keepdim=True)
            channel_logits = channel_logits + self.channel_fc2(F.relu(self.channel_fc1(pooled_max)))
        channel_gate = torch.sigmoid(channel_logits)
        hidden_states = hidden_states * channel_gate
        descriptor = torch.cat(
            [hidden_states.mean(dim=1, keepdim=True), hidden_states.amax(dim=1, keepdim=True)], dim=1
        )
        return hidden_states * torch.sigmoid(self.spatial_conv(descriptor))


class SkipAttentionGate(nn.Module):
    """Additive attention gate on a U-Net skip connection (Oktay et al. 2018, "Attention U-Net", eq. 1-2).

    q = relu(W_x x + W_g g [+ W_t t]); gate = 2 * sigmoid(psi(q)); the skip x is multiplied by the gate, one value per
    pixel. `g` is the decoder's features at the skip's resolution; with `temb_channels` the gate also sees the time
    embedding `t`, since how much a skip should pass depends on the noise level (new here, not in Oktay et al.).
    `psi` starts at zero, so the gate starts fully open (2 * sigmoid(0) = 1) and the U-Net starts as if ungated.
    """

    def __init__(self, skip_channels: int, gating_channels: int, temb_channels: Optional[int] = None):
        super().__init__()
        inter_channels = max(1, skip_channels // 2)
        self.skip_proj = nn.Conv2d(skip_channels, inter_channels, 1, bias=False)
        self.gating_proj = nn.Conv2d(gating_channels, inter_channels, 1)
        self.time_proj = nn.Linear(temb_channels, inter_channels) if temb_channels else None
        self.psi = nn.Conv2d(inter_channels, 1, 1)
        nn.init.zeros_(self.psi.weight)
        nn.init.zeros_(self.psi.bias)

    def forward(self, skip: torch.Tensor, gating: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        query = self.skip_proj(skip) + self.gating_proj(gating)
        if self.time_proj is not None:
            query = query + self.time_proj(temb)[:, :, None, None]
        return skip * (2 * torch.sigmoid(self.psi(F.relu(query))))


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention from the pixels of a feature map to a sequence of conditioning vectors (the text
    encoder's `encoder_hidden_states`), as in Stable Diffusion's transformer blocks (Rombach et al. 2022, eq. 3):
    tokens = tokens + Attention(Q = W_q LayerNorm(tokens), K = W_k context, V = W_v context).

    The output projection starts at zero, so a block added to a network leaves its output unchanged at
    initialisation. `attention_mask` (batch, sequence; 1 keeps, 0 drops) hides padding tokens.
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int = 1):
        super().__init__()
        if num_heads < 1 or channels % num_heads:
            raise ValueError(
                f"`num_attention_heads`={num_heads} must be >= 1 and divide the {channels} channels it attends over."
            )
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_kv = nn.Linear(context_dim, 2 * channels)
        self.to_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(
        self, hidden_states: torch.Tensor, context: torch.Tensor, attention_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        batch, channels, height, width = hidden_states.shape
        tokens = hidden_states.flatten(2).transpose(1, 2)  # (batch, height * width, channels)
        query = self.to_q(self.norm(tokens)).reshape(batch, height * width, self.num_heads, -1).transpose(1, 2)
        key, value = (
            x.reshape(batch, context.shape[1], self.num_heads, -1).transpose(1, 2)
            for x in self.to_kv(context.to(tokens.dtype)).chunk(2, dim=-1)
        )
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        tokens = tokens + self.to_out(attended.transpose(1, 2).reshape(batch, height * width, channels))
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)
