"""Tests for the HumanML3D / KIT-ML motion representation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.data import motion
from jaxgen.data import motion_formats
from jaxgen.data import synthetic_motion

FMT = motion_formats.HUMANML3D


@pytest.fixture(scope="module")
def clips():
  return synthetic_motion.make_split("test", num_examples=120, return_joints=True)


def _round_trip(features: np.ndarray, fmt=FMT) -> np.ndarray:
  """(N, T, D) -> joints -> (N, T-1, D), batched."""
  joints = motion.features_to_joints(features, fmt)
  return motion.joints_to_features_batch(joints, fmt)


def _yaw(angle):
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def test_formats_layout():
  for fmt, dim, joints in ((motion_formats.HUMANML3D, 263, 22), (motion_formats.KIT_ML, 251, 21)):
    assert fmt.feature_dim == dim and fmt.num_joints == joints
    slices = fmt.slices
    assert slices["foot_contact"].stop == dim
    widths = [s.stop - s.start for s in slices.values()]
    assert widths == [1, 2, 1, 3 * (joints - 1), 6 * (joints - 1), 3 * joints, 4]
    assert fmt.parents[0] == -1 and all(p < j for j, p in enumerate(fmt.parents) if j)
  assert motion_formats.HUMANML3D.fps == 20 and motion_formats.KIT_ML.fps == 12.5
  assert motion_formats.HUMANML3D.contact_threshold == 0.002
  assert motion_formats.KIT_ML.contact_threshold == 0.05
  assert motion_formats.get_format("kit_ml") is motion_formats.KIT_ML
  with pytest.raises(ValueError, match="motion format must be one of"):
    motion_formats.get_format("amass")


def test_round_trip_joints_features_joints_features_float64(clips):
  """The brief's round trip, on the generator's float64 joints."""
  worst = 0.0
  for joints in clips["joints"]:
    features = motion.joints_to_features(joints)
    assert features.dtype == np.float64
    again = _round_trip(features[None])[0]
    worst = max(worst, np.abs(again - features[:-1]).max())
  assert worst < 1e-9, worst


def test_round_trip_on_stored_float32_features():
  """features -> joints -> features on the whole synthetic test split."""
  data = synthetic_motion.make_split("test")
  worst = 0.0
  for length in np.unique(data["length"]):
    idx = data["length"] == length
    features = data["motion"][idx, :length].astype(np.float64)
    again = _round_trip(features)
    worst = max(worst, np.abs(again - features[:, :-1]).max())
  assert worst < 1e-4, worst


def test_features_are_invariant_to_placement_and_heading(clips):
  joints = clips["joints"][0]
  features = motion.joints_to_features(joints)
  moved = joints @ _yaw(1.3).T + np.array([3.0, 0.4, -2.0])
  np.testing.assert_allclose(motion.joints_to_features(moved), features, atol=1e-9)


def test_recovered_joints_are_a_rigid_yaw_of_the_input(clips):
  joints = clips["joints"][1]
  recovered = motion.features_to_joints(motion.joints_to_features(joints))
  original = joints[:-1]

  # Same pairwise distances in every frame and same heights above the floor.
  def distances(x):
    return np.linalg.norm(x[:, :, None] - x[:, None, :], axis=-1)

  np.testing.assert_allclose(distances(recovered), distances(original), atol=1e-9)
  floor = joints[..., 1].min()
  np.testing.assert_allclose(recovered[..., 1], original[..., 1] - floor, atol=1e-9)
  np.testing.assert_allclose(recovered[0, 0, [0, 2]], 0.0, atol=1e-12)


def _turning_walk(frames=100, yaw_rate=0.05):
  """The rest pose walking forward while turning `yaw_rate` rad per frame about its root,
  swinging its arms, and not holding its last pose (like real clips)."""
  pose = np.zeros((22, 3))
  for j in range(1, 22):
    pose[j] = pose[FMT.parents[j]] + synthetic_motion._REST_OFFSETS[j]
  pose[:, 1] -= pose[:, 1].min()
  clip, root = [], np.zeros(3)
  for t in range(frames):
    swung = pose.copy()
    swung[[18, 20]] += [0.0, 0.0, 0.15 * np.sin(0.3 * t)]
    swung[[19, 21]] -= [0.0, 0.0, 0.15 * np.sin(0.3 * t)]
    root = root + _yaw(yaw_rate * t) @ np.array([0.0, 0.0, 0.04])
    clip.append(swung @ _yaw(yaw_rate * t).T + root)
  return np.stack(clip)


def test_round_trip_is_exact_with_the_last_frame():
  """features -> joints (with the velocity-placed last frame) -> features is exact.

  On a clip that keeps turning to its end, the reference's T-frame recovery
  cannot be exact (the clip-wide facing smoothing sees one frame fewer): the
  issue measured 0.030 there. Appending frame T makes it exact, in float64
  and for stored float32 features.
  """
  features = motion.joints_to_features(_turning_walk())
  short = motion.joints_to_features(motion.features_to_joints(features))
  assert np.abs(short - features[:-1]).max() > 1e-3  # The documented limitation.
  recovered = motion.features_to_joints(features, with_last_frame=True)
  assert recovered.shape == (100, 22, 3)
  np.testing.assert_allclose(motion.joints_to_features(recovered), features, atol=1e-9)
  stored = features.astype(np.float32)
  again = motion.joints_to_features(motion.features_to_joints(stored, with_last_frame=True))
  np.testing.assert_allclose(again, stored, atol=1e-4)

  # Frame 0's smoothed facing (the features' frame) is +Z; its own facing is not.
  root_quat = motion.inverse_kinematics(recovered[None])[0, 0, 0]
  np.testing.assert_allclose(np.abs(root_quat), [1.0, 0.0, 0.0, 0.0], atol=1e-9)
  forward = motion._facing_direction(recovered[0], FMT.face_joints, swap_hips=True)
  assert np.degrees(np.arccos(forward[2] / np.linalg.norm(forward))) > 10.0


def test_round_trip_with_last_frame_on_clips_cut_mid_motion(clips):
  worst = 0.0
  for i, joints in enumerate(clips["joints"][:12]):
    cut = joints[: len(joints) // 2 + 3 * i]  # Ends mid-motion: no held last frame.
    features = motion.joints_to_features(cut)
    recovered = motion.features_to_joints(features, with_last_frame=True)
    worst = max(worst, np.abs(motion.joints_to_features(recovered) - features).max())
  assert worst < 1e-9, worst


def test_known_motion_values():
  """Standing still, a straight walk of known speed and a steady turn."""
  assert motion.features_to_joints(np.zeros((1, 263))).shape == (1, 22, 3)
  offsets = synthetic_motion._REST_OFFSETS
  joints = np.zeros((22, 3))
  for j in range(1, 22):
    joints[j] = joints[FMT.parents[j]] + offsets[j]
  joints[:, 1] -= joints[:, 1].min()
  frames = 41
  still = np.repeat(joints[None], frames, axis=0)
  f = motion.joints_to_features(still)
  s = FMT.slices
  np.testing.assert_allclose(f[:, s["root_angular_velocity"]], 0, atol=1e-12)
  np.testing.assert_allclose(f[:, s["local_velocity"]], 0, atol=1e-12)
  np.testing.assert_array_equal(f[:, s["foot_contact"]], 1.0)
  np.testing.assert_allclose(f[:, 3], joints[0, 1], atol=1e-12)

  speed = 1.2 / FMT.fps  # Metres per frame, walking along the facing (+Z).
  walk = still + np.arange(frames)[:, None, None] * np.array([0, 0, speed])
  f = motion.joints_to_features(walk @ _yaw(0.7).T)
  np.testing.assert_allclose(
    f[:, s["root_linear_velocity"]], np.tile([0.0, speed], (frames - 1, 1)), atol=1e-9
  )
  np.testing.assert_array_equal(f[:, s["foot_contact"]], 0.0)  # Sliding.

  step = 0.05  # Radians of yaw per frame; the feature is the half angle.
  turn = np.stack([joints @ _yaw(step * t).T for t in range(240)])
  f = motion.joints_to_features(turn)
  # The facing is Gaussian-smoothed (sigma 20 frames, radius 80), so only
  # frames 80 away from both ends rotate at exactly the full rate.
  np.testing.assert_allclose(np.abs(f[80:159, 0]), step / 2, rtol=1e-9)


def test_features_to_joints_jax_matches_numpy_and_jits(clips):
  length = int(clips["length"][2])
  features = clips["motion"][2:4, :length]
  expected = motion.features_to_joints(features.astype(np.float64), with_last_frame=True)
  fn = jax.jit(lambda x: motion.features_to_joints(x, FMT, with_last_frame=True))
  got = fn(jnp.asarray(features))
  assert isinstance(got, jax.Array) and got.shape == (2, length + 1, 22, 3)
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4)
  np.testing.assert_array_equal(
    expected[:, :-1], motion.features_to_joints(features.astype(np.float64))
  )
  grads = jax.grad(lambda x: motion.features_to_joints(x).sum())(jnp.asarray(features[0]))
  assert np.isfinite(np.asarray(grads)).all()


def test_kit_ml_round_trip():
  """KIT-ML: 21 joints, 251 features; a smooth, moving random skeleton."""
  fmt = motion_formats.KIT_ML
  rng = np.random.default_rng(0)
  rest = np.zeros((21, 3))
  for j in range(1, 21):
    rest[j] = rest[fmt.parents[j]] + np.asarray(fmt.raw_offsets[j]) * rng.uniform(100, 400)
  t = np.arange(80)[:, None, None] / fmt.fps
  wobble = 30 * np.sin(2 * np.pi * (0.5 + rng.random((1, 21, 3))) * t + rng.random((1, 21, 3)) * 6)
  joints = rest[None] + wobble + t * np.array([400.0, 0.0, 250.0])
  joints = np.concatenate([joints, joints[-1:]])  # Held last frame.
  features = motion.joints_to_features(joints, fmt)
  assert features.shape == (80, 251)
  again = _round_trip(features[None], fmt)[0]
  np.testing.assert_allclose(again, features[:-1], atol=1e-7)
  assert set(np.unique(features[:, -4:])) <= {0.0, 1.0}


@pytest.mark.parametrize(
  "bad, message",
  [
    (np.zeros((10, 251)), "263 features per frame"),
    (np.zeros((0, 263)), "at least one frame"),
    (np.zeros((197, 263)), "at most 196 frames"),
    (np.zeros(263), "shape"),
  ],
)
def test_check_motion_rejects_bad_shapes(bad, message):
  with pytest.raises(motion_formats.InvalidMotionError, match=message):
    motion_formats.check_motion(bad, FMT, name="motion")


def test_check_motion_names_nan_frames_and_passes_good_input():
  features = np.zeros((2, 30, 263), np.float32)
  assert motion_formats.check_motion(features).shape == (2, 30, 263)
  features[1, 7, 5] = np.nan
  with pytest.raises(motion_formats.InvalidMotionError, match=r"frames \[7\]"):
    motion_formats.check_motion(features, name="sample")
  with pytest.raises(motion_formats.InvalidMotionError, match="251 features"):
    motion_formats.check_motion(np.zeros((5, 263)), motion_formats.KIT_ML)


def test_joint_checks():
  with pytest.raises(motion_formats.InvalidMotionError, match=r"\(T, 22, 3\)"):
    motion.joints_to_features(np.zeros((10, 21, 3)))
  with pytest.raises(motion_formats.InvalidMotionError, match="at least 2 frames"):
    motion.joints_to_features(np.zeros((1, 22, 3)))
  joints = np.random.default_rng(0).normal(size=(5, 22, 3))
  joints[3, 2, 1] = np.nan
  with pytest.raises(motion_formats.InvalidMotionError, match=r"frames \[3\]"):
    motion.joints_to_features(joints)
  with pytest.raises(motion_formats.InvalidMotionError, match="shape"):
    motion.features_to_joints(np.zeros((5, 100)))


def test_crop_motion_never_exceeds_max_frames():
  rng = np.random.default_rng(0)
  for length in (41, 197, 200, 250, 1000):
    features = np.arange(length, dtype=np.float32)[:, None] * np.ones((1, 263), np.float32)
    crops = [motion_formats.crop_motion(features, rng) for _ in range(60)]
    lengths = {len(c) for c in crops}
    top = min(length, 196) // 4 * 4
    assert lengths == {top, top - 4}, (length, lengths)  # Two in three keep `top`.
    for crop in crops:  # Contiguous windows inside the clip.
      np.testing.assert_array_equal(np.diff(crop[:, 0]), 1.0)
      assert crop[-1, 0] < length
  assert len(motion_formats.crop_motion(features, rng, unit=10, max_frames=50)) in (40, 50)
  with pytest.raises(ValueError, match="unit must be in"):
    motion_formats.crop_motion(features, rng, unit=8, max_frames=4)


def test_normalizer(clips, tmp_path):
  mask = motion_formats.length_mask(clips["length"], 196)
  assert mask.sum() == clips["length"].sum()
  norm = motion.fit_normalizer(clips["motion"], mask)
  for group in FMT.slices.values():  # One std per feature group.
    assert np.unique(norm.std[group]).size == 1
  frames = clips["motion"][mask].astype(np.float64)
  np.testing.assert_allclose(norm.mean, frames.mean(0), rtol=1e-6, atol=1e-7)
  x = clips["motion"][:3]
  np.testing.assert_allclose(norm.denormalize(norm.normalize(x)), x, atol=1e-5)
  y = norm.normalize(jnp.asarray(x))
  assert isinstance(y, jax.Array)
  biased = motion.fit_normalizer(clips["motion"], mask, feat_bias=5.0)
  np.testing.assert_allclose(biased.std[:4], norm.std[:4] / 5, rtol=1e-6)
  np.testing.assert_allclose(biased.std[4:259], norm.std[4:259])
  norm.save(tmp_path)
  loaded = motion.Normalizer.load(tmp_path, FMT)
  np.testing.assert_array_equal(loaded.std, norm.std)
  with pytest.raises(motion_formats.InvalidMotionError, match="shape"):
    motion.Normalizer.load(tmp_path, motion_formats.KIT_ML)
  with pytest.raises(FileNotFoundError, match="Mean.npy"):
    motion.Normalizer.load(tmp_path / "missing")
  with pytest.raises(ValueError, match="std must be finite and positive"):
    motion.Normalizer(np.zeros(3), np.array([1.0, 0.0, 1.0]))
  with pytest.raises(motion_formats.InvalidMotionError, match="lengths must be in"):
    motion_formats.length_mask(np.array([0, 5]), 196)
