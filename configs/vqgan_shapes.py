"""VQGAN image tokenizer on the built-in captioned shapes (32×32 -> 8×8 codes of 128).

The first stage of the token priors (autoregressive, masked, discrete
diffusion): taming's VQGAN at CPU size — an f4 diffusers-style `VQModel`
(two ×2 downsamplings, attention at 8×8 and in the mid block), a codebook of
128 vectors of width 32, the PatchGAN with BatchNorm, the adaptive weight
and a discriminator start step, on 2 CPU cores. `quantizer.codebook_update="ema"`
swaps the learned codebook for EMA cluster means with dead-code reset.

Launch:
  jaxgen train --config configs/vqgan_shapes.py --workdir runs/vqgan_shapes
  jaxgen train --config configs/vqgan_shapes.py --workdir runs/vqgan_shapes_ema \
      quantizer.codebook_update=ema
Evaluate (held-out PSNR/SSIM, codebook usage):
  python -c "from jaxgen.tasks.registry import load_run; t, p = load_run('runs/vqgan_shapes'); \
      print(t.evaluate(p))"
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "vqgan"
  c.seed = 0
  c.mesh_shape = None

  c.data = dict(kind="shapes", resolution=32, num_train_examples=20_000, seed=0)
  c.vq = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(16, 32, 64),  # two ×2 downsamplings: 32×32 -> 8×8 codes
    layers_per_block=1,
    act_fn="silu",
    latent_channels=32,
    sample_size=32,
    num_vq_embeddings=128,
    norm_num_groups=8,
    vq_embed_dim=32,
    mid_block_add_attention=True,
  )
  # "learned": gradient-trained codebook (taming VectorQuantizer, legacy loss);
  # "ema": EMA cluster means with dead-code reset (taming EMAVectorQuantizer's decay).
  c.quantizer = dict(codebook_update="learned", ema_decay=0.99)
  # taming VQLPIPSWithDiscriminator without LPIPS (none offline). The GAN starts
  # once the reconstructions are shaped (taming's ImageNet runs: 250k steps in).
  c.loss = dict(
    codebook_weight=1.0,
    perceptual_weight=0.0,
    disc_start=1600,
    disc_factor=1.0,
    disc_weight=0.75,
    disc_loss="hinge",
  )
  # taming NLayerDiscriminator with BatchNorm, two stride-2 layers at 32×32.
  c.disc = dict(in_channels=3, channels=16, num_layers=2, norm="batch")
  # taming's Adam betas (0.5, 0.9). Small batches at a high rate: on 2 CPU
  # cores, batch 8 at 2e-3 drew shapes within 10 minutes where batch 32 at
  # 5e-4 (a quarter of the steps) still reconstructed only the background.
  c.optim = dict(
    learning_rate=2e-3,
    warmup_steps=20,
    weight_decay=0.0,
    b1=0.5,
    b2=0.9,
    eps=1e-8,
    grad_clip_norm=0.0,
    decay="cosine",
    end_factor=0.05,
  )
  c.train = dict(
    batch_size=8,
    num_steps=2400,
    max_minutes=12.0,
    log_every=50,
    sample_every=500,
    ema_decay=0.999,
    ema_warmup=10,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=400, keep=2)
  c.eval = dict(num_examples=512)
  return c
