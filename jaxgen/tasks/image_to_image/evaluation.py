"""Scores of an image-to-image model on held-out scenes: one row of the comparison table.

Columns (every method, the same test scenes):
- `ssim`, `psnr`: against the target rendering of the same scene (paired truth
  exists for every test scene, unpaired methods included);
- `pixel_accuracy`, `miou`: the output segmented by colour
  (`scene_judge.segment`) against the scene's label map;
- `edge_f1`: the output's edges against the input's strokes (the sketch for
  sketch inputs, the clean edge map otherwise);
- `colour_accuracy`, `shape_accuracy`: per object, the shapes judge's reading
  of the output where the object should be;
- `seconds_per_image`: translation wall time after compilation.

`reference_rows` scores two references on the same scenes: the ground truth
(the ceiling of every column) and a shuffled pairing (each scene given
another scene's target: what an output that ignores its input scores).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import jax
import numpy as np

from jaxgen.data import scene_judge
from jaxgen.metrics.image_quality import psnr, ssim

COLUMNS = (
  "ssim",
  "psnr",
  "pixel_accuracy",
  "miou",
  "edge_f1",
  "colour_accuracy",
  "shape_accuracy",
  "seconds_per_image",
)


def edge_reference(source: str, test: Mapping[str, np.ndarray]) -> np.ndarray:
  """The strokes an output's edges are compared with: the sketch for sketch inputs, else edges."""
  return test["sketch"] if source == "sketch" else test["edges"]


def image_scores(
  outputs: np.ndarray, test: Mapping[str, np.ndarray], source: str, style: str
) -> dict[str, float]:
  """Every column but the time, for uint8 outputs of the test scenes `test`."""
  target = test["target"].astype(np.float32)
  out = outputs.astype(np.float32)
  scores = {
    "ssim": float(np.mean(ssim(out, target, data_range=255.0))),
    "psnr": float(np.mean(psnr(out, target, data_range=255.0))),
  }
  scores.update(scene_judge.label_scores(outputs, test["label"], style))
  scores["edge_f1"] = float(scene_judge.edge_f1(outputs, edge_reference(source, test), style=style))
  objects = scene_judge.object_scores(outputs, test, style)
  scores.update(
    colour_accuracy=objects["colour_accuracy"], shape_accuracy=objects["shape_accuracy"]
  )
  return {k: float(v) for k, v in scores.items()}


def score_translation(
  task, params, num_examples: int = 200, rng: jax.Array | None = None, **options
) -> dict[str, float]:
  """One table row for `task` (an `ImageToImageTask`) with `params` on the test scenes."""
  rng = jax.random.PRNGKey(0) if rng is None else rng
  test = task.split_arrays("test", num_examples)
  batch = min(task.generate_batch_size, num_examples)
  task.translate_pixels(params, test["source"][:batch], rng, batch, **options)  # compile
  start = time.perf_counter()
  outputs = task.translate_pixels(params, test["source"], rng, batch, **options)
  seconds = time.perf_counter() - start
  scores = image_scores(outputs, test, task.source, task.target_style)
  scores["seconds_per_image"] = seconds / num_examples
  return scores


def reference_rows(task, num_examples: int = 200, seed: int = 0) -> dict[str, dict[str, float]]:
  """Rows for the ground truth and for another scene's target (inputs ignored)."""
  test = task.split_arrays("test", num_examples)
  shuffled = np.random.default_rng(seed).permutation(num_examples)
  shuffled = np.where(shuffled == np.arange(num_examples), (shuffled + 1) % num_examples, shuffled)
  style = task.target_style
  return {
    "ground truth": image_scores(test["target"], test, task.source, style),
    "another scene's target": image_scores(test["target"][shuffled], test, task.source, style),
  }
