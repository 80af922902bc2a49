"""Classifier-free guidance (Ho & Salimans 2022) and conditioning dropout.

A conditional model is trained with its condition randomly replaced by a
null condition (`drop_condition`); at sampling time its conditional and
unconditional predictions are extrapolated (`classifier_free_guidance`).
Conditions are arbitrary pytrees of arrays with the batch axis first (text
embeddings, masks, class labels, ...).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
ConditionalModelFn = Callable[[jax.Array, jax.Array, PyTree], jax.Array]


def _check_same_structure(name: str, tree: PyTree, reference: PyTree) -> None:
  tree_def, ref_def = jax.tree.structure(tree), jax.tree.structure(reference)
  if tree_def != ref_def:
    raise ValueError(f"{name}: expected the pytree structure of cond {ref_def}, found {tree_def}.")


def _broadcast_null(name: str, null: jax.Array, like: jax.Array) -> jax.Array:
  """Broadcasts a null-condition leaf to `like` (B, ...): it may lack the batch axis or have batch 1."""
  null = jnp.asarray(null)
  if null.shape == like.shape[1:]:
    null = null[None]
  if (
    null.ndim != like.ndim
    or null.shape[1:] != like.shape[1:]
    or null.shape[0] not in (1, like.shape[0])
  ):
    raise ValueError(
      f"{name}: expected each leaf of shape {like.shape}, (1, ...) or {like.shape[1:]}, found {null.shape}."
    )
  return jnp.broadcast_to(null, like.shape).astype(like.dtype)


def classifier_free_guidance(
  model_fn: ConditionalModelFn, cond: PyTree, uncond: PyTree, guidance_scale: float | jax.Array
) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Returns `fn(x, t) = uncond_pred + guidance_scale * (cond_pred - uncond_pred)`.

  Both branches run in one batched forward: x, t and the conditions are
  concatenated along the batch axis and the output split after, so the
  sampler's scan holds a single model call. guidance_scale 1 is the
  conditional model alone and skips the unconditional half; a traced
  guidance_scale always evaluates both.

  Args:
    model_fn: `model_fn(x, t, cond) -> prediction` (prediction batch first,
      any pytree).
    cond: the condition, leaves (B, ...).
    uncond: the null condition with cond's structure; leaves (B, ...),
      (1, ...) or without the batch axis.
    guidance_scale: s >= 0 (0: unconditional, 1: conditional, > 1: guided).
  """
  if isinstance(guidance_scale, numbers.Real):
    if not guidance_scale >= 0:
      raise ValueError(f"guidance_scale: expected a number >= 0, found {guidance_scale}.")
    if guidance_scale == 1:
      return lambda x, t: model_fn(x, t, cond)
  _check_same_structure("uncond", uncond, cond)
  if not jax.tree.leaves(cond):
    raise ValueError("cond: expected a pytree with at least one array leaf, found none.")
  uncond = jax.tree.map(lambda n, c: _broadcast_null("uncond", n, c), uncond, cond)
  both_conds = jax.tree.map(lambda c, n: jnp.concatenate([c, n], axis=0), cond, uncond)
  batch = jax.tree.leaves(cond)[0].shape[0]

  def guided(x: jax.Array, t: jax.Array) -> jax.Array:
    if x.shape[0] != batch:
      raise ValueError(f"x: expected batch size {batch} (the condition's), found shape {x.shape}.")
    t = jnp.broadcast_to(t, (batch,))
    output = model_fn(jnp.concatenate([x, x], axis=0), jnp.concatenate([t, t], axis=0), both_conds)

    def combine(out):
      cond_out, uncond_out = out[:batch], out[batch:]
      return uncond_out + guidance_scale * (cond_out - uncond_out)

    return jax.tree.map(combine, output)

  return guided


def drop_condition(rng: jax.Array, cond: PyTree, null_cond: PyTree, p: float | jax.Array) -> PyTree:
  """Replaces each example's condition by the null condition with probability p.

  One Bernoulli(p) draw per example is shared by all leaves of the pytree, so
  an example loses its whole condition (e.g. text embedding and mask
  together). null_cond has cond's structure; its leaves may lack the batch
  axis or have batch 1.
  """
  if isinstance(p, numbers.Real) and not 0.0 <= p <= 1.0:
    raise ValueError(f"p: expected a probability in [0, 1], found {p}.")
  _check_same_structure("null_cond", null_cond, cond)
  leaves = jax.tree.leaves(cond)
  if not leaves:
    raise ValueError("cond: expected a pytree with at least one array leaf, found none.")
  batch = leaves[0].shape[0]
  for leaf in leaves:
    if leaf.ndim < 1 or leaf.shape[0] != batch:
      raise ValueError(
        f"cond: expected every leaf with batch axis {batch} first, found shape {leaf.shape}."
      )
  drop = jax.random.bernoulli(rng, p, (batch,))

  def replace(c, n):
    n = _broadcast_null("null_cond", n, c)
    return jnp.where(drop.reshape((batch,) + (1,) * (c.ndim - 1)), n, c)

  return jax.tree.map(replace, cond, null_cond)
