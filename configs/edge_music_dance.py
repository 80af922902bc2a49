"""EDGE (Tseng et al. 2023) music-to-dance on the procedural music-dance pairs, sized for CPU.

The EDGE recipe (x0 prediction, cosine schedule with 1000 steps, 25% music
dropout, EDGE's loss terms and weights, 50-step DDIM with eta 1 and guidance
2) on a reduced denoiser: width 128, 4 decoder layers, 4 heads, FF 256
(EDGE: 512, 8, 8, 1024). Windows are 5 s as EDGE's, at the dances' 20 fps
(100 frames), cut every 0.5 s from 12 s clips; the 35-d EDGE baseline music
features come at 20 fps. Poses are 70-d: 4 foot contacts + root position +
21 root-relative joint positions on the 22-joint rig (EDGE: 151-d with SMPL
6-D rotations), min-max scaled to [-1, 1] (jaxgen/tasks/dance/dance_data.py).
AdamW with EDGE's learning rate and weight decay (EDGE: Adan).
Measured on 2 CPU cores: 1,500 steps at batch 16 (24 CPU-minutes), then to
3,500 (52 in all), loss 0.036, give dances that barely move (mean joint speed
0.03 m/s against 0.25 for the data; BAS 0.27 against 0.92 for the ground
truth and 0.23 with mismatched music on 20 held-out tracks,
benchmarks/dance_table.py): even at t = 10 the denoiser returns a near-static
pose, so this recipe needs far more steps than that budget.

Launch:
  jaxgen train --config configs/edge_music_dance.py --workdir runs/edge
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "edge"
  c.seed = 0
  c.mesh_shape = None
  # num_examples train dances (two per track) of `seconds` each; windows of
  # seq_len frames (even: long-form windows overlap by half) every window_stride.
  c.data = dict(
    name="music_dance",
    seed=0,
    num_examples=128,
    seconds=12.0,
    sample_rate=22050,
    seq_len=100,
    window_stride=10,
  )
  c.edge = dict(
    latent_dim=128, ff_size=256, num_layers=4, num_heads=4, num_music_layers=2, dropout=0.1
  )
  c.diffusion = dict(schedule="squaredcos_cap_v2", num_train_timesteps=1000, cond_drop_prob=0.25)
  # EDGE's loss weights (GaussianDiffusion.p_losses).
  c.loss = dict(simple=0.636, velocity=2.964, fk=0.646, foot=10.942)
  # eta 1: EDGE's released sampler (its issue #30 argues for 0).
  c.sample = dict(num_steps=50, guidance=2.0, eta=1.0)
  c.optim = dict(
    learning_rate=4e-4,
    warmup_steps=100,
    weight_decay=0.02,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    grad_clip_norm=1.0,
    decay="cosine",
    end_factor=0.1,
  )
  c.train = dict(
    batch_size=32,
    num_steps=5000,
    max_minutes=30.0,
    log_every=50,
    sample_every=0,
    ema_decay=0.999,
    ema_warmup=10,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=500, keep=1)
  return c
