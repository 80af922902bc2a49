"""Tests for the procedural text-to-motion data set."""

import numpy as np
import pytest

from jaxgen.data import motion_formats
from jaxgen.data import synthetic_motion as sm
from jaxgen.data import tokenizer


@pytest.fixture(scope="module")
def data():
  return sm.make_split("train", num_examples=400, return_joints=True)


def test_deterministic_and_seeded():
  first = sm.make_split("test", num_examples=30)
  second = sm.make_split("test", num_examples=30)
  for key in ("motion", "length", "action", "second_action"):
    np.testing.assert_array_equal(first[key], second[key], err_msg=key)
  assert first["caption"] == second["caption"]
  other = sm.make_split("test", num_examples=30, seed=1)
  assert other["caption"] != first["caption"]
  train = sm.make_split("train", num_examples=30)
  assert train["caption"] != first["caption"]


def test_shapes_lengths_and_padding(data):
  n = len(data["caption"])
  assert data["motion"].shape == (n, 196, 263)
  assert data["motion"].dtype == np.float32
  assert data["length"].dtype == np.int32 and data["action"].dtype == np.int32
  lengths = data["length"]
  assert (lengths % 4 == 0).all() and lengths.min() >= 40
  assert lengths.max() <= 196
  mask = motion_formats.length_mask(lengths, 196)
  assert np.isfinite(data["motion"]).all()
  assert not data["motion"][~mask].any()
  for i in range(5):
    motion_formats.check_motion(data["motion"][i, : lengths[i]])
  assert set(data["action"]) == set(range(len(sm.ACTIONS)))
  assert (data["second_action"] != data["action"]).all()
  pairs = data["second_action"] >= 0
  assert 0.2 < pairs.mean() < 0.4
  assert (data["second_action"][pairs] < len(sm.ACTIONS)).all()


def test_captions_use_only_the_vocabulary(data):
  tok = tokenizer.build_caption_tokenizer(sm.CAPTION_WORDS)
  ids, mask = tok.encode(data["caption"], max_length=32)
  assert not (ids[mask] == tok.unk_id).any()
  assert mask.sum(1).max() < 32  # Nothing truncated.
  assert len(set(data["caption"])) > 0.5 * len(data["caption"])
  for caption, action, second in zip(data["caption"], data["action"], data["second_action"]):
    words = caption.split()
    if "wave" in sm.ACTIONS[action] and second < 0:
      assert sm.ACTIONS[action].split("_")[1] in words
    if second >= 0:
      assert any(c in caption for c in ("then", "afterwards"))


def _summary(joints: np.ndarray) -> dict[str, float]:
  """A few numbers per clip that tell the actions apart (world joints)."""
  root = joints[:, 0]
  seconds = (len(joints) - 1) / sm.FPS
  travel = np.linalg.norm(root[-1, [0, 2]] - root[0, [0, 2]])
  standing = joints[0, 0, 1]
  head = joints[:, 15, 1]
  across = joints[:, 2] - joints[:, 1]  # Right hip - left hip.
  heading = np.unwrap(np.arctan2(across[:, 2], -across[:, 0]))
  return {
    "speed": travel / seconds,
    "rise": root[:, 1].max() - standing,
    "drop": standing - root[:, 1].min(),
    "left_hand": (joints[:, 20, 1] - head).max(),
    "right_hand": (joints[:, 21, 1] - head).max(),
    "turn": heading[-1] - heading[0],
    "left_foot": joints[:, 10, 1].max(),
    "right_foot": joints[:, 11, 1].max(),
  }


def test_single_actions_are_visually_distinct(data):
  """Each action shows its own signature in the joint positions."""
  single = np.nonzero(data["second_action"] < 0)[0]
  by_action = {a: [] for a in sm.ACTIONS}
  for i in single:
    by_action[sm.ACTIONS[data["action"][i]]].append(_summary(data["joints"][i]))

  def stat(action, key):
    return np.array([s[key] for s in by_action[action]])

  for action in sm.ACTIONS:
    assert len(by_action[action]) >= 5, action
  assert (stat("run", "speed") > 0.5).all()
  assert np.median(stat("run", "speed")) > 2 * np.median(stat("walk", "speed"))
  assert (stat("walk", "speed") > 0.15).all()
  assert (stat("jump", "rise") > 0.15).all()
  assert (stat("sit_down", "drop") > 0.3).all()
  for side, other in (("left", "right"), ("right", "left")):
    assert (stat(f"wave_{side}_hand", f"{side}_hand") > 0).all()
    assert (stat(f"wave_{side}_hand", f"{other}_hand") < -0.3).all()
    assert (stat(f"kick_{side}", f"{side}_foot") > 0.4).all()
    assert (stat(f"kick_{side}", f"{other}_foot") < 0.3).all()
  assert (stat("turn_left", "turn") > np.deg2rad(60)).all()
  assert (stat("turn_right", "turn") < -np.deg2rad(60)).all()
  for action in ("wave_left_hand", "wave_right_hand", "sit_down"):
    assert (np.abs(stat(action, "turn")) < 0.3).all(), action
    assert (stat(action, "speed") < 0.2).all(), action


def test_contacts_mark_planted_feet(data):
  """Walking clips have both planted and swinging feet."""
  walks = np.nonzero((data["action"] == sm.ACTIONS.index("walk")) & (data["second_action"] < 0))[0]
  contacts = np.concatenate([data["motion"][i, : data["length"][i], -4:] for i in walks])
  assert 0.2 < contacts.mean() < 0.95


def test_bad_arguments():
  with pytest.raises(ValueError, match="split must be one of"):
    sm.make_split("validation")
  with pytest.raises(ValueError, match="fmt must be the humanml3d format"):
    sm.make_split("train", motion_formats.KIT_ML)
  with pytest.raises(ValueError, match="num_examples must be >= 1"):
    sm.make_split("train", num_examples=0)


def test_tfds_builder_matches_make_split(tmp_path):
  import tensorflow_datasets as tfds
  from jaxgen.data.datasets import synthetic_motion as builder_lib

  config = builder_lib.SyntheticMotionConfig(name="tiny", num_train=12, num_test=5, seed=3)
  builder = builder_lib.SyntheticMotion(config=config, data_dir=tmp_path)
  builder.download_and_prepare()
  assert len(builder.info.metadata["mean"]) == 263
  for split, n in (("train", 12), ("test", 5)):
    data = sm.make_split(split, seed=3, num_examples=n)
    source = tfds.data_source("synthetic_motion/tiny", split=split, data_dir=tmp_path)
    assert len(source) == n
    for i in (0, n - 1):
      example = source[i]
      length = data["length"][i]
      np.testing.assert_array_equal(example["motion"], data["motion"][i, :length])
      caption = example["caption"]
      caption = caption.decode() if isinstance(caption, bytes) else caption
      assert caption == data["caption"][i]
      assert example["action"] == data["action"][i]
