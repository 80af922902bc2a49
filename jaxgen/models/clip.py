"""CLIP: the ViT vision tower and the dual-encoder model (image and text towers with projections).

Numerically equivalent to transformers 5.x `CLIPVisionModel` and `CLIPModel`,
with module trees that mirror the PyTorch ones so weights convert by a name
map (`jaxgen.convert.transformers_clip`):

  vision_model/embeddings/class_embedding               vision_model.embeddings.class_embedding
  vision_model/embeddings/patch_embedding/kernel        vision_model.embeddings.patch_embedding.weight
  vision_model/pre_layrnorm/scale                       vision_model.pre_layrnorm.weight
  vision_model/encoder/layers_3/self_attn/to_q/kernel   vision_model.encoder.layers.3.self_attn.q_proj.weight
  visual_projection/kernel                              visual_projection.weight
  text_model/...                                        text_model.... (`CLIPTextModel`)
  logit_scale                                           logit_scale

`pre_layrnorm` keeps transformers' (and OpenAI's) spelling so names map one to one.
`clip_loss` is the contrastive objective the `clip` task trains with.
The vision tower reuses the text tower's pre-LN encoder (`CLIPEncoder`) without a
mask: the two towers differ only in embeddings and pooling.

Images are NHWC (B, H, W, C) pixel values already preprocessed as
`CLIPImageProcessor` does (see `jaxgen.metrics.clip_score.preprocess_images`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.errors import UnsupportedConfigError
from jaxgen.models.clip_text import CLIP_ACTIVATIONS, CLIPEncoder, CLIPTextConfig, CLIPTextModel
from jaxgen.models.transformers_compat import check_positive_ints, config_from_transformers
from jaxgen.nn import partitioning as pt

Dtype = Any


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
  """transformers `CLIPVisionConfig` (architecture fields; defaults are its defaults, ViT-B/32)."""

  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  num_channels: int = 3
  image_size: int = 224
  patch_size: int = 32
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5

  def __post_init__(self):
    check_positive_ints(
      self,
      (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_channels",
        "image_size",
        "patch_size",
      ),
    )
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
        f"hidden_size={self.hidden_size} must be divisible by "
        f"num_attention_heads={self.num_attention_heads}"
      )
    if self.image_size % self.patch_size:
      raise ValueError(
        f"image_size={self.image_size} must be divisible by patch_size={self.patch_size}"
      )
    if self.hidden_act not in CLIP_ACTIVATIONS:
      raise UnsupportedConfigError(
        f"hidden_act: expected one of {tuple(CLIP_ACTIVATIONS)}, found {self.hidden_act!r}"
      )

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @classmethod
  def from_transformers(cls, config: Any) -> CLIPVisionConfig:
    """From a `transformers.CLIPVisionConfig` or the dict of a `CLIPVisionModel` config.json."""
    return cls(**config_from_transformers(cls, config, ("clip_vision_model",)))

  def to_transformers(self) -> dict[str, Any]:
    return {"model_type": "clip_vision_model", **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  """transformers `CLIPConfig`: both towers, the shared embedding width and the initial logit scale."""

  text_config: CLIPTextConfig = dataclasses.field(default_factory=CLIPTextConfig)
  vision_config: CLIPVisionConfig = dataclasses.field(default_factory=CLIPVisionConfig)
  projection_dim: int = 512
  logit_scale_init_value: float = 2.6592  # log(1 / 0.07), CLIP's initial temperature

  def __post_init__(self):
    check_positive_ints(self, ("projection_dim",))

  @classmethod
  def from_transformers(cls, config: Any) -> CLIPConfig:
    """From a `transformers.CLIPConfig` or the dict of a `CLIPModel` config.json.

    Files written by transformers 4.x may carry `text_config_dict` /
    `vision_config_dict` beside `text_config` / `vision_config`; as in
    transformers, their entries take precedence.
    """
    if hasattr(config, "to_dict"):
      config = config.to_dict()
    if not isinstance(config, Mapping):
      raise ValueError(
        f"config: expected a mapping or a transformers config, found {type(config).__name__}"
      )
    if config.get("model_type") not in (None, "clip"):
      raise UnsupportedConfigError(
        f"config: expected model_type 'clip' (a CLIPModel), found {config.get('model_type')!r}"
      )

    def tower(name: str) -> dict[str, Any]:
      return {**(config.get(name) or {}), **(config.get(f"{name}_dict") or {})}

    top = {k: config[k] for k in ("projection_dim", "logit_scale_init_value") if k in config}
    return cls(
      text_config=CLIPTextConfig.from_transformers(tower("text_config")),
      vision_config=CLIPVisionConfig.from_transformers(tower("vision_config")),
      **top,
    )

  def to_transformers(self) -> dict[str, Any]:
    """config.json contents that `transformers.CLIPModel.from_pretrained` reads as this architecture."""
    text = {k: v for k, v in self.text_config.to_transformers().items() if k != "architectures"}
    return {
      "architectures": ["CLIPModel"],
      "model_type": "clip",
      "projection_dim": self.projection_dim,
      "logit_scale_init_value": self.logit_scale_init_value,
      "text_config": text,
      "vision_config": self.vision_config.to_transformers(),
    }


class CLIPVisionOutput(NamedTuple):
  """last_hidden_state (B, 1 + num_patches, D), before post_layernorm (as transformers);
  pooler_output (B, D): the class token after post_layernorm.

  hidden_states: with `output_hidden_states=True`, the (pre-LN'd) embeddings and
  every layer's output (num_hidden_layers + 1 arrays); else None.
  """

  last_hidden_state: jax.Array
  pooler_output: jax.Array
  hidden_states: tuple[jax.Array, ...] | None = None


def check_pixel_values(pixel_values: jax.Array, config: CLIPVisionConfig) -> None:
  """Validates (B, image_size, image_size, num_channels) float pixel values before anything compiles."""
  expected = (config.image_size, config.image_size, config.num_channels)
  if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
    raise ValueError(
      f"pixel_values: expected (batch, {', '.join(map(str, expected))}) NHWC, "
      f"found shape {pixel_values.shape} (resize and crop with "
      "jaxgen.metrics.clip_score.preprocess_images first)"
    )
  if not jnp.issubdtype(pixel_values.dtype, jnp.floating):
    raise ValueError(
      f"pixel_values: expected normalized floating-point values, found {pixel_values.dtype}"
    )


class CLIPVisionEmbeddings(nn.Module):
  """Non-overlapping patch projection (no bias), a learned class token, learned positions."""

  config: CLIPVisionConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, pixel_values: jax.Array) -> jax.Array:
    cfg = self.config
    patches = nn.Conv(
      cfg.hidden_size,
      (cfg.patch_size, cfg.patch_size),
      strides=(cfg.patch_size, cfg.patch_size),
      padding="VALID",
      use_bias=False,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=pt.annotated(nn.initializers.lecun_normal(), (None, None, "conv_in", "embed")),
      name="patch_embedding",
    )(pixel_values)
    batch = patches.shape[0]
    patches = patches.reshape(batch, -1, cfg.hidden_size)  # Row-major over the patch grid.
    class_embedding = self.param(
      "class_embedding",
      pt.annotated(nn.initializers.normal(stddev=1.0), ("embed",)),
      (cfg.hidden_size,),
      jnp.float32,
    )
    class_token = jnp.broadcast_to(class_embedding.astype(self.dtype), (batch, 1, cfg.hidden_size))
    # Rows are positions (1 + num_patches, e.g. 257): replicated, as the text tower's positions.
    positions = nn.Embed(
      cfg.num_patches + 1,
      cfg.hidden_size,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      embedding_init=pt.annotated(nn.initializers.normal(stddev=1.0), (None, "embed")),
      name="position_embedding",
    )(jnp.arange(cfg.num_patches + 1))
    return jnp.concatenate([class_token, patches], axis=1) + positions[None]


class CLIPVisionModel(nn.Module):
  """CLIP ViT (`transformers.CLIPVisionModel`): patches + class token, pre-LN'd, then the encoder.

  Attributes:
    config: the architecture.
    dtype: compute dtype (params stay float32; attention softmax is float32).
  """

  config: CLIPVisionConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, pixel_values: jax.Array, output_hidden_states: bool = False
  ) -> CLIPVisionOutput:
    """pixel_values: (B, image_size, image_size, num_channels), normalized as CLIP's processor does."""
    cfg = self.config
    pixel_values = jnp.asarray(pixel_values)
    check_pixel_values(pixel_values, cfg)
    x = CLIPVisionEmbeddings(cfg, dtype=self.dtype, name="embeddings")(pixel_values)
    x = pt.layer_norm(cfg.layer_norm_eps, dtype=self.dtype, name="pre_layrnorm")(x)
    states = CLIPEncoder(cfg, dtype=self.dtype, name="encoder")(x)
    pooled = pt.layer_norm(cfg.layer_norm_eps, dtype=self.dtype, name="post_layernorm")(
      states[-1][:, 0]
    )
    return CLIPVisionOutput(states[-1], pooled, states if output_hidden_states else None)


class CLIPOutput(NamedTuple):
  """As transformers' `CLIPOutput`: logits_per_image (B_img, B_txt) = exp(logit_scale) * cosine,
  logits_per_text its transpose, and the projected embeddings, L2-normalized."""

  logits_per_image: jax.Array
  logits_per_text: jax.Array
  text_embeds: jax.Array
  image_embeds: jax.Array


def l2_normalize(x: jax.Array) -> jax.Array:
  """x / ||x|| over the last axis, as transformers and torchmetrics divide (no epsilon)."""
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class CLIPModel(nn.Module):
  """CLIP dual encoder (`transformers.CLIPModel`).

  `init` through `__call__` creates every parameter. Use one tower alone with
  `model.apply(variables, pixel_values, method=CLIPModel.get_image_features)`
  or `method=CLIPModel.get_text_features`.

  Attributes:
    config: both towers and the projection width.
    dtype: compute dtype (params stay float32).
  """

  config: CLIPConfig
  dtype: Dtype = jnp.float32

  def setup(self):
    cfg = self.config
    self.text_model = CLIPTextModel(cfg.text_config, dtype=self.dtype)
    self.vision_model = CLIPVisionModel(cfg.vision_config, dtype=self.dtype)
    # The joint embedding axis stays whole: one mesh axis may not shard both sides of a kernel.
    self.visual_projection = pt.dense(
      cfg.projection_dim, ("embed", None), use_bias=False, dtype=self.dtype
    )
    self.text_projection = pt.dense(
      cfg.projection_dim, ("embed", None), use_bias=False, dtype=self.dtype
    )
    self.logit_scale = self.param(
      "logit_scale",
      pt.annotated(nn.initializers.constant(cfg.logit_scale_init_value), ()),
      (),
      jnp.float32,
    )

  def get_image_features(self, pixel_values: jax.Array) -> jax.Array:
    """(B, H, W, C) preprocessed pixels -> (B, projection_dim) image embeddings (not normalized)."""
    return self.visual_projection(self.vision_model(pixel_values).pooler_output)

  def get_text_features(
    self, input_ids: jax.Array, attention_mask: jax.Array | None = None
  ) -> jax.Array:
    """(B, L) token ids (and mask) -> (B, projection_dim) text embeddings (not normalized)."""
    return self.text_projection(self.text_model(input_ids, attention_mask).pooler_output)

  def __call__(
    self, input_ids: jax.Array, pixel_values: jax.Array, attention_mask: jax.Array | None = None
  ) -> CLIPOutput:
    image_embeds = l2_normalize(self.get_image_features(pixel_values))
    text_embeds = l2_normalize(self.get_text_features(input_ids, attention_mask))
    logits_per_text = (text_embeds @ image_embeds.T) * jnp.exp(self.logit_scale)
    return CLIPOutput(logits_per_text.T, logits_per_text, text_embeds, image_embeds)


def abstract_variables(config: CLIPConfig, dtype: Dtype = jnp.float32) -> Any:
  """Boxed (logically partitioned) variable shapes of `CLIPModel`, via `jax.eval_shape`."""
  vision = config.vision_config
  pixels = jnp.zeros((1, vision.image_size, vision.image_size, vision.num_channels), jnp.float32)
  tokens = jnp.zeros((1, 1), jnp.int32)
  return jax.eval_shape(lambda: CLIPModel(config, dtype).init(jax.random.key(0), tokens, pixels))


def abstract_vision_variables(config: CLIPVisionConfig, dtype: Dtype = jnp.float32) -> Any:
  """Boxed variable shapes of `CLIPVisionModel` alone, via `jax.eval_shape`."""
  pixels = jnp.zeros((1, config.image_size, config.image_size, config.num_channels), jnp.float32)
  return jax.eval_shape(lambda: CLIPVisionModel(config, dtype).init(jax.random.key(0), pixels))


def clip_loss(
  image_embeds: jax.Array,
  text_embeds: jax.Array,
  logit_scale: jax.Array,
  positives: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CLIP's symmetric InfoNCE of L2-normalised (B, D) embeddings, and its batch metrics.

  logits = scale · image @ textᵀ; the loss is the mean of the image→text and
  text→image cross entropies. `positives` (B, B) bool (default: the
  diagonal) marks the pairs that match: each row's target spreads evenly over
  them, so two images of one caption are not each other's negatives.
  Metrics: the two cross entropies and top-1 accuracy each way (a hit is any
  positive).
  """
  logits = logit_scale * image_embeds @ text_embeds.T
  if positives is None:
    positives = jnp.eye(logits.shape[0], dtype=bool)
  targets = positives / jnp.sum(positives, axis=-1, keepdims=True)  # symmetric: same per column

  def cross_entropy(x):
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(x, axis=-1), axis=-1))

  def top1(x):
    return jnp.mean(jnp.take_along_axis(positives, jnp.argmax(x, -1)[:, None], -1))

  image_to_text, text_to_image = cross_entropy(logits), cross_entropy(logits.T)
  loss = (image_to_text + text_to_image) / 2
  metrics = dict(
    image_to_text_loss=image_to_text,
    text_to_image_loss=text_to_image,
    image_to_text_top1=top1(logits),
    text_to_image_top1=top1(logits.T),
  )
  return loss, metrics
