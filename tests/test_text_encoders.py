"""CLIP text / T5 encoders vs transformers: parameter count, output parity, strict keys, folder round trips."""

import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.configs.arch import clip_vit_l14_text
from jaxgen.convert.keymap import ConversionError
from jaxgen.convert.transformers_text import (
  clip_text_from_transformers,
  clip_text_to_transformers,
  load_clip_text_model,
  load_t5_encoder,
  save_clip_text_folder,
  save_t5_encoder_folder,
  t5_encoder_from_transformers,
  t5_encoder_to_transformers,
)
from jaxgen.errors import UnsupportedConfigError
from jaxgen.models.clip_text import CLIPTextConfig, CLIPTextModel
from jaxgen.models.t5 import T5EncoderConfig, T5EncoderModel, relative_position_buckets
from jaxgen.models.text_encoders import abstract_variables
from jaxgen.nn.partitioning import unannotated_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CLIP_CASES = {
  # Current ids: pooled at the first eos; padding with the eos id itself (as Stable Diffusion pads).
  "quick_gelu_first_eos": dict(
    hidden_act="quick_gelu", pad_token_id=40, bos_token_id=38, eos_token_id=40
  ),
  # Legacy ids (eos_token_id=2): pooled at the largest id; exact GELU.
  "gelu_legacy_eos": dict(hidden_act="gelu", pad_token_id=1, bos_token_id=0, eos_token_id=2),
}
CLIP_SIZE = dict(
  vocab_size=41,
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=2,
  num_attention_heads=4,
  max_position_embeddings=12,
  layer_norm_eps=1e-5,
)
T5_CASES = ("relu", "gated-gelu")
# 8 buckets over max distance 12 with 14 tokens: exact, logarithmic and clipped buckets all occur.
T5_SIZE = dict(
  vocab_size=50,
  d_model=16,
  d_kv=4,
  d_ff=24,
  num_layers=3,
  num_heads=3,
  relative_attention_num_buckets=8,
  relative_attention_max_distance=12,
  layer_norm_epsilon=1e-6,
)


def randomize_(module, seed: int, std: float = 0.3):
  """Overwrites every parameter (weights, norms, biases, embeddings) with N(0, std^2) noise."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * std)
  return module.eval()


def clip_inputs(cfg: CLIPTextConfig):
  """Right-padded batch: bos, words, eos, then pad ids with a 0 mask; one row has no padding."""
  bos, eos, pad = cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id
  rows = [
    [bos, 5, 9, 17, 3, 30, 21, 8, 11, 6, 33, eos],
    [bos, 7, 25, eos] + [pad] * 8,
    [bos, 14, 36, 4, 12, 19, eos] + [pad] * 5,
  ]
  input_ids = np.array(rows, np.int64)
  lengths = [12, 4, 7]
  mask = (np.arange(12)[None] < np.array(lengths)[:, None]).astype(np.int64)
  return input_ids, mask


def t5_inputs():
  rng = np.random.default_rng(0)
  input_ids = rng.integers(2, 50, size=(3, 14)).astype(np.int64)
  mask = np.ones((3, 14), np.int64)
  mask[1, 9:] = 0  # right padding
  mask[2, :4] = 0  # left padding: T5 attends bidirectionally, so both are meaningful
  return input_ids, mask


@pytest.fixture(scope="module", params=list(CLIP_CASES))
def clip_case(request):
  cfg = CLIPTextConfig(**CLIP_SIZE, **CLIP_CASES[request.param])
  torch_model = transformers.CLIPTextModel(
    transformers.CLIPTextConfig(**CLIP_SIZE, **CLIP_CASES[request.param])
  )
  return cfg, randomize_(torch_model, seed=len(request.param))


@pytest.fixture(scope="module", params=T5_CASES)
def t5_case(request):
  cfg = T5EncoderConfig(**T5_SIZE, feed_forward_proj=request.param)
  torch_config = transformers.T5Config(**T5_SIZE, feed_forward_proj=request.param)
  return cfg, randomize_(transformers.T5EncoderModel(torch_config), seed=len(request.param))


def jnp_int(x: np.ndarray) -> jax.Array:
  return jnp.asarray(x.astype(np.int32))


# ----------------------------------------------------------------------------
# Architecture.


def test_clip_vit_l14_parameter_count():
  cfg = CLIPTextConfig(**clip_vit_l14_text.get_config().text_encoder.to_dict())
  variables = abstract_variables(cfg)
  assert not unannotated_params(variables)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(variables)))
  assert count == 123_060_480


def test_t5_v1_1_xxl_parameter_count_matches_transformers():
  """The T5 v1.1 XXL encoder (SD3 / Flux / PixArt text encoder), counted by both without memory."""
  sizes = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)
  cfg = T5EncoderConfig(**sizes, feed_forward_proj="gated-gelu")
  count = sum(
    int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(abstract_variables(cfg)))
  )
  with torch.device("meta"):
    reference = transformers.T5EncoderModel(
      transformers.T5Config(**sizes, feed_forward_proj="gated-gelu")
    )
  assert count == sum(p.numel() for p in reference.parameters()) == 4_762_310_656


def test_t5_params_are_annotated():
  assert not unannotated_params(
    abstract_variables(T5EncoderConfig(**T5_SIZE, feed_forward_proj="gated-gelu"))
  )


def test_relative_position_buckets_match_transformers():
  from transformers.models.t5.modeling_t5 import T5Attention

  for num_buckets, max_distance in ((32, 128), (8, 12), (16, 20), (64, 256)):
    ours = relative_position_buckets(300, 300, num_buckets, max_distance)
    relative = torch.arange(300)[None, :] - torch.arange(300)[:, None]
    ref = T5Attention._relative_position_bucket(relative, True, num_buckets, max_distance).numpy()
    np.testing.assert_array_equal(ours, ref)


# ----------------------------------------------------------------------------
# Output parity.


def test_clip_config_from_transformers(clip_case):
  cfg, torch_model = clip_case
  assert CLIPTextConfig.from_transformers(torch_model.config) == cfg


def test_clip_output_parity(clip_case):
  cfg, torch_model = clip_case
  input_ids, mask = clip_inputs(cfg)
  params = clip_text_from_transformers(torch_model.state_dict(), cfg)
  model = CLIPTextModel(cfg)
  apply = jax.jit(lambda p, ids, m: model.apply({"params": p}, ids, m, output_hidden_states=True))
  out = apply(params, jnp_int(input_ids), jnp_int(mask))
  with torch.no_grad():
    ref = torch_model(
      torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True
    )
  assert np.abs(ref.last_hidden_state.numpy()).max() > 0.1
  np.testing.assert_allclose(
    out.last_hidden_state, ref.last_hidden_state.numpy(), atol=1e-4, rtol=0
  )
  np.testing.assert_allclose(out.pooler_output, ref.pooler_output.numpy(), atol=1e-4, rtol=0)
  assert len(out.hidden_states) == len(ref.hidden_states) == cfg.num_hidden_layers + 1
  for ours, theirs in zip(out.hidden_states, ref.hidden_states):
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4, rtol=0)
  # The padding mask changes the padded positions' states, and we follow it.
  unmasked = apply(params, jnp_int(input_ids), jnp.ones_like(jnp_int(mask)))
  assert np.abs(unmasked.last_hidden_state[1, 4:] - out.last_hidden_state[1, 4:]).max() > 1e-3


def test_clip_pooling_follows_transformers_without_mask(clip_case):
  cfg, torch_model = clip_case
  input_ids, _ = clip_inputs(cfg)
  input_ids = input_ids[:, ::-1].copy()  # eos no longer last: picks a different position per rule
  params = clip_text_from_transformers(torch_model.state_dict(), cfg)
  out = CLIPTextModel(cfg).apply({"params": params}, jnp_int(input_ids))
  with torch.no_grad():
    ref = torch_model(torch.from_numpy(input_ids))
  np.testing.assert_allclose(out.pooler_output, ref.pooler_output.numpy(), atol=1e-4, rtol=0)


def test_t5_config_from_transformers(t5_case):
  cfg, torch_model = t5_case
  assert T5EncoderConfig.from_transformers(torch_model.config) == cfg
  assert T5EncoderConfig.from_transformers(torch_model.config.to_dict()) == cfg


def test_t5_output_parity(t5_case):
  cfg, torch_model = t5_case
  input_ids, mask = t5_inputs()
  params = t5_encoder_from_transformers(torch_model.state_dict(), cfg)
  apply = jax.jit(lambda p, ids, m: T5EncoderModel(cfg).apply({"params": p}, ids, m))
  out = np.asarray(apply(params, jnp_int(input_ids), jnp_int(mask)))
  with torch.no_grad():
    ref = torch_model(torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask))
  ref = ref.last_hidden_state.numpy()
  assert out.shape == ref.shape == (3, 14, cfg.d_model)
  assert np.abs(ref).max() > 0.1
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
  unmasked = np.asarray(apply(params, jnp_int(input_ids), jnp.ones_like(jnp_int(mask))))
  assert np.abs(unmasked[1:] - out[1:]).max() > 1e-3


# ----------------------------------------------------------------------------
# Round trips and folders.


def test_clip_state_dict_round_trip_is_bit_identical(clip_case):
  cfg, torch_model = clip_case
  state = torch_model.state_dict()
  back = clip_text_to_transformers(clip_text_from_transformers(state, cfg))
  assert sorted(back) == sorted(state)
  for key, tensor in state.items():
    np.testing.assert_array_equal(back[key], tensor.numpy(), err_msg=key)


def test_t5_state_dict_round_trip_is_bit_identical(t5_case):
  cfg, torch_model = t5_case
  state = torch_model.state_dict()
  back = t5_encoder_to_transformers(t5_encoder_from_transformers(state, cfg))
  assert sorted(back) == sorted(state)
  fresh = transformers.T5EncoderModel(
    transformers.T5Config(**T5_SIZE, feed_forward_proj=cfg.feed_forward_proj)
  )
  result = fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
  assert not result.missing_keys and not result.unexpected_keys
  for key, tensor in state.items():
    np.testing.assert_array_equal(back[key], tensor.numpy(), err_msg=key)


def _from_pretrained_strict(cls, folder):
  model, info = cls.from_pretrained(folder, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], (
    info
  )
  return model.eval()


def test_clip_folder_round_trip(clip_case, tmp_path):
  cfg, torch_model = clip_case
  torch_model.save_pretrained(tmp_path / "hf")
  loaded_cfg, params = load_clip_text_model(tmp_path / "hf")
  assert loaded_cfg == cfg
  save_clip_text_folder(params, loaded_cfg, tmp_path / "jaxgen")
  reloaded = _from_pretrained_strict(transformers.CLIPTextModel, tmp_path / "jaxgen")
  assert (
    reloaded.config.eos_token_id == cfg.eos_token_id
    and reloaded.config.hidden_act == cfg.hidden_act
  )
  input_ids, mask = clip_inputs(cfg)
  with torch.no_grad():
    ids, m = torch.from_numpy(input_ids), torch.from_numpy(mask)
    a, b = torch_model(ids, attention_mask=m), reloaded(ids, attention_mask=m)
  np.testing.assert_array_equal(a.last_hidden_state.numpy(), b.last_hidden_state.numpy())
  np.testing.assert_array_equal(a.pooler_output.numpy(), b.pooler_output.numpy())


def test_t5_folder_round_trip(t5_case, tmp_path):
  cfg, torch_model = t5_case
  torch_model.save_pretrained(tmp_path / "hf")
  loaded_cfg, params = load_t5_encoder(tmp_path / "hf")
  assert loaded_cfg == cfg
  save_t5_encoder_folder(params, loaded_cfg, tmp_path / "jaxgen")
  reloaded = _from_pretrained_strict(transformers.T5EncoderModel, tmp_path / "jaxgen")
  input_ids, mask = t5_inputs()
  with torch.no_grad():
    ids, m = torch.from_numpy(input_ids), torch.from_numpy(mask)
    a, b = torch_model(ids, attention_mask=m), reloaded(ids, attention_mask=m)
  np.testing.assert_array_equal(a.last_hidden_state.numpy(), b.last_hidden_state.numpy())


def test_legacy_clip_file_layout_and_bfloat16_folder(tmp_path):
  """transformers 4.x files: `text_model.` prefix, a position_ids buffer, often bfloat16/float16."""
  from safetensors.torch import save_file

  cfg = CLIPTextConfig(**CLIP_SIZE, **CLIP_CASES["gelu_legacy_eos"])
  torch_config = transformers.CLIPTextConfig(**CLIP_SIZE, **CLIP_CASES["gelu_legacy_eos"])
  torch_model = randomize_(transformers.CLIPTextModel(torch_config), seed=3)
  state = {f"text_model.{k}": v.to(torch.bfloat16) for k, v in torch_model.state_dict().items()}
  state["text_model.embeddings.position_ids"] = torch.arange(cfg.max_position_embeddings)[None]
  (tmp_path / "legacy").mkdir()
  save_file(state, tmp_path / "legacy" / "model.safetensors", metadata={"format": "pt"})
  config_json = {
    **cfg.to_transformers(),
    "projection_dim": 768,
    "dropout": 0.0,
    "transformers_version": "4.30.2",
  }
  (tmp_path / "legacy" / "config.json").write_text(json.dumps(config_json))
  loaded_cfg, params = load_clip_text_model(tmp_path / "legacy")
  assert loaded_cfg == cfg
  expected = (
    torch_model.state_dict()["embeddings.token_embedding.weight"].to(torch.bfloat16).float().numpy()
  )
  np.testing.assert_array_equal(params["embeddings"]["token_embedding"]["embedding"], expected)
  # The same weights load from an unprefixed, sharded float32 folder.
  sharded = tmp_path / "sharded"
  torch_model.save_pretrained(sharded, max_shard_size="20KB")
  assert (sharded / "model.safetensors.index.json").exists()
  _, params_sharded = load_clip_text_model(sharded)
  assert jax.tree.structure(params_sharded) == jax.tree.structure(params)


# ----------------------------------------------------------------------------
# Strict keys and bad input.


@pytest.fixture(scope="module")
def clip_numpy_state():
  cfg = CLIPTextConfig(**CLIP_SIZE)
  rng = np.random.default_rng(2)
  params = jax.tree.map(lambda x: rng.standard_normal(x.shape, np.float32), abstract_variables(cfg))
  return cfg, clip_text_to_transformers(params)


def test_clip_missing_unexpected_and_misshaped_keys_are_named(clip_numpy_state):
  cfg, state = clip_numpy_state
  broken = dict(state)
  del broken["encoder.layers.1.self_attn.q_proj.bias"]
  broken["encoder.layers.2.mlp.fc1.weight"] = np.zeros((48, 32), np.float32)
  broken["final_layer_norm.weight"] = np.zeros(31, np.float32)
  with pytest.raises(ConversionError) as err:
    clip_text_from_transformers(broken, cfg)
  message = str(err.value)
  assert "missing torch keys (1):\n  encoder.layers.1.self_attn.q_proj.bias" in message
  assert "unexpected torch keys (1):\n  encoder.layers.2.mlp.fc1.weight" in message
  assert "final_layer_norm.weight: expected (32,)" in message and "found (31,)" in message
  # A config that disagrees with the weights is caught the same way.
  wider = CLIPTextConfig(**{**CLIP_SIZE, "intermediate_size": 64})
  with pytest.raises(
    ConversionError, match=r"encoder.layers.0.mlp.fc1.weight: expected \(64, 32\)"
  ):
    clip_text_from_transformers(state, wider)
  bad_ids = {**state, "embeddings.position_ids": np.arange(12)[None, ::-1].copy()}
  with pytest.raises(ConversionError, match="embeddings.position_ids"):
    clip_text_from_transformers(bad_ids, cfg)


def test_t5_strict_keys_and_tied_embeddings():
  cfg = T5EncoderConfig(**T5_SIZE, feed_forward_proj="gated-gelu")
  rng = np.random.default_rng(4)
  params = jax.tree.map(lambda x: rng.standard_normal(x.shape, np.float32), abstract_variables(cfg))
  state = t5_encoder_to_transformers(params)
  # Either tied key alone is enough.
  only_tied = {k: v for k, v in state.items() if k != "shared.weight"}
  np.testing.assert_array_equal(
    t5_encoder_from_transformers(only_tied, cfg)["shared"]["embedding"], state["shared.weight"]
  )
  untied = {**state, "encoder.embed_tokens.weight": state["shared.weight"] + 1}
  with pytest.raises(ConversionError, match="must be equal"):
    t5_encoder_from_transformers(untied, cfg)
  # Only the first block owns the relative position table; relu weights do not fit a gated config.
  extra = {
    **state,
    "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight": np.zeros((8, 3)),
  }
  with pytest.raises(ConversionError, match=r"unexpected torch keys \(1\)"):
    t5_encoder_from_transformers(extra, cfg)
  relu_state = {k: v for k, v in state.items() if "wi_" not in k}
  relu_state["encoder.block.0.layer.1.DenseReluDense.wi.weight"] = np.zeros((24, 16), np.float32)
  with pytest.raises(ConversionError, match=r"missing torch keys \(6\)"):
    t5_encoder_from_transformers(relu_state, cfg)


def test_unsupported_configs_are_rejected():
  with pytest.raises(UnsupportedConfigError, match="hidden_act"):
    CLIPTextConfig.from_transformers({**CLIP_SIZE, "hidden_act": "relu"})
  with pytest.raises(UnsupportedConfigError, match="model_type"):
    CLIPTextConfig.from_transformers({**CLIP_SIZE, "model_type": "clip_vision_model"})
  with pytest.raises(ValueError, match="num_attention_heads"):
    CLIPTextConfig(**{**CLIP_SIZE, "num_attention_heads": 5})
  with pytest.raises(UnsupportedConfigError, match="feed_forward_proj"):
    T5EncoderConfig(**T5_SIZE, feed_forward_proj="gated-silu")
  with pytest.raises(UnsupportedConfigError, match="dense_act_fn"):
    T5EncoderConfig.from_transformers(
      {**T5_SIZE, "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu"}
    )
  with pytest.raises(UnsupportedConfigError, match="is_decoder"):
    T5EncoderConfig.from_transformers({**T5_SIZE, "is_decoder": True})


def test_bad_inputs_raise_before_compiling():
  cfg = CLIPTextConfig(**CLIP_SIZE)
  model = CLIPTextModel(cfg)
  params = abstract_variables(cfg)
  too_long = jnp.zeros((1, 13), jnp.int32)
  with pytest.raises(
    ValueError, match=r"input_ids: expected length <= max_position_embeddings=12, found 13"
  ):
    jax.eval_shape(lambda: model.apply(params, too_long))
  with pytest.raises(ValueError, match=r"attention_mask: expected the shape of input_ids \(2, 5\)"):
    jax.eval_shape(lambda: model.apply(params, jnp.zeros((2, 5), jnp.int32), jnp.ones((2, 4))))
  t5 = T5EncoderModel(T5EncoderConfig(**T5_SIZE))
  with pytest.raises(ValueError, match="input_ids: expected integer"):
    jax.eval_shape(lambda: t5.init(jax.random.key(0), jnp.zeros((2, 5), jnp.float32)))


def test_conversion_does_not_import_torch():
  code = (
    "import sys\n"
    "import jaxgen.convert.transformers_text, jaxgen.models.text_encoders\n"
    "assert 'torch' not in sys.modules, 'torch was imported'\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True)
