"""Tests for the paired scenes, their analytic judge and their TFDS builder."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxgen.data import scene_judge, scenes
from jaxgen.data.datasets import paired_scenes

_VIEWS = ("image", "night", "label", "edges", "sketch")


@pytest.fixture(scope="module")
def test_scenes():
  return scenes.make_scenes("test", 48, resolution=32)


def test_same_seed_same_arrays_other_seed_other_scenes(test_scenes):
  again = scenes.make_scenes("test", 48, resolution=32)
  assert again.keys() == test_scenes.keys()
  for key in again:
    np.testing.assert_array_equal(again[key], test_scenes[key], err_msg=key)
  other = scenes.make_scenes("test", 48, resolution=32, seed=1)
  for key in _VIEWS:
    assert not np.array_equal(other[key], test_scenes[key]), key
  # Scene i does not depend on how many scenes are drawn, nor where drawing starts.
  prefix = scenes.make_scenes("test", 5, resolution=32)
  tail = scenes.make_scenes("test", 3, resolution=32, start=45)
  for key in (*_VIEWS, "caption", "object_class", "object_centre"):
    np.testing.assert_array_equal(prefix[key], test_scenes[key][:5], err_msg=key)
    np.testing.assert_array_equal(tail[key], test_scenes[key][45:], err_msg=key)
  np.testing.assert_array_equal(tail["scene_id"], [45, 46, 47])


def test_shapes_dtypes_and_value_ranges(test_scenes):
  n, k = 48, scenes.MAX_OBJECTS
  for key, channels in (("image", 3), ("night", 3), ("label", 1), ("edges", 1), ("sketch", 1)):
    assert test_scenes[key].shape == (n, 32, 32, channels), key
    assert test_scenes[key].dtype == np.uint8, key
  assert test_scenes["label"].max() < scenes.NUM_LABELS
  assert set(np.unique(test_scenes["edges"])) == {0, 255}
  assert test_scenes["caption"].shape == (n,)
  assert test_scenes["object_class"].shape == test_scenes["object_shape"].shape == (n, k)
  assert test_scenes["object_centre"].shape == (n, k, 2)
  assert test_scenes["object_centre"].dtype == np.float32
  assert 2 <= test_scenes["num_objects"].min() and test_scenes["num_objects"].max() <= 4
  # Each visible object's class covers its centre pixel; captions name the objects.
  size = 32
  for i in range(n):
    for c, (x, y), visible in zip(
      test_scenes["object_class"][i],
      test_scenes["object_centre"][i],
      test_scenes["object_visible"][i],
    ):
      if c >= 0:
        assert scenes.LABEL_NAMES[c] in test_scenes["caption"][i]
        if visible == 1:
          assert test_scenes["label"][i, int(y * size), int(x * size), 0] == c
    assert (test_scenes["object_class"][i] >= 0).sum() == test_scenes["num_objects"][i]
  assert len(scenes.LABEL_COLOURS) == scenes.NUM_LABELS == len(scenes.LABEL_NAMES)
  assert len({tuple(c) for c in scenes.LABEL_COLOURS}) == scenes.NUM_LABELS
  big = scenes.make_scenes("train", 2, resolution=64)
  assert big["image"].shape == (2, 64, 64, 3) and big["sketch"].shape == (2, 64, 64, 1)


def test_train_and_test_are_disjoint_and_unpaired_train_shares_no_scene(test_scenes):
  train = scenes.make_scenes("train", 48, resolution=32)
  train_images = {image.tobytes() for image in train["image"]}
  assert not train_images & {image.tobytes() for image in test_scenes["image"]}
  unpaired = scenes.make_unpaired("train", 24, resolution=32)
  assert unpaired.keys() == {"day", "night"}
  # Day: scenes [0, 24) of train; night: scenes [24, 48), never the same scene.
  np.testing.assert_array_equal(unpaired["day"], train["image"][:24])
  np.testing.assert_array_equal(unpaired["night"], train["night"][24:])
  day_labels = {label.tobytes() for label in train["label"][:24]}
  assert not day_labels & {label.tobytes() for label in train["label"][24:]}
  paired = scenes.make_unpaired("test", 48, resolution=32)
  np.testing.assert_array_equal(paired["day"], test_scenes["image"])
  np.testing.assert_array_equal(paired["night"], test_scenes["night"])


def test_sketch_is_a_partial_wobbly_redrawing_not_a_function_of_the_image(test_scenes):
  label = test_scenes["label"]
  first = scenes.draw_sketch(label, test_scenes, np.random.default_rng(1))
  second = scenes.draw_sketch(label, test_scenes, np.random.default_rng(2))
  assert first.shape == label.shape and first.dtype == np.uint8
  assert all(not np.array_equal(a, b) for a, b in zip(first, second))
  # Against the clean edges (1-px tolerance): far above an unrelated scene,
  # below a perfect copy.
  sketch_scores = scene_judge.edge_scores(test_scenes["image"], test_scenes["sketch"])
  shuffled = scene_judge.edge_f1(test_scenes["image"], np.roll(test_scenes["sketch"], 1, axis=0))
  assert 0.75 < sketch_scores["f1"] < 0.99, sketch_scores
  assert shuffled < 0.6 and sketch_scores["f1"] - shuffled > 0.3, shuffled
  strokes = (first < 128).sum(axis=(1, 2, 3))
  edge_pixels = (test_scenes["edges"] < 128).sum(axis=(1, 2, 3))
  assert np.all(strokes > 0.5 * edge_pixels) and np.all(strokes < 2 * edge_pixels)
  assert len(np.unique(first[first < 128])) > 10  # Varying pressure.


def test_judge_scores_ground_truth_near_one_and_others_low(test_scenes):
  labels = test_scenes["label"]
  day = scene_judge.label_scores(test_scenes["image"], labels)
  night = scene_judge.label_scores(test_scenes["night"], labels, style="night")
  # Measured on these 48 scenes: pixel accuracy 0.987 / 0.987, mIoU ~0.91.
  for scores in (day, night):
    assert scores["pixel_accuracy"] > 0.97 and scores["miou"] > 0.85, scores
  shuffled_images = np.roll(test_scenes["image"], 1, axis=0)
  shuffled = scene_judge.label_scores(shuffled_images, labels)
  assert shuffled["pixel_accuracy"] < 0.8 and shuffled["miou"] < 0.35, shuffled
  grey = np.full_like(test_scenes["image"], 128)
  flat = scene_judge.label_scores(grey, labels)
  assert flat["pixel_accuracy"] < 0.1 and flat["miou"] < 0.05, flat
  # Night pictures judged as day pictures fail: the palettes differ.
  assert scene_judge.label_scores(test_scenes["night"], labels)["pixel_accuracy"] < 0.3

  assert scene_judge.edge_f1(test_scenes["image"], test_scenes["edges"]) > 0.97
  assert scene_judge.edge_f1(test_scenes["night"], test_scenes["edges"], style="night") > 0.97
  assert scene_judge.edge_f1(shuffled_images, test_scenes["edges"]) < 0.6
  assert scene_judge.edge_f1(grey, test_scenes["edges"]) == 0.0

  objects = scene_judge.object_scores(test_scenes["image"], test_scenes)
  night_objects = scene_judge.object_scores(test_scenes["night"], test_scenes, style="night")
  for scores in (objects, night_objects):
    assert scores["colour_accuracy"] > 0.97 and scores["shape_accuracy"] > 0.85, scores
    assert scores["num_objects"] > 100
  other = scene_judge.object_scores(shuffled_images, test_scenes)
  assert other["colour_accuracy"] < 0.3 and other["shape_accuracy"] < 0.5, other
  flat_objects = scene_judge.object_scores(grey, test_scenes)
  assert flat_objects["shape_accuracy"] < 0.1, flat_objects
  # Float images in [-1, 1] score like their uint8 originals.
  as_float = test_scenes["image"][:8] / 127.5 - 1
  np.testing.assert_allclose(
    scene_judge.label_scores(as_float, labels[:8], value_range=(-1, 1))["miou"],
    scene_judge.label_scores(test_scenes["image"][:8], labels[:8])["miou"],
  )


def test_label_colour_coding_round_trips_and_check_source_accepts_every_view(test_scenes):
  label = test_scenes["label"][0]
  rgb = scenes.labels_to_rgb(label)
  assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
  np.testing.assert_array_equal(scenes.rgb_to_labels(rgb), label[..., 0])
  np.testing.assert_array_equal(scenes.check_source("label", rgb, 32), label)
  np.testing.assert_array_equal(scenes.check_source("label", label[..., 0], 32), label)
  for kind in ("sketch", "edges"):
    view = test_scenes[kind][0]
    np.testing.assert_array_equal(scenes.check_source(kind, view, 32), view)
    np.testing.assert_array_equal(scenes.check_source(kind, np.repeat(view, 3, -1), 32), view)
  day = test_scenes["image"][0]
  np.testing.assert_array_equal(scenes.check_source("day", day, 32), day)


def test_check_source_names_bad_inputs(test_scenes):
  day, label, sketch = (test_scenes[k][0] for k in ("image", "label", "sketch"))
  cases = [
    ("day", day[:16], "32x32"),
    ("sketch", np.pad(sketch, ((0, 1), (0, 1), (0, 0))), "32x32"),
    ("day", day[..., :1], "3 channels"),
    ("day", np.concatenate([day, day[..., :1]], -1), "3 channels"),
    ("sketch", np.concatenate([sketch] * 4, -1), "1 or 3 channels"),
    ("label", np.full((32, 32, 1), scenes.NUM_LABELS, np.uint8), "label ids"),
    ("label", np.full((32, 32, 3), (1, 2, 3), np.uint8), "LABEL_COLOURS"),
    ("sketch", np.full((32, 32, 1), 255, np.uint8), "all white"),
    ("edges", np.full((32, 32), 255, np.uint8), "all white"),
    ("sketch", 255 - sketch, "mostly dark"),
    ("day", day.astype(np.float32), "uint8"),
    ("photo", day, "source kind"),
  ]
  for kind, image, message in cases:
    with pytest.raises(scenes.SourceImageError, match=message):
      scenes.check_source(kind, image, 32)
  with pytest.raises(scenes.SourceImageError, match="label ids"):
    scenes.labels_to_rgb(label.astype(np.int32) + scenes.NUM_LABELS)
  with pytest.raises(ValueError, match="split"):
    scenes.make_scenes("validation", 4)
  with pytest.raises(ValueError, match="count"):
    scenes.make_scenes("train", 0)
  with pytest.raises(ValueError, match="style"):
    scene_judge.segment(day[None], style="dusk")


def test_tfds_builder_prepares_array_record_and_data_source_reads_it_back(tmp_path):
  config = paired_scenes.PairedScenesConfig(
    name="tiny16", description="Test size.", resolution=16, num_train=6, num_test=3
  )
  builder = tfds.builder("paired_scenes", config=config, data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert builder.info.file_format.value == "array_record"
  assert builder.info.features["sketch"].shape == (16, 16, 1)
  for split, count in (("train", 6), ("test", 3)):
    source = tfds.data_source("paired_scenes/tiny16", split=split, data_dir=str(tmp_path))
    assert len(source) == count
    expected = scenes.make_scenes(split, count, resolution=16)
    for i in (0, count - 1):
      example = source[i]
      for key in (*_VIEWS, "object_class", "object_centre", "object_visible", "scene_id"):
        np.testing.assert_array_equal(example[key], expected[key][i], err_msg=key)
      assert example["caption"].decode() == expected["caption"][i]
