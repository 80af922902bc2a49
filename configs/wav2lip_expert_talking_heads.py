"""Wav2Lip's lip-sync expert (SyncNet_color) on the procedural talking heads, sized for CPU.

The reference's color_syncnet_train.py recipe: lower halves of 5 frames and
the 0.2-s mel window of the first, in sync or the frames of another window of
the same clip (label 0), cosine similarity -> BCE, Adam 1e-4, BatchNorm in
training mode. Faces stay at the reference's 96x96 and its layer list; every
conv is narrowed to 1/8 of its channels (`model.width`): 261,712 parameters
(the reference: 16,435,072 at width 1). Data: 64 training clips of 3 s
(48 identities, ~4 s to draw), each drawn `repeats` times per epoch at a
random window. Batch 32 (the reference: 64).

Launch:
  jaxgen train --config configs/wav2lip_expert_talking_heads.py --workdir runs/wav2lip_expert
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "wav2lip_expert"
  c.seed = 0
  c.mesh_shape = None
  c.data = dict(num_clips=64, seconds=3.0, size=96, seed=0, repeats=8)
  c.model = dict(width=0.125)
  # The reference: Adam, lr 1e-4, no schedule, no weight decay.
  c.optim = dict(
    learning_rate=1e-4,
    warmup_steps=0,
    decay="constant",
    weight_decay=0.0,
    b1=0.9,
    b2=0.999,
    grad_clip_norm=0.0,
  )
  c.train = dict(
    batch_size=32,
    num_steps=2000,
    max_minutes=None,
    log_every=50,
    sample_every=500,
    ema_decay=0.0,  # the reference keeps no EMA; the expert is used as trained
    ema_warmup=0,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=500, keep=1)
  return c
