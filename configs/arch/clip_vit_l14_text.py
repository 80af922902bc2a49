"""CLIP ViT-L/14 text tower, the text encoder of Stable Diffusion 1.x.

The architecture of `openai/clip-vit-large-patch14`'s text model, as in
`stable-diffusion-v1-5/text_encoder/config.json` (transformers
`CLIPTextModel`): 12 layers, width 768, 12 heads, 77 positions,
123,060,480 parameters. Its ids are the legacy ones (eos_token_id=2), so the
pooled output is taken at the largest token id, as transformers does.
Weights are not shipped; load a local folder with
`jaxgen.convert.transformers_text.load_clip_text_model`.

Usage:
  from jaxgen.configs.arch import clip_vit_l14_text
  from jaxgen.models.clip_text import CLIPTextConfig, CLIPTextModel
  model = CLIPTextModel(CLIPTextConfig(**clip_vit_l14_text.get_config().text_encoder.to_dict()))
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.text_encoder = ml_collections.ConfigDict(
    dict(
      vocab_size=49408,
      hidden_size=768,
      intermediate_size=3072,
      num_hidden_layers=12,
      num_attention_heads=12,
      max_position_embeddings=77,
      hidden_act="quick_gelu",
      layer_norm_eps=1e-5,
      pad_token_id=1,
      bos_token_id=0,
      eos_token_id=2,
    )
  )
  return config
