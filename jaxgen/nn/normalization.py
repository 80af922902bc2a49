"""The GAN families' normalisations: batch statistics, instance norm, spectral norm.

Each but `BatchNorm2d` holds parameters only (no mutable collections), so a
train state stays one params tree:

- `BatchStatNorm` normalises with the statistics of the batch it sees, at
  training and at test time. That is what pix2pix and CycleGAN do: their test
  script leaves BatchNorm in training mode unless `--eval` is given, and the
  pix2pix paper calls this out ("we apply batch normalization using the
  statistics of the test batch"). Running averages are never read, so there
  are none to keep.
- `InstanceNorm`: per-example, per-channel statistics over H and W
  (`torch.nn.InstanceNorm2d`, affine off by default as there).
- `SpectralConv`: a convolution whose kernel is divided by its largest
  singular value (Miyato et al. 2018). PyTorch carries the power-iteration
  vector `u` from step to step as a buffer; here it is re-estimated from a
  fixed start by `power_iterations` steps on every call, which needs no state
  and converges to the same σ (within 1% after 30 steps on random Gaussian
  kernels, the slow case; a test checks it against the exact norm). The
  parameters are the same as PyTorch's (`weight_orig`, `bias`): u and v are
  buffers there, not parameters.

- `BatchNorm2d` is `torch.nn.BatchNorm2d` with its running statistics in the
  `batch_stats` collection (Wav2Lip's networks, whose released weights carry
  them): a task that trains it returns the new statistics as non-gradient
  state updates.

Statistics use PyTorch's biased variance and eps 1e-5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.nn import partitioning as pt

EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.1  # torch's convention: weight of the new batch


class BatchStatisticsError(ValueError):
  """Training-mode BatchNorm was given one value per channel (torch refuses this too)."""


def _normalise(x: jax.Array, axes: tuple[int, ...], epsilon: float) -> jax.Array:
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=axes, keepdims=True)  # two-pass, as PyTorch
  return (x32 - mean) * jax.lax.rsqrt(var + epsilon)


class _AffineNorm(nn.Module):
  """Shared by the norms below: normalise over `axes`, then an optional per-channel affine."""

  affine: bool = True
  epsilon: float = EPSILON
  dtype: Any = jnp.float32

  def _finish(self, y: jax.Array) -> jax.Array:
    if self.affine:
      features = y.shape[-1]
      scale = self.param("scale", pt.annotated(nn.initializers.ones_init(), ("norm",)), (features,))
      bias = self.param("bias", pt.annotated(nn.initializers.zeros_init(), ("norm",)), (features,))
      y = y * scale + bias
    return y.astype(self.dtype)


class BatchStatNorm(_AffineNorm):
  """BatchNorm that always uses the current batch's statistics (over every axis but channels)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return self._finish(_normalise(x, tuple(range(x.ndim - 1)), self.epsilon))


class BatchNorm2d(nn.Module):
  """`torch.nn.BatchNorm2d` over the last axis; running statistics in `batch_stats`.

  Training normalises with the batch's biased variance and moves the running
  variance towards the unbiased one, as torch does (flax's BatchNorm keeps the
  biased one).
  """

  dtype: Any | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = x.shape[-1]
    scale = self.param("scale", pt.annotated(nn.initializers.ones_init(), ("norm",)), (features,))
    bias = self.param("bias", pt.annotated(nn.initializers.zeros_init(), ("norm",)), (features,))
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if train:
      count = int(np.prod(x.shape[:-1]))
      if count < 2:
        raise BatchStatisticsError(
          f"{self.name}: training BatchNorm needs more than 1 value per channel, found input "
          f"shape {x.shape}; use a larger batch or train=False"
        )
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x32, axis=axes)
      var = jnp.mean(jnp.square(x32 - mean), axis=axes)  # two-pass, as torch
      if not self.is_initializing():
        m = BATCH_NORM_MOMENTUM
        running_mean.value = (1 - m) * running_mean.value + m * mean
        running_var.value = (1 - m) * running_var.value + m * var * (count / (count - 1))
    else:
      mean, var = running_mean.value, running_var.value
    y = (x32 - mean) * jax.lax.rsqrt(var + EPSILON) * scale + bias
    return y.astype(self.dtype or x.dtype)


class InstanceNorm(_AffineNorm):
  """Per-example statistics over the spatial axes (NHWC); affine off by default, as in PyTorch."""

  affine: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return self._finish(_normalise(x, tuple(range(1, x.ndim - 1)), self.epsilon))


def spectral_norm_estimate(matrix: jax.Array, iterations: int) -> jax.Array:
  """Largest singular value of a 2-D `matrix` by power iteration from a fixed start.

  As in PyTorch, u and v are constants for the gradient (only σ = uᵀWv is
  differentiated through W).
  """
  w = jax.lax.stop_gradient(matrix)
  v = jnp.ones((w.shape[1],), w.dtype) / jnp.sqrt(w.shape[1])

  def step(v, _):
    u = w @ v
    u = u / (jnp.linalg.norm(u) + 1e-12)
    v = w.T @ u
    return v / (jnp.linalg.norm(v) + 1e-12), None

  v, _ = jax.lax.scan(step, v, None, length=iterations)
  u = w @ v
  u = u / (jnp.linalg.norm(u) + 1e-12)
  return u @ (matrix @ v)


class SpectralConv(nn.Module):
  """`nn.Conv` (NHWC, HWIO kernel) with its kernel divided by the kernel's spectral norm.

  The norm is that of the kernel reshaped to (out_channels, in·kh·kw), the
  matrix PyTorch's `spectral_norm` normalises.
  """

  features: int
  kernel_size: int
  strides: int = 1
  padding: int | Sequence[tuple[int, int]] = 0
  use_bias: bool = True
  power_iterations: int = 30
  kernel_init: Any = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param(
      "kernel",
      pt.annotated(self.kernel_init, (None, None, "conv_in", "conv_out")),
      (k, k, x.shape[-1], self.features),
    )
    matrix = jnp.transpose(kernel, (3, 2, 0, 1)).reshape(self.features, -1)
    kernel = kernel / spectral_norm_estimate(matrix, self.power_iterations)
    padding = self.padding
    if isinstance(padding, int):
      padding = ((padding, padding), (padding, padding))
    y = jax.lax.conv_general_dilated(
      x.astype(self.dtype),
      kernel.astype(self.dtype),
      (self.strides, self.strides),
      tuple(padding),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    if self.use_bias:
      bias = self.param(
        "bias", pt.annotated(nn.initializers.zeros_init(), ("conv_out",)), (self.features,)
      )
      y = y + bias.astype(self.dtype)
    return y
