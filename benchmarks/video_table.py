"""The text-to-video comparison table (issue 19): video runs vs image-model baselines, judged.

    python benchmarks/video_table.py --run pixel=/work/video/video2 --num-videos 64 \
        --out /work/video/table.json --gifs 3

Held-out data: each run's `eval_split(N)` (`video_shapes` clips whose
combinations of shape, colour and motion training never saw); the runs
compared must share it (same `data.frames`, `data.seed` and resolution).
Rows, all scored by the analytic motion judge (`jaxgen.data.video_judge`)
against the same captions:

* `NAME (text)`, `NAME (first_frame)`, `NAME (keyframes)`: each video run in
  each conditioning mode; the given frames are the held-out clips' own (the
  first frame; frames 0, k, 2k, ... with k = `--keyframe-every` or the run's
  `sample.keyframe_every`), pasted into the output as `jaxgen sample` does;
* `frame-independent (IMAGE)`: the image run the video run was inflated from
  (`image.workdir`, named by its folder), sampled once per frame with the clip's caption: every
  frame right, no motion;
* `static (IMAGE)`: one image of that run repeated over the clip;
* `ground truth`: the held-out clips themselves (the judge's ceiling).

Columns: direction and speed accuracy, the fraction of temporally consistent
videos and the mean consistency, per-frame shape and colour accuracy
(`video_judge.judge_videos`), and sampling seconds per video, timed after a
warm-up call on one chunk of the same shape (compilation excluded). The
issue's criteria are checked for every video row (`criteria`): direction
accuracy >= 0.8 and above both baselines of its image run; per-frame shape
and colour accuracy within 0.05 of the frame-independent row (the image
model's own per-frame accuracy).

Writes `--out` (JSON: machine, settings, rows, criteria) and the markdown
table beside it (`<stem>.md`). `--gifs K` writes `<stem>_gif<i>.gif` for the
first K held-out captions: one panel per row, left to right in table order,
4x upscaled, with `<stem>_gifs.json` naming each file's caption and panels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common
import numpy as np

MODES = ("text", "first_frame", "keyframes")
# The judge's columns in the table, then the timing.
JUDGE_COLUMNS = ("direction", "speed", "consistent", "consistency", "frame_shape", "frame_colour")
SECONDS = "s/video"
COLUMNS = ("method", *JUDGE_COLUMNS, SECONDS)
DIRECTION_TARGET = 0.8  # the issue's bar for the video models' direction accuracy
FRAME_TOLERANCE = 0.05  # per-frame accuracy may fall at most this far below the image model's
GIF_SCALE = 4


class VideoTableError(ValueError):
  """A --run that is not a video run, runs with different held-out clips, or bad table input."""


# -- pure arithmetic -----------------------------------------------------------


def per_frame_captions(captions: Sequence[str], frames: int) -> list[str]:
  """Each caption `frames` times in a row: the image model's prompts for one clip after another."""
  return [caption for caption in captions for _ in range(frames)]


def frame_independent_videos(images: np.ndarray, count: int, frames: int) -> np.ndarray:
  """(count * frames, H, W, 3) images sampled per frame -> (count, frames, H, W, 3) clips."""
  images = np.asarray(images)
  if images.ndim != 4 or len(images) != count * frames:
    raise VideoTableError(
      f"images: expected {count * frames} images (count {count} x frames {frames}) of shape "
      f"(H, W, 3), found shape {images.shape}"
    )
  return images.reshape(count, frames, *images.shape[1:])


def static_videos(images: np.ndarray, frames: int) -> np.ndarray:
  """(N, H, W, 3) images -> (N, frames, H, W, 3): each image held for the whole clip."""
  images = np.asarray(images)
  if images.ndim != 4:
    raise VideoTableError(f"images: expected (N, H, W, 3), found shape {images.shape}")
  return np.repeat(images[:, None], frames, axis=1)


def judged_row(
  method: str,
  videos: np.ndarray,
  captions: Sequence[str],
  seconds_per_video: float | None,
  judge: Callable[[np.ndarray, Sequence[str]], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
  """One table row: the judge's accuracies of uint8 `videos` for `captions`, and the timing
  (None: not a sampler, shown as "–")."""
  videos = np.asarray(videos)
  if videos.dtype != np.uint8 or videos.ndim != 5 or len(videos) != len(captions):
    raise VideoTableError(
      f"{method}: expected uint8 videos (N, T, H, W, 3) with N = {len(captions)} captions, "
      f"found {videos.dtype} {videos.shape}"
    )
  if judge is None:
    from jaxgen.data import video_judge  # pylint: disable=g-import-not-at-top

    judge = video_judge.judge_videos
  accuracy = judge(videos, list(captions))["accuracy"]
  row = {"method": method}
  row.update({column: float(accuracy[column]) for column in JUDGE_COLUMNS})
  row[SECONDS] = "–" if seconds_per_video is None else float(seconds_per_video)
  return row


def timed_per_video(
  run: Callable[[Sequence[int]], np.ndarray], count: int, chunk: int, items_per_video: int = 1
) -> tuple[np.ndarray, float]:
  """(`run(range(count * items_per_video))`, its seconds per video).

  `run(indices)` samples the items (clips, or images) at `indices` in chunks
  of `chunk`; an untimed call on the first min(chunk, total) items compiles
  the chunk shape the timed call uses.
  """
  total = count * items_per_video
  run(range(min(chunk, total)))
  start = time.perf_counter()
  videos = run(range(total))
  return videos, (time.perf_counter() - start) / count


def criteria(
  rows: Sequence[Mapping[str, Any]], baselines: Mapping[str, tuple[str, str]]
) -> dict[str, dict[str, Any]]:
  """The issue's bar for every video row: {method: checks}.

  `baselines` maps a video row's method to the methods of its
  (frame-independent, static) rows. Checks: direction >= DIRECTION_TARGET;
  direction above both baselines; frame_shape and frame_colour at least the
  frame-independent row's minus FRAME_TOLERANCE; "passed": all of them. The
  per-frame gaps (video row minus frame-independent row) are reported too.
  """
  by_method = {row["method"]: row for row in rows}
  result = {}
  for method, (independent, static) in baselines.items():
    missing = [m for m in (method, independent, static) if m not in by_method]
    if missing:
      raise VideoTableError(f"baselines: rows {missing} are not in the table")
    row, image, still = by_method[method], by_method[independent], by_method[static]
    gaps = {}
    checks = {
      f"direction >= {DIRECTION_TARGET}": row["direction"] >= DIRECTION_TARGET,
      "direction above both baselines": row["direction"]
      > max(image["direction"], still["direction"]),
    }
    for column in ("frame_shape", "frame_colour"):
      gap = row[column] - image[column]
      checks[f"{column} within {FRAME_TOLERANCE} of the image model"] = bool(
        gap >= -FRAME_TOLERANCE - 1e-9  # a gap of exactly the tolerance passes
      )
      gaps[f"{column} gap to the image model"] = round(float(gap), 4)
    result[method] = dict(checks, **gaps, passed=all(checks.values()))
  return result


def gif_panels(
  videos: Mapping[str, np.ndarray], index: int, frames: int
) -> tuple[np.ndarray, list[str]]:
  """(P, T, H, W, 3) clip `index` of every row (table order) and the row names as labels."""
  panels = [np.asarray(v[index]) for v in videos.values()]
  for name, panel in zip(videos, panels):
    if panel.shape[0] != frames:
      raise VideoTableError(f"{name}: expected clips of {frames} frames, found {panel.shape}")
  return np.stack(panels), list(videos)


def write_gifs(
  out_stem: str, videos: Mapping[str, np.ndarray], captions: Sequence[str], count: int, fps: float
) -> list[str]:
  """`<out_stem>_gif<i>.gif` for the first `count` captions (a panel per row) and
  `<out_stem>_gifs.json` (file -> caption, panels); returns the GIF paths."""
  from jaxgen.render.motion import write_video  # pylint: disable=g-import-not-at-top
  from jaxgen.tasks.video import video_samples  # pylint: disable=g-import-not-at-top

  frames = next(iter(videos.values())).shape[1]
  paths, index = [], {}
  for i in range(min(count, len(captions))):
    panels, labels = gif_panels(videos, i, frames)
    grid = video_samples.grid_frames(panels, labels, scale=GIF_SCALE, ncols=len(labels))
    path = f"{out_stem}_gif{i}.gif"
    write_video(path, grid, fps)
    paths.append(path)
    index[os.path.basename(path)] = {"caption": captions[i], "panels": labels}
  with open(f"{out_stem}_gifs.json", "w") as f:
    json.dump(index, f, indent=1)
  return paths


# -- runs ------------------------------------------------------------------------


def parse_run(item: str) -> tuple[str, str]:
  """`NAME=RUN_DIR` -> (name, run directory), or a VideoTableError naming the flag."""
  return _common.parse_run(item, VideoTableError, "pixel=runs/video")


def load_video_run(name: str, workdir: str):
  """(task, EMA params) of a run of a task that makes videos from given frames."""
  from jaxgen.tasks import registry  # pylint: disable=g-import-not-at-top

  config = registry.run_config(workdir)
  if not registry.task_class(config).sample_spec.takes_first_frame:
    raise VideoTableError(
      f"--run {name}: {workdir!r} is a run of task {config.task!r}, which makes no videos: "
      "expected a run of text_to_video"
    )
  return registry.load_run(workdir)


def video_model_rows(
  name: str,
  generate: Callable[..., Mapping[str, np.ndarray]],
  data: Mapping[str, np.ndarray],
  *,
  modes: Sequence[str],
  chunk: int,
  keyframe_every: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
  """Rows of one video run in each mode, and the videos. `generate(captions, frames, mode,
  keyframe_every)` -> uint8 clips, sampled `chunk` at a time; frames are the held-out clips
  (None in text mode)."""
  captions, truth = list(data["caption"]), data["video"]
  rows, videos = [], {}
  for mode in modes:

    def run(indices, mode=mode):
      indices = list(indices)
      frames = None if mode == "text" else truth[indices]
      return generate([captions[i] for i in indices], frames, mode, keyframe_every)

    clips, seconds = timed_per_video(run, len(captions), chunk)
    method = f"{name} ({mode})"
    rows.append(judged_row(method, clips, captions, seconds))
    videos[method] = clips
    print(f"{method}: done", flush=True)
  return rows, videos


def image_baseline_rows(
  label: str,
  generate_images: Callable[[Sequence[str]], np.ndarray],
  captions: Sequence[str],
  frames: int,
  *,
  chunk: int,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
  """The frame-independent and static rows of one image run, and their videos.
  `generate_images(captions)` -> uint8 (N, H, W, 3), sampled `chunk` at a time."""
  count = len(captions)
  prompts = per_frame_captions(captions, frames)
  images, independent_seconds = timed_per_video(
    lambda indices: generate_images([prompts[i] for i in indices]), count, chunk, frames
  )
  stills, static_seconds = timed_per_video(
    lambda indices: generate_images([captions[i] for i in indices]), count, chunk
  )
  videos = {
    f"frame-independent ({label})": frame_independent_videos(images, count, frames),
    f"static ({label})": static_videos(stills, frames),
  }
  seconds = (independent_seconds, static_seconds)
  rows = [judged_row(m, v, captions, s) for (m, v), s in zip(videos.items(), seconds)]
  return rows, videos


def same_held_out(data: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], name: str):
  """Named error unless a run's held-out clips are the first run's."""
  if list(data["caption"]) != list(reference["caption"]) or not np.array_equal(
    data["video"], reference["video"]
  ):
    raise VideoTableError(
      f"--run {name}: its held-out clips differ from the first run's; the runs compared must "
      "share data.frames, data.seed and the image run's resolution"
    )


def main(argv=None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR (repeatable)")
  parser.add_argument("--num-videos", type=int, default=64, help="held-out clips judged")
  parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
  parser.add_argument(
    "--keyframe-every", type=int, default=None, help="keyframes mode (default: the run's)"
  )
  parser.add_argument(
    "--steps", type=int, default=None, help="sampling steps for every row (default: each run's)"
  )
  parser.add_argument("--batch-size", type=int, default=16, help="clips (or images) per chunk")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", required=True, help="JSON file of the table")
  parser.add_argument("--gifs", type=int, default=0, help="GIFs of the first K held-out captions")
  args = parser.parse_args(argv)
  count = _common.check_positive("--num-videos", args.num_videos)
  batch = _common.check_positive("--batch-size", args.batch_size)
  modes = [m.strip() for m in args.modes.split(",") if m.strip()]
  if not modes or any(m not in MODES for m in modes):
    raise VideoTableError(f"--modes: expected a comma-separated subset of {MODES}, found {modes}")
  runs = [parse_run(item) for item in args.run]

  import jax  # pylint: disable=g-import-not-at-top

  rng = jax.random.PRNGKey(args.seed)
  options = {} if args.steps is None else {"num_steps": args.steps}
  rows, videos, baselines, image_rows = [], {}, {}, {}
  reference, fps = None, 8.0
  for name, workdir in runs:
    task, params = load_video_run(name, workdir)
    data = task.eval_split(count)
    if reference is None:
      reference, fps = data, float(task.config.sample.fps)
    same_held_out(data, reference, name)

    def generate(captions, frames, mode, keyframe_every, task=task, params=params):
      conditions = dict(task.conditions(captions))
      if frames is not None:
        conditions["frames"] = frames
      return task.generate(
        params,
        conditions,
        rng,
        mode=mode,
        keyframe_every=keyframe_every,
        batch_size=batch,
        **options,
      )["video"]

    model_rows, model_videos = video_model_rows(
      name, generate, data, modes=modes, chunk=batch, keyframe_every=args.keyframe_every
    )
    rows += model_rows
    videos.update(model_videos)
    label = os.path.basename(os.path.normpath(task.config.image.workdir))  # the image run's name
    if label not in image_rows:
      image_task, image_params = task.image_task, task.image_params

      def generate_images(captions, image_task=image_task, image_params=image_params):
        conditions = image_task.conditions(list(captions))
        return image_task.generate(image_params, conditions, rng, batch_size=batch, **options)[
          "image"
        ]

      image_rows[label], image_videos = image_baseline_rows(
        label, generate_images, list(data["caption"]), task.frames, chunk=batch
      )
      videos.update(image_videos)
    independent, static = (row["method"] for row in image_rows[label])
    baselines.update({row["method"]: (independent, static) for row in model_rows})
  for label_rows in image_rows.values():
    rows += label_rows
  captions = list(reference["caption"])
  rows.append(judged_row("ground truth", reference["video"], captions, None))
  videos["ground truth"] = reference["video"]

  checks = criteria(rows, baselines)
  table = _common.markdown_table(rows, COLUMNS)
  machine = _common.machine_line()
  print(machine)
  print(f"{count} held-out clips; seconds per video after a warm-up chunk")
  print(table)
  print(json.dumps(checks, indent=1))
  stem = os.path.splitext(args.out)[0]
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  result = dict(
    machine=machine, num_videos=count, modes=modes, runs=dict(runs), rows=rows, criteria=checks
  )
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  with open(stem + ".md", "w") as f:
    f.write(f"{machine}\n\n{count} held-out clips\n\n{table}\n")
  if args.gifs:
    result["gifs"] = write_gifs(stem, videos, captions, args.gifs, fps)
  return result


if __name__ == "__main__":
  main()
