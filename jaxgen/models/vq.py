"""1-D motion VQ-VAE of T2M-GPT (Zhang et al., 2023) with an EMA + reset quantiser.

Encoder: Conv1d(k3) -> ReLU -> `down_t` × [strided Conv1d(k4, s2, p1) ->
Resnet1D] -> Conv1d(k3); decoder mirrors it with nearest ×2 upsampling. A
Resnet1D is `depth` residual blocks ReLU -> dilated Conv1d(k3) -> ReLU ->
Conv1d(k1), dilations growth**i in reverse order (9, 3, 1), as in the
reference (`reverse_dilation=True` for both encoder and decoder).

Quantiser ("QuantizeEMAReset"): nearest codebook row; the codebook is not
learnt by gradients but set to EMA cluster means,
  code_sum <- mu·code_sum + (1-mu)·Σ_{x→k} x,  code_count <- mu·code_count + (1-mu)·n_k,
  codebook_k = code_sum_k / code_count_k  if code_count_k >= 1, else a random
  encoder output of the batch (dead-code reset).
The first training batch initialises the codebook to its encoder outputs.
These updates are pure functions (`ema_reset_update`) of a `QuantizerState`
so a training step can return them as new state.

Every layer multiplies its output by the frame mask of its resolution, so a
zero-padded batch gives for each clip exactly what encoding the clip at its
own length gives (PyTorch's zero padding at the sequence end).

`VQVAEConfig.layout = "jukebox"` builds instead the openai/jukebox encoder and
decoder that Bailando uses (`models/encdec.py` there): the first strided conv
reads the input directly, encoder dilations grow (1, 3, 9), the decoder
upsamples with ConvTranspose1d(k4, s2, p1) (the last one to
`output_emb_width`) and has no ReLU outside the residual blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt

LAYOUTS = ("t2m_gpt", "jukebox")


@dataclass(frozen=True)
class VQVAEConfig:
  """Hyper-parameters of `MotionVQVAE` (T2M-GPT names in comments).

  Attributes:
    input_dim: motion feature width (263 HumanML3D, 251 KIT-ML).
    width: channels of every conv (`width`).
    output_emb_width: encoder output / code width (`output_emb_width`, = `code_dim`).
    down_t: number of ×2 temporal downsamplings (`down_t`; 2 -> ×4).
    depth: residual blocks per Resnet1D (`depth`).
    dilation_growth_rate: dilation base (`dilation_growth_rate`).
    num_codes: codebook rows (`nb_code`).
    mu: EMA decay of the codebook statistics (`mu`).
    layout: "t2m_gpt" (Mael-zys/T2M-GPT `encdec.py`) or "jukebox" (openai/jukebox
      `encdec.py`, as Bailando uses it); see the module docstring.
  """

  input_dim: int = 263
  width: int = 512
  output_emb_width: int = 512
  down_t: int = 2
  depth: int = 3
  dilation_growth_rate: int = 3
  num_codes: int = 512
  mu: float = 0.99
  layout: str = "t2m_gpt"

  def __post_init__(self):
    if self.layout not in LAYOUTS:
      raise ValueError(f"VQVAEConfig.layout: expected one of {LAYOUTS}, found {self.layout!r}")

  @property
  def downsample(self) -> int:
    return 2**self.down_t


def conv1d(
  features: int,
  kernel: int,
  *,
  stride: int = 1,
  padding: int = 0,
  dilation: int = 1,
  dtype: Any = jnp.float32,
  name: str | None = None,
) -> nn.Conv:
  """`torch.nn.Conv1d`-like NTC convolution with a (None, conv_in, conv_out) kernel."""
  return nn.Conv(
    features,
    (kernel,),
    strides=(stride,),
    padding=((padding, padding),),
    kernel_dilation=(dilation,),
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=pt.annotated(nn.initializers.lecun_normal(), (None, "conv_in", "conv_out")),
    bias_init=pt.annotated(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


def conv_transpose1d(
  features: int, kernel: int, *, stride: int, padding: int, dtype: Any = jnp.float32, name: str
) -> nn.ConvTranspose:
  """`torch.nn.ConvTranspose1d(kernel, stride, padding)` on NTC (output length stride·T when
  kernel = 2·stride, padding = stride/2). The kernel is (k, conv_in, conv_out), that of the
  equivalent input-dilated conv: torch weight (in, out, k) flipped along k."""
  pad = kernel - 1 - padding
  return nn.ConvTranspose(
    features,
    (kernel,),
    strides=(stride,),
    padding=((pad, pad),),
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=pt.annotated(nn.initializers.lecun_normal(), (None, "conv_in", "conv_out")),
    bias_init=pt.annotated(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


def downsample_mask(mask: jax.Array, factor: int) -> jax.Array:
  """(B, T) frame mask -> (B, T/factor): a step is valid when its first frame is."""
  return mask[:, ::factor]


def _masked(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  return x if mask is None else x * mask[..., None].astype(x.dtype)


class ResConv1DBlock(nn.Module):
  """x + conv2(relu(conv1(relu(x)))) with a dilated k3 `conv1` and a k1 `conv2`."""

  dilation: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    width = x.shape[-1]
    h = conv1d(
      width, 3, padding=self.dilation, dilation=self.dilation, dtype=self.dtype, name="conv1"
    )(nn.relu(x))
    h = conv1d(width, 1, dtype=self.dtype, name="conv2")(_masked(nn.relu(h), mask))
    return _masked(x + h, mask)


class Resnet1D(nn.Module):
  """`depth` ResConv1DBlocks with dilations growth**i, largest first (smallest first when
  not `reverse_dilation`)."""

  depth: int
  dilation_growth_rate: int
  dtype: Any = jnp.float32
  reverse_dilation: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    dilations = [self.dilation_growth_rate**i for i in range(self.depth)]
    if self.reverse_dilation:
      dilations = dilations[::-1]
    for i, d in enumerate(dilations):
      x = ResConv1DBlock(d, dtype=self.dtype, name=f"blocks_{i}")(x, mask)
    return x


class MotionEncoder(nn.Module):
  """(B, T, input_dim) motion -> (B, T / 2**down_t, output_emb_width) latents."""

  config: VQVAEConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    c = self.config
    t2m_gpt = c.layout == "t2m_gpt"
    x = _masked(x, mask)
    if t2m_gpt:
      x = conv1d(c.width, 3, padding=1, dtype=self.dtype, name="conv_in")(x)
      x = _masked(nn.relu(x), mask)
    for i in range(c.down_t):
      mask = None if mask is None else downsample_mask(mask, 2)
      x = _masked(
        conv1d(c.width, 4, stride=2, padding=1, dtype=self.dtype, name=f"down_{i}")(x), mask
      )
      x = Resnet1D(
        c.depth, c.dilation_growth_rate, self.dtype, reverse_dilation=t2m_gpt, name=f"resnet_{i}"
      )(x, mask)
    return _masked(
      conv1d(c.output_emb_width, 3, padding=1, dtype=self.dtype, name="conv_out")(x), mask
    )


class MotionDecoder(nn.Module):
  """(B, T', output_emb_width) latents -> (B, T' * 2**down_t, input_dim) motion."""

  config: VQVAEConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """mask: frame mask at the *output* resolution (B, T' * 2**down_t), or None."""
    c = self.config
    masks = [
      None if mask is None else downsample_mask(mask, 2 ** (c.down_t - i))
      for i in range(c.down_t + 1)
    ]  # coarsest first
    t2m_gpt = c.layout == "t2m_gpt"
    z = _masked(z, masks[0])
    x = conv1d(c.width, 3, padding=1, dtype=self.dtype, name="conv_in")(z)
    x = _masked(nn.relu(x) if t2m_gpt else x, masks[0])
    for i in range(c.down_t):
      x = Resnet1D(c.depth, c.dilation_growth_rate, dtype=self.dtype, name=f"resnet_{i}")(
        x, masks[i]
      )
      if t2m_gpt:
        x = jnp.repeat(x, 2, axis=1)  # nearest ×2
        x = conv1d(c.width, 3, padding=1, dtype=self.dtype, name=f"up_{i}")(x)
      else:
        features = c.output_emb_width if i == c.down_t - 1 else c.width
        x = conv_transpose1d(features, 4, stride=2, padding=1, dtype=self.dtype, name=f"up_{i}")(x)
      x = _masked(x, masks[i + 1])
    if t2m_gpt:
      x = conv1d(c.width, 3, padding=1, dtype=self.dtype, name="conv_mid")(x)
      x = _masked(nn.relu(x), masks[-1])
    return _masked(
      conv1d(c.input_dim, 3, padding=1, dtype=self.dtype, name="conv_out")(x), masks[-1]
    )


class QuantizerState(NamedTuple):
  """EMA codebook statistics (all float32; `initialized` is 0. or 1.)."""

  codebook: jax.Array  # (K, D)
  code_sum: jax.Array  # (K, D)
  code_count: jax.Array  # (K,)
  initialized: jax.Array  # ()


class MotionVQVAE(nn.Module):
  """Encoder, decoder and the quantiser's state (codebook + EMA statistics).

  The quantiser state lives in the params tree (sub-tree `quantizer`) so one
  pytree holds the model; it receives no gradients (callers stop them) and is
  replaced by `ema_reset_update` after each step. With `learned_codebook`
  (the "codebook_loss" option of the task), the codebook is an ordinary
  gradient-trained parameter instead, initialised uniform(±1/K) like VQ-VAE.
  """

  config: VQVAEConfig
  learned_codebook: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    c = self.config
    self.encoder = MotionEncoder(c, dtype=self.dtype)
    self.decoder = MotionDecoder(c, dtype=self.dtype)
    shape = (c.num_codes, c.output_emb_width)
    codebook_init = (
      symmetric_uniform(1.0 / c.num_codes)
      if self.learned_codebook
      else nn.initializers.zeros_init()
    )
    self.quantizer = QuantizerParams(
      shape, codebook_init, with_statistics=not self.learned_codebook
    )

  def encode(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    return self.encoder(x, mask)

  def decode(self, z: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    return self.decoder(z, mask)

  def codebook(self) -> jax.Array:
    return self.quantizer()["codebook"]

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Reconstruction through the nearest codes (no straight-through): init / eval."""
    z = self.encode(x, mask)
    codebook = self.codebook()
    zq = dequantize(quantize(z, codebook), codebook)
    return self.decode(zq, mask)


class QuantizerParams(nn.Module):
  """Holds the codebook (and EMA statistics) as logically named parameters."""

  shape: tuple[int, int]
  codebook_init: Any
  with_statistics: bool = True

  @nn.compact
  def __call__(self) -> dict[str, jax.Array]:
    k, _ = self.shape
    out = dict(
      codebook=self.param(
        "codebook", pt.annotated(self.codebook_init, ("vocab", "embed")), self.shape
      )
    )
    if self.with_statistics:
      zeros = nn.initializers.zeros_init()
      out["code_sum"] = self.param("code_sum", pt.annotated(zeros, ("vocab", "embed")), self.shape)
      out["code_count"] = self.param("code_count", pt.annotated(zeros, ("vocab",)), (k,))
      out["initialized"] = self.param("initialized", pt.annotated(zeros, ()), ())
    return out


def symmetric_uniform(scale: float) -> nn.initializers.Initializer:
  """U(-scale, scale), like `nn.Embedding.weight.data.uniform_(-1/K, 1/K)`."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


def quantize(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """Index of the nearest codebook row (Euclidean) for each vector: (..., D) -> (...)."""
  flat = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
  distance = (
    (flat**2).sum(-1, keepdims=True) - 2 * flat @ codebook.T + (codebook**2).sum(-1)[None, :]
  )
  return jnp.argmin(distance, axis=-1).reshape(z.shape[:-1]).astype(jnp.int32)


def dequantize(codes: jax.Array, codebook: jax.Array) -> jax.Array:
  """Codebook rows for integer codes: (...) -> (..., D)."""
  return jnp.take(codebook, codes, axis=0)


def perplexity(codes: jax.Array, num_codes: int) -> jax.Array:
  """exp(entropy) of the code histogram (1 = one code used, K = all equally)."""
  counts = jnp.bincount(codes.reshape(-1), length=num_codes).astype(jnp.float32)
  prob = counts / counts.sum()
  return jnp.exp(-jnp.sum(prob * jnp.log(prob + 1e-7)))


def tile_to_codebook(x: jax.Array, num_codes: int, rng: jax.Array) -> jax.Array:
  """`num_codes` rows drawn from the N vectors x (N, D): shuffled, then repeated with
  N(0, (0.01/√D)²) noise when N < num_codes (the reference `_tile`)."""
  n, d = x.shape
  x = x[jax.random.permutation(rng, n)]
  if n >= num_codes:
    return x[:num_codes]
  repeats = -(-num_codes // n)
  noise_rng = jax.random.fold_in(rng, 1)
  out = jnp.tile(x, (repeats, 1))
  out = out + jax.random.normal(noise_rng, out.shape, out.dtype) * (0.01 / d**0.5)
  return out[:num_codes]


def initialized_codebook(state: QuantizerState, x: jax.Array, rng: jax.Array) -> QuantizerState:
  """Before the first update: codebook = batch vectors, code_sum = codebook, counts = 1."""
  k = state.codebook.shape[0]
  fresh = tile_to_codebook(x, k, rng)
  init = state.initialized > 0
  return QuantizerState(
    codebook=jnp.where(init, state.codebook, fresh),
    code_sum=jnp.where(init, state.code_sum, fresh),
    code_count=jnp.where(init, state.code_count, jnp.ones_like(state.code_count)),
    initialized=jnp.ones_like(state.initialized),
  )


def ema_reset_update(
  state: QuantizerState, x: jax.Array, codes: jax.Array, rng: jax.Array, mu: float
) -> QuantizerState:
  """One EMA step of the cluster statistics, with dead-code reset.

  Args:
    state: statistics after `initialized_codebook` for this batch.
    x: (N, D) encoder outputs of the batch (gradients stopped).
    codes: (N,) their nearest codes under `state.codebook`.
    rng: key for picking the reset vectors.
    mu: EMA decay.
  Codes whose EMA count falls below 1 become random batch vectors.
  """
  k = state.codebook.shape[0]
  onehot = jax.nn.one_hot(codes, k, dtype=jnp.float32)  # (N, K)
  code_sum = mu * state.code_sum + (1.0 - mu) * (onehot.T @ x.astype(jnp.float32))
  code_count = mu * state.code_count + (1.0 - mu) * onehot.sum(0)
  used = (code_count >= 1.0)[:, None]
  means = code_sum / jnp.maximum(code_count, 1e-12)[:, None]
  codebook = jnp.where(used, means, tile_to_codebook(x.astype(jnp.float32), k, rng))
  return QuantizerState(codebook, code_sum, code_count, state.initialized)


def ema_quantize(
  state: QuantizerState, z: jax.Array, rng: jax.Array, mu: float
) -> tuple[jax.Array, jax.Array, QuantizerState]:
  """One training step of the EMA quantiser on encoder outputs z (..., D).

  Initialises the codebook from the first batch, picks each vector's nearest
  code under the codebook as it was before this batch, and returns the codes
  (...), their codebook rows (..., D) and the statistics after this batch's
  EMA + reset update, all without gradients (the caller writes the statistics
  back after the optimizer step).
  """
  init_rng, reset_rng = jax.random.split(rng)
  flat = jax.lax.stop_gradient(z.reshape(-1, z.shape[-1])).astype(jnp.float32)
  state = initialized_codebook(jax.lax.stop_gradient(state), flat, init_rng)
  codes = quantize(flat, state.codebook)
  new_state = ema_reset_update(state, flat, codes, reset_rng, mu)
  quantized = dequantize(codes, state.codebook)
  return codes.reshape(z.shape[:-1]), quantized.reshape(z.shape), new_state
