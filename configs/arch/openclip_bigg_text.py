"""OpenCLIP ViT-bigG/14 text tower with its projection: SDXL's second text encoder.

The architecture of `stabilityai/stable-diffusion-xl-base-1.0`'s
`text_encoder_2/config.json` (transformers `CLIPTextModelWithProjection`):
32 layers, width 1280, 20 heads, GELU, 77 positions, a bias-free 1280 -> 1280
`text_projection` of the pooled state; 694,659,840 parameters. Its ids are
the legacy ones (eos_token_id=2), so the pooled state is taken at the largest
token id. SDXL's first encoder is CLIP ViT-L/14 (`clip_vit_l14_text`).
Weights are not shipped; load a local folder with
`jaxgen.convert.transformers_clip.load_clip_text_projection_model`.

Usage:
  from jaxgen.configs.arch import openclip_bigg_text
  from jaxgen.models import clip_text
  config = clip_text.CLIPTextWithProjectionConfig(
    **openclip_bigg_text.get_config().text_encoder.to_dict()
  )
  model = clip_text.CLIPTextModelWithProjection(config)
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.text_encoder = ml_collections.ConfigDict(
    dict(
      vocab_size=49408,
      hidden_size=1280,
      intermediate_size=5120,
      num_hidden_layers=32,
      num_attention_heads=20,
      max_position_embeddings=77,
      hidden_act="gelu",
      layer_norm_eps=1e-5,
      pad_token_id=1,
      bos_token_id=0,
      eos_token_id=2,
      projection_dim=1280,
    )
  )
  return config
