from .attention import CBAM, SelfAttentionBlock
from .embeddings import SinusoidalTimestepEmbedding
from .unet_simple import SimpleUNet2DModel

__all__ = ["CBAM", "SelfAttentionBlock", "SimpleUNet2DModel", "SinusoidalTimestepEmbedding"]
