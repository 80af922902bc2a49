"""Autoregressive text-to-image (DALL·E / CogView style) over the shapes VQGAN's codes.

The second stage after configs/vqgan_shapes.py (32×32 captioned shapes ->
8×8 codes of 128): one decoder-only transformer over [12 caption tokens ;
64 image codes] with DALL·E's per-position text pads, text and row/column
positions, and the 1/8 text + 7/8 image cross-entropy — at width 160 with
4 blocks (1.29 M parameters) instead of DALL·E's 3968 with 64 (12 B,
`jaxgen.configs.arch.dalle_12b`). Captions are dropped to the empty caption
10% of the time for classifier-free guidance. Sampling is ancestral, one code
per step (num_steps is the 64 cells), with a KV cache in one scan.

Reranking: train a `clip` run on the same shapes and set `rerank.workdir` to
it; `generate` (and `jaxgen sample`, `evaluate`) then keeps the best of
`rerank.num_candidates` samples per caption by CLIP similarity.

Launch (after configs/vqgan_shapes.py trained into runs/vqgan_shapes):
  jaxgen train --config configs/dalle_shapes.py --workdir runs/dalle_shapes \
      vq.workdir=runs/vqgan_shapes
  jaxgen sample --checkpoint runs/dalle_shapes --prompt "a small red circle in the top left" \
      --out grid.png
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "dalle"
  c.seed = 0
  c.mesh_shape = None

  # The VQGAN run's images: same kind and resolution (checked when the task is built).
  c.data = dict(kind="shapes", resolution=32, num_train_examples=20_000, seed=0)
  c.vq = dict(workdir="runs/vqgan_shapes")
  c.text = dict(max_length=12)  # [BOS] + up to 10 words + [EOS]; shapes captions have 8–9
  # `jaxgen.models.dalle.DalleConfig` minus the sizes the tokenizer and the VQGAN fix.
  c.dalle = dict(
    embed_dim=160,
    num_layers=4,
    num_heads=5,
    ff_rate=4,
    dropout=0.0,
    text_loss_weight=1 / 8,
    image_loss_weight=7 / 8,
    caption_dropout=0.1,
  )
  # num_steps None: one ancestral step per code (the only value the sampler takes).
  c.sample = dict(
    sampler="ancestral", num_steps=None, guidance=2.0, temperature=1.0, top_k=None, top_p=None
  )
  # workdir: a `clip` run on the same data; None samples one image per caption.
  c.rerank = dict(workdir=None, num_candidates=8)
  c.optim = dict(
    learning_rate=1e-3,
    warmup_steps=100,
    weight_decay=0.01,
    b1=0.9,
    b2=0.95,
    eps=1e-8,
    grad_clip_norm=1.0,
    decay="cosine",
    end_factor=0.1,
  )
  c.train = dict(
    batch_size=32,
    num_steps=3000,
    max_minutes=15.0,
    log_every=50,
    sample_every=1000,
    ema_decay=0.999,
    ema_warmup=10,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=1000, keep=2)
  c.eval = dict(num_examples=256)
  return c
