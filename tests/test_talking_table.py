"""The talking-face comparison table's arithmetic: baselines, pairing, columns, dubbing wiring.

A numpy lip-sync "network" stands in for the evaluation SyncNet (the mouth
opening the judge reads per frame vs the speech's loudness per frame, both
centred and scaled per clip, each window a unit vector), so no compilation is needed and the LSE
columns have known orderings.
"""

import numpy as np
import pytest

from jaxgen.data import face_render
from jaxgen.metrics import talking_face
from jaxgen.tasks.talking_face import talking_data, talking_table

SAMPLES = talking_face.SAMPLES_PER_FRAME


@pytest.fixture(scope="module")
def clips():
  data = dict(num_clips=3, seconds=1.6, seed=0, size=48, reference_gap=25)
  return talking_data.make_clips(data, "test", 3)


def _standardised(x):
  return (x - x.mean()) / (x.std() + 1e-6)


def mouth_loudness_embedder(frames, speech):
  count = talking_face.window_count(len(frames), len(speech))
  opening = _standardised(face_render.mouth_measurements(frames)["opening"])
  whole = len(speech) // SAMPLES
  loudness = np.sqrt((speech[: whole * SAMPLES].reshape(whole, SAMPLES) ** 2).mean(1))
  windows = np.arange(count)[:, None] + np.arange(talking_face.WINDOW_FRAMES)
  return _unit(opening[windows]), _unit(_standardised(loudness)[windows])


def _unit(windows):
  """Each window's vector scaled to length 1 ."""
  return windows / (np.linalg.norm(windows, axis=-1, keepdims=True) + 1e-6)


def test_shuffled_pairing_never_gives_a_clip_its_own_speech():
  for n in (2, 3, 7):
    pairing = talking_table.shuffled_pairing(n)
    assert sorted(pairing.tolist()) == list(range(n))
    assert np.all(pairing != np.arange(n))
  with pytest.raises(talking_table.TalkingTableError, match="num_clips"):
    talking_table.shuffled_pairing(1)


def test_reference_rows_rank_ground_truth_above_the_static_face(clips):
  truth, static = talking_table.reference_rows(clips, mouth_loudness_embedder)
  assert truth.mouth_correlation > 0.8
  assert static.mouth_correlation == 0.0
  assert truth.ssim == pytest.approx(1.0) and np.isinf(truth.psnr)
  assert static.ssim < 0.999 and np.isfinite(static.psnr)
  assert truth.lse_c > static.lse_c
  assert truth.lse_d < static.lse_d
  row = truth.as_dict()
  assert list(row) == list(talking_table.COLUMNS) and row["s per s"] == "–"


def test_model_rows_dub_each_clip_and_give_the_shuffled_row_another_clips_speech(clips):
  """A 'model' that returns the true video of the clip whose speech it hears: its own row is the
  ground truth's, its shuffled row shows clip i with clip i+1's mouth."""
  calls = []

  def generate(conditions, rng):
    del rng
    calls.append(len(conditions["mel"]))
    hears = [
      int(np.argmin([np.abs(m - own).max() for own in clips.mel])) for m in conditions["mel"]
    ]
    return {"video": [clips.video[j] for j in hears]}

  rows, videos = talking_table.model_rows("oracle", generate, clips, mouth_loudness_embedder)
  assert calls == [1, 3, 1, 3]  # a warm-up clip, then every clip, for each pairing
  own, shuffled = rows
  np.testing.assert_array_equal(videos, clips.video)
  truth = talking_table.score_row("truth", clips.video, clips, mouth_loudness_embedder)
  assert own.mouth_correlation == truth.mouth_correlation and own.lse_d == truth.lse_d
  assert own.seconds_per_second > 0 and shuffled.seconds_per_second is None
  assert shuffled.method == "oracle, shuffled audio"
  assert shuffled.mouth_correlation < own.mouth_correlation - 0.3
  assert shuffled.lse_c < own.lse_c


def test_videos_of_the_wrong_shape_or_dtype_are_named(clips):
  with pytest.raises(talking_table.TalkingTableError, match="w2l: expected uint8"):
    talking_table.score_row("w2l", clips.video[:, :-1], clips, mouth_loudness_embedder)
  with pytest.raises(talking_table.TalkingTableError, match="float32"):
    talking_table.score_row("w2l", clips.video.astype(np.float32), clips, mouth_loudness_embedder)
