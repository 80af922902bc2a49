"""Dances to music files: their conditions, one scan per file, videos with the music and joints.

`jaxgen sample --music` reads WAV files of any lengths. Each file is danced
in its own long-form scan (`EDGETask.generate`), so the progress bar counts
music files: a scan has no steps to report while it runs. Each dance is saved
as joints (T, 22, 3) float32 in metres, the `.npy` that `jaxgen eval --metric
dance` reads, and, for an `.mp4` output, as a stick-figure video at the
dance's 20 fps with its music muxed in.

Output names: one music file is written to the path asked for (`dance.mp4`
and `dance.npy` beside it); several go into a folder named after it, each
under its music's name (`dance/song.mp4`, `dance/song.npy`), so `--generated
dance/ --music <the music folder>` pairs them for the dance metrics.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
import tqdm

from jaxgen.data import motion_formats
from jaxgen.data.music_features import MusicFeatureError
from jaxgen.render import music_video
from jaxgen.render.motion import render_motion
from jaxgen.tasks.dance.dance_data import FPS, DanceMusicError


def audio_conditions(
  audio: Sequence[np.ndarray],
  sr,
  names: Sequence[str],
  features: Callable[[np.ndarray, int], np.ndarray],
) -> dict[str, list]:
  """{"music": `features(waveform, rate)`, "audio", "sample_rate", "name"}: one entry per file.

  `sr` is one rate per waveform (or one int for all). Errors name the file.
  """
  audio, names = list(audio), [str(n) for n in names]
  rates = [sr] * len(audio) if isinstance(sr, (int, np.integer)) else list(sr)
  if not audio or not len(audio) == len(rates) == len(names):
    raise DanceMusicError(
      f"audio, sr, names: expected one waveform, rate and name per music file (at least one), "
      f"found {len(audio)}, {len(rates)} and {len(names)}"
    )
  stems = [os.path.splitext(n)[0] for n in names]
  repeated = sorted({s for s in stems if stems.count(s) > 1})
  if repeated:
    raise DanceMusicError(f"names: expected one music file per name, found {repeated} twice")
  music = []
  for waveform, rate, name in zip(audio, rates, names):
    try:
      music.append(features(waveform, rate))
    except (DanceMusicError, MusicFeatureError) as e:
      raise DanceMusicError(f"music {name!r}: {e}") from e
  return {"music": music, "audio": audio, "sample_rate": rates, "name": names}


def dance_each(
  dance: Callable[[np.ndarray, jax.Array], Mapping[str, np.ndarray]],
  music: Sequence[np.ndarray],
  rng: jax.Array,
) -> dict[str, list[np.ndarray]]:
  """`dance(features (1, T, D), rng)` for each piece of music, with a progress bar over them.

  Samples are lists, one entry per piece (its first and only row).
  """
  keys = jax.random.split(rng, len(music))
  pieces = tqdm.tqdm(music, desc="music files", unit="file", disable=len(music) < 2)
  samples = [dance(np.asarray(m)[None], key) for m, key in zip(pieces, keys)]
  return {name: [s[name][0] for s in samples] for name in samples[0]}


def output_stems(path: str, names: Sequence[str]) -> list[str]:
  """Output paths without extension: `path`'s for one name, `<path stem>/<name stem>` for several."""
  stem = os.path.splitext(path)[0]
  if len(names) == 1:
    return [stem]
  return [os.path.join(stem, os.path.splitext(os.path.basename(n))[0]) for n in names]


def save_dances(joints, conditions: Mapping, path: str) -> str:
  """Writes the dances of `conditions` to `path`: .npy joints and, for .mp4, videos with music.

  Conditions from music files (`audio_conditions`, with "audio") give one
  joints file (T, 22, 3) float32 and one video per file (see the module
  docstring); returns the file written for one dance, the folder for several.
  Feature conditions carry no music: their dances (N, T, 22, 3) go to one .npy.
  """
  if "audio" not in conditions:
    if not path.lower().endswith(".npy"):
      raise DanceMusicError(f"path: features carry no music to put in a video; got {path!r}")
    np.save(path, np.asarray(joints, np.float32))
    return path
  stems = output_stems(path, conditions["name"])
  os.makedirs(os.path.dirname(os.path.abspath(stems[0])), exist_ok=True)
  for i, stem in enumerate(stems):
    np.save(stem + ".npy", np.asarray(joints[i], np.float32))
    if path.lower().endswith(".mp4"):
      audio, rate = conditions["audio"][i], conditions["sample_rate"][i]
      write_music_video(joints[i], audio, rate, conditions["name"][i], stem)
  return path if len(stems) == 1 else os.path.dirname(stems[0])


def write_music_video(joints, audio, sample_rate: int, caption: str, stem: str) -> str:
  """`stem`.mp4: the stick figure of `joints` (T, 22, 3) at 20 fps with `audio` muxed in."""
  with tempfile.TemporaryDirectory() as scratch:
    silent = render_motion(
      np.asarray(joints),
      [caption],
      os.path.join(scratch, "silent.mp4"),
      fps=FPS,
      fmt=motion_formats.HUMANML3D,
    )
    wav = music_video.write_wav(os.path.join(scratch, "music.wav"), audio, sample_rate)
    return music_video.mux_music(silent, wav, stem + ".mp4")
