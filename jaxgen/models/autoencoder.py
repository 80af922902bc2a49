"""KL-regularised image autoencoder of Stable Diffusion (diffusers `AutoencoderKL`).

An `Encoder` maps NHWC images to the moments (mean, log-variance) of a
diagonal Gaussian posterior over latents downsampled by
`2**(len(block_out_channels) - 1)`; a `Decoder` maps latents back to images.
1x1 `quant_conv` / `post_quant_conv` sit between them, as in diffusers.

The module tree mirrors diffusers' so weights convert mechanically
(`encoder/down_blocks_0/resnets_1/conv1/kernel` is
`encoder.down_blocks.0.resnets.1.conv1.weight`, see
`jaxgen.convert.diffusers_vae`). Images are expected in [-1, 1].

Training objective (pure functions at the end of this module): the LDM
reconstruction + KL loss, `vae_loss`. The adversarial (PatchGAN) term of the
full LDM objective lives in `jaxgen.tasks.image.autoencoder` (with
`jaxgen.models.discriminator`); there is no LPIPS term.

Example:
  model = AutoencoderKL(AutoencoderKLConfig.from_diffusers(config_json))
  moments = model.apply({"params": params}, images, method=model.encode)
  latents = scale_latents(DiagonalGaussian.from_moments(moments).sample(rng), model.config)
  images = model.apply({"params": params}, unscale_latents(latents, model.config), method=model.decode)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.errors import UnsupportedConfigError
from jaxgen.models import diffusers_config
from jaxgen.nn import partitioning as pt
from jaxgen.nn.attention import Attention
from jaxgen.nn.resnet import ResnetBlock2D
from jaxgen.nn.sampling import Downsample2D, Upsample2D

# The Attn* variants add a self-attention after every resnet (taming's VQGAN
# at its attention resolutions); diffusers names them `attentions_{i}`.
DOWN_BLOCK_TYPES = ("DownEncoderBlock2D", "AttnDownEncoderBlock2D")
UP_BLOCK_TYPES = ("UpDecoderBlock2D", "AttnUpDecoderBlock2D")
ACTIVATIONS = ("silu", "swish")
# diffusers hard-codes this epsilon for every GroupNorm of the VAE.
NORM_EPS = 1e-6
# diffusers clips the posterior log-variance to this range (exp(20) ~ 5e8).
LOGVAR_RANGE = (-30.0, 20.0)
RECONSTRUCTION_KINDS = ("l1", "l2")

# diffusers `AutoencoderKL` options jaxgen accepts only at these values (their
# defaults): the latent statistics some pipelines (not Stable Diffusion's)
# normalise with, which `scale_latents` does not apply.
_DIFFUSERS_FIXED_OPTIONS: dict[str, Any] = {"latents_mean": None, "latents_std": None}


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig:
  """Architecture of an `AutoencoderKL`; field names are diffusers' config keys.

  Defaults are diffusers' defaults (a one-block toy); the Stable Diffusion VAE
  is `configs/arch/sd_vae.py`. Notes:
    scaling_factor, shift_factor: latent normalisation used by diffusion
      pipelines (`scale_latents`), not by the autoencoder itself.
    sample_size: the training resolution (diffusers uses it for tiling only).
    force_upcast: accepted for compatibility; the posterior moments are
      always returned in float32.
  """

  in_channels: int = 3
  out_channels: int = 3
  down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
  up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
  block_out_channels: tuple[int, ...] = (64,)
  layers_per_block: int = 1
  act_fn: str = "silu"
  latent_channels: int = 4
  norm_num_groups: int = 32
  sample_size: int | tuple[int, int] = 32
  scaling_factor: float = 0.18215
  shift_factor: float | None = None
  force_upcast: bool = True
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True

  def __post_init__(self):
    diffusers_config.freeze_sequences(self)
    self._validate()

  def _validate(self) -> None:
    n = len(self.block_out_channels)
    if n == 0:
      raise ValueError("block_out_channels: expected at least one block, found ()")
    diffusers_config.check_block_types(self, DOWN_BLOCK_TYPES, UP_BLOCK_TYPES)
    if self.act_fn not in ACTIVATIONS:
      raise UnsupportedConfigError(f"act_fn: only 'silu' is supported, found {self.act_fn!r}")
    if not isinstance(self.layers_per_block, int) or self.layers_per_block < 1:
      raise ValueError(f"layers_per_block: expected one int >= 1, found {self.layers_per_block!r}")
    for name in ("in_channels", "out_channels", "latent_channels", "norm_num_groups"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, found {value!r}")
    for i, channels in enumerate(self.block_out_channels):
      if channels % self.norm_num_groups:
        raise ValueError(
          f"block_out_channels[{i}]={channels} must be divisible by norm_num_groups={self.norm_num_groups}"
        )

  @property
  def num_downsamples(self) -> int:
    return len(self.block_out_channels) - 1

  @property
  def downsample_factor(self) -> int:
    """Ratio of image to latent height (and width)."""
    return 2**self.num_downsamples

  @classmethod
  def from_diffusers(cls, config: Mapping[str, Any]) -> AutoencoderKLConfig:
    """Builds a config from a diffusers `AutoencoderKL.config` (or its config.json dict).

    Bookkeeping keys (`_class_name`, `_diffusers_version`, ...) are ignored;
    options jaxgen does not implement are accepted only at their default,
    otherwise `UnsupportedConfigError` names them.
    """
    return diffusers_config.from_diffusers(cls, config, _DIFFUSERS_FIXED_OPTIONS, "AutoencoderKL")

  def to_diffusers(self) -> dict[str, Any]:
    """The config as `AutoencoderKL(**kwargs)` keyword arguments (JSON-friendly lists)."""
    return diffusers_config.to_diffusers(self)


# ----------------------------------------------------------------------------
# Posterior.


@flax.struct.dataclass
class DiagonalGaussian:
  """Diagonal Gaussian over NHWC latents (diffusers `DiagonalGaussianDistribution`).

  A pytree, so it can be returned from `jit`/`apply`. Build it with
  `from_moments`, which clips the log-variance to `LOGVAR_RANGE` as diffusers does.
  """

  mean: jax.Array
  logvar: jax.Array

  @classmethod
  def from_moments(cls, moments: jax.Array) -> DiagonalGaussian:
    """moments: (..., 2 * latent_channels), mean first then log-variance (as `AutoencoderKL.encode`)."""
    if moments.ndim < 1 or moments.shape[-1] % 2:
      raise ValueError(
        f"moments: expected an even last axis (mean and log-variance), found shape {moments.shape}"
      )
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return cls(mean, jnp.clip(logvar, *LOGVAR_RANGE))

  @property
  def std(self) -> jax.Array:
    return jnp.exp(0.5 * self.logvar)

  @property
  def var(self) -> jax.Array:
    return jnp.exp(self.logvar)

  def sample(self, rng: jax.Array) -> jax.Array:
    """mean + std * eps with eps ~ N(0, I) drawn from `rng`."""
    return self.mean + self.std * jax.random.normal(rng, self.mean.shape, self.mean.dtype)

  def mode(self) -> jax.Array:
    return self.mean

  def kl(self, other: DiagonalGaussian | None = None) -> jax.Array:
    """KL(self || other), `other` defaulting to N(0, I); summed over all but the batch axis -> (B,)."""
    if other is None:
      terms = jnp.square(self.mean) + self.var - 1.0 - self.logvar
    else:
      terms = (
        jnp.square(self.mean - other.mean) / other.var
        + self.var / other.var
        - 1.0
        - self.logvar
        + other.logvar
      )
    return 0.5 * jnp.sum(terms, axis=tuple(range(1, terms.ndim)))

  def nll(self, sample: jax.Array) -> jax.Array:
    """Negative log-likelihood of `sample`, summed over all but the batch axis -> (B,)."""
    terms = jnp.log(2.0 * jnp.pi) + self.logvar + jnp.square(sample - self.mean) / self.var
    return 0.5 * jnp.sum(terms, axis=tuple(range(1, terms.ndim)))


def scale_latents(latents: jax.Array, config: AutoencoderKLConfig) -> jax.Array:
  """Posterior sample -> the unit-scale latents a diffusion model sees: (z - shift) * scaling_factor."""
  shift = config.shift_factor or 0.0
  return (latents - shift) * config.scaling_factor


def unscale_latents(latents: jax.Array, config: AutoencoderKLConfig) -> jax.Array:
  """Inverse of `scale_latents`: diffusion latents -> decoder input."""
  shift = config.shift_factor or 0.0
  return latents / config.scaling_factor + shift


# ----------------------------------------------------------------------------
# Blocks.


def vae_attention(channels: int, groups: int, dtype: Any, name: str) -> Attention:
  """diffusers' VAE self-attention: one head as wide as the input over H*W, GroupNorm, residual."""
  return Attention(
    heads=1,
    dim_head=channels,
    qkv_bias=True,
    norm_num_groups=groups,
    norm_eps=NORM_EPS,
    residual_connection=True,
    dtype=dtype,
    name=name,
  )


class DownEncoderBlock2D(nn.Module):
  """`layers` resnets (no time embedding), each followed by a self-attention when
  `add_attention` (`AttnDownEncoderBlock2D`), then an optional stride-2 conv (bottom/right padded)."""

  out_channels: int
  layers: int
  add_downsample: bool
  groups: int
  dtype: Any = jnp.float32
  add_attention: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.layers):
      x = ResnetBlock2D(
        self.out_channels, groups=self.groups, eps=NORM_EPS, dtype=self.dtype, name=f"resnets_{i}"
      )(x)
      if self.add_attention:
        x = vae_attention(self.out_channels, self.groups, self.dtype, f"attentions_{i}")(x)
    if self.add_downsample:
      x = Downsample2D(self.out_channels, padding=0, dtype=self.dtype, name="downsamplers_0")(x)
    return x


class UpDecoderBlock2D(nn.Module):
  """`layers` resnets (no skips, no time embedding), each followed by a self-attention when
  `add_attention` (`AttnUpDecoderBlock2D`), then an optional nearest-x2 + conv upsampler."""

  out_channels: int
  layers: int
  add_upsample: bool
  groups: int
  dtype: Any = jnp.float32
  add_attention: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.layers):
      x = ResnetBlock2D(
        self.out_channels, groups=self.groups, eps=NORM_EPS, dtype=self.dtype, name=f"resnets_{i}"
      )(x)
      if self.add_attention:
        x = vae_attention(self.out_channels, self.groups, self.dtype, f"attentions_{i}")(x)
    if self.add_upsample:
      x = Upsample2D(self.out_channels, dtype=self.dtype, name="upsamplers_0")(x)
    return x


class MidBlock2D(nn.Module):
  """resnet -> [single-head self-attention over H*W with GroupNorm and residual] -> resnet.

  diffusers' `UNetMidBlock2D` as the VAE builds it: the resnets are
  `resnets_0`, `resnets_1` even without the attention (`attentions_0`).
  """

  groups: int
  add_attention: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    x = ResnetBlock2D(groups=self.groups, eps=NORM_EPS, dtype=self.dtype, name="resnets_0")(x)
    if self.add_attention:
      x = vae_attention(channels, self.groups, self.dtype, "attentions_0")(x)
    return ResnetBlock2D(groups=self.groups, eps=NORM_EPS, dtype=self.dtype, name="resnets_1")(x)


class Encoder(nn.Module):
  """Images (B, H, W, in_channels) -> moments (B, H/f, W/f, 2 * latent_channels), f = 2**num_downsamples.

  With `double_z=False` (a VQ model's encoder) the output has `latent_channels` channels.
  """

  config: AutoencoderKLConfig
  dtype: Any = jnp.float32
  double_z: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    channels = cfg.block_out_channels
    x = pt.conv(channels[0], 3, padding=1, dtype=self.dtype, name="conv_in")(x)
    for i, out_channels in enumerate(channels):
      x = DownEncoderBlock2D(
        out_channels,
        cfg.layers_per_block,
        add_downsample=i < cfg.num_downsamples,
        groups=cfg.norm_num_groups,
        dtype=self.dtype,
        add_attention=cfg.down_block_types[i] == "AttnDownEncoderBlock2D",
        name=f"down_blocks_{i}",
      )(x)
    x = MidBlock2D(
      cfg.norm_num_groups, cfg.mid_block_add_attention, dtype=self.dtype, name="mid_block"
    )(x)
    x = nn.silu(
      pt.group_norm(cfg.norm_num_groups, NORM_EPS, dtype=self.dtype, name="conv_norm_out")(x)
    )
    features = (2 if self.double_z else 1) * cfg.latent_channels
    return pt.conv(features, 3, padding=1, dtype=self.dtype, name="conv_out")(x)


class Decoder(nn.Module):
  """Latents (B, h, w, latent_channels) -> images (B, h*f, w*f, out_channels)."""

  config: AutoencoderKLConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    cfg = self.config
    channels = cfg.block_out_channels[::-1]  # deepest block first
    x = pt.conv(channels[0], 3, padding=1, dtype=self.dtype, name="conv_in")(z)
    x = MidBlock2D(
      cfg.norm_num_groups, cfg.mid_block_add_attention, dtype=self.dtype, name="mid_block"
    )(x)
    for i, out_channels in enumerate(channels):
      x = UpDecoderBlock2D(
        out_channels,
        cfg.layers_per_block + 1,
        add_upsample=i < cfg.num_downsamples,
        groups=cfg.norm_num_groups,
        dtype=self.dtype,
        add_attention=cfg.up_block_types[i] == "AttnUpDecoderBlock2D",
        name=f"up_blocks_{i}",
      )(x)
    x = nn.silu(
      pt.group_norm(cfg.norm_num_groups, NORM_EPS, dtype=self.dtype, name="conv_norm_out")(x)
    )
    return pt.conv(cfg.out_channels, 3, padding=1, dtype=self.dtype, name="conv_out")(x)


# ----------------------------------------------------------------------------
# Model.


def _check_nhwc(name: str, x: Any, channels: int, channels_field: str, multiple: int) -> None:
  shape = tuple(getattr(x, "shape", ()))
  if len(shape) != 4:
    raise ValueError(f"{name}: expected NHWC (batch, height, width, channels), found shape {shape}")
  if shape[-1] != channels:
    raise ValueError(
      f"{name}: expected {channels} channels (config.{channels_field}, NHWC), found {shape[-1]} in shape {shape}"
    )
  if shape[1] % multiple or shape[2] % multiple:
    raise ValueError(
      f"{name}: height and width must be multiples of {multiple} (the autoencoder's downsample factor), "
      f"found {shape[1]}x{shape[2]}"
    )
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name}: expected a floating dtype (images in [-1, 1]), found {x.dtype}")


def check_images(config: AutoencoderKLConfig, images: Any) -> None:
  """Raises a ValueError naming `images` unless it is (B, H, W, in_channels) float, H and W multiples of f."""
  _check_nhwc("images", images, config.in_channels, "in_channels", config.downsample_factor)


def check_latents(config: AutoencoderKLConfig, latents: Any) -> None:
  """Raises a ValueError naming `latents` unless it is (B, h, w, latent_channels) float."""
  _check_nhwc("latents", latents, config.latent_channels, "latent_channels", 1)


class AutoencoderKL(nn.Module):
  """KL autoencoder (diffusers `AutoencoderKL`) on NHWC images in [-1, 1].

  Methods (use with `apply(..., method=...)`):
    encode(images) -> posterior moments (B, H/f, W/f, 2 * latent_channels), float32.
    decode(latents) -> images (B, h*f, w*f, out_channels).
    __call__(images, rng, sample_posterior) -> (reconstruction, DiagonalGaussian).
  """

  config: AutoencoderKLConfig
  dtype: Any = jnp.float32

  def setup(self):
    cfg = self.config
    self.encoder = Encoder(cfg, dtype=self.dtype)
    self.decoder = Decoder(cfg, dtype=self.dtype)
    latent = cfg.latent_channels
    self.quant_conv = pt.conv(2 * latent, 1, dtype=self.dtype) if cfg.use_quant_conv else None
    self.post_quant_conv = pt.conv(latent, 1, dtype=self.dtype) if cfg.use_post_quant_conv else None

  def encode(self, images: jax.Array) -> jax.Array:
    """images (B, H, W, in_channels) in [-1, 1] -> moments; see `DiagonalGaussian.from_moments`."""
    check_images(self.config, images)
    moments = self.encoder(images.astype(self.dtype))
    if self.quant_conv is not None:
      moments = self.quant_conv(moments)
    return moments.astype(jnp.float32)

  def decode(self, latents: jax.Array) -> jax.Array:
    """latents (B, h, w, latent_channels), unscaled (see `unscale_latents`) -> images."""
    check_latents(self.config, latents)
    z = latents.astype(self.dtype)
    if self.post_quant_conv is not None:
      z = self.post_quant_conv(z)
    return self.decoder(z)

  def __call__(
    self, images: jax.Array, rng: jax.Array | None = None, sample_posterior: bool = False
  ) -> tuple[jax.Array, DiagonalGaussian]:
    """Reconstructs `images` through a posterior sample (`rng` required) or its mean."""
    if sample_posterior and rng is None:
      raise ValueError("rng: a PRNG key is required when sample_posterior=True")
    posterior = DiagonalGaussian.from_moments(self.encode(images))
    latents = posterior.sample(rng) if sample_posterior else posterior.mode()
    return self.decode(latents), posterior


def example_inputs(config: AutoencoderKLConfig, batch: int = 1) -> jax.Array:
  """Smallest valid images (zeros) for `init` / `jax.eval_shape`; params do not depend on their size."""
  size = config.downsample_factor
  return jnp.zeros((batch, size, size, config.in_channels), jnp.float32)


def abstract_variables(config: AutoencoderKLConfig, dtype: Any = jnp.float32) -> Any:
  """Boxed (logically partitioned) variable shapes of the autoencoder, via `jax.eval_shape` (no memory)."""
  model = AutoencoderKL(config, dtype=dtype)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), example_inputs(config)))


# ----------------------------------------------------------------------------
# Training objective (reconstruction + KL, as in LDM's autoencoder without the
# perceptual and adversarial terms).


def reconstruction_loss(
  images: jax.Array, reconstructions: jax.Array, kind: str = "l1"
) -> jax.Array:
  """Per-example L1 or squared-L2 error, summed over pixels and channels -> (B,)."""
  if kind not in RECONSTRUCTION_KINDS:
    raise ValueError(f"kind: expected one of {RECONSTRUCTION_KINDS}, found {kind!r}")
  if images.shape != reconstructions.shape:
    raise ValueError(
      f"reconstructions: expected the images' shape {images.shape}, found {reconstructions.shape}"
    )
  diff = reconstructions.astype(jnp.float32) - images.astype(jnp.float32)
  error = jnp.abs(diff) if kind == "l1" else jnp.square(diff)
  return jnp.sum(error, axis=tuple(range(1, error.ndim)))


def vae_loss(
  images: jax.Array,
  reconstructions: jax.Array,
  posterior: DiagonalGaussian,
  *,
  kl_weight: float = 1e-6,
  kind: str = "l1",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """reconstruction + kl_weight * KL(posterior || N(0, I)), each summed per example and averaged over the batch.

  The per-example sums follow LDM's autoencoder loss, so `kl_weight=1e-6`
  (the Stable Diffusion VAE's) means the same here. Returns (loss, metrics)
  with metrics `loss`, `reconstruction`, `kl` and the per-pixel `mse`.
  """
  rec = reconstruction_loss(images, reconstructions, kind)
  kl = posterior.kl()
  loss = jnp.mean(rec) + kl_weight * jnp.mean(kl)
  mse = jnp.mean(jnp.square(reconstructions.astype(jnp.float32) - images.astype(jnp.float32)))
  return loss, {"loss": loss, "reconstruction": jnp.mean(rec), "kl": jnp.mean(kl), "mse": mse}


def autoencoder_loss(
  params: Any,
  model: AutoencoderKL,
  images: jax.Array,
  rng: jax.Array,
  *,
  kl_weight: float = 1e-6,
  kind: str = "l1",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`vae_loss` of `model` on `images`, decoding a posterior sample drawn with `rng`.

  Differentiate with `jax.value_and_grad(autoencoder_loss, has_aux=True)`
  (`model`, `kl_weight`, `kind` static, e.g. via `functools.partial`).
  """
  reconstructions, posterior = model.apply({"params": params}, images, rng, sample_posterior=True)
  return vae_loss(images, reconstructions, posterior, kl_weight=kl_weight, kind=kind)
