"""Tests for stick-figure motion rendering."""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from jaxgen.data import motion, motion_formats, synthetic_motion
from jaxgen.render import motion as render


@pytest.fixture(scope="module")
def samples():
  data = synthetic_motion.make_split("test", num_examples=3)
  joints = [
    motion.features_to_joints(data["motion"][i, :n])[:n] for i, n in enumerate(data["length"])
  ]
  return [j[: 12 + 4 * i] for i, j in enumerate(joints)], data["caption"]


def test_gif_has_one_frame_per_pose_of_the_longest_sample(samples, tmp_path):
  joints, captions = samples
  path = render.render_motion(joints, captions, str(tmp_path / "a.gif"), dpi=40)
  with Image.open(path) as gif:
    assert gif.n_frames == max(len(j) for j in joints)
    assert gif.info["duration"] == 50  # 20 fps.
    gif.seek(gif.n_frames - 1)
    frame = np.asarray(gif.convert("RGB"))
  assert frame.std() > 0  # Something was drawn.


def test_frames_draw_figure_and_grid(samples):
  joints, captions = samples
  frames = render.render_frames(joints[:1], captions[:1], dpi=40)
  assert frames.shape[0] == len(joints[0]) and frames.dtype == np.uint8
  assert frames.shape[1] % 2 == 0 and frames.shape[2] % 2 == 0
  # Bone colours (red and blue chains) and the grey grid are present.
  pixels = frames[0].reshape(-1, 3).astype(int)
  assert ((pixels[:, 0] > 150) & (pixels[:, 2] < 100)).any()
  assert ((pixels[:, 2] > 150) & (pixels[:, 0] < 100)).any()
  # The figure moves between frames.
  assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).sum() > 0


def test_mp4_is_written_with_ffmpeg(samples, tmp_path):
  ffmpeg = render.find_ffmpeg()
  joints, captions = samples
  path = render.render_motion(joints[0], captions[0], str(tmp_path / "a.mp4"), dpi=40)
  probe = subprocess.run(
    [ffmpeg, "-i", path, "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
    capture_output=True,
    text=True,
  )
  assert "Video: h264" in probe.stderr
  assert f"frame={len(joints[0]):5d}" in probe.stderr or f"frame= {len(joints[0])}" in probe.stderr


def test_missing_ffmpeg_raises_named_error(monkeypatch, samples, tmp_path):
  import builtins

  real_import = builtins.__import__

  def no_imageio_ffmpeg(name, *args, **kwargs):
    if name == "imageio_ffmpeg":
      raise ImportError(name)
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_imageio_ffmpeg)
  monkeypatch.setattr(shutil, "which", lambda name: None)
  with pytest.raises(render.FfmpegNotFoundError, match="pip install imageio-ffmpeg"):
    render.render_motion(samples[0][0], None, str(tmp_path / "a.mp4"))
  assert not (tmp_path / "a.mp4").exists()


def test_bad_inputs(samples, tmp_path):
  joints, _ = samples
  with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
    render.render_motion(joints[0], None, str(tmp_path / "a.avi"))
  with pytest.raises(ValueError, match=r"joints\[0\] must have shape"):
    render.render_motion(np.zeros((5, 21, 3)), None, str(tmp_path / "a.gif"))
  with pytest.raises(ValueError, match="one entry per sample"):
    render.render_motion(joints, ["only one"], str(tmp_path / "a.gif"))
  with pytest.raises(ValueError, match="fps must be positive"):
    render.render_motion(joints[0], None, str(tmp_path / "a.gif"), fps=0)
  bad = joints[0].copy()
  bad[2, 3] = np.nan
  with pytest.raises(ValueError, match="finite"):
    render.render_motion(bad, None, str(tmp_path / "a.gif"))
  # KIT-ML skeleton renders with its own chains.
  kit = np.random.default_rng(0).normal(size=(3, 21, 3))
  path = render.render_motion(
    kit, "kit", str(tmp_path / "k.gif"), fmt=motion_formats.KIT_ML, dpi=30
  )
  with Image.open(path) as gif:
    assert gif.n_frames == 3


def _colour_pixels(frame, hex_colour, tolerance=60):
  """(rows, cols) of the pixels close to one chain colour."""
  rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
  close = np.abs(frame.astype(int) - rgb).sum(-1) < tolerance
  return np.nonzero(close)


def test_figure_is_not_mirrored():
  """A body facing the camera shows its left hand on the viewer's right.

  Skeleton convention (`synthetic_motion._REST_OFFSETS`): Y up, a body facing
  +Z has its left at +X. The pose holds the LEFT arm out sideways (+X) and
  steps forward (+Z) with the LEFT foot. The camera looks down (elevation >
  0), so the nearer of two feet on the floor draws lower: the forward foot
  drawn lower means the body faces the camera, and then its left arm must
  be on the viewer's right, as a person facing you raises their left hand
  on your right. Turned 180 degrees (seen from behind) both flip. A mirrored
  projection breaks the pairing in one of the two views.
  """
  fmt = motion_formats.HUMANML3D
  pose = np.zeros((22, 3))
  for j in range(1, 22):
    pose[j] = pose[fmt.parents[j]] + synthetic_motion._REST_OFFSETS[j]
  pose[18] = pose[16] + [0.27, 0.0, 0.0]  # Left elbow and wrist out to the left.
  pose[20] = pose[18] + [0.25, 0.0, 0.0]
  pose[[4, 7, 10]] += [0.0, 0.0, 0.3]  # Left leg a step forward, right leg back.
  pose[[5, 8, 11]] -= [0.0, 0.0, 0.3]
  pose[:, 1] -= pose[:, 1].min()
  left_arm, right_arm, left_leg, right_leg = "#16a085", "#e67e22", "#2e6fba", "#c0392b"
  for turn, faces_camera in ((0.0, True), (np.pi, False)):
    c, s = np.cos(turn), np.sin(turn)
    turned = pose @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]).T
    frame = render.render_frames(turned[None], dpi=50)[0]  # The default camera.
    forward_foot_lower = (
      _colour_pixels(frame, left_leg)[0].max() > _colour_pixels(frame, right_leg)[0].max()
    )
    left_on_right = (
      _colour_pixels(frame, left_arm)[1].mean() > _colour_pixels(frame, right_arm)[1].mean()
    )
    assert forward_foot_lower == faces_camera, turn
    assert left_on_right == faces_camera, turn
