"""Conditional 2-D U-Net, equivalent to diffusers' `UNet2DConditionModel`.

The module tree mirrors diffusers so weights convert mechanically: e.g.
`down_blocks_0/attentions_1/transformer_blocks_0/attn1/to_q/kernel` is
`down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q.weight` (see
`jaxgen.convert.diffusers_unet`). Images are NHWC. The architecture is a
`UNetConfig` (diffusers' config keys; `jaxgen.models.unet_config`, re-exported
here); the input checks live in `jaxgen.models.unet_checks` (re-exported too).

With `config.temporal` set it is also diffusers' `UNet3DConditionModel`
(`jaxgen.convert.diffusers_unet3d`): the same U-Net with temporal layers
(`jaxgen.nn.temporal`: `transformer_in`, `temp_convs_<i>` after each resnet,
`temp_attentions_<i>` after each spatial transformer). Videos are NTHWC; inside,
frames are folded into the batch, (B*T, H, W, C), so every spatial layer is
the image model's. An NHWC sample skips the temporal layers and is exactly
the image model, for joint image-video training (Make-A-Video, Video LDM).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.errors import UnsupportedConfigError  # noqa: F401  (re-export)
from jaxgen.models.unet_checks import (  # noqa: F401  (re-exports)
  check_added_conditions,
  check_additional_residuals,
  check_class_labels,
  check_fps,
  check_inputs,
)
from jaxgen.models.unet_config import UNetConfig, pooled_text_dim
from jaxgen.nn import partitioning as pt
from jaxgen.nn.embeddings import TimestepEmbedding, timestep_embedding
from jaxgen.nn.precision import remat_module
from jaxgen.nn.resnet import ResnetBlock2D
from jaxgen.nn.sampling import Downsample2D, Upsample2D
from jaxgen.nn.temporal import (
  FpsEmbedding,
  TemporalConvLayer,
  TransformerTemporalModel,
  fold_frames,
  unfold_frames,
)
from jaxgen.nn.transformer import Transformer2DModel

# diffusers' `transformer_in` has 8 heads whatever the config.
TRANSFORMER_IN_HEADS = 8


class UNetDownBlock(nn.Module):
  """`DownBlock2D` / `CrossAttnDownBlock2D`: (resnet [+ transformer]) x layers, then downsample.

  With `num_frames` (a video, frames folded into the batch) it is diffusers'
  `DownBlock3D` / `CrossAttnDownBlock3D`: temporal layers follow each resnet
  and transformer.
  """

  out_channels: int
  num_layers: int
  attention: bool
  add_downsample: bool
  config: UNetConfig
  heads: int
  transformer_layers: int
  dtype: Any = jnp.float32
  num_frames: int | None = None

  @nn.compact
  def __call__(self, x, temb, context, context_mask, deterministic):
    skips = []
    for i in range(self.num_layers):
      x = _layer(self, i, x, temb, context, context_mask, deterministic)
      skips.append(x)
    if self.add_downsample:
      x = Downsample2D(
        self.out_channels,
        padding=self.config.downsample_padding,
        dtype=self.dtype,
        name="downsamplers_0",
      )(x)
      skips.append(x)
    return x, skips


class UNetUpBlock(nn.Module):
  """`UpBlock2D` / `CrossAttnUpBlock2D`: (concat skip, resnet [+ transformer]) per skip, then upsample.

  With `num_frames`: diffusers' `UpBlock3D` / `CrossAttnUpBlock3D`.
  """

  out_channels: int
  attention: bool
  add_upsample: bool
  config: UNetConfig
  heads: int
  transformer_layers: int
  dtype: Any = jnp.float32
  num_frames: int | None = None

  @nn.compact
  def __call__(self, x, skips, temb, context, context_mask, deterministic):
    for i, skip in enumerate(skips):
      x = jnp.concatenate([x, skip], axis=-1)
      x = _layer(self, i, x, temb, context, context_mask, deterministic)
    if self.add_upsample:
      x = Upsample2D(self.out_channels, dtype=self.dtype, name="upsamplers_0")(x)
    return x


class UNetMidBlock(nn.Module):
  """`UNetMidBlock2DCrossAttn` (resnet, transformer, resnet) or `UNetMidBlock2D` (one resnet).

  With `num_frames`: diffusers' `UNetMidBlock3DCrossAttn` (resnets_0,
  temp_convs_0, attentions_0, temp_attentions_0, resnets_1, temp_convs_1).
  """

  attention: bool
  config: UNetConfig
  heads: int
  transformer_layers: int
  dtype: Any = jnp.float32
  num_frames: int | None = None

  @nn.compact
  def __call__(self, x, temb, context, context_mask, deterministic):
    cfg, frames = self.config, self.num_frames

    def resnet(i, x):
      x = _resnet(
        cfg, None, self.dtype, f"resnets_{i}", output_scale_factor=cfg.mid_block_scale_factor
      )(x, temb, deterministic)
      if frames:
        x = _temporal_conv(cfg, frames, self.dtype, f"temp_convs_{i}")(x, deterministic)
      return x

    x = resnet(0, x)
    if self.attention:
      channels = x.shape[-1]
      x = _spatial_transformer(
        cfg, channels, self.heads, self.transformer_layers, self.dtype, "attentions_0"
      )(x, context, context_mask, deterministic)
      if frames:
        x = _temporal_attention(cfg, channels, self.heads, frames, self.dtype, "temp_attentions_0")(
          x, deterministic
        )
      x = resnet(1, x)
    return x


def _layer(block, i: int, x, temb, context, context_mask, deterministic):
  """Layer i of a down/up block: resnet [+ temporal conv] [+ transformer [+ temporal attention]]."""
  cfg, channels, frames, dtype = block.config, block.out_channels, block.num_frames, block.dtype
  x = _resnet(cfg, channels, dtype, f"resnets_{i}")(x, temb, deterministic)
  if frames:
    x = _temporal_conv(cfg, frames, dtype, f"temp_convs_{i}")(x, deterministic)
  if block.attention:
    x = _spatial_transformer(
      cfg, channels, block.heads, block.transformer_layers, dtype, f"attentions_{i}"
    )(x, context, context_mask, deterministic)
    if frames:
      x = _temporal_attention(cfg, channels, block.heads, frames, dtype, f"temp_attentions_{i}")(
        x, deterministic
      )
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


def _temporal_conv(cfg: UNetConfig, num_frames: int, dtype, name: str) -> TemporalConvLayer:
  return TemporalConvLayer(
    num_frames,
    groups=cfg.norm_num_groups,
    dropout=cfg.temporal_dropout,
    merge=cfg.temporal_merge,
    dtype=dtype,
    name=name,
  )


def _temporal_attention(
  cfg: UNetConfig, channels: int, heads: int, num_frames: int, dtype, name: str
) -> TransformerTemporalModel:
  """A temporal transformer: `heads` of width channels // heads (the spatial ones', as diffusers)."""
  return TransformerTemporalModel(
    heads,
    channels // heads,
    num_frames,
    norm_num_groups=cfg.norm_num_groups,
    frame_embedding=cfg.temporal_frame_embedding,
    merge=cfg.temporal_merge,
    dtype=dtype,
    name=name,
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
  num_frames: int | None = None,
) -> tuple[jax.Array, list[jax.Array]]:
  """`conv_in`'s output -> (the mid block's output, the skips: conv_in's and each down layer's).

  The encoder half shared by the U-Net and a ControlNet's trainable copy;
  like `conditioning_embedding`, its blocks (`down_blocks_<i>`, `mid_block`)
  are the caller's submodules. `num_frames`: a video with frames folded into
  the batch (temporal layers on); None: images.
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
      num_frames=num_frames,
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
      num_frames=num_frames,
      name="mid_block",
    )(x, emb, context, mask, deterministic)
  return x, skips


class UNet2DConditionModel(nn.Module):
  """Conditional U-Net (diffusers `UNet2DConditionModel`) on NHWC inputs; NTHWC videos too
  with `config.temporal` (diffusers `UNet3DConditionModel`).

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
    fps: jax.Array | float | None = None,
  ) -> jax.Array:
    """Predicts the model output (e.g. noise) for `sample`.

    Args:
      sample: (B, H, W, in_channels); H, W multiples of 2**num_downsamples.
        With `config.temporal`, also videos (B, T, H, W, in_channels): every
        other input then holds one entry per video (B), repeated over its
        frames inside; images (4-D) skip the temporal layers.
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
        both or neither. For videos in the folded layout (B*T, h, w, c).
      fps: with `fps_conditioning`, for videos only: frames per second,
        scalar or (B,).

    Returns:
      (B, H, W, out_channels) in `dtype`; (B, T, H, W, out_channels) for videos.
    """
    cfg = self.config
    check_inputs(
      cfg, sample, timesteps, encoder_hidden_states, encoder_attention_mask, class_labels
    )
    check_added_conditions(cfg, sample.shape[0], text_embeds, time_ids)
    check_fps(cfg, sample.shape, fps)
    frames = sample.shape[1] if sample.ndim == 5 else None  # None: images, no temporal layers
    x = sample if frames is None else fold_frames(sample)
    check_additional_residuals(
      cfg, x.shape, down_block_additional_residuals, mid_block_additional_residual
    )
    deterministic = not train
    # `deterministic` (a Python bool, the last positional argument) stays static under remat.
    up_block = remat_module(UNetUpBlock, self.remat, static_argnums=(6,))
    emb = conditioning_embedding(
      cfg, sample.shape[0], timesteps, class_labels, text_embeds, time_ids, self.dtype
    )
    context, mask = encoder_hidden_states, encoder_attention_mask
    if context is not None:
      context = context.astype(self.dtype)
    if frames is not None:
      emb, context, mask = _video_conditions(cfg, frames, emb, context, mask, fps, self.dtype)
    x = x.astype(self.dtype)
    if cfg.center_input_sample:
      x = 2 * x - 1.0
    x = pt.conv(cfg.block_out_channels[0], 3, padding=1, dtype=self.dtype, name="conv_in")(x)
    if frames is not None:
      x = TransformerTemporalModel(
        TRANSFORMER_IN_HEADS,
        cfg.temporal_in_head_dim,
        frames,
        norm_num_groups=cfg.norm_num_groups,
        frame_embedding=cfg.temporal_frame_embedding,
        merge=cfg.temporal_merge,
        dtype=self.dtype,
        name="transformer_in",
      )(x, deterministic)
    x, skips = encoder_blocks(
      cfg, x, emb, context, mask, deterministic, self.dtype, self.remat, frames
    )
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
        num_frames=frames,
        name=f"up_blocks_{i}",
      )(x, block_skips, emb, context, mask, deterministic)

    x = nn.silu(
      pt.group_norm(cfg.norm_num_groups, cfg.norm_eps, dtype=self.dtype, name="conv_norm_out")(x)
    )
    x = pt.conv(cfg.out_channels, 3, padding=1, dtype=self.dtype, name="conv_out")(x)
    return x if frames is None else unfold_frames(x, frames)


def _video_conditions(
  cfg: UNetConfig, frames: int, emb: jax.Array, context: Any, mask: Any, fps: Any, dtype: Any
) -> tuple[jax.Array, Any, Any]:
  """Per-video conditions -> one copy per frame (frames folded into the batch), as diffusers.

  With `fps_conditioning` the `fps_embedding` (the caller's submodule, zero at
  initialisation) is added to the time embedding first.
  """
  if cfg.fps_conditioning:
    fps = jnp.broadcast_to(jnp.asarray(fps, jnp.float32), (emb.shape[0],))
    c0 = cfg.block_out_channels[0]
    emb = emb + FpsEmbedding(cfg.time_embed_dim, c0, dtype=dtype, name="fps_embedding")(fps)
  return tuple(None if a is None else jnp.repeat(a, frames, axis=0) for a in (emb, context, mask))


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
  if config.temporal is not None:  # a one-frame video: creates the temporal layers too
    inputs["sample"] = inputs["sample"][:, None]
    if config.fps_conditioning:
      inputs["fps"] = jnp.zeros((batch,))
  return inputs


def abstract_variables(config: UNetConfig, dtype: Any = jnp.float32) -> Any:
  """Boxed (logically partitioned) variable shapes of the U-Net, via `jax.eval_shape` (no memory)."""
  model = UNet2DConditionModel(config, dtype=dtype)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), **example_inputs(config)))
