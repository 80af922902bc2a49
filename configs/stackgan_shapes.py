"""StackGAN++ on the built-in captioned shapes: two branches, 16×16 then 32×32.

The GAN baseline of the text-to-image comparison: conditioning augmentation
of the sentence embedding of a frozen DAMSM (`damsm.workdir`, a run of
`configs/damsm_shapes.py`), an initial stage from 4×4 to 16×16 and one
residual stage up to 32×32, a discriminator per branch scored conditionally
(on μ) and unconditionally on real, mismatched and fake images. Losses as
StackGAN-v2's birds config (unconditional weight 1, KL 2, no colour term),
its Adam (2e-4 in the reference, 5e-4 here for the short CPU budget,
β 0.5, 0.999) and its 0.999 average of the generator's weights.

Launch:
  jaxgen train --config configs/damsm_shapes.py --workdir runs/damsm_shapes
  jaxgen train --config configs/stackgan_shapes.py --workdir runs/stackgan_shapes \
      damsm.workdir=runs/damsm_shapes
  jaxgen sample --checkpoint runs/stackgan_shapes --prompt "a large red circle in the center" \
      --out stackgan.png
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "stackgan"
  c.seed = 0
  c.mesh_shape = None

  c.data = dict(kind="shapes", resolution=32, num_train_examples=20_000, seed=0)
  c.damsm = dict(workdir="runs/damsm_shapes")  # a run of configs/damsm_shapes.py
  # text_dim is the DAMSM's embed_dim. The last stage draws base_size · 2^(num_stages − 1) pixels.
  c.model = dict(
    condition_dim=32, z_dim=32, gf_dim=32, df_dim=16, num_residual=1, num_stages=2, base_size=16
  )
  c.loss = dict(uncond_weight=1.0, kl_weight=2.0, colour_weight=0.0)
  c.optim = dict(
    learning_rate=5e-4,
    warmup_steps=0,
    weight_decay=0.0,
    b1=0.5,
    b2=0.999,
    eps=1e-8,
    grad_clip_norm=0.0,
    decay="constant",
  )
  c.train = dict(
    batch_size=24,
    num_steps=3000,
    max_minutes=15.0,
    log_every=50,
    sample_every=500,
    ema_decay=0.999,  # StackGAN-v2's avg_param_G
    ema_warmup=10,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=500, keep=2)
  c.eval = dict(num_examples=256)
  return c
