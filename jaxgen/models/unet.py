"""Conditional 2-D U-Net, equivalent to diffusers' `UNet2DConditionModel`.

The module tree mirrors diffusers so weights convert mechanically: e.g.
`down_blocks_0/attentions_1/transformer_blocks_0/attn1/to_q/kernel` is
`down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q.weight` (see
`jaxgen.convert.diffusers_unet`). Images are NHWC.

`UNetConfig` uses diffusers' config keys and meanings, including one quirk:
diffusers' `attention_head_dim` is really the number of attention heads per
block (see https://github.com/huggingface/diffusers/issues/2011); the width of
a head is `block_out_channels[i] // attention_head_dim[i]`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models import diffusers_config
from jaxgen.models.diffusers_config import UnsupportedConfigError
from jaxgen.nn import partitioning as pt
from jaxgen.nn.embeddings import TimestepEmbedding, timestep_embedding
from jaxgen.nn.resnet import ResnetBlock2D
from jaxgen.nn.sampling import Downsample2D, Upsample2D
from jaxgen.nn.transformer import Transformer2DModel

DOWN_BLOCK_TYPES = ("DownBlock2D", "CrossAttnDownBlock2D")
UP_BLOCK_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2DCrossAttn", "UNetMidBlock2D")
CLASS_EMBED_TYPES = (None, "timestep", "identity")


# diffusers `UNet2DConditionModel` options jaxgen accepts only at these values
# (their diffusers defaults). A config with any other value is rejected.
_DIFFUSERS_FIXED_OPTIONS: dict[str, Any] = {
    "reverse_transformer_layers_per_block": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "num_attention_heads": None,
    "dual_cross_attention": False,
    "addition_embed_type": None,
    "addition_time_embed_dim": None,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "projection_class_embeddings_input_dim": None,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None,
    "cross_attention_norm": None,
    "addition_embed_type_num_heads": 64,
}



def _per_block(name: str, value: int | tuple[int, ...], num_blocks: int) -> tuple[int, ...]:
  if isinstance(value, int):
    return (value,) * num_blocks
  if len(value) != num_blocks or not all(isinstance(v, int) for v in value):
    raise ValueError(f"{name}: expected an int or {num_blocks} ints (one per block), found {value!r}")
  return tuple(value)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """Architecture of a `UNet2DConditionModel`; field names are diffusers' config keys.

  Defaults are diffusers' defaults (Stable Diffusion 1.x layout). Notes:
    attention_head_dim: heads per block (diffusers' misnomer), int or per block.
    layers_per_block, transformer_layers_per_block: int or one int per block.
    class_embed_type: None (with `num_class_embeds`: a label embedding
      table; without: no class conditioning), "timestep" or "identity".
    dropout: in the resnet blocks only, as in diffusers.
    upcast_attention: accepted for compatibility; jaxgen always computes
      attention logits and softmax in float32.
  Other diffusers options are supported only at their defaults (see
  `from_diffusers`).
  """

  sample_size: int | tuple[int, int] | None = None
  in_channels: int = 4
  out_channels: int = 4
  center_input_sample: bool = False
  flip_sin_to_cos: bool = True
  freq_shift: int = 0
  down_block_types: tuple[str, ...] = (
      "CrossAttnDownBlock2D",
      "CrossAttnDownBlock2D",
      "CrossAttnDownBlock2D",
      "DownBlock2D",
  )
  mid_block_type: str | None = "UNetMidBlock2DCrossAttn"
  up_block_types: tuple[str, ...] = (
      "UpBlock2D",
      "CrossAttnUpBlock2D",
      "CrossAttnUpBlock2D",
      "CrossAttnUpBlock2D",
  )
  only_cross_attention: bool = False
  block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
  layers_per_block: int | tuple[int, ...] = 2
  downsample_padding: int = 1
  mid_block_scale_factor: float = 1.0
  dropout: float = 0.0
  act_fn: str = "silu"
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  cross_attention_dim: int = 1280
  transformer_layers_per_block: int | tuple[int, ...] = 1
  attention_head_dim: int | tuple[int, ...] = 8
  use_linear_projection: bool = False
  class_embed_type: str | None = None
  num_class_embeds: int | None = None
  upcast_attention: bool = False

  def __post_init__(self):
    diffusers_config.freeze_sequences(self)
    self._validate()

  def _validate(self) -> None:
    n = len(self.block_out_channels)
    diffusers_config.check_block_types(self, DOWN_BLOCK_TYPES, UP_BLOCK_TYPES)
    if self.mid_block_type is not None and self.mid_block_type not in MID_BLOCK_TYPES:
      raise UnsupportedConfigError(
          f"mid_block_type: expected one of {MID_BLOCK_TYPES} or None, found {self.mid_block_type!r}"
      )
    if self.only_cross_attention:
      raise UnsupportedConfigError(
          f"only_cross_attention: only False is supported, found {self.only_cross_attention!r}"
      )
    if self.act_fn not in ("silu", "swish"):
      raise UnsupportedConfigError(f"act_fn: only 'silu' is supported, found {self.act_fn!r}")
    if self.downsample_padding not in (0, 1):
      raise UnsupportedConfigError(f"downsample_padding: expected 0 or 1, found {self.downsample_padding!r}")
    if self.class_embed_type not in CLASS_EMBED_TYPES:
      raise UnsupportedConfigError(
          f"class_embed_type: expected one of {CLASS_EMBED_TYPES}, found {self.class_embed_type!r}"
      )
    if self.norm_num_groups is None:
      raise UnsupportedConfigError("norm_num_groups: None (no output norm) is not supported")
    if not isinstance(self.cross_attention_dim, int):
      raise UnsupportedConfigError(
          f"cross_attention_dim: expected one int, found {self.cross_attention_dim!r}"
      )
    _per_block("layers_per_block", self.layers_per_block, n)
    _per_block("transformer_layers_per_block", self.transformer_layers_per_block, n)
    heads = _per_block("attention_head_dim", self.attention_head_dim, n)
    for i, (channels, h) in enumerate(zip(self.block_out_channels, heads)):
      if channels % self.norm_num_groups:
        raise ValueError(
            f"block_out_channels[{i}]={channels} must be divisible by norm_num_groups={self.norm_num_groups}"
        )
      if channels % h:
        raise ValueError(
            f"block_out_channels[{i}]={channels} must be divisible by attention_head_dim[{i}]={h} "
            "(diffusers' attention_head_dim is the number of heads)"
        )

  # Derived, per-block views of the config.
  @property
  def num_heads(self) -> tuple[int, ...]:
    """Attention heads per down block (diffusers' `attention_head_dim`)."""
    return _per_block("attention_head_dim", self.attention_head_dim, len(self.block_out_channels))

  @property
  def layers(self) -> tuple[int, ...]:
    return _per_block("layers_per_block", self.layers_per_block, len(self.block_out_channels))

  @property
  def transformer_layers(self) -> tuple[int, ...]:
    n = len(self.block_out_channels)
    return _per_block("transformer_layers_per_block", self.transformer_layers_per_block, n)

  @property
  def time_embed_dim(self) -> int:
    return 4 * self.block_out_channels[0]

  @property
  def num_downsamples(self) -> int:
    return len(self.block_out_channels) - 1

  @property
  def has_cross_attention(self) -> bool:
    return (
        any(t.startswith("CrossAttn") for t in self.down_block_types + self.up_block_types)
        or self.mid_block_type == "UNetMidBlock2DCrossAttn"
    )

  @property
  def has_class_embedding(self) -> bool:
    return self.class_embed_type is not None or self.num_class_embeds is not None

  @classmethod
  def from_diffusers(cls, config: Mapping[str, Any]) -> UNetConfig:
    """Builds a config from a diffusers `UNet2DConditionModel.config` (or its config.json dict).

    Bookkeeping keys (`_class_name`, `_diffusers_version`, ...) are ignored;
    diffusers options jaxgen does not implement are accepted only at their
    default value, otherwise `UnsupportedConfigError` names them.
    """
    return diffusers_config.from_diffusers(cls, config, _DIFFUSERS_FIXED_OPTIONS, "UNet")

  def to_diffusers(self) -> dict[str, Any]:
    """The config as `UNet2DConditionModel(**kwargs)` keyword arguments (JSON-friendly lists)."""
    return diffusers_config.to_diffusers(self)


class UNetDownBlock(nn.Module):
  """`DownBlock2D` / `CrossAttnDownBlock2D`: (resnet [+ transformer]) x layers, then downsample."""

  out_channels: int
  num_layers: int
  attention: bool
  add_downsample: bool
  config: UNetConfig
  heads: int
  transformer_layers: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb, context, context_mask, deterministic):
    cfg, skips = self.config, []
    for i in range(self.num_layers):
      x = ResnetBlock2D(
          self.out_channels, groups=cfg.norm_num_groups, eps=cfg.norm_eps, dropout=cfg.dropout,
          dtype=self.dtype, name=f"resnets_{i}",
      )(x, temb, deterministic)
      if self.attention:
        x = _spatial_transformer(cfg, self.out_channels, self.heads, self.transformer_layers,
                                 self.dtype, f"attentions_{i}")(x, context, context_mask, deterministic)
      skips.append(x)
    if self.add_downsample:
      x = Downsample2D(self.out_channels, padding=cfg.downsample_padding, dtype=self.dtype,
                       name="downsamplers_0")(x)
      skips.append(x)
    return x, skips


class UNetUpBlock(nn.Module):
  """`UpBlock2D` / `CrossAttnUpBlock2D`: (concat skip, resnet [+ transformer]) per skip, then upsample."""

  out_channels: int
  attention: bool
  add_upsample: bool
  config: UNetConfig
  heads: int
  transformer_layers: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, skips, temb, context, context_mask, deterministic):
    cfg = self.config
    for i, skip in enumerate(skips):
      x = jnp.concatenate([x, skip], axis=-1)
      x = ResnetBlock2D(
          self.out_channels, groups=cfg.norm_num_groups, eps=cfg.norm_eps, dropout=cfg.dropout,
          dtype=self.dtype, name=f"resnets_{i}",
      )(x, temb, deterministic)
      if self.attention:
        x = _spatial_transformer(cfg, self.out_channels, self.heads, self.transformer_layers,
                                 self.dtype, f"attentions_{i}")(x, context, context_mask, deterministic)
    if self.add_upsample:
      x = Upsample2D(self.out_channels, dtype=self.dtype, name="upsamplers_0")(x)
    return x


class UNetMidBlock(nn.Module):
  """`UNetMidBlock2DCrossAttn` (resnet, transformer, resnet) or `UNetMidBlock2D` (one resnet)."""

  attention: bool
  config: UNetConfig
  heads: int
  transformer_layers: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb, context, context_mask, deterministic):
    cfg = self.config

    def resnet(i):
      return ResnetBlock2D(
          groups=cfg.norm_num_groups, eps=cfg.norm_eps, dropout=cfg.dropout,
          output_scale_factor=cfg.mid_block_scale_factor, dtype=self.dtype, name=f"resnets_{i}",
      )

    x = resnet(0)(x, temb, deterministic)
    if self.attention:
      x = _spatial_transformer(cfg, x.shape[-1], self.heads, self.transformer_layers, self.dtype,
                               "attentions_0")(x, context, context_mask, deterministic)
      x = resnet(1)(x, temb, deterministic)
    return x


def _spatial_transformer(cfg: UNetConfig, channels: int, heads: int, num_layers: int, dtype, name: str):
  return Transformer2DModel(
      heads=heads,
      dim_head=channels // heads,
      num_layers=num_layers,
      cross_attention_dim=cfg.cross_attention_dim,
      use_linear_projection=cfg.use_linear_projection,
      norm_num_groups=cfg.norm_num_groups,
      dtype=dtype,
      name=name,
  )


def check_inputs(
    config: UNetConfig,
    sample: jax.Array,
    timesteps: Any,
    encoder_hidden_states: jax.Array | None,
    encoder_attention_mask: jax.Array | None,
    class_labels: jax.Array | None,
) -> None:
  """Raises a ValueError naming the offending argument; runs on shapes only (before compiling)."""
  if sample.ndim != 4:
    raise ValueError(f"sample: expected NHWC (batch, height, width, channels), found shape {sample.shape}")
  batch, height, width, channels = sample.shape
  if channels != config.in_channels:
    raise ValueError(
        f"sample: expected {config.in_channels} channels (config.in_channels, NHWC), found {channels} "
        f"in shape {sample.shape}"
    )
  factor = 2**config.num_downsamples
  if height % factor or width % factor:
    raise ValueError(
        f"sample: height and width must be multiples of {factor} ({config.num_downsamples} downsamplings), "
        f"found {height}x{width}"
    )
  t_shape = jnp.shape(timesteps)
  if t_shape not in ((), (batch,)):
    raise ValueError(f"timesteps: expected a scalar or shape ({batch},), found shape {t_shape}")
  if config.has_cross_attention:
    if encoder_hidden_states is None:
      raise ValueError("encoder_hidden_states: required, this U-Net has cross-attention blocks")
    expected = (batch, "length", config.cross_attention_dim)
    shape = encoder_hidden_states.shape
    if len(shape) != 3 or shape[0] != batch or shape[2] != config.cross_attention_dim:
      raise ValueError(
          f"encoder_hidden_states: expected shape {expected} (config.cross_attention_dim), found {shape}"
      )
  elif encoder_hidden_states is not None:
    raise ValueError("encoder_hidden_states: this U-Net has no cross-attention blocks; pass None")
  if encoder_attention_mask is not None:
    if encoder_hidden_states is None:
      raise ValueError("encoder_attention_mask: given without encoder_hidden_states")
    expected = encoder_hidden_states.shape[:2]
    if tuple(encoder_attention_mask.shape) != tuple(expected):
      raise ValueError(
          f"encoder_attention_mask: expected shape {tuple(expected)} (batch, context length), "
          f"found {encoder_attention_mask.shape}"
      )
  if config.has_class_embedding:
    expected = (batch, config.time_embed_dim) if config.class_embed_type == "identity" else (batch,)
    if class_labels is None or tuple(class_labels.shape) != expected:
      found = None if class_labels is None else class_labels.shape
      raise ValueError(f"class_labels: expected shape {expected} for this class-conditional U-Net, found {found}")
    if config.class_embed_type is None and not jnp.issubdtype(class_labels.dtype, jnp.integer):
      raise ValueError(f"class_labels: expected integer labels, found dtype {class_labels.dtype}")
  elif class_labels is not None:
    raise ValueError("class_labels: this U-Net has no class embedding (num_class_embeds/class_embed_type unset)")


class UNet2DConditionModel(nn.Module):
  """Conditional U-Net (diffusers `UNet2DConditionModel`) on NHWC inputs."""

  config: UNetConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
      self,
      sample: jax.Array,
      timesteps: jax.Array | int | float,
      encoder_hidden_states: jax.Array | None = None,
      encoder_attention_mask: jax.Array | None = None,
      class_labels: jax.Array | None = None,
      train: bool = False,
  ) -> jax.Array:
    """Predicts the model output (e.g. noise) for `sample`.

    Args:
      sample: (B, H, W, in_channels); H, W multiples of 2**num_downsamples.
      timesteps: scalar or (B,), int or float. Keep it a traced array
        under jit (a Python int recompiles per value).
      encoder_hidden_states: (B, L, cross_attention_dim) context; None
        only for U-Nets without cross-attention.
      encoder_attention_mask: optional (B, L), 1 = attend, 0 = ignore.
      class_labels: (B,) ints for `num_class_embeds`, (B,) values for
        class_embed_type="timestep", (B, time_embed_dim) for "identity".
      train: enables dropout (needs the "dropout" rng).

    Returns:
      (B, H, W, out_channels) in `dtype`.
    """
    cfg = self.config
    check_inputs(cfg, sample, timesteps, encoder_hidden_states, encoder_attention_mask, class_labels)
    deterministic = not train
    batch = sample.shape[0]
    c0 = cfg.block_out_channels[0]

    # Time (and class) embedding.
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (batch,))
    t = timestep_embedding(timesteps, c0, cfg.flip_sin_to_cos, cfg.freq_shift).astype(self.dtype)
    emb = TimestepEmbedding(cfg.time_embed_dim, dtype=self.dtype, name="time_embedding")(t)
    if cfg.class_embed_type == "timestep":
      c = timestep_embedding(class_labels, c0, cfg.flip_sin_to_cos, cfg.freq_shift).astype(self.dtype)
      emb = emb + TimestepEmbedding(cfg.time_embed_dim, dtype=self.dtype, name="class_embedding")(c)
    elif cfg.class_embed_type == "identity":
      emb = emb + class_labels.astype(self.dtype)
    elif cfg.num_class_embeds is not None:
      table = pt.embed(cfg.num_class_embeds, cfg.time_embed_dim, feature_axis="time_embed",
                       dtype=self.dtype, name="class_embedding")
      emb = emb + table(class_labels)

    x = sample.astype(self.dtype)
    if cfg.center_input_sample:
      x = 2 * x - 1.0
    x = pt.conv(c0, 3, padding=1, dtype=self.dtype, name="conv_in")(x)
    context = encoder_hidden_states
    if context is not None:
      context = context.astype(self.dtype)
    mask = encoder_attention_mask

    skips = [x]
    heads, layers, tlayers = cfg.num_heads, cfg.layers, cfg.transformer_layers
    for i, block_type in enumerate(cfg.down_block_types):
      x, block_skips = UNetDownBlock(
          out_channels=cfg.block_out_channels[i],
          num_layers=layers[i],
          attention=block_type == "CrossAttnDownBlock2D",
          add_downsample=i < cfg.num_downsamples,
          config=cfg,
          heads=heads[i],
          transformer_layers=tlayers[i],
          dtype=self.dtype,
          name=f"down_blocks_{i}",
      )(x, emb, context, mask, deterministic)
      skips.extend(block_skips)

    if cfg.mid_block_type is not None:
      x = UNetMidBlock(
          attention=cfg.mid_block_type == "UNetMidBlock2DCrossAttn",
          config=cfg,
          heads=heads[-1],
          transformer_layers=tlayers[-1],
          dtype=self.dtype,
          name="mid_block",
      )(x, emb, context, mask, deterministic)

    for i, block_type in enumerate(cfg.up_block_types):
      j = len(cfg.block_out_channels) - 1 - i  # matching down block
      n = layers[j] + 1  # one skip per resnet of this up block, newest first
      block_skips, skips = skips[-n:][::-1], skips[:-n]
      x = UNetUpBlock(
          out_channels=cfg.block_out_channels[j],
          attention=block_type == "CrossAttnUpBlock2D",
          add_upsample=j > 0,
          config=cfg,
          heads=heads[j],
          transformer_layers=tlayers[j],
          dtype=self.dtype,
          name=f"up_blocks_{i}",
      )(x, block_skips, emb, context, mask, deterministic)

    x = nn.silu(pt.group_norm(cfg.norm_num_groups, cfg.norm_eps, dtype=self.dtype, name="conv_norm_out")(x))
    return pt.conv(cfg.out_channels, 3, padding=1, dtype=self.dtype, name="conv_out")(x)


def example_inputs(config: UNetConfig, batch: int = 1, context_length: int = 1) -> dict[str, jax.Array]:
  """Smallest valid inputs (zeros) for `init` / `jax.eval_shape`; params do not depend on their size."""
  size = 2**config.num_downsamples
  inputs = {
      "sample": jnp.zeros((batch, size, size, config.in_channels), jnp.float32),
      "timesteps": jnp.zeros((batch,), jnp.int32),
  }
  if config.has_cross_attention:
    inputs["encoder_hidden_states"] = jnp.zeros((batch, context_length, config.cross_attention_dim))
  if config.class_embed_type == "identity":
    inputs["class_labels"] = jnp.zeros((batch, config.time_embed_dim))
  elif config.has_class_embedding:
    inputs["class_labels"] = jnp.zeros((batch,), jnp.int32)
  return inputs


def abstract_variables(config: UNetConfig, dtype: Any = jnp.float32) -> Any:
  """Boxed (logically partitioned) variable shapes of the U-Net, via `jax.eval_shape` (no memory)."""
  model = UNet2DConditionModel(config, dtype=dtype)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), **example_inputs(config)))
