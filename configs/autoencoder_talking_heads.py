"""KL autoencoder of procedural talking-head frames (48×48 faces -> 12×12×3 latents).

The first stage of `configs/difftalk_talking_heads.py`, DiffTalk's layout
at CPU size: DiffTalk's first stage is an f4 autoencoder with 3 latent
channels (a VQ model, 256 -> 64×64×3); this is jaxgen's KL autoencoder with
the same factor and channels (two ×2 downsamplings) on every frame of the
training clips (`data.source="talking_heads"`: held-out identities and
utterances for evaluation). L1 + KL only: no PatchGAN, to fit a few CPU
minutes (set `disc.enabled=True` for sharper faces on more compute).

Launch:
  jaxgen train --config configs/autoencoder_talking_heads.py \
      --workdir runs/autoencoder_talking_heads
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "autoencoder"
  c.seed = 0
  c.mesh_shape = None

  c.data = dict(source="talking_heads", resolution=48, num_clips=48, seconds=3.0, seed=0)
  c.vae = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 64),  # two ×2 downsamplings: 48×48 -> 12×12
    layers_per_block=1,
    latent_channels=3,
    norm_num_groups=8,
    sample_size=48,
    # The diffusion task measures 1/std of the latents itself; this value is not used.
    scaling_factor=1.0,
    mid_block_add_attention=False,
  )
  c.loss = dict(reconstruction="l1", kl_weight=1e-6, perceptual_weight=0.0)
  c.disc = dict(
    enabled=False, start=0, weight=5.0, channels=32, num_layers=2, norm="group", norm_num_groups=8
  )
  c.optim = dict(
    learning_rate=2e-3,
    warmup_steps=50,
    weight_decay=0.0,
    b1=0.5,
    b2=0.9,
    eps=1e-8,
    grad_clip_norm=0.0,
    decay="cosine",
    end_factor=0.05,
  )
  c.train = dict(
    batch_size=16,
    num_steps=900,
    max_minutes=6.0,
    log_every=50,
    sample_every=0,
    ema_decay=0.99,
    ema_warmup=10,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=200, keep=2)
  c.eval = dict(num_examples=300)
  return c
