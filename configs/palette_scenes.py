"""Palette on the procedural scenes: label map (or sketch) -> day photo, 32×32 on CPU.

The reference's Palette (Janspiry/Palette-Image-to-Image-Diffusion-Models,
`config/*.json` with `module_name: guided_diffusion`): the guided-diffusion
U-Net on [source, y_t] with Palette's defaults (scale-shift norm, residual
up/down blocks), head width 32, `attn_res` [16] compared with the downsample
rate (so attention in the middle block only, as in the reference at 256),
dropout 0.2; conditioned on the continuous noise level; noise-prediction MSE;
train schedule linear 2000 steps 1e-6 -> 0.01, test schedule linear 1000
steps 1e-4 -> 0.09. The source enters as `source_input`: one-hot labels
(8 channels) or the sketch (1 channel), concatenated to the noisy image.

At the comparison table's CPU size (32×32): inner_channel 32, channel_mults
(1, 2, 4) (32×32, 16×16, 8×8), res_blocks 2: 4,094,979 parameters from label
maps, 4,092,963 from sketches. The faithful 256×256 network (inner_channel
64, channel_mults (1, 2, 4, 8), in 6 / out 3) has 62,641,347
(tests/test_adm_unet.py).

Sampling: 50 ancestral steps of the test schedule (every 20th of its 1000
timesteps; `sample.num_steps=1000` is the reference's loop).

Training at the table's budget (32×32, batch 16, 1500 steps): Adam (no
weight decay) at 2e-4 instead of the reference's 5e-5, which is tuned for
millions of iterations; EMA 0.995 instead of 0.9999 (an average over ~10^4
steps would still be mostly the initial weights after 1500).

Launch:
  jaxgen train --config configs/palette_scenes.py --workdir runs/palette_label
  jaxgen train --config configs/palette_scenes.py --workdir runs/palette_sketch data.source=sketch
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "palette"
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
  c.model = {"compute_dtype": "float32", "remat": "none"}
  # Palette's `unet` section; in_channel / out_channel None: source channels + 3 / 3.
  c.unet = {
    "in_channel": None,
    "out_channel": None,
    "inner_channel": 32,
    "channel_mults": (1, 2, 4),
    "attn_res": (16,),
    "num_head_channels": 32,
    "res_blocks": 2,
    "dropout": 0.2,
    "image_size": 32,
  }
  c.beta_schedule = {
    "train": {"schedule": "linear", "n_timestep": 2000, "linear_start": 1e-6, "linear_end": 0.01},
    "test": {"schedule": "linear", "n_timestep": 1000, "linear_start": 1e-4, "linear_end": 0.09},
  }
  c.sample = {"num_steps": 50}
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
