"""U-Net: paper-size parameter counts (abstractly), config handling and named input errors."""

import importlib.util
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.models.unet import (
  UNet2DConditionModel,
  UNetConfig,
  UnsupportedConfigError,
  abstract_variables,
  check_class_labels,
  example_inputs,
)
from jaxgen.nn import unannotated_params

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs" / "arch"

TINY = dict(
  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
  block_out_channels=(32, 64),
  layers_per_block=1,
  norm_num_groups=8,
  cross_attention_dim=16,
  attention_head_dim=2,
)


def load_config(name: str) -> UNetConfig:
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return UNetConfig(**module.get_config().unet.to_dict())


def count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("name,expected", [("sd15_unet", 859_520_964), ("sd21_unet", 865_910_724)])
def test_stable_diffusion_parameter_counts(name, expected):
  variables = abstract_variables(load_config(name))
  assert set(variables) == {"params"}
  assert count(variables) == expected
  assert unannotated_params(variables) == []


def test_sd21_head_layout():
  cfg = load_config("sd21_unet")
  params = abstract_variables(cfg)["params"]
  # 5 heads of width 64 in the first block: to_q maps 320 -> 5 * 64.
  to_q = params["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]["attn1"]["to_q"]["kernel"]
  assert to_q.value.shape == (320, 320) and to_q.names == ("embed", "heads")
  assert cfg.num_heads == (5, 10, 20, 20)
  # Linear projections (use_linear_projection) are 2-D kernels.
  assert params["mid_block"]["attentions_0"]["proj_in"]["kernel"].value.shape == (1280, 1280)


def test_config_diffusers_round_trip():
  cfg = load_config("sd21_unet")
  as_dict = cfg.to_diffusers()
  assert as_dict["attention_head_dim"] == [5, 10, 20, 20]
  bookkeeping = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.42.1",
    "dual_cross_attention": False,
    "num_attention_heads": None,
  }
  assert UNetConfig.from_diffusers({**as_dict, **bookkeeping}) == cfg


@pytest.mark.parametrize(
  "extra,match",
  [
    ({"addition_embed_type": "text"}, "addition_embed_type"),
    ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift"),
    ({"some_future_option": 3}, "some_future_option"),
    ({"only_cross_attention": True}, "only_cross_attention"),
    ({"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}, "mid_block_type"),
    ({"class_embed_type": "projection"}, "class_embed_type"),
  ],
)
def test_from_diffusers_rejects_unsupported_options(extra, match):
  with pytest.raises(UnsupportedConfigError, match=match):
    UNetConfig.from_diffusers({**UNetConfig(**TINY).to_diffusers(), **extra})


@pytest.mark.parametrize(
  "overrides,match",
  [
    ({"block_out_channels": (32, 64, 64)}, "same length"),
    ({"down_block_types": ("CrossAttnDownBlock2D", "AttnDownBlock2D")}, "down_block_types"),
    ({"attention_head_dim": 3}, r"attention_head_dim\[0\]=3"),
    ({"attention_head_dim": (2, 2, 2)}, "attention_head_dim"),
    ({"norm_num_groups": 12}, "norm_num_groups"),
  ],
)
def test_config_rejects_inconsistent_values(overrides, match):
  with pytest.raises(ValueError, match=match):
    UNetConfig(**{**TINY, **overrides})


@pytest.fixture(scope="module")
def tiny_model():
  cfg = UNetConfig(**TINY, num_class_embeds=5)
  model = UNet2DConditionModel(cfg)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), **example_inputs(cfg)))
  return model, variables


def good_inputs(batch=2):
  return dict(
    sample=jnp.zeros((batch, 8, 8, 4)),
    timesteps=jnp.array([1, 2]),
    encoder_hidden_states=jnp.zeros((batch, 3, 16)),
    encoder_attention_mask=jnp.ones((batch, 3), jnp.int32),
    class_labels=jnp.array([0, 4]),
  )


@pytest.mark.parametrize(
  "change,match",
  [
    ({"sample": jnp.zeros((2, 8, 8, 3))}, r"sample: expected 4 channels"),
    ({"sample": jnp.zeros((2, 4, 8, 8))}, r"sample: expected 4 channels"),  # NCHW by mistake
    ({"sample": jnp.zeros((2, 7, 8, 4))}, r"sample: height and width must be multiples of 2"),
    ({"sample": jnp.zeros((8, 8, 4))}, r"sample: expected NHWC"),
    ({"timesteps": jnp.zeros((3,))}, r"timesteps: expected a scalar or shape \(2,\)"),
    (
      {"encoder_hidden_states": jnp.zeros((2, 3, 12))},
      r"encoder_hidden_states: expected shape .*16",
    ),
    (
      {"encoder_hidden_states": None, "encoder_attention_mask": None},
      "encoder_hidden_states: required",
    ),
    (
      {"encoder_attention_mask": jnp.ones((2, 4))},
      r"encoder_attention_mask: expected shape \(2, 3\)",
    ),
    ({"class_labels": None}, "class_labels: expected shape"),
    ({"class_labels": jnp.array([0.5, 1.0])}, "class_labels: expected integer"),
  ],
)
def test_bad_inputs_raise_named_errors(tiny_model, change, match):
  model, variables = tiny_model
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda v: model.apply(v, **{**good_inputs(), **change}), variables)


def test_forward_shapes_scalar_timestep_and_bfloat16(tiny_model):
  model, variables = tiny_model
  inputs = {**good_inputs(), "timesteps": 7.5}
  out = jax.eval_shape(lambda v: model.apply(v, **inputs), variables)
  assert out.shape == (2, 8, 8, 4) and out.dtype == jnp.float32
  bf16 = UNet2DConditionModel(model.config, dtype=jnp.bfloat16)
  out = jax.eval_shape(lambda v: bf16.apply(v, **inputs), variables)
  assert out.dtype == jnp.bfloat16


def test_unet_without_cross_attention_rejects_context():
  cfg = UNetConfig(
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64),
    mid_block_type="UNetMidBlock2D",
    norm_num_groups=8,
  )
  model = UNet2DConditionModel(cfg)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), **example_inputs(cfg)))
  assert "attentions_0" not in variables["params"]["mid_block"]
  with pytest.raises(ValueError, match="no cross-attention"):
    jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((1, 4, 4, 4)), 0, jnp.zeros((1, 2, 8))), variables
    )


def test_dropout_is_active_only_in_training():
  one_block = dict(
    down_block_types=("CrossAttnDownBlock2D",),
    up_block_types=("CrossAttnUpBlock2D",),
    block_out_channels=(32,),
    attention_head_dim=2,
  )
  cfg = UNetConfig(**{**TINY, **one_block, "dropout": 0.5})
  model = UNet2DConditionModel(cfg)
  inputs = {k: v for k, v in good_inputs().items() if k != "class_labels"}
  inputs["sample"] = jax.random.normal(jax.random.key(1), inputs["sample"].shape)
  # Random values for the abstract params (no init compile needed).
  abstract = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), **inputs)))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda x: 0.2 * rng.standard_normal(x.shape, np.float32), abstract)
  apply = jax.jit(model.apply, static_argnames="train")
  a = apply(variables, **inputs)
  b = apply(variables, **inputs, train=True, rngs={"dropout": jax.random.key(2)})
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
  np.testing.assert_array_equal(apply(variables, **inputs), a)


# Attention-free and tiny: cheap to compile.
LABELLED = dict(
  down_block_types=("DownBlock2D", "DownBlock2D"),
  up_block_types=("UpBlock2D", "UpBlock2D"),
  mid_block_type="UNetMidBlock2D",
  block_out_channels=(8, 16),
  layers_per_block=1,
  norm_num_groups=4,
  num_class_embeds=10,
)


def _labelled_model(**overrides):
  cfg = UNetConfig(**{**LABELLED, **overrides})
  model = UNet2DConditionModel(cfg)
  init = jax.jit(lambda rng: nn.meta.unbox(model.init(rng, **example_inputs(cfg))))
  return model, init(jax.random.key(0))


def _with_labels(model, labels, timestep=3):
  """`apply` for fixed host labels: not traced, so the U-Net still checks them."""
  return lambda variables, sample: model.apply(
    variables, sample, timestep, class_labels=np.asarray(labels)
  )


def test_class_label_out_of_range_is_a_named_error_when_concrete():
  model, variables = _labelled_model()
  sample = jnp.zeros((2, 4, 4, 4))
  message = r"class_labels: expected labels in \[0, 10\) .*set class_embed_null=True .*found \[10\]"
  # The check runs while tracing: no U-Net needs to run for the errors.
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(_with_labels(model, [10, 10]), variables, sample)
  with pytest.raises(ValueError, match=r"found \[-1\]"):
    jax.eval_shape(_with_labels(model, np.array([-1, 0])), variables, sample)
  out = jax.jit(_with_labels(model, [0, 9]))(variables, sample)
  assert np.isfinite(out).all()
  # Under jit the labels are traced and cannot be checked there: tasks check
  # their host batches with the same helper.
  with pytest.raises(ValueError, match=r"batch\['label'\]: expected labels in \[0, 10\)"):
    check_class_labels(model.config, np.array([3, 12]), name="batch['label']")
  with pytest.raises(ValueError, match="expected integer labels"):
    check_class_labels(model.config, np.array([0.0, 1.0]))
  check_class_labels(model.config, np.arange(10))


def test_null_class_adds_one_table_row_and_keeps_diffusers_parity():
  model, variables = _labelled_model(class_embed_null=True)
  cfg = model.config
  assert cfg.null_class_label == 10
  assert variables["params"]["class_embedding"]["embedding"].shape == (11, cfg.time_embed_dim)
  sample = jax.random.normal(jax.random.key(1), (2, 4, 4, 4))
  null_and_real = jax.jit(
    lambda v, x: (_with_labels(model, [10, 10], 5)(v, x), _with_labels(model, [3, 3], 5)(v, x))
  )
  null, real = null_and_real(variables, sample)
  assert np.isfinite(null).all() and not np.allclose(null, real)
  with pytest.raises(ValueError, match=r"expected labels in \[0, 11\) .*10 being the null class"):
    jax.eval_shape(_with_labels(model, [11, 0], 5), variables, sample)
  # In diffusers terms the null class is one more table row; off by default.
  as_diffusers = cfg.to_diffusers()
  assert as_diffusers["num_class_embeds"] == 11 and "class_embed_null" not in as_diffusers
  assert UNetConfig.from_diffusers(as_diffusers).num_label_rows == 11
  assert UNetConfig(**LABELLED).to_diffusers()["num_class_embeds"] == 10
  assert not UNetConfig(**LABELLED).class_embed_null
  with pytest.raises(ValueError, match="null_class_label: this U-Net has no null class"):
    UNetConfig(**LABELLED).null_class_label  # pylint: disable=expression-not-assigned


@pytest.mark.parametrize(
  "overrides", [dict(num_class_embeds=None), dict(class_embed_type="timestep")]
)
def test_null_class_needs_a_label_table(overrides):
  with pytest.raises(ValueError, match="class_embed_null: a null class needs a label table"):
    UNetConfig(**{**LABELLED, **overrides, "class_embed_null": True})


def test_attention_free_blocks_with_the_default_mid_block_name_mid_block_type():
  cfg = UNetConfig(
    **{
      **LABELLED,
      "mid_block_type": "UNetMidBlock2DCrossAttn",
      "num_class_embeds": None,
      "cross_attention_dim": 8,
      "attention_head_dim": 2,
    }
  )
  model = UNet2DConditionModel(cfg)
  with pytest.raises(
    ValueError,
    match="encoder_hidden_states: required by the mid block: "
    "mid_block_type='UNetMidBlock2DCrossAttn'.*set mid_block_type='UNetMidBlock2D'",
  ):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 4)), 0))
