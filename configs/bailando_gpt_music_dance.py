"""Bailando stage 2: the cross-conditional music-to-code GPT, sized for CPU.

The reference `CrossCondGPT2` recipe (music, upper and lower code streams
summed with their own position tables, cross-conditional causal attention,
base + head blocks, two heads; codes[:, :-1] and music[:, 1:] in, the sum of
both cross-entropies; block of 29 positions; greedy sliding-window sampling)
at width 128 with 2 + 2 blocks and 4 heads (reference: 768, 6 + 6, 12).
`BailandoGPTConfig()` is the published size. Music: Bailando's 438-d
features at the 5 codes per second of the VQ stage.
Measured on 2 CPU cores after a 1,800-step VQ stage (27 CPU-minutes; its
reconstructions score BAS 0.47 against 0.93 for the data: the decoder
still jitters): 1,600 steps (16.5 CPU-minutes), code accuracy 0.86-0.90 on
the training windows, BAS 0.36 on 20 held-out tracks, no better than the
same dances scored against other tracks' beats (benchmarks/dance_table.py).

Launch (after configs/bailando_vq_music_dance.py trained into runs/bailando_vq):
  jaxgen train --config configs/bailando_gpt_music_dance.py --workdir runs/bailando_gpt
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "bailando_gpt"
  c.seed = 0
  c.mesh_shape = None
  c.data = dict(name="music_dance", seed=0, num_examples=128, seconds=12.0, sample_rate=22050)
  c.vq = dict(workdir="runs/bailando_vq")
  c.window = dict(stride=2)
  c.gpt = dict(
    embed_dim=128, block_size=29, num_base_layers=2, num_head_layers=2, num_heads=4, dropout=0.1
  )
  # Greedy (temperature 0) sliding by one code, as the reference's sampler.
  c.sample = dict(temperature=0.0, top_k=None, shift=None)
  # The reference: Adam, lr 3e-4.
  c.optim = dict(
    learning_rate=3e-4,
    warmup_steps=100,
    weight_decay=0.0,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    grad_clip_norm=1.0,
    decay="cosine",
    end_factor=0.1,
  )
  c.train = dict(
    batch_size=32,
    num_steps=2000,
    max_minutes=30.0,
    log_every=50,
    sample_every=0,
    ema_decay=0.999,
    ema_warmup=10,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=500, keep=1)
  return c
