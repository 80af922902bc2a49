"""MaskGIT class-conditional transformer, ImageNet 256x256 (16x16 tokens of a 1024-code VQGAN).

google-research/maskgit `configs/maskgit_class_cond_config.py` with
`inference.py`'s layout: 24 post-LN layers, width 768, 16 heads, MLP 3072,
dropout 0.1, LayerNorm eps 1e-12; vocabulary 1024 codes + 1000 classes + 1
mask = 2025 rows, sequence 1 class token + 256 image tokens:
172,457,193 parameters. Training (never released by the authors; these are
the config's values): batch 256, 2M steps, AdamW lr 1e-4 with betas
(0.9, 0.96), weight decay 0.045, 5000 warmup steps, label smoothing 0.1,
loss on masked tokens only, cosine mask schedule. Sampling: choice
temperature 4.5 annealed linearly, 16 iterations in `inference.py` (the
paper reports T = 8 at 256). Weights are not shipped.

Usage:
  from jaxgen.configs.arch import maskgit_imagenet256
  from jaxgen.models.maskgit import MaskGITConfig, MaskGITTransformer
  config = maskgit_imagenet256.get_config()
  model = MaskGITTransformer(MaskGITConfig(**config.transformer.to_dict()))
"""

import ml_collections

PARAMETER_COUNT = 172_457_193


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.transformer = ml_collections.ConfigDict(
    {
      "codebook_size": 1024,
      "num_image_tokens": 256,
      "num_classes": 1000,
      "width": 768,
      "num_layers": 24,
      "num_heads": 16,
      "mlp_dim": 3072,
      "dropout": 0.1,
      "layer_norm_eps": 1e-12,
      "initializer_range": 0.02,
    }
  )
  config.training = ml_collections.ConfigDict(
    {
      "batch_size": 256,
      "num_train_steps": 2_000_000,
      "learning_rate": 1e-4,
      "b1": 0.9,
      "b2": 0.96,
      "weight_decay": 0.045,
      "warmup_steps": 5000,
      "label_smoothing": 0.1,
      "mask_schedule": "cosine",
    }
  )
  config.sampling = ml_collections.ConfigDict(
    {"num_steps": 16, "choice_temperature": 4.5, "schedule": "cosine", "temperature": 1.0}
  )
  return config
