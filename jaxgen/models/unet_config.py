"""The architecture config of jaxgen's conditional 2-D U-Net (`jaxgen.models.unet`).

`UNetConfig` uses diffusers' `UNet2DConditionModel` config keys and meanings,
including one quirk: diffusers' `attention_head_dim` is really the number of
attention heads per block (see https://github.com/huggingface/diffusers/issues/2011);
the width of a head is `block_out_channels[i] // attention_head_dim[i]`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxgen.errors import UnsupportedConfigError
from jaxgen.models import diffusers_config

DOWN_BLOCK_TYPES = ("DownBlock2D", "CrossAttnDownBlock2D")
UP_BLOCK_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2DCrossAttn", "UNetMidBlock2D")
CLASS_EMBED_TYPES = (None, "timestep", "identity")
# "text_time" is SDXL's: sinusoidal embeddings of the size/crop conditions
# (`time_ids`) beside the pooled text embedding, projected into the time embedding.
ADDITION_EMBED_TYPES = (None, "text_time")
# Temporal layers (`jaxgen.nn.temporal`) of a video U-Net; None: an image U-Net.
# "modelscope" is diffusers' `UNet3DConditionModel` layout: `transformer_in`
# (8 heads of `temporal_in_head_dim`) after conv_in, a `TemporalConvLayer`
# (`temp_convs_<i>`) after every resnet and a `TransformerTemporalModel`
# (`temp_attentions_<i>`, the spatial heads) after every spatial transformer.
# Its jaxgen-only options: temporal_merge "learned" (Video LDM's alpha blend),
# temporal_frame_embedding (sinusoids of the frame index in the temporal
# attention), fps_conditioning (a zero-initialised fps embedding added to the
# time embedding); temporal_dropout is the temporal convs' (0.1 in diffusers).
TEMPORAL_LAYOUTS = ("modelscope",)
TEMPORAL_MERGES = ("residual", "learned")
_TEMPORAL_DEFAULTS: dict[str, Any] = {
  "temporal_merge": "residual",
  "temporal_frame_embedding": False,
  "temporal_dropout": 0.1,
  "fps_conditioning": False,
}
# The keys of diffusers' `UNet3DConditionModel` config and the values jaxgen needs
# of its own fields to write one.
_DIFFUSERS_3D_KEYS = (
  "sample_size",
  "in_channels",
  "out_channels",
  "down_block_types",
  "up_block_types",
  "block_out_channels",
  "layers_per_block",
  "downsample_padding",
  "mid_block_scale_factor",
  "act_fn",
  "norm_num_groups",
  "norm_eps",
  "cross_attention_dim",
)
_DIFFUSERS_3D_FIXED_OPTIONS: dict[str, Any] = {
  "num_attention_heads": None,
  "time_cond_proj_dim": None,
}
_DIFFUSERS_3D_IMPLIED: dict[str, Any] = {
  "mid_block_type": "UNetMidBlock2DCrossAttn",
  "use_linear_projection": True,
  "center_input_sample": False,
  "flip_sin_to_cos": True,
  "freq_shift": 0,
  "dropout": 0.0,
  "transformer_layers_per_block": 1,
  "only_cross_attention": False,
  "upcast_attention": False,
  "class_embed_type": None,
  "num_class_embeds": None,
  "class_embed_null": False,
  "addition_embed_type": None,
  "addition_time_embed_dim": None,
  "projection_class_embeddings_input_dim": None,
  **_TEMPORAL_DEFAULTS,
}


# diffusers `UNet2DConditionModel` options jaxgen accepts only at these values
# (their diffusers defaults). A config with any other value is rejected.
_DIFFUSERS_FIXED_OPTIONS: dict[str, Any] = {
  "reverse_transformer_layers_per_block": None,
  "encoder_hid_dim": None,
  "encoder_hid_dim_type": None,
  "num_attention_heads": None,
  "dual_cross_attention": False,
  "resnet_time_scale_shift": "default",
  "resnet_skip_time_act": False,
  "resnet_out_scale_factor": 1.0,
  "time_embedding_type": "positional",
  "time_embedding_dim": None,
  "time_embedding_act_fn": None,
  "timestep_post_act": None,
  "time_cond_proj_dim": None,
  "conv_in_kernel": 3,
  "conv_out_kernel": 3,
  "attention_type": "default",
  "class_embeddings_concat": False,
  "mid_block_only_cross_attention": None,
  "cross_attention_norm": None,
  "addition_embed_type_num_heads": 64,
}


def _per_block(name: str, value: int | tuple[int, ...], num_blocks: int) -> tuple[int, ...]:
  if isinstance(value, int):
    return (value,) * num_blocks
  if len(value) != num_blocks or not all(isinstance(v, int) for v in value):
    raise ValueError(
      f"{name}: expected an int or {num_blocks} ints (one per block), found {value!r}"
    )
  return tuple(value)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """Architecture of a `UNet2DConditionModel`; field names are diffusers' config keys.

  Defaults are diffusers' defaults (Stable Diffusion 1.x layout). Notes:
    attention_head_dim: heads per block (diffusers' misnomer), int or per block.
    layers_per_block, transformer_layers_per_block: int or one int per block.
    class_embed_type: None (with `num_class_embeds`: a label embedding
      table; without: no class conditioning), "timestep" or "identity".
    class_embed_null: jaxgen's option (off by default, so diffusers configs
      map unchanged): the label table gets one extra row, label
      `num_class_embeds` (`null_class_label`), the null class for
      classifier-free guidance on labels. Labels 0..num_class_embeds-1 stay
      the real classes. In diffusers terms (`to_diffusers`) it is a table of
      `num_class_embeds + 1` rows.
    dropout: in the resnet blocks only, as in diffusers.
    upcast_attention: accepted for compatibility; jaxgen always computes
      attention logits and softmax in float32.
    addition_embed_type: None or "text_time" (SDXL: `text_embeds` (B, P) and `time_ids` (B, N)
      inputs, P + N * addition_time_embed_dim = projection_class_embeddings_input_dim).
    temporal, temporal_merge, temporal_frame_embedding, temporal_dropout,
      fps_conditioning: jaxgen's temporal layers (see `TEMPORAL_LAYOUTS`).
  Other diffusers options are supported only at their defaults (see
  `from_diffusers`).
  """

  sample_size: int | tuple[int, int] | None = None
  in_channels: int = 4
  out_channels: int = 4
  center_input_sample: bool = False
  flip_sin_to_cos: bool = True
  freq_shift: int = 0
  down_block_types: tuple[str, ...] = (
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "DownBlock2D",
  )
  mid_block_type: str | None = "UNetMidBlock2DCrossAttn"
  up_block_types: tuple[str, ...] = (
    "UpBlock2D",
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D",
  )
  only_cross_attention: bool = False
  block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
  layers_per_block: int | tuple[int, ...] = 2
  downsample_padding: int = 1
  mid_block_scale_factor: float = 1.0
  dropout: float = 0.0
  act_fn: str = "silu"
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  cross_attention_dim: int = 1280
  transformer_layers_per_block: int | tuple[int, ...] = 1
  attention_head_dim: int | tuple[int, ...] = 8
  use_linear_projection: bool = False
  class_embed_type: str | None = None
  num_class_embeds: int | None = None
  upcast_attention: bool = False
  class_embed_null: bool = False
  addition_embed_type: str | None = None
  addition_time_embed_dim: int | None = None
  projection_class_embeddings_input_dim: int | None = None
  temporal: str | None = None
  temporal_merge: str = "residual"
  temporal_frame_embedding: bool = False
  temporal_dropout: float = 0.1
  fps_conditioning: bool = False

  def __post_init__(self):
    diffusers_config.freeze_sequences(self)
    _validate(self)
    _check_temporal(self)

  # Derived, per-block views of the config.
  @property
  def num_heads(self) -> tuple[int, ...]:
    """Attention heads per down block (diffusers' `attention_head_dim`)."""
    return _per_block("attention_head_dim", self.attention_head_dim, len(self.block_out_channels))

  @property
  def layers(self) -> tuple[int, ...]:
    return _per_block("layers_per_block", self.layers_per_block, len(self.block_out_channels))

  @property
  def transformer_layers(self) -> tuple[int, ...]:
    n = len(self.block_out_channels)
    return _per_block("transformer_layers_per_block", self.transformer_layers_per_block, n)

  @property
  def time_embed_dim(self) -> int:
    return 4 * self.block_out_channels[0]

  @property
  def num_downsamples(self) -> int:
    return len(self.block_out_channels) - 1

  @property
  def has_cross_attention(self) -> bool:
    return (
      any(t.startswith("CrossAttn") for t in self.down_block_types + self.up_block_types)
      or self.mid_block_type == "UNetMidBlock2DCrossAttn"
    )

  @property
  def has_text_time(self) -> bool:
    """Whether the U-Net takes SDXL's `text_embeds` and `time_ids` (addition_embed_type)."""
    return self.addition_embed_type == "text_time"

  @property
  def has_class_embedding(self) -> bool:
    return self.class_embed_type is not None or self.num_class_embeds is not None

  @property
  def has_label_table(self) -> bool:
    """Whether class labels index an embedding table (integer labels)."""
    return self.class_embed_type is None and self.num_class_embeds is not None

  @property
  def num_label_rows(self) -> int:
    """Rows of the label table: the classes, plus the null class with `class_embed_null`."""
    return self.num_class_embeds + int(self.class_embed_null)

  @property
  def null_class_label(self) -> int:
    """The label of the null class (`class_embed_null=True`), for classifier-free guidance."""
    if not self.class_embed_null:
      raise ValueError(
        "null_class_label: this U-Net has no null class; set "
        "class_embed_null=True (with num_class_embeds) to add one"
      )
    return self.num_class_embeds

  @property
  def temporal_in_head_dim(self) -> int:
    """Head width of `transformer_in` (8 heads): block 0's spatial head width, as diffusers."""
    return self.block_out_channels[0] // self.num_heads[0]

  @classmethod
  def from_diffusers(cls, config: Mapping[str, Any]) -> UNetConfig:
    """Builds a config from a diffusers `UNet2DConditionModel` or `UNet3DConditionModel` config.

    Bookkeeping keys (`_class_name`, `_diffusers_version`, ...) are ignored;
    diffusers options jaxgen does not implement are accepted only at their
    default value, otherwise `UnsupportedConfigError` names them. A 3-D
    config (its `_class_name`, or "...3D" block types) becomes the spatial
    U-Net plus `temporal="modelscope"` (see `TEMPORAL_LAYOUTS`).
    """
    if _is_diffusers_3d(config):
      return cls(**_from_diffusers_3d(config))
    return diffusers_config.from_diffusers(cls, config, _DIFFUSERS_FIXED_OPTIONS, "UNet")

  def to_diffusers(self) -> dict[str, Any]:
    """The config as `UNet2DConditionModel(**kwargs)` keyword arguments (JSON-friendly lists).

    With `temporal="modelscope"`: `UNet3DConditionModel(**kwargs)` keyword
    arguments, or an `UnsupportedConfigError` naming what that class lacks.
    A null class (`class_embed_null`) is one more row of diffusers' table.
    """
    if self.temporal is not None:
      return _to_diffusers_3d(self)
    kwargs = diffusers_config.to_diffusers(self)
    for name in ("temporal", *_TEMPORAL_DEFAULTS):
      kwargs.pop(name)
    if kwargs.pop("class_embed_null"):
      kwargs["num_class_embeds"] = self.num_label_rows
    return kwargs


def _validate(config: UNetConfig) -> None:
  """Named errors for inconsistent or unsupported (spatial) options."""
  n = len(config.block_out_channels)
  diffusers_config.check_block_types(config, DOWN_BLOCK_TYPES, UP_BLOCK_TYPES)
  if config.mid_block_type is not None and config.mid_block_type not in MID_BLOCK_TYPES:
    raise UnsupportedConfigError(
      f"mid_block_type: expected one of {MID_BLOCK_TYPES} or None, found {config.mid_block_type!r}"
    )
  if config.only_cross_attention:
    raise UnsupportedConfigError(
      f"only_cross_attention: only False is supported, found {config.only_cross_attention!r}"
    )
  if config.act_fn not in ("silu", "swish"):
    raise UnsupportedConfigError(f"act_fn: only 'silu' is supported, found {config.act_fn!r}")
  if config.downsample_padding not in (0, 1):
    raise UnsupportedConfigError(
      f"downsample_padding: expected 0 or 1, found {config.downsample_padding!r}"
    )
  if config.class_embed_type not in CLASS_EMBED_TYPES:
    raise UnsupportedConfigError(
      f"class_embed_type: expected one of {CLASS_EMBED_TYPES}, found {config.class_embed_type!r}"
    )
  if config.class_embed_null and (
    config.num_class_embeds is None or config.class_embed_type is not None
  ):
    raise ValueError(
      "class_embed_null: a null class needs a label table (num_class_embeds set, "
      f"class_embed_type None), found num_class_embeds={config.num_class_embeds!r}, "
      f"class_embed_type={config.class_embed_type!r}"
    )
  if config.num_class_embeds is not None and not config.num_class_embeds > 0:
    raise ValueError(
      f"num_class_embeds: expected a positive number of classes, found {config.num_class_embeds!r}"
    )
  if config.norm_num_groups is None:
    raise UnsupportedConfigError("norm_num_groups: None (no output norm) is not supported")
  if not isinstance(config.cross_attention_dim, int):
    raise UnsupportedConfigError(
      f"cross_attention_dim: expected one int, found {config.cross_attention_dim!r}"
    )
  _check_addition_embedding(config)
  _per_block("layers_per_block", config.layers_per_block, n)
  _per_block("transformer_layers_per_block", config.transformer_layers_per_block, n)
  heads = _per_block("attention_head_dim", config.attention_head_dim, n)
  for i, (channels, h) in enumerate(zip(config.block_out_channels, heads)):
    if channels % config.norm_num_groups:
      raise ValueError(
        f"block_out_channels[{i}]={channels} must be divisible by norm_num_groups={config.norm_num_groups}"
      )
    if channels % h:
      raise ValueError(
        f"block_out_channels[{i}]={channels} must be divisible by attention_head_dim[{i}]={h} "
        "(diffusers' attention_head_dim is the number of heads)"
      )


def _check_addition_embedding(config: UNetConfig) -> None:
  """Named errors for the text_time (SDXL) options; None everywhere when unused."""
  if config.addition_embed_type not in ADDITION_EMBED_TYPES:
    raise UnsupportedConfigError(
      f"addition_embed_type: expected one of {ADDITION_EMBED_TYPES}, "
      f"found {config.addition_embed_type!r}"
    )
  time_dim, input_dim = config.addition_time_embed_dim, config.projection_class_embeddings_input_dim
  if config.addition_embed_type is None:
    if time_dim is not None or input_dim is not None:
      raise UnsupportedConfigError(
        "addition_time_embed_dim, projection_class_embeddings_input_dim: only used with "
        "addition_embed_type='text_time' (class_embed_type 'projection' is not supported); "
        f"expected None, found {time_dim!r}, {input_dim!r}"
      )
    return
  for name, value in (
    ("addition_time_embed_dim", time_dim),
    ("projection_class_embeddings_input_dim", input_dim),
  ):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ValueError(
        f"{name}: addition_embed_type='text_time' needs a positive int, found {value!r}"
      )
  if input_dim <= time_dim:
    raise ValueError(
      f"projection_class_embeddings_input_dim={input_dim} must exceed addition_time_embed_dim="
      f"{time_dim}: it holds the pooled text embedding and every time id's embedding"
    )


def _check_temporal(config: UNetConfig) -> None:
  """Named errors for the temporal options; at their defaults when `temporal` is None."""
  if config.temporal is None:
    changed = {
      k: getattr(config, k) for k, v in _TEMPORAL_DEFAULTS.items() if getattr(config, k) != v
    }
    if changed:
      raise ValueError(
        f"{', '.join(changed)}: temporal options of a video U-Net, but temporal=None; set "
        f"temporal to one of {TEMPORAL_LAYOUTS} or leave them at {_TEMPORAL_DEFAULTS}, found {changed}"
      )
    return
  if config.temporal not in TEMPORAL_LAYOUTS:
    raise UnsupportedConfigError(
      f"temporal: expected None or one of {TEMPORAL_LAYOUTS}, found {config.temporal!r}"
    )
  if config.temporal_merge not in TEMPORAL_MERGES:
    raise ValueError(
      f"temporal_merge: expected one of {TEMPORAL_MERGES}, found {config.temporal_merge!r}"
    )
  if not 0.0 <= config.temporal_dropout < 1.0:
    raise ValueError(
      f"temporal_dropout: expected a rate in [0, 1), found {config.temporal_dropout!r}"
    )


def _is_diffusers_3d(config: Mapping[str, Any]) -> bool:
  blocks = tuple(config.get("down_block_types", ())) + tuple(config.get("up_block_types", ()))
  return config.get("_class_name") == "UNet3DConditionModel" or any(
    str(t).endswith("3D") for t in blocks
  )


def _from_diffusers_3d(config: Mapping[str, Any]) -> dict[str, Any]:
  """`UNetConfig` kwargs of a diffusers `UNet3DConditionModel` config (all problems named at once).

  Its `attention_head_dim` is the real head width (heads = channels // it,
  the same rule for spatial and temporal attention); jaxgen's field holds
  heads, so it becomes one head count per block.
  """
  known = set(_DIFFUSERS_3D_KEYS) | {"attention_head_dim"}
  kwargs, problems = {}, []
  for key, value in config.items():
    if key.startswith("_"):
      continue
    if key in known:
      kwargs[key] = diffusers_config.as_tuple(value)
    elif key in _DIFFUSERS_3D_FIXED_OPTIONS:
      if value != _DIFFUSERS_3D_FIXED_OPTIONS[key]:
        problems.append(f"{key}={value!r} (only {_DIFFUSERS_3D_FIXED_OPTIONS[key]!r} is supported)")
    else:
      problems.append(f"{key}={value!r} (unknown option)")
  width = kwargs.pop("attention_head_dim", 64)
  channels = kwargs.get("block_out_channels", (320, 640, 1280, 1280))
  if not isinstance(width, int) or any(c % width for c in channels):
    problems.append(
      f"attention_head_dim={width!r} (UNet3DConditionModel: one head width dividing every "
      f"block_out_channels {channels})"
    )
  if not isinstance(kwargs.get("layers_per_block", 2), int):
    problems.append(f"layers_per_block={kwargs['layers_per_block']!r} (one int)")
  if problems:
    raise UnsupportedConfigError(
      "unsupported diffusers UNet3DConditionModel config options: " + "; ".join(problems)
    )
  for key in ("down_block_types", "up_block_types"):
    default = UNetConfig.__dataclass_fields__[key].default
    kwargs[key] = tuple(t.replace("3D", "2D") for t in kwargs.get(key, default))
  heads = tuple(c // width for c in channels)
  kwargs["attention_head_dim"] = heads[0] if len(set(heads)) == 1 else heads
  kwargs.setdefault("cross_attention_dim", 1024)
  kwargs.setdefault("block_out_channels", channels)
  return {**kwargs, **_DIFFUSERS_3D_IMPLIED, "temporal": "modelscope"}


def _to_diffusers_3d(config: UNetConfig) -> dict[str, Any]:
  """`UNet3DConditionModel(**kwargs)` of a temporal config, or every difference named at once."""
  problems = [
    f"{key}={getattr(config, key)!r} (needs {value!r})"
    for key, value in _DIFFUSERS_3D_IMPLIED.items()
    if getattr(config, key) != value
  ]
  widths = {c // h for c, h in zip(config.block_out_channels, config.num_heads)}
  if len(widths) != 1:
    problems.append(
      f"attention_head_dim={config.attention_head_dim!r} (needs one head width for every block, "
      f"found widths {sorted(widths)})"
    )
  if not isinstance(config.layers_per_block, int):
    problems.append(f"layers_per_block={config.layers_per_block!r} (needs one int)")
  if problems:
    raise UnsupportedConfigError(
      "this config has no diffusers UNet3DConditionModel equivalent: " + "; ".join(problems)
    )
  kwargs = {
    k: v for k, v in diffusers_config.to_diffusers(config).items() if k in _DIFFUSERS_3D_KEYS
  }
  for key in ("down_block_types", "up_block_types"):
    kwargs[key] = [t.replace("2D", "3D") for t in kwargs[key]]
  return {**kwargs, "attention_head_dim": widths.pop()}


def pooled_text_dim(config: UNetConfig, num_time_ids: int) -> int:
  """Width of `text_embeds` for `num_time_ids` time ids (SDXL: 6 ids, 2816 - 6 * 256 = 1280)."""
  if not config.has_text_time:
    raise ValueError(
      f"pooled_text_dim: this U-Net has no text_time embedding "
      f"(addition_embed_type={config.addition_embed_type!r})"
    )
  return (
    config.projection_class_embeddings_input_dim - num_time_ids * config.addition_time_embed_dim
  )
