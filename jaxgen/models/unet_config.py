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

  def __post_init__(self):
    diffusers_config.freeze_sequences(self)
    self._validate()

  def _validate(self) -> None:
    n = len(self.block_out_channels)
    diffusers_config.check_block_types(self, DOWN_BLOCK_TYPES, UP_BLOCK_TYPES)
    if self.mid_block_type is not None and self.mid_block_type not in MID_BLOCK_TYPES:
      raise UnsupportedConfigError(
        f"mid_block_type: expected one of {MID_BLOCK_TYPES} or None, found {self.mid_block_type!r}"
      )
    if self.only_cross_attention:
      raise UnsupportedConfigError(
        f"only_cross_attention: only False is supported, found {self.only_cross_attention!r}"
      )
    if self.act_fn not in ("silu", "swish"):
      raise UnsupportedConfigError(f"act_fn: only 'silu' is supported, found {self.act_fn!r}")
    if self.downsample_padding not in (0, 1):
      raise UnsupportedConfigError(
        f"downsample_padding: expected 0 or 1, found {self.downsample_padding!r}"
      )
    if self.class_embed_type not in CLASS_EMBED_TYPES:
      raise UnsupportedConfigError(
        f"class_embed_type: expected one of {CLASS_EMBED_TYPES}, found {self.class_embed_type!r}"
      )
    if self.class_embed_null and (
      self.num_class_embeds is None or self.class_embed_type is not None
    ):
      raise ValueError(
        "class_embed_null: a null class needs a label table (num_class_embeds set, "
        f"class_embed_type None), found num_class_embeds={self.num_class_embeds!r}, "
        f"class_embed_type={self.class_embed_type!r}"
      )
    if self.num_class_embeds is not None and not self.num_class_embeds > 0:
      raise ValueError(
        f"num_class_embeds: expected a positive number of classes, found {self.num_class_embeds!r}"
      )
    if self.norm_num_groups is None:
      raise UnsupportedConfigError("norm_num_groups: None (no output norm) is not supported")
    if not isinstance(self.cross_attention_dim, int):
      raise UnsupportedConfigError(
        f"cross_attention_dim: expected one int, found {self.cross_attention_dim!r}"
      )
    _check_addition_embedding(self)
    _per_block("layers_per_block", self.layers_per_block, n)
    _per_block("transformer_layers_per_block", self.transformer_layers_per_block, n)
    heads = _per_block("attention_head_dim", self.attention_head_dim, n)
    for i, (channels, h) in enumerate(zip(self.block_out_channels, heads)):
      if channels % self.norm_num_groups:
        raise ValueError(
          f"block_out_channels[{i}]={channels} must be divisible by norm_num_groups={self.norm_num_groups}"
        )
      if channels % h:
        raise ValueError(
          f"block_out_channels[{i}]={channels} must be divisible by attention_head_dim[{i}]={h} "
          "(diffusers' attention_head_dim is the number of heads)"
        )

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

  @classmethod
  def from_diffusers(cls, config: Mapping[str, Any]) -> UNetConfig:
    """Builds a config from a diffusers `UNet2DConditionModel.config` (or its config.json dict).

    Bookkeeping keys (`_class_name`, `_diffusers_version`, ...) are ignored;
    diffusers options jaxgen does not implement are accepted only at their
    default value, otherwise `UnsupportedConfigError` names them.
    """
    return diffusers_config.from_diffusers(cls, config, _DIFFUSERS_FIXED_OPTIONS, "UNet")

  def to_diffusers(self) -> dict[str, Any]:
    """The config as `UNet2DConditionModel(**kwargs)` keyword arguments (JSON-friendly lists).

    A null class (`class_embed_null`) is one more row of diffusers' table.
    """
    kwargs = diffusers_config.to_diffusers(self)
    if kwargs.pop("class_embed_null"):
      kwargs["num_class_embeds"] = self.num_label_rows
    return kwargs


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
