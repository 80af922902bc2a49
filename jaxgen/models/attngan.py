"""AttnGAN (Xu et al. 2018): StackGAN++'s tree with word attention in the later stages, and its losses.

The layout is taoxugit/AttnGAN's `code/model.py` (`G_NET`, `NEXT_STAGE_G`,
`D_NET64/128/256`, `D_GET_LOGITS`), `GlobalAttention.py`
(`GlobalAttentionGeneral`) and `miscc/losses.py` (`discriminator_loss`,
`generator_loss`, `KL_loss`):

- the generator's first stage is StackGAN++'s (`jaxgen.models.stackgan`),
  conditioned on CA(sentence) — c is 100-d on CUB;
- each later stage attends from every pixel of its hidden map (ngf
  channels) over the caption's word features (1×1 conv to ngf first; pad
  words masked out), concatenates [h; word context] → 2·ngf, runs R
  residual blocks and an upBlock back to ngf;
- the discriminators are StackGAN++'s, conditioned on the sentence feature
  placed after the image code;
- losses: D = (uncond real + cond real)/2 + (uncond fake + cond fake + cond
  wrong)/3 per stage, where "wrong" pairs real image i with caption i+1;
  G = Σ_stages (uncond + cond) + λ·(word + sentence DAMSM losses, both
  directions) on the last stage's image + KL.

Differences from the reference: logits instead of Sigmoid + BCELoss (as in
`stackgan`). `GlobalAttentionGeneral.applyMask` repeats the (B, T) pad mask
queryL times, giving row b·queryL + q the mask of caption (b·queryL + q) mod B,
so it masks the right words only when every caption in the batch has the same
length; here each pixel masks its own caption's pads (the parity test uses one
shared length, where both agree).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models import damsm
from jaxgen.models.stackgan import (
  KERNEL_INIT,
  ConditioningAugmentation,
  ImageHead,
  InitStage,
  ResBlock,
  StackGANConfig,
  UpBlock,
  bce,
  init_upsamples,
  kl_loss,
)
from jaxgen.nn import partitioning as pt


@dataclasses.dataclass(frozen=True)
class AttnGANConfig(StackGANConfig):
  """AttnGAN's `cfg.GAN` / `cfg.TEXT` options (CUB birds defaults); StackGAN++'s fields.

  text_dim: DAMSM feature width (TEXT.EMBEDDING_DIM) of words and sentence.
  condition_dim: CA output (GAN.CONDITION_DIM); z_dim; gf_dim, df_dim; num_residual (R_NUM).
  num_stages: branches; stage s outputs base_size·2ˢ pixels (64 is the reference's base).
  """

  text_dim: int = 256
  condition_dim: int = 100
  gf_dim: int = 32


class WordAttention(nn.Module):
  """`GlobalAttentionGeneral(idf, cdf)`: pixels (queries) attend over words (1×1 conv cdf → idf, no bias).

  h (B, H, W, idf), words (B, T, cdf), word_mask (B, T) true for real words.
  Returns (context (B, H, W, idf), attention (B, H, W, T), each pixel's a
  distribution over the real words).
  """

  @nn.compact
  def __call__(self, h: jax.Array, words: jax.Array, word_mask: jax.Array):
    source = nn.Dense(
      h.shape[-1],
      use_bias=False,
      kernel_init=pt.annotated(KERNEL_INIT, ("kv", "embed")),
      name="conv_context",
    )(words)
    scores = jnp.einsum("bhwc,btc->bhwt", h, source)
    scores = jnp.where(word_mask[:, None, None, :], scores, -jnp.inf)
    attention = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhwt,btc->bhwc", attention, source), attention


class AttnNextStage(nn.Module):
  """`NEXT_STAGE_G`: [h; attention context] → R residual blocks at 2·ngf → upBlock → ngf."""

  ngf: int
  num_residual: int = 2

  @nn.compact
  def __call__(self, h, words, word_mask, train: bool):
    context, attention = WordAttention(name="att")(h, words, word_mask)
    x = jnp.concatenate([h, context], axis=-1)
    for i in range(self.num_residual):
      x = ResBlock(name=f"residual{i}")(x, train)
    return UpBlock(self.ngf, name="upsample")(x, train), attention


class AttnGANGenerator(nn.Module):
  """`G_NET`: (z, sentence, words, word_mask) → ([images per stage], [attention maps], μ, logσ²)."""

  config: AttnGANConfig

  @nn.compact
  def __call__(self, z, sentence, words, word_mask, train: bool = True):
    cfg = self.config
    c_code, mu, logvar = ConditioningAugmentation(cfg.condition_dim, name="ca_net")(sentence)
    ups = init_upsamples(cfg.base_size)
    h = InitStage(cfg.gf_dim * 2**ups, ups, name="h_net1")(jnp.concatenate([c_code, z], -1), train)
    images, attentions = [ImageHead(name="img_net1")(h)], []
    for stage in range(2, cfg.num_stages + 1):
      h, attention = AttnNextStage(cfg.gf_dim, cfg.num_residual, name=f"h_net{stage}")(
        h, words, word_mask, train
      )
      images.append(ImageHead(name=f"img_net{stage}")(h))
      attentions.append(attention)
    return images, attentions, mu, logvar


# ---------------------------------------------------------------- losses


def attngan_discriminator_loss(
  encode: Callable[[jax.Array], jax.Array],
  logits: Callable[[jax.Array, jax.Array | None], jax.Array],
  real: jax.Array,
  fake: jax.Array,
  sentence: jax.Array,
) -> jax.Array:
  """One stage's `discriminator_loss`; `encode`/`logits` are the stage discriminator's methods.

  `fake` should already be behind a stop-gradient for the discriminator's step.
  """
  real_code, fake_code = encode(real), encode(fake)
  cond_real = bce(logits(real_code, sentence), 1.0)
  cond_fake = bce(logits(fake_code, sentence), 0.0)
  cond_wrong = bce(logits(real_code[:-1], sentence[1:]), 0.0)
  uncond_real = bce(logits(real_code, None), 1.0)
  uncond_fake = bce(logits(fake_code, None), 0.0)
  return (uncond_real + cond_real) / 2.0 + (uncond_fake + cond_fake + cond_wrong) / 3.0


def attngan_generator_loss(
  fake_logits: Sequence[tuple[jax.Array, jax.Array]],
  damsm_features: tuple[jax.Array, jax.Array],
  words: jax.Array,
  sentence: jax.Array,
  word_mask: jax.Array,
  mu: jax.Array,
  logvar: jax.Array,
  *,
  damsm_weight: float = 5.0,
  kl_weight: float = 1.0,
  class_ids: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`generator_loss` + KL: Σ_stages BCE(uncond) + BCE(cond) + λ·(w0 + w1 + s0 + s1) + KL.

  `fake_logits`: per stage (cond, uncond) logits of the fakes; `damsm_features`:
  the DAMSM image encoder's (regions, code) of the last stage's fakes.
  """
  adversarial = sum(bce(cond, 1.0) + bce(uncond, 1.0) for cond, uncond in fake_logits)
  regions, code = damsm_features
  w0, w1, _ = damsm.words_loss(regions, words, word_mask, class_ids=class_ids)
  s0, s1 = damsm.sentence_loss(code, sentence, class_ids=class_ids)
  kl = kl_loss(mu, logvar)
  matching = damsm_weight * (w0 + w1 + s0 + s1)
  total = adversarial + matching + kl_weight * kl
  return total, {"g_adversarial": adversarial, "damsm": matching, "kl": kl}
