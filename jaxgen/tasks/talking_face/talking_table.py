"""The talking-face comparison table (issue 16): methods dubbed on the same held-out clips.

`benchmarks/talking_table.py` drives it; this module holds the parts that
are functions of a run and of arrays, so the table's arithmetic is tested
without trained runs.

Every method gets the same task: re-voice held-out clips (identities and
utterances that no run trained on, `talking_data.make_clips(data, "test",
N)`) from one reference image, the clip's first frame, as `jaxgen sample
--reference` does. Rows:

- **ground truth**: the clips themselves (the ceiling of every column);
- **a model**: `task.generate` on the clip's own speech;
- **shuffled audio**: the same model given clip `(i + 1) mod N`'s speech
  (`shuffled_pairing`, never its own), scored against clip i's speech and
  frames: what lip motion that ignores the audio scores;
- **static**: the reference frame copied to every frame.

Columns:

- `LSE-D`, `LSE-C`: Wav2Lip's lip-sync error distance and confidence from
  an *evaluation* lip-sync network (a `wav2lip_expert` run trained
  separately from the expert in Wav2Lip's loss, on other training clips and
  another seed), mean over clips; frames of another size are resized to its
  96x96 as its embedder does;
- `mouth corr`: Pearson correlation over time of the mouth opening the
  analytic judge reads off the pixels with the clip's true opening, mean over
  clips (`face_render.mouth_correlation`; a face whose mouth never moves
  scores 0);
- `SSIM`, `PSNR`: against the true frames after the first (frame 0 is the
  reference every method is given), at the run's own resolution;
- `s per s`: generation wall time per second of video after one warm-up clip
  (compilation), on the machine that ran the table.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxgen.data import face_render
from jaxgen.metrics import baselines, talking_face
from jaxgen.tasks.talking_face import talking_samples
from jaxgen.tasks.talking_face.talking_data import FPS, TalkingClips

COLUMNS = ("method", "LSE-D", "LSE-C", "mouth corr", "SSIM", "PSNR", "s per s")


class TalkingTableError(ValueError):
  """Clips or videos the comparison table cannot score (counts or shapes that do not fit)."""


@dataclasses.dataclass(frozen=True)
class TableRow:
  """One method's scores; `None` where a column does not apply (no timing for ground truth)."""

  method: str
  lse_d: float
  lse_c: float
  mouth_correlation: float
  ssim: float
  psnr: float
  seconds_per_second: float | None = None

  def as_dict(self) -> dict[str, Any]:
    """The row keyed by `COLUMNS` ("–" where a column does not apply)."""
    values = (
      self.method,
      self.lse_d,
      self.lse_c,
      self.mouth_correlation,
      self.ssim,
      self.psnr,
      self.seconds_per_second,
    )
    return {c: "–" if v is None else v for c, v in zip(COLUMNS, values)}


def shuffled_pairing(num_clips: int) -> np.ndarray:
  """(n,) index of the clip whose speech clip i is given: (i + 1) mod n, never its own."""
  return baselines.mismatched_pairing(
    num_clips, argument="num_clips", unit="clips", error=TalkingTableError
  )


def static_videos(clips: TalkingClips) -> np.ndarray:
  """(N, T, S, S, 3): each clip's first frame (its reference) repeated."""
  return np.repeat(clips.video[:, :1], clips.num_frames, axis=1)


def check_videos(videos: Any, clips: TalkingClips, name: str) -> np.ndarray:
  """`videos` as uint8 of the clips' shape, or a named error."""
  videos = np.asarray(videos)
  if videos.shape != clips.video.shape or videos.dtype != np.uint8:
    raise TalkingTableError(
      f"{name}: expected uint8 videos of the clips' shape {clips.video.shape}, found "
      f"{videos.dtype} {videos.shape}"
    )
  return videos


def quality(videos: np.ndarray, truth: np.ndarray, batch_size: int = 64) -> tuple[float, float]:
  """Mean SSIM and PSNR over all frames after the first (the reference every method is given)."""
  flat = lambda v: v[:, 1:].reshape((-1,) + v.shape[2:])
  return talking_face.pairwise_quality(flat(videos), flat(truth), batch_size)


def lip_sync(embed: talking_face.Embedder, videos: np.ndarray, clips: TalkingClips):
  """(mean LSE-D, mean LSE-C) of each video against its clip's own speech."""
  scores = [
    talking_face.lip_sync_scores(embed, video, speech) for video, speech in zip(videos, clips.audio)
  ]
  return float(np.mean([s.lse_d for s in scores])), float(np.mean([s.lse_c for s in scores]))


def score_row(
  method: str,
  videos: Any,
  clips: TalkingClips,
  embed: talking_face.Embedder,
  seconds_per_second: float | None = None,
) -> TableRow:
  """Every column for `videos` dubbed on `clips` (each video scored against its own clip)."""
  videos = check_videos(videos, clips, method)
  lse_d, lse_c = lip_sync(embed, videos, clips)
  ssim, psnr = quality(videos, clips.video)
  return TableRow(
    method=method,
    lse_d=lse_d,
    lse_c=lse_c,
    mouth_correlation=face_render.mouth_correlation(videos, clips.mouth),
    ssim=ssim,
    psnr=psnr,
    seconds_per_second=seconds_per_second,
  )


def dub(
  generate: Callable[[Mapping[str, Any], jax.Array], Mapping[str, Any]],
  clips: TalkingClips,
  mel: np.ndarray,
  seed: int = 0,
) -> tuple[np.ndarray, float]:
  """(videos, seconds per second of video): `generate(conditions, rng)` on every clip.

  The conditions are `talking_samples.clip_conditions(clips, mode="image",
  mel=mel)`: clip i's first frame is its one reference, `mel[i]` its speech
  windows. One clip runs first to compile; the timing covers all clips after.
  """
  conditions = talking_samples.clip_conditions(clips, mode="image", mel=mel)
  rng = jax.random.PRNGKey(seed)
  generate({k: v[:1] for k, v in conditions.items()}, rng)
  start = time.perf_counter()
  videos = np.stack([np.asarray(v, np.uint8) for v in generate(conditions, rng)["video"]])
  seconds = time.perf_counter() - start
  return videos, seconds / (clips.num_clips * clips.num_frames / FPS)


def model_rows(
  name: str,
  generate: Callable[[Mapping[str, Any], jax.Array], Mapping[str, Any]],
  clips: TalkingClips,
  embed: talking_face.Embedder,
) -> tuple[list[TableRow], np.ndarray]:
  """The model's row and its shuffled-audio row, and the videos of its own speech."""
  videos, speed = dub(generate, clips, clips.mel)
  shuffled, _ = dub(generate, clips, clips.mel[shuffled_pairing(clips.num_clips)])
  rows = [
    score_row(name, videos, clips, embed, speed),
    score_row(f"{name}, shuffled audio", shuffled, clips, embed),
  ]
  return rows, videos


def reference_rows(clips: TalkingClips, embed: talking_face.Embedder) -> list[TableRow]:
  """The ground-truth and static rows of `clips`."""
  return [
    score_row("ground truth", clips.video, clips, embed),
    score_row("static (reference frame)", static_videos(clips), clips, embed),
  ]
