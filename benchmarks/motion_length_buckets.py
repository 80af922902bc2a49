"""MDM train steps on padded batches vs length-bucketed ones (text to motion, CPU).

HumanML3D-style motions are padded to 196 frames, but most are far shorter
(the synthetic set: 71 frames on average). `data.length_buckets` draws each
batch from one bucket of similar lengths and crops its frames to the
bucket's bound; with `mdm.mask_padding` that is exact
(tests/test_text_to_motion.py). This benchmark trains the same
model from the same initial state through the trainer's own pieces
(`create_state`, `compile_train_steps`, `ArrayIterator`) both ways and
reports steps/s, examples/s, the tokens the denoiser sees per example and
the compile time of all batch shapes.

Command (the committed config; overrides as for `jaxgen train`):
  python benchmarks/motion_length_buckets.py
  python benchmarks/motion_length_buckets.py --override mdm.num_layers=8
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
from jaxgen.configuration import apply_overrides, load_config_file  # noqa: E402
from jaxgen.data.pipeline import ArrayIterator  # noqa: E402
from jaxgen.tasks.registry import get_task  # noqa: E402
from jaxgen.training import sharding, trainer  # noqa: E402

CONFIG = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "t2m_mdm_synthetic.py"
)
PADDED, BUCKETED = "padded to the maximum", "length buckets"
COLUMNS = (
  "batches",
  "batch shapes",
  "compile s",
  "tokens per example",
  "steps/s (median)",
  "examples/s",
  "speed-up",
)


def _tokens_per_example(batch: dict[str, np.ndarray], task) -> float:
  """Sequence length the denoiser runs on: condition + text tokens + motion tokens."""
  text = batch["text_tokens"].shape[1] if task.mdm_config.text_token_dim else 0
  return 1 + text + batch["motion"].shape[1] / task.mdm_config.frames_per_token


def _runner(task, config, iterator: ArrayIterator, mesh, steps: int):
  """(run `steps` train steps, compile seconds, shape count, mean tokens per example)."""
  batch_sharding = sharding.batch_sharding(mesh)
  example = sharding.global_batch(next(iterator), batch_sharding)
  iterator.set_state(dict(epoch=0, position=0))
  state, state_sharding, _ = trainer.create_state(task, config, example, mesh)
  start = time.monotonic()
  compiled = trainer.compile_train_steps(
    task, config, state, state_sharding, example, mesh, iterator
  )
  compile_s = time.monotonic() - start
  holder = {"state": state, "tokens": []}

  def run():
    for _ in range(steps):
      host = next(iterator)
      holder["tokens"].append(_tokens_per_example(host, task))
      batch = sharding.global_batch(host, batch_sharding)
      step_fn, _ = compiled[trainer.batch_shape_key(batch)]
      holder["state"], metrics = step_fn(holder["state"], batch)
    jax.block_until_ready(metrics["loss"])

  return run, compile_s, len(compiled), holder["tokens"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=CONFIG)
  parser.add_argument(
    "--override",
    action="append",
    default=[],
    help="key=value, as `jaxgen train`'s overrides (repeatable)",
  )
  parser.add_argument("--steps", type=int, default=25, help="train steps per timed call")
  parser.add_argument("--rounds", type=int, default=8, help="timed calls of each mode")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  args = parse_args(argv)
  _common.check_positive("--steps", args.steps)
  _common.check_positive("--rounds", args.rounds)
  config = apply_overrides(load_config_file(args.config), args.override)
  if not config.data.get("length_buckets"):
    raise ValueError(f"--config: expected data.length_buckets in {args.config}, found none")
  task = get_task(config)
  arrays = task.train_arrays()
  mesh = sharding.make_mesh(config.get("mesh_shape"))
  batch_size = config.train.batch_size
  modes = {
    PADDED: ArrayIterator(arrays, batch_size, seed=config.seed),
    BUCKETED: ArrayIterator(
      arrays, batch_size, seed=config.seed, buckets=task.train_buckets(arrays)
    ),
  }
  runners, info = {}, {}
  for name, iterator in modes.items():
    run, compile_s, shapes, tokens = _runner(task, config, iterator, mesh, args.steps)
    run()  # warm-up: first calls of every compiled step
    tokens.clear()
    runners[name], info[name] = run, (compile_s, shapes, tokens)
  times = _common.time_interleaved(runners, args.rounds)
  rows = []
  padded_rate = None
  for name in modes:
    compile_s, shapes, tokens = info[name]
    rate = args.steps / _common.summarize(times[name]["wall"])["median"]
    padded_rate = padded_rate or rate
    rows.append(
      {
        "batches": name,
        "batch shapes": shapes,
        "compile s": compile_s,
        "tokens per example": float(np.mean(tokens)),
        "steps/s (median)": rate,
        "examples/s": rate * batch_size,
        "speed-up": rate / padded_rate,
      }
    )
  print(
    f"MDM train step, {os.path.basename(args.config)} {' '.join(args.override)}, batch "
    f"{batch_size}, {args.rounds} rounds of {args.steps} steps; {_common.machine_line()}"
  )
  print(_common.markdown_table(rows, COLUMNS))
  return rows


if __name__ == "__main__":
  logging.basicConfig(level=logging.WARNING)
  main()
