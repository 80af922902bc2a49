"""Training a KL autoencoder (the first stage of latent diffusion) on captioned shapes.

`data.source` picks the images: "shapes" (the default, captioned shapes) or
"talking_heads", the frames of procedural talking-head clips
(`jaxgen.data.talking_heads`: `data.num_clips` clips of `data.seconds` at
`data.resolution` pixels, every frame one image), the face autoencoder of
the DiffTalk-style talking-face model; its held-out frames come from test
identities and utterances.

Objective (LDM's `LPIPSWithDiscriminator`, minus what is noted below):

  L = rec + kl_weight * KL                      per-example sums, batch mean
      + f(step) * disc.weight * g_loss          hinge generator loss, D frozen
      + f(step) * d_loss                        hinge discriminator loss, x̂ frozen

with f(step) = [step >= disc.start]. The trainer has one optimizer and one
params tree {"autoencoder", "discriminator"}, so both games are summed into
one scalar by `jaxgen.models.gan_losses.adversarial_objective`, whose
stop-gradients make the gradient w.r.t. the autoencoder exactly that of
rec + KL + weight·g_loss and the gradient w.r.t. the discriminator exactly
that of d_loss (tests check both).

Choices and omissions:
- The adversarial weight is fixed (`disc.weight`); LDM's adaptive weight
  (ratio of the two losses' gradient norms at the decoder's last layer)
  is not implemented.
- `f(step)` reads the training step the trainer puts in `batch["step"]`;
  called without it (outside the trainer) `disc.start > 0` raises a named
  error, and `disc.start = 0` trains the GAN from the first step.
- No perceptual (LPIPS) term: jaxgen has no LPIPS network, and
  `loss.perceptual_weight > 0` raises a named error instead of being faked.
- One optimizer for both players: the global-norm gradient clip and the
  learning-rate schedule act on the joint gradient.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.data import face_render, shapes, talking_heads
from jaxgen.data import judge as shapes_judge
from jaxgen.data.images import to_uint8
from jaxgen.models import discriminator as disc_lib
from jaxgen.models.autoencoder import AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian, vae_loss
from jaxgen.models.gan_losses import adversarial_objective
from jaxgen.render.grid import make_grid
from jaxgen.training.task import Task

IMAGE_CHANNELS = shapes.CHANNELS
DATA_SOURCES = ("shapes", "talking_heads")


def check_data_source(data) -> str:
  """`data.source` (default "shapes"), or a named error for an unknown one."""
  source = data.get("source", "shapes")
  if source not in DATA_SOURCES:
    raise ValueError(f"data.source: expected one of {DATA_SOURCES}, found {source!r}")
  return source


def talking_head_frames(data, split: str, num_frames: int | None = None) -> dict[str, np.ndarray]:
  """Frames of talking-head clips as images: {"image", "caption", "mouth"}, clip after clip.

  `num_frames` None: every frame of `data.num_clips` clips; else the first
  `num_frames` frames of as many clips as they need.
  """
  frames_per_clip = round(data.seconds * talking_heads.FPS)
  num_clips = data.num_clips if num_frames is None else -(-num_frames // frames_per_clip)
  clips = talking_heads.make_talking_heads(
    split, num_clips=num_clips, seconds=data.seconds, size=data.resolution, seed=data.seed
  )
  count = num_clips * frames_per_clip if num_frames is None else num_frames
  captions = np.repeat([f"identity {i}" for i in clips["identity"]], frames_per_clip)
  return dict(
    image=clips["video"].reshape((-1,) + clips["video"].shape[2:])[:count],
    caption=captions[:count],
    mouth=clips["mouth"].reshape(-1, clips["mouth"].shape[-1])[:count],
  )


class AutoencoderTask(Task):
  """The `autoencoder` task (see module docstring). Batches: {"image": uint8 (B, H, W, 3)}."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.resolution = config.data.resolution
    self.source = check_data_source(config.data)
    self.vae_config = AutoencoderKLConfig(**config.vae.to_dict())
    self.model = AutoencoderKL(self.vae_config)
    loss = config.loss
    if loss.get("perceptual_weight", 0.0):
      raise ValueError(
        f"loss.perceptual_weight: jaxgen has no LPIPS network, so the perceptual term is "
        f"not available; expected 0, found {loss.perceptual_weight}"
      )
    if loss.kl_weight < 0:
      raise ValueError(f"loss.kl_weight: expected a number >= 0, found {loss.kl_weight}")
    d = config.disc
    self.use_disc = bool(d.enabled)
    if self.use_disc:
      self.disc_config = disc_lib.PatchDiscriminatorConfig(
        in_channels=IMAGE_CHANNELS,
        channels=d.channels,
        num_layers=d.num_layers,
        norm=d.norm,
        norm_num_groups=d.norm_num_groups,
      )
      self.discriminator = disc_lib.PatchDiscriminator(self.disc_config)
      if d.start < 0 or d.weight < 0:
        raise ValueError(
          f"disc.start and disc.weight: expected numbers >= 0, found {d.start} and {d.weight}"
        )
    self._check_resolution()

  def _check_resolution(self) -> None:
    factor = self.vae_config.downsample_factor
    if self.resolution % factor:
      raise ValueError(
        f"data.resolution must be a multiple of the autoencoder's downsample "
        f"factor {factor}, got {self.resolution}"
      )
    if self.use_disc and self.resolution < self.disc_config.min_input_size():
      raise ValueError(
        f"disc.num_layers={self.disc_config.num_layers} needs data.resolution >= "
        f"{self.disc_config.min_input_size()}, got {self.resolution}"
      )

  # -- data --------------------------------------------------------------

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    if self.source == "talking_heads":
      return dict(image=talking_head_frames(self.config.data, "train")["image"])
    data = shapes.make_split(
      "train",
      self.config.data.num_train_examples,
      resolution=self.resolution,
      seed=self.config.data.seed,
    )
    return dict(image=data["image"])

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    r = self.resolution
    return dict(image=jax.ShapeDtypeStruct((batch_size, r, r, IMAGE_CHANNELS), jnp.uint8))

  def eval_split(self, num_examples: int) -> dict[str, np.ndarray]:
    """Held-out images (caption combinations, or identities and utterances, never seen)."""
    if self.source == "talking_heads":
      return talking_head_frames(self.config.data, "test", num_examples)
    return shapes.make_split(
      "test", num_examples, resolution=self.resolution, seed=self.config.data.seed + 1
    )

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    shapes.check_image_batch(batch["image"], self.resolution)

  # -- model -------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    ae_rng, disc_rng = jax.random.split(rng)
    x = jnp.zeros(batch["image"].shape, jnp.float32)
    params = dict(autoencoder=self.model.init(ae_rng, x)["params"])
    if self.use_disc:
      params["discriminator"] = self.discriminator.init(disc_rng, x)["params"]
    return params

  def _disc_active(self, batch: Mapping[str, jax.Array]) -> jax.Array | float:
    start = self.config.disc.start
    if start == 0:
      return 1.0
    if "step" not in batch:
      raise ValueError(
        f"disc.start={start} needs the training step, but the batch has no 'step' entry (keys "
        f"{sorted(batch)}); set disc.start=0 or pass the step in the batch"
      )
    return (batch["step"] >= start).astype(jnp.float32)

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    images = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    cfg = self.config.loss
    reconstructions, posterior = self.model.apply(
      {"params": params["autoencoder"]}, images, rng, sample_posterior=True
    )
    loss, metrics = vae_loss(
      images, reconstructions, posterior, kl_weight=cfg.kl_weight, kind=cfg.reconstruction
    )
    if self.use_disc:
      disc_fn = lambda p, x: self.discriminator.apply({"params": p}, x)
      adversarial, adv_metrics = adversarial_objective(
        images,
        reconstructions,
        disc_fn,
        params["discriminator"],
        kind="hinge",
        g_weight=self.config.disc.weight,
        d_weight=0.5,  # taming's 0.5 * (hinge real + hinge fake)
        active=self._disc_active(batch),
      )
      loss = loss + adversarial
      metrics.update(adv_metrics)
    metrics["loss"] = loss
    return loss, metrics

  # -- using the trained autoencoder -----------------------------------------

  @functools.partial(jax.jit, static_argnames=("self",))
  def reconstruct(self, params, images: jax.Array) -> jax.Array:
    """uint8 images -> reconstructions in [-1, 1] through the posterior mean."""
    x = images.astype(jnp.float32) / 127.5 - 1.0
    reconstructions, _ = self.model.apply({"params": params["autoencoder"]}, x)
    return jnp.clip(reconstructions, -1.0, 1.0)

  @functools.partial(jax.jit, static_argnames=("self",))
  def posterior(self, params, images: jax.Array) -> DiagonalGaussian:
    """uint8 images -> the posterior over (unscaled) latents."""
    x = images.astype(jnp.float32) / 127.5 - 1.0
    moments = self.model.apply({"params": params["autoencoder"]}, x, method=AutoencoderKL.encode)
    return DiagonalGaussian.from_moments(moments)

  def evaluate(
    self, params, num_examples: int | None = None, batch_size: int = 256
  ) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Reconstruction quality on held-out images.

    Returns ({"mse", "psnr", and the judge's accuracies on the
    reconstructions — the ceiling for a latent model on this autoencoder},
    originals uint8, reconstructions uint8). For talking heads the judge is
    the mouth reader: the correlation of the mouth opening it measures on
    reconstructions with the ground truth, beside the originals' own.
    """
    data = self.eval_split(num_examples or self.config.eval.num_examples)
    originals = data["image"]
    recs = []
    for start in range(0, len(originals), batch_size):
      chunk = originals[start : start + batch_size]
      recs.append(np.asarray(self.reconstruct(params, jnp.asarray(chunk))))
    recs = np.concatenate(recs)
    x = originals.astype(np.float32) / 127.5 - 1.0
    mse = float(np.mean(np.square(recs - x)))
    psnr = float(10 * np.log10(4.0 / max(mse, 1e-12)))  # peak-to-peak range 2
    rec_uint8 = to_uint8(recs)
    metrics = dict(mse=mse, psnr=psnr)
    if self.source == "talking_heads":
      truth = data["mouth"][:, 0]
      for name, frames in (("reconstruction", rec_uint8), ("original", originals)):
        opening = face_render.mouth_measurements(frames)["opening"]
        metrics[f"mouth_corr_{name}"] = float(np.corrcoef(opening, truth)[0, 1])
      return metrics, originals, rec_uint8
    judged = shapes_judge.judge_images(rec_uint8, data)["accuracy"]
    metrics.update({f"judge_{k}": v for k, v in judged.items()})
    return metrics, originals, rec_uint8

  def preview(self, params, rng: jax.Array, num: int = 16) -> np.ndarray:
    """Held-out images (odd tiles) beside their reconstructions (even tiles)."""
    del rng  # the posterior mean is deterministic
    data = self.eval_split(num)
    recs = to_uint8(np.asarray(self.reconstruct(params, jnp.asarray(data["image"]))))
    pairs = np.stack([data["image"], recs], axis=1).reshape(-1, *recs.shape[1:])
    captions = [c for caption in data["caption"] for c in (caption, "reconstruction")]
    return make_grid(pairs, captions, scale=3, ncols=8)
