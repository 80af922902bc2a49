"""The Bailando tasks end to end: a tiny choreographic-memory run, a GPT run on its codes, dances."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.data import music_dance
from jaxgen.models import bailando_vq as bvq
from jaxgen.tasks.dance.bailando_gpt import BailandoGPTTask, two_head_cross_entropy
from jaxgen.tasks.dance.bailando_vq import UPPER_JOINTS, joints_to_motion, motion_to_joints
from jaxgen.tasks.dance.dance_data import DanceMusicError
from jaxgen.tasks.registry import DependentRunError, get_task, load_run
from jaxgen.training.trainer import train

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
DATA = ["data.num_examples=2", "data.seconds=3.0", "data.sample_rate=10240"]
RUN = ["train.batch_size=8", "train.log_every=10", "optim.warmup_steps=1", "train.ema_warmup=0"]
RUN += ["train.ema_decay=0.0", "optim.learning_rate=3e-3", "train.max_minutes=None"]
VQ = DATA + RUN + ["window.frames=20", "window.stride=10", "vq.width=16", "vq.code_dim=8"]
VQ += ["vq.num_codes=16", "train.num_steps=40", "checkpoint.save_every=40"]
GPT = DATA + RUN + ["window.stride=1", "gpt.embed_dim=32", "gpt.block_size=8", "gpt.dropout=0.0"]
GPT += ["gpt.num_base_layers=1", "gpt.num_head_layers=1", "gpt.num_heads=2"]
GPT += ["train.num_steps=60", "checkpoint.save_every=60"]
SAMPLE_RATE = 10240


def _config(name, overrides):
  return apply_overrides(load_config_file(os.path.join(CONFIGS, name)), overrides)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("bailando")
  vq_dir, gpt_dir = str(root / "vq"), str(root / "gpt")
  vq_config = _config("bailando_vq_music_dance.py", VQ)
  train(get_task(vq_config), vq_config, vq_dir)
  gpt_config = _config("bailando_gpt_music_dance.py", GPT + [f"vq.workdir={vq_dir}"])
  train(get_task(gpt_config), gpt_config, gpt_dir)
  return vq_dir, gpt_dir


@pytest.fixture(scope="module")
def gpt_run(runs):
  return load_run(runs[1])


def test_motion_layout_round_trips_and_the_halves_partition_the_rig():
  joints = music_dance.make_music_dance("test", 2, seconds=3.0, sample_rate=SAMPLE_RATE)["joints"]
  motion = joints_to_motion(joints)
  assert motion.shape == (2, 60, 66)
  np.testing.assert_allclose(motion[..., :3], joints[:, :, 0])
  np.testing.assert_allclose(motion[..., 3:6], joints[:, :, 1] - joints[:, :, 0], atol=1e-6)
  np.testing.assert_allclose(np.asarray(motion_to_joints(jnp.asarray(motion))), joints, atol=1e-6)
  assert sorted(UPPER_JOINTS + bvq.SMPL_LOWER) == list(range(22))
  with pytest.raises(ValueError, match=r"joints: expected \(N, T, 22, 3\), found \(2, 60, 24, 3\)"):
    joints_to_motion(np.zeros((2, 60, 24, 3)))


def test_vq_run_trains_its_halves_and_root_branch(runs):
  task, params = load_run(runs[0])
  arrays = task.train_arrays()
  assert arrays["motion"].shape == (10, 20, 66)  # 2 clips x windows at frames 0, 10, .., 40
  np.testing.assert_array_equal(arrays["motion"][1, :10], arrays["motion"][0, 10:])
  batch = {"motion": jnp.asarray(arrays["motion"])}
  init = nn.meta.unbox(task.init(jax.random.PRNGKey(0), batch))
  before, start = task.loss(init, batch, jax.random.PRNGKey(1))
  after, end = task.loss(params, batch, jax.random.PRNGKey(1))
  assert float(after) < 0.3 * float(before), (float(after), float(before))
  for name in ("upper/recons", "lower/recons", "root/recons"):
    assert float(end[name]) < 0.75 * float(start[name]), (name, end[name], start[name])
  # The EMA codebook statistics came back to the trainer as state updates, not gradients.
  assert set(end["state_updates"]) == {"upper", "lower"}
  assert float(params["upper"]["quantizer"]["initialized"]) == 1.0
  reconstruction = task.reconstruct(params, task.train_clips["joints"])
  assert reconstruction.shape == (2, 60, 22, 3) and np.isfinite(reconstruction).all()


def test_gpt_windows_pair_each_code_with_its_music(runs, gpt_run):
  task, _ = gpt_run
  assert isinstance(task, BailandoGPTTask) and task.code_fps == 5.0
  arrays = task.train_arrays()
  # 2 clips of 15 codes; windows of block_size + 1 = 9 every code: 7 per clip.
  assert arrays["upper"].shape == arrays["lower"].shape == (14, 9)
  assert arrays["music"].shape == (14, 9, 438)
  np.testing.assert_array_equal(arrays["upper"][1, :8], arrays["upper"][0, 1:])
  np.testing.assert_array_equal(arrays["music"][1, :8], arrays["music"][0, 1:])
  # The codes are the VQ run's codes of the training dances.
  vq_task, vq_params = load_run(runs[0])
  motion = joints_to_motion(vq_task.train_clips["joints"])
  upper, lower = vq_task.encode_codes(vq_params, jnp.asarray(motion))
  np.testing.assert_array_equal(arrays["upper"][:7, 0], np.asarray(upper)[0, :7])
  np.testing.assert_array_equal(arrays["lower"][7:, 0], np.asarray(lower)[1, :7])
  task.check_batch(arrays)
  with pytest.raises(ValueError, match=r"upper: code ids must lie in \[0, 16\)"):
    task.check_batch(dict(arrays, upper=arrays["upper"] + 16))


def test_gpt_loss_is_both_cross_entropies_and_falls_on_training(gpt_run):
  task, params = gpt_run
  batch = {k: jnp.asarray(v) for k, v in task.train_arrays().items()}
  logits = (jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 16))),) * 2
  targets = (jnp.array([[1, 2, 3], [4, 5, 6]]), jnp.array([[0, 0, 0], [9, 9, 9]]))
  total, _ = two_head_cross_entropy(logits, targets)
  log_p = np.asarray(jax.nn.log_softmax(logits[0]))
  expected = sum(-np.mean(np.take_along_axis(log_p, np.asarray(t)[..., None], -1)) for t in targets)
  np.testing.assert_allclose(float(total), expected, rtol=1e-6)
  init = nn.meta.unbox(task.init(jax.random.PRNGKey(0), batch))
  loss = lambda p: float(task.loss(p, batch, jax.random.PRNGKey(1))[0])
  assert loss(init) == pytest.approx(2 * np.log(16), rel=0.05)
  assert loss(params) < 0.6 * loss(init), (loss(params), loss(init))


def test_dance_from_music_covers_the_audio_greedily(gpt_run):
  task, params = gpt_run
  audio = music_dance.make_music_dance("test", 1, seconds=3.1, sample_rate=SAMPLE_RATE)["audio"][0]
  joints = task.dance_from_music(params, audio, SAMPLE_RATE, jax.random.PRNGKey(0))
  assert joints.shape == (62, 22, 3) and np.isfinite(joints).all()
  np.testing.assert_array_equal(joints[60:], np.repeat(joints[59:60], 2, axis=0))  # partial code
  # Greedy decoding: one key, one dance.
  again = task.dance_from_music(params, audio, SAMPLE_RATE, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(joints, again)


def test_named_errors_for_bad_music_runs_and_options(runs, gpt_run, tmp_path):
  task, params = gpt_run
  rng = jax.random.PRNGKey(0)
  with pytest.raises(DanceMusicError, match=r"expected Bailando features \(N, codes >= 2, 438\)"):
    task.generate(params, {"music": np.zeros((1, 5, 35))}, rng)
  with pytest.raises(DanceMusicError, match="expected finite features, found NaN"):
    task.generate(params, {"music": np.full((1, 5, 438), np.nan)}, rng)
  with pytest.raises(DanceMusicError, match=r"expected at least 0.4 s of music, found 0.200 s"):
    task.dance_from_music(params, np.ones(2048, np.float32), SAMPLE_RATE, rng)
  with pytest.raises(DanceMusicError, match="sr: expected an int sample rate of at least 10240"):
    task.dance_from_music(params, np.ones(80000, np.float32), 8000, rng)
  with pytest.raises(ValueError, match="temperature: expected a number >= 0"):
    task.check_options({"temperature": -1.0})
  with pytest.raises(DanceMusicError, match="dances to music, not text"):
    task.conditions(["a dance"])
  missing = _config("bailando_gpt_music_dance.py", GPT + [f"vq.workdir={tmp_path}/none"])
  with pytest.raises(
    DependentRunError, match="vq.workdir: expected the directory of a bailando_vq"
  ):
    get_task(missing)
  wrong_task = _config("bailando_gpt_music_dance.py", GPT + [f"vq.workdir={runs[1]}"])
  with pytest.raises(DependentRunError, match="expected a bailando_vq run, found a 'bailando_gpt'"):
    get_task(wrong_task)
  other_data = _config(
    "bailando_gpt_music_dance.py", GPT + [f"vq.workdir={runs[0]}", "data.seed=1"]
  )
  with pytest.raises(ValueError, match="data: the VQ-VAE in .* was trained on"):
    get_task(other_data)
