"""Fréchet Video Distance (Unterthiner et al. 2018) with the I3D network.

FVD is the Fréchet distance between Gaussians fitted to I3D embeddings of
real and generated clips (`jaxgen.metrics.frechet`). The protocol of the
reference implementation (google-research `frechet_video_distance`, TF-Hub
`i3d-kinetics-400`):

* clips of 16 frames (`clip_length`), uint8 RGB;
* every frame resized to 224x224 with TF1 `resize_bilinear`
  (`align_corners=False`, no half-pixel centres), aspect ratio not kept;
* values mapped to [-1, 1] by 2x/255 - 1;
* the embedding is `RGB/inception_i3d/Mean`: the 400 Kinetics logits before
  the softmax, averaged over time.

`feature="logits"` (default) follows that reference, and StyleGAN-V's
torchscript port (`return_features=True`) returns the same 400-d logits, so
numbers are comparable with published FVDs. `feature="pool"` gives the 1024-d
average-pooled Mixed_5c features that some PyTorch ports flatten instead.
`resize="center_crop"` reproduces StyleGAN-V / common_metrics_on_video_quality
preprocessing: the shorter side to 224 with torch bilinear
(`align_corners=False`, half-pixel centres), then a centre crop. For square
videos the two modes differ only by the bilinear sampling grid.

Statistics stream batch by batch in float64, so a large folder never sits in
memory; the network compiles once per (batch, frame size).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxgen.metrics import frechet, video_folder
from jaxgen.models import i3d

FEATURE_DIMS = {"logits": i3d.NUM_CLASSES, "pool": i3d.POOL_FEATURES}
RESIZE_MODES = ("tf1", "center_crop")


@dataclasses.dataclass(frozen=True)
class FVDConfig:
  """How clips become I3D embeddings. The defaults are the reference FVD protocol.

  clip_length: frames per clip, the first ones of each video (16; StyleGAN-V's
      FVD128 uses 128). I3D needs >= 9.
  resolution: side of the square frames I3D sees (224). I3D needs >= 193.
  resize: "tf1" (reference) or "center_crop" (StyleGAN-V), see the module doc.
  feature: "logits" (400-d, reference) or "pool" (1024-d).
  """

  clip_length: int = i3d.CLIP_LENGTH
  resolution: int = i3d.INPUT_SIZE
  resize: str = "tf1"
  feature: str = "logits"

  def __post_init__(self):
    if self.clip_length < i3d.MIN_FRAMES:
      raise ValueError(
        f"clip_length must be >= {i3d.MIN_FRAMES} (I3D's temporal pooling), got {self.clip_length}"
      )
    if self.resolution < i3d.MIN_INPUT_SIZE:
      raise ValueError(
        f"resolution must be >= {i3d.MIN_INPUT_SIZE} (I3D's 7x7 logits pool), got {self.resolution}"
      )
    if self.resize not in RESIZE_MODES:
      raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
    if self.feature not in FEATURE_DIMS:
      raise ValueError(f"feature must be one of {tuple(FEATURE_DIMS)}, got {self.feature!r}")

  @property
  def feature_dim(self) -> int:
    return FEATURE_DIMS[self.feature]


# --- preprocessing ------------------------------------------------------------


def bilinear_matrix(in_size: int, out_size: int, *, half_pixel: bool) -> np.ndarray:
  """(out_size, in_size) float64 matrix of 1-D bilinear interpolation, no antialiasing.

  half_pixel=False: TF1 `resize_bilinear(align_corners=False)`, source
      coordinate dst * in / out.
  half_pixel=True: torch `interpolate(mode="bilinear", align_corners=False)`,
      source (dst + 0.5) * in / out - 0.5, clamped at 0.
  Both clamp the upper neighbour at the last pixel.
  """
  scale = in_size / out_size
  dst = np.arange(out_size, dtype=np.float64)
  src = np.maximum((dst + 0.5) * scale - 0.5, 0.0) if half_pixel else dst * scale
  lower = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  upper = np.minimum(lower + 1, in_size - 1)
  frac = src - lower
  matrix = np.zeros((out_size, in_size), np.float64)
  np.add.at(matrix, (np.arange(out_size), lower), 1.0 - frac)
  np.add.at(matrix, (np.arange(out_size), upper), frac)
  return matrix


def resize_matrices(
  height: int, width: int, resolution: int, resize: str
) -> tuple[np.ndarray, np.ndarray]:
  """(rows (R, H), cols (R, W)) such that rows @ frame @ cols.T is the R x R resized frame."""
  if resize == "tf1":
    return (
      bilinear_matrix(height, resolution, half_pixel=False),
      bilinear_matrix(width, resolution, half_pixel=False),
    )
  if resize != "center_crop":
    raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
  # StyleGAN-V's rule, float rounding included: the shorter side becomes R,
  # the other ceil(side * R / shorter) (height when the sides are equal).
  scale = resolution / min(height, width)
  if height < width:
    out_h, out_w = resolution, math.ceil(width * scale)
  else:
    out_h, out_w = math.ceil(height * scale), resolution
  top, left = (out_h - resolution) // 2, (out_w - resolution) // 2
  rows = bilinear_matrix(height, out_h, half_pixel=True)[top : top + resolution]
  cols = bilinear_matrix(width, out_w, half_pixel=True)[left : left + resolution]
  return rows, cols


@functools.partial(jax.jit, static_argnames=("resolution", "resize"))
def preprocess_clips(clips: jax.Array, *, resolution: int, resize: str) -> jax.Array:
  """(N, T, H, W, 3) uint8 -> (N, T, R, R, 3) float32 in [-1, 1]: resize, then 2x/255 - 1."""
  _, _, height, width, _ = clips.shape
  rows, cols = resize_matrices(height, width, resolution, resize)
  frames = clips.astype(jnp.float32)
  resized = jnp.einsum(
    "rh,nthwc,sw->ntrsc",
    jnp.asarray(rows, jnp.float32),
    frames,
    jnp.asarray(cols, jnp.float32),
    precision=jax.lax.Precision.HIGHEST,
  )
  # Interpolation weights are convex, so only rounding can leave [0, 255].
  return jnp.clip(resized * (2.0 / 255.0) - 1.0, -1.0, 1.0)


def clip_embeddings(variables: Mapping[str, Any], clips: Any, config: FVDConfig) -> np.ndarray:
  """I3D embeddings (N, config.feature_dim) of (N, T, H, W, 3) uint8 clips, as host numpy."""
  clips = np.asarray(clips)
  if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
    raise ValueError(f"clips must be (N, T, H, W, 3) uint8, got {clips.dtype} {clips.shape}")
  videos = preprocess_clips(clips, resolution=config.resolution, resize=config.resize)
  outputs = i3d.i3d_outputs(variables, videos)
  return np.asarray(jax.device_get(getattr(outputs, config.feature)))


# --- folders ------------------------------------------------------------------


def check_folder(folder: str | Path, config: FVDConfig, *, name: str = "folder") -> list[Path]:
  """Lists and header-checks the videos of `folder` (>= clip_length frames, one size)."""
  paths = video_folder.list_videos(folder, name=name)
  video_folder.probe_videos(paths, clip_length=config.clip_length, name=name)
  return paths


def iterate_embeddings(
  paths: Sequence[Path],
  variables: Mapping[str, Any],
  config: FVDConfig = FVDConfig(),
  *,
  batch_size: int = 8,
  progress: bool = True,
  description: str = "i3d",
) -> Iterator[np.ndarray]:
  """Streams (n, D) embeddings of the first `clip_length` frames of each video, batch by batch."""
  with tqdm(total=len(paths), unit="clip", desc=description, disable=not progress) as bar:
    for batch, num_valid in video_folder.iterate_clip_batches(
      paths, clip_length=config.clip_length, batch_size=batch_size
    ):
      yield clip_embeddings(variables, batch, config)[:num_valid]
      bar.update(num_valid)


def embedding_statistics(
  paths: Sequence[Path],
  variables: Mapping[str, Any],
  config: FVDConfig = FVDConfig(),
  **kwargs: Any,
) -> frechet.GaussianStatistics:
  """Float64 running mean/scatter of the embeddings of `paths` (kwargs: iterate_embeddings')."""
  stats = frechet.empty_statistics(config.feature_dim)
  for embeddings in iterate_embeddings(paths, variables, config, **kwargs):
    stats = frechet.update_statistics(stats, embeddings)
  return stats


def fvd_from_embeddings(real: np.ndarray, fake: np.ndarray, *, method: str = "eigh") -> float:
  """FVD of two (N, D) embedding sets: the Fréchet distance of their Gaussians."""
  return frechet.frechet_distance_from_statistics(
    frechet.statistics_from_features(real), frechet.statistics_from_features(fake), method=method
  )
