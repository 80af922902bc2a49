"""BBDM on the procedural scenes in pixel space: label map (or sketch) -> day photo, 32×32 on CPU.

The reference's Brownian bridge (xuekt98/BBDM `Template-BBDM.yaml`): m_t
linear 0.001 -> 0.999 over T = 1000, max_var 1, objective 'grad', L1 loss,
skip-step sampling with sample_step 200 (202 U-Net calls), eta 1, x0 clipped
while sampling. The source enters as an RGB picture (label colours, or the
sketch's grey in three channels: the reference's PIL `convert('RGB')`) and is
concatenated to x_t. The U-Net is the reference's (guided-diffusion
`UNetModel`, scale-shift norm, residual up/down blocks, head width 64 ->
32 here, attention_resolutions (32, 16, 8) matched against the downsample
rate, i.e. attention in the middle block only) at the table's CPU size:
model_channels 32, channel_mult (1, 2, 4), one res block per level:
2,963,907 parameters. The faithful LBBDM-f4 U-Net (model_channels 128,
channel_mult (1, 4, 8), two res blocks, in 6 / out 3) has 237,094,787
(tests/test_bbdm.py).

Training at the comparison table's budget (32×32, batch 16, 1500 steps):
Adam as the reference (β1 0.9, no weight decay) at 2e-4 (the reference's
1e-4 with plateau decay is tuned for 100 epochs), EMA 0.995 (the
reference's decay; it starts EMA at step 30000, beyond this budget).

Launch:
  jaxgen train --config configs/bbdm_scenes.py --workdir runs/bbdm_label
  jaxgen train --config configs/bbdm_scenes.py --workdir runs/bbdm_sketch data.source=sketch
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "bbdm"
  c.seed = 0
  c.mesh_shape = None

  c.data = {
    "source": "label",
    "target": "image",
    "resolution": 32,
    "num_train_examples": 8000,
    "seed": 0,
    "paired": True,
  }
  c.model = {"space": "pixel", "compute_dtype": "float32", "remat": "none"}
  c.bridge = {
    "num_timesteps": 1000,
    "mt_type": "linear",
    "max_var": 1.0,
    "objective": "grad",
    "loss_type": "l1",
    "skip_sample": True,
    "sample_step": 200,
    "eta": 1.0,
    "clip_denoised": True,
  }
  # BBDM's UNetParams (guided-diffusion UNetModel arguments) at CPU size.
  c.unet = {
    "image_size": 32,
    "in_channels": 6,  # x_t and the source picture
    "model_channels": 32,
    "out_channels": 3,
    "num_res_blocks": 1,
    "attention_resolutions": (32, 16, 8),
    "channel_mult": (1, 2, 4),
    "conv_resample": True,
    "num_heads": 8,
    "num_head_channels": 32,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
  }
  c.optim = {
    "learning_rate": 2e-4,
    "warmup_steps": 50,
    "decay": "constant",
    "weight_decay": 0.0,
    "b1": 0.9,
    "b2": 0.999,
    "grad_clip_norm": 0.0,
  }
  c.train = {
    "batch_size": 16,
    "num_steps": 1500,
    "max_minutes": None,
    "log_every": 50,
    "sample_every": 1500,
    "ema_decay": 0.995,
    "ema_warmup": 10,
    "max_consecutive_skips": 10,
  }
  c.checkpoint = {"save_every": 500, "keep": 2}
  return c
