"""What every motion task shares: its data, batch checks, previews and sample files.

`MotionTask` is a `Task` over a motion dataset (split, normaliser, caption
tokenizer, all cached on the host); `MotionGenerativeTask` adds what
`jaxgen sample` needs of a text-to-motion model: conditions from prompts and
a duration, output checks, and writing joints (.npy) or stick-figure videos.

Motion batches: `motion` (B, T, D) float32 normalised, `motion_mask` (B, T)
bool, `text_tokens` (B, L) int32, `text_mask` (B, L) bool.
Conditions of `generate`: `caption` (N,) strings, `length` (N,) int32 frames.
Samples: `motion` (N, max_frames, D) de-normalised features, zero beyond
each motion's `length` (N,) int32, the frames actually made.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tokenizers import pre_tokenizers

from jaxgen.data import motion as motion_lib
from jaxgen.data.tokenizer import CaptionTokenizer, build_caption_tokenizer
from jaxgen.training.task import GenerativeTask, SampleSpec, Task, check_prompts

MOTION_OUTPUTS = (".mp4", ".gif", ".npy")


class MotionSampleError(ValueError):
  """A sampling request (prompts, duration, output file) a motion task cannot serve."""


def motion_sample_spec(*options: str) -> SampleSpec:
  """The `SampleSpec` of a text-to-motion task whose `generate` takes `options`."""
  return SampleSpec(
    default_out="motion.mp4", out_extensions=MOTION_OUTPUTS, options=options, takes_seconds=True
  )


# -- data ----------------------------------------------------------------------


def motion_format(name: str) -> motion_lib.MotionFormat:
  """The `MotionFormat` of a dataset name ('humanml3d' or 'kit_ml')."""
  formats = {"humanml3d": motion_lib.HUMANML3D, "kit_ml": motion_lib.KIT_ML}
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
    out = synthetic_motion.make_split(
      split, fmt=fmt, seed=data["seed"], num_examples=data.get("max_examples")
    )
  elif data["name"] in ("humanml3d", "kit_ml"):
    # Each dataset reader loads only when a run uses it.
    out = importlib.import_module(f"jaxgen.data.datasets.{data['name']}").load_split(
      data["path"], split
    )
  else:
    raise ValueError(
      f"data.name: expected 'synthetic', 'humanml3d' or 'kit_ml', found {data['name']!r}"
    )
  return dict(
    motion=np.asarray(out["motion"], np.float32),
    length=np.asarray(out["length"], np.int32),
    caption=list(out["caption"]),
  )


def caption_words(captions: Sequence[str]) -> list[str]:
  """The sorted set of lowercased words (as the caption tokenizer splits them) in captions."""
  split = pre_tokenizers.Whitespace()
  return sorted({w for c in captions for w, _ in split.pre_tokenize_str(c.lower())})


def make_caption_tokenizer(
  data: Mapping, train_captions: Sequence[str] | None = None
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


def check_lengths(
  lengths: Any, num: int, max_frames: int, name: str = "lengths", min_frames: int = 1
) -> np.ndarray:
  """Named errors for requested motion lengths; returns them as int32 (N,)."""
  lengths = np.asarray(lengths)
  if lengths.shape != (num,) or not np.issubdtype(lengths.dtype, np.integer):
    raise ValueError(
      f"{name}: expected {num} integer frame counts (one per caption), "
      f"found {lengths.dtype} array of shape {lengths.shape}"
    )
  bad = (lengths < min_frames) | (lengths > max_frames)
  if bad.any():
    raise ValueError(
      f"{name}: expected frame counts in [{min_frames}, {max_frames}], found {int(lengths[bad][0])}"
    )
  return lengths.astype(np.int32)


def check_motion_batch(
  batch: Mapping[str, np.ndarray], feature_dim: int, max_frames: int, max_text_length: int
) -> None:
  """Named errors for a host batch that does not fit a motion task's config."""
  for key in ("motion", "motion_mask", "text_tokens", "text_mask"):
    if key not in batch:
      raise ValueError(f"batch: expected key {key!r}, found keys {sorted(batch)}")
  # A length-bucketed batch may be shorter than the maximum.
  motion = np.asarray(batch["motion"])
  if motion.ndim != 3 or not 0 < motion.shape[1] <= max_frames or motion.shape[2] != feature_dim:
    raise ValueError(
      f"batch['motion']: expected (B, T <= {max_frames}, {feature_dim}), found {motion.shape}"
    )
  if np.asarray(batch["motion_mask"]).shape != motion.shape[:2]:
    raise ValueError(
      f"batch['motion_mask']: expected {motion.shape[:2]}, "
      f"found {np.asarray(batch['motion_mask']).shape}"
    )
  tokens = np.asarray(batch["text_tokens"])
  if tokens.shape != (motion.shape[0], max_text_length):
    raise ValueError(
      f"batch['text_tokens']: expected {(motion.shape[0], max_text_length)}, found {tokens.shape}"
    )
  if np.asarray(batch["text_mask"]).shape != tokens.shape:
    raise ValueError(
      f"batch['text_mask']: expected {tokens.shape}, found {np.asarray(batch['text_mask']).shape}"
    )
  if not np.isfinite(motion).all():
    raise ValueError("batch['motion']: expected finite features, found NaN or inf")


def motion_preview(
  features: np.ndarray, lengths: np.ndarray, captions: Sequence[str], fmt, num_snapshots: int = 4
) -> np.ndarray:
  """A uint8 picture: the stick-figure panels of all motions at a few instants, side by side."""
  from jaxgen.render.motion import render_frames  # pylint: disable=g-import-not-at-top

  features = np.asarray(features)
  finite = np.isfinite(features)
  if not finite.all():
    # A preview must not stop training (features_to_joints refuses NaN): the
    # non-finite values of a diverging model are drawn as zeros, and said so.
    bad = int((~finite.reshape(len(features), -1).all(axis=1)).sum())
    logging.warning("preview: %d of %d motions hold NaN or inf; drawn as 0", bad, len(features))
    features = np.where(finite, features, 0.0)
  joints = [
    np.asarray(motion_lib.features_to_joints(f[:n], fmt)) for f, n in zip(features, lengths)
  ]
  frames = render_frames(joints, list(captions), fmt)
  picks = np.linspace(0, len(frames) - 1, num_snapshots).round().astype(int)
  return np.concatenate([frames[i] for i in picks], axis=1)


class MotionTask(Task):
  """A task over a motion dataset: split, normaliser, tokenizer (all cached, host side).

  Needs `self.config` with `data` (name, format, seed, path) and
  `text.max_length`. A task that reads captions with frozen CLIP sets
  `self.clip` (a `text_conditioning.FrozenCLIPText`), whose tokenizer then
  replaces the caption words.
  """

  clip = None

  @functools.cached_property
  def fmt(self) -> motion_lib.MotionFormat:
    return motion_format(self.config.data.format)

  @functools.cached_property
  def _train_split(self) -> dict[str, Any]:
    return load_motion_split(self.config.data, "train")

  def split(self, name: str) -> dict[str, Any]:
    return self._train_split if name == "train" else load_motion_split(self.config.data, name)

  @functools.cached_property
  def normalizer(self) -> motion_lib.Normalizer:
    """The released Mean.npy/Std.npy of a real dataset, else fit on the training motions."""
    path = self.config.data.get("path")
    if path and os.path.isfile(os.path.join(path, "Mean.npy")):
      return motion_lib.Normalizer.load(path, self.fmt)
    data = self._train_split
    mask = frame_mask(data["length"], data["motion"].shape[1])
    return motion_lib.fit_normalizer(data["motion"], mask, self.fmt)

  @functools.cached_property
  def tokenizer(self) -> CaptionTokenizer:
    if self.config.data.name == "synthetic":
      return make_caption_tokenizer(self.config.data)
    return make_caption_tokenizer(self.config.data, self._train_split["caption"])

  @property
  def max_frames(self) -> int:
    return self.fmt.max_frames

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if self.clip is not None:
      return self.clip.tokenize(captions)
    return self.tokenizer.encode(captions, self.config.text.max_length)

  def motion_arrays(self, data: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A split as batch-keyed host arrays (normalised motion, zero on padding)."""
    mask = frame_mask(data["length"], data["motion"].shape[1])
    motion = np.asarray(self.normalizer.normalize(data["motion"]), np.float32) * mask[..., None]
    tokens, text_mask = self.tokenize(data["caption"])
    return dict(
      motion=motion.astype(np.float32),
      motion_mask=mask,
      text_tokens=tokens.astype(np.int32),
      text_mask=text_mask,
    )

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    return self.motion_arrays(self._train_split)

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    check_motion_batch(batch, self.fmt.feature_dim, self.max_frames, self.config.text.max_length)

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    T, D, L = self.max_frames, self.fmt.feature_dim, self.config.text.max_length
    return dict(
      motion=jax.ShapeDtypeStruct((batch_size, T, D), jnp.float32),
      motion_mask=jax.ShapeDtypeStruct((batch_size, T), jnp.bool_),
      text_tokens=jax.ShapeDtypeStruct((batch_size, L), jnp.int32),
      text_mask=jax.ShapeDtypeStruct((batch_size, L), jnp.bool_),
    )


class MotionGenerativeTask(MotionTask, GenerativeTask):
  """A text-to-motion task: captions and lengths in, de-normalised features out.

  Subclasses set `sample_spec = motion_sample_spec(<their options>)` and
  implement `generate` (validating with `check_conditions`).
  """

  @property
  def min_frames(self) -> int:
    """The shortest motion `generate` makes (a token model: one code)."""
    return 1

  def conditions(
    self, prompts: Sequence[str], *, seconds: float | None = None
  ) -> dict[str, np.ndarray]:
    """{"caption": prompts, "length": the frames of `seconds` for each} (`fmt.fps`)."""
    prompts = check_prompts(prompts)
    if seconds is None or not 0 < seconds < float("inf"):  # also refuses nan
      raise MotionSampleError(
        "--seconds: expected a positive duration for a text-to-motion run (a finite number "
        f"of seconds), found {seconds}"
      )
    fps, frames = self.fmt.fps, int(round(seconds * self.fmt.fps))
    if frames > self.max_frames:
      raise MotionSampleError(
        f"--seconds: expected at most {self.max_frames / fps:g} s "
        f"({self.max_frames} frames at {fps:g} fps), found {seconds}"
      )
    if frames < self.min_frames:
      raise MotionSampleError(
        f"--seconds: expected at least {self.min_frames / fps:g} s "
        f"({self.min_frames} frames at {fps:g} fps), found {seconds}"
      )
    return dict(
      caption=np.asarray(list(prompts), dtype=str), length=np.full(len(prompts), frames, np.int32)
    )

  def check_conditions(self, conditions: Mapping[str, Any]) -> tuple[list[str], np.ndarray]:
    """(captions, int32 lengths) of `generate`'s conditions, with named errors."""
    if not {"caption", "length"} <= set(conditions):
      raise ValueError(
        f"conditions: expected keys 'caption' and 'length', found {sorted(conditions)}"
      )
    captions = conditions["caption"]
    if (
      isinstance(captions, str)
      or not len(captions)
      or any(not isinstance(c, str) or not c.strip() for c in captions)
    ):
      raise ValueError(
        f"conditions['caption']: expected a non-empty list of non-empty strings, found {captions!r}"
      )
    lengths = check_lengths(
      conditions["length"], len(captions), self.max_frames, "conditions['length']", self.min_frames
    )
    return [str(c) for c in captions], lengths

  def check_output(self, path: str) -> None:
    """The base check, and ffmpeg for an .mp4 (named before anything is sampled)."""
    super().check_output(path)
    if str(path).lower().endswith(".mp4"):
      from jaxgen.render import motion as render  # pylint: disable=g-import-not-at-top

      try:
        render.find_ffmpeg()
      except render.FfmpegNotFoundError as e:
        raise MotionSampleError(
          f"--out: an .mp4 needs ffmpeg ({e}); write a .gif instead, found {path!r}"
        ) from e

  def save_samples(
    self,
    samples: Mapping[str, np.ndarray],
    conditions: Mapping[str, Any],
    path: str,
    *,
    scale: int | None = None,
    **render_options,
  ) -> str:
    """.npy: joints (N, T, J, 3) float32, T the fewest frames made; .mp4/.gif: stick figures.

    Each video panel shows its motion's own frames. `render_options` are the
    layout options of `jaxgen.render.motion.render_frames` (ncols,
    panel_inches, dpi, azimuth, elevation); `scale`, the pixel upscaling of
    image grids, does not apply to drawn figures. A .npy file ignores both.
    """
    del scale  # `jaxgen sample` passes every task its display options
    self.check_output(path)
    motion = np.asarray(samples["motion"])
    if str(path).lower().endswith(".npy"):
      frames = int(np.min(samples["length"]))
      joints = motion_lib.features_to_joints(motion[:, :frames], self.fmt)
      np.save(path, np.asarray(joints, np.float32))
      return path
    from jaxgen.render.motion import render_motion  # pylint: disable=g-import-not-at-top

    joints = [
      np.asarray(motion_lib.features_to_joints(f[:n], self.fmt))
      for f, n in zip(motion, samples["length"])
    ]
    return render_motion(
      joints, [str(c) for c in conditions["caption"]], path, fmt=self.fmt, **render_options
    )

  def preview(self, params, rng: jax.Array, num: int = 4) -> np.ndarray:
    """Samples for the first `num` test captions at their true lengths."""
    data = self.split("test")
    conditions = dict(
      caption=np.asarray(data["caption"][:num], dtype=str), length=data["length"][:num]
    )
    samples = self.generate(params, conditions, rng, batch_size=num)
    return motion_preview(samples["motion"], samples["length"], conditions["caption"], self.fmt)
