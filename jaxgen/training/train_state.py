"""Explicit training state: everything a step reads and writes, as one pytree."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """The whole mutable state of training, passed in and returned by each step.

  Attributes:
    step: number of optimizer updates applied so far (int32 scalar).
    params: trainable parameters (float32, unboxed).
    ema_params: exponential moving average of `params`, used for sampling.
    opt_state: optax state of `tx`.
    rng: PRNG key consumed by the next step.
    skipped_steps: updates skipped so far for a non-finite loss or gradient.
    consecutive_skips: length of the current run of skipped updates.
    tx: the optax transformation (static: not a leaf).
  """

  step: jax.Array
  params: PyTree
  ema_params: PyTree
  opt_state: optax.OptState
  rng: jax.Array
  skipped_steps: jax.Array
  consecutive_skips: jax.Array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params: PyTree, tx: optax.GradientTransformation, rng: jax.Array) -> "TrainState":
    return cls(
      step=jnp.zeros((), jnp.int32),
      params=params,
      ema_params=jax.tree.map(jnp.copy, params),
      opt_state=tx.init(params),
      rng=rng,
      skipped_steps=jnp.zeros((), jnp.int32),
      consecutive_skips=jnp.zeros((), jnp.int32),
      tx=tx,
    )

  def apply_gradients(self, grads: PyTree, ema_decay: float | jax.Array) -> "TrainState":
    """One optimizer update followed by an EMA update of the new params."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    return self.replace(
      step=self.step + 1,
      params=params,
      ema_params=ema_update(self.ema_params, params, ema_decay),
      opt_state=opt_state,
    )


def replace_leaves(params: PyTree, updates: Any) -> PyTree:
  """`params` with the sub-trees named in the nested dict `updates` replaced."""
  out = dict(params)
  for key, value in updates.items():
    if key not in out:
      raise ValueError(f"state update names no parameter {key!r}; expected one of {sorted(out)}")
    out[key] = replace_leaves(out[key], value) if isinstance(value, dict) else value
  return out


def ema_update(ema: PyTree, params: PyTree, decay: float | jax.Array) -> PyTree:
  """ema <- decay * ema + (1 - decay) * params, leaf by leaf."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def ema_decay_at(step: jax.Array, max_decay: float, warmup: int) -> jax.Array:
  """EMA decay that ramps up with the step, so early averages are not stuck at init.

  Uses the common `min(max_decay, (1 + step) / (10 + step))` ramp when
  `warmup > 0`; a constant `max_decay` otherwise.
  """
  if warmup <= 0:
    return jnp.asarray(max_decay, jnp.float32)
  step = step.astype(jnp.float32)
  return jnp.minimum(max_decay, (1.0 + step) / (warmup + step))
