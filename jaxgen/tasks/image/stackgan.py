"""StackGAN++ (Zhang et al. 2018) text-to-image on a frozen DAMSM's sentence embedding, task `stackgan`.

The model is `jaxgen.models.stackgan` (`config.model`): conditioning
augmentation (CA) of the caption's sentence embedding, a tree of generator
stages (`model.num_stages` branches from `model.base_size` pixels, doubling
to `data.resolution`) and one discriminator per stage. The sentence
embedding is that of the frozen text encoder of a `damsm` run
(`damsm.workdir`, `jaxgen.tasks.image.damsm`; the reference's char-CNN-RNN
embedding is another pretrained text encoder used the same way), whose
tokenizer, caption length and images this task shares.

Params {"generator": {"params", "batch_stats"}, "discriminators": {"d_net<size>"}};
batches {"image" uint8, "text_tokens", "text_mask"} as the DAMSM's. One step
is StackGAN-v2's `condGANTrainer.train` iteration, both players at once:

  G pass     (images per stage, μ, logσ²) = G(z, CA(sentence))      z ~ N(0, 1)
  D, stage s real, mismatched-caption and fake images at that stage's size, scored
             against stop_gradient(μ): `stackgan_discriminator_loss`
  G loss     Σ_s BCE(D_s(fake, μ), real) + uncond_weight·BCE(D_s(fake), real)
             + kl_weight·KL + colour term (`stackgan_generator_loss`)

Real images of the smaller stages are the batch's images resized with
antialiasing (the reference's dataset resizes each image to every branch's
size). A mismatched image is the batch's next image whose caption differs
(`mismatched_indices`; the reference draws an image of another class). The
trainer has one optimizer over one params tree, so each player's term sees
the other behind `stop_gradient` (as `jaxgen.models.gan_losses` does): the
generator's term reads the discriminators' params frozen, the discriminators'
terms read the fakes frozen.

BatchNorm: the generator's running statistics sit in the params tree under
"batch_stats", are updated by the one G pass of each step and written back
through `STATE_UPDATES_KEY` (into the EMA params too, as the reference averages
only the weights of G); generation runs the generator in evaluation mode on
them, so an image depends on its caption and noise alone. The discriminators
always normalise with batch statistics (the reference never evaluates D), so
their running statistics are not kept.

Generation: caption -> DAMSM sentence -> CA (ε) and z from the sample rng ->
the generator's last stage, one program per chunk of prompts; the same rng
gives the same images. `evaluate` runs the shapes judge on held-out captions.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.data import shapes
from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.models import stackgan
from jaxgen.tasks.image.captioned_data import abstract_captioned_batch, captioned_shapes_arrays
from jaxgen.tasks.image.captioned_images import CaptionedDataTask
from jaxgen.tasks.image.damsm import (
  CaptionFeatures,
  check_min_batch,
  check_same_images,
  load_damsm_run,
  to_model_range,
)
from jaxgen.tasks.registry import absolute_dependent_runs
from jaxgen.training.task import STATE_UPDATES_KEY, SampleSpec

ONE_PASS = "generator"  # what `sampling_options` reports: a GAN has no sampler to choose


class TextGANTaskConfigError(ValueError):
  """A `model`, `loss` or `data` setting the StackGAN++/AttnGAN tasks cannot use."""


def mismatched_indices(tokens: jax.Array) -> jax.Array:
  """(B,) for each row the nearest following row (cyclically) whose caption differs.

  Rows whose captions all agree get the next row. B >= 2.
  """
  b = tokens.shape[0]
  rows = (jnp.arange(b)[:, None] + jnp.arange(1, b)[None, :]) % b  # (B, B - 1) candidates
  differs = jnp.any(tokens[rows] != tokens[:, None, :], axis=-1)
  return rows[jnp.arange(b), jnp.argmax(differs, axis=1)]


def image_pyramid(images: jax.Array, sizes: Sequence[int]) -> list[jax.Array]:
  """Images (B, S, S, C) at every stage's size, resized with antialiasing (S itself unchanged)."""
  b, s, _, c = images.shape
  return [
    images if size == s else jax.image.resize(images, (b, size, size, c), "linear", antialias=True)
    for size in sizes
  ]


def mean_logit(logits: jax.Array) -> jax.Array:
  return jnp.mean(logits.astype(jnp.float32))


def check_weights(loss: ml_collections.ConfigDict, keys: Sequence[str]) -> None:
  for key in keys:
    value = loss[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
      raise TextGANTaskConfigError(f"loss.{key}: expected a number >= 0, found {value!r}")


def check_arch(arch_class: type, model: ml_collections.ConfigDict, resolution: int):
  """The architecture of `config.model` (text_dim comes from the DAMSM run); named errors."""
  fields = model.to_dict()
  if "text_dim" in fields:
    raise TextGANTaskConfigError(
      "model.text_dim: expected no value (the DAMSM run of damsm.workdir sets it), found "
      f"{fields['text_dim']!r}"
    )
  try:
    arch = arch_class(**fields)
  except (TypeError, ValueError) as e:
    raise TextGANTaskConfigError(f"model: {e}") from e
  if arch.image_sizes[-1] != resolution:
    raise TextGANTaskConfigError(
      f"model.base_size, model.num_stages: the last stage draws {arch.image_sizes[-1]} pixels "
      f"(base {arch.base_size} doubled {arch.num_stages - 1} times), expected "
      f"data.resolution={resolution}"
    )
  return arch


class DAMSMCaptionedTask(CaptionedDataTask):
  """What a text GAN task on a `damsm` run shares: that run, its captions and images, judging.

  Generation is one generator pass: `generate` takes no sampler options.
  """

  sample_spec = SampleSpec("grid.png", (".png",))
  dependent_runs = ("damsm.workdir",)

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    absolute_dependent_runs(config, type(self))
    self.resolution = config.data.resolution
    self.damsm_task, self.damsm_params = load_damsm_run(config.damsm.workdir)
    check_same_images(self.damsm_task.config.data, config.data, config.damsm.workdir)
    self.max_text_length = self.damsm_task.max_text_length

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return self.damsm_task.tokenize(captions)

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    return captioned_shapes_arrays(self.config.data, self.tokenize)

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    return abstract_captioned_batch(batch_size, self.resolution, self.max_text_length)

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    shapes.check_image_batch(batch["image"], self.resolution)
    check_min_batch(batch)

  def encode_text(self, tokens: jax.Array, mask: jax.Array) -> CaptionFeatures:
    """The frozen DAMSM text encoder's features (evaluation mode, no gradient to it)."""
    return jax.lax.stop_gradient(self.damsm_task.encode_text(self.damsm_params, tokens, mask))

  def sampling_options(
    self, sampler: str | None, num_steps: int | None, guidance_scale: float | None
  ) -> tuple[str, int, float]:
    """A GAN takes no sampler options: SamplingOptionError for any that is set."""
    for option, value in (
      ("sampler", sampler),
      ("num_steps", num_steps),
      ("guidance_scale", guidance_scale),
    ):
      if value is not None:
        raise SamplingOptionError(
          option,
          f"task {self.config.task!r} draws an image in one generator pass and takes no "
          f"{option}; expected None, found {value!r}",
        )
    return ONE_PASS, 1, 0.0


class StackGANTask(DAMSMCaptionedTask):
  """The `stackgan` task (see the module docstring); `attngan` subclasses it."""

  arch_class: type = stackgan.StackGANConfig
  loss_weights: tuple[str, ...] = ("uncond_weight", "kl_weight", "colour_weight")

  def __init__(self, config: ml_collections.ConfigDict):
    arch = check_arch(self.arch_class, config.model, config.data.resolution)
    check_weights(config.loss, self.loss_weights)
    super().__init__(config)
    self.arch = dataclasses.replace(arch, text_dim=self.damsm_task.embed_dim)
    self.generator = self.build_generator()
    self.discriminators = {
      f"d_net{size}": self.build_discriminator(stage)
      for stage, size in enumerate(self.arch.image_sizes)
    }

  def build_generator(self):
    return stackgan.StackGANGenerator(self.arch)

  def build_discriminator(self, stage: int) -> stackgan.StageDiscriminator:
    """StackGAN++'s D of one stage, conditioned on μ (the tiled condition in front)."""
    a = self.arch
    return stackgan.StageDiscriminator(
      a.df_dim, a.condition_dim, stage=stage, base_size=a.base_size, condition_first=True
    )

  # -- model -----------------------------------------------------------------

  def generator_args(self, z: jax.Array, text: CaptionFeatures) -> tuple:
    return z, text.sentence

  def noise(self, rng: jax.Array, batch_size: int) -> jax.Array:
    return jax.random.normal(rng, (batch_size, self.arch.z_dim))

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    g_rng, ca_rng, *d_rngs = jax.random.split(rng, 2 + len(self.discriminators))
    text = self.encode_text(batch["text_tokens"], batch["text_mask"])
    z = jnp.zeros((batch["image"].shape[0], self.arch.z_dim), jnp.float32)
    rngs = {"params": g_rng, "augment": ca_rng}
    # Evaluation mode: BatchNorm creates its statistics without needing a batch of two.
    generator = self.generator.init(rngs, *self.generator_args(z, text), train=False)
    condition = jnp.zeros((z.shape[0], self.condition_width), jnp.float32)
    discriminators = {}
    for (name, disc), d_rng, size in zip(
      self.discriminators.items(), d_rngs, self.arch.image_sizes
    ):
      images = jnp.zeros((z.shape[0], size, size, 3), jnp.float32)
      discriminators[name] = disc.init(d_rng, images, condition, train=False)["params"]
    return {
      "generator": {"params": generator["params"], "batch_stats": generator["batch_stats"]},
      "discriminators": discriminators,
    }

  def run_generator(self, generator, z, text: CaptionFeatures, rng: jax.Array, *, train: bool):
    """(images per stage, μ, logσ², new BatchNorm statistics or None in evaluation mode)."""
    variables = {
      "params": generator["params"],
      "batch_stats": jax.lax.stop_gradient(generator["batch_stats"]),
    }
    args = self.generator_args(z, text)
    rngs = {"augment": rng}
    if train:
      out, updates = self.generator.apply(
        variables, *args, train=True, rngs=rngs, mutable=["batch_stats"]
      )
      stats = updates["batch_stats"]
    else:
      out, stats = self.generator.apply(variables, *args, train=False, rngs=rngs), None
    images, mu, logvar = out[0], out[-2], out[-1]  # AttnGAN returns attention maps in between
    return images, mu, logvar, stats

  def discriminate(self, disc, d_params, images, condition) -> tuple[jax.Array, jax.Array]:
    """(conditional, unconditional) logits, D normalising with this batch's statistics."""
    return disc.apply({"params": d_params}, images, condition, mutable=["batch_stats"])[0]

  @property
  def condition_width(self) -> int:
    """Width of what D is conditioned on: CA's output."""
    return self.arch.condition_dim

  def discriminator_condition(self, text: CaptionFeatures, mu: jax.Array) -> jax.Array:
    """What D is conditioned on in the generator's term: StackGAN++'s μ (with its gradient)."""
    del text
    return mu

  def stage_discriminator_loss(self, disc, d_params, real, fake, text, mu, tokens) -> jax.Array:
    """One stage's D loss on real, mismatched and (frozen) fake images, conditioned on frozen μ."""
    condition = jax.lax.stop_gradient(mu)
    wrong = real[mismatched_indices(tokens)]
    return stackgan.stackgan_discriminator_loss(
      self.discriminate(disc, d_params, real, condition),
      self.discriminate(disc, d_params, wrong, condition),
      self.discriminate(disc, d_params, fake, condition),
      uncond_weight=self.config.loss.uncond_weight,
    )

  def generator_loss(self, fake_logits, fakes, text, mu, logvar, tokens):
    del text, tokens
    cfg = self.config.loss
    return stackgan.stackgan_generator_loss(
      fake_logits,
      mu,
      logvar,
      fake_images=fakes,
      uncond_weight=cfg.uncond_weight,
      kl_weight=cfg.kl_weight,
      colour_weight=cfg.colour_weight,
    )

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    tokens = batch["text_tokens"]
    text = self.encode_text(tokens, batch["text_mask"])
    z_rng, ca_rng = jax.random.split(rng)
    z = self.noise(z_rng, tokens.shape[0])
    fakes, mu, logvar, stats = self.run_generator(params["generator"], z, text, ca_rng, train=True)
    reals = image_pyramid(to_model_range(batch["image"]), self.arch.image_sizes)
    d_loss, fake_logits, metrics = 0.0, [], {}
    for (name, disc), real, fake in zip(self.discriminators.items(), reals, fakes):
      d_params = params["discriminators"][name]
      d_stage = self.stage_discriminator_loss(
        disc, d_params, real, jax.lax.stop_gradient(fake), text, mu, tokens
      )
      logits = self.discriminate(
        disc, jax.lax.stop_gradient(d_params), fake, self.discriminator_condition(text, mu)
      )
      fake_logits.append(logits)
      metrics[f"d_loss_{name}"] = d_stage
      metrics[f"logits_fake_{name}"] = mean_logit(logits[0])
      d_loss = d_loss + d_stage
    g_loss, g_metrics = self.generator_loss(fake_logits, fakes, text, mu, logvar, tokens)
    metrics.update(
      g_metrics,
      g_loss=g_loss,
      d_loss=d_loss,
      **{STATE_UPDATES_KEY: {"generator": {"batch_stats": stats}}},
    )
    return g_loss + d_loss, metrics

  # -- generation (`CaptionedImageTask.generate` runs these) ------------------

  @functools.partial(jax.jit, static_argnames=("self",))
  def sample_images(self, params, damsm_params, tokens, mask, rng) -> jax.Array:
    """The last stage's images in [-1, 1] (B, S, S, 3) for tokenized captions: one program.

    `rng` draws z and CA's ε; the generator runs in evaluation mode.
    """
    text = self.damsm_task.encode_text(damsm_params, tokens, mask)
    z_rng, ca_rng = jax.random.split(rng)
    images, *_ = self.run_generator(
      params["generator"], self.noise(z_rng, tokens.shape[0]), text, ca_rng, train=False
    )
    return images[-1]

  def caption_sampler(self, params, sampler: str, num_steps: int, guidance_scale: float):
    del sampler, num_steps, guidance_scale  # one generator pass
    return functools.partial(self.sample_images, params, self.damsm_params)


def parameter_counts(task: StackGANTask, params: Any) -> dict[str, int]:
  """Scalars of the generator (weights only), of every discriminator and of the frozen DAMSM."""
  counts = {"generator": stackgan.parameter_count(params["generator"]["params"])}
  for name, d_params in params["discriminators"].items():
    counts[name] = stackgan.parameter_count(d_params)
  counts["damsm"] = stackgan.parameter_count(task.damsm_params)
  return counts
