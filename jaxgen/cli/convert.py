"""`jaxgen convert`: Stable Diffusion pipelines between diffusers folders and jaxgen checkpoints.

  jaxgen convert --from diffusers SRC --to DST              diffusers folder -> jaxgen checkpoint
  jaxgen convert --from jaxgen SRC --to diffusers DST       jaxgen checkpoint -> diffusers folder

The target format may be omitted (`--to DST`): it is then the other format.
A jaxgen checkpoint is the layout of
`jaxgen.pipelines.stable_diffusion_checkpoint.save_checkpoint`
(configs as JSON, flattened float32 params in one safetensors file, the
tokenizer files). The destination must not exist, or be empty, unless
--overwrite is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from typing import Any

from jaxgen.cli.errors import UsageError

FORMATS = ("diffusers", "jaxgen")

_LOG = logging.getLogger(__name__)


class ConvertUsageError(UsageError):
  """An argument of `jaxgen convert` is invalid."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the `convert` arguments to an argparse (sub)parser."""
  parser.add_argument(
    "--from",
    dest="source",
    nargs=2,
    metavar=("FORMAT", "SRC"),
    required=True,
    help=f"source format ({' | '.join(FORMATS)}) and folder",
  )
  parser.add_argument(
    "--to",
    dest="target",
    nargs="+",
    metavar="[FORMAT] DST",
    required=True,
    help="target folder, optionally preceded by its format (default: the other format)",
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty DST")


def _parse_formats(args: argparse.Namespace) -> tuple[str, str, str, str]:
  source_format, source = args.source
  if source_format not in FORMATS:
    raise ConvertUsageError(f"--from: expected a format in {FORMATS}, found {source_format!r}")
  if len(args.target) == 1:
    target_format, target = FORMATS[1 - FORMATS.index(source_format)], args.target[0]
  elif len(args.target) == 2:
    target_format, target = args.target
  else:
    raise ConvertUsageError(f"--to: expected [FORMAT] DST, found {' '.join(args.target)!r}")
  if target_format not in FORMATS or target_format == source_format:
    others = [f for f in FORMATS if f != source_format]
    raise ConvertUsageError(
      f"--to: expected a format in {others} (from {source_format}), found {target_format!r}"
    )
  if not os.path.isdir(source):
    raise FileNotFoundError(
      f"--from: expected a {source_format} folder, found no folder at {source}"
    )
  return source_format, source, target_format, target


def _prepare_target(target: str, overwrite: bool) -> None:
  if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
    if not overwrite:
      raise ConvertUsageError(
        f"--to: {target} already exists and is not empty; pass --overwrite to replace it"
      )
    shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)


def run_convert(args: argparse.Namespace) -> dict[str, Any]:
  """Converts `args.source` into `args.target`; returns a small summary dict."""
  from jaxgen.convert import diffusers_pipeline  # pylint: disable=g-import-not-at-top
  from jaxgen.pipelines import stable_diffusion_checkpoint  # pylint: disable=g-import-not-at-top

  source_format, source, target_format, target = _parse_formats(args)
  _prepare_target(target, args.overwrite)
  if source_format == "diffusers":
    sd = diffusers_pipeline.load_stable_diffusion(source)
    stable_diffusion_checkpoint.save_checkpoint(sd, target)
  else:
    sd = stable_diffusion_checkpoint.load_checkpoint(source)
    diffusers_pipeline.save_stable_diffusion(sd, target)
  _LOG.info("converted %s (%s) -> %s (%s)", source, source_format, target, target_format)
  return {
    "from": source_format,
    "source": source,
    "to": target_format,
    "target": target,
    "sampler": sd.scheduler.sampler,
  }


def run(args: argparse.Namespace) -> int:
  print(json.dumps(run_convert(args), indent=2))
  return 0
