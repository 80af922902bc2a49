"""Text-to-image pixel diffusion on the procedural scenes' day photos (32×32): the locked base of
the ControlNet runs (`configs/controlnet_scenes.py`).

Launch:
  jaxgen train --config configs/text_to_image_scenes.py --workdir runs/t2i_scenes
"""

from jaxgen.configs import text_to_image_shapes


def get_config():
  c = text_to_image_shapes.get_config()
  c.data = {"kind": "scenes", "resolution": 32, "num_train_examples": 20_000, "seed": 0}
  # Captions are up to 19 words ("two green trees, a red house and a grey rock on grass by the
  # water under a yellow sun") plus [BOS] and [EOS].
  c.text = {"max_length": 24, "width": 64, "num_layers": 2, "num_heads": 4}
  c.unet = {
    "sample_size": 32,
    "in_channels": 5,  # RGB + 2 coordinate channels
    "out_channels": 3,
    # Cross-attention only at 8×8 and in the mid block (CPU cost).
    "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "block_out_channels": (32, 64, 128),
    "layers_per_block": 1,
    "attention_head_dim": 4,
    "cross_attention_dim": 64,
    "norm_num_groups": 8,
    "class_embed_type": "identity",
  }
  c.sample.num_steps = 20
  c.train.batch_size = 16
  c.train.num_steps = 3000
  c.train.max_minutes = 15
  c.train.sample_every = 500
  c.checkpoint.save_every = 250
  return c
