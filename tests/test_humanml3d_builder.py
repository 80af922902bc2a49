"""TFDS builders for HumanML3D / KIT-ML on small fake folders in the
released layout."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxgen.data import motion_formats
from jaxgen.data.datasets import humanml3d
from jaxgen.data.datasets import kit_ml

# name -> (frames, [(caption, tokens, start, end)]) per split.
_CLIPS = {
  "train": {
    "000001": (
      60,
      [
        ("a man walks forward.", "a/DET man/NOUN walk/VERB", 0.0, 0.0),
        ("someone strolls ahead", "someone/PRON stroll/VERB", 0.0, 0.0),
      ],
    ),
    "M000001": (
      199,
      [
        ("a man walks forward.", "a/DET man/NOUN", 0.0, 0.0),
        ("he jumps", "he/PRON jump/VERB", 1.0, 3.5),
        ("too short span", "too/ADV", 1.0, 2.0),
      ],
    ),
    "000002": (120, [("only a span", "only/ADV span/NOUN", 0.5, 4.0)]),
    "000003": (30, [("too short clip", "too/ADV short/ADJ", 0.0, 0.0)]),
    "000004": (250, [("too long clip", "too/ADV long/ADJ", 0.0, 0.0)]),
  },
  "val": {"000005": (80, [("a person waves", "a/DET person/NOUN", "nan", "nan")])},
  "test": {"000006": (196, [("a person sits down", "sit/VERB", 0.0, 0.0)])},
}


def _write_folder(root, fmt):
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, "new_joint_vecs"))
  os.makedirs(os.path.join(root, "texts"))
  motions = {}
  for split, clips in _CLIPS.items():
    with open(os.path.join(root, f"{split}.txt"), "w") as f:
      f.write("\n".join(clips) + "\n")
    for name, (frames, lines) in clips.items():
      motions[name] = rng.normal(size=(frames, fmt.feature_dim)).astype(np.float32)
      np.save(os.path.join(root, "new_joint_vecs", f"{name}.npy"), motions[name])
      with open(os.path.join(root, "texts", f"{name}.txt"), "w") as f:
        for caption, tokens, start, end in lines:
          f.write(f"{caption}#{tokens}#{start}#{end}\n")
  np.save(os.path.join(root, "Mean.npy"), np.arange(fmt.feature_dim, dtype=np.float32))
  np.save(os.path.join(root, "Std.npy"), np.full(fmt.feature_dim, 2.0, np.float32))
  with open(os.path.join(root, "all.txt"), "w") as f:  # Extra files are fine.
    f.write("ignored\n")
  return motions


def _expected(fmt, motions):
  """What the reference loader keeps: key -> (motion, captions, spans)."""
  out = {}
  for split, clips in _CLIPS.items():
    out[split] = {}
    for name, (frames, lines) in clips.items():
      if not fmt.min_frames <= frames < 200:
        continue
      whole = [l for l in lines if float(l[2]) in (0.0,) and float(l[3]) == 0 or str(l[2]) == "nan"]
      if whole:
        out[split][name] = (motions[name], whole)
      for i, line in enumerate(lines):
        if line in whole:
          continue
        a, b = int(line[2] * fmt.fps), int(line[3] * fmt.fps)
        if fmt.min_frames <= b - a < 200:
          out[split][f"{name}:{i}"] = (motions[name][a:b], [line])
  return out


@pytest.mark.parametrize("builder_cls", [humanml3d.HumanML3D, kit_ml.KitMl])
def test_builder_reads_every_caption_span_and_split(tmp_path, builder_cls):
  fmt = builder_cls.FORMAT
  manual = tmp_path / "manual"
  motions = _write_folder(manual, fmt)
  data_dir = tmp_path / "tfds"
  builder = builder_cls(data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  np.testing.assert_array_equal(builder.info.metadata["mean"], np.arange(fmt.feature_dim))
  np.testing.assert_array_equal(builder.info.metadata["std"], 2.0)
  expected = _expected(fmt, motions)
  assert set(builder.info.splits) == {"train", "val", "test"}
  for split, clips in expected.items():
    source = tfds.data_source(builder.name, split=split, data_dir=data_dir)
    examples = [source[i] for i in range(len(source))]
    assert len(examples) == len(clips), split
    for example, (key, (features, lines)) in zip(examples, clips.items()):
      name = example["name"].decode() if isinstance(example["name"], bytes) else example["name"]
      assert name == key.split(":")[0]
      np.testing.assert_array_equal(example["motion"], features)
      assert example["length"] == len(features)
      assert example["end_frame"] - example["start_frame"] == len(features)
      captions = [c.decode() if isinstance(c, bytes) else c for c in example["caption"]]
      tokens = [c.decode() if isinstance(c, bytes) else c for c in example["tokens"]]
      assert captions == [l[0] for l in lines]
      assert tokens == [l[1] for l in lines]
      starts = [0.0 if str(l[2]) == "nan" else float(l[2]) for l in lines]
      ends = [0.0 if str(l[3]) == "nan" else float(l[3]) for l in lines]
      np.testing.assert_allclose(example["start"], starts)
      np.testing.assert_allclose(example["end"], ends)
      if ":" in key:
        assert example["start_frame"] == int(starts[0] * fmt.fps)


def test_expected_grouping_matches_the_reference_rules():
  fmt = motion_formats.HUMANML3D
  keys = _expected(fmt, {n: np.zeros((c[0], 1)) for s in _CLIPS.values() for n, c in s.items()})
  # Span 1.0-3.5 s = frames 20..70 kept; 1.0-2.0 s = 20 frames dropped;
  # a clip with only spans has no whole-clip example; 30 and 250 dropped.
  assert list(keys["train"]) == ["000001", "M000001", "M000001:1", "000002:0"]
  assert list(keys["val"]) == ["000005"] and list(keys["test"]) == ["000006"]


def test_unknown_layout_and_bad_files_raise_named_errors(tmp_path):
  fmt = motion_formats.HUMANML3D
  with pytest.raises(humanml3d.DatasetLayoutError, match="manual directory"):
    humanml3d.check_layout(None, fmt)
  (tmp_path / "motions").mkdir()
  with pytest.raises(humanml3d.DatasetLayoutError, match=r"missing \['new_joint_vecs', 'texts'"):
    humanml3d.check_layout(tmp_path, fmt)
  folder = tmp_path / "h"
  _write_folder(folder, fmt)
  builder = humanml3d.HumanML3D(data_dir=tmp_path / "out")
  with pytest.raises(humanml3d.DatasetLayoutError, match="released layout"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=tmp_path))
  # A KIT-ML folder read as HumanML3D: wrong width, named with its file.
  kit = tmp_path / "kit"
  _write_folder(kit, motion_formats.KIT_ML)
  with pytest.raises(motion_formats.InvalidMotionError, match=r"000001.npy.*263"):
    list(humanml3d.split_examples(str(kit), "train", fmt))
  (folder / "texts" / "000001.txt").write_text("no hashes here\n")
  with pytest.raises(humanml3d.DatasetLayoutError, match="line 1"):
    list(humanml3d.split_examples(str(folder), "train", fmt))
  os.remove(folder / "new_joint_vecs" / "000001.npy")
  with pytest.raises(humanml3d.DatasetLayoutError, match="does not exist"):
    list(humanml3d.split_examples(str(folder), "train", fmt))
  bad = np.zeros((50, 263), np.float32)
  bad[3] = np.nan
  np.save(folder / "new_joint_vecs" / "000005.npy", bad)
  with pytest.raises(motion_formats.InvalidMotionError, match="NaN"):
    list(humanml3d.split_examples(str(folder), "val", fmt))


def test_load_split_pads_crops_and_expands_captions(tmp_path, caplog):
  motions = _write_folder(tmp_path, motion_formats.HUMANML3D)
  with caplog.at_level("WARNING"):
    train = humanml3d.load_split(tmp_path, "train")
  # The dropped long clip is named; the short one (30 frames) is only counted.
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert warnings == [
    (
      "humanml3d train: dropped 1 motions/spans of 200 frames or more, as the reference "
      "loader does: 000004 (250 frames)"
    )
  ]
  assert train["motion"].shape == (5, 196, 263)
  assert train["caption"] == [
    "a man walks forward.",
    "someone strolls ahead",
    "a man walks forward.",
    "he jumps",
    "only a span",
  ]
  assert train["name"] == ["000001", "000001", "M000001", "M000001:1", "000002:0"]
  # 199 frames -> 196; spans of 50 and 70 frames -> 48 and 68.
  np.testing.assert_array_equal(train["length"], [60, 60, 196, 48, 68])
  np.testing.assert_array_equal(train["motion"][2], motions["M000001"][:196])
  np.testing.assert_array_equal(train["motion"][3, :48], motions["M000001"][20:68])
  np.testing.assert_array_equal(train["motion"][0, 60:], 0.0)
  first = humanml3d.load_split(tmp_path, "train", all_captions=False)
  assert first["caption"] == [
    "a man walks forward.",
    "a man walks forward.",
    "he jumps",
    "only a span",
  ]
  kit = tmp_path / "kit"
  _write_folder(kit, motion_formats.KIT_ML)
  assert kit_ml.load_split(kit, "test")["motion"].shape == (1, 196, 251)
  with pytest.raises(ValueError, match="split must be one of"):
    humanml3d.load_split(tmp_path, "dev")
