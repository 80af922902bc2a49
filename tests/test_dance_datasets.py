"""AIST++ and FineDance readers and builders, the SMPL skeleton and FK, the safe unpickler.

Everything runs on made-up data written here in the released layouts: a
made-up SMPL-format model file (no SMPL weights are needed) and tiny fake
AIST++ / FineDance folders of a few frames.
"""

import logging
import os
import pickle

import numpy as np
import pytest
import scipy.io.wavfile
import scipy.sparse
import tensorflow_datasets as tfds
from scipy.spatial.transform import Rotation

from jaxgen.data import dance_datasets, smpl
from jaxgen.data.datasets import aist_plusplus, finedance  # noqa: F401 (registers builders)

ROOT = 2**32 - 1  # kintree_table's root parent as SMPL stores it (uint32).


def _text(value) -> str:
  """A Text feature as tfds.data_source returns it (bytes)."""
  return value.decode() if isinstance(value, bytes) else value


def _write_model(path, template, regressor, parents, sparse=False):
  kintree = np.stack([np.array(parents, np.int64) % 2**32, np.arange(len(parents))]).astype(
    np.uint32
  )
  if path.endswith(".npz"):
    np.savez(path, v_template=template, J_regressor=regressor, kintree_table=kintree)
  else:
    reg = scipy.sparse.csc_matrix(regressor) if sparse else regressor
    with open(path, "wb") as f:
      pickle.dump({"v_template": template, "J_regressor": reg, "kintree_table": kintree}, f, 2)
  return path


# A tiny made-up body: 0 -> 1 -> 2 -> 3 and 0 -> 4, rest joints given exactly by one-hot rows.
TINY_PARENTS = (-1, 0, 1, 2, 0)
TINY_REST = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [2, 1, 0], [0, -1, 0]], np.float64)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
  folder = tmp_path_factory.mktemp("tiny_model")
  template = np.concatenate([TINY_REST, [[5.0, 5.0, 5.0]]])  # One vertex no joint uses.
  regressor = np.eye(5, 6)
  return _write_model(str(folder / "tiny.npz"), template, regressor, TINY_PARENTS)


@pytest.fixture(scope="module")
def smpl_model(tmp_path_factory):
  """A made-up body with SMPL's 24-joint tree, as an .npz in the SMPL model layout."""
  rng = np.random.default_rng(0)
  template = rng.normal(size=(40, 3))
  regressor = rng.uniform(size=(24, 40))
  regressor /= regressor.sum(1, keepdims=True)
  path = str(tmp_path_factory.mktemp("smpl") / "SMPL_MADE_UP.npz")
  return _write_model(path, template, regressor, smpl.SMPL_PARENTS), template, regressor


class _RunsCode:
  def __reduce__(self):
    return (os.system, ("touch pwned",))


def test_numpy_pickle_round_trips_arrays_and_containers(tmp_path):
  data = {
    "a": np.arange(12, dtype=np.float32).reshape(3, 4),
    "b": [np.int64(7), (np.array([1, 2], np.uint8), "text", 1.5)],
  }
  for protocol in (2, 4, 5):
    path = tmp_path / f"p{protocol}.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = smpl.load_numpy_pickle(str(path))
    np.testing.assert_array_equal(loaded["a"], data["a"])
    assert loaded["a"].dtype == np.float32
    assert loaded["b"][0] == 7 and loaded["b"][1][1:] == ("text", 1.5)
    np.testing.assert_array_equal(loaded["b"][1][0], [1, 2])


def test_numpy_pickle_refuses_code(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = tmp_path / "motion.pkl"
  path.write_bytes(pickle.dumps({"smpl_poses": _RunsCode()}))
  with pytest.raises(smpl.UnsafePickleError, match=r"global (posix|os|nt)\.system"):
    dance_datasets.load_aist_motion(str(path))
  assert not (tmp_path / "pwned").exists()
  path.write_bytes(pickle.dumps(eval))  # A builtin global, never called.
  with pytest.raises(smpl.UnsafePickleError, match="builtins.eval"):
    smpl.load_numpy_pickle(str(path))


def test_tiny_skeleton_from_npz_and_sparse_pkl(tiny_model, tmp_path):
  skeleton = smpl.load_skeleton(tiny_model)
  assert skeleton.parents == TINY_PARENTS
  np.testing.assert_array_equal(skeleton.rest_joints, TINY_REST)
  template = np.concatenate([TINY_REST, [[5.0, 5.0, 5.0]]])
  pkl = _write_model(str(tmp_path / "tiny.pkl"), template, np.eye(5, 6), TINY_PARENTS, sparse=True)
  from_pickle = smpl.load_skeleton(pkl)
  assert from_pickle.parents == TINY_PARENTS
  np.testing.assert_array_equal(from_pickle.rest_joints, TINY_REST)


def test_skeleton_named_errors(tmp_path):
  with pytest.raises(smpl.SmplModelError, match="does not exist"):
    smpl.load_skeleton(tmp_path / "absent.npz")
  np.savez(tmp_path / "no_tree.npz", v_template=np.zeros((2, 3)), J_regressor=np.eye(2))
  with pytest.raises(smpl.SmplModelError, match="lacks 'kintree_table'"):
    smpl.load_skeleton(tmp_path / "no_tree.npz")
  np.savez(tmp_path / "no_joints.npz", kintree_table=np.array([[ROOT, 0], [0, 1]], np.uint32))
  with pytest.raises(smpl.SmplModelError, match="lacks 'J_regressor' and 'v_template'"):
    smpl.load_skeleton(tmp_path / "no_joints.npz")
  with pytest.raises(smpl.SmplModelError, match="every other joint after its parent"):
    smpl.Skeleton(np.zeros((3, 3)), (-1, 2, 0))
  with pytest.raises(smpl.SmplModelError, match="24-joint SMPL body"):
    smpl.check_smpl_skeleton(smpl.Skeleton(TINY_REST, TINY_PARENTS))
  with pytest.raises(smpl.SmplModelError, match="pass smpl_model="):
    dance_datasets.dataset_skeleton(None, "aist_plusplus")


def test_rest_pose_gives_rest_joints(tiny_model):
  skeleton = smpl.load_skeleton(tiny_model)
  translation = np.array([[0.0, 0.0, 0.0], [0.5, -1.0, 2.0]])
  joints = smpl.joints_from_axis_angle(np.zeros((2, 5, 3)), translation, skeleton)
  np.testing.assert_allclose(joints, TINY_REST[None] + translation[:, None], atol=1e-15)


def test_quarter_turn_moves_only_the_children(tiny_model):
  skeleton = smpl.load_skeleton(tiny_model)
  poses = np.zeros((5, 3))
  poses[1] = [0, 0, np.pi / 2]  # 90 degrees about +z at joint 1: x -> y, y -> -x.
  joints = smpl.joints_from_axis_angle(poses, np.zeros(3), skeleton)
  expected = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, -1, 0]]
  np.testing.assert_allclose(joints, expected, atol=1e-12)
  poses[0] = [0, 0, np.pi / 2]  # The root turns everything about itself; joint 1 undoes it below.
  poses[1] = [0, 0, -np.pi / 2]
  joints = smpl.joints_from_axis_angle(poses, np.zeros(3), skeleton)
  np.testing.assert_allclose(
    joints, [[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 2, 0], [1, 0, 0]], atol=1e-12
  )


def test_rotation_encodings_agree():
  rng = np.random.default_rng(1)
  rotvecs = rng.normal(size=(3, 24, 3))
  rotvecs[0, 0] = 0.0  # The exact zero-angle case.
  matrices = smpl.axis_angle_to_matrix(rotvecs)
  expected = Rotation.from_rotvec(rotvecs.reshape(-1, 3)).as_matrix().reshape(3, 24, 3, 3)
  np.testing.assert_allclose(matrices, expected, atol=1e-12)
  six = smpl.matrix_to_rotation_6d(matrices)
  np.testing.assert_allclose(six[..., :3], expected[..., 0, :], atol=1e-12)  # Rows, not columns.
  np.testing.assert_allclose(smpl.rotation_6d_to_matrix(six), expected, atol=1e-12)
  skew = six + np.concatenate([np.zeros_like(six[..., :3]), 0.3 * six[..., :3]], -1)
  np.testing.assert_allclose(smpl.rotation_6d_to_matrix(2.0 * skew), expected, atol=1e-12)


def test_axis_angle_and_6d_forward_kinematics_agree(smpl_model):
  skeleton = smpl.load_skeleton(smpl_model[0])
  np.testing.assert_allclose(skeleton.rest_joints, smpl_model[2] @ smpl_model[1], atol=1e-12)
  rng = np.random.default_rng(2)
  poses, trans = rng.normal(size=(4, 72)), rng.normal(size=(4, 3))
  by_axis_angle = smpl.joints_from_axis_angle(poses, trans, skeleton)
  six = smpl.matrix_to_rotation_6d(smpl.axis_angle_to_matrix(poses.reshape(4, 24, 3)))
  np.testing.assert_allclose(
    smpl.joints_from_rotation_6d(six, trans, skeleton), by_axis_angle, atol=1e-12
  )
  # Rigid motion keeps every bone's length.
  bones = by_axis_angle[:, 1:] - by_axis_angle[:, list(smpl.SMPL_PARENTS[1:])]
  rest_bones = skeleton.offsets[1:]
  np.testing.assert_allclose(
    np.linalg.norm(bones, axis=-1),
    np.linalg.norm(rest_bones, axis=-1)[None].repeat(4, 0),
    atol=1e-12,
  )


# --- AIST++ -----------------------------------------------------------------------------------

AIST = {
  "gBR_sBM_cAll_d04_mBR0_ch01": ("train", 6),
  "gPO_sFM_cAll_d10_mPO3_ch05": ("train", 5),
  "gHO_sBM_cAll_d19_mHO2_ch02": ("train", 4),  # Ignore-listed.
  "gJB_sBM_cAll_d08_mJB1_ch03": ("val", 7),
  "gKR_sFM_cAll_d29_mKR5_ch10": ("test", 5),
}


def _wav(path, seconds=0.1, rate=16000):
  scipy.io.wavfile.write(path, rate, np.zeros(round(seconds * rate), np.int16))


@pytest.fixture(scope="module")
def aist_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("aist")
  for sub in ("motions", "splits", "wav"):
    (root / sub).mkdir()
  rng = np.random.default_rng(3)
  motions = {}
  for name, (split, frames) in AIST.items():
    motion = {
      "smpl_poses": rng.normal(scale=0.3, size=(frames, 72)),
      "smpl_trans": rng.normal(size=(frames, 3)) * 90.0,
      "smpl_scaling": np.array([90.0 + frames]),
      "smpl_loss": np.float64(1.0),  # The release carries extra keys.
    }
    motion["smpl_poses"][0] = 0.0  # A rest-pose frame.
    (root / "motions" / f"{name}.pkl").write_bytes(pickle.dumps(motion))
    motions[name] = motion
    with open(root / "splits" / f"crossmodal_{split}.txt", "a") as f:
      f.write(f"{name}\n")
    _wav(root / "wav" / f"{dance_datasets.parse_aist_name(name).music_id}.wav")
  (root / "ignore_list.txt").write_text("gHO_sBM_cAll_d19_mHO2_ch02\ngWA_sBM_cAll_d25_mWA0_ch01\n")
  return str(root), motions


@pytest.fixture(scope="module")
def aist_built(aist_folder, smpl_model, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("aist_tfds"))
  builder = tfds.builder("aist_plusplus/60fps", data_dir=data_dir, smpl_model=smpl_model[0])
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=aist_folder[0])
  )
  return builder, {
    split: list(tfds.data_source("aist_plusplus/60fps", split=split, data_dir=data_dir))
    for split in ("train", "validation", "test")
  }


def test_aist_builder_examples(aist_built, aist_folder, smpl_model):
  builder, splits = aist_built
  _, motions = aist_folder
  skeleton = smpl.load_skeleton(smpl_model[0])
  assert {s: [_text(e["name"]) for e in v] for s, v in splits.items()} == {
    "train": ["gBR_sBM_cAll_d04_mBR0_ch01", "gPO_sFM_cAll_d10_mPO3_ch05"],
    "validation": ["gJB_sBM_cAll_d08_mJB1_ch03"],
    "test": ["gKR_sFM_cAll_d29_mKR5_ch10"],
  }
  assert builder.info.metadata["fps"] == 60
  genres = builder.info.features["genre"]
  for example in [e for v in splits.values() for e in v]:
    name = _text(example["name"])
    motion = motions[name]
    scale = motion["smpl_scaling"][0]
    assert genres.int2str(example["genre"]) == name[1:3]
    assert _text(example["music_id"]) == name.split("_")[4]
    assert _text(example["music_path"]).endswith(f"wav/{name.split('_')[4]}.wav")
    assert example["joints"].shape == (AIST[name][1], 24, 3)
    assert example["joints"].dtype == np.float32
    np.testing.assert_allclose(example["root_position"], motion["smpl_trans"] / scale, rtol=1e-6)
    np.testing.assert_allclose(example["poses"].reshape(-1, 72), motion["smpl_poses"], rtol=1e-6)
    np.testing.assert_allclose(example["scaling"], scale)
    # Frame 0 is the rest pose: the rest joints moved by smpl_trans / smpl_scaling.
    rest = skeleton.rest_joints + motion["smpl_trans"][0] / scale
    np.testing.assert_allclose(example["joints"][0], rest, rtol=1e-5, atol=1e-5)
    expected = smpl.joints_from_axis_angle(
      motion["smpl_poses"], motion["smpl_trans"] / scale, skeleton
    )
    np.testing.assert_allclose(example["joints"], expected, rtol=1e-5, atol=1e-5)


def test_aist_stride_ignore_count_and_errors(aist_folder, smpl_model, caplog, tmp_path):
  root = aist_folder[0]
  skeleton = smpl.load_skeleton(smpl_model[0])
  with caplog.at_level(logging.INFO):
    examples = dict(dance_datasets.aist_examples(root, "train", skeleton, f"{root}/wav", stride=2))
  assert "skipped 1 ignore-listed sequence(s)" in caplog.text
  assert "gHO_sBM_cAll_d19_mHO2_ch02" in caplog.text
  joints = examples["gBR_sBM_cAll_d04_mBR0_ch01"]["joints"]
  full = dict(dance_datasets.aist_examples(root, "train", skeleton, f"{root}/wav"))
  np.testing.assert_array_equal(joints, full["gBR_sBM_cAll_d04_mBR0_ch01"]["joints"][::2])
  assert len(joints) == 3
  with pytest.raises(dance_datasets.DanceDataError, match="has no music"):
    next(dance_datasets.aist_examples(root, "train", skeleton, str(tmp_path)))
  with pytest.raises(dance_datasets.DanceDataError, match="sequence name must read"):
    dance_datasets.parse_aist_name("gXX_sBM_cAll_d04_mXX0_ch01")
  bad = tmp_path / "bad.pkl"
  bad.write_bytes(
    pickle.dumps(
      {"smpl_poses": np.zeros((3, 70)), "smpl_trans": np.zeros((3, 3)), "smpl_scaling": np.ones(1)}
    )
  )
  with pytest.raises(dance_datasets.DanceDataError, match=r"\(N, 72\).*\(3, 70\)"):
    dance_datasets.load_aist_motion(str(bad))
  with pytest.raises(dance_datasets.DanceDataError, match="must contain"):
    dance_datasets.aist_splits(str(tmp_path))


# --- FineDance ---------------------------------------------------------------------------------

# 001, 002: cross_genre train; 012: cross_genre test; 120: a test id that is also ignored.
FINEDANCE = {"001": 6, "002": 4, "012": 5, "120": 3}


@pytest.fixture(scope="module")
def finedance_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("finedance")
  for sub in ("motion", "music_wav", "label_json"):
    (root / sub).mkdir()
  rng = np.random.default_rng(4)
  axis_angles = {}
  for name, frames in FINEDANCE.items():
    rotvecs = rng.normal(scale=0.4, size=(frames, 52, 3))
    six = smpl.matrix_to_rotation_6d(smpl.axis_angle_to_matrix(rotvecs))
    root_position = rng.normal(size=(frames, 3))
    motion = np.concatenate([root_position, six.reshape(frames, 312)], 1)
    np.save(root / "motion" / f"{name}.npy", motion.astype(np.float32))
    _wav(root / "music_wav" / f"{name}.wav")
    axis_angles[name] = (rotvecs, root_position)
  (root / "label_json" / "001.json").write_text('{"name": "song", "style": "Popular"}')
  return str(root), axis_angles


def test_finedance_split_lists_match_the_reference():
  genre_test = dance_datasets.finedance_split_names("cross_genre", "test")
  assert len(genre_test) == 18 and "120" not in genre_test and "130" not in genre_test
  genre_train = dance_datasets.finedance_split_names("cross_genre", "train")
  assert len(genre_train) == 211 - 20 - 8 and not set(genre_train) & set(genre_test)
  dancer_test = dance_datasets.finedance_split_names("cross_dancer", "test")
  assert dancer_test == [f"{i:03d}" for i in range(1, 14)] + ["124", "126", "128", "132"]
  with pytest.raises(dance_datasets.DanceDataError, match="datasplit must be one of"):
    dance_datasets.finedance_split_names("cross_music", "test")


def test_finedance_builder_examples(finedance_folder, smpl_model, tmp_path):
  root, axis_angles = finedance_folder
  skeleton = smpl.load_skeleton(smpl_model[0])
  builder = tfds.builder("finedance/cross_genre", data_dir=str(tmp_path), smpl_model=smpl_model[0])
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
  splits = {
    s: list(tfds.data_source("finedance/cross_genre", split=s, data_dir=str(tmp_path)))
    for s in ("train", "test")
  }
  assert {s: [_text(e["name"]) for e in v] for s, v in splits.items()} == {
    "train": ["001", "002"],
    "test": ["012"],
  }
  assert builder.info.metadata["fps"] == 30
  for example in splits["train"] + splits["test"]:
    rotvecs, root_position = axis_angles[_text(example["name"])]
    # Independent path: the body's axis-angles, hands (22, 23) unrotated.
    body = np.concatenate([rotvecs[:, :22], np.zeros((len(rotvecs), 2, 3))], 1)
    expected = smpl.joints_from_axis_angle(body, root_position, skeleton)
    np.testing.assert_allclose(example["joints"], expected, atol=2e-5)
    assert example["rotations"].shape == (len(rotvecs), 52, 6)
    assert _text(example["music_path"]).endswith(f"music_wav/{_text(example['name'])}.wav")
  assert _text(splits["train"][0]["labels"]) == '{"name": "song", "style": "Popular"}'
  assert _text(splits["train"][1]["labels"]) == ""


def test_finedance_bad_files(tmp_path, smpl_model):
  np.save(tmp_path / "wide.npy", np.zeros((4, 319), np.float32))
  with pytest.raises(dance_datasets.DanceDataError, match=r"\(T, 315\).*\(4, 319\)"):
    dance_datasets.load_finedance_motion(str(tmp_path / "wide.npy"))
  nan = np.zeros((2, 315), np.float32)
  nan[1, 5] = np.nan
  np.save(tmp_path / "nan.npy", nan)
  with pytest.raises(dance_datasets.DanceDataError, match="NaN"):
    dance_datasets.load_finedance_motion(str(tmp_path / "nan.npy"))
  (tmp_path / "motion").mkdir()
  (tmp_path / "music_wav").mkdir()
  np.save(tmp_path / "motion" / "001.npy", np.zeros((2, 315), np.float32))
  skeleton = smpl.load_skeleton(smpl_model[0])
  with pytest.raises(dance_datasets.DanceDataError, match="has no music file"):
    next(dance_datasets.finedance_examples(str(tmp_path), "cross_genre", "train", skeleton))
