"""EDGE denoiser: faithful parameter counts, rotary embeddings, parity with a PyTorch
restatement of the reference `DanceDecoder` through the state-dict map, guidance masks, errors."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.convert.edge import (
  checkpoint_state_dict,
  edge_from_torch,
  edge_to_torch,
  rotary_buffer_names,
)
from jaxgen.convert.keymap import ConversionError
from jaxgen.models.edge import EDGE, EDGEConfig, abstract_variables, condition_keep_mask
from jaxgen.models.motion_transformer import count_params
from jaxgen.nn import unannotated_params
from jaxgen.nn.rotary import apply_rotary

torch = pytest.importorskip("torch")
F = torch.nn.functional

TINY = EDGEConfig(
  pose_dim=7, seq_len=8, music_dim=5, latent_dim=32, ff_size=48, num_layers=2, num_heads=4
)
BATCH, FRAMES = 3, 8


# --- The reference `model/model.py` restated in PyTorch (same module names and layout). ---


class TorchRotary(torch.nn.Module):
  """rotary_embedding_torch.RotaryEmbedding(dim), freqs_for="lang", as EDGE uses it."""

  def __init__(self, dim):
    super().__init__()
    self.register_buffer("freqs", 1.0 / 10000 ** (torch.arange(0, dim, 2).float() / dim))

  def rotate_queries_or_keys(self, t):
    angles = torch.arange(t.shape[-2]).float()[:, None] * self.freqs[None]
    angles = angles.repeat_interleave(2, dim=-1)
    pairs = t.reshape(*t.shape[:-1], -1, 2)
    half_turn = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(t.shape)
    return t * angles.cos() + half_turn * angles.sin()


class TorchEncoderLayer(torch.nn.Module):
  def __init__(self, d, heads, ff, rotary):
    super().__init__()
    self.self_attn = torch.nn.MultiheadAttention(d, heads, batch_first=True)
    self.linear1, self.linear2 = torch.nn.Linear(d, ff), torch.nn.Linear(ff, d)
    self.norm1, self.norm2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
    self.rotary = rotary

  def forward(self, x):
    h = self.norm1(x)
    qk = self.rotary.rotate_queries_or_keys(h)
    x = x + self.self_attn(qk, qk, h, need_weights=False)[0]
    return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class TorchFiLM(torch.nn.Module):
  def __init__(self, d):
    super().__init__()
    self.block = torch.nn.Sequential(torch.nn.Mish(), torch.nn.Linear(d, 2 * d))

  def forward(self, y, t):
    scale, shift = self.block(t)[:, None].chunk(2, dim=-1)
    return (scale + 1) * y + shift


class TorchDecoderLayer(torch.nn.Module):
  def __init__(self, d, heads, ff, rotary):
    super().__init__()
    self.self_attn = torch.nn.MultiheadAttention(d, heads, batch_first=True)
    self.multihead_attn = torch.nn.MultiheadAttention(d, heads, batch_first=True)
    self.linear1, self.linear2 = torch.nn.Linear(d, ff), torch.nn.Linear(ff, d)
    self.norm1, self.norm2, self.norm3 = (torch.nn.LayerNorm(d) for _ in range(3))
    self.film1, self.film2, self.film3 = (TorchFiLM(d) for _ in range(3))
    self.rotary = rotary

  def forward(self, x, memory, t):
    rot = self.rotary.rotate_queries_or_keys
    h = self.norm1(x)
    x = x + self.film1(self.self_attn(rot(h), rot(h), h, need_weights=False)[0], t)
    h = self.norm2(x)
    x = x + self.film2(self.multihead_attn(rot(h), rot(memory), memory, need_weights=False)[0], t)
    return x + self.film3(self.linear2(F.gelu(self.linear1(self.norm3(x)))), t)


class TorchStack(torch.nn.Module):
  def __init__(self, layers):
    super().__init__()
    self.stack = torch.nn.ModuleList(layers)


class TorchSinusoidal(torch.nn.Module):
  def __init__(self, dim):
    super().__init__()
    self.dim = dim

  def forward(self, t):
    half = self.dim // 2
    freqs = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))
    angles = t[:, None] * freqs[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class TorchDanceDecoder(torch.nn.Module):
  def __init__(self, c):
    super().__init__()
    d = c.latent_dim
    self.rotary = TorchRotary(d)
    self.time_mlp = torch.nn.Sequential(
      TorchSinusoidal(d), torch.nn.Linear(d, 4 * d), torch.nn.Mish()
    )
    self.to_time_cond = torch.nn.Sequential(torch.nn.Linear(4 * d, d))
    self.to_time_tokens = torch.nn.Sequential(torch.nn.Linear(4 * d, 2 * d))
    self.null_cond_embed = torch.nn.Parameter(torch.randn(1, c.seq_len, d))
    self.null_cond_hidden = torch.nn.Parameter(torch.randn(1, d))
    self.norm_cond = torch.nn.LayerNorm(d)
    self.input_projection = torch.nn.Linear(c.pose_dim, d)
    self.cond_encoder = torch.nn.Sequential(
      *(TorchEncoderLayer(d, c.num_heads, c.ff_size, self.rotary) for _ in range(2))
    )
    self.cond_projection = torch.nn.Linear(c.music_dim, d)
    self.non_attn_cond_projection = torch.nn.Sequential(
      torch.nn.LayerNorm(d), torch.nn.Linear(d, d), torch.nn.SiLU(), torch.nn.Linear(d, d)
    )
    self.seqTransDecoder = TorchStack(
      [TorchDecoderLayer(d, c.num_heads, c.ff_size, self.rotary) for _ in range(c.num_layers)]
    )
    self.final_layer = torch.nn.Linear(d, c.pose_dim)

  def forward(self, x, cond_embed, times, keep_mask):
    x = self.input_projection(x)
    cond_tokens = self.cond_encoder(self.cond_projection(cond_embed))
    cond_tokens = torch.where(keep_mask[:, None, None], cond_tokens, self.null_cond_embed)
    cond_hidden = self.non_attn_cond_projection(cond_tokens.mean(dim=-2))
    t_hidden = self.time_mlp(times)
    t = self.to_time_cond(t_hidden)
    t_tokens = self.to_time_tokens(t_hidden).reshape(len(times), 2, -1)
    t = t + torch.where(keep_mask[:, None], cond_hidden, self.null_cond_hidden)
    memory = self.norm_cond(torch.cat((cond_tokens, t_tokens), dim=-2))
    for layer in self.seqTransDecoder.stack:
      x = layer(x, memory, t)
    return self.final_layer(x)


# --- Fixtures. ---


def torch_reference(config, seed=0):
  """The restated reference at its PyTorch init; LayerNorms moved off 1/0 so that they matter."""
  torch.manual_seed(seed)
  model = TorchDanceDecoder(config).eval()
  with torch.no_grad():
    for name, parameter in model.named_parameters():
      if "norm" in name:
        parameter.add_(0.1 * torch.randn_like(parameter))
  return model


def torch_output(model, x, music, times, keep):
  with torch.no_grad():
    arrays = (x, music, times, np.asarray(keep))
    return model(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)).numpy()


@pytest.fixture(scope="module")
def reference():
  # One thread: these tiny matmuls run ~100x slower when torch's pool contends for busy cores.
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield torch_reference(TINY)
  torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def state_dict(reference):
  return {name: tensor.detach().numpy().copy() for name, tensor in reference.state_dict().items()}


@pytest.fixture(scope="module")
def params(state_dict):
  return edge_from_torch(state_dict, TINY)


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(BATCH, FRAMES, TINY.pose_dim)).astype(np.float32)
  music = rng.normal(size=(BATCH, FRAMES, TINY.music_dim)).astype(np.float32)
  times = np.array([0.0, 417.0, 999.0], np.float32)
  return x, music, times


@pytest.fixture(scope="module")
def apply(params):
  model = EDGE(TINY)

  @jax.jit
  def run(x, music, times, keep_mask):
    return model.apply({"params": params}, x, music, times, keep_mask=keep_mask)

  return run


# --- Tests. ---


@pytest.mark.parametrize(
  "config, expected", [(EDGEConfig(), 47_024_791), (EDGEConfig.jukebox(), 49_464_471)]
)
def test_faithful_config_has_the_reference_parameter_count(config, expected):
  # EDGE.py prints sum(p.numel()) of DanceDecoder(151, 150, 512, 1024, 8 layers, 8 heads, 35 | 4800).
  variables = abstract_variables(config)
  assert count_params(variables["params"]) == expected
  assert unannotated_params(variables) == []


def test_rotary_turns_feature_pairs_like_complex_phases():
  x = np.random.default_rng(1).normal(size=(2, 5, 6)).astype(np.float32)
  pairs = x[..., 0::2] + 1j * x[..., 1::2]  # independent statement: z_i * exp(i p f_i)
  frequencies = 10000.0 ** (-np.arange(0, 6, 2) / 6)
  turned = pairs * np.exp(1j * np.arange(5)[:, None] * frequencies[None])
  expected = np.stack([turned.real, turned.imag], axis=-1).reshape(x.shape)
  rotate = jax.jit(apply_rotary, static_argnums=1)  # one compile, not one per operation
  np.testing.assert_allclose(rotate(x, None), expected, atol=1e-5)
  partial = rotate(x, 4)  # only the first 4 features turn
  np.testing.assert_array_equal(partial[..., 4:], x[..., 4:])
  with pytest.raises(ValueError, match="dim: expected at most the 6 features"):
    apply_rotary(jnp.asarray(x), dim=8)


@pytest.mark.parametrize("keep", [(True, True, True), (False, False, False), (True, False, True)])
def test_matches_the_reference_with_and_without_music(reference, apply, inputs, keep):
  x, music, times = inputs
  keep = np.array(keep)
  expected = torch_output(reference, x, music, times, keep)
  out = np.asarray(apply(x, music, times, keep))
  assert out.shape == (BATCH, FRAMES, TINY.pose_dim)
  assert np.abs(out - expected).max() <= 1e-4
  assert np.abs(expected).mean() > 0.1  # a real signal, not a vanishing output


def test_state_dict_round_trip_is_exact_and_loads_strictly(reference, state_dict, params):
  exported = edge_to_torch(params, TINY)
  assert sorted(exported) == sorted(state_dict)
  for name, value in state_dict.items():
    np.testing.assert_array_equal(exported[name], value, err_msg=name)
  fresh = TorchDanceDecoder(TINY)
  fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
  # One rotary buffer per owner: the model, 2 music layers, num_layers decoder layers.
  assert len(rotary_buffer_names(TINY)) == 1 + 2 + TINY.num_layers


def test_dropped_condition_ignores_the_music_and_kept_one_uses_it(apply, inputs):
  x, music, times = inputs
  other = music[::-1] * 2.0
  drop, keep = np.zeros(BATCH, bool), np.ones(BATCH, bool)
  np.testing.assert_array_equal(apply(x, music, times, drop), apply(x, other, times, drop))
  assert np.abs(apply(x, music, times, keep) - apply(x, other, times, keep)).max() > 1e-2


def test_condition_keep_mask_keeps_with_probability_one_minus_p():
  assert condition_keep_mask(None, 4, 0.0).tolist() == [True] * 4
  assert condition_keep_mask(None, 4, 1.0).tolist() == [False] * 4
  kept = jax.jit(condition_keep_mask, static_argnums=(1, 2))(jax.random.PRNGKey(0), 20_000, 0.25)
  assert abs(float(kept.mean()) - 0.75) < 0.015  # 5 standard errors
  with pytest.raises(ValueError, match="rng: a random key is needed"):
    condition_keep_mask(None, 4, 0.25)


def test_cond_drop_prob_drops_whole_rows_at_random(params, apply, inputs):
  x, music, times = inputs
  kept = np.asarray(apply(x, music, times, np.ones(BATCH, bool)))
  dropped = np.asarray(apply(x, music, times, np.zeros(BATCH, bool)))
  model, variables = EDGE(TINY), {"params": params}

  @jax.jit
  def draw(key):
    return model.apply(variables, x, music, times, cond_drop_prob=0.5, rngs={"dropout": key})

  outcomes = []
  for key in jax.random.split(jax.random.PRNGKey(3), 6):
    drawn = draw(key)
    for row in range(BATCH):
      is_kept = np.allclose(drawn[row], kept[row], atol=1e-6)
      assert is_kept or np.allclose(drawn[row], dropped[row], atol=1e-6)
      outcomes.append(is_kept)
  assert 0 < sum(outcomes) < len(outcomes)  # both outcomes occur


def test_train_mode_applies_dropout(params, inputs):
  # One music and one decoder layer (the tiny model's first ones) keep the compile short.
  micro = dataclasses.replace(TINY, num_layers=1, num_music_layers=1)
  micro_params = {k: v for k, v in params.items() if k not in ("decoder_1", "cond_encoder_1")}
  x, music, times = inputs

  @jax.jit
  def train_forward(key):
    return EDGE(micro).apply(
      {"params": micro_params},
      x,
      music,
      times,
      keep_mask=np.ones(BATCH, bool),
      train=True,
      rngs={"dropout": key},
    )

  first, again, other = (train_forward(jax.random.PRNGKey(k)) for k in (0, 0, 1))
  np.testing.assert_array_equal(first, again)  # a function of its key
  assert np.abs(np.asarray(first) - np.asarray(other)).max() > 1e-3  # dropout draws differ


@pytest.mark.parametrize(
  "change, match",
  [
    ({"x": np.zeros((BATCH, FRAMES, 6))}, r"x: expected poses \(batch, frames, 7\)"),
    ({"music": np.zeros((BATCH, FRAMES, 4))}, r"music: expected features \(batch, frames, 5\)"),
    ({"music": np.zeros((BATCH, FRAMES - 1, 5))}, "expected as many frames as x.*length mismatch"),
    ({"music": np.zeros((BATCH - 1, FRAMES, 5))}, r"music: expected the batch size of x \(3\)"),
    (
      {"x": np.zeros((BATCH, 9, 7)), "music": np.zeros((BATCH, 9, 5))},
      "x: expected seq_len=8 frames",
    ),
    ({"times": np.zeros(2)}, r"times: expected a scalar or shape \(3,\)"),
    ({"keep_mask": np.ones(2, bool)}, r"keep_mask: expected shape \(3,\)"),
    ({"keep_mask": np.ones(3, bool), "cond_drop_prob": 0.25}, "either keep_mask or cond_drop_prob"),
    ({"cond_drop_prob": 1.5}, r"cond_drop_prob: expected a probability in \[0, 1\]"),
  ],
)
def test_bad_inputs_raise_named_errors(params, inputs, change, match):
  x, music, times = inputs
  arguments = {"x": x, "music": music, "times": times} | change
  model_inputs = [arguments.pop(name) for name in ("x", "music", "times")]
  with pytest.raises(ValueError, match=match):
    EDGE(TINY).apply({"params": params}, *model_inputs, **arguments)


@pytest.mark.parametrize(
  "change, match",
  [
    ({"latent_dim": 30}, "latent_dim: expected a multiple of num_heads=4"),
    ({"latent_dim": 2, "num_heads": 1}, "latent_dim: expected an even width >= 4"),
    ({"num_layers": 0}, "num_layers: expected a positive int"),
    ({"dropout": 1.0}, r"dropout: expected a rate in \[0, 1\)"),
  ],
)
def test_bad_configs_raise_named_errors(change, match):
  with pytest.raises(ValueError, match=match):
    EDGEConfig(**{**TINY.__dict__, **change})


def test_state_dict_problems_are_named_together(state_dict, params):
  wrapped = {f"module.{name}": value for name, value in state_dict.items()}  # DDP keys are fine
  restored = edge_from_torch(wrapped, TINY)
  assert jax.tree.all(jax.tree.map(np.array_equal, restored, params))
  broken = dict(state_dict)
  del broken["final_layer.bias"], broken["null_cond_hidden"]
  broken["cond_projection.weight"] = np.zeros((32, 6), np.float32)
  broken["rotary.freqs"] = broken["rotary.freqs"] * 2
  broken["extra.weight"] = np.zeros(1, np.float32)
  with pytest.raises(ConversionError) as error:
    edge_from_torch(broken, TINY)
  message = str(error.value)
  for expected in (
    "final_layer.bias",
    "null_cond_hidden",
    "cond_projection.weight: expected (32, 5)",
    "rotary.freqs: expected the rotary frequencies of latent_dim=32",
    "extra.weight",
  ):
    assert expected in message
  with pytest.raises(ConversionError, match="'ema_state_dict'"):
    checkpoint_state_dict({"model_state_dict": state_dict})
  assert checkpoint_state_dict({"ema_state_dict": state_dict}) is state_dict
