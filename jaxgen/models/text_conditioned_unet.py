"""A text encoder trained from scratch that conditions a diffusers-compatible U-Net.

The denoiser of the `text_to_image` and `latent_diffusion` tasks, with its
array helpers: CoordConv input channels and space-to-depth patching.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.transformer import TextTransformer
from jaxgen.models.unet import UNet2DConditionModel
from jaxgen.models.unet_config import UNetConfig
from jaxgen.nn import partitioning as pt
from jaxgen.nn.pooling import masked_mean
from jaxgen.nn.temporal import fold_frames, unfold_frames


def coordinate_channels(batch: int, height: int, width: int) -> jax.Array:
  """(B, H, W, 2) pixel-centre coordinates in [-1, 1] (y, x): CoordConv inputs.

  Convolutions are translation-equivariant, so without them a U-Net learns
  "top left" only slowly, from zero-padding effects at the borders.
  """
  ys = (jnp.arange(height, dtype=jnp.float32) + 0.5) / height * 2 - 1
  xs = (jnp.arange(width, dtype=jnp.float32) + 0.5) / width * 2 - 1
  grid = jnp.stack(jnp.meshgrid(ys, xs, indexing="ij"), axis=-1)
  return jnp.broadcast_to(grid, (batch, height, width, 2))


def space_to_depth(x: jax.Array, patch: int) -> jax.Array:
  """(B, H, W, C) -> (B, H/p, W/p, p*p*C): each p×p patch becomes one pixel."""
  return einops.rearrange(x, "b (h p) (w q) c -> b h w (p q c)", p=patch, q=patch)


def depth_to_space(x: jax.Array, patch: int) -> jax.Array:
  """Inverse of `space_to_depth`."""
  return einops.rearrange(x, "b h w (p q c) -> b (h p) (w q) c", p=patch, q=patch)


class TextConditionedUNet(nn.Module):
  """Text encoder + U-Net.

  The text reaches the U-Net twice, as in GLIDE and Imagen: token states via
  cross-attention, and (with `unet.class_embed_type="identity"`) the pooled
  text projected into the timestep embedding, which modulates every ResNet
  block. With `patch_size` p > 1 the U-Net works on p×p patches folded into
  channels (space-to-depth, as in Simple Diffusion), p² times cheaper. With
  `coord_channels`, two coordinate maps are concatenated to its input.
  `encode_text` and `denoise` are separate methods so sampling
  encodes the prompt once, not at every step.

  `dtype` is the compute dtype of both networks and `remat` the U-Net's
  rematerialisation policy (`jaxgen.nn.precision.model_policy` reads them
  from `model.compute_dtype` / `model.remat`); parameters stay float32 and
  `denoise` returns float32, so losses and samplers run in float32.
  """

  text: Mapping
  unet: UNetConfig
  coord_channels: bool = True
  patch_size: int = 1
  dtype: Any = jnp.float32
  remat: str = "none"

  def setup(self):
    self.text_encoder = TextTransformer(**self.text, dtype=self.dtype)
    if self.unet.class_embed_type == "identity":
      self.pooled_text_proj = pt.dense(
        self.unet.time_embed_dim, ("embed", "time_embed"), dtype=self.dtype, name="pooled_text_proj"
      )
    self.denoiser = UNet2DConditionModel(self.unet, dtype=self.dtype, remat=self.remat)

  def encode_text(self, tokens, mask):
    """(token states (B, L, D), pooled (B, D))."""
    states = self.text_encoder(tokens, mask)
    return states, masked_mean(states, mask)

  def denoise(self, x, t, context, context_mask, pooled, train: bool = False, control=None):
    """The prediction for noisy `x`; `control(unet_input, class_labels) -> (down residuals, mid
    residual)` is a ControlNet's (`jaxgen.models.controlnet`) on the U-Net's own inputs, or None.

    `x` is images (B, H, W, C) or, for a U-Net with temporal layers, videos
    (B, T, H, W, C): patching and coordinate maps work per frame (frames
    folded into the batch), the U-Net sees the video whole.
    """
    frames = x.shape[1] if x.ndim == 5 else None
    if frames is not None and control is not None:
      raise ValueError(
        f"control: ControlNet residuals take images (B, H, W, C), found a video of shape {x.shape}"
      )
    x = space_to_depth(x if frames is None else fold_frames(x), self.patch_size)
    if self.coord_channels:
      x = jnp.concatenate([x, coordinate_channels(*x.shape[:3]).astype(x.dtype)], axis=-1)
    class_labels = None
    if self.unet.class_embed_type == "identity":
      class_labels = self.pooled_text_proj(pooled)
    down, mid = (None, None) if control is None else control(x, class_labels)
    out = self.denoiser(
      x if frames is None else unfold_frames(x, frames),
      t,
      context,
      encoder_attention_mask=context_mask,
      class_labels=class_labels,
      train=train,
      down_block_additional_residuals=down,
      mid_block_additional_residual=mid,
    )
    out = depth_to_space(out if frames is None else fold_frames(out), self.patch_size)
    return (out if frames is None else unfold_frames(out, frames)).astype(jnp.float32)

  def __call__(self, x, t, tokens, mask, train: bool = False):
    states, pooled = self.encode_text(tokens, mask)
    return self.denoise(x, t, states, mask, pooled, train=train)
