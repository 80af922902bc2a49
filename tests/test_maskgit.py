"""MaskGIT: faithful size, mask schedules, the parallel-decoding rule, one scan, a tiny text model learns."""

import math

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.configs.arch import maskgit_imagenet256
from jaxgen.diffusion import masked_decoding as md
from jaxgen.models.maskgit import (
  MaskGITConfig,
  MaskGITConfigError,
  MaskGITInputError,
  MaskGITTransformer,
  code_logits_fn,
  masked_token_loss,
  sample_codes,
)
from jaxgen.nn.partitioning import unannotated_params

MASK = 99  # a mask id outside the hand-made vocabularies below


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(tree))))


def scan_equations(jaxpr) -> list:
  """Every `scan` equation of a jaxpr, sub-jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan":
      found.append(eqn)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += scan_equations(sub)
  return found


def test_faithful_imagenet256_count_and_layout():
  config = MaskGITConfig(**maskgit_imagenet256.get_config().transformer.to_dict())
  assert (config.vocab_size, config.mask_id, config.sequence_length) == (2025, 2024, 257)
  model = MaskGITTransformer(config)
  shapes = jax.eval_shape(
    lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 256), jnp.int32), labels=jnp.zeros((1,), jnp.int32)
    )
  )
  assert count_params(shapes) == maskgit_imagenet256.PARAMETER_COUNT == 172_457_193
  assert unannotated_params(shapes) == []
  params = nn.meta.unbox(shapes)["params"]
  assert params["word_embeddings"]["embedding"].shape == (2025, 768)
  assert params["position_embeddings"].shape == (257, 768)
  assert params["mlm_bias"].shape == (2025,)


def test_schedule_values():
  r = jnp.array([0.0, 0.25, 0.5, 1.0])
  np.testing.assert_allclose(
    md.mask_ratio("cosine", r), [1.0, math.cos(math.pi / 8), math.sqrt(0.5), 1e-6], rtol=1e-6
  )
  np.testing.assert_allclose(md.mask_ratio("linear", r), [1.0, 0.75, 0.5, 1e-6], rtol=1e-6)
  np.testing.assert_allclose(md.mask_ratio("square", r), [1.0, 0.9375, 0.75, 1e-6], rtol=1e-6)
  with pytest.raises(md.MaskScheduleError, match="schedule"):
    md.mask_ratio("exp", r)


def test_mask_tokens_masks_ceil_of_ratio_per_example():
  codes = jnp.tile(jnp.arange(16, dtype=jnp.int32), (64, 1)).reshape(64, 4, 4)
  masked, hidden = md.mask_tokens(jax.random.PRNGKey(0), codes, 0.3, mask_id=MASK)
  assert masked.shape == hidden.shape == codes.shape
  np.testing.assert_array_equal(hidden.reshape(64, -1).sum(-1), 5)  # ceil(0.3 * 16)
  np.testing.assert_array_equal(np.where(hidden, MASK, codes), masked)
  assert len({tuple(row) for row in np.asarray(hidden).reshape(64, -1)}) > 1  # positions random
  # A schedule draws r ~ U(0, 1) per example: counts ceil(γ(r)·N), spread over [1, N].
  _, hidden = md.mask_tokens(jax.random.PRNGKey(1), codes, "cosine", mask_id=MASK)
  counts = np.asarray(hidden).reshape(64, -1).sum(-1)
  assert counts.min() >= 1 and counts.max() <= 16 and len(set(counts.tolist())) > 5
  # cos(π/2·r) for r ~ U(0, 1) has mean 2/π: more than half the tokens masked on average.
  assert abs(counts.mean() / 16 - 2 / math.pi) < 0.12


def test_masked_cross_entropy_with_label_smoothing():
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7))
  targets = jax.random.randint(jax.random.PRNGKey(1), (2, 5), 0, 7)
  mask = jnp.array([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], bool)
  expected = optax.softmax_cross_entropy(
    logits, optax.smooth_labels(jax.nn.one_hot(targets, 7), 0.1)
  )[np.asarray(mask)].mean()
  np.testing.assert_allclose(
    md.masked_cross_entropy(logits, targets, mask, 0.1), expected, rtol=1e-6
  )
  assert md.masked_cross_entropy(logits, targets, jnp.zeros_like(mask), 0.1) == 0.0
  with pytest.raises(md.DecodingOptionError, match="label_smoothing"):
    md.masked_cross_entropy(logits, targets, mask, 1.0)


def answer_logits_fn(answer: jax.Array, num_codes: int):
  """Logits that always favour `answer` (B, N); the favour (so the confidence) grows with the position."""
  strength = 2.0 + jnp.arange(answer.shape[1], dtype=jnp.float32)

  def logits_fn(tokens):
    return jax.nn.one_hot(answer, num_codes) * strength[None, :, None]

  return logits_fn


def test_decoding_rule_on_hand_made_logits():
  batch, n, steps, codes = 3, 16, 4, 10
  answer = jax.random.randint(jax.random.PRNGKey(0), (batch, n), 0, codes)
  decoded, history = md.parallel_decode(
    answer_logits_fn(answer, codes),
    jax.random.PRNGKey(1),
    batch,
    n,
    steps,
    MASK,
    choice_temperature=0.0,  # no choice noise: the least confident are re-masked
    temperature=0.0,
    return_history=True,
  )
  np.testing.assert_array_equal(decoded, answer)
  assert history.shape == (steps, batch, n)
  # Still masked after each step: floor(16·cos(π/2·(t+1)/4)) = 14, 11, 6, then 0 at the last.
  masked = np.asarray(history == MASK).sum(-1)
  np.testing.assert_array_equal(masked, np.array([[14, 11, 6, 0]] * batch).T)
  # Confidence grows with the position, so the last positions are fixed first, in order.
  for t, left in enumerate([14, 11, 6, 0]):
    assert (np.asarray(history[t, :, :left]) == MASK).all()
    np.testing.assert_array_equal(history[t, :, left:], answer[:, left:])


def test_decoding_keeps_known_tokens_with_sampling_and_choice_noise():
  batch, n, steps, codes = 4, 16, 6, 5
  rng = np.random.default_rng(0)
  # Logits from random per-step tables so the sampled tokens differ from any answer.
  table = jnp.asarray(rng.normal(size=(batch, n, codes)) * 2.0, jnp.float32)
  start = np.full((batch, n), MASK, np.int32)
  start[:, :3] = 7  # known tokens outside the sampled range [0, codes)
  decoded, history = md.parallel_decode(
    lambda tokens: table,
    jax.random.PRNGKey(2),
    batch,
    n,
    steps,
    MASK,
    tokens=jnp.asarray(start),
    return_history=True,
  )
  history = np.asarray(history)
  assert (history[:, :, :3] == 7).all() and (np.asarray(decoded)[:, :3] == 7).all()
  assert ((np.asarray(decoded)[:, 3:] >= 0) & (np.asarray(decoded)[:, 3:] < codes)).all()
  # A token, once fixed, never changes again.
  for t in range(1, steps):
    fixed = history[t - 1] != MASK
    np.testing.assert_array_equal(history[t][fixed], history[t - 1][fixed])
  # Counts follow the rule from the 13 unknown at the start, however the noise picks them.
  unknown = 13
  expected = []
  for t in range(steps):
    planned = math.floor(13 * math.cos(math.pi / 2 * (t + 1) / steps))
    unknown = 0 if t == steps - 1 else max(1, min(unknown - 1, planned))
    expected.append(unknown)
  np.testing.assert_array_equal((history == MASK).sum(-1), np.array([expected] * batch).T)
  # The choice noise makes different rows fix different positions first.
  first = history[0] != MASK
  assert len({tuple(row) for row in first}) > 1


def test_one_step_decodes_everything_at_once():
  answer = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % 4
  decoded, history = md.parallel_decode(
    answer_logits_fn(answer, 4),
    jax.random.PRNGKey(0),
    2,
    6,
    1,
    MASK,
    temperature=0.0,
    return_history=True,
  )
  assert history.shape == (1, 2, 6)  # one step, one model call
  np.testing.assert_array_equal(decoded, answer)


def test_decode_option_errors():
  fn = answer_logits_fn(jnp.zeros((1, 4), jnp.int32), 3)
  key = jax.random.PRNGKey(0)
  for kwargs, name in [
    ({"num_steps": 0}, "num_steps"),
    ({"num_steps": 2, "choice_temperature": -1.0}, "choice_temperature"),
    ({"num_steps": 2, "temperature": -0.5}, "temperature"),
  ]:
    with pytest.raises(md.DecodingOptionError, match=name):
      md.parallel_decode(fn, key, 1, 4, mask_id=MASK, **kwargs)
  with pytest.raises(md.MaskScheduleError):
    md.parallel_decode(fn, key, 1, 4, 2, MASK, schedule="log")
  with pytest.raises(md.DecodingOptionError, match="logits_fn"):
    md.parallel_decode(fn, key, 1, 5, 2, MASK)


TINY_CLASS = MaskGITConfig(
  codebook_size=6,
  num_image_tokens=9,
  num_classes=3,
  width=16,
  num_layers=1,
  num_heads=2,
  mlp_dim=32,
)


def test_parallel_decode_is_one_scan_with_the_model_inside():
  model = MaskGITTransformer(TINY_CLASS)
  labels = jnp.array([0, 2])
  variables = jax.jit(lambda key: model.init(key, jnp.zeros((2, 9), jnp.int32), labels=labels))(
    jax.random.PRNGKey(0)
  )

  def sample(variables, rng):
    return sample_codes(model, variables, rng, 2, 5, labels=labels)

  jaxpr = jax.make_jaxpr(jax.jit(sample))(variables, jax.random.PRNGKey(1))
  scans = scan_equations(jaxpr.jaxpr)
  assert len(scans) == 1 and scans[0].params["length"] == 5
  assert "while" not in str(jaxpr)
  # The transformer runs inside the scanned body: its attention softmax is there, once per step.
  assert "dot_general" in str(scans[0].params["jaxpr"])
  codes = jax.jit(sample)(variables, jax.random.PRNGKey(1))
  assert codes.shape == (2, 9) and ((codes >= 0) & (codes < 6)).all()


def test_config_and_input_errors():
  with pytest.raises(MaskGITConfigError, match="width"):
    MaskGITConfig(width=10, num_heads=4)
  with pytest.raises(MaskGITConfigError, match="at most one conditioning"):
    MaskGITConfig(num_classes=3, caption_vocab_size=5, caption_length=4)
  with pytest.raises(MaskGITConfigError, match="caption_vocab_size"):
    MaskGITConfig(caption_length=4)
  model = MaskGITTransformer(TINY_CLASS)
  tokens = jnp.zeros((2, 9), jnp.int32)
  with pytest.raises(MaskGITInputError, match="labels: required"):
    model.init(jax.random.PRNGKey(0), tokens)
  with pytest.raises(MaskGITInputError, match="caption: not accepted"):
    model.init(jax.random.PRNGKey(0), tokens, labels=jnp.zeros(2), caption=jnp.zeros((2, 3)))
  with pytest.raises(MaskGITInputError, match="tokens"):
    model.init(jax.random.PRNGKey(0), tokens[:, :8], labels=jnp.zeros(2))
  with pytest.raises(MaskGITInputError, match="guidance_scale"):
    code_logits_fn(model, {}, labels=jnp.zeros(2), guidance_scale=3.0)


# A tiny caption-conditioned model memorises four 4x4 code grids from their captions.
TINY_TEXT = MaskGITConfig(
  codebook_size=8,
  num_image_tokens=16,
  caption_vocab_size=12,
  caption_length=5,
  width=64,
  num_layers=2,
  num_heads=4,
  mlp_dim=128,
  dropout=0.0,
)


def test_caption_prefix_padding_null_caption_and_guidance():
  model = MaskGITTransformer(TINY_TEXT)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, 9)  # 8 = the mask id
  caption = jnp.array([[1, 4, 7, 0, 0], [3, 6, 9, 10, 11]])
  caption_mask = caption > 0
  other_padding = caption.at[0, 3:].set(5)  # ids under the mask are never attended
  other_word = caption.at[0, 1].set(5)

  @jax.jit
  def run(key):
    variables = model.init(key, tokens, caption=caption, caption_mask=caption_mask)
    # Every variant in one batch: (caption, dropped?) pairs, two rows each.
    variants = [(caption, 0), (other_padding, 0), (other_word, 0), (caption, 1), (other_word, 1)]
    logits = model.apply(
      variables,
      jnp.tile(tokens, (len(variants), 1)),
      caption=jnp.concatenate([c for c, _ in variants]),
      caption_mask=jnp.tile(caption_mask, (len(variants), 1)),
      drop_caption=jnp.repeat(jnp.array([d for _, d in variants], bool), 2),
    )
    guided = code_logits_fn(
      model, variables, caption=caption, caption_mask=caption_mask, guidance_scale=3.0
    )(tokens)
    return variables, logits.reshape(len(variants), 2, 16, -1), guided

  variables, logits, guided = run(jax.random.PRNGKey(0))
  assert unannotated_params(variables) == []
  base, padded, worded, dropped, dropped_worded = logits
  assert base.shape == (2, 16, TINY_TEXT.vocab_size)
  np.testing.assert_allclose(padded, base, atol=1e-5)
  assert np.abs(worded[0] - base[0]).max() > 1e-3  # a real word matters ...
  np.testing.assert_allclose(worded[1], base[1], atol=1e-5)  # ... to its own example only
  np.testing.assert_allclose(dropped_worded, dropped, atol=1e-5)  # the null caption ignores words
  assert np.abs(dropped - base).max() > 1e-3
  cond, uncond = base[..., :8], dropped[..., :8]
  np.testing.assert_allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-4)


def test_tiny_text_model_overfits_and_decodes_from_captions():
  rng = np.random.default_rng(0)
  grids = jnp.asarray(rng.integers(0, 8, size=(4, 4, 4)), jnp.int32)
  # Captions of 3-5 words over ids 1..11 with 0-padding, each one distinct.
  caption = jnp.array([[1, 4, 7, 0, 0], [1, 5, 7, 2, 0], [3, 4, 8, 0, 0], [3, 6, 9, 10, 11]])
  caption_mask = caption > 0
  model = MaskGITTransformer(TINY_TEXT)
  num_steps = 300  # ~1 s of compute; the compile is what costs
  optimizer = optax.adam(optax.cosine_decay_schedule(5e-3, num_steps))

  def loss_fn(params, key):
    loss, _ = masked_token_loss(
      model,
      params,
      grids,
      key,
      caption=caption,
      caption_mask=caption_mask,
      caption_dropout=0.1,  # null captions, for guidance
      label_smoothing=0.0,
    )
    return loss

  @jax.jit
  def init_and_train(key):
    params = model.init(key, grids, caption=caption, caption_mask=caption_mask)

    def step(carry, key):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params, key)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    keys = jax.random.split(jax.random.fold_in(key, 1), num_steps)
    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), keys)
    return params, losses

  params, losses = init_and_train(jax.random.PRNGKey(0))
  # Medians: a step whose captions were dropped cannot know its grid and spikes.
  start, end = np.median(losses[:10]), np.median(losses[-20:])
  assert start > 1.5  # about log 8 for random weights
  assert end < 0.02 * start

  def decode(params, key):
    options = [(1.0, 0.0), (1.0, 1.0), (2.0, 1.0)]  # (guidance_scale, temperature)
    return jnp.stack(
      [
        sample_codes(
          model,
          params,
          key,
          4,
          8,
          caption=caption,
          caption_mask=caption_mask,
          guidance_scale=scale,
          temperature=temperature,
        )
        for scale, temperature in options
      ]
    ).reshape(len(options), 4, 4, 4)

  codes = np.asarray(jax.jit(decode)(params, jax.random.PRNGKey(2)))
  # T = 8 steps from the captions alone: the most likely tokens are the grids ...
  np.testing.assert_array_equal(codes[0], grids)
  # ... and sampled ones (MaskGIT's default temperatures), plain or guided, nearly all of them.
  assert (codes[1:] == np.asarray(grids)[None]).mean(axis=(1, 2, 3)).min() >= 0.95
