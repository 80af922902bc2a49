"""Fine-tuning Stable Diffusion 2.x (768-v) on MS-COCO captions (task `sd_finetune`, 768×768).

`configs/sd15_finetune.py` for an SD 2.x v-prediction folder (e.g.
stable-diffusion-2-1): 768×768 images (96×96 latents) and the v-prediction
target its scheduler config names (`prediction_type: v_prediction`; min-SNR
weights are then min(SNR, γ) / (SNR + 1)). Everything else is the SD 1.5
recipe: frozen VAE and OpenCLIP text encoder, AdamW at a constant 1e-5,
batch 4, EMA 0.9999, 10% empty captions.

Launch:
  jaxgen train --config configs/sd2_finetune.py --workdir runs/sd2_coco \
      pretrained=data/weights/stable-diffusion-2-1 data.manual_dir=data/manual/coco2017
  jaxgen convert --from jaxgen runs/sd2_coco --to diffusers runs/sd2_coco_diffusers
"""

import ml_collections

from jaxgen.configs import sd15_finetune


def get_config() -> ml_collections.ConfigDict:
  c = sd15_finetune.get_config()
  c.data.resolution = 768
  c.finetune.prediction_type = None  # the folder's: v_prediction for 2.x 768-v
  c.sample.prompts = ("a red bus driving down a city street", "a cat sitting on a laptop keyboard")
  return c
