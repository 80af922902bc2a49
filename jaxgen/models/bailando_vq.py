"""Bailando's choreographic memory (Li et al., 2022): upper/lower-body motion VQ-VAEs.

The reference `SepVQVAER` (lisiyao21/Bailando `models/sep_vqvae_root.py`,
`configs/sep_vqvae_root.yaml`) splits SMPL-24 joint positions into an upper
half (15 joints: spine, neck, head, arms) and a lower half (9 joints: pelvis,
legs) and gives each its own VQ-VAE: the openai/jukebox 1-D conv encoder and
decoder (`jaxgen.models.vq` with `layout="jukebox"`), 3 stride-2
downsamplings (one code per 8 frames), a 512 × 512 EMA codebook (μ 0.99,
dead-code reset). A third decoder, the root branch (`decoders_root` of
`VQVAER`), reads the lower codes and predicts the root's velocity, whose
running sum is the root trajectory.

Motion layout (the reference data, `load_data_aist`): (B, T, 24·3) positions
at 60 fps, channels 0:3 the root (pelvis) position and every other joint
relative to the root. The encoders never see the root: its channels are
zeroed, and its per-frame velocity v_t = p_{t+1} - p_t (the last frame repeats
the one before) is the root branch's target. Decoding returns the same layout
with the root trajectory integrated from the origin.

Losses, all mean absolute errors as in the reference (`VQVAE.forward`):
  half (upper, lower): recons + commit·‖z - sg(e)‖²/n + velocity·L1(Δx̂, Δx)
                       + acceleration·L1(Δ²x̂, Δ²x)
  root:                L1(v̂, v) + root_acceleration·L1(Δv̂, Δv)
The reference trains the halves first (`sep_vqvae.yaml`) and then the root
decoder alone on frozen encoders and codebooks (`sep_vqvae_root.yaml`, its
input detached). Here the root decoder reads the codebook rows with gradients
stopped, so its loss trains only the root decoder and both stages may run as
one sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.models import vq

# SMPL-24 joints of each half (`smpl_up`, `smpl_down` in the reference); joint 0 is the root.
SMPL_LOWER: tuple[int, ...] = (0, 1, 2, 4, 5, 7, 8, 10, 11)
SMPL_UPPER: tuple[int, ...] = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23)


@dataclass(frozen=True)
class BailandoVQConfig:
  """Hyper-parameters of `BailandoVQVAE`; defaults are the reference's `SepVQVAER`.

  Attributes:
    num_joints, joint_channels: motion is (B, T, num_joints · joint_channels).
    upper_joints, lower_joints: the halves, a partition of the joints; the
      root (joint 0) belongs to the lower half, whose codes drive the root branch.
    fps: frame rate of the motion the model is trained on (the reference 60).
    width, code_dim, down_t, depth, dilation_growth_rate, num_codes, mu: each
      half's VQ-VAE (`width`, `emb_width`, `downs_t`, `depth`,
      `dilation_growth_rate`, `l_bins`, `l_mu`).
    commit, velocity, acceleration: loss weights of each half (`commit`, `vel`, `acc`).
    root_acceleration: weight of the root velocity's difference loss (`acc` of `down_half`).
  """

  num_joints: int = 24
  joint_channels: int = 3
  upper_joints: tuple[int, ...] = SMPL_UPPER
  lower_joints: tuple[int, ...] = SMPL_LOWER
  fps: int = 60
  width: int = 512
  code_dim: int = 512
  down_t: int = 3
  depth: int = 3
  dilation_growth_rate: int = 3
  num_codes: int = 512
  mu: float = 0.99
  commit: float = 0.02
  velocity: float = 1.0
  acceleration: float = 1.0
  root_acceleration: float = 1.0

  def __post_init__(self):
    joints = sorted(self.upper_joints + self.lower_joints)
    if joints != list(range(self.num_joints)):
      raise ValueError(
        f"BailandoVQConfig.upper_joints + lower_joints: expected a partition of "
        f"range({self.num_joints}), found upper {self.upper_joints}, lower {self.lower_joints}"
      )
    if 0 not in self.lower_joints:
      raise ValueError(
        f"BailandoVQConfig.lower_joints: expected the root joint 0 in the lower half, "
        f"found {self.lower_joints}"
      )

  @property
  def motion_dim(self) -> int:
    return self.num_joints * self.joint_channels

  @property
  def downsample(self) -> int:
    return 2**self.down_t

  def part(self, num_joints: int) -> vq.VQVAEConfig:
    """The jukebox VQ-VAE of a part with `num_joints` joints (1: the root branch)."""
    return vq.VQVAEConfig(
      input_dim=num_joints * self.joint_channels,
      width=self.width,
      output_emb_width=self.code_dim,
      down_t=self.down_t,
      depth=self.depth,
      dilation_growth_rate=self.dilation_growth_rate,
      num_codes=self.num_codes,
      mu=self.mu,
      layout="jukebox",
    )


def check_motion(motion: jax.Array, config: BailandoVQConfig) -> jax.Array:
  """Named errors for a motion that is not (B, T, J·C) with T a positive multiple of 2**down_t."""
  c = config
  motion = jnp.asarray(motion)
  if motion.ndim != 3 or motion.shape[-1] != c.motion_dim:
    raise ValueError(
      f"motion: expected (batch, frames, {c.motion_dim}) = {c.num_joints} joints × "
      f"{c.joint_channels}, found shape {tuple(motion.shape)}"
    )
  frames = motion.shape[1]
  if frames == 0 or frames % c.downsample:
    raise ValueError(
      f"motion: expected a frame count divisible by {c.downsample} (one code per "
      f"{c.downsample} frames), found {frames}"
    )
  return motion


def _joints(motion: jax.Array, config: BailandoVQConfig, joints: tuple[int, ...]) -> jax.Array:
  b, t, _ = motion.shape
  x = motion.reshape(b, t, config.num_joints, config.joint_channels)[:, :, list(joints)]
  return x.reshape(b, t, -1)


def split_body(motion: jax.Array, config: BailandoVQConfig) -> tuple[jax.Array, jax.Array]:
  """(B, T, J·C) -> upper (B, T, J_up·C), lower (B, T, J_low·C) with the root channels zeroed."""
  c = config
  pose = motion.at[..., : c.joint_channels].set(0.0)
  return _joints(pose, c, c.upper_joints), _joints(pose, c, c.lower_joints)


def merge_body(upper: jax.Array, lower: jax.Array, config: BailandoVQConfig) -> jax.Array:
  """Inverse of `split_body`'s gather: the halves back into (B, T, J·C) joint order."""
  c = config
  b, t, _ = upper.shape
  joints = jnp.concatenate(
    [
      upper.reshape(b, t, len(c.upper_joints), c.joint_channels),
      lower.reshape(b, t, len(c.lower_joints), c.joint_channels),
    ],
    axis=2,
  )
  order = np.argsort(c.upper_joints + c.lower_joints)
  return joints[:, :, order].reshape(b, t, -1)


def root_velocity(root: jax.Array) -> jax.Array:
  """(B, T, C) root positions -> per-frame steps p[t+1] - p[t], the last repeated (reference)."""
  steps = root[:, 1:] - root[:, :-1]
  return jnp.concatenate([steps, steps[:, -1:]], axis=1)


def root_trajectory(velocity: jax.Array) -> jax.Array:
  """Running sum of root velocities from the origin: p[0] = 0, p[t] = p[t-1] + v[t-1]."""
  return jnp.concatenate(
    [jnp.zeros_like(velocity[:, :1]), jnp.cumsum(velocity[:, :-1], axis=1)], axis=1
  )


def _l1(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))


def _diff(x: jax.Array) -> jax.Array:
  return x[:, 1:] - x[:, :-1]


class BailandoVQVAE(nn.Module):
  """Upper- and lower-body VQ-VAEs with the root-velocity branch (reference `SepVQVAER`).

  Parameters: `upper` and `lower` (each a `vq.MotionVQVAE`: encoder, decoder,
  quantizer with its EMA statistics) and `root_decoder`.
  """

  config: BailandoVQConfig
  dtype: Any = jnp.float32

  def setup(self):
    c = self.config
    self.upper = vq.MotionVQVAE(c.part(len(c.upper_joints)), dtype=self.dtype)
    self.lower = vq.MotionVQVAE(c.part(len(c.lower_joints)), dtype=self.dtype)
    self.root_decoder = vq.MotionDecoder(c.part(1), dtype=self.dtype)

  def encode(self, motion: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B, T, J·C) motion -> upper and lower latents (B, T / 2**down_t, code_dim), unquantised."""
    upper, lower = split_body(check_motion(motion, self.config), self.config)
    return self.upper.encode(upper), self.lower.encode(lower)

  def encode_codes(self, motion: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B, T, J·C) motion -> upper and lower codes (B, T / 2**down_t) int32."""
    z_upper, z_lower = self.encode(motion)
    return vq.quantize(z_upper, self.upper.codebook()), vq.quantize(z_lower, self.lower.codebook())

  def decode_pose(self, z_upper: jax.Array, z_lower: jax.Array) -> jax.Array:
    """Latents (B, T', code_dim) -> (B, T'·2**down_t, J·C) pose; the root channels are the lower
    decoder's (trained towards zero)."""
    return merge_body(self.upper.decode(z_upper), self.lower.decode(z_lower), self.config)

  def decode_root_velocity(self, z_lower: jax.Array) -> jax.Array:
    """Lower latents -> (B, T'·2**down_t, C) root velocity (the root branch)."""
    return self.root_decoder(z_lower)

  def decode_codes(self, upper_codes: jax.Array, lower_codes: jax.Array) -> jax.Array:
    """Codes (B, T') each -> motion (B, T'·2**down_t, J·C) in the input layout, the root
    trajectory integrated from the origin."""
    if upper_codes.shape != lower_codes.shape or upper_codes.ndim != 2:
      raise ValueError(
        f"upper_codes, lower_codes: expected two (batch, steps) arrays of one shape, found "
        f"{tuple(upper_codes.shape)} and {tuple(lower_codes.shape)}"
      )
    z_upper = vq.dequantize(upper_codes, self.upper.codebook())
    z_lower = vq.dequantize(lower_codes, self.lower.codebook())
    pose = self.decode_pose(z_upper, z_lower)
    root = root_trajectory(self.decode_root_velocity(z_lower).astype(pose.dtype))
    return pose.at[..., : self.config.joint_channels].set(root)

  def __call__(self, motion: jax.Array) -> jax.Array:
    """Reconstruction through the nearest codes (no straight-through): init / eval."""
    return self.decode_codes(*self.encode_codes(motion))

  def losses(
    self, motion: jax.Array, rng: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array], dict[str, Any]]:
    """The reference's training losses on a (B, T, J·C) batch.

    Returns (total, metrics, updates): metrics "upper/recons", "upper/commit",
    "upper/velocity", "upper/acceleration", "upper/perplexity" (and "lower/…"),
    "root/recons", "root/acceleration"; updates the quantizers' new EMA
    statistics, {"upper": {"quantizer": …}, "lower": {"quantizer": …}}, to write
    over the parameters after the optimizer step.
    """
    c = self.config
    motion = check_motion(motion, c).astype(jnp.float32)
    halves = dict(zip(("upper", "lower"), split_body(motion, c)))
    total = jnp.zeros((), jnp.float32)
    metrics, updates, rows = {}, {}, {}
    for (name, x), rng_half in zip(halves.items(), jax.random.split(rng)):
      half = getattr(self, name)
      z = half.encode(x)
      state = vq.QuantizerState(**half.quantizer())
      codes, rows[name], new_state = vq.ema_quantize(state, z, rng_half, c.mu)
      commit = jnp.mean(jnp.square(z.astype(jnp.float32) - rows[name]))
      x_hat = half.decode(z + jax.lax.stop_gradient(rows[name] - z))
      terms = {
        "recons": _l1(x_hat, x),
        "commit": commit,
        "velocity": _l1(_diff(x_hat), _diff(x)),
        "acceleration": _l1(_diff(_diff(x_hat)), _diff(_diff(x))),
      }
      total += (
        terms["recons"]
        + c.commit * terms["commit"]
        + c.velocity * terms["velocity"]
        + c.acceleration * terms["acceleration"]
      )
      metrics.update({f"{name}/{k}": v for k, v in terms.items()})
      metrics[f"{name}/perplexity"] = vq.perplexity(codes, c.num_codes)
      updates[name] = {"quantizer": new_state._asdict()}
    velocity = root_velocity(motion[..., : c.joint_channels])
    velocity_hat = self.decode_root_velocity(rows["lower"])  # rows carry no gradient
    metrics["root/recons"] = _l1(velocity_hat, velocity)
    metrics["root/acceleration"] = _l1(_diff(velocity_hat), _diff(velocity))
    total += metrics["root/recons"] + c.root_acceleration * metrics["root/acceleration"]
    return total, metrics, updates
