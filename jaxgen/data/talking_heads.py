"""Procedural talking heads: speech-like audio and face video with exact mouth ground truth.

Each clip is one utterance of `speech_synth` (a viseme script, its audio at
16 kHz and the per-frame mouth opening/width/rounding with co-articulation)
spoken by one face of `face_render`, drawn at 25 fps: the mouth follows the
utterance's mouth track, the eyes blink every few seconds (~150 ms) and the
head drifts smoothly by a pixel or two, small enough that a fixed face crop
(Wav2Lip's masked lower half) still holds the mouth. A frame spans exactly
16000 / 25 = 640 audio samples, so frame i is audio[640 i : 640 (i + 1)]
and its mouth is the one at the frame's centre.

Splits hold out identities and utterances. Identity k of a split's pool has
id k * 3 + split index; utterance i of a split has id i * 3 + split index, so
no id is in two splits. An identity (face and voice: its own `Speaker`) is a
function of (seed, identity id), a script of (seed, utterance id); clip i of
a split speaks utterance i with identity i mod the pool size, and depends
only on (seed, split, i).
"""

from __future__ import annotations

import numpy as np

from jaxgen.data import face_render, speech_synth

SPLITS: tuple[str, ...] = ("train", "validation", "test")
IDENTITIES_PER_SPLIT: dict[str, int] = {"train": 48, "validation": 8, "test": 8}
FPS = speech_synth.FPS
SAMPLE_RATE = speech_synth.SAMPLE_RATE
SAMPLES_PER_FRAME = round(SAMPLE_RATE / FPS)
MIN_SECONDS = 1.0
MAX_HEAD_OFFSET = 0.03  # Of the side: 1.4 pixels at 48, 1.9 at 64.

_BLINK_SECONDS = (0.12, 0.18)  # Lids closing and opening again.
_FIRST_BLINK_SECONDS = (0.3, 3.0)
_BLINK_INTERVAL_SECONDS = (2.0, 5.0)
_HEAD_FREQUENCIES_HZ = (0.15, 0.6)
# Random streams: identities; and per utterance its script, its sound, its blinks and motion.
_IDENTITY, _SCRIPT, _SOUND, _MOTION = range(4)


class TalkingHeadsError(ValueError):
  """Arguments no talking-head clips can be made from."""


def identity_id(split: str, slot: int) -> int:
  """Id of identity `slot` of a split's pool; no id is in two splits."""
  return slot * len(SPLITS) + SPLITS.index(split)


def utterance_id(split: str, index: int) -> int:
  """Id of the utterance clip `index` of `split` speaks; no id is in two splits."""
  return index * len(SPLITS) + SPLITS.index(split)


def make_identity(
  identity: int, seed: int = 0
) -> tuple[face_render.FaceIdentity, speech_synth.Speaker]:
  """The face and voice of identity id `identity`, a function of (seed, identity) only."""
  rng = np.random.default_rng([seed, _IDENTITY, identity])
  return face_render.random_identity(rng), speech_synth.random_speaker(rng)


def blink_curve(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """Eyelid closure (num_frames,) in [0, 1] at the frames' centres: a blink every 2-5 s.

  A blink closes and reopens the lids along sin² over 120-180 ms.
  """
  times = (np.arange(num_frames) + 0.5) / FPS
  closure = np.zeros(num_frames)
  start = rng.uniform(*_FIRST_BLINK_SECONDS)
  while start < times[-1]:
    length = rng.uniform(*_BLINK_SECONDS)
    phase = (times - start) / length
    inside = (phase > 0) & (phase < 1)
    closure = np.maximum(closure, np.where(inside, np.sin(np.pi * phase) ** 2, 0.0))
    start += rng.uniform(*_BLINK_INTERVAL_SECONDS)
  return closure.astype(np.float32)


def head_motion(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """Smooth head drift (num_frames, 2), (x, y) in fractions of the side, within MAX_HEAD_OFFSET.

  Two slow sinusoids per axis, each at most half the bound.
  """
  times = (np.arange(num_frames) + 0.5) / FPS
  frequency = rng.uniform(*_HEAD_FREQUENCIES_HZ, size=(2, 2, 1))
  phase = rng.uniform(0, 2 * np.pi, size=(2, 2, 1))
  amplitude = 0.5 * MAX_HEAD_OFFSET * rng.uniform(0.3, 1.0, size=(2, 2, 1))
  waves = amplitude * np.sin(2 * np.pi * frequency * times + phase)
  return waves.sum(axis=1).T.astype(np.float32)


def _check_args(split, num_clips, seconds, size, start) -> None:
  if split not in SPLITS:
    raise TalkingHeadsError(f"split: expected one of {SPLITS}, found {split!r}")
  if not isinstance(num_clips, (int, np.integer)) or num_clips < 1:
    raise TalkingHeadsError(f"num_clips: expected an integer >= 1, found {num_clips!r}")
  if not isinstance(start, (int, np.integer)) or start < 0:
    raise TalkingHeadsError(f"start: expected an integer >= 0, found {start!r}")
  if not isinstance(size, (int, np.integer)) or size < face_render.MIN_SIZE:
    raise TalkingHeadsError(
      f"size: expected an integer >= {face_render.MIN_SIZE} pixels, found {size!r}"
    )
  frames = seconds * FPS if isinstance(seconds, (int, float)) else np.nan
  if not (seconds >= MIN_SECONDS and abs(frames - round(frames)) < 1e-6):
    raise TalkingHeadsError(
      f"seconds: expected a whole number of frames at {FPS:g} fps, at least {MIN_SECONDS} s, "
      f"found {seconds!r}"
    )


def make_talking_heads(
  split: str, *, num_clips: int, seconds: float = 3.0, size: int = 48, seed: int = 0, start: int = 0
) -> dict[str, np.ndarray]:
  """Clips start .. start + num_clips - 1 of `split`, each `seconds` long.

  Returns host arrays, with N = num_clips, T = seconds · 25 frames and S = size:
    video (N, T, S, S, 3) uint8; audio (N, T · 640) float32 at 16 kHz, in
    [-0.9, 0.9]; mouth (N, T, 3) float32 opening/width/rounding in [0, 1],
    the ground truth the faces are drawn with; visemes (N, T) int32 (index
    into speech_synth.VISEMES); blink (N, T) float32 lid closure in [0, 1];
    head_offset (N, T, 2) float32 head shift (x, y), fractions of the side;
    identity (N,) int32 and utterance (N,) int32 ids, disjoint between splits.
  """
  _check_args(split, num_clips, seconds, size, start)
  num_frames = round(seconds * FPS)
  pool = IDENTITIES_PER_SPLIT[split]
  keys = ("video", "audio", "mouth", "visemes", "blink", "head_offset", "identity", "utterance")
  out = {key: [] for key in keys}
  identities: dict[int, tuple] = {}
  for index in range(start, start + num_clips):
    person = identity_id(split, index % pool)
    if person not in identities:
      identities[person] = make_identity(person, seed)
    face, speaker = identities[person]
    utterance = utterance_id(split, index)
    script = speech_synth.random_script(np.random.default_rng([seed, _SCRIPT, utterance]), seconds)
    speech = speech_synth.synthesize_utterance(
      np.random.default_rng([seed, _SOUND, utterance]), speaker, seconds, script=script
    )
    motion_rng = np.random.default_rng([seed, _MOTION, utterance])
    blink = blink_curve(motion_rng, num_frames)
    offsets = head_motion(motion_rng, num_frames)
    out["video"].append(face_render.draw_video(face, speech.mouth, blink, offsets, size))
    out["audio"].append(speech.audio)
    out["mouth"].append(speech.mouth)
    out["visemes"].append(speech.visemes)
    out["blink"].append(blink)
    out["head_offset"].append(offsets)
    out["identity"].append(person)
    out["utterance"].append(utterance)
  arrays = {key: np.stack(values) for key, values in out.items()}
  arrays["identity"] = arrays["identity"].astype(np.int32)
  arrays["utterance"] = arrays["utterance"].astype(np.int32)
  return arrays
