"""DALL·E's 12-billion-parameter text-to-image transformer (Ramesh et al., 2021).

openai/DALL-E released only the dVAE, so every transformer number here is
[recalled] from the paper (and third-party write-ups), not read from code:
64 layers, 62 heads of 64 (width 3968), up to 256 BPE text tokens from a
vocabulary of 16384, one pad token per text position, 32 × 32 = 1024 image
tokens from the dVAE's 8192 codes (256 × 256 images), the text cross-entropy
weighted 1/8 and the image cross-entropy 7/8.

jaxgen's choices where the paper is silent or this model differs [not recalled]:
GPT-2 blocks (pre-LayerNorm, GELU MLP of 4 × width, biases), learned text and
row/column positions, an image BOS row (8192 + 1 image embeddings), two
bias-free output heads (text 16384, image 8192: as many parameters as one head
over the joint vocabulary), no dropout, and no caption dropout (DALL·E used no
classifier-free guidance; a guided run sets `caption_dropout`). DALL·E's sparse
row, column and convolutional attention masks only choose which keys each query
sees: they change no parameter count, and this model attends causally to every
earlier slot.

Parameters (asserted with `jax.eval_shape` in tests/test_dalle.py):
  64 blocks × (12·3968² + 13·3968)            12,095,479,808
  text table (16384 + 256 pads) × 3968            66,027,520
  image table (8192 + BOS) × 3968                 32,509,824
  text (256), row (32), column (32) positions      1,269,760
  final LayerNorm                                      7,936
  text and image heads (16384 + 8192) × 3968      97,517,568
  total                                       12,292,812,416  (the paper's "12 B")

Usage:
  from jaxgen.configs.arch import dalle_12b
  from jaxgen.models.dalle import DalleConfig, DalleTransformer
  model = DalleTransformer(DalleConfig(**dalle_12b.get_config().to_dict()))
"""

import ml_collections

PARAMETERS = 12_292_812_416


def get_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    {
      "text_vocab": 16384,
      "text_length": 256,
      "text_pad_id": 0,
      "num_image_codes": 8192,
      "image_rows": 32,
      "image_cols": 32,
      "embed_dim": 3968,
      "num_layers": 64,
      "num_heads": 62,
      "ff_rate": 4,
      "dropout": 0.0,
      "text_loss_weight": 1 / 8,
      "image_loss_weight": 7 / 8,
      "caption_dropout": 0.0,
    }
  )
