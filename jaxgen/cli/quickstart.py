"""`jaxgen quickstart`: train a small text-to-image model on the built-in shapes and judge it.

Trains configs/text_to_image_shapes.py for `--train-minutes`, then judges
samples of held-out captions at guidance 1 and at the config's guidance, and
writes grid.png and quickstart.json into `--workdir`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time

from jaxgen.cli.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", default="quickstart_out")
  parser.add_argument(
    "--train-minutes",
    type=float,
    default=6.0,
    help="time budget for training (CPU); training stops early when reached",
  )
  parser.add_argument("overrides", nargs="*", help="config overrides, key=value")


def run(args: argparse.Namespace) -> int:
  if not 0 < args.train_minutes < math.inf:  # also refuses nan
    raise UsageError(
      f"--train-minutes: expected a finite positive number of minutes, got {args.train_minutes}"
    )
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen.configs import text_to_image_shapes  # pylint: disable=g-import-not-at-top
  from jaxgen.configuration import apply_overrides  # pylint: disable=g-import-not-at-top
  from jaxgen.render.grid import make_grid, save_png  # pylint: disable=g-import-not-at-top
  from jaxgen.tasks.registry import get_task  # pylint: disable=g-import-not-at-top
  from jaxgen.training.trainer import train  # pylint: disable=g-import-not-at-top

  start = time.monotonic()
  config = text_to_image_shapes.get_config()
  config.train.max_minutes = args.train_minutes
  config.train.sample_every = 0  # one grid at the end instead of previews
  config = apply_overrides(config, args.overrides)
  task = get_task(config)
  state = train(task, config, args.workdir)
  train_seconds = time.monotonic() - start

  rng = jax.random.PRNGKey(config.seed + 1)
  report = dict(
    steps=int(state.step),
    train_seconds=round(train_seconds, 1),
    sampler=config.sample.sampler,
    sample_steps=config.sample.num_steps,
    held_out_examples=config.eval.num_examples,
    accuracy={},
  )
  for guidance in (1.0, config.sample.guidance):
    logging.info("judging %d held-out captions at guidance %s", config.eval.num_examples, guidance)
    accuracy, images, captions = task.evaluate(state.ema_params, rng, guidance_scale=guidance)
    report["accuracy"][f"guidance_{guidance:g}"] = accuracy
  grid_path = save_png(
    os.path.join(args.workdir, "grid.png"), make_grid(images[:32], captions[:32], scale=5, ncols=8)
  )
  report["total_seconds"] = round(time.monotonic() - start, 1)
  json_path = os.path.join(args.workdir, "quickstart.json")
  with open(json_path, "w") as f:
    json.dump(report, f, indent=2)
  print(json.dumps(report, indent=2))
  print(f"wrote {grid_path} and {json_path}")
  return 0
