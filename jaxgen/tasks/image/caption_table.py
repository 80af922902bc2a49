"""The text-to-image comparison table (issue 20): every family judged on the same held-out captions.

`benchmarks/text_to_image_table.py` drives it over trained runs; this module
holds the parts that are functions of a generator and of arrays, so the
table's arithmetic is tested without trained runs.

Every method gets the same captions: the shapes data's held-out split
(combinations of colour, position, size and shape no run trained on,
`make_captioned_split(data, "test", N, data.seed + 1)` as the image tasks'
`eval_split` draws them). A method is a `generate(captions, rng) -> uint8
images` function; the driver makes one per (run, sampling options). Rows:

- **ground truth**: the held-out images themselves (the judge's ceiling);
- **a method**: its samples for the captions;
- **shuffled captions**: the first method's samples for caption
  `(i + 1) mod N`, judged against caption i: what ignoring the caption scores.

Columns:

- `colour`, `position`, `size`, `shape`, `all four`: the analytic judge's
  accuracies (`jaxgen.data.judge.judge_images`);
- `distinct / k`: diversity: for each of the first D captions, k samples
  (the caption repeated k times in one call, so each draws its own noise);
  the mean number of them that differ from every earlier one by more than
  `DISTINCT_THRESHOLD` mean absolute pixel difference (1 = mode collapse, k = all differ);
- `pairwise L1`: the mean absolute pixel difference (in [0, 1]) between those
  k samples, averaged over pairs and captions;
- `s per image`: wall time of generating the N held-out images after a
  warm-up call on one chunk (compilation), divided by N.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from jaxgen.data import judge
from jaxgen.metrics import baselines

ACCURACY_COLUMNS = ("colour", "position", "size", "shape", "all")
# Two samples "differ" when their mean absolute pixel difference exceeds 2% of the range:
# above uint8 rounding and sampler noise on a flat background, below any change of
# colour, position, size or shape of the one object (each moves ≥ 5% of the pixels).
DISTINCT_THRESHOLD = 0.02

# (captions, rng) -> uint8 images (N, H, W, 3): one method of the table.
Generator = Callable[[Sequence[str], jax.Array], np.ndarray]


class CaptionTableError(ValueError):
  """Captions, images or counts the comparison table cannot score."""


@dataclasses.dataclass(frozen=True)
class TableRow:
  """One method's scores; `None` where a column does not apply (no timing for ground truth)."""

  method: str
  accuracy: dict[str, float]
  distinct: float | None = None
  pairwise_l1: float | None = None
  seconds_per_image: float | None = None

  def as_dict(self) -> dict[str, float | str | None]:
    return dict(
      method=self.method,
      **{c: self.accuracy[c] for c in ACCURACY_COLUMNS},
      distinct=self.distinct,
      pairwise_l1=self.pairwise_l1,
      seconds_per_image=self.seconds_per_image,
    )


def judged_accuracy(images: np.ndarray, captions: Sequence[str]) -> dict[str, float]:
  """The judge's accuracy per attribute and "all" (every attribute right) of uint8 images."""
  if len(images) != len(captions):
    raise CaptionTableError(
      f"images: expected one per caption ({len(captions)}), found {len(images)}"
    )
  accuracy = judge.judge_images(np.asarray(images), list(captions))["accuracy"]
  return {c: accuracy[c] for c in ACCURACY_COLUMNS}


def shuffled_pairing(num_captions: int) -> np.ndarray:
  """(n,) index of the caption whose samples caption i is judged with: (i + 1) mod n."""
  return baselines.mismatched_pairing(
    num_captions, argument="num_captions", unit="captions", error=CaptionTableError
  )


def diversity(samples: np.ndarray) -> tuple[float, float]:
  """(mean distinct samples, mean pairwise L1 in [0, 1]) of uint8 samples (D, k, H, W, 3).

  A sample counts as distinct when its mean absolute difference to every
  earlier sample of its caption exceeds `DISTINCT_THRESHOLD`.
  """
  samples = np.asarray(samples)
  if samples.ndim != 5 or samples.shape[1] < 2:
    raise CaptionTableError(
      f"samples: expected (captions, k >= 2, H, W, 3) uint8, found shape {samples.shape}"
    )
  unit = samples.astype(np.float64) / 255.0
  k = samples.shape[1]
  pairs = list(itertools.combinations(range(k), 2))
  l1 = np.stack([np.abs(unit[:, i] - unit[:, j]).mean(axis=(1, 2, 3)) for i, j in pairs], 1)
  differs = {pair: l1[:, n] > DISTINCT_THRESHOLD for n, pair in enumerate(pairs)}
  distinct = np.ones(len(samples))  # the first sample of each caption
  for j in range(1, k):
    distinct += np.logical_and.reduce([differs[(i, j)] for i in range(j)])
  return float(distinct.mean()), float(l1.mean())


def timed_samples(
  generate: Generator, captions: Sequence[str], rng: jax.Array, warmup: int | None = None
) -> tuple[np.ndarray, float]:
  """(images, seconds per image) of `generate` after one warm-up call.

  The warm-up call gets the first `warmup` captions (None: all of them); a
  generator that runs fixed-size chunks compiles its one program on a chunk.
  """
  generate(list(captions[:warmup]), rng)  # compiles the programs the timed call will use
  start = time.perf_counter()
  images = np.asarray(generate(captions, rng))
  return images, (time.perf_counter() - start) / len(captions)


def score_method(
  name: str,
  generate: Generator,
  captions: Sequence[str],
  rng: jax.Array,
  *,
  diversity_captions: int = 16,
  samples_per_caption: int = 4,
  warmup: int | None = None,
) -> tuple[TableRow, np.ndarray]:
  """(its table row, its images for `captions`) of one method (`warmup`: see `timed_samples`)."""
  images, seconds = timed_samples(generate, captions, rng, warmup)
  check_images(name, images, len(captions))
  few = list(captions[:diversity_captions])
  repeated = [c for c in few for _ in range(samples_per_caption)]
  samples = np.asarray(generate(repeated, jax.random.fold_in(rng, 1)))
  check_images(name, samples, len(repeated))
  distinct, l1 = diversity(samples.reshape(len(few), samples_per_caption, *samples.shape[1:]))
  row = TableRow(name, judged_accuracy(images, captions), distinct, l1, seconds)
  return row, images


def check_images(name: str, images: np.ndarray, count: int) -> None:
  """Named error unless a method returned `count` uint8 images (N, H, W, 3)."""
  if images.dtype != np.uint8 or images.ndim != 4 or len(images) != count:
    raise CaptionTableError(
      f"{name}: expected {count} uint8 images (N, H, W, 3), found {images.dtype} {images.shape}"
    )


def reference_rows(
  images: np.ndarray, captions: Sequence[str], first_method: tuple[str, np.ndarray] | None
) -> list[TableRow]:
  """The ground-truth row, and the shuffled-caption row of `first_method` (name, its images)."""
  rows = [TableRow("ground truth", judged_accuracy(images, captions))]
  if first_method is not None:
    name, samples = first_method
    pairing = shuffled_pairing(len(captions))
    rows.append(TableRow(f"{name}, shuffled captions", judged_accuracy(samples[pairing], captions)))
  return rows
