"""SPADE (Park et al. 2019): label map -> image with spatially-adaptive normalisation.

As NVlabs/SPADE's `Pix2PixModel` without the VAE image encoder
(REFERENCES_WAVE2.md §2):

  G loss = GAN_G(D(label, G(label))) + λ_feat · FM          λ_feat = 10
  D loss = GAN_D(D(label, image), real) + GAN_D(D(label, G(label)), fake)

with the hinge game (`loss.gan_mode`), each term averaged over the
`MultiscaleDiscriminator`'s scales, and FM the L1 between the fake's and
the real's intermediate discriminator features (every conv block but the
logits) summed over layers and averaged over scales. The discriminator is
the reference's n-layer PatchGAN at two scales: 4×4 convs padded by 2,
spectral norm and instance norm (no conv bias) on the middle convs, input
label ‖ image. Adam β (0, 0.9) with TTUR: the config's learning rate 1e-4 is
the generator's and `optim.lr_multipliers` gives the discriminator 4× that.

The trainer has one optimizer over {"generator", "discriminator"};
`gan_losses.adversarial_objective_with_features` places stop-gradients so
each player gets exactly its own objective's gradient (the updates are
simultaneous, where the reference alternates G then D).

Differences from the reference:
- No VGG19 perceptual term (λ_vgg 10 there): it needs pretrained VGG19
  weights, which are not available offline; `loss.vgg_weight > 0` raises
  `SPADEConfigError`.
- The generator's parameter-free norm uses batch statistics at sampling time
  too (the reference samples with running averages in eval mode), so an
  output depends a little on the other label maps in its chunk
  (`generate_batch_size`).
- The discriminator's `spectral_norm` option wraps every conv, the first and
  the logit conv included; the reference leaves those two plain (the same
  parameters).
- Only label maps are inputs (`data.source = "label"`): SPADE modulates with
  a semantic layout; there is no instance map or dontcare label in the scenes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgen.data import scenes
from jaxgen.models import gan_losses
from jaxgen.models.discriminator import MultiscaleDiscriminator, PatchDiscriminatorConfig
from jaxgen.models.spade import (
  SPADE_HIDDEN,
  UPSAMPLING_LAYERS,
  SPADEGenerator,
  SPADEGeneratorConfig,
)
from jaxgen.tasks.image_to_image.translation import ImageToImageTask

TARGET_CHANNELS = 3
DISC_PADDING = 2  # the reference's ceil((4 - 1) / 2)


class SPADEConfigError(ValueError):
  """A `generator`, `discriminator` or `loss` setting SPADE cannot use."""


class SPADETask(ImageToImageTask):
  """The `spade` task. Params {"generator", "discriminator"}; batches {"source", "target"} uint8."""

  sources = ("label",)
  # Batch statistics at sampling time: 50 divides the table's 200 test scenes,
  # so no chunk is padded with copies of one scene.
  generate_batch_size = 50

  def __init__(self, config):
    super().__init__(config)
    g, d, loss = config.generator, config.discriminator, config.loss
    if loss.get("vgg_weight", 0.0):
      raise SPADEConfigError(
        f"loss.vgg_weight: the VGG perceptual term needs pretrained VGG19 weights, which are not "
        f"available offline; expected 0, found {loss.vgg_weight}"
      )
    if not loss.feat_weight >= 0:
      raise SPADEConfigError(
        f"loss.feat_weight: expected a number >= 0, found {loss.feat_weight!r}"
      )
    factor = 2 ** UPSAMPLING_LAYERS.get(g.num_upsampling_layers, 0)
    if self.resolution % factor:
      raise SPADEConfigError(
        f"data.resolution: generator.num_upsampling_layers={g.num_upsampling_layers!r} "
        f"upsamples {factor}x from the start map, so expected a multiple of {factor}, "
        f"found {self.resolution}"
      )
    try:
      gan_losses.check_kind(loss.gan_mode, "loss.gan_mode")
      self.generator_config = SPADEGeneratorConfig(
        label_nc=scenes.NUM_LABELS,
        contain_dontcare=False,
        no_instance=True,
        ngf=g.ngf,
        num_upsampling_layers=g.num_upsampling_layers,
        crop_size=self.resolution,
        aspect_ratio=1.0,
        spectral_norm=g.spectral_norm,
        spade_hidden=g.get("spade_hidden", SPADE_HIDDEN),
      )
      if not isinstance(d.n_layers_D, int) or d.n_layers_D < 2:
        raise ValueError(f"discriminator.n_layers_D: expected an int >= 2, found {d.n_layers_D!r}")
      self.disc_config = PatchDiscriminatorConfig(
        in_channels=self.generator_config.semantic_nc + TARGET_CHANNELS,
        channels=d.ndf,
        num_layers=d.n_layers_D - 1,  # the last of the reference's n_layers_D has stride 1
        norm="instance",
        conv_bias=False,
        spectral_norm=True,
        padding=DISC_PADDING,
      )
    except (ValueError, TypeError) as e:
      raise SPADEConfigError(f"spade config: {e}") from e
    min_side = self.disc_config.min_input_size() * 2 ** (d.num_D - 1)
    if self.resolution < min_side:
      raise SPADEConfigError(
        f"discriminator: n_layers_D={d.n_layers_D} at num_D={d.num_D} scales needs "
        f"data.resolution >= {min_side}, found {self.resolution}"
      )
    self.generator = SPADEGenerator(self.generator_config)
    self.discriminator = MultiscaleDiscriminator(self.disc_config, num_scales=d.num_D)

  def init(self, rng, batch):
    g_rng, d_rng = jax.random.split(rng)
    seg = jnp.zeros(batch["source"].shape[:3] + (self.source_channels,), jnp.float32)
    pair = jnp.zeros(seg.shape[:3] + (self.disc_config.in_channels,), jnp.float32)
    return {
      "generator": self.generator.init(g_rng, seg)["params"],
      "discriminator": self.discriminator.init(d_rng, pair)["params"],
    }

  def loss(self, params, batch, rng):
    del rng  # the generator without its VAE encoder is deterministic
    seg = self.source_input(batch["source"])
    real = self.target_input(batch["target"])
    fake = self.generator.apply({"params": params["generator"]}, seg)
    loss, metrics = gan_losses.adversarial_objective_with_features(
      jnp.concatenate([seg, real], axis=-1),
      jnp.concatenate([seg, fake], axis=-1),
      lambda p, x: self.discriminator.apply({"params": p}, x, return_features=True),
      params["discriminator"],
      kind=self.config.loss.gan_mode,
      feat_weight=self.config.loss.feat_weight,
    )
    metrics.update(loss=loss, l1_to_target=jnp.mean(jnp.abs(fake - real)))
    return loss, metrics

  def translate(self, params, source, rng, **options):
    """Generator outputs in [-1, 1] for one-hot label maps."""
    del rng, options  # deterministic, no sampler options
    return self.generator.apply({"params": params["generator"]}, source)

  def translation_params(self, params):
    return params["generator"]
