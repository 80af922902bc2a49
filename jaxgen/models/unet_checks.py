"""Input checks of the U-Net (`jaxgen.models.unet`), on shapes only, before anything compiles.

Each raises a ValueError naming the offending argument, what was expected and
what was found. `check_class_labels` is also a task's tool: under jit the
model cannot check label values, so `check_batch` calls it on host batches.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.models.unet_config import UNetConfig, pooled_text_dim


def _missing_context_message(config: UNetConfig) -> str:
  blocks = config.down_block_types + config.up_block_types
  if not any(t.startswith("CrossAttn") for t in blocks):
    return (
      "encoder_hidden_states: required by the mid block: mid_block_type="
      f"{config.mid_block_type!r} (the default) has cross-attention although every "
      "down/up block is attention-free; for a U-Net without a context set "
      "mid_block_type='UNetMidBlock2D' (or None)"
    )
  return "encoder_hidden_states: required, this U-Net has cross-attention blocks"


def check_class_labels(config: UNetConfig, class_labels: Any, name: str = "class_labels") -> None:
  """Named error unless every label indexes the U-Net's label table (host or concrete arrays).

  The model checks concrete labels itself; under `jax.jit` it cannot, and an
  out-of-range label gives NaN outputs, so a task calls this from its
  `check_batch` on host batches (`name` says which batch key is wrong).
  """
  if not config.has_label_table:
    raise ValueError(
      f"{name}: this U-Net has no label table (num_class_embeds unset or "
      f"class_embed_type={config.class_embed_type!r})"
    )
  labels = np.asarray(class_labels)
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{name}: expected integer labels, found dtype {labels.dtype}")
  rows = config.num_label_rows
  bad = labels[(labels < 0) | (labels >= rows)]
  if bad.size:
    null = (
      f", {config.null_class_label} being the null class"
      if config.class_embed_null
      else f"; set class_embed_null=True for a null class at label {config.num_class_embeds}"
    )
    raise ValueError(
      f"{name}: expected labels in [0, {rows}) (num_class_embeds="
      f"{config.num_class_embeds}{null}), found {sorted(set(bad.tolist()))}"
    )


def check_inputs(
  config: UNetConfig,
  sample: jax.Array,
  timesteps: Any,
  encoder_hidden_states: jax.Array | None,
  encoder_attention_mask: jax.Array | None,
  class_labels: jax.Array | None,
) -> None:
  """Raises a ValueError naming the offending argument; runs on shapes only (before compiling).

  `sample` is NHWC, or NTHWC (videos) for a U-Net with temporal layers; the
  batch of the other inputs is the number of images or videos.
  """
  video = config.temporal is not None and sample.ndim == 5
  if sample.ndim != 4 and not video:
    layouts = "NHWC (batch, height, width, channels)"
    if config.temporal is not None:
      layouts += " or NTHWC (batch, frames, height, width, channels)"
    raise ValueError(f"sample: expected {layouts}, found shape {sample.shape}")
  batch, height, width, channels = sample.shape[:1] + sample.shape[-3:]
  if channels != config.in_channels:
    raise ValueError(
      f"sample: expected {config.in_channels} channels (config.in_channels, NHWC), found {channels} "
      f"in shape {sample.shape}"
    )
  factor = 2**config.num_downsamples
  if height % factor or width % factor:
    raise ValueError(
      f"sample: height and width must be multiples of {factor} ({config.num_downsamples} downsamplings), "
      f"found {height}x{width}"
    )
  t_shape = jnp.shape(timesteps)
  if t_shape not in ((), (batch,)):
    raise ValueError(f"timesteps: expected a scalar or shape ({batch},), found shape {t_shape}")
  if config.has_cross_attention:
    if encoder_hidden_states is None:
      raise ValueError(_missing_context_message(config))
    expected = (batch, "length", config.cross_attention_dim)
    shape = encoder_hidden_states.shape
    if len(shape) != 3 or shape[0] != batch or shape[2] != config.cross_attention_dim:
      raise ValueError(
        f"encoder_hidden_states: expected shape {expected} (config.cross_attention_dim), found {shape}"
      )
  elif encoder_hidden_states is not None:
    raise ValueError("encoder_hidden_states: this U-Net has no cross-attention blocks; pass None")
  if encoder_attention_mask is not None:
    if encoder_hidden_states is None:
      raise ValueError("encoder_attention_mask: given without encoder_hidden_states")
    expected = encoder_hidden_states.shape[:2]
    if tuple(encoder_attention_mask.shape) != tuple(expected):
      raise ValueError(
        f"encoder_attention_mask: expected shape {tuple(expected)} (batch, context length), "
        f"found {encoder_attention_mask.shape}"
      )
  if config.has_class_embedding:
    expected = (batch, config.time_embed_dim) if config.class_embed_type == "identity" else (batch,)
    if class_labels is None or tuple(class_labels.shape) != expected:
      found = None if class_labels is None else class_labels.shape
      raise ValueError(
        f"class_labels: expected shape {expected} for this class-conditional U-Net, found {found}"
      )
    if config.class_embed_type is None and not jnp.issubdtype(class_labels.dtype, jnp.integer):
      raise ValueError(f"class_labels: expected integer labels, found dtype {class_labels.dtype}")
    if config.has_label_table and not isinstance(class_labels, jax.core.Tracer):
      # Concrete labels are checked here; traced ones (under jit) cannot be,
      # and an out-of-range lookup would silently give NaN: the task's
      # `check_batch` calls `check_class_labels` on its host batches.
      check_class_labels(config, class_labels)
  elif class_labels is not None:
    raise ValueError(
      "class_labels: this U-Net has no class embedding (num_class_embeds/class_embed_type unset)"
    )


def check_added_conditions(config: UNetConfig, batch: int, text_embeds: Any, time_ids: Any) -> None:
  """Named errors for SDXL's `text_embeds` (B, P) and `time_ids` (B, N) (shapes only).

  P + N * addition_time_embed_dim must be `projection_class_embeddings_input_dim`.
  """
  if not config.has_text_time:
    if text_embeds is not None or time_ids is not None:
      raise ValueError(
        "text_embeds, time_ids: this U-Net has no text_time embedding "
        f"(addition_embed_type={config.addition_embed_type!r}); pass None"
      )
    return
  if text_embeds is None or time_ids is None:
    raise ValueError(
      "text_embeds, time_ids: required by addition_embed_type='text_time' (SDXL): the pooled "
      f"text embedding (B, P) and the size/crop ids (B, N); found {text_embeds is not None} "
      f"and {time_ids is not None} given"
    )
  text_shape, ids_shape = tuple(jnp.shape(text_embeds)), tuple(jnp.shape(time_ids))
  if len(ids_shape) != 2 or ids_shape[0] != batch:
    raise ValueError(f"time_ids: expected shape ({batch}, num_ids), found {ids_shape}")
  expected = (batch, pooled_text_dim(config, ids_shape[1]))
  if text_shape != expected:
    raise ValueError(
      f"text_embeds: expected shape {expected} (projection_class_embeddings_input_dim="
      f"{config.projection_class_embeddings_input_dim} minus {ids_shape[1]} time ids x "
      f"addition_time_embed_dim={config.addition_time_embed_dim}), found {text_shape}"
    )


def check_additional_residuals(
  cfg: UNetConfig, sample_shape: tuple[int, ...], down: Any, mid: Any
) -> None:
  """Named errors unless a ControlNet's residuals match this U-Net's skips (shapes only)."""
  if (down is None) != (mid is None):
    raise ValueError(
      "down_block_additional_residuals, mid_block_additional_residual: give both (a "
      f"ControlNet's outputs) or neither, found {down is not None} and {mid is not None}"
    )
  if down is None:
    return
  batch, height, width = sample_shape[:3]
  expected, size = [(batch, height, width, cfg.block_out_channels[0])], (height, width)
  for i, channels in enumerate(cfg.block_out_channels):
    expected += [(batch, *size, channels)] * cfg.layers[i]
    if i < cfg.num_downsamples:
      size = ((size[0] + 1) // 2, (size[1] + 1) // 2)
      expected.append((batch, *size, channels))
  found = [tuple(jnp.shape(r)) for r in down]
  if found != expected:
    raise ValueError(
      f"down_block_additional_residuals: expected {len(expected)} arrays of shapes {expected} "
      f"(one per skip connection), found {found}"
    )
  mid_expected = (batch, *size, cfg.block_out_channels[-1])
  if tuple(jnp.shape(mid)) != mid_expected:
    raise ValueError(
      f"mid_block_additional_residual: expected shape {mid_expected}, found {jnp.shape(mid)}"
    )


def check_fps(config: UNetConfig, sample_shape: tuple[int, ...], fps: Any) -> None:
  """Named error unless `fps` is a scalar or one rate per video, given exactly when it is used.

  It is used with `fps_conditioning` on a video (NTHWC) sample; images skip
  every temporal layer, the fps embedding included.
  """
  video = config.temporal is not None and len(sample_shape) == 5
  if not (config.fps_conditioning and video):
    if fps is not None:
      why = "is an image batch (NHWC)" if config.fps_conditioning else "has no fps_conditioning"
      raise ValueError(f"fps: this call {why}, so it takes no fps; pass None")
    return
  if fps is None or jnp.shape(fps) not in ((), (sample_shape[0],)):
    found = None if fps is None else jnp.shape(fps)
    raise ValueError(
      f"fps: fps_conditioning needs the frame rate, a scalar or shape ({sample_shape[0]},), "
      f"found {found}"
    )
