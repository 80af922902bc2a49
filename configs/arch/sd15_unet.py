"""Stable Diffusion 1.5 denoising U-Net (latent 64x64x4, CLIP ViT-L/14 text context).

The architecture of `runwayml/stable-diffusion-v1-5`'s `unet/config.json`
(diffusers `UNet2DConditionModel`): 859,520,964 parameters. Weights are not
shipped; convert a local diffusers state dict with
`jaxgen.convert.diffusers_unet.unet_from_diffusers`.

Usage:
  from jaxgen.configs.arch import sd15_unet
  from jaxgen.models.unet import UNetConfig, UNet2DConditionModel
  model = UNet2DConditionModel(UNetConfig(**sd15_unet.get_config().unet.to_dict()))
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.unet = ml_collections.ConfigDict(
    dict(
      sample_size=64,
      in_channels=4,
      out_channels=4,
      down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
      mid_block_type="UNetMidBlock2DCrossAttn",
      up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
      block_out_channels=(320, 640, 1280, 1280),
      layers_per_block=2,
      attention_head_dim=8,  # diffusers' name: 8 heads per block
      cross_attention_dim=768,
      use_linear_projection=False,
      norm_num_groups=32,
      norm_eps=1e-5,
      flip_sin_to_cos=True,
      freq_shift=0,
      downsample_padding=1,
      act_fn="silu",
    )
  )
  return config
