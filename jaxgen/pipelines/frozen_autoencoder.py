"""A trained KL autoencoder as a fixed map between images and diffusion latents.

The first stage of latent diffusion, bundled as config + params: the
`latent_diffusion` task encodes its training images with it and decodes its
samples; `latent_std` measures the scaling factor that gives the diffusion
model latents of unit variance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.models.autoencoder import (
  AutoencoderKL,
  AutoencoderKLConfig,
  DiagonalGaussian,
  scale_latents,
  unscale_latents,
)

Params = Mapping[str, Any]


@dataclasses.dataclass(frozen=True, eq=False)
class FrozenAutoencoder:
  """A trained autoencoder used as a fixed map between images and diffusion latents.

  `config.scaling_factor` is the factor the latent model uses (1/std of the
  training latents unless set); params are the autoencoder's alone.
  """

  config: AutoencoderKLConfig
  params: Params

  @property
  def model(self) -> AutoencoderKL:
    return AutoencoderKL(self.config)

  def with_scaling_factor(self, factor: float) -> FrozenAutoencoder:
    """The same autoencoder with latents scaled by `factor` (and not shifted)."""
    config = dataclasses.replace(self.config, scaling_factor=float(factor), shift_factor=None)
    return FrozenAutoencoder(config, self.params)

  def encode(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """Images in [-1, 1] -> scaled latents: a posterior sample (rng) or its mean; no gradient."""
    params = jax.lax.stop_gradient(self.params)
    moments = self.model.apply({"params": params}, images, method=AutoencoderKL.encode)
    posterior = DiagonalGaussian.from_moments(moments)
    latents = posterior.mode() if rng is None else posterior.sample(rng)
    return jax.lax.stop_gradient(scale_latents(latents, self.config))

  def decode(self, latents: jax.Array) -> jax.Array:
    """Scaled latents -> images in [-1, 1] (clipped)."""
    images = self.model.apply(
      {"params": self.params}, unscale_latents(latents, self.config), method=AutoencoderKL.decode
    )
    return jnp.clip(images.astype(jnp.float32), -1.0, 1.0)


def latent_std(autoencoder: FrozenAutoencoder, images: np.ndarray, batch_size: int = 256) -> float:
  """Standard deviation of posterior samples of uint8 `images`, at scaling factor 1.

  Stable Diffusion's 0.18215 is 1/this on its training data, so that the
  diffusion model sees latents of unit variance.
  """
  encode = jax.jit(autoencoder.with_scaling_factor(1.0).encode)
  samples = []
  for i, start in enumerate(range(0, len(images), batch_size)):
    chunk = jnp.asarray(images[start : start + batch_size], jnp.float32) / 127.5 - 1.0
    samples.append(np.asarray(encode(chunk, jax.random.PRNGKey(i))))
  return float(np.std(np.concatenate(samples)))
