"""Text-to-video on the captioned shape videos, inflated from a trained `text_to_image` run.

Make-A-Video's recipe on jaxgen's pixel text-to-image model: the run named by
`image.workdir` gives the text encoder, the U-Net's spatial layers and the
noise schedule; the video U-Net is the same `UNet2DConditionModel` with
temporal layers (`video.temporal`, `jaxgen.models.video_unet`), its
parameters copied from the image run's EMA params and its temporal layers
the identity at init, so at first every frame is what the image model makes
of it. Clips are `data.frames` frames at the image run's resolution
(`jaxgen.data.video_shapes`), NTHWC; the U-Net sees frames folded into its
batch wherever a layer is spatial.

One model serves three conditioning modes (`video_conditioning`): text only,
the first frame given (image-to-video) and keyframes given every k-th frame
(interpolation), through masked-frame input channels; training draws a mode
per example (`modes.probabilities`, `modes.keyframe_spacings`).

`video.temporal_only=True` is Video LDM's recipe: the image model's spatial
layers stay frozen (their gradients stopped inside the loss, so AdamW leaves
them exactly as they are); what the image model never had trains: the
temporal layers, `conv_in` (its new mask channels) and the token table (the
motion words, which the image tokenizer maps to [UNK]).

Generation: `conditions(prompts)` -> {"caption"}; `first_frame_conditions`
adds "frames" (N, T, H, W, 3) uint8 with frame 0 given, `given_frames_conditions`
the frames a mode keeps from given clips (`jaxgen sample --frames`); `generate(params,
conditions, rng, mode=, keyframe_every=, sampler=, num_steps=,
guidance_scale=)` -> {"video": uint8 (N, T, H, W, 3)}, one scan per chunk of
prompts for every mode; `save_samples` writes a captioned GIF/MP4 grid and
one `.npy` per clip (`video_samples`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.data import shapes, video_judge, video_shapes
from jaxgen.data.tokenizer import build_caption_tokenizer
from jaxgen.diffusion import samplers
from jaxgen.models.text_conditioned_unet import TextConditionedUNet
from jaxgen.models.unet import UNet2DConditionModel
from jaxgen.models.video_unet import inflate_image_params, temporal_param_mask
from jaxgen.nn import precision
from jaxgen.tasks.image import captioned_data, text_to_image
from jaxgen.tasks.image.captioned_images import check_batch_size, conditions_captions
from jaxgen.tasks.image.text_to_image import TextToImageTask
from jaxgen.tasks.registry import absolute_dependent_runs, load_run_of
from jaxgen.tasks.video import video_conditioning as vc
from jaxgen.tasks.video import video_samples
from jaxgen.training.task import GenerativeTask, PromptError, SampleSpec

RGB = shapes.CHANNELS
# `video.*` keys that become `UNetConfig` fields of the video U-Net.
TEMPORAL_FIELDS = ("temporal", "temporal_merge", "temporal_frame_embedding", "temporal_dropout")


class VideoConfigError(ValueError):
  """A text_to_video config does not fit its image run or its own settings."""


def load_image_run(workdir: str) -> tuple[TextToImageTask, Any]:
  """(the `text_to_image` task, its EMA params) of `image.workdir`, with named errors."""
  return load_run_of(TextToImageTask, workdir, flag="image.workdir")


def video_unet_config(image_task: TextToImageTask, video: ml_collections.ConfigDict):
  """The image run's U-Net with the temporal layers and the masked-frame input channels."""
  image = image_task.model.unet
  patched = image_task.patch_size**2 * (RGB + vc.EXTRA_CHANNELS)
  in_channels = patched + (2 if image_task.coord_channels else 0)
  temporal = {k: video[k] for k in TEMPORAL_FIELDS if k in video}
  return dataclasses.replace(image, in_channels=in_channels, **temporal)


def video_model(
  image_task: TextToImageTask, tokenizer, unet_config, max_text_length: int
) -> TextConditionedUNet:
  """The image run's text encoder + U-Net, for the video tokenizer and the video U-Net config."""
  image_config = image_task.config
  return TextConditionedUNet(
    text=dict(
      image_config.text.to_dict(), vocab_size=tokenizer.vocab_size, max_length=max_text_length
    ),
    unet=unet_config,
    coord_channels=image_task.coord_channels,
    patch_size=image_task.patch_size,
    **precision.model_policy(image_config.model),
  )


def caption_words(image_task: TextToImageTask) -> list[str]:
  """Every word of the image run's captions and of the shape videos' captions."""
  kind = captioned_data.data_kind(image_task.config.data)
  image_words = captioned_data.scene_caption_words() if kind == "scenes" else None
  image_words = image_words or shapes.caption_vocabulary()
  return sorted(set(image_words) | set(video_shapes.video_caption_vocabulary()))


def word_ids(tokenizer, words: Sequence[str]) -> np.ndarray:
  """Each word's id in a `CaptionTokenizer` ([UNK]'s where it lacks the word)."""
  ids = [tokenizer.tokenizer.token_to_id(w.lower()) for w in words]
  return np.asarray([tokenizer.unk_id if i is None else i for i in ids], np.int64)


def trainable_mask(params) -> Any:
  """True for what `video.temporal_only` trains: temporal layers, conv_in, the token table."""
  temporal = temporal_param_mask(params)

  def new_input(path, is_temporal):
    keys = [str(getattr(k, "key", k)) for k in path]
    return bool(is_temporal) or "conv_in" in keys or "token_embedding" in keys

  return jax.tree_util.tree_map_with_path(new_input, temporal)


def freeze_spatial(params) -> Any:
  """`params` with the gradient of every frozen (spatial) parameter stopped."""
  mask = trainable_mask(params)
  return jax.tree.map(lambda p, m: p if m else jax.lax.stop_gradient(p), params, mask)


def check_video_config(config: ml_collections.ConfigDict) -> None:
  """Named errors for the task's own settings, before the image run is read."""
  frames = config.data.frames
  if isinstance(frames, bool) or not isinstance(frames, int) or frames < 4:
    raise VideoConfigError(f"data.frames: expected an integer >= 4, found {frames!r}")
  vc.check_mode_probabilities(config.modes.probabilities)
  for k in config.modes.keyframe_spacings:
    vc.check_keyframe_every(k, frames, "modes.keyframe_spacings")
  vc.check_mode(config.sample.mode)
  if config.video.temporal_only and config.optim.get("weight_decay", 0.0):
    raise VideoConfigError(
      "optim.weight_decay: video.temporal_only freezes the spatial layers by stopping their "
      f"gradients, which weight decay would still shrink; expected 0, found "
      f"{config.optim.weight_decay}"
    )


class TextToVideoTask(GenerativeTask):
  """The `text_to_video` task (see module docstring)."""

  sample_spec = SampleSpec(
    "video.gif",
    video_samples.OUT_EXTENSIONS,
    ("sampler", "num_steps", "guidance_scale", "mode", "keyframe_every"),
    takes_first_frame=True,
  )
  dependent_runs = ("image.workdir",)
  generate_batch_size: ClassVar[int] = 16  # clips per compiled chunk when `generate` gets None

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    absolute_dependent_runs(config, type(self))
    check_video_config(config)
    self.image_task, self.image_params = load_image_run(config.image.workdir)
    image_config = self.image_task.config
    self.frames, self.resolution = config.data.frames, image_config.data.resolution
    self.max_text_length = config.text.max_length
    self.tokenizer = build_caption_tokenizer(caption_words(self.image_task))
    self.unet_config = video_unet_config(self.image_task, config.video)
    self.model = video_model(
      self.image_task, self.tokenizer, self.unet_config, self.max_text_length
    )
    self.schedule = self.image_task.schedule
    # The image run's diffusion (schedule, prediction type, min-SNR) with this run's dropout.
    self.diffusion = ml_collections.ConfigDict(
      dict(image_config.diffusion.to_dict(), **config.diffusion.to_dict())
    )
    self.probabilities = vc.check_mode_probabilities(config.modes.probabilities)

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    tokens, mask = self.tokenizer.encode(captions, self.max_text_length)
    return tokens.astype(np.int32), mask.astype(np.int32)

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    split = self.video_split("train", self.config.data.num_train_videos, self.config.data.seed)
    tokens, mask = self.tokenize(list(split["caption"]))
    return dict(video=split["video"], text_tokens=tokens, text_mask=mask)

  def video_split(self, split: str, count: int, seed: int) -> dict[str, np.ndarray]:
    return video_shapes.make_video_split(split, count, self.resolution, self.frames, seed)

  def eval_split(self, num_videos: int) -> dict[str, np.ndarray]:
    """Held-out clips (shape, colour, motion combinations never seen in training)."""
    return self.video_split("test", num_videos, self.config.data.seed + 1)

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    r, L = self.resolution, self.max_text_length
    return dict(
      video=jax.ShapeDtypeStruct((batch_size, self.frames, r, r, RGB), jnp.uint8),
      text_tokens=jax.ShapeDtypeStruct((batch_size, L), jnp.int32),
      text_mask=jax.ShapeDtypeStruct((batch_size, L), jnp.int32),
    )

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    video_samples.check_videos(batch["video"], self.frames, self.resolution, "batch['video']")

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    """The image run's EMA params inflated (see `inflate_image_run`)."""
    return inflate_image_run(self, rng, batch["text_tokens"][:1], batch["text_mask"][:1])

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    if self.config.video.temporal_only:
      params = freeze_spatial(params)
    x0 = batch["video"].astype(jnp.float32) / 127.5 - 1.0
    mode_rng, drop_rng, diffusion_rng, dropout_rng = jax.random.split(rng, 4)
    frame_mask = vc.training_masks(
      mode_rng, x0.shape[0], self.frames, self.probabilities, self.config.modes.keyframe_spacings
    )
    text = (batch["text_tokens"], batch["text_mask"])
    null_text = text_to_image.null_text_tokens(x0.shape[0], self.max_text_length)
    loss, metrics = text_to_image.text_diffusion_loss(
      self.model,
      params,
      x0,
      text,
      null_text,
      (drop_rng, diffusion_rng),
      self.schedule,
      self.diffusion,
      extra=vc.conditioning_channels(x0, frame_mask),
      dropout_rng=dropout_rng,
    )
    return loss, dict(metrics, known_frames=jnp.mean(frame_mask))

  @functools.partial(jax.jit, static_argnames=("self", "sampler", "num_steps"))
  def sample(self, params, tokens, mask, known, frame_mask, rng, **options) -> jax.Array:
    """`sample_videos` as one compiled program: every mode shares it (the mask is data)."""
    return sample_videos(self, params, tokens, mask, known, frame_mask, rng, **options)

  def sampling_options(self, sampler, num_steps, guidance_scale) -> tuple[str, int, float]:
    options = ml_collections.ConfigDict(dict(sample=self.config.sample, diffusion=self.diffusion))
    return text_to_image.sampling_options(options, sampler, num_steps, guidance_scale)

  def conditions(
    self, prompts: Sequence[str], *, seconds: float | None = None
  ) -> dict[str, np.ndarray]:
    """{"caption": (N,) str array}; named errors for no prompts, an empty one, or a duration."""
    if seconds is not None:
      raise PromptError(
        f"seconds: clips have a fixed length of {self.frames} frames; expected None, "
        f"found {seconds!r}"
      )
    return {"caption": np.asarray(conditions_captions({"caption": prompts}), dtype=str)}

  def first_frame_conditions(
    self, image: np.ndarray, name: str, prompts: Sequence[str]
  ) -> dict[str, np.ndarray]:
    """{"caption", "frames"}: every prompt's clip starts from `image` (checked, named errors)."""
    conditions = self.conditions(prompts)
    image = video_samples.check_first_frame(image, self.resolution, name)
    frames = np.zeros((len(prompts), self.frames, *image.shape), np.uint8)
    frames[:, 0] = image
    return dict(conditions, frames=frames)

  def given_frames_conditions(self, clips, names, prompts, *, mode, keyframe_every=None):
    """{"caption", "frames"}: `given_frames` of each prompt's clip (`jaxgen sample --frames`)."""
    frames = given_frames(self, clips, names, len(prompts), mode, keyframe_every)
    return dict(self.conditions(prompts), frames=frames)

  def check_options(self, options: Mapping[str, Any]) -> None:
    self.sampling_options(
      options.get("sampler"), options.get("num_steps"), options.get("guidance_scale")
    )
    if "mode" in options:
      vc.check_mode(options["mode"])
    if options.get("keyframe_every") is not None:
      vc.check_keyframe_every(options["keyframe_every"], self.frames)

  def generate(
    self,
    params,
    conditions: Mapping[str, Any],
    rng: jax.Array,
    *,
    mode: str | None = None,
    keyframe_every: int | None = None,
    sampler: str | None = None,
    num_steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int | None = None,
    paste_known: bool | None = None,
  ) -> dict[str, np.ndarray]:
    """{"video": uint8 (N, T, H, W, 3)} for `conditions["caption"]` (and its "frames").

    `mode` None: "first_frame" when the conditions hold frames, else
    `sample.mode`. "keyframes" takes `keyframe_every` (None:
    `sample.keyframe_every`). Everything is checked before anything compiles;
    clips run in chunks of `batch_size` that share one compiled program.
    """
    captions, known, masks = generation_inputs(self, conditions, mode, keyframe_every)
    sampler, num_steps, guidance_scale = self.sampling_options(sampler, num_steps, guidance_scale)
    batch_size = self.generate_batch_size if batch_size is None else batch_size
    check_batch_size(batch_size)
    paste = self.config.sample.paste_known if paste_known is None else paste_known
    tokens, mask = self.tokenize(captions)
    sample_fn = functools.partial(
      self.sample,
      params,
      sampler=sampler,
      num_steps=num_steps,
      guidance_scale=jnp.float32(guidance_scale),
      eta=jnp.float32(self.config.sample.eta),
      paste_known=jnp.float32(bool(paste)),
    )
    videos = video_samples.sample_in_chunks(
      sample_fn, [tokens, mask, known, masks], rng, batch_size
    )
    return {"video": videos}

  def save_samples(
    self,
    samples: Mapping[str, np.ndarray],
    conditions: Mapping[str, Any],
    path: str,
    *,
    scale: int | None = None,
    ncols: int | None = None,
    **display,
  ) -> str:
    """A captioned GIF/MP4 grid at `path` and each clip as `.npy` beside it; returns `path`."""
    del display
    self.check_output(path)
    return video_samples.save_video_grid(
      path,
      samples["video"],
      [str(c) for c in conditions["caption"]],
      scale=4 if scale is None else scale,
      ncols=ncols,
      fps=self.config.sample.fps,
    )

  def preview(self, params, rng: jax.Array, num: int = 4) -> np.ndarray:
    captions = list(self.eval_split(num)["caption"])
    videos = self.generate(params, self.conditions(captions), rng, batch_size=num)["video"]
    return video_samples.filmstrip(videos, captions)


def inflate_image_run(task: TextToVideoTask, rng: jax.Array, tokens, mask):
  """The video model's boxed params from the image run's EMA params: temporal layers
  identity, new input channels and words as the image model saw them (`video_conditioning`)."""
  unet_rng, position_rng = jax.random.split(rng)
  r = task.resolution
  x = jnp.zeros((1, task.frames, r, r, RGB + vc.EXTRA_CHANNELS))
  t = jnp.zeros((1,), jnp.int32)
  abstract = jax.eval_shape(lambda: task.model.init(rng, x, t, tokens, mask)["params"])
  image_task, image = task.image_task, nn.meta.unbox(task.image_params)
  denoiser = dict(image["denoiser"])
  sources = vc.conv_in_sources(image_task.patch_size, image_task.coord_channels)
  denoiser["conv_in"] = dict(
    denoiser["conv_in"], kernel=vc.widen_conv_in(denoiser["conv_in"]["kernel"], sources)
  )
  text = dict(image["text_encoder"])
  words = caption_words(image_task)
  rows = vc.token_rows(
    word_ids(task.tokenizer, words),
    word_ids(image_task.tokenizer, words),
    task.tokenizer.vocab_size,
  )
  text["token_embedding"] = {"embedding": text["token_embedding"]["embedding"][rows]}
  text["position_embedding"] = vc.extend_positions(
    text["position_embedding"], task.max_text_length, position_rng
  )
  unet = UNet2DConditionModel(task.unet_config)
  # `inflate_image_params` caches example inputs built on its first call; under the trainer's
  # trace they would be tracers that leak into the next call, so they are made concrete.
  with jax.ensure_compile_time_eval():
    denoiser = nn.meta.unbox(inflate_image_params(denoiser, unet, unet_rng))
  values = dict(image, denoiser=denoiser, text_encoder=text)
  return jax.tree.map(
    lambda box, v: box.replace_boxed(jnp.asarray(v)) if isinstance(box, nn.Partitioned) else v,
    abstract,
    values,
    is_leaf=lambda x: isinstance(x, nn.Partitioned),
  )


def sample_videos(
  task: TextToVideoTask,
  params,
  tokens: jax.Array,
  mask: jax.Array,
  known: jax.Array,
  frame_mask: jax.Array,
  rng: jax.Array,
  *,
  sampler: str,
  num_steps: int,
  guidance_scale: float | jax.Array,
  eta: float | jax.Array = 0.0,
  paste_known: float | jax.Array = 1.0,
) -> jax.Array:
  """Videos in [-1, 1], (B, T, H, W, 3), sampled in one scan whatever the mode.

  `known` (B, T, H, W, 3) in [-1, 1] holds the given frames where
  `frame_mask` (B, T) is 1; with `paste_known` 1 they replace the sampled ones.
  """
  batch = tokens.shape[0]
  null_text = text_to_image.null_text_tokens(batch, task.max_text_length)
  extra = vc.conditioning_channels(known, frame_mask)
  model_fn = text_to_image.guided_model_fn(
    task.model, params, (tokens, mask), null_text, guidance_scale, extra
  )
  plan = text_to_image.sampling_plan(task.schedule, task.diffusion, sampler, num_steps, eta)
  noise_rng, sample_rng = jax.random.split(rng)
  r = task.resolution
  x_T = jax.random.normal(noise_rng, (batch, task.frames, r, r, RGB))
  x0 = samplers.run_sampler(model_fn, plan, x_T, sample_rng)
  paste = (frame_mask * paste_known)[:, :, None, None, None]
  return x0 + paste * (known - x0)


def generation_inputs(
  task: TextToVideoTask, conditions: Mapping[str, Any], mode: str | None, keyframe_every
) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(captions, given frames in [-1, 1], (N, T) known-frame masks), checked.

  `mode` None: "first_frame" when the conditions hold frames, else `sample.mode`;
  `keyframe_every` None: `sample.keyframe_every`.
  """
  captions = conditions_captions(conditions)
  frames = conditions.get("frames")
  mode = vc.check_mode(mode or ("first_frame" if frames is not None else task.config.sample.mode))
  keyframe_every = keyframe_every or task.config.sample.keyframe_every
  known_mask = vc.frame_mask(mode, task.frames, keyframe_every if mode == "keyframes" else None)
  known = video_samples.known_frames(frames, mode, len(captions), task.frames, task.resolution)
  return captions, known, np.broadcast_to(known_mask, (len(captions), task.frames))


def given_frames(
  task: TextToVideoTask,
  clips: Sequence[np.ndarray],
  names: Sequence[str],
  count: int,
  mode: str,
  keyframe_every: int | None = None,
) -> np.ndarray:
  """uint8 (count, T, H, W, 3): of clip i (uint8 (L, H, W, 3), `names[i]` in errors) the frames
  `mode` gives, zeros elsewhere: frame 0 for "first_frame", frames 0, k, 2k, ... for
  "keyframes" (k: `keyframe_every`, None: `sample.keyframe_every`, as `generate` reads it).

  A clip is a whole clip or only its given frames (`video_samples.place_given_frames`).
  """
  if vc.check_mode(mode) == "text":
    raise vc.VideoModeError(
      "mode", "'text' generates every frame; expected 'first_frame' or 'keyframes' to give frames"
    )
  if len(clips) != count or len(names) != count:
    raise video_samples.GivenFramesError(
      f"clips, names: expected one clip and name per prompt ({count}), found {len(clips)} "
      f"clips and {len(names)} names"
    )
  spacing = (keyframe_every or task.config.sample.keyframe_every) if mode == "keyframes" else None
  known = vc.frame_mask(mode, task.frames, spacing)
  return np.stack(
    [
      video_samples.place_given_frames(clip, known, task.resolution, name)
      for clip, name in zip(clips, names)
    ]
  )


def evaluate(
  task: TextToVideoTask, params, rng: jax.Array, *, mode: str = "text", num_examples=None, **options
) -> tuple[dict[str, float], np.ndarray, list[str]]:
  """The motion judge's accuracies on held-out captions, in `mode` (given frames: the held-out
  clips' own). Returns (accuracies, the uint8 videos judged, their captions)."""
  data = task.eval_split(num_examples or task.config.eval.num_examples)
  captions = list(data["caption"])
  conditions = dict(task.conditions(captions))
  if mode != "text":
    conditions["frames"] = data["video"]
  videos = task.generate(params, conditions, rng, mode=mode, **options)["video"]
  return video_judge.judge_videos(videos, captions)["accuracy"], videos, captions
