"""`jaxgen` command line: train | sample | quickstart | eval | convert."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Sequence

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "jaxgen", "xla")


class UsageError(ValueError):
  """A command-line argument is invalid."""


def _setup(args) -> None:
  logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                      format="%(asctime)s %(levelname)s %(message)s")
  # Quiet the libraries that log every checkpoint file at INFO.
  for name in ("absl", "orbax", "jax._src"):
    logging.getLogger(name).setLevel(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  if args.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


# -- train -------------------------------------------------------------------

def cmd_train(args) -> int:
  from jaxgen.configuration import apply_overrides, load_config_file  # pylint: disable=g-import-not-at-top
  from jaxgen.training import distributed  # pylint: disable=g-import-not-at-top
  from jaxgen.tasks.registry import get_task  # pylint: disable=g-import-not-at-top
  from jaxgen.training.trainer import train  # pylint: disable=g-import-not-at-top
  config = apply_overrides(load_config_file(args.config), args.overrides)
  explicit = args.coordinator is not None
  distributed.initialize(distributed.DistributedConfig(
      enabled=args.distributed or explicit, coordinator_address=args.coordinator,
      num_processes=args.num_processes, process_id=args.process_id))
  workdir = args.workdir or os.path.join(
      "runs", os.path.splitext(os.path.basename(args.config))[0])
  train(get_task(config), config, workdir)
  print(f"trained into {workdir}")
  return 0


# -- sample ------------------------------------------------------------------

def check_sample_args(args) -> None:
  """Named errors for bad sampling arguments, before anything is built."""
  from jaxgen.diffusion.samplers import SAMPLERS  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(args.checkpoint):
    raise UsageError(f"--checkpoint: directory {args.checkpoint!r} does not exist")
  prompts = list(args.prompt or [])
  if args.prompts_file:
    with open(args.prompts_file) as f:
      prompts += [line.strip() for line in f if line.strip()]
  if not prompts:
    raise UsageError("--prompt: expected at least one prompt, got none")
  if any(not p.strip() for p in prompts):
    raise UsageError("--prompt: prompts must be non-empty strings, got an empty one")
  args.prompt = prompts
  if args.sampler not in SAMPLERS:
    raise UsageError(f"--sampler: expected one of {sorted(SAMPLERS)}, got {args.sampler!r}")
  if args.steps is not None and args.steps <= 0:
    raise UsageError(f"--steps: expected a positive number of steps, got {args.steps}")
  if args.guidance is not None and args.guidance < 0:
    raise UsageError(f"--guidance: expected a scale >= 0, got {args.guidance}")
  if args.num_per_prompt <= 0:
    raise UsageError(f"--num-per-prompt: expected >= 1, got {args.num_per_prompt}")
  if args.task not in SAMPLE_TASKS:
    raise UsageError(f"--task: expected one of {SAMPLE_TASKS}, got {args.task!r}")
  if args.task == "text2motion":
    check_motion_sample_args(args)
  elif args.seconds is not None:
    raise UsageError(f"--seconds: only --task text2motion takes a duration, got --task {args.task}")
  if args.out is None:
    args.out = "motion.mp4" if args.task == "text2motion" else "grid.png"


SAMPLE_TASKS = ("text2image", "text2motion")
MOTION_OUTPUTS = (".mp4", ".gif", ".npy")


def check_motion_sample_args(args) -> None:
  """Named errors for text-to-motion arguments: duration and output kind."""
  if args.seconds is None or not args.seconds > 0:
    raise UsageError(f"--seconds: expected a positive duration for text2motion, got {args.seconds}")
  if args.out is not None:
    extension = os.path.splitext(args.out)[1].lower()
    if extension not in MOTION_OUTPUTS:
      raise UsageError(f"--out: expected a file ending in one of {MOTION_OUTPUTS} for text2motion, "
                       f"got {args.out!r}")
    if extension == ".mp4":
      from jaxgen.render.motion import FfmpegNotFoundError, find_ffmpeg  # pylint: disable=g-import-not-at-top
      try:
        find_ffmpeg()
      except FfmpegNotFoundError as e:
        raise UsageError(f"--out: an .mp4 needs ffmpeg ({e}); write a .gif instead") from e


def sample_motion(args) -> int:
  """`jaxgen sample --task text2motion`: generate, then write a video or the joints (.npy)."""
  import inspect  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxgen.data.motion import features_to_joints  # pylint: disable=g-import-not-at-top
  from jaxgen.render.motion import render_motion  # pylint: disable=g-import-not-at-top
  from jaxgen.tasks.registry import load_run  # pylint: disable=g-import-not-at-top

  task, params = load_run(args.checkpoint)
  fmt = getattr(task, "fmt", None)
  if fmt is None or not hasattr(task, "generate"):
    raise UsageError(f"--checkpoint: {args.checkpoint!r} is a {task.config.task!r} run, "
                     "not a text-to-motion one")
  frames = int(round(args.seconds * fmt.fps))
  if not 1 <= frames <= fmt.max_frames:
    raise UsageError(f"--seconds: expected at most {fmt.max_frames / fmt.fps:g} s "
                     f"({fmt.max_frames} frames at {fmt.fps:g} fps), got {args.seconds}")
  captions = [p for p in args.prompt for _ in range(args.num_per_prompt)]
  options = dict(sampler=args.sampler, num_steps=args.steps, guidance_scale=args.guidance)
  accepted = inspect.signature(task.generate).parameters
  options = {k: v for k, v in options.items() if k in accepted and v is not None}
  if "num_steps" in options and options["num_steps"] > task.config.diffusion.num_train_timesteps:
    raise UsageError(f"--steps: expected at most {task.config.diffusion.num_train_timesteps} "
                     f"(the training timesteps), got {options['num_steps']}")
  if "return_lengths" in accepted:  # token models round to whole codes: keep the frames made
    options["return_lengths"] = True
  features = task.generate(params, captions, np.full(len(captions), frames, np.int32),
                           jax.random.PRNGKey(args.seed), **options)
  if options.get("return_lengths"):
    features, made = features
    frames = int(np.min(made))
  joints = np.asarray(features_to_joints(np.asarray(features)[:, :frames], fmt))
  if args.out.lower().endswith(".npy"):
    np.save(args.out, joints.astype(np.float32))
  else:
    render_motion(list(joints), captions, args.out, fmt=fmt)
  print(f"wrote {len(captions)} motions of {frames} frames to {args.out}")
  return 0


def cmd_sample(args) -> int:
  check_sample_args(args)
  if args.task == "text2motion":
    return sample_motion(args)
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen.render.grid import make_grid, save_png  # pylint: disable=g-import-not-at-top
  from jaxgen.tasks.registry import load_run  # pylint: disable=g-import-not-at-top

  task, params = load_run(args.checkpoint)
  num_steps = args.steps or task.config.sample.num_steps
  if num_steps > task.config.diffusion.num_train_timesteps:
    raise UsageError(f"--steps: expected at most {task.config.diffusion.num_train_timesteps} "
                     f"(the training timesteps), got {num_steps}")
  captions = [p for p in args.prompt for _ in range(args.num_per_prompt)]
  images = task.generate(params, captions, jax.random.PRNGKey(args.seed), sampler=args.sampler,
                         num_steps=num_steps, guidance_scale=args.guidance)
  save_png(args.out, make_grid(images, captions, scale=args.scale,
                               ncols=args.num_per_prompt if len(args.prompt) > 1 else None))
  print(f"wrote {len(images)} samples to {args.out}")
  return 0


# -- quickstart ----------------------------------------------------------------

def cmd_quickstart(args) -> int:
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
  default_guidance = config.sample.guidance
  report = dict(steps=int(state.step), train_seconds=round(train_seconds, 1),
                sampler=config.sample.sampler, sample_steps=config.sample.num_steps,
                held_out_examples=config.eval.num_examples, accuracy={})
  for g in (1.0, default_guidance):
    logging.info("judging %d held-out captions at guidance %s", config.eval.num_examples, g)
    accuracy, images, captions = task.evaluate(state.ema_params, rng, guidance_scale=g)
    report["accuracy"][f"guidance_{g:g}"] = accuracy
  grid_path = save_png(os.path.join(args.workdir, "grid.png"),
                       make_grid(images[:32], captions[:32], scale=5, ncols=8))
  report["total_seconds"] = round(time.monotonic() - start, 1)
  json_path = os.path.join(args.workdir, "quickstart.json")
  with open(json_path, "w") as f:
    json.dump(report, f, indent=2)
  print(json.dumps(report, indent=2))
  print(f"wrote {grid_path} and {json_path}")
  return 0


# -- eval ----------------------------------------------------------------------

def cmd_eval(args) -> int:
  from jaxgen.metrics.eval_cli import run_eval  # pylint: disable=g-import-not-at-top
  result = run_eval(args)
  print(json.dumps(result, indent=2))
  return 0


# -- convert -------------------------------------------------------------------

def cmd_convert(args) -> int:
  from jaxgen.convert.cli_convert import run_convert  # pylint: disable=g-import-not-at-top
  print(json.dumps(run_convert(args), indent=2))
  return 0


# -- parser --------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxgen", description=__doc__)
  parser.add_argument("--log-level", default="info", help="python logging level")
  parser.add_argument("--compilation-cache", default=DEFAULT_CACHE,
                      help="persistent XLA compilation cache directory ('' disables)")
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("train", help="train a config, resuming from the newest checkpoint")
  p.add_argument("--config", required=True, help="path to a config file (configs/*.py)")
  p.add_argument("--workdir", help="run directory (default runs/<config name>)")
  p.add_argument("overrides", nargs="*", help="config overrides, key=value")
  g = p.add_argument_group("multi-process (multi-host) runs: every process runs the same command")
  g.add_argument("--distributed", action="store_true",
                 help="join a multi-process run, detecting coordinator and process id "
                      "(TPU pods, SLURM, Open MPI)")
  g.add_argument("--coordinator", help="host:port of process 0 (with the two flags below)")
  g.add_argument("--num-processes", type=int, help="number of processes in the run")
  g.add_argument("--process-id", type=int, help="this process's index, 0 .. N-1")
  p.set_defaults(func=cmd_train)

  p = sub.add_parser("sample", help="sample images (a grid) or motions (a video) from a trained run")
  p.add_argument("--checkpoint", required=True, help="run directory written by `jaxgen train`")
  p.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
  p.add_argument("--prompts-file", help="a text file with one prompt per line")
  p.add_argument("--sampler", default="ddim", help="ddpm | ddim | dpm_solver_pp_2m | euler")
  p.add_argument("--steps", type=int, default=None, help="sampling steps (default: config)")
  p.add_argument("--guidance", type=float, default=None,
                 help="classifier-free guidance scale (default: config)")
  p.add_argument("--num-per-prompt", type=int, default=1)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--scale", type=int, default=4, help="pixel upscaling in the grid")
  p.add_argument("--task", default="text2image", help="text2image (a PNG grid) | text2motion")
  p.add_argument("--seconds", type=float, default=None,
                 help="text2motion: duration of each motion in seconds")
  p.add_argument("--out", default=None,
                 help="output file: .png for text2image (default grid.png); .mp4, .gif or "
                      ".npy (joints, N×T×J×3) for text2motion (default motion.mp4)")
  p.set_defaults(func=cmd_sample)

  p = sub.add_parser("quickstart",
                     help="train a small text-to-image model on the built-in shapes and judge it")
  p.add_argument("--workdir", default="quickstart_out")
  p.add_argument("--train-minutes", type=float, default=6.0,
                 help="time budget for training (CPU); training stops early when reached")
  p.add_argument("overrides", nargs="*", help="config overrides, key=value")
  p.set_defaults(func=cmd_quickstart)

  from jaxgen.metrics.eval_cli import add_eval_arguments  # pylint: disable=g-import-not-at-top
  p = sub.add_parser("eval", help="metrics between folders: fid | kid | is | ssim | psnr | fvd | clip-score")
  add_eval_arguments(p)
  p.set_defaults(func=cmd_eval)

  from jaxgen.convert.cli_convert import add_convert_arguments  # pylint: disable=g-import-not-at-top
  p = sub.add_parser("convert",
                     help="Stable Diffusion pipelines: diffusers folder <-> jaxgen checkpoint")
  add_convert_arguments(p)
  p.set_defaults(func=cmd_convert)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  _setup(args)
  try:
    return args.func(args)
  except (ValueError, FileNotFoundError) as e:
    # Named input errors end with one readable line; --log-level debug shows
    # the traceback.
    if args.log_level.lower() == "debug":
      raise
    print(f"jaxgen {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
