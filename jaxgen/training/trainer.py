"""The training loop: one jitted, sharded step; checkpoints; logs; preview grids."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
import tqdm

from jaxgen.data.pipeline import ArrayIterator
from jaxgen.render.grid import save_png
from jaxgen.tasks.base import Task
from jaxgen.tasks.registry import get_task
from jaxgen.training import sharding
from jaxgen.training.checkpoint import Checkpointer
from jaxgen.training.metric_writer import MetricWriter
from jaxgen.training.optimizers import make_optimizer
from jaxgen.training.train_state import TrainState, ema_decay_at

CONFIG_FILE = "config.json"


def train_step(state: TrainState, batch: dict[str, jax.Array], *, task: Task,
               ema_decay: float, ema_warmup: int) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update. A non-finite loss or gradient leaves the state unchanged.

  Skipped updates are counted in the state (`skipped_steps`,
  `consecutive_skips`), so the host can stop a diverged run without reading
  anything back from the device on every step.
  """
  rng, step_rng = jax.random.split(state.rng)
  grad_fn = jax.value_and_grad(task.loss, has_aux=True)
  (loss, metrics), grads = grad_fn(state.params, batch, step_rng)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updated = state.apply_gradients(grads, ema_decay_at(state.step, ema_decay, ema_warmup))
  # Select leaf-wise: the bad update never reaches params, EMA or moments.
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
  skipped = (~finite).astype(jnp.int32)
  new_state = new_state.replace(
      step=state.step + 1,  # counts batches consumed, skipped or not
      rng=rng,
      skipped_steps=state.skipped_steps + skipped,
      consecutive_skips=(state.consecutive_skips + 1) * skipped)
  metrics = dict(metrics, loss=loss, grad_norm=grad_norm)
  return new_state, metrics


def _write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  path = os.path.join(workdir, CONFIG_FILE)
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if os.path.exists(path):
    with open(path) as f:
      if f.read() != text:
        logging.warning("%s differs from the config of this run; the run's config wins "
                        "and the file is rewritten", path)
  if jax.process_index() == 0:
    with open(path, "w") as f:
      f.write(text)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run directory was trained with."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint directory {workdir!r} has no {CONFIG_FILE}: "
                            "is it a jaxgen run directory?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def init_state_fn(task: Task, tx: optax.GradientTransformation):
  """(init rng, state rng, batch) -> a fresh TrainState with unboxed params."""

  def init_state(init_rng, state_rng, batch):
    params = nn.meta.unbox(task.init(init_rng, batch))
    return TrainState.create(params, tx, state_rng)

  return init_state


def create_state(task: Task, config: ml_collections.ConfigDict, example_batch: dict,
                 mesh: jax.sharding.Mesh) -> tuple[TrainState, Any, optax.Schedule]:
  """Initialises the train state directly into its shardings.

  Returns (state, state shardings, learning-rate schedule).
  """
  tx, schedule = make_optimizer(config.optim, config.train.num_steps)
  rng = jax.random.PRNGKey(config.seed)
  init_rng, state_rng = jax.random.split(rng)
  init_state = init_state_fn(task, tx)
  abstract_boxed = jax.eval_shape(task.init, init_rng, example_batch)
  abstract_state = jax.eval_shape(init_state, init_rng, state_rng, example_batch)
  params_sharding = sharding.param_shardings(abstract_boxed, mesh)
  rep = sharding.replicated(mesh)
  state_sharding = abstract_state.replace(
      step=rep, rng=rep, skipped_steps=rep, consecutive_skips=rep,
      params=params_sharding, ema_params=params_sharding,
      opt_state=sharding.opt_state_shardings(tx, abstract_state.opt_state,
                                             params_sharding, mesh))
  batch_sharding = jax.tree.map(lambda _: sharding.batch_sharding(mesh), example_batch)
  state = jax.jit(init_state, in_shardings=(rep, rep, batch_sharding),
                  out_shardings=state_sharding)(init_rng, state_rng, example_batch)
  return state, state_sharding, schedule


def jit_train_step(task: Task, config: ml_collections.ConfigDict, state_sharding: Any,
                   example_batch: dict, mesh: jax.sharding.Mesh):
  """`train_step` compiled for the mesh: state per the rules, batch over data × fsdp.

  The incoming state is donated (updated in place on device).
  """
  batch_sharding = jax.tree.map(lambda _: sharding.batch_sharding(mesh), example_batch)
  return jax.jit(
      functools.partial(train_step, task=task, ema_decay=config.train.ema_decay,
                        ema_warmup=config.train.ema_warmup),
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(state_sharding, sharding.replicated(mesh)),
      donate_argnums=0)


def train(config: ml_collections.ConfigDict, workdir: str, *,
          mesh: jax.sharding.Mesh | None = None) -> TrainState:
  """Trains `config.task` into `workdir`, resuming from its newest checkpoint.

  Returns the final train state (also saved as the last checkpoint).
  """
  os.makedirs(workdir, exist_ok=True)
  _write_config(workdir, config)
  task = get_task(config)
  mesh = mesh or sharding.make_mesh(config.get("mesh_shape"))
  tcfg = config.train

  iterator = ArrayIterator(task.train_arrays(), tcfg.batch_size, seed=config.seed,
                           process_index=jax.process_index(),
                           process_count=jax.process_count())
  batch_sharding = sharding.batch_sharding(mesh)
  first = next(iterator)
  task.check_batch(first)
  example = sharding.global_batch(first, batch_sharding)
  iterator.set_state(dict(epoch=0, position=0))
  state, state_sharding, schedule = create_state(task, config, example, mesh)

  checkpointer = Checkpointer(workdir, save_every=config.checkpoint.save_every,
                              keep=config.checkpoint.keep)
  if checkpointer.latest_step() is not None:
    state, meta, step = checkpointer.restore(state)
    iterator.set_state(meta["data_iterator"])
    logging.info("resumed from step %d in %s", step, workdir)

  step_fn = jit_train_step(task, config, state_sharding, example, mesh)

  writer = MetricWriter(os.path.join(workdir, "tensorboard"))
  first_step = int(state.step)
  deadline = time.monotonic() + 60 * tcfg.max_minutes if tcfg.get("max_minutes") else None
  max_skips = tcfg.get("max_consecutive_skips", 10)
  window_start, window_steps = time.monotonic(), 0
  progress = tqdm.tqdm(total=tcfg.num_steps, initial=first_step, desc="train",
                       disable=jax.process_index() != 0, dynamic_ncols=True)
  step = first_step
  while step < tcfg.num_steps:
    batch = sharding.global_batch(next(iterator), batch_sharding)
    state, metrics = step_fn(state, batch)
    step += 1
    window_steps += 1
    progress.update(1)

    if step % tcfg.log_every == 0 or step == tcfg.num_steps:
      metrics = jax.device_get(metrics)
      counters = jax.device_get((state.skipped_steps, state.consecutive_skips))
      elapsed = time.monotonic() - window_start
      metrics.update(lr=float(schedule(step - 1)), steps_per_sec=window_steps / elapsed,
                     skipped_steps=int(counters[0]))
      writer.scalars(step, metrics)
      progress.set_postfix(loss=f"{float(metrics['loss']):.4f}")
      window_start, window_steps = time.monotonic(), 0
      if int(counters[1]) >= max_skips:
        checkpointer.save(step, state, _meta(iterator, config))
        checkpointer.wait()
        raise FloatingPointError(
            f"{int(counters[1])} consecutive non-finite losses or gradients up to step "
            f"{step}: the run stopped; its last good state is checkpointed in {workdir}")

    if tcfg.sample_every and step % tcfg.sample_every == 0:
      _write_preview(task, state, workdir, step, writer)
    if checkpointer.should_save(step):
      checkpointer.save(step, state, _meta(iterator, config))
    if deadline is not None and time.monotonic() > deadline:
      logging.warning("train.max_minutes=%s reached at step %d of %d; stopping early",
                      tcfg.max_minutes, step, tcfg.num_steps)
      break
  progress.close()

  if checkpointer.latest_step() != step:
    checkpointer.save(step, state, _meta(iterator, config))
  checkpointer.wait()
  checkpointer.close()
  writer.close()
  return state


def _meta(iterator: ArrayIterator, config: ml_collections.ConfigDict) -> dict:
  return dict(data_iterator=iterator.get_state(),
              config=json.loads(config.to_json_best_effort()))


def _write_preview(task: Task, state: TrainState, workdir: str, step: int, writer) -> None:
  grid = task.preview(state.ema_params, jax.random.PRNGKey(step))
  if jax.process_index() == 0:
    save_png(os.path.join(workdir, "samples", f"step_{step:07d}.png"), grid)
    writer.image(step, "samples", grid)
