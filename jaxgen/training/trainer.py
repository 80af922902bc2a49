"""The training loop: one jitted, sharded step; checkpoints; logs; preview grids."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from jaxgen.data.pipeline import ArrayIterator
from jaxgen.render.grid import save_png
from jaxgen.training.task import STATE_UPDATES_KEY, Task
from jaxgen.training import run_directory, sharding
from jaxgen.training.checkpoint import Checkpointer
from jaxgen.training.config import RESUME_MAY_CHANGE, TrainerConfigError, with_trainer_defaults
from jaxgen.training.metric_writer import MetricWriter
from jaxgen.training.optimizers import make_optimizer
from jaxgen.training.train_state import TrainState, ema_decay_at, replace_leaves


if TYPE_CHECKING:  # grain is imported only by runs that use it
  from jaxgen.data.grain_pipeline import GrainIterator

  # What feeds the train step: in-memory arrays, or a task's `train_dataset()` on grain.
  DataIterator = ArrayIterator | GrainIterator


class TrainingDivergedError(FloatingPointError, ValueError):
  """`train.max_consecutive_skips` non-finite updates in a row: the run stopped, checkpointed."""


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  *,
  task: Task,
  ema_decay: float,
  ema_warmup: int,
  max_consecutive_skips: int = 0,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update. A non-finite loss or gradient leaves the state unchanged.

  Skipped updates are counted in the state (`skipped_steps`,
  `consecutive_skips`). Once `max_consecutive_skips` (> 0) updates in a row
  were skipped, the state freezes entirely — step and RNG included — so the
  host, which reads the counter a step late to keep the device busy, stops a
  diverged run holding exactly its last good state.
  """
  rng, step_rng = jax.random.split(state.rng)
  grad_fn = jax.value_and_grad(task.loss, has_aux=True)
  # The step rides along in the batch for losses that change over training
  # (e.g. a GAN term that starts at `disc.start`).
  (loss, metrics), grads = grad_fn(state.params, dict(batch, step=state.step), step_rng)
  metrics = dict(metrics)
  state_updates = metrics.pop(STATE_UPDATES_KEY, None)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updated = state.apply_gradients(grads, ema_decay_at(state.step, ema_decay, ema_warmup))
  if state_updates is not None:
    # Non-gradient parameters (e.g. EMA codebooks) take their new values in
    # both copies, so the EMA model samples with the current statistics.
    updated = updated.replace(
      params=replace_leaves(updated.params, state_updates),
      ema_params=replace_leaves(updated.ema_params, state_updates),
    )
  # Select leaf-wise: the bad update never reaches params, EMA or moments.
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
  skipped = (~finite).astype(jnp.int32)
  new_state = new_state.replace(
    step=state.step + 1,  # counts batches consumed, skipped or not
    rng=rng,
    skipped_steps=state.skipped_steps + skipped,
    consecutive_skips=(state.consecutive_skips + 1) * skipped,
  )
  if max_consecutive_skips > 0:
    halted = state.consecutive_skips >= max_consecutive_skips
    new_state = jax.tree.map(lambda new, old: jnp.where(halted, old, new), new_state, state)
  metrics = dict(
    metrics, loss=loss, grad_norm=grad_norm, consecutive_skips=new_state.consecutive_skips
  )
  return new_state, metrics


def init_state_fn(task: Task, tx: optax.GradientTransformation):
  """(init rng, state rng, batch) -> a fresh TrainState with unboxed params."""

  def init_state(init_rng, state_rng, batch):
    params = nn.meta.unbox(task.init(init_rng, batch))
    return TrainState.create(params, tx, state_rng)

  return init_state


def create_state(
  task: Task,
  config: ml_collections.ConfigDict,
  example_batch: dict,
  mesh: jax.sharding.Mesh,
  *,
  abstract: bool = False,
) -> tuple[TrainState, Any, optax.Schedule]:
  """Initialises the train state directly into its shardings.

  Reads `optim.*`, `train.num_steps` and `seed` (defaults and checks in
  `jaxgen.training.config`). Returns (state, state shardings, learning-rate
  schedule). With `abstract` the state holds `jax.ShapeDtypeStruct`s with
  their shardings and nothing is compiled or allocated: the template a
  checkpoint is restored onto.
  """
  config = with_trainer_defaults(config)
  tx, schedule = make_optimizer(config.optim, config.train.num_steps)
  rng = jax.random.PRNGKey(config.seed)
  init_rng, state_rng = jax.random.split(rng)
  init_state = init_state_fn(task, tx)
  abstract_boxed = jax.eval_shape(task.init, init_rng, example_batch)
  abstract_state = jax.eval_shape(init_state, init_rng, state_rng, example_batch)
  params_sharding = sharding.param_shardings(abstract_boxed, mesh)
  rep = sharding.replicated(mesh)
  state_sharding = abstract_state.replace(
    step=rep,
    rng=rep,
    skipped_steps=rep,
    consecutive_skips=rep,
    params=params_sharding,
    ema_params=params_sharding,
    opt_state=sharding.opt_state_shardings(tx, abstract_state.opt_state, params_sharding, mesh),
  )
  if abstract:
    state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_state,
      state_sharding,
    )
    return state, state_sharding, schedule
  batch_sharding = jax.tree.map(lambda _: sharding.batch_sharding(mesh), example_batch)
  state = jax.jit(
    init_state, in_shardings=(rep, rep, batch_sharding), out_shardings=state_sharding
  )(init_rng, state_rng, example_batch)
  return state, state_sharding, schedule


def estimated_flops(compiled: jax.stages.Compiled) -> float | None:
  """FLOPs of one call of a compiled program per device, by XLA's cost analysis."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # not every backend implements it  pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per module
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def jit_train_step(
  task: Task,
  config: ml_collections.ConfigDict,
  state_sharding: Any,
  example_batch: dict,
  mesh: jax.sharding.Mesh,
):
  """`train_step` compiled for the mesh: state per the rules, batch over data × fsdp.

  Reads `train.ema_decay`, `train.ema_warmup` and `train.max_consecutive_skips`
  (defaults in `jaxgen.training.config`). The incoming state is donated
  (updated in place on device).
  """
  tcfg = with_trainer_defaults(config).train
  batch_sharding = jax.tree.map(lambda _: sharding.batch_sharding(mesh), example_batch)
  return jax.jit(
    functools.partial(
      train_step,
      task=task,
      ema_decay=tcfg.ema_decay,
      ema_warmup=tcfg.ema_warmup,
      max_consecutive_skips=tcfg.max_consecutive_skips,
    ),
    in_shardings=(state_sharding, batch_sharding),
    out_shardings=(state_sharding, sharding.replicated(mesh)),
    donate_argnums=0,
  )


def batch_shape_key(batch: dict) -> tuple:
  """Hashable shapes of a batch: which compiled step runs it."""
  return tuple(sorted((key, tuple(value.shape)) for key, value in batch.items()))


def compile_train_steps(
  task: Task,
  config: ml_collections.ConfigDict,
  state: TrainState,
  state_sharding: Any,
  example_batch: dict,
  mesh: jax.sharding.Mesh,
  iterator: DataIterator,
) -> dict[tuple, tuple[Any, float | None]]:
  """The train step compiled ahead of time for every batch shape the iterator yields.

  Returns {batch_shape_key: (compiled step, its FLOPs per device or None)}.
  Compiling all length buckets before the first step keeps compilation out
  of the timed loop (`train.max_minutes`).
  """
  jitted = jit_train_step(task, config, state_sharding, example_batch, mesh)
  rows = iterator.batch_size
  compiled = {}
  start = time.monotonic()
  for shapes in iterator.batch_shapes():
    batch = {
      key: jax.ShapeDtypeStruct(
        (rows,) + shape, example_batch[key].dtype, sharding=example_batch[key].sharding
      )
      for key, shape in shapes.items()
    }
    step_fn = jitted.lower(state, batch).compile()
    compiled[batch_shape_key(batch)] = (step_fn, estimated_flops(step_fn))
  flops = [f"{f:.3g}" if f else "no" for _, f in compiled.values()]
  logging.info(
    "train step compiled for %d batch shape(s) in %.1f s; XLA estimates %s FLOPs "
    "per step per device",
    len(compiled),
    time.monotonic() - start,
    ", ".join(flops),
  )
  return compiled


def train(
  task: Task,
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  mesh: jax.sharding.Mesh | None = None,
  allow_config_change: bool = False,
) -> TrainState:
  """Trains `task` into `workdir`, resuming from its newest checkpoint.

  `task` is any object with the `jaxgen.training.task.Task` methods (a
  registered task, `jaxgen.tasks.registry.get_task(config)`, or one of your
  own); `config` holds the trainer's settings (`train.*`, `optim.*`,
  `checkpoint.*`, `seed`, `mesh_shape`: every key, its default and its
  checks are in `jaxgen.training.config`) beside the task's own sections.
  It is saved, defaults filled in, as the run's `config.json`.

  The run directory is protected (`jaxgen.training.run_directory`): every
  check (the trainer's keys, the workdir, the lock, the config against the
  run's, the task's first batch, the checkpoint against the new state) runs
  before anything in it is written. A resume may change only the keys in
  `jaxgen.training.config.RESUME_MAY_CHANGE` unless `allow_config_change`;
  a changed config is kept as a new revision `config.<n>.json` beside the
  original. A `train.lock` names the one process writing the run; a second
  writer gets a `RunLockedError`.

  `train.max_minutes` stops the loop early; the learning-rate decay is
  planned for `train.num_steps`, so a capped run warns at start that its
  decay may be cut, and once the first steps are timed it logs where the
  run will likely stop and which `train.num_steps` would fit the budget.

  `workdir` may be local or remote (`gs://…`); remote paths go unchanged to
  orbax and `etils.epath`. In a multi-process run every process calls this
  with the same arguments (after `distributed.initialize`); each feeds its
  slice of every global batch, orbax writes checkpoints collectively and
  only process 0 writes logs and pictures.

  Returns the final train state (also saved as the last checkpoint).
  """
  config = with_trainer_defaults(config)
  run_directory.check_workdir(workdir)
  mesh = mesh or _make_mesh(config.mesh_shape)
  primary = jax.process_index() == 0
  created = run_directory.make_workdir(workdir)
  lock = run_directory.RunLock(workdir, enabled=primary)
  try:
    lock.acquire()
    changes = run_directory.check_resume_config(
      workdir, config, may_change=RESUME_MAY_CHANGE, allow_change=allow_config_change
    )
    return _train(task, config, workdir, mesh, changes)
  finally:
    lock.release()
    if created and primary:
      run_directory.remove_if_empty(workdir)


def _make_mesh(mesh_shape) -> jax.sharding.Mesh:
  try:
    return sharding.make_mesh(mesh_shape)
  except ValueError as e:
    raise TrainerConfigError(f"mesh_shape: {e}") from e


def _train(
  task: Task,
  config: ml_collections.ConfigDict,
  workdir: str,
  mesh: jax.sharding.Mesh,
  changes: dict,
) -> TrainState:
  """`train` once the run directory is locked and the config is known to fit it."""
  tcfg = config.train
  max_skips = tcfg.max_consecutive_skips

  iterator = train_iterator(task, config)
  batch_sharding = sharding.batch_sharding(mesh)
  start_state = iterator.get_state()
  first = next(iterator)
  task.check_batch(first)
  example = sharding.global_batch(first, batch_sharding)
  iterator.set_state(start_state)
  checkpointer = Checkpointer(
    workdir, save_every=config.checkpoint.save_every, keep=config.checkpoint.keep
  )
  resuming = checkpointer.latest_step() is not None
  # A resume restores onto shapes and shardings alone: nothing is initialised.
  state, state_sharding, schedule = create_state(task, config, example, mesh, abstract=resuming)
  if resuming:
    # The template carries this run's shardings: a checkpoint written on
    # another mesh shape is resharded as it is read.
    state, meta, step = _restore(checkpointer, state, workdir, changes)
    iterator.set_state(meta["data_iterator"])
    logging.info("resumed from step %d in %s", step, workdir)
  if jax.process_index() == 0:
    # Only now, with every check passed, does the run directory change.
    run_directory.record_run_config(workdir, config)

  # A finished run that is resumed (e.g. only to check it) compiles no step.
  compiled_steps = (
    compile_train_steps(task, config, state, state_sharding, example, mesh, iterator)
    if int(state.step) < tcfg.num_steps
    else {}
  )

  writer = MetricWriter(os.path.join(workdir, "tensorboard"))
  first_step = int(state.step)
  deadline = None
  if tcfg.max_minutes:
    deadline = time.monotonic() + 60 * tcfg.max_minutes
    warn_decay_may_be_cut(config, first_step)
  # A CPU-time cap gives runs on a shared machine equal compute (this process's
  # threads; compilation before the loop excluded, as for max_minutes).
  cpu_start = time.process_time()
  cpu_deadline = None
  if tcfg.get("max_cpu_minutes"):
    cpu_deadline = cpu_start + 60 * tcfg.max_cpu_minutes
  window_start, window_steps, window_flops = time.monotonic(), 0, 0.0
  progress = tqdm.tqdm(
    total=tcfg.num_steps,
    initial=first_step,
    desc="train",
    disable=jax.process_index() != 0,
    dynamic_ncols=True,
  )
  step, previous_metrics = first_step, None
  while step < tcfg.num_steps:
    batch = sharding.global_batch(next(iterator), batch_sharding)
    step_fn, flops = compiled_steps[batch_shape_key(batch)]
    state, metrics = step_fn(state, batch)
    step += 1
    window_steps += 1
    window_flops += flops or 0.0
    progress.update(1)
    # Read the previous step's counter while this one runs: one step late,
    # but the device never waits for the host. A halted state is frozen.
    if max_skips and previous_metrics is not None:
      if int(previous_metrics["consecutive_skips"]) >= max_skips:
        _stop_diverged(checkpointer, state, iterator, config, workdir, max_skips)
    previous_metrics = metrics

    if step % tcfg.log_every == 0 or step == tcfg.num_steps:
      metrics = jax.device_get(metrics)
      elapsed = time.monotonic() - window_start
      steps_per_sec = window_steps / elapsed
      metrics.update(
        lr=float(schedule(step - 1)),
        steps_per_sec=steps_per_sec,
        cpu_minutes=(time.process_time() - cpu_start) / 60,
        skipped_steps=int(jax.device_get(state.skipped_steps)),
        skipped_records=_skipped_records(iterator),
      )
      if window_flops:
        metrics["tflops_per_sec_per_device"] = window_flops / elapsed / 1e12
      writer.scalars(step, metrics)
      if deadline is not None and step - first_step == window_steps:  # the first window
        warn_projected_stop(config, step, steps_per_sec, deadline - time.monotonic(), schedule)
      progress.set_postfix(loss=f"{float(metrics['loss']):.4f}")
      window_start, window_steps, window_flops = time.monotonic(), 0, 0.0

    if tcfg.sample_every and step % tcfg.sample_every == 0:
      _write_preview(task, state, workdir, step, writer)
    if checkpointer.should_save(step):
      checkpointer.save(step, state, _meta(iterator, config))
    if deadline is not None and time.monotonic() > deadline:
      logging.warning(
        "train.max_minutes=%s reached at step %d of train.num_steps=%d; stopping "
        "early with the learning rate at %.3g (its planned end: %.3g)",
        tcfg.max_minutes,
        step,
        tcfg.num_steps,
        float(schedule(step - 1)),
        float(schedule(tcfg.num_steps)),
      )
      break
    if cpu_deadline is not None and time.process_time() > cpu_deadline:
      logging.warning(
        "train.max_cpu_minutes=%s reached at step %d of train.num_steps=%d; stopping early",
        tcfg.max_cpu_minutes,
        step,
        tcfg.num_steps,
      )
      break
  progress.close()
  if max_skips and int(jax.device_get(state.consecutive_skips)) >= max_skips:
    _stop_diverged(checkpointer, state, iterator, config, workdir, max_skips)

  if checkpointer.latest_step() != step:
    checkpointer.save(step, state, _meta(iterator, config))
  iterator.close()
  checkpointer.wait()
  checkpointer.close()
  writer.close()
  return state


def train_iterator(task: Task, config: ml_collections.ConfigDict) -> DataIterator:
  """This process's batches: the task's `train_dataset()` on grain, else its `train_arrays()`.

  Both shuffle every epoch from `seed`, give each process its slice of every
  global batch of `train.batch_size` rows and keep their position in a state
  saved with each checkpoint.
  """
  config = with_trainer_defaults(config)
  tcfg = config.train
  dataset = task.train_dataset()
  if dataset is not None:
    from jaxgen.data.grain_pipeline import GrainIterator  # pylint: disable=g-import-not-at-top

    return GrainIterator(
      dataset,
      tcfg.batch_size,
      seed=config.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
  arrays = task.train_arrays()
  # Optional task hook: length buckets that crop padding off short examples.
  buckets = task.train_buckets(arrays)
  return ArrayIterator(
    arrays,
    tcfg.batch_size,
    seed=config.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    buckets=buckets,
  )


def _skipped_records(iterator: DataIterator) -> int:
  """Bad records skipped so far by all processes together (the same number on each)."""
  count = iterator.skipped_records
  # In-memory arrays hold no bad records: no collective for them.
  if jax.process_count() > 1 and not isinstance(iterator, ArrayIterator):
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    count = int(np.sum(multihost_utils.process_allgather(np.int64(count))))
  return count


def warn_decay_may_be_cut(config: ml_collections.ConfigDict, first_step: int) -> bool:
  """At start: a time-capped run with a decaying learning rate may stop mid-decay."""
  tcfg, optim = config.train, config.optim
  if optim.decay == "constant" or first_step >= tcfg.num_steps:
    return False
  logging.warning(
    "train.max_minutes=%s may stop this run before train.num_steps=%d: the %s learning-rate "
    "decay (optim.decay) is planned for train.num_steps and would be cut part-way. The "
    "number of steps that fit is logged after the first %d steps; set train.num_steps to it "
    "for a full decay, or optim.decay='constant'.",
    tcfg.max_minutes,
    tcfg.num_steps,
    optim.decay,
    tcfg.log_every,
  )
  return True


def warn_projected_stop(
  config: ml_collections.ConfigDict,
  step: int,
  steps_per_sec: float,
  seconds_left: float,
  schedule: optax.Schedule,
) -> bool:
  """After the first timed steps: where `train.max_minutes` will likely stop the run."""
  tcfg = config.train
  projected = step + int(steps_per_sec * max(seconds_left, 0.0))
  if projected >= tcfg.num_steps:
    return False
  logging.warning(
    "train.max_minutes=%s: at %.3g steps/s this run will stop near step %d of "
    "train.num_steps=%d, with the learning rate at %.3g (its planned end: %.3g); "
    "train.num_steps=%d would fit the time budget with the full decay.",
    tcfg.max_minutes,
    steps_per_sec,
    projected,
    tcfg.num_steps,
    float(schedule(projected)),
    float(schedule(tcfg.num_steps)),
    projected,
  )
  return True


def abstract_train_state(
  task: Task, config: ml_collections.ConfigDict, example_batch: dict
) -> TrainState:
  """Shapes and dtypes of the whole train state on the first local device (for restores)."""
  config = with_trainer_defaults(config)
  tx, _ = make_optimizer(config.optim, config.train.num_steps)
  rng = jax.random.PRNGKey(0)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.eval_shape(init_state_fn(task, tx), rng, rng, example_batch)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)


def _stop_diverged(
  checkpointer: Checkpointer,
  state: TrainState,
  iterator: DataIterator,
  config: ml_collections.ConfigDict,
  workdir: str,
  max_skips: int,
) -> None:
  """Checkpoints the (frozen, last good) state of a diverged run and stops it."""
  frozen_step = int(jax.device_get(state.step))
  if frozen_step not in checkpointer.all_steps():
    checkpointer.save(frozen_step, state, _meta(iterator, config))
  iterator.close()
  checkpointer.wait()
  checkpointer.close()
  raise TrainingDivergedError(
    f"{max_skips} consecutive non-finite losses or gradients (train.max_consecutive_skips) "
    f"at step {frozen_step}: the run stopped; its last good state is checkpointed in "
    f"{workdir} at step {frozen_step}"
  )


def _restore(
  checkpointer: Checkpointer, template: TrainState, workdir: str, changes: dict
) -> tuple[TrainState, dict, int]:
  """Restores the newest checkpoint; one that does not fit a changed config is named as such."""
  try:
    return checkpointer.restore(template)
  except Exception as e:  # orbax raises many types for a structure or shape mismatch
    if not changes:
      raise
    checkpointer.close()
    reason = " ".join(str(e).split())[:500]  # one line on the command line
    raise run_directory.RunConfigMismatchError(
      f"the checkpoints in {workdir!r} do not fit the changed config ({', '.join(changes)}): "
      f"{type(e).__name__}: {reason}. A change of architecture cannot resume a run: resume "
      "with the run's config or train into a new --workdir"
    ) from e


def _meta(iterator: DataIterator, config: ml_collections.ConfigDict) -> dict:
  return dict(data_iterator=iterator.get_state(), config=json.loads(config.to_json_best_effort()))


def _write_preview(task: Task, state: TrainState, workdir: str, step: int, writer) -> None:
  grid = task.preview(state.ema_params, jax.random.PRNGKey(step))
  if jax.process_index() == 0:
    save_png(os.path.join(workdir, "samples", f"step_{step:07d}.png"), grid)
    writer.image(step, "samples", grid)
