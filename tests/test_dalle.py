"""DALL·E-style text + image token transformer: KV-cache sampling equals full recompute,
filters, one scan, the loss weighting, guidance, overfitting, the faithful size."""

import dataclasses

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.configs.arch import dalle_12b
from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.models import token_sampling
from jaxgen.models.dalle import (
  DalleConfig,
  DalleConfigError,
  DalleInputError,
  DalleTransformer,
  dalle_loss,
  drop_captions,
  sample_image_tokens,
  token_losses,
)
from jaxgen.nn.partitioning import unannotated_params

# Non-square grid, so rows and columns cannot be confused.
TINY = DalleConfig(
  text_vocab=12,
  text_length=5,
  num_image_codes=6,
  image_rows=3,
  image_cols=4,
  embed_dim=32,
  num_layers=2,
  num_heads=4,
)
# Captions as the tokenizer writes them: [BOS]=2 words [EOS]=3, then [PAD]=0.
TEXT = np.array([[2, 5, 7, 3, 0], [2, 9, 3, 0, 0], [2, 4, 6, 8, 3]], np.int32)


def scan_count(jaxpr) -> int:
  """Number of `scan` equations anywhere in a (closed) jaxpr, sub-jaxprs included."""
  total = 0
  for eqn in jaxpr.eqns:
    total += eqn.primitive.name == "scan"
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      total += scan_count(sub)
  return total


@pytest.fixture(scope="module")
def initial():
  """TINY's variables as initialised (unboxed)."""
  model = DalleTransformer(TINY)
  image = jnp.zeros((3, TINY.image_rows, TINY.image_cols), jnp.int32)
  return nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(TEXT), image))


@pytest.fixture(scope="module")
def tiny(initial):
  model = DalleTransformer(TINY)
  # Larger weights than the N(0, 0.02) init, so greedy choices are not all one code.
  variables = jax.tree.map(lambda x: x * 20.0, initial)
  forward = jax.jit(lambda variables, text, image: model.apply(variables, text, image))
  return model, variables, forward


def greedy_full_recompute(forward, variables, text):
  """Reference decoding: the whole stream again for every cell, arg-max of its logits."""
  grid = np.zeros((text.shape[0], TINY.image_length), np.int32)
  for cell in range(TINY.image_length):
    image = jnp.asarray(grid.reshape(-1, TINY.image_rows, TINY.image_cols))
    grid[:, cell] = np.asarray(jnp.argmax(forward(variables, text, image)[1][:, cell], -1))
  return grid.reshape(-1, TINY.image_rows, TINY.image_cols)


def test_kv_cache_sampler_equals_full_recompute_at_temperature_zero(tiny):
  model, variables, forward = tiny
  codes = sample_image_tokens(model, variables, TEXT, jax.random.PRNGKey(1), temperature=0.0)
  reference = greedy_full_recompute(forward, variables, jnp.asarray(TEXT))
  np.testing.assert_array_equal(np.asarray(codes), reference)
  assert len(np.unique(reference)) > 2  # not a degenerate constant grid
  assert len({r.tobytes() for r in reference}) == 3  # the captions matter


def test_sampler_is_one_scan_under_guidance(tiny):
  model, variables, _ = tiny

  def sample(text, rng):
    return sample_image_tokens(
      model, variables, text, rng, temperature=1.0, top_k=3, top_p=0.9, guidance_scale=3.0
    )

  jaxpr = jax.make_jaxpr(sample)(jnp.asarray(TEXT), jax.random.PRNGKey(0))
  assert scan_count(jaxpr.jaxpr) == 1
  assert "while" not in str(jaxpr)


def test_guidance_scale_one_equals_the_conditional_stream(tiny):
  model, variables, _ = tiny
  options = dict(temperature=1.0, top_k=4, top_p=0.95)
  rng = jax.random.PRNGKey(7)
  alone = sample_image_tokens(model, variables, TEXT, rng, **options)
  scale_one = sample_image_tokens(model, variables, TEXT, rng, guidance_scale=1.0, **options)
  np.testing.assert_array_equal(scale_one, alone)
  # A scale far from 1 follows c - u and changes the greedy grids.
  greedy = sample_image_tokens(model, variables, TEXT, rng, temperature=0.0)
  guided = sample_image_tokens(model, variables, TEXT, rng, temperature=0.0, guidance_scale=8.0)
  assert not np.array_equal(guided, greedy)


def test_per_position_pad_tokens(tiny):
  model, variables, forward = tiny
  image = jnp.ones((3, TINY.image_rows, TINY.image_cols), jnp.int32)
  table = variables["params"]["text_emb"]["embedding"]

  def outputs_with(row):
    changed = jax.tree.map(lambda x: x, variables)
    changed["params"]["text_emb"]["embedding"] = table.at[row].add(1.0)
    return forward(changed, jnp.asarray(TEXT), image)[1]

  base = forward(variables, jnp.asarray(TEXT), image)[1]
  # The tokenizer's pad id is never embedded ...
  np.testing.assert_array_equal(outputs_with(TINY.text_pad_id), base)
  # ... the pad token of slot 4 is, in the two captions padded there and only in them.
  moved = np.abs(np.asarray(outputs_with(TINY.text_vocab + 4) - base)).max(axis=(1, 2))
  assert moved[0] > 0 and moved[1] > 0 and moved[2] == 0


def test_loss_weighting_by_hand(tiny):
  model, variables, forward = tiny
  rng = np.random.default_rng(0)
  image = rng.integers(0, TINY.num_image_codes, (3, TINY.image_rows, TINY.image_cols))
  image = jnp.asarray(image, jnp.int32)
  text_logits, image_logits = forward(variables, jnp.asarray(TEXT), image)

  def cross_entropy(logits, targets):
    logits = np.asarray(logits, np.float64)
    log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return log_z - np.take_along_axis(logits, targets[..., None], -1)[..., 0]

  text_ce = cross_entropy(text_logits, TEXT[:, 1:])
  text_mean = text_ce[TEXT[:, 1:] != 0].mean()  # 10 real targets; pads excluded
  image_mean = cross_entropy(image_logits, np.asarray(image).reshape(3, -1)).mean()
  loss, metrics = token_losses(TINY, jnp.asarray(TEXT), image, text_logits, image_logits)
  np.testing.assert_allclose(metrics["text_loss"], text_mean, rtol=1e-5)
  np.testing.assert_allclose(metrics["image_loss"], image_mean, rtol=1e-5)
  np.testing.assert_allclose(loss, text_mean / 8 + 7 * image_mean / 8, rtol=1e-5)
  image_only = dataclasses.replace(TINY, text_loss_weight=0.0, image_loss_weight=1.0)
  loss, _ = token_losses(image_only, jnp.asarray(TEXT), image, text_logits, image_logits)
  np.testing.assert_allclose(loss, image_mean, rtol=1e-5)
  # An empty caption has no text targets, so it adds nothing to the text term.
  empty = jnp.zeros_like(jnp.asarray(TEXT))
  _, metrics = token_losses(TINY, empty, image, *forward(variables, empty, image))
  assert float(metrics["text_loss"]) == 0.0


def test_caption_dropout_drops_whole_captions():
  config = dataclasses.replace(TINY, caption_dropout=0.5)
  text = jnp.asarray(np.tile(TEXT, (20, 1)))
  dropped = np.asarray(drop_captions(config, text, jax.random.PRNGKey(0)))
  kept = (dropped == np.asarray(text)).all(axis=1)
  empty = (dropped == 0).all(axis=1)
  assert (kept | empty).all() and 10 < empty.sum() < 50
  np.testing.assert_array_equal(drop_captions(TINY, text, jax.random.PRNGKey(0)), text)


def test_top_k_and_top_p_filters_by_hand():
  # Jitted once each: the options are traced, so every setting below reuses one program.
  top_k_filter, top_p_filter, filter_logits, sample_tokens = map(
    jax.jit,
    (
      token_sampling.top_k_filter,
      token_sampling.top_p_filter,
      token_sampling.filter_logits,
      token_sampling.sample_tokens,
    ),
  )
  probs = np.array([0.1, 0.5, 0.05, 0.2, 0.15])
  logits = jnp.asarray(np.log(probs), jnp.float32)[None]
  kept = lambda filtered: np.flatnonzero(np.isfinite(np.asarray(filtered)[0])).tolist()
  assert kept(top_k_filter(logits, 2)) == [1, 3]
  assert kept(top_k_filter(logits, 0)) == [0, 1, 2, 3, 4]  # off
  assert kept(top_k_filter(logits, 9)) == [0, 1, 2, 3, 4]
  assert kept(top_p_filter(logits, 0.45)) == [1]  # the most likely token always stays
  assert kept(top_p_filter(logits, 0.6)) == [1, 3]  # 0.5 + 0.2 >= 0.6
  assert kept(top_p_filter(logits, 0.75)) == [1, 3, 4]
  assert kept(top_p_filter(logits, 1.0)) == [0, 1, 2, 3, 4]
  # Temperature first: at T = 2 the shares are ∝ √p (0.34, 0.21, 0.19, ...): 3 make 0.6.
  assert kept(filter_logits(logits, 2.0, 0, 0.6)) == [1, 3, 4]
  # Top-k, then the nucleus of what is left: 0.5 / (0.5 + 0.2) alone reaches 0.6.
  assert kept(filter_logits(logits, 1.0, 2, 0.6)) == [1]
  np.testing.assert_allclose(np.asarray(filter_logits(logits, 2.0))[0], np.log(probs) / 2, 1e-6)
  draws = sample_tokens(jnp.tile(logits, (4000, 1)), jax.random.PRNGKey(0), 1.0, 2, 1.0)
  counts = np.bincount(np.asarray(draws), minlength=5)
  assert counts[[0, 2, 4]].sum() == 0
  np.testing.assert_allclose(counts[1] / 4000, 0.5 / 0.7, atol=0.03)
  assert (np.asarray(sample_tokens(logits, jax.random.PRNGKey(0), 0.0, 2, 0.1)) == 1).all()


def test_tiny_model_overfits_pairs_and_samples_them_back(initial):
  # TINY itself, so the sampler compiled for the other tests serves this one too.
  model = DalleTransformer(TINY)
  text = jnp.asarray(TEXT)
  rng = np.random.default_rng(1)
  grids = rng.integers(0, TINY.num_image_codes, (3, TINY.image_rows, TINY.image_cols))
  grids = jnp.asarray(grids, jnp.int32)
  params = initial
  optimizer = optax.adam(1e-2)

  @jax.jit
  def train(params):
    def step(carry, rng):
      params, opt_state = carry
      (loss, metrics), grads = jax.value_and_grad(
        lambda p: dalle_loss(model, p, text, grids, rng), has_aux=True
      )(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), metrics["image_loss"]

    rngs = jax.random.split(jax.random.PRNGKey(1), 100)
    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), rngs)
    return params, losses

  params, losses = train(params)
  assert losses[-1] < 0.05 < losses[0]
  codes = sample_image_tokens(model, params, text, jax.random.PRNGKey(2), temperature=0.0)
  np.testing.assert_array_equal(codes, grids)


def test_faithful_parameter_count():
  config = DalleConfig(**dalle_12b.get_config().to_dict())
  model = DalleTransformer(config)
  text = jnp.zeros((1, 256), jnp.int32)
  shapes = jax.eval_shape(
    model.init, jax.random.PRNGKey(0), text, jnp.zeros((1, 32, 32), jnp.int32)
  )
  width = 3968
  by_hand = (
    64 * (12 * width**2 + 13 * width)  # blocks: q, k, v, out, two LayerNorms, 4x MLP
    + (16384 + 256) * width  # text table with a pad token per position
    + (8192 + 1) * width  # image table with the BOS
    + (256 + 32 + 32) * width  # text, row and column positions
    + 2 * width  # final LayerNorm
    + (16384 + 8192) * width  # text and image heads
  )
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes)))
  assert count == by_hand == dalle_12b.PARAMETERS
  assert 12.0e9 < count < 12.5e9  # the paper's "12-billion parameter" transformer
  assert len([k for k in shapes["params"] if k.startswith("blocks_")]) == 64
  assert unannotated_params(shapes) == []


def test_named_errors(tiny):
  model, variables, _ = tiny
  image = jnp.zeros((3, TINY.image_rows, TINY.image_cols), jnp.int32)
  with pytest.raises(DalleInputError, match="text: expected"):
    model.apply(variables, jnp.zeros((3, 4), jnp.int32), image)
  with pytest.raises(DalleInputError, match="image: expected codes"):
    model.apply(variables, jnp.asarray(TEXT), image[:, :2])
  with pytest.raises(DalleInputError, match=r"image: ids must lie in \[0, 6\)"):
    model.apply(variables, jnp.asarray(TEXT), image + 6)
  with pytest.raises(DalleInputError, match="text: expected integer"):
    sample_image_tokens(model, variables, TEXT.astype(np.float32), jax.random.PRNGKey(0))
  with pytest.raises(SamplingOptionError, match="top_p: expected"):
    sample_image_tokens(model, variables, TEXT, jax.random.PRNGKey(0), top_p=1.5)
  with pytest.raises(SamplingOptionError, match="guidance_scale: expected"):
    sample_image_tokens(model, variables, TEXT, jax.random.PRNGKey(0), guidance_scale=-1.0)
  with pytest.raises(DalleConfigError, match="divisible by num_heads"):
    DalleConfig(embed_dim=10, num_heads=3)
