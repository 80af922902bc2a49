"""Text-to-image latent diffusion on the built-in captioned shapes (16×16 -> 8×8×4 latents).

The second stage after `configs/autoencoder_shapes.py`: the quickstart's
text encoder + U-Net (`configs/text_to_image_shapes.py`, same widths,
same cross-attention at the half-resolution level, same diffusion and
sampler settings) trained on the frozen autoencoder's latents, computed on
the fly and scaled by 1/std (measured at start-up, as SD's 0.18215).

Launch (autoencoder first):
  jaxgen train --config configs/autoencoder_shapes.py --workdir runs/autoencoder_shapes
  jaxgen train --config configs/latent_diffusion_shapes.py --workdir runs/shapes_latent \
      autoencoder.workdir=runs/autoencoder_shapes
  jaxgen sample --checkpoint runs/shapes_latent --prompt "a small red circle in the top left"

Inpainting variant (mask + masked-image latents as 5 extra U-Net inputs):
  jaxgen train --config configs/latent_diffusion_shapes.py --workdir runs/shapes_inpaint \
      model.inpainting=True unet.in_channels=11
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "latent_diffusion"
  c.seed = 0
  c.mesh_shape = None

  c.autoencoder = dict(
    workdir="runs/autoencoder_shapes",  # a run of configs/autoencoder_shapes.py
    step=None,  # newest checkpoint
    scaling_factor=None,  # None: 1/std of latents of the first training images
    num_stat_examples=2048,
    sample_posterior=True,
  )
  c.data = dict(resolution=16, num_train_examples=20_000, seed=0)
  c.text = dict(max_length=12, width=64, num_layers=2, num_heads=4)
  # compute_dtype "bfloat16" and remat policies as in configs/text_to_image_shapes.py.
  c.model = dict(coord_channels=True, inpainting=False, compute_dtype="float32", remat="none")
  c.inpainting = dict(full_mask_prob=0.25)
  c.unet = dict(
    sample_size=8,  # latent side: 16 pixels / 2
    in_channels=6,  # 4 latent + 2 coordinate channels (11 with inpainting: + 1 mask + 4)
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    attention_head_dim=4,
    cross_attention_dim=64,
    norm_num_groups=8,
    class_embed_type="identity",
  )
  c.diffusion = dict(
    schedule="squaredcos_cap_v2",
    num_train_timesteps=1000,
    beta_start=None,
    beta_end=None,
    prediction_type="v_prediction",
    min_snr_gamma=5.0,
    cond_drop_prob=0.1,
  )
  c.sample = dict(sampler="dpm_solver_pp_2m", num_steps=20, guidance=3.0, eta=0.0)
  c.optim = dict(
    learning_rate=1e-3,
    warmup_steps=100,
    weight_decay=0.0,
    b1=0.9,
    b2=0.99,
    eps=1e-8,
    grad_clip_norm=1.0,
    decay="cosine",
    end_factor=0.05,
  )
  c.train = dict(
    batch_size=32,
    num_steps=2400,
    max_minutes=14.0,
    log_every=50,
    sample_every=800,
    ema_decay=0.999,
    ema_warmup=10,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=400, keep=2)
  c.eval = dict(num_examples=256)
  return c
