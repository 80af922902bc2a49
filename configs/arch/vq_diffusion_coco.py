"""VQ-Diffusion's COCO text-to-image transformer (microsoft/VQ-Diffusion `configs/coco.yaml`).

19 blocks of width 1024 with 16 heads and a ×4 GELU2 MLP, AdaLN over T = 100
steps, cross-attention to 77 × 512 text states, a 32 × 32 grid of tokens
from the taming Gumbel f8 VQ-VAE remapped to its 2887 used codes (+ the mask):
388,780,871 parameters, the reference's layer list counted exactly (the
frozen CLIP ViT-B/32 text encoder excluded, as here `text_vocab_size=None`
means the states are given; the paper's ~370 M for VQ-Diffusion-B is a
different, unreconciled figure). The diffusion settings are the reference's
(`diffusion_step` 100, auxiliary weight 5e-4 with the adaptive factor,
mask_weight [1, 1], importance sampling of t) and its optimiser: AdamW
β (0.9, 0.96), weight decay 0.045, warm-up to 2e-4 over 1000 iterations,
gradient clipping 0.5 for the first 5000, EMA 0.99 every 25 iterations.

Usage:
  from jaxgen.configs.arch import vq_diffusion_coco
  from jaxgen.models.vq_diffusion import VQDiffusion, VQDiffusionConfig
  config = vq_diffusion_coco.get_config()
  model = VQDiffusion(VQDiffusionConfig(**config.model.to_dict()))
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(
    {
      "num_codes": 2887,
      "height": 32,
      "width": 32,
      "embed_dim": 1024,
      "num_layers": 19,
      "num_heads": 16,
      "mlp_ratio": 4,
      "condition_dim": 512,
      "num_timesteps": 100,
      "dropout": 0.0,
      "text_vocab_size": None,
      "text_max_length": 77,
    }
  )
  config.diffusion = ml_collections.ConfigDict(
    {
      "num_timesteps": 100,
      "auxiliary_loss_weight": 5e-4,
      "adaptive_auxiliary_loss": True,
      "mask_weight": (1.0, 1.0),
      "importance_sampling": True,
      "truncation_rate": 0.85,
    }
  )
  config.optimizer = ml_collections.ConfigDict(
    {
      "b1": 0.9,
      "b2": 0.96,
      "weight_decay": 0.045,
      "learning_rate": 2e-4,
      "warmup_steps": 1000,
      "grad_clip": 0.5,
      "grad_clip_steps": 5000,
      "ema_decay": 0.99,
      "ema_every": 25,
    }
  )
  config.parameters = 388_780_871
  return config
