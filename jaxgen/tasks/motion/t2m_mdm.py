"""Text-to-motion with MDM (Tevet et al. 2023), and helpers every motion task shares.

Model: a text encoder (a small Transformer trained from scratch, or the
frozen Flax CLIP text tower when local CLIP weights are given) gives one
pooled text vector; the MDM denoiser (`jaxgen.models.motion_transformer`)
turns it, with the timestep, into one prefix token before the motion frames.
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

Motion batches (all motion tasks): `motion` (B, T, D) float32 normalised,
`motion_mask` (B, T) bool, `text_tokens` (B, L) int32, `text_mask` (B, L) bool.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tokenizers import pre_tokenizers

from jaxgen.data.pipeline import LengthBuckets
from jaxgen.data.tokenizer import CaptionTokenizer, build_caption_tokenizer
from jaxgen.diffusion import gaussian, guidance, samplers, schedules
from jaxgen.models.motion_transformer import MDM, MDMConfig
from jaxgen.models.transformer import TextTransformer
from jaxgen.data.chunks import map_padded_chunks

_LOG = logging.getLogger(__name__)

# A foot counts as still when it moves less than this per frame (MDM: 0.01).
FOOT_STILL_THRESHOLD = 0.01
TEXT_ENCODERS = ("trained", "clip")


# ---------------------------------------------------------------------------
# Helpers shared by the motion tasks.
# ---------------------------------------------------------------------------


def motion_format(name: str):
  """The `MotionFormat` of a dataset name ('humanml3d' or 'kit_ml')."""
  from jaxgen.data import motion  # pylint: disable=g-import-not-at-top
  formats = {"humanml3d": motion.HUMANML3D, "kit_ml": motion.KIT_ML}
  if name not in formats:
    raise ValueError(f"data.format: expected one of {sorted(formats)}, found {name!r}")
  return formats[name]


def load_motion_split(data: Mapping, split: str) -> dict[str, Any]:
  """dict(motion (N, T, D) un-normalised, length (N,), caption list) of a split.

  `data.name` 'synthetic' builds the deterministic synthetic set;
  'humanml3d' / 'kit_ml' read the prepared dataset at `data.path`.
  """
  if split not in ("train", "test"):
    raise ValueError(f"split: expected 'train' or 'test', found {split!r}")
  fmt = motion_format(data["format"])
  if data["name"] == "synthetic":
    from jaxgen.data import synthetic_motion  # pylint: disable=g-import-not-at-top
    # max_examples (None: the whole split) keeps tests and smoke runs small.
    out = synthetic_motion.make_split(split, fmt=fmt, seed=data["seed"],
                                      num_examples=data.get("max_examples"))
  elif data["name"] in ("humanml3d", "kit_ml"):
    import importlib  # pylint: disable=g-import-not-at-top
    module = importlib.import_module(f"jaxgen.data.datasets.{data['name']}")
    out = module.load_split(data["path"], split)
  else:
    raise ValueError(f"data.name: expected 'synthetic', 'humanml3d' or 'kit_ml', "
                     f"found {data['name']!r}")
  return dict(motion=np.asarray(out["motion"], np.float32),
              length=np.asarray(out["length"], np.int32), caption=list(out["caption"]))


def caption_words(captions: Sequence[str]) -> list[str]:
  """The sorted set of lowercased words (as the caption tokenizer splits them) in captions."""
  split = pre_tokenizers.Whitespace()
  return sorted({w for c in captions for w, _ in split.pre_tokenize_str(c.lower())})


def make_caption_tokenizer(data: Mapping, train_captions: Sequence[str] | None = None
                           ) -> CaptionTokenizer:
  """Word tokenizer: the synthetic set's vocabulary, or the training captions' words."""
  if data["name"] == "synthetic":
    from jaxgen.data import synthetic_motion  # pylint: disable=g-import-not-at-top
    return build_caption_tokenizer(synthetic_motion.CAPTION_WORDS)
  if train_captions is None:
    train_captions = load_motion_split(data, "train")["caption"]
  return build_caption_tokenizer(caption_words(train_captions))


def frame_mask(lengths: np.ndarray | jax.Array, num_frames: int):
  """(N,) lengths -> (N, num_frames) bool, true on real frames."""
  xp = jnp if isinstance(lengths, jax.Array) else np
  return xp.arange(num_frames)[None, :] < xp.asarray(lengths)[:, None]


def check_lengths(lengths: Any, num: int, max_frames: int, name: str = "lengths") -> np.ndarray:
  """Named errors for requested motion lengths; returns them as int32 (N,)."""
  lengths = np.asarray(lengths)
  if lengths.shape != (num,) or not np.issubdtype(lengths.dtype, np.integer):
    raise ValueError(f"{name}: expected {num} integer frame counts (one per caption), "
                     f"found {lengths.dtype} array of shape {lengths.shape}")
  bad = (lengths < 1) | (lengths > max_frames)
  if bad.any():
    raise ValueError(f"{name}: expected frame counts in [1, {max_frames}], "
                     f"found {int(lengths[bad][0])}")
  return lengths.astype(np.int32)


def check_motion_batch(batch: Mapping[str, np.ndarray], feature_dim: int, max_frames: int,
                       max_text_length: int) -> None:
  """Named errors for a host batch that does not fit a motion task's config."""
  for key in ("motion", "motion_mask", "text_tokens", "text_mask"):
    if key not in batch:
      raise ValueError(f"batch: expected key {key!r}, found keys {sorted(batch)}")
  # A length-bucketed batch may be shorter than the maximum.
  motion = np.asarray(batch["motion"])
  if motion.ndim != 3 or not 0 < motion.shape[1] <= max_frames or motion.shape[2] != feature_dim:
    raise ValueError(f"batch['motion']: expected (B, T <= {max_frames}, {feature_dim}), "
                     f"found {motion.shape}")
  if np.asarray(batch["motion_mask"]).shape != motion.shape[:2]:
    raise ValueError(f"batch['motion_mask']: expected {motion.shape[:2]}, "
                     f"found {np.asarray(batch['motion_mask']).shape}")
  tokens = np.asarray(batch["text_tokens"])
  if tokens.shape != (motion.shape[0], max_text_length):
    raise ValueError(f"batch['text_tokens']: expected {(motion.shape[0], max_text_length)}, "
                     f"found {tokens.shape}")
  if np.asarray(batch["text_mask"]).shape != tokens.shape:
    raise ValueError(f"batch['text_mask']: expected {tokens.shape}, "
                     f"found {np.asarray(batch['text_mask']).shape}")
  if not np.isfinite(motion).all():
    raise ValueError("batch['motion']: expected finite features, found NaN or inf")


class MotionDataMixin:
  """Data of a motion task: split, normaliser, tokenizer (all cached, host side).

  Needs `self.config` with `data` (name, format, seed, path) and
  `text.max_length`.
  """

  @functools.cached_property
  def fmt(self):
    return motion_format(self.config.data.format)

  @functools.cached_property
  def _train_split(self) -> dict[str, Any]:
    return load_motion_split(self.config.data, "train")

  def split(self, name: str) -> dict[str, Any]:
    return self._train_split if name == "train" else load_motion_split(self.config.data, name)

  @functools.cached_property
  def normalizer(self):
    """The released Mean.npy/Std.npy of a real dataset, else fit on the training motions."""
    import os  # pylint: disable=g-import-not-at-top

    from jaxgen.data.motion import Normalizer, fit_normalizer  # pylint: disable=g-import-not-at-top
    path = self.config.data.get("path")
    if path and os.path.isfile(os.path.join(path, "Mean.npy")):
      return Normalizer.load(path, self.fmt)
    data = self._train_split
    mask = frame_mask(data["length"], data["motion"].shape[1])
    return fit_normalizer(data["motion"], mask, self.fmt)

  @functools.cached_property
  def tokenizer(self) -> CaptionTokenizer:
    if self.config.data.name == "synthetic":
      return make_caption_tokenizer(self.config.data)
    return make_caption_tokenizer(self.config.data, self._train_split["caption"])

  @property
  def max_frames(self) -> int:
    return self.fmt.max_frames

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return self.tokenizer.encode(captions, self.config.text.max_length)

  def motion_arrays(self, data: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A split as batch-keyed host arrays (normalised motion, zero on padding)."""
    mask = frame_mask(data["length"], data["motion"].shape[1])
    motion = np.asarray(self.normalizer.normalize(data["motion"]), np.float32) * mask[..., None]
    tokens, text_mask = self.tokenize(data["caption"])
    return dict(motion=motion.astype(np.float32), motion_mask=mask,
                text_tokens=tokens.astype(np.int32), text_mask=text_mask)

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    check_motion_batch(batch, self.fmt.feature_dim, self.max_frames, self.config.text.max_length)

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    T, D, L = self.max_frames, self.fmt.feature_dim, self.config.text.max_length
    return dict(motion=jax.ShapeDtypeStruct((batch_size, T, D), jnp.float32),
                motion_mask=jax.ShapeDtypeStruct((batch_size, T), jnp.bool_),
                text_tokens=jax.ShapeDtypeStruct((batch_size, L), jnp.int32),
                text_mask=jax.ShapeDtypeStruct((batch_size, L), jnp.bool_))


def motion_preview(features: np.ndarray, lengths: np.ndarray, captions: Sequence[str], fmt,
                   num_snapshots: int = 4) -> np.ndarray:
  """A uint8 picture: the stick-figure panels of all motions at a few instants, side by side."""
  from jaxgen.data.motion import features_to_joints  # pylint: disable=g-import-not-at-top
  from jaxgen.render.motion import render_frames  # pylint: disable=g-import-not-at-top
  joints = [np.asarray(features_to_joints(f[:n], fmt)) for f, n in zip(features, lengths)]
  frames = render_frames(joints, list(captions), fmt)
  picks = np.linspace(0, len(frames) - 1, num_snapshots).round().astype(int)
  return np.concatenate([frames[i] for i in picks], axis=1)


# ---------------------------------------------------------------------------
# The MDM task.
# ---------------------------------------------------------------------------


def masked_mean(states: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of token states over attended tokens: (B, L, D), (B, L) -> (B, D)."""
  weights = mask.astype(states.dtype)[..., None]
  return (states * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)


class FrozenCLIPText:
  """MDM's text encoder: the CLIP text tower and its projection, frozen.

  Read from a local transformers folder (`CLIPTextModelWithProjection` or
  `CLIPTextModel` weights as safetensors, plus its tokenizer files). The
  weights live in the task's parameter tree under "clip" (so checkpoints are
  self-contained) and get no gradient; configs that use it must set
  optim.weight_decay=0 so the optimizer leaves them untouched.
  """

  def __init__(self, config, params: Mapping, projection: np.ndarray | None, tokenizer,
               max_length: int):
    from jaxgen.models.text_encoders import CLIPTextModel  # pylint: disable=g-import-not-at-top
    if not 3 <= max_length <= config.max_position_embeddings:
      raise ValueError(f"text.max_length: expected 3 .. {config.max_position_embeddings} for "
                       f"CLIP, found {max_length}")
    self.config, self.params, self.projection = config, params, projection
    self.tokenizer, self.max_length = tokenizer, max_length
    self.model = CLIPTextModel(config)

  @classmethod
  def load(cls, folder: str, max_length: int) -> FrozenCLIPText:
    import json  # pylint: disable=g-import-not-at-top
    import os  # pylint: disable=g-import-not-at-top

    import transformers  # pylint: disable=g-import-not-at-top

    from jaxgen.convert import transformers_text  # pylint: disable=g-import-not-at-top
    from jaxgen.models.text_encoders import CLIPTextConfig  # pylint: disable=g-import-not-at-top
    if not folder or not os.path.isfile(os.path.join(folder, "config.json")):
      raise FileNotFoundError(f"text.clip_path: expected a local transformers CLIP text folder "
                              f"(config.json, safetensors, tokenizer), found {folder!r}")
    with open(os.path.join(folder, "config.json")) as f:
      config = CLIPTextConfig.from_transformers(json.load(f))
    state = transformers_text.read_safetensors_folder(folder)
    projection = state.pop("text_projection.weight", None)
    params = transformers_text.clip_text_from_transformers(state, config)
    tokenizer = transformers.CLIPTokenizerFast.from_pretrained(folder, local_files_only=True)
    return cls(config, params, None if projection is None else np.asarray(projection).T,
               tokenizer, max_length)

  @property
  def embedding_dim(self) -> int:
    return self.config.hidden_size if self.projection is None else self.projection.shape[1]

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(captions, str) or not captions or any(not str(c).strip() for c in captions):
      raise ValueError(f"captions: expected a non-empty list of non-empty strings, found "
                       f"{captions!r}")
    out = self.tokenizer(list(captions), padding="max_length", truncation=True,
                         max_length=self.max_length, return_tensors="np")
    return out["input_ids"].astype(np.int32), out["attention_mask"].astype(bool)

  def boxed_params(self) -> dict[str, Any]:
    """The loaded weights, boxed with the logical names the tower declares."""
    tokens = jnp.zeros((1, self.max_length), jnp.int32)
    boxes = jax.eval_shape(self.model.init, jax.random.PRNGKey(0), tokens)["params"]
    tower = jax.tree.map(lambda box, value: box.replace_boxed(jnp.asarray(value)), boxes,
                         self.params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    out = dict(text_model=tower)
    if self.projection is not None:
      out["text_projection"] = nn.LogicallyPartitioned(jnp.asarray(self.projection),
                                                       ("embed", "kv"))
    return out

  def embed(self, params: Mapping, tokens: jax.Array, mask: jax.Array
            ) -> tuple[jax.Array, jax.Array]:
    """(end-of-text state projected (B, embedding_dim) (CLIP's `encode_text`), token states)."""
    out = self.model.apply({"params": params["text_model"]}, tokens, mask)
    pooled = out.pooler_output
    if "text_projection" in params:
      pooled = pooled @ params["text_projection"]
    return pooled, out.last_hidden_state


class TrainedTextEncoder(nn.Module):
  """A small Transformer over caption words, mean-pooled to one vector."""

  text: Mapping

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(pooled (B, width), token states (B, L, width))."""
    states = TextTransformer(**self.text, name="transformer")(tokens, mask)
    return masked_mean(states, mask), states


def masked_l2(a: jax.Array, b: jax.Array, mask: jax.Array) -> jax.Array:
  """MDM's `masked_l2`: squared error averaged over the frames `mask` (B, T) keeps."""
  error = jnp.square(a - b).reshape(a.shape[0], a.shape[1], -1)
  weights = mask.astype(error.dtype)[..., None]
  per_example = (error * weights).sum((1, 2)) / jnp.maximum(weights.sum((1, 2)) * error.shape[-1], 1)
  return per_example.mean()


def geometric_losses(x0_pred: jax.Array, x0: jax.Array, mask: jax.Array, normalizer,
                     fmt) -> dict[str, jax.Array]:
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
      foot_contact=masked_l2(foot_velocity, jnp.zeros_like(foot_velocity), velocity_mask))


class TextToMotionTask(MotionDataMixin):
  """The `text_to_motion` task: MDM (see module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    t = config.text
    if t.encoder not in TEXT_ENCODERS:
      raise ValueError(f"text.encoder: expected one of {TEXT_ENCODERS}, found {t.encoder!r}")
    self.clip = None
    if t.encoder == "clip":
      if config.optim.weight_decay:
        raise ValueError(f"optim.weight_decay: expected 0 with the frozen CLIP text encoder "
                         f"(its weights sit in the parameter tree), found "
                         f"{config.optim.weight_decay}")
      self.clip = FrozenCLIPText.load(t.clip_path, t.max_length)
      text_dim, token_dim = self.clip.embedding_dim, self.clip.config.hidden_size
    else:
      text_dim = token_dim = t.width
    mdm = dict(config.mdm.to_dict())
    use_text_tokens = mdm.pop("text_tokens", False)
    self.mdm_config = MDMConfig(feature_dim=self.fmt.feature_dim, text_dim=text_dim,
                                text_token_dim=token_dim if use_text_tokens else 0, **mdm)
    if self.max_frames % self.mdm_config.frames_per_token:
      raise ValueError(f"mdm.frames_per_token: expected a divisor of the {self.max_frames} "
                       f"frames of {self.fmt.name}, found {self.mdm_config.frames_per_token}")
    self.denoiser = MDM(self.mdm_config)
    d = config.diffusion
    gaussian.check_prediction_type(d.prediction_type)
    self.schedule = schedules.make_schedule(d.schedule, num_train_timesteps=d.num_train_timesteps)

  @functools.cached_property
  def text_encoder(self) -> TrainedTextEncoder:
    t = self.config.text
    return TrainedTextEncoder(dict(vocab_size=self.tokenizer.vocab_size, max_length=t.max_length,
                                   width=t.width, num_layers=t.num_layers,
                                   num_heads=t.num_heads))

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if self.clip is not None:
      return self.clip.tokenize(captions)
    return super().tokenize(captions)

  # -- data --------------------------------------------------------------

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    return self.motion_arrays(self._train_split)

  def train_buckets(self, arrays: Mapping[str, np.ndarray]) -> tuple[LengthBuckets, ...]:
    """`data.length_buckets` ({"frames": bounds}) over the training arrays.

    Cutting padding frames off the end is exact only for a denoiser that
    masks them (`mdm.mask_padding`; tests/test_text_to_motion.py checks it).
    Words are not bucketed: with text tokens in the sequence, a shorter text
    would move every motion token to another position.
    """
    spec = self.config.data.get("length_buckets")
    if not spec:
      return ()
    spec = dict(spec)
    if set(spec) != {"frames"}:
      raise ValueError(f"data.length_buckets: expected only the key 'frames', "
                       f"found {sorted(spec)}")
    if not self.mdm_config.mask_padding:
      raise ValueError("data.length_buckets: expected mdm.mask_padding=True (cropping padding "
                       "changes the output of a denoiser that attends to it), found False")
    p = self.mdm_config.frames_per_token
    frames = tuple(int(b) for b in spec["frames"])
    if any(b % p for b in frames):
      raise ValueError(f"data.length_buckets.frames: expected multiples of "
                       f"mdm.frames_per_token={p}, found {frames}")
    buckets = LengthBuckets(arrays["motion_mask"].sum(1), frames, ("motion", "motion_mask"))
    buckets.check(arrays, name="data.length_buckets.frames")
    return (buckets,)

  # -- model ---------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    text_rng, mdm_rng = jax.random.split(rng)
    B = batch["motion"].shape[0]
    params = {}
    if self.clip is not None:
      params["clip"] = self.clip.boxed_params()
    else:
      params["text_encoder"] = self.text_encoder.init(
          text_rng, batch["text_tokens"], batch["text_mask"])["params"]
    c = self.mdm_config
    L = batch["text_tokens"].shape[1]
    text = (jnp.zeros((B, c.text_dim)), jnp.zeros((B, L, max(c.text_token_dim, 1))),
            jnp.ones((B, L), bool))
    params["mdm"] = self.denoiser.init(mdm_rng, jnp.zeros(batch["motion"].shape, jnp.float32),
                                       jnp.zeros((B,), jnp.int32), text[0],
                                       batch["motion_mask"], **self._text_kwargs(text))["params"]
    return params

  def encode_text(self, params, tokens: jax.Array, mask: jax.Array):
    """The text condition (pooled (B, text_dim), token states (B, L, W), mask (B, L)).

    The CLIP tower is frozen (no gradient). The null condition is all zeros.
    """
    if self.clip is not None:
      pooled, states = self.clip.embed(jax.lax.stop_gradient(params["clip"]), tokens, mask)
    else:
      pooled, states = self.text_encoder.apply({"params": params["text_encoder"]}, tokens, mask)
    return pooled, states, mask.astype(bool)

  def _text_kwargs(self, text) -> dict:
    if not self.mdm_config.text_token_dim:
      return {}
    return dict(text_states=text[1], text_mask=text[2])

  def denoise(self, params, x, t, text, motion_mask, dropout_rng=None):
    """x0 (or the configured target) for x_t; `text` as returned by `encode_text`."""
    rngs = None if dropout_rng is None else {"dropout": dropout_rng}
    return self.denoiser.apply({"params": params["mdm"]}, x, t, text[0], motion_mask,
                               train=dropout_rng is not None, rngs=rngs,
                               **self._text_kwargs(text))

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    d, w = self.config.diffusion, self.config.loss
    x0, mask = batch["motion"], batch["motion_mask"].astype(bool)
    drop_rng, t_rng, noise_rng, dropout_rng = jax.random.split(rng, 4)
    text = self.encode_text(params, batch["text_tokens"], batch["text_mask"])
    text = guidance.drop_condition(drop_rng, text, jax.tree.map(jnp.zeros_like, text),
                                   d.cond_drop_prob)
    t = gaussian.sample_timesteps(t_rng, x0.shape[0], self.schedule.num_train_timesteps,
                                  d.timestep_distribution, d.timestep_mean, d.timestep_std)
    noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
    x_t = gaussian.q_sample(self.schedule, x0, t, noise)
    prediction = self.denoise(params, x_t, t, text, mask, dropout_rng)
    target = gaussian.training_target(d.prediction_type, x0, noise, self.schedule, t)
    mse = masked_l2(prediction, target, mask)
    metrics = dict(mse=mse)
    total = mse
    if w.position or w.velocity or w.foot_contact:
      x0_pred = gaussian.convert_prediction(prediction, x_t, self.schedule, t,
                                            d.prediction_type, "sample")
      geometric = geometric_losses(x0_pred, x0, mask, self.normalizer, self.fmt)
      for name, value in geometric.items():
        metrics[name] = value
        total = total + w[name] * value
    return total, metrics

  @functools.partial(jax.jit, static_argnames=("self", "sampler", "num_steps"))
  def sample(self, params, tokens: jax.Array, text_mask: jax.Array, motion_mask: jax.Array,
             rng: jax.Array, *, sampler: str, num_steps: int,
             guidance_scale: float | jax.Array) -> jax.Array:
    """Normalised motions (B, T, D), zero beyond each mask: one compiled program."""
    text = self.encode_text(params, tokens, text_mask)
    cond = (text, motion_mask)
    uncond = (jax.tree.map(jnp.zeros_like, text), motion_mask)

    def model_fn(x, t, c):
      return self.denoise(params, x, t, c[0], c[1])

    guided = guidance.classifier_free_guidance(model_fn, cond, uncond, guidance_scale)
    noise_rng, sample_rng = jax.random.split(rng)
    x_T = jax.random.normal(noise_rng, motion_mask.shape + (self.fmt.feature_dim,))
    x = samplers.sample(guided, self.schedule, x_T, sample_rng, sampler=sampler,
                        num_steps=num_steps, prediction_type=self.config.diffusion.prediction_type)
    return x * motion_mask[..., None]

  def generate(self, params, captions: Sequence[str], lengths: np.ndarray, rng: jax.Array, *,
               sampler: str | None = None, num_steps: int | None = None,
               guidance_scale: float | None = None, batch_size: int = 64) -> np.ndarray:
    """De-normalised features (N, max_frames, D) for captions, zero beyond each length."""
    s = self.config.sample
    sampler = sampler or s.sampler
    num_steps = num_steps or s.num_steps
    guidance_scale = s.guidance if guidance_scale is None else guidance_scale
    if sampler not in samplers.SAMPLERS:
      raise ValueError(f"sampler: expected one of {samplers.SAMPLERS}, found {sampler!r}")
    tokens, text_mask = self.tokenize(captions)
    lengths = check_lengths(lengths, len(tokens), self.max_frames)
    masks = frame_mask(lengths, self.max_frames)
    x = map_padded_chunks(
        lambda i, *parts: self.sample(params, *parts, jax.random.fold_in(rng, i),
                                      sampler=sampler, num_steps=num_steps,
                                      guidance_scale=jnp.float32(guidance_scale)),
        [tokens, text_mask, masks], min(batch_size, len(tokens)))
    return np.asarray(self.normalizer.denormalize(x), np.float32) * masks[..., None]

  def preview(self, params, rng: jax.Array, num: int = 4) -> np.ndarray:
    data = self.split("test")
    captions, lengths = data["caption"][:num], data["length"][:num]
    features = self.generate(params, captions, lengths, rng, batch_size=num)
    return motion_preview(features, lengths, captions, self.fmt)
