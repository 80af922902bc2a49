"""diffusers UNet2DConditionModel <-> jaxgen: output parity, strict keys, bit-exact round trips."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.convert.diffusers_unet import unet_from_diffusers, unet_to_diffusers
from jaxgen.convert.keymap import ConversionError, KeyMap, from_torch, to_torch
from jaxgen.models.unet import UNet2DConditionModel, UNetConfig, abstract_variables

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

CASES = {
  # Cross-attention and plain blocks, 1x1-conv projections, one head count for all blocks.
  "conv_proj_int_heads_mask": dict(
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=32,
    attention_head_dim=2,
  ),
  # Linear projections, per-block heads, 2 layers, 2 transformer layers, class labels.
  "linear_proj_block_heads_classes": dict(
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=2,
    transformer_layers_per_block=2,
    norm_num_groups=16,
    cross_attention_dim=24,
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    num_class_embeds=10,
  ),
  # No attention at all: resnet-only mid block, timestep-style class embedding,
  # and the less common options (padding-0 downsampling, centred input, scaled mid block).
  "no_cross_attention_options": dict(
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    mid_block_type="UNetMidBlock2D",
    block_out_channels=(32, 48),
    layers_per_block=1,
    norm_num_groups=8,
    class_embed_type="timestep",
    center_input_sample=True,
    downsample_padding=0,
    mid_block_scale_factor=1.5,
    flip_sin_to_cos=False,
    freq_shift=1,
  ),
}


def randomize_(module, seed: int, std: float = 0.2):
  """Overwrites every parameter (weights, norms, biases, embeddings) with N(0, std^2) noise."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * std)
  return module.eval()


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
  cfg = UNetConfig(sample_size=16, **CASES[request.param])
  torch_model = randomize_(
    diffusers.UNet2DConditionModel(**cfg.to_diffusers()), seed=len(request.param)
  )
  return request.param, cfg, torch_model


def make_inputs(name: str, cfg: UNetConfig):
  rng = np.random.default_rng(0)
  inputs = {
    "sample": rng.standard_normal((2, 16, 16, cfg.in_channels)).astype(np.float32),
    "timesteps": np.array([3, 731], np.int64),
  }
  if cfg.has_cross_attention:
    inputs["encoder_hidden_states"] = rng.standard_normal((2, 7, cfg.cross_attention_dim)).astype(
      np.float32
    )
  if name == "conv_proj_int_heads_mask":
    inputs["encoder_attention_mask"] = np.array([[1, 1, 1, 1, 0, 0, 0], [1] * 7], np.int64)
  if cfg.num_class_embeds:
    inputs["class_labels"] = np.array([9, 2], np.int64)
  if cfg.class_embed_type == "timestep":
    inputs["class_labels"] = np.array([0.5, 40.0], np.float32)
  return inputs


def torch_forward(torch_model, inputs):
  with torch.no_grad():
    out = torch_model(
      torch.from_numpy(inputs["sample"].transpose(0, 3, 1, 2).copy()),
      torch.from_numpy(inputs["timesteps"]),
      None
      if "encoder_hidden_states" not in inputs
      else torch.from_numpy(inputs["encoder_hidden_states"]),
      class_labels=None
      if "class_labels" not in inputs
      else torch.from_numpy(inputs["class_labels"]),
      encoder_attention_mask=(
        None
        if "encoder_attention_mask" not in inputs
        else torch.from_numpy(inputs["encoder_attention_mask"])
      ),
      return_dict=False,
    )[0]
  return out.numpy().transpose(0, 2, 3, 1)


def test_config_from_diffusers_model(case):
  _, cfg, torch_model = case
  assert UNetConfig.from_diffusers(torch_model.config) == cfg


def test_output_parity(case):
  name, cfg, torch_model = case
  params = unet_from_diffusers(torch_model.state_dict(), cfg)
  inputs = make_inputs(name, cfg)
  model = UNet2DConditionModel(cfg)
  apply = jax.jit(lambda p, kw: model.apply({"params": p}, **kw))
  jax_inputs = {
    k: jnp.asarray(v.astype(np.int32) if v.dtype == np.int64 else v) for k, v in inputs.items()
  }
  out = np.asarray(apply(params, jax_inputs))
  ref = torch_forward(torch_model, inputs)
  assert out.shape == ref.shape == (2, 16, 16, cfg.out_channels)
  assert np.abs(ref).max() > 0.1  # a meaningful signal, not a collapsed output
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
  if "encoder_attention_mask" in inputs:  # the mask changes the answer, and we follow it
    all_ones = jnp.ones_like(jax_inputs["encoder_attention_mask"])  # same shapes: no recompile
    unmasked = np.asarray(apply(params, {**jax_inputs, "encoder_attention_mask": all_ones}))
    assert np.abs(unmasked - out).max() > 1e-3


def test_torch_to_jaxgen_to_torch_is_bit_identical(case):
  _, cfg, torch_model = case
  state = torch_model.state_dict()
  back = unet_to_diffusers(unet_from_diffusers(state, cfg))
  assert sorted(back) == sorted(state)
  for key, tensor in state.items():
    assert back[key].dtype == np.float32
    np.testing.assert_array_equal(back[key], tensor.numpy(), err_msg=key)


def test_jaxgen_params_load_strictly_into_diffusers(case):
  _, cfg, torch_model = case
  # Boxed (logically partitioned) params with random values, as a trainer would hold them.
  rng = np.random.default_rng(1)
  boxed = jax.tree.map(lambda x: rng.standard_normal(x.shape, np.float32), abstract_variables(cfg))
  state = unet_to_diffusers(boxed)
  fresh = diffusers.UNet2DConditionModel(**cfg.to_diffusers())
  result = fresh.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  assert not result.missing_keys and not result.unexpected_keys
  for key, tensor in fresh.state_dict().items():
    np.testing.assert_array_equal(tensor.numpy(), state[key], err_msg=key)


@pytest.fixture(scope="module")
def numpy_state():
  cfg = UNetConfig(sample_size=16, **CASES["conv_proj_int_heads_mask"])
  rng = np.random.default_rng(2)
  params = jax.tree.map(lambda x: rng.standard_normal(x.shape, np.float32), abstract_variables(cfg))
  return cfg, unet_to_diffusers(params)


def test_missing_keys_are_named(numpy_state):
  cfg, state = numpy_state
  state = dict(state)
  del state["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"]
  del state["conv_in.bias"]
  with pytest.raises(ConversionError, match=r"missing torch keys \(2\)") as err:
    unet_from_diffusers(state, cfg)
  assert "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight" in str(err.value)
  assert "conv_in.bias" in str(err.value)


def test_unexpected_keys_are_named(numpy_state):
  cfg, state = numpy_state
  state = {
    **state,
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.bias": np.zeros(32, np.float32),
  }
  with pytest.raises(
    ConversionError, match=r"unexpected torch keys \(1\):\n  down_blocks.0.attentions.0"
  ):
    unet_from_diffusers(state, cfg)


def test_shape_mismatches_are_named(numpy_state):
  cfg, state = numpy_state
  state = {**state, "conv_out.weight": np.zeros((4, 32, 1, 1), np.float32)}
  with pytest.raises(
    ConversionError, match=r"conv_out.weight: expected \(4, 32, 3, 3\).*found \(4, 32, 1, 1\)"
  ):
    unet_from_diffusers(state, cfg)
  # A config that disagrees with the weights is caught the same way.
  other = UNetConfig(**{**CASES["conv_proj_int_heads_mask"], "cross_attention_dim": 48})
  with pytest.raises(ConversionError, match=r"attn2.to_k.weight: expected \(32, 48\)"):
    unet_from_diffusers(state, other)


def test_conversion_does_not_import_torch():
  code = (
    "import sys, numpy as np\n"
    "from jaxgen.convert.diffusers_unet import unet_from_diffusers, unet_to_diffusers\n"
    "assert 'torch' not in sys.modules, 'torch was imported'\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True)


def test_keymap_rules_for_renames_and_conv1x1_linears():
  keymap = KeyMap(
    list_modules=frozenset({"layers"}),
    renames={"encoder": "text_model.encoder"},
    conv1x1_linears=("*.proj_attn",),
  )
  rng = np.random.default_rng(3)
  params = {
    "encoder": {
      "layers_0": {
        "proj_attn": {
          "kernel": rng.standard_normal((3, 5), np.float32),
          "bias": np.zeros(5, np.float32),
        },
        "fc_1": {"kernel": rng.standard_normal((3, 4), np.float32)},
        "norm": {"scale": np.ones(3, np.float32)},
      }
    },
    "token_embedding": {"embedding": rng.standard_normal((11, 3), np.float32)},
  }
  state = to_torch(params, keymap)
  assert {k: v.shape for k, v in state.items()} == {
    "text_model.encoder.layers.0.proj_attn.weight": (5, 3, 1, 1),
    "text_model.encoder.layers.0.proj_attn.bias": (5,),
    "text_model.encoder.layers.0.fc_1.weight": (4, 3),  # `fc` is not a list: fc_1 stays
    "text_model.encoder.layers.0.norm.weight": (3,),
    "token_embedding.weight": (11, 3),
  }
  fc_1 = params["encoder"]["layers_0"]["fc_1"]["kernel"]
  np.testing.assert_array_equal(state["text_model.encoder.layers.0.fc_1.weight"], fc_1.T)
  back = from_torch(state, params, keymap)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ConversionError, match="no conversion rule"):
    to_torch({"odd": {"kernel": np.zeros((2, 2, 2))}}, keymap)
