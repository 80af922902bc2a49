"""VQ-Diffusion: schedule, q(x_t|x_0), posterior and truncation against diffusers; loss, one-scan
sampler, the transformer against diffusers' discrete `Transformer2DModel`, faithful count, overfit."""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from diffusers import Transformer2DModel, VQDiffusionScheduler
from diffusers.pipelines.deprecated.vq_diffusion.pipeline_vq_diffusion import VQDiffusionPipeline

from jaxgen.configs.arch import vq_diffusion_coco
from jaxgen.diffusion import discrete
from jaxgen.models.vq_diffusion import (
  VQDiffusion,
  VQDiffusionConfig,
  VQDiffusionInputError,
  VQDiffusionTransformer,
  x0_logits_fn,
)
from jaxgen.nn.partitioning import unannotated_params

K, T = 7, 100
# Compiled once each: op-by-op dispatch of these many small ops costs seconds per test.
q_posterior = jax.jit(discrete.q_posterior)
q_sample = jax.jit(discrete.q_sample, static_argnums=4)
loss_terms = jax.jit(discrete.loss_terms)
sample_timesteps = jax.jit(discrete.sample_timesteps, static_argnums=(1, 2))


def count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nn.meta.unbox(tree)))


def scan_count(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    total += eqn.primitive.name == "scan"
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      total += scan_count(sub)
  return total


def transition_matrices(schedule_probs, t: int, num_codes: int):
  """Dense (K+1)×(K+1) matrices Q_t[i, j] = q(x_t = j | x_{t-1} = i) and the cumulative one."""

  def matrix(a, b, c):
    q = np.full((num_codes + 1, num_codes + 1), b)
    q[np.arange(num_codes), np.arange(num_codes)] = a + b
    q[:, -1] = c
    q[-1] = 0.0
    q[-1, -1] = 1.0
    return q

  p = schedule_probs
  return matrix(p["at"][t], p["bt"][t], p["ct"][t]), matrix(p["att"][t], p["btt"][t], p["ctt"][t])


# ---------------------------------------------------------------------------
# Schedule and forward process
# ---------------------------------------------------------------------------


def test_schedule_matches_reference_formulas_and_diffusers():
  schedule = discrete.mask_schedule(K, T)
  reference = VQDiffusionScheduler(num_vec_classes=K + 1, num_train_timesteps=T)
  for name in ("log_at", "log_bt", "log_ct", "log_cumprod_at", "log_cumprod_bt", "log_cumprod_ct"):
    ours, theirs = np.asarray(getattr(schedule, name)), getattr(reference, name).numpy()
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs), err_msg=name)
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=0, atol=1e-6, err_msg=name)
  p = discrete.schedule_probabilities(K, T)
  # Cumulative ᾱ and γ̄ are linear in t; the per-step factors multiply back to them.
  np.testing.assert_allclose(p["att"][:T], np.linspace(0.99999, 0.000009, T), atol=1e-12)
  np.testing.assert_allclose(p["ctt"][:T], np.linspace(0.000009, 0.99999, T), atol=1e-12)
  np.testing.assert_allclose(np.cumprod(p["at"]), p["att"][:T], rtol=1e-9)
  np.testing.assert_allclose(np.cumprod(1 - p["ct"]), 1 - p["ctt"][:T], rtol=1e-9)
  np.testing.assert_allclose(p["at"] + K * p["bt"] + p["ct"], 1.0, atol=1e-12)
  assert (p["att"][T], p["btt"][T], p["ctt"][T]) == (1.0, 0.0, 0.0)  # index −1: the identity
  with pytest.raises(discrete.MaskScheduleError, match="num_codes"):
    discrete.mask_schedule(1, T)


def test_q_rows_are_distributions_and_compose_over_steps():
  schedule, p = discrete.mask_schedule(K, T), discrete.schedule_probabilities(K, T)
  tokens = jnp.arange(K + 1)[None]  # every code and the mask
  for t in (0, 1, 37, 98, 99):
    log_q = discrete.q_probs(schedule, tokens, jnp.array([t]), K)[0]
    np.testing.assert_allclose(np.exp(log_q).sum(-1), 1.0, atol=1e-5)
    step, cumulative = transition_matrices(p, t, K)
    np.testing.assert_allclose(np.exp(log_q), cumulative, atol=1e-6)  # mask stays mask
    if t:
      _, previous = transition_matrices(p, t - 1, K)
      np.testing.assert_allclose(previous @ step, cumulative, atol=1e-9)
      one_step = discrete.q_pred_one_timestep(
        schedule, discrete.index_to_log_onehot(tokens, K + 1), jnp.array([t])
      )[0]
      np.testing.assert_allclose(np.exp(one_step)[:-1], step[:-1], atol=1e-6)  # mask row: unused


def test_last_step_masks_nearly_everything_and_the_first_almost_nothing():
  schedule = discrete.mask_schedule(K, T)
  x0 = jax.random.randint(jax.random.key(0), (4, 1024), 0, K)
  last = q_sample(schedule, x0, jnp.full((4,), T - 1), jax.random.key(1), K)
  first = q_sample(schedule, x0, jnp.zeros((4,), int), jax.random.key(2), K)
  assert float(jnp.mean(last == K)) > 0.999
  assert float(jnp.mean(first == x0)) > 0.999


# ---------------------------------------------------------------------------
# Posterior, truncation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 2, 30, 99])
def test_posterior_matches_diffusers_scheduler(t):
  schedule = discrete.mask_schedule(K, T)
  reference = VQDiffusionScheduler(num_vec_classes=K + 1, num_train_timesteps=T)
  rng = np.random.default_rng(t)
  log_p = np.asarray(jax.nn.log_softmax(3 * rng.normal(size=(3, 20, K)).astype(np.float32), -1))
  x_t = rng.integers(0, K + 1, size=(3, 20))
  ours = q_posterior(
    schedule, discrete.x0_log_probs(jnp.asarray(log_p)), jnp.asarray(x_t), jnp.full((3,), t)
  )
  theirs = reference.q_posterior(torch.tensor(log_p).permute(0, 2, 1), torch.tensor(x_t), t)
  theirs = theirs.permute(0, 2, 1).clamp(min=discrete.LOG_ZERO).numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=1e-4)
  np.testing.assert_allclose(np.exp(np.asarray(ours)).sum(-1), 1.0, atol=1e-5)


def test_posterior_of_a_known_x0_is_bayes_rule():
  schedule, p = discrete.mask_schedule(K, T), discrete.schedule_probabilities(K, T)
  t = 40
  step, _ = transition_matrices(p, t, K)
  _, before = transition_matrices(p, t - 1, K)
  x0 = np.array([[3, 3, 5]])
  x_t = np.array([[3, K, 1]])  # kept, masked, replaced
  ours = np.exp(
    np.asarray(
      q_posterior(
        schedule,
        discrete.index_to_log_onehot(jnp.asarray(x0), K + 1),
        jnp.asarray(x_t),
        jnp.array([t]),
      )
    )
  )[0]
  for n in range(3):
    joint = before[x0[0, n]] * step[:, x_t[0, n]]  # q(x_{t-1} | x0) q(x_t | x_{t-1})
    np.testing.assert_allclose(ours[n], joint / joint.sum(), atol=1e-5)


def test_truncation_matches_diffusers_pipeline():
  log_p = jax.nn.log_softmax(2 * jax.random.normal(jax.random.key(3), (2, 9, K)), -1)
  ours = discrete.truncate(log_p, 0.85)
  theirs = VQDiffusionPipeline.truncate(
    None, torch.tensor(np.asarray(log_p)).permute(0, 2, 1), 0.85
  )
  theirs = theirs.clamp(min=discrete.LOG_ZERO).permute(0, 2, 1).numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-6)
  kept = np.asarray(ours) > discrete.LOG_ZERO
  assert kept.any(-1).all() and not kept.all()


# ---------------------------------------------------------------------------
# Loss and importance sampling
# ---------------------------------------------------------------------------


def test_perfect_x0_predictor_has_near_zero_loss_and_a_wrong_one_does_not():
  schedule = discrete.mask_schedule(K, T)
  x0 = jax.random.randint(jax.random.key(0), (T, 64), 0, K)
  t = jnp.arange(T)
  x_t = q_sample(schedule, x0, t, jax.random.key(1), K)
  pt = jnp.full((T,), 1.0 / T)
  perfect = 100.0 * jax.nn.one_hot(x0, K)
  vb, aux, bound = loss_terms(schedule, perfect, x0, x_t, t, pt)
  assert float(jnp.max(bound)) < 1e-3 and float(jnp.max(aux)) < 1e-3
  wrong = 100.0 * jax.nn.one_hot((x0 + 1) % K, K)
  _, _, wrong_bound = loss_terms(schedule, wrong, x0, x_t, t, pt)
  assert float(jnp.mean(wrong_bound)) > 1.0
  # vb = bound / p(t); the auxiliary weight is 5e-4 · (2 − t/T), so it decays with t.
  np.testing.assert_allclose(np.asarray(vb), np.asarray(bound) * T, rtol=1e-6)


def test_importance_sampling_waits_for_counts_then_follows_the_loss():
  state = discrete.init_importance_state(4)
  t, pt = sample_timesteps(jax.random.key(0), 512, 4, state)
  np.testing.assert_allclose(np.asarray(pt), 0.25)
  assert set(np.asarray(t).tolist()) == {0, 1, 2, 3}
  state = discrete.update_importance_state(state, jnp.array([2, 3]), jnp.array([1.0, 2.0]))
  np.testing.assert_allclose(np.asarray(state.loss_sq), [0, 0, 0.1, 0.4])
  np.testing.assert_allclose(np.asarray(state.count), [0, 0, 1, 1])
  ready = discrete.ImportanceState(jnp.array([0.0, 1.0, 4.0, 9.0]), jnp.full((4,), 11.0))
  t, pt = sample_timesteps(jax.random.key(1), 4000, 4, ready)
  weights = np.sqrt(np.array([1.0, 1.0, 4.0, 9.0]) + 1e-10) + 1e-4  # step 0 takes step 1's weight
  np.testing.assert_allclose(np.asarray(pt), (weights / weights.sum())[np.asarray(t)], rtol=1e-5)
  np.testing.assert_allclose(
    np.bincount(np.asarray(t), minlength=4) / 4000, weights / weights.sum(), atol=0.03
  )


# ---------------------------------------------------------------------------
# The transformer
# ---------------------------------------------------------------------------

TINY = VQDiffusionConfig(
  num_codes=K,
  height=3,
  width=4,
  embed_dim=32,
  num_layers=2,
  num_heads=4,
  condition_dim=24,
  num_timesteps=T,
)


def torch_name(path: str) -> tuple[str, bool]:
  """Our parameter path -> diffusers' state-dict key, and whether the array is a transposed kernel."""
  name = path.replace("transformer_blocks_", "transformer_blocks.").replace("to_out_0", "to_out.0")
  name = name.replace("net_0", "net.0").replace("net_2", "net.2").replace("/", ".")
  for ours, theirs in (("kernel", "weight"), ("embedding", "weight"), ("scale", "weight")):
    if name.endswith("." + ours):
      return name[: -len(ours)] + theirs, ours == "kernel"
  return name, False


def test_transformer_matches_diffusers_discrete_transformer():
  torch.manual_seed(0)
  reference = Transformer2DModel(
    num_attention_heads=TINY.num_heads,
    attention_head_dim=TINY.embed_dim // TINY.num_heads,
    num_layers=TINY.num_layers,
    cross_attention_dim=TINY.condition_dim,
    attention_bias=True,
    sample_size=TINY.height,
    num_vector_embeds=K + 1,
    activation_fn="geglu-approximate",
    num_embeds_ada_norm=T,
    norm_type="ada_norm",
  ).eval()
  reference.width = TINY.width  # diffusers reads a square grid from sample_size
  reference.latent_image_embedding.width = TINY.width
  reference.latent_image_embedding.width_emb = torch.nn.Embedding(TINY.width, TINY.embed_dim)
  reference.num_latent_pixels = TINY.height * TINY.width
  state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
  model = VQDiffusionTransformer(TINY)
  x_t = jax.random.randint(jax.random.key(0), (2, 12), 0, K + 1)
  context = jax.random.normal(jax.random.key(1), (2, 5, TINY.condition_dim))
  variables = jax.eval_shape(model.init, jax.random.key(2), x_t, jnp.zeros((2,), int), context)
  assert unannotated_params(variables) == []
  flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(variables)["params"])[0]
  params, used = {}, set()
  for path, leaf in flat:
    key = "/".join(p.key for p in path)
    name, transpose = torch_name(key)
    value = state[name].T if transpose else state[name]
    assert value.shape == leaf.shape, key
    params[key] = jnp.asarray(value)
    used.add(name)
  assert used == set(state)
  params = jax.tree_util.tree_unflatten(
    jax.tree.structure(nn.meta.unbox(variables)["params"]),
    [params["/".join(p.key for p in path)] for path, _ in flat],
  )
  for t in (0, 57):
    ours = jax.nn.log_softmax(
      jax.jit(model.apply)({"params": params}, x_t, jnp.full((2,), t), context), -1
    )
    with torch.no_grad():
      theirs = reference(
        torch.tensor(np.asarray(x_t)),
        encoder_hidden_states=torch.tensor(np.asarray(context)),
        timestep=torch.tensor(t),
      ).sample
    np.testing.assert_allclose(np.asarray(ours), theirs.permute(0, 2, 1).numpy(), atol=1e-4)


def test_faithful_coco_count():
  config = vq_diffusion_coco.get_config()
  cfg = VQDiffusionConfig(**config.model.to_dict())
  model = VQDiffusion(cfg)
  shapes = jax.eval_shape(
    lambda: model.init(
      jax.random.key(0),
      jnp.zeros((1, 1024), jnp.int32),
      jnp.zeros((1,), jnp.int32),
      jnp.zeros((1, 77, 512)),
    )
  )
  assert count(shapes) == config.parameters == 388_780_871


def test_model_errors_name_the_argument():
  model = VQDiffusionTransformer(TINY)
  context = jnp.zeros((2, 5, TINY.condition_dim))
  with pytest.raises(VQDiffusionInputError, match="x_t"):
    model.init(jax.random.key(0), jnp.zeros((2, 11), int), jnp.zeros((2,), int), context)
  with pytest.raises(VQDiffusionInputError, match="context"):
    model.init(jax.random.key(0), jnp.zeros((2, 12), int), jnp.zeros((2,), int), context[..., :3])
  with pytest.raises(discrete.DiscreteSamplerError, match="skip_step"):
    discrete.sampling_steps(T, T)


# ---------------------------------------------------------------------------
# Sampler and a tiny model that learns its captions' grids
# ---------------------------------------------------------------------------

OVERFIT = VQDiffusionConfig(
  num_codes=K,
  height=3,
  width=3,
  embed_dim=48,
  num_layers=1,
  num_heads=4,
  condition_dim=32,
  num_timesteps=8,
  text_vocab_size=6,
  text_max_length=3,
  text_layers=1,
  text_heads=2,
  learned_null_text=True,
)


def test_sampler_is_one_scan_with_the_model_and_guidance_inside():
  model = VQDiffusion(OVERFIT)
  text = jnp.array([[1, 2, 0], [3, 4, 5]])
  # Shapes suffice to trace the sampler.
  params = jax.eval_shape(
    model.init, jax.random.key(0), jnp.zeros((2, 9), int), jnp.zeros((2,), int), text
  )["params"]
  schedule = discrete.mask_schedule(K, OVERFIT.num_timesteps)

  def generate(params, rng, scale):
    fn = x0_logits_fn(model, nn.meta.unbox(params), text, guidance_scale=scale)
    return discrete.sample(schedule, fn, rng, (2, 9), num_codes=K, skip_step=2, truncation_rate=0.9)

  for scale in (1.0, 3.0):
    closed = jax.make_jaxpr(lambda p, r, s=scale: generate(p, r, s))(params, jax.random.key(1))
    assert scan_count(closed.jaxpr) == 1
    assert closed.out_avals[0].shape == (2, 9)
  steps, posterior = discrete.sampling_steps(12, 2)
  assert steps.tolist() == [11, 8, 5, 2, 0] and posterior.tolist() == [9, 6, 3, 2, 0]


def test_tiny_model_overfits_grids_from_their_captions():
  grids = jnp.array(
    [[0, 1, 2, 3, 4, 5, 6, 0, 1], [6, 6, 6, 5, 5, 5, 4, 4, 4], [2, 0, 2, 0, 2, 0, 2, 0, 2]],
    jnp.int32,
  )
  captions = jnp.array([[1, 2, 0], [3, 4, 0], [5, 1, 3]], jnp.int32)
  model = VQDiffusion(OVERFIT)
  schedule = discrete.mask_schedule(K, OVERFIT.num_timesteps)
  params = nn.meta.unbox(
    model.init(
      jax.random.key(0), grids, jnp.zeros((3,), int), captions, drop_text=jnp.zeros(3, bool)
    )
  )["params"]
  optimizer = optax.adam(5e-3)

  @jax.jit
  def train(params, rng):
    def step(carry, key):
      params, opt_state, importance = carry
      drop_key, loss_key = jax.random.split(key)
      batch_grids, batch_text = jnp.tile(grids, (8, 1)), jnp.tile(captions, (8, 1))
      drop = jax.random.bernoulli(drop_key, 0.1, (24,))

      def loss_fn(params):
        fn = lambda x_t, t: model.apply({"params": params}, x_t, t, batch_text, drop_text=drop)
        out = discrete.vq_diffusion_loss(
          schedule, fn, batch_grids, loss_key, num_codes=K, state=importance
        )
        return out.loss, out

      grads, out = jax.grad(loss_fn, has_aux=True)(params)
      updates, opt_state = optimizer.update(grads, opt_state)
      return (optax.apply_updates(params, updates), opt_state, out.state), out.loss

    carry = (params, optimizer.init(params), discrete.init_importance_state(OVERFIT.num_timesteps))
    (params, _, importance), losses = jax.lax.scan(step, carry, jax.random.split(rng, 250))
    return params, importance, losses

  params, importance, losses = train(params, jax.random.key(1))
  assert bool(jnp.all(jnp.isfinite(losses)))
  assert float(jnp.mean(losses[-20:])) < 0.2 * float(jnp.mean(losses[:20]))
  assert float(jnp.min(importance.count)) > discrete.IMPORTANCE_MIN_COUNT  # importance sampling ran
  fn = x0_logits_fn(model, params, jnp.tile(captions, (4, 1)), guidance_scale=1.0)
  tokens = jax.jit(
    lambda r: discrete.sample(schedule, fn, r, (12, 9), num_codes=K, truncation_rate=0.85)
  )(jax.random.key(2))
  accuracy = float(jnp.mean(tokens == jnp.tile(grids, (4, 1))))
  assert accuracy > 0.95, accuracy
