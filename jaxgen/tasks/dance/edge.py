"""EDGE (Tseng et al. 2023) music-to-dance diffusion on the procedural music-dance pairs: `edge`.

Data: `make_music_dance` train clips cut into `data.seq_len`-frame windows
(EDGE: 5 s) every `data.window_stride` frames (EDGE: 0.5 s), as 70-d pose
vectors with the aligned 35-d EDGE music features (`dance_data`).
Model: the EDGE denoiser (`jaxgen.models.edge`), predicting x0.
Training (EDGE `GaussianDiffusion.p_losses`): uniform timesteps of a
1000-step cosine schedule, 25% of rows with the learned null music
(`cond_drop_prob`), and
  0.636 simple (L2 on the whole normalised pose vector)
  + 2.964 velocity (L2 on frame differences of everything but contacts)
  + 0.646 FK (L2 on joint positions; EDGE's FK of SMPL rotations, here the
    exact root + offsets of `dance_data`, in metres rather than on EDGE's
    normalised values)
  + 10.942 foot (squared foot-joint velocity where the model's own normalised
    contact prediction exceeds 0.95).
Sampling (EDGE `long_ddim_sample`): DDIM on EDGE's grid (`trailing` spacing:
999, 979, ..., 19, then x0), x0 clipped to [-1, 1], eta 1 as the released
code (its issue #30 argues for 0; `sample.eta`), classifier-free guidance
with the learned null condition. Music longer than one window is cut into
windows overlapping by half, all denoised as one batch in one scan; after
every step but the last each window's first half is replaced by the previous
window's second half, and the overlapping halves of the final windows are
cross-faded linearly (EDGE's `long_ddim_sample` and `render_sample`). EDGE also ramps the
guidance weight from 0 to its value over the first half of the long-form
steps; here it is constant. The eps of each DDIM step comes from the
unclipped x0, as diffusers' DDIM (EDGE's from the clipped one).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.diffusion import gaussian, guidance, samplers, schedules
from jaxgen.models.edge import EDGE, EDGEConfig
from jaxgen.tasks.dance import dance_data, dance_samples
from jaxgen.tasks.dance.dance_data import (
  CONTACTS,
  FOOT_JOINTS,
  MUSIC_DIM,
  POSE_DIM,
  DanceMusicError,
  poses_to_joints,
)
from jaxgen.training.task import GenerativeTask, SampleSpec

# EDGE's loss weights (p_losses).
LOSS_WEIGHTS = dict(simple=0.636, velocity=2.964, fk=0.646, foot=10.942)
STATIC_CONTACT = 0.95  # a normalised contact above this marks a foot the loss holds still


def edge_loss_terms(prediction: jax.Array, target: jax.Array, normalizer) -> dict[str, jax.Array]:
  """EDGE's four unweighted loss terms of normalised pose vectors (B, T, 70)."""
  simple = jnp.mean(jnp.square(prediction - target))
  body_pred, body_true = prediction[..., CONTACTS.stop :], target[..., CONTACTS.stop :]
  velocity = jnp.mean(jnp.square(jnp.diff(body_pred, axis=1) - jnp.diff(body_true, axis=1)))
  joints_pred = poses_to_joints(normalizer.denormalize(prediction))
  joints_true = poses_to_joints(normalizer.denormalize(target))
  fk = jnp.mean(jnp.square(joints_pred - joints_true))
  feet = joints_pred[:, :, FOOT_JOINTS]
  foot_velocity = jnp.concatenate([feet[:, 1:] - feet[:, :-1], jnp.zeros_like(feet[:, :1])], 1)
  static = prediction[..., CONTACTS] > STATIC_CONTACT
  foot = jnp.mean(jnp.square(foot_velocity * static[..., None]))
  return dict(simple=simple, velocity=velocity, fk=fk, foot=foot)


def overlapping_windows_sample(denoiser, plan, noise: jax.Array, rng: jax.Array) -> jax.Array:
  """Runs `plan` on windows (N, n, S, D) as one batch, in one scan.

  Before the first step and after every step but the last, each window's
  first half is set to the previous window's second half (EDGE's
  `long_ddim_sample`), so every window is denoised as the continuation of the
  one before; the last step leaves each window its own prediction, which
  `dance_data.stitch_windows` cross-fades. `denoiser(x, t)` takes the windows
  flattened to (N n, S, D).
  """
  shape = noise.shape
  flat = (shape[0] * shape[1],) + shape[2:]
  x = dance_data.overlap_constraint(noise).reshape(flat)
  state = samplers.init_state(plan, x, rng)
  num_steps = plan.table.timestep.shape[0]

  def step(state, inputs):
    row, last = inputs
    state, _ = samplers.sampler_step(denoiser, plan, state, row)
    x = dance_data.overlap_constraint(state.x.reshape(shape)).reshape(flat)
    return state.replace(x=jnp.where(last, state.x, x)), None

  is_last = jnp.arange(num_steps) == num_steps - 1
  state, _ = jax.lax.scan(step, state, (plan.table, is_last))
  return state.x.reshape(shape)


class EDGETask(GenerativeTask):
  """The `edge` task (see the module docstring). Batches: `pose` (B, S, 70), `music` (B, S, 35)."""

  sample_spec = SampleSpec(
    "dance.mp4", (".mp4", ".npy"), options=("num_steps", "guidance_scale"), takes_audio=True
  )

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    seq_len = config.data.seq_len
    if not isinstance(seq_len, int) or seq_len < 2 or seq_len % 2:
      raise ValueError(
        f"data.seq_len: expected an even number of frames >= 2 (long-form windows "
        f"overlap by half), found {seq_len!r}"
      )
    self.model_config = EDGEConfig(
      pose_dim=POSE_DIM, seq_len=seq_len, music_dim=MUSIC_DIM, **config.edge.to_dict()
    )
    self.model = EDGE(self.model_config)
    d = config.diffusion
    self.schedule = schedules.make_schedule(d.schedule, num_train_timesteps=d.num_train_timesteps)

  # -- data ----------------------------------------------------------------------

  @functools.cached_property
  def _train_clips(self) -> dict[str, np.ndarray]:
    return dance_data.load_clips(self.config.data, "train", self.config.data.num_examples)

  @functools.cached_property
  def pose_normalizer(self):
    return dance_data.fit_min_max(self._train_clips["pose"])

  @functools.cached_property
  def music_normalizer(self):
    return dance_data.fit_standardizer(self._train_clips["music"])

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    windows = dance_data.training_windows(
      self._train_clips, self.model_config.seq_len, self.config.data.window_stride
    )
    return dict(
      pose=np.asarray(self.pose_normalizer.normalize(windows["pose"]), np.float32),
      music=np.asarray(self.music_normalizer.normalize(windows["music"]), np.float32),
    )

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    S = self.model_config.seq_len
    return dict(
      pose=jax.ShapeDtypeStruct((batch_size, S, POSE_DIM), jnp.float32),
      music=jax.ShapeDtypeStruct((batch_size, S, MUSIC_DIM), jnp.float32),
    )

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    S = self.model_config.seq_len
    for key, width in (("pose", POSE_DIM), ("music", MUSIC_DIM)):
      if key not in batch:
        raise ValueError(f"batch: expected key {key!r}, found keys {sorted(batch)}")
      value = np.asarray(batch[key])
      if value.ndim != 3 or value.shape[1:] != (S, width):
        raise ValueError(f"batch[{key!r}]: expected (B, {S}, {width}), found {value.shape}")
      if not np.isfinite(value).all():
        raise ValueError(f"batch[{key!r}]: expected finite values, found NaN or inf")

  # -- model ---------------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    B = batch["pose"].shape[0]
    return self.model.init(
      rng,
      jnp.zeros(batch["pose"].shape, jnp.float32),
      jnp.zeros(batch["music"].shape, jnp.float32),
      jnp.zeros((B,), jnp.int32),
    )["params"]

  def denoise(self, params, x, music, t, keep_mask):
    """x0 of x_t (B, S, 70) for music (B, S, 35); keep_mask (B,) False = the null music."""
    return self.model.apply({"params": params}, x, music, t, keep_mask=keep_mask)

  def guided_denoiser(self, params, music: jax.Array, guidance_scale):
    """fn(x, t): x0 guided by `music` at `guidance_scale` against the learned null music."""
    batch = music.shape[0]
    cond = (music, jnp.ones((batch,), bool))
    uncond = (music, jnp.zeros((batch,), bool))
    return guidance.classifier_free_guidance(
      lambda x, t, c: self.denoise(params, x, c[0], t, c[1]), cond, uncond, guidance_scale
    )

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    x0, music = batch["pose"], batch["music"]
    t_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
    t = gaussian.sample_timesteps(t_rng, x0.shape[0], self.schedule.num_train_timesteps)
    x_t = gaussian.q_sample(self.schedule, x0, t, jax.random.normal(noise_rng, x0.shape))
    prediction = self.model.apply(
      {"params": params},
      x_t,
      music,
      t,
      cond_drop_prob=self.config.diffusion.cond_drop_prob,
      train=True,
      rngs={"dropout": dropout_rng},
    )
    terms = edge_loss_terms(prediction, x0, self.pose_normalizer)
    weights = self.config.loss
    total = sum(weights[name] * value for name, value in terms.items())
    return total, terms

  # -- sampling ------------------------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self", "num_steps"))
  def sample_windows(self, params, music_windows, rng, *, num_steps: int, guidance_scale):
    """Normalised poses (N, n, S, 70) for normalised music windows (N, n, S, 35): one scan.

    Window i's first half equals window i - 1's second half after every step but the last.
    """
    N, n, S, _ = music_windows.shape
    denoiser = self.guided_denoiser(
      params, music_windows.reshape(N * n, S, MUSIC_DIM), guidance_scale
    )
    plan = samplers.make_plan(
      self.schedule,
      "ddim",
      num_steps,
      eta=self.config.sample.eta,
      prediction_type="sample",
      timestep_spacing="trailing",
      clip_sample=True,
    )
    noise_rng, step_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, (N, n, S, POSE_DIM))
    return overlapping_windows_sample(denoiser, plan, noise, step_rng)

  def sampling_options(self, num_steps=None, guidance_scale=None) -> tuple[int, float]:
    """(num_steps, guidance_scale), each None taken from `config.sample`, checked."""
    s = self.config.sample
    num_steps = s.num_steps if num_steps is None else num_steps
    guidance_scale = s.guidance if guidance_scale is None else guidance_scale
    samplers.check_sampling_options(
      "ddim", num_steps, guidance_scale, self.schedule.num_train_timesteps
    )
    return int(num_steps), float(guidance_scale)

  def check_options(self, options: Mapping[str, Any]) -> None:
    self.sampling_options(options.get("num_steps"), options.get("guidance_scale"))

  def conditions(self, prompts, *, seconds=None):
    raise DanceMusicError("prompts: the edge task dances to music, not text; give music files")

  def audio_conditions(self, audio, sr, names) -> dict[str, list]:
    """Raw EDGE features (T_i, 35) of each music file, its waveform, rate and name."""
    features = lambda waveform, rate: dance_data.audio_features(
      waveform, rate, self.model_config.seq_len
    )
    return dance_samples.audio_conditions(audio, sr, names, features)

  def generate(
    self, params, conditions: Mapping[str, Any], rng, *, num_steps=None, guidance_scale=None
  ) -> dict[str, np.ndarray]:
    """{"joints": (N, L, 22, 3) metres, "pose": (N, L, 70)} for `conditions["music"]`.

    `music` holds raw EDGE features (N, L, 35) at 20 fps, L >= data.seq_len;
    music longer than one window is danced in overlapping windows. A list of
    (L_i, 35), one per music file (`audio_conditions`), gives lists: one scan each.
    """
    num_steps, guidance_scale = self.sampling_options(num_steps, guidance_scale)
    options = {"num_steps": num_steps, "guidance_scale": guidance_scale}
    if isinstance(conditions.get("music"), list):
      dance = lambda music, key: self.generate(params, {"music": music}, key, **options)
      return dance_samples.dance_each(dance, conditions["music"], rng)
    if "music" not in conditions:
      raise DanceMusicError(f"conditions: expected the key 'music', found {sorted(conditions)}")
    S = self.model_config.seq_len
    music = dance_data.check_music(conditions["music"], S)
    windows = dance_data.split_windows(np.asarray(self.music_normalizer.normalize(music)), S)
    x = self.sample_windows(
      params, windows, rng, num_steps=num_steps, guidance_scale=jnp.float32(guidance_scale)
    )
    pose = self.pose_normalizer.denormalize(dance_data.stitch_windows(x, music.shape[1]))
    return dict(joints=np.asarray(poses_to_joints(pose), np.float32), pose=np.asarray(pose))

  def dance_from_music(self, params, audio: np.ndarray, sr: int, rng: jax.Array, **options):
    """Joints (T, 22, 3) at 20 fps for mono `audio` at `sr` Hz (>= 10240), T = its frames."""
    features = dance_data.audio_features(audio, sr, min_frames=self.model_config.seq_len)
    return self.generate(params, dict(music=features[None]), rng, **options)["joints"][0]

  def save_samples(self, samples, conditions, path: str, **display) -> str:
    """The joints as .npy and, for .mp4, videos with their music (`dance_samples.save_dances`)."""
    del display
    self.check_output(path)
    return dance_samples.save_dances(samples["joints"], conditions, path)

  def preview(self, params, rng: jax.Array, num: int = 2) -> np.ndarray:
    """Stick figures of dances to the first `num` test clips' music, at four instants."""
    from jaxgen.render.motion import render_frames  # pylint: disable=g-import-not-at-top

    music = dance_data.load_clips(self.config.data, "test", num)["music"]
    joints = self.generate(params, dict(music=music), rng)["joints"]
    frames = render_frames(list(joints), [f"test clip {i}" for i in range(num)])
    picks = np.linspace(0, len(frames) - 1, 4).round().astype(int)
    return np.concatenate([frames[i] for i in picks], axis=1)
