"""Orbax checkpoints of a TrainState, with the config and data position beside it.

Layout of a run directory (its config files and lock: `run_directory.py`)::

    workdir/
      checkpoints/<step>/    orbax step folders: `state` (arrays), `meta` (JSON: data
                             position, config) and `checksums` (JSON, of both)
      checkpoints/corrupt/   steps that failed to restore, moved aside by a resume
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import hashlib
import json
import logging
import os
import sys
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from jaxgen.training.train_state import TrainState

CHECKPOINT_SUBDIR = "checkpoints"
CHECKSUMS_ITEM = "checksums"  # beside `state` and `meta` in each step folder
CORRUPT_SUBDIR = "corrupt"  # checkpoints/corrupt/<step>: bad steps a resume moved aside


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


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.fspath(workdir), CHECKPOINT_SUBDIR)


def checkpoint_path(workdir: str) -> epath.Path:
  """Where orbax keeps the steps: local paths made absolute, remote ones (gs://) unchanged."""
  path = checkpoint_dir(workdir)
  return epath.Path(path if "://" in path else os.path.abspath(path))


# -- Checksums ---------------------------------------------------------------
#
# A step's checksum of an array is a sum over its elements, modulo 2**64, of
# mix(bits of the element) * (2 * flat index in the whole array + 1). A sum
# does not depend on how the array is cut into shards, so each process adds
# up what it holds (each element once: replica 0 of every shard), the
# processes add their partial sums, and a checkpoint written on one mesh
# verifies when it is restored onto another. `mix` is a bijection and the
# weights are odd, so a change of any single element (one flipped bit
# included) always changes the sum.

CHECKSUM_ALGORITHM = "mix64-index-weighted-sum-v1"
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_CHUNK = 1 << 16  # elements hashed at a time: the temporaries stay in cache
_UINTS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


class ChecksumMismatchError(ValueError):
  """Restored data differ from what was saved with the step."""


def _weighted_sum(words: np.ndarray, odd_weights: np.ndarray) -> int:
  """Sum of mix(word) * weight modulo 2**64 (numpy's uint64 arithmetic wraps)."""
  h = words.astype(np.uint64)
  h *= _MULTIPLIER  # mix: an odd multiplier and a xor-shift, both bijections
  h ^= h >> np.uint64(29)
  h *= odd_weights
  return int(h.sum(dtype=np.uint64))


def _element_words(values: np.ndarray) -> np.ndarray:
  """The bits of each element as one unsigned integer (any dtype of 1, 2, 4 or 8 bytes)."""
  values = np.ascontiguousarray(values)
  if values.dtype.itemsize not in _UINTS:
    raise TypeError(f"cannot checksum arrays of dtype {values.dtype}")
  return values.view(_UINTS[values.dtype.itemsize])


def _block_sum(values: np.ndarray, starts: tuple[int, ...], global_shape: tuple[int, ...]) -> int:
  """Checksum terms of a block of a global array that begins at index `starts`."""
  words = _element_words(values)
  strides = [int(np.prod(global_shape[d + 1 :], dtype=np.int64)) for d in range(len(global_shape))]
  base = sum(s * g for s, g in zip(starts, strides))
  # Rows of the block are contiguous in the whole array when every later axis is whole.
  if values.ndim <= 1 or tuple(values.shape[1:]) == tuple(global_shape[1:]):
    flat = words.reshape(-1)
    total = 0
    for a in range(0, flat.size, _CHUNK):
      chunk = flat[a : a + _CHUNK]
      first = 2 * (base + a) + 1
      total += _weighted_sum(chunk, np.arange(first, first + 2 * chunk.size, 2, dtype=np.uint64))
    return total
  rows = max(1, _CHUNK // max(1, int(np.prod(values.shape[1:]))))
  total = 0
  for r in range(0, values.shape[0], rows):
    block = words[r : r + rows]
    index = np.zeros(block.shape, np.uint64)
    for d, (n, g) in enumerate(zip(block.shape, strides)):
      offset = starts[d] + (r if d == 0 else 0)
      axis = np.arange(offset, offset + n, dtype=np.uint64) * np.uint64(g)
      index += axis.reshape((n,) + (1,) * (block.ndim - d - 1))
    total += _weighted_sum(block.reshape(-1), index.reshape(-1) * np.uint64(2) + np.uint64(1))
  return total


def _local_sum(leaf: Any) -> int:
  """This process's part of `leaf`'s checksum (each element counted once over all processes)."""
  if isinstance(leaf, jax.Array):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    total = 0
    for shard in leaf.addressable_shards:
      if shard.replica_id == 0:
        starts = tuple(s.indices(n)[0] for s, n in zip(shard.index, leaf.shape))
        total += _block_sum(np.asarray(shard.data), starts, leaf.shape)
    return total
  # Host values are the same on every process: process 0 counts them.
  if jax.process_index() != 0:
    return 0
  values = np.asarray(leaf)
  return _block_sum(values, (0,) * values.ndim, values.shape)


def _sum_over_processes(partial: list[int]) -> list[int]:
  if jax.process_count() == 1:
    return [p % 2**64 for p in partial]
  # 32-bit halves: without jax_enable_x64 a gather would truncate uint64.
  halves = np.array([[(p >> 32) & 0xFFFFFFFF, p & 0xFFFFFFFF] for p in partial], np.uint32)
  gathered = np.asarray(multihost_utils.process_allgather(halves)).reshape(-1, len(partial), 2)
  return [
    sum((int(hi) << 32) + int(lo) for hi, lo in gathered[:, i]) % 2**64 for i in range(len(partial))
  ]


def tree_checksums(tree: Any) -> dict[str, str]:
  """`{"<path>/<to>/<leaf>": hex checksum}` of every array leaf of `tree`.

  Covers every element of every leaf, also when the leaf is sharded over
  processes: each process sums the shards it holds and the partial sums are
  gathered (a collective: every process must call this, as for `save`). The
  result does not depend on the sharding.
  """
  paths_and_leaves = jax.tree_util.tree_leaves_with_path(tree)
  # numpy lets go of the GIL in its loops: the leaves are summed on every core.
  with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
    partial = list(pool.map(_local_sum, [leaf for _, leaf in paths_and_leaves]))
  totals = _sum_over_processes(partial)
  return {
    jax.tree_util.keystr(path, simple=True, separator="/"): f"{total:016x}"
    for (path, _), total in zip(paths_and_leaves, totals)
  }


def meta_checksum(meta: dict[str, Any]) -> str:
  """Checksum of the JSON `meta` (the data iterator's position and the config)."""
  text = json.dumps(meta, sort_keys=True, separators=(",", ":"))
  return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def verify_checksums(saved: dict[str, Any], items: dict[str, Any], meta: dict[str, Any]) -> None:
  """Raises `ChecksumMismatchError` naming the first restored leaf (or meta) that differs.

  `saved` is a step's `checksums` item; `items` may be part of the saved
  state (a partial restore): only what was restored is checked.
  """
  digests = tree_checksums(items)  # first: a collective on every process
  if saved.get("algorithm") != CHECKSUM_ALGORITHM:
    raise ChecksumMismatchError(
      f"checksums written with {saved.get('algorithm')!r}, this jaxgen checks "
      f"{CHECKSUM_ALGORITHM!r}"
    )
  if saved.get("meta") != meta_checksum(meta):
    raise ChecksumMismatchError("checksum mismatch in meta (data iterator position, config)")
  expected = saved.get("arrays", {})
  for path, digest in digests.items():
    if path not in expected:
      raise ChecksumMismatchError(f"no checksum saved for {path}")
    if expected[path] != digest:
      raise ChecksumMismatchError(f"checksum mismatch in {path}")


# -- Restoring past bad steps -------------------------------------------------

# What orbax, tensorstore and asyncio log while a bad step is read: a warning
# per array, and tracebacks of the reads still in flight when it gives up.
_NOISY_LOGGERS = ("absl", "orbax", "tensorstore", "asyncio", "concurrent.futures")


class _AbandonedReadsFilter:
  """A `sys.unraisablehook` that drops the errors of the reads a failed restore abandons.

  When one read fails, orbax gives up on the step's other reads: their
  coroutines are closed (orbax turns the `GeneratorExit` into an exception
  that nothing can catch) and tensorstore, finishing them after orbax closed
  its asyncio loop, hits "Event loop is closed". Both reach
  `sys.unraisablehook`, during the restore and after it has returned: one
  traceback per array (hundreds to thousands). Anything else goes on to the
  hook this one wraps.
  """

  def __init__(self, wrapped):
    self.wrapped = wrapped

  def __call__(self, unraisable) -> None:
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
      return
    if isinstance(getattr(error, "__cause__", None), GeneratorExit):
      return
    self.wrapped(unraisable)


class _AbandonedReadsLogFilter(logging.Filter):
  """Drops asyncio's "exception was never retrieved" for the reads a failed restore abandons.

  asyncio logs it when the abandoned future is collected, which can happen on
  orbax's loop thread after the restore has returned and the loggers are live again.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not (
      "never retrieved" in str(record.msg)
      and "Encountered error while reading array index" in str(error)
    )


_ABANDONED_READS_LOG_FILTER = _AbandonedReadsLogFilter()


@contextlib.contextmanager
def _quiet_libraries():
  """Mutes the libraries' loggers and stray thread tracebacks while a step is read."""
  if not isinstance(sys.unraisablehook, _AbandonedReadsFilter):
    sys.unraisablehook = _AbandonedReadsFilter(sys.unraisablehook)  # stays: errors come later
  logging.getLogger("asyncio").addFilter(_ABANDONED_READS_LOG_FILTER)  # stays, likewise
  loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
  disabled = [logger.disabled for logger in loggers]
  thread_hook = threading.excepthook
  for logger in loggers:
    logger.disabled = True
  threading.excepthook = lambda args: None
  try:
    yield
  finally:
    for logger, was in zip(loggers, disabled):
      logger.disabled = was
    threading.excepthook = thread_hook


def _unreadable(error: BaseException) -> str:
  """Why a step failed to read, in one line: orbax's messages carry whole TensorStore specs."""
  text = str(error).strip().split("\n")[0]
  text = text.split(" See full TensorStore details")[0]
  if len(text) > 200:
    text = text[:200] + "..."
  return (
    f"unreadable ({type(error).__name__}: {text})"
    if text
    else f"unreadable ({type(error).__name__})"
  )


def _all_processes_agree(ok: bool) -> bool:
  """True when `ok` holds on every process (a collective in multi-process runs)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array([int(ok)], np.int32))))


class NoGoodCheckpointError(CheckpointNotFoundError):
  """Every step of a run directory failed to restore; `reasons` maps each step to why."""

  def __init__(self, directory: str, reasons: dict[int, str]):
    self.reasons = dict(reasons)
    lines = "\n".join(f"  step {step}: {why}" for step, why in sorted(reasons.items()))
    super().__init__(
      f"no checkpoint in {directory} can be restored; each step and why:\n{lines}\n"
      "Nothing was moved. If every step fails the same way, the run was likely saved with "
      "another config (model widths, optimizer): resume with that config. Otherwise the "
      "steps are damaged: move them away (or train into a new --workdir) to start again."
    )


class Checkpointer:
  """Saves every `save_every` steps, keeps the newest `keep`, restores the newest good one.

  Saves are asynchronous (orbax writes in the background while training goes
  on); `wait()` blocks until the last one is on disk. With `verify` (the
  default) each step carries a `checksums` item (see `tree_checksums`) of
  every array it saves and of `meta`, written in the same orbax save, so it
  is finalised with the step or not at all; a restore recomputes them over
  what it read.

  A restore with `step=None` tries the steps newest first. A step that
  cannot be read for any reason, or whose data differ from their checksums,
  is skipped with one warning naming the step and the reason; the newest
  good step is restored. A writable checkpointer then moves the bad steps
  newer than it to `checkpoints/corrupt/<step>` (kept for inspection, out of
  orbax's way, so training can save those steps again); a read-only one only
  skips them. When no step is good, `NoGoodCheckpointError` lists each step's
  reason and nothing is moved. Steps saved before checksums existed restore
  unverified (an INFO line says so).
  """

  def __init__(
    self,
    workdir: str,
    *,
    save_every: int = 1,
    keep: int = 3,
    async_save: bool = True,
    read_only: bool = False,
    verify: bool = True,
  ):
    if save_every <= 0:
      raise ValueError(f"checkpoint.save_every must be > 0, got {save_every}")
    self.save_every = save_every
    self.read_only = read_only
    self.verify = verify
    self.directory = checkpoint_path(workdir)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=None if read_only else keep,
      save_interval_steps=0 if read_only else 1,
      create=not read_only,
      # Folders of saves a killed run left unfinished; they are never restored.
      cleanup_tmp_directories=not read_only,
      enable_async_checkpointing=async_save,
      read_only=read_only,
    )
    with _quiet_libraries():  # read-only options log warnings about settings they change
      self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "meta", CHECKSUMS_ITEM)
      )

  def should_save(self, step: int) -> bool:
    return step % self.save_every == 0

  def save(self, step: int, state: TrainState, meta: dict[str, Any]) -> bool:
    """Saves `state` and the JSON-serialisable `meta` under `step` (now).

    The checksums are computed here, before the call returns: the arrays may
    be donated to the next train step while orbax still writes.
    """
    items = _state_items(state)
    args = dict(state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta))
    if self.verify:
      checksums = dict(
        algorithm=CHECKSUM_ALGORITHM, meta=meta_checksum(meta), arrays=tree_checksums(items)
      )
      args[CHECKSUMS_ITEM] = ocp.args.JsonSave(checksums)
    return self._manager.save(step, args=ocp.args.Composite(**args), force=True)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(
    self, template: TrainState, step: int | None = None
  ) -> tuple[TrainState, dict[str, Any], int]:
    """Restores onto the structure (and shardings) of `template`.

    Returns:
      (state, meta, step restored).
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_items(template))
    items, meta, step = self._restore_newest_good(step, lambda: ocp.args.StandardRestore(abstract))
    return template.replace(**items), meta, step

  def restore_items(
    self, template: dict[str, Any], step: int | None = None
  ) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Restores only some items of the state, e.g. `dict(ema_params=abstract_params)`.

    `template` maps item names of the saved state (`step`, `params`,
    `ema_params`, `opt_state`, `rng`, ...) to trees of `jax.ShapeDtypeStruct`
    (with shardings); the other items are not read, so no optimizer or
    train state needs to exist. Checks and falls back like `restore`.

    Returns:
      (the restored items, meta, step restored).
    """
    restore_args = ocp.checkpoint_utils.construct_restore_args(template)
    return self._restore_newest_good(
      step,
      lambda: ocp.args.PyTreeRestore(
        item=template, restore_args=restore_args, partial_restore=True
      ),
    )

  def _restore_newest_good(
    self, step: int | None, state_args
  ) -> tuple[dict[str, Any], dict[str, Any], int]:
    steps = [step] if step is not None else self.all_steps()[::-1]
    if not steps:
      raise CheckpointNotFoundError(f"no checkpoint to restore: {self.directory} holds no step")
    reasons = {}
    for s in steps:
      reason, restored = self._try_restore(s, state_args())
      if reason is None:
        self._set_aside(sorted(reasons))
        return (*restored, s)
      reasons[s] = reason
      logging.warning("checkpoint step %d is %s; skipped (in %s)", s, reason, self.directory)
    raise NoGoodCheckpointError(os.fspath(self.directory), reasons)

  def _try_restore(self, step: int, state_args) -> tuple[str | None, Any]:
    """(None, (items, meta)) for a good step, else (the reason, None)."""
    has_checksums = (self.directory / str(step) / CHECKSUMS_ITEM).exists()
    args = dict(state=state_args, meta=ocp.args.JsonRestore())
    if self.verify and has_checksums:
      args[CHECKSUMS_ITEM] = ocp.args.JsonRestore()
    reason = None
    try:
      with _quiet_libraries():
        try:
          restored = self._manager.restore(step, args=ocp.args.Composite(**args))
        except Exception:
          # The reads orbax abandoned are asyncio tasks whose exceptions nobody
          # retrieves; asyncio logs each one when the task is collected, which
          # may be much later. Collect them now, while their loggers are muted.
          gc.collect()
          raise
    except Exception as e:  # orbax raises many types for unreadable data
      reason = _unreadable(e)
    if not _all_processes_agree(reason is None):
      return reason or "unreadable on another process", None
    items, meta = dict(restored["state"]), dict(restored["meta"])
    if not self.verify:
      return None, (items, meta)
    if not has_checksums:
      logging.info("checkpoint step %d has no checksums (saved before jaxgen wrote them)", step)
      return None, (items, meta)
    try:
      verify_checksums(dict(restored[CHECKSUMS_ITEM]), items, meta)
    except (ChecksumMismatchError, TypeError) as e:
      return f"corrupt ({e})", None
    return None, (items, meta)

  def _set_aside(self, steps: list[int]) -> None:
    """Moves bad `steps` to `corrupt/<step>` (writable checkpointers; process 0 moves)."""
    if self.read_only or not steps:
      return
    if jax.process_index() == 0:
      corrupt = self.directory / CORRUPT_SUBDIR
      corrupt.mkdir(parents=True, exist_ok=True)
      for step in steps:
        target, n = corrupt / str(step), 1
        while target.exists():
          target, n = corrupt / f"{step}.{n}", n + 1
        (self.directory / str(step)).rename(target)
        logging.info("moved the bad checkpoint step %d to %s", step, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("jaxgen_checkpoint_set_aside")
    self._manager.reload()

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
