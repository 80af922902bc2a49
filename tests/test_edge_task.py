"""The `edge` task: pose vectors, EDGE's loss terms, guidance, long-form sampling, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.data import music_dance
from jaxgen.diffusion import samplers
from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.tasks.dance import dance_data
from jaxgen.tasks.dance.dance_data import DanceMusicError
from jaxgen.tasks.dance.edge import (
  LOSS_WEIGHTS,
  EDGETask,
  edge_loss_terms,
  overlapping_windows_sample,
)
from jaxgen.tasks.registry import get_task

SEQ_LEN = 20
TINY = [
  "data.num_examples=2",
  "data.seconds=3.0",
  "data.sample_rate=10240",
  f"data.seq_len={SEQ_LEN}",
  "data.window_stride=10",
  "edge.latent_dim=32",
  "edge.ff_size=64",
  "edge.num_layers=2",
  "edge.num_heads=2",
  "edge.num_music_layers=1",
  "edge.dropout=0.0",
  "sample.num_steps=4",
]


def tiny_config(*overrides):
  return apply_overrides(load_config_file("configs/edge_music_dance.py"), TINY + list(overrides))


@pytest.fixture(scope="module")
def task():
  return get_task(tiny_config())


@pytest.fixture(scope="module")
def arrays(task):
  return task.train_arrays()


@pytest.fixture(scope="module")
def params(task, arrays):
  batch = {k: jnp.asarray(v[:2]) for k, v in arrays.items()}
  return nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0), batch))


def numpy_joints(normalizer, poses):
  """Joints of normalised pose vectors, computed here without the task's helpers."""
  x = np.asarray(poses, np.float64) * normalizer.std + normalizer.mean
  root = x[..., 4:7]
  rest = root[..., None, :] + x[..., 7:].reshape(x.shape[:-1] + (21, 3))
  return np.concatenate([root[..., None, :], rest], axis=-2)


def test_config_is_edge_and_windows_cover_the_train_clips(task, arrays):
  assert task.model_config.pose_dim == 70 and task.model_config.music_dim == 35
  assert dict(task.config.loss) == LOSS_WEIGHTS
  assert task.config.diffusion.cond_drop_prob == 0.25
  assert task.config.diffusion.schedule == "squaredcos_cap_v2"
  # 2 clips of 60 frames, windows of 20 every 10 frames: 5 per clip.
  assert arrays["pose"].shape == (10, SEQ_LEN, 70)
  assert arrays["music"].shape == (10, SEQ_LEN, 35)
  # Min-max over the training frames: every varying column spans [-1, 1] exactly.
  pose = arrays["pose"].reshape(-1, 70)
  varying = task.pose_normalizer.std > 1e-5
  np.testing.assert_allclose(pose.min(0)[varying], -1.0, atol=1e-5)
  np.testing.assert_allclose(pose.max(0)[varying], 1.0, atol=1e-5)
  # The second window of clip 0 starts 10 frames in.
  np.testing.assert_array_equal(arrays["pose"][1, :10], arrays["pose"][0, 10:])
  task.check_batch(arrays)


def test_poses_round_trip_joints_and_mark_still_feet():
  rng = np.random.default_rng(0)
  joints = rng.normal(size=(2, 5, 22, 3)).astype(np.float32)
  # Left ankle (7) moves 0.01 m per frame (0.2 m/s, still); right ankle (8) 0.02 m (0.4 m/s).
  joints[:, :, 7] = np.arange(5)[:, None] * np.array([0.01, 0.0, 0.0])
  joints[:, :, 8] = np.arange(5)[:, None] * np.array([0.0, 0.0, 0.02])
  poses = dance_data.joints_to_poses(joints)
  assert poses.shape == (2, 5, 70)
  np.testing.assert_allclose(np.asarray(dance_data.poses_to_joints(poses)), joints, atol=1e-6)
  np.testing.assert_array_equal(poses[0, :, 0], 1.0)
  np.testing.assert_array_equal(poses[0, :, 1], [0, 0, 0, 0, 1])  # the last frame counts as still
  np.testing.assert_array_equal(poses[..., 4:7], joints[:, :, 0])


def test_each_loss_term_is_what_it_says(task, arrays):
  norm = task.pose_normalizer
  target = jnp.asarray(arrays["pose"][:3])
  exact = edge_loss_terms(target, target, norm)
  for name in ("simple", "velocity", "fk"):
    assert float(exact[name]) == 0.0, name

  # A constant offset of the body columns: no velocity error, a known simple and FK error.
  offset = np.zeros(70, np.float32)
  offset[4:] = np.linspace(-0.2, 0.3, 66)
  shifted = target + offset
  terms = edge_loss_terms(shifted, target, norm)
  assert float(terms["velocity"]) < 1e-10
  np.testing.assert_allclose(terms["simple"], np.mean(offset**2), rtol=1e-5)
  fk = np.mean((numpy_joints(norm, shifted) - numpy_joints(norm, target)) ** 2)
  np.testing.assert_allclose(terms["fk"], fk, rtol=1e-4)

  # Foot term: squared velocity of joints 7, 8, 10, 11 where the predicted contact > 0.95.
  contacts = np.where(np.arange(4) % 2 == 0, 1.0, -1.0)  # left ankle and left foot still
  predicted = np.asarray(shifted).copy()
  predicted[..., :4] = contacts
  feet = numpy_joints(norm, predicted)[:, :, [7, 8, 10, 11]]
  velocity = np.zeros_like(feet)
  velocity[:, :-1] = feet[:, 1:] - feet[:, :-1]
  velocity *= (contacts > 0.95)[None, None, :, None]
  foot = edge_loss_terms(jnp.asarray(predicted), target, norm)["foot"]
  assert float(foot) > 0
  np.testing.assert_allclose(foot, np.mean(velocity**2), rtol=1e-4)
  predicted[..., :4] = 0.9
  assert float(edge_loss_terms(jnp.asarray(predicted), target, norm)["foot"]) == 0.0


def test_loss_falls_on_a_fixed_batch(task, arrays, params):
  batch = {k: jnp.asarray(v[:4]) for k, v in arrays.items()}
  optimizer = optax.adam(3e-3)
  rng = jax.random.PRNGKey(1)  # the same timesteps, noise and dropped rows every step

  @jax.jit
  def step(params, opt_state):
    (loss, terms), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, rng)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss, terms

  opt_state = optimizer.init(params)
  p, losses = params, []
  for _ in range(30):
    p, opt_state, loss, terms = step(p, opt_state)
    losses.append(float(loss))
    if len(losses) == 1:
      weighted = sum(LOSS_WEIGHTS[k] * float(v) for k, v in terms.items())
      np.testing.assert_allclose(losses[0], weighted, rtol=1e-5)
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.7 * losses[0], losses


def test_guidance_scale_one_is_the_conditional_prediction(task, arrays, params):
  music = jnp.asarray(arrays["music"][:2])
  x = jax.random.normal(jax.random.PRNGKey(2), (2, SEQ_LEN, 70))
  t = jnp.array([500, 900])

  @jax.jit
  def predictions(scale):
    guided = task.guided_denoiser(params, music, scale)(x, t)  # traced scale: both halves run
    cond = task.denoise(params, x, music, t, jnp.ones(2, bool))
    uncond = task.denoise(params, x, music, t, jnp.zeros(2, bool))
    return guided, cond, uncond

  guided, cond, uncond = predictions(jnp.float32(1.0))
  assert float(jnp.abs(cond - uncond).max()) > 1e-3  # the null music changes the prediction
  np.testing.assert_allclose(guided, cond, atol=1e-5)
  np.testing.assert_allclose(predictions(jnp.float32(0.0))[0], uncond, atol=1e-5)
  np.testing.assert_allclose(
    predictions(jnp.float32(2.0))[0], uncond + 2.0 * (cond - uncond), atol=1e-4
  )


def count_scans(jaxpr) -> int:
  """`scan`s in a jaxpr, nested ones included."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name == "scan"
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
          count += count_scans(sub)
  return count


def test_long_form_dance_is_one_scan_with_cross_faded_overlaps(task, params):
  frames = 5 * SEQ_LEN // 2  # 2.5 windows -> 4 windows overlapping by half
  music = music_dance.make_music_dance("test", 1, seconds=3.0, sample_rate=10240)
  features = dance_data.audio_features(music["audio"][0, : int(2.5 * 10240)], 10240)
  assert features.shape == (frames, 35)
  windows = dance_data.split_windows(
    np.asarray(task.music_normalizer.normalize(features[None])), SEQ_LEN
  )
  assert windows.shape == (1, 4, SEQ_LEN, 35)
  rng = jax.random.PRNGKey(3)
  options = dict(num_steps=4, guidance_scale=jnp.float32(2.0))
  jaxpr = jax.make_jaxpr(lambda w, r: task.sample_windows(params, w, r, **options))(windows, rng)
  assert count_scans(jaxpr) == 1

  x = np.asarray(task.sample_windows(params, windows, rng, **options), np.float64)
  half = SEQ_LEN // 2
  assert not np.allclose(x[:, 1:, half:], x[:, :-1, half:])  # windows are not copies

  out = task.generate(params, dict(music=features[None]), rng, guidance_scale=2.0)
  assert out["joints"].shape == (1, frames, 22, 3)
  fade = ((np.arange(half) + 0.5) / half)[:, None]
  overlaps = [x[0, i - 1, half:] * (1 - fade) + x[0, i, :half] * fade for i in range(1, 4)]
  stitched = np.concatenate([x[0, 0, :half], *overlaps, x[0, 3, half:]])[:frames]
  np.testing.assert_allclose(out["pose"][0], task.pose_normalizer.denormalize(stitched), atol=1e-5)
  np.testing.assert_allclose(
    out["joints"], numpy_joints(task.pose_normalizer, stitched[None]), atol=1e-5
  )

  # Music that ends inside a window: the last window repeats the last frame, the dance is cropped.
  shorter = task.generate(params, dict(music=features[None, :47]), rng)["joints"]
  assert shorter.shape == (1, 47, 22, 3) and np.isfinite(shorter).all()

  # From audio: the same features, the same program, the same dance.
  joints = task.dance_from_music(params, music["audio"][0, : int(2.5 * 10240)], 10240, rng)
  np.testing.assert_allclose(joints, out["joints"][0], atol=1e-5)


def _overlap_sample(task, denoiser, n=3):
  plan = samplers.make_plan(
    task.schedule, "ddim", 3, eta=1.0, prediction_type="sample", timestep_spacing="trailing"
  )
  noise = jax.random.normal(jax.random.PRNGKey(0), (1, n, SEQ_LEN, 2))
  return np.asarray(overlapping_windows_sample(denoiser, plan, noise, jax.random.PRNGKey(1)))


def test_windows_are_held_to_their_predecessor_until_the_last_step(task):
  half = SEQ_LEN // 2
  # Predicting x0 = x_t keeps the state the last step starts from: constrained, so the
  # final windows agree exactly where they overlap, although eta = 1 noise differs per window.
  held = _overlap_sample(task, lambda x, t: x)
  np.testing.assert_array_equal(held[:, 1:, :half], held[:, :-1, half:])
  # A prediction that ignores x_t (window k predicts k) shows the last step is not
  # constrained: each window ends on its own prediction, first half included.
  own = lambda x, t: 0.25 * jnp.arange(x.shape[0], dtype=x.dtype)[:, None, None] + 0 * x
  ended = _overlap_sample(task, own)
  np.testing.assert_allclose(
    ended[0, :, :, 0], 0.25 * np.arange(3)[:, None] + np.zeros(SEQ_LEN), atol=1e-6
  )


def test_named_errors(task, params):
  rng = jax.random.PRNGKey(0)
  audio = np.zeros(10240, np.float32)
  with pytest.raises(
    DanceMusicError, match=r"audio: expected at least 1 s of music .* found 0.500 s"
  ):
    task.dance_from_music(params, audio[:5120], 10240, rng)
  with pytest.raises(DanceMusicError, match="sr: expected an int sample rate of at least 10240"):
    task.dance_from_music(params, audio, 8000, rng)
  with pytest.raises(DanceMusicError, match="audio: expected a mono waveform"):
    task.dance_from_music(params, np.zeros((2, 20480)), 10240, rng)
  with pytest.raises(DanceMusicError, match=r"expected at least 20 frames .* found 12"):
    task.generate(params, dict(music=np.zeros((1, 12, 35))), rng)
  with pytest.raises(DanceMusicError, match=r"conditions\['music'\]: expected finite EDGE"):
    task.generate(params, dict(music=np.zeros((1, 40, 20))), rng)
  with pytest.raises(SamplingOptionError, match="num_steps"):
    task.check_options(dict(num_steps=0))
  with pytest.raises(ValueError, match=r"batch\['pose'\]: expected \(B, 20, 70\)"):
    task.check_batch(dict(pose=np.zeros((2, 20, 69)), music=np.zeros((2, 20, 35))))
  with pytest.raises(ValueError, match="data.window_stride: expected a positive number"):
    dance_data.training_windows(task._train_clips, SEQ_LEN, 0)
  with pytest.raises(ValueError, match="data.seq_len: expected an even number"):
    EDGETask(tiny_config("data.seq_len=21"))
