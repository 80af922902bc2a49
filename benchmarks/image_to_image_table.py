"""The image-to-image comparison table (issue 18): trained runs scored on the same held-out scenes.

    python benchmarks/image_to_image_table.py runs/pix2pix_label runs/palette_label ... \
        --num-examples 200 [--option bbdm_label:sample_step=20]

Runs are grouped by their translation (data.source -> data.target); each
group also gets the ground-truth row (the ceiling) and a shuffled row (each
scene given another scene's target: what ignoring the input scores). Columns
are `jaxgen.tasks.image_to_image.evaluation.COLUMNS`, plus parameters and the
run's training steps/s from its logs. Translation time is wall time after
compilation on this machine, measured one run after another.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common

from jaxgen.tasks.image_to_image import evaluation
from jaxgen.tasks.registry import load_run


def _generator_parameters(task, params) -> int:
  """Parameters used at translation time (discriminators left out, a locked base counted)."""
  return _common.parameter_count(task.translation_params(params))


def _format(value) -> str:
  if value is None:
    return "–"
  if isinstance(value, int):
    return f"{value:,}"
  return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def main(argv=None) -> str:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("runs", nargs="+", help="run directories written by `jaxgen train`")
  parser.add_argument("--num-examples", type=int, default=200)
  parser.add_argument(
    "--option",
    action="append",
    default=[],
    help="RUN_NAME:KEY=VALUE, a sampling option of one run (e.g. bbdm_label:sample_step=20)",
  )
  args = parser.parse_args(argv)
  names = [os.path.basename(os.path.normpath(run_dir)) for run_dir in args.runs]
  try:
    run_options = _common.parse_options(args.option, names, ValueError)
  except ValueError as e:
    parser.error(str(e))

  groups = collections.defaultdict(list)
  for run_dir in args.runs:
    task, params = load_run(run_dir)
    name = os.path.basename(os.path.normpath(run_dir))
    options = run_options.get(name, {})
    scores = evaluation.score_translation(task, params, args.num_examples, **options)
    scores["parameters"] = _generator_parameters(task, params)
    scores["train_steps_per_sec"] = _common.train_rate(run_dir)
    scores["train_steps"] = _common.checkpoint_step(run_dir)
    cpu = _common.logged_scalars(run_dir, "cpu_minutes")
    scores["train_cpu_minutes"] = cpu[-1] if cpu else None
    key = (task.source, task.target)
    if not groups[key]:
      for ref_name, ref in evaluation.reference_rows(task, args.num_examples).items():
        groups[key].append((ref_name, ref))
    groups[key].append((f"{task.config.task} ({name})", scores))

  columns = (
    *evaluation.COLUMNS,
    "parameters",
    "train_steps",
    "train_cpu_minutes",
    "train_steps_per_sec",
  )
  lines = []
  for (source, target), rows in groups.items():
    lines += [f"\n### {source} → {target} ({args.num_examples} held-out scenes)\n"]
    lines += ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows:
      lines.append(f"| {name} | " + " | ".join(_format(row.get(c)) for c in columns) + " |")
  table = "\n".join(lines)
  print(table)
  return table


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
