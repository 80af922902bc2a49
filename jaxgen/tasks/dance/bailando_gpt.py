"""Bailando stage 2 (Li et al., 2022): the music-driven code GPT, task `bailando_gpt`.

Loads the trained choreographic memory (task `bailando_vq`) from
`vq.workdir`, tokenises every training dance once into upper and lower codes
(one per 2**down_t frames: 5 per second at 20 fps with down_t 2; the
reference 7.5 at 60 fps with down_t 3) and computes Bailando's 438-d music
features at that code rate (`music_features.bailando_features`, the
reference's 7.5 fps extraction moved to 5 fps), standardised per column
with training statistics. Windows of block_size + 1 positions every
`window.stride` codes train the cross-conditional GPT
(`jaxgen.models.bailando_gpt`) as the reference trainer does: codes[:, :-1]
and music[:, 1:] in, codes[:, 1:] out, the sum of the upper and lower
cross-entropies.

Generation (`generate`, `dance_from_music`): the first upper and lower codes
are a training dance's first codes (the reference takes them from the test
dance's ground truth; here, with music only, one is drawn per dance), then
`bailando_gpt.sample_codes` (one `lax.scan`, a KV cache per sliding window,
greedy at temperature 0 as the reference) and the VQ decoder, in one jit.
The root trajectory starts at the training dances' mean first root position.

Not here: the actor-critic fine-tuning with the beat-alignment reward
(the reference's third stage).
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

from jaxgen.data import music_features
from jaxgen.models.bailando_gpt import BailandoGPT, BailandoGPTConfig, check_inputs, sample_codes
from jaxgen.tasks.dance import dance_data, dance_samples
from jaxgen.tasks.dance.bailando_vq import BailandoVQTask, joints_to_motion, motion_to_joints
from jaxgen.tasks.dance.dance_data import FPS, DanceMusicError
from jaxgen.tasks.registry import absolute_dependent_runs, load_run_of
from jaxgen.training.task import GenerativeTask, SampleSpec

MUSIC_DIM = music_features.BAILANDO_FEATURE_DIM


def load_vq_run(workdir: str) -> tuple[BailandoVQTask, Any]:
  """(the `bailando_vq` task, its EMA params) of a run directory, with a named error for others."""
  return load_run_of(BailandoVQTask, workdir, flag="vq.workdir")


def two_head_cross_entropy(logits, targets) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The reference loss: cross-entropy of the upper codes + that of the lower codes."""
  metrics = {}
  for name, lg, tg in zip(("upper", "lower"), logits, targets):
    ce = optax.softmax_cross_entropy_with_integer_labels(lg.astype(jnp.float32), tg)
    metrics[f"{name}/cross_entropy"] = ce.mean()
    metrics[f"{name}/accuracy"] = jnp.mean(jnp.argmax(lg, -1) == tg)
  return metrics["upper/cross_entropy"] + metrics["lower/cross_entropy"], metrics


def code_rate_features(audio: np.ndarray, sr, downsample: int, min_frames: int = 1) -> np.ndarray:
  """(n, 438) raw Bailando features of mono `audio` at FPS / downsample, one per whole code."""
  seconds = len(audio) / dance_data.check_sample_rate(sr)
  if round(seconds * FPS) < min_frames:
    raise DanceMusicError(
      f"audio: expected at least {min_frames / FPS:g} s of music, found {seconds:.3f} s"
    )
  features = music_features.bailando_features(np.asarray(audio), int(sr), fps=FPS / downsample)
  return features[: int(seconds * FPS + 1e-6) // downsample].astype(np.float32)


def check_code_batch(batch: Mapping[str, np.ndarray], config: BailandoGPTConfig) -> None:
  """Named errors for a batch that is not block_size + 1 positions of codes and finite music."""
  for key in ("upper", "lower", "music"):
    if key not in batch:
      raise ValueError(f"batch: expected key {key!r}, found keys {sorted(batch)}")
  check_inputs(config, batch["upper"], batch["lower"], batch["music"])
  if np.shape(batch["upper"])[1] != config.block_size + 1:
    raise ValueError(
      f"batch['upper']: expected {config.block_size + 1} positions (block_size + 1), "
      f"found {np.shape(batch['upper'])[1]}"
    )
  if not np.isfinite(batch["music"]).all():
    raise ValueError("batch['music']: expected finite values, found NaN or inf")


def check_temperature(temperature, default: float) -> float:
  """`temperature` (None: `default`) as a float >= 0, or a named error."""
  temperature = default if temperature is None else temperature
  if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
    raise ValueError(f"temperature: expected a number >= 0 (0: greedy), found {temperature!r}")
  return float(temperature)


class BailandoGPTTask(GenerativeTask):
  """The `bailando_gpt` task (see the module docstring).

  Batches: `upper`, `lower` (B, block_size + 1) codes, `music` (B, block_size + 1, 438).
  A relative `vq.workdir` is made absolute in `config` when the task is built.
  """

  sample_spec = SampleSpec(
    "dance.mp4", (".mp4", ".npy"), options=("temperature",), takes_audio=True
  )
  dependent_runs = ("vq.workdir",)

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    absolute_dependent_runs(config, type(self))
    self.vq_task, self.vq_params = load_vq_run(config.vq.workdir)
    if self.vq_task.config.data.to_dict() != config.data.to_dict():
      raise ValueError(
        f"data: the VQ-VAE in {config.vq.workdir!r} was trained on "
        f"{self.vq_task.config.data.to_dict()}, this config has {config.data.to_dict()}"
      )
    num_codes = self.vq_task.model_config.num_codes
    self.gpt_config = BailandoGPTConfig(
      num_codes_upper=num_codes,
      num_codes_lower=num_codes,
      music_dim=MUSIC_DIM,
      **config.gpt.to_dict(),
    )
    self.model = BailandoGPT(self.gpt_config)

  @property
  def downsample(self) -> int:
    return self.vq_task.downsample

  @property
  def code_fps(self) -> float:
    return FPS / self.downsample

  # -- data ----------------------------------------------------------------------

  def music_features(self, audio: np.ndarray, sr, min_frames: int = 1) -> np.ndarray:
    """(n, 438) raw Bailando features at the code rate, one per whole code in `audio`."""
    return code_rate_features(audio, sr, self.downsample, min_frames)

  @functools.cached_property
  def _train_codes(self) -> dict[str, np.ndarray]:
    """Upper / lower codes (N, n) and raw music features (N, n, 438) of the training dances."""
    clips = self.vq_task.train_clips
    motion = joints_to_motion(clips["joints"])
    n = motion.shape[1] // self.downsample
    upper, lower = self.vq_task.encode_codes(
      self.vq_params, jnp.asarray(motion[:, : n * self.downsample])
    )
    sr = self.config.data.sample_rate
    music = dance_data.clip_features(clips, lambda audio: self.music_features(audio, sr)[:n])
    return dict(
      upper=np.asarray(upper), lower=np.asarray(lower), music=music, root=motion[:, 0, :3]
    )

  @functools.cached_property
  def music_normalizer(self):
    return dance_data.fit_standardizer(self._train_codes["music"])

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    codes = dict(self._train_codes)
    codes["music"] = np.asarray(self.music_normalizer.normalize(codes["music"]), np.float32)
    del codes["root"]
    windows = dance_data.training_windows(
      dict(codes, pose=codes["upper"]), self.gpt_config.block_size + 1, self.config.window.stride
    )
    return {k: windows[k] for k in ("upper", "lower", "music")}

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    L = self.gpt_config.block_size + 1
    return dict(
      upper=jax.ShapeDtypeStruct((batch_size, L), jnp.int32),
      lower=jax.ShapeDtypeStruct((batch_size, L), jnp.int32),
      music=jax.ShapeDtypeStruct((batch_size, L, MUSIC_DIM), jnp.float32),
    )

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    check_code_batch(batch, self.gpt_config)

  # -- model ---------------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    return self.model.init(
      rng, batch["upper"][:, :-1], batch["lower"][:, :-1], batch["music"][:, 1:]
    )["params"]

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    upper, lower, music = batch["upper"], batch["lower"], batch["music"]
    logits = self.model.apply(
      {"params": params},
      upper[:, :-1],
      lower[:, :-1],
      music[:, 1:],
      deterministic=False,
      rngs={"dropout": rng},
    )
    return two_head_cross_entropy(logits, (upper[:, 1:], lower[:, 1:]))

  # -- generation ----------------------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self",))
  def _codes_to_motion(self, vq_params, upper, lower, start):
    motion = self.vq_task.decode_codes(vq_params, upper, lower)
    return motion.at[..., :3].add(start)

  def sample_motion(
    self, params, music: np.ndarray, rng: jax.Array, temperature: float
  ) -> np.ndarray:
    """Motion (N, n · downsample, 66) for normalised music (N, n, 438): one scan, then decode."""
    codes = self._train_codes
    first_rng, sample_rng = jax.random.split(rng)
    first = jax.random.randint(first_rng, (music.shape[0],), 0, len(codes["upper"]))
    upper, lower = sample_codes(
      self.model,
      {"params": params},
      jnp.asarray(music[:, 1:]),
      jnp.asarray(codes["upper"][first, 0]),
      jnp.asarray(codes["lower"][first, 0]),
      sample_rng,
      temperature=temperature,
      top_k=self.config.sample.get("top_k"),
      shift=self.config.sample.get("shift"),
    )
    start = jnp.asarray(codes["root"].mean(axis=0), jnp.float32)
    return np.asarray(self._codes_to_motion(self.vq_params, upper, lower, start))

  def check_options(self, options: Mapping[str, Any]) -> None:
    check_temperature(options.get("temperature"), self.config.sample.temperature)

  def conditions(self, prompts, *, seconds=None):
    raise DanceMusicError(
      "prompts: the bailando_gpt task dances to music, not text; give music files"
    )

  def audio_conditions(self, audio, sr, names) -> dict[str, list]:
    """Raw Bailando features (n_i, 438) of each music file, its waveform, rate and name."""
    features = lambda waveform, rate: self.music_features(waveform, rate, self.downsample * 2)
    return dance_samples.audio_conditions(audio, sr, names, features)

  def generate(self, params, conditions: Mapping[str, Any], rng, *, temperature=None) -> dict:
    """{"joints": (N, n · downsample, 22, 3) metres} for `conditions["music"]`.

    `music` holds raw Bailando features (N, n, 438) at the code rate, n >= 2;
    a list of (n_i, 438), one per music file, gives a list: one scan each.
    """
    temperature = check_temperature(temperature, self.config.sample.temperature)
    if isinstance(conditions.get("music"), list):
      dance = lambda music, key: self.generate(
        params, {"music": music}, key, temperature=temperature
      )
      return dance_samples.dance_each(dance, conditions["music"], rng)
    if "music" not in conditions:
      raise DanceMusicError(f"conditions: expected the key 'music', found {sorted(conditions)}")
    music = np.asarray(conditions["music"], np.float32)
    if music.ndim != 3 or music.shape[2] != MUSIC_DIM or music.shape[1] < 2:
      raise DanceMusicError(
        f"conditions['music']: expected Bailando features (N, codes >= 2, {MUSIC_DIM}), "
        f"found shape {music.shape}"
      )
    if not np.isfinite(music).all():
      raise DanceMusicError("conditions['music']: expected finite features, found NaN or inf")
    normalised = np.asarray(self.music_normalizer.normalize(music), np.float32)
    motion = self.sample_motion(params, normalised, rng, temperature)
    return dict(joints=np.asarray(motion_to_joints(motion), np.float32))

  def dance_from_music(self, params, audio: np.ndarray, sr: int, rng: jax.Array, **options):
    """Joints (T, 22, 3) at 20 fps for mono `audio` at `sr` Hz, T = its frames.

    The last partial code's frames (fewer than 2**down_t) hold the final pose.
    """
    features = self.music_features(audio, sr, min_frames=2 * self.downsample)
    joints = self.generate(params, dict(music=features[None]), rng, **options)["joints"][0]
    frames = int(len(audio) / sr * FPS + 1e-6)
    return np.concatenate([joints, np.repeat(joints[-1:], frames - len(joints), axis=0)])

  def save_samples(self, samples, conditions, path: str, **display) -> str:
    """The joints as .npy and, for .mp4, videos with their music (`dance_samples.save_dances`)."""
    del display
    self.check_output(path)
    return dance_samples.save_dances(samples["joints"], conditions, path)

  def preview(self, params, rng: jax.Array, num: int = 2) -> np.ndarray:
    """Stick figures of dances to the first `num` test clips' music, at four instants."""
    from jaxgen.render.motion import render_frames  # pylint: disable=g-import-not-at-top

    clips = dance_data.make_clips(self.config.data, "test", num)
    sr = self.config.data.sample_rate
    joints = [self.dance_from_music(params, audio, sr, rng) for audio in clips["audio"]]
    frames = render_frames(joints, [f"test clip {i}" for i in range(num)])
    picks = np.linspace(0, len(frames) - 1, 4).round().astype(int)
    return np.concatenate([frames[i] for i in picks], axis=1)
