"""`jaxgen` command line: train | sample | quickstart | eval | eval-motion | convert.

Each command is a module of this package with `add_arguments(parser)` and
`run(args) -> exit code`. The modules import no JAX at module level (their
work is imported inside `run`), so `jaxgen --help` and `jaxgen CMD --help`
answer at once.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.metadata
import logging
import os
import sys
from typing import Sequence

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "jaxgen", "xla")

# command -> (module of this package, one-line help).
COMMANDS = {
  "train": ("train", "train an experiment config, resuming from the newest checkpoint"),
  "sample": ("sample", "generate from a trained run: images (a grid) or motions (a video)"),
  "quickstart": (
    "quickstart",
    "train a small text-to-image model on the built-in shapes and judge it",
  ),
  "eval": (
    "eval",
    (
      "metrics between folders: fid | kid | is | ssim | psnr | fvd | clip-score | clipsim | dance"
      " | lse | mouth"
    ),
  ),
  "eval-motion": (
    "eval_motion",
    "score a text-to-motion run with a trained evaluator (R-precision, FID, ...)",
  ),
  "convert": ("convert", "Stable Diffusion pipelines: diffusers folder <-> jaxgen checkpoint"),
}


def _version() -> str:
  """The installed package's version (read from its metadata: no JAX import)."""
  try:
    return importlib.metadata.version("jaxgen")
  except importlib.metadata.PackageNotFoundError:
    return "unknown (not installed)"


# What to do about a file-system error, by errno.
_FIXES = {
  errno.EACCES: "check its permissions or choose another path",
  errno.EPERM: "check its permissions or choose another path",
  errno.EROFS: "the file system is read-only; choose another path",
  errno.EISDIR: "expected a file there, found a directory",
  errno.ENOTDIR: "a part of the path is a file, not a directory",
  errno.EEXIST: "something is already there; remove it or choose another path",
  errno.ENOSPC: "the disk is full",
}


def describe_os_error(e: OSError) -> str:
  """One line for a file-system error: the path(s), the problem and what to do."""
  if e.filename is None:
    return str(e)  # our own errors (e.g. FileNotFoundError("--flag: ...")) say it all
  paths = repr(os.fspath(e.filename))
  if e.filename2 is not None:
    paths += f" -> {os.fspath(e.filename2)!r}"
  fix = _FIXES.get(e.errno)
  return f"{paths}: {e.strerror or type(e).__name__}" + (f" ({fix})" if fix else "")


def build_parser() -> argparse.ArgumentParser:
  """The `jaxgen` parser; every subparser's `func` is its module's `run`."""
  parser = argparse.ArgumentParser(prog="jaxgen", description=__doc__.split("\n")[0])
  parser.add_argument("--version", action="version", version=f"jaxgen {_version()}")
  parser.add_argument("--log-level", default="info", help="python logging level")
  parser.add_argument(
    "--compilation-cache",
    default=DEFAULT_CACHE,
    help="persistent XLA compilation cache directory ('' disables)",
  )
  sub = parser.add_subparsers(dest="command", required=True)
  for name, (module_name, help_text) in COMMANDS.items():
    module = importlib.import_module(f"jaxgen.cli.{module_name}")
    command = sub.add_parser(name, help=help_text, description=module.__doc__.split("\n")[0])
    module.add_arguments(command)
    command.set_defaults(func=module.run)
  return parser


def _setup(args: argparse.Namespace) -> None:
  logging.basicConfig(
    level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(message)s"
  )
  # Quiet the libraries that log every checkpoint file at INFO.
  for name in ("absl", "orbax", "jax._src"):
    logging.getLogger(name).setLevel(logging.WARNING)
  if args.compilation_cache:
    import jax  # pylint: disable=g-import-not-at-top  (not for --help)

    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs `jaxgen ARGV`; a named input error ends with one line on stderr and exit code 2.

  So does a file-system error (OSError: permissions, a file where a folder
  should be, ...): the line names the path. `--log-level debug` re-raises both.
  """
  args = build_parser().parse_args(argv)
  _setup(args)
  try:
    return args.func(args)
  except (ValueError, OSError) as e:
    if args.log_level.lower() == "debug":
      raise
    message = describe_os_error(e) if isinstance(e, OSError) else str(e)
    print(f"jaxgen {args.command}: error: {message}", file=sys.stderr)
    return 2
