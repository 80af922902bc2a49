"""Talking-face training data: procedural talking heads cut the way Wav2Lip reads its videos.

Every talking-face task (the `wav2lip_expert` lip-sync expert, the `wav2lip`
generator, diffusion models) trains on clips of `data.talking_heads`:

* `make_clips(data, split, num_clips)` draws the clips of a split (held-out
  identities and utterances in "validation" and "test") as `TalkingClips`:
  the uint8 frames, the audio, the ground-truth mouth track, and each frame's
  Wav2Lip mel window (`data.audio.wav2lip_mel` once per clip, then
  `mel_windows`: frame i hears the 16 mel frames, 0.2 s, from int(3.2 i)).
* Random windows per step, as the reference's data loaders draw them:
  `expert_example` (color_syncnet_train.py) and `generator_example`
  (hq_wav2lip_train.py) pick a clip's window of `SYNC_FRAMES` consecutive
  frames and a second, different window of the same clip.
  `window_dataset(clips, example, repeats)` wraps either as the trainer's
  `ExampleDataset` (records are clip indices; the transform draws the windows
  from its generator, so every epoch sees new windows).
* `masked_faces(target, reference)`: the generator's 6-channel input, the
  target with its lower half zeroed beside the reference.

The config block is `data`: `num_clips`, `seconds`, `size` (must be
`FACE_SIZE`, 96: Wav2Lip's networks are fixed to it), `seed` and `repeats`
(how many windows of each clip an epoch draws). The transforms run in this
process (`worker_count=0`): the clips are already in memory and the
transform only slices them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data import audio, talking_heads
from jaxgen.data.grain_pipeline import ExampleDataset

FACE_SIZE = 96  # Wav2Lip's face crops
FPS = talking_heads.FPS
SYNC_FRAMES = 5  # frames per window: the expert's and the generator's
MEL_STEPS = audio.MEL_WINDOW
NUM_MELS = audio.NUM_MELS
DATA_KEYS = ("num_clips", "seconds", "size", "seed", "repeats")


class TalkingDataError(ValueError):
  """A `data` config or clip request talking-face data cannot be built from."""


@dataclasses.dataclass(frozen=True)
class TalkingClips:
  """Clips of one split, host arrays with N clips of T frames.

  Attributes:
    video: (N, T, 96, 96, 3) uint8 frames.
    mel: (N, T, 16, 80) float32, each frame's mel window in [-4, 4].
    audio: (N, T * 640) float32 speech at 16 kHz.
    mouth: (N, T, 3) float32 ground-truth opening, width, rounding.
    identity, utterance: (N,) int32 ids (disjoint between splits).
  """

  video: np.ndarray
  mel: np.ndarray
  audio: np.ndarray
  mouth: np.ndarray
  identity: np.ndarray
  utterance: np.ndarray

  @property
  def num_clips(self) -> int:
    return self.video.shape[0]

  @property
  def num_frames(self) -> int:
    return self.video.shape[1]


def check_data_config(data: Mapping[str, Any]) -> None:
  """Named errors for a `data` block the talking-face tasks cannot build clips from."""
  missing = [key for key in DATA_KEYS if key not in data]
  if missing:
    raise TalkingDataError(f"data: expected keys {DATA_KEYS}, missing {missing}")
  if data["size"] != FACE_SIZE:
    raise TalkingDataError(
      f"data.size: expected {FACE_SIZE} (Wav2Lip's networks work on {FACE_SIZE}x{FACE_SIZE} "
      f"faces; narrow them with a width multiplier instead), found {data['size']!r}"
    )
  if data["seconds"] * FPS < 2 * SYNC_FRAMES:
    raise TalkingDataError(
      f"data.seconds: expected at least {2 * SYNC_FRAMES / FPS:g} s (two distinct windows of "
      f"{SYNC_FRAMES} frames), found {data['seconds']!r}"
    )
  repeats = data["repeats"]
  if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
    raise TalkingDataError(f"data.repeats: expected an integer >= 1, found {repeats!r}")


def make_clips(
  data: Mapping[str, Any], split: str, num_clips: int | None = None, start: int = 0
) -> TalkingClips:
  """Clips start .. start + num_clips - 1 (default `data.num_clips`) of `split`, with mel windows.

  Faces are `data.size` pixels; the Wav2Lip tasks hold that to 96 through
  `check_data_config`, other tasks check their own sizes.
  """
  heads = talking_heads.make_talking_heads(
    split,
    num_clips=data["num_clips"] if num_clips is None else num_clips,
    seconds=data["seconds"],
    size=data["size"],
    seed=data["seed"],
    start=start,
  )
  num_frames = heads["video"].shape[1]
  mel = np.stack([audio.mel_windows(audio.wav2lip_mel(a), num_frames, FPS) for a in heads["audio"]])
  return TalkingClips(
    video=heads["video"],
    mel=mel,
    audio=heads["audio"],
    mouth=heads["mouth"],
    identity=heads["identity"],
    utterance=heads["utterance"],
  )


def window_starts(num_frames: int) -> int:
  """How many windows of `SYNC_FRAMES` consecutive frames a clip of `num_frames` holds."""
  return num_frames - SYNC_FRAMES + 1


def two_windows(rng: np.random.Generator, num_frames: int) -> tuple[int, int]:
  """(start, other start): two different window starts of one clip, drawn uniformly."""
  count = window_starts(num_frames)
  start = int(rng.integers(count))
  other = int(rng.integers(count - 1))
  return start, other + (other >= start)


def expert_example(clips: TalkingClips, clip: int, rng: np.random.Generator) -> dict:
  """One lip-sync expert example, as color_syncnet_train.py draws it.

  A window start s and a different start w of clip `clip`; with probability
  1/2 the frames of window s (label 1, in sync), else those of window w
  (label 0); the audio is always s's mel window. Returns `frames` (5, 96, 96,
  3) uint8, `mel` (16, 80) float32, `label` float32.
  """
  start, wrong = two_windows(rng, clips.num_frames)
  in_sync = bool(rng.integers(2))
  chosen = start if in_sync else wrong
  return {
    "frames": clips.video[clip, chosen : chosen + SYNC_FRAMES],
    "mel": clips.mel[clip, start],
    "label": np.float32(in_sync),
  }


def generator_example(clips: TalkingClips, clip: int, rng: np.random.Generator) -> dict:
  """One generator example, as hq_wav2lip_train.py draws it.

  The target window s (its lower halves are masked in the input) and a
  different window w of the same clip as the reference (identity and pose,
  never the target's own mouth). Returns `target`, `reference` (5, 96, 96,
  3) uint8, `mel` (5, 16, 80) (each target frame's window) and `sync_mel`
  (16, 80), the expert's window for the 5 frames (= s's window). The
  reference feeds its generator the window one frame earlier (an off-by-one
  in `get_segmented_mels`); here training and inference read the same one.
  """
  start, other = two_windows(rng, clips.num_frames)
  window = slice(start, start + SYNC_FRAMES)
  return {
    "target": clips.video[clip, window],
    "reference": clips.video[clip, other : other + SYNC_FRAMES],
    "mel": clips.mel[clip, window],
    "sync_mel": clips.mel[clip, start],
  }


Example = Callable[[TalkingClips, int, np.random.Generator], dict]


def window_dataset(clips: TalkingClips, example: Example, repeats: int) -> ExampleDataset:
  """The trainer's dataset: each clip `repeats` times per epoch, a random window each time."""
  records = [i % clips.num_clips for i in range(clips.num_clips * repeats)]
  return ExampleDataset(records, lambda clip, rng: example(clips, clip, rng), worker_count=0)


def draw_examples(clips: TalkingClips, example: Example, count: int, seed: int = 0) -> dict:
  """`count` examples stacked into a batch, clips in turn, windows from `seed` (evaluation)."""
  rng = np.random.default_rng(seed)
  drawn = [example(clips, i % clips.num_clips, rng) for i in range(count)]
  return {key: np.stack([d[key] for d in drawn]) for key in drawn[0]}


def lower_half_mask(dtype=np.float32) -> np.ndarray:
  """(96, 1, 1): 1 on the upper half of a face, 0 on the lower half Wav2Lip masks."""
  mask = np.ones((FACE_SIZE, 1, 1), dtype)
  mask[FACE_SIZE // 2 :] = 0
  return mask


def masked_faces(target, reference) -> jax.Array:
  """The generator's faces (..., 96, 96, 6): [target with its lower half zeroed, reference].

  `target` and `reference` are float frames (..., 96, 96, 3) of one range.
  """
  masked = target * lower_half_mask(jnp.result_type(target))
  return jnp.concatenate([masked, reference], axis=-1)
