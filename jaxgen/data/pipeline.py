"""Deterministic, resumable batching of in-memory arrays.

The iterator's whole state is two integers (epoch, position), saved in every
checkpoint, so a resumed run sees exactly the batches an uninterrupted run
would have seen.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class LengthBuckets:
  """Crops padded sequences to the smallest of a few fixed lengths that holds them.

  `lengths` (N,) gives each example's real length along axis 1 of the arrays
  named in `keys`; `bounds` are the allowed lengths, ascending. An example
  falls in the first bound >= its length, batches are drawn within a bucket
  and the `keys` arrays are cut to that bound: short examples stop paying for
  padding, and the step compiles once per bound instead of once per length.
  """

  lengths: np.ndarray
  bounds: tuple[int, ...]
  keys: tuple[str, ...]

  def check(self, arrays: Mapping[str, np.ndarray], name: str = "buckets") -> None:
    """Named errors for bounds that do not fit the arrays they crop."""
    bounds = np.asarray(self.bounds)
    if bounds.ndim != 1 or not len(bounds) or (bounds <= 0).any() or (np.diff(bounds) <= 0).any():
      raise ValueError(
        f"{name}.bounds: expected positive lengths in ascending order, found {self.bounds}"
      )
    for key in self.keys:
      if key not in arrays:
        raise ValueError(
          f"{name}.keys: expected keys of the arrays {sorted(arrays)}, found {key!r}"
        )
      shape = arrays[key].shape
      if len(shape) < 2:
        raise ValueError(
          f"{name}.keys: expected arrays with a length axis (N, T, ...), "
          f"found {key!r} of shape {shape}"
        )
      if shape[1] < bounds[-1]:
        raise ValueError(
          f"{name}.bounds: expected at most the {shape[1]} positions of "
          f"{key!r}, found {self.bounds[-1]}"
        )
    num = len(next(iter(arrays.values())))
    if np.shape(self.lengths) != (num,):
      raise ValueError(
        f"{name}.lengths: expected one length per example ({num},), found {np.shape(self.lengths)}"
      )
    if np.max(self.lengths) > bounds[-1]:
      raise ValueError(
        f"{name}.bounds: expected the largest bound to hold every example, "
        f"found a length {int(np.max(self.lengths))} > {self.bounds[-1]}"
      )

  def assign(self) -> np.ndarray:
    """(N,) index of each example's bound."""
    return np.searchsorted(np.asarray(self.bounds), np.asarray(self.lengths))


@dataclasses.dataclass
class ArrayIterator(Iterator[dict[str, np.ndarray]]):
  """Yields shuffled fixed-size batches from a dict of equally long arrays.

  Each epoch is a fresh permutation drawn from `(seed, epoch)`; the remainder
  that does not fill a batch is dropped so every batch has the same shape
  (one compiled step).

  With `buckets` (LengthBuckets, possibly several: a bucket is then a tuple of
  bounds), each epoch's permutation is split by bucket, every bucket is cut
  into full batches (its remainder dropped) and the batches of all buckets
  are shuffled together; each batch's arrays are cropped to its bounds.

  For multi-process training, `process_index`/`process_count` give each
  process a disjoint slice of every global batch.
  """

  arrays: Mapping[str, np.ndarray]
  batch_size: int
  seed: int = 0
  epoch: int = 0
  position: int = 0
  process_index: int = 0
  process_count: int = 1
  buckets: Sequence[LengthBuckets] = ()

  def __post_init__(self):
    if not self.arrays:
      raise ValueError("arrays must hold at least one array, got an empty mapping")
    sizes = {k: len(v) for k, v in self.arrays.items()}
    if len(set(sizes.values())) != 1:
      raise ValueError(f"arrays must all have the same length, got {sizes}")
    self.num_examples = next(iter(sizes.values()))
    if self.batch_size <= 0 or self.batch_size % self.process_count:
      raise ValueError(
        f"batch_size must be a positive multiple of the process count "
        f"({self.process_count}), got {self.batch_size}"
      )
    if self.batch_size > self.num_examples:
      raise ValueError(
        f"batch_size ({self.batch_size}) exceeds the number of examples ({self.num_examples})"
      )
    for i, bucketing in enumerate(self.buckets):
      bucketing.check(self.arrays, name=f"buckets[{i}]")
    self._bound_index = [b.assign() for b in self.buckets]
    self._bucket = np.zeros(self.num_examples, np.int64)
    if self.buckets:
      self._bucket = np.ravel_multi_index(self._bound_index, [len(b.bounds) for b in self.buckets])
    self._bucket_sizes = np.bincount(self._bucket)
    if not self.steps_per_epoch:
      raise ValueError(
        f"batch_size ({self.batch_size}) exceeds the examples of every bucket "
        f"(sizes {self._bucket_sizes.tolist()})"
      )
    self._plan_epoch, self._plan = None, None

  @property
  def steps_per_epoch(self) -> int:
    return int((self._bucket_sizes // self.batch_size).sum())

  def _batches(self, epoch: int) -> np.ndarray:
    """(steps_per_epoch, batch_size) example indices of one epoch, in order."""
    if self._plan_epoch != epoch:
      rng = np.random.default_rng([self.seed, epoch])
      order = rng.permutation(self.num_examples)
      if not self.buckets:
        plan = order[: self.steps_per_epoch * self.batch_size].reshape(-1, self.batch_size)
      else:
        plan = []
        for bucket in np.unique(self._bucket):
          members = order[self._bucket[order] == bucket]  # keeps the permuted order
          full = len(members) // self.batch_size * self.batch_size
          plan.extend(members[:full].reshape(-1, self.batch_size))
        plan = np.stack(plan)[rng.permutation(len(plan))]
      self._plan_epoch, self._plan = epoch, plan
    return self._plan

  def _crop(self, batch: dict[str, np.ndarray], example: int) -> dict[str, np.ndarray]:
    """Cuts the bucketed arrays of a batch to the bounds of `example`'s bucket."""
    for bucketing, bound_index in zip(self.buckets, self._bound_index):
      bound = bucketing.bounds[int(bound_index[example])]
      for key in bucketing.keys:
        batch[key] = batch[key][:, :bound]
    return batch

  def __next__(self) -> dict[str, np.ndarray]:
    if self.position // self.batch_size >= self.steps_per_epoch:
      self.epoch, self.position = self.epoch + 1, 0
    # Sort the whole global batch before slicing, so N processes together
    # hold exactly the rows, in the order, that one process would.
    global_index = np.sort(self._batches(self.epoch)[self.position // self.batch_size])
    per_process = self.batch_size // self.process_count
    index = global_index[self.process_index * per_process : (self.process_index + 1) * per_process]
    self.position += self.batch_size
    return self._crop({k: v[index] for k, v in self.arrays.items()}, global_index[0])

  def batch_shapes(self) -> list[dict[str, tuple[int, ...]]]:
    """Per-row shapes (batch axis left out) of each distinct batch this iterator yields."""
    shapes = []
    for bucket in np.flatnonzero(self._bucket_sizes >= self.batch_size):
      example = int(np.argmax(self._bucket == bucket))  # any member: they share bounds
      cropped = self._crop({k: v[:0] for k, v in self.arrays.items()}, example)
      shapes.append({k: v.shape[1:] for k, v in cropped.items()})
    return shapes

  @property
  def skipped_records(self) -> int:
    """Arrays hold no bad records (`grain_pipeline.GrainIterator` counts those of files)."""
    return 0

  def close(self) -> None:
    """Nothing to release (the grain iterator stops its workers here)."""

  def get_state(self) -> dict[str, int]:
    return dict(epoch=self.epoch, position=self.position)

  def set_state(self, state: Mapping[str, int]) -> None:
    self.epoch, self.position = int(state["epoch"]), int(state["position"])
