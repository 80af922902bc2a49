"""Image–text readers and TFDS builders on tiny fake folders in each released layout:
MS-COCO captions (2014/2017), CUB-200-2011 + the 10-captions text release, image–caption
folders (metadata.jsonl and image + .txt)."""

import json
import logging
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxgen.data import image_text
from jaxgen.data.datasets import coco_captions, cub_birds, image_caption_folder
from jaxgen.data.image_text import ImageTextDataError

_RNG = np.random.default_rng(0)


def _pixels(mode="RGB", side=16):
  channels = {"RGB": 3, "RGBA": 4, "CMYK": 4, "L": None}[mode]
  shape = (side, side) if channels is None else (side, side, channels)
  return Image.fromarray(_RNG.integers(0, 256, shape, dtype=np.uint8), mode)


def _write_image(path, mode="RGB", fmt=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  _pixels(mode).save(path, format=fmt)
  return path


def _decoded(path):
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def _text(values):
  return [v.decode() if isinstance(v, bytes) else v for v in values]


def _prepare(builder_cls, manual_dir, data_dir, config=None):
  builder = builder_cls(data_dir=data_dir, config=config)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
  )
  name = builder.name if config is None else f"{builder.name}/{config}"
  return builder, lambda split: tfds.data_source(name, split=split, data_dir=data_dir)


# --- MS-COCO ------------------------------------------------------------------------------

_COCO_TRAIN = {  # image id -> captions (None: no annotation at all).
  1: ["A cat on a mat.", "  a small cat\n"],
  2: ["one", "two", "three", "four", "five"],
  3: ["   "],  # Only an empty caption: skipped.
  4: None,  # No caption: skipped.
  5: ["a greyscale photo"],
  6: ["a CMYK photo"],
  7: ["a truncated file"],
}


def _coco_name(image_id, split="train", year=2017):
  # 2014 archives name files COCO_<split>2014_<12-digit id>.jpg; 2017 ones <12-digit id>.jpg.
  return f"COCO_{split}{year}_{image_id:012d}.jpg" if year == 2014 else f"{image_id:012d}.jpg"


def _coco_json(images, captions, split="train", year=2017):
  return {
    "info": {"year": 2017},
    "licenses": [],
    "images": [
      {"id": i, "file_name": _coco_name(i, split, year), "width": 16, "height": 16} for i in images
    ],
    "annotations": [
      {"id": 100 * i + n, "image_id": i, "caption": c}
      for i, caps in captions.items()
      for n, c in enumerate(caps or [])
    ],
  }


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("coco")
  os.makedirs(root / "annotations")
  for year in (2014, 2017):
    for i in _COCO_TRAIN:
      mode = {5: "L", 6: "CMYK"}.get(i, "RGB")
      _write_image(str(root / f"train{year}" / _coco_name(i, "train", year)), mode)
    with open(root / f"train{year}" / _coco_name(7, "train", year), "r+b") as f:
      f.truncate(200)  # A truncated JPEG: listed, but it does not decode.
    captions = {**_COCO_TRAIN, 8: ["its file is missing"], 99: ["an image that is not listed"]}
    # Image 8 is listed with a caption but its file is missing.
    train = _coco_json([*_COCO_TRAIN, 8], captions, "train", year)
    (root / "annotations" / f"captions_train{year}.json").write_text(json.dumps(train))
  _write_image(str(root / "val2017" / f"{10:012d}.jpg"))
  val = _coco_json([10], {10: ["val caption"]})
  (root / "annotations" / "captions_val2017.json").write_text(json.dumps(val))
  return root


def test_coco_records_captions_and_skipped_with_a_warning(coco_dir, caplog):
  with caplog.at_level(logging.WARNING):
    records = image_text.read_image_text("coco2017", coco_dir, "train")
  assert [r.key for r in records] == ["1", "2", "5", "6", "7"]
  assert records[0].captions == ("A cat on a mat.", "a small cat")
  assert len(records[1].captions) == 5
  assert records[0].image_path == os.path.join(coco_dir, "train2017", "000000000001.jpg")
  assert records.skipped == {
    "caption of an unknown image_id": ["99"],
    "empty caption": ["3"],
    "missing caption": ["4"],
    "missing image file": [os.path.join(coco_dir, "train2017", "000000000008.jpg")],
  }
  assert records.num_skipped == 4
  assert "skipped 4 of 9 records" in caplog.text and "1 empty caption (e.g. ['3'])" in caplog.text
  coco2014 = image_text.read_coco_captions(coco_dir, "train", 2014)
  assert coco2014[0].image_path.endswith("train2014/COCO_train2014_000000000001.jpg")
  assert [r.key for r in coco2014] == ["1", "2", "5", "6", "7"]
  val = image_text.read_image_text("coco2017", coco_dir, "val")
  assert [(r.key, r.captions) for r in val] == [("10", ("val caption",))] and not val.skipped
  unchecked = image_text.read_coco_captions(coco_dir, "train", 2017, check_files=False)
  assert [r.key for r in unchecked][-1] == "8"


def test_coco_named_errors(coco_dir, tmp_path):
  with pytest.raises(ImageTextDataError, match="captions_val2014.json"):
    image_text.read_image_text("coco2014", coco_dir, "val")
  with pytest.raises(ImageTextDataError, match=r"split must be one of \['train', 'val'\]"):
    image_text.read_image_text("coco2017", coco_dir, "test")
  with pytest.raises(ImageTextDataError, match="expected a folder.*nowhere"):
    image_text.read_image_text("coco2017", tmp_path / "nowhere", "train")
  with pytest.raises(ImageTextDataError, match="found nothing at None"):
    image_text.read_image_text("coco2017", None, "train")
  with pytest.raises(ImageTextDataError, match=r"kind must be one of \['coco2014'"):
    image_text.read_image_text("coco", coco_dir, "train")
  os.makedirs(tmp_path / "annotations")
  os.makedirs(tmp_path / "val2017")
  path = tmp_path / "annotations" / "captions_val2017.json"
  path.write_text('{"images": [\n{"id": 1,}]}')
  with pytest.raises(ImageTextDataError, match="valid JSON.*line 2 column"):
    image_text.read_coco_captions(tmp_path, "val")
  path.write_text('{"images": []}')
  with pytest.raises(ImageTextDataError, match=r"'images' and 'annotations', found \['images'\]"):
    image_text.read_coco_captions(tmp_path, "val")
  path.write_text('{"images": [{"file_name": "a.jpg"}], "annotations": []}')
  with pytest.raises(ImageTextDataError, match="without 'id'"):
    image_text.read_coco_captions(tmp_path, "val")
  path.write_text(json.dumps(_coco_json([1], {1: [""]})))
  with pytest.raises(ImageTextDataError, match=r"found none \(skipped: \{'missing image file': 1"):
    image_text.read_coco_captions(tmp_path, "val")
  # Images may also sit under images/{split}{year}/.
  os.rmdir(tmp_path / "val2017")
  _write_image(str(tmp_path / "images" / "val2017" / _coco_name(1)))
  path.write_text(json.dumps(_coco_json([1], {1: ["a caption"]}, "val")))
  records = image_text.read_coco_captions(tmp_path, "val")
  assert records[0].image_path == os.path.join(tmp_path, "images", "val2017", _coco_name(1))


def test_coco_builder_stores_every_image_and_caption(coco_dir, tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    builder, source = _prepare(coco_captions.CocoCaptions, coco_dir, tmp_path, "2017")
  assert "skipped 1 of 5 images that do not decode" in caplog.text  # Image 7.
  assert set(builder.info.splits) == {"train", "val"}
  train = source("train")
  assert len(train) == 4
  examples = [train[i] for i in range(len(train))]
  assert [int(e["image_id"]) for e in examples] == [1, 2, 5, 6]
  for example in examples:
    i = int(example["image_id"])
    assert _text(example["captions"]) == [c.strip() for c in _COCO_TRAIN[i]]
    original = _decoded(coco_dir / "train2017" / f"{i:012d}.jpg")
    assert example["image"].shape == (16, 16, 3) and example["image"].dtype == np.uint8
    if i == 6:  # CMYK is converted to RGB and re-encoded (JPEG q95).
      assert np.abs(example["image"].astype(int) - original).mean() < 6
    else:  # RGB and greyscale JPEGs are stored as their own bytes.
      np.testing.assert_array_equal(example["image"], original)
  assert _text(source("val")[0]["captions"]) == ["val caption"]


# --- CUB-200-2011 ---------------------------------------------------------------------------

_CUB_IMAGES = [  # (class folder, image stem, bbox, is_training_image)
  ("001.Black_footed_Albatross", "Black_Footed_Albatross_0001_796111", (2.0, 3.0, 8.0, 6.0), 1),
  ("001.Black_footed_Albatross", "Black_Footed_Albatross_0002_55", (1.0, 1.0, 4.0, 4.0), 0),
  ("002.Laysan_Albatross", "Laysan_Albatross_0001_545", (10.0, 10.0, 6.0, 4.0), 1),
  ("002.Laysan_Albatross", "Laysan_Albatross_0002_1027", (0.0, 0.0, 16.0, 16.0), 0),
  ("003.Sooty_Albatross", "Sooty_Albatross_0001_1071", (4.0, 4.0, 2.0, 2.0), 1),
  ("003.Sooty_Albatross", "Sooty_Albatross_0002_796", (3.0, 2.0, 5.0, 9.0), 0),
  ("004.Groove_billed_Ani", "Groove_Billed_Ani_0001_1", (5.0, 6.0, 7.0, 8.0), 1),
]
_EMPTY_CAPTIONS = "Sooty_Albatross_0001_1071"
_NO_CAPTION_FILE = "Sooty_Albatross_0002_796"
_ATTNGAN_SPLITS = {"train": ("001.", "002."), "test": ("003.", "004.")}


def _cub_captions(stem):
  lines = [f"{stem} caption {n}" for n in range(12)]  # 12 lines: AttnGAN keeps 10.
  lines[1] = "this bird has\ufffd\ufffdwings"
  return lines


def _write_cub(root, text_folder="text"):
  cub = root / "CUB_200_2011"
  os.makedirs(cub)
  lines = {"images.txt": [], "bounding_boxes.txt": [], "train_test_split.txt": []}
  for image_id, (folder, stem, bbox, train) in enumerate(_CUB_IMAGES, start=1):
    _write_image(str(cub / "images" / folder / f"{stem}.jpg"))
    lines["images.txt"].append(f"{image_id} {folder}/{stem}.jpg")
    lines["bounding_boxes.txt"].append(f"{image_id} " + " ".join(str(v) for v in bbox))
    lines["train_test_split.txt"].append(f"{image_id} {train}")
    if stem != _NO_CAPTION_FILE:
      os.makedirs(root / text_folder / folder, exist_ok=True)
      text = "\n\n" if stem == _EMPTY_CAPTIONS else "\n".join(_cub_captions(stem)) + "\n"
      (root / text_folder / folder / f"{stem}.txt").write_text(text, encoding="utf-8")
  for name, rows in lines.items():
    (cub / name).write_text("\n".join(rows) + "\n")
  for split, prefixes in _ATTNGAN_SPLITS.items():
    os.makedirs(root / split)
    keys = [f"{f}/{s}" for f, s, _, _ in _CUB_IMAGES if f.startswith(prefixes)]
    (root / split / "filenames.pickle").write_bytes(pickle.dumps(keys, protocol=2))


@pytest.fixture(scope="module")
def cub_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("cub")
  _write_cub(root / "birds")  # manual_dir may be birds/ or the folder above it.
  return root


def test_cub_records_splits_labels_boxes_and_captions(cub_dir, caplog):
  with caplog.at_level(logging.WARNING):
    train = image_text.read_image_text("cub", cub_dir, "train")
  assert [r.key for r in train] == [
    "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111",
    "002.Laysan_Albatross/Laysan_Albatross_0001_545",
    "004.Groove_billed_Ani/Groove_Billed_Ani_0001_1",
  ]
  assert train.skipped == {"empty caption": [f"003.Sooty_Albatross/{_EMPTY_CAPTIONS}"]}
  assert "skipped 1 of 4 records" in caplog.text
  first = train[0]
  expected = _cub_captions("Black_Footed_Albatross_0001_796111")[:10]
  expected[1] = "this bird has wings"  # AttnGAN's U+FFFD U+FFFD -> space.
  assert first.captions == tuple(expected)
  assert [r.label for r in train] == [0, 1, 3]
  assert [r.bbox for r in train] == [(2.0, 3.0, 8.0, 6.0), (10.0, 10.0, 6.0, 4.0), (5, 6, 7, 8)]
  assert first.image_path == os.path.join(
    cub_dir, "birds", "CUB_200_2011", "images", f"{first.key}.jpg"
  )
  test = image_text.read_cub(cub_dir / "birds", "test", max_captions=3)
  assert [r.label for r in test] == [0, 1] and all(len(r.captions) == 3 for r in test)
  assert test.skipped == {
    "missing caption file": [
      os.path.join(cub_dir, "birds", "text", "003.Sooty_Albatross", f"{_NO_CAPTION_FILE}.txt")
    ]
  }
  # AttnGAN's class-disjoint split, from its filenames.pickle files.
  attngan = {s: image_text.read_cub(cub_dir, s, split_source="attngan") for s in ("train", "test")}
  assert [r.label for r in attngan["train"]] == [0, 0, 1, 1]
  assert [r.label for r in attngan["test"]] == [3] and attngan["test"].num_skipped == 2


def test_cub_reed_text_c10_folder_reads_the_same(tmp_path):
  _write_cub(tmp_path, text_folder="text_c10")
  records = image_text.read_cub(tmp_path, "train")
  assert len(records) == 3 and all(len(r.captions) == 10 for r in records)
  assert records[1].captions[0] == "Laysan_Albatross_0001_545 caption 0"


def test_attngan_crop_box_matches_the_reference_arithmetic():
  # Boxes truncated to int (pandas astype(int)), r = int(0.75 * max(w, h)),
  # centre = int((2x + w) / 2), bounds clipped to the image.
  assert image_text.attngan_crop_box((2.0, 3.0, 8.0, 6.0), 16, 16) == (0, 0, 12, 12)
  assert image_text.attngan_crop_box((10.0, 10.0, 6.0, 4.0), 16, 16) == (9, 8, 16, 16)
  assert image_text.attngan_crop_box((4.7, 4.2, 2.9, 2.0), 16, 16) == (4, 4, 6, 6)
  image = np.arange(16 * 20 * 3).reshape(16, 20, 3)
  np.testing.assert_array_equal(image_text.attngan_crop(image, (10, 10, 6, 4)), image[8:16, 9:17])


def test_cub_named_errors_and_the_restricted_unpickler(cub_dir, tmp_path):
  with pytest.raises(ImageTextDataError, match="expected CUB_200_2011/ in it or in birds/"):
    image_text.read_cub(tmp_path, "train")
  with pytest.raises(ImageTextDataError, match=r"split_source must be one of \['cub', 'attngan'\]"):
    image_text.read_cub(cub_dir, "train", split_source="reed")
  with pytest.raises(ImageTextDataError, match=r"split must be one of \['train', 'test'\]"):
    image_text.read_cub(cub_dir, "val")
  bad = tmp_path / "bad.pickle"
  bad.write_bytes(pickle.dumps({"names": ["a"]}))
  with pytest.raises(ImageTextDataError, match="expected a pickled list of str, found dict"):
    image_text.load_filenames_pickle(str(bad))
  # A pickle that would call a function on load is refused before anything runs.
  bad.write_bytes(pickle.dumps(os.path.join))
  with pytest.raises(ImageTextDataError, match=r"refusing to load posixpath.join"):
    image_text.load_filenames_pickle(str(bad))
  bad.write_bytes(pickle.dumps([np.int64(3)]))
  with pytest.raises(ImageTextDataError, match="refusing to load numpy"):
    image_text.load_filenames_pickle(str(bad))
  assert image_text.load_filenames_pickle(str(cub_dir / "birds" / "test" / "filenames.pickle")) == [
    f"{f}/{s}" for f, s, _, _ in _CUB_IMAGES[4:]
  ]
  bad.write_bytes(b"(lp0\nS'001.Black_footed_Albatross/B_1'\np1\na.")  # Python 2, protocol 0.
  assert image_text.load_filenames_pickle(str(bad)) == ["001.Black_footed_Albatross/B_1"]
  other = tmp_path / "other"
  _write_cub(other)
  (other / "test" / "filenames.pickle").write_bytes(pickle.dumps(["999.Dodo/Dodo_1"]))
  with pytest.raises(ImageTextDataError, match=r"not.*'999.Dodo/Dodo_1'"):
    image_text.read_cub(other, "test", split_source="attngan")
  keys = [f"003.Sooty_Albatross/{_EMPTY_CAPTIONS}", f"003.Sooty_Albatross/{_NO_CAPTION_FILE}"]
  (other / "test" / "filenames.pickle").write_bytes(pickle.dumps(keys))
  with pytest.raises(
    ImageTextDataError,
    match=r"found none \(skipped: \{'empty caption': 1, 'missing caption file': 1",
  ):
    image_text.read_cub(other, "test", split_source="attngan")
  os.rename(other / "text", other / "captions")
  with pytest.raises(ImageTextDataError, match=r"text_c10.*10-captions text release"):
    image_text.read_cub(other, "train")
  (other / "CUB_200_2011" / "bounding_boxes.txt").write_text("1 2 3\n")
  with pytest.raises(ImageTextDataError, match=r"bounding_boxes.txt' line 1: expected 5 fields"):
    image_text.read_cub(other, "train")


def test_cub_builder_attngan_split(cub_dir, tmp_path):
  builder, source = _prepare(cub_birds.CubBirds, cub_dir, tmp_path, "attngan")
  assert builder.info.splits["train"].num_examples == 4
  train = source("train")
  expected = image_text.read_cub(cub_dir, "train", split_source="attngan")
  for i, record in enumerate(expected):
    example = train[i]
    assert _text([example["key"]]) == [record.key]
    assert tuple(_text(example["captions"])) == record.captions
    assert example["label"] == record.label
    np.testing.assert_array_equal(example["bbox"], np.float32(record.bbox))
    np.testing.assert_array_equal(example["image"], _decoded(record.image_path))
  assert _text([source("test")[0]["key"]]) == ["004.Groove_billed_Ani/Groove_Billed_Ani_0001_1"]
  assert builder.info.splits["test"].num_examples == 1


# --- image–caption folders -----------------------------------------------------------------


@pytest.fixture(scope="module")
def folder_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("folder")
  train = root / "train"
  _write_image(str(train / "a.png"), "RGBA")
  _write_image(str(train / "sub" / "b.jpg"))
  _write_image(str(train / "c.png"))
  _write_image(str(train / "d.png"))
  rows = [
    {"file_name": "a.png", "text": "a red square"},
    {"file_name": "sub/b.jpg", "text": ["two", " captions "]},
    {"file_name": "c.png", "text": ""},
    {"file_name": "d.png", "extra": 1},
    {"file_name": "gone.png", "text": "no such file"},
  ]
  (train / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  test = root / "test"
  _write_image(str(test / "x" / "y.png"), "L")
  (test / "x" / "y.txt").write_text("first caption\n\nsecond caption\n")
  _write_image(str(test / "z.webp"), fmt="WEBP")
  (test / "z.txt").write_text("a webp image")
  _write_image(str(test / "no_caption.jpg"))
  return root


def test_folder_records_both_conventions_and_splits(folder_dir, caplog):
  assert image_text.folder_splits(folder_dir) == ("train", "test")
  with caplog.at_level(logging.WARNING):
    train = image_text.read_image_text("folder", folder_dir, "train")
  assert [(r.key, r.captions) for r in train] == [
    ("a.png", ("a red square",)),
    (os.path.join("sub", "b.jpg"), ("two", "captions")),
  ]
  assert train[1].image_path == os.path.join(folder_dir, "train", "sub", "b.jpg")
  assert train.skipped == {
    "empty caption": ["c.png"],
    "missing caption": ["d.png"],
    "missing image file": ["gone.png"],
  }
  assert "skipped 3 of 5 records" in caplog.text
  test = image_text.read_image_text("folder", folder_dir, "test")
  assert [(r.key, r.captions) for r in test] == [
    (os.path.join("x", "y.png"), ("first caption", "second caption")),
    ("z.webp", ("a webp image",)),
  ]
  assert test.skipped == {"missing caption file": ["no_caption.jpg"]}
  # A folder without split subfolders is all 'train'.
  flat = image_text.read_image_text("folder", folder_dir / "test", "train")
  assert [r.key for r in flat] == [r.key for r in test]
  with pytest.raises(ImageTextDataError, match=r"split must be one of \['train', 'test'\]"):
    image_text.read_image_text("folder", folder_dir, "validation")


def test_folder_named_errors(tmp_path):
  (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "x"}\n{"file_name"\n')
  with pytest.raises(ImageTextDataError, match="metadata.jsonl' line 2: expected one JSON object"):
    image_text.read_caption_folder(tmp_path)
  (tmp_path / "metadata.jsonl").write_text('{"text": "x"}\n')
  with pytest.raises(ImageTextDataError, match="line 1: expected an object with 'file_name'"):
    image_text.read_caption_folder(tmp_path)
  (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "prompt": "x"}\n')
  with pytest.raises(ImageTextDataError, match=r"caption column \['text', 'caption'\].*'prompt'"):
    image_text.read_caption_folder(tmp_path)
  _write_image(str(tmp_path / "a.png"))
  records = image_text.read_caption_folder(tmp_path, caption_column="prompt")
  assert records[0].captions == ("x",)
  os.remove(tmp_path / "metadata.jsonl")
  with pytest.raises(ImageTextDataError, match=r"found none \(skipped: \{'missing caption file'"):
    image_text.read_caption_folder(tmp_path)


def test_folder_builder_reads_back_the_folder(folder_dir, tmp_path):
  builder, source = _prepare(image_caption_folder.ImageCaptionFolder, folder_dir, tmp_path)
  assert set(builder.info.splits) == {"train", "test"}
  for split in ("train", "test"):
    data = source(split)
    records = image_text.read_image_text("folder", folder_dir, split)
    assert len(data) == len(records)
    for i, record in enumerate(records):
      example = data[i]
      assert _text([example["file_name"]]) == [record.key]
      assert tuple(_text(example["captions"])) == record.captions
      # RGBA PNG and WebP are converted to RGB PNG (lossless); the rest are stored as is.
      np.testing.assert_array_equal(example["image"], _decoded(record.image_path))
  with pytest.raises(ImageTextDataError, match="DownloadConfig"):
    image_caption_folder.ImageCaptionFolder(data_dir=tmp_path / "other").download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(tmp_path / "none"))
    )


# --- registration and imports ----------------------------------------------------------------


def test_builders_are_registered_beside_tfds_own_coco_captions():
  import jaxgen.data.datasets  # noqa: F401  (registers the builders)

  assert tfds.builder_cls("coco_captions_local") is coco_captions.CocoCaptions
  assert tfds.builder_cls("cub_birds") is cub_birds.CubBirds
  assert tfds.builder_cls("image_caption_folder") is image_caption_folder.ImageCaptionFolder
  assert tfds.builder_cls("coco_captions") is not coco_captions.CocoCaptions  # TFDS's own.


def test_readers_import_without_tensorflow():
  code = (
    "import sys, jaxgen.data.image_text; "
    "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets', 'jax', 'PIL') "
    "if m in sys.modules))"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
