"""Bailando stage 1 (Li et al., 2022): the choreographic memory, task `bailando_vq`.

Trains `jaxgen.models.bailando_vq.BailandoVQVAE` (upper- and lower-body
VQ-VAEs with the root-velocity branch) on the procedural music-dance clips
(`jaxgen.data.music_dance`, 22-joint rig at 20 fps), cut into
`window.frames`-frame windows every `window.stride` frames (the reference:
random 240-frame crops at 60 fps, 4 s; here 4 s is 80 frames).

Motion layout (the reference's): (T, 66) = the root (pelvis) position in
metres, then the 21 other joints relative to it, world axes. The halves are
the reference's SMPL-24 halves without the hands (joints 22, 23), which the
22-joint rig lacks. The EMA codebook statistics are not gradient updates:
the loss returns them under `STATE_UPDATES_KEY` and the trainer writes them
over the parameters after each step.

Stage 2, the music-conditioned GPT over these codes, is `bailando_gpt`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.models import bailando_vq as bvq
from jaxgen.tasks.dance import dance_data
from jaxgen.tasks.dance.dance_data import FPS, NUM_JOINTS
from jaxgen.training.task import STATE_UPDATES_KEY, Task

UPPER_JOINTS = tuple(j for j in bvq.SMPL_UPPER if j < NUM_JOINTS)  # no hands on the 22-joint rig
MOTION_DIM = 3 * NUM_JOINTS


def joints_to_motion(joints: np.ndarray) -> np.ndarray:
  """(N, T, 22, 3) joints -> (N, T, 66): root position, then joints relative to the root."""
  joints = np.asarray(joints, np.float32)
  if joints.ndim != 4 or joints.shape[2:] != (NUM_JOINTS, 3):
    raise ValueError(f"joints: expected (N, T, {NUM_JOINTS}, 3), found {joints.shape}")
  root = joints[:, :, :1]
  relative = np.concatenate([root, joints[:, :, 1:] - root], axis=2)
  return relative.reshape(joints.shape[:2] + (MOTION_DIM,))


def motion_to_joints(motion):
  """(..., T, 66) motion -> (..., T, 22, 3) joints (the inverse of `joints_to_motion`)."""
  x = motion.reshape(motion.shape[:-1] + (NUM_JOINTS, 3))
  root = x[..., :1, :]
  return jnp.concatenate([root, root + x[..., 1:, :]], axis=-2)


class BailandoVQTask(Task):
  """The `bailando_vq` task (see the module docstring). Batches: `motion` (B, frames, 66)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model_config = bvq.BailandoVQConfig(
      num_joints=NUM_JOINTS, upper_joints=UPPER_JOINTS, fps=int(FPS), **config.vq.to_dict()
    )
    self.model = bvq.BailandoVQVAE(self.model_config)
    frames = config.window.frames
    if not isinstance(frames, int) or frames < 1 or frames % self.model_config.downsample:
      raise ValueError(
        f"window.frames: expected a positive multiple of {self.model_config.downsample} "
        f"(one code per 2**vq.down_t frames), found {frames!r}"
      )

  @property
  def downsample(self) -> int:
    return self.model_config.downsample

  # -- data ----------------------------------------------------------------------

  @functools.cached_property
  def train_clips(self) -> dict[str, np.ndarray]:
    """The training clips of `make_music_dance` (joints, audio, beats, genre...)."""
    return dance_data.make_clips(self.config.data, "train", self.config.data.num_examples)

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    motion = joints_to_motion(self.train_clips["joints"])
    w = self.config.window
    windows = dance_data.training_windows(dict(pose=motion), w.frames, w.stride)
    return dict(motion=windows["pose"])

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    shape = (batch_size, self.config.window.frames, MOTION_DIM)
    return dict(motion=jax.ShapeDtypeStruct(shape, jnp.float32))

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    if "motion" not in batch:
      raise ValueError(f"batch: expected key 'motion', found keys {sorted(batch)}")
    motion = np.asarray(batch["motion"])
    expected = (self.config.window.frames, MOTION_DIM)
    if motion.ndim != 3 or motion.shape[1:] != expected:
      raise ValueError(
        f"batch['motion']: expected (B, {expected[0]}, {expected[1]}), found {motion.shape}"
      )
    if not np.isfinite(motion).all():
      raise ValueError("batch['motion']: expected finite values, found NaN or inf")

  # -- model ---------------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    return self.model.init(rng, jnp.zeros(batch["motion"].shape, jnp.float32))["params"]

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    total, metrics, updates = self.model.apply(
      {"params": params}, batch["motion"], rng, method=bvq.BailandoVQVAE.losses
    )
    return total, dict(metrics, **{STATE_UPDATES_KEY: updates})

  # -- use -----------------------------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self",))
  def encode_codes(self, params, motion: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Upper and lower codes (B, T / downsample) of motion (B, T, 66)."""
    return self.model.apply({"params": params}, motion, method=bvq.BailandoVQVAE.encode_codes)

  @functools.partial(jax.jit, static_argnames=("self",))
  def decode_codes(self, params, upper: jax.Array, lower: jax.Array) -> jax.Array:
    """Motion (B, n · downsample, 66) of codes (B, n) each, the root starting at the origin."""
    return self.model.apply({"params": params}, upper, lower, method=bvq.BailandoVQVAE.decode_codes)

  def reconstruct(self, params, joints: np.ndarray) -> np.ndarray:
    """Joints (N, T, 22, 3) through the codes and back, the root trajectory from the first frame."""
    motion = joints_to_motion(joints)
    frames = motion.shape[1] - motion.shape[1] % self.downsample
    codes = self.encode_codes(params, jnp.asarray(motion[:, :frames]))
    out = np.array(self.decode_codes(params, *codes))
    out[..., :3] += motion[:, :1, :3]
    return np.asarray(motion_to_joints(out))

  def preview(self, params, rng: jax.Array, num: int = 2) -> np.ndarray:
    """Test dances and their reconstructions through the codes, at four instants."""
    del rng
    from jaxgen.render.motion import render_frames  # pylint: disable=g-import-not-at-top

    joints = dance_data.make_clips(self.config.data, "test", num)["joints"]
    both = list(joints) + list(self.reconstruct(params, joints))
    frames = render_frames(both, [f"test {i}" for i in range(num)] + ["VQ reconstruction"] * num)
    picks = np.linspace(0, len(frames) - 1, 4).round().astype(int)
    return np.concatenate([frames[i] for i in picks], axis=1)
