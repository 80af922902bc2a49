"""TEMOS VAE: faithful sizes, KL math, padding, single-forward generation, the loss falls."""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.configs import t2m_vae_synthetic
from jaxgen.models.motion_vae import TEMOS, MotionVAEConfig, gaussian_kl
from jaxgen.nn.partitioning import unannotated_params
from jaxgen.tasks.motion.t2m_vae import MotionVAETask

TINY = MotionVAEConfig(
  input_dim=263, latent_dim=16, ff_size=32, num_layers=1, num_heads=2, dropout=0.1, text_dim=16
)


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(tree))))


def test_faithful_parameter_counts():
  """Mathux/TEMOS actor modules at latent 256, ff 1024, 6 layers, 4 heads, HumanML3D's 263
  features: ActorAgnosticEncoder 4,806,656; DistilbertActorAgnosticEncoder without its
  frozen DistilBERT (ReLU + Linear(768, 256), mu/logvar tokens, 6 layers) 4,935,936;
  ActorAgnosticDecoder 6,388,231 (torch.nn.Transformer{En,De}coderLayer sizes)."""
  model = TEMOS(MotionVAEConfig(**t2m_vae_synthetic.vae_faithful(), input_dim=263, text_dim=768))
  rng = jax.random.PRNGKey(0)
  mask = jnp.ones((1, 8), bool)
  text = jax.eval_shape(
    lambda: model.init(rng, jnp.zeros((1, 8, 768)), mask, method=TEMOS.encode_text_states)
  )
  motion = jax.eval_shape(
    lambda: model.init(rng, jnp.zeros((1, 8, 263)), mask, method=TEMOS.encode_motion)
  )
  decoder = jax.eval_shape(lambda: model.init(rng, jnp.zeros((1, 256)), mask, method=TEMOS.decode))
  assert count_params(text) == 4_935_936
  assert count_params(motion) == 4_806_656
  assert count_params(decoder) == 6_388_231
  assert unannotated_params(decoder) == []


def _torch_temos(params, config):
  """TEMOS's ActorAgnosticEncoder and ActorAgnosticDecoder (frames_per_token 1) in PyTorch."""
  import torch_layers  # pylint: disable=g-import-not-at-top
  from torch_layers import linear, torch  # pylint: disable=g-import-not-at-top

  c = config
  stack = lambda make, p: [
    make(p[f"layers_{i}"], c.latent_dim, c.num_heads, c.ff_size, norm_first=c.norm_first)
    for i in range(c.num_layers)
  ]
  encoder = params["motion_encoder"]
  encoder_layers = stack(torch_layers.encoder_layer, encoder)
  decoder_layers = stack(torch_layers.decoder_layer, params["motion_decoder"])
  skel_embedding, final_layer = (
    linear(encoder["input_proj"]),
    linear(params["motion_decoder"]["final_layer"]),
  )
  tokens = torch.tensor(np.stack([encoder["mu_token"], encoder["logvar_token"]]))
  pe = torch_layers.sinusoidal_table(1000, c.latent_dim)

  def encode(features, mask):  # (B, T, D), (B, T) bool
    x = skel_embedding(features).permute(1, 0, 2)
    x = torch.cat([tokens[:, None].expand(2, x.shape[1], -1), x], 0)
    x = x + pe[: x.shape[0], None]
    padding = ~torch.cat([torch.ones(mask.shape[0], 2, dtype=torch.bool), mask], 1)
    for layer in encoder_layers:
      x = layer(x, src_key_padding_mask=padding)
    return x[0], x[1]

  def decode(z, mask):
    x = pe[: mask.shape[1], None].expand(-1, z.shape[0], -1)
    for layer in decoder_layers:
      x = layer(x, z[None], tgt_key_padding_mask=~mask)
    return final_layer(x).permute(1, 0, 2) * mask[..., None]

  return encode, decode


@pytest.mark.parametrize("norm_first", [False, True])
def test_motion_encoder_and_decoder_match_pytorch_temos(norm_first):
  torch = pytest.importorskip("torch")
  config = MotionVAEConfig(
    **{**TINY.__dict__, "num_layers": 2, "dropout": 0.0, "norm_first": norm_first}
  )
  model = TEMOS(config)
  rng = np.random.default_rng(0)
  motion = rng.normal(size=(3, 10, 263)).astype(np.float32)
  mask = np.arange(10)[None] < np.array([10, 7, 4])[:, None]
  z = rng.normal(size=(3, 16)).astype(np.float32)
  key = jax.random.PRNGKey(0)
  params = model.init(key, motion, mask, method=TEMOS.encode_motion)["params"]
  params.update(model.init(key, z, mask, method=TEMOS.decode)["params"])
  params = jax.tree.map(np.asarray, nn.meta.unbox(params))
  mu, logvar = model.apply({"params": params}, motion, mask, method=TEMOS.encode_motion)
  decoded = model.apply({"params": params}, z, mask, method=TEMOS.decode)
  encode, decode = _torch_temos(params, config)
  with torch.no_grad():
    mu_ref, logvar_ref = encode(torch.tensor(motion), torch.tensor(mask))
    decoded_ref = decode(torch.tensor(z), torch.tensor(mask))
  np.testing.assert_allclose(mu, mu_ref.numpy(), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(logvar, logvar_ref.numpy(), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(decoded, decoded_ref.numpy(), atol=1e-4, rtol=1e-4)


def test_gaussian_kl_matches_torch():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  mu_q, lv_q, mu_p, lv_p = (rng.normal(size=(3, 5)).astype(np.float32) for _ in range(4))
  expected = torch.distributions.kl_divergence(
    torch.distributions.Normal(torch.tensor(mu_q), torch.tensor(np.exp(lv_q / 2))),
    torch.distributions.Normal(torch.tensor(mu_p), torch.tensor(np.exp(lv_p / 2))),
  ).numpy()
  np.testing.assert_allclose(gaussian_kl(mu_q, lv_q, mu_p, lv_p), expected, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_model():
  model = TEMOS(TINY, text=dict(vocab_size=20, max_length=6, width=16, num_layers=1, num_heads=2))
  tokens = jnp.ones((2, 6), jnp.int32)
  variables = jax.jit(model.init)(
    jax.random.PRNGKey(0),
    tokens,
    jnp.ones((2, 6), bool),
    jnp.zeros((2, 12, 263)),
    jnp.ones((2, 12), bool),
  )
  return model, nn.meta.unbox(variables)


def test_padding_does_not_change_the_posterior_and_decoder_zeroes_it(tiny_model):
  model, variables = tiny_model
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 12, 263))
  mask = jnp.arange(12)[None] < 7
  padded = jnp.where(mask[..., None], x, 5.0)
  encode = jax.jit(lambda x, m: model.apply(variables, x, m, method=TEMOS.encode_motion))
  mu_a, lv_a = encode(padded, mask)
  mu_b, lv_b = encode(x[:, :7], jnp.ones((1, 7), bool))
  np.testing.assert_allclose(mu_a, mu_b, atol=1e-5)
  np.testing.assert_allclose(lv_a, lv_b, atol=1e-5)
  out = model.apply(variables, mu_a, mask, method=TEMOS.decode)
  assert out.shape == (1, 12, 263)
  np.testing.assert_array_equal(out[0, 7:], 0.0)


def test_logvar_offset_shifts_both_posteriors_only_in_log_variance(tiny_model):
  model, variables = tiny_model
  shifted = TEMOS(MotionVAEConfig(**{**TINY.__dict__, "logvar_offset": -4.6}), text=model.text)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 12, 263))
  mask, tokens = jnp.ones((2, 12), bool), jnp.arange(12).reshape(2, 6) % 20
  for method, args in (
    (TEMOS.encode_motion, (x, mask)),
    (TEMOS.encode_text, (tokens, jnp.ones((2, 6), bool))),
  ):
    mu, logvar = model.apply(variables, *args, method=method)
    mu_s, logvar_s = shifted.apply(variables, *args, method=method)
    np.testing.assert_allclose(mu_s, mu, atol=1e-6)
    np.testing.assert_allclose(logvar_s, logvar - 4.6, atol=1e-5)


def test_frames_per_token_concatenates_consecutive_frames():
  """With p frames per token the motion encoder and decoder act as the p=1 model on
  (T/p, p*D) motions, with a token real when any of its frames is."""
  p, frames, length = 4, 12, 7
  folded = MotionVAEConfig(**{**TINY.__dict__, "frames_per_token": p})
  plain = MotionVAEConfig(**{**TINY.__dict__, "input_dim": p * 263, "max_frames": 196 // p})
  model, reference = TEMOS(folded), TEMOS(plain)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, frames, 263))
  mask = jnp.arange(frames)[None] < jnp.array([[length], [frames]])
  token_mask = jnp.arange(frames // p)[None] < jnp.array([[2], [3]])
  rng = jax.random.PRNGKey(0)
  variables = model.init(rng, x, mask, method=TEMOS.encode_motion)
  variables["params"].update(
    model.init(rng, jnp.zeros((2, 16)), mask, method=TEMOS.decode)["params"]
  )
  mu, logvar = model.apply(variables, x, mask, method=TEMOS.encode_motion)
  mu_ref, logvar_ref = reference.apply(
    variables, x.reshape(2, frames // p, p * 263), token_mask, method=TEMOS.encode_motion
  )
  np.testing.assert_allclose(mu, mu_ref, atol=1e-6)
  np.testing.assert_allclose(logvar, logvar_ref, atol=1e-6)
  out = model.apply(variables, mu, mask, method=TEMOS.decode)
  out_ref = reference.apply(variables, mu, token_mask, method=TEMOS.decode).reshape(2, frames, 263)
  np.testing.assert_allclose(out, out_ref * mask[..., None], atol=1e-6)
  np.testing.assert_array_equal(out[0, length:], 0.0)
  with pytest.raises(ValueError, match="frames_per_token"):
    MotionVAEConfig(**{**TINY.__dict__, "frames_per_token": 3})
  with pytest.raises(ValueError, match="divisible by frames_per_token=4"):
    model.apply(variables, x[:, :10], mask[:, :10], method=TEMOS.encode_motion)


def _tiny_task():
  config = t2m_vae_synthetic.get_config()
  config.text.update(max_length=24, width=16, num_layers=1, num_heads=2)
  config.vae = dict(latent_dim=16, ff_size=32, num_layers=1, num_heads=2, dropout=0.0)
  return MotionVAETask(config)


def _batch(task, batch=4, frames=24):
  """Shorter than real batches (196 frames), to keep the test fast; the model takes any length."""
  rng = np.random.default_rng(0)
  lengths = np.array([24, 12, 16, 20][:batch])
  mask = np.arange(frames)[None] < lengths[:, None]
  # Motion determined by the caption, so the text branch has something to learn.
  captions = ["a person walks forward", "someone jumps twice", "a man runs", "a woman sits down"][
    :batch
  ]
  tokens, text_mask = task.tokenize(captions)
  base = rng.normal(size=(batch, 1, 263)).astype(np.float32)
  motion = np.sin(np.arange(frames)[None, :, None] / 10.0 + base) * mask[..., None]
  return dict(
    motion=jnp.asarray(motion, jnp.float32),
    motion_mask=jnp.asarray(mask),
    text_tokens=jnp.asarray(tokens),
    text_mask=jnp.asarray(text_mask),
  )


def test_loss_falls_and_kl_is_reported():
  task = _tiny_task()
  batch = _batch(task)
  params = nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0), batch))
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, rng):
    (loss, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, rng)
    changes, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, changes), opt_state, loss, metrics

  losses = []
  for i in range(25):
    params, opt_state, loss, metrics = step(params, opt_state, jax.random.PRNGKey(i))
    losses.append(float(loss))
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])
  assert float(metrics["kl"]) > 0 and np.isfinite(float(metrics["latent"]))


def test_sampling_is_one_forward_pass_without_loops():
  task = _tiny_task()
  batch = _batch(task, batch=2)
  params = nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0), batch))
  fn = lambda p, t, m, mm, r: task.sample.__wrapped__(
    task, p, t, m, mm, r, sample_mean=False, fact=1.0
  )
  jaxpr = jax.make_jaxpr(fn)(
    params, batch["text_tokens"], batch["text_mask"], batch["motion_mask"], jax.random.PRNGKey(0)
  )
  text = str(jaxpr)
  assert "scan" not in text and "while" not in text
  out = task.sample(
    params,
    batch["text_tokens"],
    batch["text_mask"],
    batch["motion_mask"],
    jax.random.PRNGKey(0),
    sample_mean=True,
    fact=1.0,
  )
  assert out.shape == batch["motion"].shape
  np.testing.assert_array_equal(np.asarray(out)[1, 12:], 0.0)


def test_generate_follows_the_sample_protocol():
  task = _tiny_task()
  batch = _batch(task, batch=2)
  params = nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0), batch))
  assert task.sample_spec.options == ("sample_mean",)
  conditions = task.conditions(["a person walks forward", "someone jumps twice"], seconds=1.0)
  samples = task.generate(params, conditions, jax.random.PRNGKey(1), sample_mean=True)
  assert samples["motion"].shape == (2, task.max_frames, 263)
  np.testing.assert_array_equal(samples["length"], [20, 20])
  motion = samples["motion"]
  assert np.abs(motion[:, 20:]).max() == 0 and np.abs(motion[:, :20]).max() > 0
  with pytest.raises(ValueError, match="sample_mean: expected True or False"):
    task.generate(params, conditions, jax.random.PRNGKey(1), sample_mean="yes")


def test_named_errors(tiny_model):
  model, variables = tiny_model
  with pytest.raises(ValueError, match="motion: expected"):
    model.apply(
      variables, jnp.zeros((1, 12, 250)), jnp.ones((1, 12), bool), method=TEMOS.encode_motion
    )
  with pytest.raises(ValueError, match="text states: expected"):
    model.apply(
      variables, jnp.zeros((1, 6, 8)), jnp.ones((1, 6), bool), method=TEMOS.encode_text_states
    )
  with pytest.raises(ValueError, match="latent_dim .* divisible by num_heads"):
    MotionVAEConfig(latent_dim=10, num_heads=3)
  config = t2m_vae_synthetic.get_config()
  config.text.encoder = "bert"
  with pytest.raises(ValueError, match="text.encoder: expected one of"):
    MotionVAETask(config)
  with pytest.raises(ValueError, match="text.width .* must equal"):
    TEMOS(TINY, text=dict(vocab_size=5, max_length=4, width=8, num_layers=1, num_heads=2)).init(
      jax.random.PRNGKey(0),
      jnp.ones((1, 4), jnp.int32),
      jnp.ones((1, 4), bool),
      jnp.zeros((1, 4, 263)),
      jnp.ones((1, 4), bool),
    )
