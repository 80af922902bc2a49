"""StackGAN++, AttnGAN and DAMSM: faithful counts, shapes, CA, DAMSM losses, word attention, torch parity, training.

The reference is `torch_text_gans` (a transcription of StackGAN-v2's and
AttnGAN's modules): its parameter counts are taken on the meta device, and one
generator stage of each model and the DAMSM text encoder run on the same
random weights and inputs as jaxgen's (BatchNorm in training mode).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")
import torch_text_gans as ref  # noqa: E402

from jaxgen.configs.arch import attngan_birds, stackgan2_birds  # noqa: E402
from jaxgen.models import attngan, damsm, stackgan  # noqa: E402
from jaxgen.nn import partitioning as pt  # noqa: E402

TOLERANCE = 1e-4
S = jax.ShapeDtypeStruct
F32 = jnp.float32
RNGS = {"params": jax.random.key(0), "augment": jax.random.key(1)}


def _count(module, *shapes) -> int:
  variables = jax.eval_shape(lambda *a: module.init(RNGS, *a), *shapes)
  return stackgan.parameter_count(variables["params"])


def _init(module, *args, **kwargs):
  """`module.init` under jit: one compile instead of hundreds of eager dispatches."""
  return jax.jit(lambda *a: module.init(RNGS, *a, **kwargs))(*args)


def _apply(module, variables, *args, **kwargs):
  return jax.jit(lambda v, *a: module.apply(v, *a, **kwargs))(variables, *args)


def _unbox(variables):
  return jax.tree_util.tree_map(np.asarray, __import__("flax").linen.meta.unbox(variables))


def _random_stats(variables, key):
  """Random positive BatchNorm running statistics, so eval-mode paths would show a mismatch too."""
  leaves, tree = jax.tree_util.tree_flatten(variables["batch_stats"])
  keys = jax.random.split(key, len(leaves))
  new = [jax.random.uniform(k, x.shape, minval=0.5, maxval=1.5) for k, x in zip(keys, leaves)]
  return {**variables, "batch_stats": jax.tree_util.tree_unflatten(tree, new)}


# ---------------------------------------------------------------- faithful counts


def test_stackgan_birds_counts_equal_the_reference():
  arch = stackgan.StackGANConfig(**stackgan2_birds.get_config().model.to_dict())
  g = _count(stackgan.StackGANGenerator(arch), S((2, arch.z_dim), F32), S((2, arch.text_dim), F32))
  assert g == stackgan2_birds.GENERATOR_PARAMETERS == ref.count(ref.meta(ref.StackGAN_G_NET))
  for stage, size in enumerate(arch.image_sizes):
    d = _count(
      stackgan.StageDiscriminator(arch.df_dim, arch.condition_dim, stage=stage),
      S((2, size, size, 3), F32),
      S((2, arch.condition_dim), F32),
    )
    expected = ref.count(ref.meta(ref.StackGAN_D_NET, arch.df_dim, arch.condition_dim, stage))
    assert d == stackgan2_birds.DISCRIMINATOR_PARAMETERS[stage] == expected


def test_attngan_birds_counts_equal_the_reference():
  config = attngan_birds.get_config()
  arch = attngan.AttnGANConfig(**config.model.to_dict())
  t = config.words_num
  g = _count(
    attngan.AttnGANGenerator(arch),
    S((2, arch.z_dim), F32),
    S((2, arch.text_dim), F32),
    S((2, t, arch.text_dim), F32),
    S((2, t), jnp.bool_),
  )
  assert g == attngan_birds.GENERATOR_PARAMETERS == ref.count(ref.meta(ref.AttnGAN_G_NET))
  for stage, size in enumerate(arch.image_sizes):
    d = _count(
      stackgan.StageDiscriminator(arch.df_dim, arch.text_dim, stage=stage, condition_first=False),
      S((2, size, size, 3), F32),
      S((2, arch.text_dim), F32),
    )
    expected = ref.count(ref.meta(ref.AttnGAN_D_NET, arch.df_dim, arch.text_dim, stage))
    assert d == attngan_birds.DISCRIMINATOR_PARAMETERS[stage] == expected
  cfg = damsm.DAMSMConfig(**config.damsm.to_dict())
  text = _count(damsm.DAMSMTextEncoder(cfg), S((2, t), jnp.int32), S((2,), jnp.int32))
  assert text == attngan_birds.TEXT_ENCODER_PARAMETERS == ref.count(ref.meta(ref.RNN_ENCODER, 5450))
  image = jax.eval_shape(
    lambda x: damsm.DAMSMImageEncoder(cfg).init(RNGS, x), S((2, 64, 64, 3), F32)
  )["params"]
  heads = stackgan.parameter_count({k: v for k, v in image.items() if k != "backbone"})
  assert heads == attngan_birds.IMAGE_ENCODER_HEAD_PARAMETERS == ref.count(ref.CNN_ENCODER_HEADS())
  assert (
    stackgan.parameter_count(image["backbone"]) == attngan_birds.IMAGE_ENCODER_BACKBONE_PARAMETERS
  )


def test_every_parameter_carries_logical_axis_names():
  b, t = 2, 5
  boxed = [
    jax.eval_shape(
      lambda *a: stackgan.StackGANGenerator(TINY_STACK).init(RNGS, *a),
      S((b, TINY_STACK.z_dim), F32),
      S((b, TINY_STACK.text_dim), F32),
    ),
    jax.eval_shape(
      lambda *a: attngan.AttnGANGenerator(TINY_ATTN).init(RNGS, *a),
      S((b, TINY_ATTN.z_dim), F32),
      S((b, TINY_ATTN.text_dim), F32),
      S((b, t, TINY_ATTN.text_dim), F32),
      S((b, t), jnp.bool_),
    ),
    jax.eval_shape(
      lambda *a: stackgan.StageDiscriminator(4, 6, stage=2, base_size=8).init(RNGS, *a),
      S((b, 32, 32, 3), F32),
      S((b, 6), F32),
    ),
    jax.eval_shape(
      lambda *a: damsm.DAMSMTextEncoder(TINY_DAMSM).init(RNGS, *a),
      S((b, t), jnp.int32),
      S((b,), jnp.int32),
    ),
    jax.eval_shape(
      lambda x: damsm.DAMSMImageEncoder(TINY_DAMSM).init(RNGS, x), S((b, 32, 32, 3), F32)
    ),
  ]
  for variables in boxed:
    assert pt.unannotated_params(variables["params"]) == []


def test_bad_options_are_named_errors():
  with pytest.raises(stackgan.TextGANConfigError, match="base_size"):
    stackgan.StackGANConfig(base_size=48)
  with pytest.raises(stackgan.TextGANConfigError, match="num_stages"):
    attngan.AttnGANConfig(num_stages=4)
  with pytest.raises(damsm.DAMSMConfigError, match="backbone"):
    damsm.DAMSMConfig(backbone="resnet")


# ---------------------------------------------------------------- tiny models

TINY_STACK = stackgan.StackGANConfig(
  text_dim=12, condition_dim=6, z_dim=5, gf_dim=16, df_dim=4, num_residual=1, base_size=8
)
TINY_ATTN = attngan.AttnGANConfig(
  text_dim=10, condition_dim=6, z_dim=5, gf_dim=4, df_dim=4, num_residual=1, base_size=8
)
TINY_DAMSM = damsm.DAMSMConfig(
  vocab_size=20, word_dim=8, embed_dim=10, backbone="cnn", cnn_channels=(8, 8, 16)
)


def _tiny_attn_inputs(b=3, t=5):
  key = jax.random.key(7)
  words = jax.random.normal(key, (b, t, TINY_ATTN.text_dim))
  lengths = jnp.array([5, 2, 3][:b])
  mask = jnp.arange(t)[None] < lengths[:, None]
  z = jax.random.normal(jax.random.key(8), (b, TINY_ATTN.z_dim))
  sentence = jax.random.normal(jax.random.key(9), (b, TINY_ATTN.text_dim))
  return z, sentence, words, mask


def _shapes(tree):
  return jax.tree_util.tree_map(lambda x: x.shape, tree)


def test_stage_output_shapes():
  b = 3
  gen = stackgan.StackGANGenerator(TINY_STACK)
  z, text = S((b, TINY_STACK.z_dim), F32), S((b, TINY_STACK.text_dim), F32)

  def run(z, text):
    variables = gen.init(RNGS, z, text)
    return gen.apply(variables, z, text, rngs=RNGS, mutable=["batch_stats"])[0]

  images, mu, logvar = jax.eval_shape(run, z, text)
  sizes = TINY_STACK.image_sizes
  assert sizes == (8, 16, 32) and _shapes(images) == [(b, s, s, 3) for s in sizes]
  assert mu.shape == logvar.shape == (b, TINY_STACK.condition_dim)
  for stage, size in enumerate(sizes):
    d = stackgan.StageDiscriminator(4, TINY_STACK.condition_dim, stage=stage, base_size=8)

    def score(x, c, d=d):
      return d.apply(d.init(RNGS, x, c), x, c, mutable=["batch_stats"])[0]

    assert _shapes(jax.eval_shape(score, S((b, size, size, 3), F32), mu)) == ((b,), (b,))

  agen = attngan.AttnGANGenerator(TINY_ATTN)
  inputs = jax.tree_util.tree_map(lambda x: S(x.shape, x.dtype), _tiny_attn_inputs(b))

  def run_attn(*inputs):
    return agen.apply(agen.init(RNGS, *inputs), *inputs, rngs=RNGS, mutable=["batch_stats"])[0]

  images, attentions, _, _ = jax.eval_shape(run_attn, *inputs)
  assert _shapes(images) == [(b, s, s, 3) for s in (8, 16, 32)]
  assert _shapes(attentions) == [(b, 8, 8, 5), (b, 16, 16, 5)]


# ---------------------------------------------------------------- conditioning augmentation


def test_kl_matches_the_gaussian_formula_and_reparameterisation_samples_it():
  mu = np.array([[0.5, -1.0], [0.0, 2.0]], np.float32)
  logvar = np.log(np.array([[1.0, 4.0], [0.25, 1.0]], np.float32))
  per_element = 0.5 * (
    np.exp(logvar) + mu**2 - 1.0 - logvar
  )  # KL(N(μ, σ²) ‖ N(0, 1)) per dimension
  kl = jax.jit(stackgan.kl_loss)
  assert np.isclose(kl(mu, logvar), per_element.mean(), rtol=1e-6)
  assert float(kl(np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32))) == 0.0

  n = 20000
  mu1 = np.tile(np.array([1.5, -2.0], np.float32), (n, 1))
  logvar1 = np.tile(np.log(np.array([0.09, 4.0], np.float32)), (n, 1))
  samples = np.asarray(jax.jit(stackgan.reparameterise)(mu1, logvar1, jax.random.key(3)))
  np.testing.assert_allclose(samples.mean(0), [1.5, -2.0], atol=0.05)
  np.testing.assert_allclose(samples.std(0), [0.3, 2.0], rtol=0.03)

  ca = stackgan.ConditioningAugmentation(3)
  text = np.random.default_rng(4).normal(size=(2, 7)).astype(np.float32)
  variables = _init(ca, text)
  c, mu2, logvar2 = _apply(ca, variables, text, rngs={"augment": jax.random.key(5)})
  fc = _unbox(variables)["params"]["fc"]
  x = text @ fc["kernel"] + fc["bias"]
  x = x[:, :6] / (1 + np.exp(-x[:, 6:]))  # GLU
  np.testing.assert_allclose(mu2, x[:, :3], atol=1e-5)
  np.testing.assert_allclose(logvar2, x[:, 3:], atol=1e-5)
  again, _, _ = _apply(ca, variables, text, rngs={"augment": jax.random.key(6)})
  assert not np.allclose(c, mu2) and not np.allclose(c, again)  # sampled, from the augment stream


def test_colour_consistency_is_zero_for_equal_statistics():
  low = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
  same = low.repeat(2, 1).repeat(2, 2)  # nearest upsampling keeps mean and covariance
  loss = jax.jit(stackgan.colour_consistency_loss, static_argnums=1)
  assert float(loss([low, same], 50.0)) < 1e-10
  assert float(loss([low, 2 * same], 50.0)) > 1.0


# ---------------------------------------------------------------- DAMSM and attention


def _hand_made_features(b=4, t=3, r=6, d=8):
  """Each caption's words point at distinct regions of its own image; codes are near their sentences."""
  rng = np.random.default_rng(11)
  regions = np.stack([np.roll(np.eye(d)[:r], i, axis=1) for i in range(b)]) + 0.05 * rng.normal(
    size=(b, r, d)
  )
  codes = rng.normal(size=(b, d))
  sentences = codes + 0.1 * rng.normal(size=(b, d))
  return tuple(jnp.asarray(x, F32) for x in (regions, regions[:, :t], codes, sentences))


def test_damsm_losses_score_matching_pairs_lower_than_shuffled():
  regions, words, codes, sentences = _hand_made_features()
  mask = jnp.ones(words.shape[:2], bool).at[1, 2].set(False)
  loss = jax.jit(damsm.damsm_loss)
  matched, _ = loss(regions, codes, words, sentences, mask)
  perm = jnp.array([1, 2, 3, 0])
  shuffled, parts = loss(regions[perm], codes[perm], words, sentences, mask)
  assert float(matched) < float(shuffled)
  w0, w1, attention = jax.jit(damsm.words_loss)(regions, words, mask)
  s0, s1 = jax.jit(damsm.sentence_loss)(codes, sentences)
  assert float(w0 + w1) < float(parts["words_loss"]) and float(s0 + s1) < float(
    parts["sentence_loss"]
  )
  assert attention.shape == (4, 3, 6)
  np.testing.assert_allclose(jnp.sum(attention, -1), 1.0, atol=1e-6)
  # same-class masking removes the off-diagonal competitors: the loss can only go down
  masked, _ = loss(regions[perm], codes[perm], words, sentences, mask, class_ids=jnp.zeros(4))
  assert float(masked) < float(shuffled)


def _torch_words_loss(regions, words, lengths, gamma1=4.0, gamma2=5.0, gamma3=10.0):
  """AttnGAN's `words_loss` + `func_attention` loop, on (B, R, D) regions and (B, T, D) words."""
  b = words.shape[0]
  context = torch.tensor(np.asarray(regions)).transpose(1, 2)  # batch x nef x sourceL
  words_emb = torch.tensor(np.asarray(words)).transpose(1, 2)
  sims = []
  for i in range(b):
    n = int(lengths[i])
    word = words_emb[i, :, :n].unsqueeze(0).repeat(b, 1, 1)
    attn = torch.softmax(torch.bmm(context.transpose(1, 2), word), dim=2)  # over words
    attn = torch.softmax(attn.transpose(1, 2) * gamma1, dim=2)  # over regions
    wei = torch.bmm(context, attn.transpose(1, 2))
    row = torch.nn.functional.cosine_similarity(
      word.transpose(1, 2), wei.transpose(1, 2), dim=2, eps=1e-8
    )
    sims.append(torch.log(torch.exp(row * gamma2).sum(1, keepdim=True)))
  sims = torch.cat(sims, 1) * gamma3
  labels = torch.arange(b)
  ce = torch.nn.functional.cross_entropy
  return float(ce(sims, labels)), float(ce(sims.T, labels))


def test_words_loss_equals_the_reference_loop():
  regions = jax.random.normal(jax.random.key(20), (3, 7, 6))
  words = jax.random.normal(jax.random.key(21), (3, 4, 6))
  lengths = jnp.array([4, 2, 3])
  mask = jnp.arange(4)[None] < lengths[:, None]
  w0, w1, _ = jax.jit(damsm.words_loss)(regions, words, mask)
  r0, r1 = _torch_words_loss(regions, words, lengths)
  np.testing.assert_allclose([float(w0), float(w1)], [r0, r1], rtol=1e-4, atol=TOLERANCE)


def test_word_attention_is_a_distribution_over_real_words():
  h = jax.random.normal(jax.random.key(30), (2, 4, 4, 6))
  words = jax.random.normal(jax.random.key(31), (2, 5, 3))
  mask = jnp.array([[True, True, False, False, False], [True, True, True, True, False]])
  module = attngan.WordAttention()
  variables = _init(module, h, words, mask)
  context, attention = _apply(module, variables, h, words, mask)
  assert context.shape == h.shape and attention.shape == (2, 4, 4, 5)
  np.testing.assert_allclose(jnp.sum(attention, -1), 1.0, atol=1e-6)
  assert float(jnp.max(jnp.where(mask[:, None, None, :], 0.0, attention))) == 0.0
  assert float(jnp.min(jnp.where(mask[:, None, None, :], attention, 1.0))) > 0.0
  _, region_attention = jax.jit(damsm.word_region_attention)(
    words, h.reshape(2, 16, 6)[..., :3], mask
  )
  np.testing.assert_allclose(jnp.sum(region_attention, -1), 1.0, atol=1e-6)


# ---------------------------------------------------------------- parity with the PyTorch reference


def _nchw(x):
  return torch.tensor(np.asarray(x)).permute(0, 3, 1, 2)


def test_stackgan_next_stage_matches_the_reference():
  ngf, ef, b = 8, 3, 2
  h = jax.random.normal(jax.random.key(40), (b, 4, 4, ngf))
  c = jax.random.normal(jax.random.key(41), (b, ef))
  stage = stackgan.NextStage(ngf, num_residual=2)
  variables = _random_stats(_init(stage, h, c, train=True), jax.random.key(42))
  out, _ = _apply(stage, variables, h, c, train=True, mutable=["batch_stats"])
  torch_stage = ref.NEXT_STAGE_G(ngf, ef, 2).train()
  v = _unbox(variables)
  ref.load_stackgan_next_stage(torch_stage, v["params"], v["batch_stats"])
  with torch.no_grad():
    expected = torch_stage(_nchw(h), torch.tensor(np.asarray(c))).permute(0, 2, 3, 1).numpy()
  assert out.shape == (b, 8, 8, ngf // 2)
  np.testing.assert_allclose(out, expected, atol=TOLERANCE)


def test_attngan_next_stage_matches_the_reference():
  ngf, nef, b, t = 4, 6, 2, 5
  h = jax.random.normal(jax.random.key(50), (b, 4, 4, ngf))
  words = jax.random.normal(jax.random.key(51), (b, t, nef))
  # One mask for the batch: the reference repeats the (B, T) mask queryL times along rows
  # ordered b·queryL + q, which pairs row b·queryL + q with caption (b·queryL + q) mod B, so
  # it masks the right words only when all captions share a length; jaxgen masks each caption's own.
  mask = jnp.array([[True, True, True, False, False]] * b)
  stage = attngan.AttnNextStage(ngf, num_residual=2)
  variables = _random_stats(_init(stage, h, words, mask, train=True), jax.random.key(52))
  (out, attention), _ = _apply(
    stage, variables, h, words, mask, train=True, mutable=["batch_stats"]
  )
  torch_stage = ref.ATTN_NEXT_STAGE_G(ngf, nef, 2).train()
  v = _unbox(variables)
  ref.load_attn_next_stage(torch_stage, v["params"], v["batch_stats"])
  with torch.no_grad():
    expected, expected_att = torch_stage(
      _nchw(h), torch.tensor(np.asarray(words)).transpose(1, 2), torch.tensor(~np.asarray(mask))
    )
  np.testing.assert_allclose(out, expected.permute(0, 2, 3, 1).numpy(), atol=TOLERANCE)
  np.testing.assert_allclose(attention, expected_att.permute(0, 2, 3, 1).numpy(), atol=TOLERANCE)


def test_damsm_text_encoder_matches_the_reference():
  cfg = damsm.DAMSMConfig(vocab_size=30, word_dim=12, embed_dim=16)
  tokens = jax.random.randint(jax.random.key(60), (3, 6), 1, 30)
  lengths = jnp.array([4, 6, 2])
  tokens = jnp.where(jnp.arange(6)[None] < lengths[:, None], tokens, 0)
  encoder = damsm.DAMSMTextEncoder(cfg)
  variables = _init(encoder, tokens, lengths)
  words, sentence = _apply(encoder, variables, tokens, lengths)
  torch_encoder = ref.RNN_ENCODER(30, 12, 16).eval()
  ref.load_rnn_encoder(torch_encoder, _unbox(variables)["params"])
  with torch.no_grad():
    expected_words, expected_sentence = torch_encoder(
      torch.tensor(np.asarray(tokens)), torch.tensor(np.asarray(lengths))
    )
  np.testing.assert_allclose(words, expected_words.numpy(), atol=TOLERANCE)
  np.testing.assert_allclose(sentence, expected_sentence.numpy(), atol=TOLERANCE)


# ---------------------------------------------------------------- training


def test_tiny_attngan_takes_optax_steps():
  """Two stages (8, 16 px), a discriminator per stage, the small-CNN DAMSM image encoder; one Adam."""
  b = 3
  arch = dataclasses.replace(TINY_ATTN, num_stages=2)
  z, sentence, words, mask = _tiny_attn_inputs(b)
  gen = attngan.AttnGANGenerator(arch)
  discs = [
    stackgan.StageDiscriminator(4, arch.text_dim, stage=s, base_size=8, condition_first=False)
    for s in range(2)
  ]
  encoder_config = damsm.DAMSMConfig(embed_dim=arch.text_dim, backbone="cnn", cnn_channels=(8, 8))
  image_encoder = damsm.DAMSMImageEncoder(encoder_config)
  reals = [
    jax.random.uniform(jax.random.key(70), (b, s, s, 3), minval=-1, maxval=1) for s in (8, 16)
  ]

  @jax.jit
  def init(z, sentence, words, mask, reals):
    gv = gen.init(RNGS, z, sentence, words, mask)
    return (
      gv,
      [d.init(RNGS, x, sentence) for d, x in zip(discs, reals)],
      image_encoder.init(RNGS, reals[-1]),
    )

  gv, dvs, ev = init(z, sentence, words, mask, reals)
  params = {"g": gv["params"], "d": [v["params"] for v in dvs]}
  stats = {"g": gv["batch_stats"], "d": [v["batch_stats"] for v in dvs]}
  optimizer = optax.adam(2e-4, b1=0.5, b2=0.999)

  def loss_fn(params, stats, key):
    g_vars = {"params": params["g"], "batch_stats": stats["g"]}
    (images, _, mu, logvar), g_state = gen.apply(
      g_vars, z, sentence, words, mask, rngs={"augment": key}, mutable=["batch_stats"]
    )
    fake_logits, d_loss = [], 0.0
    for disc, d_params, d_stats, real, fake in zip(discs, params["d"], stats["d"], reals, images):
      frozen = {"params": jax.lax.stop_gradient(d_params), "batch_stats": d_stats}
      fake_logits.append(disc.apply(frozen, fake, sentence, mutable=["batch_stats"])[0])
      d_vars = {"params": d_params, "batch_stats": d_stats}

      def method(name, disc=disc, d_vars=d_vars):
        return lambda *a: disc.apply(d_vars, *a, method=name, mutable=["batch_stats"])[0]

      fake = jax.lax.stop_gradient(fake)
      d_loss += attngan.attngan_discriminator_loss(
        method("encode"), method("logits"), real, fake, sentence
      )
    g_loss, _ = attngan.attngan_generator_loss(
      fake_logits, image_encoder.apply(ev, images[-1]), words, sentence, mask, mu, logvar
    )
    return g_loss + d_loss, ({"g": g_state["batch_stats"], "d": stats["d"]}, g_loss, d_loss)

  @jax.jit
  def step(params, opt_state, stats, key):
    grads, (stats, g_loss, d_loss) = jax.grad(loss_fn, has_aux=True)(params, stats, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, stats, g_loss, d_loss

  opt_state = optimizer.init(params)
  first = params
  for i in range(3):
    params, opt_state, stats, g_loss, d_loss = step(params, opt_state, stats, jax.random.key(i))
    assert np.isfinite(float(g_loss)) and np.isfinite(float(d_loss))
  moved = jax.tree_util.tree_map(
    lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(), first, params
  )
  unmoved = [
    jax.tree_util.keystr(k) for k, m in jax.tree_util.tree_flatten_with_path(moved)[0] if m == 0
  ]
  assert not unmoved, unmoved  # every parameter of G and both Ds gets a gradient


def test_stackgan_losses_on_a_tiny_pair():
  b = 3
  gen = stackgan.StackGANGenerator(dataclasses.replace(TINY_STACK, num_stages=2))
  disc = stackgan.StageDiscriminator(4, TINY_STACK.condition_dim, stage=0, base_size=8)
  text = jax.random.normal(jax.random.key(71), (b, TINY_STACK.text_dim))
  z = jax.random.normal(jax.random.key(72), (b, TINY_STACK.z_dim))

  @jax.jit
  def losses(text, z):
    gv = gen.init(RNGS, z, text)
    (images, mu, logvar), _ = gen.apply(gv, z, text, rngs=RNGS, mutable=["batch_stats"])
    dv = disc.init(RNGS, images[0], mu)

    def logits(x):
      return disc.apply(dv, x, mu, mutable=["batch_stats"])[0]

    d_loss = stackgan.stackgan_discriminator_loss(
      logits(images[0]), logits(images[0][::-1]), logits(images[0])
    )
    no_uncond = stackgan.stackgan_discriminator_loss(
      logits(images[0]), logits(images[0][::-1]), logits(images[0]), uncond_weight=0.0
    )
    g_loss, parts = stackgan.stackgan_generator_loss(
      [logits(images[0])], mu, logvar, fake_images=images, colour_weight=50.0
    )
    return images, d_loss, no_uncond, g_loss, parts

  images, d_loss, no_uncond, g_loss, parts = losses(text, z)
  assert all(float(jnp.max(jnp.abs(im))) <= 1.0 for im in images)
  assert np.isfinite([float(d_loss), float(no_uncond), float(g_loss)]).all()
  assert float(parts["colour"]) > 0 and float(parts["kl"]) > 0
  assert float(d_loss) > float(no_uncond)  # three unconditional BCE terms added, none halved
