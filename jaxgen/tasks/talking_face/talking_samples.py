"""Talking faces from speech files: their conditions, the frames, MP4s with the speech, .npy frames.

`jaxgen sample --audio speech.wav --reference face.png` hands a talking-face
task mono waveforms and one reference face. `speech_conditions` checks both
(`data.audio.check_speech`: named errors for silent, too short, clipped or
malformed audio, resampling to 16 kHz with a warning; `ReferenceFaceError`
for a face that is not 96x96 RGB) and turns each utterance into its frames'
mel windows at 25 fps (⌊seconds · 25⌋ frames, at least one) and, with one
reference image, that image as every frame's target (masked by the model)
and reference. `clip_conditions` does the same for clips of the procedural
talking heads (their frames, or their first frame as the one image).

`save_talking` writes each utterance's frames as `.npy` (T, 96, 96, 3)
uint8, which evaluation reads, and for an `.mp4` a video at 25 fps with the
speech muxed in (AAC), upscaled by `scale` (nearest) and optionally side by
side with the reference (`side_by_side`). Output names follow
`dance_samples`: one utterance goes to the path asked for, several into a
folder named after it, each under its audio file's name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tqdm

from jaxgen.data import audio as speech
from jaxgen.render import music_video
from jaxgen.tasks.dance.dance_samples import output_stems
from jaxgen.tasks.talking_face.talking_data import FACE_SIZE, FPS, TalkingClips


class ReferenceFaceError(ValueError):
  """A reference face image of the wrong size, channel count or dtype."""


class SpeechConditionsError(ValueError):
  """Speech inputs that do not pair up (one waveform, rate and name each)."""


def check_reference_face(image, name: str = "reference", size: int = FACE_SIZE) -> np.ndarray:
  """`image` as a uint8 (size, size, 3) RGB face, or a `ReferenceFaceError` naming `name`."""
  image = np.asarray(image)
  expected = (size, size, 3)
  if image.shape != expected:
    what = (
      f"{image.shape[-1]} channels"
      if image.ndim == 3 and image.shape[:2] == expected[:2]
      else f"shape {image.shape}"
    )
    raise ReferenceFaceError(
      f"{name}: expected a {size}x{size} RGB face crop, shape {expected} (the run works on "
      f"{size}x{size} crops; crop and resize the face first), found {what}"
    )
  if image.dtype != np.uint8:
    raise ReferenceFaceError(f"{name}: expected uint8 pixels (0-255), found dtype {image.dtype}")
  return image


def utterance_frames(num_samples: int) -> int:
  """Video frames at 25 fps of `num_samples` of 16-kHz speech: whole frames, at least one."""
  return max(1, int(num_samples * FPS / speech.SAMPLE_RATE + 1e-6))


def speech_conditions(
  audio: Sequence[np.ndarray],
  sr,
  names: Sequence[str],
  reference,
  reference_name: str = "reference",
  size: int = FACE_SIZE,
) -> dict[str, list]:
  """Per utterance: `mel` (T, 16, 80), `target` and `reference` (T, size, size, 3) uint8 (the
  image), `audio` (16 kHz), `sample_rate`, `name`. `sr` is one rate per waveform (or one for all)."""
  audio, names = list(audio), [str(n) for n in names]
  rates = [sr] * len(audio) if isinstance(sr, (int, np.integer)) else list(sr)
  if not audio or not len(audio) == len(rates) == len(names):
    raise SpeechConditionsError(
      f"audio, sr, names: expected one waveform, rate and name per utterance (at least one), "
      f"found {len(audio)}, {len(rates)} and {len(names)}"
    )
  face = check_reference_face(reference, reference_name, size)
  out = {key: [] for key in ("mel", "target", "reference", "audio", "sample_rate", "name")}
  for waveform, rate, name in zip(audio, rates, names):
    waveform = speech.check_speech(waveform, rate, name=name)
    frames = utterance_frames(waveform.size)
    out["mel"].append(speech.mel_windows(speech.wav2lip_mel(waveform), frames, FPS, pad=True))
    out["target"].append(np.repeat(face[None], frames, axis=0))
    out["reference"].append(np.repeat(face[None], frames, axis=0))
    out["audio"].append(waveform)
    out["sample_rate"].append(speech.SAMPLE_RATE)
    out["name"].append(name)
  return out


def clip_conditions(clips: TalkingClips, *, mode: str = "image", mel=None) -> dict[str, list]:
  """Conditions of procedural clips, keyed like `speech_conditions`.

  mode "image": each clip's first frame is its one reference image (what
  `jaxgen sample --reference` does); "video": the clip's own frames are
  targets and references (the reference's inference on a video; the true
  mouth is then in the reference channels). `mel` (N, T, 16, 80) replaces
  the clips' own windows (e.g. another clip's audio for a shuffled baseline).
  """
  if mode not in ("image", "video"):
    raise ValueError(f"mode: expected 'image' or 'video', found {mode!r}")
  mel = clips.mel if mel is None else np.asarray(mel)
  if mel.shape != clips.mel.shape:
    raise ValueError(f"mel: expected shape {clips.mel.shape}, found {mel.shape}")
  frames = (
    clips.video if mode == "video" else np.repeat(clips.video[:, :1], clips.num_frames, axis=1)
  )
  n = clips.num_clips
  return {
    "mel": list(mel),
    "target": list(frames),
    "reference": list(frames),
    "audio": list(clips.audio),
    "sample_rate": [speech.SAMPLE_RATE] * n,
    "name": [f"clip_{int(u)}" for u in clips.utterance],
  }


def talk_each(
  talk: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
  mels: Sequence[np.ndarray],
  targets: Sequence[np.ndarray],
  references: Sequence[np.ndarray],
) -> dict[str, list[np.ndarray]]:
  """{"video": `talk(mel, target, reference)` per utterance}, with a progress bar over them."""
  items = tqdm.tqdm(
    list(zip(mels, targets, references)), desc="utterances", unit="utterance", disable=len(mels) < 2
  )
  return {"video": [talk(*item) for item in items]}


def save_talking(
  videos: Sequence[np.ndarray],
  conditions: Mapping,
  path: str,
  *,
  scale: int = 1,
  side_by_side: bool = False,
  **display,
) -> str:
  """Writes each video as `.npy` frames and, for an `.mp4` path, a video with its speech.

  Returns the file written for one utterance, the folder for several.
  """
  del display  # ncols: no grids here
  stems = output_stems(path, conditions["name"])
  os.makedirs(os.path.dirname(os.path.abspath(stems[0])), exist_ok=True)
  for i, stem in enumerate(stems):
    frames = np.asarray(videos[i], np.uint8)
    np.save(stem + ".npy", frames)
    if path.lower().endswith(".mp4"):
      if side_by_side:
        frames = np.concatenate([np.asarray(conditions["reference"][i]), frames], axis=2)
      frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
      write_talking_video(frames, conditions["audio"][i], conditions["sample_rate"][i], stem)
  return path if len(stems) == 1 else os.path.dirname(stems[0])


def write_talking_video(frames: np.ndarray, audio, sample_rate: int, stem: str) -> str:
  """`stem`.mp4: uint8 frames (T, H, W, 3) at 25 fps (H, W even) with `audio` muxed in."""
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as scratch:
    silent = os.path.join(scratch, "silent.mp4")
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
      silent, (width, height), fps=FPS, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1
    )
    writer.send(None)
    for frame in frames:
      writer.send(np.ascontiguousarray(frame))
    writer.close()
    wav = music_video.write_wav(os.path.join(scratch, "speech.wav"), audio, sample_rate)
    return music_video.mux_music(silent, wav, stem + ".mp4")
