"""TEMOS text-to-motion: a transformer VAE with a shared text/motion latent space.

Model: `jaxgen.models.motion_vae.TEMOS`. The text branch reads token states of
a small text encoder trained with the model, or of the frozen local CLIP text
tower (`text.encoder = "clip"`, its per-token states).
Training (TEMOS): both posteriors are sampled; the decoder reconstructs the
motion from the text latent and from the motion latent (smooth-L1 over real
frames, weight `loss.recons` each); KL(text||motion) + KL(motion||text) +
KL(text||N(0,I)) + KL(motion||N(0,I)) (element means, weight `loss.kl`); and
smooth-L1 between the two latents (weight `loss.latent`).
Generation: encode the caption, take the posterior mean (`sample.sample_mean`)
or a sample scaled by `sample.fact`, decode all frames at once (one forward:
there is no loop to scan).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgen.data.chunks import map_padded_chunks
from jaxgen.models.motion_vae import TEMOS, MotionVAEConfig, gaussian_kl, reparameterize
from jaxgen.tasks.motion.motion_task import MotionGenerativeTask, frame_mask, motion_sample_spec
from jaxgen.tasks.motion.text_conditioning import load_frozen_clip


def masked_smooth_l1(a: jax.Array, b: jax.Array, mask: jax.Array) -> jax.Array:
  """Smooth-L1 (beta 1) averaged over the features of the frames `mask` (B, T) keeps."""
  error = optax.huber_loss(a, b, delta=1.0)
  weights = mask.astype(error.dtype)[..., None]
  return (error * weights).sum() / jnp.maximum(weights.sum() * error.shape[-1], 1.0)


class MotionVAETask(MotionGenerativeTask):
  """The `t2m_vae` task: TEMOS (see module docstring)."""

  sample_spec = motion_sample_spec("sample_mean")

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    t = config.text
    self.clip = load_frozen_clip(t)
    if self.clip is not None:
      text_dim = self.clip.config.hidden_size  # per-token states, before the projection
    else:
      text_dim = t.width
    self.vae_config = MotionVAEConfig(
      input_dim=self.fmt.feature_dim,
      text_dim=text_dim,
      max_frames=self.max_frames,
      **config.vae.to_dict(),
    )

  @functools.cached_property
  def model(self) -> TEMOS:
    if self.clip is not None:
      return TEMOS(self.vae_config)
    t = self.config.text
    return TEMOS(
      self.vae_config,
      text=dict(
        vocab_size=self.tokenizer.vocab_size,
        max_length=t.max_length,
        width=t.width,
        num_layers=t.num_layers,
        num_heads=t.num_heads,
      ),
    )

  # -- model ---------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    """{"temos": the VAE (and its text model)} (+ {"clip": the frozen tower})."""
    motion = jnp.zeros(batch["motion"].shape, jnp.float32)
    if self.clip is None:
      return dict(
        temos=self.model.init(
          rng, batch["text_tokens"], batch["text_mask"], motion, batch["motion_mask"]
        )["params"]
      )
    states = jnp.zeros(batch["text_tokens"].shape + (self.vae_config.text_dim,), jnp.float32)
    latent = jnp.zeros(motion.shape[:1] + (self.vae_config.latent_dim,))
    temos = {}
    for method, args in (
      (TEMOS.encode_text_states, (states, batch["text_mask"])),
      (TEMOS.encode_motion, (motion, batch["motion_mask"])),
      (TEMOS.decode, (latent, batch["motion_mask"])),
    ):
      temos.update(self.model.init(rng, *args, method=method)["params"])
    return dict(temos=temos, clip=self.clip.boxed_params())

  def encode_text(self, params, tokens: jax.Array, mask: jax.Array, dropout_rng=None):
    """(mu, logvar) of the text posterior; CLIP states are frozen (no gradient)."""
    kwargs = dict(deterministic=dropout_rng is None)
    if dropout_rng is not None:
      kwargs["rngs"] = {"dropout": dropout_rng}
    variables = {"params": params["temos"]}
    if self.clip is not None:
      tower = jax.lax.stop_gradient(params["clip"]["text_model"])
      states = self.clip.model.apply({"params": tower}, tokens, mask).last_hidden_state
      return self.model.apply(variables, states, mask, method=TEMOS.encode_text_states, **kwargs)
    return self.model.apply(variables, tokens, mask, method=TEMOS.encode_text, **kwargs)

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    w = self.config.loss
    x, mask = batch["motion"], batch["motion_mask"].astype(bool)
    rngs = jax.random.split(rng, 5)
    apply = functools.partial(self.model.apply, {"params": params["temos"]}, deterministic=False)
    mu_t, logvar_t = self.encode_text(params, batch["text_tokens"], batch["text_mask"], rngs[0])
    mu_m, logvar_m = apply(x, mask, method=TEMOS.encode_motion, rngs={"dropout": rngs[1]})
    z_t = reparameterize(rngs[2], mu_t, logvar_t)
    z_m = reparameterize(rngs[3], mu_m, logvar_m)
    decode_rngs = jax.random.split(rngs[4])
    x_from_text = apply(z_t, mask, method=TEMOS.decode, rngs={"dropout": decode_rngs[0]})
    x_from_motion = apply(z_m, mask, method=TEMOS.decode, rngs={"dropout": decode_rngs[1]})
    recons_text = masked_smooth_l1(x_from_text, x, mask)
    recons_motion = masked_smooth_l1(x_from_motion, x, mask)
    zeros = jnp.zeros_like(mu_t)
    kl = (
      gaussian_kl(mu_t, logvar_t, mu_m, logvar_m).mean()
      + gaussian_kl(mu_m, logvar_m, mu_t, logvar_t).mean()
      + gaussian_kl(mu_t, logvar_t, zeros, zeros).mean()
      + gaussian_kl(mu_m, logvar_m, zeros, zeros).mean()
    )
    latent = jnp.mean(optax.huber_loss(z_t, z_m, delta=1.0))
    total = w.recons * (recons_text + recons_motion) + w.kl * kl + w.latent * latent
    return total, dict(recons_text=recons_text, recons_motion=recons_motion, kl=kl, latent=latent)

  # -- generation ------------------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self", "sample_mean"))
  def sample(
    self,
    params,
    tokens: jax.Array,
    text_mask: jax.Array,
    motion_mask: jax.Array,
    rng: jax.Array,
    *,
    sample_mean: bool,
    fact: float | jax.Array,
  ) -> jax.Array:
    """Normalised motions (B, T, D), zero beyond each mask: one forward pass."""
    mu, logvar = self.encode_text(params, tokens, text_mask)
    z = mu if sample_mean else mu + fact * (reparameterize(rng, mu, logvar) - mu)
    return self.model.apply({"params": params["temos"]}, z, motion_mask, method=TEMOS.decode)

  def generate(
    self,
    params,
    conditions: Mapping[str, Any],
    rng: jax.Array,
    *,
    sample_mean: bool | None = None,
    batch_size: int = 64,
  ) -> dict[str, np.ndarray]:
    """Samples for `conditions`: the posterior mean, or a sample scaled by `sample.fact`.

    Returns {"motion": de-normalised features (N, max_frames, D), zero beyond
    each length, "length": the requested frames (N,)}.
    """
    s = self.config.sample
    sample_mean = s.sample_mean if sample_mean is None else sample_mean
    if not isinstance(sample_mean, (bool, np.bool_)):
      raise ValueError(f"sample_mean: expected True or False, found {sample_mean!r}")
    captions, lengths = self.check_conditions(conditions)
    tokens, text_mask = self.tokenize(captions)
    masks = frame_mask(lengths, self.max_frames)
    x = map_padded_chunks(
      lambda i, *parts: self.sample(
        params,
        *parts,
        jax.random.fold_in(rng, i),
        sample_mean=bool(sample_mean),
        fact=jnp.float32(s.fact),
      ),
      [tokens, text_mask, masks],
      min(batch_size, len(tokens)),
    )
    motion = np.asarray(self.normalizer.denormalize(x), np.float32) * masks[..., None]
    return dict(motion=motion, length=lengths)
