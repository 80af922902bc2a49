"""`jaxgen convert`: Stable Diffusion pipelines between diffusers folders and jaxgen checkpoints.

  jaxgen convert --from diffusers SRC --to DST              diffusers folder -> jaxgen checkpoint
  jaxgen convert --from jaxgen SRC --to diffusers DST       jaxgen checkpoint -> diffusers folder
  jaxgen convert --from jaxgen RUN --to diffusers DST       sd_finetune run -> diffusers folder

The target format may be omitted (`--to DST`): it is then the other format.
A jaxgen checkpoint is the layout of
`jaxgen.pipelines.stable_diffusion_checkpoint.save_checkpoint`
(configs as JSON, flattened float32 params in one safetensors file, the
tokenizer files): the folder `stable_diffusion_checkpoint.load_checkpoint`
reads for the pipelines API, not a `jaxgen train` run (`jaxgen sample` does
not take it). A `jaxgen train` run of the `sd_finetune` task is also read as
a jaxgen source: its pretrained pipeline with the run's EMA U-Net (newest
readable checkpoint). The destination must not exist, or be empty, unless
--overwrite is given.

The source is read and converted whole, and written to a temporary folder
beside DST that replaces DST only once it is complete: a failed read or write
leaves both folders as they were. A DST that is, holds or lies inside SRC is
refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
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


class OverlappingFoldersError(ConvertUsageError):
  """--to is the --from folder, holds it, or lies inside it: writing would destroy the source."""


def _check_target(source: str, target: str, overwrite: bool) -> None:
  """Named errors for a DST that overlaps SRC or that exists without --overwrite."""
  real_source, real_target = os.path.realpath(source), os.path.realpath(target)
  if os.path.commonpath([real_source, real_target]) in (real_source, real_target):
    where = (
      "is"
      if real_source == real_target
      else "lies inside"
      if real_target.startswith(real_source + os.sep)
      else "holds"
    )
    raise OverlappingFoldersError(
      f"--to: {target} {where} the source folder {source}; expected a separate folder "
      "(converting into the source would destroy it)"
    )
  exists = os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target))
  if exists and not overwrite:
    raise ConvertUsageError(
      f"--to: {target} already exists and is not empty; pass --overwrite to replace it"
    )


def _remove(path: str) -> None:
  shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def write_replacing(target: str, write: Callable[[str], None]) -> None:
  """Runs `write(folder)` on a temporary folder beside `target`, then swaps it in.

  `target` (a folder or file, if any) is replaced only after `write` returned;
  if `write` raises, the temporary folder is removed and `target` is untouched.
  """
  parent = os.path.dirname(os.path.abspath(target))
  os.makedirs(parent, exist_ok=True)
  name = os.path.basename(os.path.abspath(target))
  staging = tempfile.mkdtemp(prefix=f".{name}.converting-", dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would become the target's mode.
  try:
    write(staging)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  old = None
  if os.path.lexists(target):
    # Renames within one folder are atomic; the old copy goes only once the new one is in place.
    old = tempfile.mkdtemp(prefix=f".{name}.replaced-", dir=parent)
    os.rename(target, os.path.join(old, name))
  try:
    os.rename(staging, target)
  except BaseException:
    if old is not None:
      os.rename(os.path.join(old, name), target)
      os.rmdir(old)
    shutil.rmtree(staging, ignore_errors=True)
    raise
  if old is not None:
    _remove(old)


class NotAnExportableRunError(ConvertUsageError):
  """--from jaxgen names a `jaxgen train` run of a task that is not a Stable Diffusion pipeline."""


def _load_jaxgen(source: str):
  """The bundle of a jaxgen pipeline checkpoint, or of an `sd_finetune` run (its EMA U-Net)."""
  from jaxgen.pipelines import stable_diffusion_checkpoint  # pylint: disable=g-import-not-at-top
  from jaxgen.training.run_directory import CONFIG_FILE  # pylint: disable=g-import-not-at-top

  run_config = os.path.join(source, CONFIG_FILE)
  if stable_diffusion_checkpoint.is_pipeline_checkpoint(source) or not os.path.isfile(run_config):
    return stable_diffusion_checkpoint.load_checkpoint(source)
  from jaxgen.tasks import registry  # pylint: disable=g-import-not-at-top
  from jaxgen.tasks.image.sd_finetune import SDFinetuneTask  # pylint: disable=g-import-not-at-top

  if registry.task_class(registry.run_config(source)) is not SDFinetuneTask:
    raise NotAnExportableRunError(
      f"--from jaxgen: expected a pipeline checkpoint or an sd_finetune run, found a "
      f"{registry.run_config(source).get('task')!r} run in {source}"
    )
  task, params = registry.load_run(source)
  return task.pipeline(params)


def run_convert(args: argparse.Namespace) -> dict[str, Any]:
  """Converts `args.source` into `args.target`; returns a small summary dict."""
  from jaxgen.convert import diffusers_pipeline  # pylint: disable=g-import-not-at-top
  from jaxgen.pipelines import stable_diffusion_checkpoint  # pylint: disable=g-import-not-at-top

  source_format, source, target_format, target = _parse_formats(args)
  _check_target(source, target, args.overwrite)
  # Read everything first: a source that fails to read leaves the target as it was.
  if source_format == "diffusers":
    sd = diffusers_pipeline.load_stable_diffusion(source)
    write_replacing(target, lambda folder: stable_diffusion_checkpoint.save_checkpoint(sd, folder))
  else:
    sd = _load_jaxgen(source)
    write_replacing(target, lambda folder: diffusers_pipeline.save_stable_diffusion(sd, folder))
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
