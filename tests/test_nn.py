"""Parity of jaxgen.nn blocks with the diffusers PyTorch modules on random weights."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.convert.keymap import KeyMap, from_torch
from jaxgen.nn import (
  Attention,
  BasicTransformerBlock,
  Downsample2D,
  ResnetBlock2D,
  Transformer2DModel,
  Upsample2D,
  timestep_embedding,
  unannotated_params,
)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

BLOCK_KEYMAP = KeyMap(list_modules=frozenset({"to_out", "net", "transformer_blocks"}))
ATOL = 1e-4


def randomize_(module, seed: int, std: float = 0.3):
  """Overwrites every parameter (weights, norms, biases) with N(0, std^2) noise."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * std)
  return module.eval()


def convert(flax_module, torch_module, *args, **kwargs):
  """Loads `torch_module`'s weights into params shaped like `flax_module.init(..., *args)`."""
  variables = jax.eval_shape(lambda: flax_module.init(jax.random.key(0), *args, **kwargs))
  assert unannotated_params(variables) == []
  return {"params": from_torch(torch_module.state_dict(), variables["params"], BLOCK_KEYMAP)}


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def to_nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def mask_bias(mask):
  """diffusers' encoding of a (B, L) keep-mask: an additive (B, 1, L) bias."""
  return ((1 - torch.from_numpy(mask).float()) * -10000.0)[:, None, :]


@pytest.mark.parametrize("dim", [32, 7])
@pytest.mark.parametrize("flip_sin_to_cos,shift", [(True, 0), (False, 1)])
def test_timestep_embedding_matches_diffusers(dim, flip_sin_to_cos, shift):
  from diffusers.models.embeddings import get_timestep_embedding

  t = np.array([0, 1, 17, 999, 250.5], np.float32)
  ref = get_timestep_embedding(torch.from_numpy(t), dim, flip_sin_to_cos, shift).numpy()
  out = timestep_embedding(jnp.asarray(t), dim, flip_sin_to_cos, shift)
  assert out.shape == (5, dim)
  # float32 angles near t=1000 carry ~6e-5 rounding in either framework.
  np.testing.assert_allclose(out, ref, atol=ATOL)


def test_timestep_embedding_rejects_2d():
  with pytest.raises(ValueError, match="timesteps"):
    timestep_embedding(jnp.zeros((2, 3)), 8)


def test_cross_attention_with_mask_matches_diffusers():
  from diffusers.models.attention_processor import Attention as TorchAttention

  ref_module = randomize_(
    TorchAttention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8, bias=True), 0
  )
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 5, 16)).astype(np.float32)
  ctx = rng.standard_normal((2, 6, 12)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], np.int32)

  model = Attention(heads=2, dim_head=8, qkv_bias=True)
  params = convert(model, ref_module, x, ctx, mask)
  apply = jax.jit(model.apply)
  out = apply(params, x, ctx, mask)
  with torch.no_grad():
    ref = ref_module(
      torch.from_numpy(x), torch.from_numpy(ctx), attention_mask=mask_bias(mask)
    ).numpy()
  np.testing.assert_allclose(out, ref, atol=ATOL)
  # The mask matters: attending to every key changes the output.
  assert np.abs(apply(params, x, ctx, np.ones_like(mask)) - out).max() > 1e-3
  # Masked-out keys do not influence the result at all.
  ctx_changed = ctx.copy()
  ctx_changed[0, 3:] += 5.0
  np.testing.assert_allclose(apply(params, x, ctx_changed, mask)[0], out[0], atol=1e-6)


def test_attention_rejects_bad_mask_shape():
  model = Attention(heads=2, dim_head=4)
  x = jnp.zeros((2, 5, 8))
  with pytest.raises(ValueError, match="mask"):
    model.init(jax.random.key(0), x, mask=jnp.ones((2, 4)))


@pytest.mark.parametrize("in_channels,out_channels,use_temb", [(16, 32, True), (16, 16, False)])
def test_resnet_block_matches_diffusers(in_channels, out_channels, use_temb):
  from diffusers.models.resnet import ResnetBlock2D as TorchResnet

  temb_channels = 24 if use_temb else None
  ref_module = randomize_(
    TorchResnet(
      in_channels=in_channels,
      out_channels=out_channels,
      temb_channels=temb_channels,
      groups=8,
      eps=1e-5,
      output_scale_factor=2.0,
    ),
    1,
  )
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 8, 8, in_channels)).astype(np.float32)
  temb = rng.standard_normal((2, 24)).astype(np.float32) if use_temb else None

  model = ResnetBlock2D(out_channels, groups=8, eps=1e-5, output_scale_factor=2.0)
  params = convert(model, ref_module, x, temb)
  assert ("conv_shortcut" in params["params"]) == (in_channels != out_channels)
  out = jax.jit(model.apply)(params, x, temb)
  with torch.no_grad():
    ref = to_nhwc(ref_module(nchw(x), None if temb is None else torch.from_numpy(temb)))
  np.testing.assert_allclose(out, ref, atol=ATOL)


@pytest.mark.parametrize("use_linear_projection", [False, True])
def test_transformer2d_matches_diffusers(use_linear_projection):
  from diffusers.models.transformers.transformer_2d import Transformer2DModel as TorchTransformer2D

  ref_module = randomize_(
    TorchTransformer2D(
      num_attention_heads=2,
      attention_head_dim=8,
      in_channels=32,
      num_layers=2,
      cross_attention_dim=12,
      norm_num_groups=8,
      use_linear_projection=use_linear_projection,
    ),
    2,
  )
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2, 4, 4, 32)).astype(np.float32)
  ctx = rng.standard_normal((2, 6, 12)).astype(np.float32)
  mask = np.array([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], np.int32)

  model = Transformer2DModel(
    heads=2,
    dim_head=8,
    num_layers=2,
    cross_attention_dim=12,
    norm_num_groups=8,
    use_linear_projection=use_linear_projection,
  )
  params = convert(model, ref_module, x, ctx, mask)
  out = jax.jit(model.apply)(params, x, ctx, mask)
  with torch.no_grad():
    ref = to_nhwc(
      ref_module(
        nchw(x),
        encoder_hidden_states=torch.from_numpy(ctx),
        encoder_attention_mask=torch.from_numpy(mask),
        return_dict=False,
      )[0]
    )
  np.testing.assert_allclose(out, ref, atol=ATOL)


def test_basic_transformer_block_without_cross_attention_matches_diffusers():
  """The sequence-model use: self-attention + GELU MLP, no attn2, with a padding mask."""
  from diffusers.models.attention import BasicTransformerBlock as TorchBlock

  ref_module = randomize_(TorchBlock(16, 2, 8, activation_fn="gelu", attention_bias=True), 3)
  rng = np.random.default_rng(3)
  x = rng.standard_normal((2, 7, 16)).astype(np.float32)
  mask = np.array([[1] * 7, [1] * 4 + [0] * 3], np.int32)

  model = BasicTransformerBlock(heads=2, dim_head=8, activation="gelu", attention_bias=True)
  params = convert(model, ref_module, x, mask=mask)
  assert "attn2" not in params["params"] and "norm2" not in params["params"]
  out = jax.jit(model.apply)(params, x, mask=mask)
  with torch.no_grad():
    ref = ref_module(torch.from_numpy(x), attention_mask=mask_bias(mask)).numpy()
  np.testing.assert_allclose(out, ref, atol=ATOL)
  with pytest.raises(ValueError, match="context"):
    model.apply(params, x, context=x)


def test_basic_transformer_block_checks_context_width():
  model = BasicTransformerBlock(heads=2, dim_head=8, cross_attention_dim=12)
  with pytest.raises(ValueError, match=r"context: expected \(batch, length, 12\)"):
    model.init(jax.random.key(0), jnp.zeros((1, 4, 16)), jnp.zeros((1, 3, 10)))


@pytest.mark.parametrize("padding", [0, 1])
def test_downsample_matches_diffusers(padding):
  from diffusers.models.downsampling import Downsample2D as TorchDownsample

  ref_module = randomize_(
    TorchDownsample(8, use_conv=True, out_channels=16, padding=padding, name="op"), 4
  )
  x = np.random.default_rng(4).standard_normal((1, 8, 8, 8)).astype(np.float32)
  model = Downsample2D(16, padding=padding)
  params = convert(model, ref_module, x)
  out = model.apply(params, x)
  assert out.shape == (1, 4, 4, 16)
  with torch.no_grad():
    np.testing.assert_allclose(out, to_nhwc(ref_module(nchw(x))), atol=ATOL)


def test_upsample_matches_diffusers():
  from diffusers.models.upsampling import Upsample2D as TorchUpsample

  ref_module = randomize_(TorchUpsample(8, use_conv=True, out_channels=4), 5)
  x = np.random.default_rng(5).standard_normal((1, 4, 4, 8)).astype(np.float32)
  model = Upsample2D(4)
  params = convert(model, ref_module, x)
  out = model.apply(params, x)
  assert out.shape == (1, 8, 8, 4)
  with torch.no_grad():
    np.testing.assert_allclose(out, to_nhwc(ref_module(nchw(x))), atol=ATOL)


def test_params_carry_known_logical_names():
  model = Transformer2DModel(
    heads=2, dim_head=8, cross_attention_dim=12, norm_num_groups=8, use_linear_projection=True
  )
  variables = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 2, 2, 16)), jnp.zeros((1, 3, 12)))
  )
  specs = nn.get_partition_spec(variables)["params"]
  block = specs["transformer_blocks_0"]
  assert block["attn2"]["to_k"]["kernel"] == jax.sharding.PartitionSpec("kv", "heads")
  assert block["attn1"]["to_q"]["kernel"] == jax.sharding.PartitionSpec("embed", "heads")
  assert block["ff"]["net_0"]["proj"]["kernel"] == jax.sharding.PartitionSpec("embed", "mlp")
  assert specs["norm"]["scale"] == jax.sharding.PartitionSpec("norm")
