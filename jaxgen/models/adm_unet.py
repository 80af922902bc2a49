"""The guided-diffusion (ADM) U-Net of Dhariwal & Nichol, on NHWC inputs.

One module for openai/guided-diffusion's `UNetModel` and the copy Palette
uses (`models/guided_diffusion_modules/unet.py`, conditioned on a continuous
noise level instead of an integer timestep; the same sinusoids embed either).
The module tree follows the reference's `input_blocks.{i}.{j}` /
`middle_block.{j}` / `output_blocks.{i}.{j}` layout, so a state dict maps by
name: `input_blocks.1.0.in_layers.2.weight` is
`input_blocks_1_0/in_layers_2/kernel`. Shared blocks come from `jaxgen.nn`:
the time MLP (`TimestepEmbedding`: `time_embed.{0,2}` are `linear_{1,2}`),
the resampling convs (`Downsample2D`'s `conv` is the reference's `op`) and
attention's softmax.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.errors import UnsupportedConfigError
from jaxgen.models.transformers_compat import check_positive_ints
from jaxgen.nn import partitioning as pt
from jaxgen.nn.attention import dot_product_attention
from jaxgen.nn.embeddings import TimestepEmbedding, timestep_embedding
from jaxgen.nn.precision import remat_module
from jaxgen.nn.sampling import Downsample2D, Upsample2D, upsample_nearest_2x

# The reference's `normalization(channels)`: GroupNorm32 with torch's epsilon.
NORM_GROUPS = 32
NORM_EPS = 1e-5

# Palette's `unet` config keys -> guided-diffusion's `UNetModel` argument names.
PALETTE_KEYS = {
  "in_channel": "in_channels",
  "inner_channel": "model_channels",
  "out_channel": "out_channels",
  "res_blocks": "num_res_blocks",
  "attn_res": "attention_resolutions",
  "channel_mults": "channel_mult",
}
# Palette's `UNet` defaults where they differ from guided-diffusion's `UNetModel`.
PALETTE_DEFAULTS = {"use_scale_shift_norm": True, "resblock_updown": True}
# Reference arguments with no effect on the architecture or its parameters
# (gradient checkpointing and fp16 are `model.remat` / `model.compute_dtype` here).
_IGNORED_KEYS = ("use_checkpoint", "use_fp16")


@dataclasses.dataclass(frozen=True)
class ADMUNetConfig:
  """Architecture of the ADM U-Net; field names are guided-diffusion's `UNetModel` arguments.

  attention_resolutions: downsample rates (1 = full resolution, 2 = after one
    downsampling, ...) with attention, as `UNetModel` takes them (its
    `create_model` converts "16" to image_size // 16; Palette passes `attn_res`
    through unchanged).
  num_head_channels: if not -1, the width of a head (overrides num_heads and
    num_heads_upsample); num_heads_upsample -1 means num_heads.
  use_new_attention_order: split q, k, v before heads (`QKVAttention`) instead
    of heads before q, k, v (`QKVAttentionLegacy`).
  num_classes: a label table added to the time embedding (class-conditional ADM).
  Every width must be a multiple of 32 (the reference's GroupNorm32).
  """

  image_size: int = 64
  in_channels: int = 3
  model_channels: int = 128
  out_channels: int = 3
  num_res_blocks: int = 2
  attention_resolutions: tuple[int, ...] = (2, 4, 8)
  dropout: float = 0.0
  channel_mult: tuple[float, ...] = (1, 2, 4, 8)
  conv_resample: bool = True
  dims: int = 2
  num_classes: int | None = None
  num_heads: int = 1
  num_head_channels: int = -1
  num_heads_upsample: int = -1
  use_scale_shift_norm: bool = False
  resblock_updown: bool = False
  use_new_attention_order: bool = False

  def __post_init__(self):
    object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
    object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
    if self.dims != 2:
      raise UnsupportedConfigError(f"dims: jaxgen's ADM U-Net is 2-D only, found dims={self.dims}")
    check_positive_ints(self, ("in_channels", "model_channels", "out_channels", "num_res_blocks"))
    if not self.channel_mult or any(m <= 0 for m in self.channel_mult):
      raise ValueError(f"channel_mult: expected positive multipliers, found {self.channel_mult!r}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout: expected a rate in [0, 1), found {self.dropout!r}")
    odd = [w for w in self.widths if w % NORM_GROUPS]
    if odd:
      raise ValueError(
        f"model_channels x channel_mult: every width must be a multiple of {NORM_GROUPS} "
        f"(GroupNorm32), found widths {odd} from model_channels={self.model_channels}, "
        f"channel_mult={self.channel_mult}"
      )
    for width in {self.widths[-1]} | {self.widths[i] for i in self.attention_levels}:
      if self.num_head_channels != -1 and width % self.num_head_channels:
        raise ValueError(
          f"num_head_channels: attention width {width} is not divisible by "
          f"num_head_channels={self.num_head_channels}"
        )
      for key in ("num_heads", "num_heads_upsample"):
        heads = self.heads(width, upsample=key == "num_heads_upsample")
        if self.num_head_channels == -1 and width % heads:
          raise ValueError(f"{key}: attention width {width} is not divisible by {heads} heads")

  @classmethod
  def from_reference(cls, kwargs: Mapping[str, Any]) -> ADMUNetConfig:
    """A config from guided-diffusion `UNetModel` keyword arguments."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - fields - set(_IGNORED_KEYS))
    if unknown:
      raise UnsupportedConfigError(
        f"{unknown[0]}: not a guided-diffusion UNetModel argument; expected one of {sorted(fields)}"
      )
    return cls(**{k: v for k, v in kwargs.items() if k not in _IGNORED_KEYS})

  @classmethod
  def from_palette(cls, section: Mapping[str, Any]) -> ADMUNetConfig:
    """A config from Palette's `unet` section (its key names and its `UNet` defaults)."""
    palette_only = {"image_size", "dropout", "conv_resample", "num_heads", "num_head_channels"}
    palette_only |= {"num_heads_upsample", "use_new_attention_order", *PALETTE_DEFAULTS}
    unknown = sorted(set(section) - set(PALETTE_KEYS) - palette_only - set(_IGNORED_KEYS))
    if unknown:
      raise UnsupportedConfigError(
        f"{unknown[0]}: not a Palette UNet argument; expected one of "
        f"{sorted(set(PALETTE_KEYS) | palette_only)}"
      )
    values = {PALETTE_KEYS.get(k, k): v for k, v in section.items() if k not in _IGNORED_KEYS}
    return cls(**{**PALETTE_DEFAULTS, **values})

  @property
  def time_embed_dim(self) -> int:
    return 4 * self.model_channels

  @property
  def widths(self) -> tuple[int, ...]:
    return tuple(int(m * self.model_channels) for m in self.channel_mult)

  @property
  def num_downsamples(self) -> int:
    return len(self.channel_mult) - 1

  @property
  def attention_levels(self) -> tuple[int, ...]:
    """Levels whose resolution (downsample rate 2**level) has attention."""
    return tuple(i for i in range(len(self.channel_mult)) if 2**i in self.attention_resolutions)

  def heads(self, width: int, upsample: bool = False) -> int:
    if self.num_head_channels != -1:
      return width // self.num_head_channels
    if upsample and self.num_heads_upsample != -1:
      return self.num_heads_upsample
    return self.num_heads


def _norm(name: str, dtype) -> nn.GroupNorm:
  return pt.group_norm(NORM_GROUPS, NORM_EPS, dtype=dtype, name=name)


def _zero_conv(features: int, dtype, name: str) -> nn.Conv:
  """A 3x3 conv initialised to zero (`zero_module`): a fresh block starts as the identity."""
  return nn.Conv(
    features,
    (3, 3),
    padding=((1, 1), (1, 1)),
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=pt.annotated(nn.initializers.zeros_init(), (None, None, "conv_in", "conv_out")),
    bias_init=pt.annotated(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


def avg_pool_2x(x: jax.Array) -> jax.Array:
  """2x2 average pooling with stride 2 (`Downsample(use_conv=False)`)."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


class ResBlock(nn.Module):
  """ADM residual block: GroupNorm -> SiLU -> [resample] -> conv, embedding, GroupNorm -> SiLU -> dropout -> zero conv.

  The embedding is added to the features (`use_scale_shift_norm=False`) or
  modulates the second norm as (1 + scale) * norm(h) + shift. `up`/`down`
  resample both branches without weights (the reference's `h_upd`/`x_upd`).
  The skip is the identity, or a 1x1 conv (3x3 with `use_conv`) when the
  width changes. Names: `in_layers_{0,2}`, `emb_layers_1`, `out_layers_{0,3}`,
  `skip_connection`.
  """

  out_channels: int | None = None
  dropout: float = 0.0
  use_conv: bool = False
  use_scale_shift_norm: bool = False
  up: bool = False
  down: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, deterministic: bool = True) -> jax.Array:
    in_channels = x.shape[-1]
    out_channels = self.out_channels or in_channels
    h = nn.silu(_norm("in_layers_0", self.dtype)(x))
    if self.up:
      h, x = upsample_nearest_2x(h), upsample_nearest_2x(x)
    elif self.down:
      h, x = avg_pool_2x(h), avg_pool_2x(x)
    h = pt.conv(out_channels, 3, padding=1, dtype=self.dtype, name="in_layers_2")(h)
    emb_width = 2 * out_channels if self.use_scale_shift_norm else out_channels
    emb_out = pt.dense(
      emb_width, ("time_embed", "conv_out"), dtype=self.dtype, name="emb_layers_1"
    )(nn.silu(emb))[:, None, None, :]
    out_norm = _norm("out_layers_0", self.dtype)
    if self.use_scale_shift_norm:
      scale, shift = jnp.split(emb_out, 2, axis=-1)
      h = out_norm(h) * (1 + scale) + shift
    else:
      h = out_norm(h + emb_out)
    h = nn.Dropout(self.dropout)(nn.silu(h), deterministic=deterministic)
    h = _zero_conv(out_channels, self.dtype, "out_layers_3")(h)
    if out_channels != in_channels:
      kernel = 3 if self.use_conv else 1
      x = pt.conv(
        out_channels, kernel, padding=kernel // 2, dtype=self.dtype, name="skip_connection"
      )(x)
    return x + h


class AttentionBlock(nn.Module):
  """Self-attention over all positions: GroupNorm, fused 1x1 `qkv`, zero-initialised `proj_out`, residual.

  The fused projection's channels are ordered (heads, q/k/v, head width) by
  `QKVAttentionLegacy` and (q/k/v, heads, head width) by `QKVAttention`
  (`new_order`); both write heads-major outputs. The reference scales q and k
  by d**-1/4 each, i.e. the logits by d**-1/2, as `dot_product_attention`.
  """

  num_heads: int
  new_order: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    tokens = x.reshape(batch, height * width, channels)
    qkv = pt.dense(3 * channels, ("embed", "heads"), dtype=self.dtype, name="qkv")(
      _norm("norm", self.dtype)(tokens)
    )
    head_width = channels // self.num_heads
    if self.new_order:
      qkv = qkv.reshape(batch, -1, 3, self.num_heads, head_width)
    else:
      qkv = qkv.reshape(batch, -1, self.num_heads, 3, head_width).swapaxes(2, 3)
    q, k, v = (qkv[:, :, i] for i in range(3))
    out = dot_product_attention(q, k, v).reshape(batch, -1, channels)
    out = pt.dense(
      channels,
      ("heads", "embed"),
      dtype=self.dtype,
      kernel_init=nn.initializers.zeros_init(),
      name="proj_out",
    )(out)
    return (tokens + out).reshape(x.shape)


def check_inputs(config: ADMUNetConfig, x: Any, timesteps: Any, y: Any) -> None:
  """Named errors for the U-Net's inputs (shapes only, before compiling)."""
  shape = tuple(jnp.shape(x))
  if len(shape) != 4 or shape[-1] != config.in_channels:
    raise ValueError(
      f"x: expected NHWC (batch, height, width, {config.in_channels}) (config.in_channels), "
      f"found shape {shape}"
    )
  factor = 2**config.num_downsamples
  if shape[1] % factor or shape[2] % factor:
    raise ValueError(
      f"x: height and width must be multiples of {factor} ({config.num_downsamples} "
      f"downsamplings), found {shape[1]}x{shape[2]}"
    )
  t_shape = tuple(jnp.shape(timesteps))
  if t_shape not in ((), (shape[0],)):
    raise ValueError(
      f"timesteps: expected a scalar or shape ({shape[0]},) (one timestep or noise level "
      f"per example), found shape {t_shape}"
    )
  if config.num_classes is None and y is not None:
    raise ValueError("y: this U-Net has no label table (num_classes is None); pass None")
  if config.num_classes is not None and (y is None or tuple(jnp.shape(y)) != (shape[0],)):
    found = None if y is None else tuple(jnp.shape(y))
    raise ValueError(
      f"y: expected ({shape[0]},) class labels (num_classes={config.num_classes}), found {found}"
    )


class ADMUNet(nn.Module):
  """guided-diffusion's `UNetModel` (and Palette's copy of it) on NHWC inputs.

  Attributes:
    config: the architecture.
    dtype: compute dtype (parameters, norm statistics and softmax stay float32).
    remat: rematerialisation policy of every residual and attention block
      (`jaxgen.nn.precision`); parameter names do not depend on it.
  """

  config: ADMUNetConfig
  dtype: Any = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(
    self, x: jax.Array, timesteps: Any, y: jax.Array | None = None, train: bool = False
  ) -> jax.Array:
    """Predicts the model output for `x`.

    Args:
      x: (B, H, W, in_channels); H, W multiples of 2**(len(channel_mult) - 1).
      timesteps: () or (B,) floats: integer timesteps (guided-diffusion) or
        continuous noise levels (Palette's `gammas`), embedded alike.
      y: (B,) int labels when `num_classes` is set, else None.
      train: enables dropout (needs the "dropout" rng).

    Returns:
      (B, H, W, out_channels) in `dtype`.
    """
    cfg, dtype, deterministic = self.config, self.dtype, not train
    check_inputs(cfg, x, timesteps, y)
    res_block = remat_module(ResBlock, self.remat, static_argnums=(3,))
    attention = remat_module(AttentionBlock, self.remat, static_argnums=())

    def resblock(out_channels, name, **kwargs):
      return res_block(
        out_channels,
        cfg.dropout,
        use_scale_shift_norm=cfg.use_scale_shift_norm,
        dtype=dtype,
        name=name,
        **kwargs,
      )

    def attend(h, name, upsample=False):
      heads = cfg.heads(h.shape[-1], upsample)
      return attention(heads, cfg.use_new_attention_order, dtype=dtype, name=name)(h)

    timesteps = jnp.broadcast_to(jnp.asarray(timesteps, jnp.float32), (x.shape[0],))
    sinusoids = timestep_embedding(
      timesteps, cfg.model_channels, flip_sin_to_cos=True, downscale_freq_shift=0.0
    )
    emb = TimestepEmbedding(cfg.time_embed_dim, dtype=dtype, name="time_embed")(
      sinusoids.astype(dtype)
    )
    if cfg.num_classes is not None:
      table = pt.embed(
        cfg.num_classes,
        cfg.time_embed_dim,
        feature_axis="time_embed",
        dtype=dtype,
        name="label_emb",
      )
      emb = emb + table(y)

    h = pt.conv(cfg.widths[0], 3, padding=1, dtype=dtype, name="input_blocks_0_0")(x.astype(dtype))
    skips, block = [h], 1
    for level, width in enumerate(cfg.widths):
      for _ in range(cfg.num_res_blocks):
        h = resblock(width, f"input_blocks_{block}_0")(h, emb, deterministic)
        if level in cfg.attention_levels:
          h = attend(h, f"input_blocks_{block}_1")
        skips.append(h)
        block += 1
      if level < cfg.num_downsamples:
        name = f"input_blocks_{block}_0"
        if cfg.resblock_updown:
          h = resblock(width, name, down=True)(h, emb, deterministic)
        elif cfg.conv_resample:
          h = Downsample2D(width, padding=1, dtype=dtype, name=name)(h)
        else:
          h = avg_pool_2x(h)
        skips.append(h)
        block += 1

    h = resblock(None, "middle_block_0")(h, emb, deterministic)
    h = attend(h, "middle_block_1")
    h = resblock(None, "middle_block_2")(h, emb, deterministic)

    block = 0
    for level in reversed(range(len(cfg.widths))):
      width = cfg.widths[level]
      for i in range(cfg.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = resblock(width, f"output_blocks_{block}_0")(h, emb, deterministic)
        layer = 1
        if level in cfg.attention_levels:
          h = attend(h, f"output_blocks_{block}_1", upsample=True)
          layer += 1
        if level and i == cfg.num_res_blocks:
          name = f"output_blocks_{block}_{layer}"
          if cfg.resblock_updown:
            h = resblock(width, name, up=True)(h, emb, deterministic)
          elif cfg.conv_resample:
            h = Upsample2D(width, dtype=dtype, name=name)(h)
          else:
            h = upsample_nearest_2x(h)
        block += 1

    h = nn.silu(_norm("out_0", dtype)(h))
    return _zero_conv(cfg.out_channels, dtype, "out_2")(h)


def example_inputs(config: ADMUNetConfig, batch: int = 1) -> dict[str, jax.Array]:
  """Smallest valid inputs (zeros) for `init` / `jax.eval_shape`; params do not depend on their size."""
  size = 2**config.num_downsamples
  inputs = {
    "x": jnp.zeros((batch, size, size, config.in_channels), jnp.float32),
    "timesteps": jnp.zeros((batch,), jnp.float32),
  }
  if config.num_classes is not None:
    inputs["y"] = jnp.zeros((batch,), jnp.int32)
  return inputs


def abstract_variables(config: ADMUNetConfig, dtype: Any = jnp.float32) -> Any:
  """Boxed variable shapes of the U-Net via `jax.eval_shape` (no memory)."""
  model = ADMUNet(config, dtype=dtype)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), **example_inputs(config)))


def parameter_count(config: ADMUNetConfig) -> int:
  """Number of parameters of the U-Net, from shapes only."""
  leaves = jax.tree_util.tree_leaves(nn.meta.unbox(abstract_variables(config)))
  return sum(int(leaf.size) for leaf in leaves)
