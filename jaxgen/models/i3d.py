"""I3D: the Inflated Inception-V1 video network behind FVD (Carreira & Zisserman 2017).

The architecture and names follow piergiaj/pytorch-i3d's `InceptionI3d(400,
in_channels=3)`, a port of DeepMind's kinetics-i3d, which TF-Hub serves as
`i3d-kinetics-400` for the reference FVD (Unterthiner et al. 2018):

    Conv3d_1a_7x7 (stride 2) -> MaxPool3d_2a_3x3 (1x3x3, stride 1,2,2)
    -> Conv3d_2b_1x1 -> Conv3d_2c_3x3 -> MaxPool3d_3a_3x3 (1x3x3, stride 1,2,2)
    -> Mixed_3b, Mixed_3c -> MaxPool3d_4a_3x3 (3x3x3, stride 2)
    -> Mixed_4b..4f -> MaxPool3d_5a_2x2 (2x2x2, stride 2) -> Mixed_5b, Mixed_5c
    -> Logits: 2x7x7 average pool (VALID, stride 1), 1x1x1 conv with bias.

Every convolution and max pool pads TensorFlow-style `SAME`, computed from the
input size at call time (more padding after than before when it is odd).
Max pools pad with zeros, as pytorch-i3d's `F.pad`: their inputs are ReLU
outputs (>= 0), so this equals TensorFlow's -inf padding. Batch norm is
inference-mode (running statistics in the `batch_stats` collection), eps
1e-3, torch momentum 0.01 (flax momentum 0.99).

Layout is NTHWC; inputs are RGB in [-1, 1]. A 16x224x224 clip leaves a
1x7x7 map after Mixed_5c, so the average pool gives one 1024-d vector and
one 400-d logit vector; longer clips give several time steps, which are
averaged (as TF-Hub's `inception_i3d/Mean`). Module and leaf paths equal the
PyTorch state-dict names up to the leaf rename, so `jaxgen.convert.metric_networks`
imports the weights by a declarative leaf map with strict key and shape checks.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NUM_CLASSES = 400
POOL_FEATURES = 1024
BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.99  # flax convention: torch's momentum=0.01
INPUT_SIZE = 224
CLIP_LENGTH = 16
# The 2x7x7 VALID average pool of the Logits layer needs a >= 2x7x7 map after
# Mixed_5c, i.e. ceil(T / 8) >= 2 frames and ceil(H / 32) >= 7 pixels.
MIN_FRAMES = 9
MIN_INPUT_SIZE = 193
LOGITS_POOL_WINDOW = (2, 7, 7)

# (endpoint, channels of the six branches) for every inception block:
# b0 1x1; b1a 1x1 -> b1b 3x3x3; b2a 1x1 -> b2b 3x3x3; max pool -> b3b 1x1.
INCEPTION_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
  "Mixed_3b": (64, 96, 128, 16, 32, 32),
  "Mixed_3c": (128, 128, 192, 32, 96, 64),
  "Mixed_4b": (192, 96, 208, 16, 48, 64),
  "Mixed_4c": (160, 112, 224, 24, 64, 64),
  "Mixed_4d": (128, 128, 256, 24, 64, 64),
  "Mixed_4e": (112, 144, 288, 32, 64, 64),
  "Mixed_4f": (256, 160, 320, 32, 128, 128),
  "Mixed_5b": (256, 160, 320, 32, 128, 128),
  "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

Dtype = Any
Precision = Any  # jax.lax.Precision or None
Triple = tuple[int, int, int]
# A metric must not depend on the accelerator's float32 shortcuts (TF32 on
# GPU, bfloat16 passes on TPU): convolutions run in full float32.
DEFAULT_PRECISION = jax.lax.Precision.HIGHEST


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow `SAME` padding (before, after) of one axis: output ceil(size / stride)."""
  remainder = size % stride
  total = max(kernel - (stride if remainder == 0 else remainder), 0)
  return total // 2, total - total // 2


def _pad_same(x: jax.Array, kernel: Triple, strides: Triple) -> jax.Array:
  """Zero-pads the T, H, W axes of NTHWC `x` for a SAME window."""
  pads = [same_padding(x.shape[1 + i], kernel[i], strides[i]) for i in range(3)]
  return jnp.pad(x, [(0, 0), *pads, (0, 0)])


def max_pool_same(x: jax.Array, window: Triple, strides: Triple) -> jax.Array:
  """pytorch-i3d's `MaxPool3dSamePadding`: zero SAME padding, then a VALID max pool."""
  return nn.max_pool(_pad_same(x, window, strides), window, strides=strides, padding="VALID")


class Unit3D(nn.Module):
  """SAME-padded Conv3d, optional inference BatchNorm, optional ReLU (pytorch-i3d `Unit3D`)."""

  features: int
  kernel_size: Triple = (1, 1, 1)
  strides: Triple = (1, 1, 1)
  use_batch_norm: bool = True
  use_bias: bool = False
  activate: bool = True
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(
      self.features,
      self.kernel_size,
      strides=self.strides,
      padding="VALID",
      use_bias=self.use_bias,
      dtype=self.dtype,
      precision=self.precision,
      name="conv3d",
    )(_pad_same(x, self.kernel_size, self.strides))
    if self.use_batch_norm:
      x = nn.BatchNorm(
        use_running_average=True,
        momentum=BATCH_NORM_MOMENTUM,
        epsilon=BATCH_NORM_EPSILON,
        dtype=self.dtype,
        name="bn",
      )(x)
    return nn.relu(x) if self.activate else x


class InceptionModule(nn.Module):
  """Four parallel branches concatenated on channels (pytorch-i3d `InceptionModule`)."""

  channels: tuple[int, int, int, int, int, int]
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    unit = functools.partial(Unit3D, dtype=self.dtype, precision=self.precision)
    c = self.channels
    b0 = unit(c[0], name="b0")(x)
    b1 = unit(c[2], (3, 3, 3), name="b1b")(unit(c[1], name="b1a")(x))
    b2 = unit(c[4], (3, 3, 3), name="b2b")(unit(c[3], name="b2a")(x))
    b3 = unit(c[5], name="b3b")(max_pool_same(x, (3, 3, 3), (1, 1, 1)))
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


@dataclasses.dataclass(frozen=True)
class I3DOutputs:
  """What I3D computes per clip.

  pool: (N, 1024) the Logits layer's average-pooled Mixed_5c features
      (the `extract_features` vector of pytorch-i3d ports), averaged over
      the remaining time steps.
  logits: (N, 400) Kinetics-400 logits before the softmax, averaged over time
      steps: TF-Hub's `RGB/inception_i3d/Mean`, the reference FVD embedding.
  """

  pool: jax.Array
  logits: jax.Array


jax.tree_util.register_dataclass(I3DOutputs, data_fields=["pool", "logits"], meta_fields=[])


def check_videos(videos: Any, *, name: str = "videos") -> None:
  """Raises ValueError unless `videos` is (N, T, H, W, 3) with T, H, W large enough for I3D."""
  shape = tuple(videos.shape)
  if len(shape) != 5 or shape[-1] != 3:
    raise ValueError(f"{name} must be NTHWC with 3 channels, got shape {shape}")
  _, frames, height, width, _ = shape
  if frames < MIN_FRAMES or min(height, width) < MIN_INPUT_SIZE:
    raise ValueError(
      f"{name} must have at least {MIN_FRAMES} frames of at least "
      f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels (I3D's 2x7x7 logits pool), "
      f"got {frames} frames of {height}x{width}"
    )


class InceptionI3d(nn.Module):
  """I3D on (N, T, H, W, 3) clips in [-1, 1]; returns I3DOutputs.

  The output of every endpoint is sown into the `intermediates` collection
  as one dict `endpoints` keyed by pytorch-i3d's endpoint names, `Logits`
  included (apply with `mutable=["intermediates"]`).
  """

  num_classes: int = NUM_CLASSES
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  def setup(self):
    unit = functools.partial(Unit3D, dtype=self.dtype, precision=self.precision)
    self.Conv3d_1a_7x7 = unit(64, (7, 7, 7), (2, 2, 2))
    self.Conv3d_2b_1x1 = unit(64)
    self.Conv3d_2c_3x3 = unit(192, (3, 3, 3))
    self.mixed = {
      name: InceptionModule(channels, dtype=self.dtype, precision=self.precision, name=name)
      for name, channels in INCEPTION_CHANNELS.items()
    }
    self.logits = unit(self.num_classes, use_batch_norm=False, use_bias=True, activate=False)

  def __call__(self, videos: jax.Array) -> I3DOutputs:
    check_videos(videos)
    endpoints = {}
    x = endpoints["Conv3d_1a_7x7"] = self.Conv3d_1a_7x7(videos)
    x = endpoints["MaxPool3d_2a_3x3"] = max_pool_same(x, (1, 3, 3), (1, 2, 2))
    x = endpoints["Conv3d_2b_1x1"] = self.Conv3d_2b_1x1(x)
    x = endpoints["Conv3d_2c_3x3"] = self.Conv3d_2c_3x3(x)
    x = endpoints["MaxPool3d_3a_3x3"] = max_pool_same(x, (1, 3, 3), (1, 2, 2))
    pools = {
      "Mixed_4b": ((3, 3, 3), "MaxPool3d_4a_3x3"),
      "Mixed_5b": ((2, 2, 2), "MaxPool3d_5a_2x2"),
    }
    for name, block in self.mixed.items():
      if name in pools:
        window, pool_name = pools[name]
        x = endpoints[pool_name] = max_pool_same(x, window, (2, 2, 2))
      x = endpoints[name] = block(x)
    # Logits: VALID average pool (dropout is the identity at inference).
    pooled = nn.avg_pool(x, LOGITS_POOL_WINDOW, strides=(1, 1, 1), padding="VALID")
    logits = endpoints["Logits"] = self.logits(pooled)  # (N, T', H', W', classes)
    self.sow("intermediates", "endpoints", endpoints)
    # A 1x1x1 conv is affine, so averaging before or after it agrees; TF-Hub
    # averages the logits over time, pytorch-i3d ports flatten the pool.
    return I3DOutputs(
      pool=jnp.mean(pooled, axis=(1, 2, 3)), logits=jnp.mean(logits, axis=(1, 2, 3))
    )


@jax.jit
def i3d_outputs(variables: Mapping[str, Any], videos: jax.Array) -> I3DOutputs:
  """Jitted forward of the default InceptionI3d (one compile per input shape)."""
  return InceptionI3d().apply(variables, videos)


def abstract_variables(
  num_classes: int = NUM_CLASSES, shape: Sequence[int] = (1, CLIP_LENGTH, INPUT_SIZE, INPUT_SIZE, 3)
) -> dict[str, Any]:
  """Shapes and dtypes of the I3D variables (params, batch_stats), without allocating them."""
  dummy = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
  return jax.eval_shape(InceptionI3d(num_classes).init, jax.random.key(0), dummy)


def parameter_count(num_classes: int = NUM_CLASSES) -> int:
  """Trainable parameters (the `params` collection) at paper size, by `jax.eval_shape`."""
  params = abstract_variables(num_classes)["params"]
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))
