"""CLIP vision tower and dual encoder vs transformers: parameter counts, parity, strict folder round trip."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.convert.keymap import ConversionError
from jaxgen.convert.transformers_clip import (
  clip_from_transformers,
  clip_to_transformers,
  load_clip_model,
  save_clip_folder,
)
from jaxgen.errors import UnsupportedConfigError
from jaxgen.models.clip import (
  CLIPConfig,
  CLIPModel,
  CLIPVisionConfig,
  CLIPVisionModel,
  abstract_variables,
  abstract_vision_variables,
)
from jaxgen.models.clip_text import CLIPTextConfig
from jaxgen.nn.partitioning import unannotated_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXT = dict(
  vocab_size=41,
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=2,
  num_attention_heads=4,
  max_position_embeddings=12,
  pad_token_id=40,
  bos_token_id=38,
  eos_token_id=40,
)
VISION = dict(
  image_size=32,
  patch_size=8,
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=2,
  num_attention_heads=4,
)
PROJECTION_DIM = 16

# openai/clip-vit-large-patch14 (the CLIP of Stable Diffusion 1.x and of torchmetrics' CLIPScore).
VIT_L14_VISION = dict(
  hidden_size=1024,
  intermediate_size=4096,
  num_hidden_layers=24,
  num_attention_heads=16,
  image_size=224,
  patch_size=14,
)
VIT_L14_TEXT = dict(
  hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12
)


def count(variables) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(variables)))


def randomize_(module, seed: int, std: float = 0.3):
  """Overwrites every parameter with N(0, std^2) noise (norms and class token included)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * std)
  return module.eval()


@pytest.fixture(scope="module")
def torch_clip():
  config = transformers.CLIPConfig(
    text_config=TEXT, vision_config=VISION, projection_dim=PROJECTION_DIM
  )
  return randomize_(transformers.CLIPModel(config), seed=0)


@pytest.fixture(scope="module")
def jax_clip(torch_clip):
  config = CLIPConfig.from_transformers(torch_clip.config)
  return config, clip_from_transformers(torch_clip.state_dict(), config)


def pixel_batch(seed: int = 0, batch: int = 3) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(batch, 32, 32, 3)).astype(np.float32)


def to_nchw(pixels: np.ndarray):
  return torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())


# ----------------------------------------------------------------------------
# Architecture.


def test_vit_l14_counts_match_transformers():
  """CLIP ViT-L/14: vision tower 303,179,776 + visual projection 786,432 = 303,966,208
  (`CLIPVisionModelWithProjection`); the whole `CLIPModel` 427,616,513. One eval_shape, no memory."""
  clip = CLIPConfig(
    CLIPTextConfig(**VIT_L14_TEXT), CLIPVisionConfig(**VIT_L14_VISION), projection_dim=768
  )
  variables = abstract_variables(clip)
  assert not unannotated_params(variables)
  params = nn.meta.unbox(variables)["params"]
  with torch.device("meta"):
    vision_reference = transformers.CLIPVisionModelWithProjection(
      transformers.CLIPVisionConfig(**VIT_L14_VISION, projection_dim=768)
    )
    clip_reference = transformers.CLIPModel(
      transformers.CLIPConfig(
        text_config=VIT_L14_TEXT, vision_config=VIT_L14_VISION, projection_dim=768
      )
    )
  vision = count(params["vision_model"]) + count(params["visual_projection"])
  assert vision == sum(p.numel() for p in vision_reference.parameters()) == 303_966_208
  assert count(params["vision_model"]) == 303_179_776
  assert count(params) == sum(p.numel() for p in clip_reference.parameters()) == 427_616_513


def test_vision_params_are_annotated():
  assert not unannotated_params(abstract_vision_variables(CLIPVisionConfig(**VISION)))


def test_config_from_transformers_round_trips(torch_clip):
  config = CLIPConfig.from_transformers(torch_clip.config)
  assert config.vision_config == CLIPVisionConfig(**VISION)
  assert config.text_config == CLIPTextConfig(**TEXT)
  assert config.projection_dim == PROJECTION_DIM
  again = transformers.CLIPConfig.from_dict(config.to_transformers())
  assert CLIPConfig.from_transformers(again) == config


def test_config_reads_transformers_4_dict_overrides():
  """4.x config.json files carry text_config_dict / vision_config_dict, which take precedence."""
  raw = {
    "model_type": "clip",
    "projection_dim": 8,
    "text_config": {**TEXT, "hidden_size": 64},
    "text_config_dict": {"hidden_size": 32},
    "vision_config": VISION,
    "vision_config_dict": None,
  }
  config = CLIPConfig.from_transformers(raw)
  assert config.text_config.hidden_size == 32 and config.vision_config == CLIPVisionConfig(**VISION)


def test_bad_configs_and_inputs_are_named():
  with pytest.raises(ValueError, match="image_size=30 must be divisible by patch_size=8"):
    CLIPVisionConfig(**{**VISION, "image_size": 30})
  with pytest.raises(UnsupportedConfigError, match="hidden_act"):
    CLIPVisionConfig(**{**VISION, "hidden_act": "relu"})
  with pytest.raises(UnsupportedConfigError, match="model_type 'clip'"):
    CLIPConfig.from_transformers({"model_type": "siglip"})
  model = CLIPVisionModel(CLIPVisionConfig(**VISION))
  with pytest.raises(ValueError, match=r"pixel_values: expected \(batch, 32, 32, 3\)"):
    model.init(jax.random.key(0), jnp.zeros((1, 3, 32, 32)))
  with pytest.raises(ValueError, match="pixel_values: expected normalized floating-point"):
    model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.uint8))


# ----------------------------------------------------------------------------
# Output parity (float32, random weights).


def test_vision_tower_matches_transformers(torch_clip, jax_clip):
  config, params = jax_clip
  pixels = pixel_batch()
  model = CLIPVisionModel(config.vision_config)
  ours = jax.jit(lambda p, x: model.apply(p, x, output_hidden_states=True))(
    {"params": params["vision_model"]}, pixels
  )
  with torch.no_grad():
    ref = torch_clip.vision_model(to_nchw(pixels), output_hidden_states=True)
  np.testing.assert_allclose(
    ours.last_hidden_state, ref.last_hidden_state.numpy(), atol=1e-4, rtol=0
  )
  np.testing.assert_allclose(ours.pooler_output, ref.pooler_output.numpy(), atol=1e-4, rtol=0)
  assert len(ours.hidden_states) == len(ref.hidden_states) == VISION["num_hidden_layers"] + 1
  for a, b in zip(ours.hidden_states, ref.hidden_states):
    np.testing.assert_allclose(a, b.numpy(), atol=1e-4, rtol=0)


def test_features_and_logits_match_transformers(torch_clip, jax_clip):
  config, params = jax_clip
  pixels = pixel_batch(seed=1, batch=2)
  input_ids = np.array([[38, 5, 9, 17, 40, 40], [38, 7, 25, 3, 30, 40]], np.int64)
  mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], np.int64)
  out = jax.jit(CLIPModel(config).apply)(
    {"params": params}, jnp.asarray(input_ids, jnp.int32), pixels, jnp.asarray(mask)
  )
  with torch.no_grad():
    ref = torch_clip(
      input_ids=torch.from_numpy(input_ids),
      pixel_values=to_nchw(pixels),
      attention_mask=torch.from_numpy(mask),
    )
  assert out.image_embeds.shape == out.text_embeds.shape == (2, PROJECTION_DIM)
  np.testing.assert_allclose(out.image_embeds, ref.image_embeds.numpy(), atol=1e-4, rtol=0)
  np.testing.assert_allclose(out.text_embeds, ref.text_embeds.numpy(), atol=1e-4, rtol=0)
  np.testing.assert_allclose(
    out.logits_per_image, ref.logits_per_image.numpy(), atol=1e-4, rtol=1e-5
  )
  np.testing.assert_allclose(out.logits_per_text, ref.logits_per_text.numpy(), atol=1e-4, rtol=1e-5)


def test_get_image_features_matches_transformers_and_bfloat16_stays_close(torch_clip, jax_clip):
  config, params = jax_clip
  pixels = pixel_batch(seed=2, batch=2)

  def features(dtype):
    model = CLIPModel(config, dtype=dtype)
    return jax.jit(lambda p, x: model.apply(p, x, method=CLIPModel.get_image_features))(
      {"params": params}, pixels
    )

  full, half = features(jnp.float32), features(jnp.bfloat16)
  with torch.no_grad():
    ref = torch_clip.get_image_features(to_nchw(pixels)).pooler_output.numpy()
  np.testing.assert_allclose(full, ref, atol=1e-4, rtol=0)
  assert half.dtype == jnp.bfloat16
  half = half.astype(jnp.float32)
  cosine = jnp.sum(full * half, -1) / (
    jnp.linalg.norm(full, axis=-1) * jnp.linalg.norm(half, axis=-1)
  )
  assert float(cosine.min()) > 0.99


# ----------------------------------------------------------------------------
# Conversion.


def test_state_dict_round_trip_is_bit_identical_and_strict_loads(torch_clip, jax_clip):
  _, params = jax_clip
  state = clip_to_transformers(params)
  reference = torch_clip.state_dict()
  assert set(state) == set(reference)
  for name, value in reference.items():
    np.testing.assert_array_equal(state[name], value.numpy(), err_msg=name)
  fresh = transformers.CLIPModel(torch_clip.config)
  fresh.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)


def test_folder_round_trip(tmp_path, torch_clip, jax_clip):
  torch_clip.save_pretrained(tmp_path / "hf")
  config, params = load_clip_model(tmp_path / "hf")
  assert config == jax_clip[0]
  save_clip_folder(params, config, tmp_path / "ours")
  reloaded = transformers.CLIPModel.from_pretrained(tmp_path / "ours")
  for name, value in torch_clip.state_dict().items():
    np.testing.assert_array_equal(reloaded.state_dict()[name].numpy(), value.numpy(), err_msg=name)
  saved = json.loads((tmp_path / "ours" / "config.json").read_text())
  assert saved["architectures"] == ["CLIPModel"]


def test_position_id_buffers_of_old_files_are_checked(torch_clip, jax_clip):
  config, params = jax_clip
  state = {k: v.numpy() for k, v in torch_clip.state_dict().items()}
  state["vision_model.embeddings.position_ids"] = np.arange(17)[None]
  state["text_model.embeddings.position_ids"] = np.arange(12)[None]
  loaded = clip_from_transformers(state, config)
  np.testing.assert_array_equal(loaded["logit_scale"], params["logit_scale"])
  state["vision_model.embeddings.position_ids"] = np.arange(16)[None]
  with pytest.raises(
    ConversionError, match="vision_model.embeddings.position_ids: expected arange"
  ):
    clip_from_transformers(state, config)


def test_mismatched_state_dict_lists_every_problem(torch_clip, jax_clip):
  config, _ = jax_clip
  state = {k: v.numpy() for k, v in torch_clip.state_dict().items()}
  del state["logit_scale"]
  del state["vision_model.post_layernorm.bias"]
  state["visual_projection.weight"] = np.zeros((8, 32), np.float32)
  state["vision_model.embeddings.class_embedding"] = np.zeros((31,), np.float32)
  state["extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(ConversionError) as error:
    clip_from_transformers(state, config)
  message = str(error.value)
  for expected in (
    "missing logit_scale",
    "vision_model.post_layernorm.bias",
    "visual_projection.weight: expected (16, 32)",
    "class_embedding: expected shape (32,), found (31,)",
    "extra.weight",
  ):
    assert expected in message
