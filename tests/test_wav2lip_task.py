"""The Wav2Lip tasks: the lip-sync expert and the generator train, generate and sample to MP4.

Tiny widths (1/32 of the reference's channels) and clips of 1 s; the expert
run that the generator loads is trained once per module by `jaxgen train`.
"""

import logging
import os
import re
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxgen import cli
from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.data import audio as speech
from jaxgen.models import wav2lip as w2l
from jaxgen.tasks.registry import load_run
from jaxgen.tasks.talking_face import talking_data, talking_samples
from jaxgen.tasks.talking_face.wav2lip import Wav2LipTask, initial_sync_state, sync_switch
from jaxgen.tasks.talking_face.wav2lip_expert import Wav2LipExpertTask
from tiny_configs import CONFIGS, TINY

TINY_DATA = {"num_clips": 2, "seconds": 1.0, "size": 96, "seed": 0, "repeats": 4}


def run_cli(argv):
  return cli.main(["--compilation-cache", ""] + [str(a) for a in argv])


def tiny_config(name: str, *extra: str):
  config = load_config_file(os.path.join(CONFIGS, name))
  return apply_overrides(config, TINY[name] + list(extra))


@pytest.fixture(scope="module")
def clips():
  return talking_data.make_clips(TINY_DATA, "train")


class _StepMetrics(logging.Handler):
  """Collects the trainer's logged `step N: key=value, ...` lines as {step: {key: value}}."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.steps = {}

  def emit(self, record):
    match = re.fullmatch(r"step (\d+): (.*)", record.getMessage())
    if match:
      pairs = (item.split("=") for item in match.group(2).split(", "))
      self.steps[int(match.group(1))] = {k: float(v) for k, v in pairs}


def _train_logged(name: str, workdir: str, *overrides: str) -> dict:
  """Trains configs/`name` on its tiny overrides + `overrides`; the logged metrics per step."""
  argv = ["train", "--config", os.path.join(CONFIGS, name), "--workdir", workdir]
  handler, root = _StepMetrics(), logging.getLogger()
  level = root.level
  root.addHandler(handler)
  root.setLevel(logging.INFO)  # pytest's handlers on the root make the CLI's basicConfig a no-op
  try:
    assert run_cli(argv + TINY[name] + list(overrides)) == 0
  finally:
    root.removeHandler(handler)
    root.setLevel(level)
  return handler.steps


@pytest.fixture(scope="module")
def expert_run(tmp_path_factory):
  """(run directory, logged metrics per step) of 6 tiny `jaxgen train` steps of the expert."""
  workdir = str(tmp_path_factory.mktemp("wav2lip") / "expert")
  steps = _train_logged(
    "wav2lip_expert_talking_heads.py",
    workdir,
    "train.num_steps=6",
    "checkpoint.save_every=6",
    "optim.learning_rate=3e-3",
  )
  return workdir, steps


@pytest.fixture(scope="module")
def generator_task(expert_run):
  return Wav2LipTask(tiny_config("wav2lip_talking_heads.py", f"expert.workdir={expert_run[0]}"))


@pytest.fixture(scope="module")
def generator_run(expert_run, tmp_path_factory):
  """(run directory, logged metrics per step) of 4 tiny `jaxgen train` steps of the generator."""
  workdir = str(tmp_path_factory.mktemp("wav2lip") / "generator")
  steps = _train_logged(
    "wav2lip_talking_heads.py",
    workdir,
    f"expert.workdir={expert_run[0]}",
    "train.num_steps=4",
    "checkpoint.save_every=4",
    "optim.learning_rate=3e-3",
  )
  return workdir, steps


def _running_means(batch_stats) -> list:
  return [
    leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(batch_stats)[0]
    if path[-1].key == "mean"
  ]


# -- data ------------------------------------------------------------------------


def test_examples_pair_windows_as_the_reference(clips):
  rng = np.random.default_rng(0)
  labels = []
  for _ in range(40):
    ex = talking_data.expert_example(clips, 1, rng)
    assert ex["frames"].shape == (5, 96, 96, 3) and ex["frames"].dtype == np.uint8
    assert ex["mel"].shape == (16, 80)
    labels.append(float(ex["label"]))
  assert 0 < np.mean(labels) < 1
  # The generator's target is one window with its own mel windows; its reference another.
  ex = talking_data.generator_example(clips, 0, np.random.default_rng(3))
  starts = [
    t
    for t in range(clips.num_frames - 4)
    if np.array_equal(clips.video[0, t : t + 5], ex["target"])
  ]
  assert len(starts) == 1
  np.testing.assert_array_equal(ex["mel"], clips.mel[0, starts[0] : starts[0] + 5])
  np.testing.assert_array_equal(ex["sync_mel"], clips.mel[0, starts[0]])
  assert not np.array_equal(ex["reference"], ex["target"])
  faces = np.asarray(talking_data.masked_faces(np.ones((2, 96, 96, 3)), np.ones((2, 96, 96, 3))))
  assert faces.shape == (2, 96, 96, 6)
  assert faces[:, 48:, :, :3].max() == 0 and faces[:, :48].min() == 1 and faces[..., 3:].min() == 1


def test_data_config_errors():
  with pytest.raises(talking_data.TalkingDataError, match="data.size: expected 96"):
    talking_data.check_data_config(dict(TINY_DATA, size=64))
  with pytest.raises(talking_data.TalkingDataError, match="data.repeats"):
    talking_data.check_data_config(dict(TINY_DATA, repeats=0))
  with pytest.raises(w2l.WidthError, match="width: expected a channel multiplier"):
    w2l.check_width(1.5)
  assert w2l.parameter_count("syncnet", width=1 / 8) < w2l.parameter_count("syncnet") / 40


# -- the expert -----------------------------------------------------------------


def test_expert_trains_with_running_statistics_as_state(expert_run):
  workdir, steps = expert_run
  assert sorted(steps) == list(range(1, 7))
  assert steps[6]["sync_loss"] < steps[1]["sync_loss"], steps
  task, params = load_run(workdir)
  assert isinstance(task, Wav2LipExpertTask) and set(params) == {"params", "batch_stats"}
  means = _running_means(params["batch_stats"])
  assert max(float(jnp.abs(m).max()) for m in means) > 0  # running statistics moved off init


# -- the generator ---------------------------------------------------------------


def test_sync_switch_latches_once_below_threshold():
  state = initial_sync_state()
  update = jax.jit(lambda s, x: sync_switch(s, x, decay=0.5, warmup=2, threshold=0.75))
  state = update(state, 0.5)  # below, but before the warm-up: stays off
  assert float(state["on"]) == 0 and float(state["average"]) == 0.5
  state = update(state, 0.9)  # average 0.7 < 0.75 after 2 steps: on
  assert float(state["on"]) == 1 and np.isclose(float(state["average"]), 0.7)
  state = update(state, 5.0)  # average back above: stays on
  assert float(state["on"]) == 1 and float(state["average"]) > 0.75
  off = update(update(initial_sync_state(), 2.0), 2.0)
  assert float(off["on"]) == 0


def test_generator_trains_with_its_state_written_back(generator_run):
  workdir, steps = generator_run
  assert sorted(steps) == [1, 2, 3, 4]
  assert steps[4]["l1"] < steps[1]["l1"], steps
  assert all(steps[i]["sync_weight"] == 0 for i in steps)  # the expert's loss is high: off
  _, params = load_run(workdir)
  assert set(params) == {"generator", "discriminator", "sync_state"}
  assert float(params["sync_state"]["count"]) == 4
  assert np.isclose(float(params["sync_state"]["average"]), steps[4]["sync_average"], rtol=1e-4)
  means = _running_means(params["generator"]["batch_stats"])
  assert max(float(jnp.abs(m).max()) for m in means) > 0  # running statistics moved off init


def _speech(seconds: float, rate: int = speech.SAMPLE_RATE) -> np.ndarray:
  t = np.arange(int(seconds * rate)) / rate
  return (0.5 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(
    np.float32
  )


def test_generate_frames_in_one_program_deterministically(generator_task, clips):
  task = generator_task
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), task.abstract_batch(1))
  params = task.init(jax.random.key(0), zeros)
  face = clips.video[0, 0]
  conditions = task.speech_conditions(
    [_speech(0.6), _speech(3.0)], [16000, 16000], ["a.wav", "b.wav"], face, "face.png"
  )
  assert [m.shape for m in conditions["mel"]] == [(15, 16, 80), (75, 16, 80)]
  compiled_before = task._frames._cache_size()  # the jit cache is shared by every task instance
  first = task.generate(params, conditions, jax.random.key(0))["video"]
  again = task.generate(params, conditions, jax.random.key(5))["video"]
  assert [v.shape for v in first] == [(15, 96, 96, 3), (75, 96, 96, 3)]
  assert all(v.dtype == np.uint8 for v in first)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  # Both utterances (15 and 75 frames, chunks of chunk_frames) ran one compiled program.
  assert task._frames._cache_size() - compiled_before <= 1
  # The generator is per frame: a frame does not depend on its chunk's other frames.
  single = task.talking_frames(
    params, conditions["mel"][1][:1], conditions["target"][1][:1], conditions["reference"][1][:1]
  )
  np.testing.assert_array_equal(single[0], first[1][0])


def test_speech_and_reference_errors(clips):
  face = clips.video[0, 0]
  conditions = lambda audio, rate=16000, image=face: talking_samples.speech_conditions(
    [audio], [rate], ["speech.wav"], image, "face.png"
  )
  with pytest.raises(talking_samples.ReferenceFaceError, match="face.png: expected a 96x96"):
    conditions(_speech(1.0), image=np.zeros((64, 64, 3), np.uint8))
  with pytest.raises(talking_samples.ReferenceFaceError, match="found 4 channels"):
    conditions(_speech(1.0), image=np.zeros((96, 96, 4), np.uint8))
  with pytest.raises(speech.AudioInputError, match="speech.wav is silent"):
    conditions(np.zeros(16000, np.float32))
  with pytest.raises(speech.AudioInputError, match="speech.wav is too short"):
    conditions(_speech(0.1))
  with pytest.warns(UserWarning, match="resampling to the 16000 Hz"):
    resampled = conditions(_speech(1.0, 22050), rate=22050)
  assert resampled["mel"][0].shape == (25, 16, 80)


def test_sample_cli_writes_mp4_with_speech(generator_run, tmp_path, clips, capsys):
  import imageio_ffmpeg

  from jaxgen.render import music_video

  run = generator_run[0]
  wav = music_video.write_wav(str(tmp_path / "speech.wav"), _speech(1.2), 16000)
  face = tmp_path / "face.png"
  Image.fromarray(clips.video[1, 0]).save(face)
  out = tmp_path / "out" / "talk.mp4"
  sample = ["sample", "--checkpoint", run, "--audio", wav, "--reference", face, "--out", out]
  assert run_cli(sample + ["--side-by-side", "--scale", "2"]) == 0
  frames = np.load(tmp_path / "out" / "talk.npy")
  assert frames.shape == (30, 96, 96, 3) and frames.dtype == np.uint8
  probe = subprocess.run(
    [imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(out)], capture_output=True, text=True
  ).stderr
  assert "Audio: aac" in probe and "384x192" in probe and "25 fps" in probe, probe
  Image.fromarray(np.zeros((96, 96), np.uint8)).save(tmp_path / "grey.png")
  capsys.readouterr()
  assert run_cli(sample[:-2] + ["--reference", tmp_path / "grey.png", "--out", out]) == 2
  assert "face.png" not in (err := capsys.readouterr().err) and "grey.png: expected a 96x96" in err
