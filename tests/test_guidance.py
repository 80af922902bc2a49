"""Classifier-free guidance and conditioning dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.diffusion import classifier_free_guidance, drop_condition, make_schedule, sample

BATCH = 3


def conditional_model(x, t, cond):
  """A model whose output depends on every leaf of a pytree condition."""
  shift = jnp.sum(cond["text"], axis=(1, 2)) * jnp.sum(cond["mask"], axis=1) / 10.0
  return 0.5 * x + (shift + 0.001 * t)[:, None, None, None]


def _inputs():
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (BATCH, 4, 4, 2))
  t = jnp.array([999, 500, 1])
  cond = {"text": jax.random.normal(keys[1], (BATCH, 5, 8)), "mask": jnp.ones((BATCH, 5))}
  uncond = {
    "text": jnp.zeros((1, 5, 8)),
    "mask": jnp.ones((5,)),
  }  # batch 1 / no batch axis broadcast
  return x, t, cond, uncond


def test_guidance_is_one_batched_forward_and_equals_manual_combination():
  x, t, cond, uncond = _inputs()
  calls = []

  def counting_model(x, t, c):
    calls.append((x.shape[0], t.shape, jax.tree.map(jnp.shape, c)))
    return conditional_model(x, t, c)

  scale = 7.5
  guided = classifier_free_guidance(counting_model, cond, uncond, scale)
  out = jax.jit(guided)(x, t)
  assert len(calls) == 1
  assert calls[0][0] == 2 * BATCH and calls[0][1] == (2 * BATCH,)
  assert calls[0][2] == {"text": (2 * BATCH, 5, 8), "mask": (2 * BATCH, 5)}
  full_uncond = {"text": jnp.zeros((BATCH, 5, 8)), "mask": jnp.ones((BATCH, 5))}
  eps_cond = conditional_model(x, t, cond)
  eps_uncond = conditional_model(x, t, full_uncond)
  np.testing.assert_allclose(
    out, eps_uncond + scale * (eps_cond - eps_uncond), rtol=1e-5, atol=1e-5
  )


def test_guidance_scales_zero_and_one():
  x, t, cond, uncond = _inputs()
  batches = []

  def recording_model(x, t, c):
    batches.append(x.shape[0])
    return conditional_model(x, t, c)

  np.testing.assert_allclose(
    classifier_free_guidance(recording_model, cond, uncond, 1.0)(x, t),
    conditional_model(x, t, cond),
    rtol=1e-6,
  )
  assert batches == [BATCH]  # the unconditional branch is skipped
  full_uncond = {"text": jnp.zeros((BATCH, 5, 8)), "mask": jnp.ones((BATCH, 5))}
  np.testing.assert_allclose(
    classifier_free_guidance(conditional_model, cond, uncond, 0.0)(x, t),
    conditional_model(x, t, full_uncond),
    rtol=1e-5,
    atol=1e-6,
  )


def test_traced_guidance_scale():
  x, t, cond, uncond = _inputs()
  fn = jax.jit(lambda s: classifier_free_guidance(conditional_model, cond, uncond, s)(x, t))
  np.testing.assert_allclose(fn(1.0), conditional_model(x, t, cond), rtol=1e-5, atol=1e-5)


def test_guidance_inside_a_sampler_keeps_one_model_call_per_step():
  x, _, cond, uncond = _inputs()
  batches = []

  def recording_model(x, t, c):
    batches.append(x.shape[0])
    return 0.1 * conditional_model(x, t, c)

  guided = classifier_free_guidance(recording_model, cond, uncond, 3.0)
  result = jax.jit(
    lambda x: sample(guided, make_schedule("linear"), x, sampler="ddim", num_steps=4)
  )(x)
  assert batches == [2 * BATCH] and result.shape == x.shape and np.all(np.isfinite(result))


def test_guidance_errors():
  x, t, cond, uncond = _inputs()
  with pytest.raises(ValueError, match="guidance_scale"):
    classifier_free_guidance(conditional_model, cond, uncond, -0.5)
  with pytest.raises(ValueError, match="uncond"):
    classifier_free_guidance(conditional_model, cond, {"text": uncond["text"]}, 2.0)
  with pytest.raises(ValueError, match="uncond"):
    classifier_free_guidance(
      conditional_model, cond, {"text": jnp.zeros((2, 5, 8)), "mask": uncond["mask"]}, 2.0
    )
  guided = classifier_free_guidance(conditional_model, cond, uncond, 2.0)
  with pytest.raises(ValueError, match="batch"):
    guided(x[:2], t[:2])


def test_drop_condition_rate_pytree_and_determinism():
  batch, p = 20000, 0.2
  cond = {"emb": jnp.ones((batch, 2, 3)), "label": jnp.arange(1, batch + 1)}
  null = {"emb": jnp.zeros((2, 3)), "label": jnp.zeros((1,), jnp.int32)}
  rng = jax.random.key(4)
  dropped = jax.jit(lambda key: drop_condition(key, cond, null, p))(rng)
  emb_dropped = np.asarray(jnp.all(dropped["emb"] == 0, axis=(1, 2)))
  label_dropped = np.asarray(dropped["label"] == 0)
  # Whole examples are dropped: every leaf together, never partially.
  np.testing.assert_array_equal(emb_dropped, label_dropped)
  assert np.all(np.asarray(dropped["emb"])[~emb_dropped] == 1)
  np.testing.assert_array_equal(
    np.asarray(dropped["label"])[~label_dropped], np.arange(1, batch + 1)[~label_dropped]
  )
  # Binomial(20000, 0.2): std of the rate is 0.0028; allow 5 sigma.
  assert abs(emb_dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / batch)
  again = drop_condition(rng, cond, null, p)
  jax.tree.map(np.testing.assert_array_equal, again, dropped)
  other = drop_condition(jax.random.key(5), cond, null, p)
  assert not np.array_equal(other["label"], dropped["label"])
  assert np.all(
    np.asarray(drop_condition(rng, cond, null, 0.0)["label"]) == np.arange(1, batch + 1)
  )
  assert np.all(np.asarray(drop_condition(rng, cond, null, 1.0)["label"]) == 0)


def test_drop_condition_errors():
  cond = {"emb": jnp.ones((4, 3))}
  with pytest.raises(ValueError, match="p"):
    drop_condition(jax.random.key(0), cond, {"emb": jnp.zeros((3,))}, 1.5)
  with pytest.raises(ValueError, match="null_cond"):
    drop_condition(jax.random.key(0), cond, {"emb": jnp.zeros((2, 3))}, 0.1)
  with pytest.raises(ValueError, match="null_cond"):
    drop_condition(jax.random.key(0), cond, {"other": jnp.zeros((3,))}, 0.1)
