"""`jaxgen sample`: generate from a trained run; its config.json says which task it is.

    jaxgen sample --checkpoint runs/shapes --prompt "a small red circle in the top left"
    jaxgen sample --checkpoint runs/t2m_mdm --prompt "a person waves" --seconds 6 --out wave.mp4
    jaxgen sample --checkpoint runs/pix2pix --input sketches/ --out translation.png
    jaxgen sample --checkpoint runs/edge --music song.wav --out dance.mp4
    jaxgen sample --checkpoint runs/wav2lip --audio speech.wav --reference face.png --out talk.mp4
    jaxgen sample --checkpoint runs/video --prompt "a red circle moving left quickly" --out v.gif
    jaxgen sample --checkpoint runs/video --prompt "..." --first-frame start.png --out v.mp4
    jaxgen sample --checkpoint runs/video --prompt "..." --mode keyframes --keyframe-every 5 \
        --frames clip.npy --out between.gif

The run's task (a `jaxgen.training.task.GenerativeTask`) declares in its
`sample_spec` what it takes: the output kinds, the sampler options and
whether samples need a duration, input images (`--input`: image files or
folders, for the image-to-image tasks; prompts are then optional) or music
(`--music`: WAV files or folders, for the dance tasks, which take no prompts;
each file is danced in one scan, so the progress bar counts music files) or
speech and a face (`--audio`: WAV files or folders, `--reference`: one face
image, for the talking-face tasks: one video per speech file with the speech
muxed in; `--side-by-side` puts the reference beside the generated face) or
a first frame (`--first-frame`: one image every prompt's clip starts from,
for the video tasks, which write a captioned GIF/MP4 grid and each clip as
`.npy` beside it). Video runs also take a conditioning mode (`--mode`: text,
first_frame or keyframes) and given frames (`--frames`: a clip, e.g. a `.npy`
that `jaxgen sample` wrote, or only the frames the mode keeps; keyframes
mode keeps frames 0, k, 2k, ... with k = `--keyframe-every` and generates
the rest).
Every argument is checked against it (and the sampler options by the task's
`check_options`) before the weights are read or anything compiles. `--out`
may name a directory: the task's default file name (grid.png, motion.mp4,
dance.mp4) is written inside it. Every task's `save_samples` receives the
display options (`scale`: pixel upscaling of a picture, `ncols`: columns of
a grid) and uses those that apply to its output.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os

from jaxgen.cli.errors import UsageError

# flag -> the keyword option of `GenerativeTask.generate` it sets.
SAMPLER_OPTIONS = {"--sampler": "sampler", "--steps": "num_steps", "--guidance": "guidance_scale"}
# The video tasks' options (their `sample_spec.options` list them; other tasks refuse the flags).
VIDEO_OPTIONS = {"--mode": "mode", "--keyframe-every": "keyframe_every"}
GENERATE_OPTIONS = {**SAMPLER_OPTIONS, **VIDEO_OPTIONS}
SEED_RANGE = 2**32  # jax.random.PRNGKey takes a uint32 seed


def add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
  """--sampler/--steps/--guidance: unset ones leave the run's config defaults."""
  parser.add_argument(
    "--sampler",
    default=None,
    help=(
      "diffusion sampler: ddpm | ddim | pndm | dpm_solver_pp_2m | dpm_solver_pp_2m_karras | "
      "euler | euler_ancestral | heun | lms | unipc (default: the run's config)"
    ),
  )
  parser.add_argument(
    "--steps", type=int, default=None, help="sampling steps (default: the run's config)"
  )
  parser.add_argument(
    "--guidance",
    type=float,
    default=None,
    help="classifier-free guidance scale (default: the run's config)",
  )


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", required=True, help="run directory written by `jaxgen train`")
  parser.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
  parser.add_argument("--prompts-file", help="a text file with one prompt per line")
  parser.add_argument(
    "--input",
    action="append",
    help="image-to-image tasks: an input image (PNG/JPEG) or a folder of them (repeat for several)",
  )
  parser.add_argument(
    "--music",
    action="append",
    help="dance tasks: a WAV file or a folder of them (repeat for several); one dance each",
  )
  parser.add_argument(
    "--audio",
    action="append",
    help="talking-face tasks: a speech WAV file or a folder of them (repeat for several); "
    "one video each, with the speech muxed in",
  )
  parser.add_argument(
    "--reference", help="talking-face tasks: the face image (PNG/JPEG, 96x96 RGB) that speaks"
  )
  parser.add_argument(
    "--side-by-side",
    action="store_true",
    help="talking-face videos: the reference face beside the generated one",
  )
  parser.add_argument(
    "--first-frame",
    help="video tasks: an image (PNG/JPEG, the run's size, RGB) every prompt's clip starts from",
  )
  parser.add_argument(
    "--mode",
    default=None,
    help="video tasks: text (every frame generated) | first_frame (image-to-video: frame 0 "
    "from --first-frame or --frames) | keyframes (interpolation: frames 0, k, 2k, ... from "
    "--frames, k = --keyframe-every; the frames between are generated). Default: first_frame "
    "with --first-frame, keyframes with --frames, else the run's sample.mode",
  )
  parser.add_argument(
    "--keyframe-every",
    type=int,
    default=None,
    help="video tasks, --mode keyframes: the spacing k of the keyframes 0, k, 2k, ... "
    "(2 .. frames - 1; default: the run's sample.keyframe_every)",
  )
  parser.add_argument(
    "--frames",
    action="append",
    help="video tasks: where --mode first_frame / keyframes takes its given frames: a .npy "
    "(T, H, W, 3) uint8 clip (as jaxgen sample writes in <out>_clips/), a .gif/.mp4, a folder "
    "of frame images or one image; either a whole clip (its first T frames, of which only the "
    "given ones are read) or just the given frames in order (frame 0; or frames 0, k, 2k, "
    "...). Once for every prompt's clip, or repeated once per --prompt in order",
  )
  add_sampler_arguments(parser)
  parser.add_argument("--num-per-prompt", type=int, default=1)
  parser.add_argument("--seed", type=int, default=0, help=f"random seed, 0 .. {SEED_RANGE - 1}")
  parser.add_argument(
    "--seconds",
    type=float,
    default=None,
    help="duration of each sample, for tasks that generate sequences (motion)",
  )
  parser.add_argument(
    "--out",
    default=None,
    help="output file, or a directory to write the default file name in (default: the "
    "task's, e.g. grid.png for images, motion.mp4 for motions); motions also write .gif "
    "or .npy (joints)",
  )
  parser.add_argument(
    "--scale", type=int, default=4, help="images: pixel upscaling in the grid (>= 1)"
  )


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def input_image_paths(inputs: list[str]) -> list[str]:
  """--input files, and the image files of --input folders (sorted), with named errors."""
  paths = []
  for item in inputs:
    if os.path.isdir(item):
      found = sorted(
        os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_SUFFIXES)
      )
      if not found:
        raise UsageError(f"--input: folder {item!r} holds no {'/'.join(IMAGE_SUFFIXES)} files")
      paths += found
    elif os.path.isfile(item):
      paths.append(item)
    else:
      raise UsageError(f"--input: no such file or folder {item!r}")
  return paths


def read_input_images(inputs: list[str]) -> tuple[list, list[str]]:
  """(uint8 arrays as stored: (H, W) for grey or palette PNGs, (H, W, 3|4) for colour, names)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top

  images, names = [], []
  for path in input_image_paths(inputs):
    try:
      with Image.open(path) as image:
        # Palette PNGs keep their indices (label maps); everything else is read as 8-bit.
        keep = image.mode in ("P", "L", "RGB", "RGBA")
        images.append(np.asarray(image if keep else image.convert("RGB")))
    except (UnidentifiedImageError, OSError) as e:
      raise UsageError(f"--input: cannot read {path!r} as an image ({e})") from e
    names.append(os.path.basename(path))
  return images, names


def music_paths(items: list[str], flag: str = "--music") -> list[str]:
  """`flag` (--music, --audio) files, and the .wav files of its folders (sorted), with named errors."""
  paths = []
  for item in items:
    if os.path.isdir(item):
      found = sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(".wav"))
      if not found:
        raise UsageError(f"{flag}: folder {item!r} holds no .wav files")
      paths += found
    elif not os.path.isfile(item):
      raise UsageError(f"{flag}: no such file or folder {item!r}")
    elif not item.lower().endswith(".wav"):
      raise UsageError(f"{flag}: expected a .wav file, got {item!r}")
    else:
      paths.append(item)
  return paths


def read_music(items: list[str], flag: str = "--music") -> tuple[list, list[int], list[str]]:
  """(mono float32 waveforms, their sample rates, file names) of the `flag` WAV files."""
  import soundfile  # pylint: disable=g-import-not-at-top

  from jaxgen.data.music_features import load_audio  # pylint: disable=g-import-not-at-top

  audio, rates, names = [], [], []
  for path in music_paths(items, flag):
    try:
      soundfile.info(path)  # libsndfile reads every WAV; refuse the rest before librosa tries
    except (soundfile.SoundFileError, RuntimeError) as e:
      raise UsageError(f"{flag}: cannot read {path!r} as WAV audio ({e})") from e
    waveform, sr = load_audio(path)
    audio.append(waveform)
    rates.append(sr)
    names.append(os.path.basename(path))
  return audio, rates, names


def read_reference(path: str, flag: str = "--reference"):
  """(the `flag` image as stored, uint8, its file name), with named errors."""
  if not os.path.isfile(path):
    raise UsageError(f"{flag}: no such file {path!r}")
  images, names = read_input_images([path])
  return images[0], names[0]


def read_prompts(args: argparse.Namespace) -> list[str]:
  """--prompt values then --prompts-file lines, with named errors."""
  prompts = list(args.prompt or [])
  if args.prompts_file:
    if not os.path.isfile(args.prompts_file):
      raise FileNotFoundError(f"--prompts-file: no such file {args.prompts_file!r}")
    with open(args.prompts_file) as f:
      prompts += [line.strip() for line in f if line.strip()]
  if not prompts:
    raise UsageError("--prompt: expected at least one prompt, got none")
  if any(not p.strip() for p in prompts):
    raise UsageError("--prompt: prompts must be non-empty strings, got an empty one")
  return prompts


def check_sampler_values(args: argparse.Namespace) -> None:
  """Named errors for --steps/--guidance values that no task takes (tasks check the rest)."""
  if args.steps is not None and args.steps <= 0:
    raise UsageError(f"--steps: expected a positive number of steps, got {args.steps}")
  if args.guidance is not None and not math.isfinite(args.guidance):
    raise UsageError(f"--guidance: expected a finite scale, got {args.guidance}")
  if args.guidance is not None and args.guidance < 0:
    raise UsageError(f"--guidance: expected a scale >= 0, got {args.guidance}")


def check_display_values(args: argparse.Namespace) -> None:
  """Named errors for --num-per-prompt, --seed and --scale values that no task takes."""
  if args.num_per_prompt <= 0:
    raise UsageError(f"--num-per-prompt: expected >= 1, got {args.num_per_prompt}")
  if not 0 <= args.seed < SEED_RANGE:
    raise UsageError(f"--seed: expected an integer in 0 .. {SEED_RANGE - 1}, got {args.seed}")
  if args.scale < 1:
    raise UsageError(f"--scale: expected a pixel upscaling >= 1, got {args.scale}")


def sampler_options(args: argparse.Namespace, spec, task_name: str) -> dict:
  """The `generate` options the user set, checked against the task's `SampleSpec.options`.

  Their values are the task's to check (`check_options` under `option_flags`):
  each family names its own samplers (the diffusion solvers, "maskgit", ...)."""
  options = {}
  for flag, name in GENERATE_OPTIONS.items():
    # Commands that share this (eval-motion) do not define every flag.
    value = getattr(args, flag[2:].replace("-", "_"), None)
    if value is None:
      continue
    if name not in spec.options:
      raise UsageError(
        f"{flag}: task {task_name!r} takes no {name} (its options: "
        f"{', '.join(spec.options) or 'none'})"
      )
    options[name] = value
  return options


@contextlib.contextmanager
def option_flags():
  """Re-raises a task's SamplingOptionError under the flag that set the option."""
  from jaxgen.diffusion.samplers import SamplingOptionError  # pylint: disable=g-import-not-at-top

  flags = {name: flag for flag, name in GENERATE_OPTIONS.items()}
  try:
    yield
  except SamplingOptionError as e:
    if e.option not in flags:
      raise
    message = str(e).removeprefix(f"{e.option}: ")
    raise UsageError(f"{flags[e.option]}: {message}") from e


VIDEO_SUFFIXES = (".npy", ".gif", ".mp4", ".avi", ".mov", ".mkv", ".webm")


def read_given_clips(items: list[str]) -> tuple[list, list[str]]:
  """(uint8 (L, H, W, 3) clips, their names) of the --frames videos, frame folders or images."""
  from jaxgen.metrics import image_folder, video_folder  # pylint: disable=g-import-not-at-top

  clips, names = [], []
  for item in items:
    name = os.path.basename(os.path.normpath(item))
    suffix = os.path.splitext(item)[1].lower()
    if not os.path.exists(item):
      raise UsageError(f"--frames: no such file or folder {item!r}")
    if os.path.isfile(item) and suffix not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
      raise UsageError(
        f"--frames: expected a video ({', '.join(VIDEO_SUFFIXES)}), a folder of frame images or "
        f"an image ({', '.join(IMAGE_SUFFIXES)}), found {item!r}"
      )
    try:
      if suffix in IMAGE_SUFFIXES and os.path.isfile(item):
        clip = image_folder.load_image(item)[None]  # one given frame
      else:
        clip = video_folder.load_clip(item, video_folder.probe_video(item).num_frames)
    except (video_folder.VideoFolderError, OSError, ValueError) as e:
      raise UsageError(f"--frames: cannot read {item!r} as frames ({e})") from e
    clips.append(clip)
    names.append(name)
  return clips, names


def video_mode(args: argparse.Namespace, task_name: str) -> str | None:
  """The conditioning mode of a video run: --mode, else the one --first-frame or --frames
  implies, else None (the run's sample.mode); named errors for flags the mode does not use."""
  if args.first_frame and args.frames:
    raise UsageError(
      "--first-frame, --frames: expected one of them: --first-frame IMAGE (a first frame) or "
      "--frames (a first frame or keyframes), found both"
    )
  mode = args.mode or ("first_frame" if args.first_frame else "keyframes" if args.frames else None)
  given = "--first-frame" if args.first_frame else "--frames" if args.frames else None
  if mode == "text" and given:
    raise UsageError(
      f"{given}: --mode text generates every frame and takes no given frames (use --mode "
      "first_frame or keyframes)"
    )
  if mode == "first_frame" and not given:
    raise UsageError(
      f"--mode first_frame: task {task_name!r} needs the first frame: --first-frame IMAGE or "
      "--frames (a clip or one image)"
    )
  if mode == "keyframes" and args.first_frame:
    raise UsageError(
      "--first-frame: --mode keyframes takes its keyframes from --frames (a clip, or only its "
      "keyframes), not from one image"
    )
  if mode == "keyframes" and not given:
    raise UsageError(
      f"--mode keyframes: task {task_name!r} needs the keyframes: --frames (a clip, or only "
      "its frames 0, k, 2k, ...)"
    )
  if args.keyframe_every is not None and mode != "keyframes":
    raise UsageError(
      f"--keyframe-every: spaces the keyframes of --mode keyframes, found "
      f"{'--mode ' + mode if mode else 'no --mode and no --frames'}"
    )
  return mode


def clips_per_caption(clips: list, names: list[str], prompts: list[str], num_per_prompt: int):
  """(clip, name) lists with one entry per sampled caption: one --frames for every prompt, or
  one per prompt in order, repeated --num-per-prompt times."""
  if len(clips) not in (1, len(prompts)):
    raise UsageError(
      f"--frames: expected one clip for every prompt or one per prompt ({len(prompts)}), "
      f"found {len(clips)}"
    )
  picks = [i if len(clips) > 1 else 0 for i in range(len(prompts)) for _ in range(num_per_prompt)]
  return [clips[i] for i in picks], [names[i] for i in picks]


def output_path(out: str | None, spec) -> str:
  """--out, the task's default file name, or that name inside an existing directory --out."""
  if not out:
    return spec.default_out
  if "://" not in out and os.path.isdir(out):
    return os.path.join(out, os.path.basename(spec.default_out))
  return out


def generative_task_class(run_dir: str, flag: str):
  """(config, task class) of a run directory whose task generates from prompts."""
  from jaxgen.tasks.registry import run_config, task_class  # pylint: disable=g-import-not-at-top
  from jaxgen.training.task import GenerativeTask  # pylint: disable=g-import-not-at-top

  if not os.path.isdir(run_dir):
    raise UsageError(f"{flag}: directory {run_dir!r} does not exist")
  if not os.path.isfile(os.path.join(run_dir, "config.json")):
    from jaxgen.pipelines import stable_diffusion_checkpoint  # pylint: disable=g-import-not-at-top

    stable_diffusion_checkpoint.check_not_pipeline_checkpoint(run_dir, flag)
    raise UsageError(
      f"{flag}: {run_dir!r} has no config.json: is it a directory written by `jaxgen train`?"
    )
  config = run_config(run_dir)  # dependent runs (autoencoder.workdir, ...) resolved
  cls = task_class(config)
  if not issubclass(cls, GenerativeTask):
    raise UsageError(
      f"{flag}: {run_dir!r} is a {config.task!r} run, a task that does not generate from prompts"
    )
  return config, cls


def _check_seconds(seconds: float | None, spec, task_name: str) -> None:
  if spec.takes_seconds and (seconds is None or not 0 < seconds < math.inf):  # refuses nan
    raise UsageError(
      f"--seconds: expected a positive duration for task {task_name!r} (a finite number "
      f"of seconds), got {seconds}"
    )
  if not spec.takes_seconds and seconds is not None:
    raise UsageError(f"--seconds: task {task_name!r} takes no duration, got --seconds {seconds}")


def _check_inputs(args: argparse.Namespace, spec, task_name: str) -> None:
  if spec.takes_images and not args.input:
    raise UsageError(f"--input: task {task_name!r} translates images; give an image or a folder")
  if not spec.takes_images and args.input:
    raise UsageError(f"--input: task {task_name!r} generates from prompts and takes no images")
  if spec.takes_audio and not args.music:
    raise UsageError(f"--music: task {task_name!r} dances to music; give a WAV file or a folder")
  if not spec.takes_audio and args.music:
    raise UsageError(f"--music: task {task_name!r} takes no music")
  if spec.takes_audio and (args.prompt or args.prompts_file):
    raise UsageError(f"--prompt: task {task_name!r} dances to --music and takes no prompts")
  if spec.takes_speech and not (args.audio and args.reference):
    raise UsageError(
      f"--audio, --reference: task {task_name!r} makes a face speak; give a speech WAV file "
      "(or a folder) and a reference face image"
    )
  if not spec.takes_speech and (args.audio or args.reference or args.side_by_side):
    raise UsageError(
      f"--audio, --reference, --side-by-side: task {task_name!r} makes no talking faces"
    )
  if spec.takes_speech and (args.prompt or args.prompts_file):
    raise UsageError(f"--prompt: task {task_name!r} speaks --audio and takes no prompts")
  if args.first_frame and not spec.takes_first_frame:
    raise UsageError(f"--first-frame: task {task_name!r} makes no videos from a first frame")
  if args.frames and not spec.takes_first_frame:
    raise UsageError(f"--frames: task {task_name!r} makes no videos from given frames")
  if (spec.takes_audio or spec.takes_speech) and args.num_per_prompt != 1:
    raise UsageError(
      f"--num-per-prompt: task {task_name!r} makes one dance per music file, got "
      f"{args.num_per_prompt}"
    )


def run(args: argparse.Namespace) -> int:
  if not (args.prompt or args.prompts_file or args.input or args.music or args.audio):
    raise UsageError(  # before any run is read
      "--prompt: expected at least one prompt (or --input images for an image-to-image "
      "run, --music for a dance run, --audio for a talking-face run), got none"
    )
  check_sampler_values(args)
  check_display_values(args)
  config, cls = generative_task_class(args.checkpoint, "--checkpoint")
  spec = cls.sample_spec
  _check_inputs(args, spec, config.task)
  if spec.takes_images:  # prompts optional: they caption the inputs
    prompts = read_prompts(args) if (args.prompt or args.prompts_file) else None
    images, names = read_input_images(args.input)
  elif spec.takes_audio:
    audio, rates, names = read_music(args.music)
  elif spec.takes_speech:
    audio, rates, names = read_music(args.audio, "--audio")
    reference, reference_name = read_reference(args.reference)
  else:
    prompts = read_prompts(args)
  _check_seconds(args.seconds, spec, config.task)
  options = sampler_options(args, spec, config.task)
  if spec.takes_first_frame:
    mode = video_mode(args, config.task)
    if mode is not None:
      options["mode"] = mode
  if args.first_frame:
    first_frame, first_frame_name = read_reference(args.first_frame, "--first-frame")
  if args.frames:
    clips, clip_names = clips_per_caption(
      *read_given_clips(args.frames), prompts, args.num_per_prompt
    )

  import jax  # pylint: disable=g-import-not-at-top

  from jaxgen.training.inference import restore_ema_params  # pylint: disable=g-import-not-at-top

  task = cls(config)
  with option_flags():
    task.check_options(options)
  out = output_path(args.out, spec)
  task.check_output(out)
  if spec.takes_images:
    conditions = task.image_conditions(images, names, prompts)
    display = dict(scale=args.scale)
  elif spec.takes_audio:
    conditions = task.audio_conditions(audio, rates, names)
    display = {}
  elif spec.takes_speech:
    conditions = task.speech_conditions(audio, rates, names, reference, reference_name)
    display = dict(scale=args.scale, side_by_side=args.side_by_side)
  else:
    captions = [p for p in prompts for _ in range(args.num_per_prompt)]
    if args.first_frame:
      conditions = task.first_frame_conditions(first_frame, first_frame_name, captions)
    elif args.frames:
      with option_flags():
        conditions = task.given_frames_conditions(
          clips, clip_names, captions, mode=mode, keyframe_every=args.keyframe_every
        )
    else:
      conditions = task.conditions(captions, seconds=args.seconds)
    display = dict(scale=args.scale, ncols=args.num_per_prompt if len(prompts) > 1 else None)
  params = restore_ema_params(task, args.checkpoint)
  with option_flags():
    samples = task.generate(params, conditions, jax.random.PRNGKey(args.seed), **options)
  path = task.save_samples(samples, conditions, out, **display)
  count = len(next(iter(samples.values())))
  print(f"wrote {count} samples to {path}")
  return 0
