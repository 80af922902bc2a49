"""Stable Diffusion 1.x / 2.x KL autoencoder (8x downsampling, 4 latent channels).

The architecture of `runwayml/stable-diffusion-v1-5`'s `vae/config.json`
(diffusers `AutoencoderKL`; the SD 2.x VAE differs only in `sample_size`,
768): 83,653,863 parameters. Weights are not shipped; convert a local
diffusers state dict with `jaxgen.convert.diffusers_vae.vae_from_diffusers`.

Usage:
  from jaxgen.configs.arch import sd_vae
  from jaxgen.models.autoencoder import AutoencoderKL, AutoencoderKLConfig
  model = AutoencoderKL(AutoencoderKLConfig(**sd_vae.get_config().vae.to_dict()))
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.vae = ml_collections.ConfigDict(
    {
      "in_channels": 3,
      "out_channels": 3,
      "down_block_types": ("DownEncoderBlock2D",) * 4,
      "up_block_types": ("UpDecoderBlock2D",) * 4,
      "block_out_channels": (128, 256, 512, 512),
      "layers_per_block": 2,
      "act_fn": "silu",
      "latent_channels": 4,
      "norm_num_groups": 32,
      "sample_size": 512,
      "scaling_factor": 0.18215,
      "shift_factor": None,
      "force_upcast": True,
      "use_quant_conv": True,
      "use_post_quant_conv": True,
      "mid_block_add_attention": True,
    }
  )
  return config
