"""StackGAN++ (Zhang et al. 2018): conditioning augmentation, a tree of generator stages, per-stage discriminators.

The layout is hanzhanggit/StackGAN-v2's `code/model.py` (`CA_NET`,
`INIT_STAGE_G`, `NEXT_STAGE_G`, `GET_IMAGE_G`, `D_NET64/128/256`) and the
losses of its `condGANTrainer` (`trainer.py`). AttnGAN (`attngan.py`) is
built on the same blocks, so they live here:

- `ConditioningAugmentation`: Linear(text → 4·c) + GLU → μ, logσ² (c each);
  the condition is μ + σ·ε, and `kl_loss` pulls N(μ, σ²) towards N(0, 1).
- `InitStage`: [c; z] → Linear (no bias) + BatchNorm1d + GLU → (ngf, 4, 4),
  then upBlocks (nearest ×2, conv3×3 → 2·out, BatchNorm, GLU) halving the
  width each time, to ngf/2ⁿ at the base size.
- `NextStage`: the condition tiled over the map and concatenated in front,
  a conv3×3 + BatchNorm + GLU join, R residual blocks, one upBlock.
- `StageDiscriminator`: the image encoded by 4×4 stride-2 convs down to 4×4
  (`encode_image_by_16times` and the extra down/3×3 blocks of the larger
  branches), then a 4×4 stride-4 conv to one logit, unconditionally and after
  a 3×3 join with the tiled condition.

Every BatchNorm is `jaxgen.nn.normalization.BatchNorm2d` (torch's, with
running statistics in `batch_stats`), so `train=True` normalises with batch
statistics and updates the running ones, as the reference does.

Differences from the reference: the discriminators return logits and the
losses use the sigmoid cross-entropy on logits (the reference ends each head
in `Sigmoid` and uses `BCELoss`: the same numbers, without the log of a
rounded probability). `base_size` generalises the 64-pixel first branch
(4 upBlocks from 4×4) to 8, 16 or 32 pixels (1–3 upBlocks) so that small
CPU configs exist; 64 is the reference.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxgen.nn import partitioning as pt
from jaxgen.nn.normalization import BatchNorm2d
from jaxgen.nn.sampling import upsample_nearest_2x

LEAKY_SLOPE = 0.2
BASE_SIZES = (8, 16, 32, 64)
KERNEL_INIT = nn.initializers.orthogonal()  # the reference's weights_init: orthogonal, gain 1


class TextGANConfigError(ValueError):
  """A StackGAN++/AttnGAN architecture option is out of range."""


def glu(x: jax.Array) -> jax.Array:
  """The reference's GLU over the channel (last) axis: first half · sigmoid(second half)."""
  half = x.shape[-1] // 2
  return x[..., :half] * jax.nn.sigmoid(x[..., half:])


def conv(
  features: int,
  kernel: int,
  *,
  strides: int = 1,
  padding: int = 0,
  bias: bool = False,
  name: str | None = None,
) -> nn.Conv:
  """Conv2d with torch's padding convention; the reference's convs are bias-free unless noted."""
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(strides, strides),
    padding=((padding, padding), (padding, padding)),
    use_bias=bias,
    kernel_init=pt.annotated(KERNEL_INIT, (None, None, "conv_in", "conv_out")),
    bias_init=pt.annotated(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


def dense(features: int, *, bias: bool = True, axes=("embed", "mlp"), name=None) -> nn.Dense:
  return nn.Dense(
    features,
    use_bias=bias,
    kernel_init=pt.annotated(KERNEL_INIT, axes),
    bias_init=pt.annotated(nn.initializers.zeros_init(), axes[1:]),
    name=name,
  )


def tile_condition(condition: jax.Array, size: int) -> jax.Array:
  """(B, C) → (B, size, size, C): `c.view(-1, C, 1, 1).repeat(1, 1, size, size)`."""
  return jnp.broadcast_to(
    condition[:, None, None, :], (condition.shape[0], size, size) + condition.shape[1:]
  )


# ---------------------------------------------------------------- conditioning


def reparameterise(mu: jax.Array, logvar: jax.Array, key: jax.Array) -> jax.Array:
  """μ + exp(logσ²/2)·ε with ε ~ N(0, 1)."""
  return mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)


def kl_loss(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(μ, σ²) ‖ N(0, 1)) as the reference computes it: −½·mean(1 + logσ² − μ² − σ²) over all elements."""
  return -0.5 * jnp.mean(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar))


class ConditioningAugmentation(nn.Module):
  """`CA_NET`: Linear(text → 4·c) + GLU → (μ, logσ²); returns (c_code, μ, logσ²).

  ε is drawn from the `augment` rng stream.
  """

  condition_dim: int

  @nn.compact
  def __call__(self, text_embedding: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    x = glu(dense(4 * self.condition_dim, name="fc")(text_embedding))
    mu, logvar = x[:, : self.condition_dim], x[:, self.condition_dim :]
    return reparameterise(mu, logvar, self.make_rng("augment")), mu, logvar


# ---------------------------------------------------------------- generator blocks


class UpBlock(nn.Module):
  """`upBlock`: nearest ×2, conv3×3 → 2·features, BatchNorm, GLU."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return JoinBlock(self.features, name="block")(upsample_nearest_2x(x), train)


class JoinBlock(nn.Module):
  """`Block3x3_relu`: conv3×3 → 2·features, BatchNorm, GLU (no resizing)."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = conv(2 * self.features, 3, padding=1, name="conv")(x)
    return glu(BatchNorm2d(name="bn")(x, train))


class ResBlock(nn.Module):
  """x + BN(conv3×3(GLU(BN(conv3×3 → 2C))))."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    channels = x.shape[-1]
    h = JoinBlock(channels, name="join")(x, train)
    h = conv(channels, 3, padding=1, name="conv")(h)
    return x + BatchNorm2d(name="bn")(h, train)


class InitStage(nn.Module):
  """`INIT_STAGE_G`: [c; z] → (ngf, 4, 4) → `num_upsamples` upBlocks, halving the width each."""

  ngf: int
  num_upsamples: int = 4

  @nn.compact
  def __call__(self, code: jax.Array, train: bool) -> jax.Array:
    x = dense(self.ngf * 4 * 4 * 2, bias=False, name="fc")(code)
    x = glu(BatchNorm2d(name="fc_bn")(x, train))
    # torch's .view(-1, ngf, 4, 4) is channel-major: reshape NCHW, then go to NHWC.
    x = x.reshape(x.shape[0], self.ngf, 4, 4).transpose(0, 2, 3, 1)
    for i in range(self.num_upsamples):
      x = UpBlock(self.ngf // 2 ** (i + 1), name=f"upsample{i + 1}")(x, train)
    return x


class NextStage(nn.Module):
  """StackGAN++'s `NEXT_STAGE_G`: join [c; h] → ngf, R residual blocks, upBlock → ngf/2."""

  ngf: int
  num_residual: int = 2

  @nn.compact
  def __call__(self, h: jax.Array, condition: jax.Array, train: bool) -> jax.Array:
    x = jnp.concatenate([tile_condition(condition, h.shape[1]), h], axis=-1)
    x = JoinBlock(self.ngf, name="joint")(x, train)
    for i in range(self.num_residual):
      x = ResBlock(name=f"residual{i}")(x, train)
    return UpBlock(self.ngf // 2, name="upsample")(x, train)


class ImageHead(nn.Module):
  """`GET_IMAGE_G`: conv3×3 → 3 (no bias), tanh."""

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    return jnp.tanh(conv(3, 3, padding=1, name="conv")(h))


def init_upsamples(base_size: int) -> int:
  if base_size not in BASE_SIZES:
    raise TextGANConfigError(f"base_size: expected one of {BASE_SIZES}, found {base_size}")
  return int(math.log2(base_size // 4))


# ---------------------------------------------------------------- StackGAN++


@dataclasses.dataclass(frozen=True)
class StackGANConfig:
  """StackGAN-v2's `cfg.GAN` / `cfg.TREE` / `cfg.TEXT` options for text-to-image.

  text_dim: the sentence embedding width (TEXT.DIMENSION, 1024 char-CNN-RNN on CUB).
  condition_dim: CA output width (GAN.EMBEDDING_DIM).
  z_dim, gf_dim, df_dim, num_residual (R_NUM): as the reference.
  num_stages: branches (TREE.BRANCH_NUM); stage s outputs base_size·2ˢ pixels.
  base_size: the first branch's resolution (64 in the reference).
  """

  text_dim: int = 1024
  condition_dim: int = 128
  z_dim: int = 100
  gf_dim: int = 64
  df_dim: int = 64
  num_residual: int = 2
  num_stages: int = 3
  base_size: int = 64

  def __post_init__(self):
    init_upsamples(self.base_size)
    if not 1 <= self.num_stages <= 3:
      raise TextGANConfigError(f"num_stages: expected 1..3 branches, found {self.num_stages}")

  @property
  def image_sizes(self) -> tuple[int, ...]:
    return tuple(self.base_size * 2**s for s in range(self.num_stages))


class StackGANGenerator(nn.Module):
  """`G_NET`: (z, text embedding) → ([images per stage], μ, logσ²); images NHWC in [−1, 1]."""

  config: StackGANConfig

  @nn.compact
  def __call__(self, z: jax.Array, text_embedding: jax.Array, train: bool = True):
    cfg = self.config
    c_code, mu, logvar = ConditioningAugmentation(cfg.condition_dim, name="ca_net")(text_embedding)
    ups = init_upsamples(cfg.base_size)
    h = InitStage(cfg.gf_dim * 2**ups, ups, name="h_net1")(jnp.concatenate([c_code, z], -1), train)
    images = [ImageHead(name="img_net1")(h)]
    ngf = cfg.gf_dim
    for stage in range(2, cfg.num_stages + 1):
      h = NextStage(ngf, cfg.num_residual, name=f"h_net{stage}")(h, c_code, train)
      images.append(ImageHead(name=f"img_net{stage}")(h))
      ngf //= 2
    return images, mu, logvar


# ---------------------------------------------------------------- discriminators


class ConvBNLeaky(nn.Module):
  """`downBlock` (4×4 stride 2) or `Block3x3_leakRelu` (3×3): conv, BatchNorm, LeakyReLU(0.2)."""

  features: int
  down: bool

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kernel, strides = (4, 2) if self.down else (3, 1)
    x = conv(self.features, kernel, strides=strides, padding=1, name="conv")(x)
    return nn.leaky_relu(BatchNorm2d(name="bn")(x, train), LEAKY_SLOPE)


class StageDiscriminator(nn.Module):
  """`D_NET64/128/256` of the stage whose images are base_size·2^stage pixels.

  `encode` maps images to the (4, 4, 8·ndf) code; `logits` scores a code
  with (`condition` given) or without the condition. `condition_first`
  concatenates the tiled condition before the code (StackGAN++) or after it
  (AttnGAN's `D_GET_LOGITS`).
  """

  df_dim: int
  condition_dim: int
  stage: int = 0
  base_size: int = 64
  condition_first: bool = True

  def setup(self):
    ndf, downs = self.df_dim, init_upsamples(self.base_size)
    # encode_image_by_16times: the first conv has no norm; the code ends at 8·ndf.
    widths = [ndf * 2 ** (i + 4 - downs) for i in range(downs)]
    self.img_code_first = conv(widths[0], 4, strides=2, padding=1)
    self.img_code_s16 = [ConvBNLeaky(w, down=True) for w in widths[1:]]
    # the larger branches: down to 16·ndf (and 32·ndf), then 3×3 back to 8·ndf.
    down_widths = [ndf * 16, ndf * 32][: self.stage]
    self.img_code_down = [ConvBNLeaky(w, down=True) for w in down_widths]
    back_widths = [ndf * 16, ndf * 8][-self.stage :] if self.stage else []
    self.img_code_back = [ConvBNLeaky(w, down=False) for w in back_widths]
    self.joint = ConvBNLeaky(ndf * 8, down=False)
    self.cond_logits = conv(1, 4, strides=4, bias=True)
    self.uncond_logits = conv(1, 4, strides=4, bias=True)

  def encode(self, images: jax.Array, train: bool = True) -> jax.Array:
    x = nn.leaky_relu(self.img_code_first(images), LEAKY_SLOPE)
    for block in (*self.img_code_s16, *self.img_code_down, *self.img_code_back):
      x = block(x, train)
    return x

  def logits(self, code: jax.Array, condition: jax.Array | None = None, train: bool = True):
    """(B,) logits of the code, conditional when `condition` (B, condition_dim) is given."""
    if condition is None:
      return self.uncond_logits(code).reshape(-1)
    tiled = tile_condition(condition, code.shape[1])
    parts = [tiled, code] if self.condition_first else [code, tiled]
    return self.cond_logits(self.joint(jnp.concatenate(parts, -1), train)).reshape(-1)

  def __call__(self, images: jax.Array, condition: jax.Array, train: bool = True):
    """(conditional logits, unconditional logits), each (B,)."""
    code = self.encode(images, train)
    return self.logits(code, condition, train), self.logits(code, None, train)


# ---------------------------------------------------------------- losses


def bce(logits: jax.Array, target: float) -> jax.Array:
  """`nn.BCELoss()(sigmoid(logits), target)`: mean sigmoid cross-entropy."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def stackgan_discriminator_loss(
  real: tuple[jax.Array, jax.Array],
  wrong: tuple[jax.Array, jax.Array],
  fake: tuple[jax.Array, jax.Array],
  uncond_weight: float = 1.0,
) -> jax.Array:
  """One stage's `train_Dnet` loss from (cond, uncond) logits of real, mismatched-caption and fake images.

  A mismatched real image is fake to the conditional head but real to the
  unconditional one. Without the unconditional term the reference halves
  the two negative terms instead.
  """
  if uncond_weight > 0:
    real_term = bce(real[0], 1.0) + uncond_weight * bce(real[1], 1.0)
    wrong_term = bce(wrong[0], 0.0) + uncond_weight * bce(wrong[1], 1.0)
    fake_term = bce(fake[0], 0.0) + uncond_weight * bce(fake[1], 0.0)
    return real_term + wrong_term + fake_term
  return bce(real[0], 1.0) + 0.5 * (bce(wrong[0], 0.0) + bce(fake[0], 0.0))


def mean_covariance(images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-image channel mean (B, C) and covariance over pixels (B, C, C), divided by the pixel count."""
  b, h, w, c = images.shape
  mu = jnp.mean(images, axis=(1, 2))
  centred = (images - mu[:, None, None, :]).reshape(b, h * w, c)
  return mu, jnp.einsum("bpc,bpd->bcd", centred, centred) / (h * w)


def colour_consistency_loss(images: Sequence[jax.Array], weight: float) -> jax.Array:
  """`COLOR_LOSS`: each of the last two stages' colour mean/covariance pulled to the frozen stage below.

  weight·MSE(μ) + 5·weight·MSE(Σ) per pair, as in the reference.
  """
  total = jnp.zeros((), jnp.float32)
  for upper in range(len(images) - 1, max(len(images) - 3, 0), -1):
    mu1, cov1 = mean_covariance(images[upper])
    mu2, cov2 = mean_covariance(jax.lax.stop_gradient(images[upper - 1]))
    total = total + weight * jnp.mean(jnp.square(mu1 - mu2))
    total = total + 5 * weight * jnp.mean(jnp.square(cov1 - cov2))
  return total


def stackgan_generator_loss(
  fake_logits: Sequence[tuple[jax.Array, jax.Array]],
  mu: jax.Array,
  logvar: jax.Array,
  *,
  fake_images: Sequence[jax.Array] = (),
  uncond_weight: float = 1.0,
  kl_weight: float = 2.0,
  colour_weight: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`train_Gnet`: Σ_stages BCE(cond, real) + w·BCE(uncond, real) + colour term + kl_weight·KL."""
  adversarial = sum(
    bce(cond, 1.0) + (uncond_weight * bce(uncond, 1.0) if uncond_weight > 0 else 0.0)
    for cond, uncond in fake_logits
  )
  colour = colour_consistency_loss(fake_images, colour_weight) if colour_weight > 0 else 0.0
  kl = kl_loss(mu, logvar)
  total = adversarial + colour + kl_weight * kl
  return total, {"g_adversarial": adversarial, "colour": jnp.asarray(colour), "kl": kl}


def parameter_count(params: Any) -> int:
  """Number of scalars in a (possibly abstract, possibly boxed) params tree."""
  leaves = jax.tree_util.tree_leaves(nn.meta.unbox(params))
  return sum(math.prod(leaf.shape) for leaf in leaves)
