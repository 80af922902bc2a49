"""Pretrained text encoders: the CLIP text tower and the T5 encoder.

Both are written to be numerically equivalent to transformers 5.x
(`CLIPTextModel`, `T5EncoderModel`) and their module trees mirror the
PyTorch ones, so weights convert by a mechanical name map
(`jaxgen.convert.transformers_text`):

  CLIP  embeddings/token_embedding/embedding     embeddings.token_embedding.weight
        encoder/layers_3/self_attn/to_q/kernel   encoder.layers.3.self_attn.q_proj.weight
        encoder/layers_3/mlp/fc1/kernel          encoder.layers.3.mlp.fc1.weight
  T5    shared/embedding                         shared.weight
        encoder/block_0/layer_0/SelfAttention/q/kernel
                                                 encoder.block.0.layer.0.SelfAttention.q.weight

CLIP's self-attention is jaxgen's shared `Attention` (hence `to_q`...); T5
needs an unscaled attention with an additive position bias.

Config dataclasses use the transformers config keys and meanings. Inputs are
token ids (B, L) and an optional attention mask (B, L), 1 = real token.
Neither model has dropout: they are used as frozen or fine-tuned conditioners,
where transformers' dropout is off (`model.eval()`).

The CLIP text tower lives in `jaxgen.models.clip_text`, the T5 encoder in
`jaxgen.models.t5` (with its attention), the config and input checks they
share in `jaxgen.models.transformers_compat`; this module builds either from
its config.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.clip_text import CLIPTextConfig, CLIPTextModel
from jaxgen.models.t5 import T5EncoderConfig, T5EncoderModel

Dtype = Any

# ----------------------------------------------------------------------------
# Construction helpers.

TextEncoderConfig = CLIPTextConfig | T5EncoderConfig


def text_encoder(config: TextEncoderConfig, dtype: Dtype = jnp.float32) -> nn.Module:
  """The module for a config: `CLIPTextModel` or `T5EncoderModel`."""
  if isinstance(config, CLIPTextConfig):
    return CLIPTextModel(config, dtype=dtype)
  if isinstance(config, T5EncoderConfig):
    return T5EncoderModel(config, dtype=dtype)
  raise ValueError(
    f"config: expected CLIPTextConfig or T5EncoderConfig, found {type(config).__name__}"
  )


def abstract_variables(config: TextEncoderConfig, dtype: Dtype = jnp.float32) -> Any:
  """Boxed (logically partitioned) variable shapes, via `jax.eval_shape` (no memory)."""
  model = text_encoder(config, dtype)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
