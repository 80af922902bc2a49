"""VQGAN image tokenizer (taming-transformers; diffusers `VQModel`) and its training losses.

The encoder and decoder are the KL autoencoder's (`jaxgen.models.autoencoder`)
with `double_z=False` and, at taming's attention resolutions, the
`AttnDownEncoderBlock2D` / `AttnUpDecoderBlock2D` block types. Between them:

  images -> Encoder -> quant_conv (1x1) -> latents z (B, h, w, D)
         -> nearest codebook row z_q, codes (B, h, w)
         -> post_quant_conv (1x1) -> Decoder -> images

The module tree mirrors diffusers' so weights convert mechanically
(`jaxgen.convert.diffusers_vqmodel`); the codebook lives in the `quantizer`
sub-tree as in the motion VQ (`jaxgen.models.vq`), whose nearest-code search,
perplexity and EMA update this module reuses.

Quantizer (taming `VectorQuantizer2`, diffusers `VectorQuantizer`, both with
`legacy=True`): straight-through z + sg(z_q - z) and the loss

  ||sg(z_q) - z||^2 + beta * ||z_q - sg(z)||^2,   beta = 0.25,

means over all elements. `legacy` puts beta on the codebook term, not on the
commitment term as the VQ-VAE paper writes it; jaxgen keeps the swap so that
converted weights train as they did. With `codebook_update="ema"` the codebook
is not learnt by gradients: it holds EMA cluster means with dead-code reset
(`vq.ema_quantize`), returned as new state for the trainer's
`STATE_UPDATES_KEY`, and the loss is taming's `EMAVectorQuantizer` one,
beta * ||sg(z_q) - z||^2.

Losses (taming `VQLPIPSWithDiscriminator`, pure functions at the end):
  nll = mean |x - x_hat|                 (LPIPS: not available offline)
  g   = -mean D(x_hat)
  lambda = clip(||grad_L nll|| / (||grad_L g|| + 1e-4), 0, 1e4) * disc_weight,
           L the decoder's last conv kernel, gradient stopped
  generator = nll + lambda * f(step) * g + codebook_weight * q_loss
  discriminator = f(step) * 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))
with f(step) = disc_factor once step >= disc_start, else 0. The discriminator
is `jaxgen.models.discriminator.PatchDiscriminator` (taming: `norm="batch"`).

Example:
  model = VQModel(VQModelConfig.from_diffusers(config_json))
  latents = model.apply(variables, images, method=model.encode)
  out = model.apply(variables, latents, method=model.quantize)      # out.codes (B, h, w)
  images = model.apply(variables, out.codes, method=model.decode_codes)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.errors import UnsupportedConfigError
from jaxgen.models import diffusers_config, vq
from jaxgen.models.autoencoder import AutoencoderKLConfig, Decoder, Encoder, check_images
from jaxgen.models.discriminator import hinge_discriminator_loss, hinge_generator_loss
from jaxgen.models.gan_losses import discriminator_loss as gan_discriminator_loss
from jaxgen.nn import partitioning as pt

# diffusers builds its `VectorQuantizer` with beta 0.25 and legacy=True.
BETA = 0.25
CODEBOOK_UPDATES = ("learned", "ema")
NORM_TYPES = ("group",)
DISC_LOSSES = ("hinge", "vanilla")
# taming `calculate_adaptive_weight`.
ADAPTIVE_WEIGHT_EPS = 1e-4
ADAPTIVE_WEIGHT_MAX = 1e4
# The decoder's last conv, at which the adaptive weight compares gradients.
LAST_LAYER_PATH = ("decoder", "conv_out", "kernel")


class LpipsUnavailableError(ValueError):
  """A perceptual (LPIPS) loss was asked for; its pretrained VGG weights cannot be fetched offline."""


class CodebookUpdateError(ValueError):
  """An unknown codebook update, or an EMA update asked for without its decay or key."""


@dataclasses.dataclass(frozen=True)
class VQModelConfig:
  """Architecture of a `VQModel`; field names and defaults are diffusers `VQModel`'s.

  vq_embed_dim: codebook vector width (None: latent_channels).
  scaling_factor: latent scale for a diffusion model over z (not used here).
  norm_type: only "group"; diffusers' "spatial" (MoVQ's spatially
    conditioned decoder norm) raises `UnsupportedConfigError`.
  lookup_from_codebook, force_upcast: accepted for compatibility;
    `decode_codes` is the codebook lookup and computation stays float32.
  Taming's ImageNet f16 models are `configs/arch/vqgan_imagenet_f16_16384.py`
  and `vqgan_imagenet_f16_1024.py`.
  """

  in_channels: int = 3
  out_channels: int = 3
  down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
  up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
  block_out_channels: tuple[int, ...] = (64,)
  layers_per_block: int = 1
  act_fn: str = "silu"
  latent_channels: int = 3
  sample_size: int = 32
  num_vq_embeddings: int = 256
  norm_num_groups: int = 32
  vq_embed_dim: int | None = None
  scaling_factor: float = 0.18215
  norm_type: str = "group"
  mid_block_add_attention: bool = True
  lookup_from_codebook: bool = False
  force_upcast: bool = False

  def __post_init__(self):
    diffusers_config.freeze_sequences(self)
    if self.norm_type not in NORM_TYPES:
      raise UnsupportedConfigError(
        f"norm_type: only 'group' is supported (diffusers' 'spatial' MoVQ decoder norm is not), "
        f"found {self.norm_type!r}"
      )
    if not isinstance(self.num_vq_embeddings, int) or self.num_vq_embeddings < 1:
      raise ValueError(f"num_vq_embeddings: expected an int >= 1, found {self.num_vq_embeddings!r}")
    if self.vq_embed_dim is not None and (
      not isinstance(self.vq_embed_dim, int) or self.vq_embed_dim < 1
    ):
      raise ValueError(f"vq_embed_dim: expected None or an int >= 1, found {self.vq_embed_dim!r}")
    self.autoencoder_config()  # validates the shared encoder/decoder fields

  def autoencoder_config(self) -> AutoencoderKLConfig:
    """The encoder/decoder architecture as the KL autoencoder's config (validated there)."""
    shared = (
      "in_channels",
      "out_channels",
      "down_block_types",
      "up_block_types",
      "block_out_channels",
      "layers_per_block",
      "act_fn",
      "latent_channels",
      "norm_num_groups",
      "sample_size",
      "mid_block_add_attention",
    )
    return AutoencoderKLConfig(**{name: getattr(self, name) for name in shared})

  @property
  def embed_dim(self) -> int:
    """Width of a codebook vector (and of the quantized latents)."""
    return self.vq_embed_dim or self.latent_channels

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  @classmethod
  def from_diffusers(cls, config: Mapping[str, Any]) -> VQModelConfig:
    """Builds a config from a diffusers `VQModel.config` (or its config.json dict)."""
    return diffusers_config.from_diffusers(cls, config, {}, "VQModel")

  def to_diffusers(self) -> dict[str, Any]:
    """The config as `VQModel(**kwargs)` keyword arguments (JSON-friendly lists)."""
    return diffusers_config.to_diffusers(self)


def check_codebook_update(codebook_update: str) -> str:
  if codebook_update not in CODEBOOK_UPDATES:
    raise CodebookUpdateError(
      f"codebook_update: expected one of {CODEBOOK_UPDATES}, found {codebook_update!r}"
    )
  return codebook_update


@flax.struct.dataclass
class QuantizerOutput:
  """What `VQModel.quantize` returns (a pytree).

  codes: (B, h, w) int32 nearest codebook rows.
  quantized: (B, h, w, D) straight-through latents z + sg(z_q - z) (value z_q).
  loss: the quantizer loss (legacy formula, or beta * commitment under EMA).
  commitment: mean (sg(z_q) - z)^2, the encoder's term.
  codebook_loss: mean (z_q - sg(z))^2, the codebook's term (same value).
  state: new EMA statistics ({"codebook", "code_sum", "code_count",
    "initialized"}) when the EMA codebook was updated, else None; a task
    returns `{"quantizer": state}` under `STATE_UPDATES_KEY`.
  """

  codes: jax.Array
  quantized: jax.Array
  loss: jax.Array
  commitment: jax.Array
  codebook_loss: jax.Array
  state: dict[str, jax.Array] | None = None


def quantizer_loss(
  latents: jax.Array, codebook_rows: jax.Array, beta: float = BETA, legacy: bool = True
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(loss, commitment, codebook term) of diffusers/taming `VectorQuantizer`.

  commitment = mean (sg(z_q) - z)^2, codebook = mean (z_q - sg(z))^2;
  legacy: commitment + beta * codebook, else beta * commitment + codebook.
  """
  z = latents.astype(jnp.float32)
  z_q = codebook_rows.astype(jnp.float32)
  commitment = jnp.mean(jnp.square(jax.lax.stop_gradient(z_q) - z))
  codebook = jnp.mean(jnp.square(z_q - jax.lax.stop_gradient(z)))
  loss = commitment + beta * codebook if legacy else beta * commitment + codebook
  return loss, commitment, codebook


def straight_through(latents: jax.Array, codebook_rows: jax.Array) -> jax.Array:
  """z + sg(z_q - z): the value of z_q, the gradient of z."""
  return latents + jax.lax.stop_gradient(codebook_rows.astype(latents.dtype) - latents)


def codebook_usage(codes: jax.Array, num_codes: int) -> dict[str, jax.Array]:
  """Perplexity of the code histogram, number of codes used and of dead (unused) codes."""
  counts = jnp.bincount(codes.reshape(-1), length=num_codes)
  used = jnp.sum(counts > 0)
  return dict(
    perplexity=vq.perplexity(codes, num_codes), used_codes=used, dead_codes=num_codes - used
  )


class VQModel(nn.Module):
  """VQGAN autoencoder (diffusers `VQModel`) on NHWC images in [-1, 1].

  codebook_update: "learned" (gradient-trained codebook, U(-1/K, 1/K) init as
    diffusers) or "ema" (EMA cluster means + dead-code reset, statistics in
    the params tree, set from the first training batch).

  Methods (use with `apply(..., method=...)`):
    encode(images) -> latents z after quant_conv (B, h, w, D), float32.
    quantize(latents, rng=None, ema_decay=None) -> QuantizerOutput; with
      "ema", `ema_decay` and `rng` update the codebook (training).
    decode_quantized(quantized) -> images (post_quant_conv + decoder).
    decode_codes(codes) -> images.
    decode(latents) -> images, quantizing first (diffusers `decode`).
    __call__(images, rng=None, ema_decay=None) -> (reconstruction, QuantizerOutput).
  """

  config: VQModelConfig
  codebook_update: str = "learned"
  dtype: Any = jnp.float32

  def setup(self):
    cfg = self.config
    ema = check_codebook_update(self.codebook_update) == "ema"
    ae = cfg.autoencoder_config()
    self.encoder = Encoder(ae, dtype=self.dtype, double_z=False)
    self.quant_conv = pt.conv(cfg.embed_dim, 1, dtype=self.dtype)
    init = (
      nn.initializers.zeros_init() if ema else vq.symmetric_uniform(1.0 / cfg.num_vq_embeddings)
    )
    self.quantizer = vq.QuantizerParams(
      (cfg.num_vq_embeddings, cfg.embed_dim), init, with_statistics=ema
    )
    self.post_quant_conv = pt.conv(cfg.latent_channels, 1, dtype=self.dtype)
    self.decoder = Decoder(ae, dtype=self.dtype)

  def encode(self, images: jax.Array) -> jax.Array:
    check_images(self.config.autoencoder_config(), images)
    return self.quant_conv(self.encoder(images.astype(self.dtype))).astype(jnp.float32)

  def codebook(self) -> jax.Array:
    return self.quantizer()["codebook"]

  def quantize(
    self, latents: jax.Array, rng: jax.Array | None = None, ema_decay: float | None = None
  ) -> QuantizerOutput:
    """Nearest codes of `latents` (B, h, w, D), straight-through latents and the quantizer loss."""
    _check_latents(latents, self.config.embed_dim)
    z = latents.astype(jnp.float32)
    state = None
    if self.codebook_update == "ema":
      if (rng is None) != (ema_decay is None):
        raise CodebookUpdateError(
          "rng, ema_decay: an EMA codebook update needs both (training) or neither (inference), "
          f"found rng={'set' if rng is not None else None}, ema_decay={ema_decay}"
        )
      if ema_decay is not None:
        q = self.quantizer()
        current = vq.QuantizerState(q["codebook"], q["code_sum"], q["code_count"], q["initialized"])
        codes, rows, new_state = vq.ema_quantize(current, z, rng, ema_decay)
        state = new_state._asdict()
      else:
        codes, rows = self._nearest(z)
      _, commitment, codebook = quantizer_loss(z, rows)
      loss = BETA * commitment  # taming `EMAVectorQuantizer`
    else:
      codes, rows = self._nearest(z)
      loss, commitment, codebook = quantizer_loss(z, rows)
    return QuantizerOutput(codes, straight_through(z, rows), loss, commitment, codebook, state)

  def _nearest(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    codebook = self.codebook()
    if self.codebook_update == "ema":
      codebook = jax.lax.stop_gradient(codebook)
    codes = vq.quantize(jax.lax.stop_gradient(z), codebook)
    return codes, vq.dequantize(codes, codebook)

  def decode_quantized(self, quantized: jax.Array) -> jax.Array:
    _check_latents(quantized, self.config.embed_dim, "quantized")
    return self.decoder(self.post_quant_conv(quantized.astype(self.dtype)))

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    """codes (B, h, w) int -> images (B, h*f, w*f, out_channels)."""
    if codes.ndim != 3 or not jnp.issubdtype(codes.dtype, jnp.integer):
      raise ValueError(
        f"codes: expected (batch, height, width) integers, found {codes.dtype} {codes.shape}"
      )
    return self.decode_quantized(vq.dequantize(codes, self.codebook()))

  def decode(self, latents: jax.Array) -> jax.Array:
    """Continuous latents (as `encode` returns) -> images through their nearest codes."""
    return self.decode_quantized(self.quantize(latents).quantized)

  def __call__(
    self, images: jax.Array, rng: jax.Array | None = None, ema_decay: float | None = None
  ) -> tuple[jax.Array, QuantizerOutput]:
    out = self.quantize(self.encode(images), rng, ema_decay)
    return self.decode_quantized(out.quantized), out


def _check_latents(latents: Any, channels: int, name: str = "latents") -> None:
  shape = tuple(getattr(latents, "shape", ()))
  if len(shape) != 4 or shape[-1] != channels:
    raise ValueError(
      f"{name}: expected (batch, height, width, {channels}) (config.vq_embed_dim), found shape {shape}"
    )


def example_inputs(config: VQModelConfig, batch: int = 1) -> jax.Array:
  """Smallest valid images (zeros) for `init` / `jax.eval_shape`."""
  size = config.downsample_factor
  return jnp.zeros((batch, size, size, config.in_channels), jnp.float32)


def abstract_variables(
  config: VQModelConfig, codebook_update: str = "learned", dtype: Any = jnp.float32
) -> Any:
  """Boxed variable shapes of a `VQModel`, via `jax.eval_shape` (no memory)."""
  model = VQModel(config, codebook_update, dtype=dtype)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), example_inputs(config)))


# ----------------------------------------------------------------------------
# Training losses (taming `VQLPIPSWithDiscriminator`).


@dataclasses.dataclass(frozen=True)
class VQGANLossConfig:
  """taming `VQLPIPSWithDiscriminator` options (its names).

  Defaults are the ImageNet f16-16384 release's (disc_start 0, disc_weight
  0.75) except `perceptual_weight` (taming 1.0): jaxgen has no LPIPS network
  offline, so any value > 0 raises `LpipsUnavailableError`.
  """

  codebook_weight: float = 1.0
  perceptual_weight: float = 0.0
  disc_start: int = 0
  disc_factor: float = 1.0
  disc_weight: float = 0.75
  disc_loss: str = "hinge"

  def __post_init__(self):
    if self.perceptual_weight:
      raise LpipsUnavailableError(
        "perceptual_weight: LPIPS needs pretrained VGG weights that jaxgen cannot fetch offline; "
        f"expected 0, found {self.perceptual_weight}"
      )
    if self.disc_loss not in DISC_LOSSES:
      raise ValueError(f"disc_loss: expected one of {DISC_LOSSES}, found {self.disc_loss!r}")
    for name in ("codebook_weight", "disc_factor", "disc_weight", "disc_start"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name}: expected a number >= 0, found {getattr(self, name)}")


def adopt_weight(weight: float, step: jax.Array, threshold: int) -> jax.Array:
  """`weight` once `step >= threshold`, else 0 (taming `adopt_weight`)."""
  return jnp.where(jnp.asarray(step) >= threshold, weight, 0.0).astype(jnp.float32)


def adaptive_weight(nll_grad: jax.Array, g_grad: jax.Array, disc_weight: float = 1.0) -> jax.Array:
  """clip(||nll_grad|| / (||g_grad|| + 1e-4), 0, 1e4) * disc_weight, gradient stopped.

  The two gradients are those of the reconstruction loss and of the
  generator's adversarial loss w.r.t. the decoder's last layer
  (`last_layer_gradients`).
  """
  ratio = jnp.linalg.norm(nll_grad.ravel()) / (
    jnp.linalg.norm(g_grad.ravel()) + ADAPTIVE_WEIGHT_EPS
  )
  return jax.lax.stop_gradient(jnp.clip(ratio, 0.0, ADAPTIVE_WEIGHT_MAX) * disc_weight)


def last_layer_gradients(
  reconstruct: Callable[[jax.Array], jax.Array],
  last_kernel: jax.Array,
  nll_fn: Callable[[jax.Array], jax.Array],
  g_fn: Callable[[jax.Array], jax.Array],
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(reconstructions, d nll / d kernel, d g / d kernel) from one decoder pass.

  reconstruct: last-layer kernel -> reconstructions (the model applied with
    that kernel, e.g. via `with_last_layer`); nll_fn, g_fn: reconstructions
    -> scalar. One `jax.vjp` serves both gradients, and the returned
    reconstructions stay differentiable w.r.t. everything `reconstruct`
    closes over, so the same pass feeds the generator loss.
  """
  reconstructions, vjp = jax.vjp(reconstruct, last_kernel)
  (nll_grad,) = vjp(jax.grad(nll_fn)(reconstructions))
  (g_grad,) = vjp(jax.grad(g_fn)(reconstructions))
  return reconstructions, nll_grad, g_grad


def last_layer(params: Mapping[str, Any]) -> jax.Array:
  """The decoder's last conv kernel of unboxed `VQModel` params (the adaptive weight's layer)."""
  node = params
  for key in LAST_LAYER_PATH:
    node = node[key]
  return node


def with_last_layer(params: Mapping[str, Any], kernel: jax.Array) -> dict[str, Any]:
  """A shallow copy of unboxed `VQModel` params with the decoder's last conv kernel replaced."""
  decoder = dict(params[LAST_LAYER_PATH[0]])
  conv = dict(decoder[LAST_LAYER_PATH[1]])
  conv[LAST_LAYER_PATH[2]] = kernel
  decoder[LAST_LAYER_PATH[1]] = conv
  return {**params, LAST_LAYER_PATH[0]: decoder}


def reconstruction_nll(images: jax.Array, reconstructions: jax.Array) -> jax.Array:
  """mean |x - x_hat| over all elements (taming's nll with logvar 0 and no LPIPS)."""
  return jnp.mean(jnp.abs(images.astype(jnp.float32) - reconstructions.astype(jnp.float32)))


def generator_loss(
  nll: jax.Array,
  logits_fake: jax.Array,
  quantizer_loss_value: jax.Array,
  weight: jax.Array,
  step: jax.Array,
  config: VQGANLossConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """nll + weight * f(step) * g + codebook_weight * q_loss, g = -mean D(x_hat).

  weight: the adaptive weight (`adaptive_weight`, already times disc_weight).
  Returns (loss, metrics: nll, g_loss, d_weight, disc_factor, quant_loss).
  """
  g = hinge_generator_loss(logits_fake.astype(jnp.float32))
  factor = adopt_weight(config.disc_factor, step, config.disc_start)
  loss = nll + weight * factor * g + config.codebook_weight * quantizer_loss_value
  return loss, dict(
    nll=nll, g_loss=g, d_weight=weight, disc_factor=factor, quant_loss=quantizer_loss_value
  )


def discriminator_loss(
  logits_real: jax.Array, logits_fake: jax.Array, step: jax.Array, config: VQGANLossConfig
) -> jax.Array:
  """f(step) * 0.5 * (hinge or vanilla real + fake terms); pass sg(x_hat)'s logits."""
  real, fake = logits_real.astype(jnp.float32), logits_fake.astype(jnp.float32)
  if config.disc_loss == "hinge":
    game = hinge_discriminator_loss(real, fake)
  else:
    game = 0.5 * gan_discriminator_loss("vanilla", real, fake)
  return adopt_weight(config.disc_factor, step, config.disc_start) * game
