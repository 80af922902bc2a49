"""SPADE: semantic image synthesis with spatially-adaptive normalisation (Park et al. 2019).

The layout is NVlabs/SPADE's `SPADEGenerator` without the VAE image encoder
(`models/networks/generator.py`, `architecture.py`, `normalization.py`):

- `SPADE`: a parameter-free norm of x, then affine maps predicted per pixel
  from the label map resized (nearest) to x: a shared 3×3 conv
  label_nc → 128 + ReLU, and 3×3 convs 128 → C for γ and β;
  out = norm(x)·(1 + γ) + β.
- `SPADEResnetBlock`: x_s + conv_1(lrelu(SPADE(conv_0(lrelu(SPADE(x)))))),
  fmiddle = min(fin, fout), a learned 1×1 shortcut (no bias, behind its own
  SPADE) when fin ≠ fout; spectral norm on conv_0, conv_1 and conv_s.
- `SPADEGenerator`: the label map nearest-downsampled to sh×sw and a 3×3 conv
  to 16·ngf channels, then head_0, G_middle_0, G_middle_1 and up_0…up_3
  (+ up_4 for `most`) with nearest ×2 upsampling between them, and a 3×3
  conv_img after LeakyReLU(0.2), tanh.

Differences from the reference:
- The parameter-free norm is `BatchStatNorm(affine=False)`: batch statistics
  at training and at sampling time. The reference trains with synchronised
  BatchNorm (the same numbers) but samples in eval mode with running
  averages, which would be a second, mutable collection here.
- Spectral norm re-estimates σ from a fixed start on every call
  (`jaxgen.nn.normalization.SpectralConv`) instead of carrying u as a buffer;
  the parameters are the same (u and v are buffers in PyTorch).

Weights are drawn as the reference's `init_weights('xavier', 0.02)`: Xavier
normal with gain 0.02, zero biases. Label maps are NHWC one-hot (plus the
dontcare / instance-edge channels where configured).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt
from jaxgen.nn.normalization import BatchStatNorm, SpectralConv
from jaxgen.nn.sampling import upsample_nearest_2x

UPSAMPLING_LAYERS = {"normal": 5, "more": 6, "most": 7}
SPADE_HIDDEN = 128  # "The dimension of the intermediate embedding space. Yes, hardcoded."
LEAKY_SLOPE = 0.2
INIT_GAIN = 0.02


@dataclasses.dataclass(frozen=True)
class SPADEGeneratorConfig:
  """Architecture of a `SPADEGenerator`; field names follow the reference's options.

  label_nc: label classes without dontcare (the reference's `--label_nc`).
  contain_dontcare: one more label channel (`--contain_dontcare_label`).
  no_instance: no instance-edge channel (`--no_instance`).
  ngf: base width; the blocks run at 16, 16, 16, 8, 4, 2, 1 × ngf.
  num_upsampling_layers: 'normal' (5 ×2 upsamplings), 'more' (6) or 'most' (7).
  crop_size: output width; the start map is crop_size / 2**n wide.
  aspect_ratio: width / height of the output.
  spectral_norm: spectral norm on the residual blocks' convs (the default
    norm_G 'spectralspadesyncbatch3x3').
  spade_hidden: width of every SPADE's shared conv (hard-coded 128 in the
    reference; smaller only for CPU-sized runs).
  """

  label_nc: int = 182
  contain_dontcare: bool = False
  no_instance: bool = False
  ngf: int = 64
  num_upsampling_layers: str = "normal"
  crop_size: int = 256
  aspect_ratio: float = 1.0
  spectral_norm: bool = True
  out_channels: int = 3
  spade_hidden: int = SPADE_HIDDEN

  def __post_init__(self):
    for name in ("label_nc", "ngf", "crop_size", "out_channels", "spade_hidden"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, found {value!r}")
    if self.num_upsampling_layers not in UPSAMPLING_LAYERS:
      raise ValueError(
        f"num_upsampling_layers: expected one of {tuple(UPSAMPLING_LAYERS)}, "
        f"found {self.num_upsampling_layers!r}"
      )
    if not isinstance(self.aspect_ratio, (int, float)) or self.aspect_ratio <= 0:
      raise ValueError(f"aspect_ratio: expected a number > 0, found {self.aspect_ratio!r}")
    if self.num_upsampling_layers == "most" and self.ngf < 2:
      raise ValueError(
        f"ngf: 'most' adds a block of ngf // 2 channels, so ngf >= 2, found {self.ngf}"
      )
    if min(self.start_size()) < 1:
      factor = 2 ** UPSAMPLING_LAYERS[self.num_upsampling_layers]
      raise ValueError(
        f"crop_size: {self.num_upsampling_layers!r} upsamples {factor}x, so the start map "
        f"of crop_size {self.crop_size} (aspect {self.aspect_ratio}) is {self.start_size()}; "
        f"expected at least 1x1"
      )

  @property
  def semantic_nc(self) -> int:
    """Channels of the label map the generator reads."""
    return self.label_nc + int(self.contain_dontcare) + int(not self.no_instance)

  def start_size(self) -> tuple[int, int]:
    """(sh, sw): the map the residual blocks start from (`compute_latent_vector_size`)."""
    sw = self.crop_size // 2 ** UPSAMPLING_LAYERS[self.num_upsampling_layers]
    return round(sw / self.aspect_ratio), sw

  def output_size(self) -> tuple[int, int]:
    """(H, W) of the generated image (and of the label map it takes)."""
    factor = 2 ** UPSAMPLING_LAYERS[self.num_upsampling_layers]
    sh, sw = self.start_size()
    return sh * factor, sw * factor


def nearest_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """NHWC resize as `torch.nn.functional.interpolate(mode='nearest')`: source = floor(i·in/out).

  (`jax.image.resize` samples pixel centres instead, which picks other pixels
  when downsampling.)
  """
  rows = (jnp.arange(size[0]) * x.shape[1]) // size[0]
  cols = (jnp.arange(size[1]) * x.shape[2]) // size[1]
  return x[:, rows][:, :, cols]


def _xavier(gain: float = INIT_GAIN) -> nn.initializers.Initializer:
  # torch's xavier_normal_: std = gain·sqrt(2 / (fan_in + fan_out)), untruncated.
  return nn.initializers.variance_scaling(gain**2, "fan_avg", "normal")


def conv(
  features: int,
  kernel_size: int,
  *,
  use_bias: bool = True,
  spectral: bool = False,
  dtype: Any = jnp.float32,
  name: str,
) -> nn.Module:
  """A stride-1 'same' conv (the reference's padding k // 2), spectrally normalised if asked."""
  pad = kernel_size // 2
  if spectral:
    return SpectralConv(
      features,
      kernel_size,
      padding=pad,
      use_bias=use_bias,
      kernel_init=_xavier(),
      dtype=dtype,
      name=name,
    )
  return nn.Conv(
    features,
    (kernel_size, kernel_size),
    padding=((pad, pad), (pad, pad)),
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=pt.annotated(_xavier(), (None, None, "conv_in", "conv_out")),
    bias_init=pt.annotated(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


class SPADE(nn.Module):
  """norm(x)·(1 + γ(segmap)) + β(segmap), γ and β predicted per pixel."""

  hidden: int = SPADE_HIDDEN
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, segmap: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    normalized = BatchStatNorm(affine=False, dtype=self.dtype, name="param_free_norm")(x)
    segmap = nearest_resize(segmap, x.shape[1:3]).astype(self.dtype)
    actv = nn.relu(conv(self.hidden, self.kernel_size, dtype=self.dtype, name="mlp_shared")(segmap))
    gamma = conv(channels, self.kernel_size, dtype=self.dtype, name="mlp_gamma")(actv)
    beta = conv(channels, self.kernel_size, dtype=self.dtype, name="mlp_beta")(actv)
    return normalized * (1 + gamma) + beta


class SPADEResnetBlock(nn.Module):
  """fin -> `features` channels at the input's resolution, modulated by `segmap`."""

  features: int
  spectral_norm: bool = True
  spade_hidden: int = SPADE_HIDDEN
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, segmap: jax.Array) -> jax.Array:
    fin, fout = x.shape[-1], self.features
    fmiddle = min(fin, fout)
    sn, dt = self.spectral_norm, self.dtype

    def spade(name: str) -> SPADE:
      return SPADE(self.spade_hidden, dtype=dt, name=name)

    if fin != fout:
      x_s = spade("norm_s")(x, segmap)
      x_s = conv(fout, 1, use_bias=False, spectral=sn, dtype=dt, name="conv_s")(x_s)
    else:
      x_s = x
    dx = nn.leaky_relu(spade("norm_0")(x, segmap), LEAKY_SLOPE)
    dx = conv(fmiddle, 3, spectral=sn, dtype=dt, name="conv_0")(dx)
    dx = nn.leaky_relu(spade("norm_1")(dx, segmap), LEAKY_SLOPE)
    dx = conv(fout, 3, spectral=sn, dtype=dt, name="conv_1")(dx)
    return x_s + dx


class SPADEGenerator(nn.Module):
  """Label maps (B, H, W, semantic_nc) -> images (B, H, W, out_channels) in [-1, 1]."""

  config: SPADEGeneratorConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, segmap: jax.Array) -> jax.Array:
    cfg = self.config
    check_segmap(cfg, segmap)
    nf, sn, dt = cfg.ngf, cfg.spectral_norm, self.dtype

    def block(features: int, name: str) -> SPADEResnetBlock:
      return SPADEResnetBlock(
        features, spectral_norm=sn, spade_hidden=cfg.spade_hidden, dtype=dt, name=name
      )

    segmap = segmap.astype(dt)
    x = nearest_resize(segmap, cfg.start_size())
    x = conv(16 * nf, 3, dtype=dt, name="fc")(x)
    x = block(16 * nf, "head_0")(x, segmap)
    x = upsample_nearest_2x(x)
    x = block(16 * nf, "G_middle_0")(x, segmap)
    if cfg.num_upsampling_layers in ("more", "most"):
      x = upsample_nearest_2x(x)
    x = block(16 * nf, "G_middle_1")(x, segmap)
    for i, mult in enumerate((8, 4, 2, 1)):
      x = block(mult * nf, f"up_{i}")(upsample_nearest_2x(x), segmap)
    if cfg.num_upsampling_layers == "most":
      x = block(nf // 2, "up_4")(upsample_nearest_2x(x), segmap)
    x = conv(cfg.out_channels, 3, dtype=dt, name="conv_img")(nn.leaky_relu(x, LEAKY_SLOPE))
    return jnp.tanh(x.astype(jnp.float32))


def check_segmap(config: SPADEGeneratorConfig, segmap: Any) -> None:
  """A ValueError naming `segmap` unless it is (B, H, W, semantic_nc) at the output size."""
  shape = tuple(getattr(segmap, "shape", ()))
  expected = (*config.output_size(), config.semantic_nc)
  if len(shape) != 4 or shape[1:] != expected:
    raise ValueError(
      f"segmap: expected (batch, {expected[0]}, {expected[1]}, {expected[2]}) "
      f"(output size of crop_size {config.crop_size}, aspect {config.aspect_ratio}, "
      f"{config.num_upsampling_layers!r}; semantic_nc = label_nc {config.label_nc} "
      f"+ dontcare {int(config.contain_dontcare)} + instance {int(not config.no_instance)}), "
      f"found {shape}"
    )


def count_params(params: Any) -> int:
  """Number of scalars in a (possibly boxed or abstract) parameter tree."""
  leaves = jax.tree_util.tree_leaves(nn.meta.unbox(params))
  return sum(int(leaf.size) for leaf in leaves)
