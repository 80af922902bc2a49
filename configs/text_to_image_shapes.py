"""Text-to-image pixel diffusion on the built-in captioned shapes (16×16).

The quickstart config: a small text encoder + diffusers-style U-Net (1.1M
parameters) trained for about 6 minutes on 2 CPU cores (~3 steps/s). The
caption reaches the U-Net through cross-attention at 8×8 and, pooled, through
the timestep embedding; CoordConv maps let it place shapes by position.

Launch:
  jaxgen train --config configs/text_to_image_shapes.py --workdir runs/shapes
  jaxgen sample --checkpoint runs/shapes --prompt "a small red circle in the top left" \
      --out grid.png
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "text_to_image"
  c.seed = 0
  c.mesh_shape = None  # (data, fsdp, tensor); None puts every device on `data`

  c.data = dict(resolution=16, num_train_examples=20_000, seed=0)
  c.text = dict(max_length=12, width=64, num_layers=2, num_heads=4)
  # CoordConv: the U-Net sees (y, x) maps beside the noisy image. patch_size
  # p > 1 folds p×p patches into channels (for larger images on small
  # compute); at 32×32 with p=2 the model learned colour but not position in
  # the same 1000 steps, so the quickstart stays at 16×16 pixels.
  # compute_dtype: "bfloat16" computes in bf16 (params, optimizer and loss stay float32);
  # remat: "full" | "save_dots" | "save_dots_no_batch" recompute U-Net block activations.
  c.model = dict(patch_size=1, coord_channels=True, compute_dtype="float32", remat="none")
  c.unet = dict(
    sample_size=16,
    in_channels=5,  # RGB + 2 coordinate channels
    out_channels=3,
    # Cross-attention only at 8×8 (and the mid block): on CPU, attention
    # over 16×16 tokens would cost more than all convolutions together.
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    attention_head_dim=4,  # diffusers' name: the number of heads
    cross_attention_dim=64,
    norm_num_groups=8,
    # The pooled caption is projected into the timestep embedding (GLIDE,
    # Imagen), so every ResNet block is text-modulated.
    class_embed_type="identity",
  )
  c.diffusion = dict(
    schedule="squaredcos_cap_v2",
    num_train_timesteps=1000,
    beta_start=None,  # the cosine schedule has no beta range
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
    num_steps=1200,
    max_minutes=None,
    log_every=50,
    sample_every=400,
    ema_decay=0.999,
    ema_warmup=10,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=400, keep=2)
  c.eval = dict(num_examples=256)
  return c
