"""ControlNet on a trained jaxgen text-to-image run: label map / sketch / edges -> scene photo.

The locked base is a `text_to_image` run (pixel diffusion: a text encoder
and a diffusers-style U-Net, `TextConditionedUNet`) named by `base.workdir`
and trained on the scenes' photos (`data.kind="scenes"`). The trainable
ControlNet (`jaxgen.models.controlnet`) starts as a copy of the base U-Net's
encoder (`init_from_unet`, ControlNet's `tool_add_control.py`); its hint
encoder reads the source map and its zero convs add residuals to the locked
U-Net's skips, so training starts from the base model exactly. Only the
ControlNet's parameters are the task's params (so the optimizer's); the
base's are constants.

Training: the base's diffusion loss (schedule, prediction type, min-SNR
weight) on the target photos, captioned by the scenes, with each caption
replaced by the empty prompt with probability `diffusion.cond_drop_prob`
(the paper drops 50% so the ControlNet learns to read the hint alone).
Sampling: the base's sampler and classifier-free guidance, the hint in both
branches (diffusers' pipeline), residuals times `sample.conditioning_scale`.
Without captions (`translate` of bare inputs, the table's scoring) both
branches get the empty prompt, so guidance is off.

Hints: a label map one-hot (`scenes.NUM_LABELS` channels); a sketch or edge
map one channel in [0, 1] with strokes 1 and paper 0 (the polarity of
ControlNet's canny / scribble hints).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data.chunks import map_padded_chunks
from jaxgen.data.images import to_uint8
from jaxgen.diffusion import gaussian, guidance, samplers
from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.models.controlnet import ControlNetConfig, ControlNetModel, init_from_unet
from jaxgen.models.text_conditioned_unet import TextConditionedUNet
from jaxgen.tasks.image import text_to_image
from jaxgen.tasks.image.text_to_image import TextToImageTask
from jaxgen.tasks.image_to_image.translation import (
  PREVIEW_EXAMPLES,
  ImageToImageConfigError,
  ImageToImageTask,
  translation_grid,
)
from jaxgen.tasks.registry import absolute_dependent_runs, load_run_of
from jaxgen.training.task import SampleSpec

OPTIONS = ("conditioning_scale", "guidance_scale", "num_steps", "sampler")


def hint_from_source(source_kind: str, source: jax.Array) -> jax.Array:
  """`source_input(...)` -> the hint: one-hot labels as they are; a sketch/edge map in [-1, 1]
  (paper 1) -> strokes 1, paper 0."""
  if source_kind == "label":
    return source
  return (1.0 - source) / 2.0


def controlnet_config(section: Mapping[str, Any], base_unet, hint_channels: int):
  """The ControlNet of the base U-Net (`ControlNetConfig.from_unet`) for a hint of `hint_channels`;
  the hint encoder keeps the size, as the base works in pixels."""
  config = ControlNetConfig.from_unet(
    base_unet, conditioning_channels=hint_channels, **dict(section)
  )
  if config.hint_factor != 1:
    raise ImageToImageConfigError(
      "controlnet.conditioning_embedding_out_channels: the base works in pixels, so the hint "
      f"encoder must keep the size (one entry), found {config.conditioning_embedding_out_channels}"
    )
  return config


def sampling_options(sample, base_config, options: Mapping[str, Any]) -> dict[str, Any]:
  """The options given, else the config's `sample.*` (the base's sampler checks); named errors."""
  unknown = sorted(set(options) - set(OPTIONS))
  if unknown:
    raise SamplingOptionError(f"options: expected some of {OPTIONS}, found {unknown}")
  values = {
    "sampler": sample.sampler,
    "num_steps": sample.num_steps,
    "guidance_scale": sample.guidance,
    "conditioning_scale": sample.conditioning_scale,
  }
  values.update({k: v for k, v in options.items() if v is not None})
  sampler, num_steps, guidance_scale = text_to_image.sampling_options(
    base_config, values["sampler"], values["num_steps"], values["guidance_scale"]
  )
  scale = values["conditioning_scale"]
  if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale < 0:
    raise SamplingOptionError(f"conditioning_scale: expected a number >= 0, found {scale!r}")
  return {
    "sampler": sampler,
    "num_steps": num_steps,
    "guidance_scale": guidance_scale,
    "conditioning_scale": float(scale),
  }


class ControlNetTask(ImageToImageTask):
  """The `controlnet` task (see the module docstring).

  Config keys beyond `ImageToImageTask`'s: base.workdir / base.step (the
  text_to_image run), controlnet.* (ControlNetConfig options, e.g.
  conditioning_embedding_out_channels: one entry, as the base works in
  pixels), diffusion.cond_drop_prob, sample.* (sampler, num_steps, guidance,
  conditioning_scale), model.remat.
  """

  sources = ("label", "sketch", "edges")
  sample_spec = SampleSpec("translation.png", (".png",), OPTIONS, takes_images=True)
  dependent_runs = ("base.workdir",)

  def __init__(self, config, base: tuple[TextToImageTask, Any] | None = None):
    absolute_dependent_runs(config, type(self))
    super().__init__(config)
    if base is None:
      base = load_run_of(
        TextToImageTask, config.base.workdir, flag="base.workdir", step=config.base.get("step")
      )
    self.base, base_params = base
    self.base_params = jax.device_put(jax.tree.map(jnp.asarray, base_params))
    if self.base.resolution != self.resolution or self.base.patch_size != 1:
      raise ImageToImageConfigError(
        f"base.workdir: expected a text_to_image run at data.resolution={self.resolution} "
        f"without patches, found resolution {self.base.resolution}, patch_size "
        f"{self.base.patch_size}"
      )
    unet = self.base.model.unet
    self.controlnet_config = controlnet_config(
      config.get("controlnet", {}), unet, self.source_channels
    )
    self.controlnet = ControlNetModel(
      self.controlnet_config, remat=config.get("model", {}).get("remat", "none")
    )

  # ---- data -----------------------------------------------------------------

  def train_arrays(self) -> dict[str, np.ndarray]:
    arrays = self.split_arrays("train", self.config.data.num_train_examples)
    tokens, mask = self.base.tokenize(list(arrays["caption"]))
    return {
      "source": arrays["source"],
      "target": arrays["target"],
      "text_tokens": tokens.astype(np.int32),
      "text_mask": mask.astype(np.int32),
    }

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    length = self.base.max_text_length
    return {
      **super().abstract_batch(batch_size),
      "text_tokens": jax.ShapeDtypeStruct((batch_size, length), jnp.int32),
      "text_mask": jax.ShapeDtypeStruct((batch_size, length), jnp.int32),
    }

  # ---- the model --------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    del batch  # The shapes come from the configs.
    return init_from_unet(self.controlnet_config, self.base_params["denoiser"], rng)

  def encode_text(self, tokens: jax.Array, mask: jax.Array):
    """(states, pooled, mask) of the frozen base text encoder."""
    states, pooled = self.base.model.apply(
      {"params": self.base_params}, tokens, mask, method=TextConditionedUNet.encode_text
    )
    return jax.lax.stop_gradient(states), jax.lax.stop_gradient(pooled), mask

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    d = self.base.config.diffusion
    drop = self.config.diffusion.get("cond_drop_prob", d.cond_drop_prob)
    x0 = self.target_input(batch["target"])
    hint = hint_from_source(self.source, self.source_input(batch["source"]))
    drop_rng, diffusion_rng = jax.random.split(rng)
    text = (batch["text_tokens"], batch["text_mask"])
    tokens, mask = guidance.drop_condition(drop_rng, text, self.base.null_text(len(x0)), drop)
    condition = (*self.encode_text(tokens, mask), hint)

    def model_fn(x_t, t):
      return self._denoise(params, x_t, t, condition, 1.0, train=True)

    loss, aux = gaussian.diffusion_loss(
      model_fn,
      x0,
      diffusion_rng,
      self.base.schedule,
      prediction_type=d.prediction_type,
      min_snr_gamma=d.min_snr_gamma,
    )
    return loss, {"mse": aux["mse"], "snr_weight": aux["weight"]}

  def _denoise(self, params, x, t, condition, scale, train: bool = False):
    """The locked base's prediction for noisy `x` with the ControlNet's residuals added;
    condition = (text states, pooled text, text mask, hint)."""
    states, pooled, mask, hint = condition

    def control(unet_input, class_labels):
      return self.controlnet.apply(
        {"params": params},
        unet_input,
        t,
        states,
        hint,
        scale,
        encoder_attention_mask=mask,
        class_labels=class_labels,
        train=train,
      )

    return self.base.model.apply(
      {"params": self.base_params},
      x,
      t,
      states,
      mask,
      pooled,
      method=TextConditionedUNet.denoise,
      control=control,
    )

  # ---- sampling ---------------------------------------------------------------

  def sampling_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
    return sampling_options(self.config.sample, self.base.config, options)

  def check_options(self, options: Mapping[str, Any]) -> None:
    self.sampling_options(options)

  def translate_text(
    self, params, source: jax.Array, tokens: jax.Array, mask: jax.Array, rng, **options
  ) -> jax.Array:
    """Images in [-1, 1] for model inputs `source` and caption tokens (jittable; options static)."""
    o = self.sampling_options(options)
    batch = source.shape[0]
    hint = hint_from_source(self.source, source)
    # The hint is in both branches, as in diffusers' pipeline.
    cond = (*self.encode_text(tokens, mask), hint)
    uncond = (*self.encode_text(*self.base.null_text(batch)), hint)

    def model_fn(x, t, condition):
      return self._denoise(params, x, t, condition, o["conditioning_scale"])

    fn = guidance.classifier_free_guidance(model_fn, cond, uncond, o["guidance_scale"])
    plan = text_to_image.sampling_plan(
      self.base.schedule, self.base.config.diffusion, o["sampler"], o["num_steps"], 0.0
    )
    noise_rng, sample_rng = jax.random.split(rng)
    x_T = jax.random.normal(noise_rng, (batch, self.resolution, self.resolution, 3))
    return samplers.run_sampler(fn, plan, x_T, sample_rng)

  def translation_params(self, params):
    """The locked base (U-Net and text encoder) and the ControlNet."""
    return {"base": self.base_params, "controlnet": params}

  def translate(self, params, source: jax.Array, rng: jax.Array, **options) -> jax.Array:
    """Without captions: the empty prompt in both branches (guidance off)."""
    tokens, mask = self.base.null_text(source.shape[0])
    return self.translate_text(
      params, source, tokens, mask, rng, **{**options, "guidance_scale": 1.0}
    )

  @functools.partial(jax.jit, static_argnames=("self", "options"))
  def _translate_captioned(self, params, pixels, tokens, mask, rng, options=()):
    return self.translate_text(
      params, self.source_input(pixels), tokens, mask, rng, **dict(options)
    )

  def translate_captioned(self, params, pixels, captions, rng, batch_size=None, **options):
    """uint8 outputs for uint8 sources and their captions, in fixed-size chunks."""
    self.check_options(options)
    frozen = tuple(sorted(options.items()))
    tokens, mask = self.base.tokenize(list(captions))
    chunk = min(batch_size or self.generate_batch_size, len(pixels))

    def run(i, chunk_pixels, chunk_tokens, chunk_mask):
      out = self._translate_captioned(
        params, chunk_pixels, chunk_tokens, chunk_mask, jax.random.fold_in(rng, i), frozen
      )
      return to_uint8(np.asarray(out))

    arrays = [np.asarray(pixels), tokens.astype(np.int32), mask.astype(np.int32)]
    return map_padded_chunks(run, arrays, chunk)

  def generate(self, params, conditions, rng, **options) -> dict[str, np.ndarray]:
    """{"image": uint8}; with `conditions["caption"]` (the CLI's --prompt) the captions guide."""
    if "caption" not in conditions:
      return super().generate(params, conditions, rng, **options)
    images = self.translate_captioned(
      params, conditions["source"], conditions["caption"], rng, **options
    )
    return {"image": images}

  def preview(self, params, rng) -> np.ndarray:
    test = self.split_arrays("test", PREVIEW_EXAMPLES)
    outputs = self.translate_captioned(params, test["source"], test["caption"], rng)
    return translation_grid(self.source, test["source"], outputs, test["target"], scale=2)
