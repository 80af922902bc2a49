"""Tiny configs of the real experiments, small enough for 2 CPU cores."""

import os

from jaxgen.configuration import apply_overrides, load_config_file

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")

TINY_TEXT_TO_IMAGE = [
    "data.resolution=16", "data.num_train_examples=64",
    "unet.sample_size=16", "unet.block_out_channels=(8, 16)",
    "unet.down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D')",
    "unet.up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D')",
    "unet.attention_head_dim=2", "unet.cross_attention_dim=16", "unet.norm_num_groups=4",
    "text.width=16", "text.num_layers=1", "text.num_heads=2",
    "train.batch_size=8", "train.num_steps=4", "train.log_every=2", "train.sample_every=0",
    "checkpoint.save_every=2", "checkpoint.keep=3", "optim.warmup_steps=1",
    "sample.num_steps=3", "eval.num_examples=8",
]


def tiny_text_to_image_config(*extra: str):
  """The quickstart config shrunk to a few thousand parameters; `extra` overrides."""
  return apply_overrides(load_config_file(os.path.join(CONFIGS, "text_to_image_shapes.py")),
                         TINY_TEXT_TO_IMAGE + list(extra))
