"""Resumable, per-process batches of decoded examples on grain.

A task that trains on files (images and captions, ArrayRecord, tar shards)
hands the trainer an `ExampleDataset`: random-access `records` and a
`transform(record, rng)` that turns one into an example (a dict of arrays).
`GrainIterator` turns it into fixed-size batches:

* **Order.** Epoch e visits the records in a permutation drawn from
  (seed, e) (grain's O(1)-memory `index_shuffle`); its remainder that does not
  fill a global batch is dropped, so global batches never straddle epochs.
* **Processes.** Global batch s of epoch e is positions [s*B, (s+1)*B) of that
  permutation; process p of P reads positions s*B + p*B/P ... + B/P - 1. P
  processes together hold exactly the rows, in the order, that one process
  would (the `pipeline.ArrayIterator` guarantee), and each decodes only its own.
* **Randomness.** `transform` gets a generator seeded by (seed, epoch, position
  in the epoch), so random crops and flips do not depend on the process count
  or the worker count, and change from epoch to epoch.
* **Workers.** The transforms run in `worker_count` processes (grain's
  `mp_prefetch`); examples come back in order.
* **Bad records.** A transform raises `BadRecordError` for a record it cannot
  use (corrupt image, missing caption, image too small). The record is
  skipped, counted by kind and logged as a warning (the first ten, then at
  every power of two); the next good record takes its place, so batches keep
  their shape. The filter runs in this process after the workers, and the
  counts are part of the iterator state.
* **State.** `get_state()` is grain's iterator state with the counts; saved in
  each checkpoint and restored by `set_state`, a resumed run reads exactly the
  batches an uninterrupted one would.

With bad records, each process fills its own holes from its own positions:
the batches stay deterministic and resumable, but P processes then no longer
hold exactly the rows of one process (they do for clean data).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import grain
import numpy as np

Example = dict[str, Any]
Transform = Callable[[Any, np.random.Generator], Example]

# Every this many epochs the local index range is re-used; an index past it is never read.
_EPOCHS = 1 << 20
_WARN_FIRST = 10
_LOG = logging.getLogger(__name__)


class BadRecordError(ValueError):
  """A record a transform cannot turn into an example; the pipeline skips and counts it.

  `kind` groups the counts (e.g. "corrupt image", "missing caption", "image too small").
  """

  def __init__(self, kind: str, message: str):
    super().__init__(f"{kind}: {message}")
    self.kind = kind


class GrainStateError(ValueError):
  """A saved data-iterator state does not fit this pipeline (e.g. another worker count)."""


def _identity(record: Any, rng: np.random.Generator) -> Example:
  del rng
  return record


@dataclasses.dataclass(frozen=True)
class ExampleDataset:
  """What `Task.train_dataset()` returns: records and how one becomes a training example.

  Attributes:
    records: random-access records (`len` and `records[i]`): a list, a grain
      data source (`grain.sources.ArrayRecordDataSource`, a TFDS
      `data_source`) or a `grain.MapDataset`. Sent to each worker process by
      cloudpickle, so keep them small (paths and offsets, not pixels).
    transform: `transform(record, rng) -> {key: array}`, run in the workers.
      Pure given `rng` (a `np.random.Generator`); every example must have the
      same keys and shapes. Raises `BadRecordError` for a record to skip.
    worker_count: worker processes for the transforms; 0 runs them here.
    worker_buffer_size: examples each worker prepares ahead.
    read_threads: threads that read and transform records ahead, inside each
      worker (or here with no workers); image decoders release the GIL.

  Example (an image-caption task; see `image_text_pipeline.image_text_dataset`):

    def train_dataset(self):
      records = image_text.coco_records(self.config.data.manual_dir, "train")
      return image_text_dataset(records, resolution=64, random_flip=True,
                                tokenize=self.tokenize_caption, worker_count=2)
  """

  records: Any
  transform: Transform = _identity
  worker_count: int = 0
  worker_buffer_size: int = 8
  read_threads: int = 2

  def __post_init__(self):
    for name in ("worker_count", "read_threads"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 0:
        raise ValueError(f"ExampleDataset.{name}: expected an integer >= 0, found {value!r}")
    if not isinstance(self.worker_buffer_size, int) or self.worker_buffer_size < 1:
      raise ValueError(
        f"ExampleDataset.worker_buffer_size: expected an integer >= 1, "
        f"found {self.worker_buffer_size!r}"
      )
    if not callable(self.transform):
      raise ValueError(
        f"ExampleDataset.transform: expected a callable (record, rng) -> dict, "
        f"found {type(self.transform).__name__}"
      )
    try:
      len(self.records)
    except TypeError as e:
      raise ValueError(
        f"ExampleDataset.records: expected a random-access sequence with a length, "
        f"found {type(self.records).__name__}"
      ) from e


def epoch_seed(seed: int, epoch: int) -> int:
  """The 32-bit shuffle seed of one epoch."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


@dataclasses.dataclass(frozen=True)
class ShardPlan:
  """Which record process `process_index` reads at each of its local positions."""

  num_records: int
  batch_size: int  # global, all processes together
  seed: int = 0
  shuffle: bool = True
  process_index: int = 0
  process_count: int = 1

  def __post_init__(self):
    if self.process_count < 1 or not 0 <= self.process_index < self.process_count:
      raise ValueError(
        f"process_index: expected 0 <= index < process_count={self.process_count}, "
        f"found {self.process_index}"
      )
    if self.batch_size <= 0 or self.batch_size % self.process_count:
      raise ValueError(
        f"batch_size must be a positive multiple of the process count "
        f"({self.process_count}), got {self.batch_size}"
      )
    if self.batch_size > self.num_records:
      raise ValueError(
        f"batch_size ({self.batch_size}) exceeds the number of records ({self.num_records})"
      )

  @property
  def rows(self) -> int:
    """Rows of each global batch that this process holds."""
    return self.batch_size // self.process_count

  @property
  def steps_per_epoch(self) -> int:
    return self.num_records // self.batch_size

  @property
  def local_epoch_length(self) -> int:
    return self.steps_per_epoch * self.rows

  def locate(self, index: int) -> tuple[int, int, int]:
    """Local position -> (epoch, position in the epoch's global order, record index)."""
    epoch, local = divmod(index, self.local_epoch_length)
    step, row = divmod(local, self.rows)
    position = step * self.batch_size + self.process_index * self.rows + row
    record = position
    if self.shuffle:
      record = grain.experimental.index_shuffle(
        position, max_index=self.num_records - 1, seed=epoch_seed(self.seed, epoch), rounds=4
      )
    return epoch, position, int(record)


class _PlannedRecords(grain.MapDataset):
  """Local position -> (record, epoch, position): the order of `ShardPlan`, many epochs long."""

  def __init__(self, records: Any, plan: ShardPlan):
    super().__init__()
    self._records, self._plan = records, plan

  def __len__(self) -> int:
    return self._plan.local_epoch_length * _EPOCHS

  def __str__(self) -> str:
    return "PlannedRecords"

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, position, record = self._plan.locate(index)
    return self._records[record], epoch, position


@dataclasses.dataclass(frozen=True)
class Skipped:
  """Stands in for a bad record until the filter after the workers counts and drops it."""

  kind: str
  message: str
  record: str


@dataclasses.dataclass(frozen=True)
class _ApplyTransform:
  """Runs in the workers: (record, epoch, position) -> example, or `Skipped`."""

  transform: Transform
  seed: int

  def __call__(self, planned: tuple[Any, int, int]) -> Example | Skipped:
    record, epoch, position = planned
    rng = np.random.default_rng([self.seed, epoch, position])
    try:
      return self.transform(record, rng)
    except BadRecordError as e:
      return Skipped(e.kind, str(e), repr(record)[:300])


class GrainIterator:
  """Fixed-size per-process batches of an `ExampleDataset`, resumable (see the module doc).

  The interface of `pipeline.ArrayIterator` that the trainer uses: `next`,
  `batch_size` (global), `batch_shapes()`, `get_state()`/`set_state()`,
  `skipped_records`, `close()`.
  """

  def __init__(
    self,
    dataset: ExampleDataset,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    process_index: int = 0,
    process_count: int = 1,
  ):
    self.dataset = dataset
    self.plan = ShardPlan(
      len(dataset.records), batch_size, seed, shuffle, process_index, process_count
    )
    self.batch_size = batch_size
    self.skipped: collections.Counter[str] = collections.Counter()
    self._shapes: dict[str, tuple[int, ...]] | None = None
    if dataset.worker_count:
      _mark_flags_parsed()  # grain's workers read absl flags
    examples = (
      _PlannedRecords(dataset.records, self.plan)
      .map(_ApplyTransform(dataset.transform, seed))
      .to_iter_dataset(
        grain.ReadOptions(
          num_threads=dataset.read_threads, prefetch_buffer_size=max(2 * dataset.read_threads, 1)
        )
      )
    )
    if dataset.worker_count:
      examples = examples.mp_prefetch(
        grain.MultiprocessingOptions(
          num_workers=dataset.worker_count, per_worker_buffer_size=dataset.worker_buffer_size
        ),
        worker_init_fn=exit_with_parent,
      )
    batches = examples.filter(self._keep).batch(self.plan.rows, drop_remainder=True)
    self._iterator = iter(batches)

  @property
  def steps_per_epoch(self) -> int:
    return self.plan.steps_per_epoch

  @property
  def skipped_records(self) -> int:
    """Bad records skipped so far by this process (all kinds)."""
    return sum(self.skipped.values())

  def _keep(self, example: Example | Skipped) -> bool:
    if not isinstance(example, Skipped):
      return True
    self.skipped[example.kind] += 1
    total = self.skipped_records
    if total <= _WARN_FIRST or not total & (total - 1):
      _LOG.warning(
        "skipped a bad record (%s) %s; %d skipped so far by this process: %s",
        example.message,
        example.record,
        total,
        dict(self.skipped),
      )
    return False

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._iterator)
    shapes = {key: np.shape(value)[1:] for key, value in batch.items()}
    if self._shapes is None:
      self._shapes = shapes
    elif shapes != self._shapes:
      raise ValueError(
        f"train_dataset: every example must have the same keys and shapes; the first batch "
        f"had {self._shapes}, a later one {shapes} (crop or pad in the transform)"
      )
    return batch

  def batch_shapes(self) -> list[dict[str, tuple[int, ...]]]:
    """Per-row shapes (batch axis left out) of the one batch shape this iterator yields."""
    if self._shapes is None:  # read one batch, then step back
      state = self.get_state()
      next(self)
      self.set_state(state)
    return [dict(self._shapes)]

  def get_state(self) -> dict[str, Any]:
    return dict(
      grain=self._iterator.get_state(),
      worker_count=self.dataset.worker_count,
      skipped=dict(self.skipped),
    )

  def set_state(self, state: Mapping[str, Any]) -> None:
    if not isinstance(state, Mapping) or "grain" not in state:
      raise GrainStateError(
        f"data_iterator: expected the state of a grain pipeline (keys grain, worker_count, "
        f"skipped), found {state!r:.200}: was the run trained on in-memory arrays?"
      )
    if state["worker_count"] != self.dataset.worker_count:
      raise GrainStateError(
        f"data_iterator: the state was saved with worker_count={state['worker_count']}, this "
        f"pipeline has worker_count={self.dataset.worker_count}; resume with the same count"
      )
    self._iterator.set_state(state["grain"])
    self.skipped = collections.Counter(state["skipped"])

  def close(self) -> None:
    """Stops the worker processes."""
    self._iterator.close()


def exit_with_parent(worker_index: int, worker_count: int) -> None:
  """In a worker: exit once the process that started it is gone (e.g. killed with SIGKILL).

  Without this, the workers of a killed run stay alive, orphaned, holding memory.
  """
  del worker_index, worker_count
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(0.5)
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, name="exit_with_parent", daemon=True).start()


def _mark_flags_parsed() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
