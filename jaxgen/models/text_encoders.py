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
needs an unscaled attention with an additive position bias, written here.

Config dataclasses use the transformers config keys and meanings. Inputs are
token ids (B, L) and an optional attention mask (B, L), 1 = real token.
Neither model has dropout: they are used as frozen or fine-tuned conditioners,
where transformers' dropout is off (`model.eval()`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UnsupportedConfigError
from jaxgen.nn import partitioning as pt
from jaxgen.nn.attention import Attention

Dtype = Any


def config_from_transformers(
  cls: type, config: Any, model_types: tuple[str, ...]
) -> dict[str, Any]:
  """Keyword arguments of `cls` read from a transformers config (object or config.json dict).

  Keys that are not fields of `cls` are bookkeeping or training-only options
  (dropout, initializer ranges, projection_dim, ...) and are ignored.
  """
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  if not isinstance(config, Mapping):
    raise ValueError(
      f"config: expected a mapping or a transformers config, found {type(config).__name__}"
    )
  model_type = config.get("model_type")
  if model_type is not None and model_type not in model_types:
    raise UnsupportedConfigError(
      f"config: expected model_type in {model_types}, found {model_type!r}"
    )
  fields = {f.name for f in dataclasses.fields(cls)}
  return {k: v for k, v in config.items() if k in fields}


def check_positive_ints(config: Any, names: tuple[str, ...]) -> None:
  for name in names:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ValueError(f"{name}: expected a positive int, found {value!r}")


def check_tokens(
  input_ids: jax.Array, attention_mask: jax.Array | None, max_length: int | None
) -> None:
  """Validates (B, L) integer token ids and an optional (B, L) mask, before anything compiles."""
  if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
    raise ValueError(
      f"input_ids: expected integer (batch, length), found {input_ids.dtype} {input_ids.shape}"
    )
  if max_length is not None and input_ids.shape[1] > max_length:
    raise ValueError(
      f"input_ids: expected length <= max_position_embeddings={max_length}, found {input_ids.shape[1]}"
    )
  if attention_mask is not None and attention_mask.shape != input_ids.shape:
    raise ValueError(
      f"attention_mask: expected the shape of input_ids {input_ids.shape}, found {attention_mask.shape}"
    )


# ----------------------------------------------------------------------------
# CLIP text tower.

CLIP_ACTIVATIONS = {
  "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),
}


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
  """transformers `CLIPTextConfig` (architecture and pooling fields; defaults are its defaults).

  eos_token_id selects the pooled token as transformers 5.x does: if it is 2
  (the legacy value of configs written before transformers PR #24773, e.g.
  Stable Diffusion's), the position of the largest token id; otherwise the
  first position holding `eos_token_id` (position 0 if there is none).
  """

  vocab_size: int = 49408
  hidden_size: int = 512
  intermediate_size: int = 2048
  num_hidden_layers: int = 12
  num_attention_heads: int = 8
  max_position_embeddings: int = 77
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  pad_token_id: int | None = 1
  bos_token_id: int | None = 49406
  eos_token_id: int = 49407

  def __post_init__(self):
    check_positive_ints(
      self,
      (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
      ),
    )
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
        f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads}"
      )
    if self.hidden_act not in CLIP_ACTIVATIONS:
      raise UnsupportedConfigError(
        f"hidden_act: expected one of {tuple(CLIP_ACTIVATIONS)}, found {self.hidden_act!r}"
      )
    if not isinstance(self.eos_token_id, int):
      raise UnsupportedConfigError(f"eos_token_id: expected one int, found {self.eos_token_id!r}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @classmethod
  def from_transformers(cls, config: Any) -> CLIPTextConfig:
    """From a `transformers.CLIPTextConfig` or the dict of a `CLIPTextModel` config.json."""
    return cls(**config_from_transformers(cls, config, ("clip_text_model",)))

  def to_transformers(self) -> dict[str, Any]:
    """config.json contents that `transformers.CLIPTextModel.from_pretrained` reads as this architecture."""
    return {
      "architectures": ["CLIPTextModel"],
      "model_type": "clip_text_model",
      **dataclasses.asdict(self),
    }


class CLIPTextOutput(NamedTuple):
  """last_hidden_state (B, L, D) after final_layer_norm; pooler_output (B, D), the end-of-text state.

  hidden_states: with `output_hidden_states=True`, the embeddings and the
  output of every layer (num_hidden_layers + 1 arrays, before the final
  norm), as transformers returns them; else None.
  """

  last_hidden_state: jax.Array
  pooler_output: jax.Array
  hidden_states: tuple[jax.Array, ...] | None = None


class CLIPTextEmbeddings(nn.Module):
  """Token embedding plus learned absolute position embedding."""

  config: CLIPTextConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, input_ids: jax.Array) -> jax.Array:
    cfg = self.config
    tokens = pt.embed(cfg.vocab_size, cfg.hidden_size, dtype=self.dtype, name="token_embedding")(
      input_ids
    )
    # Rows are positions, not vocabulary: replicated (77 rows rarely divide a mesh axis).
    position_table = nn.Embed(
      cfg.max_position_embeddings,
      cfg.hidden_size,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      embedding_init=pt.annotated(nn.initializers.normal(stddev=1.0), (None, "embed")),
      name="position_embedding",
    )
    return tokens + position_table(jnp.arange(input_ids.shape[1]))[None]


class CLIPTransformerConfig(Protocol):
  """The fields CLIP's encoder layers read.

  `CLIPTextConfig` and `jaxgen.models.clip.CLIPVisionConfig` both have them.
  """

  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  hidden_act: str
  layer_norm_eps: float

  @property
  def head_dim(self) -> int: ...


class CLIPMLP(nn.Module):
  config: CLIPTransformerConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    h = pt.dense(cfg.intermediate_size, ("embed", "mlp"), dtype=self.dtype, name="fc1")(x)
    h = CLIP_ACTIVATIONS[cfg.hidden_act](h)
    return pt.dense(cfg.hidden_size, ("mlp", "embed"), dtype=self.dtype, name="fc2")(h)


class CLIPEncoderLayer(nn.Module):
  """Pre-LayerNorm block: x + self_attn(layer_norm1(x)), then x + mlp(layer_norm2(x)).

  Shared by the text tower (causal mask) and the vision tower (mask None: every token attends to all).
  """

  config: CLIPTransformerConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    h = pt.layer_norm(cfg.layer_norm_eps, dtype=self.dtype, name="layer_norm1")(x)
    attention = Attention(
      cfg.num_attention_heads, cfg.head_dim, qkv_bias=True, dtype=self.dtype, name="self_attn"
    )
    x = x + attention(h, mask=mask)
    h = pt.layer_norm(cfg.layer_norm_eps, dtype=self.dtype, name="layer_norm2")(x)
    return x + CLIPMLP(cfg, dtype=self.dtype, name="mlp")(h)


class CLIPEncoder(nn.Module):
  config: CLIPTransformerConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, ...]:
    """Returns the input and the output of every layer."""
    states = [x]
    for i in range(self.config.num_hidden_layers):
      states.append(
        CLIPEncoderLayer(self.config, dtype=self.dtype, name=f"layers_{i}")(states[-1], mask)
      )
    return tuple(states)


def clip_attention_mask(attention_mask: jax.Array | None, length: int) -> jax.Array:
  """(B|1, L, L) bool: causal, and (with a (B, L) padding mask) only real keys."""
  mask = jnp.tril(jnp.ones((length, length), bool))[None]
  if attention_mask is not None:
    mask = mask & attention_mask.astype(bool)[:, None, :]
  return mask


def clip_pooled_index(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
  """(B,) position of the end-of-text token, chosen as transformers 5.x `CLIPTextModel` does."""
  if eos_token_id == 2:  # Legacy configs: the end-of-text token has the largest id.
    return jnp.argmax(input_ids, axis=-1)
  return jnp.argmax(input_ids == eos_token_id, axis=-1)  # First occurrence; 0 if absent.


class CLIPTextModel(nn.Module):
  """CLIP text transformer (`transformers.CLIPTextModel`): causal, pre-LN, final LayerNorm.

  Attributes:
    config: the architecture.
    dtype: compute dtype (params stay float32; attention softmax is float32).
  """

  config: CLIPTextConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    input_ids: jax.Array,
    attention_mask: jax.Array | None = None,
    output_hidden_states: bool = False,
  ) -> CLIPTextOutput:
    """input_ids: int (B, L), L <= max_position_embeddings; attention_mask: (B, L), 1 = real token."""
    cfg = self.config
    input_ids = jnp.asarray(input_ids)
    attention_mask = None if attention_mask is None else jnp.asarray(attention_mask)
    check_tokens(input_ids, attention_mask, cfg.max_position_embeddings)
    x = CLIPTextEmbeddings(cfg, dtype=self.dtype, name="embeddings")(input_ids)
    mask = clip_attention_mask(attention_mask, input_ids.shape[1])
    mask = jnp.broadcast_to(mask, (input_ids.shape[0],) + mask.shape[1:])
    states = CLIPEncoder(cfg, dtype=self.dtype, name="encoder")(x, mask)
    last = pt.layer_norm(cfg.layer_norm_eps, dtype=self.dtype, name="final_layer_norm")(states[-1])
    index = clip_pooled_index(input_ids, cfg.eos_token_id)
    pooled = jnp.take_along_axis(last, index[:, None, None], axis=1)[:, 0]
    return CLIPTextOutput(last, pooled, states if output_hidden_states else None)


# ----------------------------------------------------------------------------
# T5 encoder.

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
