from .attention import CBAM, SelfAttentionBlock, SkipAttentionGate
from .embeddings import SinusoidalTimestepEmbedding
from .unet_simple import IMPROVED_CONFIG, SimpleUNet2DModel

__all__ = [
    "CBAM",
    "IMPROVED_CONFIG",
    "SelfAttentionBlock",
    "SimpleUNet2DModel",
    "SinusoidalTimestepEmbedding",
    "SkipAttentionGate",
]
