"""Image-to-image readers and TFDS builders on tiny fake folders in each released layout:
pix2pix (side-by-side A | B), CycleGAN (trainA/trainB/testA/testB), Sketchy (rendered
256x256 photo/sketch variants) and a generic paired folder (<split>/A, <split>/B)."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxgen.data import image_text, paired_images
from jaxgen.data.datasets import cyclegan_folders, paired_folder, pix2pix_folders, sketchy
from jaxgen.data.paired_images import PairedImageDataError, SideBySideImageError

_RNG = np.random.default_rng(0)
_SIDE = 8


def _write(path, pixels, fmt=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(pixels).save(path, format=fmt)
  return str(path)


def _random(height=_SIDE, width=_SIDE, channels=3):
  shape = (height, width) if channels == 1 else (height, width, channels)
  return _RNG.integers(0, 256, shape, dtype=np.uint8)


def _decoded(path):
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def _text(value):
  return value.decode() if isinstance(value, bytes) else value


def _prepare(builder_cls, manual_dir, data_dir, config=None):
  builder = builder_cls(data_dir=data_dir, config=config)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
  )
  name = builder.name if config is None else f"{builder.name}/{config}"
  return builder, lambda split: tfds.data_source(name, split=split, data_dir=data_dir)


def _examples(source):
  return [source[i] for i in range(len(source))]


# --- pix2pix ----------------------------------------------------------------------------------

_PAIRS = {"train": ["1", "2", "10"], "val": ["v1"], "test": ["t1"]}  # Stems of good PNG files.


@pytest.fixture(scope="module")
def pix2pix_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("facades")
  halves = {}
  for split, stems in _PAIRS.items():
    for stem in stems:
      a, b = _random(), _random()
      halves[split, stem] = (a, b)
      _write(root / split / f"{stem}.png", np.concatenate([a, b], axis=1))
  _write(root / "train" / "nested" / "3.jpg", _random(_SIDE, 2 * _SIDE))  # Lossy: read back.
  _write(root / "train" / "odd.png", _random(_SIDE, 2 * _SIDE + 1))  # Not two square halves.
  (root / "train" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
  (root / "train" / "notes.txt").write_text("not an image")
  (root / "train" / "upper.Png").write_bytes(b"")  # Not in the reference's IMG_EXTENSIONS.
  return root, halves


def test_pix2pix_records_halves_direction_and_skips(pix2pix_dir, caplog):
  root, halves = pix2pix_dir
  records = paired_images.read_pix2pix(root, "train", "AtoB")
  keys = ["1.png", "10.png", "2.png", os.path.join("nested", "3.jpg"), "odd.png", "truncated.png"]
  assert [r.key for r in records] == keys  # Sorted paths, nested folders, as make_dataset.
  for stem in _PAIRS["train"]:
    a, b = halves["train", stem]
    record = records[keys.index(f"{stem}.png")]
    source, target = paired_images.decode_pair(record)
    np.testing.assert_array_equal(source, a)
    np.testing.assert_array_equal(target, b)
    backwards = paired_images.read_pix2pix(root, "train", "BtoA")[keys.index(f"{stem}.png")]
    source, target = paired_images.decode_pair(backwards)
    np.testing.assert_array_equal(source, b)
    np.testing.assert_array_equal(target, a)
  with pytest.raises(SideBySideImageError, match=r"width = 2 × height\), found 17×8"):
    paired_images.decode_pair(records[keys.index("odd.png")])

  with caplog.at_level(logging.WARNING):
    arrays = paired_images.paired_arrays(records, 4)
  assert "skipped 2 of 6 records: 1 not side by side" in caplog.text
  assert "1 do not decode" in caplog.text and "truncated.png" in caplog.text
  assert arrays["source"].shape == arrays["target"].shape == (4, 4, 4, 3)
  assert arrays["source"].dtype == np.uint8
  a, b = halves["train", "1"]
  expected = np.asarray(Image.fromarray(b).resize((4, 4), Image.Resampling.BICUBIC))
  np.testing.assert_array_equal(arrays["target"][0], expected)  # Bicubic as the reference.
  with pytest.raises(PairedImageDataError, match="resolution must be a positive int, found 0"):
    paired_images.paired_arrays(records, 0)
  grey = paired_images.paired_arrays(records[:1], 8, source_channels=1)["source"]
  np.testing.assert_array_equal(grey[0, ..., 0], np.asarray(Image.fromarray(a).convert("L")))


def test_pix2pix_named_errors(pix2pix_dir, tmp_path):
  root, _ = pix2pix_dir
  with pytest.raises(PairedImageDataError, match="expected a folder in the layout.*no folder"):
    paired_images.read_pix2pix(tmp_path / "missing", "train")
  with pytest.raises(PairedImageDataError, match=r"direction must be one of \['AtoB', 'BtoA'\]"):
    paired_images.read_pix2pix(root, "train", "AB")
  with pytest.raises(PairedImageDataError, match="split must be one of"):
    paired_images.read_pix2pix(root, "validation")
  (tmp_path / "train").mkdir()
  with pytest.raises(PairedImageDataError, match=r"expected the folder .*val' \(side-by-side"):
    paired_images.read_pix2pix(tmp_path, "val")
  with pytest.raises(PairedImageDataError, match=r"expected image files \(.jpg"):
    paired_images.read_pix2pix(tmp_path, "train")
  with pytest.raises(PairedImageDataError, match=r"expected split folders \['train', 'val'"):
    paired_images.pix2pix_splits(tmp_path / "train")


def test_pix2pix_builder_stores_exact_halves(pix2pix_dir, tmp_path, caplog):
  root, halves = pix2pix_dir
  with caplog.at_level(logging.WARNING):
    builder, source = _prepare(pix2pix_folders.Pix2PixFolders, root, tmp_path, "BtoA")
  assert "skipped 2 of 6 records" in caplog.text
  assert set(builder.info.splits) == {"train", "val", "test"}
  for split, stems in _PAIRS.items():
    examples = {_text(e["file_name"]): e for e in _examples(source(split))}
    for stem in stems:
      a, b = halves[split, stem]
      np.testing.assert_array_equal(examples[f"{stem}.png"]["source"], b)  # BtoA.
      np.testing.assert_array_equal(examples[f"{stem}.png"]["target"], a)
  jpeg = _decoded(root / "train" / "nested" / "3.jpg")  # Its decoded pixels, exactly.
  stored = {_text(e["file_name"]): e for e in _examples(source("train"))}["nested/3.jpg"]
  np.testing.assert_array_equal(stored["source"], jpeg[:, _SIDE:])
  np.testing.assert_array_equal(stored["target"], jpeg[:, :_SIDE])


# --- CycleGAN ---------------------------------------------------------------------------------

_DOMAIN_SIZES = {"trainA": 3, "trainB": 2, "testA": 1, "testB": 1}


@pytest.fixture(scope="module")
def cyclegan_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("horse2zebra")
  images = {}
  for folder, count in _DOMAIN_SIZES.items():
    for i in range(count):
      images[folder, f"{folder}_{i}.png"] = _write(root / folder / f"{folder}_{i}.png", _random())
  (root / "trainB" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
  return root, images


def test_cyclegan_domains_and_unpaired_arrays(cyclegan_dir, tmp_path, caplog):
  root, images = cyclegan_dir
  domains = paired_images.read_cyclegan(root, "train")
  assert [r.key for r in domains["A"]] == ["trainA_0.png", "trainA_1.png", "trainA_2.png"]
  assert [r.key for r in domains["B"]] == ["broken.jpg", "trainB_0.png", "trainB_1.png"]
  with caplog.at_level(logging.WARNING):
    arrays = paired_images.unpaired_arrays(domains, _SIDE, seed=1)
  assert "skipped 1 of 3 records: 1 do not decode" in caplog.text
  a = np.stack([_decoded(images["trainA", f"trainA_{i}.png"]) for i in range(3)])
  b = np.stack([_decoded(images["trainB", f"trainB_{i}.png"]) for i in range(2)])
  np.testing.assert_array_equal(arrays["source"], a)  # The larger domain, in order.
  assert arrays["target"].shape == a.shape  # The smaller one tiled: both B images appear.
  rows = [next(i for i in range(2) if np.array_equal(t, b[i])) for t in arrays["target"]]
  assert sorted(set(rows)) == [0, 1]
  backwards = paired_images.unpaired_arrays(domains, _SIDE, direction="BtoA", seed=1)
  np.testing.assert_array_equal(backwards["target"], a)

  _write(tmp_path / "testA" / "a.png", _random())
  with pytest.raises(PairedImageDataError, match=r"testB.*unpaired domains trainA/"):
    paired_images.read_cyclegan(tmp_path, "test")
  with pytest.raises(PairedImageDataError, match="CycleGAN domain must be one of"):
    paired_images.read_domain(root, "train", "C")


def test_cyclegan_builder_one_split_per_domain_folder(cyclegan_dir, tmp_path):
  root, images = cyclegan_dir
  builder, source = _prepare(cyclegan_folders.CycleganFolders, root, tmp_path)
  assert set(builder.info.splits) == set(_DOMAIN_SIZES)
  for folder, count in _DOMAIN_SIZES.items():
    examples = _examples(source(folder))
    assert len(examples) == count  # trainB's broken file is skipped.
    for example in examples:
      assert int(example["label"]) == "AB".index(folder[-1])
      path = images[folder, _text(example["file_name"])]
      np.testing.assert_array_equal(example["image"], _decoded(path))


# --- Sketchy ----------------------------------------------------------------------------------

_CATEGORIES = ("airplane", "zebra")


def _photo_ids():
  """Four photo ids per category, two of them in each split."""
  ids = {}
  for n, category in enumerate(_CATEGORIES):
    pool = [f"n0{n}000000_{i}" for i in range(200)]
    by_split = {
      s: [p for p in pool if paired_images.sketchy_split(p) == s] for s in ("train", "test")
    }
    ids[category] = by_split["train"][:2] + by_split["test"][:2]
  return ids


@pytest.fixture(scope="module")
def sketchy_dir(tmp_path_factory):
  top = tmp_path_factory.mktemp("sketchy")
  root = top / "rendered_256x256" / "256x256"
  pairs = {}  # sketch key -> (sketch path, photo path, label)
  for variant in ("tx_000000000000", "tx_000100000000"):
    for label, (category, photo_ids) in enumerate(_photo_ids().items()):
      for photo_id in photo_ids:
        photo = _write(root / "photo" / variant / category / f"{photo_id}.jpg", _random())
        for n in range(1, 3 if photo_id.endswith("0") else 4):
          key = f"{category}/{photo_id}-{n}"
          sketch = _write(root / "sketch" / variant / f"{key}.png", _random(channels=1))
          pairs[variant, key] = (sketch, photo, label)
    _write(root / "sketch" / variant / "zebra" / "n99_1-1.png", _random(channels=1))  # No photo.
    _write(root / "sketch" / variant / "zebra" / "unnumbered.png", _random(channels=1))
  return top, pairs


def test_sketchy_pairs_every_sketch_with_its_photo_split_by_photo(sketchy_dir, caplog):
  top, pairs = sketchy_dir
  variant = "tx_000100000000"
  by_split = {}
  for split in ("train", "test"):
    with caplog.at_level(logging.WARNING):
      by_split[split] = paired_images.read_sketchy(top, split, variant)
    assert by_split[split].label_names == _CATEGORIES
  assert "1 sketch without its photo (e.g. ['zebra/n99_1-1'])" in caplog.text
  assert "1 sketch name not '<photo id>-<n>' (e.g. ['zebra/unnumbered'])" in caplog.text
  records = by_split["train"] + by_split["test"]
  assert sorted(r.key for r in records) == sorted(k for v, k in pairs if v == variant)
  for record in records:
    assert (record.source_path, record.target_path, record.label) == pairs[variant, record.key]
  photos = {s: {r.target_path for r in by_split[s]} for s in by_split}
  assert photos["train"] and photos["test"] and not photos["train"] & photos["test"]
  for root in (top / "rendered_256x256", top / "rendered_256x256" / "256x256"):  # Any level.
    assert paired_images.read_sketchy(root, "test", variant) == by_split["test"]
  arrays = paired_images.paired_arrays(by_split["test"], 4, source_channels=1)
  assert arrays["source"].shape == (len(by_split["test"]), 4, 4, 1)


def test_sketchy_named_errors(sketchy_dir, tmp_path):
  top, _ = sketchy_dir
  with pytest.raises(PairedImageDataError, match=r"sketch variant: expected the folder.*tx_9"):
    paired_images.read_sketchy(top, "train", "tx_9")
  with pytest.raises(PairedImageDataError, match=r"photo_variant.*holds \['tx_000000000000'"):
    paired_images.read_sketchy(top, "train", photo_variant="tx_000000000010")
  with pytest.raises(PairedImageDataError, match=r"expected rendered_256x256/256x256/\{photo"):
    paired_images.read_sketchy(tmp_path, "train")
  with pytest.raises(PairedImageDataError, match=r"test_percent must be in \(0, 100\)"):
    paired_images.read_sketchy(top, "train", test_percent=0)


def test_sketchy_builder_labels_and_pairs(sketchy_dir, tmp_path):
  top, pairs = sketchy_dir
  builder, source = _prepare(sketchy.Sketchy, top, tmp_path, "tx_000000000000")
  assert builder.info.features["label"].names == list(_CATEGORIES)
  for split in ("train", "test"):
    records = paired_images.read_sketchy(top, split)
    examples = _examples(source(split))
    assert [_text(e["key"]) for e in examples] == [r.key for r in records]
    for example in examples:
      sketch, photo, label = pairs["tx_000000000000", _text(example["key"])]
      assert int(example["label"]) == label
      assert _text(example["photo_id"]) == os.path.splitext(os.path.basename(photo))[0]
      np.testing.assert_array_equal(example["sketch"], _decoded(sketch))
      np.testing.assert_array_equal(example["photo"], _decoded(photo))


# --- generic paired folder --------------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("pairs")
  files = {}
  for split, names in {"train": ["a", "b", os.path.join("sub", "c")], "val": ["d"]}.items():
    for name in names:
      files[split, name] = (
        _write(root / split / "A" / f"{name}.png", _random(channels=1)),
        _write(root / split / "B" / f"{name}.jpg", _random(), fmt="JPEG"),
      )
  return root, files


def test_paired_folder_matches_by_name_and_builder(pairs_dir, tmp_path):
  root, files = pairs_dir
  assert paired_images.paired_folder_splits(root) == ("train", "val")
  records = paired_images.read_paired_folder(root, "train", "BtoA")
  assert [r.key for r in records] == ["a", "b", os.path.join("sub", "c")]
  assert [(r.target_path, r.source_path) for r in records] == [
    files["train", k] for k in ("a", "b", os.path.join("sub", "c"))
  ]
  builder, source = _prepare(paired_folder.PairedFolder, root, tmp_path / "data", "AtoB")
  assert set(builder.info.splits) == {"train", "val"}
  for (split, name), (a, b) in files.items():
    example = {_text(e["file_name"]): e for e in _examples(source(split))}[name]
    np.testing.assert_array_equal(example["source"], _decoded(a))  # Greyscale PNG as RGB.
    np.testing.assert_array_equal(example["target"], _decoded(b))

  broken = tmp_path / "broken"
  for name in ("x", "y", "z"):
    _write(broken / "train" / "A" / f"{name}.png", _random())
  _write(broken / "train" / "B" / "x.png", _random())
  _write(broken / "train" / "B" / "w.png", _random())
  with pytest.raises(PairedImageDataError, match=r"2 only in A/ \(e.g. \['y', 'z'\]\).*\['w'\]"):
    paired_images.read_paired_folder(broken, "train")
  _write(broken / "train" / "B" / "x.jpg", _random())
  with pytest.raises(PairedImageDataError, match="expected one file per name"):
    paired_images.read_paired_folder(broken, "train")
  with pytest.raises(PairedImageDataError, match=r"split 'test'.*holds \['train'\]"):
    paired_images.read_paired_folder(broken, "test")
  with pytest.raises(image_text.ImageTextDataError, match="DownloadConfig"):
    paired_folder.PairedFolder(data_dir=tmp_path / "other").download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(tmp_path / "none"))
    )


# --- registration and imports -----------------------------------------------------------------


def test_builders_are_registered_under_their_own_names():
  import jaxgen.data.datasets  # noqa: F401  (registers the builders)

  assert tfds.builder_cls("pix2pix_folders") is pix2pix_folders.Pix2PixFolders
  assert tfds.builder_cls("cyclegan_folders") is cyclegan_folders.CycleganFolders
  assert tfds.builder_cls("sketchy") is sketchy.Sketchy
  assert tfds.builder_cls("paired_folder") is paired_folder.PairedFolder
  assert tfds.builder_cls("cycle_gan") is not cyclegan_folders.CycleganFolders  # TFDS's own.


def test_readers_import_without_tensorflow():
  code = (
    "import sys, jaxgen.data.paired_images; "
    "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets', 'jax') if m in sys.modules))"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
