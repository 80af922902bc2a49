"""Text-to-motion with MDM (Tevet et al. 2023): the `t2m_mdm` task.

Model: a text encoder (a small Transformer trained from scratch, or the
frozen Flax CLIP text tower when local CLIP weights are given; see
`text_conditioning`) gives one pooled text vector; the MDM denoiser
(`jaxgen.models.motion_transformer`) turns it, with the timestep, into one
prefix token before the motion frames.
Training: x0 prediction, masked L2 over real frames, 10% text dropout for
classifier-free guidance, optional geometric losses on joint positions,
joint velocities and foot contact (joints from `features_to_joints`).
Timesteps are uniform as in MDM, or logit-normal
(`diffusion.timestep_distribution`), which can lean training towards the
noisy end where the text decides the motion.
Sampling: encode the prompt once, then one of the core's one-scan samplers
with guidance; frames beyond each requested length are zeroed.
With `data.length_buckets` training batches hold motions of similar length,
cropped to a few fixed lengths: exact when the denoiser masks padding, and
most motions are far shorter than the 196-frame maximum.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.data.chunks import map_padded_chunks
from jaxgen.data.pipeline import LengthBuckets
from jaxgen.diffusion import gaussian, guidance, samplers, schedules
from jaxgen.models.caption_encoder import CaptionEncoder
from jaxgen.models.motion_transformer import MDM, MDMConfig
from jaxgen.tasks.motion.motion_task import MotionGenerativeTask, frame_mask, motion_sample_spec
from jaxgen.tasks.motion.text_conditioning import (
  caption_dims,
  check_frozen_clip_optim,
  encode_captions,
  init_caption_params,
  load_frozen_clip,
  make_caption_encoder,
)

# A foot counts as still when it moves less than this per frame (MDM: 0.01).
FOOT_STILL_THRESHOLD = 0.01


def masked_l2(a: jax.Array, b: jax.Array, mask: jax.Array) -> jax.Array:
  """MDM's `masked_l2`: squared error averaged over the frames `mask` (B, T) keeps."""
  error = jnp.square(a - b).reshape(a.shape[0], a.shape[1], -1)
  weights = mask.astype(error.dtype)[..., None]
  counts = weights.sum((1, 2)) * error.shape[-1]
  per_example = (error * weights).sum((1, 2)) / jnp.maximum(counts, 1)
  return per_example.mean()


def geometric_losses(
  x0_pred: jax.Array, x0: jax.Array, mask: jax.Array, normalizer, fmt
) -> dict[str, jax.Array]:
  """MDM's joint-position, joint-velocity and foot-contact losses on normalised features."""
  from jaxgen.data.motion import features_to_joints  # pylint: disable=g-import-not-at-top

  pred_joints = features_to_joints(normalizer.denormalize(x0_pred), fmt)
  true_joints = features_to_joints(normalizer.denormalize(x0), fmt)
  velocity_mask = mask[:, 1:] & mask[:, :-1]
  pred_velocity = pred_joints[:, 1:] - pred_joints[:, :-1]
  true_velocity = true_joints[:, 1:] - true_joints[:, :-1]
  # MDM's `fc` loss: foot joints (ankles, toes) should not move while the
  # ground-truth foot stands still.
  feet = jnp.asarray(fmt.left_foot + fmt.right_foot)
  still = jnp.linalg.norm(true_velocity[:, :, feet], axis=-1) <= FOOT_STILL_THRESHOLD
  foot_velocity = pred_velocity[:, :, feet] * still[..., None]
  return dict(
    position=masked_l2(pred_joints, true_joints, mask),
    velocity=masked_l2(pred_velocity, true_velocity, velocity_mask),
    foot_contact=masked_l2(foot_velocity, jnp.zeros_like(foot_velocity), velocity_mask),
  )


def make_mdm_config(
  mdm: ml_collections.ConfigDict, fmt, text_dim: int, token_dim: int
) -> MDMConfig:
  """The denoiser's config: `mdm` (whose `text_tokens` flag picks token states) for `fmt`."""
  mdm = dict(mdm.to_dict())
  use_text_tokens = mdm.pop("text_tokens", False)
  config = MDMConfig(
    feature_dim=fmt.feature_dim,
    text_dim=text_dim,
    text_token_dim=token_dim if use_text_tokens else 0,
    **mdm,
  )
  if fmt.max_frames % config.frames_per_token:
    raise ValueError(
      f"mdm.frames_per_token: expected a divisor of the {fmt.max_frames} "
      f"frames of {fmt.name}, found {config.frames_per_token}"
    )
  return config


def make_length_buckets(
  spec: Mapping | None, arrays: Mapping[str, np.ndarray], mdm_config: MDMConfig
) -> tuple[LengthBuckets, ...]:
  """`data.length_buckets` ({"frames": bounds}) over the training arrays; () without one.

  Cutting padding frames off the end is exact only for a denoiser that
  masks them (`mdm.mask_padding`; tests/test_text_to_motion.py checks it).
  Words are not bucketed: with text tokens in the sequence, a shorter text
  would move every motion token to another position.
  """
  if not spec:
    return ()
  spec = dict(spec)
  if set(spec) != {"frames"}:
    raise ValueError(f"data.length_buckets: expected only the key 'frames', found {sorted(spec)}")
  if not mdm_config.mask_padding:
    raise ValueError(
      "data.length_buckets: expected mdm.mask_padding=True (cropping padding "
      "changes the output of a denoiser that attends to it), found False"
    )
  p = mdm_config.frames_per_token
  frames = tuple(int(b) for b in spec["frames"])
  if any(b % p for b in frames):
    raise ValueError(
      f"data.length_buckets.frames: expected multiples of mdm.frames_per_token={p}, found {frames}"
    )
  buckets = LengthBuckets(arrays["motion_mask"].sum(1), frames, ("motion", "motion_mask"))
  buckets.check(arrays, name="data.length_buckets.frames")
  return (buckets,)


def placeholder_text_condition(batch_size: int, text_length: int, mdm_config: MDMConfig):
  """An all-zero text condition of the shapes `encode_text` returns (for `init`)."""
  B, L = batch_size, text_length
  return (
    jnp.zeros((B, mdm_config.text_dim)),
    jnp.zeros((B, L, max(mdm_config.text_token_dim, 1))),
    jnp.ones((B, L), bool),
  )


def text_token_kwargs(text, mdm_config: MDMConfig) -> dict:
  """The denoiser's token-state keywords: none unless it reads text tokens."""
  if not mdm_config.text_token_dim:
    return {}
  return dict(text_states=text[1], text_mask=text[2])


def fill_sampling_options(
  sample: Mapping,
  sampler: str | None,
  num_steps: int | None,
  guidance_scale: float | None,
  num_train_timesteps: int,
) -> tuple[str, int, float]:
  """(sampler, num_steps, guidance_scale), each None taken from `sample`, checked."""
  sampler = sample["sampler"] if sampler is None else sampler
  num_steps = sample["num_steps"] if num_steps is None else num_steps
  guidance_scale = sample["guidance"] if guidance_scale is None else guidance_scale
  samplers.check_sampling_options(sampler, num_steps, guidance_scale, num_train_timesteps)
  return sampler, num_steps, guidance_scale


class MotionDiffusionTask(MotionGenerativeTask):
  """The `t2m_mdm` task: MDM (see module docstring)."""

  sample_spec = motion_sample_spec("sampler", "num_steps", "guidance_scale")

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    check_frozen_clip_optim(config.text, config.optim)
    self.clip = load_frozen_clip(config.text)
    text_dim, token_dim = caption_dims(config.text, self.clip)
    self.mdm_config = make_mdm_config(config.mdm, self.fmt, text_dim, token_dim)
    self.denoiser = MDM(self.mdm_config)
    d = config.diffusion
    gaussian.check_prediction_type(d.prediction_type)
    self.schedule = schedules.make_schedule(d.schedule, num_train_timesteps=d.num_train_timesteps)

  @functools.cached_property
  def text_encoder(self) -> CaptionEncoder:
    return make_caption_encoder(self.config.text, self.tokenizer.vocab_size)

  # -- data --------------------------------------------------------------

  def train_buckets(self, arrays: Mapping[str, np.ndarray]) -> tuple[LengthBuckets, ...]:
    """`data.length_buckets` over the training arrays (see `make_length_buckets`)."""
    return make_length_buckets(self.config.data.get("length_buckets"), arrays, self.mdm_config)

  # -- model ---------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    text_rng, mdm_rng = jax.random.split(rng)
    B, L = batch["motion"].shape[0], batch["text_tokens"].shape[1]
    params = init_caption_params(
      self.clip, self.text_encoder, text_rng, batch["text_tokens"], batch["text_mask"]
    )
    text = placeholder_text_condition(B, L, self.mdm_config)
    params["mdm"] = self.denoiser.init(
      mdm_rng,
      jnp.zeros(batch["motion"].shape, jnp.float32),
      jnp.zeros((B,), jnp.int32),
      text[0],
      batch["motion_mask"],
      **text_token_kwargs(text, self.mdm_config),
    )["params"]
    return params

  def encode_text(self, params, tokens: jax.Array, mask: jax.Array):
    """The text condition (pooled (B, text_dim), token states (B, L, W), mask (B, L)).

    The CLIP tower is frozen (no gradient). The null condition is all zeros.
    """
    pooled, states = encode_captions(self.clip, self.text_encoder, params, tokens, mask)
    return pooled, states, mask.astype(bool)

  def denoise(self, params, x, t, text, motion_mask, dropout_rng=None):
    """x0 (or the configured target) for x_t; `text` as returned by `encode_text`."""
    rngs = None if dropout_rng is None else {"dropout": dropout_rng}
    return self.denoiser.apply(
      {"params": params["mdm"]},
      x,
      t,
      text[0],
      motion_mask,
      train=dropout_rng is not None,
      rngs=rngs,
      **text_token_kwargs(text, self.mdm_config),
    )

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    d, w = self.config.diffusion, self.config.loss
    x0, mask = batch["motion"], batch["motion_mask"].astype(bool)
    drop_rng, t_rng, noise_rng, dropout_rng = jax.random.split(rng, 4)
    text = self.encode_text(params, batch["text_tokens"], batch["text_mask"])
    text = guidance.drop_condition(
      drop_rng, text, jax.tree.map(jnp.zeros_like, text), d.cond_drop_prob
    )
    t = gaussian.sample_timesteps(
      t_rng,
      x0.shape[0],
      self.schedule.num_train_timesteps,
      d.timestep_distribution,
      d.timestep_mean,
      d.timestep_std,
    )
    noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
    x_t = gaussian.q_sample(self.schedule, x0, t, noise)
    prediction = self.denoise(params, x_t, t, text, mask, dropout_rng)
    target = gaussian.training_target(d.prediction_type, x0, noise, self.schedule, t)
    mse = masked_l2(prediction, target, mask)
    metrics = dict(mse=mse)
    total = mse
    if w.position or w.velocity or w.foot_contact:
      x0_pred = gaussian.convert_prediction(
        prediction, x_t, self.schedule, t, d.prediction_type, "sample"
      )
      geometric = geometric_losses(x0_pred, x0, mask, self.normalizer, self.fmt)
      for name, value in geometric.items():
        metrics[name] = value
        total = total + w[name] * value
    return total, metrics

  @functools.partial(jax.jit, static_argnames=("self", "sampler", "num_steps"))
  def sample(
    self,
    params,
    tokens: jax.Array,
    text_mask: jax.Array,
    motion_mask: jax.Array,
    rng: jax.Array,
    *,
    sampler: str,
    num_steps: int,
    guidance_scale: float | jax.Array,
  ) -> jax.Array:
    """Normalised motions (B, T, D), zero beyond each mask: one compiled program."""
    text = self.encode_text(params, tokens, text_mask)
    cond = (text, motion_mask)
    uncond = (jax.tree.map(jnp.zeros_like, text), motion_mask)

    def model_fn(x, t, c):
      return self.denoise(params, x, t, c[0], c[1])

    guided = guidance.classifier_free_guidance(model_fn, cond, uncond, guidance_scale)
    noise_rng, sample_rng = jax.random.split(rng)
    x_T = jax.random.normal(noise_rng, motion_mask.shape + (self.fmt.feature_dim,))
    x = samplers.sample(
      guided,
      self.schedule,
      x_T,
      sample_rng,
      sampler=sampler,
      num_steps=num_steps,
      prediction_type=self.config.diffusion.prediction_type,
    )
    return x * motion_mask[..., None]

  def check_options(self, options: Mapping[str, Any]) -> None:
    """SamplingOptionErrors for `generate`'s sampler, num_steps and guidance_scale."""
    fill_sampling_options(
      self.config.sample,
      options.get("sampler"),
      options.get("num_steps"),
      options.get("guidance_scale"),
      self.config.diffusion.num_train_timesteps,
    )

  def generate(
    self,
    params,
    conditions: Mapping[str, Any],
    rng: jax.Array,
    *,
    sampler: str | None = None,
    num_steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int = 64,
  ) -> dict[str, np.ndarray]:
    """Samples for `conditions` (options default to `config.sample`).

    Returns {"motion": de-normalised features (N, max_frames, D), zero beyond
    each length, "length": the requested frames (N,)}.
    """
    sampler, num_steps, guidance_scale = fill_sampling_options(
      self.config.sample,
      sampler,
      num_steps,
      guidance_scale,
      self.config.diffusion.num_train_timesteps,
    )
    captions, lengths = self.check_conditions(conditions)
    tokens, text_mask = self.tokenize(captions)
    masks = frame_mask(lengths, self.max_frames)
    x = map_padded_chunks(
      lambda i, *parts: self.sample(
        params,
        *parts,
        jax.random.fold_in(rng, i),
        sampler=sampler,
        num_steps=int(num_steps),
        guidance_scale=jnp.float32(guidance_scale),
      ),
      [tokens, text_mask, masks],
      min(batch_size, len(tokens)),
    )
    motion = np.asarray(self.normalizer.denormalize(x), np.float32) * masks[..., None]
    return dict(motion=motion, length=lengths)
