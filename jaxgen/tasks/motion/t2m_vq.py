"""T2M-GPT stage 1 (Zhang et al., 2023): the motion VQ-VAE, task `t2m_vq`.

The 1-D conv VQ-VAE (`jaxgen.models.vq`) learns to reconstruct random
64-frame windows (clips shorter than the window are left out, as in the
reference) with smooth-L1 + 0.5 × smooth-L1 on the root-relative joint
positions (the reference's `forward_vel`, dims 4 : 4 + 3(J-1)) + 0.02 ×
commitment. The codebook follows one of two updates
(`quantizer.codebook_update`):

- "ema_reset" (the reference `QuantizeEMAReset`): EMA cluster means with
  dead-code reset, initialised from the first batch. These are not gradient
  updates: the loss returns the new statistics under `STATE_UPDATES_KEY` in
  its metrics and the trainer writes them over the parameters after the
  optimizer step.
- "codebook_loss" (a named alternative, not the reference): the codebook is a
  gradient-trained parameter with the VQ-VAE codebook loss
  ||sg(z) - e||² added; no reset.

Stage 2, the GPT over the codes, is `jaxgen.tasks.motion.t2m_gpt`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgen.models import vq
from jaxgen.tasks.motion.motion_task import MotionTask, check_lengths, frame_mask, motion_preview
from jaxgen.training.task import STATE_UPDATES_KEY

QUANTIZER_UPDATES = ("ema_reset", "codebook_loss")


def smooth_l1(a: jax.Array, b: jax.Array) -> jax.Array:
  """torch `SmoothL1Loss()` (beta 1, mean over elements)."""
  return jnp.mean(optax.huber_loss(a, b, delta=1.0))


def random_windows(rng: jax.Array, motion: jax.Array, lengths: jax.Array, window: int) -> jax.Array:
  """A random `window`-frame crop inside each clip's real frames: (B, T, D) -> (B, window, D)."""
  starts = jax.random.randint(rng, lengths.shape, 0, jnp.maximum(lengths - window, 0) + 1)
  return jax.vmap(lambda x, s: jax.lax.dynamic_slice_in_dim(x, s, window, axis=0))(motion, starts)


class MotionVQTask(MotionTask):
  """The `t2m_vq` task: the T2M-GPT motion VQ-VAE (see module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    update = config.quantizer.codebook_update
    if update not in QUANTIZER_UPDATES:
      raise ValueError(
        f"quantizer.codebook_update: expected one of {QUANTIZER_UPDATES}, found {update!r}"
      )
    self.vq_config = vq.VQVAEConfig(input_dim=self.fmt.feature_dim, **config.vq.to_dict())
    self.model = vq.MotionVQVAE(self.vq_config, learned_codebook=update == "codebook_loss")
    window = config.loss.window
    if window % self.vq_config.downsample or not 0 < window <= self.max_frames:
      raise ValueError(
        f"loss.window: expected a multiple of {self.vq_config.downsample} in "
        f"(0, {self.max_frames}], found {window}"
      )

  # -- data --------------------------------------------------------------

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    """Training clips at least `loss.window` frames long (the reference drops shorter ones)."""
    data = self._train_split
    keep = data["length"] >= self.config.loss.window
    if not keep.any():
      raise ValueError(
        f"loss.window={self.config.loss.window}: no training clip is that long "
        f"(longest {int(data['length'].max())})"
      )
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
      state = jax.lax.stop_gradient(
        vq.QuantizerState(q["codebook"], q["code_sum"], q["code_count"], q["initialized"])
      )
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
    metrics.update(
      recons=recons, velocity=velocity, commit=commit, perplexity=vq.perplexity(codes, c.num_codes)
    )
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
    lengths = check_lengths(lengths, len(features), self.max_frames)
    if lengths.min() % self.vq_config.downsample or features.shape[1] % self.vq_config.downsample:
      raise ValueError(
        f"lengths: expected multiples of {self.vq_config.downsample} frames, "
        f"found {lengths[lengths % self.vq_config.downsample > 0][:5]}"
      )
    mask = frame_mask(lengths, features.shape[1])
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
    return motion_preview(features, np.concatenate([lengths, lengths]), captions, self.fmt)
