"""Talking-face metrics over whole videos: lip sync (LSE) and the analytic mouth judge.

Reading (`index_videos`, `read_frames`, `read_speech`): each entry of a folder
is one video as `jaxgen.metrics.video_folder` reads it (`<name>.npy` uint8
(T, H, W, 3), a folder of frames, `<name>.mp4`/.gif/...), named by its stem.
Where one name has several (`jaxgen sample` writes `<name>.mp4` with the
speech muxed in beside the lossless `<name>.npy`), frames come from the
`.npy`, then a frame folder, then a container. Speech comes from `<name>.wav`
(read with librosa at 16 kHz), else from the container's audio stream,
decoded by the ffmpeg binary imageio-ffmpeg ships with the reference's
settings (`-ac 1 -ar 16000 -acodec pcm_s16le`) and piped, never written to
disk. Videos are taken at 25 fps (a container that says otherwise is an
error); speech that is longer or shorter than its frames by more than one
frame (640 samples) is an `AudioVideoLengthError`.

Lip sync: `lip_sync_scores(embed, frames, speech)` runs the LSE protocol of
`jaxgen.metrics.lipsync` (windows of 5 frames and their audio, mean distance
per shift of +-vshift frames, LSE-D = the minimum, LSE-C = median - minimum,
the AV offset) on the window embeddings of any `embed(frames, speech)`:

* `syncnet_python_embedder`: syncnet_python's SyncNet on 13 MFCCs, as
  Wav2Lip's `scores_LSE` runs it on generated videos: the videos are face
  crops already (no face detection), resized to 224x224 as
  `SyncNetInstance_calc_scores.evaluate` does (`cv2.resize`, bilinear with
  half-pixel centres and no anti-aliasing; `resize_frames` is that, rounded
  to uint8 as cv2 returns it), BGR. Unlike the reference the frames are not
  round-tripped through JPEG files.
* `syncnet_color_embedder`: Wav2Lip's `SyncNetColor` lip-sync expert (e.g. a
  `wav2lip_expert` run trained apart from the one a generator's loss used):
  the lower halves of the same 5-frame windows at 96x96 against the Wav2Lip
  mel window (16 mel frames, 0.2 s) of the window's first frame. Its
  embeddings are L2-normalised 512-d vectors, so its LSE-D lies in [0, 2]:
  scores of different networks are not comparable.

Mouth (`mouth_scores`): a generated clip against its ground truth, both read
by `jaxgen.data.face_render`'s judge (procedural faces): the correlation of
the mouth opening over time, the mean absolute opening and width error
(an LMD-like mouth distance, in fractions of the face crop's side), SSIM and
PSNR per frame (dm-pix, data range 255) and the temporal jitter of each
(mean |opening(t + 1) - opening(t)|).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data import audio as speech_features
from jaxgen.data import face_render
from jaxgen.metrics import image_quality, lipsync, video_folder
from jaxgen.metrics.frechet import TooFewSamplesError
from jaxgen.models import syncnet, wav2lip
from jaxgen.render.motion import find_ffmpeg

SAMPLE_RATE = lipsync.SAMPLE_RATE  # 16 kHz
FPS = lipsync.VIDEO_FPS  # 25
SAMPLES_PER_FRAME = lipsync.SAMPLES_PER_FRAME  # 640
WINDOW_FRAMES = syncnet.NUM_FRAMES  # 5, as Wav2Lip's SYNC_FRAMES
SPEECH_EXTENSION = ".wav"
PIXEL_DATA_RANGE = 255.0
FPS_TOLERANCE = 0.01

# Which file of a name gives its frames: lossless first.
_FRAME_PREFERENCE = {video_folder.NUMPY_EXTENSION: 0, "": 1}  # "" = a frame folder; else 2

# (video embeddings, audio embeddings), each (W, D), of a clip's (T, H, W, 3) uint8 RGB
# frames and its 16 kHz float speech.
Embedder = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class TalkingVideoError(video_folder.VideoFolderError):
  """A talking-face video (or its speech) is unusable for these metrics."""


class NoAudioError(TalkingVideoError):
  """A video has no speech: no `<name>.wav` and no audio stream."""


class AudioVideoLengthError(TalkingVideoError, speech_features.VideoAudioLengthError):
  """Speech longer or shorter than its video by more than one frame."""


class FrameRateError(TalkingVideoError):
  """A container's frame rate is not the 25 fps lip-sync networks read."""


class UnpairedVideosError(TalkingVideoError):
  """Generated and ground-truth folders do not hold the same video names."""


class FrameCountMismatchError(TalkingVideoError):
  """A generated video and its ground truth differ in frame count or size."""


@dataclasses.dataclass(frozen=True)
class TalkingVideoFiles:
  """The files of one named video: where its frames and its speech come from."""

  name: str
  frames: Path
  speech: Path | None  # a .wav, a container with an audio stream, or None


@dataclasses.dataclass(frozen=True)
class MouthScores:
  """A generated clip against its ground truth (see the module docstring).

  Errors and jitters are in fractions of the face crop's side; psnr is inf
  for identical frames.
  """

  correlation: float
  opening_error: float
  width_error: float
  ssim: float
  psnr: float
  jitter: float
  reference_jitter: float
  num_frames: int


# ---------------------------------------------------------------------------
# Reading.


def _entry_name(path: Path) -> str:
  return path.name if path.is_dir() else path.stem


def _frame_rank(path: Path) -> int:
  return _FRAME_PREFERENCE.get("" if path.is_dir() else path.suffix.lower(), 2)


def index_videos(folder: str | os.PathLike, *, name: str) -> dict[str, TalkingVideoFiles]:
  """Video name -> its files, for every video in `folder` (`name` is the flag, for errors)."""
  entries: dict[str, list[Path]] = {}
  for path in video_folder.list_videos(folder, name=name):
    entries.setdefault(_entry_name(path), []).append(path)
  wavs = {
    p.stem: p
    for p in Path(folder).iterdir()
    if p.is_file() and p.suffix.lower() == SPEECH_EXTENSION
  }
  videos = {}
  for stem, paths in entries.items():
    paths = sorted(paths, key=_frame_rank)
    containers = [p for p in paths if _frame_rank(p) == 2]
    speech = wavs.get(stem) or (containers[0] if containers else None)
    videos[stem] = TalkingVideoFiles(stem, paths[0], speech)
  return videos


def frame_count(path: Path) -> int:
  """Frames of one video, from headers (a container's are counted by ffmpeg)."""
  if _frame_rank(path) < 2:
    return video_folder.probe_video(path).num_frames
  import imageio_ffmpeg  # Deferred: only containers need it.

  try:
    return int(imageio_ffmpeg.count_frames_and_secs(os.fspath(path))[0])
  except (RuntimeError, OSError) as error:
    raise video_folder.VideoReadError(
      f"cannot count the frames of {str(path)!r}: {error}"
    ) from error


def check_frame_rate(path: Path) -> None:
  """A container must say 25 fps; arrays and frame folders are taken to be 25 fps."""
  if _frame_rank(path) < 2 or path.suffix.lower() == ".gif":
    return
  import imageio.v3 as iio  # Deferred: only containers need it.

  try:
    fps = iio.immeta(path).get("fps")
  except (OSError, ValueError, RuntimeError) as error:
    raise video_folder.VideoReadError(
      f"cannot read the header of {str(path)!r}: {error}"
    ) from error
  if fps is None or abs(float(fps) - FPS) > FPS_TOLERANCE:
    raise FrameRateError(
      f"{str(path)!r}: expected a {FPS} fps video (lip-sync networks pair 5 frames with "
      f"0.2 s of speech), found {fps} fps; re-encode it with `ffmpeg -i IN -r {FPS} OUT`"
    )


def read_frames(path: Path) -> np.ndarray:
  """All frames of one video as (T, H, W, 3) uint8 RGB."""
  return video_folder.load_clip(path, frame_count(path))


def read_speech(files: TalkingVideoFiles) -> np.ndarray:
  """The speech of one video as float32 mono at 16 kHz, or a `NoAudioError`."""
  if files.speech is None:
    raise NoAudioError(
      f"video {files.name!r} has no speech: expected {files.name}{SPEECH_EXTENSION} beside "
      f"{files.frames.name} or a video file with an audio stream"
    )
  if files.speech.suffix.lower() == SPEECH_EXTENSION:
    import librosa  # Deferred: importing librosa takes seconds.

    try:
      samples, _ = librosa.load(files.speech, sr=SAMPLE_RATE, mono=True)
    except Exception as error:  # soundfile and audioread raise many unrelated types.
      raise video_folder.VideoReadError(
        f"cannot read speech file {str(files.speech)!r}: {type(error).__name__}: {error}"
      ) from error
  else:
    samples = _container_speech(files.speech)
  if samples.size == 0:
    raise NoAudioError(f"video {files.name!r}: {str(files.speech)!r} holds no audio samples")
  return samples.astype(np.float32)


def _container_speech(path: Path) -> np.ndarray:
  """The first audio stream of a container as 16 kHz mono, as the reference's ffmpeg call."""
  command = [
    find_ffmpeg(), "-v", "error", "-nostdin", "-i", os.fspath(path), "-map", "0:a:0", "-vn",
    "-ac", "1", "-ar", str(SAMPLE_RATE), "-acodec", "pcm_s16le", "-f", "s16le", "-",
  ]  # fmt: skip
  result = subprocess.run(command, capture_output=True, check=False)
  if result.returncode:
    stderr = result.stderr.decode(errors="replace")
    if "matches no streams" in stderr:
      raise NoAudioError(
        f"video {str(path)!r} has no audio stream and no {path.stem}{SPEECH_EXTENSION} beside it"
      )
    raise video_folder.VideoReadError(
      f"ffmpeg could not decode the audio of {str(path)!r}: {stderr.strip()[-500:]}"
    )
  return np.frombuffer(result.stdout, "<i2").astype(np.float32) / lipsync.INT16_SCALE


def check_speech_length(num_frames: int, num_samples: int, name: str) -> None:
  """Speech must last as long as the frames at 25 fps, to within one frame."""
  expected = num_frames * SAMPLES_PER_FRAME
  if abs(num_samples - expected) > SAMPLES_PER_FRAME:
    raise AudioVideoLengthError(
      f"video/audio length mismatch in {name!r}: {num_frames} frames at {FPS} fps last "
      f"{num_frames / FPS:.3f} s ({expected} samples at {SAMPLE_RATE} Hz), the speech "
      f"{num_samples / SAMPLE_RATE:.3f} s ({num_samples} samples); at most one frame "
      f"({SAMPLES_PER_FRAME} samples) of difference is tolerated"
    )


# ---------------------------------------------------------------------------
# Lip sync.


def window_count(num_frames: int, num_samples: int) -> int:
  """Windows LSE reads (syncnet_python's `range(min(frames, samples // 640) - 5)`), or an error."""
  count = lipsync.num_windows(num_frames, num_samples)
  if count < 1:
    raise TooFewSamplesError(
      f"lip sync needs at least {WINDOW_FRAMES + 1} frames with their speech, got "
      f"{num_frames} frames and {num_samples} samples"
    )
  return count


def _linear_resize_matrix(source: int, target: int) -> np.ndarray:
  """(target, source) weights of cv2.INTER_LINEAR: half-pixel centres, edges clamped."""
  position = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)
  low = np.floor(position).astype(np.int64)
  high = np.minimum(low + 1, source - 1)
  fraction = position - low
  matrix = np.zeros((target, source))
  np.add.at(matrix, (np.arange(target), low), 1 - fraction)
  np.add.at(matrix, (np.arange(target), high), fraction)
  return matrix


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
  """(T, H, W, 3) uint8 -> (T, size, size, 3) uint8, bilinear as `cv2.resize` (no anti-aliasing)."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames: expected uint8 (T, H, W, 3), found {frames.dtype} {frames.shape}")
  if frames.shape[1:3] == (size, size):
    return frames
  rows = _linear_resize_matrix(frames.shape[1], size)
  cols = _linear_resize_matrix(frames.shape[2], size)
  rows, cols = rows.astype(np.float32), cols.astype(np.float32)
  resized = np.tensordot(rows, frames.astype(np.float32), axes=(1, 1))  # (size, T, W, 3)
  resized = np.tensordot(resized, cols, axes=(2, 1)).transpose(1, 0, 3, 2)
  return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


def syncnet_python_embedder(variables: Mapping[str, Any], *, batch_size: int = 20) -> Embedder:
  """syncnet_python's SyncNet (`jaxgen.models.syncnet` variables) on 224x224 BGR crops."""

  def embed(frames: np.ndarray, speech: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    faces = resize_frames(frames, syncnet.FRAME_SIZE)
    return lipsync.syncnet_embeddings(
      variables, faces, speech, channels="rgb", batch_size=batch_size
    )

  return embed


@functools.partial(jax.jit, static_argnames=("width",))
def _color_embed(variables, mel, windows, width):
  faces = wav2lip.expert_face_window(windows.astype(jnp.float32) / 255.0)
  audio_embedding, face_embedding = wav2lip.SyncNetColor(width=width).apply(variables, mel, faces)
  return face_embedding, audio_embedding


def syncnet_color_embedder(
  variables: Mapping[str, Any], *, width: float = 1.0, channels: str = "rgb", batch_size: int = 20
) -> Embedder:
  """Wav2Lip's `SyncNetColor` expert ({"params", "batch_stats"}, evaluation-mode BatchNorm).

  `channels` is the order the weights expect: "rgb" for experts trained here
  on RGB frames, "bgr" for the reference's released `lipsync_expert.pth`.
  Frames of another size are resized to 96x96 as Wav2Lip's face crops are.
  """
  if channels not in ("rgb", "bgr"):
    raise ValueError(f"channels: expected 'rgb' or 'bgr', found {channels!r}")
  if batch_size < 1:
    raise ValueError(f"batch_size: expected an integer >= 1, found {batch_size}")
  width = wav2lip.check_width(width)

  def embed(frames: np.ndarray, speech: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    faces = resize_frames(frames, wav2lip.FACE_SIZE)
    if channels == "bgr":
      faces = faces[..., ::-1]
    count = window_count(len(faces), len(speech))
    mel = speech_features.mel_windows(speech_features.wav2lip_mel(speech), count, FPS)
    windows = faces[np.arange(count)[:, None] + np.arange(WINDOW_FRAMES)]
    video_out, audio_out = [], []
    for start in range(0, count, batch_size):
      w, m = windows[start : start + batch_size], mel[start : start + batch_size]
      valid, pad = len(w), batch_size - len(w)
      w = np.pad(w, ((0, pad),) + ((0, 0),) * 4)
      m = np.pad(m, ((0, pad), (0, 0), (0, 0)))
      v_emb, a_emb = _color_embed(variables, jnp.asarray(m), jnp.asarray(w), width)
      video_out.append(np.asarray(v_emb)[:valid])
      audio_out.append(np.asarray(a_emb)[:valid])
    return np.concatenate(video_out), np.concatenate(audio_out)

  return embed


def lip_sync_scores(
  embed: Embedder, frames: np.ndarray, speech: np.ndarray, *, vshift: int = lipsync.DEFAULT_VSHIFT
) -> lipsync.LipSyncScores:
  """LSE-D, LSE-C and the AV offset of one clip from the window embeddings of `embed`."""
  window_count(len(frames), len(speech))
  video, audio = embed(np.asarray(frames), np.asarray(speech))
  return lipsync.lse_d_c(video, audio, vshift)


# ---------------------------------------------------------------------------
# Mouth.


def pairwise_quality(fake: np.ndarray, real: np.ndarray, batch_size: int) -> tuple[float, float]:
  """Mean SSIM and PSNR of uint8 frames (N, H, W, 3) against theirs, in fixed-size batches (one
  compilation per frame size)."""
  ssim, psnr = [], []
  for start in range(0, len(fake), batch_size):
    f, r = fake[start : start + batch_size], real[start : start + batch_size]
    valid, pad = len(f), ((0, batch_size - len(f)),) + ((0, 0),) * 3
    f, r = np.pad(f, pad), np.pad(r, pad)
    ssim.append(np.asarray(image_quality.ssim(f, r, data_range=PIXEL_DATA_RANGE))[:valid])
    psnr.append(np.asarray(image_quality.psnr(f, r, data_range=PIXEL_DATA_RANGE))[:valid])
  return float(np.concatenate(ssim).mean()), float(np.concatenate(psnr).mean())


def mouth_scores(
  fake: np.ndarray, real: np.ndarray, *, name: str = "video", batch_size: int = 25
) -> MouthScores:
  """A generated clip (T, S, S, 3) uint8 against its ground truth of the same shape."""
  fake, real = np.asarray(fake), np.asarray(real)
  if fake.shape != real.shape:
    raise FrameCountMismatchError(
      f"{name}: expected generated and ground-truth frames of one shape (T, H, W, 3), found "
      f"{fake.shape} and {real.shape}"
    )
  if fake.ndim != 4 or len(fake) < 2:
    raise TooFewSamplesError(f"{name}: expected a clip of at least 2 frames, found {fake.shape}")
  measured, truth = face_render.mouth_measurements(fake), face_render.mouth_measurements(real)
  ssim, psnr = pairwise_quality(fake, real, batch_size)
  # The judge's reading of the ground truth as mouth parameters (only the opening is used),
  # so that `mouth_correlation` does not measure the ground truth again.
  truth_track = np.stack([truth["opening"], truth["width"], np.zeros_like(truth["width"])], -1)
  return MouthScores(
    correlation=face_render.mouth_correlation(fake, truth_track),
    opening_error=float(np.mean(np.abs(measured["opening"] - truth["opening"]))),
    width_error=float(np.mean(np.abs(measured["width"] - truth["width"]))),
    ssim=ssim,
    psnr=psnr,
    jitter=float(np.mean(np.abs(np.diff(measured["opening"])))),
    reference_jitter=float(np.mean(np.abs(np.diff(truth["opening"])))),
    num_frames=len(fake),
  )
