"""`jaxgen eval-motion`: score a text-to-motion run with a trained evaluator.

    jaxgen eval-motion --run runs/t2m_mdm --evaluator runs/t2m_evaluator --out scores.json

Generates motions for the test split's captions at their lengths and scores
them as the HumanML3D protocol does (R-precision, matching score, FID,
diversity, multimodality) on the embeddings of an evaluator run
(configs/t2m_evaluator_synthetic.py); prints the scores as JSON.
"""

from __future__ import annotations

import argparse
import json
import os

from jaxgen.cli.errors import UsageError
from jaxgen.cli.sample import (
  SEED_RANGE,
  add_sampler_arguments,
  check_sampler_values,
  generative_task_class,
  option_flags,
  sampler_options,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--run", required=True, help="a text-to-motion run directory")
  parser.add_argument("--evaluator", required=True, help="a t2m_evaluator run directory")
  parser.add_argument(
    "--num-examples",
    type=int,
    default=None,
    help="test captions to generate and score (default: the whole split)",
  )
  add_sampler_arguments(parser)
  parser.add_argument("--seed", type=int, default=0, help="generation seed")
  parser.add_argument("--out", help="also write the scores as JSON to this file")


def run(args: argparse.Namespace) -> int:
  if args.num_examples is not None and args.num_examples < 1:
    raise UsageError(f"--num-examples: expected >= 1, got {args.num_examples}")
  if not os.path.isdir(args.evaluator):
    raise UsageError(f"--evaluator: directory {args.evaluator!r} does not exist")
  if not 0 <= args.seed < SEED_RANGE:
    raise UsageError(f"--seed: expected an integer in 0 .. {SEED_RANGE - 1}, got {args.seed}")
  check_sampler_values(args)
  config, cls = generative_task_class(args.run, "--run")
  options = sampler_options(args, cls.sample_spec, config.task)
  if args.out:
    from jaxgen.training.task import check_writable_file  # pylint: disable=g-import-not-at-top

    check_writable_file(args.out)

  from jaxgen.tasks.motion.evaluation import score_run  # pylint: disable=g-import-not-at-top

  with option_flags():  # the run's task checks the sampler options' values
    scores = score_run(
      args.run, args.evaluator, num_examples=args.num_examples, seed=args.seed, **options
    )
  text = json.dumps(scores, indent=2)
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      f.write(text + "\n")
  return 0
