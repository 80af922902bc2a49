"""The text-to-video table's arithmetic (benchmarks/video_table.py), without a model or a compile.

The real motion judge scores held-out ground-truth clips; stand-in samplers
(an oracle that returns the true clips, one that returns a frame per
caption occurrence) check the wiring: warm-up chunks, the frames each mode
is given, the per-frame reshaping of the frame-independent baseline, the
static baseline and the issue's criteria.
"""

import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxgen.data import video_shapes

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
FRAMES = 8
COUNT = 4


def load_benchmark(name: str):
  path = os.path.join(BENCHMARKS, f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


vt = load_benchmark("video_table")


@pytest.fixture(scope="module")
def data():
  return video_shapes.make_video_split("test", COUNT, 16, FRAMES, seed=1)


def test_frame_independent_and_static_videos_keep_the_clip_order():
  assert vt.per_frame_captions(["a", "b"], 3) == ["a", "a", "a", "b", "b", "b"]
  images = np.arange(6 * 2 * 2 * 3, dtype=np.uint8).reshape(6, 2, 2, 3)
  videos = vt.frame_independent_videos(images, 2, 3)
  assert videos.shape == (2, 3, 2, 2, 3)
  np.testing.assert_array_equal(videos[1, 0], images[3])
  static = vt.static_videos(images[:2], 3)
  assert static.shape == (2, 3, 2, 2, 3)
  np.testing.assert_array_equal(static[1, 2], images[1])
  with pytest.raises(vt.VideoTableError, match=r"expected 8 images \(count 2 x frames 4\)"):
    vt.frame_independent_videos(images, 2, 4)


def test_ground_truth_and_static_rows(data):
  captions = list(data["caption"])
  truth = vt.judged_row("ground truth", data["video"], captions, None)
  assert list(truth) == list(vt.COLUMNS) and truth[vt.SECONDS] == "–"
  assert truth["direction"] == truth["speed"] == truth["consistent"] == 1.0
  static = vt.judged_row("static", vt.static_videos(data["video"][:, 0], FRAMES), captions, 0.5)
  assert static["direction"] == 0.0  # nothing moves, grows or turns colour
  assert static["consistent"] == 1.0 and static[vt.SECONDS] == 0.5
  with pytest.raises(vt.VideoTableError, match="w: expected uint8 videos"):
    vt.judged_row("w", data["video"].astype(np.float32), captions, 1.0)


def test_video_model_rows_warm_up_then_give_each_mode_its_frames(data):
  calls = []

  def oracle(captions, frames, mode, keyframe_every):
    calls.append((mode, len(captions), None if frames is None else frames.copy(), keyframe_every))
    index = [list(data["caption"]).index(c) for c in captions]
    return data["video"][index]

  rows, videos = vt.video_model_rows(
    "pixel", oracle, data, modes=vt.MODES, chunk=3, keyframe_every=5
  )
  assert [(mode, n) for mode, n, _, _ in calls] == [
    ("text", 3),
    ("text", COUNT),
    ("first_frame", 3),
    ("first_frame", COUNT),
    ("keyframes", 3),
    ("keyframes", COUNT),
  ]
  assert calls[1][2] is None and all(k == 5 for *_, k in calls)
  np.testing.assert_array_equal(calls[3][2], data["video"])
  np.testing.assert_array_equal(calls[4][2], data["video"][:3])
  assert [row["method"] for row in rows] == [
    "pixel (text)",
    "pixel (first_frame)",
    "pixel (keyframes)",
  ]
  truth = vt.judged_row("truth", data["video"], list(data["caption"]), None)
  for row in rows:
    assert row[vt.SECONDS] > 0
    assert {k: row[k] for k in vt.JUDGE_COLUMNS} == {k: truth[k] for k in vt.JUDGE_COLUMNS}
  assert list(videos) == [row["method"] for row in rows]


def test_image_baseline_rows_sample_every_frame_and_one_still(data):
  captions = list(data["caption"])
  calls = []

  def per_occurrence(prompts):
    """Frame k of a caption's clip for its k-th prompt: the per-frame prompts rebuild the clips."""
    calls.append(len(prompts))
    seen = {}
    images = []
    for prompt in prompts:
      k = seen[prompt] = seen.get(prompt, -1) + 1
      images.append(data["video"][captions.index(prompt), k])
    return np.stack(images)

  rows, videos = vt.image_baseline_rows("image", per_occurrence, captions, FRAMES, chunk=5)
  assert calls == [5, COUNT * FRAMES, COUNT, COUNT]  # warm-up chunks, then the whole sets
  independent, static = rows
  assert (
    independent["method"] == "frame-independent (image)" and static["method"] == "static (image)"
  )
  np.testing.assert_array_equal(videos["frame-independent (image)"], data["video"])
  np.testing.assert_array_equal(videos["static (image)"][:, 3], data["video"][:, 0])
  assert independent["direction"] == 1.0 and static["direction"] == 0.0
  assert independent[vt.SECONDS] > 0 and static[vt.SECONDS] > 0


def _row(method, direction, shape=0.9, colour=0.9):
  row = {c: 0.5 for c in vt.JUDGE_COLUMNS}
  row.update(method=method, direction=direction, frame_shape=shape, frame_colour=colour)
  return row


def test_criteria_are_the_issues_bar():
  rows = [
    _row("good", 0.85, shape=0.86, colour=0.95),
    _row("slow colour", 0.9, colour=0.8),
    _row("still", 0.7),
    _row("frame-independent", 0.1),
    _row("static", 0.0),
  ]
  pair = ("frame-independent", "static")
  checks = vt.criteria(rows, {"good": pair, "slow colour": pair, "still": pair})
  assert checks["good"]["passed"]
  assert checks["good"]["frame_shape gap to the image model"] == pytest.approx(-0.04)
  assert not checks["slow colour"]["passed"]
  assert not checks["slow colour"]["frame_colour within 0.05 of the image model"]
  assert not checks["still"]["passed"] and not checks["still"]["direction >= 0.8"]
  assert checks["still"]["direction above both baselines"]
  rows[3]["direction"] = 0.95  # a baseline that moves better than the video model
  assert not vt.criteria(rows, {"good": pair})["good"]["direction above both baselines"]
  with pytest.raises(vt.VideoTableError, match=r"rows \['nope'\] are not in the table"):
    vt.criteria(rows, {"good": ("nope", "static")})


def test_gifs_hold_one_panel_per_row(data, tmp_path):
  videos = {"truth": data["video"], "static": vt.static_videos(data["video"][:, 0], FRAMES)}
  paths = vt.write_gifs(str(tmp_path / "table"), videos, list(data["caption"]), 2, fps=8.0)
  assert [os.path.basename(p) for p in paths] == ["table_gif0.gif", "table_gif1.gif"]
  with Image.open(paths[1]) as gif:
    assert gif.n_frames == FRAMES
    assert gif.size[0] >= 2 * 16 * vt.GIF_SCALE
  index = json.loads((tmp_path / "table_gifs.json").read_text())
  assert index["table_gif1.gif"] == {"caption": data["caption"][1], "panels": ["truth", "static"]}


def test_runs_are_checked(data, tmp_path):
  with pytest.raises(vt.VideoTableError, match="--run: expected NAME=RUN_DIR"):
    vt.parse_run("runs/video")
  with pytest.raises(vt.VideoTableError, match="holds no config.json"):
    vt.parse_run(f"pixel={tmp_path}")
  other = dict(data, caption=np.roll(data["caption"], 1))
  with pytest.raises(vt.VideoTableError, match="--run latent: its held-out clips differ"):
    vt.same_held_out(other, data, "latent")
  with pytest.raises(vt.VideoTableError, match="--modes: expected a comma-separated subset"):
    vt.main(["--run", "x=y", "--modes", "text,backwards", "--out", str(tmp_path / "t.json")])
