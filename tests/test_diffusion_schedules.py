"""Schedules, forward process, prediction conversions and the training loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.diffusion import gaussian, make_schedule, schedules

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

KINDS = [
  ("linear", {}),
  ("linear", {"beta_start": 0.0002, "beta_end": 0.03}),
  ("scaled_linear", {"beta_start": 0.00085, "beta_end": 0.012}),
  ("squaredcos_cap_v2", {}),
]


@pytest.mark.parametrize("kind, kwargs", KINDS)
@pytest.mark.parametrize("num_train_timesteps", [1000, 250])
def test_schedule_matches_diffusers(kind, kwargs, num_train_timesteps):
  schedule = make_schedule(kind, num_train_timesteps, **kwargs)
  reference = diffusers.DDPMScheduler(
    num_train_timesteps=num_train_timesteps, beta_schedule=kind, **kwargs
  )
  assert schedule.num_train_timesteps == num_train_timesteps
  for field in ("betas", "alphas", "alphas_cumprod"):
    ours = getattr(schedule, field)
    assert ours.dtype == jnp.float32 and ours.shape == (num_train_timesteps,)
    # diffusers accumulates in float32; ours in float64 then casts.
    np.testing.assert_allclose(
      ours, getattr(reference, field).numpy(), rtol=2e-6, atol=0, err_msg=field
    )
  np.testing.assert_allclose(schedule.sqrt_alphas_cumprod**2, schedule.alphas_cumprod, rtol=1e-6)
  np.testing.assert_allclose(
    schedule.sqrt_one_minus_alphas_cumprod**2 + schedule.alphas_cumprod, 1.0, rtol=1e-6
  )


def test_cosine_alias_and_betas_are_float64_formulas():
  np.testing.assert_array_equal(
    make_schedule("cosine").betas, make_schedule("squaredcos_cap_v2").betas
  )
  betas = schedules.make_betas("squaredcos_cap_v2", 1000)
  assert betas.dtype == np.float64 and betas.max() == pytest.approx(0.999)


def test_schedule_is_a_pytree_that_jits():
  schedule = make_schedule("linear", 100)
  leaves = jax.tree.leaves(schedule)
  assert len(leaves) == 5
  snr_5 = jax.jit(lambda s: gaussian.snr(s, jnp.array([5])))(schedule)
  np.testing.assert_allclose(
    snr_5, schedule.alphas_cumprod[5] / (1 - schedule.alphas_cumprod[5]), rtol=1e-6
  )


@pytest.mark.parametrize(
  "args, kwargs, match",
  [
    (("sigmoid",), {}, "kind"),
    (("linear", 0), {}, "num_train_timesteps"),
    (("linear", 10.0), {}, "num_train_timesteps"),
    (("linear",), {"beta_start": 0.0}, "beta_start"),
    (("linear",), {"beta_start": 0.1, "beta_end": 0.01}, "beta_end"),
    (("scaled_linear",), {"beta_end": 1.5}, "beta_end"),
    (("squaredcos_cap_v2",), {"beta_start": 0.001}, "beta_start"),
  ],
)
def test_bad_schedule_arguments(args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    make_schedule(*args, **kwargs)


def test_schedule_from_betas_validates():
  with pytest.raises(ValueError, match="betas"):
    schedules.schedule_from_betas(np.array([0.1, 1.2]))


# ---------------------------------------------------------------------------
# Forward process and prediction types.
# ---------------------------------------------------------------------------


def _batch(seed=0, shape=(4, 5, 5, 3)):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  x0 = jax.random.normal(k1, shape)
  noise = jax.random.normal(k2, shape)
  t = jax.random.randint(k3, (shape[0],), 0, 1000)
  return x0, noise, t


def test_q_sample_and_velocity_match_diffusers():
  schedule = make_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
  reference = diffusers.DDPMScheduler(
    beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
  )
  x0, noise, t = _batch()
  to_torch = lambda a: torch.from_numpy(np.array(a))
  np.testing.assert_allclose(
    gaussian.q_sample(schedule, x0, t, noise),
    reference.add_noise(to_torch(x0), to_torch(noise), to_torch(t)).numpy(),
    rtol=1e-5,
    atol=1e-6,
  )
  np.testing.assert_allclose(
    gaussian.training_target("v_prediction", x0, noise, schedule, t),
    reference.get_velocity(to_torch(x0), to_torch(noise), to_torch(t)).numpy(),
    rtol=1e-5,
    atol=1e-6,
  )
  np.testing.assert_array_equal(gaussian.training_target("epsilon", x0, noise, schedule, t), noise)
  np.testing.assert_array_equal(gaussian.training_target("sample", x0, noise, schedule, t), x0)


@pytest.mark.parametrize("source", gaussian.PREDICTION_TYPES)
@pytest.mark.parametrize("target", gaussian.PREDICTION_TYPES)
def test_prediction_conversions_are_consistent(source, target):
  schedule = make_schedule("linear")
  x0, noise, _ = _batch(1)
  # Avoid the extremes, where x0 <-> eps conversions divide by ~0.
  t = jnp.array([10, 300, 600, 900])
  x_t = gaussian.q_sample(schedule, x0, t, noise)
  truths = {
    p: gaussian.training_target(p, x0, noise, schedule, t) for p in gaussian.PREDICTION_TYPES
  }
  converted = gaussian.convert_prediction(truths[source], x_t, schedule, t, source, target)
  np.testing.assert_allclose(converted, truths[target], rtol=1e-5, atol=1e-5)
  back = gaussian.convert_prediction(converted, x_t, schedule, t, target, source)
  np.testing.assert_allclose(back, truths[source], rtol=1e-5, atol=1e-5)


def test_eps_x0_eps_round_trip_is_tight():
  schedule = make_schedule("linear")
  x0, noise, t = _batch(2)
  x_t = gaussian.q_sample(schedule, x0, t, noise)
  x0_hat = gaussian.convert_prediction(noise, x_t, schedule, t, "epsilon", "sample")
  eps_hat = gaussian.convert_prediction(x0_hat, x_t, schedule, t, "sample", "epsilon")
  alpha = np.asarray(schedule.sqrt_alphas_cumprod)[np.asarray(t)]
  # x0 = (x_t - sigma eps) / alpha amplifies rounding by 1 / alpha.
  np.testing.assert_allclose(eps_hat, noise, atol=1e-5 / alpha.min())


def test_snr_and_min_snr_weights_match_the_formula():
  schedule = make_schedule("squaredcos_cap_v2")
  t = jnp.arange(0, 1000, 37)
  abar = np.asarray(schedule.alphas_cumprod, np.float64)[np.asarray(t)]
  snr = abar / (1 - abar)
  np.testing.assert_allclose(gaussian.snr(schedule, t), snr, rtol=1e-5)
  gamma = 5.0
  expected = {
    "epsilon": np.minimum(snr, gamma) / snr,
    "sample": np.minimum(snr, gamma),
    "v_prediction": np.minimum(snr, gamma) / (snr + 1),
  }
  for prediction_type, weight in expected.items():
    np.testing.assert_allclose(
      gaussian.min_snr_weight(schedule, t, gamma, prediction_type),
      weight,
      rtol=1e-5,
      err_msg=prediction_type,
    )
  # Low-noise (high-SNR) steps are down-weighted, noisy ones keep weight 1 for epsilon.
  eps_weight = np.asarray(gaussian.min_snr_weight(schedule, t, gamma, "epsilon"))
  assert eps_weight[0] < 0.01 and eps_weight[-1] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="gamma"):
    gaussian.min_snr_weight(schedule, t, 0.0, "epsilon")


def test_sample_timesteps_cover_the_range():
  t = gaussian.sample_timesteps(jax.random.key(0), 20000, 1000)
  assert t.dtype == jnp.int32 and t.shape == (20000,)
  assert int(t.min()) == 0 and int(t.max()) == 999
  assert abs(float(t.mean()) - 499.5) < 10


def test_logit_normal_timesteps_follow_the_sigmoid_of_a_normal():
  mean, std = 0.5, 1.0
  t = np.asarray(
    gaussian.sample_timesteps(jax.random.key(0), 20000, 1000, "logit_normal", mean, std)
  )
  assert t.dtype == np.int32 and 0 <= t.min() and t.max() <= 999
  # Median sigmoid(mean) * T; quartiles sigmoid(mean -/+ 0.674 std) * T.
  sigmoid = lambda v: 1 / (1 + np.exp(-v))
  expected = [sigmoid(mean + q * std) * 1000 for q in (-0.6745, 0.0, 0.6745)]
  np.testing.assert_allclose(np.percentile(t, [25, 50, 75]), expected, atol=8)
  with pytest.raises(ValueError, match="distribution"):
    gaussian.sample_timesteps(jax.random.key(0), 4, 1000, "beta")
  with pytest.raises(ValueError, match="std"):
    gaussian.sample_timesteps(jax.random.key(0), 4, 1000, "logit_normal", 0.0, 0.0)


# ---------------------------------------------------------------------------
# The loss.
# ---------------------------------------------------------------------------


def _reference_draws(rng, x0, schedule):
  """The draws `diffusion_loss` documents: split rng into (timestep key, noise key)."""
  t_rng, noise_rng = jax.random.split(rng)
  t = gaussian.sample_timesteps(t_rng, x0.shape[0], schedule.num_train_timesteps)
  noise = jax.random.normal(noise_rng, x0.shape)
  return t, noise


@pytest.mark.parametrize("prediction_type", gaussian.PREDICTION_TYPES)
@pytest.mark.parametrize("gamma", [None, 5.0])
def test_diffusion_loss_equals_manual_computation(prediction_type, gamma):
  schedule = make_schedule("linear")
  x0, _, _ = _batch(3)
  rng = jax.random.key(11)
  model_fn = lambda x, t: 0.3 * x + 0.001 * t[:, None, None, None]
  loss, aux = jax.jit(
    lambda x, key: gaussian.diffusion_loss(
      model_fn, x, key, schedule, prediction_type, min_snr_gamma=gamma
    )
  )(x0, rng)
  t, noise = _reference_draws(rng, x0, schedule)
  x_t = gaussian.q_sample(schedule, x0, t, noise)
  target = gaussian.training_target(prediction_type, x0, noise, schedule, t)
  per_example = np.mean((np.asarray(model_fn(x_t, t)) - np.asarray(target)) ** 2, axis=(1, 2, 3))
  weight = (
    np.ones(4)
    if gamma is None
    else np.asarray(gaussian.min_snr_weight(schedule, t, gamma, prediction_type))
  )
  np.testing.assert_allclose(loss, np.mean(weight * per_example), rtol=1e-5)
  np.testing.assert_allclose(aux["mse"], per_example.mean(), rtol=1e-5)
  np.testing.assert_array_equal(aux["t"], t)


def test_diffusion_loss_is_zero_for_the_oracle_and_respects_the_mask():
  schedule = make_schedule("linear")
  x0 = jax.random.normal(jax.random.key(0), (3, 7, 4))  # NTC
  rng = jax.random.key(1)
  t, noise = _reference_draws(rng, x0, schedule)
  lengths = np.array([7, 3, 5])
  mask = jnp.asarray(np.arange(7)[None, :] < lengths[:, None])
  # Correct on valid frames, arbitrary garbage on padded ones.
  garbage = 100.0 * (1.0 - mask[..., None])

  def oracle(x_t, t_in):
    np.testing.assert_array_equal(t_in, t)
    return noise + garbage

  loss, aux = gaussian.diffusion_loss(oracle, x0, rng, schedule, "epsilon", mask=mask)
  assert float(loss) < 1e-10
  unmasked, _ = gaussian.diffusion_loss(oracle, x0, rng, schedule, "epsilon")
  assert float(unmasked) > 1.0
  with pytest.raises(ValueError, match="mask"):
    gaussian.diffusion_loss(oracle, x0, rng, schedule, "epsilon", mask=jnp.ones((3, 6)))
  with pytest.raises(ValueError, match="prediction_type"):
    gaussian.diffusion_loss(oracle, x0, rng, schedule, "eps")


def test_diffusion_loss_has_gradients():
  schedule = make_schedule("linear", 100)
  x0 = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))

  def loss_fn(scale):
    return gaussian.diffusion_loss(
      lambda x, t: scale * x, x0, jax.random.key(2), schedule, "v_prediction"
    )[0]

  grad = jax.grad(loss_fn)(0.5)
  assert np.isfinite(grad) and grad != 0
