"""Input pipeline throughput: JPEGs decoded + augmented by grain workers vs what the trainer eats.

The benchmark writes a folder of captioned JPEGs (smooth random pictures,
`--image-size` square, quality 90), then:

1. Pipeline: `image_text_dataset` (decode, shorter side to the task's
   resolution, random crop, random flip, caption tokens) batched by
   `GrainIterator` with 0, 1 and 2 worker processes: start-up time, images/s
   after it, and whether the batches equal those of 0 workers.
2. Trainer: the train step of the task in `--config` (default: the
   quickstart text-to-image config, 16×16 pixels) on a fixed batch (what it
   can consume: steps/s × batch), then fed by the 2-worker pipeline, timing
   how long each step's `next(iterator)` blocks (the trainer dispatches a step
   and fetches the next batch while it runs, as `trainer.train` does).

Workers, trainer and the machine's other jobs share the same cores, so
the fed run is the honest test: "waiting on data" is the share of wall
time spent blocked in `next`.

Command:
  python benchmarks/input_pipeline.py                # 512 images of 256×256, batch 32
  python benchmarks/input_pipeline.py --images 128 --steps 10 --batch 8   # quick
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import _common  # noqa: E402
from jaxgen.configuration import apply_overrides, load_config_file  # noqa: E402
from jaxgen.data.grain_pipeline import GrainIterator  # noqa: E402
from jaxgen.data.image_text import ImageTextRecord  # noqa: E402
from jaxgen.data.image_text_pipeline import image_text_dataset  # noqa: E402
from jaxgen.training import sharding  # noqa: E402
from jaxgen.training.trainer import create_state, jit_train_step  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
COLORS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")


class ShapesCaptionTokens:
  """tokenize(caption) -> {"text_tokens", "text_mask"} with the text-to-image task's tokenizer.

  Built in each worker on first use (the tokenizer itself is not sent).
  """

  def __init__(self, max_length: int):
    self.max_length = max_length
    self._tokenizer = None

  def __getstate__(self):
    return dict(max_length=self.max_length, _tokenizer=None)

  def __call__(self, caption: str) -> dict[str, np.ndarray]:
    if self._tokenizer is None:
      from jaxgen.data.tokenizer import build_caption_tokenizer  # pylint: disable=g-import-not-at-top

      self._tokenizer = build_caption_tokenizer()
    tokens, mask = self._tokenizer.encode([caption], self.max_length)
    return dict(text_tokens=tokens[0].astype(np.int32), text_mask=mask[0].astype(np.int32))


def write_jpeg_folder(folder: str, num: int, size: int, seed: int = 0) -> list[ImageTextRecord]:
  """`num` smooth random RGB JPEGs (a photo's compressibility, not noise's) with captions."""
  rng = np.random.default_rng(seed)
  records = []
  for i in range(num):
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    picture = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
    path = os.path.join(folder, f"{i:06d}.jpg")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    with open(path, "wb") as f:
      f.write(buffer.getvalue())
    caption = f"a {COLORS[i % 4]} {SHAPES[i % 3]}"
    records.append(ImageTextRecord(path, (caption,), key=str(i)))
  return records


def benchmark_dataset(records, config, workers: int):
  """The training pipeline both tables time: random crop and flip, caption tokens."""
  return image_text_dataset(
    records,
    resolution=config.data.resolution,
    random_crop=True,
    random_flip=True,
    tokenize=ShapesCaptionTokens(config.text.max_length),
    worker_count=workers,
  )


def pipeline_rows(records, config, args) -> tuple[list[dict[str, Any]], list[dict]]:
  """Images/s of the pipeline for each worker count, and the reference batches (0 workers)."""
  rows, reference = [], None
  for workers in args.workers:
    dataset = benchmark_dataset(records, config, workers)
    start = time.perf_counter()
    iterator = GrainIterator(dataset, args.batch, seed=0)
    try:
      first = [next(iterator)]
      startup = time.perf_counter() - start
      start = time.perf_counter()
      batches = first + [next(iterator) for _ in range(args.pipeline_batches)]
      seconds = time.perf_counter() - start
    finally:
      iterator.close()
    if reference is None:
      reference = batches
    same = all(
      np.array_equal(a[k], b[k])
      for a, b in zip(batches, reference)
      for k in ("image", "text_tokens")
    )
    rows.append(
      {
        "source": f"grain, {workers} worker(s)",
        "images/s": args.batch * args.pipeline_batches / seconds,
        "start-up s": startup,
        "waiting on data": "",
        "same batches as 0 workers": "yes" if same else "NO",
      }
    )
  return rows, reference


def trainer_rows(records, config, args, example_batch) -> list[dict[str, Any]]:
  """The train step's consumption on a fixed batch, then fed by the pipeline with 2 workers."""
  from jaxgen.tasks.registry import get_task  # pylint: disable=g-import-not-at-top

  task = get_task(config)
  mesh = sharding.make_mesh()
  batch_sharding = sharding.batch_sharding(mesh)
  example = sharding.global_batch(example_batch, batch_sharding)
  state, state_sharding, _ = create_state(task, config, example, mesh)
  step = jit_train_step(task, config, state_sharding, example, mesh)
  state, metrics = step(state, example)  # compiles
  jax.block_until_ready(metrics)

  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = step(state, sharding.global_batch(example_batch, batch_sharding))
  jax.block_until_ready(metrics)
  fixed = args.steps / (time.perf_counter() - start)
  rows = [
    {
      "source": f"train step, fixed batch ({config.task}, {config.data.resolution}px)",
      "images/s": fixed * args.batch,
      "start-up s": "",
      "waiting on data": "",
      "same batches as 0 workers": "",
    }
  ]
  dataset = benchmark_dataset(records, config, max(args.workers))
  iterator = GrainIterator(dataset, args.batch, seed=0)
  try:
    next(iterator)  # start-up
    waited = 0.0
    start = time.perf_counter()
    for _ in range(args.steps):
      fetch = time.perf_counter()
      batch = next(iterator)
      waited += time.perf_counter() - fetch
      state, metrics = step(state, sharding.global_batch(batch, batch_sharding))
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
  finally:
    iterator.close()
  rows.append(
    {
      "source": f"train step fed by grain, {max(args.workers)} workers",
      "images/s": args.steps * args.batch / seconds,
      "start-up s": "",
      "waiting on data": f"{100 * waited / seconds:.1f}%",
      "same batches as 0 workers": "",
    }
  )
  return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=os.path.join(CONFIGS, "text_to_image_shapes.py"))
  parser.add_argument("--override", nargs="*", default=[], help="config key=value overrides")
  parser.add_argument("--images", type=int, default=512, help="JPEGs written")
  parser.add_argument("--image-size", type=int, default=256, help="JPEG height and width")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--pipeline-batches", type=int, default=30, help="timed batches per row")
  parser.add_argument("--steps", type=int, default=20, help="timed train steps")
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
  args = parser.parse_args(argv)
  for name in ("images", "image_size", "batch", "pipeline_batches", "steps"):
    _common.check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
  if args.workers[0] != 0 or any(w < 0 for w in args.workers):
    raise ValueError(f"--workers: expected 0 first, then counts >= 0, found {args.workers}")
  return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Runs the pipeline and the trainer, prints the markdown table and returns its rows."""
  args = parse_args(argv)
  config = apply_overrides(
    load_config_file(args.config), list(args.override) + [f"train.batch_size={args.batch}"]
  )
  with tempfile.TemporaryDirectory() as folder:
    start = time.perf_counter()
    records = write_jpeg_folder(folder, args.images, args.image_size)
    written = time.perf_counter() - start
    rows, reference = pipeline_rows(records, config, args)
    rows += trainer_rows(records, config, args, reference[0])
  print(
    f"\n{args.images} JPEGs of {args.image_size}×{args.image_size} (written in {written:.1f} s) "
    f"-> {config.data.resolution}×{config.data.resolution}, batch {args.batch}; "
    f"{_common.machine_line()}\n"
  )
  print(_common.markdown_table(rows))
  return rows


if __name__ == "__main__":
  main()
