"""Motion VQ-VAE: shapes, padding exactness, EMA codebook math, dead-code reset, the task loss."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxgen.configs import t2m_vq_synthetic
from jaxgen.models import vq
from jaxgen.tasks.motion import t2m_vq
from jaxgen.training.task import STATE_UPDATES_KEY
from jaxgen.training.train_state import replace_leaves

TINY = vq.VQVAEConfig(
  input_dim=263,
  width=16,
  output_emb_width=8,
  down_t=2,
  depth=2,
  dilation_growth_rate=3,
  num_codes=6,
  mu=0.9,
)


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


@pytest.fixture(scope="module")
def tiny_model():
  model = vq.MotionVQVAE(TINY)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((2, 16, 263))))[
    "params"
  ]
  return model, params


def test_round_trip_shapes(tiny_model):
  model, params = tiny_model
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 24, 263))
  z = model.apply({"params": params}, x, method=vq.MotionVQVAE.encode)
  assert z.shape == (3, 6, TINY.output_emb_width)
  codes = vq.quantize(z, jax.random.normal(jax.random.PRNGKey(2), (TINY.num_codes, 8)))
  assert codes.shape == (3, 6) and codes.dtype == jnp.int32
  assert model.apply({"params": params}, z, method=vq.MotionVQVAE.decode).shape == x.shape


def test_padded_batch_equals_each_clip_at_its_own_length(tiny_model):
  model, params = tiny_model
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 24, 263))
  mask = jnp.arange(24)[None] < jnp.array([[24], [12]])
  z = model.apply({"params": params}, x, mask, method=vq.MotionVQVAE.encode)
  alone = model.apply({"params": params}, x[1:, :12], method=vq.MotionVQVAE.encode)
  np.testing.assert_allclose(z[1, :3], alone[0], atol=1e-5)
  np.testing.assert_array_equal(z[1, 3:], 0.0)
  out = model.apply({"params": params}, z, mask, method=vq.MotionVQVAE.decode)
  out_alone = model.apply({"params": params}, alone, method=vq.MotionVQVAE.decode)
  np.testing.assert_allclose(out[1, :12], out_alone[0], atol=1e-5)
  np.testing.assert_array_equal(out[1, 12:], 0.0)


def test_quantize_picks_nearest_row():
  codebook = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
  z = jnp.array([[0.9, 0.1], [0.1, 1.5], [-0.2, 0.1]])
  np.testing.assert_array_equal(vq.quantize(z, codebook), [1, 2, 0])
  np.testing.assert_array_equal(
    vq.dequantize(jnp.array([2, 0]), codebook), codebook[jnp.array([2, 0])]
  )


def test_ema_update_math():
  mu = 0.9
  state = vq.QuantizerState(
    codebook=jnp.zeros((3, 2)),
    code_sum=jnp.array([[2.0, 2.0], [4.0, 0.0], [1.0, 1.0]]),
    code_count=jnp.array([2.0, 4.0, 1.5]),
    initialized=jnp.ones(()),
  )
  x = jnp.array([[1.0, 3.0], [3.0, 1.0], [0.0, 0.0], [5.0, 5.0]])
  codes = jnp.array([0, 0, 1, 2])
  new = vq.ema_reset_update(state, x, codes, jax.random.PRNGKey(0), mu)
  sums = np.array([[4.0, 4.0], [0.0, 0.0], [5.0, 5.0]])
  counts = np.array([2.0, 1.0, 1.0])
  expected_sum = mu * np.asarray(state.code_sum) + (1 - mu) * sums
  expected_count = mu * np.asarray(state.code_count) + (1 - mu) * counts
  np.testing.assert_allclose(new.code_sum, expected_sum, rtol=1e-6)
  np.testing.assert_allclose(new.code_count, expected_count, rtol=1e-6)
  # Every count is still >= 1, so each row is its EMA cluster mean.
  np.testing.assert_allclose(new.codebook, expected_sum / expected_count[:, None], rtol=1e-6)


def test_dead_codes_are_reset_to_batch_vectors():
  state = vq.QuantizerState(
    codebook=jnp.full((3, 2), 7.0),
    code_sum=jnp.ones((3, 2)),
    code_count=jnp.array([5.0, 1.05, 1.05]),
    initialized=jnp.ones(()),
  )
  x = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.5, 8.5]])
  codes = jnp.zeros((4,), jnp.int32)  # codes 1 and 2 unused: counts fall to 0.945 < 1
  new = vq.ema_reset_update(state, x, codes, jax.random.PRNGKey(1), 0.9)
  assert np.asarray(new.code_count)[1:].max() < 1.0
  rows = {tuple(r) for r in np.asarray(x).tolist()}
  assert all(tuple(r) in rows for r in np.asarray(new.codebook)[1:].tolist())
  np.testing.assert_allclose(new.codebook[0], new.code_sum[0] / new.code_count[0], rtol=1e-6)


def test_first_batch_initialises_the_codebook():
  zeros = vq.QuantizerState(jnp.zeros((6, 2)), jnp.zeros((6, 2)), jnp.zeros(6), jnp.zeros(()))
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 2))
  init = vq.initialized_codebook(zeros, x, jax.random.PRNGKey(3))
  assert float(init.initialized) == 1.0
  np.testing.assert_array_equal(init.code_count, 1.0)
  np.testing.assert_array_equal(init.code_sum, init.codebook)
  # 4 vectors tiled to 6 rows with N(0, (0.01/sqrt(2))^2) noise: each row is near a batch vector.
  distance = np.abs(np.asarray(init.codebook)[:, None] - np.asarray(x)[None]).max(-1).min(-1)
  assert distance.max() < 0.05
  again = vq.initialized_codebook(
    init._replace(codebook=init.codebook + 1), x, jax.random.PRNGKey(4)
  )
  np.testing.assert_array_equal(again.codebook, init.codebook + 1)  # only once


def test_perplexity():
  assert abs(float(vq.perplexity(jnp.array([0, 1, 2, 3]), 8)) - 4.0) < 1e-4
  assert abs(float(vq.perplexity(jnp.array([5, 5, 5]), 8)) - 1.0) < 1e-4


def test_faithful_parameter_count():
  """Mael-zys/T2M-GPT Encoder/Decoder(263, 512, down_t=2, stride_t=2, width=512, depth=3,
  dilation_growth_rate=3): 9,587,200 + 9,849,607 parameters; the 512×512 codebook is a
  buffer there (here a params leaf with its EMA statistics)."""
  config = vq.VQVAEConfig(input_dim=263, **t2m_vq_synthetic.vq_faithful())
  shapes = jax.eval_shape(
    vq.MotionVQVAE(config).init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 263))
  )
  params = nn.meta.unbox(shapes)["params"]
  assert count_params(params["encoder"]) == 9_587_200
  assert count_params(params["decoder"]) == 9_849_607
  assert params["quantizer"]["codebook"].shape == (512, 512)


def _tiny_task_config(codebook_update: str) -> ml_collections.ConfigDict:
  config = t2m_vq_synthetic.get_config()
  config.vq = dict(
    width=16, output_emb_width=8, down_t=2, depth=1, dilation_growth_rate=3, num_codes=6, mu=0.9
  )
  config.loss.window = 16
  config.quantizer.codebook_update = codebook_update
  return config


def _random_batch(batch=4, frames=48):
  """Shorter than real batches (196 frames): the loss only needs frames >= the window."""
  rng = np.random.default_rng(0)
  lengths = np.array([48, 16, 24, 40][:batch])
  mask = np.arange(frames)[None] < lengths[:, None]
  return dict(
    motion=jnp.asarray(rng.normal(size=(batch, frames, 263)).astype(np.float32) * mask[..., None]),
    motion_mask=jnp.asarray(mask),
    text_tokens=jnp.zeros((batch, 24), jnp.int32),
    text_mask=jnp.ones((batch, 24), bool),
  )


def test_ema_task_returns_state_updates_the_trainer_applies():
  task = t2m_vq.MotionVQTask(_tiny_task_config("ema_reset"))
  batch = _random_batch()
  params = nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0), batch))
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, rng):
    (loss, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, rng)
    updates = metrics.pop(STATE_UPDATES_KEY)
    changes, opt_state = tx.update(grads, opt_state)
    new_params = optax.apply_updates(params, changes)
    return replace_leaves(new_params, updates), opt_state, loss, metrics, grads

  new, opt_state, loss, metrics, grads = step(params, opt_state, jax.random.PRNGKey(1))
  # The codebook gets no gradient; its new value is the EMA statistics' (initialised from the batch).
  assert float(jnp.abs(grads["quantizer"]["codebook"]).max()) == 0.0
  assert float(new["quantizer"]["initialized"]) == 1.0
  q = new["quantizer"]
  means = q["code_sum"] / q["code_count"][:, None]
  used = np.asarray(q["code_count"]) >= 1
  np.testing.assert_allclose(np.asarray(q["codebook"])[used], np.asarray(means)[used], rtol=1e-5)
  assert set(metrics) >= {"recons", "velocity", "commit", "perplexity"}
  assert np.isfinite(float(loss))


def test_codebook_loss_option_trains_the_codebook_by_gradient():
  task = t2m_vq.MotionVQTask(_tiny_task_config("codebook_loss"))
  batch = _random_batch()
  params = nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0), batch))
  assert set(params["quantizer"]) == {"codebook"}
  (_, metrics), grads = jax.jit(jax.value_and_grad(task.loss, has_aux=True))(
    params, batch, jax.random.PRNGKey(1)
  )
  assert float(jnp.abs(grads["quantizer"]["codebook"]).max()) > 0
  assert "codebook" in metrics and STATE_UPDATES_KEY not in metrics


def test_random_windows_stay_inside_each_clip():
  motion = jnp.broadcast_to(jnp.arange(40, dtype=jnp.float32)[None, :, None], (3, 40, 1))
  windows = t2m_vq.random_windows(jax.random.PRNGKey(0), motion, jnp.array([40, 20, 8]), 8)
  starts = np.asarray(windows[:, 0, 0])
  assert starts[0] <= 32 and starts[1] <= 12 and starts[2] == 0
  np.testing.assert_array_equal(np.diff(np.asarray(windows[..., 0]), axis=1), 1.0)


def test_named_errors():
  config = _tiny_task_config("codebook_loss")
  config.quantizer.codebook_update = "kmeans"
  with pytest.raises(ValueError, match="quantizer.codebook_update: expected one of"):
    t2m_vq.MotionVQTask(config)
  config = _tiny_task_config("codebook_loss")
  config.loss.window = 18
  with pytest.raises(ValueError, match="loss.window: expected a multiple of 4"):
    t2m_vq.MotionVQTask(config)
  with pytest.raises(ValueError, match="state update names no parameter 'b'"):
    replace_leaves({"a": 1}, {"b": 2})
