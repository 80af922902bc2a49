"""T2M-GPT stage 2 (Zhang et al., 2023): a text-conditioned GPT over VQ codes, task `t2m_gpt`.

Loads the trained VQ-VAE (task `t2m_vq`, `jaxgen.tasks.motion.t2m_vq`) from
`vq.workdir`, tokenises every training motion once (at its own length: the
encoder masks padding, so a padded batch equals per-clip encoding), and
trains the GPT (`jaxgen.models.gpt`) with cross-entropy on codes + End,
after replacing each input code by a random one with probability
1 - `gpt_train.pkeep`. The text vector comes from a small trained caption
encoder, or a frozen local CLIP text tower (`text.encoder = "clip"`).

Generation: text vector -> `sample_codes` (one `lax.scan` with a KV cache;
End masked before the requested number of codes and forced at it, or with
`length_mode = "end_token"` chosen by the model) -> VQ decoder ->
de-normalised features, all inside one jit.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgen.data.chunks import map_padded_chunks
from jaxgen.models import vq
from jaxgen.models.caption_encoder import CaptionEncoder
from jaxgen.models.gpt import GPTConfig, MotionGPT, sample_codes
from jaxgen.tasks.motion.motion_task import MotionGenerativeTask, frame_mask, motion_sample_spec
from jaxgen.tasks.motion.t2m_vq import MotionVQTask
from jaxgen.tasks.motion.text_conditioning import (
  caption_dims,
  encode_captions,
  init_caption_params,
  load_frozen_clip,
  make_caption_encoder,
)
from jaxgen.tasks.registry import absolute_dependent_runs, load_run_of

_LOG = logging.getLogger(__name__)

LENGTH_MODES = ("given", "end_token")


def load_vq_run(workdir: str) -> tuple[MotionVQTask, Any]:
  """(the `t2m_vq` task, its EMA params) of a run directory, with a named error for others."""
  return load_run_of(MotionVQTask, workdir, flag="vq.workdir")


def check_length_mode(length_mode: str, name: str = "length_mode") -> None:
  """A named error unless `length_mode` is one of `LENGTH_MODES`."""
  if length_mode not in LENGTH_MODES:
    raise ValueError(f"{name}: expected one of {LENGTH_MODES}, found {length_mode!r}")


def pad_code_targets(codes: np.ndarray, num_codes: np.ndarray, gpt_config: GPTConfig) -> np.ndarray:
  """(N, block_size) targets: each clip's first `num_codes` codes, End, then Pad."""
  g, n = gpt_config, len(codes)
  targets = np.full((n, g.block_size), g.pad_id, np.int32)
  steps = np.arange(codes.shape[1])[None]
  targets[:, : codes.shape[1]] = np.where(steps < num_codes[:, None], codes, g.pad_id)
  targets[np.arange(n), num_codes] = g.end_id
  return targets


def check_code_batch(
  batch: Mapping[str, np.ndarray], expected: Mapping[str, jax.ShapeDtypeStruct], pad_id: int
) -> None:
  """Named errors for a batch without the `expected` keys and shapes, or with bad code ids."""
  for key, spec in expected.items():
    if key not in batch:
      raise ValueError(f"batch: expected key {key!r}, found keys {sorted(batch)}")
    if np.shape(batch[key]) != spec.shape:
      raise ValueError(f"batch[{key!r}]: expected shape {spec.shape}, found {np.shape(batch[key])}")
  codes = np.asarray(batch["codes"])
  if codes.min() < 0 or codes.max() > pad_id:
    raise ValueError(
      f"batch['codes']: expected ids in [0, {pad_id}], found [{codes.min()}, {codes.max()}]"
    )


def corrupt_codes(
  keep_rng: jax.Array, random_rng: jax.Array, codes: jax.Array, pkeep: float, num_codes: int
) -> jax.Array:
  """T2M-GPT's input noise: each code replaced by a random one with probability 1 - pkeep."""
  keep = jax.random.bernoulli(keep_rng, pkeep, codes.shape)
  return jnp.where(keep, codes, jax.random.randint(random_rng, codes.shape, 0, num_codes))


def code_cross_entropy(
  logits: jax.Array, targets: jax.Array, pad_id: int
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(cross-entropy averaged per clip, then over clips; {"accuracy"}), Pad positions ignored."""
  # Codes and End count; Pad positions do not (the reference slices [:len + 1]).
  valid = targets != pad_id
  labels = jnp.where(valid, targets, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  per_clip = (ce * valid).sum(-1) / jnp.maximum(valid.sum(-1), 1)
  correct = (jnp.argmax(logits, -1) == labels) & valid
  return per_clip.mean(), dict(accuracy=correct.sum() / jnp.maximum(valid.sum(), 1))


def code_count_bounds(
  lengths: np.ndarray, length_mode: str, downsample: int, block_size: int
) -> tuple[np.ndarray, np.ndarray]:
  """(min_codes, max_codes) per motion: the given lengths in whole codes, or 1 .. block - 1."""
  if length_mode == "given":
    whole_codes = lengths // downsample
    return whole_codes, whole_codes
  return np.ones_like(lengths), np.full_like(lengths, block_size - 1)


class MotionGPTTask(MotionGenerativeTask):
  """The `t2m_gpt` task: the T2M-GPT prior over a trained VQ-VAE's codes.

  A relative `vq.workdir` is made absolute in `config` when the task is built.
  """

  sample_spec = motion_sample_spec("length_mode")
  dependent_runs = ("vq.workdir",)

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    absolute_dependent_runs(config, type(self))
    check_length_mode(config.sample.length_mode, "sample.length_mode")
    self.clip = load_frozen_clip(config.text)
    self.vq_task, self.vq_params = load_vq_run(config.vq.workdir)
    if self.vq_task.config.data.to_dict() != config.data.to_dict():
      raise ValueError(
        f"data: the VQ-VAE in {config.vq.workdir!r} was trained on "
        f"{self.vq_task.config.data.to_dict()}, this config has "
        f"{config.data.to_dict()}"
      )
    cond_dim, _ = caption_dims(config.text, self.clip)
    self.gpt_config = GPTConfig(
      num_codes=self.vq_task.vq_config.num_codes,
      cond_dim=cond_dim,
      block_size=self.max_frames // self.downsample + 2,
      **config.gpt.to_dict(),
    )
    self.model = MotionGPT(self.gpt_config)

  @property
  def normalizer(self):
    return self.vq_task.normalizer

  @property
  def _train_split(self):
    return self.vq_task._train_split  # the same data (checked above): build it once

  @property
  def downsample(self) -> int:
    return self.vq_task.vq_config.downsample

  @property
  def min_frames(self) -> int:
    return self.downsample  # one code

  @functools.cached_property
  def text_encoder(self) -> CaptionEncoder:
    return make_caption_encoder(self.config.text, self.tokenizer.vocab_size)

  # -- data --------------------------------------------------------------

  def code_targets(self, motion: np.ndarray, mask: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, block_size) targets: each clip's codes, End, then Pad."""
    codes = map_padded_chunks(
      lambda _, *parts: self.vq_task.encode_codes(self.vq_params, *parts),
      [motion, mask],
      min(batch_size, len(mask)),
    )
    return pad_code_targets(codes, mask.sum(-1) // self.downsample, self.gpt_config)

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    arrays = dict(self.motion_arrays(self._train_split))
    _LOG.info("tokenising %d training motions with the VQ-VAE", len(arrays["motion"]))
    codes = self.code_targets(arrays.pop("motion"), arrays.pop("motion_mask"))
    return dict(arrays, codes=codes)

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    L = self.config.text.max_length
    return dict(
      codes=jax.ShapeDtypeStruct((batch_size, self.gpt_config.block_size), jnp.int32),
      text_tokens=jax.ShapeDtypeStruct((batch_size, L), jnp.int32),
      text_mask=jax.ShapeDtypeStruct((batch_size, L), jnp.bool_),
    )

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    expected = self.abstract_batch(len(batch.get("codes", ())))
    check_code_batch(batch, expected, self.gpt_config.pad_id)

  # -- model ---------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    text_rng, gpt_rng = jax.random.split(rng)
    B = batch["codes"].shape[0]
    params = init_caption_params(
      self.clip, self.text_encoder, text_rng, batch["text_tokens"], batch["text_mask"]
    )
    cond = jnp.zeros((B, self.gpt_config.cond_dim), jnp.float32)
    params["gpt"] = self.model.init(gpt_rng, batch["codes"][:, :-1], cond)["params"]
    return params

  def encode_text(self, params, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """(B, cond_dim) text vectors; the CLIP tower is frozen (no gradient)."""
    return encode_captions(self.clip, self.text_encoder, params, tokens, mask)[0]

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    g = self.gpt_config
    keep_rng, random_rng, dropout_rng = jax.random.split(rng, 3)
    targets = batch["codes"]
    inputs = corrupt_codes(
      keep_rng, random_rng, targets[:, :-1], self.config.gpt_train.pkeep, g.num_codes
    )
    cond = self.encode_text(params, batch["text_tokens"], batch["text_mask"])
    logits = self.model.apply(
      {"params": params["gpt"]}, inputs, cond, deterministic=False, rngs={"dropout": dropout_rng}
    )
    return code_cross_entropy(logits, targets, g.pad_id)

  # -- generation ------------------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self", "temperature", "top_k"))
  def sample(
    self,
    params,
    vq_params,
    tokens: jax.Array,
    text_mask: jax.Array,
    min_codes: jax.Array,
    max_codes: jax.Array,
    rng: jax.Array,
    *,
    temperature: float,
    top_k: int | None,
  ) -> tuple[jax.Array, jax.Array]:
    """(normalised motions (B, max_frames, D), frame lengths (B,)): one compiled program."""
    cond = self.encode_text(params, tokens, text_mask)
    codes, num_codes = sample_codes(
      self.model,
      {"params": params["gpt"]},
      cond,
      rng,
      min_codes=min_codes,
      max_codes=max_codes,
      temperature=temperature,
      top_k=top_k,
    )
    steps = self.max_frames // self.downsample
    codes = jnp.where(jnp.arange(steps)[None] < num_codes[:, None], codes[:, :steps], 0)
    frames = num_codes * self.downsample
    mask = frame_mask(frames, self.max_frames)
    z = vq.dequantize(codes, vq_params["quantizer"]["codebook"])
    motion = self.vq_task.model.apply({"params": vq_params}, z, mask, method=vq.MotionVQVAE.decode)
    return motion, frames

  def generate(
    self,
    params,
    conditions: Mapping[str, Any],
    rng: jax.Array,
    *,
    length_mode: str | None = None,
    batch_size: int = 64,
  ) -> dict[str, np.ndarray]:
    """Samples for `conditions`, and the frames each motion got.

    Returns {"motion": de-normalised features (N, max_frames, D), zero beyond
    each motion's "length" (N,) int32, the frames made}. With `length_mode`
    "given" (default `sample.length_mode`) each motion has the requested
    length rounded down to whole codes; with "end_token" the GPT ends it.
    """
    s = self.config.sample
    length_mode = s.length_mode if length_mode is None else length_mode
    check_length_mode(length_mode)
    captions, lengths = self.check_conditions(conditions)
    tokens, text_mask = self.tokenize(captions)
    min_codes, max_codes = code_count_bounds(
      lengths, length_mode, self.downsample, self.gpt_config.block_size
    )
    x, frames = map_padded_chunks(
      lambda i, *parts: self.sample(
        params,
        self.vq_params,
        *parts,
        jax.random.fold_in(rng, i),
        temperature=float(s.temperature),
        top_k=s.get("top_k"),
      ),
      [tokens, text_mask, min_codes, max_codes],
      min(batch_size, len(tokens)),
    )
    frames = frames.astype(np.int32)
    mask = frame_mask(frames, self.max_frames)
    return dict(
      motion=np.asarray(self.normalizer.denormalize(x), np.float32) * mask[..., None], length=frames
    )
