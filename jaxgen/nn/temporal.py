"""Temporal layers that turn an image U-Net into a video U-Net.

Make-A-Video's pseudo-3-D layers and ModelScope's (diffusers
`TemporalConvLayer`, `TransformerTemporalModel`): a video's activations keep
the image layout with the frames folded into the batch, (B*T, H, W, C), so
every spatial layer of the image model runs unchanged on them; each temporal
layer unfolds (B, T, H, W, C), mixes information across T only, and folds
back. Frames never get a logical axis of their own: a video batch shards
over the mesh exactly as an image batch does.

Both layers are the identity at initialisation (the last temporal conv and the
temporal transformer's output projection start at zero), so a video U-Net
inflated from an image U-Net first reproduces it on every frame. `merge`
chooses how the temporal branch joins the spatial stream:
  "residual"  x + temporal(x) (ModelScope, Make-A-Video);
  "learned"   alpha * x + (1 - alpha) * (x + temporal(x)) with
              alpha = sigmoid(mix_factor), a learned scalar (Video LDM;
              diffusers' `AlphaBlender` "learned", mix_factor starting at
              0.5 as in Stable Video Diffusion).
Names follow diffusers (`conv1_0` is `conv1.0`, the GroupNorm of the first
`nn.Sequential`; `conv1_2` its Conv3d), so weights convert by a key map.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt
from jaxgen.nn.embeddings import timestep_embedding
from jaxgen.nn.transformer import BasicTransformerBlock

MERGES = ("residual", "learned")
MIX_FACTOR_INIT = 0.5


def unfold_frames(x: jax.Array, num_frames: int) -> jax.Array:
  """(B*T, ...) -> (B, T, ...), with a named error when the batch is not whole videos."""
  if x.shape[0] % num_frames:
    raise ValueError(
      f"num_frames: the batch axis ({x.shape[0]}) must hold whole videos of {num_frames} "
      f"frames (B*T, H, W, C), found shape {x.shape}"
    )
  return x.reshape(x.shape[0] // num_frames, num_frames, *x.shape[1:])


def fold_frames(x: jax.Array) -> jax.Array:
  """(B, T, ...) -> (B*T, ...)."""
  return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def temporal_conv(
  features: int, *, zero_init: bool = False, dtype: Any = jnp.float32, name: str | None = None
) -> nn.Conv:
  """Conv over frames only on (B, T, H, W, C): kernel (3, 1, 1), zero padding 1 in time.

  The THWIO kernel is named (None, None, None, conv_in, conv_out), like a
  2-D conv's: no axis for frames.
  """
  kernel_init = nn.initializers.zeros_init() if zero_init else nn.initializers.lecun_normal()
  return nn.Conv(
    features,
    (3, 1, 1),
    padding=((1, 1), (0, 0), (0, 0)),
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=pt.annotated(kernel_init, (None, None, None, "conv_in", "conv_out")),
    bias_init=pt.annotated(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


def check_merge(merge: str) -> None:
  if merge not in MERGES:
    raise ValueError(f"merge: expected one of {MERGES}, found {merge!r}")


def merge_temporal(module: nn.Module, x: jax.Array, update: jax.Array, merge: str) -> jax.Array:
  """Joins the temporal branch `update` (zero at init) to the spatial stream `x`.

  Called inside a compact `__call__`: "learned" creates the module's
  `mix_factor` parameter.
  """
  if merge == "residual":
    return x + update
  mix = module.param(
    "mix_factor",
    pt.annotated(nn.initializers.constant(MIX_FACTOR_INIT), (None,)),
    (1,),
    jnp.float32,
  )
  alpha = jax.nn.sigmoid(mix).astype(x.dtype)
  return alpha * x + (1 - alpha) * (x + update)


class TemporalConvLayer(nn.Module):
  """4 x [GroupNorm, SiLU, (Dropout), Conv3d (3, 1, 1)] over frames, last conv zero (diffusers).

  Input and output (B*T, H, W, C). GroupNorm statistics run over the frames
  of a video together, as diffusers' (B, C, T, H, W) layout does.

  Attributes:
    num_frames: T, to unfold the batch axis.
    groups, eps: GroupNorm settings (diffusers: the U-Net's groups, eps 1e-5).
    dropout: before the 2nd-4th convs (0.1 in ModelScope).
    merge: "residual" or "learned" (module docstring).
  """

  num_frames: int
  groups: int = 32
  eps: float = 1e-5
  dropout: float = 0.0
  merge: str = "residual"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    check_merge(self.merge)
    frames = unfold_frames(x, self.num_frames)
    h = frames
    for i in range(1, 5):
      h = pt.group_norm(self.groups, self.eps, dtype=self.dtype, name=f"conv{i}_0")(h)
      h = nn.silu(h)
      if i > 1:  # nn.Sequential(GroupNorm, SiLU, Dropout, Conv3d): the conv is index 3
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
      conv_name = f"conv{i}_{2 if i == 1 else 3}"
      h = temporal_conv(x.shape[-1], zero_init=i == 4, dtype=self.dtype, name=conv_name)(h)
    return fold_frames(merge_temporal(self, frames, h, self.merge))


class TransformerTemporalModel(nn.Module):
  """Attention over the frames of each pixel (diffusers `TransformerTemporalModel`).

  GroupNorm (eps 1e-6, statistics over the video) -> `proj_in` (linear) ->
  [+ sinusoidal frame-index embedding] -> BasicTransformerBlocks with two
  self-attentions and a GEGLU feed-forward over the T tokens of each pixel ->
  `proj_out` (zero at init) -> merged with the input. (B*T, H, W, C) in and out.

  Attributes:
    heads, dim_head: attention shape; inner width heads * dim_head.
    num_frames: T.
    frame_embedding: add sinusoids of the frame index 0..T-1 to the tokens
      after `proj_in` (off in ModelScope, which has no temporal positions).
    merge: "residual" or "learned".
  """

  heads: int
  dim_head: int
  num_frames: int
  num_layers: int = 1
  norm_num_groups: int = 32
  frame_embedding: bool = False
  merge: str = "residual"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    check_merge(self.merge)
    frames = unfold_frames(x, self.num_frames)
    batch, num_frames, height, width, channels = frames.shape
    inner = self.heads * self.dim_head
    h = pt.group_norm(self.norm_num_groups, 1e-6, dtype=self.dtype, name="norm")(frames)
    h = h.transpose(0, 2, 3, 1, 4).reshape(batch * height * width, num_frames, channels)
    h = pt.dense(inner, ("conv_in", "embed"), dtype=self.dtype, name="proj_in")(h)
    if self.frame_embedding:
      h = h + timestep_embedding(jnp.arange(num_frames), inner).astype(h.dtype)[None]
    for i in range(self.num_layers):
      h = BasicTransformerBlock(
        self.heads,
        self.dim_head,
        double_self_attention=True,
        dtype=self.dtype,
        name=f"transformer_blocks_{i}",
      )(h, deterministic=deterministic)
    h = pt.dense(
      channels,
      ("embed", "conv_out"),
      dtype=self.dtype,
      kernel_init=nn.initializers.zeros_init(),
      name="proj_out",
    )(h)
    h = h.reshape(batch, height, width, num_frames, channels).transpose(0, 3, 1, 2, 4)
    return fold_frames(merge_temporal(self, frames, h, self.merge))


class FpsEmbedding(nn.Module):
  """Frame rate (B,) -> (B, features) added to the time embedding; zero at initialisation.

  Sinusoids of the fps (as timesteps are embedded) -> `linear_1` -> SiLU ->
  `linear_2`, whose kernel and bias start at zero, so an inflated model
  ignores fps until it learns to use it (Make-A-Video conditions on fps).
  """

  features: int
  sinusoid_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, fps: jax.Array) -> jax.Array:
    s = timestep_embedding(fps, self.sinusoid_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
    h = pt.dense(self.features, ("embed", "time_embed"), dtype=self.dtype, name="linear_1")(
      s.astype(self.dtype)
    )
    return pt.dense(
      self.features,
      ("mlp", "time_embed"),
      dtype=self.dtype,
      kernel_init=nn.initializers.zeros_init(),
      name="linear_2",
    )(nn.silu(h))
