"""Conditional 2-D U-Net, equivalent to diffusers' `UNet2DConditionModel`.

The module tree mirrors diffusers so weights convert mechanically: e.g.
`down_blocks_0/attentions_1/transformer_blocks_0/attn1/to_q/kernel` is
`down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q.weight` (see
`jaxgen.convert.diffusers_unet`). Images are NHWC. The architecture is a
`UNetConfig` (diffusers' config keys; `jaxgen.models.unet_config`, re-exported
here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UnsupportedConfigError  # noqa: F401  (re-export)
from jaxgen.models.unet_config import UNetConfig, pooled_text_dim
from jaxgen.nn import partitioning as pt
from jaxgen.nn.embeddings import TimestepEmbedding, timestep_embedding
from jaxgen.nn.precision import remat_module
from jaxgen.nn.resnet import ResnetBlock2D
from jaxgen.nn.sampling import Downsample2D, Upsample2D
from jaxgen.nn.transformer import Transformer2DModel


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
      x = _resnet(cfg, self.out_channels, self.dtype, f"resnets_{i}")(x, temb, deterministic)
      if self.attention:
        x = _spatial_transformer(
          cfg, self.out_channels, self.heads, self.transformer_layers, self.dtype, f"attentions_{i}"
        )(x, context, context_mask, deterministic)
      skips.append(x)
    if self.add_downsample:
      x = Downsample2D(
        self.out_channels, padding=cfg.downsample_padding, dtype=self.dtype, name="downsamplers_0"
      )(x)
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
      x = _resnet(cfg, self.out_channels, self.dtype, f"resnets_{i}")(x, temb, deterministic)
      if self.attention:
        x = _spatial_transformer(
          cfg, self.out_channels, self.heads, self.transformer_layers, self.dtype, f"attentions_{i}"
        )(x, context, context_mask, deterministic)
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
      return _resnet(
        cfg, None, self.dtype, f"resnets_{i}", output_scale_factor=cfg.mid_block_scale_factor
      )

    x = resnet(0)(x, temb, deterministic)
    if self.attention:
      x = _spatial_transformer(
        cfg, x.shape[-1], self.heads, self.transformer_layers, self.dtype, "attentions_0"
      )(x, context, context_mask, deterministic)
      x = resnet(1)(x, temb, deterministic)
    return x


def _resnet(cfg: UNetConfig, channels: int | None, dtype, name: str, **kwargs) -> ResnetBlock2D:
  """A ResNet block with the U-Net's norm and dropout settings (channels None: keep the input's)."""
  return ResnetBlock2D(
    channels,
    groups=cfg.norm_num_groups,
    eps=cfg.norm_eps,
    dropout=cfg.dropout,
    dtype=dtype,
    name=name,
    **kwargs,
  )


def _spatial_transformer(
  cfg: UNetConfig, channels: int, heads: int, num_layers: int, dtype, name: str
):
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


def _missing_context_message(config: UNetConfig) -> str:
  blocks = config.down_block_types + config.up_block_types
  if not any(t.startswith("CrossAttn") for t in blocks):
    return (
      "encoder_hidden_states: required by the mid block: mid_block_type="
      f"{config.mid_block_type!r} (the default) has cross-attention although every "
      "down/up block is attention-free; for a U-Net without a context set "
      "mid_block_type='UNetMidBlock2D' (or None)"
    )
  return "encoder_hidden_states: required, this U-Net has cross-attention blocks"


def check_class_labels(config: UNetConfig, class_labels: Any, name: str = "class_labels") -> None:
  """Named error unless every label indexes the U-Net's label table (host or concrete arrays).

  The model checks concrete labels itself; under `jax.jit` it cannot, and an
  out-of-range label gives NaN outputs, so a task calls this from its
  `check_batch` on host batches (`name` says which batch key is wrong).
  """
  if not config.has_label_table:
    raise ValueError(
      f"{name}: this U-Net has no label table (num_class_embeds unset or "
      f"class_embed_type={config.class_embed_type!r})"
    )
  labels = np.asarray(class_labels)
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{name}: expected integer labels, found dtype {labels.dtype}")
  rows = config.num_label_rows
  bad = labels[(labels < 0) | (labels >= rows)]
  if bad.size:
    null = (
      f", {config.null_class_label} being the null class"
      if config.class_embed_null
      else f"; set class_embed_null=True for a null class at label {config.num_class_embeds}"
    )
    raise ValueError(
      f"{name}: expected labels in [0, {rows}) (num_class_embeds="
      f"{config.num_class_embeds}{null}), found {sorted(set(bad.tolist()))}"
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
    raise ValueError(
      f"sample: expected NHWC (batch, height, width, channels), found shape {sample.shape}"
    )
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
      raise ValueError(_missing_context_message(config))
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
      raise ValueError(
        f"class_labels: expected shape {expected} for this class-conditional U-Net, found {found}"
      )
    if config.class_embed_type is None and not jnp.issubdtype(class_labels.dtype, jnp.integer):
      raise ValueError(f"class_labels: expected integer labels, found dtype {class_labels.dtype}")
    if config.has_label_table and not isinstance(class_labels, jax.core.Tracer):
      # Concrete labels are checked here; traced ones (under jit) cannot be,
      # and an out-of-range lookup would silently give NaN: the task's
      # `check_batch` calls `check_class_labels` on its host batches.
      check_class_labels(config, class_labels)
  elif class_labels is not None:
    raise ValueError(
      "class_labels: this U-Net has no class embedding (num_class_embeds/class_embed_type unset)"
    )


def check_added_conditions(config: UNetConfig, batch: int, text_embeds: Any, time_ids: Any) -> None:
  """Named errors for SDXL's `text_embeds` (B, P) and `time_ids` (B, N) (shapes only).

  P + N * addition_time_embed_dim must be `projection_class_embeddings_input_dim`.
  """
  if not config.has_text_time:
    if text_embeds is not None or time_ids is not None:
      raise ValueError(
        "text_embeds, time_ids: this U-Net has no text_time embedding "
        f"(addition_embed_type={config.addition_embed_type!r}); pass None"
      )
    return
  if text_embeds is None or time_ids is None:
    raise ValueError(
      "text_embeds, time_ids: required by addition_embed_type='text_time' (SDXL): the pooled "
      f"text embedding (B, P) and the size/crop ids (B, N); found {text_embeds is not None} "
      f"and {time_ids is not None} given"
    )
  text_shape, ids_shape = tuple(jnp.shape(text_embeds)), tuple(jnp.shape(time_ids))
  if len(ids_shape) != 2 or ids_shape[0] != batch:
    raise ValueError(f"time_ids: expected shape ({batch}, num_ids), found {ids_shape}")
  expected = (batch, pooled_text_dim(config, ids_shape[1]))
  if text_shape != expected:
    raise ValueError(
      f"text_embeds: expected shape {expected} (projection_class_embeddings_input_dim="
      f"{config.projection_class_embeddings_input_dim} minus {ids_shape[1]} time ids x "
      f"addition_time_embed_dim={config.addition_time_embed_dim}), found {text_shape}"
    )


def _text_time_embedding(
  cfg: UNetConfig, text_embeds: jax.Array, time_ids: jax.Array, dtype: Any
) -> jax.Array:
  """SDXL's added embedding: [pooled text, sinusoids of each time id] through `add_embedding`.

  diffusers' `add_time_proj` is the parameter-free sinusoid; `add_embedding`
  a `TimestepEmbedding` into the time embedding width.
  """
  batch = time_ids.shape[0]
  sinusoids = timestep_embedding(
    time_ids.reshape(-1), cfg.addition_time_embed_dim, cfg.flip_sin_to_cos, cfg.freq_shift
  ).reshape(batch, -1)
  features = jnp.concatenate([text_embeds.astype(jnp.float32), sinusoids], axis=-1)
  return TimestepEmbedding(cfg.time_embed_dim, dtype=dtype, name="add_embedding")(
    features.astype(dtype)
  )


def conditioning_embedding(
  cfg: UNetConfig,
  batch: int,
  timesteps: Any,
  class_labels: jax.Array | None,
  text_embeds: jax.Array | None,
  time_ids: jax.Array | None,
  dtype: Any,
) -> jax.Array:
  """(batch, time_embed_dim): the time embedding plus the class and SDXL added embeddings.

  Called inside a compact `__call__` (the U-Net's or a ControlNet's): the
  submodules `time_embedding`, `class_embedding` and `add_embedding` are the
  caller's, so both models share these parameter names.
  """
  c0 = cfg.block_out_channels[0]
  timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (batch,))
  t = timestep_embedding(timesteps, c0, cfg.flip_sin_to_cos, cfg.freq_shift).astype(dtype)
  emb = TimestepEmbedding(cfg.time_embed_dim, dtype=dtype, name="time_embedding")(t)
  if cfg.class_embed_type == "timestep":
    c = timestep_embedding(class_labels, c0, cfg.flip_sin_to_cos, cfg.freq_shift).astype(dtype)
    emb = emb + TimestepEmbedding(cfg.time_embed_dim, dtype=dtype, name="class_embedding")(c)
  elif cfg.class_embed_type == "identity":
    emb = emb + class_labels.astype(dtype)
  elif cfg.num_class_embeds is not None:
    table = pt.embed(
      cfg.num_label_rows,
      cfg.time_embed_dim,
      feature_axis="time_embed",
      dtype=dtype,
      name="class_embedding",
    )
    emb = emb + table(class_labels)
  if cfg.has_text_time:
    emb = emb + _text_time_embedding(cfg, text_embeds, time_ids, dtype)
  return emb


def encoder_blocks(
  cfg: UNetConfig,
  x: jax.Array,
  emb: jax.Array,
  context: jax.Array | None,
  mask: jax.Array | None,
  deterministic: bool,
  dtype: Any,
  remat: str,
) -> tuple[jax.Array, list[jax.Array]]:
  """`conv_in`'s output -> (the mid block's output, the skips: conv_in's and each down layer's).

  The encoder half shared by the U-Net and a ControlNet's trainable copy;
  like `conditioning_embedding`, its blocks (`down_blocks_<i>`, `mid_block`)
  are the caller's submodules.
  """
  # `deterministic` (a Python bool, the last positional argument) stays static under remat.
  down_block = remat_module(UNetDownBlock, remat, static_argnums=(5,))
  mid_block = remat_module(UNetMidBlock, remat, static_argnums=(5,))
  skips = [x]
  heads, layers, tlayers = cfg.num_heads, cfg.layers, cfg.transformer_layers
  for i, block_type in enumerate(cfg.down_block_types):
    x, block_skips = down_block(
      out_channels=cfg.block_out_channels[i],
      num_layers=layers[i],
      attention=block_type == "CrossAttnDownBlock2D",
      add_downsample=i < cfg.num_downsamples,
      config=cfg,
      heads=heads[i],
      transformer_layers=tlayers[i],
      dtype=dtype,
      name=f"down_blocks_{i}",
    )(x, emb, context, mask, deterministic)
    skips.extend(block_skips)
  if cfg.mid_block_type is not None:
    x = mid_block(
      attention=cfg.mid_block_type == "UNetMidBlock2DCrossAttn",
      config=cfg,
      heads=heads[-1],
      transformer_layers=tlayers[-1],
      dtype=dtype,
      name="mid_block",
    )(x, emb, context, mask, deterministic)
  return x, skips


def check_additional_residuals(
  cfg: UNetConfig, sample_shape: tuple[int, ...], down: Any, mid: Any
) -> None:
  """Named errors unless a ControlNet's residuals match this U-Net's skips (shapes only)."""
  if (down is None) != (mid is None):
    raise ValueError(
      "down_block_additional_residuals, mid_block_additional_residual: give both (a "
      f"ControlNet's outputs) or neither, found {down is not None} and {mid is not None}"
    )
  if down is None:
    return
  batch, height, width = sample_shape[:3]
  expected, size = [(batch, height, width, cfg.block_out_channels[0])], (height, width)
  for i, channels in enumerate(cfg.block_out_channels):
    expected += [(batch, *size, channels)] * cfg.layers[i]
    if i < cfg.num_downsamples:
      size = ((size[0] + 1) // 2, (size[1] + 1) // 2)
      expected.append((batch, *size, channels))
  found = [tuple(jnp.shape(r)) for r in down]
  if found != expected:
    raise ValueError(
      f"down_block_additional_residuals: expected {len(expected)} arrays of shapes {expected} "
      f"(one per skip connection), found {found}"
    )
  mid_expected = (batch, *size, cfg.block_out_channels[-1])
  if tuple(jnp.shape(mid)) != mid_expected:
    raise ValueError(
      f"mid_block_additional_residual: expected shape {mid_expected}, found {jnp.shape(mid)}"
    )


class UNet2DConditionModel(nn.Module):
  """Conditional U-Net (diffusers `UNet2DConditionModel`) on NHWC inputs.

  Attributes:
    config: the architecture.
    dtype: compute dtype of activations and matmuls (parameters stay float32;
      norm statistics and attention softmax are float32; see `jaxgen.nn.precision`).
    remat: rematerialisation policy of the down, mid and up blocks ("none",
      "full", "save_dots", "save_dots_no_batch"; `jaxgen.nn.precision`).
      Parameter names do not depend on it.
  """

  config: UNetConfig
  dtype: Any = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(
    self,
    sample: jax.Array,
    timesteps: jax.Array | int | float,
    encoder_hidden_states: jax.Array | None = None,
    encoder_attention_mask: jax.Array | None = None,
    class_labels: jax.Array | None = None,
    train: bool = False,
    *,
    text_embeds: jax.Array | None = None,
    time_ids: jax.Array | None = None,
    down_block_additional_residuals: Sequence[jax.Array] | None = None,
    mid_block_additional_residual: jax.Array | None = None,
  ) -> jax.Array:
    """Predicts the model output (e.g. noise) for `sample`.

    Args:
      sample: (B, H, W, in_channels); H, W multiples of 2**num_downsamples.
      timesteps: scalar or (B,), int or float. Keep it a traced array
        under jit (a Python int recompiles per value).
      encoder_hidden_states: (B, L, cross_attention_dim) context; None
        only for U-Nets without cross-attention.
      encoder_attention_mask: optional (B, L), 1 = attend, 0 = ignore.
      class_labels: (B,) ints in [0, num_class_embeds) for a label table
        (`null_class_label` too with `class_embed_null`; checked when
        concrete, see `check_class_labels`), (B,) values for
        class_embed_type="timestep", (B, time_embed_dim) for "identity".
      train: enables dropout (needs the "dropout" rng).
      text_embeds, time_ids: with addition_embed_type="text_time" (SDXL)
        only: the pooled text embedding (B, P) and the size/crop
        conditions (B, N) (diffusers' `added_cond_kwargs`).
      down_block_additional_residuals, mid_block_additional_residual:
        a ControlNet's residuals (`jaxgen.models.controlnet`), added to the
        skip connections and to the mid block's output as diffusers does;
        both or neither.

    Returns:
      (B, H, W, out_channels) in `dtype`.
    """
    cfg = self.config
    check_inputs(
      cfg, sample, timesteps, encoder_hidden_states, encoder_attention_mask, class_labels
    )
    check_added_conditions(cfg, sample.shape[0], text_embeds, time_ids)
    check_additional_residuals(
      cfg, sample.shape, down_block_additional_residuals, mid_block_additional_residual
    )
    deterministic = not train
    # `deterministic` (a Python bool, the last positional argument) stays static under remat.
    up_block = remat_module(UNetUpBlock, self.remat, static_argnums=(6,))
    emb = conditioning_embedding(
      cfg, sample.shape[0], timesteps, class_labels, text_embeds, time_ids, self.dtype
    )
    x = sample.astype(self.dtype)
    if cfg.center_input_sample:
      x = 2 * x - 1.0
    x = pt.conv(cfg.block_out_channels[0], 3, padding=1, dtype=self.dtype, name="conv_in")(x)
    context = encoder_hidden_states
    if context is not None:
      context = context.astype(self.dtype)
    mask = encoder_attention_mask
    x, skips = encoder_blocks(cfg, x, emb, context, mask, deterministic, self.dtype, self.remat)
    if down_block_additional_residuals is not None:
      skips = [s + r.astype(s.dtype) for s, r in zip(skips, down_block_additional_residuals)]
      x = x + mid_block_additional_residual.astype(x.dtype)

    heads, layers, tlayers = cfg.num_heads, cfg.layers, cfg.transformer_layers
    for i, block_type in enumerate(cfg.up_block_types):
      j = len(cfg.block_out_channels) - 1 - i  # matching down block
      n = layers[j] + 1  # one skip per resnet of this up block, newest first
      block_skips, skips = skips[-n:][::-1], skips[:-n]
      x = up_block(
        out_channels=cfg.block_out_channels[j],
        attention=block_type == "CrossAttnUpBlock2D",
        add_upsample=j > 0,
        config=cfg,
        heads=heads[j],
        transformer_layers=tlayers[j],
        dtype=self.dtype,
        name=f"up_blocks_{i}",
      )(x, block_skips, emb, context, mask, deterministic)

    x = nn.silu(
      pt.group_norm(cfg.norm_num_groups, cfg.norm_eps, dtype=self.dtype, name="conv_norm_out")(x)
    )
    return pt.conv(cfg.out_channels, 3, padding=1, dtype=self.dtype, name="conv_out")(x)


def example_inputs(
  config: UNetConfig, batch: int = 1, context_length: int = 1
) -> dict[str, jax.Array]:
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
  if config.has_text_time:  # One time id: the add_embedding input width is the same for any count.
    inputs["time_ids"] = jnp.zeros((batch, 1))
    inputs["text_embeds"] = jnp.zeros((batch, pooled_text_dim(config, 1)))
  return inputs


def abstract_variables(config: UNetConfig, dtype: Any = jnp.float32) -> Any:
  """Boxed (logically partitioned) variable shapes of the U-Net, via `jax.eval_shape` (no memory)."""
  model = UNet2DConditionModel(config, dtype=dtype)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), **example_inputs(config)))
