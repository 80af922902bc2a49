"""Bailando's cross-conditional GPT: parity with a PyTorch restatement of the reference
`CrossCondGPT2` (logits and its sliding-window greedy sampler), one-scan KV-cache sampling,
faithful size, the cross-conditional mask, errors."""

import math

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.convert.bailando import gpt_params_from_torch, gpt_state_dict
from jaxgen.models.bailando_gpt import (
  BailandoGPT,
  BailandoGPTConfig,
  init_cache,
  sample_codes,
  window_lengths,
)
from jaxgen.models.motion_transformer import count_params
from jaxgen.nn import unannotated_params

torch = pytest.importorskip("torch")
F = torch.nn.functional

# Different codebook sizes catch a swapped head or table.
TINY = BailandoGPTConfig(
  num_codes_upper=11,
  num_codes_lower=7,
  music_dim=5,
  embed_dim=16,
  block_size=6,
  num_base_layers=1,
  num_head_layers=1,
  num_heads=2,
  dropout=0.1,
)
BATCH = 3
# Teacher-forced checks run at a length below block_size, where a position offset that
# used the length instead of block_size (the reference's stream thirds) would show.
LENGTH = 4
# Sampled steps: the window fills, slides and restarts several times; every sampling test
# uses this length, so they share one compiled sampler.
STEPS = 3 * TINY.window + 2


# --- The reference `models/cross_cond_gpt2.py` restated in PyTorch (its module names). ---


class TorchAttention(torch.nn.Module):
  def __init__(self, c):
    super().__init__()
    width = c.embed_dim
    self.key, self.query = torch.nn.Linear(width, width), torch.nn.Linear(width, width)
    self.value, self.proj = torch.nn.Linear(width, width), torch.nn.Linear(width, width)
    self.register_buffer("mask", torch.tril(torch.ones(c.block_size, c.block_size)))
    self.n_head = c.num_heads

  def forward(self, x):
    b, length, width = x.shape
    heads = lambda y: y.view(b, length, self.n_head, -1).transpose(1, 2)
    k, q, v = heads(self.key(x)), heads(self.query(x)), heads(self.value(x))
    t = length // 3
    att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
    att = att.masked_fill(self.mask[:t, :t].repeat(3, 3) == 0, float("-inf"))
    y = F.softmax(att, dim=-1) @ v
    return self.proj(y.transpose(1, 2).reshape(b, length, width))


class TorchBlock(torch.nn.Module):
  def __init__(self, c):
    super().__init__()
    width = c.embed_dim
    self.ln1, self.ln2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
    self.attn = TorchAttention(c)
    self.mlp = torch.nn.Sequential(
      torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width)
    )

  def forward(self, x):
    x = x + self.attn(self.ln1(x))
    return x + self.mlp(self.ln2(x))


class TorchBase(torch.nn.Module):
  def __init__(self, c):
    super().__init__()
    self.tok_emb_up = torch.nn.Embedding(c.num_codes_upper, c.embed_dim)
    self.tok_emb_down = torch.nn.Embedding(c.num_codes_lower, c.embed_dim)
    self.pos_emb = torch.nn.Parameter(torch.zeros(1, 3 * c.block_size, c.embed_dim))
    self.cond_emb = torch.nn.Linear(c.music_dim, c.embed_dim)
    self.blocks = torch.nn.Sequential(*[TorchBlock(c) for _ in range(c.num_base_layers)])
    self.block_size = c.block_size

  def forward(self, up, down, cond):
    t, bs = up.shape[1], self.block_size
    x = torch.cat([self.cond_emb(cond), self.tok_emb_up(up), self.tok_emb_down(down)], dim=1)
    pos = self.pos_emb
    x = x + torch.cat([pos[:, :t], pos[:, bs : bs + t], pos[:, 2 * bs : 2 * bs + t]], dim=1)
    return self.blocks(x)


class TorchHead(torch.nn.Module):
  def __init__(self, c):
    super().__init__()
    self.blocks = torch.nn.Sequential(*[TorchBlock(c) for _ in range(c.num_head_layers)])
    self.ln_f = torch.nn.LayerNorm(c.embed_dim)
    self.head_up = torch.nn.Linear(c.embed_dim, c.num_codes_upper, bias=False)
    self.head_down = torch.nn.Linear(c.embed_dim, c.num_codes_lower, bias=False)

  def forward(self, x):
    x = self.ln_f(self.blocks(x))
    t = x.shape[1] // 3
    return self.head_up(x[:, t : 2 * t]), self.head_down(x[:, 2 * t :])


class TorchCrossCondGPT2(torch.nn.Module):
  def __init__(self, c):
    super().__init__()
    self.gpt_base, self.gpt_head = TorchBase(c), TorchHead(c)
    self.block_size = c.block_size

  def forward(self, up, down, cond):
    return self.gpt_head(self.gpt_base(up, down, cond))

  def sample(self, up, down, cond, shift=None):
    """The reference's greedy sampler: the whole window recomputed for every step."""
    size = self.block_size - 1
    block_shift = size if shift is None else min(shift, size)
    margins = []
    for k in range(cond.shape[1]):
      crop = block_shift + (k - size - 1) % (size - block_shift + 1)
      up_in = up if up.shape[1] <= size else up[:, -crop:]
      down_in = down if down.shape[1] <= size else down[:, -crop:]
      cond_in = cond[:, : k + 1] if k < size else cond[:, k - crop + 1 : k + 1]
      logits_up, logits_down = self(up_in, down_in, cond_in)
      for logits in (logits_up[:, -1], logits_down[:, -1]):
        top2 = torch.topk(logits, 2, dim=-1).values
        margins.append((top2[:, 0] - top2[:, 1]).min().item())
      up = torch.cat([up, logits_up[:, -1].argmax(-1, keepdim=True)], dim=1)
      down = torch.cat([down, logits_down[:, -1].argmax(-1, keepdim=True)], dim=1)
    return up.numpy(), down.numpy(), min(margins)


def random_variables(model, seed=0, head_gain=5.0):
  """Weights far from the init (its zero position table and N(0, 0.02) weights make greedy
  codes constant): kernels N(0, 1/fan_in), the heads `head_gain` times larger so greedy
  choices are clear of rounding, tables N(0, 1), norms and biases near their init."""
  codes = jnp.zeros((1, 2), jnp.int32)
  music = jnp.zeros((1, 2, model.config.music_dim))
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), codes, codes, music))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['kernel']"):
      gain = head_gain if "head_" in name else 1.0
      return gain * rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[0])
    if name.endswith(("['embedding']", "['pos_emb']")):
      return rng.normal(size=leaf.shape)
    return float(name.endswith("['scale']")) + 0.2 * rng.normal(size=leaf.shape)

  return jax.tree_util.tree_map_with_path(
    lambda path, leaf: draw(path, leaf).astype(np.float32), shapes
  )


def with_masks(reference, state: dict) -> dict:
  """The state dict as tensors plus the reference's causal-mask buffers, which are part of its
  checkpoints but not of jaxgen's parameters."""
  masks = {k: v for k, v in reference.state_dict().items() if k.endswith(".attn.mask")}
  return {k: torch.from_numpy(v) for k, v in state.items()} | masks


@pytest.fixture(scope="module")
def tiny():
  """The tiny model with random weights, its jitted forward and its PyTorch restatement."""
  model = BailandoGPT(TINY)
  variables = random_variables(model)
  reference = TorchCrossCondGPT2(TINY).eval()
  reference.load_state_dict(with_masks(reference, gpt_state_dict(variables, TINY)), strict=True)
  return model, variables, reference, jax.jit(model.apply)


def random_inputs(seed, length, batch=BATCH):
  rng = np.random.default_rng(seed)
  upper = rng.integers(0, TINY.num_codes_upper, (batch, length))
  lower = rng.integers(0, TINY.num_codes_lower, (batch, length))
  music = rng.normal(size=(batch, length, TINY.music_dim)).astype(np.float32)
  return upper, lower, music


def scan_count(jaxpr) -> int:
  """Number of `scan` equations anywhere in a (closed) jaxpr, sub-jaxprs included."""
  total = 0
  for eqn in jaxpr.eqns:
    total += eqn.primitive.name == "scan"
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      total += scan_count(sub)
  return total


def test_logits_match_the_pytorch_reference(tiny):
  _, variables, reference, forward = tiny
  upper, lower, music = random_inputs(0, LENGTH)
  logits_upper, logits_lower = forward(variables, upper, lower, music)
  assert logits_upper.shape == (BATCH, LENGTH, TINY.num_codes_upper)
  assert logits_lower.shape == (BATCH, LENGTH, TINY.num_codes_lower)
  with torch.no_grad():
    expected = reference(torch.from_numpy(upper), torch.from_numpy(lower), torch.from_numpy(music))
  np.testing.assert_allclose(logits_upper, expected[0].numpy(), atol=1e-4, rtol=0)
  np.testing.assert_allclose(logits_lower, expected[1].numpy(), atol=1e-4, rtol=0)
  assert np.abs(expected[0].numpy()).max() > 1.0  # not a vanishing comparison


def test_state_dict_round_trips_bit_exactly(tiny):
  """jaxgen -> torch -> jaxgen is the identity; the reference's own state dict (masks
  included, keys wrapped by DataParallel) reads back to the same parameters."""
  _, variables, reference, _ = tiny
  params = variables["params"]
  state = gpt_state_dict(params, TINY)
  masks = [k for k in reference.state_dict() if k.endswith(".attn.mask")]
  assert len(masks) == TINY.num_layers
  assert sorted(state) == sorted(k for k in reference.state_dict() if k not in masks)
  assert state["gpt_base.pos_emb"].shape == (1, 3 * TINY.block_size, TINY.embed_dim)
  for back in (
    gpt_params_from_torch(state, TINY),
    gpt_params_from_torch({f"module.{k}": v for k, v in reference.state_dict().items()}, TINY),
  ):
    jax.tree.map(np.testing.assert_array_equal, back, params)


def test_each_position_sees_all_three_streams_up_to_itself(tiny):
  _, variables, _, forward = tiny
  upper, lower, music = random_inputs(1, LENGTH)
  at = np.arange(LENGTH) == 1
  base = forward(variables, upper, lower, music)
  edits = {
    "upper": (np.where(at, (upper + 1) % TINY.num_codes_upper, upper), lower, music),
    "lower": (upper, np.where(at, (lower + 1) % TINY.num_codes_lower, lower), music),
    "music": (upper, lower, music + 3.0 * at[:, None]),
  }
  for name, inputs in edits.items():
    for head, edited, unedited in zip(("upper", "lower"), forward(variables, *inputs), base):
      moved = np.abs(np.asarray(edited - unedited)).max(axis=(0, 2))
      assert moved[0] == 0.0, (name, head)  # causal: position 0 never sees position 1
      assert (moved[1:] > 1e-3).all(), (name, head, moved)  # seen at its own step and after


def test_cached_window_steps_equal_the_full_forward(tiny):
  model, variables, _, forward = tiny
  upper, lower, music = random_inputs(2, LENGTH)
  full = forward(variables, upper, lower, music)
  decode = jax.jit(lambda *args: model.apply(variables, *args, method=BailandoGPT.decode))
  cache = init_cache(TINY, BATCH)
  for i in range(LENGTH):
    one = np.s_[:, i : i + 1]
    logits_upper, logits_lower, cache = decode(upper[one], lower[one], music[one], i, cache)
    # float32 rounding of logits ~10 in size, summed in another order.
    np.testing.assert_allclose(logits_upper[:, 0], full[0][:, i], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits_lower[:, 0], full[1][:, i], atol=1e-4, rtol=0)


@pytest.mark.parametrize("shift", [None, 2])
def test_kv_cache_sampling_equals_the_reference_full_recompute(tiny, shift):
  model, variables, reference, _ = tiny
  first_upper, first_lower, music = random_inputs(11, STEPS)
  first_upper, first_lower = first_upper[:, 0], first_lower[:, 0]
  upper, lower = sample_codes(
    model, variables, music, first_upper, first_lower, jax.random.PRNGKey(0), shift=shift
  )
  with torch.no_grad():
    expected_upper, expected_lower, margin = reference.sample(
      torch.from_numpy(first_upper[:, None]),
      torch.from_numpy(first_lower[:, None]),
      torch.from_numpy(music),
      shift=shift,
    )
  assert margin > 1e-3  # every greedy choice is clear of float32 rounding
  np.testing.assert_array_equal(upper, expected_upper)
  np.testing.assert_array_equal(lower, expected_lower)
  assert len(np.unique(expected_upper)) > 3 and len(np.unique(expected_lower)) > 3


def test_window_lengths_follow_the_reference_crop():
  size = TINY.window
  for shift in (None, 1, 2, size, size + 4):
    block_shift = size if shift is None else min(shift, size)
    expected = [
      k + 1 if k < size else block_shift + (k - size - 1) % (size - block_shift + 1)
      for k in range(4 * size)
    ]
    np.testing.assert_array_equal(window_lengths(TINY, 4 * size, shift), expected)
  np.testing.assert_array_equal(window_lengths(TINY, 9, 2), [1, 2, 3, 4, 5, 5, 2, 3, 4])


def test_sampler_is_one_scan_and_top_k_draws_among_the_reference_top_k(tiny):
  model, variables, reference, _ = tiny
  _, _, music = random_inputs(5, STEPS)
  first = np.array([1, 2, 3])

  def sample(rng, **options):
    return sample_codes(model, variables, music, first, first, rng, **options)

  jaxpr = jax.make_jaxpr(lambda rng: sample(rng, temperature=1.0, top_k=3))(jax.random.PRNGKey(0))
  assert scan_count(jaxpr.jaxpr) == 1
  assert "while" not in str(jaxpr)
  upper, lower = map(np.array, sample(jax.random.PRNGKey(4), temperature=1.0, top_k=3))
  assert upper.shape == lower.shape == (BATCH, STEPS + 1)
  np.testing.assert_array_equal(upper[:, 0], first)
  assert not np.array_equal(upper, sample(jax.random.PRNGKey(5), temperature=1.0, top_k=3)[0])
  # Every code is among the 3 most likely under the reference's window at its step.
  for k, length in enumerate(window_lengths(TINY, STEPS)):
    window = np.s_[:, k - length + 1 : k + 1]
    with torch.no_grad():
      logits = reference(*map(torch.from_numpy, (upper[window], lower[window], music[window])))
    for codes, head in zip((upper, lower), logits):
      top3 = torch.topk(head[:, -1], 3).indices.numpy()
      assert (top3 == codes[:, k + 1, None]).any(axis=1).all(), k
  # One candidate leaves no choice: greedy decoding again.
  greedy = sample(jax.random.PRNGKey(6))
  for one, arg_max in zip(sample(jax.random.PRNGKey(6), temperature=2.0, top_k=1), greedy):
    np.testing.assert_array_equal(one, arg_max)


def test_dropout_only_in_training(tiny):
  model, variables, _, _ = tiny
  upper, lower, music = random_inputs(2, 4)
  train = jax.jit(
    lambda rng: model.apply(
      variables, upper, lower, music, deterministic=False, rngs={"dropout": rng}
    )[0]
  )
  assert not np.allclose(train(jax.random.PRNGKey(0)), train(jax.random.PRNGKey(1)))


def test_faithful_parameter_count():
  """`CrossCondGPT2` of `cc_motion_gpt.yaml`: 2·512·768 token tables, an 87 × 768 position
  table, a 438 → 768 music projection, 12 blocks of 7,087,872, ln_f and two 768 → 512 heads."""
  config = BailandoGPTConfig()
  codes, music = jnp.zeros((1, 29), jnp.int32), jnp.zeros((1, 29, 438))
  shapes = jax.eval_shape(BailandoGPT(config).init, jax.random.PRNGKey(0), codes, codes, music)
  reference = TorchCrossCondGPT2(config)  # on the CPU: meta's first normal_ costs 2 s
  by_hand = 2 * 512 * 768 + 87 * 768 + (438 + 1) * 768 + 12 * 7_087_872 + 2 * 768 + 2 * 768 * 512
  assert count_params(shapes) == sum(p.numel() for p in reference.parameters()) == by_hand
  assert by_hand == 87_032_832
  assert unannotated_params(shapes) == []


def test_named_errors(tiny):
  model, variables, _, _ = tiny
  upper, lower, music = random_inputs(1, 4)
  apply = lambda *args: model.apply(variables, *args)
  with pytest.raises(ValueError, match="upper: expected codes"):
    apply(upper[0], lower, music)
  with pytest.raises(ValueError, match="lower: expected the shape of upper"):
    apply(upper, lower[:, :3], music)
  with pytest.raises(ValueError, match="music: expected one feature frame per code"):
    apply(upper, lower, music[:, :3])
  with pytest.raises(ValueError, match="music: expected .*music_dim=5"):
    apply(upper, lower, music[..., :4])
  with pytest.raises(ValueError, match=r"upper: code ids must lie in \[0, 11\), found \[.*, 11\]"):
    apply(np.where(upper == upper.max(), 11, upper), lower, music)
  with pytest.raises(ValueError, match=r"lower: code ids must lie in \[0, 7\), found \[-1"):
    apply(upper, np.where(lower == lower.min(), -1, lower), music)
  with pytest.raises(ValueError, match="lower: expected integer code ids"):
    apply(upper, lower.astype(np.float32), music)
  with pytest.raises(ValueError, match="length must be <= block_size=6"):
    apply(*random_inputs(1, TINY.block_size + 1))
  first = upper[:, 0]
  rng = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="first_upper, first_lower: expected two"):
    sample_codes(model, variables, music, first, first[:2], rng)
  with pytest.raises(ValueError, match="music: expected .*frames >= 1"):
    sample_codes(model, variables, music[:, :0], first, first, rng)
  with pytest.raises(ValueError, match=r"upper: code ids must lie in \[0, 11\)"):
    sample_codes(model, variables, music, first + 11, first, rng)
  with pytest.raises(ValueError, match="shift: expected None or an int >= 1"):
    sample_codes(model, variables, music, first, first, rng, shift=0)
  with pytest.raises(ValueError, match="temperature: expected >= 0"):
    sample_codes(model, variables, music, first, first, rng, temperature=-1.0)
  with pytest.raises(ValueError, match="top_k: expected None or an int >= 1"):
    sample_codes(model, variables, music, first, first, rng, top_k=0)
  with pytest.raises(ValueError, match="embed_dim .* divisible by num_heads"):
    BailandoGPTConfig(embed_dim=10, num_heads=3)
