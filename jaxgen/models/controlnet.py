"""ControlNet (Zhang et al. 2023), equivalent to diffusers' `ControlNetModel`.

A trainable copy of a U-Net's encoder (its time/class embeddings, `conv_in`,
down blocks and mid block: the same modules as `jaxgen.models.unet`) reads
the noisy sample plus a hint image encoded by `controlnet_cond_embedding`
(3x3 convs, three of them stride 2, the last zero-initialised), and returns
one residual per skip connection of the U-Net and one for its mid block,
each through a zero-initialised 1x1 conv. The locked U-Net adds them
(`UNet2DConditionModel(..., down_block_additional_residuals=...,
mid_block_additional_residual=...)`), so at initialisation the controlled
U-Net is exactly the base U-Net.

Module names mirror diffusers (`controlnet_down_blocks_3` is
`controlnet_down_blocks.3`; see `jaxgen.convert.diffusers_controlnet`).
Images are NHWC; the hint is (B, H * f, W * f, conditioning_channels) with
f = 2 ** (len(conditioning_embedding_out_channels) - 1) (8 for SD: a 512x512
hint for 64x64 latents).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.errors import UnsupportedConfigError
from jaxgen.models import diffusers_config
from jaxgen.models.unet import (
  check_added_conditions,
  check_inputs,
  conditioning_embedding,
  encoder_blocks,
)
from jaxgen.models.unet import example_inputs as unet_example_inputs
from jaxgen.models.unet_config import UNetConfig
from jaxgen.nn import partitioning as pt

CHANNEL_ORDERS = ("rgb", "bgr")

# diffusers `ControlNetModel` options jaxgen accepts only at their defaults.
_DIFFUSERS_FIXED_OPTIONS: dict[str, Any] = {
  "encoder_hid_dim": None,
  "encoder_hid_dim_type": None,
  "num_attention_heads": None,
  "resnet_time_scale_shift": "default",
  "global_pool_conditions": False,
  "addition_embed_type_num_heads": 64,
}

# Parameter subtrees the ControlNet shares with the U-Net (its trainable copy).
UNET_ENCODER_MODULES = (
  "conv_in",
  "time_embedding",
  "class_embedding",
  "add_embedding",
  "mid_block",
)


@dataclasses.dataclass(frozen=True)
class ControlNetConfig:
  """Architecture of a `ControlNetModel`; field names are diffusers' config keys and defaults.

  The U-Net fields mean what they mean in `UNetConfig` (`attention_head_dim`
  is the number of heads); `encoder` is the U-Net config of the copied
  encoder. `layers_per_block` is one int, as in diffusers' ControlNet.
  `class_embed_null` is jaxgen's (see `UNetConfig`).
  """

  in_channels: int = 4
  conditioning_channels: int = 3
  flip_sin_to_cos: bool = True
  freq_shift: int = 0
  down_block_types: tuple[str, ...] = (
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "DownBlock2D",
  )
  mid_block_type: str = "UNetMidBlock2DCrossAttn"
  only_cross_attention: bool = False
  block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
  layers_per_block: int = 2
  downsample_padding: int = 1
  mid_block_scale_factor: float = 1.0
  act_fn: str = "silu"
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  cross_attention_dim: int = 1280
  transformer_layers_per_block: int | tuple[int, ...] = 1
  attention_head_dim: int | tuple[int, ...] = 8
  use_linear_projection: bool = False
  class_embed_type: str | None = None
  addition_embed_type: str | None = None
  addition_time_embed_dim: int | None = None
  num_class_embeds: int | None = None
  upcast_attention: bool = False
  projection_class_embeddings_input_dim: int | None = None
  controlnet_conditioning_channel_order: str = "rgb"
  conditioning_embedding_out_channels: tuple[int, ...] = (16, 32, 96, 256)
  class_embed_null: bool = False

  def __post_init__(self):
    diffusers_config.freeze_sequences(self)
    if self.mid_block_type is None:
      raise UnsupportedConfigError("mid_block_type: a ControlNet needs a mid block, found None")
    if not isinstance(self.layers_per_block, int):
      raise TypeError(
        f"layers_per_block: a ControlNet takes one int, found {self.layers_per_block!r}"
      )
    if self.controlnet_conditioning_channel_order not in CHANNEL_ORDERS:
      raise ValueError(
        f"controlnet_conditioning_channel_order: expected one of {CHANNEL_ORDERS}, found "
        f"{self.controlnet_conditioning_channel_order!r}"
      )
    hint = self.conditioning_embedding_out_channels
    if not hint or not all(isinstance(c, int) and c > 0 for c in hint):
      raise ValueError(
        f"conditioning_embedding_out_channels: expected positive ints, found {hint!r}"
      )
    if self.conditioning_channels < 1:
      raise ValueError(
        f"conditioning_channels: expected >= 1, found {self.conditioning_channels!r}"
      )
    self.encoder  # noqa: B018  (validates the shared U-Net fields)

  @property
  def encoder(self) -> UNetConfig:
    """The U-Net config whose encoder this ControlNet copies (up blocks mirror the down blocks)."""
    shared = {f.name for f in dataclasses.fields(UNetConfig)}
    fields = {k: v for k, v in dataclasses.asdict(self).items() if k in shared}
    up = tuple(t.replace("Down", "Up") for t in reversed(self.down_block_types))
    return UNetConfig(**fields, out_channels=self.in_channels, up_block_types=up)

  @property
  def hint_factor(self) -> int:
    """How much larger the hint is than the sample (2 per stride-2 conv of the hint encoder)."""
    return 2 ** (len(self.conditioning_embedding_out_channels) - 1)

  @classmethod
  def from_unet(cls, unet: UNetConfig, **options: Any) -> ControlNetConfig:
    """The ControlNet of `unet` (diffusers' `ControlNetModel.from_unet`); `options` set the rest."""
    shared = {f.name for f in dataclasses.fields(cls)}
    fields = {k: v for k, v in dataclasses.asdict(unet).items() if k in shared}
    if unet.dropout:
      raise UnsupportedConfigError(
        f"unet.dropout: a ControlNet copy has no dropout; found {unet.dropout!r}"
      )
    if unet.center_input_sample:
      raise UnsupportedConfigError("unet.center_input_sample: not supported by ControlNetModel")
    return cls(**{**fields, **options})

  @classmethod
  def from_diffusers(cls, config: Mapping[str, Any]) -> ControlNetConfig:
    """From a diffusers `ControlNetModel.config` (or config.json); unsupported options are named."""
    return diffusers_config.from_diffusers(cls, config, _DIFFUSERS_FIXED_OPTIONS, "ControlNet")

  def to_diffusers(self) -> dict[str, Any]:
    """`ControlNetModel(**kwargs)` keyword arguments (a null class is one more table row)."""
    kwargs = diffusers_config.to_diffusers(self)
    if kwargs.pop("class_embed_null"):
      kwargs["num_class_embeds"] = self.encoder.num_label_rows
    return kwargs


def zero_conv(features: int, kernel_size: int, padding: int, dtype: Any, name: str) -> nn.Conv:
  """A conv whose kernel and bias start at zero (ControlNet's "zero convolution")."""
  return nn.Conv(
    features,
    (kernel_size, kernel_size),
    padding=((padding, padding), (padding, padding)),
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=pt.annotated(nn.initializers.zeros_init(), (None, None, "conv_in", "conv_out")),
    bias_init=pt.annotated(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


class ControlNetConditioningEmbedding(nn.Module):
  """The hint encoder: conv_in, then (conv, stride-2 conv) per width step, SiLU after each, zero conv_out."""

  out_channels: int
  block_out_channels: tuple[int, ...]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hint: jax.Array) -> jax.Array:
    widths = self.block_out_channels
    x = pt.conv(widths[0], 3, padding=1, dtype=self.dtype, name="conv_in")(hint)
    x = nn.silu(x)
    for i, (width, next_width) in enumerate(itertools.pairwise(widths)):
      x = nn.silu(pt.conv(width, 3, padding=1, dtype=self.dtype, name=f"blocks_{2 * i}")(x))
      conv = pt.conv(
        next_width, 3, strides=2, padding=1, dtype=self.dtype, name=f"blocks_{2 * i + 1}"
      )
      x = nn.silu(conv(x))
    return zero_conv(self.out_channels, 3, 1, self.dtype, "conv_out")(x)


def check_hint(config: ControlNetConfig, sample_shape: tuple[int, ...], hint: Any) -> None:
  """Named error unless the hint is (B, H * f, W * f, conditioning_channels) for an (B, H, W, C) sample."""
  batch, height, width = sample_shape[:3]
  f = config.hint_factor
  expected = (batch, height * f, width * f, config.conditioning_channels)
  if tuple(jnp.shape(hint)) != expected:
    raise ValueError(
      f"controlnet_cond: expected the hint image of shape {expected} (NHWC, {f}x the sample's "
      f"size, conditioning_channels={config.conditioning_channels}), found {jnp.shape(hint)}"
    )


def residual_scales(num_residuals: int, conditioning_scale: Any, guess_mode: bool) -> jax.Array:
  """Scale of each residual (the mid block's last): the conditioning scale, or in guess mode
  10^linspace(-1, 0) times it (diffusers' `torch.logspace(-1, 0, n)`), the mid block at full scale."""
  scale = jnp.asarray(conditioning_scale, jnp.float32)
  if guess_mode:
    return jnp.logspace(-1.0, 0.0, num_residuals, dtype=jnp.float32) * scale
  return jnp.broadcast_to(scale, (num_residuals,))


class ControlNetModel(nn.Module):
  """diffusers' `ControlNetModel` on NHWC inputs (see the module docstring).

  Attributes:
    config: the architecture.
    dtype: compute dtype (parameters stay float32).
    remat: rematerialisation policy of the copied blocks (`jaxgen.nn.precision`).
  """

  config: ControlNetConfig
  dtype: Any = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(
    self,
    sample: jax.Array,
    timesteps: Any,
    encoder_hidden_states: jax.Array | None,
    controlnet_cond: jax.Array,
    conditioning_scale: Any = 1.0,
    encoder_attention_mask: jax.Array | None = None,
    class_labels: jax.Array | None = None,
    train: bool = False,
    *,
    guess_mode: bool = False,
    text_embeds: jax.Array | None = None,
    time_ids: jax.Array | None = None,
  ) -> tuple[tuple[jax.Array, ...], jax.Array]:
    """(down_block_res_samples, mid_block_res_sample) for the U-Net this ControlNet controls.

    Arguments are the U-Net's (`UNet2DConditionModel.__call__`) plus
    controlnet_cond, the hint (see `check_hint`; in [0, 1] for SD's
    ControlNets), conditioning_scale (a number or a traced scalar) and
    guess_mode (static). Residuals come out in `dtype`.
    """
    cfg, unet_cfg = self.config, self.config.encoder
    check_inputs(
      unet_cfg, sample, timesteps, encoder_hidden_states, encoder_attention_mask, class_labels
    )
    check_added_conditions(unet_cfg, sample.shape[0], text_embeds, time_ids)
    check_hint(cfg, sample.shape, controlnet_cond)
    emb = conditioning_embedding(
      unet_cfg, sample.shape[0], timesteps, class_labels, text_embeds, time_ids, self.dtype
    )
    hint = controlnet_cond.astype(self.dtype)
    if cfg.controlnet_conditioning_channel_order == "bgr":
      hint = hint[..., ::-1]
    c0 = cfg.block_out_channels[0]
    x = pt.conv(c0, 3, padding=1, dtype=self.dtype, name="conv_in")(sample.astype(self.dtype))
    x = x + ControlNetConditioningEmbedding(
      c0, cfg.conditioning_embedding_out_channels, self.dtype, name="controlnet_cond_embedding"
    )(hint)
    context = None if encoder_hidden_states is None else encoder_hidden_states.astype(self.dtype)
    x, skips = encoder_blocks(
      unet_cfg, x, emb, context, encoder_attention_mask, not train, self.dtype, self.remat
    )
    down = [
      zero_conv(s.shape[-1], 1, 0, self.dtype, f"controlnet_down_blocks_{i}")(s)
      for i, s in enumerate(skips)
    ]
    mid = zero_conv(x.shape[-1], 1, 0, self.dtype, "controlnet_mid_block")(x)
    scales = residual_scales(len(down) + 1, conditioning_scale, guess_mode).astype(self.dtype)
    return tuple(r * s for r, s in zip(down, scales[:-1])), mid * scales[-1]


def example_inputs(config: ControlNetConfig, batch: int = 1) -> dict[str, jax.Array]:
  """Smallest valid inputs (zeros) for `init` / `jax.eval_shape`."""
  inputs = unet_example_inputs(config.encoder, batch)
  size = inputs["sample"].shape[1] * config.hint_factor
  inputs["controlnet_cond"] = jnp.zeros((batch, size, size, config.conditioning_channels))
  inputs.setdefault("encoder_hidden_states", None)
  return inputs


def abstract_variables(config: ControlNetConfig, dtype: Any = jnp.float32) -> Any:
  """Boxed variable shapes of the ControlNet, via `jax.eval_shape` (no memory)."""
  model = ControlNetModel(config, dtype=dtype)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), **example_inputs(config)))


def copy_unet_encoder(controlnet_params: Mapping[str, Any], unet_params: Mapping[str, Any]) -> dict:
  """`controlnet_params` with the U-Net's encoder copied in (diffusers `from_unet`, ControlNet's
  `tool_add_control.py`): embeddings, conv_in, down blocks and mid block; the hint encoder and
  zero convs are kept. Boxed (logically partitioned) ControlNet leaves stay boxed."""
  unet_params = nn.unbox(unet_params)
  copied = dict(controlnet_params)
  shared = [
    k for k in controlnet_params if k in UNET_ENCODER_MODULES or k.startswith("down_blocks_")
  ]
  for key in shared:
    if key not in unet_params:
      raise ValueError(
        f"unet_params: expected the U-Net module {key!r}, found {sorted(unet_params)}"
      )
    target, source = controlnet_params[key], unet_params[key]
    if jax.tree.structure(nn.unbox(target)) != jax.tree.structure(source):
      raise ValueError(f"unet_params[{key!r}]: its parameters do not match the ControlNet's")

    def take(t, s, key=key):
      value = t.unbox() if isinstance(t, nn.LogicallyPartitioned) else t
      if value.shape != s.shape:
        raise ValueError(
          f"unet_params[{key!r}]: expected shape {value.shape} (the ControlNet's), found {s.shape}"
        )
      s = jnp.asarray(s, value.dtype)
      return t.replace_boxed(s) if isinstance(t, nn.LogicallyPartitioned) else s

    copied[key] = jax.tree.map(
      take, target, source, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )
  return copied


def init_from_unet(
  config: ControlNetConfig, unet_params: Mapping[str, Any], rng: jax.Array
) -> dict[str, Any]:
  """Fresh ControlNet params (boxed) whose trainable copy starts as `unet_params`' encoder."""
  fresh = jax.jit(ControlNetModel(config).init)(rng, **example_inputs(config))["params"]
  return copy_unet_encoder(fresh, unet_params)
