"""Scalars and images to TensorBoard (and scalars to the Python log).

Only process 0 writes; other processes get a writer that drops everything.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Mapping

import jax
import numpy as np


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without torch where torch is not loaded yet.

  tensorboardX imports torch, when it is installed, only to accept torch tensors; that costs
  a training process seconds of start-up and jaxgen hands it numpy arrays only.
  """
  if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
    sys.modules["torch"] = None  # makes `import torch` fail fast inside tensorboardX
    try:
      import tensorboardX  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    finally:
      del sys.modules["torch"]
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

  return SummaryWriter


class MetricWriter:
  """A thin TensorBoard writer (tensorboardX) that also logs scalars."""

  def __init__(self, logdir: str, *, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._writer = None
    if self.enabled:
      if "://" not in logdir:  # remote logdirs (gs://) are tensorboardX's to create
        os.makedirs(logdir, exist_ok=True)
      self._writer = _summary_writer_class()(logdir)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    for k, v in values.items():
      self._writer.add_scalar(k, float(v), step)
    logging.info(
      "step %d: %s", step, ", ".join(f"{k}={float(v):.5g}" for k, v in sorted(values.items()))
    )

  def image(self, step: int, tag: str, image: np.ndarray) -> None:
    if self.enabled:
      self._writer.add_image(tag, np.asarray(image), step, dataformats="HWC")

  def flush(self) -> None:
    if self.enabled:
      self._writer.flush()

  def close(self) -> None:
    if self.enabled:
      self._writer.close()
