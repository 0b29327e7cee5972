"""The talk's SimpleUNet family (plain, self-attention, CBAM) as one configurable Diffusers model."""

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

from .attention import CBAM, CrossAttentionBlock, SelfAttentionBlock, SkipAttentionGate
from .embeddings import SinusoidalTimestepEmbedding

NORM_TYPES = ("batch", "group")
ACT_FNS = {"relu": nn.ReLU, "silu": nn.SiLU}
TIME_EMBEDDING_NORMS = ("relu", "default", "scale_shift")
ATTENTION_TYPES = (None, "self_attention", "cbam")
ATTENTION_PLACEMENTS = ("bottleneck",)
BLOCK_TYPES = ("simple", "residual")
CBAM_PLACEMENTS = (None, "main_path", "residual_branch")
SKIP_GATES = (None, "decoder", "decoder_time")
SEED_VARIANTS = {
    "simple": {"attention_type": None},
    "self_attention": {"attention_type": "self_attention"},
    "cbam": {"attention_type": "cbam"},
}
# The improved default: GroupNorm residual blocks with a scale-and-shift time embedding, SiLU, the full-resolution
# skip the talk drops, and attention gates on the skips driven by the decoder and the time embedding. Why these
# gates rather than self-attention (about the same quality at twice the speed): docs/placement-study.md.
IMPROVED_CONFIG = {
    "block_out_channels": (32, 64, 128, 128),
    "time_embedding_dim": 64,
    "block_type": "residual",
    "norm_type": "group",
    "norm_num_groups": 8,
    "act_fn": "silu",
    "time_embedding_norm": "scale_shift",
    "skip_conv_in": True,
    "skip_attention_gates": "decoder_time",
}


def _make_norm(norm_type: str, channels: int, num_groups: int) -> nn.Module:
    if norm_type == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(num_groups, channels)


class SimpleUNetBlock(nn.Module):
    """One down or up stage: two 3x3 convolutions, the time embedding, optional CBAM and self-attention, then a
    stride-2 resample (or none, for the full-resolution output block).

    `block_type="simple"` is the talk's block: with `norm_type="batch"` each stage is conv, activation, BatchNorm
    (the talk's order), with `"group"` conv, GroupNorm, activation; the time embedding enters after the first stage.
    `block_type="residual"` is a pre-activation residual block like Diffusers' `ResnetBlock2D`: norm, activation,
    conv, time embedding, norm, activation, conv, plus a (1x1 if needed) shortcut of the input.

    `time_embedding_norm` says how the time embedding enters: `"relu"` adds relu(Linear(t)) as the talk did (a bias
    that can only be non-negative), `"default"` adds Linear(t), `"scale_shift"` applies h * (1 + scale) + shift
    (after the second norm in a residual block, as in Diffusers and improved DDPM).

    `cbam_placement="main_path"` gates the block's output (the talk); `"residual_branch"` gates only the residual
    branch and adds it back (Woo et al. 2018, fig. 3): in a residual block out = shortcut(x) + CBAM(f(x)), in a simple
    block the second stage becomes that branch, h = h1 + CBAM(stage2(h1)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        up: bool,
        norm_type: str,
        norm_num_groups: int,
        act_fn: str,
        time_embedding_norm: str,
        use_cbam: bool = False,
        cbam_reduction: int = 16,
        block_type: str = "simple",
        cbam_placement: Optional[str] = "main_path",
        cbam_max_pool: bool = False,
        num_attention_heads: Optional[int] = None,
        resample: bool = True,
        cross_attention_dim: Optional[int] = None,
        cross_attention_heads: int = 1,
    ):
        super().__init__()
        self.norm_type = norm_type
        self.block_type = block_type
        self.time_embedding_norm = time_embedding_norm
        self.cbam_placement = cbam_placement
        conv_in_channels = 2 * in_channels if up else in_channels  # up blocks also see the matching skip
        time_channels = 2 * out_channels if time_embedding_norm == "scale_shift" else out_channels
        self.time_proj = nn.Linear(temb_channels, time_channels)
        self.conv1 = nn.Conv2d(conv_in_channels, out_channels, 3, padding=1)
        if block_type == "residual":
            self.norm1 = _make_norm(norm_type, conv_in_channels, norm_num_groups)
            self.shortcut = (
                nn.Conv2d(conv_in_channels, out_channels, 1) if conv_in_channels != out_channels else nn.Identity()
            )
        else:
            self.norm1 = _make_norm(norm_type, out_channels, norm_num_groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.norm2 = _make_norm(norm_type, out_channels, norm_num_groups)
        self.act = ACT_FNS[act_fn]()
        self.cbam = CBAM(out_channels, cbam_reduction, max_pool=cbam_max_pool) if use_cbam else None
        self.attention = (
            SelfAttentionBlock(out_channels, num_attention_heads, zero_init=True) if num_attention_heads else None
        )
        self.cross_attention = (
            CrossAttentionBlock(out_channels, cross_attention_dim, cross_attention_heads)
            if cross_attention_dim
            else None
        )
        if not resample:
            self.transform = nn.Identity()
        elif up:
            self.transform = nn.ConvTranspose2d(out_channels, out_channels, 4, 2, 1)
        else:
            self.transform = nn.Conv2d(out_channels, out_channels, 4, 2, 1)

    def _conv_norm_act(self, conv: nn.Module, norm: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.norm_type == "batch":
            return norm(self.act(conv(hidden_states)))
        return self.act(norm(conv(hidden_states)))

    def _add_time(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        time_features = self.time_proj(temb)[:, :, None, None]
        if self.time_embedding_norm == "relu":
            return hidden_states + torch.relu(time_features)
        if self.time_embedding_norm == "default":
            return hidden_states + time_features
        scale, shift = time_features.chunk(2, dim=1)
        return hidden_states * (1 + scale) + shift

    def _simple(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        hidden_states = self._add_time(self._conv_norm_act(self.conv1, self.norm1, hidden_states), temb)
        branch = self._conv_norm_act(self.conv2, self.norm2, hidden_states)
        if self.cbam is None:
            return branch
        if self.cbam_placement == "residual_branch":
            return hidden_states + self.cbam(branch)
        return self.cbam(branch)

    def _residual(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        branch = self.conv1(self.act(self.norm1(hidden_states)))
        if self.time_embedding_norm == "scale_shift":
            branch = self._add_time(self.norm2(branch), temb)
        else:
            branch = self.norm2(self._add_time(branch, temb))
        branch = self.conv2(self.act(branch))
        if self.cbam is not None and self.cbam_placement == "residual_branch":
            return self.shortcut(hidden_states) + self.cbam(branch)
        output = self.shortcut(hidden_states) + branch
        return self.cbam(output) if self.cbam is not None else output

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if self.block_type == "residual":
            hidden_states = self._residual(hidden_states, temb)
        else:
            hidden_states = self._simple(hidden_states, temb)
        if self.attention is not None:
            hidden_states = self.attention(hidden_states)
        if self.cross_attention is not None:
            hidden_states = self.cross_attention(hidden_states, encoder_hidden_states, encoder_attention_mask)
        return self.transform(hidden_states)


class SimpleUNet2DModel(ModelMixin, ConfigMixin):
    r"""
    The SimpleUNet of the KIIT DDPM talk, and the configurations that improve on it.

    The defaults build the talk's `SimpleUnet`: a 3x3 input convolution, `len(block_out_channels) - 1` down blocks
    that halve the resolution, as many up blocks that double it again (each fed the matching down block's output
    through a skip connection), and a 1x1 output convolution. [`~SimpleUNet2DModel.from_seed_variant`] builds the
    three models of the talk layer for layer.

    Parameters:
        sample_size (`int`, *optional*, defaults to 32):
            Height and width of the images the model is trained on (used by pipelines to draw noise).
        in_channels (`int`, *optional*, defaults to 3): Channels of the input image.
        out_channels (`int`, *optional*, defaults to 3): Channels of the output.
        block_out_channels (`Tuple[int]`, *optional*, defaults to `(64, 128, 256, 512, 1024)`):
            Width of the input convolution, then of each down block. Up blocks use the reversed tuple.
        time_embedding_dim (`int`, *optional*, defaults to 32): Size of the sinusoidal time embedding (even, >= 4).
        norm_type (`str`, *optional*, defaults to `"batch"`):
            `"batch"` (the talk's BatchNorm; its running statistics average over all noise levels) or `"group"`.
        norm_num_groups (`int`, *optional*, defaults to 32): Groups of GroupNorm when `norm_type="group"`.
        act_fn (`str`, *optional*, defaults to `"relu"`): `"relu"` (the talk) or `"silu"`.
        time_embedding_norm (`str`, *optional*, defaults to `"relu"`):
            How blocks use the time embedding: `"relu"` (the talk: add relu(Linear(t))), `"default"` (add Linear(t))
            or `"scale_shift"` (h * (1 + scale) + shift).
        attention_type (`str`, *optional*):
            `None`, `"self_attention"` (a transformer block at `attention_placement`) or `"cbam"` (the talk's CBAM
            model: CBAM gating the main path of every block, plus the self-attention block).
        attention_placement (`str`, *optional*, defaults to `"bottleneck"`): Where self-attention sits.
        num_attention_heads (`int`, *optional*, defaults to 1): Heads of every self-attention block.
        cbam_reduction (`int`, *optional*, defaults to 16): Channel reduction of CBAM's channel gate.
        block_type (`str`, *optional*, defaults to `"simple"`):
            `"simple"` (the talk's two conv stages) or `"residual"` (pre-activation residual blocks).
        attention_resolutions (`Tuple[int]`, *optional*, defaults to `()`):
            Feature-map sizes (in pixels) at which down and up blocks end with a multi-head self-attention block
            (zero-initialised output, so it starts as the identity), e.g. `(16, 8)` as in DDPM. Independent of
            `attention_type`'s bottleneck block.
        cbam_placement (`str`, *optional*):
            Where CBAM sits: `None` (the talk: on the main path of every block when `attention_type="cbam"`, nowhere
            otherwise), `"main_path"` or `"residual_branch"` (Woo et al.'s placement, with their max-pooled channel
            branch). With a placement, CBAM is used whatever `attention_type` says.
        cbam_resolutions (`Tuple[int]`, *optional*):
            Feature-map sizes of the blocks that get CBAM; `None` means every block.
        skip_attention_gates (`str`, *optional*):
            `None`, `"decoder"` (Oktay et al.'s attention gate on each skip connection, gated by the decoder's
            features) or `"decoder_time"` (gated by the decoder's features and the time embedding).
        skip_conv_in (`bool`, *optional*, defaults to `False`):
            Skip the full-resolution features of `conv_in` into one more block before `conv_out` (the talk drops them).
        num_class_embeds (`int`, *optional*):
            Class conditioning, as in [`~diffusers.UNet2DModel`]: a learned embedding of the class label is added to
            the time embedding. Labels are `0 .. num_class_embeds - 1`; `num_class_embeds` itself is the null label
            ("no class"), which classifier-free guidance uses for its unconditional half.
        cross_attention_dim (`int`, *optional*):
            Text conditioning: the width of the text encoder's `encoder_hidden_states`, which the bottleneck and the
            blocks at `cross_attention_resolutions` attend to (as in [`~diffusers.UNet2DConditionModel`]).
        cross_attention_resolutions (`Tuple[int]`, *optional*, defaults to `()`):
            Feature-map sizes whose down and up blocks end with cross-attention, beside the bottleneck's.
        patch_size (`int`, *optional*, defaults to 1):
            Fold each `patch_size` x `patch_size` patch of pixels into channels before `conv_in`
            (`torch.nn.functional.pixel_unshuffle`) and unfold the output again (`pixel_shuffle`), so the network runs
            at `sample_size / patch_size` for about the cost of a model that size: 64x64 images with `patch_size=2`
            cost what 32x32 ones do without it. The feature-map sizes of `attention_resolutions` and the other
            `*_resolutions` are then those of the folded maps (32, 16, ... for 64x64 images).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: Tuple[int, ...] = (64, 128, 256, 512, 1024),
        time_embedding_dim: int = 32,
        norm_type: str = "batch",
        norm_num_groups: int = 32,
        act_fn: str = "relu",
        time_embedding_norm: str = "relu",
        attention_type: Optional[str] = None,
        attention_placement: str = "bottleneck",
        num_attention_heads: int = 1,
        cbam_reduction: int = 16,
        block_type: str = "simple",
        attention_resolutions: Tuple[int, ...] = (),
        cbam_placement: Optional[str] = None,
        cbam_resolutions: Optional[Tuple[int, ...]] = None,
        skip_attention_gates: Optional[str] = None,
        skip_conv_in: bool = False,
        num_class_embeds: Optional[int] = None,
        cross_attention_dim: Optional[int] = None,
        cross_attention_resolutions: Tuple[int, ...] = (),
        patch_size: int = 1,
    ):
        super().__init__()
        self._check_config()
        block_out_channels = tuple(block_out_channels)
        self.time_embedding = SinusoidalTimestepEmbedding(time_embedding_dim, ACT_FNS[act_fn]())
        self.conv_in = nn.Conv2d(in_channels * patch_size**2, block_out_channels[0], 3, padding=1)
        sample_size = sample_size // patch_size  # the size the blocks see

        if cbam_placement is None and attention_type == "cbam":
            cbam_placement, cbam_max_pool = "main_path", False  # the talk's CBAM: average pooling only
        else:
            cbam_max_pool = cbam_placement == "residual_branch"  # Woo et al.'s CBAM, with the max-pooled branch
        attention_resolutions = set(attention_resolutions or ())
        cross_attention_resolutions = set(cross_attention_resolutions or ())
        # One more row than there are classes: the null label of classifier-free guidance.
        self.class_embedding = (
            nn.Embedding(num_class_embeds + 1, time_embedding_dim) if num_class_embeds is not None else None
        )

        def block(in_ch: int, out_ch: int, up: bool, resolution: int, resample: bool = True) -> SimpleUNetBlock:
            use_cbam = cbam_placement is not None and (cbam_resolutions is None or resolution in cbam_resolutions)
            return SimpleUNetBlock(
                in_ch,
                out_ch,
                temb_channels=time_embedding_dim,
                up=up,
                norm_type=norm_type,
                norm_num_groups=norm_num_groups,
                act_fn=act_fn,
                time_embedding_norm=time_embedding_norm,
                use_cbam=use_cbam,
                cbam_reduction=cbam_reduction,
                block_type=block_type,
                cbam_placement=cbam_placement,
                cbam_max_pool=cbam_max_pool,
                num_attention_heads=num_attention_heads if resolution in attention_resolutions else None,
                resample=resample,
                cross_attention_dim=cross_attention_dim if resolution in cross_attention_resolutions else None,
                cross_attention_heads=num_attention_heads,
            )

        # Block i of the down path convolves at sample_size / 2**i; up block i at the bottleneck size * 2**i.
        down = block_out_channels
        up = block_out_channels[::-1]
        num_stages = len(down) - 1
        self.down_blocks = nn.ModuleList(
            [block(down[i], down[i + 1], False, sample_size // 2**i) for i in range(num_stages)]
        )
        self.mid_attention = (
            SelfAttentionBlock(block_out_channels[-1], num_attention_heads) if attention_type is not None else None
        )
        self.mid_cross_attention = (
            CrossAttentionBlock(block_out_channels[-1], cross_attention_dim, num_attention_heads)
            if cross_attention_dim
            else None
        )
        self.up_blocks = nn.ModuleList(
            [block(up[i], up[i + 1], True, sample_size // 2 ** (num_stages - i)) for i in range(num_stages)]
        )
        # Up block i receives the skip of down block num_stages - 1 - i, which has up[i] channels.
        self.skip_gates = None
        if skip_attention_gates is not None:
            temb_channels = time_embedding_dim if skip_attention_gates == "decoder_time" else None
            gates = [SkipAttentionGate(up[i], up[i], temb_channels) for i in range(num_stages)]
            self.skip_gates = nn.ModuleList(gates)
        self.out_block = (
            block(block_out_channels[0], block_out_channels[0], True, sample_size, resample=False)
            if skip_conv_in
            else None
        )
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels * patch_size**2, 1)

    def _check_config(self):
        config = self.config
        if config.norm_type not in NORM_TYPES:
            raise ValueError(f"`norm_type` must be one of {NORM_TYPES}, got {config.norm_type!r}.")
        if config.act_fn not in ACT_FNS:
            raise ValueError(f"`act_fn` must be one of {tuple(ACT_FNS)}, got {config.act_fn!r}.")
        if config.time_embedding_norm not in TIME_EMBEDDING_NORMS:
            raise ValueError(
                f"`time_embedding_norm` must be one of {TIME_EMBEDDING_NORMS}, got {config.time_embedding_norm!r}."
            )
        if config.attention_type not in ATTENTION_TYPES:
            raise ValueError(f"`attention_type` must be one of {ATTENTION_TYPES}, got {config.attention_type!r}.")
        for name, choices in (
            ("block_type", BLOCK_TYPES),
            ("cbam_placement", CBAM_PLACEMENTS),
            ("skip_attention_gates", SKIP_GATES),
        ):
            if getattr(config, name) not in choices:
                raise ValueError(f"`{name}` must be one of {choices}, got {getattr(config, name)!r}.")
        if config.attention_placement not in ATTENTION_PLACEMENTS:
            raise ValueError(
                f"`attention_placement` must be one of {ATTENTION_PLACEMENTS}, got {config.attention_placement!r}."
            )
        for name in ("in_channels", "out_channels", "sample_size", "patch_size"):
            value = getattr(config, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        channels = config.block_out_channels
        if len(channels) < 2 or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(
                f"`block_out_channels` must hold at least two positive integers (the input width, then one per down "
                f"block), got {channels!r}. The talk uses (64, 128, 256, 512, 1024)."
            )
        if config.norm_type == "group":
            bad = [c for c in channels if c % config.norm_num_groups]
            if bad:
                raise ValueError(
                    f"With `norm_type='group'`, every entry of `block_out_channels` must be divisible by "
                    f"`norm_num_groups`={config.norm_num_groups}; {bad} are not. Change the widths or the group count."
                )
        down_factor = config.patch_size * 2 ** (len(channels) - 1)
        if config.sample_size % down_factor:
            raise ValueError(self._size_message("`sample_size`", config.sample_size, down_factor))
        resolutions = [config.sample_size // config.patch_size // 2**i for i in range(len(channels) - 1)]
        for name in ("attention_resolutions", "cbam_resolutions", "cross_attention_resolutions"):
            values = getattr(config, name)
            if values is None:
                continue
            if not isinstance(values, (list, tuple)) or any(v not in resolutions for v in values):
                raise ValueError(
                    f"`{name}` must list feature-map sizes the blocks of this model run at, {resolutions} for "
                    f"`sample_size`={config.sample_size}, `patch_size`={config.patch_size} and {len(channels) - 1} "
                    f"down blocks; got {values!r}."
                )

        if config.num_class_embeds is not None and (
            not isinstance(config.num_class_embeds, int) or config.num_class_embeds < 1
        ):
            raise ValueError(f"`num_class_embeds` must be a positive integer, got {config.num_class_embeds!r}.")
        if config.cross_attention_dim is not None and (
            not isinstance(config.cross_attention_dim, int) or config.cross_attention_dim < 1
        ):
            raise ValueError(f"`cross_attention_dim` must be a positive integer, got {config.cross_attention_dim!r}.")
        if config.cross_attention_resolutions and config.cross_attention_dim is None:
            raise ValueError("`cross_attention_resolutions` needs `cross_attention_dim` (the text encoder's width).")

    @property
    def null_class_label(self) -> Optional[int]:
        """The label that means "no class" (classifier-free guidance's unconditional half), or `None`."""
        return self.config.num_class_embeds

    @property
    def downsample_factor(self) -> int:
        """How much the patches and down blocks shrink an image; height and width must be multiples of it."""
        return self.config.patch_size * 2 ** len(self.down_blocks)

    @staticmethod
    def _size_message(what: str, size: int, factor: int) -> str:
        lower, upper = (size // factor) * factor, (size // factor + 1) * factor
        nearest = [s for s in (lower, upper) if s > 0]
        return (
            f"{what} {size} is not divisible by {factor} (`patch_size` times 2 to the power of the number of down "
            f"blocks). "
            f"The nearest valid sizes are {nearest}; pad or resize the images (28x28 digits are padded to 32 by "
            f"`ddpm_kiit.data`), or use fewer `block_out_channels`."
        )

    @classmethod
    def from_seed_variant(cls, name: str, **overrides) -> "SimpleUNet2DModel":
        """Builds one of the talk's three models: `"simple"` (SimpleUnet), `"self_attention"` (SimpleUnetWSelfAttn)
        or `"cbam"` (SimpleUnetWCBAM, which also holds the self-attention block). Keyword arguments override the
        config, e.g. `in_channels=1, out_channels=1` for MNIST."""
        if name not in SEED_VARIANTS:
            raise ValueError(f"Unknown seed variant {name!r}; choose one of {tuple(SEED_VARIANTS)}.")
        return cls(**{**SEED_VARIANTS[name], **overrides})

    def _check_sample(self, sample: torch.Tensor):
        if sample.ndim != 4:
            raise ValueError(
                f"`sample` must have shape (batch, channels, height, width), got shape {tuple(sample.shape)}."
            )
        if sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"`sample` has {sample.shape[1]} channels but this model has `in_channels`={self.config.in_channels}. "
                f"Convert the images (e.g. greyscale vs RGB) or build the model with `in_channels={sample.shape[1]}`."
            )
        factor = self.downsample_factor
        for what, size in (("height", sample.shape[2]), ("width", sample.shape[3])):
            if size % factor:
                raise ValueError(self._size_message(f"`sample` {what}", size, factor))

    def _class_embedding(self, class_labels: Optional[torch.Tensor], batch: int, device) -> Optional[torch.Tensor]:
        if self.class_embedding is None:
            if class_labels is not None:
                raise ValueError(
                    "`class_labels` were given, but this model is unconditional (`num_class_embeds` is None); train a "
                    "class-conditional model (`--conditioning class`) to ask for a class."
                )
            return None
        null = self.null_class_label
        if class_labels is None:
            class_labels = torch.full((batch,), null, device=device, dtype=torch.long)
        class_labels = torch.as_tensor(class_labels, device=device).reshape(-1)
        if class_labels.is_floating_point() or class_labels.shape[0] not in (1, batch):
            raise ValueError(
                f"`class_labels` must hold integers, one for the batch or one per sample ({batch}), got "
                f"{class_labels.tolist()!r}."
            )
        if ((class_labels < 0) | (class_labels > null)).any():
            raise ValueError(
                f"`class_labels` must lie in 0..{null - 1} (or {null}, no class), got {class_labels.tolist()!r}."
            )
        return self.class_embedding(class_labels.long().expand(batch))

    def _check_context(self, encoder_hidden_states: Optional[torch.Tensor], batch: int) -> None:
        width = self.config.cross_attention_dim
        if width is None:
            if encoder_hidden_states is not None:
                raise ValueError(
                    "`encoder_hidden_states` were given, but this model has no cross-attention "
                    "(`cross_attention_dim` is None); train a text-conditional model to use prompts."
                )
            return
        if encoder_hidden_states is None:
            raise ValueError(
                "This model is text-conditional: pass `encoder_hidden_states` (batch, tokens, "
                f"{width}); for no prompt, the text encoder's embedding of the empty prompt."
            )
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch:
            raise ValueError(
                f"`encoder_hidden_states` must be shaped ({batch}, tokens, {width}), got "
                f"{tuple(encoder_hidden_states.shape)}."
            )
        if encoder_hidden_states.shape[2] != width:
            raise ValueError(
                f"`encoder_hidden_states` are {encoder_hidden_states.shape[2]} wide; this model's "
                f"`cross_attention_dim` is {width}: use the text encoder it was trained with."
            )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float, int],
        return_dict: bool = True,
        *,
        class_labels: Optional[torch.Tensor] = None,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
    ) -> Union[UNet2DOutput, Tuple[torch.Tensor]]:
        r"""
        Args:
            sample (`torch.Tensor`): Noisy input of shape `(batch, channels, height, width)`.
            timestep (`torch.Tensor` or `float` or `int`): The timestep, one for the batch or one per sample.
            return_dict (`bool`, *optional*, defaults to `True`): Return a [`UNet2DOutput`] instead of a tuple.
            class_labels (`torch.Tensor`, *optional*): With `num_class_embeds`: one label for the batch or one per
                sample; `None` (or the null label `num_class_embeds`) samples without a class.
            encoder_hidden_states (`torch.Tensor`, *optional*): With `cross_attention_dim`: the text encoder's output,
                `(batch, tokens, cross_attention_dim)`.
            encoder_attention_mask (`torch.Tensor`, *optional*): `(batch, tokens)`, 1 for tokens to attend to.

        Returns:
            [`~models.unets.unet_2d.UNet2DOutput`] or `tuple` whose first element is the predicted tensor.
        """
        self._check_sample(sample)
        batch = sample.shape[0]
        timesteps = timestep
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps], device=sample.device)
        elif timesteps.ndim == 0:
            timesteps = timesteps[None].to(sample.device)
        if timesteps.ndim != 1 or timesteps.shape[0] not in (1, batch):
            raise ValueError(
                f"`timestep` must be a scalar or hold one value per sample ({batch}), got {tuple(timesteps.shape)}."
            )
        temb = self.time_embedding(timesteps.expand(batch))
        class_embedding = self._class_embedding(class_labels, batch, sample.device)
        if class_embedding is not None:
            temb = temb + class_embedding.to(temb.dtype)
        self._check_context(encoder_hidden_states, batch)
        context = (encoder_hidden_states, encoder_attention_mask)

        if self.config.patch_size > 1:
            sample = F.pixel_unshuffle(sample, self.config.patch_size)
        hidden_states = self.conv_in(sample)
        full_resolution = hidden_states
        skips = []
        for block in self.down_blocks:
            hidden_states = block(hidden_states, temb, *context)
            skips.append(hidden_states)
        if self.mid_attention is not None:
            hidden_states = self.mid_attention(hidden_states)
        if self.mid_cross_attention is not None:
            hidden_states = self.mid_cross_attention(hidden_states, *context)
        # As in the talk, the first up block receives the bottleneck twice (its own output is the last skip), and
        # unless `skip_conv_in` is set, the full-resolution features of `conv_in` are never skipped.
        for index, block in enumerate(self.up_blocks):
            skip = skips.pop()
            if self.skip_gates is not None:
                skip = self.skip_gates[index](skip, hidden_states, temb)
            hidden_states = block(torch.cat([hidden_states, skip], dim=1), temb, *context)
        if self.out_block is not None:
            hidden_states = self.out_block(torch.cat([hidden_states, full_resolution], dim=1), temb, *context)
        output = self.conv_out(hidden_states)
        if self.config.patch_size > 1:
            output = F.pixel_shuffle(output, self.config.patch_size)

        if not return_dict:
            return (output,)
        return UNet2DOutput(sample=output)
