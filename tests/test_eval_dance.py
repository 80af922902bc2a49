"""EDGE's PFC (`metrics/foot_contact.py`) and `jaxgen eval --metric dance` on tiny folders."""

import argparse
import json

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
import soundfile

from jaxgen import cli
from jaxgen.cli import eval as eval_command
from jaxgen.cli import eval_dance
from jaxgen.cli.errors import UsageError
from jaxgen.cli.eval_folders import run_eval
from jaxgen.data import motion_formats
from jaxgen.data.music_dance import make_music_dance
from jaxgen.metrics import dance, dance_features, foot_contact
from jaxgen.metrics.frechet import TooFewSamplesError

# Four tiny dances leave some geometric tests constant over the ground truth.
pytestmark = pytest.mark.filterwarnings("ignore::jaxgen.metrics.dance.ConstantFeatureWarning")

FPS = 20.0  # make_music_dance's frame rate


def edge_pfc(clips_z_up):
  """EDGE's eval/eval_pfc.py, transcribed: clips (S, J, 3) at 30 fps, z up, feet [7, 10, 8, 11]."""
  scores = []
  for joint3d in clips_z_up:
    dt = 1 / 30
    root_v = (joint3d[1:, 0, :] - joint3d[:-1, 0, :]) / dt
    root_a = (root_v[1:] - root_v[:-1]) / dt
    root_a[:, 2] = np.maximum(root_a[:, 2], 0)
    root_a = np.linalg.norm(root_a, axis=-1)
    root_a /= root_a.max()
    feet = joint3d[:, [7, 10, 8, 11]]
    foot_v = np.linalg.norm(feet[2:, :, :2] - feet[1:-1, :, :2], axis=-1)
    left = np.minimum(foot_v[:, 0], foot_v[:, 1])
    right = np.minimum(foot_v[:, 2], foot_v[:, 3])
    scores.append((left * right * root_a).mean())
  return np.mean(scores) * 10000


def z_up(joints):
  """y-up (x, y, z) -> z-up (x, -z, y): a rotation taking +y to +z."""
  return np.stack([joints[..., 0], -joints[..., 2], joints[..., 1]], -1)


def bailando_bas(joints_60, beat_times):
  """Bailando's utils/beat_align_score.py (calc_db, get_mb, BA) on 60 fps SMPL-24 joints."""
  speed = np.mean(np.sqrt(np.sum((joints_60[1:] - joints_60[:-1]) ** 2, axis=2)), axis=1)
  motion = scipy.signal.argrelextrema(scipy.ndimage.gaussian_filter(speed, 5), np.less)[0]
  music = np.zeros(len(speed), bool)  # the music's beat column, cut to the dance's length
  frames = np.round(np.asarray(beat_times) * 60).astype(int)
  music[frames[frames < len(speed)]] = True
  return np.mean([np.exp(-np.min((motion - b) ** 2) / 2 / 9) for b in np.flatnonzero(music)])


def random_clip(rng, frames, joints=24):
  """A random walk of every joint plus a wandering root: nothing planted, root accelerating."""
  return np.cumsum(rng.normal(0, 0.02, (frames, joints, 3)), axis=0) + rng.normal(0, 1, (joints, 3))


# -- PFC -------------------------------------------------------------------------------------


def test_pfc_matches_a_transcription_of_edges_code_on_random_clips():
  rng = np.random.default_rng(0)
  clips = [random_clip(rng, t, j) for t, j in ((3, 24), (40, 22), (150, 24))]
  expected = edge_pfc([z_up(c) for c in clips])
  assert expected > 1  # random feet slide while the root accelerates
  np.testing.assert_allclose(
    foot_contact.physical_foot_contact(clips, fps=30), expected, rtol=1e-12
  )
  np.testing.assert_allclose(
    foot_contact.physical_foot_contact([z_up(c) for c in clips], fps=30, up_axis="z"),
    expected,
    rtol=1e-12,
  )


def test_pfc_is_zero_when_one_joint_of_each_foot_is_planted():
  rng = np.random.default_rng(1)
  clip = random_clip(rng, 60)
  for joint in (7, 11):  # the left ankle and the right toes stay put; heights may change
    clip[:, joint, [0, 2]] = clip[0, joint, [0, 2]]
  assert foot_contact.clip_foot_contact(clip, fps=30) == 0.0
  clip[5, 7, 0] += 0.1  # one slip of the left foot while the right stays planted: still 0
  assert foot_contact.clip_foot_contact(clip, fps=30) == 0.0


def test_pfc_is_zero_when_the_root_does_not_accelerate_or_only_falls():
  rng = np.random.default_rng(2)
  clip = random_clip(rng, 60).astype(np.float32)  # sliding feet
  t = np.arange(60, dtype=np.float32)[:, None]
  clip[:, 0] = np.float32([3.1, 0.9, -2.3]) + t * np.float32([0.013, 0.0, -0.021])  # steady
  score = foot_contact.clip_foot_contact(clip, fps=30)
  assert score == 0.0  # the reference's 0 / 0 (or normalised rounding noise) is NaN or > 0
  clip = random_clip(rng, 60)
  clip[:, 0] = [0.0, 1.0, 0.0]
  clip[:, 0, 1] -= 0.5 * 9.81 * (np.arange(60) / 30) ** 2  # free fall: upward part clamped
  assert foot_contact.clip_foot_contact(clip, fps=30) == 0.0


@pytest.mark.parametrize("fps", [20.0, 30.0, 60.0])
def test_pfc_of_feet_sliding_under_a_steady_push_is_the_same_at_every_frame_rate(fps):
  # Root accelerates upward steadily (a_norm = 1 at every frame); every foot joint slides
  # horizontally at 0.3 m/s, i.e. 0.01 m per 1/30 s: PFC = 1e4 * 0.01^2 = 1.
  t = np.arange(int(2 * fps)) / fps
  clip = np.zeros((len(t), 22, 3))
  clip[:, 0, 1] = 0.9 + 0.5 * t**2
  clip[:, [7, 8, 10, 11], 0] = 0.3 * t[:, None]
  np.testing.assert_allclose(foot_contact.physical_foot_contact([clip], fps=fps), 1.0, rtol=1e-9)


def test_foot_joints_are_the_ankles_and_toes_of_both_rigs():
  names_24 = dance_features.SMPL_JOINT_NAMES
  left, right = foot_contact.feet_of(24)
  assert [names_24[i] for i in left + right] == ["lankle", "ltoes", "rankle", "rtoes"]
  names_22 = motion_formats.SMPL_JOINT_NAMES
  left, right = foot_contact.feet_of(22)
  assert [names_22[i] for i in left + right] == [
    "left_ankle",
    "left_foot",
    "right_ankle",
    "right_foot",
  ]


@pytest.mark.parametrize(
  "kwargs, error, match",
  [
    ({"joints": np.zeros((10, 24, 2)), "fps": 30}, ValueError, r"shape \(T, J, 3\)"),
    ({"joints": np.zeros((2, 24, 3)), "fps": 30}, TooFewSamplesError, "at least 3 frames"),
    ({"joints": np.zeros((10, 24, 3)), "fps": 0}, ValueError, "fps must be > 0, got 0"),
    ({"joints": np.zeros((10, 17, 3)), "fps": 30}, ValueError, "got 17 joints; pass feet"),
    ({"joints": np.zeros((10, 9, 3)), "fps": 30, "feet": ((7,), (9,))}, ValueError, "index the 9"),
    ({"joints": np.zeros((10, 24, 3)), "fps": 30, "up_axis": "x"}, ValueError, "up_axis must be"),
    ({"joints": np.full((10, 24, 3), np.nan), "fps": 30}, ValueError, "finite"),
  ],
)
def test_pfc_named_errors(kwargs, error, match):
  with pytest.raises(error, match=match):
    foot_contact.clip_foot_contact(**kwargs)


# -- jaxgen eval --metric dance --------------------------------------------------------------


def _args(*argv):
  parser = argparse.ArgumentParser()
  eval_command.add_arguments(parser)
  return parser.parse_args(["--metric", "dance", *map(str, argv)])


def _save(folder, arrays):
  folder.mkdir(parents=True, exist_ok=True)
  for name, array in arrays.items():
    np.save(folder / f"{name}.npy", array)
  return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("dance")
  test = make_music_dance("test", 4, seconds=4)
  other = make_music_dance("validation", 4, seconds=4)
  names = [f"clip{i}" for i in range(4)]
  beats = {n: test["beat_times"][i, : test["num_beats"][i]] for i, n in enumerate(names)}
  return {
    "test": test,
    "names": names,
    "beats": beats,
    "reference": _save(root / "reference", dict(zip(names, test["joints"]))),
    "other": _save(root / "other", dict(zip(names, other["joints"]))),
    "other_joints": other["joints"],
    "music": _save(root / "music", beats),
    "root": root,
  }


def test_ground_truth_against_itself(folders, tmp_path):
  out = tmp_path / "dance.json"
  ref = folders["reference"]
  result = run_eval(
    _args(
      "--generated",
      ref,
      "--reference",
      ref,
      "--music",
      folders["music"],
      "--fps",
      FPS,
      "--out",
      out,
    )
  )
  assert json.loads(out.read_text()) == result
  assert result["num_generated"] == result["num_reference"] == 4
  assert abs(result["fid_k"]) < 1e-3 and abs(result["fid_g"]) < 1e-3
  assert result["div_k"] == result["div_k_reference"] > 1
  assert result["div_g"] == result["div_g_reference"] > 1
  joints = folders["test"]["joints"].astype(np.float64)
  expected_bas = np.mean(
    [
      bailando_bas(dance_features.to_aist_skeleton(j, FPS), folders["beats"][n])
      for j, n in zip(joints, folders["names"])
    ]
  )
  np.testing.assert_allclose(result["bas"], expected_bas, rtol=1e-12)
  assert result["bas"] > 0.8  # the synthetic dances pause on their music's beats
  # The transcription counts foot speed per 1/30 s frame; at 20 fps a frame is 1.5 of those.
  expected_pfc = edge_pfc([z_up(j) for j in joints]) * (FPS / 30) ** 2
  np.testing.assert_allclose(result["pfc"], expected_pfc, rtol=1e-9)
  assert result["pfc_reference"] == result["pfc"]


def test_other_dances_are_far_from_the_reference_and_off_the_beat(folders):
  gt = run_eval(
    _args("--generated", folders["reference"], "--reference", folders["reference"], "--fps", FPS)
  )
  result = run_eval(
    _args(
      "--generated",
      folders["other"],
      "--reference",
      folders["reference"],
      "--music",
      folders["music"],
      "--fps",
      FPS,
    )
  )
  assert gt["bas"] is None  # no --music
  assert result["fid_k"] > 1 and result["fid_g"] > 1
  assert result["div_k_reference"] == gt["div_k"]
  assert result["bas"] < 0.5  # danced to other music (each to its own: > 0.8)
  other = [dance_features.to_aist_skeleton(j, FPS) for j in folders["other_joints"]]
  reference = [dance_features.to_aist_skeleton(j, FPS) for j in folders["test"]["joints"]]
  features = {
    name: np.stack([dance_features.kinetic_features(d, fps=60) for d in dances])
    for name, dances in (("other", other), ("reference", reference))
  }
  np.testing.assert_allclose(
    result["fid_k"], dance.fid_k(features["reference"], features["other"]), rtol=1e-12
  )


def test_a_stack_of_samples_dances_to_the_music_of_its_file_name(folders, tmp_path):
  joints = folders["test"]["joints"][0]
  moved = joints + np.float32([1.0, 0.0, -0.5])  # same dance elsewhere: same BAS and features
  stacked = _save(tmp_path / "stacked", {"song": np.stack([joints, moved])})  # as jaxgen sample
  separate = _save(tmp_path / "separate", {"a": joints, "b": moved})
  beats = folders["beats"]["clip0"]
  music = _save(tmp_path / "music", {"song": beats, "a": beats, "b": beats, "unused": beats})
  results = [
    run_eval(
      _args("--generated", gen, "--reference", folders["reference"], "--music", music, "--fps", FPS)
    )
    for gen in (stacked, separate)
  ]
  assert results[0] == results[1]
  assert results[0]["num_generated"] == 2
  expected = bailando_bas(dance_features.to_aist_skeleton(joints.astype(np.float64), FPS), beats)
  np.testing.assert_allclose(results[0]["bas"], expected, rtol=1e-12)


def test_wav_music_is_beat_tracked(folders, tmp_path):
  test = folders["test"]
  sample_rate = round(test["audio"].shape[1] / 4)
  music = tmp_path / "music"
  music.mkdir()
  for name, audio in zip(folders["names"], test["audio"]):
    soundfile.write(music / f"{name}.wav", audio, sample_rate, subtype="FLOAT")
  ref = folders["reference"]
  argv = ["--generated", ref, "--reference", ref, "--music", music, "--fps", FPS]
  result = run_eval(_args(*argv))
  tracked = [
    dance.music_beats_from_audio(audio, sample_rate, fps=60) / 60 for audio in test["audio"]
  ]
  expected = np.mean(
    [
      bailando_bas(dance_features.to_aist_skeleton(j.astype(np.float64), FPS), b)
      for j, b in zip(test["joints"], tracked)
    ]
  )
  np.testing.assert_allclose(result["bas"], expected, rtol=1e-12)
  exact = run_eval(_args(*argv[:5], folders["music"], *argv[6:]))["bas"]
  assert abs(result["bas"] - exact) < 0.15  # tracked beats sit about a hop after the true ones


def test_command_line_prints_the_json(folders, capsys):
  ref = str(folders["reference"])
  argv = ["--compilation-cache", "", "eval", "--metric", "dance", "--generated", ref]
  assert cli.main(argv + ["--reference", ref, "--reference-fps", "20", "--fps", "20"]) == 0
  result = json.loads(capsys.readouterr().out)
  assert result["metric"] == "dance" and result["fps"] == result["reference_fps"] == 20.0
  assert cli.main(argv + ["--reference", ref]) == 2  # no --fps: a named error, exit code 2
  assert "--fps is required for --metric dance" in capsys.readouterr().err


@pytest.mark.parametrize(
  "case, error, match",
  [
    ("empty", eval_dance.EmptyDanceFolderError, "--generated: .* holds no .npy file"),
    ("unmatched", eval_dance.UnmatchedMusicError, r"none for 1 generated file\(s\): \['extra'\]"),
    ("joints", eval_dance.InvalidDanceArrayError, r"J in \(22, 24\), got shape \(80, 21, 3\)"),
    (
      "axes",
      eval_dance.InvalidDanceArrayError,
      r"bad.npy must hold joints .* got shape \(80, 22\)",
    ),
    ("beats", eval_dance.InvalidDanceArrayError, "1-D array of beat times in seconds"),
    ("pickle", eval_dance.InvalidDanceArrayError, r"music/clip0.npy is not a readable .npy array"),
    ("fps", UsageError, "--fps must be > 0 frames per second, got 0.0"),
    ("reference_fps", UsageError, "--reference-fps must be > 0 frames per second, got -1.0"),
    ("no_reference", UsageError, "--reference is required for --metric dance"),
    ("one", TooFewSamplesError, "--generated must hold at least 2 dances"),
    ("short", eval_dance.InvalidDanceArrayError, "at least 3 frames at 20 fps, got 2"),
    ("missing", NotADirectoryError, "--reference: .* is not a folder"),
  ],
)
def test_named_errors(folders, tmp_path, case, error, match):
  ref, music = folders["reference"], folders["music"]
  joints = folders["test"]["joints"][0]
  gen = ref
  extra = []
  if case == "empty":
    gen = tmp_path / "empty"
    gen.mkdir()
  elif case == "unmatched":
    gen = _save(tmp_path / "gen", {"clip0": joints, "extra": joints})
  elif case == "joints":
    gen = _save(tmp_path / "gen", {"clip0": joints, "bad": joints[:, :21]})
  elif case == "axes":
    gen = _save(tmp_path / "gen", {"clip0": joints, "bad": joints[..., 0]})
  elif case == "beats":
    music = _save(tmp_path / "music", {n: np.zeros((2, 3)) for n in folders["names"]})
  elif case == "pickle":  # an object array needs pickle, which is never loaded
    music = _save(tmp_path / "music", {n: np.array([0.5, None]) for n in folders["names"]})
  elif case == "short":
    gen = _save(tmp_path / "gen", {"clip0": joints, "short": joints[:2]})
  elif case == "one":
    gen = _save(tmp_path / "gen", {"clip0": joints})
  fps = {"fps": 0, "reference_fps": FPS}.get(case, FPS)
  if case == "reference_fps":
    extra = ["--reference-fps", -1]
  reference = [] if case == "no_reference" else ["--reference", ref]
  if case == "missing":
    reference = ["--reference", tmp_path / "nowhere"]
  with pytest.raises(error, match=match):
    run_eval(_args("--generated", gen, *reference, "--music", music, "--fps", fps, *extra))
