"""Orbax checkpoints of a TrainState, with the config and data position beside it.

Layout of a run directory::

    workdir/
      config.json            the config the run was started with
      checkpoints/<step>/    orbax step folders: `state` (arrays) + `meta` (JSON)
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from jaxgen.training.train_state import TrainState

CHECKPOINT_SUBDIR = "checkpoints"
CONFIG_FILE = "config.json"


class CheckpointNotFoundError(FileNotFoundError, ValueError):
  """A checkpoint directory was given but holds no readable checkpoint."""


def _state_items(state: TrainState) -> dict[str, Any]:
  # The optax transformation is code, not data: only array leaves are saved.
  return dict(
    step=state.step,
    params=state.params,
    ema_params=state.ema_params,
    opt_state=state.opt_state,
    rng=state.rng,
    skipped_steps=state.skipped_steps,
    consecutive_skips=state.consecutive_skips,
  )


def write_run_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes `config.json` (process 0); warns if it replaces a different one."""
  path = epath.Path(workdir) / CONFIG_FILE
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if path.exists() and path.read_text() != text:
    logging.warning(
      "%s differs from the config of this run; the run's config wins and the file is rewritten",
      path,
    )
  if jax.process_index() == 0:
    path.write_text(text)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run directory was trained with."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(
      f"checkpoint directory {workdir!r} has no {CONFIG_FILE}: is it a jaxgen run directory?"
    )
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.fspath(workdir), CHECKPOINT_SUBDIR)


def checkpoint_path(workdir: str) -> epath.Path:
  """Where orbax keeps the steps: local paths made absolute, remote ones (gs://) unchanged."""
  path = checkpoint_dir(workdir)
  return epath.Path(path if "://" in path else os.path.abspath(path))


class Checkpointer:
  """Saves every `save_every` steps, keeps the newest `keep`, restores the latest.

  Saves are asynchronous (orbax writes in the background while training goes
  on); `wait()` blocks until the last one is on disk.
  """

  def __init__(
    self,
    workdir: str,
    *,
    save_every: int = 1,
    keep: int = 3,
    async_save: bool = True,
    read_only: bool = False,
  ):
    if save_every <= 0:
      raise ValueError(f"checkpoint.save_every must be > 0, got {save_every}")
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      create=not read_only,
      enable_async_checkpointing=async_save,
      read_only=read_only,
    )
    self._manager = ocp.CheckpointManager(
      checkpoint_path(workdir), options=options, item_names=("state", "meta")
    )

  def should_save(self, step: int) -> bool:
    return step % self.save_every == 0

  def save(self, step: int, state: TrainState, meta: dict[str, Any]) -> bool:
    """Saves `state` and the JSON-serialisable `meta` under `step` (now)."""
    return self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(_state_items(state)), meta=ocp.args.JsonSave(meta)
      ),
      force=True,
    )

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(
    self, template: TrainState, step: int | None = None
  ) -> tuple[TrainState, dict[str, Any], int]:
    """Restores onto the structure (and shardings) of `template`.

    With `step=None` the newest readable checkpoint is used: if the newest is
    unreadable (e.g. a truncated write), a warning names it and the previous
    one is tried.

    Returns:
      (state, meta, step restored).
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_items(template))
    items, meta, step = self._restore_first_readable(
      step, lambda: ocp.args.StandardRestore(abstract)
    )
    return template.replace(**items), meta, step

  def restore_items(
    self, template: dict[str, Any], step: int | None = None
  ) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Restores only some items of the state, e.g. `dict(ema_params=abstract_params)`.

    `template` maps item names of the saved state (`step`, `params`,
    `ema_params`, `opt_state`, `rng`, ...) to trees of `jax.ShapeDtypeStruct`
    (with shardings); the other items are not read, so no optimizer or
    train state needs to exist. Falls back to older steps like `restore`.

    Returns:
      (the restored items, meta, step restored).
    """
    restore_args = ocp.checkpoint_utils.construct_restore_args(template)
    return self._restore_first_readable(
      step,
      lambda: ocp.args.PyTreeRestore(
        item=template, restore_args=restore_args, partial_restore=True
      ),
    )

  def _restore_first_readable(
    self, step: int | None, state_args
  ) -> tuple[dict[str, Any], dict[str, Any], int]:
    steps = [step] if step is not None else self.all_steps()[::-1]
    if not steps:
      raise CheckpointNotFoundError("no checkpoint to restore: the run directory is empty")
    errors = []
    for s in steps:
      try:
        restored = self._manager.restore(
          s, args=ocp.args.Composite(state=state_args(), meta=ocp.args.JsonRestore())
        )
      except Exception as e:  # orbax raises many types for corrupt data
        logging.warning(
          "checkpoint at step %d is unreadable (%s: %s); trying an older one",
          s,
          type(e).__name__,
          e,
        )
        errors.append(f"step {s}: {type(e).__name__}: {e}")
        continue
      return dict(restored["state"]), dict(restored["meta"]), s
    raise CheckpointNotFoundError("no readable checkpoint:\n  " + "\n  ".join(errors))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
