"""`jaxgen train`: train an experiment config (configs/<task>_<dataset>.py) into a run directory.

    jaxgen train --config configs/text_to_image_shapes.py --workdir runs/shapes train.num_steps=2000
    jaxgen train --config configs/t2m_mdm_humanml3d.py --dry-run mesh_shape="(1, 8, 1)" ...

Architecture files (configs/arch/) are refused with a named error: they hold
a model's sizes, not an experiment. `--dry-run` checks a config without
compiling anything: it builds the task, checks one batch, traces the train
state with `jax.eval_shape` and prints the parameter count.

Running it again on a workdir resumes the run. The resume may extend or
finish it (`train.num_steps=...`, `train.max_minutes=...`, logging and
checkpoint cadence, `mesh_shape`); any other change of the config is refused
with the differing keys unless `--allow-config-change`, which keeps the new
config as a revision `config.<n>.json` beside the original. One process
trains a workdir at a time (`train.lock`).
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", required=True, help="an experiment config file (configs/*.py)")
  parser.add_argument("--workdir", help="run directory (default runs/<config name>)")
  parser.add_argument(
    "--dry-run",
    action="store_true",
    help="check the config, one batch and the train state's shapes; print the "
    "parameter count and exit without compiling or writing anything",
  )
  parser.add_argument(
    "--allow-config-change",
    action="store_true",
    help="resume even though the config differs from the run's in keys that shape the "
    "weights (architecture, data, optimizer); the new config is kept as a revision "
    "config.<n>.json beside the original",
  )
  parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
  group = parser.add_argument_group(
    "multi-process (multi-host) runs: every process runs the same command"
  )
  group.add_argument(
    "--distributed",
    action="store_true",
    help="join a multi-process run, detecting coordinator and process id "
    "(TPU pods, SLURM, Open MPI)",
  )
  group.add_argument("--coordinator", help="host:port of process 0 (with the two flags below)")
  group.add_argument("--num-processes", type=int, help="number of processes in the run")
  group.add_argument("--process-id", type=int, help="this process's index, 0 .. N-1")
  group.add_argument(
    "--coordinator-timeout",
    type=int,
    default=300,
    metavar="SECONDS",
    help="how long to wait for the coordinator and the other processes (default 300)",
  )


def run(args: argparse.Namespace) -> int:
  # pylint: disable=g-import-not-at-top  (the work imports JAX; --help does not)
  from jaxgen.configuration import apply_overrides, load_experiment_config
  from jaxgen.tasks.registry import get_task
  from jaxgen.training.config import with_trainer_defaults
  from jaxgen.training.run_directory import check_workdir

  # Trainer keys a config file leaves at their defaults can be overridden too.
  config = with_trainer_defaults(load_experiment_config(args.config))
  config = apply_overrides(config, args.overrides)
  if args.dry_run:
    return dry_run(get_task(config), config)
  workdir = args.workdir or os.path.join("runs", os.path.splitext(os.path.basename(args.config))[0])
  check_workdir(workdir)  # before the task loads its data or a process joins a run

  from jaxgen.training import distributed  # pylint: disable=g-import-not-at-top
  from jaxgen.training.trainer import train  # pylint: disable=g-import-not-at-top

  explicit = args.coordinator is not None
  distributed.initialize(
    distributed.DistributedConfig(
      enabled=args.distributed or explicit,
      coordinator_address=args.coordinator,
      num_processes=args.num_processes,
      process_id=args.process_id,
      initialization_timeout=args.coordinator_timeout,
    )
  )
  train(get_task(config), config, workdir, allow_config_change=args.allow_config_change)
  print(f"trained into {workdir}")
  return 0


def dry_run(task, config) -> int:
  """Checks `config` up to the train state's shapes and prints what a run would hold.

  Nothing compiles and no device memory is allocated: the state is traced with
  `jax.eval_shape` on one batch's shapes, so a pod config checks on a laptop.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxgen.training.config import with_trainer_defaults  # pylint: disable=g-import-not-at-top
  from jaxgen.training.trainer import abstract_train_state  # pylint: disable=g-import-not-at-top

  config = with_trainer_defaults(config)
  mesh_devices = _mesh_devices(config.get("mesh_shape"))
  batch_size = config.train.batch_size
  if mesh_devices and batch_size % mesh_devices:
    raise ValueError(
      f"train.batch_size: expected a multiple of the mesh's {mesh_devices} "
      f"devices (mesh_shape={tuple(config.mesh_shape)}), got {batch_size}"
    )
  # A grain-fed task is checked through its record count and abstract batch: decoding
  # its whole training set into memory (`train_arrays`) could take hundreds of GB.
  dataset = task.train_dataset()
  arrays = task.train_arrays() if dataset is None else None
  rows = len(dataset.records) if dataset is not None else min(len(v) for v in arrays.values())
  if rows < batch_size:
    raise ValueError(
      f"train.batch_size: expected at most the {rows} training examples, got {batch_size}"
    )
  if arrays is None:
    abstract_batch = task.abstract_batch(batch_size)
  else:
    batch = {k: np.asarray(v[:batch_size]) for k, v in arrays.items()}
    task.check_batch(batch)
    abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
  state = abstract_train_state(task, config, abstract_batch)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  mesh = (
    f"mesh_shape={tuple(config.mesh_shape)} ({mesh_devices} devices)"
    if mesh_devices
    else f"every device on `data` ({jax.device_count()} here)"
  )
  print(
    f"dry run of task {config.task!r}: {num_params:,} parameters; train state "
    f"{state_bytes / 2**30:.3f} GiB (params, EMA, optimizer) before sharding; "
    f"batch {batch_size} of {_shapes(abstract_batch)}; {mesh}; nothing compiled"
  )
  return 0


def _mesh_devices(mesh_shape) -> int | None:
  """Devices a `mesh_shape` needs (None: every device on `data`), with a named error."""
  if mesh_shape is None:
    return None
  shape = tuple(mesh_shape) if isinstance(mesh_shape, (list, tuple)) else None
  if shape is None or len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
    raise ValueError(
      f"mesh_shape: expected three positive sizes (data, fsdp, tensor) or None, got {mesh_shape!r}"
    )
  return shape[0] * shape[1] * shape[2]


def _shapes(batch) -> str:
  return ", ".join(f"{k} {tuple(v.shape[1:])} {v.dtype}" for k, v in sorted(batch.items()))
