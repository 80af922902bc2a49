"""The FID variant of InceptionV3 (pytorch-fid / torch-fidelity / torchmetrics).

This is the network behind FID, KID and Inception Score: TensorFlow's 2015
Inception graph (`inception-2015-12-05`) as ported to PyTorch by pytorch-fid.
It differs from torchvision's `inception_v3` in four ways, all reproduced here:

* Mixed_5b/5c/5d, 6b-6e and 7b average-pool their pooling branch without
  counting the zero padding (TensorFlow's `SAME` average pool);
* Mixed_7c max-pools its pooling branch (an artefact of the original graph);
* the classifier has 1008 outputs and there is no auxiliary head;
* inputs in [0, 1] are bilinearly resized to 299x299 (torch `interpolate`,
  `align_corners=False`, no antialiasing) and then mapped to [-1, 1].

Layout is NHWC. Submodule names equal the PyTorch attribute names
(`Mixed_6b.branch7x7_2.conv`, ...), so the weight importer
(`jaxgen.convert.metric_networks`) is a declarative rename of leaf names plus a
layout transform, with strict key and shape checks.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
MIN_INPUT_SIZE = 75  # smaller maps vanish before Mixed_7c
NUM_LOGITS = 1008
POOL_FEATURES = 2048
BATCH_NORM_EPSILON = 1e-3

Dtype = Any
Precision = Any  # jax.lax.Precision or None
# Metrics must not depend on the accelerator's default float32 shortcuts
# (TF32 on GPU, bfloat16 passes on TPU): compute convolutions in full float32.
DEFAULT_PRECISION = jax.lax.Precision.HIGHEST
Padding = tuple[tuple[int, int], tuple[int, int]]


def _padding(pad_h: int, pad_w: int) -> Padding:
  return ((pad_h, pad_h), (pad_w, pad_w))


def avg_pool_same_exclude_padding(x: jax.Array) -> jax.Array:
  """3x3 stride-1 average pool that ignores the zero padding (TensorFlow `SAME`)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=_padding(1, 1), count_include_pad=False)


def max_pool_same(x: jax.Array) -> jax.Array:
  """3x3 stride-1 max pool, padding with -inf (as torch `max_pool2d(padding=1)`)."""
  return nn.max_pool(x, (3, 3), strides=(1, 1), padding=_padding(1, 1))


def max_pool_reduce(x: jax.Array) -> jax.Array:
  """3x3 stride-2 unpadded max pool (torch `MaxPool2d(3, stride=2)`)."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class ConvBatchNormRelu(nn.Module):
  """torchvision's `BasicConv2d`: bias-free conv, inference BatchNorm (eps 1e-3), ReLU."""

  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: Padding = ((0, 0), (0, 0))
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(
      self.features,
      self.kernel_size,
      strides=self.strides,
      padding=self.padding,
      use_bias=False,
      dtype=self.dtype,
      precision=self.precision,
      name="conv",
    )(x)
    x = nn.BatchNorm(
      use_running_average=True, epsilon=BATCH_NORM_EPSILON, dtype=self.dtype, name="bn"
    )(x)
    return nn.relu(x)


def _conv(
  features: int,
  kernel: tuple[int, int],
  *,
  dtype: Dtype | None,
  precision: Precision,
  name: str | None = None,
  strides: tuple[int, int] = (1, 1),
  pad: tuple[int, int] = (0, 0),
) -> ConvBatchNormRelu:
  return ConvBatchNormRelu(
    features, kernel, strides, _padding(*pad), dtype=dtype, precision=precision, name=name
  )


class InceptionA(nn.Module):
  """35x35 block (Mixed_5b/5c/5d) with the padding-excluding average pool."""

  pool_features: int
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(_conv, dtype=self.dtype, precision=self.precision)
    branch1x1 = conv(64, (1, 1), name="branch1x1")(x)
    branch5x5 = conv(48, (1, 1), name="branch5x5_1")(x)
    branch5x5 = conv(64, (5, 5), pad=(2, 2), name="branch5x5_2")(branch5x5)
    branch3x3dbl = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(96, (3, 3), pad=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = conv(96, (3, 3), pad=(1, 1), name="branch3x3dbl_3")(branch3x3dbl)
    branch_pool = avg_pool_same_exclude_padding(x)
    branch_pool = conv(self.pool_features, (1, 1), name="branch_pool")(branch_pool)
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
  """35x35 -> 17x17 reduction block (Mixed_6a)."""

  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(_conv, dtype=self.dtype, precision=self.precision)
    branch3x3 = conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
    branch3x3dbl = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(96, (3, 3), pad=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, max_pool_reduce(x)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block with factorised 7x7 convolutions (Mixed_6b-6e)."""

  channels_7x7: int
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(_conv, dtype=self.dtype, precision=self.precision)
    c7 = self.channels_7x7
    branch1x1 = conv(192, (1, 1), name="branch1x1")(x)
    branch7x7 = conv(c7, (1, 1), name="branch7x7_1")(x)
    branch7x7 = conv(c7, (1, 7), pad=(0, 3), name="branch7x7_2")(branch7x7)
    branch7x7 = conv(192, (7, 1), pad=(3, 0), name="branch7x7_3")(branch7x7)
    dbl = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
    dbl = conv(c7, (7, 1), pad=(3, 0), name="branch7x7dbl_2")(dbl)
    dbl = conv(c7, (1, 7), pad=(0, 3), name="branch7x7dbl_3")(dbl)
    dbl = conv(c7, (7, 1), pad=(3, 0), name="branch7x7dbl_4")(dbl)
    dbl = conv(192, (1, 7), pad=(0, 3), name="branch7x7dbl_5")(dbl)
    branch_pool = avg_pool_same_exclude_padding(x)
    branch_pool = conv(192, (1, 1), name="branch_pool")(branch_pool)
    return jnp.concatenate([branch1x1, branch7x7, dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
  """17x17 -> 8x8 reduction block (Mixed_7a)."""

  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(_conv, dtype=self.dtype, precision=self.precision)
    branch3x3 = conv(192, (1, 1), name="branch3x3_1")(x)
    branch3x3 = conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(branch3x3)
    branch7x7x3 = conv(192, (1, 1), name="branch7x7x3_1")(x)
    branch7x7x3 = conv(192, (1, 7), pad=(0, 3), name="branch7x7x3_2")(branch7x7x3)
    branch7x7x3 = conv(192, (7, 1), pad=(3, 0), name="branch7x7x3_3")(branch7x7x3)
    branch7x7x3 = conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, max_pool_reduce(x)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block with expanded filter banks (Mixed_7b, Mixed_7c).

  `pool="avg"` is pytorch-fid's FIDInceptionE_1 (padding-excluding average
  pool), `pool="max"` its FIDInceptionE_2 (max pool).
  """

  pool: str = "avg"
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.pool not in ("avg", "max"):
      raise ValueError(f"InceptionE.pool must be 'avg' or 'max', got {self.pool!r}")
    conv = functools.partial(_conv, dtype=self.dtype, precision=self.precision)
    branch1x1 = conv(320, (1, 1), name="branch1x1")(x)
    branch3x3 = conv(384, (1, 1), name="branch3x3_1")(x)
    branch3x3 = jnp.concatenate(
      [
        conv(384, (1, 3), pad=(0, 1), name="branch3x3_2a")(branch3x3),
        conv(384, (3, 1), pad=(1, 0), name="branch3x3_2b")(branch3x3),
      ],
      axis=-1,
    )
    dbl = conv(448, (1, 1), name="branch3x3dbl_1")(x)
    dbl = conv(384, (3, 3), pad=(1, 1), name="branch3x3dbl_2")(dbl)
    dbl = jnp.concatenate(
      [
        conv(384, (1, 3), pad=(0, 1), name="branch3x3dbl_3a")(dbl),
        conv(384, (3, 1), pad=(1, 0), name="branch3x3dbl_3b")(dbl),
      ],
      axis=-1,
    )
    pooled = avg_pool_same_exclude_padding(x) if self.pool == "avg" else max_pool_same(x)
    branch_pool = conv(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([branch1x1, branch3x3, dbl, branch_pool], axis=-1)


@dataclasses.dataclass(frozen=True)
class InceptionOutputs:
  """What the FID InceptionV3 computes per image.

  pool: (N, 2048) pool3 features, used by FID and KID.
  logits: (N, 1008) classifier logits including the bias.
  logits_unbiased: (N, 1008) `pool @ fc.weight.T` without the bias; the
      torch-fidelity/torchmetrics Inception Score default.
  """

  pool: jax.Array
  logits: jax.Array
  logits_unbiased: jax.Array


jax.tree_util.register_dataclass(
  InceptionOutputs, data_fields=["pool", "logits", "logits_unbiased"], meta_fields=[]
)


def resize_like_pytorch_fid(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """Bilinear resize to size x size, equal to torch `interpolate(align_corners=False)`.

  Without antialiasing the triangle kernel of `jax.image.resize` samples the
  same two neighbours as torch's bilinear mode, also when downsampling.
  """
  n, _, _, c = images.shape
  return jax.image.resize(images, (n, size, size, c), method="bilinear", antialias=False)


class FIDInceptionV3(nn.Module):
  """InceptionV3 as used by FID/KID/IS. Input: (N, H, W, 3) RGB in [0, 1].

  pytorch-fid's earlier feature blocks (its `dims` 64, 192, 768: after the
  first and second max pool and after Mixed_6e) are sown into the
  `intermediates` collection as `features_64/192/768` (spatial maps; pool
  them over H, W for pytorch-fid's vectors); apply with
  `mutable=["intermediates"]` to get them. `stem` (up to the second max
  pool) can be applied alone with `method=FIDInceptionV3.stem`.
  """

  resize_input: bool = True
  normalize_input: bool = True
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  def setup(self):
    d, p = self.dtype, self.precision
    conv = functools.partial(_conv, dtype=d, precision=p)
    self.Conv2d_1a_3x3 = conv(32, (3, 3), strides=(2, 2))
    self.Conv2d_2a_3x3 = conv(32, (3, 3))
    self.Conv2d_2b_3x3 = conv(64, (3, 3), pad=(1, 1))
    self.Conv2d_3b_1x1 = conv(80, (1, 1))
    self.Conv2d_4a_3x3 = conv(192, (3, 3))
    self.Mixed_5b = InceptionA(32, dtype=d, precision=p)
    self.Mixed_5c = InceptionA(64, dtype=d, precision=p)
    self.Mixed_5d = InceptionA(64, dtype=d, precision=p)
    self.Mixed_6a = InceptionB(dtype=d, precision=p)
    self.Mixed_6b = InceptionC(128, dtype=d, precision=p)
    self.Mixed_6c = InceptionC(160, dtype=d, precision=p)
    self.Mixed_6d = InceptionC(160, dtype=d, precision=p)
    self.Mixed_6e = InceptionC(192, dtype=d, precision=p)
    self.Mixed_7a = InceptionD(dtype=d, precision=p)
    self.Mixed_7b = InceptionE("avg", dtype=d, precision=p)
    self.Mixed_7c = InceptionE("max", dtype=d, precision=p)
    self.fc = nn.Dense(NUM_LOGITS, dtype=d, precision=p)

  def stem(self, x: jax.Array) -> jax.Array:
    """Preprocessed NHWC input -> 192-channel map after the second max pool."""
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = max_pool_reduce(x)
    self.sow("intermediates", "features_64", x)
    x = max_pool_reduce(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
    self.sow("intermediates", "features_192", x)
    return x

  def __call__(self, images: jax.Array) -> InceptionOutputs:
    pool = self.mixed_6e_and_pool(images)[1]
    logits = self.fc(pool)
    kernel = self.fc.variables["params"]["kernel"]
    logits_unbiased = jnp.matmul(pool, kernel.astype(pool.dtype), precision=self.precision)
    return InceptionOutputs(pool=pool, logits=logits, logits_unbiased=logits_unbiased)

  def mixed_6e_and_pool(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Mixed_6e map (N, 17, 17, 768) at 299 input, pooled Mixed_7c (N, 2048)): AttnGAN's DAMSM inputs."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be NHWC with 3 channels, got shape {images.shape}")
    if not self.resize_input and min(images.shape[1:3]) < MIN_INPUT_SIZE:
      raise ValueError(
        f"images must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} without resize_input, "
        f"got shape {images.shape}"
      )
    x = images
    if self.resize_input:
      x = resize_like_pytorch_fid(x)
    if self.normalize_input:
      x = 2 * x - 1
    x = self.stem(x)
    for block in (
      self.Mixed_5b,
      self.Mixed_5c,
      self.Mixed_5d,
      self.Mixed_6a,
      self.Mixed_6b,
      self.Mixed_6c,
      self.Mixed_6d,
      self.Mixed_6e,
    ):
      x = block(x)
    self.sow("intermediates", "features_768", x)
    mixed_6e = x
    x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
    return mixed_6e, jnp.mean(x, axis=(1, 2))


# XLA:CPU (jaxlib 0.10) hands all but tiny convolutions to YNNPACK, whose
# kernels for the unpadded stride-1 3x3 convolutions of the stem (Conv2d_2a_3x3
# at 149x149, Conv2d_4a_3x3 at 73x73) run 4-5x slower than XLA's Eigen ones;
# with them the forward took up to 2.3x pytorch-fid's time. Leave only dots to
# YNNPACK, so the convolutions run on Eigen (benchmarks/fid_extraction.py).
XLA_CPU_COMPILER_OPTIONS = {
  "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
}


def _forward(variables: Mapping[str, Any], images: jax.Array) -> InceptionOutputs:
  return FIDInceptionV3().apply(variables, images)


@functools.cache
def jitted_forward(xla_cpu_defaults: bool = False) -> Callable[..., InceptionOutputs]:
  """The jitted default FIDInceptionV3, `(variables, images) -> InceptionOutputs`.

  On CPU it compiles with `XLA_CPU_COMPILER_OPTIONS`; `xla_cpu_defaults=True`
  keeps XLA's own (the YNNPACK convolutions, for benchmarks to compare).
  """
  cpu_options = jax.default_backend() == "cpu" and not xla_cpu_defaults
  return jax.jit(_forward, compiler_options=XLA_CPU_COMPILER_OPTIONS if cpu_options else None)


def inception_outputs(variables: Mapping[str, Any], images: jax.Array) -> InceptionOutputs:
  """Jitted forward of the default FIDInceptionV3 (one compile per input shape)."""
  return jitted_forward()(variables, images)


def abstract_variables() -> dict[str, Any]:
  """Shapes and dtypes of the FIDInceptionV3 variables, without allocating them."""
  dummy = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(FIDInceptionV3(resize_input=False).init, jax.random.key(0), dummy)


def parameter_count() -> int:
  """Number of trainable parameters (the `params` collection), computed without memory."""
  params = abstract_variables()["params"]
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))
