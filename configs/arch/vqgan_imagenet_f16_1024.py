"""taming-transformers VQGAN, ImageNet f16 with 1024 codes (16x16 tokens at 256x256).

The architecture and loss of the repo's own `configs/imagenet_vqgan.yaml` (n_embed 1024, disc_start 250001,
disc_weight 0.8, disc_num_layers 2): ch 128, ch_mult (1, 1, 2, 2, 4), num_res_blocks 2,
attention at resolution 16 (the deepest encoder level, the first decoder
level), z_channels = embed_dim = 256, as a diffusers `VQModel` config:
72_141_699 parameters (encoder, decoder, quant convs and codebook; the
discriminator and LPIPS are not part of the model). Weights are not shipped;
convert a local diffusers state dict with
`jaxgen.convert.diffusers_vqmodel.vqmodel_from_diffusers`.

Usage:
  from jaxgen.configs.arch import vqgan_imagenet_f16_1024
  from jaxgen.models.vqgan import VQGANLossConfig, VQModel, VQModelConfig
  config = vqgan_imagenet_f16_1024.get_config()
  model = VQModel(VQModelConfig(**config.vq.to_dict()))
  loss = VQGANLossConfig(**config.loss.to_dict())  # discriminator: config.disc
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.vq = ml_collections.ConfigDict(
    {
      "in_channels": 3,
      "out_channels": 3,
      "down_block_types": ("DownEncoderBlock2D",) * 4 + ("AttnDownEncoderBlock2D",),
      "up_block_types": ("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 4,
      "block_out_channels": (128, 128, 256, 256, 512),
      "layers_per_block": 2,
      "act_fn": "silu",
      "latent_channels": 256,
      "sample_size": 256,
      "num_vq_embeddings": 1024,
      "norm_num_groups": 32,
      "vq_embed_dim": 256,
      "norm_type": "group",
      "mid_block_add_attention": True,
    }
  )
  # taming VQLPIPSWithDiscriminator (perceptual_weight 1.0 there: no LPIPS offline).
  config.loss = ml_collections.ConfigDict(
    {
      "codebook_weight": 1.0,
      "perceptual_weight": 0.0,
      "disc_start": 250001,
      "disc_factor": 1.0,
      "disc_weight": 0.8,
      "disc_loss": "hinge",
    }
  )
  # taming NLayerDiscriminator(input_nc 3, ndf 64, n_layers 2) with BatchNorm.
  config.disc = ml_collections.ConfigDict(
    {"in_channels": 3, "channels": 64, "num_layers": 2, "norm": "batch"}
  )
  config.base_learning_rate = 4.5e-6
  return config
