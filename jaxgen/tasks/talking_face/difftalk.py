"""The `difftalk` task: DiffTalk-style latent diffusion of talking-face frames from speech.

DiffTalk (Shen et al. 2023, sstzal/DiffTalk) generates one frame at a time
in the latent space of a frozen first-stage autoencoder; here that is a run
of jaxgen's `autoencoder` task on talking-head frames
(`configs/autoencoder_talking_heads.py`, loaded through
`autoencoder.workdir` as the `latent_diffusion` task loads its own).

- Denoiser (`jaxgen.models.difftalk.DiffTalkDenoiser`): jaxgen's U-Net on
  [noisy latent, masked-target latent, reference-frame latent] (channels)
  with one cross-attention token, the smoothed audio feature.
- Masked target: the frame with its lower half zeroed (black) before
  encoding. DiffTalk zeroes everything below landmark 30 (the nose); the
  procedural faces are centred as a face crop, so the lower half holds the
  mouth and jaw, as in Wav2Lip.
- Reference: another frame of the same clip, at least `data.reference_gap`
  frames away (DiffTalk: 60 frames of long HDTF videos; clips here last a
  few seconds), drawn once per training frame when the data is built (as
  DiffTalk's dataset draws it in its constructor).
- Audio: each frame's Wav2Lip mel window (16 × 80) instead of DiffTalk's
  29-d DeepSpeech logits, and the windows of the 8 frames i - 4 .. i + 3
  (AD-NeRF's smoothing window; silence past the clip's ends) for
  AudioAttNet's smoothing.
- Diffusion: LDM's "linear" schedule (linear in sqrt(beta): diffusers'
  "scaled_linear") from 0.0015 to 0.0195, T = 1000, epsilon prediction,
  plain MSE (LDM's `loss_simple` with its default weights).
- Sampling: DDIM with eta 0 (DiffTalk's inference), one `jax.lax.scan`
  (`jaxgen.diffusion.editing.edit`). DiffTalk's inference keeps the known
  latents outside the lower face at every step (its `mask=` argument); with
  `sample.keep_rows` > 0 the top rows of the latent are kept from the
  masked frame's latent in the same way (0: the network alone decides).

Audio guidance (not in DiffTalk; off in the config): with
`diffusion.audio_dropout` > 0 training replaces that fraction of the audio
tokens by zeros (the null token: cross-attention then adds only its output
bias), and `sample.guidance_scale` (or the `guidance_scale` option) s > 1
samples with classifier-free guidance, eps_null + s (eps_audio - eps_null), at
twice the U-Net cost.

Frame-to-frame consistency is DiffTalk's: the AudioAttNet smoothing over
neighbouring windows, the shared reference frame of a clip and the kept
upper face. `sample.shared_noise` (not in DiffTalk, which draws noise per
frame) starts every frame of a clip from the same noise; `evaluate` measures
the jitter of the mouth either way (`configs/difftalk_talking_heads.py`
holds the numbers: independent noise flickers at ~4x the true mouth's
frame-to-frame change, shared noise moves the mouth too little). The latents of the training frames are encoded once when the data is
built (the autoencoder is frozen and its posterior mean is used, as
DiffTalk's VQ first stage is deterministic), so a training step runs the
U-Net and the audio networks only.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data import audio as audio_lib
from jaxgen.data import face_render, talking_heads
from jaxgen.data.images import to_uint8
from jaxgen.diffusion import diffusion_loss, editing, guidance, make_schedule, samplers
from jaxgen.diffusion import timesteps as timesteps_lib
from jaxgen.metrics import image_quality
from jaxgen.models import difftalk as difftalk_lib
from jaxgen.models.unet_config import UNetConfig
from jaxgen.nn import precision
from jaxgen.pipelines.frozen_autoencoder import FrozenAutoencoder, latent_std
from jaxgen.render.grid import make_grid
from jaxgen.tasks.image.latent_diffusion import check_autoencoder, load_autoencoder
from jaxgen.tasks.registry import absolute_dependent_runs
from jaxgen.tasks.talking_face import talking_data, talking_samples, talking_table
from jaxgen.tasks.talking_face.talking_data import TalkingClips
from jaxgen.training.task import GenerativeTask, SampleSpec

FPS = talking_heads.FPS
DATA_KEYS = ("num_clips", "seconds", "size", "seed", "reference_gap")
SAMPLING_OPTIONS = ("num_steps", "guidance_scale")
# LDM's DDIMSampler (DiffTalk's ddim_ldm_ref_inpaint.py): "uniform" timesteps range(0, T, T/n) + 1,
# and the last step's previous alpha-bar is alphas_cumprod[0], not 1.
DDIM_OPTIONS = dict(
  eta=0.0, prediction_type="epsilon", timestep_spacing="leading", steps_offset=1,
  set_alpha_to_one=False,
)  # fmt: skip
SMOOTHING_OFFSETS = np.arange(difftalk_lib.SMOOTHING_WINDOWS) - difftalk_lib.SMOOTHING_WINDOWS // 2


class DiffTalkConfigError(ValueError):
  """A `data`, `unet`, `diffusion` or `sample` setting the DiffTalk task cannot use."""


class DiffTalkBatchError(ValueError):
  """A batch or condition whose arrays do not have the shapes the task expects."""


def check_data_config(data: Mapping[str, Any]) -> None:
  """Named errors for a `data` block clips and reference frames cannot be drawn from."""
  missing = [key for key in DATA_KEYS if key not in data]
  if missing:
    raise DiffTalkConfigError(f"data: expected keys {DATA_KEYS}, missing {missing}")
  frames = data["seconds"] * FPS
  gap = data["reference_gap"]
  if isinstance(gap, bool) or not isinstance(gap, int) or gap < 1:
    raise DiffTalkConfigError(f"data.reference_gap: expected an integer >= 1, found {gap!r}")
  if frames < 2 * gap:
    raise DiffTalkConfigError(
      f"data.reference_gap: every frame needs a reference at least {gap} frames away, so a "
      f"clip needs at least {2 * gap} frames; data.seconds={data['seconds']!r} gives {frames:g}"
    )


def neighbour_windows(mel: np.ndarray) -> np.ndarray:
  """(..., T, 16, 80) per-frame windows -> (..., T, 8, 16, 80): frame i's windows of i-4 .. i+3.

  Frames before the clip's start or past its end hear silence (-4).
  """
  mel = np.asarray(mel, np.float32)
  num_frames = mel.shape[-3]
  pad = difftalk_lib.SMOOTHING_WINDOWS // 2
  widths = [(0, 0)] * (mel.ndim - 3) + [(pad, pad), (0, 0), (0, 0)]
  padded = np.pad(mel, widths, constant_values=audio_lib.MEL_SILENCE)
  index = np.arange(num_frames)[:, None] + SMOOTHING_OFFSETS + pad
  return padded[..., index, :, :]


def reference_indices(rng: np.random.Generator, num_frames: int, gap: int) -> np.ndarray:
  """(num_frames,) int: for frame i a frame j drawn uniformly among those with |i - j| >= gap."""
  frames = np.arange(num_frames)
  choices = np.empty(num_frames, np.int64)
  for i in frames:
    allowed = frames[np.abs(frames - i) >= gap]
    choices[i] = rng.choice(allowed)
  return choices


def masked_lower_half(frames: np.ndarray) -> np.ndarray:
  """uint8 frames (..., S, S, 3) with rows S/2 .. S-1 set to 0 (black: -1 inside the model)."""
  masked = np.array(frames, copy=True)
  masked[..., frames.shape[-3] // 2 :, :, :] = 0
  return masked


def check_condition_arrays(frames: np.ndarray, reference: np.ndarray, mel: np.ndarray, size: int):
  """Named errors unless frames (T, S, S, 3) and reference (S, S, 3) are uint8, mel (T, 16, 80)."""
  face = (size, size, 3)
  talking_samples.check_reference_face(reference, size=size)
  frames, mel = np.asarray(frames), np.asarray(mel)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != face:
    raise DiffTalkBatchError(
      f"frames: expected uint8 (T, {size}, {size}, 3) faces, found {frames.dtype} {frames.shape}"
    )
  expected_mel = (len(frames), audio_lib.MEL_WINDOW, audio_lib.NUM_MELS)
  if mel.shape != expected_mel:
    raise DiffTalkBatchError(
      f"mel: expected one (16, 80) window per frame {expected_mel}, found {mel.shape}"
    )


def scaled_autoencoder(autoencoder: FrozenAutoencoder, config) -> FrozenAutoencoder:
  """The autoencoder at `autoencoder.scaling_factor`, or 1/std of training-frame latents.

  The std is measured on every frame of the first `autoencoder.num_stat_clips` training clips.
  """
  scaling = config.autoencoder.get("scaling_factor")
  if scaling is None:
    data = config.data
    clips = talking_heads.make_talking_heads(
      "train",
      num_clips=config.autoencoder.num_stat_clips,
      seconds=data.seconds,
      size=data.size,
      seed=data.seed,
    )
    scaling = 1.0 / latent_std(autoencoder, clips["video"].reshape((-1, data.size, data.size, 3)))
  if not scaling > 0:
    raise DiffTalkConfigError(
      f"autoencoder.scaling_factor: expected a positive number, found {scaling}"
    )
  return autoencoder.with_scaling_factor(scaling)


def check_diffusion_config(diffusion: Mapping[str, Any]) -> float:
  """`diffusion.audio_dropout` (0 for runs saved before it), after named errors for it and for
  a prediction type other than DiffTalk's."""
  if diffusion["prediction_type"] != "epsilon":
    raise DiffTalkConfigError(
      f"diffusion.prediction_type: DiffTalk predicts the noise (LDM's 'eps'); expected "
      f"'epsilon', found {diffusion['prediction_type']!r}"
    )
  dropout = diffusion.get("audio_dropout", 0.0)
  if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
    raise DiffTalkConfigError(
      f"diffusion.audio_dropout: expected a fraction in [0, 1), found {dropout!r}"
    )
  return float(dropout)


def guided_denoiser(model, variables, masked, reference, context, guidance_scale: float):
  """`model_fn(x, t)` of the U-Net given the conditions; a scale other than 1 guides against
  the null (zero) audio token, both branches in one batched call."""

  def conditional_fn(x, t, cond):
    return model.apply(variables, x, t, *cond, method=difftalk_lib.DiffTalkDenoiser.denoise)

  cond = (masked, reference, context)
  uncond = (masked, reference, jnp.zeros_like(context))  # unused at scale 1 (static here)
  return guidance.classifier_free_guidance(conditional_fn, cond, uncond, guidance_scale)


def check_keep_rows(keep: Any, latent_side: int) -> int:
  """`sample.keep_rows`, or a named error unless it is an int in [0, latent_side / 2]."""
  if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= latent_side // 2:
    raise DiffTalkConfigError(
      f"sample.keep_rows: expected an integer in [0, {latent_side // 2}] (latent rows of the "
      f"unmasked upper half), found {keep!r}"
    )
  return keep


def check_sampling_options(
  options: Mapping[str, Any], sample: Mapping[str, Any], num_train: int, audio_dropout: float
) -> tuple[int, float]:
  """(DDIM steps, guidance scale) `options` ask for (defaults from `sample`), or a
  SamplingOptionError."""
  unknown = sorted(set(options) - set(SAMPLING_OPTIONS))
  if unknown:
    raise samplers.SamplingOptionError(
      unknown[0], f"not a DiffTalk sampling option; expected one of {SAMPLING_OPTIONS}"
    )
  num_steps = options.get("num_steps")
  num_steps = sample["num_steps"] if num_steps is None else num_steps
  try:
    timesteps_lib.check_num_steps(num_steps, num_train)
  except ValueError as e:
    raise samplers.SamplingOptionError("num_steps", f"{e} (DDIM steps; sample.num_steps)") from e
  scale = options.get("guidance_scale")
  scale = sample.get("guidance_scale", 1.0) if scale is None else scale
  if (
    isinstance(scale, bool)
    or not isinstance(scale, (int, float))
    or not math.isfinite(scale)
    or scale < 0
  ):
    raise samplers.SamplingOptionError(
      "guidance_scale", f"expected a finite number >= 0, found {scale!r}"
    )
  if scale != 1.0 and not audio_dropout:
    raise samplers.SamplingOptionError(
      "guidance_scale",
      f"expected 1: this run trained with diffusion.audio_dropout=0, so it has no null-audio "
      f"model to guide against; found {scale!r}",
    )
  return int(num_steps), float(scale)


def upper_rows_mask(shape: tuple[int, int, int], rows: int) -> jax.Array | None:
  """(B, h, w, 1) latent mask for `editing.edit`: 0 on the top `rows` rows (kept), 1 below.

  None when no row is kept.
  """
  if not rows:
    return None
  generate = (jnp.arange(shape[1]) >= rows).astype(jnp.float32)
  return jnp.broadcast_to(generate[None, :, None, None], tuple(shape) + (1,))


def check_batch_arrays(batch: Mapping[str, np.ndarray], expected: Mapping[str, Any]) -> None:
  """Named error unless `batch` holds every key of `expected` with its shape and dtype."""
  for key, spec in expected.items():
    value = np.asarray(batch[key]) if key in batch else None
    if value is None or value.shape != spec.shape or value.dtype != spec.dtype:
      found = "nothing" if value is None else f"{value.dtype} {value.shape}"
      raise DiffTalkBatchError(f"batch[{key!r}]: expected {spec.dtype} {spec.shape}, found {found}")


def mouth_jitter(frames: np.ndarray) -> float:
  """Mean |change of the judged mouth opening| between consecutive frames (fractions of the side)."""
  opening = face_render.mouth_measurements(frames)["opening"]
  return float(np.mean(np.abs(np.diff(opening, axis=-1))))


def _encode_in_chunks(encode, images: np.ndarray, chunk: int = 256) -> np.ndarray:
  out = []
  for start in range(0, len(images), chunk):
    x = jnp.asarray(images[start : start + chunk], jnp.float32) / 127.5 - 1.0
    out.append(np.asarray(encode(x)))
  return np.concatenate(out)


class DiffTalkTask(GenerativeTask):
  """The `difftalk` task (module docstring). Config sections: autoencoder, data, model, unet,
  diffusion, sample, eval. Batches: {"latent", "masked_latent", "reference_latent"} float32
  (B, h, w, C) scaled latents and "audio" (B, 8, 16, 80) neighbouring mel windows.

  `autoencoder=` injects a FrozenAutoencoder (tests) instead of loading `autoencoder.workdir`.
  """

  dependent_runs = ("autoencoder.workdir",)
  sample_spec = SampleSpec("talking_face.mp4", (".mp4",), SAMPLING_OPTIONS, takes_speech=True)

  def __init__(self, config, autoencoder: FrozenAutoencoder | None = None):
    absolute_dependent_runs(config, type(self))
    self.config = config
    check_data_config(config.data)
    self.size = config.data.size
    if autoencoder is None:
      autoencoder = load_autoencoder(config.autoencoder.workdir, config.autoencoder.get("step"))
    try:
      check_autoencoder(autoencoder.config, self.size)
    except ValueError as e:
      raise DiffTalkConfigError(str(e).replace("data.resolution", "data.size")) from e
    self.autoencoder = scaled_autoencoder(autoencoder, config)
    self.latent_side = self.size // autoencoder.config.downsample_factor
    self.latent_channels = autoencoder.config.latent_channels
    self.unet_config = UNetConfig(**config.unet.to_dict())
    difftalk_lib.check_difftalk_unet(self.unet_config, self.latent_channels)
    if self.latent_side % 2**self.unet_config.num_downsamples:
      raise DiffTalkConfigError(
        f"unet: {self.unet_config.num_downsamples} downsamplings need a latent side divisible by "
        f"{2**self.unet_config.num_downsamples}, found {self.latent_side} (data.size {self.size})"
      )
    d = config.diffusion
    self.schedule = make_schedule(d.schedule, d.num_train_timesteps, d.beta_start, d.beta_end)
    self.audio_dropout = check_diffusion_config(d)
    check_keep_rows(config.sample.keep_rows, self.latent_side)
    self.check_options({})
    self.model = difftalk_lib.DiffTalkDenoiser(
      self.unet_config, **precision.model_policy(config.get("model"))
    )

  # -- data ------------------------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self",))
  def encode(self, images: jax.Array) -> jax.Array:
    """Images in [-1, 1] -> scaled posterior-mean latents."""
    return self.autoencoder.encode(images)

  def train_arrays(self) -> dict[str, np.ndarray]:
    data = self.config.data
    clips = talking_data.make_clips(data, "train")
    n, t = clips.video.shape[:2]
    faces = clips.video.reshape((n * t,) + clips.video.shape[2:])
    latents = _encode_in_chunks(self.encode, faces).reshape((n, t) + self._latent_shape)
    masked = _encode_in_chunks(self.encode, masked_lower_half(faces))
    rng = np.random.default_rng([data.seed, 1])
    references = np.stack([reference_indices(rng, t, data.reference_gap) for _ in range(n)])
    reference_latents = latents[np.arange(n)[:, None], references]
    flat = lambda x: x.reshape((n * t,) + x.shape[2:])
    return dict(
      latent=flat(latents),
      masked_latent=masked,
      reference_latent=flat(reference_latents),
      audio=flat(neighbour_windows(clips.mel)),
    )

  @property
  def _latent_shape(self) -> tuple[int, int, int]:
    return (self.latent_side, self.latent_side, self.latent_channels)

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    latent = jax.ShapeDtypeStruct((batch_size,) + self._latent_shape, jnp.float32)
    audio = (difftalk_lib.SMOOTHING_WINDOWS, audio_lib.MEL_WINDOW, audio_lib.NUM_MELS)
    return dict(
      latent=latent,
      masked_latent=latent,
      reference_latent=latent,
      audio=jax.ShapeDtypeStruct((batch_size,) + audio, jnp.float32),
    )

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    check_batch_arrays(batch, self.abstract_batch(len(batch["latent"])))

  # -- model -----------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    z = jnp.zeros(batch["latent"].shape, jnp.float32)
    t = jnp.zeros((z.shape[0],), jnp.int32)
    return self.model.init(rng, z, t, z, z, jnp.zeros(batch["audio"].shape))["params"]

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    variables = {"params": params}
    context = self.model.apply(
      variables, batch["audio"], method=difftalk_lib.DiffTalkDenoiser.condition
    )
    if self.audio_dropout:
      drop_rng, rng = jax.random.split(rng)
      context = guidance.drop_condition(drop_rng, context, 0 * context[:1], self.audio_dropout)

    def model_fn(noisy, t):
      return self.model.apply(
        variables,
        noisy,
        t,
        batch["masked_latent"],
        batch["reference_latent"],
        context,
        method=difftalk_lib.DiffTalkDenoiser.denoise,
      )

    loss, aux = diffusion_loss(
      model_fn, batch["latent"], rng, self.schedule, prediction_type="epsilon"
    )
    return loss, dict(mse=aux["mse"], loss=loss)

  # -- sampling --------------------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self", "num_steps", "guidance_scale"))
  def sample_latents(
    self, params, masked, reference, audio, noise, *, num_steps: int, guidance_scale: float = 1.0
  ):
    """Frame latents from masked latents, references, audio and noise: one DDIM (eta 0) scan;
    the audio networks run once, outside it. A guidance scale other than 1 guides against the
    null audio token (both branches in one batched U-Net call per step)."""
    variables = {"params": params}
    context = self.model.apply(variables, audio, method=difftalk_lib.DiffTalkDenoiser.condition)
    model_fn = guided_denoiser(self.model, variables, masked, reference, context, guidance_scale)
    plan = samplers.make_plan(self.schedule, "ddim", num_steps, **DDIM_OPTIONS)
    keep = upper_rows_mask(masked.shape[:3], self.config.sample.keep_rows)
    return editing.edit(model_fn, plan, self.schedule, masked, noise, keep_mask=keep)

  def check_options(self, options: Mapping[str, Any]) -> tuple[int, float]:
    """(DDIM steps, guidance scale) of `options`, or a SamplingOptionError."""
    return check_sampling_options(
      options, self.config.sample, self.schedule.num_train_timesteps, self.audio_dropout
    )

  def generate_clip(
    self, params, frames, reference, mel, rng, *, shared_noise=None, **options
  ) -> np.ndarray:
    """uint8 (T, S, S, 3): the frames re-voiced for `mel`.

    frames: uint8 (T, S, S, 3), the video to dub (only their upper halves are
    seen); reference: uint8 (S, S, 3); mel: (T, 16, 80) each frame's window;
    options: `num_steps`, `guidance_scale` (None or absent: `sample.*`).
    """
    check_condition_arrays(frames, reference, mel, self.size)
    num_steps, guidance_scale = self.check_options(options)
    shared = self.config.sample.shared_noise if shared_noise is None else shared_noise
    masked = self.encode(jnp.asarray(masked_lower_half(frames), jnp.float32) / 127.5 - 1.0)
    ref = self.encode(jnp.asarray(reference[None], jnp.float32) / 127.5 - 1.0)
    ref = jnp.broadcast_to(ref, masked.shape)
    shape = (1 if shared else len(frames),) + self._latent_shape
    noise = jnp.broadcast_to(jax.random.normal(rng, shape), masked.shape)
    audio = jnp.asarray(neighbour_windows(mel))
    z = self.sample_latents(
      params, masked, ref, audio, noise, num_steps=num_steps, guidance_scale=guidance_scale
    )
    return to_uint8(np.asarray(self.autoencoder.decode(z)))

  def speech_conditions(self, audio, sr, names, reference, reference_name="reference"):
    return talking_samples.speech_conditions(audio, sr, names, reference, reference_name, self.size)

  def generate(self, params, conditions: Mapping[str, Any], rng: jax.Array, **options):
    """{"video": [uint8 (T_i, S, S, 3)]} for `talking_samples` conditions: per utterance its mel
    windows (T_i, 16, 80), the frames to dub ("target", only their upper halves are seen) and
    "reference" frames, of which the first is the reference. Utterance i samples from
    fold_in(rng, i)."""
    self.check_options(options)
    index = itertools.count()

    def talk(mel, target, reference):
      clip_rng = jax.random.fold_in(rng, next(index))
      return self.generate_clip(params, target, reference[0], mel, clip_rng, **options)

    return talking_samples.talk_each(
      talk, conditions["mel"], conditions["target"], conditions["reference"]
    )

  def save_samples(self, samples, conditions, path: str, **display) -> str:
    """Each utterance as `.npy` frames and an MP4 with its speech (`talking_samples`)."""
    return talking_samples.save_talking(samples["video"], conditions, path, **display)

  def preview(self, params, rng: jax.Array, num_frames: int = 8) -> np.ndarray:
    """Frames of a held-out clip (top row) and the model's dubbing of them (bottom row)."""
    clips = talking_data.make_clips(self.config.data, "test", 1)
    video = self.generate_clip(params, clips.video[0], clips.video[0, 0], clips.mel[0], rng)
    shown = np.linspace(0, clips.num_frames - 1, num_frames).round().astype(int)
    rows = np.concatenate([clips.video[0, shown], video[shown]])
    captions = [f"true {i}" for i in shown] + [f"sample {i}" for i in shown]
    return make_grid(rows, captions, ncols=num_frames, scale=3)


def evaluate(
  task: DiffTalkTask,
  params,
  *,
  num_clips=None,
  num_steps=None,
  guidance_scale=None,
  shared_noise=None,
  shuffle_audio=False,
) -> tuple[dict[str, float], np.ndarray, TalkingClips]:
  """Held-out clips (test identities and utterances) dubbed from their own speech.

  Each clip's first frame is its reference; its frames' upper halves are
  the masked input. Returns (metrics, generated uint8 (N, T, S, S, 3),
  clips): mouth-opening correlation with the ground truth, SSIM and PSNR
  against the true frames, the mouth's jitter (mean |Δ opening| between
  frames) of the samples and of the true frames, and sampling seconds per
  second of video (clips after the first, which compiles; nan for one clip). `shuffle_audio` gives clip i the
  speech of clip i + 1 (the shuffled-audio baseline).
  """
  clips = talking_data.make_clips(task.config.data, "test", num_clips or task.config.eval.num_clips)
  mel = clips.mel[talking_table.shuffled_pairing(clips.num_clips)] if shuffle_audio else clips.mel
  run = lambda i: task.generate_clip(
    params,
    clips.video[i],
    clips.video[i, 0],
    mel[i],
    jax.random.PRNGKey(i),
    num_steps=num_steps,
    guidance_scale=guidance_scale,
    shared_noise=shared_noise,
  )
  videos = [run(0)]  # Compiles; the clips after it are timed.
  start = time.perf_counter()
  videos += [run(i) for i in range(1, clips.num_clips)]
  timed_clips = max(clips.num_clips - 1, 1)
  seconds = (time.perf_counter() - start) if clips.num_clips > 1 else math.nan
  videos = np.stack(videos)
  flat = lambda v: v.reshape((-1,) + v.shape[2:])
  metrics = dict(
    mouth_correlation=face_render.mouth_correlation(videos, clips.mouth),
    ssim=float(jnp.mean(image_quality.ssim(flat(videos), flat(clips.video), data_range=255.0))),
    psnr=float(jnp.mean(image_quality.psnr(flat(videos), flat(clips.video), data_range=255.0))),
    jitter=mouth_jitter(videos),
    jitter_ground_truth=mouth_jitter(clips.video),
    seconds_per_video_second=seconds / (timed_clips * videos.shape[1] / FPS),
  )
  return metrics, videos, clips
