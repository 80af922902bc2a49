"""The ADM (guided-diffusion) U-Net: parity with a PyTorch transcription, reference counts, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.errors import UnsupportedConfigError
from jaxgen.models import adm_unet
from jaxgen.models.adm_unet import ADMUNet, ADMUNetConfig, ResBlock
from jaxgen.nn import partitioning as pt

torch = pytest.importorskip("torch")
import torch_adm_unet as ref

# Palette's `unet` section in every config/*.json of Janspiry/Palette-Image-to-Image-Diffusion-Models.
PALETTE_UNET = {
  "in_channel": 6,
  "out_channel": 3,
  "inner_channel": 64,
  "channel_mults": [1, 2, 4, 8],
  "attn_res": [16],
  "num_head_channels": 32,
  "res_blocks": 2,
  "dropout": 0.2,
  "image_size": 256,
}
# guided-diffusion 256x256_diffusion_uncond.pt (README flags: attention_resolutions 32,16,8 -> ds 8,16,32).
ADM_256_UNCOND = {
  "image_size": 256,
  "in_channels": 3,
  "model_channels": 256,
  "out_channels": 6,
  "num_res_blocks": 2,
  "attention_resolutions": (8, 16, 32),
  "channel_mult": (1, 1, 2, 2, 4, 4),
  "num_heads": 4,
  "num_head_channels": 64,
  "use_scale_shift_norm": True,
  "resblock_updown": True,
}
# Counted by instantiating the reference classes themselves (Palette `UNet`, guided-diffusion `UNetModel`).
PALETTE_COUNT = 62_641_347
ADM_256_UNCOND_COUNT = 552_814_086
# Tests run tiny programs once: XLA's cheapest CPU compile (as tests/test_precision.py).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

TINY = {
  # Palette's block options: scale-shift norm, resblock up/down, legacy head order, head width.
  "palette": {
    "in_channels": 5,
    "model_channels": 32,
    "out_channels": 3,
    "num_res_blocks": 1,
    "channel_mult": (1, 2),
    "attention_resolutions": (2,),
    "num_head_channels": 16,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
  },
  # ADM's other options: additive embedding, conv resampling, new head order, labels, upsample heads.
  "adm": {
    "in_channels": 3,
    "model_channels": 32,
    "out_channels": 6,
    "num_res_blocks": 1,
    "channel_mult": (1, 2),
    "attention_resolutions": (1,),
    "num_heads": 2,
    "num_heads_upsample": 4,
    "num_classes": 5,
    "use_new_attention_order": True,
  },
}


def randomized(variables, seed=0):
  """Random values of (abstract) variables' shapes: zero-initialised convs too, so parity covers them all."""
  leaves, tree = jax.tree_util.tree_flatten(nn.meta.unbox(variables))
  rng = np.random.default_rng(seed)  # numpy: one jax.random call per shape would compile each
  new = [(0.2 * rng.standard_normal(leaf.shape)).astype(np.float32) for leaf in leaves]
  return jax.tree_util.tree_unflatten(tree, new)


@pytest.mark.parametrize("name", sorted(TINY))
def test_unet_matches_pytorch_transcription(name):
  cfg = ADMUNetConfig(image_size=8, **TINY[name])
  model = ADMUNet(cfg)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 8, 8, cfg.in_channels)).astype(np.float32)
  t = np.array([0.37, 812.0], np.float32)  # a Palette noise level and an ADM timestep
  y = np.array([1, 4]) if cfg.num_classes else None
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, y))
  assert pt.unannotated_params(variables) == []
  params = randomized(variables)
  out = jax.jit(model.apply, compiler_options=FAST_COMPILE)(params, x, t, y)

  torch_model = ref.UNetModel(**dataclass_kwargs(cfg)).eval()
  ref.load_jaxgen_params(torch_model, params["params"])
  with torch.no_grad():
    expected = torch_model(
      torch.tensor(x).permute(0, 3, 1, 2), torch.tensor(t), None if y is None else torch.tensor(y)
    ).permute(0, 2, 3, 1)
  assert out.shape == (2, 8, 8, cfg.out_channels)
  np.testing.assert_allclose(np.asarray(out), expected.numpy(), atol=1e-4, rtol=0)


def test_resblock_3x3_skip_matches_pytorch():
  x = np.random.default_rng(1).standard_normal((2, 4, 4, 32)).astype(np.float32)
  emb = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
  block = ResBlock(64, use_conv=True)
  params = randomized(jax.eval_shape(lambda: block.init(jax.random.key(0), x, emb)))
  torch_block = ref.ResBlock(32, 16, 0.0, 64, use_conv=True).eval()
  ref.load_jaxgen_params(torch_block, params["params"])
  assert tuple(params["params"]["skip_connection"]["kernel"].shape) == (3, 3, 32, 64)
  with torch.no_grad():
    expected = torch_block(torch.tensor(x).permute(0, 3, 1, 2), torch.tensor(emb))
  np.testing.assert_allclose(
    np.asarray(jax.jit(block.apply, compiler_options=FAST_COMPILE)(params, x, emb)),
    expected.permute(0, 2, 3, 1).numpy(),
    atol=1e-4,
  )


def dataclass_kwargs(cfg):
  return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


def test_reference_parameter_counts():
  """Faithful configs: jaxgen's count (shapes only) = the reference classes' count."""
  palette = ADMUNetConfig.from_palette(PALETTE_UNET)
  assert palette.use_scale_shift_norm and palette.resblock_updown  # Palette's UNet defaults
  assert palette.attention_levels == ()  # attn_res [16] is a downsample rate: only the middle block
  assert adm_unet.parameter_count(palette) == PALETTE_COUNT
  adm = ADMUNetConfig.from_reference(ADM_256_UNCOND)
  assert adm_unet.parameter_count(adm) == ADM_256_UNCOND_COUNT
  # The transcription agrees with the reference count (meta tensors: no memory).
  with torch.device("meta"):
    assert ref.parameter_count(ref.UNetModel(**dataclass_kwargs(palette))) == PALETTE_COUNT


def test_named_errors():
  with pytest.raises(ValueError, match="multiple of 32"):
    ADMUNetConfig(model_channels=48, channel_mult=(1, 2))
  with pytest.raises(ValueError, match="num_head_channels"):
    ADMUNetConfig(
      model_channels=32, channel_mult=(1, 3), attention_resolutions=(2,), num_head_channels=64
    )
  with pytest.raises(UnsupportedConfigError, match="dims"):
    ADMUNetConfig(dims=3)
  with pytest.raises(UnsupportedConfigError, match="inner_channels"):
    ADMUNetConfig.from_palette({**PALETTE_UNET, "inner_channels": 64})
  with pytest.raises(UnsupportedConfigError, match="in_channel"):
    ADMUNetConfig.from_reference({"in_channel": 6})
  cfg = ADMUNetConfig(image_size=8, **TINY["adm"])
  model = ADMUNet(cfg)
  good = {"x": jnp.zeros((2, 8, 8, 3)), "timesteps": jnp.zeros((2,)), "y": jnp.zeros((2,), int)}
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), **good))
  for change, message in [
    ({"x": jnp.zeros((2, 8, 8, 4))}, "x: expected NHWC"),
    ({"x": jnp.zeros((2, 7, 7, 3))}, "multiples of 2"),
    ({"timesteps": jnp.zeros((3,))}, "timesteps: expected a scalar or shape"),
    ({"y": None}, "y: expected"),
  ]:
    with pytest.raises(ValueError, match=message):
      jax.eval_shape(lambda v, change=change: model.apply(v, **{**good, **change}), variables)
