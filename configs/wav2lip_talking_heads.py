"""Wav2Lip's generator on the procedural talking heads, against a frozen expert, sized for CPU.

The reference's hq_wav2lip_train.py recipe: masked target window + reference
window of the same clip -> 5 generated frames; loss (1 - s - d) L1 + s sync +
d perceptual with d = 0.07 and s = 0 until the expert's sync loss on the
generated frames falls below 0.75, then 0.03 (here a running mean over the
training steps, latched on inside the step); the quality discriminator's
BCE on real and generated lower halves; Adam 1e-4, betas (0.5, 0.999), for
both. Faces at the reference's 96x96 and layer lists, every conv at 1/8 of
its channels (`model.width`): generator 571,449 parameters, discriminator
221,537 (the reference: 36,298,035 and 14,113,793). Batch 16 windows of 5
frames, as the reference's hparams.

Launch (after configs/wav2lip_expert_talking_heads.py trained into runs/wav2lip_expert):
  jaxgen train --config configs/wav2lip_talking_heads.py --workdir runs/wav2lip
  jaxgen sample --checkpoint runs/wav2lip --audio speech.wav --reference face.png --out talk.mp4
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "wav2lip"
  c.seed = 0
  c.mesh_shape = None
  c.data = dict(num_clips=64, seconds=3.0, size=96, seed=0, repeats=8)
  c.expert = dict(workdir="runs/wav2lip_expert")
  c.model = dict(width=0.125)
  c.loss = dict(
    disc_weight=0.07,
    sync_weight=0.03,
    sync_threshold=0.75,
    sync_decay=0.98,  # running mean over ~50 steps
    sync_warmup=20,  # steps before the switch may latch
  )
  c.sample = dict(chunk_frames=64)
  # The reference: Adam, lr 1e-4, betas (0.5, 0.999), for the generator and the discriminator.
  c.optim = dict(
    learning_rate=1e-4,
    warmup_steps=0,
    decay="constant",
    weight_decay=0.0,
    b1=0.5,
    b2=0.999,
    grad_clip_norm=0.0,
  )
  c.train = dict(
    batch_size=16,
    num_steps=2000,
    max_minutes=None,
    log_every=50,
    sample_every=500,
    ema_decay=0.0,  # the reference keeps no EMA
    ema_warmup=0,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=500, keep=1)
  return c
