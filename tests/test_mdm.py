"""MDM denoiser: the faithful parameter count, parity with a PyTorch restatement, masks, errors."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.models.motion_transformer import MDM, MDMConfig, count_params
from jaxgen.nn.embeddings import sinusoidal_positions
from jaxgen.nn import unannotated_params

TINY = MDMConfig(
  feature_dim=11, latent_dim=16, ff_size=24, num_layers=2, num_heads=4, dropout=0.1, text_dim=8
)


def _init(config, batch=2, frames=7):
  x = jnp.zeros((batch, frames, config.feature_dim))
  return MDM(config).init(
    jax.random.PRNGKey(0), x, jnp.zeros((batch,), jnp.int32), jnp.zeros((batch, config.text_dim))
  )


def test_faithful_humanml3d_config_has_the_reference_parameter_count():
  # model/mdm.py (trans_enc, hml_vec, latent 512, ff 1024, 8 layers), counted as its
  # parameters_wo_clip(): input 263*512+512, timestep MLP 2*(512^2+512), embed_text
  # 512^2+512, per layer 4*(512^2+512) + 512*1024+1024 + 1024*512+512 + 4*512, output 512*263+263.
  per_layer = 4 * (512 * 512 + 512) + (512 * 1024 + 1024) + (1024 * 512 + 512) + 4 * 512
  expected = (
    (263 * 512 + 512)
    + 2 * (512 * 512 + 512)
    + (512 * 512 + 512)
    + 8 * per_layer
    + (512 * 263 + 263)
  )
  assert expected == 17_880_327
  config = MDMConfig.humanml3d()
  abstract = jax.eval_shape(
    MDM(config).init,
    jax.random.PRNGKey(0),
    jnp.zeros((2, 196, 263)),
    jnp.zeros((2,), jnp.int32),
    jnp.zeros((2, 512)),
  )
  assert count_params(abstract["params"]) == expected
  assert unannotated_params(abstract) == []


def test_sinusoidal_positions_match_mdm_table():
  dim, positions = 8, np.arange(5)
  div = np.exp(np.arange(0, dim, 2) * (-math.log(10000.0) / dim))
  table = np.zeros((5, dim))
  table[:, 0::2] = np.sin(positions[:, None] * div)
  table[:, 1::2] = np.cos(positions[:, None] * div)
  np.testing.assert_allclose(sinusoidal_positions(jnp.arange(5), dim), table, atol=1e-6)


def _torch_mdm(params, config):
  """MDM's forward (trans_enc, no CLIP: the text embedding is an input) in PyTorch."""
  import torch_layers  # pylint: disable=g-import-not-at-top
  from torch_layers import linear, torch  # pylint: disable=g-import-not-at-top

  nn = torch.nn
  d = config.latent_dim
  layers = [
    torch_layers.encoder_layer(
      params[f"layers_{i}"], d, config.num_heads, config.ff_size, norm_first=config.norm_first
    )
    for i in range(config.num_layers)
  ]
  pe = torch_layers.sinusoidal_table(5000, d)
  time_mlp = nn.Sequential(
    linear(params["embed_timestep_linear_1"]), nn.SiLU(), linear(params["embed_timestep_linear_2"])
  )
  embed_text, pose_in = linear(params["embed_text"]), linear(params["input_process"])
  pose_out = linear(params["output_process"])

  def forward(x, t, text):  # x (B, T, D): MDM's (B, D, 1, T) layout is only a transpose
    emb = time_mlp(pe[t]) + embed_text(text)  # (B, d)
    seq = torch.cat([emb[None], pose_in(x.permute(1, 0, 2))], 0)  # (T+1, B, d)
    seq = seq + pe[: seq.shape[0]][:, None]
    for layer in layers:
      seq = layer(seq)
    return pose_out(seq[1:]).permute(1, 0, 2)

  return forward


@pytest.mark.parametrize("norm_first", [False, True])
def test_matches_a_pytorch_restatement_of_mdm_on_random_weights(norm_first):
  torch = pytest.importorskip("torch")
  config = dataclasses.replace(TINY, norm_first=norm_first)
  variables = _init(config)
  params = jax.tree.map(np.asarray, nn.meta.unbox(variables["params"]))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 9, TINY.feature_dim)).astype(np.float32)
  t = np.array([0, 417, 999])
  text = rng.normal(size=(3, TINY.text_dim)).astype(np.float32)
  ours = MDM(config).apply({"params": params}, x, t, text)
  with torch.no_grad():
    theirs = _torch_mdm(params, config)(torch.tensor(x), torch.tensor(t), torch.tensor(text))
  np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=1e-4, rtol=1e-4)


def test_padding_mask_makes_real_frames_independent_of_padding():
  config = MDMConfig(**{**TINY.__dict__, "mask_padding": True})
  variables = _init(config)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 7, config.feature_dim)).astype(np.float32)
  mask = np.arange(7)[None] < np.array([[4], [7]])
  t, text = np.array([5, 6]), rng.normal(size=(2, config.text_dim)).astype(np.float32)
  out = MDM(config).apply(variables, x, t, text, mask)
  x2 = x.copy()
  x2[0, 4:] = 100.0
  out2 = MDM(config).apply(variables, x2, t, text, mask)
  np.testing.assert_allclose(out[0, :4], out2[0, :4], atol=1e-5)
  np.testing.assert_allclose(out[1], out2[1], atol=1e-6)


def test_dropout_only_in_training():
  variables = _init(TINY)
  x = jnp.ones((2, 7, TINY.feature_dim))
  args = (x, jnp.array([1, 2]), jnp.ones((2, TINY.text_dim)))
  a = MDM(TINY).apply(variables, *args)
  np.testing.assert_array_equal(a, MDM(TINY).apply(variables, *args))
  b = MDM(TINY).apply(variables, *args, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  assert not np.allclose(a, b)


def test_bad_inputs_raise_named_errors():
  variables = _init(TINY)
  model = MDM(TINY)
  with pytest.raises(ValueError, match="x: expected"):
    model.apply(
      variables, jnp.zeros((2, 7, 5)), jnp.zeros((2,), jnp.int32), jnp.zeros((2, TINY.text_dim))
    )
  with pytest.raises(ValueError, match="text_embedding"):
    model.apply(
      variables, jnp.zeros((2, 7, TINY.feature_dim)), jnp.zeros((2,), jnp.int32), jnp.zeros((2, 3))
    )
  with pytest.raises(ValueError, match="latent_dim"):
    MDMConfig(latent_dim=30, num_heads=4)
  with pytest.raises(ValueError, match="activation"):
    MDMConfig(activation="swish")


def test_frames_per_token_folds_frames_and_masks_whole_tokens():
  config = MDMConfig(**{**TINY.__dict__, "frames_per_token": 4, "mask_padding": True})
  variables = _init(config, frames=8)
  assert variables["params"]["input_process"]["kernel"].value.shape == (4 * 11, 16)
  rng = np.random.default_rng(2)
  x = rng.normal(size=(1, 8, 11)).astype(np.float32)
  mask = np.arange(8)[None] < 3  # frames 0-2 real: token 0 real, token 1 padding
  args = (np.array([3]), rng.normal(size=(1, 8)).astype(np.float32), mask)
  out = MDM(config).apply(variables, x, args[0], args[1], args[2])
  x2 = x.copy()
  x2[0, 4:] = 50.0
  np.testing.assert_allclose(out[0, :4], MDM(config).apply(variables, x2, *args)[0, :4], atol=1e-5)
  with pytest.raises(ValueError, match="frames_per_token"):
    MDM(config).apply(variables, x[:, :6], *args)


def test_text_tokens_join_the_sequence_and_a_false_mask_drops_them():
  config = MDMConfig(**{**TINY.__dict__, "text_token_dim": 6})
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 7, 11)).astype(np.float32)
  t, pooled = np.array([3, 9]), rng.normal(size=(2, 8)).astype(np.float32)
  states = rng.normal(size=(2, 5, 6)).astype(np.float32)
  variables = MDM(config).init(
    jax.random.PRNGKey(0), x, t, pooled, text_states=states, text_mask=np.ones((2, 5), bool)
  )
  assert variables["params"]["embed_text_tokens"]["kernel"].value.shape == (6, 16)
  apply = lambda s, m: MDM(config).apply(variables, x, t, pooled, text_states=s, text_mask=m)
  on = np.ones((2, 5), bool)
  assert not np.allclose(apply(states, on), apply(states * 2, on))
  off = np.zeros((2, 5), bool)
  np.testing.assert_allclose(apply(states, off), apply(states * 2, off), atol=1e-6)
  with pytest.raises(ValueError, match="text_states"):
    MDM(config).apply(variables, x, t, pooled)
