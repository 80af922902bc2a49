"""Neural-network building blocks (flax.linen); depends on nothing else in jaxgen.

Every parameter carries logical axis names (see `jaxgen.nn.partitioning`).
"""

from jaxgen.nn.attention import Attention, dot_product_attention
from jaxgen.nn.embeddings import TimestepEmbedding, timestep_embedding
from jaxgen.nn.partitioning import LOGICAL_AXES, unannotated_params
from jaxgen.nn.resnet import ResnetBlock2D
from jaxgen.nn.sampling import Downsample2D, Upsample2D, upsample_nearest_2x
from jaxgen.nn.transformer import (
  GEGLU,
  GELU,
  BasicTransformerBlock,
  FeedForward,
  Transformer2DModel,
)

__all__ = [
  "Attention",
  "BasicTransformerBlock",
  "Downsample2D",
  "FeedForward",
  "GEGLU",
  "GELU",
  "LOGICAL_AXES",
  "ResnetBlock2D",
  "TimestepEmbedding",
  "Transformer2DModel",
  "Upsample2D",
  "dot_product_attention",
  "timestep_embedding",
  "unannotated_params",
  "upsample_nearest_2x",
]
