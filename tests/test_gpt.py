"""T2M-GPT prior: KV-cache decoding equals full recompute, one scan, faithful size, errors."""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.configs import t2m_gpt_synthetic
from jaxgen.models.gpt import GPTConfig, MotionGPT, init_cache, sample_codes
from jaxgen.nn.embeddings import sinusoidal_positions
from jaxgen.nn.partitioning import unannotated_params

TINY = GPTConfig(
  num_codes=10, embed_dim=16, cond_dim=6, block_size=8, num_layers=1, num_heads=2, dropout=0.1
)


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(tree))))


def scan_count(jaxpr) -> int:
  """Number of `scan` equations anywhere in a (closed) jaxpr, sub-jaxprs included."""
  total = 0
  for eqn in jaxpr.eqns:
    total += eqn.primitive.name == "scan"
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      total += scan_count(sub)
  return total


@pytest.fixture(scope="module")
def tiny():
  model = MotionGPT(TINY)
  cond = jax.random.normal(jax.random.PRNGKey(1), (3, TINY.cond_dim))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((3, 2), jnp.int32), cond)
  # Larger weights than the N(0, 0.02) init, so greedy choices are not all one token.
  variables = jax.tree.map(lambda x: x * 25.0, nn.meta.unbox(variables))
  return model, variables, cond


def greedy_full_recompute(model, variables, cond, num_steps):
  """Reference decoding: re-run the whole sequence for every new token (as the PyTorch
  sampler does), padded to one shape; causality makes later positions irrelevant."""
  forward = jax.jit(lambda tokens: model.apply(variables, tokens, cond))
  tokens = np.zeros((cond.shape[0], num_steps), np.int32)
  for k in range(num_steps):
    tokens[:, k] = np.asarray(jnp.argmax(forward(jnp.asarray(tokens))[:, k], -1))
  return tokens


def test_kv_cache_matches_full_recompute_at_temperature_zero(tiny):
  model, variables, cond = tiny
  steps = TINY.block_size - 1
  batch = cond.shape[0]
  # Let the model run to the end of the block: End is never masked ...
  codes, _ = sample_codes(
    model,
    variables,
    cond,
    jax.random.PRNGKey(2),
    temperature=0.0,
    min_codes=np.zeros(batch),
    max_codes=np.full(batch, steps),
  )
  reference = greedy_full_recompute(model, variables, cond, steps)
  # ... so up to each row's first End the tokens must agree exactly.
  codes = np.asarray(codes)
  for row in range(batch):
    ends = np.flatnonzero(reference[row] == TINY.end_id)
    stop = ends[0] + 1 if len(ends) else steps
    np.testing.assert_array_equal(codes[row, :stop], reference[row, :stop])
  assert len(set(reference[:, :3].ravel().tolist())) > 1  # not a degenerate constant


def test_decode_step_logits_equal_full_forward(tiny):
  model, variables, cond = tiny
  tokens = jax.random.randint(jax.random.PRNGKey(3), (3, TINY.block_size - 1), 0, TINY.num_codes)
  full = model.apply(variables, tokens, cond)
  cache = init_cache(TINY, 3)
  previous = jnp.zeros((3,), jnp.int32)
  step = jax.jit(lambda *args: model.apply(variables, *args, method=MotionGPT.decode_step))
  for index in range(TINY.block_size):
    logits, cache = step(previous, cond, jnp.int32(index), cache)
    # float32 rounding of logits ~20 in size (the test scales the weights up).
    np.testing.assert_allclose(logits, full[:, index], atol=1e-4, rtol=5e-5)
    if index < tokens.shape[1]:
      previous = tokens[:, index]


def test_sampler_is_one_scan_and_respects_lengths(tiny):
  model, variables, cond = tiny

  def sample(cond, rng, min_codes, max_codes):
    return sample_codes(
      model, variables, cond, rng, min_codes=min_codes, max_codes=max_codes, temperature=1.0
    )

  lengths = np.array([1, 4, 7])
  jaxpr = jax.make_jaxpr(sample)(cond, jax.random.PRNGKey(0), lengths, lengths)
  assert scan_count(jaxpr.jaxpr) == 1
  assert "while" not in str(jaxpr)
  codes, out_lengths = jax.jit(sample)(cond, jax.random.PRNGKey(4), lengths, lengths)
  codes = np.asarray(codes)
  np.testing.assert_array_equal(out_lengths, lengths)
  for row, n in enumerate(lengths):
    assert (codes[row, :n] < TINY.num_codes).all()
    assert codes[row, n] == TINY.end_id
    assert (codes[row, n + 1 :] == TINY.pad_id).all()


def test_end_token_mode_lets_the_model_stop(tiny):
  model, variables, cond = tiny
  codes, lengths = sample_codes(
    model,
    variables,
    cond,
    jax.random.PRNGKey(5),
    temperature=0.0,
    min_codes=1,
    max_codes=TINY.block_size - 1,
  )
  codes, lengths = np.asarray(codes), np.asarray(lengths)
  assert ((1 <= lengths) & (lengths <= TINY.block_size - 1)).all()
  np.testing.assert_array_equal(codes[np.arange(3), lengths], TINY.end_id)


def test_dropout_only_in_training(tiny):
  model, variables, cond = tiny
  tokens = jnp.ones((3, 4), jnp.int32)
  train = jax.jit(
    lambda rng: model.apply(variables, tokens, cond, deterministic=False, rngs={"dropout": rng})
  )
  assert not np.allclose(train(jax.random.PRNGKey(0)), train(jax.random.PRNGKey(1)))
  evaluate = jax.jit(lambda: model.apply(variables, tokens, cond))
  np.testing.assert_array_equal(evaluate(), evaluate())


def test_faithful_parameter_count():
  """Mael-zys/T2M-GPT `Text2Motion_Transformer(num_vq=512, embed_dim=1024, clip_dim=512,
  block_size=51, num_layers=9, n_head=16, fc_rate=4)`: `sum(p.numel())` is 228,415,488,
  of which 52,224 are an `nn.Embedding(51, 1024)` that forward never uses and 52,224
  the frozen sinusoidal table (requires_grad=False) this model computes instead."""
  config = GPTConfig(**t2m_gpt_synthetic.gpt_faithful(), num_codes=512, cond_dim=512, block_size=51)
  model = MotionGPT(config)
  shapes = jax.eval_shape(
    model.init, jax.random.PRNGKey(0), jnp.zeros((1, 50), jnp.int32), jnp.zeros((1, 512))
  )
  assert count_params(shapes) == 228_415_488 - 2 * 51 * 1024
  assert len([k for k in shapes["params"] if k.startswith("base_blocks_")]) == 9
  assert len([k for k in shapes["params"] if k.startswith("head_blocks_")]) == 9
  assert unannotated_params(shapes) == []


def test_sinusoidal_positions_interleave_sin_and_cos():
  table = sinusoidal_positions(5, 8)
  np.testing.assert_allclose(table[:, 0], np.sin(np.arange(5)), atol=1e-6)
  np.testing.assert_allclose(table[:, 1], np.cos(np.arange(5)), atol=1e-6)
  np.testing.assert_allclose(table[:, 2], np.sin(np.arange(5) * 10000 ** (-2 / 8)), atol=1e-6)


def test_named_errors(tiny):
  model, variables, cond = tiny
  with pytest.raises(ValueError, match="tokens: expected"):
    model.apply(variables, jnp.zeros((3, TINY.block_size), jnp.int32), cond)
  with pytest.raises(ValueError, match="cond: expected"):
    model.apply(variables, jnp.zeros((3, 2), jnp.int32), jnp.zeros((3, 5)))
  with pytest.raises(ValueError, match="embed_dim .* divisible by num_heads"):
    GPTConfig(embed_dim=10, num_heads=3)
