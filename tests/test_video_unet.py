"""Video U-Net: identity at inflation, frames that really interact, diffusers UNet3DConditionModel parity.

One tiny layout throughout (2 blocks, 16/32 channels, 3 frames of 8x8), so the
video programs compile once per config: `run` is jitted with the config static.
"""

import dataclasses
import functools
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.convert.diffusers_unet3d import unet3d_from_diffusers, unet3d_to_diffusers
from jaxgen.convert.keymap import ConversionError
from jaxgen.models.unet import (
  UNet2DConditionModel,
  UNetConfig,
  UnsupportedConfigError,
  abstract_variables,
)
from jaxgen.models.video_unet import (
  InflationError,
  inflate_image_params,
  is_temporal_path,
  temporal_param_mask,
)
from jaxgen.nn import unannotated_params

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# diffusers' UNet3DConditionModel keywords of the tiny layout: head width 8.
TINY_3D = dict(
  sample_size=8,
  down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
  up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
  block_out_channels=(16, 32),
  layers_per_block=1,
  norm_num_groups=8,
  cross_attention_dim=12,
  attention_head_dim=8,
)
# The same U-Net as an image model (jaxgen's attention_head_dim counts heads).
IMAGE = UNetConfig(
  sample_size=8,
  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
  block_out_channels=(16, 32),
  layers_per_block=1,
  norm_num_groups=8,
  cross_attention_dim=12,
  attention_head_dim=(2, 4),
  use_linear_projection=True,
)
MODELSCOPE = dataclasses.replace(IMAGE, temporal="modelscope")
BATCH, FRAMES, SIZE = 2, 3, 8


@functools.partial(jax.jit, static_argnums=0)
def run(cfg, params, sample, timesteps, context, fps=None):
  kwargs = {} if fps is None else {"fps": fps}
  return UNet2DConditionModel(cfg).apply({"params": params}, sample, timesteps, context, **kwargs)


def random_like(tree, seed, std=0.2):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: (rng.standard_normal(x.shape) * std).astype(np.float32), tree)


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  return {
    "sample": rng.standard_normal((BATCH, FRAMES, SIZE, SIZE, 4)).astype(np.float32),
    "timesteps": np.array([3, 731], np.int32),
    "context": rng.standard_normal((BATCH, 5, 12)).astype(np.float32),
  }


@pytest.fixture(scope="module")
def image_model(inputs):
  """An image U-Net with random weights (every parameter) and its outputs frame by frame."""
  params = random_like(nn.meta.unbox(abstract_variables(IMAGE))["params"], seed=1)
  frames = inputs["sample"].reshape(BATCH * FRAMES, SIZE, SIZE, 4)
  per_frame = run(
    IMAGE,
    params,
    frames,
    np.repeat(inputs["timesteps"], FRAMES),
    np.repeat(inputs["context"], FRAMES, axis=0),
  )
  return params, np.asarray(per_frame).reshape(BATCH, FRAMES, SIZE, SIZE, 4)


# Both merges; the second with every jaxgen-only option (fps, frame positions) on.
VIDEO_CASES = {
  "modelscope_residual": MODELSCOPE,
  "video_ldm_learned_fps_frame_positions": dataclasses.replace(
    MODELSCOPE, temporal_merge="learned", fps_conditioning=True, temporal_frame_embedding=True
  ),
}


@pytest.fixture(scope="module")
def inflated(image_model):
  """Case name -> the inflated video params (unboxed), built once per module."""
  cache = {}

  def get(case):
    if case not in cache:
      image_params = {"params": image_model[0]}  # the wrapped form round-trips too
      video = inflate_image_params(image_params, VIDEO_CASES[case], jax.random.key(7))
      assert set(video) == {"params"}
      cache[case] = nn.meta.unbox(video["params"])
    return cache[case]

  return get


def perturb_temporal(params, seed):
  """Random noise on every temporal parameter (the zero-initialised ones included)."""
  mask = temporal_param_mask(params)
  return jax.tree.map(lambda p, n, m: p + n if m else p, params, random_like(params, seed), mask)


@pytest.mark.parametrize("case", list(VIDEO_CASES))
def test_inflated_video_unet_is_the_image_unet_per_frame_until_its_temporal_weights_move(
  case, inputs, image_model, inflated
):
  _, expected = image_model
  cfg, params = VIDEO_CASES[case], inflated(case)
  fps = np.array([8.0, 24.0], np.float32) if cfg.fps_conditioning else None
  sample, t, ctx = inputs["sample"], inputs["timesteps"], inputs["context"]
  out = np.asarray(run(cfg, params, sample, t, ctx, fps))
  assert out.shape == (BATCH, FRAMES, SIZE, SIZE, 4)
  assert np.abs(expected).max() > 0.1
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
  # At inflation frame 0 ignores frame 1; once the zero-initialised temporal
  # weights are random, it does not (so the identity above is not vacuous).
  moved = sample.copy()
  moved[:, 1] += 1.0
  still = np.asarray(run(cfg, params, moved, t, ctx, fps))
  np.testing.assert_allclose(still[:, 0], out[:, 0], atol=1e-5, rtol=0)
  trained = perturb_temporal(params, seed=2)
  base = np.asarray(run(cfg, trained, sample, t, ctx, fps))
  mixed = np.asarray(run(cfg, trained, moved, t, ctx, fps))
  assert np.abs(mixed[:, 0] - base[:, 0]).max() > 1e-3
  assert np.abs(base - expected).max() > 1e-3
  if cfg.fps_conditioning:  # the fps embedding reaches the output once it is trained
    other = np.asarray(run(cfg, trained, sample, t, ctx, fps * 2))
    assert np.abs(other - base).max() > 1e-3


def test_temporal_mask_marks_exactly_the_new_layers_and_inflation_names_misfits(image_model):
  image_params, _ = image_model
  cfg = VIDEO_CASES["video_ldm_learned_fps_frame_positions"]
  video = abstract_variables(cfg)["params"]
  mask = temporal_param_mask({"unet": video})["unet"]
  flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
  spatial = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(image_params)}
  assert {k for k, m in flat.items() if not m} == spatial
  for name in ("transformer_in", "fps_embedding", "temp_convs_0", "temp_attentions_0"):
    assert any(name in k and m for k, m in flat.items()), name
  assert any(k.endswith("['mix_factor']") for k, m in flat.items() if m)
  broken = dict(image_params)
  broken["conv_in"] = {**broken["conv_in"], "kernel": np.zeros((3, 3, 4, 8), np.float32)}
  del broken["conv_out"]
  with pytest.raises(InflationError, match=r"conv_in/kernel: video U-Net shape \(3, 3, 4, 16\)"):
    inflate_image_params(broken, cfg, jax.random.key(0))
  with pytest.raises(InflationError, match="conv_out/bias: spatial parameter missing"):
    inflate_image_params(broken, cfg, jax.random.key(0))
  with pytest.raises(InflationError, match="temporal=None"):
    inflate_image_params(image_params, IMAGE, jax.random.key(0))


def test_temporal_layers_carry_logical_axis_names():
  variables = abstract_variables(VIDEO_CASES["video_ldm_learned_fps_frame_positions"])
  assert unannotated_params(variables) == []
  block = variables["params"]["down_blocks_0"]
  assert block["temp_convs_0"]["conv1_2"]["kernel"].names == (
    None,
    None,
    None,
    "conv_in",
    "conv_out",
  )
  attention = block["temp_attentions_0"]
  assert attention["proj_in"]["kernel"].names == ("conv_in", "embed")
  assert attention["transformer_blocks_0"]["attn2"]["to_k"]["kernel"].names == ("embed", "heads")


def torch_3d(seed):
  model = diffusers.UNet3DConditionModel(**TINY_3D)
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
  return model.eval()


def torch_forward(model, inputs):
  with torch.no_grad():
    out = model(
      torch.from_numpy(inputs["sample"].transpose(0, 4, 1, 2, 3).copy()),
      torch.from_numpy(inputs["timesteps"].astype(np.int64)),
      torch.from_numpy(inputs["context"]),
      return_dict=False,
    )[0]
  return out.numpy().transpose(0, 2, 3, 4, 1)  # (B, C, T, H, W) -> NTHWC


def test_diffusers_unet3d_parity_and_weights_both_ways(inputs):
  model = torch_3d(seed=3)
  cfg = UNetConfig.from_diffusers(model.config)
  assert cfg == MODELSCOPE
  assert UNetConfig.from_diffusers(cfg.to_diffusers()) == cfg
  assert cfg.to_diffusers()["attention_head_dim"] == 8
  state = model.state_dict()
  params = unet3d_from_diffusers(state, cfg)
  ref = torch_forward(model, inputs)
  out = np.asarray(run(cfg, params, inputs["sample"], inputs["timesteps"], inputs["context"]))
  assert np.abs(ref).max() > 0.1
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
  back = unet3d_to_diffusers(params)
  assert sorted(back) == sorted(state)
  for key, tensor in state.items():
    np.testing.assert_array_equal(back[key], tensor.numpy(), err_msg=key)
  # jaxgen weights (boxed, random) -> a fresh diffusers model, strictly -> same outputs.
  boxed = random_like(abstract_variables(cfg), seed=4)
  fresh = diffusers.UNet3DConditionModel(**cfg.to_diffusers()).eval()
  torch_state = {k: torch.from_numpy(v) for k, v in unet3d_to_diffusers(boxed).items()}
  result = fresh.load_state_dict(torch_state, strict=True)
  assert not result.missing_keys and not result.unexpected_keys
  out = run(
    cfg, nn.meta.unbox(boxed)["params"], inputs["sample"], inputs["timesteps"], inputs["context"]
  )
  np.testing.assert_allclose(np.asarray(out), torch_forward(fresh, inputs), atol=1e-4, rtol=0)
  del state["mid_block.temp_convs.1.conv4.3.weight"]
  with pytest.raises(ConversionError, match=r"missing torch keys \(1\)"):
    unet3d_from_diffusers(state, cfg)


def test_jaxgen_only_temporal_options_have_no_diffusers_config():
  cfg = dataclasses.replace(MODELSCOPE, temporal_merge="learned", fps_conditioning=True)
  with pytest.raises(UnsupportedConfigError, match="temporal_merge='learned'.*fps_conditioning"):
    cfg.to_diffusers()
  with pytest.raises(UnsupportedConfigError, match="num_attention_heads=4"):
    UNetConfig.from_diffusers({**TINY_3D, "num_attention_heads": 4})
  with pytest.raises(ValueError, match="fps_conditioning: temporal options"):
    dataclasses.replace(IMAGE, fps_conditioning=True)
  assert "temporal" not in IMAGE.to_diffusers()  # image configs still map to UNet2DConditionModel


def test_modelscope_parameter_count_by_eval_shape():
  """`UNet3DConditionModel()` with its defaults (the ModelScope checkpoint): 1,411,233,860."""
  signature = inspect.signature(diffusers.UNet3DConditionModel.__init__)
  defaults = {k: p.default for k, p in signature.parameters.items() if k != "self"}
  cfg = UNetConfig.from_diffusers({"_class_name": "UNet3DConditionModel", **defaults})
  assert cfg.temporal == "modelscope" and cfg.num_heads == (5, 10, 20, 20)
  variables = abstract_variables(cfg)["params"]
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables)) == 1_411_233_860


def drop_temporal(tree):
  return {
    k: drop_temporal(v) if isinstance(v, dict) else v
    for k, v in tree.items()
    if not is_temporal_path((k,))
  }


def test_image_batches_skip_the_temporal_layers(inputs, image_model, inflated):
  """NHWC through a video U-Net is the image model (joint image-video training).

  It runs without any temporal parameter (flax would name a missing one), so
  no temporal layer took part.
  """
  _, expected = image_model
  spatial = drop_temporal(perturb_temporal(inflated("modelscope_residual"), seed=5))
  frames = inputs["sample"].reshape(BATCH * FRAMES, SIZE, SIZE, 4)
  t, ctx = np.repeat(inputs["timesteps"], FRAMES), np.repeat(inputs["context"], FRAMES, axis=0)
  out = np.asarray(run(MODELSCOPE, spatial, frames, t, ctx))
  np.testing.assert_allclose(out.reshape(expected.shape), expected, atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match="sample: expected NHWC"):
    UNet2DConditionModel(IMAGE).init(jax.random.key(0), jnp.zeros((1, 2, 8, 8, 4)), 0, ctx[:1])
  with pytest.raises(ValueError, match="fps: this call has no fps_conditioning"):
    run(MODELSCOPE, spatial, frames, t, ctx, np.float32(8.0))
