"""GAN objectives: vanilla (BCE), least-squares and hinge games, feature matching.

Each loss is the reference's *sum* over the real and fake terms; a reference
that halves its discriminator loss (pix2pix, CycleGAN, taming) passes
`d_weight=0.5` to `adversarial_objective`. Logits may be one array or a list
of per-scale arrays (a `MultiscaleDiscriminator`): as in pix2pixHD/SPADE's
`GANLoss`, the loss is then the mean over scales.

The trainer has one optimizer over one params tree, so `adversarial_objective`
sums both players' games into one scalar with stop-gradients placed so that
each player's gradient is exactly its own game's: the generator's term sees
the discriminator through `stop_gradient(disc_params)`, the discriminator's
term sees `stop_gradient(fake)`. (The updates are simultaneous rather than
alternating; with Adam's per-parameter scaling the two players' steps stay
independent.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

KINDS = ("vanilla", "lsgan", "hinge")


def check_kind(kind: str, name: str = "gan_mode") -> str:
  if kind not in KINDS:
    raise ValueError(f"{name}: expected one of {KINDS}, found {kind!r}")
  return kind


def _per_scale(logits) -> list[jax.Array]:
  return list(logits) if isinstance(logits, Sequence) else [logits]


def _mean_over_scales(term: Callable[[jax.Array], jax.Array], logits) -> jax.Array:
  scales = _per_scale(logits)
  return sum(term(x.astype(jnp.float32)) for x in scales) / len(scales)


def _real_term(kind: str, x: jax.Array) -> jax.Array:
  if kind == "vanilla":
    return jnp.mean(optax.sigmoid_binary_cross_entropy(x, jnp.ones_like(x)))
  if kind == "lsgan":
    return jnp.mean(jnp.square(x - 1.0))
  return jnp.mean(jax.nn.relu(1.0 - x))


def _fake_term(kind: str, x: jax.Array) -> jax.Array:
  if kind == "vanilla":
    return jnp.mean(optax.sigmoid_binary_cross_entropy(x, jnp.zeros_like(x)))
  if kind == "lsgan":
    return jnp.mean(jnp.square(x))
  return jnp.mean(jax.nn.relu(1.0 + x))


def discriminator_loss(kind: str, logits_real, logits_fake) -> jax.Array:
  """The discriminator's loss on real (target 1) and fake (target 0) logits, summed."""
  check_kind(kind)
  return _mean_over_scales(lambda x: _real_term(kind, x), logits_real) + _mean_over_scales(
    lambda x: _fake_term(kind, x), logits_fake
  )


def generator_loss(kind: str, logits_fake) -> jax.Array:
  """The generator's loss: fakes scored as real (BCE, LSGAN) or −E[D(G(z))] (hinge)."""
  check_kind(kind)
  if kind == "hinge":
    return _mean_over_scales(lambda x: -jnp.mean(x), logits_fake)
  return _mean_over_scales(lambda x: _real_term(kind, x), logits_fake)


def feature_matching_loss(features_real, features_fake) -> jax.Array:
  """pix2pixHD/SPADE: mean over scales of Σ_layers L1(fake, stop_gradient(real)).

  `features_*` are per-scale lists of per-layer activations (the last layer,
  the logits, excluded by the caller as the reference does).
  """
  total = 0.0
  for real_layers, fake_layers in zip(features_real, features_fake, strict=True):
    for real, fake in zip(real_layers, fake_layers, strict=True):
      total = total + jnp.mean(jnp.abs(fake - jax.lax.stop_gradient(real)))
  return total / len(features_real)


def adversarial_objective(
  real: jax.Array,
  fake: jax.Array,
  disc_fn: Callable,
  disc_params,
  *,
  kind: str,
  g_weight: float = 1.0,
  d_weight: float = 1.0,
  active: jax.Array | float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Both players' games as one scalar for one optimizer (see the module docstring).

  `disc_fn(params, images) -> logits` (an array or per-scale list). `real`
  and `fake` are the discriminator's inputs (for a conditional GAN, the
  condition concatenated to each). Real and fake go through the
  discriminator in separate calls, so batch-statistic norms see each alone,
  as in the references.

    d/d(generator)      = active * g_weight * d generator_loss
    d/d(discriminator)  = active * d_weight * d discriminator_loss

  Returns (active * (g_weight * g_loss + d_weight * d_loss), metrics).
  """
  check_kind(kind)
  g_loss = generator_loss(kind, disc_fn(jax.lax.stop_gradient(disc_params), fake))
  logits_real = disc_fn(disc_params, real)
  logits_fake = disc_fn(disc_params, jax.lax.stop_gradient(fake))
  d_loss = discriminator_loss(kind, logits_real, logits_fake)
  total = active * (g_weight * g_loss + d_weight * d_loss)
  return total, dict(
    g_loss=g_loss,
    d_loss=d_loss,
    logits_real=_mean_over_scales(jnp.mean, logits_real),
    logits_fake=_mean_over_scales(jnp.mean, logits_fake),
    disc_active=jnp.asarray(active, jnp.float32),
  )


def adversarial_objective_with_features(
  real: jax.Array,
  fake: jax.Array,
  disc_fn: Callable,
  disc_params,
  *,
  kind: str,
  feat_weight: float,
  g_weight: float = 1.0,
  d_weight: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`adversarial_objective` plus pix2pixHD/SPADE's feature matching, from the same three passes.

  `disc_fn(params, images) -> [(logits, features)]` per scale (a
  `MultiscaleDiscriminator` with `return_features=True`). The generator's
  pass (frozen discriminator on `fake`) gives its game's logits and the fake
  features; the real features are the discriminator's own pass on `real`
  behind a stop-gradient (inside `feature_matching_loss`), so

    d/d(generator)      = g_weight * d generator_loss + feat_weight * d feature_matching_loss
    d/d(discriminator)  = d_weight * d discriminator_loss

  Returns (g_weight * g_loss + feat_weight * feat_loss + d_weight * d_loss, metrics).
  """
  check_kind(kind)
  fake_for_g = disc_fn(jax.lax.stop_gradient(disc_params), fake)
  real_for_d = disc_fn(disc_params, real)
  fake_for_d = disc_fn(disc_params, jax.lax.stop_gradient(fake))
  logits_real = [logits for logits, _ in real_for_d]
  logits_fake = [logits for logits, _ in fake_for_d]
  g_loss = generator_loss(kind, [logits for logits, _ in fake_for_g])
  d_loss = discriminator_loss(kind, logits_real, logits_fake)
  feat_loss = feature_matching_loss(
    [features for _, features in real_for_d], [features for _, features in fake_for_g]
  )
  total = g_weight * g_loss + feat_weight * feat_loss + d_weight * d_loss
  return total, {
    "g_loss": g_loss,
    "d_loss": d_loss,
    "feat_loss": feat_loss,
    "logits_real": _mean_over_scales(jnp.mean, logits_real),
    "logits_fake": _mean_over_scales(jnp.mean, logits_fake),
  }
