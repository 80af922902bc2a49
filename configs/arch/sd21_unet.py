"""Stable Diffusion 2.1 (768-v) denoising U-Net (latent 96x96x4, OpenCLIP ViT-H/14 text context).

The architecture of `stabilityai/stable-diffusion-2-1`'s `unet/config.json`
(diffusers `UNet2DConditionModel`): 64-wide heads (5/10/20/20 heads per
block), linear transformer projections, 1024-d cross-attention;
865,910,724 parameters. Weights are not shipped; convert a local diffusers
state dict with `jaxgen.convert.diffusers_unet.unet_from_diffusers`.

Usage:
  from jaxgen.configs.arch import sd21_unet
  from jaxgen.models.unet import UNetConfig, UNet2DConditionModel
  model = UNet2DConditionModel(UNetConfig(**sd21_unet.get_config().unet.to_dict()))
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.unet = ml_collections.ConfigDict(
    dict(
      sample_size=96,
      in_channels=4,
      out_channels=4,
      down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
      mid_block_type="UNetMidBlock2DCrossAttn",
      up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
      block_out_channels=(320, 640, 1280, 1280),
      layers_per_block=2,
      attention_head_dim=(5, 10, 20, 20),  # diffusers' name: heads per block (64-wide heads)
      cross_attention_dim=1024,
      use_linear_projection=True,
      upcast_attention=True,  # attention logits are always float32 in jaxgen
      norm_num_groups=32,
      norm_eps=1e-5,
      flip_sin_to_cos=True,
      freq_shift=0,
      downsample_padding=1,
      act_fn="silu",
    )
  )
  return config
