"""AttnGAN (Xu et al. 2018) text-to-image against a frozen DAMSM, task `attngan`.

StackGAN++'s task (`jaxgen.tasks.image.stackgan`: data, the frozen DAMSM of
`damsm.workdir`, the one-optimizer game, BatchNorm statistics as state
updates, generation and judging) with AttnGAN's model and losses
(`jaxgen.models.attngan`, `config.model`, `config.loss`):

- the generator's later stages attend from every pixel over the caption's
  DAMSM word features (pads masked); CA conditions the first stage on the
  DAMSM sentence feature;
- each stage's discriminator is conditioned on the sentence feature, placed
  after the image code, and scores real, fake and mismatched pairs (real
  image i with caption i + 1): (uncond real + cond real)/2 + (uncond fake +
  cond fake + cond wrong)/3 (`attngan_discriminator_loss`);
- the generator's loss adds λ = `loss.damsm_weight` times the DAMSM word and
  sentence losses of its last stage's images, scored by the frozen DAMSM
  image encoder against the caption's features (same-caption pairs masked as
  the DAMSM run masks them, the reference's class masking), and
  `loss.kl_weight` times CA's KL.

Params {"generator": {"params", "batch_stats"}, "discriminators": {"d_net<size>"}},
as StackGAN++'s; the DAMSM is outside them and never trained here.
"""

from __future__ import annotations

import jax

from jaxgen.models import attngan, stackgan
from jaxgen.tasks.image.damsm import CaptionFeatures
from jaxgen.tasks.image.stackgan import StackGANTask


class AttnGANTask(StackGANTask):
  """The `attngan` task (see the module docstring)."""

  arch_class = attngan.AttnGANConfig
  loss_weights = ("damsm_weight", "kl_weight")

  def build_generator(self):
    return attngan.AttnGANGenerator(self.arch)

  def build_discriminator(self, stage: int) -> stackgan.StageDiscriminator:
    """AttnGAN's D of one stage, conditioned on the sentence (tiled after the image code)."""
    a = self.arch
    return stackgan.StageDiscriminator(
      a.df_dim, a.text_dim, stage=stage, base_size=a.base_size, condition_first=False
    )

  @property
  def condition_width(self) -> int:
    """Width of what D is conditioned on: the DAMSM sentence feature."""
    return self.arch.text_dim

  def generator_args(self, z: jax.Array, text: CaptionFeatures) -> tuple:
    return z, text.sentence, text.words, text.word_mask

  def discriminator_condition(self, text: CaptionFeatures, mu: jax.Array) -> jax.Array:
    del mu
    return text.sentence

  def stage_discriminator_loss(self, disc, d_params, real, fake, text, mu, tokens) -> jax.Array:
    """One stage's `discriminator_loss` on real, (frozen) fake and mismatched pairs."""
    del mu, tokens

    def method(name):
      def call(*args):
        return disc.apply({"params": d_params}, *args, method=name, mutable=["batch_stats"])[0]

      return call

    return attngan.attngan_discriminator_loss(
      method("encode"), method("logits"), real, fake, text.sentence
    )

  def generator_loss(self, fake_logits, fakes, text, mu, logvar, tokens):
    cfg = self.config.loss
    return attngan.attngan_generator_loss(
      fake_logits,
      self.damsm_task.encode_images(self.damsm_params, fakes[-1]),
      text.words,
      text.sentence,
      text.word_mask,
      mu,
      logvar,
      damsm_weight=cfg.damsm_weight,
      kl_weight=cfg.kl_weight,
      class_ids=self.damsm_task.classes(tokens),
    )
