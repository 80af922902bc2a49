"""The talking-face comparison table (issue 16): trained runs dubbing the same held-out clips.

    python benchmarks/talking_table.py --run Wav2Lip=/work/talk/wav2lip \
        --run DiffTalk=/work/talk/difftalk --syncnet-run /work/talk/eval_expert \
        --num-clips 16 --out /work/talk/table.json --videos 2 \
        [--run DiffTalk+guidance=/work/talk/difftalk_cfg --option DiffTalk+guidance:guidance_scale=3]

Held-out data: `talking_data.make_clips(config.data, "test", N)` of each
run (test identities and utterances; runs at one resolution share the same
clips). `--syncnet-run` is a `wav2lip_expert` run trained separately from
the expert inside Wav2Lip's loss (another seed and other training clips): it
gives LSE-D and LSE-C. Rows, columns and their conventions are
`jaxgen.tasks.talking_face.talking_table`'s docstring; the ground-truth and
static rows are given once per clip resolution.

`--videos K` writes, beside `--out`, `<stem>_clip<i>.mp4` for the first K
held-out clips (reference | each run | ground truth at 96x96, scaled 3x,
with the clip's speech) and `<stem>_clip<i>.png` (the same at 10 frames),
plus `<stem>_mouth.json`: the judge's mouth opening per frame of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common
import numpy as np

from jaxgen.data import face_render, talking_heads
from jaxgen.metrics import talking_face
from jaxgen.render.grid import save_png
from jaxgen.tasks import registry
from jaxgen.tasks.talking_face import talking_data, talking_samples, talking_table
from jaxgen.tasks.talking_face.wav2lip_expert import Wav2LipExpertTask

DISPLAY_SIZE = 96
STRIP_FRAMES = 10


class TalkingRunError(ValueError):
  """A --run that is not a trained talking-face generator run."""


def parse_run(item: str) -> tuple[str, str]:
  """`NAME=RUN_DIR` -> (name, run directory), or a TalkingRunError naming the flag."""
  return _common.parse_run(item, TalkingRunError, "Wav2Lip=runs/wav2lip")


def load_talking_run(name: str, workdir: str):
  """(task, EMA params) of a run of a task that takes speech (wav2lip, difftalk)."""
  config = registry.run_config(workdir)
  if not registry.task_class(config).sample_spec.takes_speech:
    raise TalkingRunError(
      f"--run {name}: {workdir!r} is a run of task {config.task!r}, which does not talk: "
      "expected a run of wav2lip or difftalk"
    )
  return registry.load_run(workdir)


def held_out_clips(task, num_clips: int, seconds: float | None) -> talking_data.TalkingClips:
  data = task.config.data.to_dict()
  if seconds is not None:
    data["seconds"] = seconds
  return talking_data.make_clips(data, "test", num_clips)


def display(video: np.ndarray) -> np.ndarray:
  return (
    video if video.shape[1] == DISPLAY_SIZE else talking_face.resize_frames(video, DISPLAY_SIZE)
  )


def write_examples(out_stem: str, count: int, clips, videos: dict[str, np.ndarray]) -> None:
  """MP4 + PNG strip per clip (reference | runs | truth) and the judge's openings as JSON."""
  openings = {}
  picks = np.linspace(0, clips.num_frames - 1, STRIP_FRAMES).round().astype(int)
  for i in range(min(count, clips.num_clips)):
    truth = clips.video[i]
    panels = [np.repeat(truth[:1], len(truth), axis=0)] + [v[i] for v in videos.values()] + [truth]
    panels = [display(p) for p in panels]
    frames = np.concatenate(panels, axis=2)
    stem = f"{out_stem}_clip{i}"
    talking_samples.write_talking_video(
      frames.repeat(3, axis=1).repeat(3, axis=2), clips.audio[i], talking_heads.SAMPLE_RATE, stem
    )
    save_png(
      stem + ".png", np.concatenate([frames[t] for t in picks], axis=0).repeat(2, 0).repeat(2, 1)
    )
    names = ["reference"] + list(videos) + ["ground truth"]
    openings[f"clip{i}"] = {
      n: face_render.mouth_measurements(p)["opening"].round(4).tolist()
      for n, p in zip(names, panels)
    }
    openings[f"clip{i}"]["true opening"] = clips.mouth[i, :, 0].round(4).tolist()
  with open(out_stem + "_mouth.json", "w") as f:
    json.dump({"columns": "panels left to right: " + ", ".join(names), **openings}, f)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR (repeatable)")
  parser.add_argument("--syncnet-run", required=True, help="a wav2lip_expert run for LSE-D/C")
  parser.add_argument("--num-clips", type=int, default=16)
  parser.add_argument(
    "--seconds", type=float, default=None, help="clip length (default: the run's)"
  )
  parser.add_argument("--out", required=True, help="JSON file of the rows")
  parser.add_argument("--videos", type=int, default=0, help="MP4/PNG examples of the first K clips")
  parser.add_argument(
    "--option",
    action="append",
    default=[],
    help="NAME:KEY=VALUE, a sampling option of one run (e.g. DiffTalk:guidance_scale=3.0)",
  )
  args = parser.parse_args(argv)
  _common.check_positive("--num-clips", args.num_clips)
  runs = [parse_run(item) for item in args.run]
  options = _common.parse_options(args.option, [name for name, _ in runs], TalkingRunError)
  expert, expert_params = registry.load_run_of(
    Wav2LipExpertTask, args.syncnet_run, flag="--syncnet-run"
  )
  embed = talking_face.syncnet_color_embedder(expert_params, width=expert.width)

  rows, videos, reference_clips = [], {}, None
  done_sizes = set()
  for name, workdir in runs:
    task, params = load_talking_run(name, workdir)
    clips = held_out_clips(task, args.num_clips, args.seconds)
    size = clips.video.shape[2]
    if size not in done_sizes:
      done_sizes.add(size)
      for row in talking_table.reference_rows(clips, embed):
        rows.append(dataclasses.replace(row, method=f"{row.method} ({size}x{size})"))
      if size == DISPLAY_SIZE or reference_clips is None:
        reference_clips = clips
    task.check_options(options[name])  # before any sampling
    generate = functools.partial(task.generate, params, **options[name])
    model_rows, videos[name] = talking_table.model_rows(name, generate, clips, embed)
    rows += model_rows
    print(f"{name}: done", flush=True)

  table = [row.as_dict() for row in rows]
  print(_common.machine_line())
  print(f"{args.num_clips} held-out clips; LSE from {args.syncnet_run}")
  print(_common.markdown_table(table, talking_table.COLUMNS))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(table, f, indent=1)
  if args.videos:
    write_examples(os.path.splitext(args.out)[0], args.videos, reference_clips, videos)
  return table


if __name__ == "__main__":
  main()
