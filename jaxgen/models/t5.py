"""T5 encoder, numerically equivalent to transformers 5.x `T5EncoderModel`.

Its module tree mirrors the PyTorch one, so weights convert by a mechanical
name map (see `jaxgen.models.text_encoders` and
`jaxgen.convert.transformers_text`). T5 needs an unscaled attention with an
additive relative position bias, written here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UnsupportedConfigError
from jaxgen.models.transformers_compat import (
  check_positive_ints,
  check_tokens,
  config_from_transformers,
)
from jaxgen.nn import partitioning as pt

Dtype = Any

_T5_FEED_FORWARD = ("relu", "gated-gelu")


@dataclasses.dataclass(frozen=True)
class T5EncoderConfig:
  """transformers `T5Config`, encoder fields (defaults are its defaults, i.e. t5-small).

  feed_forward_proj: "relu" (original T5: wi -> relu -> wo) or "gated-gelu"
  (T5 v1.1 / Flan-T5: gelu_new(wi_0) * wi_1 -> wo).
  """

  vocab_size: int = 32128
  d_model: int = 512
  d_kv: int = 64
  d_ff: int = 2048
  num_layers: int = 6
  num_heads: int = 8
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  feed_forward_proj: str = "relu"
  layer_norm_epsilon: float = 1e-6
  pad_token_id: int | None = 0
  eos_token_id: int | None = 1

  def __post_init__(self):
    check_positive_ints(
      self,
      (
        "vocab_size",
        "d_model",
        "d_kv",
        "d_ff",
        "num_layers",
        "num_heads",
        "relative_attention_num_buckets",
        "relative_attention_max_distance",
      ),
    )
    if self.feed_forward_proj not in _T5_FEED_FORWARD:
      raise UnsupportedConfigError(
        f"feed_forward_proj: expected one of {_T5_FEED_FORWARD}, found {self.feed_forward_proj!r}"
      )
    # Bidirectional buckets: half per direction, half of those exact, the rest logarithmic up to max_distance.
    if self.relative_attention_num_buckets < 4:
      raise ValueError(
        f"relative_attention_num_buckets: expected >= 4, found {self.relative_attention_num_buckets}"
      )
    if self.relative_attention_max_distance <= self.relative_attention_num_buckets // 4:
      raise ValueError(
        f"relative_attention_max_distance: expected > relative_attention_num_buckets // 4 = "
        f"{self.relative_attention_num_buckets // 4}, found {self.relative_attention_max_distance}"
      )

  @property
  def is_gated(self) -> bool:
    return self.feed_forward_proj.startswith("gated-")

  @property
  def dense_act_fn(self) -> str:
    """transformers' derived activation name."""
    return "gelu_new" if self.feed_forward_proj == "gated-gelu" else self.feed_forward_proj

  @classmethod
  def from_transformers(cls, config: Any) -> T5EncoderConfig:
    """From a `transformers.T5Config` or a T5 config.json dict (encoder fields only).

    Derived keys that some config.json files carry (`dense_act_fn`,
    `is_gated_act`) must agree with `feed_forward_proj`; a decoder config is
    rejected.
    """
    as_dict = config.to_dict() if hasattr(config, "to_dict") else config
    result = cls(**config_from_transformers(cls, config, ("t5",)))
    derived = {"dense_act_fn": result.dense_act_fn, "is_gated_act": result.is_gated}
    for key, value in derived.items():
      if key in as_dict and as_dict[key] != value:
        raise UnsupportedConfigError(
          f"{key}: feed_forward_proj={result.feed_forward_proj!r} implies {value!r}, found {as_dict[key]!r}"
        )
    if as_dict.get("is_decoder"):
      raise UnsupportedConfigError("is_decoder: expected False (an encoder config), found True")
    return result

  def to_transformers(self) -> dict[str, Any]:
    """config.json contents that `transformers.T5EncoderModel.from_pretrained` reads as this architecture."""
    return {
      "architectures": ["T5EncoderModel"],
      "model_type": "t5",
      **dataclasses.asdict(self),
      "dense_act_fn": self.dense_act_fn,
      "is_gated_act": self.is_gated,
      "is_encoder_decoder": False,
      "use_cache": False,
    }


def relative_position_buckets(
  query_length: int, key_length: int, num_buckets: int, max_distance: int
) -> np.ndarray:
  """(Lq, Lk) int32 bucket of each key position relative to each query, bidirectional (T5 encoder).

  Half the buckets are for keys after the query. Within a direction, offsets
  below `num_buckets // 4` get a bucket each; larger ones share
  logarithmically wider buckets up to `max_distance`, beyond which all share
  the last. Computed on the host in float32 like Mesh TensorFlow/transformers
  (the log is evaluated at trace time, so the table is identical on every
  backend).
  """
  relative = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]
  half = num_buckets // 2
  buckets = np.where(relative > 0, half, 0)
  distance = np.abs(relative)
  max_exact = half // 2
  # Same float32 operations, in the same order, as transformers: bucket edges fall on exact integers.
  log_ratio = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
  log_range = np.float32(math.log(max_distance / max_exact))
  offset = (log_ratio / log_range * np.float32(half - max_exact)).astype(np.int64)
  large = np.minimum(max_exact + offset, half - 1)
  return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)


def _rms_norm(epsilon: float, dtype: Dtype, name: str) -> nn.RMSNorm:
  """T5LayerNorm: x / rms(x) * scale, no mean subtraction and no bias; statistics in float32."""
  return nn.RMSNorm(
    epsilon=epsilon,
    dtype=dtype,
    param_dtype=jnp.float32,
    scale_init=pt.annotated(nn.initializers.ones_init(), ("norm",)),
    name=name,
  )


class T5Attention(nn.Module):
  """T5 self-attention: bias-free q/k/v/o, unscaled logits plus a relative position bias.

  With `has_relative_attention_bias` (first layer only) it owns the bucket
  table and computes the (1, H, L, L) bias; other layers receive it.
  """

  config: T5EncoderConfig
  has_relative_attention_bias: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, x: jax.Array, mask: jax.Array | None, position_bias: jax.Array | None
  ) -> tuple[jax.Array, jax.Array]:
    cfg = self.config
    batch, length, _ = x.shape
    inner = cfg.num_heads * cfg.d_kv

    def project(name: str) -> jax.Array:
      layer = pt.dense(inner, ("embed", "heads"), use_bias=False, dtype=self.dtype, name=name)
      return layer(x).reshape(batch, length, cfg.num_heads, cfg.d_kv)

    q, k, v = project("q"), project("k"), project("v")
    if self.has_relative_attention_bias:
      table = nn.Embed(
        cfg.relative_attention_num_buckets,
        cfg.num_heads,
        param_dtype=jnp.float32,
        embedding_init=pt.annotated(nn.initializers.normal(1.0), (None, None)),
        name="relative_attention_bias",
      )
      buckets = relative_position_buckets(
        length, length, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
      )
      position_bias = table(jnp.asarray(buckets)).transpose(2, 0, 1)[None]  # (1, H, Lq, Lk)
    elif position_bias is None:
      raise ValueError(
        "position_bias: required by layers without their own relative_attention_bias"
      )
    # No 1/sqrt(d) scaling: T5 folds it into the initialisation of q.
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
    logits = logits + position_bias.astype(jnp.float32)
    if mask is not None:
      logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v).reshape(batch, length, inner)
    out = pt.dense(cfg.d_model, ("heads", "embed"), use_bias=False, dtype=self.dtype, name="o")(out)
    return out, position_bias


class T5LayerSelfAttention(nn.Module):
  config: T5EncoderConfig
  has_relative_attention_bias: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask, position_bias):
    h = _rms_norm(self.config.layer_norm_epsilon, self.dtype, "layer_norm")(x)
    out, position_bias = T5Attention(
      self.config, self.has_relative_attention_bias, dtype=self.dtype, name="SelfAttention"
    )(h, mask, position_bias)
    return x + out, position_bias


class T5DenseReluDense(nn.Module):
  """wi -> relu -> wo, or (gated) gelu_new(wi_0) * wi_1 -> wo; no biases."""

  config: T5EncoderConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config

    def dense(name: str) -> nn.Dense:
      return pt.dense(cfg.d_ff, ("embed", "mlp"), use_bias=False, dtype=self.dtype, name=name)

    if cfg.is_gated:
      h = jax.nn.gelu(dense("wi_0")(x), approximate=True) * dense("wi_1")(
        x
      )  # gelu_new is the tanh form.
    else:
      h = jax.nn.relu(dense("wi")(x))
    return pt.dense(cfg.d_model, ("mlp", "embed"), use_bias=False, dtype=self.dtype, name="wo")(h)


class T5LayerFF(nn.Module):
  config: T5EncoderConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = _rms_norm(self.config.layer_norm_epsilon, self.dtype, "layer_norm")(x)
    return x + T5DenseReluDense(self.config, dtype=self.dtype, name="DenseReluDense")(h)


class T5Block(nn.Module):
  """`layer_0` self-attention, `layer_1` feed-forward (transformers' `block.i.layer.j`)."""

  config: T5EncoderConfig
  has_relative_attention_bias: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask, position_bias):
    x, position_bias = T5LayerSelfAttention(
      self.config, self.has_relative_attention_bias, dtype=self.dtype, name="layer_0"
    )(x, mask, position_bias)
    return T5LayerFF(self.config, dtype=self.dtype, name="layer_1")(x), position_bias


class T5Stack(nn.Module):
  """Encoder blocks sharing the first block's position bias, then final_layer_norm."""

  config: T5EncoderConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    position_bias = None
    for i in range(self.config.num_layers):
      block = T5Block(
        self.config, has_relative_attention_bias=i == 0, dtype=self.dtype, name=f"block_{i}"
      )
      x, position_bias = block(x, mask, position_bias)
    return _rms_norm(self.config.layer_norm_epsilon, self.dtype, "final_layer_norm")(x)


class T5EncoderModel(nn.Module):
  """T5 encoder (`transformers.T5EncoderModel`); returns last_hidden_state (B, L, d_model).

  Attributes:
    config: the architecture.
    dtype: compute dtype (params stay float32; norms and softmax are float32).
  """

  config: T5EncoderConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
    """input_ids: int (B, L); attention_mask: (B, L), 1 = real token (padded keys are ignored)."""
    cfg = self.config
    input_ids = jnp.asarray(input_ids)
    attention_mask = None if attention_mask is None else jnp.asarray(attention_mask)
    check_tokens(input_ids, attention_mask, None)
    x = pt.embed(cfg.vocab_size, cfg.d_model, dtype=self.dtype, name="shared")(input_ids)
    mask = None if attention_mask is None else attention_mask.astype(bool)
    return T5Stack(cfg, dtype=self.dtype, name="encoder")(x, mask)
