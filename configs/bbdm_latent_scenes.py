"""LBBDM on the procedural scenes: the Brownian bridge between autoencoder latents, 32×32 on CPU.

`configs/bbdm_scenes.py` moved into the latents of a trained jaxgen KL
autoencoder, as the reference's `Template-LBBDM-f4.yaml` does with its VQGAN:
both the target and the source picture are encoded (frozen), the U-Net sees
[z_t, SpatialRescaler(source)] (the source halved log2(f) times, then a
trainable bias-free 1×1 conv: the reference's `CondStageParams`), x0 is not
clipped while sampling (`testing.clip_denoised: False` in the reference), and
samples are decoded. Latents are scaled by 1/std of the training targets'
latents (the reference uses raw VQGAN latents; a KL autoencoder's have no
fixed scale).

The autoencoder (`autoencoder.workdir`) is a run of
`configs/autoencoder_shapes.py` (×2 downsampling, 4 latent channels: 32×32
scenes -> 16×16×4). That task trains on captioned shapes, not on scenes, so
its latents describe scenes only as well as a shapes autoencoder can.

Launch (autoencoder first):
  jaxgen train --config configs/autoencoder_shapes.py --workdir runs/autoencoder_shapes
  jaxgen train --config configs/bbdm_latent_scenes.py --workdir runs/bbdm_latent_label \
      autoencoder.workdir=runs/autoencoder_shapes
"""

import ml_collections

from jaxgen.configs import bbdm_scenes


def get_config() -> ml_collections.ConfigDict:
  c = bbdm_scenes.get_config()
  c.model.space = "latent"
  c.autoencoder = {
    "workdir": "runs/autoencoder_shapes",  # a run of configs/autoencoder_shapes.py
    "step": None,  # newest checkpoint
    "scaling_factor": None,  # None: 1/std of the latents of the first training targets
    "num_stat_examples": 1024,
  }
  c.bridge.clip_denoised = False
  c.unet.image_size = 16  # latent side: 32 pixels / 2
  c.unet.in_channels = 7  # 4 latent channels of z_t + 3 of the rescaled source picture
  c.unet.out_channels = 4
  return c
