"""Stable Diffusion XL base denoising U-Net (latent 128x128x4, two CLIP text encoders).

The architecture of `stabilityai/stable-diffusion-xl-base-1.0`'s
`unet/config.json` (diffusers `UNet2DConditionModel`): 2,567,463,684
parameters. Three levels, the first without attention; 1, 2 and 10
transformer layers per level with linear projections; cross-attention over
the 2048-wide concatenation of both text encoders' penultimate states; and
the "text_time" added embedding: six size/crop ids, each a 256-wide sinusoid,
beside the 1280-wide pooled text embedding (1280 + 6 * 256 = 2816 features).
Weights are not shipped; load a local pipeline folder with
`jaxgen.convert.diffusers_sdxl.load_stable_diffusion_xl`.

Usage:
  from jaxgen.configs.arch import sdxl_unet
  from jaxgen.models.unet import UNetConfig, UNet2DConditionModel
  model = UNet2DConditionModel(UNetConfig(**sdxl_unet.get_config().unet.to_dict()))
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.unet = ml_collections.ConfigDict(
    dict(
      sample_size=128,
      in_channels=4,
      out_channels=4,
      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
      mid_block_type="UNetMidBlock2DCrossAttn",
      up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
      block_out_channels=(320, 640, 1280),
      layers_per_block=2,
      transformer_layers_per_block=(1, 2, 10),
      attention_head_dim=(5, 10, 20),  # diffusers' name: heads per block (64 wide)
      cross_attention_dim=2048,
      use_linear_projection=True,
      addition_embed_type="text_time",
      addition_time_embed_dim=256,
      projection_class_embeddings_input_dim=2816,
      norm_num_groups=32,
      norm_eps=1e-5,
      flip_sin_to_cos=True,
      freq_shift=0,
      downsample_padding=1,
      act_fn="silu",
    )
  )
  return config
