"""Music under a silent video: a waveform written as WAV, muxed into an MP4 by ffmpeg.

The video stream is copied as it is (no re-encoding); the music is encoded as
AAC, which every MP4 player reads. Neither stream is cut: the file lasts as
long as the longer one, so a dance of whole frames (at most one frame shorter
than its music) plays its music to the end.
"""

from __future__ import annotations

import os
import subprocess
import wave

import numpy as np

from jaxgen.render.motion import find_ffmpeg

_PCM_FULL_SCALE = 32767  # 16-bit PCM


class MusicVideoError(ValueError):
  """A video or a waveform cannot be muxed: the message names the argument and what was found."""


def write_wav(path: str, audio: np.ndarray, sample_rate: int) -> str:
  """Writes mono float `audio` in [-1, 1] as 16-bit PCM WAV (samples beyond +-1 are clipped)."""
  audio = np.asarray(audio)
  if audio.ndim != 1 or audio.size == 0 or not np.issubdtype(audio.dtype, np.floating):
    raise MusicVideoError(
      f"audio: expected a non-empty mono float waveform (samples,), found {audio.dtype} "
      f"of shape {audio.shape}"
    )
  if not np.isfinite(audio).all():
    raise MusicVideoError("audio: expected finite samples, found NaN or inf")
  if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
    raise MusicVideoError(f"sample_rate: expected an int in Hz, found {sample_rate!r}")
  if sample_rate <= 0:
    raise MusicVideoError(f"sample_rate: expected a positive rate in Hz, found {sample_rate}")
  pcm = np.round(np.clip(audio, -1.0, 1.0) * _PCM_FULL_SCALE).astype("<i2")
  with wave.open(os.fspath(path), "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(int(sample_rate))
    f.writeframes(pcm.tobytes())
  return path


def mux_music(video_path: str, music_path: str, out_path: str) -> str:
  """Writes `out_path` (.mp4): the video stream of `video_path` with the audio of `music_path`.

  Returns `out_path`. Named errors for a missing input, an output that is not
  .mp4, and an input without the stream it is asked for.
  """
  for name, path in (("video_path", video_path), ("music_path", music_path)):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{name}: no such file {os.fspath(path)!r}")
  if not os.fspath(out_path).lower().endswith(".mp4"):
    raise MusicVideoError(f"out_path: expected a file ending in .mp4, found {out_path!r}")
  command = [
    find_ffmpeg(),
    "-y",
    "-loglevel",
    "error",
    "-i",
    os.fspath(video_path),
    "-i",
    os.fspath(music_path),
    "-map",
    "0:v:0",
    "-map",
    "1:a:0",
    "-c:v",
    "copy",
    "-c:a",
    "aac",
    "-b:a",
    "192k",
    os.fspath(out_path),
  ]
  result = subprocess.run(command, capture_output=True, check=False)
  if result.returncode:
    stderr = result.stderr.decode(errors="replace")
    if "0:v:0" in stderr and "matches no streams" in stderr:
      raise MusicVideoError(f"video_path: {video_path!r} holds no video stream")
    if "1:a:0" in stderr and "matches no streams" in stderr:
      raise MusicVideoError(f"music_path: {music_path!r} holds no audio stream")
    raise MusicVideoError(
      f"ffmpeg could not mux {video_path!r} with {music_path!r} into {out_path!r}: "
      f"{stderr.strip()[-500:]}"
    )
  return out_path
