"""The procedural talking heads: drawn faces, the mouth judge, held-out splits, the TFDS builder."""

import numpy as np
import pytest
import scipy.ndimage
import tensorflow_datasets as tfds

from jaxgen.data import face_render, speech_synth, talking_heads
from jaxgen.data.datasets import talking_heads as talking_heads_builder

MAX = face_render.MAX_OPENING


@pytest.fixture(scope="module")
def test_clips():
  return talking_heads.make_talking_heads("test", num_clips=6, seconds=3.0)


def _random_faces(seed, count, size, frames=8):
  """Random identities, each with random mouths, blinks and head offsets."""
  rng = np.random.default_rng(seed)
  videos, mouths = [], []
  for _ in range(count):
    face = face_render.random_identity(rng)
    mouth = rng.uniform(0, 1, (frames, 3)).astype(np.float32)
    blink = rng.uniform(0, 1, frames) * (rng.uniform(size=frames) < 0.4)
    offset = rng.uniform(-1, 1, (frames, 2)) * talking_heads.MAX_HEAD_OFFSET
    videos.append(face_render.draw_video(face, mouth, blink, offset, size))
    mouths.append(mouth)
  return np.stack(videos), np.stack(mouths)


def _pearson(a, b):
  return np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]


def test_clips_are_deterministic_and_depend_only_on_their_index():
  first = talking_heads.make_talking_heads("train", num_clips=3, seconds=1.0)
  again = talking_heads.make_talking_heads("train", num_clips=3, seconds=1.0)
  later = talking_heads.make_talking_heads("train", num_clips=2, seconds=1.0, start=1)
  other = talking_heads.make_talking_heads("train", num_clips=1, seconds=1.0, seed=1)
  frames = 25
  shapes = {
    "video": ((3, frames, 48, 48, 3), np.uint8),
    "audio": ((3, frames * 640), np.float32),
    "mouth": ((3, frames, 3), np.float32),
    "visemes": ((3, frames), np.int32),
    "blink": ((3, frames), np.float32),
    "head_offset": ((3, frames, 2), np.float32),
    "identity": ((3,), np.int32),
    "utterance": ((3,), np.int32),
  }
  assert {k: (v.shape, v.dtype) for k, v in first.items()} == shapes
  for key in shapes:
    np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    np.testing.assert_array_equal(first[key][1:], later[key], err_msg=key)
  assert not np.array_equal(first["video"][0], other["video"][0])
  assert not np.array_equal(first["audio"][0], other["audio"][0])
  # The faces are drawn from the stored mouths: the judge reads them back.
  assert face_render.mouth_correlation(first["video"], first["mouth"]) > 0.95


def test_splits_hold_out_identities_and_utterances():
  ids = {
    split: (
      {
        talking_heads.identity_id(split, k)
        for k in range(talking_heads.IDENTITIES_PER_SPLIT[split])
      },
      {talking_heads.utterance_id(split, i) for i in range(1000)},
    )
    for split in talking_heads.SPLITS
  }
  for a in talking_heads.SPLITS:
    for b in talking_heads.SPLITS:
      if a != b:
        assert not ids[a][0] & ids[b][0] and not ids[a][1] & ids[b][1]
  clips = {
    split: talking_heads.make_talking_heads(split, num_clips=10, seconds=1.0, size=24)
    for split in talking_heads.SPLITS
  }
  for split, data in clips.items():
    pool = talking_heads.IDENTITIES_PER_SPLIT[split]
    assert len(set(data["identity"].tolist())) == min(10, pool)
    assert set(data["identity"].tolist()) <= ids[split][0]
    assert set(data["utterance"].tolist()) <= ids[split][1]
  train_faces = {talking_heads.make_identity(int(i))[0] for i in clips["train"]["identity"]}
  test_faces = {talking_heads.make_identity(int(i))[0] for i in clips["test"]["identity"]}
  assert not train_faces & test_faces
  # Each identity speaks with its own voice.
  voices = [talking_heads.make_identity(talking_heads.identity_id("train", k))[1] for k in range(8)]
  assert len({v.pitch_hz for v in voices}) == 8
  # No test script is a train script.
  train_visemes = {v.tobytes() for v in clips["train"]["visemes"]}
  assert not any(v.tobytes() in train_visemes for v in clips["test"]["visemes"])


def test_judge_reads_opening_and_width_off_pixels_across_identities_blinks_and_motion():
  for size in (48, 64):
    videos, mouths = _random_faces(size, 40, size)
    measured = face_render.mouth_measurements(videos)
    extent = face_render.mouth_extent(mouths)
    assert _pearson(measured["opening"], mouths[..., 0]) >= 0.95
    assert _pearson(measured["width"], extent[..., 1]) >= 0.9
    # Calibrated: fractions of the side, on average within a fifth of a pixel of the drawing.
    assert np.abs(measured["opening"] - extent[..., 0]).mean() < 0.2 / size
    assert np.abs(measured["width"] - extent[..., 1]).mean() < 0.2 / size
  # The same mouths drawn still and open-eyed read (nearly) the same.
  rng = np.random.default_rng(3)
  face = face_render.random_identity(rng)
  mouth = rng.uniform(0, 1, (30, 3)).astype(np.float32)
  still = face_render.draw_video(face, mouth, np.zeros(30), np.zeros((30, 2)), 48)
  offsets = rng.choice([-1.0, 1.0], (30, 2)) * talking_heads.MAX_HEAD_OFFSET
  moving = face_render.draw_video(face, mouth, np.ones(30), offsets, 48)
  a, b = face_render.mouth_measurements(still), face_render.mouth_measurements(moving)
  # Opening to a fraction of a pixel; the width's pointed corners alias by up to a pixel.
  assert np.abs(a["opening"] - b["opening"]).max() < 0.3 / 48
  assert np.abs(a["width"] - b["width"]).max() < 1.0 / 48
  assert np.abs(a["width"] - b["width"]).mean() < 0.25 / 48


def test_sub_pixel_mouth_changes_change_pixels_and_measurements():
  face = face_render.random_identity(np.random.default_rng(5))
  openings = np.linspace(0.3, 0.4, 11, dtype=np.float32)  # 0.13 * 0.01 * 48 = 0.06 px steps.
  mouth = np.stack([openings, np.full(11, 0.5), np.zeros(11)], axis=1).astype(np.float32)
  frames = face_render.draw_video(face, mouth, np.zeros(11), np.zeros((11, 2)), 48)
  assert all(not np.array_equal(frames[i], frames[i + 1]) for i in range(10))
  assert np.all(np.diff(face_render.mouth_measurements(frames)["opening"]) > 0)
  # Only the mouth changed: the upper half of the face is identical.
  assert np.all(frames[:, :24] == frames[:1, :24])


def test_faces_are_centred_with_the_mouth_in_the_lower_half():
  rng = np.random.default_rng(7)
  for _ in range(10):
    face = face_render.random_identity(rng)
    for offset in ((-1, -1), (1, 1)):
      shift = np.asarray(offset) * talking_heads.MAX_HEAD_OFFSET
      for size in (48, 64, 96):
        frame = face_render.draw_face(face, (1.0, 1.0, 0.0), head_offset=shift, size=size)
        interior = np.argwhere(frame.astype(np.float32) @ [0.299, 0.587, 0.114] < 20)
        assert len(interior) and interior[:, 0].min() >= size // 2
        assert abs(interior[:, 1].mean() - size / 2) < 0.1 * size


def test_closed_visemes_read_closed_and_open_vowels_wide(test_clips):
  measured = face_render.mouth_measurements(test_clips["video"])["opening"] / MAX
  visemes = test_clips["visemes"]
  closed = visemes == speech_synth.VISEMES.index("closed")
  vowel_open = visemes == speech_synth.VISEMES.index("open")
  assert closed.sum() > 20 and vowel_open.sum() > 20
  assert np.median(measured[closed]) < 0.05 and measured[closed].max() < 0.25
  assert np.median(measured[vowel_open]) > 0.5
  assert np.all(measured[test_clips["mouth"][..., 0] == 0] < 0.08)  # Lips shut: a seam only.
  assert face_render.mouth_correlation(test_clips["video"], test_clips["mouth"]) >= 0.95


def _eye_difference(face, frame):
  """How far the eye boxes are from bare skin, summed over their pixels (saturating)."""
  size = frame.shape[0]
  rows = slice(
    int((0.42 - 0.7 * face.eye_size) * size), int(np.ceil((0.42 + 0.7 * face.eye_size) * size))
  )
  total = 0.0
  for side in (-1, 1):
    x = 0.5 + side * face.eye_spacing
    cols = slice(int((x - face.eye_size) * size), int(np.ceil((x + face.eye_size) * size)))
    difference = np.abs(frame[rows, cols].astype(np.float32) - np.asarray(face.skin)).max(-1)
    total += np.minimum(difference / 64, 1.0).sum()
  return total


def test_blinks_close_the_eyes(test_clips):
  rng = np.random.default_rng(11)
  for _ in range(8):
    face = face_render.random_identity(rng)
    seen = [
      _eye_difference(face, face_render.draw_face(face, (0.3, 0.5, 0.2), blink=b, size=64))
      for b in (0.0, 0.5, 1.0)
    ]
    # Whites and irises vanish as the lids close; a lash line stays.
    assert seen[0] > seen[1] > seen[2] and seen[2] < 0.65 * seen[0]
    lower = face_render.draw_face(face, (0.3, 0.5, 0.2), blink=1.0, size=64)[32:]
    assert np.array_equal(lower, face_render.draw_face(face, (0.3, 0.5, 0.2), size=64)[32:])
  # In the data: short blinks (~150 ms), a few seconds apart, eyes open otherwise.
  blink = test_clips["blink"]
  assert blink.min() == 0 and blink.max(axis=1).min() > 0.7
  shut = blink > 0.5
  assert shut.mean() < 0.1
  starts = np.argwhere(np.diff(shut.astype(int), axis=1) == 1)
  assert len(starts) >= len(blink)
  offsets = test_clips["head_offset"]
  assert np.abs(offsets).max() <= talking_heads.MAX_HEAD_OFFSET
  assert np.abs(np.diff(offsets, axis=1)).max() * 48 < 0.3  # Smooth: < 0.3 px a frame.


def test_mouth_correlation_baselines(test_clips):
  video, mouth = test_clips["video"], test_clips["mouth"]
  assert face_render.mouth_correlation(video, video) == pytest.approx(1.0)
  assert face_render.mouth_correlation(video, mouth) >= 0.95
  static = np.repeat(video[:, :1], video.shape[1], axis=1)  # The reference frame, copied.
  assert face_render.mouth_correlation(static, mouth) == 0.0
  assert face_render.mouth_correlation(static, video) == 0.0
  shuffled = np.roll(mouth, 1, axis=0)  # Another clip's mouth.
  assert abs(face_render.mouth_correlation(video, shuffled)) < 0.3
  # Soft, noisy frames (as a generator makes them) are still read by coverage.
  blurred = scipy.ndimage.gaussian_filter(video.astype(np.float32), (0, 0, 0.7, 0.7, 0))
  noise = np.random.default_rng(0).normal(0, 4, video.shape)
  generated = np.clip(np.round(blurred + noise), 0, 255).astype(np.uint8)
  assert face_render.mouth_correlation(generated, mouth) >= 0.95
  with pytest.raises(face_render.FaceInputError, match="truth"):
    face_render.mouth_correlation(video, mouth[:, :10])


def test_named_errors():
  face = face_render.random_identity(np.random.default_rng(0))
  with pytest.raises(face_render.FaceInputError, match="mouth"):
    face_render.draw_face(face, (1.5, 0.5, 0.0))
  with pytest.raises(face_render.FaceInputError, match="mouth"):
    face_render.draw_video(face, np.zeros((4, 2)), np.zeros(4), np.zeros((4, 2)))
  with pytest.raises(face_render.FaceInputError, match="blinks"):
    face_render.draw_video(face, np.zeros((4, 3)), np.zeros(3), np.zeros((4, 2)))
  with pytest.raises(face_render.FaceInputError, match="offsets"):
    face_render.draw_face(face, (0.5, 0.5, 0.0), head_offset=(0.5, 0.0))
  with pytest.raises(face_render.FaceInputError, match="size"):
    face_render.draw_face(face, (0.5, 0.5, 0.0), size=16)
  with pytest.raises(face_render.FaceInputError, match="frames"):
    face_render.mouth_measurements(np.zeros((2, 48, 48, 3), np.float32))
  with pytest.raises(talking_heads.TalkingHeadsError, match="split"):
    talking_heads.make_talking_heads("dev", num_clips=1)
  with pytest.raises(talking_heads.TalkingHeadsError, match="num_clips"):
    talking_heads.make_talking_heads("train", num_clips=0)
  with pytest.raises(talking_heads.TalkingHeadsError, match="seconds"):
    talking_heads.make_talking_heads("train", num_clips=1, seconds=1.01)
  with pytest.raises(talking_heads.TalkingHeadsError, match="size"):
    talking_heads.make_talking_heads("train", num_clips=1, size=8)


def test_tfds_builder_examples_equal_make_talking_heads(tmp_path):
  config = talking_heads_builder.TalkingHeadsConfig(
    name="tiny", description="Test size.", seconds=1.0, size=32, num_train=3, num_validation=1,
    num_test=2,
  )  # fmt: skip
  builder = tfds.builder("talking_heads", config=config, data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert builder.info.file_format.value == "array_record"
  assert builder.info.metadata["fps"] == 25.0
  for split, count in (("train", 3), ("validation", 1), ("test", 2)):
    source = tfds.data_source("talking_heads/tiny", split=split, data_dir=str(tmp_path))
    assert len(source) == count
    expected = talking_heads.make_talking_heads(split, num_clips=count, seconds=1.0, size=32)
    for i in range(count):
      example = source[i]
      assert set(example) == set(expected)
      for key, value in expected.items():
        np.testing.assert_array_equal(example[key], value[i], err_msg=key)
