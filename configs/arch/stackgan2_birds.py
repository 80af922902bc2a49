"""StackGAN++ (StackGAN-v2) on CUB birds: the repo's `code/cfg/birds_3stages.yml`.

Three branches (64, 128, 256), char-CNN-RNN sentence embedding 1024-d, CA to
128-d (EMBEDDING_DIM), z 100, GF_DIM 64, DF_DIM 64, R_NUM 2; losses with
UNCOND_LOSS 1.0, KL coefficient 2.0 and no colour-consistency term (that is
for the unconditional LSUN/ImageNet configs, COLOR_LOSS 50); Adam 2e-4,
β (0.5, 0.999), batch 24 (the paper's; the yml ships 9 with "#24" beside it).

Parameters (trainable; BatchNorm running statistics excluded), equal to the
PyTorch reference's (tests/test_text_gans.py counts a transcription of it):
generator 21_239_696; discriminators D_NET64 5_723_906, D_NET128 18_834_178,
D_NET256 71_269_122.

Usage:
  from jaxgen.configs.arch import stackgan2_birds
  from jaxgen.models.stackgan import StackGANConfig, StackGANGenerator, StageDiscriminator
  config = stackgan2_birds.get_config()
  arch = StackGANConfig(**config.model.to_dict())
  generator = StackGANGenerator(arch)
  discriminators = [StageDiscriminator(arch.df_dim, arch.condition_dim, stage=s) for s in range(3)]
"""

import ml_collections

GENERATOR_PARAMETERS = 21_239_696
DISCRIMINATOR_PARAMETERS = (5_723_906, 18_834_178, 71_269_122)


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(
    {
      "text_dim": 1024,
      "condition_dim": 128,
      "z_dim": 100,
      "gf_dim": 64,
      "df_dim": 64,
      "num_residual": 2,
      "num_stages": 3,
      "base_size": 64,
    }
  )
  config.loss = ml_collections.ConfigDict(
    {"uncond_weight": 1.0, "kl_weight": 2.0, "colour_weight": 0.0}
  )
  config.optimizer = ml_collections.ConfigDict(
    {"learning_rate": 2e-4, "b1": 0.5, "b2": 0.999, "batch_size": 24}
  )
  return config
