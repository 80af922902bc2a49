"""AttnGAN on CUB birds: the repo's `code/cfg/bird_attn2.yml` and `DAMSM/bird.yml`.

Generator: three branches (64, 128, 256), DAMSM sentence/word features
256-d, CA to 100-d (CONDITION_DIM), z 100, GF_DIM 32, DF_DIM 64, R_NUM 2,
word attention in branches 2 and 3. Losses: λ (SMOOTH.LAMBDA) 5, γ1 4,
γ2 5, γ3 10, KL weight 1; Adam 2e-4, β (0.5, 0.999), batch 20, 18 words.
DAMSM: embedding 300, bidirectional LSTM 128 per direction, dropout 0.5,
vocabulary 5450 (the CUB captions' dictionary); image encoder Inception-v3
(frozen) → 1×1 conv 768 → 256 and Linear 2048 → 256; pretraining batch 48,
lr 2e-3, RNN gradient clip 0.25.

Parameters (trainable; BatchNorm running statistics excluded), equal to the
PyTorch reference's (tests/test_text_gans.py counts a transcription of it):
generator 7_084_592; discriminators D_NET64 6_313_730, D_NET128 19_424_002,
D_NET256 71_858_946; DAMSM text encoder 2_075_320; DAMSM image encoder's
trainable heads 721_152 (plus the frozen Inception-v3 layers, 21_785_568 as
`FIDInceptionV3` holds them).

Usage:
  from jaxgen.configs.arch import attngan_birds
  from jaxgen.models.attngan import AttnGANConfig, AttnGANGenerator
  from jaxgen.models.damsm import DAMSMConfig
  config = attngan_birds.get_config()
  generator = AttnGANGenerator(AttnGANConfig(**config.model.to_dict()))
  damsm = DAMSMConfig(**config.damsm.to_dict())
"""

import ml_collections

GENERATOR_PARAMETERS = 7_084_592
DISCRIMINATOR_PARAMETERS = (6_313_730, 19_424_002, 71_858_946)
TEXT_ENCODER_PARAMETERS = 2_075_320
IMAGE_ENCODER_HEAD_PARAMETERS = 721_152
IMAGE_ENCODER_BACKBONE_PARAMETERS = 21_785_568


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(
    {
      "text_dim": 256,
      "condition_dim": 100,
      "z_dim": 100,
      "gf_dim": 32,
      "df_dim": 64,
      "num_residual": 2,
      "num_stages": 3,
      "base_size": 64,
    }
  )
  config.damsm = ml_collections.ConfigDict(
    {"vocab_size": 5450, "word_dim": 300, "embed_dim": 256, "dropout": 0.5, "backbone": "inception"}
  )
  config.loss = ml_collections.ConfigDict(
    {"damsm_weight": 5.0, "kl_weight": 1.0, "gamma1": 4.0, "gamma2": 5.0, "gamma3": 10.0}
  )
  config.words_num = 18
  config.optimizer = ml_collections.ConfigDict(
    {"learning_rate": 2e-4, "b1": 0.5, "b2": 0.999, "batch_size": 20}
  )
  config.damsm_optimizer = ml_collections.ConfigDict(
    {"learning_rate": 2e-3, "batch_size": 48, "rnn_grad_clip": 0.25}
  )
  return config
