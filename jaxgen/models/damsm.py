"""AttnGAN's Deep Attentional Multimodal Similarity Model (Xu et al. 2018): text and image encoders, word and sentence losses.

The layout is taoxugit/AttnGAN's `RNN_ENCODER` and `CNN_ENCODER`
(`code/model.py`) and `words_loss` / `sent_loss` / `func_attention`
(`code/miscc/losses.py`, `GlobalAttention.py`):

- `DAMSMTextEncoder`: Embedding(vocab, 300) (uniform ±0.1), dropout 0.5, a
  one-layer bidirectional LSTM of 128 per direction. Word features are the
  per-step outputs (256, zero at pads, as `pad_packed_sequence` leaves them);
  the sentence feature is the two directions' last hidden states. The LSTM
  runs through `nn.RNN`/`nn.Bidirectional` with `seq_lengths`, so the
  backward direction starts at each caption's last real word, as a packed
  sequence does. The cell (`TorchLSTMCell`) keeps torch's parameters
  (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`; gates i, f, g, o), so the
  count and the weights are the reference's.
- `DAMSMImageEncoder`: region features = 1×1 conv (no bias) of a 17×17×768
  map, global feature = Linear of a 2048-d pooled vector. With
  `backbone="inception"` these come from Inception-v3 (Mixed_6e and the pooled
  Mixed_7c of `jaxgen.models.inception.FIDInceptionV3`, frozen in the
  reference: the task must mask the `backbone` subtree out of its optimizer);
  with `backbone="cnn"` from a small trainable CNN (conv3×3 stride-2 stages,
  BatchNorm-free, ReLU) for the CPU data, whose last stride-2 stage gives
  the region map and whose mean gives the pooled vector.
- `words_loss` / `sentence_loss`: the γ₁/γ₂/γ₃-smoothed matching losses in
  both directions (image→text and text→image cross-entropy over the batch),
  with the reference's optional same-class masking.

Differences from the reference: captions are padded to a fixed length and
masked, not truncated per caption; the results are the same.
FIDInceptionV3 is pytorch-fid's Inception (its Mixed_7c max-pools its pooling
branch, torchvision's averages), with the same parameter shapes.
"""

from __future__ import annotations

import dataclasses
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxgen.models.inception import FIDInceptionV3
from jaxgen.nn import partitioning as pt

GAMMA1 = 4.0  # word-attention sharpness over regions
GAMMA2 = 5.0  # word-region relevance
GAMMA3 = 10.0  # smoothing of the batch softmax
EPS = 1e-8
BACKBONES = ("inception", "cnn")


class DAMSMConfigError(ValueError):
  """A DAMSM option is out of range."""


def _uniform(scale: float):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -scale, scale)


class TorchLSTMCell(nn.RNNCellBase):
  """`torch.nn.LSTM`'s cell: gates = x·W_ih + b_ih + h·W_hh + b_hh, split (i, f, g, o).

  Kernels are stored transposed to torch's (in, 4·hidden); init U(±1/√hidden) as torch.
  """

  features: int

  @nn.compact
  def __call__(self, carry, x):
    c, h = carry
    scale = 1.0 / self.features**0.5
    init = _uniform(scale)
    w_ih = self.param(
      "weight_ih", pt.annotated(init, ("embed", "mlp")), (x.shape[-1], 4 * self.features)
    )
    w_hh = self.param(
      "weight_hh", pt.annotated(init, ("embed", "mlp")), (self.features, 4 * self.features)
    )
    b_ih = self.param("bias_ih", pt.annotated(init, ("mlp",)), (4 * self.features,))
    b_hh = self.param("bias_hh", pt.annotated(init, ("mlp",)), (4 * self.features,))
    gates = x @ w_ih + b_ih + h @ w_hh + b_hh
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h

  @nn.nowrap
  def initialize_carry(self, rng, input_shape):
    shape = (*input_shape[:-1], self.features)
    return jnp.zeros(shape), jnp.zeros(shape)

  @property
  def num_feature_axes(self) -> int:
    return 1


@dataclasses.dataclass(frozen=True)
class DAMSMConfig:
  """AttnGAN's DAMSM options (birds: embedding 300, 256 = 2×128 LSTM, 18 words).

  backbone: 'inception' (the reference) or 'cnn' (small, trained with the heads).
  cnn_channels: widths of the 'cnn' backbone's stride-2 stages; the last
      gives the region map, so an image of side S has (S / 2^len)² regions.
  """

  vocab_size: int = 5450
  word_dim: int = 300
  embed_dim: int = 256
  dropout: float = 0.5
  backbone: str = "inception"
  cnn_channels: tuple[int, ...] = (32, 64, 128)

  def __post_init__(self):
    if self.backbone not in BACKBONES:
      raise DAMSMConfigError(f"backbone: expected one of {BACKBONES}, found {self.backbone!r}")
    if self.embed_dim % 2:
      raise DAMSMConfigError(
        f"embed_dim: expected an even width (two LSTM directions), found {self.embed_dim}"
      )


class DAMSMTextEncoder(nn.Module):
  """(tokens (B, T), lengths (B,)) → (words (B, T, embed_dim), sentence (B, embed_dim)).

  `train=True` applies the embedding dropout (a `dropout` rng); the GAN uses it frozen, train=False.
  """

  config: DAMSMConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, lengths: jax.Array, train: bool = False):
    cfg = self.config
    table = self.param(
      "encoder", pt.annotated(_uniform(0.1), ("vocab", "embed")), (cfg.vocab_size, cfg.word_dim)
    )
    x = nn.Dropout(cfg.dropout, deterministic=not train)(jnp.take(table, tokens, axis=0))
    hidden = cfg.embed_dim // 2
    rnn = nn.Bidirectional(
      nn.RNN(TorchLSTMCell(hidden, name="lstm_forward")),
      nn.RNN(TorchLSTMCell(hidden, name="lstm_backward")),
      return_carry=True,
      name="rnn",
    )
    ((_, h_fwd), (_, h_bwd)), words = rnn(x, seq_lengths=lengths)
    valid = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
    words = jnp.where(valid[..., None], words, 0.0)
    return words, jnp.concatenate([h_fwd, h_bwd], axis=-1)


class SmallCNN(nn.Module):
  """The 'cnn' backbone: ReLU(conv3×3 stride 2) stages → (region map, pooled vector)."""

  channels: tuple[int, ...]

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = images
    for i, width in enumerate(self.channels):
      x = nn.relu(pt.conv(width, 3, strides=2, padding=1, name=f"conv{i}")(x))
    return x, jnp.mean(x, axis=(1, 2))


class DAMSMImageEncoder(nn.Module):
  """Images NHWC in [−1, 1] → (regions (B, R, embed_dim), global (B, embed_dim))."""

  config: DAMSMConfig

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    cfg = self.config
    if cfg.backbone == "inception":
      # CNN_ENCODER feeds [−1, 1] images (bilinear to 299) to the layers; FIDInceptionV3 maps [0, 1] there.
      backbone = FIDInceptionV3(name="backbone")
      regions, pooled = backbone.mixed_6e_and_pool((images + 1.0) / 2.0)
    else:
      regions, pooled = SmallCNN(cfg.cnn_channels, name="backbone")(images)
    regions = nn.Conv(
      cfg.embed_dim,
      (1, 1),
      use_bias=False,
      kernel_init=pt.annotated(_uniform(0.1), (None, None, "conv_in", "conv_out")),
      name="emb_features",
    )(regions)
    code = nn.Dense(
      cfg.embed_dim,
      kernel_init=pt.annotated(_uniform(0.1), ("embed", "mlp")),
      bias_init=pt.annotated(_uniform(1 / pooled.shape[-1] ** 0.5), ("mlp",)),
      name="emb_cnn_code",
    )(pooled)
    b, h, w, c = regions.shape
    return regions.reshape(b, h * w, c), code


# ---------------------------------------------------------------- matching losses


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """The reference's cosine_similarity over the last axis, norms clamped at 1e-8."""
  num = jnp.sum(a * b, axis=-1)
  return num / jnp.maximum(jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), EPS)


def word_region_attention(
  words: jax.Array, regions: jax.Array, word_mask: jax.Array, gamma1: float = GAMMA1
) -> tuple[jax.Array, jax.Array]:
  """`func_attention` for every (caption, image) pair: the region context of each word.

  words (Bt, T, D), regions (Bi, R, D), word_mask (Bt, T) true for real words.
  Each region first normalises its scores over the caption's words (Eq. 8),
  then each word attends over regions with sharpness γ₁ (Eq. 9).
  Returns (context (Bt, Bi, T, D), attention (Bt, Bi, T, R)).
  """
  scores = jnp.einsum("std,ird->sitr", words, regions)
  mask = word_mask[:, None, :, None]
  scores = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=2)
  attention = jax.nn.softmax(gamma1 * jnp.where(mask, scores, 0.0), axis=3)
  return jnp.einsum("sitr,ird->sitd", attention, regions), attention


def _batch_cross_entropy(
  scores: jax.Array, class_ids: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
  """CE over the batch of scores[image, caption] in both directions; same-class pairs off the diagonal masked."""
  if class_ids is not None:
    same = (class_ids[:, None] == class_ids[None, :]) & ~jnp.eye(scores.shape[0], dtype=bool)
    scores = jnp.where(same, -jnp.inf, scores)
  labels = jnp.arange(scores.shape[0])
  loss0 = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(scores, labels))
  loss1 = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(scores.T, labels))
  return loss0, loss1


def words_loss(
  regions: jax.Array,
  words: jax.Array,
  word_mask: jax.Array,
  *,
  class_ids: jax.Array | None = None,
  gamma1: float = GAMMA1,
  gamma2: float = GAMMA2,
  gamma3: float = GAMMA3,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """DAMSM word loss: R(Q, D) = log Σ_words exp(γ₂·cos(word, its region context)) (Eq. 10), ×γ₃, CE both ways.

  regions (B, R, D) and words (B, T, D) of matching pairs (row i with row i).
  Returns (image→text loss, text→image loss, attention (B, T, R) of each caption over its own image).
  """
  context, attention = word_region_attention(words, regions, word_mask, gamma1)
  relevance = jnp.exp(gamma2 * cosine(words[:, None], context))  # (captions, images, T)
  similarity = jnp.log(jnp.sum(jnp.where(word_mask[:, None, :], relevance, 0.0), axis=-1))
  loss0, loss1 = _batch_cross_entropy(gamma3 * similarity.T, class_ids)
  own = jnp.arange(words.shape[0])
  return loss0, loss1, attention[own, own]


def sentence_loss(
  image_codes: jax.Array,
  sentences: jax.Array,
  *,
  class_ids: jax.Array | None = None,
  gamma3: float = GAMMA3,
) -> tuple[jax.Array, jax.Array]:
  """DAMSM sentence loss: γ₃·cos(image code, sentence) over the batch, CE both ways."""
  scores = gamma3 * cosine(image_codes[:, None, :], sentences[None, :, :])
  return _batch_cross_entropy(scores, class_ids)


def damsm_loss(
  regions, image_codes, words, sentences, word_mask, *, class_ids=None
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The DAMSM pretraining loss: w_loss0 + w_loss1 + s_loss0 + s_loss1 (each a batch cross-entropy)."""
  w0, w1, _ = words_loss(regions, words, word_mask, class_ids=class_ids)
  s0, s1 = sentence_loss(image_codes, sentences, class_ids=class_ids)
  return w0 + w1 + s0 + s1, {"words_loss": w0 + w1, "sentence_loss": s0 + s1}


def trainable_backbone(config: DAMSMConfig) -> bool:
  """Whether the optimizer trains the image backbone (the reference freezes Inception)."""
  return config.backbone != "inception"
