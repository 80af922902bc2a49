"""SyncNet (Chung & Zisserman, 2016): audio and lip embeddings for lip-sync scores.

The network of Joon Son Chung's `syncnet_python` (`SyncNetModel.S`), the
one behind LSE-D / LSE-C (Wav2Lip's evaluation). Two towers map 0.2 s of
video and audio to 1024-d embeddings whose Euclidean distance is small when
lips and speech are in sync:

* lip tower: 5 consecutive 224x224 RGB frames (25 fps) -> five 3-D conv
  layers (the first spans the 5 frames) -> 512 -> FC 512 -> FC 1024;
* audio tower: 20 MFCC frames x 13 coefficients (100 Hz, the same 0.2 s) as
  a one-channel image -> six 2-D conv layers -> 512 -> FC 512 -> FC 1024.

Layout differs from the reference, values do not: video is NTHWC
(N, 5, 224, 224, 3) and MFCC windows are NTC (N, 20, 13). The reference
feeds `cv2.imread` frames, i.e. BGR in [0, 255] without normalisation; so
does this model. BatchNorm follows torch (eps 1e-5, momentum 0.1): pass
`train=True` with `mutable=["batch_stats"]` to train it.

Submodules are named after the reference's `nn.Sequential` indices
(`netcnnaud_0` is `netcnnaud.0`), so the weight importer
(`jaxgen.convert.metric_networks`) is a declarative leaf rename plus layout
transform with strict key and shape checks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NUM_FRAMES = 5  # video frames per window (0.2 s at 25 fps)
FRAME_SIZE = 224
NUM_MFCC_FRAMES = 20  # MFCC frames per window (0.2 s at 100 Hz)
NUM_MFCC = 13
EMBEDDING_DIM = 1024
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9  # flax convention; torch's momentum 0.1

Dtype = Any
Precision = Any
DEFAULT_PRECISION = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """One conv + BatchNorm + ReLU stage, optionally followed by a max pool (torch indices)."""

  index: int  # Sequential index of the conv; its BatchNorm is index + 1
  features: int
  kernel: tuple[int, ...]
  strides: tuple[int, ...]
  padding: tuple[int, ...]
  pool: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = (
    None  # window, strides, pad
  )


# The reference layer lists (SyncNetModel.S); spatial dims are (H, W) for audio
# (coefficient, time) and (T, H, W) for video.
AUDIO_CONVS = (
  ConvSpec(0, 64, (3, 3), (1, 1), (1, 1), pool=((1, 1), (1, 1), (0, 0))),
  ConvSpec(4, 192, (3, 3), (1, 1), (1, 1), pool=((3, 3), (1, 2), (0, 0))),
  ConvSpec(8, 384, (3, 3), (1, 1), (1, 1)),
  ConvSpec(11, 256, (3, 3), (1, 1), (1, 1)),
  ConvSpec(14, 256, (3, 3), (1, 1), (1, 1), pool=((3, 3), (2, 2), (0, 0))),
  ConvSpec(18, 512, (5, 4), (1, 1), (0, 0)),
)
LIP_CONVS = (
  ConvSpec(0, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0), pool=((1, 3, 3), (1, 2, 2), (0, 0, 0))),
  ConvSpec(4, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1), pool=((1, 3, 3), (1, 2, 2), (0, 1, 1))),
  ConvSpec(8, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
  ConvSpec(11, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
  ConvSpec(14, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), pool=((1, 3, 3), (1, 2, 2), (0, 0, 0))),
  ConvSpec(18, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)),
)
HIDDEN_DIM = 512


class ConvTower(nn.Module):
  """Conv + BatchNorm + ReLU (+ max pool) stages named `{prefix}_{torch index}`."""

  specs: Sequence[ConvSpec]
  prefix: str
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for spec in self.specs:
      x = nn.Conv(
        spec.features,
        spec.kernel,
        strides=spec.strides,
        padding=[(p, p) for p in spec.padding],
        dtype=self.dtype,
        precision=self.precision,
        name=f"{self.prefix}_{spec.index}",
      )(x)
      x = nn.BatchNorm(
        use_running_average=not train,
        momentum=BATCH_NORM_MOMENTUM,
        epsilon=BATCH_NORM_EPSILON,
        dtype=self.dtype,
        name=f"{self.prefix}_{spec.index + 1}",
      )(x)
      x = nn.relu(x)
      if spec.pool is not None:
        window, strides, pad = spec.pool
        x = nn.max_pool(x, window, strides=strides, padding=[(p, p) for p in pad])
    return x.reshape(x.shape[0], -1)


class EmbeddingHead(nn.Module):
  """Linear 512 -> BatchNorm1d -> ReLU -> Linear (the reference's `netfc*`)."""

  prefix: str
  embedding_dim: int = EMBEDDING_DIM
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    dense = lambda n, i: nn.Dense(
      n, dtype=self.dtype, precision=self.precision, name=f"{self.prefix}_{i}"
    )
    x = dense(HIDDEN_DIM, 0)(x)
    x = nn.BatchNorm(
      use_running_average=not train,
      momentum=BATCH_NORM_MOMENTUM,
      epsilon=BATCH_NORM_EPSILON,
      dtype=self.dtype,
      name=f"{self.prefix}_1",
    )(x)
    return dense(self.embedding_dim, 3)(nn.relu(x))


class SyncNet(nn.Module):
  """Both towers. `__call__(video, mfcc)` returns (video_embedding, audio_embedding).

  video: (N, 5, 224, 224, 3) frames, BGR in [0, 255] like the reference.
  mfcc: (N, 20, 13) MFCC windows (time, coefficient), see `lipsync.mfcc`.
  """

  embedding_dim: int = EMBEDDING_DIM
  dtype: Dtype | None = None
  precision: Precision = DEFAULT_PRECISION

  def setup(self):
    d, p = self.dtype, self.precision
    self.netcnnaud = ConvTower(AUDIO_CONVS, "netcnnaud", dtype=d, precision=p)
    self.netfcaud = EmbeddingHead("netfcaud", self.embedding_dim, dtype=d, precision=p)
    self.netcnnlip = ConvTower(LIP_CONVS, "netcnnlip", dtype=d, precision=p)
    self.netfclip = EmbeddingHead("netfclip", self.embedding_dim, dtype=d, precision=p)

  def embed_audio(self, mfcc: jax.Array, train: bool = False) -> jax.Array:
    """(N, 20, 13) MFCC windows -> (N, embedding_dim); the reference's `forward_aud`."""
    check_mfcc_windows(mfcc)
    # (N, T, C) -> the reference's one-channel (coefficient, time) image, NHWC.
    image = jnp.swapaxes(mfcc, 1, 2)[..., None]
    return self.netfcaud(self.netcnnaud(image, train), train)

  def embed_video(self, video: jax.Array, train: bool = False) -> jax.Array:
    """(N, 5, 224, 224, 3) frames -> (N, embedding_dim); the reference's `forward_lip`."""
    check_video_windows(video)
    return self.netfclip(self.netcnnlip(video, train), train)

  def __call__(
    self, video: jax.Array, mfcc: jax.Array, train: bool = False
  ) -> tuple[jax.Array, jax.Array]:
    return self.embed_video(video, train), self.embed_audio(mfcc, train)


def check_video_windows(video: Any) -> None:
  expected = (NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3)
  if len(video.shape) != 5 or tuple(video.shape[1:]) != expected:
    raise ValueError(
      f"video must have shape (N, {', '.join(map(str, expected))}), got {video.shape}"
    )


def check_mfcc_windows(mfcc: Any) -> None:
  if len(mfcc.shape) != 3 or tuple(mfcc.shape[1:]) != (NUM_MFCC_FRAMES, NUM_MFCC):
    raise ValueError(f"mfcc must have shape (N, {NUM_MFCC_FRAMES}, {NUM_MFCC}), got {mfcc.shape}")


def abstract_variables(embedding_dim: int = EMBEDDING_DIM) -> dict[str, Any]:
  """Shapes and dtypes of the SyncNet variables, without allocating them."""
  video = jax.ShapeDtypeStruct((1, NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3), jnp.float32)
  mfcc = jax.ShapeDtypeStruct((1, NUM_MFCC_FRAMES, NUM_MFCC), jnp.float32)
  return jax.eval_shape(SyncNet(embedding_dim).init, jax.random.key(0), video, mfcc)


def parameter_count(embedding_dim: int = EMBEDDING_DIM) -> int:
  """Trainable parameters (the `params` collection), computed without memory."""
  params = abstract_variables(embedding_dim)["params"]
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


# ---------------------------------------------------------------------------
# Losses for training SyncNet in jaxgen.


def contrastive_loss(
  video_embedding: jax.Array, audio_embedding: jax.Array, is_synced: jax.Array, margin: float = 20.0
) -> jax.Array:
  """The original SyncNet loss: mean of y d^2 + (1 - y) max(margin - d, 0)^2, halved.

  d is the Euclidean distance between paired embeddings; y = 1 for in-sync
  pairs, 0 for shifted ones. `margin` is a free hyperparameter: the paper
  and the released code (inference only) do not fix it.
  """
  _check_pairs(video_embedding, audio_embedding, is_synced)
  y = jnp.asarray(is_synced, video_embedding.dtype)
  d = jnp.sqrt(jnp.sum((video_embedding - audio_embedding) ** 2, -1) + 1e-12)
  return 0.5 * jnp.mean(y * d**2 + (1 - y) * jnp.maximum(margin - d, 0.0) ** 2)


def cosine_bce_loss(
  video_embedding: jax.Array, audio_embedding: jax.Array, is_synced: jax.Array
) -> jax.Array:
  """Wav2Lip's expert-discriminator loss: BCE of the cosine similarity of ReLU'd embeddings.

  As Wav2Lip, the embeddings are L2-normalised after a ReLU, so the cosine
  is in [0, 1] and is read as the probability of being in sync.
  """
  _check_pairs(video_embedding, audio_embedding, is_synced)
  y = jnp.asarray(is_synced, video_embedding.dtype)
  v = _l2_normalize(nn.relu(video_embedding))
  a = _l2_normalize(nn.relu(audio_embedding))
  # torch's BCELoss clamps log at -100.
  p = jnp.sum(v * a, -1)
  log_p = jnp.maximum(jnp.log(p), -100.0)
  log_not_p = jnp.maximum(jnp.log1p(-p), -100.0)
  return -jnp.mean(y * log_p + (1 - y) * log_not_p)


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  # torch F.normalize: x / max(||x||, eps).
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def _check_pairs(video_embedding, audio_embedding, is_synced) -> None:
  if video_embedding.ndim != 2 or video_embedding.shape != audio_embedding.shape:
    raise ValueError(
      f"video_embedding and audio_embedding must both have shape (N, D), got "
      f"{video_embedding.shape} and {audio_embedding.shape}"
    )
  if tuple(np.shape(is_synced)) != video_embedding.shape[:1]:
    raise ValueError(
      f"is_synced must have shape ({video_embedding.shape[0]},), got {np.shape(is_synced)}"
    )
