"""Training a VQGAN image tokenizer (taming-transformers) on captioned images, task `vqgan`.

The first stage of the token priors (`jaxgen.tasks.image.image_tokens`): a
`jaxgen.models.vqgan.VQModel` (`config.vq`, diffusers `VQModel` fields) and
the PatchGAN `jaxgen.models.discriminator.PatchDiscriminator` (`config.disc`),
one params tree {"vqgan", "disc"}. Images are the captioned images of
`data.kind` ("shapes", the default, or "scenes"), drawn exactly as the
text-to-image tasks draw them (`captioned_data.make_captioned_split`), so a
prior trained on these codes sees the same images and captions.

Objective (taming `VQLPIPSWithDiscriminator`, `config.loss`, without LPIPS):

  nll   = mean |x - x_hat|
  g     = -mean D(x_hat)                       D frozen
  lambda = ||grad_L nll|| / (||grad_L g|| + 1e-4) * disc_weight,   L = decoder.conv_out
  G     = nll + lambda * f(step) * g + codebook_weight * q_loss
  D     = f(step) * 0.5 * (hinge real + hinge fake)     x_hat frozen
  loss  = G + D

with f(step) = disc_factor once step >= disc_start (the step the trainer
puts in `batch["step"]`). The two games share one scalar, as
`jaxgen.models.gan_losses.adversarial_objective` sums them: the generator's
term sees D through `stop_gradient(params["disc"])`, the discriminator's
sees `stop_gradient(x_hat)`, so each player's gradient is its own game's.
lambda compares the two gradients at the decoder's last conv kernel from one
decoder pass (`vqgan.last_layer_gradients`).

The codebook (`quantizer.codebook_update`): "learned" trains it by gradients with
taming's legacy loss; "ema" keeps EMA cluster means with dead-code reset
(decay `quantizer.ema_decay`), returned under `STATE_UPDATES_KEY` for the
trainer to write after the optimizer step. `evaluate` reports held-out
PSNR/SSIM and codebook usage (perplexity, used and dead codes).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.data import judge as shapes_judge
from jaxgen.data import shapes
from jaxgen.data.chunks import map_padded_chunks
from jaxgen.data.images import to_uint8
from jaxgen.metrics import image_quality
from jaxgen.models import vqgan
from jaxgen.models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from jaxgen.render.grid import make_grid
from jaxgen.tasks.image.captioned_data import data_kind, make_captioned_split
from jaxgen.training.task import STATE_UPDATES_KEY, Task

IMAGE_CHANNELS = shapes.CHANNELS
QUANTIZER_UPDATES = vqgan.CODEBOOK_UPDATES  # `quantizer.codebook_update`: "learned" | "ema"


class DiscStartError(ValueError):
  """`loss.disc_start > 0` but the batch carries no training step to compare it with."""


def check_image_fit(resolution: int, factor: int, disc: PatchDiscriminatorConfig) -> None:
  """Named errors when `data.resolution` does not fit the tokenizer or the discriminator."""
  if resolution % factor:
    raise ValueError(
      f"data.resolution: expected a multiple of the VQGAN's downsample factor {factor} "
      f"(2 ** (len(vq.block_out_channels) - 1)), found {resolution}"
    )
  if resolution < disc.min_input_size():
    raise ValueError(
      f"data.resolution: disc.num_layers={disc.num_layers} needs images of at least "
      f"{disc.min_input_size()} pixels, found {resolution}"
    )


def to_model_range(images: jax.Array) -> jax.Array:
  """uint8 pixels -> float32 in [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def training_step(batch: Mapping[str, jax.Array], disc_start: int) -> jax.Array:
  """The trainer's `batch["step"]`; 0 outside the trainer when the GAN starts at once."""
  if "step" in batch:
    return batch["step"]
  if disc_start > 0:
    raise DiscStartError(
      f"loss.disc_start={disc_start} needs the training step, but the batch has no 'step' "
      f"entry (keys {sorted(batch)}); set loss.disc_start=0 or pass the step in the batch"
    )
  return jnp.int32(0)


class VQGANTask(Task):
  """The `vqgan` task (see module docstring). Batches: {"image": uint8 (B, H, W, 3), ...}."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.resolution = config.data.resolution
    data_kind(config.data)  # named error for an unknown kind
    self.update = config.quantizer.codebook_update
    if self.update not in QUANTIZER_UPDATES:
      raise vqgan.CodebookUpdateError(
        f"quantizer.codebook_update: expected one of {QUANTIZER_UPDATES}, found {self.update!r}"
      )
    decay = config.quantizer.ema_decay
    if self.update == "ema" and not 0.0 < decay < 1.0:
      raise vqgan.CodebookUpdateError(f"quantizer.ema_decay: expected (0, 1), found {decay}")
    self.vq_config = vqgan.VQModelConfig(**config.vq.to_dict())
    self.model = vqgan.VQModel(self.vq_config, codebook_update=self.update)
    self.loss_config = vqgan.VQGANLossConfig(**config.loss.to_dict())
    self.disc_config = PatchDiscriminatorConfig(**config.disc.to_dict())
    if self.disc_config.in_channels != IMAGE_CHANNELS:
      raise ValueError(
        f"disc.in_channels: expected {IMAGE_CHANNELS} (RGB), found {self.disc_config.in_channels}"
      )
    self.discriminator = PatchDiscriminator(self.disc_config)
    check_image_fit(self.resolution, self.vq_config.downsample_factor, self.disc_config)

  @property
  def token_grid(self) -> tuple[int, int]:
    """(h, w) codes per image."""
    side = self.resolution // self.vq_config.downsample_factor
    return side, side

  @property
  def num_codes(self) -> int:
    return self.vq_config.num_vq_embeddings

  # -- data --------------------------------------------------------------

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    d = self.config.data
    return dict(image=make_captioned_split(d, "train", d.num_train_examples, d.seed)["image"])

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    r = self.resolution
    return dict(image=jax.ShapeDtypeStruct((batch_size, r, r, IMAGE_CHANNELS), jnp.uint8))

  def eval_split(self, num_examples: int) -> dict[str, np.ndarray]:
    """Held-out captioned images (combinations never seen in training)."""
    return make_captioned_split(self.config.data, "test", num_examples, self.config.data.seed + 1)

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    shapes.check_image_batch(batch["image"], self.resolution)

  # -- model -------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    vq_rng, disc_rng = jax.random.split(rng)
    x = jnp.zeros(batch["image"].shape, jnp.float32)
    return dict(
      vqgan=self.model.init(vq_rng, x)["params"],
      disc=self.discriminator.init(disc_rng, x)["params"],
    )

  def _disc(self, params, images: jax.Array) -> jax.Array:
    return self.discriminator.apply({"params": params}, images)

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    cfg = self.loss_config
    step = training_step(batch, cfg.disc_start)
    x = to_model_range(batch["image"])
    vq_params = params["vqgan"]
    apply = functools.partial(self.model.apply, {"params": vq_params})
    latents = apply(x, method=vqgan.VQModel.encode)
    ema = self.update == "ema"
    decay = self.config.quantizer.ema_decay if ema else None
    out = apply(latents, rng if ema else None, decay, method=vqgan.VQModel.quantize)

    def reconstruct(kernel):
      p = vqgan.with_last_layer(vq_params, kernel)
      return self.model.apply({"params": p}, out.quantized, method=vqgan.VQModel.decode_quantized)

    frozen_disc = jax.lax.stop_gradient(params["disc"])
    nll_fn = functools.partial(vqgan.reconstruction_nll, x)
    g_fn = lambda rec: -jnp.mean(self._disc(frozen_disc, rec))  # noqa: E731
    rec, nll_grad, g_grad = vqgan.last_layer_gradients(
      reconstruct, vqgan.last_layer(vq_params), nll_fn, g_fn
    )
    weight = vqgan.adaptive_weight(nll_grad, g_grad, cfg.disc_weight)
    g_total, metrics = vqgan.generator_loss(
      nll_fn(rec), self._disc(frozen_disc, rec), out.loss, weight, step, cfg
    )
    logits_real = self._disc(params["disc"], x)
    logits_fake = self._disc(params["disc"], jax.lax.stop_gradient(rec))
    d_loss = vqgan.discriminator_loss(logits_real, logits_fake, step, cfg)
    loss = g_total + d_loss
    usage = vqgan.codebook_usage(out.codes, self.num_codes)
    metrics.update(
      {k: v.astype(jnp.float32) for k, v in usage.items()},
      d_loss=d_loss,
      logits_real=jnp.mean(logits_real),
      logits_fake=jnp.mean(logits_fake),
      commitment=out.commitment,
      loss=loss,
    )
    if ema:
      metrics[STATE_UPDATES_KEY] = {"vqgan": {"quantizer": out.state}}
    return loss, metrics

  # -- using the trained tokenizer -------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self",))
  def encode_codes(self, params, images: jax.Array) -> jax.Array:
    """uint8 images (B, H, W, 3) -> codes (B, h, w) int32."""
    apply = functools.partial(self.model.apply, {"params": params["vqgan"]})
    latents = apply(to_model_range(images), method=vqgan.VQModel.encode)
    return apply(latents, method=vqgan.VQModel.quantize).codes.astype(jnp.int32)

  @functools.partial(jax.jit, static_argnames=("self",))
  def decode_codes(self, params, codes: jax.Array) -> jax.Array:
    """codes (B, h, w) int -> images in [-1, 1] (B, H, W, 3)."""
    images = self.model.apply({"params": params["vqgan"]}, codes, method=vqgan.VQModel.decode_codes)
    return jnp.clip(images, -1.0, 1.0)

  @functools.partial(jax.jit, static_argnames=("self",))
  def reconstruct(self, params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """uint8 images -> (reconstructions in [-1, 1], codes (B, h, w) int32)."""
    recs, out = self.model.apply({"params": params["vqgan"]}, to_model_range(images))
    return jnp.clip(recs, -1.0, 1.0), out.codes.astype(jnp.int32)

  def evaluate(
    self, params, num_images: int | None = None, batch_size: int = 256
  ) -> dict[str, float]:
    """Reconstruction quality and codebook usage on held-out images.

    Returns {"psnr", "ssim" (means over images, uint8 reconstructions,
    data range 255; SSIM needs images of 11 pixels or more), "l1" (mean
    |x - x_hat| in [-1, 1]), "perplexity", "used_codes", "dead_codes" (of
    the codes of all images together), and for shapes the judge's
    accuracies on the reconstructions (`judge_*`: the ceiling of any prior
    over these codes)}.
    """
    data = self.eval_split(num_images or self.config.eval.num_examples)
    originals = data["image"]
    recs, codes = map_padded_chunks(
      lambda _, chunk: self.reconstruct(params, chunk), [originals], min(batch_size, len(originals))
    )
    rec_uint8 = to_uint8(recs)
    metrics = dict(
      psnr=float(np.mean(image_quality.psnr(rec_uint8, originals, data_range=255.0))),
      ssim=float(np.mean(image_quality.ssim(rec_uint8, originals, data_range=255.0))),
      l1=float(np.mean(np.abs(recs - originals.astype(np.float32) / 127.5 + 1.0))),
    )
    usage = vqgan.codebook_usage(jnp.asarray(codes), self.num_codes)
    metrics.update({k: float(v) for k, v in usage.items()})
    if data_kind(self.config.data) == "shapes":
      judged = shapes_judge.judge_images(rec_uint8, data)["accuracy"]
      metrics.update({f"judge_{k}": float(v) for k, v in judged.items()})
    return metrics

  def preview(self, params, rng: jax.Array, num: int = 16) -> np.ndarray:
    """Held-out images (odd tiles) beside their reconstructions (even tiles)."""
    del rng  # quantization is deterministic
    data = self.eval_split(num)
    recs = to_uint8(np.asarray(self.reconstruct(params, jnp.asarray(data["image"]))[0]))
    pairs = np.stack([data["image"], recs], axis=1).reshape(-1, *recs.shape[1:])
    captions = [c for caption in data["caption"] for c in (caption, "reconstruction")]
    return make_grid(pairs, captions, scale=3, ncols=8)
