"""Stick-figure animations of joint positions, written as GIF or MP4.

Each sample is drawn in its own panel from a fixed oblique camera that follows
its root over a ground grid, with the root's path on the floor traced so far
and its caption as the title; panels are tiled in a grid. Matplotlib (Agg)
draws the frames; Pillow writes GIF; MP4 goes through an ffmpeg binary, from
the `imageio-ffmpeg` package or on PATH.
"""

from __future__ import annotations

import os
import subprocess
import textwrap

import numpy as np

from jaxgen.data import ffmpeg, motion_formats

# Chains in kinematic_chain order: right limbs warm (red leg, orange arm),
# left limbs cool (blue leg, green arm), the spine dark.
_CHAIN_COLOURS = ("#c0392b", "#2e6fba", "#333333", "#e67e22", "#16a085")


# Callers catch it from here (`jaxgen.render.motion.FfmpegNotFoundError`).
FfmpegNotFoundError = ffmpeg.FfmpegNotFoundError


def find_ffmpeg() -> str:
  """Path of an ffmpeg binary: imageio-ffmpeg's, else one on PATH."""
  return ffmpeg.find_ffmpeg("writing .mp4 (or write a .gif instead)")


def _check_samples(joints, captions, fmt) -> tuple[list[np.ndarray], list[str]]:
  samples = [joints] if isinstance(joints, np.ndarray) and joints.ndim == 3 else list(joints)
  if not samples:
    raise ValueError("joints must hold at least one sample, got none.")
  checked = []
  for i, sample in enumerate(samples):
    sample = np.asarray(sample, np.float64)
    if sample.ndim != 3 or sample.shape[1:] != (fmt.num_joints, 3):
      raise ValueError(
        f"joints[{i}] must have shape (T, {fmt.num_joints}, 3) ({fmt.name}), got {sample.shape}."
      )
    if sample.shape[0] == 0:
      raise ValueError(f"joints[{i}] must have at least one frame, got 0.")
    if not np.isfinite(sample).all():
      raise ValueError(f"joints[{i}] must be finite, got NaN/inf.")
    checked.append(sample)
  if captions is None:
    captions = [""] * len(checked)
  elif isinstance(captions, str):
    captions = [captions]
  captions = list(captions)
  if len(captions) != len(checked):
    raise ValueError(
      f"captions must have one entry per sample ({len(checked)}), got {len(captions)}."
    )
  return checked, captions


class _Camera:
  """Oblique orthographic view, a proper rotation (never a mirror image).

  World axes are the motion data's: Y up, and a body facing +Z has its left
  at +X. At azimuth 0 the camera stands on the +Z side looking towards -Z, so
  it sees the front of a body facing +Z, whose left hand then appears on the
  viewer's right, as a person facing you does. Positive azimuth (degrees)
  swings the camera about Y towards +X (the body's left); positive elevation
  raises it to look down.
  """

  def __init__(self, azimuth: float, elevation: float):
    self.az, self.el = np.deg2rad(azimuth), np.deg2rad(elevation)

  def project(self, points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(..., 3) world points -> (..., 2) screen coordinates (right, up)."""
    p = points - centre * np.array([1.0, 0.0, 1.0])
    # Screen right is view direction x up: (cos az, 0, -sin az); the depth
    # axis (away from the camera) is (-sin az, 0, -cos az). Points further
    # away draw higher because the camera looks down.
    x = p[..., 0] * np.cos(self.az) - p[..., 2] * np.sin(self.az)
    depth = -p[..., 0] * np.sin(self.az) - p[..., 2] * np.cos(self.az)
    y = p[..., 1] * np.cos(self.el) + depth * np.sin(self.el)
    return np.stack([x, y], axis=-1)


class _Panel:
  """The artists of one sample, updated per frame."""

  def __init__(self, ax, joints, caption, fmt, camera):
    self.joints, self.camera = joints, camera
    self.chains = fmt.kinematic_chain
    height = joints[..., 1].max() - joints[..., 1].min()
    self.scale = max(height, 1e-3)
    self.extent = 0.75 * self.scale
    ax.set_xlim(-self.extent, self.extent)
    ax.set_ylim(-0.55 * self.extent, 1.6 * self.extent)
    ax.set_aspect("equal")
    ax.axis("off")
    if caption:
      ax.set_title("\n".join(textwrap.wrap(caption, 38)), fontsize=8)
    self.grid = [ax.plot([], [], color="#bbbbbb", lw=0.6)[0] for _ in range(2 * 9)]
    self.trace = ax.plot([], [], color="#8e44ad", lw=1.2)[0]
    self.bones = [
      ax.plot([], [], color=_CHAIN_COLOURS[i % 5], lw=2.2, solid_capstyle="round")[0]
      for i in range(len(self.chains))
    ]

  def draw(self, t: int):
    t = min(t, len(self.joints) - 1)  # Shorter samples hold their end pose.
    pose = self.joints[t]
    centre = pose[0]
    floor = self.joints[..., 1].min()
    # Ground grid: lines every scale/4 around the root, moving with it.
    spacing = self.scale / 4
    base = np.floor(centre[[0, 2]] / spacing) * spacing
    ticks = (np.arange(9) - 4) * spacing
    reach = 4 * spacing
    for i, tick in enumerate(ticks):
      for k, line in enumerate((self.grid[2 * i], self.grid[2 * i + 1])):
        ends = np.zeros((2, 3))
        ends[:, 1] = floor
        if k == 0:  # Lines of constant x.
          ends[:, 0] = base[0] + tick
          ends[:, 2] = centre[2] + np.array([-reach, reach])
        else:
          ends[:, 2] = base[1] + tick
          ends[:, 0] = centre[0] + np.array([-reach, reach])
        uv = self.camera.project(ends, centre)
        line.set_data(uv[:, 0], uv[:, 1])
    path = self.joints[: t + 1, 0] * np.array([1.0, 0.0, 1.0])
    path[:, 1] = floor
    uv = self.camera.project(path, centre)
    self.trace.set_data(uv[:, 0], uv[:, 1])
    for line, chain in zip(self.bones, self.chains):
      uv = self.camera.project(pose[list(chain)], centre)
      line.set_data(uv[:, 0], uv[:, 1])


def render_frames(
  joints,
  captions=None,
  fmt=motion_formats.HUMANML3D,
  ncols: int | None = None,
  panel_inches: float = 2.6,
  dpi: int = 72,
  azimuth: float = -35.0,
  elevation: float = 20.0,
) -> np.ndarray:
  """Draws every frame: (T_max, H, W, 3) uint8, H and W even."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg", force=False)
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  samples, captions = _check_samples(joints, captions, fmt)
  n = len(samples)
  ncols = ncols or min(n, 4)
  nrows = -(-n // ncols)
  fig = Figure(figsize=(ncols * panel_inches, nrows * (panel_inches + 0.35)), dpi=dpi)
  canvas = FigureCanvasAgg(fig)
  camera = _Camera(azimuth, elevation)
  panels = [
    _Panel(fig.add_subplot(nrows, ncols, i + 1), s, c, fmt, camera)
    for i, (s, c) in enumerate(zip(samples, captions))
  ]
  fig.tight_layout()
  frames = []
  for t in range(max(len(s) for s in samples)):
    for panel in panels:
      panel.draw(t)
    canvas.draw()
    frames.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
  video = np.stack(frames)
  h, w = video.shape[1] // 2 * 2, video.shape[2] // 2 * 2
  return video[:, :h, :w]


def _write_gif(path: str, frames: np.ndarray, fps: float):
  from PIL import Image  # pylint: disable=g-import-not-at-top

  images = [Image.fromarray(f) for f in frames]
  images[0].save(
    path,
    save_all=True,
    append_images=images[1:],
    duration=int(round(1000 / fps)),
    loop=0,
    optimize=False,
  )


def _write_mp4(path: str, frames: np.ndarray, fps: float):
  ffmpeg = find_ffmpeg()
  _, h, w, _ = frames.shape
  command = [
    ffmpeg,
    "-y",
    "-loglevel",
    "error",
    "-f",
    "rawvideo",
    "-pix_fmt",
    "rgb24",
    "-s",
    f"{w}x{h}",
    "-r",
    f"{fps}",
    "-i",
    "-",
    "-an",
    "-vcodec",
    "libx264",
    "-pix_fmt",
    "yuv420p",
    path,
  ]
  result = subprocess.run(command, input=frames.tobytes(), capture_output=True, check=False)
  if result.returncode:
    raise RuntimeError(
      f"ffmpeg failed writing {path!r}: {result.stderr.decode(errors='replace')[-500:]}"
    )


def render_motion(
  joints,
  captions=None,
  path: str = "motion.gif",
  fps: float | None = None,
  fmt: motion_formats.MotionFormat = motion_formats.HUMANML3D,
  **kwargs,
) -> str:
  """Writes stick-figure animations of one or several samples.

  Args:
    joints: (T, J, 3) joint positions (Y up), or a list of them (lengths may
      differ; shorter samples hold their last pose).
    captions: one title per sample (or a single string), or None.
    path: output file, ".gif" (Pillow) or ".mp4" (ffmpeg, see find_ffmpeg).
    fps: frames per second (default: the format's).
    fmt: skeleton format, for the kinematic chains.
    **kwargs: layout options of `render_frames` (ncols, panel_inches, dpi,
      azimuth, elevation; see `_Camera`: the default views a body facing +Z,
      as every recovered clip starts, from its front right).

  Returns:
    `path`.
  """
  extension = os.path.splitext(path)[1].lower()
  if extension not in (".gif", ".mp4"):
    raise ValueError(f"path must end with .gif or .mp4, got {path!r}.")
  fps = fmt.fps if fps is None else fps
  if not fps > 0:
    raise ValueError(f"fps must be positive, got {fps}.")
  if extension == ".mp4":
    find_ffmpeg()  # Fail before drawing anything.
  frames = render_frames(joints, captions, fmt, **kwargs)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return write_video(path, frames, fps)


def write_video(path: str, frames: np.ndarray, fps: float) -> str:
  """uint8 frames (T, H, W, 3) as a looping `.gif` (Pillow) or an H.264 `.mp4` (even H, W)."""
  (_write_gif if path.lower().endswith(".gif") else _write_mp4)(path, frames, fps)
  return path
