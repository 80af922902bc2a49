"""Bailando stage 1: upper/lower-body VQ-VAEs on the procedural music-dance pairs, sized for CPU.

The reference `SepVQVAER` recipe (jukebox 1-D conv encoders and decoders,
EMA codebooks with dead-code reset, L1 reconstruction + velocity +
acceleration losses, commitment 0.02, the root-velocity branch) at width,
code width 128 and 256 codes per half (reference: 512, 512, 512), with 2
downsamplings (one code per 4 frames, 5 codes per second at the dances' 20
fps; reference: 3, 7.5 codes per second at 60 fps). Windows of 4 s as the
reference's 240 frames at 60 fps. `BailandoVQConfig()` is the published size.

Launch:
  jaxgen train --config configs/bailando_vq_music_dance.py --workdir runs/bailando_vq
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "bailando_vq"
  c.seed = 0
  c.mesh_shape = None
  # The same data config as configs/edge_music_dance.py and the GPT stage.
  c.data = dict(name="music_dance", seed=0, num_examples=128, seconds=12.0, sample_rate=22050)
  c.window = dict(frames=80, stride=8)
  c.vq = dict(width=128, code_dim=128, down_t=2, num_codes=256)
  # The reference: Adam, lr 3e-4, no weight decay.
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
