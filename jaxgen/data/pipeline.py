"""Deterministic, resumable batching of in-memory arrays.

The iterator's whole state is two integers (epoch, position), saved in every
checkpoint, so a resumed run sees exactly the batches an uninterrupted run
would have seen.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping

import numpy as np


@dataclasses.dataclass
class ArrayIterator(Iterator[dict[str, np.ndarray]]):
  """Yields shuffled fixed-size batches from a dict of equally long arrays.

  Each epoch is a fresh permutation drawn from `(seed, epoch)`; the remainder
  that does not fill a batch is dropped so every batch has the same shape
  (one compiled step).

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

  def __post_init__(self):
    if not self.arrays:
      raise ValueError("arrays must hold at least one array, got an empty mapping")
    sizes = {k: len(v) for k, v in self.arrays.items()}
    if len(set(sizes.values())) != 1:
      raise ValueError(f"arrays must all have the same length, got {sizes}")
    self.num_examples = next(iter(sizes.values()))
    if self.batch_size <= 0 or self.batch_size % self.process_count:
      raise ValueError(f"batch_size must be a positive multiple of the process count "
                       f"({self.process_count}), got {self.batch_size}")
    if self.batch_size > self.num_examples:
      raise ValueError(f"batch_size ({self.batch_size}) exceeds the number of examples "
                       f"({self.num_examples})")

  @property
  def steps_per_epoch(self) -> int:
    return self.num_examples // self.batch_size

  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

  def __next__(self) -> dict[str, np.ndarray]:
    if self.position + self.batch_size > self.num_examples:
      self.epoch, self.position = self.epoch + 1, 0
    order = self._permutation(self.epoch)
    # Sort the whole global batch before slicing, so N processes together
    # hold exactly the rows, in the order, that one process would.
    global_index = np.sort(order[self.position:self.position + self.batch_size])
    per_process = self.batch_size // self.process_count
    index = global_index[self.process_index * per_process:(self.process_index + 1) * per_process]
    self.position += self.batch_size
    return {k: v[index] for k, v in self.arrays.items()}

  def get_state(self) -> dict[str, int]:
    return dict(epoch=self.epoch, position=self.position)

  def set_state(self, state: Mapping[str, int]) -> None:
    self.epoch, self.position = int(state["epoch"]), int(state["position"])
