"""Pix2Pix (Isola et al. 2017): a U-Net generator and a conditional PatchGAN, L1 + GAN.

As pytorch-CycleGAN-and-pix2pix's `Pix2PixModel` (REFERENCES_WAVE2.md §1):

  G loss = GAN(D(source, G(source)), real) + λ_L1 · |G(source) − target|₁     λ_L1 = 100
  D loss = ½ [GAN(D(source, target), real) + GAN(D(source, G(source)), fake)]

with the vanilla (BCE-with-logits) game by default (`loss.gan_mode`), the
discriminator seeing the source and an image concatenated on channels
(source first), and Adam 2e-4, β1 0.5 in the config. The generator runs with
dropout on (where `generator.num_downs` gives it middle levels) at training
and at test time, and its BatchNorm on the statistics of the batch at hand,
as the reference runs. The trainer has one optimizer over {"generator",
"discriminator"}; `jaxgen.models.gan_losses.adversarial_objective` places
stop-gradients so each player gets exactly its own game's gradient (the
updates are simultaneous, where the reference alternates D then G).

Differences from the reference: the scenes are 32×32 (the reference loads
286 and random-crops 256; no crop or flip here, the scenes are already
aligned), and the batch is the comparison table's 16 (the reference trains
with 1, where BatchNorm is instance norm). `translate` normalises with the
statistics of the batch it is given, so outputs depend a little on the
other images in their chunk (see `generate_batch_size`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgen.models import gan_losses
from jaxgen.models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from jaxgen.models.pix2pix import UnetGenerator, UnetGeneratorConfig
from jaxgen.tasks.image_to_image.translation import ImageToImageTask

TARGET_CHANNELS = 3


class Pix2PixConfigError(ValueError):
  """A `generator`, `discriminator` or `loss` setting pix2pix cannot use."""


class Pix2PixTask(ImageToImageTask):
  """The `pix2pix` task. Params {"generator", "discriminator"}; batches {"source", "target"} uint8."""

  # Batch statistics at test time: a chunk padded with copies of one scene would
  # skew that chunk's statistics; 50 divides the table's 200 test scenes.
  generate_batch_size = 50

  def __init__(self, config):
    super().__init__(config)
    g, d, loss = config.generator, config.discriminator, config.loss
    try:
      self.generator_config = UnetGeneratorConfig(
        in_channels=self.source_channels,
        out_channels=TARGET_CHANNELS,
        num_downs=g.num_downs,
        ngf=g.ngf,
        norm=g.norm,
        use_dropout=g.use_dropout,
      )
      self.disc_config = PatchDiscriminatorConfig(
        in_channels=self.source_channels + TARGET_CHANNELS,
        channels=d.channels,
        num_layers=d.num_layers,
        norm=d.norm,
      )
      gan_losses.check_kind(loss.gan_mode, "loss.gan_mode")
    except (ValueError, TypeError) as e:
      raise Pix2PixConfigError(f"pix2pix config: {e}") from e
    if not loss.l1_weight >= 0:
      raise Pix2PixConfigError(f"loss.l1_weight: expected a number >= 0, found {loss.l1_weight!r}")
    multiple = self.generator_config.size_multiple
    if self.resolution % multiple:
      raise Pix2PixConfigError(
        f"generator.num_downs={g.num_downs} needs data.resolution to be a multiple of "
        f"{multiple}, found {self.resolution}"
      )
    if self.resolution < self.disc_config.min_input_size():
      raise Pix2PixConfigError(
        f"discriminator.num_layers={d.num_layers} needs data.resolution >= "
        f"{self.disc_config.min_input_size()}, found {self.resolution}"
      )
    self.generator = UnetGenerator(self.generator_config)
    self.discriminator = PatchDiscriminator(self.disc_config)

  def init(self, rng, batch):
    g_rng, d_rng = jax.random.split(rng)
    source = jnp.zeros(batch["source"].shape[:3] + (self.source_channels,), jnp.float32)
    pair = jnp.zeros(source.shape[:3] + (self.disc_config.in_channels,), jnp.float32)
    return {
      "generator": self.generator.init(g_rng, source)["params"],
      "discriminator": self.discriminator.init(d_rng, pair)["params"],
    }

  def _generate(self, params, source, rng):
    return self.generator.apply(
      {"params": params}, source, deterministic=False, rngs={"dropout": rng}
    )

  def loss(self, params, batch, rng):
    source = self.source_input(batch["source"])
    target = self.target_input(batch["target"])
    fake = self._generate(params["generator"], source, rng)
    l1 = jnp.mean(jnp.abs(fake - target))
    adversarial, metrics = gan_losses.adversarial_objective(
      jnp.concatenate([source, target], axis=-1),
      jnp.concatenate([source, fake], axis=-1),
      lambda p, x: self.discriminator.apply({"params": p}, x),
      params["discriminator"],
      kind=self.config.loss.gan_mode,
      d_weight=0.5,  # the reference halves the discriminator's loss
    )
    loss = adversarial + self.config.loss.l1_weight * l1
    metrics.update(l1=l1, loss=loss)
    return loss, metrics

  def translate(self, params, source, rng, **options):
    """Generator outputs in [-1, 1], dropout on (as the reference's test script)."""
    del options  # pix2pix has no sampler options
    return self._generate(params["generator"], source, rng)

  def translation_params(self, params):
    return params["generator"]
