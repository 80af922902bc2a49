"""Restoring a trained run's weights for sampling, given its task object.

Only the EMA parameters are read from the checkpoint: no optimizer or train
state is built, so restoring costs the memory of one copy of the weights.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax

from jaxgen.training.checkpoint import CheckpointNotFoundError, Checkpointer, checkpoint_dir
from jaxgen.training.run_directory import load_run_config
from jaxgen.training.task import PyTree, Task

__all__ = ["abstract_params", "load_run_config", "restore_ema_params"]


def abstract_params(task: Task) -> PyTree:
  """Shapes and dtypes of `task`'s (unboxed) params, placed on the first local device."""
  rng = jax.random.PRNGKey(0)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = nn.meta.unbox(jax.eval_shape(task.init, rng, task.abstract_batch(1)))
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)


def restore_ema_params(task: Task, workdir: str, step: int | None = None) -> PyTree:
  """EMA params of `task` from the newest good checkpoint (or `step`) of a run directory.

  The restored params are checked against the checksums saved with the step.
  A step that cannot be read or fails its check (a truncated write, a flipped
  bit) is named in one warning and the one before it is read instead; the
  run directory is left as it is. `NoGoodCheckpointError` (a
  `CheckpointNotFoundError`) lists each step's reason when none is good.
  """
  if not os.path.isdir(checkpoint_dir(workdir)):
    raise CheckpointNotFoundError(
      f"--checkpoint: {workdir!r} has no {os.path.basename(checkpoint_dir(workdir))}/ "
      "folder: is it a directory written by `jaxgen train`?"
    )
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    items, _, _ = checkpointer.restore_items(dict(ema_params=abstract_params(task)), step)
  finally:
    checkpointer.close()
  return items["ema_params"]
