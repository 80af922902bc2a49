"""Runs 3 train steps of the one-level tiny text-to-image config on several meshes.

Run as a script in a process that sees 8 (simulated) devices; prints one JSON
line: per mesh, the losses and the largest parameter difference from the
single-device run. Used by test_sharding.py (a separate process, because the
device count is fixed when JAX starts).
"""

import json
import sys

import jax
import numpy as np

from jaxgen.data.pipeline import ArrayIterator
from jaxgen.tasks.registry import get_task
from jaxgen.training import sharding, trainer
from tiny_configs import ONE_LEVEL_TEXT_TO_IMAGE, TINY_TEXT_TO_IMAGE, tiny_text_to_image_config

MESHES = [(1, 1, 1), (8, 1, 1), (2, 4, 1), (2, 2, 2)]
# test_multiprocess.py's runs, also on 8 devices: with the session's compilation
# cache (tests/conftest.py) the meshes both use compile once.
TEN_STEPS = ONE_LEVEL_TEXT_TO_IMAGE + [
  "train.num_steps=10",
  "train.log_every=5",
  "checkpoint.save_every=5",
]


def run(mesh_shape, num_steps=3):
  config = tiny_text_to_image_config(*TEN_STEPS[len(TINY_TEXT_TO_IMAGE) :])
  task = get_task(config)
  devices = jax.devices()[: int(np.prod(mesh_shape))]
  mesh = sharding.make_mesh(mesh_shape, devices)
  batch_sharding = sharding.batch_sharding(mesh)
  iterator = ArrayIterator(task.train_arrays(), config.train.batch_size, seed=config.seed)
  example = sharding.global_batch(next(iterator), batch_sharding)
  iterator.set_state(dict(epoch=0, position=0))
  state, state_sharding, _ = trainer.create_state(task, config, example, mesh)
  step = trainer.jit_train_step(task, config, state_sharding, example, mesh)
  losses = []
  for _ in range(num_steps):
    state, metrics = step(state, sharding.global_batch(next(iterator), batch_sharding))
    losses.append(float(metrics["loss"]))
  sharded_leaves = sum(
    not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state.params)
  )
  return losses, jax.device_get(state.params), sharded_leaves


def main():
  reference_losses, reference_params, _ = run(MESHES[0])
  report = {}
  for shape in MESHES[1:]:
    losses, params, sharded = run(shape)
    diffs = jax.tree.leaves(
      jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params, reference_params)
    )
    report[str(shape)] = dict(
      loss_diff=float(np.max(np.abs(np.subtract(losses, reference_losses)))),
      param_diff=max(diffs),
      sharded_param_leaves=sharded,
    )
  report["losses"] = reference_losses
  print(json.dumps(report))


if __name__ == "__main__":
  sys.exit(main())
