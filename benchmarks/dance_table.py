"""The music-to-dance comparison table (issue 17): trained runs danced on the same held-out tracks.

    python benchmarks/dance_table.py --run EDGE=/work/dance/edge \
        --run Bailando=/work/dance/bailando_gpt --num-tracks 20 --seconds 12 \
        --out /work/dance/table.json [--seam-seconds 30]

Held-out data: `make_music_dance("test", N, ...)`, one dance per held-out
track, with the seed and sample rate of the first run's `config.data`
(`--seconds` defaults to its clip length). Every music-driven number uses the
data's exact beat times.

Rows:
- `ground truth`: the test dances themselves (the floor of FID, the BAS the
  data has);
- each run: `task.dance_from_music(params, audio, sr, rng)` per test track;
- `<run>, mismatched music` and `ground truth, mismatched music`: the same
  dances scored for BAS against the beats of track (i + 1) mod N instead of
  their own (`dance_table.mismatched_pairing`); the other columns are the
  unpaired row's and shown as "–";
- `retrieval`: per test track, a training dance of the same genre cut to its
  length (`dance_table.retrieve_dances`; the pool is the first run's
  training dances, `config.data.num_examples` of the train split). Its FID is
  low by construction: the reference below holds those very dances.

Columns:
- `BAS`: Beat Align Score on the 60 fps SMPL-24 skeleton
  (`eval_dance.beat_alignment`, Bailando's convention), mean over dances;
- `FID_k`, `FID_g`, `Div_k`, `Div_g`: `jaxgen.metrics.dance` on each dance's
  kinetic / geometric features (`eval_dance.kinetic_geometric_features`).
  The FID reference is the **train split's ground-truth clips**
  (`--reference-clips`, default 256, of the run's clip length): the test
  split has only N tracks, too few for a 72-d covariance, so the ground-truth
  test row shows the floor a model can reach;
- `PFC`: EDGE's physical foot-contact score at 20 fps (lower is better);
- `genre acc`: accuracy of a logistic-regression genre judge on z-scored
  kinetic + geometric features, fitted on the same train-split ground truth
  (`dance_table.fit_genre_judge`; its accuracy on the held-out ground-truth
  test dances is the ground-truth row), each dance labelled with its track's
  genre;
- `s per s`: generation wall time per second of dance, music features
  included, after one warm-up call (compilation), on this machine.

Seam measurement: for each run whose task samples overlapping windows
(`sample_windows`, EDGE's long-form generation), a `--seam-seconds` test
track is danced and the velocity jumps spanning the window joins (frames S +
k S/2, S = config.data.seq_len) are compared with those inside windows
(`dance_table.seam_statistics`; the ground-truth dance of the same track at
the same frames is the reference). Written beside `--out`:
`<out stem>_seam_<run>.mp4` (the dance with its music), `.npy` (joints) and
`.png` (the stick figure at 8 frames around each of the first two joins, a
red bar between the last frame of one window and the first of the next).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common
import jax
import numpy as np
import tqdm

from jaxgen.cli import eval_dance
from jaxgen.data import music_dance, music_synth
from jaxgen.metrics import dance, dance_features, foot_contact
from jaxgen.tasks.dance import dance_table
from jaxgen.tasks.dance.dance_samples import write_music_video

FPS = music_dance.FPS
COLUMNS = ("method", "BAS", "FID_k", "FID_g", "Div_k", "Div_g", "PFC", "genre acc", "s per s")
SEAM_COLUMNS = (
  "dance",
  "join_mean",
  "join_max",
  "inside_mean",
  "inside_max",
  "mean_ratio",
  "max_ratio",
)


class DanceRunError(ValueError):
  """A --run that is not a trained run of a task that dances to music."""


# -- runs ------------------------------------------------------------------------


def parse_run(item: str) -> tuple[str, str]:
  """`NAME=RUN_DIR` -> (name, run directory), or a DanceRunError naming the flag."""
  return _common.parse_run(item, DanceRunError, "EDGE=runs/edge")


def load_dance_run(name: str, workdir: str):
  """(task, EMA params, checkpoint step) of the newest checkpoint of a dance run."""
  from jaxgen.tasks import registry  # pylint: disable=g-import-not-at-top
  from jaxgen.training.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top

  config = registry.run_config(workdir)
  if not hasattr(registry.task_class(config), "dance_from_music"):
    raise DanceRunError(
      f"--run {name}: {workdir!r} is a run of task {config.task!r}, which does not dance to "
      "music (no dance_from_music): expected a run of a dance generator (edge, bailando_gpt)"
    )
  checkpointer = Checkpointer(workdir, read_only=True)
  step = checkpointer.latest_step()
  checkpointer.close()
  if step is None:
    raise DanceRunError(f"--run {name}: {workdir!r} has no checkpoint yet")
  task, params = registry.load_run(workdir, step)
  return task, params, int(step)


def dance_to_tracks(task, params, test, sample_rate: int, seed: int, desc: str):
  """(N, T, 22, 3) dances to each test track and the wall seconds per second of dance."""
  audio = test["audio"]
  keys = [jax.random.fold_in(jax.random.PRNGKey(seed), i) for i in range(len(audio))]
  jax.block_until_ready(task.dance_from_music(params, audio[0], sample_rate, keys[0]))  # compile
  dances, seconds = [], 0.0
  for waveform, key in zip(tqdm.tqdm(audio, desc=desc, unit="track"), keys):
    start = time.perf_counter()
    dances.append(
      np.asarray(jax.block_until_ready(task.dance_from_music(params, waveform, sample_rate, key)))
    )
    seconds += time.perf_counter() - start
  num_frames = test["joints"].shape[1]
  if any(d.shape != (num_frames, music_dance.NUM_JOINTS, 3) for d in dances):
    raise DanceRunError(
      f"{desc}: expected dances of shape ({num_frames}, {music_dance.NUM_JOINTS}, 3), found "
      f"{sorted({d.shape for d in dances})}"
    )
  return np.stack(dances), seconds / (len(audio) * num_frames / FPS)


# -- scores ----------------------------------------------------------------------


def beat_times(data) -> list[np.ndarray]:
  """Each clip's exact beat times (s): `beat_times[:num_beats]`."""
  return [t[:n] for t, n in zip(data["beat_times"], data["num_beats"])]


def features(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Kinetic (N, 72) and geometric (N, 32) features of (N, T, 22, 3) dances at 20 fps."""
  return eval_dance.kinetic_geometric_features(
    [dance_features.to_aist_skeleton(j, FPS) for j in joints]
  )


def mean_bas(joints: np.ndarray, beats: list[np.ndarray]) -> float:
  """Mean BAS of dances (N, T, 22, 3) at 20 fps against beat times (s), one array per dance."""
  return float(
    np.mean(
      [
        eval_dance.beat_alignment(dance_features.to_aist_skeleton(j, FPS), b, f"test track {i}")
        for i, (j, b) in enumerate(zip(joints, beats))
      ]
    )
  )


class Reference:
  """Train-split ground truth: the FID reference features and the genre judge fitted on them."""

  def __init__(self, clips):
    self.kinetic, self.geometric = features(clips["joints"])
    self.judge = dance_table.fit_genre_judge(
      np.concatenate([self.kinetic, self.geometric], 1),
      clips["genre"],
      len(music_synth.GENRE_NAMES),
    )

  def row(self, method: str, joints, beats, genres, seconds_per_second=None) -> dict:
    """Every column of `joints` (N, T, 22, 3), danced to `beats`, of tracks of `genres`."""
    kinetic, geometric = features(joints)
    predicted = self.judge.predict(np.concatenate([kinetic, geometric], 1))
    return {
      "method": method,
      "BAS": mean_bas(joints, beats),
      "FID_k": dance.fid_k(self.kinetic, kinetic),
      "FID_g": dance.fid_g(self.geometric, geometric),
      "Div_k": dance.feature_diversity(self.kinetic, kinetic),
      "Div_g": dance.feature_diversity(self.geometric, geometric),
      "PFC": foot_contact.physical_foot_contact(list(joints), fps=FPS),
      "genre acc": dance_table.accuracy(predicted, genres),
      "s per s": seconds_per_second,
    }


def mismatched_row(method: str, joints, beats) -> dict:
  """BAS of each dance against the next track's beats; the other columns left empty."""
  pairing = dance_table.mismatched_pairing(len(joints))
  return {"method": method, "BAS": mean_bas(joints, [beats[j] for j in pairing])}


# -- seams -----------------------------------------------------------------------


def contact_sheet(joints: np.ndarray, joins: np.ndarray, name: str) -> np.ndarray:
  """Rows of 8 stick-figure frames around each of the first two joins, a red bar at the join."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top

  from jaxgen.render.motion import render_frames  # pylint: disable=g-import-not-at-top

  rows = []
  for join in joins[:2]:
    frames = dance_table.frames_around(int(join), len(joints))
    caption = f"{name}: frames {frames[0]}-{frames[-1]}, window join at frame {join}"
    pictures = []
    for frame, picture in zip(frames, render_frames([joints[frames]], [caption], dpi=100)):
      image = Image.fromarray(picture)
      ImageDraw.Draw(image).text((6, image.height - 16), f"frame {frame}", fill=(0, 0, 0))
      pictures.append(np.asarray(image))
    bar = np.zeros((pictures[0].shape[0], 4, 3), np.uint8)
    bar[..., 0] = 255
    at = int(np.searchsorted(frames, join))  # the first frame of the next window
    rows.append(np.concatenate([*pictures[:at], bar, *pictures[at:]], axis=1))
  return np.concatenate(rows, axis=0)


def measure_seam(task, params, name: str, data_config, seconds: float, stem: str, seed: int):
  """Seam statistics of a `seconds`-long dance (and of the ground truth); writes mp4/npy/png."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  track = music_dance.make_music_dance(
    "test", 1, seconds=seconds, seed=data_config.seed, sample_rate=data_config.sample_rate
  )
  audio = track["audio"][0]
  joints = np.asarray(
    task.dance_from_music(params, audio, data_config.sample_rate, jax.random.PRNGKey(seed))
  )
  joins = dance_table.window_join_frames(len(joints), data_config.seq_len)
  stats = {
    name: dance_table.seam_statistics(joints, joins, FPS),
    "ground truth": dance_table.seam_statistics(track["joints"][0], joins, FPS),
  }
  np.save(stem + ".npy", joints.astype(np.float32))
  video = write_music_video(joints, audio, data_config.sample_rate, f"{name}, {seconds:g} s", stem)
  Image.fromarray(contact_sheet(joints, joins, name)).save(stem + ".png")
  files = {"mp4": video, "npy": stem + ".npy", "png": stem + ".png"}
  return {"joins": joins.tolist(), "seq_len": data_config.seq_len, "stats": stats, "files": files}


# -- table -----------------------------------------------------------------------


def _cells(row: dict, columns) -> dict:
  return {c: "–" if row.get(c) is None else row[c] for c in columns}


def main(argv=None) -> str:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR, repeatable")
  parser.add_argument("--num-tracks", type=int, default=20)
  parser.add_argument("--seconds", type=float, default=None, help="default: the run's clips")
  parser.add_argument("--reference-clips", type=int, default=256)
  parser.add_argument("--seam-seconds", type=float, default=30.0, help="0 leaves it out")
  parser.add_argument("--seed", type=int, default=0, help="sampling seed")
  parser.add_argument("--out", required=True, help="JSON file; seam files go beside it")
  args = parser.parse_args(argv)

  runs = [parse_run(item) for item in args.run]
  loaded = {name: load_dance_run(name, workdir) for name, workdir in runs}
  data = next(iter(loaded.values()))[0].config.data
  seconds = args.seconds or data.seconds
  test = music_dance.make_music_dance(
    "test", args.num_tracks, seconds=seconds, seed=data.seed, sample_rate=data.sample_rate
  )
  train = music_dance.make_music_dance(
    "train",
    max(args.reference_clips, data.num_examples),
    seconds=data.seconds,
    seed=data.seed,
    sample_rate=data.sample_rate,
  )
  reference = Reference({k: v[: args.reference_clips] for k, v in train.items()})
  beats, genres = beat_times(test), test["genre"]

  rows = [reference.row("ground truth", test["joints"], beats, genres)]
  rows.append(mismatched_row("ground truth, mismatched music", test["joints"], beats))
  seam, info = {}, {}
  stem = os.path.splitext(args.out)[0]
  for name, (task, params, step) in loaded.items():
    if task.config.data.seed != data.seed:
      raise DanceRunError(
        f"--run {name}: trained on data seed {task.config.data.seed}, the table's held-out "
        f"tracks are of seed {data.seed} (the first run's): their test tracks differ"
      )
    sample_rate = task.config.data.sample_rate
    music = (
      test
      if sample_rate == data.sample_rate
      else music_dance.make_music_dance(
        "test", args.num_tracks, seconds=seconds, seed=data.seed, sample_rate=sample_rate
      )
    )
    joints, speed = dance_to_tracks(task, params, music, sample_rate, args.seed, name)
    rows.append(reference.row(name, joints, beats, genres, speed))
    rows.append(mismatched_row(f"{name}, mismatched music", joints, beats))
    info[name] = {"workdir": dict(runs)[name], "task": task.config.task, "checkpoint_step": step}
    if args.seam_seconds and hasattr(task, "sample_windows"):
      seam[name] = measure_seam(
        task, params, name, task.config.data, args.seam_seconds, f"{stem}_seam_{name}", args.seed
      )
    elif args.seam_seconds:
      info[name]["seam"] = "not measured: the task samples no overlapping windows"
  pool = {k: train[k][: data.num_examples] for k in ("joints", "genre")}
  retrieved = dance_table.retrieve_dances(
    genres, test["joints"].shape[1], pool["joints"], pool["genre"]
  )
  rows.append(reference.row("retrieval", retrieved, beats, genres))

  lines = [
    f"{args.num_tracks} held-out tracks of {seconds:g} s (data seed {data.seed}); FID reference: "
    f"{args.reference_clips} train-split clips; " + _common.machine_line(),
    ", ".join(
      f"{n}: {i['task']} step {i['checkpoint_step']}"
      + (f" (seams {i['seam']})" if "seam" in i else "")
      for n, i in info.items()
    ),
    "",
    _common.markdown_table([_cells(r, COLUMNS) for r in rows], COLUMNS),
  ]
  for name, result in seam.items():
    lines += [
      "",
      (
        f"Seams of {name} at {args.seam_seconds:g} s: velocity jumps (m/s per frame, mean over "
        f"joints) at {len(result['joins'])} window joins {result['joins']} vs inside windows"
      ),
      "",
      _common.markdown_table(
        [{"dance": d, **_cells(s, SEAM_COLUMNS[1:])} for d, s in result["stats"].items()],
        SEAM_COLUMNS,
      ),
    ]
  table = "\n".join(lines)
  print(table)
  with open(args.out, "w") as f:
    json.dump(
      {
        "rows": rows,
        "runs": info,
        "seam": seam,
        "num_tracks": args.num_tracks,
        "seconds": seconds,
        "reference_clips": args.reference_clips,
        "data": data.to_dict(),
        "table": table,
      },
      f,
      indent=2,
    )
  return table


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
