"""Wav2Lip (Prajwal et al., 2020): the lip-sync generator and its two discriminators.

The networks of Rudrabha/Wav2Lip, layer for layer, in NHWC:

* `Wav2LipGenerator` (`Wav2Lip`): a face encoder over the masked target
  frame and a reference frame (6 channels, 96x96) down to 1x1, an audio
  encoder over a 16-frame mel window down to 512x1x1, and a decoder that
  upsamples the audio embedding back to 96x96, concatenating the face
  encoder's feature map of each size (U-Net skips); sigmoid output.
* `SyncNetColor` (`SyncNet_color`): the lip-sync expert. Lower halves of 5
  frames (15 channels) and the mel window of those frames -> two
  L2-normalised 512-d embeddings; their cosine is the in-sync probability.
* `QualityDiscriminator` (`Wav2Lip_disc_qual`): lower half of each frame ->
  probability of being real, through convs without normalisation.

Layout and values:

* faces are NHWC (or NTHWC with time) floats in [0, 1]. The reference reads
  frames with `cv2.imread`, so its released weights expect **BGR**; the
  converter (`jaxgen.convert.wav2lip`) moves weights, never channels. Feed
  BGR to reference weights (`reverse_channel_order` flips every RGB triple)
  and whatever order the training data has to weights trained here.
* The generator's 6 channels are [masked target, reference], as the
  reference concatenates them: the target frame with its lower half (rows
  48..95) zeroed, then an unmasked frame of the same person.
* mel windows are (time, mel) = (16, 80) per video frame (80 mel frames per
  second: 0.2 s); the reference's (1, 80, 16) image is their transpose.
* Time is folded into the batch as in the reference; outputs keep the input's
  leading axes, (B, T, ...) or (B, ...).

`width` (each network's attribute; 1.0, the reference) scales the channels
of every conv block, embeddings included (512 -> round(512 * width)), but
not the RGB output or the discriminator's prediction: a CPU-sized Wav2Lip at
the reference's 96x96 faces and layer list (width 1/8 has ~1/64 of the
weights).

BatchNorm follows torch exactly (eps 1e-5, momentum 0.1, biased variance to
normalise, unbiased variance into the running estimate), with the running
statistics in the `batch_stats` collection: call with `train=True` and
`mutable=["batch_stats"]` to train. Weights start as torch's default init
(uniform, bound 1/sqrt(fan_in)). Submodules are named after the reference's
`nn.Sequential` indices (`face_encoder_blocks_1_0` / `conv_block_0` is
`face_encoder_blocks.1.0.conv_block.0`), so the weight converter is a
declarative rename plus layout transform.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.nn import normalization
from jaxgen.nn import partitioning as pt
from jaxgen.nn.normalization import BatchNorm2d, BatchStatisticsError  # noqa: F401 (re-exported)

FACE_SIZE = 96
FACE_CHANNELS = 6  # masked target (3) + reference (3)
MEL_STEPS = 16  # mel frames per video frame's window (0.2 s at 80 Hz)
NUM_MELS = 80
SYNC_FRAMES = 5  # frames the lip-sync expert sees at once
BATCH_NORM_EPSILON = normalization.EPSILON
BATCH_NORM_MOMENTUM = normalization.BATCH_NORM_MOMENTUM
LEAKY_SLOPE = 0.01
# The reference's generator loss (hq_wav2lip_train.py) is
#   sync_wt * sync + disc_wt * perceptual + (1 - sync_wt - disc_wt) * L1,
# with sync_wt 0 until the expert's loss on the evaluation set falls below
# SYNC_LOSS_THRESHOLD, then SYNC_WEIGHT (SYNC_WEIGHT_WITHOUT_GAN, disc_wt 0,
# in wav2lip_train.py).
DISC_WEIGHT = 0.07
SYNC_WEIGHT = 0.03
SYNC_WEIGHT_WITHOUT_GAN = 0.01
SYNC_LOSS_THRESHOLD = 0.75

Dtype = Any
Precision = Any
DEFAULT_PRECISION = jax.lax.Precision.HIGHEST


class Wav2LipInputError(ValueError):
  """An input of a Wav2Lip network or loss has the wrong shape."""


class WidthError(ValueError):
  """A channel-width multiplier outside (0, 1]."""


# ---------------------------------------------------------------------------
# Layer tables, transcribed from models/wav2lip.py and models/syncnet.py.


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """One conv block as the reference builds it: `Conv2d(cin, features, kernel, stride, padding)`."""

  features: int
  kernel: int
  stride: int | tuple[int, int] = 1
  padding: int = 1
  residual: bool = False
  transposed: bool = False  # nn.ConvTranspose2d (a `Conv2dTranspose` block)
  output_padding: int = 0  # transposed convs only


def widened_spec(spec: ConvSpec, width: float) -> ConvSpec:
  """`spec` with `features` scaled by `width` (rounded, at least 1); width 1 is the reference."""
  if width == 1:
    return spec
  return dataclasses.replace(spec, features=max(1, round(spec.features * width)))


def check_width(width: float) -> float:
  """`width` as a float in (0, 1], or a `WidthError`."""
  if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 1:
    raise WidthError(
      f"width: expected a channel multiplier in (0, 1] (1: the reference's channels), "
      f"found {width!r}"
    )
  return float(width)


def _residual(features: int, count: int) -> tuple[ConvSpec, ...]:
  return tuple(ConvSpec(features, 3, residual=True) for _ in range(count))


def _down(features: int, residuals: int, stride: int | tuple[int, int] = 2) -> tuple[ConvSpec, ...]:
  return (ConvSpec(features, 3, stride), *_residual(features, residuals))


def _up(features: int, residuals: int) -> tuple[ConvSpec, ...]:
  up = ConvSpec(features, 3, 2, transposed=True, output_padding=1)
  return (up, *_residual(features, residuals))


_TO_EMBEDDING = (ConvSpec(512, 3, padding=0), ConvSpec(512, 1, padding=0))  # 3x3 -> 1x1

# Stages of `face_encoder_blocks` (each an nn.Sequential); 96 -> 48 -> ... -> 3 -> 1.
FACE_ENCODER = (
  (ConvSpec(16, 7, padding=3),),
  _down(32, 2),
  _down(64, 3),
  _down(128, 2),
  _down(256, 2),
  _down(512, 1),
  _TO_EMBEDDING,
)


def _audio_encoder(residuals_at_256: int) -> tuple[ConvSpec, ...]:
  # (80 mels, 16 steps) -> 27x16 -> 9x6 -> 3x3 -> 1x1.
  return (
    ConvSpec(32, 3),
    *_residual(32, 2),
    *_down(64, 2, stride=(3, 1)),
    *_down(128, 2, stride=3),
    *_down(256, residuals_at_256, stride=(3, 2)),
    *_TO_EMBEDDING,
  )


GENERATOR_AUDIO_ENCODER = _audio_encoder(1)
SYNCNET_AUDIO_ENCODER = _audio_encoder(2)

# Stages of `face_decoder_blocks`: 1x1 -> 3x3 -> 6 -> ... -> 96.
FACE_DECODER = (
  (ConvSpec(512, 1, padding=0),),
  (ConvSpec(512, 3, 1, padding=0, transposed=True), *_residual(512, 1)),
  _up(512, 2),
  _up(384, 2),
  _up(256, 2),
  _up(128, 2),
  _up(64, 2),
)
OUTPUT_CONV = ConvSpec(32, 3)  # output_block.0, a conv block
OUTPUT_PROJECTION = ConvSpec(3, 1, padding=0)  # output_block.1, a plain conv (then sigmoid)

# SyncNet_color's `face_encoder`, lower halves (48 x 96) -> 1x1.
SYNCNET_FACE_ENCODER = (
  ConvSpec(32, 7, padding=3),
  ConvSpec(64, 5, (1, 2), padding=1),
  *_residual(64, 2),
  *_down(128, 3),
  *_down(256, 2),
  *_down(512, 2),
  ConvSpec(512, 3, 2),
  *_TO_EMBEDDING,
)


# Wav2Lip_disc_qual's `face_encoder_blocks` (no normalisation), lower halves -> 1x1.
DISCRIMINATOR_ENCODER = (
  (ConvSpec(32, 7, 1, 3),),
  (ConvSpec(64, 5, (1, 2), 2), ConvSpec(64, 5, 1, 2)),
  (ConvSpec(128, 5, 2, 2), ConvSpec(128, 5, 1, 2)),
  (ConvSpec(256, 5, 2, 2), ConvSpec(256, 5, 1, 2)),
  (ConvSpec(512, 3, 2, 1), ConvSpec(512, 3, 1, 1)),
  (ConvSpec(512, 3, 2, 1), ConvSpec(512, 3, 1, 1)),
  (ConvSpec(512, 3, 1, 0), ConvSpec(512, 1, 1, 0)),
)
PREDICTION = ConvSpec(1, 1, padding=0)  # binary_pred.0, a plain conv (then sigmoid)


# ---------------------------------------------------------------------------
# Building blocks (models/conv.py).


def _widened(x: jax.Array) -> jax.Array:
  """Statistics, sigmoids and losses in float32 at least (float64 stays float64)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


# torch's default conv init (kaiming_uniform, a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_TORCH_KERNEL_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _conv(spec: ConvSpec, in_features: int, dtype: Dtype, precision: Precision, name: str):
  """torch's `nn.Conv2d` (or `nn.ConvTranspose2d`) of `spec`, with torch's default init.

  A transposed conv is a stride-1 conv over the input dilated by the stride
  and padded by k - 1 - p (plus output_padding after), with the kernel
  flipped: `transpose_kernel=True` stores the (kh, kw, out, in) kernel of the
  conv it transposes, torch's (in, out, kh, kw) weight transposed. torch
  takes a transposed conv's init fan_in from out * k * k, as flax does.
  """
  transposed = spec.transposed
  bound = 1 / math.sqrt((spec.features if transposed else in_features) * spec.kernel**2)
  low = spec.kernel - 1 - spec.padding
  layer, options, axes = (
    (nn.ConvTranspose, {"transpose_kernel": True}, ("conv_out", "conv_in"))
    if transposed
    else (nn.Conv, {}, ("conv_in", "conv_out"))
  )
  return layer(
    spec.features,
    (spec.kernel, spec.kernel),
    strides=_pair(spec.stride),
    padding=((low, low + spec.output_padding) if transposed else (spec.padding,) * 2,) * 2,
    dtype=dtype,
    param_dtype=jnp.float32,
    precision=precision,
    kernel_init=pt.annotated(_TORCH_KERNEL_INIT, (None, None, *axes)),
    bias_init=pt.annotated(
      functools.partial(jax.random.uniform, minval=-bound, maxval=bound), ("conv_out",)
    ),
    name=name,
    **options,
  )


class Conv2dBlock(nn.Module):
  """`Conv2d` of models/conv.py: conv, BatchNorm, optional residual added before the ReLU."""

  spec: ConvSpec
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = _conv(self.spec, x.shape[-1], self.dtype, self.precision, "conv_block_0")(x)
    y = BatchNorm2d(self.dtype, name="conv_block_1")(y, train)
    if self.spec.residual:
      y = y + x
    return nn.relu(y)


class Conv2dTransposeBlock(nn.Module):
  """`Conv2dTranspose` of models/conv.py: transposed conv, BatchNorm, ReLU."""

  spec: ConvSpec
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    spec = dataclasses.replace(self.spec, transposed=True)
    y = _conv(spec, x.shape[-1], self.dtype, self.precision, "conv_block_0")(x)
    return nn.relu(BatchNorm2d(self.dtype, name="conv_block_1")(y, train))


class NoNormConv2dBlock(nn.Module):
  """`nonorm_Conv2d` of models/conv.py: conv, LeakyReLU(0.01)."""

  spec: ConvSpec
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = _conv(self.spec, x.shape[-1], self.dtype, self.precision, "conv_block_0")(x)
    return nn.leaky_relu(y, LEAKY_SLOPE)


def _stage(module: nn.Module, specs: Sequence[ConvSpec], prefix: str, x: jax.Array, train: bool):
  """Conv blocks named `{prefix}_{i}` in the calling module: one reference `nn.Sequential`."""
  for i, spec in enumerate(specs):
    block = Conv2dTransposeBlock if spec.transposed else Conv2dBlock
    spec = widened_spec(spec, check_width(module.width))
    x = block(spec, module.dtype, module.precision, name=f"{prefix}_{i}")(x, train)
  return x


def mel_image(mel: jax.Array) -> jax.Array:
  """(N, 16, 80) mel windows -> the reference's one-channel (80 mels, 16 steps) image, NHWC."""
  return jnp.swapaxes(mel, -1, -2)[..., None]


# ---------------------------------------------------------------------------
# The networks.


class Wav2LipGenerator(nn.Module):
  """`Wav2Lip`. `__call__(audio_windows, faces, *, train=False)` -> frames in [0, 1].

  audio_windows: (B, T, 16, 80) or (B, 16, 80) mel windows, one per frame.
  faces: (B, T, 96, 96, 6) or (B, 96, 96, 6), [masked target, reference].
  Returns (B, T, 96, 96, 3) or (B, 96, 96, 3).
  """

  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION
  width: float = 1.0  # channel multiplier of every conv but the RGB output

  @nn.compact
  def __call__(self, audio_windows: jax.Array, faces: jax.Array, *, train: bool = False):
    check_generator_inputs(audio_windows, faces)
    leading = faces.shape[:-3]
    x = faces.reshape((-1,) + faces.shape[-3:])
    mel = audio_windows.reshape((-1,) + audio_windows.shape[-2:])
    audio = _stage(self, GENERATOR_AUDIO_ENCODER, "audio_encoder", mel_image(mel), train)
    skips = []
    for i, specs in enumerate(FACE_ENCODER):
      x = _stage(self, specs, f"face_encoder_blocks_{i}", x, train)
      skips.append(x)
    x = audio
    for i, specs in enumerate(FACE_DECODER):
      x = _stage(self, specs, f"face_decoder_blocks_{i}", x, train)
      x = jnp.concatenate([x, skips.pop()], axis=-1)
    output_conv = widened_spec(OUTPUT_CONV, self.width)
    x = Conv2dBlock(output_conv, self.dtype, self.precision, name="output_block_0")(x, train)
    x = _conv(OUTPUT_PROJECTION, x.shape[-1], self.dtype, self.precision, "output_block_1")(x)
    x = nn.sigmoid(_widened(x))
    return x.reshape(leading + x.shape[1:])


class SyncNetColor(nn.Module):
  """`SyncNet_color`, the lip-sync expert. `__call__(mel, faces)` -> (audio, face) embeddings.

  mel: (B, 16, 80) windows; faces: (B, 48, 96, 15), the lower halves of 5
  frames stacked on channels (`expert_face_window`). Both embeddings are
  (B, 512), non-negative (the last block ends in a ReLU) and L2-normalised.
  """

  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION
  width: float = 1.0  # channel multiplier (embeddings are 512 * width)

  @nn.compact
  def __call__(self, mel: jax.Array, faces: jax.Array, *, train: bool = False):
    check_syncnet_inputs(mel, faces)
    face = _stage(self, SYNCNET_FACE_ENCODER, "face_encoder", faces, train)
    audio = _stage(self, SYNCNET_AUDIO_ENCODER, "audio_encoder", mel_image(mel), train)
    flat = lambda e: _l2_normalize(_widened(e.reshape(e.shape[0], -1)))
    return flat(audio), flat(face)


class QualityDiscriminator(nn.Module):
  """`Wav2Lip_disc_qual`: (B, T, 96, 96, 3) or (B, 96, 96, 3) frames -> (B, T) or (B,) P(real).

  Only the lower half of each frame is seen. The reference returns its
  time-major (T * B, 1) column; here the input's leading axes are kept.
  """

  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION
  width: float = 1.0  # channel multiplier of every conv but the prediction

  @nn.compact
  def __call__(self, frames: jax.Array) -> jax.Array:
    check_frames(frames, "frames")
    leading = frames.shape[:-3]
    x = frames.reshape((-1,) + frames.shape[-3:])[:, FACE_SIZE // 2 :]
    for i, specs in enumerate(DISCRIMINATOR_ENCODER):
      for j, spec in enumerate(specs):
        name = f"face_encoder_blocks_{i}_{j}"
        spec = widened_spec(spec, check_width(self.width))
        x = NoNormConv2dBlock(spec, self.dtype, self.precision, name=name)(x)
    logit = _conv(PREDICTION, x.shape[-1], self.dtype, self.precision, "binary_pred_0")(x)
    return nn.sigmoid(_widened(logit)).reshape(leading)


# ---------------------------------------------------------------------------
# Inputs.


class FaceShapeError(Wav2LipInputError):
  """Faces or frames of the wrong size, channel count or rank."""


class MelWindowError(Wav2LipInputError):
  """Mel windows that are not (16, 80) per frame, or do not pair with the faces."""


class EmbeddingShapeError(Wav2LipInputError):
  """Embeddings, probabilities or labels of a loss that do not pair up."""


def _shape(x: Any) -> tuple[int, ...]:
  return tuple(np.shape(x))  # arrays, tracers, ShapeDtypeStructs, nested lists


def check_frames(frames: Any, name: str, channels: int = 3) -> None:
  """(B, T, 96, 96, channels) or (B, 96, 96, channels), else a `FaceShapeError` naming `name`."""
  shape = _shape(frames)
  frame = (FACE_SIZE, FACE_SIZE, channels)
  if len(shape) not in (4, 5) or shape[-3:] != frame:
    raise FaceShapeError(
      f"{name}: expected (B, T, {', '.join(map(str, frame))}) or (B, {', '.join(map(str, frame))})"
      f" (the reference works at {FACE_SIZE}x{FACE_SIZE}), found shape {shape}"
    )


def check_generator_inputs(audio_windows: Any, faces: Any) -> None:
  """Named errors for the generator's inputs, before anything is traced or compiled."""
  check_frames(faces, "faces", FACE_CHANNELS)
  expected = _shape(faces)[:-3] + (MEL_STEPS, NUM_MELS)
  if _shape(audio_windows) != expected:
    raise MelWindowError(
      f"audio_windows: expected {expected} (one {MEL_STEPS} x {NUM_MELS} (time, mel) window "
      f"per face, same leading axes as faces {_shape(faces)}), found shape "
      f"{_shape(audio_windows)}"
    )


def check_syncnet_inputs(mel: Any, faces: Any) -> None:
  """Named errors for the lip-sync expert's inputs."""
  face_shape = (FACE_SIZE // 2, FACE_SIZE, 3 * SYNC_FRAMES)
  if len(_shape(faces)) != 4 or _shape(faces)[1:] != face_shape:
    raise FaceShapeError(
      f"faces: expected (B, {', '.join(map(str, face_shape))}) (lower halves of "
      f"{SYNC_FRAMES} frames on channels, see expert_face_window), found shape {_shape(faces)}"
    )
  expected = (_shape(faces)[0], MEL_STEPS, NUM_MELS)
  if _shape(mel) != expected:
    raise MelWindowError(
      f"mel: expected {expected} (one {MEL_STEPS} x {NUM_MELS} (time, mel) window per face "
      f"window), found shape {_shape(mel)}"
    )


def expert_face_window(frames: jax.Array) -> jax.Array:
  """(B, 5, 96, 96, 3) frames -> (B, 48, 96, 15): lower halves, frame-major on channels.

  What `get_sync_loss` feeds SyncNet: channel 3 t + c is colour c of frame t.
  """
  shape = _shape(frames)
  if shape[1:] != (SYNC_FRAMES, FACE_SIZE, FACE_SIZE, 3):
    raise FaceShapeError(
      f"frames: expected (B, {SYNC_FRAMES}, {FACE_SIZE}, {FACE_SIZE}, 3), found shape {shape}"
    )
  lower = jnp.moveaxis(frames[:, :, FACE_SIZE // 2 :], 1, 3)  # (B, 48, 96, 5, 3)
  return lower.reshape(shape[0], FACE_SIZE // 2, FACE_SIZE, 3 * SYNC_FRAMES)


def reverse_channel_order(images: jax.Array) -> jax.Array:
  """RGB <-> BGR in every consecutive colour triple of the last axis (3, 6 or 15 channels)."""
  channels = _shape(images)[-1]
  if channels % 3:
    raise FaceShapeError(f"images: expected a multiple of 3 channels, found shape {_shape(images)}")
  triples = images.reshape(images.shape[:-1] + (channels // 3, 3))
  return triples[..., ::-1].reshape(images.shape)


# ---------------------------------------------------------------------------
# Losses (wav2lip_train.py, hq_wav2lip_train.py, color_syncnet_train.py).


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:  # torch's F.normalize
  # The norm's gradient at a zero vector is 0, as torch's (jnp.linalg.norm's is NaN): a
  # narrow ReLU embedding can be all zero.
  squared = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  norm = jnp.where(squared > 0, jnp.sqrt(jnp.where(squared > 0, squared, 1.0)), 0.0)
  return x / jnp.maximum(norm, eps)


def _clamped_log(p: jax.Array) -> jax.Array:
  """max(log p, -100) with a finite gradient at p = 0 (torch's BCE backward is finite too)."""
  positive = p > 0
  return jnp.where(positive, jnp.maximum(jnp.log(jnp.where(positive, p, 1.0)), -100.0), -100.0)


def binary_cross_entropy(probability: jax.Array, target: jax.Array) -> jax.Array:
  """torch's `BCELoss` (mean; each log clamped at -100)."""
  p = _widened(jnp.asarray(probability))
  y = jnp.asarray(target, p.dtype)
  log_p = _clamped_log(p)
  log_not_p = _clamped_log(1 - p)
  return -jnp.mean(y * log_p + (1 - y) * log_not_p)


def sync_probability(audio_embedding: jax.Array, face_embedding: jax.Array) -> jax.Array:
  """(B,) cosine similarity (torch's `cosine_similarity`, eps 1e-8): P(in sync) in [0, 1]."""
  if audio_embedding.ndim != 2 or audio_embedding.shape != face_embedding.shape:
    raise EmbeddingShapeError(
      f"audio_embedding and face_embedding: expected the same (B, D) shape, found "
      f"{audio_embedding.shape} and {face_embedding.shape}"
    )
  a = _l2_normalize(_widened(audio_embedding), 1e-8)
  v = _l2_normalize(_widened(face_embedding), 1e-8)
  return jnp.sum(a * v, axis=-1)


def sync_loss(audio_embedding: jax.Array, face_embedding: jax.Array, labels: Any) -> jax.Array:
  """The expert's loss (`cosine_loss`): BCE of `sync_probability` against 1 (in sync) / 0.

  labels: (B,) or the reference's (B, 1).
  """
  batch = audio_embedding.shape[0]
  if _shape(labels) not in ((batch,), (batch, 1)):
    raise EmbeddingShapeError(
      f"labels: expected shape ({batch},) or ({batch}, 1), found {_shape(labels)}"
    )
  probability = sync_probability(audio_embedding, face_embedding)
  return binary_cross_entropy(probability, jnp.reshape(labels, (batch,)))


def perceptual_loss(fake_probability: jax.Array) -> jax.Array:
  """`Wav2Lip_disc_qual.perceptual_forward`'s loss: BCE of P(real) on generated frames vs 1."""
  return binary_cross_entropy(fake_probability, jnp.ones_like(fake_probability))


def discriminator_losses(
  real_probability: jax.Array, fake_probability: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """The quality discriminator's (real, fake) losses: BCE against 1 on real, 0 on generated."""
  return (
    binary_cross_entropy(real_probability, jnp.ones_like(real_probability)),
    binary_cross_entropy(fake_probability, jnp.zeros_like(fake_probability)),
  )


# ---------------------------------------------------------------------------
# Shapes and parameter counts, without memory.

NETWORKS = ("generator", "syncnet", "discriminator")
# The generator's parts, by the top-level module names they own.
GENERATOR_PARTS = {
  "face_encoder": ("face_encoder_blocks",),
  "audio_encoder": ("audio_encoder",),
  "decoder": ("face_decoder_blocks", "output_block"),
}


class UnknownNetworkError(ValueError):
  """A Wav2Lip network name that is not one of `NETWORKS`."""


def check_network(network: str) -> None:
  if network not in NETWORKS:
    raise UnknownNetworkError(f"network: expected one of {NETWORKS}, found {network!r}")


def abstract_variables(network: str, width: float = 1.0) -> dict[str, Any]:
  """Shapes and dtypes of a network's variables (boxed params, batch_stats), via eval_shape."""
  check_network(network)
  width = check_width(width)
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  mel = f32(1, MEL_STEPS, NUM_MELS)
  model, inputs = {
    "generator": (
      Wav2LipGenerator(width=width),
      (mel, f32(1, FACE_SIZE, FACE_SIZE, FACE_CHANNELS)),
    ),
    "syncnet": (
      SyncNetColor(width=width),
      (mel, f32(1, FACE_SIZE // 2, FACE_SIZE, 3 * SYNC_FRAMES)),
    ),
    "discriminator": (QualityDiscriminator(width=width), (f32(1, FACE_SIZE, FACE_SIZE, 3),)),
  }[network]
  return jax.eval_shape(model.init, jax.random.key(0), *inputs)


def parameter_count(network: str, modules: Sequence[str] | None = None, width: float = 1.0) -> int:
  """Trainable parameters of `network` (only those under top-level `modules` names, if given)."""
  params = nn.meta.unbox(abstract_variables(network, width)["params"])
  return sum(
    int(np.prod(leaf.shape))
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    if modules is None or path[0].key.startswith(tuple(f"{m}_" for m in modules))
  )
