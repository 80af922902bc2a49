"""Wav2Lip (Prajwal et al., 2020): the lip-sync generator, task `wav2lip`.

Trains `jaxgen.models.wav2lip.Wav2LipGenerator` and the visual-quality
discriminator `QualityDiscriminator` at `model.width` against the frozen
lip-sync expert of a `wav2lip_expert` run (`expert.workdir`, its BatchNorm in
evaluation mode), on 5-frame windows of the procedural talking heads
(`talking_data.generator_example`: the target window with its lower halves
masked, a reference window of the same clip, each frame's mel window).

The loss is hq_wav2lip_train.py's:

  G = (1 - s - d) * L1(generated, target) + s * sync + d * perceptual,  d = 0.07
  D = BCE(D(target), 1) + BCE(D(generated), 0)

where sync is the expert's BCE of P(in sync) of the generated lower halves
and the window's audio against 1, and perceptual the discriminator's BCE of
the generated frames against "real". s is 0 until the expert's sync loss on
the generated frames falls below 0.75, then 0.03 for good. The reference
measures that loss on its evaluation set every few thousand steps; here it is
a running mean over training steps (`sync_switch`, decay `loss.sync_decay`,
after `loss.sync_warmup` steps), kept in the params tree under "sync_state",
updated inside the compiled step and written back through
`STATE_UPDATES_KEY` with the generator's BatchNorm statistics; it is logged
as `sync_weight` and `sync_average`. The trainer has one optimizer, so the
two players' games are summed with the stop-gradients of
`jaxgen.models.gan_losses`: the generator sees the discriminator's
parameters behind `stop_gradient`, the discriminator the generated frames.

Generation (`generate`, `talking_samples`): each frame of an utterance is the
generator applied to [masked target, reference] and its mel window, in
evaluation mode, batched over frames (one jitted call per chunk of
`sample.chunk_frames` frames). With a video the targets and references are
its frames (the reference's inference.py); with one reference image that
image, masked, is every frame's target and, unmasked, its reference.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.models import wav2lip
from jaxgen.tasks.registry import absolute_dependent_runs, load_run_of
from jaxgen.tasks.talking_face import talking_data, talking_samples
from jaxgen.tasks.talking_face.talking_data import FACE_SIZE, MEL_STEPS, NUM_MELS, SYNC_FRAMES
from jaxgen.tasks.talking_face.wav2lip_expert import (
  Wav2LipExpertTask,
  check_frames_batch,
  check_mel_batch,
  to_unit,
)
from jaxgen.training.task import STATE_UPDATES_KEY, GenerativeTask, SampleSpec

PREVIEW_INSTANTS = 4


class Wav2LipConfigError(ValueError):
  """A `loss` or `sample` setting the wav2lip task cannot use."""


def load_expert_run(workdir: str) -> tuple[Wav2LipExpertTask, Any]:
  """(the `wav2lip_expert` task, its params) of a run directory, with a named error for others."""
  return load_run_of(Wav2LipExpertTask, workdir, flag="expert.workdir")


def initial_sync_state() -> dict[str, jax.Array]:
  """The switch before training: no steps seen, sync weight off."""
  zero = jnp.zeros((), jnp.float32)
  return {"average": zero, "count": zero, "on": zero}


def sync_switch(
  state: Mapping[str, jax.Array], sync_loss: jax.Array, *, decay: float, warmup: int, threshold
) -> dict[str, jax.Array]:
  """The sync-weight switch after one more step whose expert sync loss is `sync_loss`.

  `average` is a running mean of the sync loss (the first step's loss, then
  decay * average + (1 - decay) * loss); `on` latches to 1 once the average
  is below `threshold` after at least `warmup` steps and never goes back, as
  the reference sets `syncnet_wt` once. All float32 scalars, jittable.
  """
  sync_loss = jax.lax.stop_gradient(jnp.asarray(sync_loss, jnp.float32))
  first = state["count"] == 0
  average = jnp.where(first, sync_loss, decay * state["average"] + (1 - decay) * sync_loss)
  count = state["count"] + 1
  below = (average < threshold) & (count >= warmup)
  on = jnp.maximum(state["on"], below.astype(jnp.float32))
  return {"average": average, "count": count, "on": on}


class Wav2LipTask(GenerativeTask):
  """The `wav2lip` task (see the module docstring).

  Params: {"generator": {"params", "batch_stats"}, "discriminator", "sync_state"}.
  Batches: `target`, `reference` (B, 5, 96, 96, 3) uint8, `mel` (B, 5, 16, 80),
  `sync_mel` (B, 16, 80). A relative `expert.workdir` is made absolute when built.
  """

  sample_spec = SampleSpec("talking.mp4", (".mp4", ".npy"), takes_speech=True)
  dependent_runs = ("expert.workdir",)

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    absolute_dependent_runs(config, type(self))
    talking_data.check_data_config(config.data)
    self.width = wav2lip.check_width(config.model.width)
    loss = config.loss
    if not (
      0 <= loss.disc_weight and 0 <= loss.sync_weight and loss.disc_weight + loss.sync_weight < 1
    ):
      raise Wav2LipConfigError(
        f"loss.disc_weight, loss.sync_weight: expected weights >= 0 summing to less than 1 "
        f"(the L1 weight is 1 minus both), found {loss.disc_weight!r} and {loss.sync_weight!r}"
      )
    if not 0 <= loss.sync_decay < 1:
      raise Wav2LipConfigError(
        f"loss.sync_decay: expected a number in [0, 1), found {loss.sync_decay!r}"
      )
    chunk = config.sample.chunk_frames
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
      raise Wav2LipConfigError(f"sample.chunk_frames: expected an integer >= 1, found {chunk!r}")
    self.generator = wav2lip.Wav2LipGenerator(width=self.width)
    self.discriminator = wav2lip.QualityDiscriminator(width=self.width)
    self.expert_task, self.expert_params = load_expert_run(config.expert.workdir)

  # -- data ----------------------------------------------------------------------

  @functools.cached_property
  def train_clips(self) -> talking_data.TalkingClips:
    return talking_data.make_clips(self.config.data, "train")

  def train_dataset(self):
    return talking_data.window_dataset(
      self.train_clips, talking_data.generator_example, self.config.data.repeats
    )

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    frames = (batch_size, SYNC_FRAMES, FACE_SIZE, FACE_SIZE, 3)
    return {
      "target": jax.ShapeDtypeStruct(frames, jnp.uint8),
      "reference": jax.ShapeDtypeStruct(frames, jnp.uint8),
      "mel": jax.ShapeDtypeStruct((batch_size, SYNC_FRAMES, MEL_STEPS, NUM_MELS), jnp.float32),
      "sync_mel": jax.ShapeDtypeStruct((batch_size, MEL_STEPS, NUM_MELS), jnp.float32),
    }

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    frames = (SYNC_FRAMES, FACE_SIZE, FACE_SIZE, 3)
    check_frames_batch(batch, ("target", "reference"), frames)
    check_mel_batch(batch, "mel", (SYNC_FRAMES, MEL_STEPS, NUM_MELS))
    check_mel_batch(batch, "sync_mel", (MEL_STEPS, NUM_MELS))

  # -- model ---------------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    g_rng, d_rng = jax.random.split(rng)
    faces = talking_data.masked_faces(to_unit(batch["target"]), to_unit(batch["reference"]))
    generator = self.generator.init(g_rng, jnp.asarray(batch["mel"]), faces)
    discriminator = self.discriminator.init(d_rng, to_unit(batch["target"]))["params"]
    return nn.meta.unbox(
      {"generator": generator, "discriminator": discriminator, "sync_state": initial_sync_state()}
    )

  def _generate_train(self, generator, mel, faces):
    variables = {
      "params": generator["params"],
      "batch_stats": jax.lax.stop_gradient(generator["batch_stats"]),
    }
    frames, updates = self.generator.apply(
      variables, mel, faces, train=True, mutable=["batch_stats"]
    )
    return frames, updates["batch_stats"]

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    del rng
    cfg = self.config.loss
    target = to_unit(batch["target"])
    faces = talking_data.masked_faces(target, to_unit(batch["reference"]))
    fake, batch_stats = self._generate_train(params["generator"], batch["mel"], faces)
    l1 = jnp.mean(jnp.abs(fake - target))
    expert_probability = self.expert_task.sync_probability(
      self.expert_params, batch["sync_mel"], fake
    )
    sync = wav2lip.binary_cross_entropy(expert_probability, jnp.ones_like(expert_probability))
    disc = lambda p, frames: self.discriminator.apply({"params": p}, frames)
    perceptual = wav2lip.perceptual_loss(disc(jax.lax.stop_gradient(params["discriminator"]), fake))
    d_real, d_fake = wav2lip.discriminator_losses(
      disc(params["discriminator"], target),
      disc(params["discriminator"], jax.lax.stop_gradient(fake)),
    )
    state = params["sync_state"]
    s = jax.lax.stop_gradient(state["on"]) * cfg.sync_weight
    d = cfg.disc_weight
    g_loss = (1 - s - d) * l1 + s * sync + d * perceptual
    new_state = sync_switch(
      state, sync, decay=cfg.sync_decay, warmup=cfg.sync_warmup, threshold=cfg.sync_threshold
    )
    metrics = {
      "l1": l1,
      "sync_loss": sync,
      "perceptual_loss": perceptual,
      "disc_real_loss": d_real,
      "disc_fake_loss": d_fake,
      "generator_loss": g_loss,
      "sync_weight": s,
      "sync_average": new_state["average"],
      STATE_UPDATES_KEY: {"generator": {"batch_stats": batch_stats}, "sync_state": new_state},
    }
    return g_loss + d_real + d_fake, metrics

  # -- generation ----------------------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self",))
  def _frames(self, generator, mel: jax.Array, target: jax.Array, reference: jax.Array):
    """uint8 frames (n, 96, 96, 3) of uint8 targets/references and their mel windows (n, 16, 80)."""
    faces = talking_data.masked_faces(to_unit(target), to_unit(reference))
    frames = self.generator.apply(generator, mel, faces)
    return jnp.round(frames * 255).astype(jnp.uint8)

  def talking_frames(self, params, mel: np.ndarray, target: np.ndarray, reference: np.ndarray):
    """Frames (T, 96, 96, 3) uint8 of one utterance: the generator over all T frames.

    mel (T, 16, 80); target, reference (T, 96, 96, 3) uint8. Frames are
    independent (evaluation-mode BatchNorm), so the utterance runs in chunks
    of `sample.chunk_frames` (the last padded), one compiled program for all.
    """
    chunk = self.config.sample.chunk_frames
    count = mel.shape[0]
    padded = -(-count // chunk) * chunk
    pad = lambda x: np.concatenate([x, np.repeat(x[-1:], padded - count, axis=0)])
    mel, target, reference = pad(mel), pad(target), pad(reference)
    out = [
      np.asarray(
        self._frames(params["generator"], *(x[i : i + chunk] for x in (mel, target, reference)))
      )
      for i in range(0, padded, chunk)
    ]
    return np.concatenate(out)[:count]

  def speech_conditions(self, audio, sr, names, reference, reference_name):
    return talking_samples.speech_conditions(audio, sr, names, reference, reference_name)

  def generate(self, params, conditions: Mapping[str, Any], rng: jax.Array, **options):
    """{"video": one (T, 96, 96, 3) uint8 clip per utterance}. Deterministic: `rng` is unused.

    conditions: `mel` (T, 16, 80), `target`, `reference` (T, 96, 96, 3) uint8
    per utterance (lists), as `speech_conditions` or `clip_conditions` build them.
    """
    del rng, options
    return talking_samples.talk_each(
      functools.partial(self.talking_frames, params),
      conditions["mel"],
      conditions["target"],
      conditions["reference"],
    )

  def save_samples(self, samples, conditions, path: str, **display) -> str:
    return talking_samples.save_talking(samples["video"], conditions, path, **display)

  def preview(self, params, rng: jax.Array, num: int = 3) -> np.ndarray:
    """Held-out clips, one row each: [reference | generated | ground truth] at 4 instants."""
    del rng
    clips = talking_data.make_clips(self.config.data, "validation", num)
    conditions = talking_samples.clip_conditions(clips, mode="image")
    videos = self.generate(params, conditions, jax.random.PRNGKey(0))["video"]
    picks = np.linspace(0, clips.num_frames - 1, PREVIEW_INSTANTS).round().astype(int)
    rows = [
      np.concatenate(
        [
          np.concatenate([conditions["reference"][i][t], videos[i][t], clips.video[i, t]], axis=1)
          for t in picks
        ],
        axis=1,
      )
      for i in range(num)
    ]
    return np.concatenate(rows, axis=0)
