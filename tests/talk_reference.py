"""The talk's notebook models, rebuilt from the documented module names, as the reference the converter is tested
against. Test-only: the package never imports this."""

import math

import torch
from torch import nn


class SinusoidalPositionEmbeddings(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, time):
        half_dim = self.dim // 2
        scale = math.log(10000) / (half_dim - 1)
        frequencies = torch.exp(torch.arange(half_dim, device=time.device) * -scale)
        arguments = time[:, None] * frequencies[None, :]
        return torch.cat((arguments.sin(), arguments.cos()), dim=-1)


class TalkCBAM(nn.Module):
    def __init__(self, channels, reduction=16):
        super().__init__()
        self.channel_attn = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )
        self.spatial_attn = nn.Sequential(nn.Conv2d(2, 1, 7, padding=3), nn.Sigmoid())

    def forward(self, x):
        x = x * self.channel_attn(x)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.max(dim=1, keepdim=True)[0]], dim=1)
        return x * self.spatial_attn(pooled)


class TalkSelfAttention(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, 1, batch_first=True)
        self.norm2 = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        normed = self.norm(tokens)
        tokens = tokens + self.attn(normed, normed, normed, need_weights=False)[0]
        tokens = tokens + self.ffn(self.norm2(tokens))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class TalkBlock(nn.Module):
    def __init__(self, in_ch, out_ch, time_emb_dim, up=False, cbam=False):
        super().__init__()
        self.time_mlp = nn.Linear(time_emb_dim, out_ch)
        if up:
            self.conv1 = nn.Conv2d(2 * in_ch, out_ch, 3, padding=1)
            self.transform = nn.ConvTranspose2d(out_ch, out_ch, 4, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
            self.transform = nn.Conv2d(out_ch, out_ch, 4, 2, 1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.batch_norm1 = nn.BatchNorm2d(out_ch)
        self.batch_norm2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        if cbam:
            self.cbam = TalkCBAM(out_ch)

    def forward(self, x, t):
        h = self.batch_norm1(self.relu(self.conv1(x)))
        h = h + self.relu(self.time_mlp(t))[..., None, None]
        h = self.batch_norm2(self.relu(self.conv2(h)))
        if hasattr(self, "cbam"):
            h = self.cbam(h)
        return self.transform(h)


class TalkSimpleUnet(nn.Module):
    def __init__(self, image_channels=3, self_attention=False, cbam=False, down_channels=(64, 128, 256, 512, 1024)):
        super().__init__()
        up_channels = down_channels[::-1]
        time_emb_dim = 32
        self.time_mlp = nn.Sequential(
            SinusoidalPositionEmbeddings(time_emb_dim), nn.Linear(time_emb_dim, time_emb_dim), nn.ReLU()
        )
        self.conv0 = nn.Conv2d(image_channels, down_channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            [
                TalkBlock(down_channels[i], down_channels[i + 1], time_emb_dim, cbam=cbam)
                for i in range(len(down_channels) - 1)
            ]
        )
        if self_attention or cbam:
            self.self_attention = TalkSelfAttention(down_channels[-1])
        self.up_blocks = nn.ModuleList(
            [
                TalkBlock(up_channels[i], up_channels[i + 1], time_emb_dim, up=True, cbam=cbam)
                for i in range(len(up_channels) - 1)
            ]
        )
        self.output = nn.Conv2d(up_channels[-1], image_channels, 1)

    def forward(self, x, timestep):
        t = self.time_mlp(timestep)
        x = self.conv0(x)
        residuals = []
        for down in self.down_blocks:
            x = down(x, t)
            residuals.append(x)
        if hasattr(self, "self_attention"):
            x = self.self_attention(x)
        for up in self.up_blocks:
            x = up(torch.cat((x, residuals.pop()), dim=1), t)
        return self.output(x)
