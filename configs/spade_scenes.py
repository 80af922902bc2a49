"""SPADE on the procedural scenes: label map -> day photo, 32×32 on CPU.

NVlabs/SPADE's generator without the VAE encoder (SPADE residual blocks with
spectral norm, batch-statistic parameter-free norm, nearest ×2 upsampling),
the two-scale n_layers_D 4 PatchGAN with spectral + instance norm, hinge +
λ_feat 10 feature matching, no VGG term (no offline VGG19), Adam β (0, 0.9)
with TTUR (G 1e-4, D 4e-4 via optim.lr_multipliers), at the comparison
table's budget: 32×32 scenes, batch 16, 1500 steps.

At crop 32 the reference's default `num_upsampling_layers normal` (5 ×2
upsamplings) starts from a 1×1 map (crop / 2**5), which is what it would do
at this crop; that is kept. Widths are shrunk for 2 shared CPU cores: ngf 8
(blocks of 128 down to 8 channels) and SPADE MLPs 16 wide instead of the
reference's hard-coded 128 (at 128 they hold ~3/4 of the generator's weights
and most of a step's FLOPs: 2.4e10 per step with ndf 32, 4.6e9 here): 1,470,811 generator
parameters from the scenes' 8 one-hot labels; ndf 16: 353,826 in the
two-scale discriminator; 1.82 M in all. The faithful configs are
`generator.ngf=64 generator.spade_hidden=128 discriminator.ndf=64` (ADE20K
96,492,483 / Cityscapes 93,048,003 G, COCO D 5,904,514 with their label
counts; see tests/test_spade.py). No EMA (the reference keeps none).

Launch:
  jaxgen train --config configs/spade_scenes.py --workdir runs/spade_label
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "spade"
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
  c.generator = {
    "ngf": 8,
    "num_upsampling_layers": "normal",
    "spectral_norm": True,
    "spade_hidden": 16,
  }
  c.discriminator = {"ndf": 16, "n_layers_D": 4, "num_D": 2}
  c.loss = {"gan_mode": "hinge", "feat_weight": 10.0, "vgg_weight": 0.0}
  # TTUR: lr/2 for G, 2·lr for D of the reference's lr 2e-4; constant (its
  # default niter_decay is 0), no weight decay, no clipping.
  c.optim = {
    "learning_rate": 1e-4,
    "lr_multipliers": {"discriminator": 4.0},
    "warmup_steps": 0,
    "decay": "constant",
    "weight_decay": 0.0,
    "b1": 0.0,
    "b2": 0.9,
    "grad_clip_norm": 0.0,
  }
  c.train = {
    "batch_size": 16,
    "num_steps": 1500,
    "max_minutes": None,
    "log_every": 50,
    "sample_every": 500,
    "ema_decay": 0.0,  # no EMA in SPADE: the "EMA" params are the params
    "ema_warmup": 0,
    "max_consecutive_skips": 10,
  }
  c.checkpoint = {"save_every": 500, "keep": 2}
  return c
