"""Wav2Lip's lip-sync expert (Prajwal et al., 2020), task `wav2lip_expert`.

Trains `jaxgen.models.wav2lip.SyncNetColor` at `model.width` on the
procedural talking heads as the reference's color_syncnet_train.py does:
lower halves of 5 consecutive frames and the 0.2-s mel window of the first
of them; half the examples take the frames of another window of the same
clip (label 0, `talking_data.expert_example`); the loss is the BCE of the
embeddings' cosine similarity (`wav2lip.sync_loss`), Adam 1e-4 in the config.

BatchNorm runs in training mode; its running statistics live in the params
tree under "batch_stats" and are not trained by gradients: the loss returns
the new ones under `STATE_UPDATES_KEY` and the trainer writes them over the
params after each step. The frozen expert (`sync_probability`, evaluation
mode) is what the `wav2lip` task's sync loss reads.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.models import wav2lip
from jaxgen.tasks.talking_face import talking_data
from jaxgen.tasks.talking_face.talking_data import FACE_SIZE, MEL_STEPS, NUM_MELS, SYNC_FRAMES
from jaxgen.training.task import STATE_UPDATES_KEY, Task

PREVIEW_OFFSETS = tuple(range(-6, 7))  # audio shifts (frames) the preview scores


def to_unit(frames) -> jax.Array:
  """uint8 frames -> float32 in [0, 1], as the reference divides by 255."""
  return jnp.asarray(frames, jnp.float32) / 255.0


def check_frames_batch(batch: Mapping[str, np.ndarray], keys: tuple[str, ...], frames: tuple):
  """Named errors for batch entries that are not uint8 frames of shape (B, *frames)."""
  for key in keys:
    if key not in batch:
      raise ValueError(f"batch: expected key {key!r}, found keys {sorted(batch)}")
    value = np.asarray(batch[key])
    if value.dtype != np.uint8 or value.shape[1:] != frames:
      raise ValueError(
        f"batch[{key!r}]: expected uint8 (B, {', '.join(map(str, frames))}), found "
        f"{value.dtype} {value.shape}"
      )


def check_mel_batch(batch: Mapping[str, np.ndarray], key: str, shape: tuple) -> None:
  """Named error for a mel entry that is not finite float32 (B, *shape)."""
  if key not in batch:
    raise ValueError(f"batch: expected key {key!r}, found keys {sorted(batch)}")
  mel = np.asarray(batch[key])
  if mel.shape[1:] != shape or not np.isfinite(mel).all():
    raise ValueError(
      f"batch[{key!r}]: expected finite (B, {', '.join(map(str, shape))}) mel windows, "
      f"found {mel.dtype} {mel.shape}"
    )


class Wav2LipExpertTask(Task):
  """The `wav2lip_expert` task. Params {"params", "batch_stats"} of SyncNetColor.

  Batches: `frames` (B, 5, 96, 96, 3) uint8, `mel` (B, 16, 80), `label` (B,) 1/0.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    talking_data.check_data_config(config.data)
    self.width = wav2lip.check_width(config.model.width)
    self.model = wav2lip.SyncNetColor(width=self.width)

  # -- data ----------------------------------------------------------------------

  @functools.cached_property
  def train_clips(self) -> talking_data.TalkingClips:
    return talking_data.make_clips(self.config.data, "train")

  def train_dataset(self):
    clips = self.train_clips
    return talking_data.window_dataset(clips, talking_data.expert_example, self.config.data.repeats)

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    frames = (batch_size, SYNC_FRAMES, FACE_SIZE, FACE_SIZE, 3)
    return {
      "frames": jax.ShapeDtypeStruct(frames, jnp.uint8),
      "mel": jax.ShapeDtypeStruct((batch_size, MEL_STEPS, NUM_MELS), jnp.float32),
      "label": jax.ShapeDtypeStruct((batch_size,), jnp.float32),
    }

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    check_frames_batch(batch, ("frames",), (SYNC_FRAMES, FACE_SIZE, FACE_SIZE, 3))
    check_mel_batch(batch, "mel", (MEL_STEPS, NUM_MELS))
    if "label" not in batch or not np.isin(np.asarray(batch["label"]), (0, 1)).all():
      raise ValueError("batch['label']: expected 1 (in sync) or 0 (off sync) per example")

  # -- model ---------------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    faces = wav2lip.expert_face_window(to_unit(batch["frames"]))
    return nn.meta.unbox(self.model.init(rng, jnp.asarray(batch["mel"]), faces))

  def embed(self, params, mel: jax.Array, frames: jax.Array, *, train: bool = False):
    """(audio, face) embeddings of mel (B, 16, 80) and uint8 or [0, 1] frames (B, 5, 96, 96, 3).

    In training mode also the new batch statistics: ((audio, face), batch_stats).
    """
    frames = to_unit(frames) if frames.dtype == jnp.uint8 else frames
    faces = wav2lip.expert_face_window(frames)
    variables = {
      "params": params["params"],
      "batch_stats": jax.lax.stop_gradient(params["batch_stats"]),
    }
    if not train:
      return self.model.apply(variables, mel, faces)
    embeddings, updates = self.model.apply(
      variables, mel, faces, train=True, mutable=["batch_stats"]
    )
    return embeddings, updates["batch_stats"]

  def sync_probability(self, params, mel: jax.Array, frames: jax.Array) -> jax.Array:
    """(B,) P(in sync) of the frozen expert (evaluation-mode BatchNorm)."""
    return wav2lip.sync_probability(*self.embed(params, mel, frames))

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    del rng
    (audio_emb, face_emb), batch_stats = self.embed(
      params, batch["mel"], batch["frames"], train=True
    )
    loss = wav2lip.sync_loss(audio_emb, face_emb, batch["label"])
    probability = wav2lip.sync_probability(audio_emb, face_emb)
    metrics = sync_metrics(probability, batch["label"])
    metrics.update(sync_loss=loss, **{STATE_UPDATES_KEY: {"batch_stats": batch_stats}})
    return loss, metrics

  # -- use -----------------------------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self",))
  def _probability(self, params, mel, frames):
    return self.sync_probability(params, mel, frames)

  def evaluate(self, params, clips: talking_data.TalkingClips, count: int, seed: int = 0):
    """Held-out sync loss and accuracies on `count` drawn examples (half in sync on average)."""
    batch = talking_data.draw_examples(clips, talking_data.expert_example, count, seed)
    probability = np.asarray(self._probability(params, batch["mel"], batch["frames"]))
    label = batch["label"]
    loss = float(wav2lip.binary_cross_entropy(probability, label))
    return dict({k: float(v) for k, v in sync_metrics(probability, label).items()}, sync_loss=loss)

  def preview(self, params, rng: jax.Array, num: int = 4) -> np.ndarray:
    """Per held-out clip: its 5 lower halves, then P(in sync) with the audio shifted by -6..6 frames.

    Bars: green at 0 (the true audio), red elsewhere; a good expert peaks at 0.
    """
    del rng
    clips = talking_data.make_clips(self.config.data, "validation", num)
    start = clips.num_frames // 2 - SYNC_FRAMES // 2
    frames = clips.video[:, start : start + SYNC_FRAMES]
    shifts = np.clip(start + np.asarray(PREVIEW_OFFSETS), 0, clips.num_frames - 1)
    mel = clips.mel[:, shifts]  # (num, offsets, 16, 80)
    tiled = np.repeat(frames, len(PREVIEW_OFFSETS), axis=0)
    probability = self._probability(params, mel.reshape(-1, MEL_STEPS, NUM_MELS), tiled)
    probability = np.asarray(probability).reshape(num, len(PREVIEW_OFFSETS))
    rows = []
    for clip in range(num):
      lower = np.concatenate(list(frames[clip, :, FACE_SIZE // 2 :]), axis=1)
      rows.append(np.concatenate([lower, bar_chart(probability[clip], FACE_SIZE // 2)], axis=1))
    return np.concatenate(rows, axis=0)


def sync_metrics(probability: jax.Array, label: jax.Array) -> dict[str, jax.Array]:
  """Accuracy of P(in sync) > 0.5 overall, on in-sync and on off-sync examples."""
  label = jnp.asarray(label, jnp.float32).reshape(-1)
  predicted = (jnp.asarray(probability) > 0.5).astype(jnp.float32)
  correct = (predicted == label).astype(jnp.float32)
  in_sync = jnp.sum(correct * label) / jnp.maximum(jnp.sum(label), 1)
  off_sync = jnp.sum(correct * (1 - label)) / jnp.maximum(jnp.sum(1 - label), 1)
  return {"accuracy": jnp.mean(correct), "in_sync_accuracy": in_sync, "off_sync_accuracy": off_sync}


def bar_chart(values: np.ndarray, height: int, bar: int = 8) -> np.ndarray:
  """uint8 (height, len(values) * bar, 3): one bar per value in [0, 1], the middle one green."""
  chart = np.full((height, len(values) * bar, 3), 255, np.uint8)
  middle = len(values) // 2
  for i, value in enumerate(np.clip(values, 0, 1)):
    top = height - int(round(value * (height - 1)))
    colour = (40, 170, 60) if i == middle else (200, 60, 50)
    chart[top:, i * bar + 1 : (i + 1) * bar - 1] = colour
  chart[height // 2, :] = (120, 120, 120)  # the 0.5 decision line
  return chart
