"""The text/motion co-embedding of Guo et al. (2022), used to evaluate text-to-motion.

Two encoders map a caption and a motion into one 512-d space where matching
pairs are close (`networks/modules.py` of EricGuo5513/text-to-motion):

- `MovementConvEncoder`: two Conv1d(k=4, s=2, p=1) + dropout 0.2 + LeakyReLU
  0.2, then a Linear: 4× shorter "movement" tokens. It reads the motion
  features without the 4 foot-contact dims.
- `MotionEncoderBiGRUCo`: Linear -> bidirectional GRU over the first
  length // 4 movement tokens (learned initial state) -> the final states of
  both directions -> Linear, LayerNorm, LeakyReLU, Linear.
- `TextEncoderBiGRUCo`: word vectors -> Linear -> bidirectional GRU over the
  caption's tokens -> the same output head.

Differences from the reference, on purpose: GloVe vectors are not available
offline, so words get a learned embedding over jaxgen's word tokenizer (300-d
like GloVe), and there is no part-of-speech one-hot (no tagger offline).
Flax's GRU cell sums the input and recurrent biases of the reset and update
gates into one (same function, 2·hidden fewer parameters per direction).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.transformers_compat import check_positive_ints
from jaxgen.nn import partitioning as pt

NUM_CONTACT_DIMS = 4  # the last 4 features of HumanML3D / KIT-ML vectors
UNIT_LENGTH = 4  # frames per movement token (two stride-2 convolutions)


@dataclasses.dataclass(frozen=True)
class EvaluatorConfig:
  """Widths of the co-embedding (defaults: the published HumanML3D evaluator)."""

  feature_dim: int = 263
  vocab_size: int = 0  # set from the tokenizer
  dim_word: int = 300
  dim_text_hidden: int = 512
  dim_movement_enc_hidden: int = 512
  dim_movement_latent: int = 512
  dim_motion_hidden: int = 1024
  dim_coemb_hidden: int = 512  # the embedding width

  def __post_init__(self):
    check_positive_ints(self, tuple(f.name for f in dataclasses.fields(self)))
    if self.feature_dim <= NUM_CONTACT_DIMS:
      raise ValueError(
        f"feature_dim: expected more than the {NUM_CONTACT_DIMS} contact dims, "
        f"found {self.feature_dim}"
      )


def _bidirectional_gru(features: int) -> nn.Bidirectional:
  """A bidirectional GRU (cells `gru_forward`, `gru_backward`) with logically named params."""

  def cell(name):
    return nn.GRUCell(
      features,
      kernel_init=pt.annotated(nn.initializers.lecun_normal(), ("embed", "mlp")),
      recurrent_kernel_init=pt.annotated(nn.initializers.orthogonal(), (None, "mlp")),
      bias_init=pt.annotated(nn.initializers.zeros_init(), ("mlp",)),
      param_dtype=jnp.float32,
      name=name,
    )

  return nn.Bidirectional(nn.RNN(cell("gru_forward")), nn.RNN(cell("gru_backward")))


class BiGRUCoEncoder(nn.Module):
  """Linear -> BiGRU (learned initial state) -> head over [last forward; last backward]."""

  hidden: int
  output: int

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    batch = x.shape[0]
    h = pt.dense(self.hidden, (None, "embed"), name="input_emb")(x)
    initial = self.param(
      "hidden", pt.annotated(nn.initializers.normal(1.0), (None, "mlp")), (2, self.hidden)
    )
    carry = (
      jnp.broadcast_to(initial[0], (batch, self.hidden)),
      jnp.broadcast_to(initial[1], (batch, self.hidden)),
    )
    (last_fwd, last_bwd), _ = _bidirectional_gru(self.hidden)(
      h, initial_carry=carry, seq_lengths=lengths, return_carry=True
    )
    h = jnp.concatenate([last_fwd, last_bwd], axis=-1)
    h = pt.dense(self.hidden, ("mlp", "embed"), name="output_net_0")(h)
    h = nn.leaky_relu(pt.layer_norm(1e-5, name="output_net_1")(h), 0.2)
    return pt.dense(self.output, ("embed", None), name="output_net_3")(h)


class MovementConvEncoder(nn.Module):
  """(B, T, D-4) -> (B, T/4, latent): two stride-2 convolutions and a Linear."""

  hidden: int
  output: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    def conv(features, name):
      return nn.Conv(
        features,
        (4,),
        strides=(2,),
        padding=((1, 1),),
        param_dtype=jnp.float32,
        kernel_init=pt.annotated(nn.initializers.lecun_normal(), (None, "conv_in", "conv_out")),
        bias_init=pt.annotated(nn.initializers.zeros_init(), ("conv_out",)),
        name=name,
      )

    for i, features in enumerate((self.hidden, self.output)):
      x = conv(features, f"main_{3 * i}")(x)
      x = nn.leaky_relu(nn.Dropout(0.2)(x, deterministic=not train), 0.2)
    return pt.dense(self.output, ("conv_out", "embed"), name="out_net")(x)


class MotionEvaluator(nn.Module):
  """Text and motion encoders of the co-embedding; `embed_text` / `embed_motion`."""

  config: EvaluatorConfig

  def setup(self):
    c = self.config
    self.word_embedding = pt.embed(c.vocab_size, c.dim_word, name="word_embedding")
    self.text_encoder = BiGRUCoEncoder(c.dim_text_hidden, c.dim_coemb_hidden)
    self.movement_encoder = MovementConvEncoder(c.dim_movement_enc_hidden, c.dim_movement_latent)
    self.motion_encoder = BiGRUCoEncoder(c.dim_motion_hidden, c.dim_coemb_hidden)

  def embed_text(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """(B, L) word ids and mask -> (B, dim_coemb_hidden)."""
    lengths = jnp.maximum(mask.astype(jnp.int32).sum(-1), 1)
    return self.text_encoder(self.word_embedding(tokens), lengths)

  def embed_motion(self, motion: jax.Array, lengths: jax.Array, train: bool = False) -> jax.Array:
    """(B, T, D) evaluator-normalised features and frame lengths -> (B, dim_coemb_hidden)."""
    if motion.ndim != 3 or motion.shape[-1] != self.config.feature_dim:
      raise ValueError(
        f"motion: expected (batch, frames, {self.config.feature_dim}), found {motion.shape}"
      )
    movements = self.movement_encoder(motion[..., :-NUM_CONTACT_DIMS], train=train)
    units = jnp.clip(lengths // UNIT_LENGTH, 1, movements.shape[1])
    return self.motion_encoder(movements, units)

  def __call__(self, tokens, mask, motion, lengths, train: bool = False):
    return self.embed_text(tokens, mask), self.embed_motion(motion, lengths, train=train)


def contrastive_loss(
  a: jax.Array, b: jax.Array, mismatched: jax.Array, margin: float = 3.0
) -> jax.Array:
  """Hadsell et al. contrastive loss, as the reference's `ContrastiveLoss`.

  Matched pairs (mismatched = 0) are pulled together (d²), mismatched ones
  pushed beyond `margin` (max(margin - d, 0)²). PyTorch's pairwise_distance
  adds eps=1e-6 to the difference.
  """
  distance = jnp.linalg.norm(a - b + 1e-6, axis=-1)
  mismatched = mismatched.astype(distance.dtype)
  return jnp.mean(
    (1 - mismatched) * distance**2 + mismatched * jnp.maximum(margin - distance, 0.0) ** 2
  )


def co_embedding_loss(
  text_emb: jax.Array, motion_emb: jax.Array, shift: jax.Array, margin: float = 3.0
) -> tuple[jax.Array, dict[str, Any]]:
  """Positive pairs plus the batch rolled by `shift` (in [1, B-1]) as negatives.

  The reference draws shift in [0, B-2], so shift 0 sometimes labels the
  true pairs as negatives; here it never is 0.
  """
  positive = contrastive_loss(text_emb, motion_emb, jnp.zeros(text_emb.shape[0]), margin)
  negatives = jnp.roll(motion_emb, -shift, axis=0)
  negative = contrastive_loss(text_emb, negatives, jnp.ones(text_emb.shape[0]), margin)
  return positive + negative, dict(loss_pos=positive, loss_neg=negative)
