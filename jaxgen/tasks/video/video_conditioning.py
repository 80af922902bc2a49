"""Make-A-Video's masked-frame conditioning, and the inflation of a text-to-image run into it.

One video model serves three modes, as Make-A-Video's masked frame
interpolation does: the U-Net reads, beside the noisy video, the known
frames' pixels (zeros elsewhere) and a binary mask channel that marks them.
  "text"         no frame known (mask all 0): text-to-video;
  "first_frame"  frame 0 known: image-to-video;
  "keyframes"    every k-th frame known (0, k, 2k, ...): interpolation.
Training draws a mode per example, so the mask is data, not structure: one
compiled sampler serves every mode.

Inflation from the image run keeps the image model's function exactly: the
new input channels get zero kernels in `conv_in`; caption words the image
tokenizer lacks (the motion words) start as its [UNK] row, which is what the
image model saw for them; position rows past the image's caption length are
drawn like a fresh init (no image caption reached them).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.diffusion.samplers import SamplingOptionError

MODES = ("text", "first_frame", "keyframes")
MASKED_FRAME_CHANNELS = 3  # the known frames' RGB
MASK_CHANNELS = 1
EXTRA_CHANNELS = MASKED_FRAME_CHANNELS + MASK_CHANNELS


class VideoModeError(SamplingOptionError):
  """An unknown conditioning mode, or a mode without the frames it needs.

  A `SamplingOptionError` whose `option` is "mode" (or the config key), so
  `jaxgen sample` names the flag that set it.
  """


class KeyframeSpecError(SamplingOptionError):
  """A keyframe spacing no clip of this length can use (`option`: "keyframe_every" or the key)."""


def check_mode(mode) -> str:
  """`mode` if it is one of MODES, else a VideoModeError."""
  if mode not in MODES:
    raise VideoModeError("mode", f"expected one of {MODES}, found {mode!r}")
  return mode


def check_keyframe_every(keyframe_every, frames: int, name: str = "keyframe_every") -> int:
  """A spacing k in [2, frames - 1]: keyframes 0, k, 2k, ... leave frames between them."""
  if isinstance(keyframe_every, bool) or not isinstance(keyframe_every, (int, np.integer)):
    raise KeyframeSpecError(
      name, f"expected an integer spacing of keyframes, found {keyframe_every!r}"
    )
  if not 2 <= keyframe_every <= frames - 1:
    raise KeyframeSpecError(
      name,
      f"expected a spacing in [2, {frames - 1}] for clips of {frames} frames (keyframes "
      f"0, k, 2k, ... with frames to generate between them), found {keyframe_every}",
    )
  return int(keyframe_every)


def frame_mask(mode: str, frames: int, keyframe_every: int | None = None) -> np.ndarray:
  """float32 (frames,): 1 where a mode's frame is known, 0 where it is generated."""
  check_mode(mode)
  index = np.arange(frames)
  if mode == "text":
    return np.zeros(frames, np.float32)
  if mode == "first_frame":
    return (index == 0).astype(np.float32)
  k = check_keyframe_every(keyframe_every, frames)
  return (index % k == 0).astype(np.float32)


def conditioning_channels(known: jax.Array, mask: jax.Array) -> jax.Array:
  """(B, T, H, W, 4): known frames' pixels in [-1, 1] (0 where unknown) and the mask channel.

  `known` (B, T, H, W, 3) holds any values at unknown frames; `mask` is (B, T).
  """
  m = mask.astype(known.dtype)[:, :, None, None, None]
  m_channel = jnp.broadcast_to(m, (*known.shape[:-1], MASK_CHANNELS))
  return jnp.concatenate([known * m, m_channel], axis=-1)


def check_mode_probabilities(probabilities: Sequence[float]) -> np.ndarray:
  """The probabilities of (text, first_frame, keyframes) as float32, with named errors."""
  p = np.asarray(probabilities, np.float64)
  if p.shape != (len(MODES),) or not np.all(np.isfinite(p)) or np.any(p < 0):
    raise VideoModeError(
      "modes.probabilities",
      f"expected {len(MODES)} non-negative numbers for {MODES}, found {tuple(probabilities)!r}",
    )
  if not np.isclose(p.sum(), 1.0):
    raise VideoModeError("modes.probabilities", f"expected a sum of 1, found {p.sum():.4f}")
  return p.astype(np.float32)


def training_masks(
  rng: jax.Array,
  batch: int,
  frames: int,
  probabilities: np.ndarray,
  keyframe_spacings: Sequence[int],
) -> jax.Array:
  """(B, T) float32 masks, each example drawing a mode (and a keyframe spacing) at random."""
  mode_rng, spacing_rng = jax.random.split(rng)
  mode = jax.random.choice(mode_rng, len(MODES), (batch,), p=jnp.asarray(probabilities))
  k = jax.random.choice(spacing_rng, jnp.asarray(keyframe_spacings, jnp.int32), (batch,))
  index = jnp.arange(frames)[None, :]
  first = index == 0
  keys = index % k[:, None] == 0
  known = jnp.where((mode == 1)[:, None], first, jnp.where((mode == 2)[:, None], keys, False))
  return known.astype(jnp.float32)


# -- inflation -------------------------------------------------------------------


def conv_in_sources(patch: int, coords: bool, image_channels: int = 3) -> np.ndarray:
  """For each input channel of the video U-Net, its image U-Net channel (-1: a new one).

  Inputs are patched per pixel as `space_to_depth` lays them out, (p q c),
  video c over [noisy RGB, known RGB, mask] and image c over RGB, then the
  two coordinate maps.
  """
  video_c = image_channels + EXTRA_CHANNELS
  sources = np.full(patch * patch * video_c + (2 if coords else 0), -1, np.int64)
  for cell in range(patch * patch):
    for c in range(image_channels):
      sources[cell * video_c + c] = cell * image_channels + c
  if coords:
    sources[-2:] = patch * patch * image_channels + np.arange(2)
  return sources


def widen_conv_in(kernel: jax.Array, sources: np.ndarray) -> jax.Array:
  """(kh, kw, C_image, F) -> (kh, kw, len(sources), F), new input channels zero."""
  picked = jnp.take(jnp.asarray(kernel), jnp.asarray(np.maximum(sources, 0)), axis=2)
  return jnp.where(jnp.asarray(sources >= 0)[None, None, :, None], picked, 0.0)


def token_rows(video_ids: Sequence[int], image_ids: Sequence[int], vocab_size: int) -> np.ndarray:
  """(vocab_size,) image-table row of each video token: the same word's, else [UNK]'s.

  `video_ids[i]` and `image_ids[i]` are one word's ids in the two tokenizers
  (the image's [UNK] id where it lacks the word); ids missing from
  `video_ids` (the special tokens) map to themselves.
  """
  rows = np.arange(vocab_size)
  rows[np.asarray(video_ids)] = np.asarray(image_ids)
  return rows


def extend_positions(positions: jax.Array, length: int, rng: jax.Array) -> jax.Array:
  """(L_image, D) learned positions -> (length, D); new rows N(0, 1), as the table's init."""
  extra = length - positions.shape[0]
  if extra <= 0:
    return positions[:length]
  fresh = jax.random.normal(rng, (extra, positions.shape[1]), positions.dtype)
  return jnp.concatenate([positions, fresh], axis=0)
