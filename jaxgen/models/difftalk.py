"""DiffTalk's conditioning networks and its denoiser (Shen et al. 2023, sstzal/DiffTalk).

DiffTalk is a latent diffusion model of one talking-face frame at a time,
conditioned as `ldm/models/diffusion/ddpm_talking.py` (`DiffusionWrapper`,
`conditioning_key: crossattn`) does:

- U-Net input, on channels: [noisy latent, masked-target latent,
  reference-frame latent] (9 channels for 3-channel latents);
- cross-attention context: one token. DiffTalk's is [smoothed audio
  feature (64), landmark feature (64)] = 128-d; its landmarks are 39 points
  of the jaw line, brows, nose and eyes (no mouth points: `LdmNet` over
  indices 0-3 and 13-47), i.e. head pose and upper face. Here the token is
  the audio feature alone (64-d): the masked target's upper half already
  shows the head's position and the eyes, and a picture given to `jaxgen
  sample` comes with no landmarks.

The audio path (`ldm/modules/encoders/modules.py`):

- `AudioNet`: one 16-frame window -> 4 Conv1d (kernel 3, stride 2, padding
  1; 32, 32, 64, 64 channels; LeakyReLU 0.02) down to length 1 -> Linear 64,
  LeakyReLU, Linear -> 64. The reference reads 29-d DeepSpeech character
  logits per window frame (AD-NeRF's features); jaxgen reads the 80-d
  Wav2Lip mel window of each video frame (`jaxgen.data.audio.mel_windows`,
  16 × 80), so the first conv has 80 input channels instead of 29.
- `AudioAttNet`: the frame-to-frame smoothing. The AudioNet features of 8
  neighbouring video frames (8, 64) -> a Conv1d stack over those 8 positions
  reading the first 32 features (32 -> 16 -> 8 -> 4 -> 2 -> 1 channels,
  kernel 3, LeakyReLU 0.02 after each) -> Linear(8, 8) -> softmax -> the
  attention-weighted sum of the 8 features (64).

Layers are flax `Dense`/`Conv` with logical axis names; NTC (time, then
channels) where the reference is NCT. `DiffTalkDenoiser` reuses jaxgen's
diffusers-style `UNet2DConditionModel` (the LDM `UNetModel` with a spatial
transformer is the same architecture family) and does not copy it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.unet import UNet2DConditionModel
from jaxgen.models.unet_config import UNetConfig
from jaxgen.nn import partitioning as pt

AUDIO_WINDOW = 16  # Frames per AudioNet window: four stride-2 convs take 16 to 1.
AUDIO_FEATURES = 64  # AudioNet's output (`dim_aud: 64` in configs/latent-diffusion/talking.yaml).
ATTENTION_FEATURES = 32  # AudioAttNet reads the first 32 of them (`dim_aud: 32`).
SMOOTHING_WINDOWS = 8  # AudioAttNet's `seq_len`: neighbouring video frames smoothed over.
LATENT_INPUTS = 3  # Noisy, masked-target and reference latents, concatenated on channels.
_SLOPE = 0.02  # Every LeakyReLU of the reference's conditioning networks.


class DiffTalkInputError(ValueError):
  """Audio windows, latents or a U-Net config of the wrong shape for the DiffTalk networks."""


def _conv1d(features: int, strides: int, dtype: Any, name: str) -> nn.Conv:
  """torch's `nn.Conv1d(kernel_size=3, padding=1)` on (..., T, C), kernel named (None, in, out)."""
  return nn.Conv(
    features,
    (3,),
    strides=(strides,),
    padding=((1, 1),),
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=pt.annotated(nn.initializers.lecun_normal(), (None, "conv_in", "conv_out")),
    bias_init=pt.annotated(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


def _check_trailing(x: jax.Array, expected: tuple[int | None, ...], name: str, what: str) -> None:
  shape = tuple(x.shape[-len(expected) :]) if x.ndim >= len(expected) else tuple(x.shape)
  if x.ndim < len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
    wanted = ", ".join("·" if e is None else str(e) for e in expected)
    raise DiffTalkInputError(f"{name}: expected (..., {wanted}) {what}, found shape {x.shape}")


class AudioNet(nn.Module):
  """One audio window (..., 16, F) -> (..., features): DiffTalk's `AudioNet`."""

  features: int = AUDIO_FEATURES
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, windows: jax.Array) -> jax.Array:
    _check_trailing(windows, (AUDIO_WINDOW, None), "audio windows", "frames × audio features")
    lead = windows.shape[:-2]
    x = windows.reshape((-1,) + windows.shape[-2:]).astype(self.dtype)
    # Names follow the reference's nn.Sequential indices (encoder_conv.0, .2, .4, .6).
    for index, channels in enumerate((32, 32, 64, 64)):
      x = nn.leaky_relu(_conv1d(channels, 2, self.dtype, f"encoder_conv_{2 * index}")(x), _SLOPE)
    x = x[:, 0]  # Length 16 -> 8 -> 4 -> 2 -> 1.
    x = pt.dense(64, ("embed", "mlp"), dtype=self.dtype, name="encoder_fc1_0")(x)
    x = pt.dense(self.features, ("mlp", "embed"), dtype=self.dtype, name="encoder_fc1_2")(
      nn.leaky_relu(x, _SLOPE)
    )
    return x.reshape(lead + (self.features,))


class AudioAttNet(nn.Module):
  """Features of neighbouring frames (..., 8, D) -> their attention-weighted sum (..., D).

  DiffTalk's `AudioAttNet(dim_aud=32, seq_len=8)`: the weights come from the
  first `attention_features` features only, through convs over the 8
  positions, a Linear over positions and a softmax.
  """

  attention_features: int = ATTENTION_FEATURES
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    _check_trailing(features, (SMOOTHING_WINDOWS, None), "audio features", "windows × features")
    if features.shape[-1] < self.attention_features:
      raise DiffTalkInputError(
        f"audio features: expected at least {self.attention_features} features per window "
        f"(attention_features), found {features.shape[-1]}"
      )
    y = features[..., : self.attention_features].astype(self.dtype)
    for index, channels in enumerate((16, 8, 4, 2, 1)):
      conv = _conv1d(channels, 1, self.dtype, f"attentionConvNet_{2 * index}")
      y = nn.leaky_relu(conv(y), _SLOPE)
    logits = pt.dense(SMOOTHING_WINDOWS, ("embed", "mlp"), dtype=self.dtype, name="attentionNet_0")(
      y[..., 0]
    )
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.einsum("...w,...wd->...d", weights, features.astype(jnp.float32))


def check_difftalk_unet(unet: UNetConfig, latent_channels: int) -> None:
  """Named error unless the U-Net takes 3 latents on channels and the 64-d audio token."""
  expected = (LATENT_INPUTS * latent_channels, latent_channels, AUDIO_FEATURES)
  found = (unet.in_channels, unet.out_channels, unet.cross_attention_dim)
  if found != expected:
    raise DiffTalkInputError(
      f"unet.in_channels/out_channels/cross_attention_dim: expected {expected} ([noisy, masked "
      f"target, reference] latents of {latent_channels} channels in, the noise out, a "
      f"{AUDIO_FEATURES}-d audio context), found {found}"
    )


class DiffTalkDenoiser(nn.Module):
  """The conditioning networks + U-Net: predicts the noise of a noisy frame latent.

  `condition` encodes the audio once per frame; `denoise` runs
  the U-Net given that context, so a sampler evaluates only the U-Net per
  step. `__call__` does both (init, training).
  """

  unet: UNetConfig
  dtype: Any = jnp.float32
  remat: str = "none"

  def setup(self):
    self.audio_net = AudioNet(dtype=self.dtype)
    self.audio_att_net = AudioAttNet(dtype=self.dtype)
    self.denoiser = UNet2DConditionModel(self.unet, dtype=self.dtype, remat=self.remat)

  def condition(self, audio: jax.Array) -> jax.Array:
    """(B, 8, 16, F) neighbouring mel windows -> (B, 1, 64): the one cross-attention token."""
    _check_trailing(audio, (SMOOTHING_WINDOWS, AUDIO_WINDOW, None), "audio", "neighbouring windows")
    token = self.audio_att_net(self.audio_net(audio))
    return token[:, None, :]

  def denoise(self, noisy, timesteps, masked, reference, context, train: bool = False):
    """Noise prediction (float32) for latents (B, h, w, C) given the context tokens."""
    x = jnp.concatenate([noisy, masked.astype(noisy.dtype), reference.astype(noisy.dtype)], -1)
    return self.denoiser(x, timesteps, context, train=train).astype(jnp.float32)

  def __call__(self, noisy, timesteps, masked, reference, audio, train: bool = False):
    context = self.condition(audio)
    return self.denoise(noisy, timesteps, masked, reference, context, train=train)
