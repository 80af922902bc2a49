"""Optimizer and learning-rate schedule from a config."""

from __future__ import annotations

from typing import Mapping

import jax
import optax

from jaxgen.training.config import fill_section


def make_lr_schedule(
  *,
  learning_rate: float,
  warmup_steps: int,
  total_steps: int,
  end_factor: float = 0.0,
  decay: str = "cosine",
) -> optax.Schedule:
  """Linear warm-up to `learning_rate`, then cosine decay (or constant)."""
  if learning_rate <= 0:
    raise ValueError(f"optim.learning_rate must be > 0, got {learning_rate}")
  if warmup_steps < 0:
    raise ValueError(f"optim.warmup_steps must be >= 0, got {warmup_steps}")
  if decay == "constant":
    warm = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
    return optax.join_schedules([warm, optax.constant_schedule(learning_rate)], [warmup_steps])
  if decay != "cosine":
    raise ValueError(f"optim.decay must be 'cosine' or 'constant', got {decay!r}")
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=learning_rate,
    warmup_steps=warmup_steps,
    decay_steps=max(total_steps, warmup_steps + 1),
    end_value=learning_rate * end_factor,
  )


class LearningRateMultiplierError(ValueError):
  """`optim.lr_multipliers` names a key the params tree does not have at its top level."""


def scale_by_multipliers(multipliers: Mapping[str, float]) -> optax.GradientTransformation:
  """Multiplies the updates of each top-level param subtree by its factor (others by 1).

  After Adam(W) this is a per-subtree learning rate: e.g. SPADE's TTUR runs
  the discriminator at 4× the generator's rate. A key missing from the params
  is a `LearningRateMultiplierError` when the optimizer state is built.
  """
  multipliers = {str(k): float(v) for k, v in dict(multipliers).items()}

  def check_keys(tree):
    if not hasattr(tree, "keys"):  # e.g. optax.tree_map_params' placeholder
      return
    missing = sorted(set(multipliers) - set(tree.keys()))
    if missing:
      raise LearningRateMultiplierError(
        f"optim.lr_multipliers: keys {missing} are not top-level parameter keys; "
        f"expected some of {sorted(tree.keys())}"
      )

  def init_fn(params):
    check_keys(params)
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    check_keys(updates)

    def scale(path, update):
      return update * multipliers.get(getattr(path[0], "key", None), 1.0)

    return jax.tree_util.tree_map_with_path(scale, updates), state

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(
  optim: Mapping, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with warm-up + cosine decay and global-norm gradient clipping.

  Args:
    optim: the `optim` section of a config: `learning_rate` (required),
      `warmup_steps`, `decay`, `end_factor`, `weight_decay`, `b1`, `b2`,
      `eps`, `grad_clip_norm` (0 disables clipping), `lr_multipliers`
      (top-level param key -> learning-rate factor); missing keys take the
      defaults of `jaxgen.training.config`.
    total_steps: length of the run, for the decay.
  Returns:
    (optimizer, learning-rate schedule) — the schedule is returned for logging.
  """
  optim = fill_section("optim", optim)
  schedule = make_lr_schedule(
    learning_rate=optim.learning_rate,
    warmup_steps=optim.warmup_steps,
    total_steps=total_steps,
    end_factor=optim.end_factor,
    decay=optim.decay,
  )
  chain = []
  if optim.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  chain.append(
    optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay)
  )
  if optim.lr_multipliers:
    chain.append(scale_by_multipliers(optim.lr_multipliers))
  return optax.chain(*chain), schedule
