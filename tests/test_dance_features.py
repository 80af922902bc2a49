"""AIST++ kinetic (72) and geometric (32) dance features on constructed motions."""

import numpy as np
import pytest

from jaxgen.metrics import dance, dance_features
from jaxgen.metrics.frechet import TooFewSamplesError

FPS = 60.0
NAMES = dance_features.SMPL_JOINT_NAMES

# A standing SMPL-like body, y up, arms hanging, in metres.
STANDING = {
  "root": (0.0, 0.93, 0.0),
  "lhip": (0.06, 0.84, 0.0),
  "rhip": (-0.06, 0.84, 0.0),
  "belly": (0.0, 1.03, 0.0),
  "lknee": (0.1, 0.5, 0.0),
  "rknee": (-0.1, 0.5, 0.0),
  "spine": (0.0, 1.17, 0.0),
  "lankle": (0.1, 0.1, 0.0),
  "rankle": (-0.1, 0.1, 0.0),
  "chest": (0.0, 1.23, 0.0),
  "ltoes": (0.12, 0.02, 0.12),
  "rtoes": (-0.12, 0.02, 0.12),
  "neck": (0.0, 1.45, 0.0),
  "linshoulder": (0.08, 1.38, 0.0),
  "rinshoulder": (-0.08, 1.38, 0.0),
  "head": (0.0, 1.6, 0.03),
  "lshoulder": (0.18, 1.4, 0.0),
  "rshoulder": (-0.18, 1.4, 0.0),
  "lelbow": (0.2, 1.14, 0.0),
  "relbow": (-0.2, 1.14, 0.0),
  "lwrist": (0.21, 0.9, 0.0),
  "rwrist": (-0.21, 0.9, 0.0),
  "lhand": (0.21, 0.82, 0.0),
  "rhand": (-0.21, 0.82, 0.0),
}
RIGHT_ARM_RAISED = {
  "relbow": (-0.2, 1.66, 0.0),
  "rwrist": (-0.21, 1.92, 0.0),
  "rhand": (-0.21, 2.0, 0.0),
}


def _pose(overrides=None):
  pose = {**STANDING, **(overrides or {})}
  return np.array([pose[name] for name in NAMES])


def _still(num_frames=30, overrides=None):
  return np.repeat(_pose(overrides)[None], num_frames, axis=0)


def _translated(velocity, num_frames=30, acceleration=(0.0, 0.0, 0.0)):
  """The standing body moving rigidly: x(t) = x0 + v t + a t^2 / 2, t in seconds."""
  t = np.arange(num_frames)[:, None, None] / FPS
  v, a = np.asarray(velocity), np.asarray(acceleration)
  return _pose()[None] + v * t + 0.5 * a * t**2


def _reference_kinetic(positions, frame_time=1 / 60, window=2):
  """The AIST++ API's loops (calc_average_velocity_* / calc_average_acceleration), y up."""
  num_frames, num_joints, _ = positions.shape
  out = []
  for joint in range(num_joints):
    horizontal = vertical = effort = 0.0
    for i in range(1, num_frames):
      velocity, count = np.zeros(3), 0
      for j in range(-window, window + 1):
        if i + j - 1 < 0 or i + j >= num_frames:
          continue
        velocity += positions[i + j, joint] - positions[i + j - 1, joint]
        count += 1
      velocity /= count * frame_time
      horizontal += np.linalg.norm(velocity[[0, 2]]) ** 2
      vertical += velocity[1] ** 2
      acceleration, count = np.zeros(3), 0
      for j in range(-window, window + 1):
        if i + j - 1 < 0 or i + j + 1 >= num_frames:
          continue
        v2 = (positions[i + j + 1, joint] - positions[i + j, joint]) / frame_time
        v1 = (positions[i + j, joint] - positions[i + j - 1, joint]) / frame_time
        acceleration += (v2 - v1) / frame_time
        count += 1
      effort += np.linalg.norm(acceleration / count)
    out += [horizontal / (num_frames - 1), vertical / (num_frames - 1), effort / (num_frames - 1)]
  return np.array(out, np.float32)


def test_shapes_and_dtypes():
  kinetic, geometric = dance_features.dance_features(_still(), fps=FPS)
  assert kinetic.shape == (72,) and geometric.shape == (32,)
  assert kinetic.dtype == geometric.dtype == np.float32
  assert dance_features.KINETIC_FEATURE_DIM == 72
  assert dance_features.GEOMETRIC_FEATURE_DIM == 32


def test_still_body_has_zero_kinetic_energy():
  np.testing.assert_array_equal(dance_features.kinetic_features(_still(), fps=FPS), np.zeros(72))


def test_constant_velocity_gives_squared_speed_per_part():
  v = np.array([0.6, -0.3, 0.8])  # m/s
  kinetic = dance_features.kinetic_features(_translated(v), fps=FPS).reshape(24, 3)
  np.testing.assert_allclose(kinetic[:, 0], v[0] ** 2 + v[2] ** 2, rtol=1e-6)
  np.testing.assert_allclose(kinetic[:, 1], v[1] ** 2, rtol=1e-6)
  np.testing.assert_allclose(kinetic[:, 2], 0.0, atol=1e-3)  # rounding of /frame_time^2


def test_constant_acceleration_gives_its_magnitude_as_effort():
  a = np.array([3.0, 4.0, 0.0])  # m/s^2, |a| = 5
  kinetic = dance_features.kinetic_features(_translated(np.zeros(3), acceleration=a), fps=FPS)
  np.testing.assert_allclose(kinetic.reshape(24, 3)[:, 2], 5.0, rtol=1e-6)


def test_z_up_swaps_horizontal_and_vertical_axes():
  v = np.array([0.6, -0.3, 0.8])
  kinetic = dance_features.kinetic_features(_translated(v), up_axis="z", fps=FPS).reshape(24, 3)
  np.testing.assert_allclose(kinetic[:, 0], v[0] ** 2 + v[1] ** 2, rtol=1e-6)
  np.testing.assert_allclose(kinetic[:, 1], v[2] ** 2, rtol=1e-6)


@pytest.mark.parametrize("num_frames", [3, 4, 7, 40])
def test_kinetic_equals_reference_loops_on_random_motion(num_frames):
  joints = np.cumsum(np.random.default_rng(num_frames).normal(0, 0.02, (num_frames, 24, 3)), 0)
  np.testing.assert_allclose(
    dance_features.kinetic_features(joints, fps=FPS),
    _reference_kinetic(joints),
    rtol=1e-6,
    atol=1e-6,
  )


def _feature(kind, points):
  """Index of one relational feature in the 32-vector."""
  return [(k, p) for k, p, _ in dance_features.GEOMETRIC_FEATURES].index((kind, points))


RIGHT_WRIST_ABOVE_NECK = _feature("nplane", ("chest", "neck", "neck", "rwrist"))
LEFT_WRIST_ABOVE_NECK = _feature("nplane", ("chest", "neck", "neck", "lwrist"))
TRUNK_HORIZONTAL = _feature("angle", ("neck", "root", "zero", "y_unit"))
ROOT_FAST = _feature("fast", ("root",))
RIGHT_WRIST_FAST = _feature("fast", ("rwrist",))
CHEST_MOVES_UP = _feature("move", ("belly", "chest", "chest", "rwrist"))
RIGHT_ELBOW_BENT = _feature("angle", ("relbow", "rshoulder", "relbow", "rwrist"))


def test_raising_the_right_hand_above_the_head_flips_its_feature():
  down = dance_features.geometric_features(_still(), fps=FPS)
  up = dance_features.geometric_features(_still(overrides=RIGHT_ARM_RAISED), fps=FPS)
  assert down[RIGHT_WRIST_ABOVE_NECK] == 0.0 and up[RIGHT_WRIST_ABOVE_NECK] == 1.0
  assert down[LEFT_WRIST_ABOVE_NECK] == up[LEFT_WRIST_ABOVE_NECK] == 0.0
  # A straight arm, hanging or raised, is not a bent elbow (angle 0..110 between
  # upper arm reversed and forearm means bent past 70 degrees).
  assert down[RIGHT_ELBOW_BENT] == up[RIGHT_ELBOW_BENT] == 0.0
  changed = np.flatnonzero(down != up)
  assert RIGHT_WRIST_ABOVE_NECK in changed


def test_lying_body_has_a_horizontal_trunk():
  standing = _still()
  # Rotate the body 90 degrees about z: y -> -x, x -> y.
  lying = standing[..., [1, 0, 2]] * np.array([-1.0, 1.0, 1.0])
  assert dance_features.geometric_features(standing, fps=FPS)[TRUNK_HORIZONTAL] == 0.0
  assert dance_features.geometric_features(lying, fps=FPS)[TRUNK_HORIZONTAL] == 1.0


def test_fast_root_is_above_2_3_humerus_per_120th_second():
  threshold = 2.3 * dance_features.HUMERUS_LENGTH  # "per second" at the reference's 1/120 s
  slow = dance_features.geometric_features(_translated([0.9 * threshold / 2, 0, 0]), fps=FPS)
  fast = dance_features.geometric_features(_translated([1.1 * threshold / 2, 0, 0]), fps=FPS)
  assert slow[ROOT_FAST] == 0.0 and fast[ROOT_FAST] == 1.0


def test_move_features_track_their_third_joint_like_the_reference():
  # f_move("belly", "chest", "chest", "rwrist") moves the chest relative to the
  # belly; the wrist (fourth argument) is ignored by the reference code.
  joints = _still(num_frames=20)
  joints[:, NAMES.index("rwrist"), 1] += np.arange(20) * 0.5  # wrist shoots up
  features = dance_features.geometric_features(joints, fps=FPS)
  assert features[RIGHT_WRIST_FAST] == 1.0
  assert features[CHEST_MOVES_UP] == 0.0
  joints = _still(num_frames=20)
  joints[1:, NAMES.index("chest"), 1] += 0.02  # chest jumps up once, by 2.4 m/s at 1/120 s
  features = dance_features.geometric_features(joints, fps=FPS)
  assert features[CHEST_MOVES_UP] == pytest.approx(1 / 19)


def test_features_are_frame_fractions_and_translation_invariant():
  rng = np.random.default_rng(0)
  joints = _pose()[None] + np.cumsum(rng.normal(0, 0.03, (50, 24, 3)), 0)
  features = dance_features.geometric_features(joints, fps=FPS)
  np.testing.assert_allclose(features * 49, np.round(features * 49), atol=1e-4)
  shifted = joints + np.array([3.0, -1.0, 2.0])
  np.testing.assert_array_equal(dance_features.geometric_features(shifted, fps=FPS), features)
  np.testing.assert_allclose(
    dance_features.kinetic_features(shifted, fps=FPS),
    dance_features.kinetic_features(joints, fps=FPS),
    rtol=1e-5,
  )


def test_features_feed_fid_k_and_fid_g():
  rng = np.random.default_rng(1)
  dances = [_pose()[None] + np.cumsum(rng.normal(0, s, (40, 24, 3)), 0) for s in [0.01] * 6]
  other = [_pose()[None] + np.cumsum(rng.normal(0, s, (40, 24, 3)), 0) for s in [0.03] * 6]
  kinetic = np.stack([dance_features.kinetic_features(d, fps=FPS) for d in dances])
  kinetic_other = np.stack([dance_features.kinetic_features(d, fps=FPS) for d in other])
  # 1e-5 is added to the rank-deficient covariances (6 dances, 72 dims).
  assert dance.fid_k(kinetic, kinetic) == pytest.approx(0.0, abs=1e-3)
  assert dance.fid_k(kinetic, kinetic_other) > 1.0
  geometric = np.stack([dance_features.geometric_features(d, fps=FPS) for d in dances])
  with pytest.warns(dance.ConstantFeatureWarning):  # Tests that never hold in these dances.
    assert dance.fid_g(geometric, geometric) == pytest.approx(0.0, abs=1e-3)


def test_bad_input_is_named():
  with pytest.raises(ValueError, match=r"joints must have shape \(T, 24, 3\).*\(10, 22, 3\)"):
    dance_features.kinetic_features(np.zeros((10, 22, 3)), fps=FPS)
  with pytest.raises(TooFewSamplesError, match="at least 3 frames, got 2"):
    dance_features.geometric_features(np.zeros((2, 24, 3)), fps=FPS)
  with pytest.raises(ValueError, match="up_axis"):
    dance_features.kinetic_features(_still(), up_axis="x", fps=FPS)
  with pytest.raises(ValueError, match="finite"):
    dance_features.kinetic_features(np.full((5, 24, 3), np.nan), fps=FPS)


def test_text_to_motion_joints_convert_to_the_aist_convention():
  """22 joints at 20 fps -> 24 joints at 60 fps give the features of a native 60 fps capture.

  Read at 20 fps directly, the +-2-frame windows span three times the
  reference's time (effort off by ~50%); read as if 60 fps (the old
  signature), every speed was 3x too slow (energies off by ~8x).
  """
  rng = np.random.default_rng(0)
  amplitude, frequency = rng.uniform(0.02, 0.15, (24, 3)), rng.uniform(0.5, 2.0, (24, 3))
  phase = rng.uniform(0, 6, (24, 3))
  amplitude[22:], frequency[22:], phase[22:] = amplitude[20:22], frequency[20:22], phase[20:22]

  def capture(fps, duration=3.0):
    t = np.arange(int(duration * fps) + 1)[:, None, None] / fps
    return _pose()[None] + amplitude * np.sin(2 * np.pi * frequency * t + phase) + t * [0.8, 0, 0.3]

  native = capture(FPS)
  converted = dance_features.to_aist_skeleton(capture(20.0)[:, :22], fps=20.0)
  assert converted.shape == native.shape == (181, 24, 3)
  np.testing.assert_array_equal(converted[:, 22:], converted[:, 20:22])  # Hands at the wrists.
  expected = dance_features.kinetic_features(native, fps=FPS)
  got = dance_features.kinetic_features(converted, fps=FPS)
  assert (np.abs(got - expected) / (np.abs(expected) + 1e-3)).max() < 1e-2
  np.testing.assert_allclose(
    dance_features.geometric_features(converted, fps=FPS),
    dance_features.geometric_features(native, fps=FPS),
    atol=0.02,
  )
  with pytest.raises(ValueError, match=r"\(T, 22, 3\) or \(T, 24, 3\)"):
    dance_features.to_aist_skeleton(np.zeros((5, 21, 3)), fps=20.0)
  with pytest.raises(ValueError, match="fps must be > 0"):
    dance_features.to_aist_skeleton(native, fps=-1)
