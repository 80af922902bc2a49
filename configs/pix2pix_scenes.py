"""Pix2Pix on the procedural scenes: label map (or sketch) -> day photo, 32×32 on CPU.

The reference's pix2pix (U-Net generator, 70×70 PatchGAN, vanilla GAN +
λ_L1 = 100, D loss halved, Adam 2e-4 β1 0.5, BatchNorm on batch statistics,
dropout at test time) at the comparison table's budget: 32×32 scenes, batch
16, 1500 steps, on 2 shared CPU cores: both nets are narrowed to fit that.
The U-Net has 5 levels (32×32 down to a 1×1 bottleneck, as unet_256 does at
256) and ngf 16: 1,044,899 generator parameters from label maps (8 one-hot
channels), 1,043,107 from sketches; with 5 levels the reference places no
dropout (it goes in the num_downs - 5 middle levels), so this generator is
deterministic. The discriminator is the 70×70 PatchGAN design (n_layers 3,
BatchNorm) on source ‖ image at ndf 16: 177,361 parameters from labels,
175,569 from sketches (a 2×2 logit map at 32×32); 1.22 M in all. The faithful
256×256 models are `generator.num_downs=8 generator.ngf=64
discriminator.channels=64` (54,413,955 and 2,768,705 for RGB -> RGB).

Launch:
  jaxgen train --config configs/pix2pix_scenes.py --workdir runs/pix2pix_label
  jaxgen train --config configs/pix2pix_scenes.py --workdir runs/pix2pix_sketch data.source=sketch
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "pix2pix"
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
  c.generator = {"num_downs": 5, "ngf": 16, "norm": "batch", "use_dropout": True}
  c.discriminator = {"channels": 16, "num_layers": 3, "norm": "batch"}
  c.loss = {"gan_mode": "vanilla", "l1_weight": 100.0}
  # The reference's Adam: constant rate (its linear decay starts at half the
  # epochs; not worth it at 1500 steps), no weight decay, no clipping.
  c.optim = {
    "learning_rate": 2e-4,
    "warmup_steps": 0,
    "decay": "constant",
    "weight_decay": 0.0,
    "b1": 0.5,
    "b2": 0.999,
    "grad_clip_norm": 0.0,
  }
  c.train = {
    "batch_size": 16,
    "num_steps": 1500,
    "max_minutes": None,
    "log_every": 50,
    "sample_every": 500,
    "ema_decay": 0.0,  # no EMA in pix2pix: the "EMA" params are the params
    "ema_warmup": 0,
    "max_consecutive_skips": 10,
  }
  c.checkpoint = {"save_every": 500, "keep": 2}
  return c
