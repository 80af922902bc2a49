"""CLIP text tower, numerically equivalent to transformers 5.x `CLIPTextModel`.

Its module tree mirrors the PyTorch one, so weights convert by a mechanical
name map (see `jaxgen.models.text_encoders` and
`jaxgen.convert.transformers_text`). Self-attention is jaxgen's shared
`Attention` (hence `to_q`...). The encoder layers (`CLIPEncoder`) are shared
with the vision tower, `jaxgen.models.clip`. `CLIPTextModelWithProjection`
(the tower plus `text_projection`, SDXL's second encoder) converts through
`jaxgen.convert.transformers_clip`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.errors import UnsupportedConfigError
from jaxgen.models.transformers_compat import (
  check_positive_ints,
  check_tokens,
  config_from_transformers,
)
from jaxgen.nn import partitioning as pt
from jaxgen.nn.attention import Attention

Dtype = Any

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


@dataclasses.dataclass(frozen=True)
class CLIPTextWithProjectionConfig(CLIPTextConfig):
  """transformers `CLIPTextConfig` of a `CLIPTextModelWithProjection`: tower and `projection_dim`.

  A subclass, so a plain `CLIPTextModel`'s config keeps ignoring the
  projection_dim its config.json carries (and compares unequal to this one).
  """

  projection_dim: int = 512

  def __post_init__(self):
    super().__post_init__()
    check_positive_ints(self, ("projection_dim",))

  def to_transformers(self) -> dict[str, Any]:
    """config.json contents that `transformers.CLIPTextModelWithProjection` reads."""
    return {**super().to_transformers(), "architectures": ["CLIPTextModelWithProjection"]}


class CLIPTextWithProjectionOutput(NamedTuple):
  """text_embeds (B, projection_dim): `text_projection` of the pooled state (not normalized);
  last_hidden_state and hidden_states as `CLIPTextOutput`'s."""

  text_embeds: jax.Array
  last_hidden_state: jax.Array
  hidden_states: tuple[jax.Array, ...] | None = None


class CLIPTextModelWithProjection(nn.Module):
  """`transformers.CLIPTextModelWithProjection`: the text tower and a bias-free projection.

  SDXL's second text encoder (OpenCLIP ViT-bigG/14). The tree is
  `text_model/...` (a `CLIPTextModel`) and `text_projection/kernel`, as the
  PyTorch state dict.
  """

  config: CLIPTextWithProjectionConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    input_ids: jax.Array,
    attention_mask: jax.Array | None = None,
    output_hidden_states: bool = False,
  ) -> CLIPTextWithProjectionOutput:
    out = CLIPTextModel(self.config, dtype=self.dtype, name="text_model")(
      input_ids, attention_mask, output_hidden_states
    )
    # The projection's output axis stays whole, as `jaxgen.models.clip.CLIPModel`'s.
    projection = pt.dense(
      self.config.projection_dim,
      ("embed", None),
      use_bias=False,
      dtype=self.dtype,
      name="text_projection",
    )
    return CLIPTextWithProjectionOutput(
      projection(out.pooler_output), out.last_hidden_state, out.hidden_states
    )


def abstract_projection_variables(
  config: CLIPTextWithProjectionConfig, dtype: Dtype = jnp.float32
) -> Any:
  """Boxed variable shapes of `CLIPTextModelWithProjection`, via `jax.eval_shape` (no memory)."""
  model = CLIPTextModelWithProjection(config, dtype)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
