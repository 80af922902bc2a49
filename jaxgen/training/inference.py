"""Restoring a trained run's weights for sampling, given its task object."""

from __future__ import annotations

import os

import jax

from jaxgen.training.checkpoint import CheckpointNotFoundError, Checkpointer, checkpoint_dir
from jaxgen.training.optimizers import make_optimizer
from jaxgen.training.trainer import init_state_fn, load_config
from jaxgen.training.train_state import TrainState

load_run_config = load_config


def abstract_train_state(task, config, example_batch) -> TrainState:
  """Shapes and dtypes of the train state, on the first local device."""
  tx, _ = make_optimizer(config.optim, config.train.num_steps)
  rng = jax.random.PRNGKey(0)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.eval_shape(init_state_fn(task, tx), rng, rng, example_batch)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                      abstract)


def restore_ema_params(task, workdir: str, step: int | None = None):
  """EMA params of `task` from the newest readable checkpoint (or `step`) of a run directory."""
  if not os.path.isdir(checkpoint_dir(workdir)):
    raise CheckpointNotFoundError(
        f"--checkpoint: {workdir!r} has no {os.path.basename(checkpoint_dir(workdir))}/ "
        "folder: is it a directory written by `jaxgen train`?")
  template = abstract_train_state(task, task.config, task.abstract_batch(1))
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    state, _, _ = checkpointer.restore(template, step)
  finally:
    checkpointer.close()
  return state.ema_params
