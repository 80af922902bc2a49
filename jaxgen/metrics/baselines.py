"""The pairing behind every mismatched-condition baseline (shuffled captions, audio, music).

A baseline that proves a conditioning matters judges each example's output
against another example's condition: the pairing must never keep an
example's own condition, and a fixed shift keeps the tables reproducible.
"""

from __future__ import annotations

import numpy as np


def mismatched_pairing(
  count: int, *, argument: str, unit: str, error: type[ValueError] = ValueError
) -> np.ndarray:
  """(n,) index of the example whose condition example i is paired with: (i + 1) mod n.

  A derangement (no example keeps its own). `argument` and `unit` name the
  count in the `error` raised when there are fewer than 2 examples.
  """
  if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 2:
    raise error(
      f"{argument}: a mismatched-condition baseline needs at least 2 {unit} (each paired "
      f"with another's condition), found {count!r}"
    )
  return (np.arange(count) + 1) % count
