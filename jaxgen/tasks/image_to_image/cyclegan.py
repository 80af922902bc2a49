"""CycleGAN (Zhu et al. 2017): unpaired translation with two generators and two discriminators.

As junyanz/pytorch-CycleGAN-and-pix2pix's `cycle_gan_model.py`, with domain A
= `data.source` (day photos) and B = `data.target` (night photos) drawn from
disjoint scenes (`data.paired=False`):

  G loss = GAN(D_B(G_AB(a))) + GAN(D_A(G_BA(b)))                 LSGAN: MSE to 1
         + λ_A |G_BA(G_AB(a)) − a| + λ_B |G_AB(G_BA(b)) − b|      cycle, λ = 10
         + λ_idt (λ_B |G_AB(b) − b| + λ_A |G_BA(a) − a|)          identity, λ_idt = 0.5
  D_X loss = 0.5 (MSE(D_X(real x), 1) + MSE(D_X(pooled fake x), 0))

Generators are ResNet generators (`models/resnet_generator.py`), the
discriminators PatchGANs with instance norm. The fakes each discriminator
sees come through a 50-image history (`models/image_pool.py`).

One optimizer, one params tree {"g_ab", "g_ba", "d_a", "d_b", "pools"}: the
generator terms see the discriminators through `stop_gradient`, the
discriminator terms see detached (pooled) fakes, so each player's gradient is
exactly its own loss's. The reference's alternating steps (G first, then the
D's on fakes of the same forward pass, made before G's update) read the same
parameter values, so with Adam's per-parameter moments the simultaneous
update is the same step. (Global-norm gradient clipping would couple them:
the configs turn it off, as the reference never clips.)

The pools are params that no gradient reaches: `query_pool` returns their new
value, which the loss hands back under `STATE_UPDATES_KEY` and the trainer
writes over params and EMA params after the optimizer step. Their zero
gradients leave Adam's moments at zero (an exact zero update), and the write
overrides whatever weight decay would have done.

Naming against the reference: `g_ab` = netG_A, `g_ba` = netG_B, `d_b` =
netD_A (it judges domain B), `d_a` = netD_B. `translate` is G_AB.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models import gan_losses, image_pool
from jaxgen.models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from jaxgen.models.resnet_generator import ResnetGenerator, ResnetGeneratorConfig
from jaxgen.tasks.image_to_image.translation import ImageToImageTask
from jaxgen.training.task import STATE_UPDATES_KEY

GENERATORS = ("g_ab", "g_ba")
DISCRIMINATORS = ("d_a", "d_b")


class CycleGANConfigError(ValueError):
  """A CycleGAN config key (generator, discriminator, loss, data) has a value it cannot train with."""


def _check_loss_config(loss) -> None:
  if loss.gan_mode not in gan_losses.KINDS:
    raise CycleGANConfigError(
      f"loss.gan_mode: expected one of {gan_losses.KINDS}, found {loss.gan_mode!r}"
    )
  for name in ("lambda_a", "lambda_b", "lambda_identity"):
    value = loss[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
      raise CycleGANConfigError(f"loss.{name}: expected a number >= 0, found {value!r}")
  size = loss.pool_size
  if isinstance(size, bool) or not isinstance(size, int) or size < 0:
    raise CycleGANConfigError(f"loss.pool_size: expected an int >= 0, found {size!r}")


def _l1(x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(x - y))


class CycleGANTask(ImageToImageTask):
  """Unpaired day → night translation (see the module docstring)."""

  sources = ("day",)

  def __init__(self, config):
    super().__init__(config)
    if self.paired:
      raise CycleGANConfigError(
        "data.paired: CycleGAN trains on unpaired domains; expected False, found True"
      )
    try:
      self.generator_config = ResnetGeneratorConfig(**config.generator.to_dict())
      self.disc_config = PatchDiscriminatorConfig(**config.discriminator.to_dict())
    except (TypeError, ValueError) as e:
      raise CycleGANConfigError(f"generator / discriminator: {e}") from e
    for key, cfg in (("generator", self.generator_config), ("discriminator", self.disc_config)):
      if cfg.in_channels != 3:
        raise CycleGANConfigError(
          f"{key}.in_channels: images have 3 channels, found {cfg.in_channels}"
        )
    if self.generator_config.out_channels != 3:
      raise CycleGANConfigError(
        f"generator.out_channels: images have 3 channels, found "
        f"{self.generator_config.out_channels}"
      )
    r, g = self.resolution, self.generator_config
    if r % g.size_multiple or r < max(g.min_input_size, self.disc_config.min_input_size()):
      raise CycleGANConfigError(
        f"data.resolution: expected a multiple of {g.size_multiple} >= "
        f"{max(g.min_input_size, self.disc_config.min_input_size())} (generator and "
        f"{self.disc_config.num_layers}-layer discriminator), found {r}"
      )
    _check_loss_config(config.loss)
    self.generator = ResnetGenerator(self.generator_config)
    self.discriminator = PatchDiscriminator(self.disc_config)

  # ---- model ----------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    images = jnp.zeros((1, self.resolution, self.resolution, 3), jnp.float32)
    keys = dict(zip(GENERATORS + DISCRIMINATORS, jax.random.split(rng, 4)))
    params = {name: self.generator.init(keys[name], images)["params"] for name in GENERATORS}
    for name in DISCRIMINATORS:
      params[name] = self.discriminator.init(keys[name], images)["params"]
    pool = image_pool.init_pool(self.config.loss.pool_size, images.shape[1:])
    # Replicated: the pool is a handful of images.
    boxed = {k: nn.LogicallyPartitioned(v, (None,) * v.ndim) for k, v in pool.items()}
    params["pools"] = {"a": boxed, "b": dict(boxed)}
    return params

  def _generate(self, params, images: jax.Array) -> jax.Array:
    return self.generator.apply({"params": params}, images)

  def _discriminate(self, params, images: jax.Array) -> jax.Array:
    return self.discriminator.apply({"params": params}, images)

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    c = self.config.loss
    real_a = self.source_input(batch["source"])
    real_b = self.target_input(batch["target"])
    fake_b = self._generate(params["g_ab"], real_a)
    fake_a = self._generate(params["g_ba"], real_b)
    rec_a = self._generate(params["g_ba"], fake_b)
    rec_b = self._generate(params["g_ab"], fake_a)

    # Generators: the discriminators are fixed for this term.
    frozen_d = jax.lax.stop_gradient({k: params[k] for k in DISCRIMINATORS})
    gan_ab = gan_losses.generator_loss(c.gan_mode, self._discriminate(frozen_d["d_b"], fake_b))
    gan_ba = gan_losses.generator_loss(c.gan_mode, self._discriminate(frozen_d["d_a"], fake_a))
    cycle_a = _l1(rec_a, real_a) * c.lambda_a
    cycle_b = _l1(rec_b, real_b) * c.lambda_b
    g_total = gan_ab + gan_ba + cycle_a + cycle_b
    metrics = {"gan_ab": gan_ab, "gan_ba": gan_ba, "cycle_a": cycle_a, "cycle_b": cycle_b}
    if c.lambda_identity > 0:
      idt_b = _l1(self._generate(params["g_ab"], real_b), real_b) * c.lambda_b * c.lambda_identity
      idt_a = _l1(self._generate(params["g_ba"], real_a), real_a) * c.lambda_a * c.lambda_identity
      g_total = g_total + idt_a + idt_b
      metrics.update(identity_a=idt_a, identity_b=idt_b)

    # Discriminators: real images against detached fakes from the history.
    pools = jax.lax.stop_gradient(params["pools"])
    rng_a, rng_b = jax.random.split(rng)
    pooled_a, pool_a = image_pool.query_pool(pools["a"], fake_a, rng_a)
    pooled_b, pool_b = image_pool.query_pool(pools["b"], fake_b, rng_b)
    d_a = 0.5 * gan_losses.discriminator_loss(
      c.gan_mode,
      self._discriminate(params["d_a"], real_a),
      self._discriminate(params["d_a"], pooled_a),
    )
    d_b = 0.5 * gan_losses.discriminator_loss(
      c.gan_mode,
      self._discriminate(params["d_b"], real_b),
      self._discriminate(params["d_b"], pooled_b),
    )
    metrics.update(g_loss=g_total, d_a=d_a, d_b=d_b)
    metrics[STATE_UPDATES_KEY] = {"pools": {"a": pool_a, "b": pool_b}}
    return g_total + d_a + d_b, metrics

  def translate(self, params, source: jax.Array, rng: jax.Array, **options) -> jax.Array:
    """G_AB: day photos in [-1, 1] -> night photos in [-1, 1] (deterministic; rng unused)."""
    del rng, options
    return self._generate(params["g_ab"], source)

  def translation_params(self, params):
    return params["g_ab"]
