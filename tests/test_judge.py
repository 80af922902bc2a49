"""Tests for the analytic captioned-shapes judge."""

import numpy as np
import pytest
from scipy import ndimage

from jaxgen.data import judge, shapes
from jaxgen.data.images import to_uint8

_ACCURACIES = ("shape", "colour", "size", "position", "all")


@pytest.fixture(scope="module")
def data():
  """Both splits: every combination appears."""
  train = shapes.make_split("train", 640)
  test = shapes.make_split("test", 128)
  return {k: np.concatenate([train[k], test[k]]) for k in train}


def _quantise(images: np.ndarray) -> np.ndarray:
  return np.round(np.clip(images, 0, 255)).astype(np.uint8)


def test_ground_truth_renders_are_judged_correct(data):
  accuracy = judge.judge_images(data["image"], data)["accuracy"]
  for name in _ACCURACIES:
    assert accuracy[name] >= 0.99, (name, accuracy[name])
  assert accuracy["found"] == 1.0


@pytest.mark.parametrize("resolution", [24, 64])
def test_other_resolutions(resolution):
  data = shapes.make_split("train", 120, resolution=resolution, seed=3)
  accuracy = judge.judge_images(data["image"], data)["accuracy"]
  for name in _ACCURACIES:
    assert accuracy[name] >= 0.99, (name, accuracy[name])


def test_mismatched_captions_score_near_chance(data):
  rng = np.random.default_rng(0)
  shuffled = {k: rng.permutation(data[k]) for k in shapes.ATTRIBUTES}
  accuracy = judge.judge_images(data["image"], shuffled)["accuracy"]
  for name in shapes.ATTRIBUTES:
    chance = 1 / len(shapes.ATTRIBUTE_VALUES[name])
    assert abs(accuracy[name] - chance) < 0.08, (name, accuracy[name], chance)
  assert accuracy["all"] < 0.02


def test_robust_to_gaussian_noise(data):
  rng = np.random.default_rng(1)
  noisy = _quantise(data["image"] + rng.normal(0, 20, data["image"].shape))
  accuracy = judge.judge_images(noisy, data)["accuracy"]
  for name in _ACCURACIES:
    assert accuracy[name] >= 0.97, (name, accuracy[name])


def test_robust_to_blur_and_faded_colours(data):
  images = data["image"].astype(np.float64)
  blurred = _quantise(ndimage.gaussian_filter(images, (0, 0.8, 0.8, 0)))
  faded = _quantise(0.6 * images + 0.4 * images.mean(-1, keepdims=True))
  for altered in (blurred, faded):
    accuracy = judge.judge_images(altered, data)["accuracy"]
    for name in _ACCURACIES:
      assert accuracy[name] >= 0.97, (name, accuracy[name])


def test_specks_do_not_distract(data):
  images = data["image"][:64].copy()
  images[:, 0, 31] = 255  # One bright stray pixel in a corner.
  labels = {k: data[k][:64] for k in shapes.ATTRIBUTES}
  accuracy = judge.judge_images(images, labels)["accuracy"]
  assert accuracy["all"] >= 0.99


def test_images_without_a_shape_count_as_wrong():
  blank = np.zeros((3, 32, 32, 3), np.uint8)
  blank[1] = 200  # Uniform colour: all background.
  blank[2, 5, 5] = 255  # A speck far smaller than any shape.
  targets = [shapes.ShapeSpec("circle", "red", "small", "top left")] * 3
  result = judge.judge_images(blank, targets)
  accuracy = result["accuracy"]
  assert accuracy["found"] == 0.0
  for name in _ACCURACIES:
    assert accuracy[name] == 0.0
  for name in shapes.ATTRIBUTES:
    np.testing.assert_array_equal(result["predictions"][name], -1)


def test_targets_as_specs_captions_or_labels_agree(data):
  images = data["image"][:20]
  labels = {k: data[k][:20] for k in shapes.ATTRIBUTES}
  specs = [shapes.ShapeSpec.from_labels(*l) for l in zip(*labels.values())]
  by_labels = judge.judge_images(images, labels)
  by_specs = judge.judge_images(images, specs)
  by_captions = judge.judge_images(images, data["caption"][:20])
  for name in _ACCURACIES:
    assert (
      by_labels["accuracy"][name]
      == by_specs["accuracy"][name]
      == (by_captions["accuracy"][name])
      == 1.0
    )
  for name in shapes.ATTRIBUTES:
    np.testing.assert_array_equal(by_labels["predictions"][name], labels[name])


def test_float_images_need_their_value_range(data):
  images = data["image"][:20]
  labels = {k: data[k][:20] for k in shapes.ATTRIBUTES}
  symmetric = images.astype(np.float32) / 127.5 - 1
  unit = images.astype(np.float32) / 255
  for floats, value_range in ((symmetric, (-1, 1)), (unit, (0, 1))):
    np.testing.assert_array_equal(to_uint8(floats, value_range), images)
    assert judge.judge_images(floats, labels, value_range)["accuracy"]["all"] == 1.0
  with pytest.raises(ValueError, match="value_range"):
    judge.judge_images(symmetric, labels)
  with pytest.raises(ValueError, match="value_range"):
    judge.judge_images(images, labels, value_range=(0, 255))


def test_bad_inputs_raise_named_errors(data):
  images = data["image"][:4]
  labels = {k: data[k][:4] for k in shapes.ATTRIBUTES}
  with pytest.raises(ValueError, match="N = 3"):
    judge.judge_images(images, {k: v[:3] for k, v in labels.items()})
  with pytest.raises(ValueError, match="missing \\['position'\\]"):
    judge.judge_images(images, {k: labels[k] for k in ("shape", "colour", "size")})
  with pytest.raises(ValueError, match="square RGB"):
    judge.predict_attributes(images[..., :2])
  with pytest.raises(ValueError, match="caption"):
    judge.judge_images(images, ["a red thing"] * 4)
  with pytest.raises(ValueError, match="non-empty"):
    judge.judge_images(images, [])
