"""KL autoencoder on the built-in captioned shapes (16×16 -> 8×8×4 latents).

The first stage of `configs/latent_diffusion_shapes.py`: a tiny diffusers-
style `AutoencoderKL` (×2 downsampling, 4 latent channels) trained with L1
reconstruction + KL and a PatchGAN hinge term, on 2 CPU cores.

Launch:
  jaxgen train --config configs/autoencoder_shapes.py --workdir runs/autoencoder_shapes
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "autoencoder"
  c.seed = 0
  c.mesh_shape = None

  c.data = dict(resolution=16, num_train_examples=20_000, seed=0)
  c.vae = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    block_out_channels=(16, 32),  # one ×2 downsampling: 16×16 -> 8×8
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=16,
    # The latent model measures the latents' std and uses 1/std (as SD
    # did for its 0.18215); this value is not used.
    scaling_factor=1.0,
    mid_block_add_attention=True,
  )
  # Per-example sums over pixels (LDM's convention); kl_weight as SD's VAE.
  c.loss = dict(reconstruction="l1", kl_weight=1e-6, perceptual_weight=0.0)
  # The hinge terms are means over patches while the reconstruction is a sum
  # over 16·16·3 values, hence a weight well above 1 (LDM adapts it; fixed here).
  c.disc = dict(
    enabled=True, start=0, weight=5.0, channels=32, num_layers=2, norm="group", norm_num_groups=8
  )
  c.optim = dict(
    learning_rate=1e-3,
    warmup_steps=100,
    weight_decay=0.0,
    b1=0.5,
    b2=0.9,
    eps=1e-8,
    grad_clip_norm=0.0,
    decay="cosine",
    end_factor=0.05,
  )
  c.train = dict(
    batch_size=32,
    num_steps=2500,
    max_minutes=12.0,
    log_every=50,
    sample_every=500,
    ema_decay=0.999,
    ema_warmup=10,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=500, keep=2)
  c.eval = dict(num_examples=256)
  return c
