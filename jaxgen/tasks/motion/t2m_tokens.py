"""T2M-GPT (Zhang et al., 2023): a motion VQ-VAE, then a text-conditioned GPT over its codes.

Stage 1, task `t2m_vq`: the 1-D conv VQ-VAE (`jaxgen.models.vq`) learns to
reconstruct random 64-frame windows (clips shorter than the window are left
out, as in the reference) with smooth-L1 + 0.5 × smooth-L1 on the
root-relative joint positions (the reference's `forward_vel`, dims
4 : 4 + 3(J-1)) + 0.02 × commitment. The codebook follows one of two updates
(`quantizer.codebook_update`):

- "ema_reset" (the reference `QuantizeEMAReset`): EMA cluster means with
  dead-code reset, initialised from the first batch. These are not gradient
  updates: the loss returns the new statistics under `STATE_UPDATES_KEY` in
  its metrics and the trainer writes them over the parameters after the
  optimizer step.
- "codebook_loss" (a named alternative, not the reference): the codebook is a
  gradient-trained parameter with the VQ-VAE codebook loss
  ||sg(z) - e||² added; no reset.

Stage 2, task `t2m_gpt`: loads the trained VQ-VAE from `vq.workdir`,
tokenises every training motion once (at its own length: the encoder masks
padding, so a padded batch equals per-clip encoding), and trains the GPT
(`jaxgen.models.gpt`) with cross-entropy on codes + End, after replacing each
input code by a random one with probability 1 - `gpt_train.pkeep`. The text
vector comes from a small trained text encoder, or a frozen local CLIP text
tower (`text.encoder = "clip"`).

Generation: text vector -> `sample_codes` (one `lax.scan` with a KV cache;
End masked before the requested number of codes and forced at it, or with
`sample.length_mode = "end_token"` chosen by the model) -> VQ decoder ->
de-normalised features, all inside one jit.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgen.models import vq
from jaxgen.models.gpt import GPTConfig, MotionGPT, sample_codes
from jaxgen.tasks.motion import t2m_mdm as t2m
from jaxgen.data.chunks import map_padded_chunks
from jaxgen.training.task import STATE_UPDATES_KEY

_LOG = logging.getLogger(__name__)

QUANTIZER_UPDATES = ("ema_reset", "codebook_loss")
LENGTH_MODES = ("given", "end_token")


def smooth_l1(a: jax.Array, b: jax.Array) -> jax.Array:
  """torch `SmoothL1Loss()` (beta 1, mean over elements)."""
  return jnp.mean(optax.huber_loss(a, b, delta=1.0))


def random_windows(rng: jax.Array, motion: jax.Array, lengths: jax.Array, window: int) -> jax.Array:
  """A random `window`-frame crop inside each clip's real frames: (B, T, D) -> (B, window, D)."""
  starts = jax.random.randint(rng, lengths.shape, 0, jnp.maximum(lengths - window, 0) + 1)
  return jax.vmap(lambda x, s: jax.lax.dynamic_slice_in_dim(x, s, window, axis=0))(motion, starts)


def _vq_config(config: ml_collections.ConfigDict, feature_dim: int) -> vq.VQVAEConfig:
  return vq.VQVAEConfig(input_dim=feature_dim, **config.vq.to_dict())


class MotionVQTask(t2m.MotionDataMixin):
  """The `t2m_vq` task: the T2M-GPT motion VQ-VAE (see module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    update = config.quantizer.codebook_update
    if update not in QUANTIZER_UPDATES:
      raise ValueError(f"quantizer.codebook_update: expected one of {QUANTIZER_UPDATES}, found {update!r}")
    self.vq_config = _vq_config(config, self.fmt.feature_dim)
    self.model = vq.MotionVQVAE(self.vq_config, learned_codebook=update == "codebook_loss")
    window = config.loss.window
    if window % self.vq_config.downsample or not 0 < window <= self.max_frames:
      raise ValueError(f"loss.window: expected a multiple of {self.vq_config.downsample} in "
                       f"(0, {self.max_frames}], found {window}")

  # -- data --------------------------------------------------------------

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    """Training clips at least `loss.window` frames long (the reference drops shorter ones)."""
    data = self._train_split
    keep = data["length"] >= self.config.loss.window
    if not keep.any():
      raise ValueError(f"loss.window={self.config.loss.window}: no training clip is that long "
                       f"(longest {int(data['length'].max())})")
    arrays = self.motion_arrays(data)
    return {k: v[keep] for k, v in arrays.items()}

  # -- model ---------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    window = self.config.loss.window
    x = jnp.zeros((batch["motion"].shape[0], window, self.fmt.feature_dim), jnp.float32)
    return self.model.init(rng, x)["params"]

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    c, w = self.vq_config, self.config.loss
    crop_rng, init_rng, reset_rng = jax.random.split(rng, 3)
    lengths = batch["motion_mask"].sum(-1).astype(jnp.int32)
    x = random_windows(crop_rng, batch["motion"], lengths, w.window)
    apply = functools.partial(self.model.apply, {"params": params})
    z = apply(x, method=vq.MotionVQVAE.encode)
    flat = z.reshape(-1, z.shape[-1])
    metrics = {}
    if self.config.quantizer.codebook_update == "ema_reset":
      q = params["quantizer"]
      state = jax.lax.stop_gradient(vq.QuantizerState(q["codebook"], q["code_sum"], q["code_count"],
                                                      q["initialized"]))
      state = vq.initialized_codebook(state, jax.lax.stop_gradient(flat), init_rng)
      codes = vq.quantize(jax.lax.stop_gradient(flat), state.codebook)
      quantized = vq.dequantize(codes, state.codebook)
      new_state = vq.ema_reset_update(state, jax.lax.stop_gradient(flat), codes, reset_rng, c.mu)
      metrics[STATE_UPDATES_KEY] = dict(quantizer=new_state._asdict())
      extra = 0.0
    else:
      codebook = params["quantizer"]["codebook"]
      codes = vq.quantize(jax.lax.stop_gradient(flat), codebook)
      quantized = vq.dequantize(codes, codebook)
      extra = jnp.mean(jnp.square(jax.lax.stop_gradient(flat) - quantized))
      metrics["codebook"] = extra
    commit = jnp.mean(jnp.square(flat - jax.lax.stop_gradient(quantized)))
    straight_through = flat + jax.lax.stop_gradient(quantized - flat)
    x_hat = apply(straight_through.reshape(z.shape), method=vq.MotionVQVAE.decode)
    positions = slice(4, 4 + 3 * (self.fmt.num_joints - 1))
    recons = smooth_l1(x_hat, x)
    velocity = smooth_l1(x_hat[..., positions], x[..., positions])
    total = recons + w.velocity * velocity + w.commit * commit + extra
    metrics.update(recons=recons, velocity=velocity, commit=commit,
                   perplexity=vq.perplexity(codes, c.num_codes))
    return total, metrics

  # -- use -------------------------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self",))
  def encode_codes(self, params, motion: jax.Array, mask: jax.Array) -> jax.Array:
    """Codes (B, T / 4) of normalised motions, each encoded at its own length."""
    z = self.model.apply({"params": params}, motion, mask, method=vq.MotionVQVAE.encode)
    return vq.quantize(z, params["quantizer"]["codebook"])

  @functools.partial(jax.jit, static_argnames=("self",))
  def decode_codes(self, params, codes: jax.Array, mask: jax.Array) -> jax.Array:
    """Normalised motions (B, 4·n, D) of codes (B, n), zero beyond the frame mask."""
    z = vq.dequantize(codes, params["quantizer"]["codebook"])
    return self.model.apply({"params": params}, z, mask, method=vq.MotionVQVAE.decode)

  def reconstruct(self, params, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """De-normalised reconstructions of de-normalised features (N, T, D) through the codes."""
    lengths = t2m.check_lengths(lengths, len(features), self.max_frames)
    if lengths.min() % self.vq_config.downsample or features.shape[1] % self.vq_config.downsample:
      raise ValueError(f"lengths: expected multiples of {self.vq_config.downsample} frames, "
                       f"found {lengths[lengths % self.vq_config.downsample > 0][:5]}")
    mask = t2m.frame_mask(lengths, features.shape[1])
    x = np.asarray(self.normalizer.normalize(features), np.float32) * mask[..., None]
    codes = self.encode_codes(params, jnp.asarray(x), jnp.asarray(mask))
    out = np.asarray(self.decode_codes(params, codes, jnp.asarray(mask)))
    return np.asarray(self.normalizer.denormalize(out), np.float32) * mask[..., None]

  def preview(self, params, rng: jax.Array, num: int = 4) -> np.ndarray:
    del rng
    data = self.split("test")
    lengths = data["length"][:num]
    recon = self.reconstruct(params, data["motion"][:num], lengths)
    features = np.concatenate([data["motion"][:num], recon])
    captions = [f"real: {c}" for c in data["caption"][:num]] + ["VQ reconstruction"] * num
    return t2m.motion_preview(features, np.concatenate([lengths, lengths]), captions, self.fmt)


class MotionGPTTask(t2m.MotionDataMixin):
  """The `t2m_gpt` task: the T2M-GPT prior over a trained VQ-VAE's codes."""

  def __init__(self, config: ml_collections.ConfigDict):
    from jaxgen.tasks.registry import load_run  # pylint: disable=g-import-not-at-top
    self.config = config
    t = config.text
    if t.encoder not in t2m.TEXT_ENCODERS:
      raise ValueError(f"text.encoder: expected one of {t2m.TEXT_ENCODERS}, found {t.encoder!r}")
    if config.sample.length_mode not in LENGTH_MODES:
      raise ValueError(f"sample.length_mode: expected one of {LENGTH_MODES}, "
                       f"found {config.sample.length_mode!r}")
    self.vq_task, self.vq_params = load_run(config.vq.workdir)
    if not isinstance(self.vq_task, MotionVQTask):
      raise ValueError(f"vq.workdir: expected a t2m_vq run, found task "
                       f"{type(self.vq_task).__name__} in {config.vq.workdir!r}")
    if self.vq_task.config.data.to_dict() != config.data.to_dict():
      raise ValueError(f"data: the VQ-VAE in {config.vq.workdir!r} was trained on "
                       f"{self.vq_task.config.data.to_dict()}, this config has {config.data.to_dict()}")
    self.clip = None
    if t.encoder == "clip":
      self.clip = t2m.FrozenCLIPText.load(t.clip_path, t.max_length)
      cond_dim = self.clip.embedding_dim
    else:
      cond_dim = t.width
    downsample = self.vq_task.vq_config.downsample
    self.gpt_config = GPTConfig(num_codes=self.vq_task.vq_config.num_codes, cond_dim=cond_dim,
                                block_size=self.max_frames // downsample + 2, **config.gpt.to_dict())
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

  @functools.cached_property
  def text_encoder(self) -> t2m.TrainedTextEncoder:
    t = self.config.text
    return t2m.TrainedTextEncoder(dict(vocab_size=self.tokenizer.vocab_size, max_length=t.max_length,
                                       width=t.width, num_layers=t.num_layers,
                                       num_heads=t.num_heads))

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if self.clip is not None:
      return self.clip.tokenize(captions)
    return super().tokenize(captions)

  # -- data --------------------------------------------------------------

  def code_targets(self, motion: np.ndarray, mask: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, block_size) targets: each clip's codes, End, then Pad."""
    g = self.gpt_config
    n, frames = mask.shape
    lengths = mask.sum(-1) // self.downsample
    codes = []
    for start in range(0, n, batch_size):
      part = [a[start:start + batch_size] for a in (motion, mask)]
      pad = batch_size - len(part[0])
      if pad:
        part = [np.concatenate([a, np.repeat(a[-1:], pad, 0)]) for a in part]
      codes.append(np.asarray(self.vq_task.encode_codes(self.vq_params, *map(jnp.asarray, part)))
                   [:batch_size - pad])
    codes = np.concatenate(codes)
    targets = np.full((n, g.block_size), g.pad_id, np.int32)
    steps = np.arange(frames // self.downsample)[None]
    targets[:, :codes.shape[1]] = np.where(steps < lengths[:, None], codes, g.pad_id)
    targets[np.arange(n), lengths] = g.end_id
    return targets

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    arrays = dict(self.motion_arrays(self._train_split))
    if self.clip is not None:
      arrays["text_tokens"], arrays["text_mask"] = self.tokenize(self._train_split["caption"])
    _LOG.info("tokenising %d training motions with the VQ-VAE", len(arrays["motion"]))
    codes = self.code_targets(arrays.pop("motion"), arrays.pop("motion_mask"))
    return dict(arrays, codes=codes)

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    L = self.config.text.max_length
    return dict(codes=jax.ShapeDtypeStruct((batch_size, self.gpt_config.block_size), jnp.int32),
                text_tokens=jax.ShapeDtypeStruct((batch_size, L), jnp.int32),
                text_mask=jax.ShapeDtypeStruct((batch_size, L), jnp.bool_))

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    expected = self.abstract_batch(len(batch.get("codes", ())))
    for key, spec in expected.items():
      if key not in batch:
        raise ValueError(f"batch: expected key {key!r}, found keys {sorted(batch)}")
      if np.shape(batch[key]) != spec.shape:
        raise ValueError(f"batch[{key!r}]: expected shape {spec.shape}, found {np.shape(batch[key])}")
    codes = np.asarray(batch["codes"])
    if codes.min() < 0 or codes.max() > self.gpt_config.pad_id:
      raise ValueError(f"batch['codes']: expected ids in [0, {self.gpt_config.pad_id}], "
                       f"found [{codes.min()}, {codes.max()}]")

  # -- model ---------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    text_rng, gpt_rng = jax.random.split(rng)
    B = batch["codes"].shape[0]
    if self.clip is None:
      params = dict(text_encoder=self.text_encoder.init(
          text_rng, batch["text_tokens"], batch["text_mask"])["params"])
    else:  # frozen: kept in the tree so checkpoints are self-contained
      params = dict(clip=self.clip.boxed_params())
    cond = jnp.zeros((B, self.gpt_config.cond_dim), jnp.float32)
    params["gpt"] = self.model.init(gpt_rng, batch["codes"][:, :-1], cond)["params"]
    return params

  def encode_text(self, params, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """(B, cond_dim) text vectors; the CLIP tower is frozen (no gradient)."""
    if self.clip is not None:
      return self.clip.embed(jax.lax.stop_gradient(params["clip"]), tokens, mask)
    pooled, _ = self.text_encoder.apply({"params": params["text_encoder"]}, tokens, mask)
    return pooled

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    g = self.gpt_config
    keep_rng, random_rng, dropout_rng = jax.random.split(rng, 3)
    targets = batch["codes"]
    inputs = targets[:, :-1]
    keep = jax.random.bernoulli(keep_rng, self.config.gpt_train.pkeep, inputs.shape)
    inputs = jnp.where(keep, inputs, jax.random.randint(random_rng, inputs.shape, 0, g.num_codes))
    cond = self.encode_text(params, batch["text_tokens"], batch["text_mask"])
    logits = self.model.apply({"params": params["gpt"]}, inputs, cond, deterministic=False,
                              rngs={"dropout": dropout_rng})
    # Codes and End count; Pad positions do not (the reference slices [:len + 1]).
    valid = targets != g.pad_id
    labels = jnp.where(valid, targets, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    per_clip = (ce * valid).sum(-1) / jnp.maximum(valid.sum(-1), 1)
    correct = (jnp.argmax(logits, -1) == labels) & valid
    return per_clip.mean(), dict(accuracy=correct.sum() / jnp.maximum(valid.sum(), 1))

  # -- generation ------------------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self", "temperature", "top_k"))
  def sample(self, params, vq_params, tokens: jax.Array, text_mask: jax.Array, min_codes: jax.Array,
             max_codes: jax.Array, rng: jax.Array, *, temperature: float,
             top_k: int | None) -> tuple[jax.Array, jax.Array]:
    """(normalised motions (B, max_frames, D), frame lengths (B,)): one compiled program."""
    cond = self.encode_text(params, tokens, text_mask)
    codes, num_codes = sample_codes(self.model, {"params": params["gpt"]}, cond, rng,
                                    min_codes=min_codes, max_codes=max_codes,
                                    temperature=temperature, top_k=top_k)
    steps = self.max_frames // self.downsample
    codes = jnp.where(jnp.arange(steps)[None] < num_codes[:, None], codes[:, :steps], 0)
    frames = num_codes * self.downsample
    mask = t2m.frame_mask(frames, self.max_frames)
    z = vq.dequantize(codes, vq_params["quantizer"]["codebook"])
    motion = self.vq_task.model.apply({"params": vq_params}, z, mask, method=vq.MotionVQVAE.decode)
    return motion, frames

  def generate(self, params, captions: Sequence[str], lengths: np.ndarray, rng: jax.Array, *,
               batch_size: int = 64, return_lengths: bool = False,
               length_mode: str | None = None):
    """De-normalised features (N, max_frames, D), zero beyond each motion's length.

    With `sample.length_mode` "given", each motion has the requested length rounded
    down to whole codes (4 frames); with "end_token" the GPT ends it, and
    `return_lengths=True` also returns the frame counts it chose.
    """
    s = self.config.sample
    length_mode = length_mode or s.length_mode
    if length_mode not in LENGTH_MODES:
      raise ValueError(f"length_mode: expected one of {LENGTH_MODES}, found {length_mode!r}")
    tokens, text_mask = self.tokenize(captions)
    lengths = t2m.check_lengths(lengths, len(tokens), self.max_frames)
    if lengths.min() < self.downsample:
      raise ValueError(f"lengths: expected at least {self.downsample} frames (one code), "
                       f"found {lengths.min()}")
    if length_mode == "given":
      min_codes = max_codes = lengths // self.downsample
    else:
      min_codes = np.ones_like(lengths)
      max_codes = np.full_like(lengths, self.gpt_config.block_size - 1)
    x, frames = map_padded_chunks(
        lambda i, *parts: self.sample(params, self.vq_params, *parts, jax.random.fold_in(rng, i),
                                      temperature=float(s.temperature), top_k=s.get("top_k")),
        [tokens, text_mask, min_codes, max_codes], min(batch_size, len(tokens)))
    frames = frames.astype(np.int32)
    mask = t2m.frame_mask(frames, self.max_frames)
    features = np.asarray(self.normalizer.denormalize(x), np.float32) * mask[..., None]
    return (features, frames) if return_lengths else features

  def preview(self, params, rng: jax.Array, num: int = 4) -> np.ndarray:
    data = self.split("test")
    captions, lengths = data["caption"][:num], data["length"][:num]
    features, frames = self.generate(params, captions, lengths, rng, batch_size=num,
                                     return_lengths=True)
    return t2m.motion_preview(features, frames, captions, self.fmt)
