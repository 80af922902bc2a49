"""Tests for the captioned-shapes data set and its TFDS builder."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxgen.data import shapes
from jaxgen.data.datasets import captioned_shapes


def test_make_split_is_bit_identical_across_calls():
  first = shapes.make_split("train", 300)
  second = shapes.make_split("train", 300)
  assert first.keys() == second.keys()
  for key in first:
    np.testing.assert_array_equal(first[key], second[key], err_msg=key)
  other_seed = shapes.make_split("train", 300, seed=1)
  assert not np.array_equal(first["image"], other_seed["image"])


def test_make_split_shapes_and_dtypes():
  for resolution in (32, 48):
    data = shapes.make_split("test", 20, resolution=resolution)
    assert data["image"].shape == (20, resolution, resolution, 3)
    assert data["image"].dtype == np.uint8
    assert data["caption"].shape == (20,)
    for name in shapes.ATTRIBUTES:
      assert data[name].dtype == np.int32 and data[name].shape == (20,)
      assert data[name].min() >= 0
      assert data[name].max() < len(shapes.ATTRIBUTE_VALUES[name])
    assert data["centre"].shape == (20, 2)
    assert data["half_size"].shape == (20,)


def test_held_out_combinations_are_disjoint_and_train_covers_every_value():
  train = set(shapes.split_combinations("train"))
  test = set(shapes.split_combinations("test"))
  assert not train & test
  assert train | test == set(shapes.all_combinations())
  assert len(shapes.all_combinations()) == 3 * 6 * 2 * 9
  assert 0.08 <= len(test) / (len(train) + len(test)) <= 0.12
  for name in shapes.ATTRIBUTES:
    assert {getattr(s, name) for s in train} == set(shapes.ATTRIBUTE_VALUES[name]), name


def test_splits_draw_only_their_combinations_equally_often():
  for split in shapes.SPLITS:
    combos = shapes.split_combinations(split)
    data = shapes.make_split(split, 2 * len(combos))
    drawn = [
      shapes.ShapeSpec.from_labels(*labels) for labels in zip(*(data[k] for k in shapes.ATTRIBUTES))
    ]
    counts = {c: drawn.count(c) for c in set(drawn)}
    assert set(counts) == set(combos)
    assert set(counts.values()) == {2}


def test_captions_parse_back_to_their_specs():
  for spec in shapes.all_combinations():
    assert shapes.parse_caption(spec.caption) == spec
    assert shapes.ShapeSpec.from_labels(*spec.labels) == spec
  assert shapes.parse_caption("A  Small RED circle ON the LEFT") == (
    shapes.ShapeSpec("circle", "red", "small", "left")
  )
  data = shapes.make_split("train", 50)
  for i, caption in enumerate(data["caption"]):
    spec = shapes.parse_caption(caption)
    assert spec.labels == tuple(int(data[k][i]) for k in shapes.ATTRIBUTES)
  assert shapes.all_combinations()[0].caption == "a small red circle in the top left"


def test_bad_inputs_raise_named_errors():
  with pytest.raises(ValueError, match="colour"):
    shapes.ShapeSpec("circle", "purple", "small", "left")
  with pytest.raises(ValueError, match="position"):
    shapes.ShapeSpec.from_labels(0, 0, 0, 9)
  with pytest.raises(ValueError, match="split"):
    shapes.make_split("validation", 4)
  with pytest.raises(ValueError, match="num_examples"):
    shapes.make_split("train", 0)
  with pytest.raises(ValueError, match="resolution"):
    shapes.make_split("train", 4, resolution=4)
  with pytest.raises(ValueError, match="caption"):
    shapes.parse_caption("a small red circle somewhere")


def test_coverage_matches_analytic_area_and_centre():
  resolution, half = 64, 0.15
  centres = np.full((3, 2), 0.5) + [0.003, -0.002]
  alpha = shapes.coverage(np.arange(3), centres, np.full(3, half), resolution)
  areas = alpha.sum(axis=(1, 2)) / resolution**2
  np.testing.assert_allclose(areas, np.asarray([np.pi, 4, 2]) * half**2, rtol=0.03)
  grid = (np.arange(resolution) + 0.5) / resolution
  subpixel = 1 / (shapes.SUPERSAMPLE * resolution)
  centroid_x = (alpha.sum(axis=1) @ grid) / alpha.sum(axis=(1, 2))
  centroid_y = (alpha.sum(axis=2) @ grid) / alpha.sum(axis=(1, 2))
  np.testing.assert_allclose(centroid_x, centres[:, 0], atol=subpixel)
  # The triangle's centroid sits a third of the half size below its box centre.
  np.testing.assert_allclose(centroid_y, centres[:, 1] + [0, 0, half / 3], atol=subpixel)


def test_render_colours_background_and_antialiasing():
  specs = [
    shapes.ShapeSpec(s, c, "large", "center")
    for s, c in zip(shapes.SHAPES, ("red", "cyan", "magenta"))
  ]
  images = shapes.render_specs(specs, resolution=32)
  for spec, image in zip(specs, images):
    np.testing.assert_array_equal(image[16, 16], shapes.PALETTE[spec.colour])
    np.testing.assert_array_equal(image[0, 0], shapes.BACKGROUND)
    values = {tuple(p) for p in image.reshape(-1, 3)}
    assert len(values) > 2, "edges should blend shape and background"


def test_largest_shapes_stay_inside_the_image_in_corners():
  half = shapes.HALF_SIZES["large"] * (1 + shapes.SIZE_JITTER)
  low = shapes.CELL_CENTRES[0] - shapes.CENTRE_JITTER
  high = shapes.CELL_CENTRES[-1] + shapes.CENTRE_JITTER
  centres = np.asarray([[low, low]] * 3 + [[high, high]] * 3)
  alpha = shapes.coverage(np.tile(np.arange(3), 2), centres, np.full(6, half), resolution=64)
  unclipped = np.tile([np.pi, 4, 2], 2) * half**2
  np.testing.assert_allclose(alpha.sum(axis=(1, 2)) / 64**2, unclipped, rtol=0.03)


def test_caption_vocabulary_is_small_and_sorted():
  vocab = shapes.caption_vocabulary()
  assert vocab == sorted(vocab)
  assert {"a", "red", "circle", "small", "top", "center"} <= set(vocab)
  assert len(vocab) == 21


# TFDS builder.

_TINY = dict(name="tiny16", description="Test size.", resolution=16, num_train=24, num_test=8)


def _prepare_tiny(data_dir, **builder_kwargs):
  config = captioned_shapes.CaptionedShapesConfig(**_TINY)
  builder = tfds.builder(
    "captioned_shapes", config=config, data_dir=str(data_dir), **builder_kwargs
  )
  builder.download_and_prepare()
  return builder


def _assert_equal_to_make_split(examples, split, num_examples):
  expected = shapes.make_split(split, num_examples, resolution=16)
  assert len(examples) == num_examples
  np.testing.assert_array_equal(np.stack([e["image"] for e in examples]), expected["image"])
  assert [e["caption"].decode() for e in examples] == expected["caption"].tolist()
  for name in shapes.ATTRIBUTES:
    np.testing.assert_array_equal([e[name] for e in examples], expected[name])


def test_tfds_builder_prepares_array_record_and_data_source_reads_it_back(tmp_path):
  builder = _prepare_tiny(tmp_path)
  assert builder.info.file_format.value == "array_record"
  assert builder.info.features["image"].shape == (16, 16, 3)
  assert builder.info.features["position"].names == list(shapes.POSITIONS)
  for split, size in (("train", _TINY["num_train"]), ("test", _TINY["num_test"])):
    source = tfds.data_source(
      f"captioned_shapes/{_TINY['name']}", split=split, data_dir=str(tmp_path)
    )
    _assert_equal_to_make_split([source[i] for i in range(len(source))], split, size)


def test_tfds_registered_configs(tmp_path):
  builder = tfds.builder("captioned_shapes", data_dir=str(tmp_path))
  assert builder.version == "1.0.0"
  assert builder.builder_config.name == "32px"
  assert builder.info.features["image"].shape == (32, 32, 3)
  assert builder.info.file_format.value == "array_record"
  large = tfds.builder("captioned_shapes/64px", data_dir=str(tmp_path))
  assert large.info.features["image"].shape == (64, 64, 3)


def test_tfds_load_reads_a_tfrecord_copy(tmp_path):
  """`tfds.load` needs TensorFlow and TFRecord files (not ArrayRecord)."""
  pytest.importorskip("tensorflow")
  _prepare_tiny(tmp_path, file_format="tfrecord")
  dataset = tfds.load(
    f"captioned_shapes/{_TINY['name']}", split="test", data_dir=str(tmp_path), download=False
  )
  _assert_equal_to_make_split(list(tfds.as_numpy(dataset)), "test", _TINY["num_test"])
