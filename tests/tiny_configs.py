"""Tiny configs of the real experiments, small enough for 2 CPU cores.

`TINY[name]` shrinks `configs/<name>` to a few thousand parameters and a few
steps; tests/test_cli.py trains every experiment with it, so a new config
file needs an entry here.
"""

import os

from jaxgen.configuration import apply_overrides, load_config_file

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")

# Two steps, a checkpoint at the end, no previews.
_RUN = [
  "train.batch_size=8",
  "train.num_steps=2",
  "train.log_every=1",
  "optim.warmup_steps=1",
  "checkpoint.save_every=2",
  "train.max_minutes=None",
]
_TEXT = ["text.width=16", "text.num_layers=1", "text.num_heads=2"]
# 32: `jaxgen eval-motion` scores at least one R-precision batch of 32 test captions.
_MOTION_DATA = ["data.max_examples=32"]
# 2 clips of 1 s, each 4 times an epoch: one batch of 8 windows; 1/32 of the channels.
_TINY_TALKING_HEADS = [
  "data.num_clips=2",
  "data.seconds=1.0",
  "data.repeats=4",
  "model.width=0.03125",
]
_TINY_DANCE_DATA = ["data.num_examples=2", "data.seconds=3.0", "data.sample_rate=10240"]

_TINY_TEXT_GAN = [
  "data.resolution=16",
  "data.num_train_examples=16",
  "model.condition_dim=4",
  "model.z_dim=4",
  "model.gf_dim=8",
  "model.df_dim=4",
  "model.base_size=8",
  "train.sample_every=0",
  "eval.num_examples=8",
]

TINY_TEXT_TO_IMAGE = [
  "data.resolution=16",
  "data.num_train_examples=64",
  "unet.sample_size=16",
  "unet.block_out_channels=(8, 16)",
  "unet.down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D')",
  "unet.up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D')",
  "unet.attention_head_dim=2",
  "unet.cross_attention_dim=16",
  "unet.norm_num_groups=4",
  "text.width=16",
  "text.num_layers=1",
  "text.num_heads=2",
  "train.batch_size=8",
  "train.num_steps=4",
  "train.log_every=2",
  "train.sample_every=0",
  "checkpoint.save_every=2",
  "checkpoint.keep=3",
  "optim.warmup_steps=1",
  "sample.num_steps=3",
  "eval.num_examples=8",
]

# Smaller still, for the runs that compile on many meshes or in subprocesses:
# one U-Net level (with cross-attention) at 8x8.
ONE_LEVEL_TEXT_TO_IMAGE = TINY_TEXT_TO_IMAGE + [
  "data.resolution=8",
  "unet.sample_size=8",
  "unet.block_out_channels=(8,)",
  "unet.down_block_types=('CrossAttnDownBlock2D',)",
  "unet.up_block_types=('CrossAttnUpBlock2D',)",
]

TINY = {
  "text_to_image_shapes.py": TINY_TEXT_TO_IMAGE,
  "autoencoder_shapes.py": _RUN
  + [
    "data.resolution=8",
    "vae.sample_size=8",
    "data.num_train_examples=16",
    "vae.block_out_channels=(8, 8)",
    "vae.norm_num_groups=4",
    "disc.channels=8",
    "disc.num_layers=1",
    "disc.norm_num_groups=4",
    "train.sample_every=0",
    "eval.num_examples=8",
  ],
  # 8×8 images -> 4×4 codes of 16; the GAN switches on at the second step.
  "vqgan_shapes.py": _RUN
  + [
    "data.resolution=8",
    "vq.sample_size=8",
    "data.num_train_examples=16",
    "vq.block_out_channels=(8, 8)",
    "vq.down_block_types=('DownEncoderBlock2D', 'AttnDownEncoderBlock2D')",
    "vq.up_block_types=('AttnUpDecoderBlock2D', 'UpDecoderBlock2D')",
    "vq.latent_channels=4",
    "vq.vq_embed_dim=4",
    "vq.num_vq_embeddings=16",
    "vq.norm_num_groups=4",
    "disc.channels=8",
    "disc.num_layers=1",
    "loss.disc_start=1",
    "train.sample_every=0",
    "eval.num_examples=8",
  ],
  # CLIP at 8×8 (2×2 patches of 4), width 16, one layer per tower.
  "clip_shapes.py": _RUN
  + [
    "data.resolution=8",
    "data.num_train_examples=16",
    "clip.vision.hidden_size=16",
    "clip.vision.intermediate_size=32",
    "clip.vision.num_hidden_layers=1",
    "clip.vision.num_attention_heads=2",
    "clip.text.hidden_size=16",
    "clip.text.intermediate_size=32",
    "clip.text.num_hidden_layers=1",
    "clip.text.num_attention_heads=2",
    "clip.projection_dim=16",
    "train.sample_every=0",
    "eval.num_examples=32",
  ],
  "damsm_shapes.py": _RUN
  + [
    "data.resolution=16",
    "data.num_train_examples=16",
    "damsm.word_dim=8",
    "damsm.embed_dim=8",
    "damsm.cnn_channels=(8, 8)",
    "train.sample_every=0",
    "eval.num_examples=8",
    "eval.group_size=8",
  ],
  # damsm.workdir=<a run of the tiny damsm_shapes.py> comes with them: two stages, 8×8 then 16×16.
  "stackgan_shapes.py": _RUN + _TINY_TEXT_GAN,
  "attngan_shapes.py": _RUN + _TINY_TEXT_GAN,
  # vq.workdir=<a run of the tiny vqgan_shapes.py> comes with the token priors: 4×4 codes of 16.
  "dalle_shapes.py": _RUN
  + [
    "data.resolution=8",
    "data.num_train_examples=16",
    "dalle.embed_dim=16",
    "dalle.num_layers=1",
    "dalle.num_heads=2",
    "eval.num_examples=8",
  ],
  "maskgit_shapes.py": _RUN
  + [
    "data.resolution=8",
    "data.num_train_examples=16",
    "maskgit.width=16",
    "maskgit.num_layers=1",
    "maskgit.num_heads=2",
    "maskgit.mlp_dim=32",
    "sample.num_steps=4",
    "train.sample_every=0",
    "eval.num_examples=8",
  ],
  "vq_diffusion_shapes.py": _RUN
  + _TEXT
  + [
    "data.resolution=8",
    "data.num_train_examples=16",
    "model.embed_dim=16",
    "model.num_layers=1",
    "model.num_heads=2",
    "diffusion.num_timesteps=4",
    "sample.num_steps=4",
    "train.sample_every=0",
    "eval.num_examples=8",
  ],
  # autoencoder.workdir=<a run of the tiny autoencoder_shapes.py> comes with it.
  "latent_diffusion_shapes.py": _RUN
  + _TEXT
  + [
    "data.resolution=8",
    "unet.sample_size=4",
    "data.num_train_examples=16",
    "autoencoder.num_stat_examples=16",
    "unet.down_block_types=('CrossAttnDownBlock2D',)",
    "unet.up_block_types=('CrossAttnUpBlock2D',)",
    "unet.block_out_channels=(8,)",
    "unet.attention_head_dim=2",
    "unet.cross_attention_dim=16",
    "unet.norm_num_groups=4",
    "train.sample_every=0",
    "sample.num_steps=3",
    "eval.num_examples=8",
  ],
  # BBDM: the reference's U-Net at one level of 32 channels (GroupNorm32), 16×16 scenes.
  "bbdm_scenes.py": _RUN
  + [
    "data.resolution=16",
    "data.num_train_examples=16",
    "unet.image_size=16",
    "unet.channel_mult=(1,)",
    "unet.num_head_channels=32",
    "bridge.sample_step=4",
    "train.sample_every=0",
  ],
  # autoencoder.workdir=<a run of the tiny autoencoder_shapes.py> comes with it.
  "bbdm_latent_scenes.py": _RUN
  + [
    "data.resolution=16",
    "data.num_train_examples=16",
    "autoencoder.num_stat_examples=16",
    "unet.image_size=8",
    "unet.channel_mult=(1,)",
    "unet.num_head_channels=32",
    "bridge.sample_step=4",
    "train.sample_every=0",
  ],
  "t2m_evaluator_synthetic.py": _RUN
  + _MOTION_DATA
  + [
    "evaluator.dim_word=8",
    "evaluator.dim_text_hidden=8",
    "evaluator.dim_movement_enc_hidden=8",
    "evaluator.dim_movement_latent=8",
    "evaluator.dim_motion_hidden=8",
    "evaluator.dim_coemb_hidden=16",
  ],
  "t2m_mdm_synthetic.py": _RUN
  + _MOTION_DATA
  + _TEXT
  + [
    "mdm.latent_dim=16",
    "mdm.ff_size=32",
    "mdm.num_layers=1",
    "mdm.num_heads=2",
    "sample.num_steps=3",
  ],
  # Two 3 s dances of one track, 20-frame windows, 3 sampling steps.
  "edge_music_dance.py": _RUN
  + [
    "data.num_examples=2",
    "data.seconds=3.0",
    "data.sample_rate=10240",
    "data.seq_len=20",
    "edge.latent_dim=16",
    "edge.ff_size=32",
    "edge.num_layers=1",
    "edge.num_heads=2",
    "edge.num_music_layers=1",
    "sample.num_steps=3",
  ],
  # Bailando on two 3 s dances: 20-frame VQ windows, codes every 4 frames (15 per dance).
  "bailando_vq_music_dance.py": _RUN
  + _TINY_DANCE_DATA
  + ["window.frames=20", "window.stride=10", "vq.width=16", "vq.code_dim=8", "vq.num_codes=16"],
  # vq.workdir=<a run of the tiny bailando_vq_music_dance.py> comes with it.
  "bailando_gpt_music_dance.py": _RUN
  + _TINY_DANCE_DATA
  + [
    "window.stride=1",
    "gpt.embed_dim=16",
    "gpt.block_size=8",
    "gpt.num_base_layers=1",
    "gpt.num_head_layers=1",
    "gpt.num_heads=2",
  ],
  "wav2lip_expert_talking_heads.py": _RUN + _TINY_TALKING_HEADS,
  # expert.workdir=<a run of the tiny wav2lip_expert_talking_heads.py> comes with it.
  "wav2lip_talking_heads.py": _RUN + _TINY_TALKING_HEADS + ["sample.chunk_frames=16"],
  "autoencoder_talking_heads.py": _RUN
  + [
    "data.resolution=24",
    "vae.sample_size=24",
    "data.num_clips=1",
    "data.seconds=1.0",
    "vae.block_out_channels=(8, 8, 8)",
    "vae.norm_num_groups=4",
    "train.sample_every=0",
    "eval.num_examples=8",
  ],
  # autoencoder.workdir=<a run of the tiny autoencoder_talking_heads.py> comes with it.
  "difftalk_talking_heads.py": _RUN
  + [
    "data.num_clips=2",
    "data.seconds=1.0",
    "data.size=24",
    "data.reference_gap=12",
    "autoencoder.num_stat_clips=1",
    "unet.sample_size=6",
    "unet.down_block_types=('CrossAttnDownBlock2D',)",
    "unet.up_block_types=('CrossAttnUpBlock2D',)",
    "unet.block_out_channels=(16,)",
    "unet.attention_head_dim=(2,)",
    "unet.norm_num_groups=4",
    "sample.num_steps=4",
    "sample.keep_rows=2",
    "train.sample_every=0",
    "eval.num_clips=2",
  ],
  "t2m_vq_synthetic.py": _RUN
  + _MOTION_DATA
  + ["vq.width=16", "vq.output_emb_width=8", "vq.depth=1", "vq.num_codes=16"],
  # vq.workdir=<a run of the tiny t2m_vq_synthetic.py> comes with it.
  "t2m_gpt_synthetic.py": _RUN
  + _MOTION_DATA
  + _TEXT
  + ["gpt.embed_dim=16", "gpt.num_layers=1", "gpt.num_heads=2"],
  "t2m_vae_synthetic.py": _RUN
  + _MOTION_DATA
  + _TEXT
  + ["vae.latent_dim=16", "vae.ff_size=32", "vae.num_layers=1", "vae.num_heads=2"],
  "cyclegan_scenes.py": _RUN
  + [
    "data.resolution=16",
    "data.num_train_examples=16",
    "generator.channels=4",
    "generator.num_blocks=1",
    "discriminator.channels=4",
    "discriminator.num_layers=1",
    "loss.pool_size=4",
    "train.sample_every=0",
  ],
  # Palette: the ADM U-Net at one level of 32 channels (GroupNorm32), 16×16 scenes, 3 sampling steps.
  "palette_scenes.py": _RUN
  + [
    "data.resolution=16",
    "data.num_train_examples=16",
    "unet.image_size=16",
    "unet.channel_mults=(1,)",
    "unet.res_blocks=1",
    "sample.num_steps=3",
    "train.sample_every=0",
  ],
  # ControlNet's base: three U-Net levels (the last with cross-attention) at 16×16.
  "text_to_image_scenes.py": _RUN
  + _TEXT
  + [
    "data.resolution=16",
    "data.num_train_examples=16",
    "unet.sample_size=16",
    "unet.block_out_channels=(8, 8, 16)",
    "unet.attention_head_dim=2",
    "unet.cross_attention_dim=16",
    "unet.norm_num_groups=4",
    "train.sample_every=0",
    "sample.num_steps=3",
    "eval.num_examples=8",
  ],
  # image.workdir=<a run of the tiny text_to_image_shapes.py> comes with it: 4 frames at 16×16.
  "text_to_video_shapes.py": _RUN
  + [
    "data.frames=4",
    "data.num_train_videos=16",
    "modes.keyframe_spacings=(2, 3)",
    "sample.keyframe_every=2",
    "sample.num_steps=2",
    "train.sample_every=0",
    "eval.num_examples=4",
  ],
  # base.workdir=<a run of the tiny text_to_image_scenes.py> comes with it.
  "controlnet_scenes.py": _RUN
  + [
    "data.resolution=16",
    "data.num_train_examples=16",
    "controlnet.conditioning_embedding_out_channels=(4,)",
    "train.sample_every=0",
    "sample.num_steps=2",
  ],
  # 32×32: the smallest side a 5-level U-Net takes.
  "pix2pix_scenes.py": _RUN
  + [
    "data.num_train_examples=16",
    "generator.ngf=4",
    "discriminator.channels=4",
    "discriminator.num_layers=1",
    "train.sample_every=0",
  ],
  # 32×32: the smallest crop SPADE's 'normal' upsampling takes (a 1×1 start map).
  "spade_scenes.py": _RUN
  + [
    "data.num_train_examples=16",
    "generator.ngf=2",
    "generator.spade_hidden=4",
    "discriminator.ndf=4",
    "discriminator.n_layers_D=2",
    "train.sample_every=0",
  ],
}


def tiny_config(name: str, *extra: str):
  """configs/`name` shrunk by `TINY[name]`; `extra` overrides follow."""
  return apply_overrides(load_config_file(os.path.join(CONFIGS, name)), TINY[name] + list(extra))


def tiny_text_to_image_config(*extra: str):
  """The quickstart config shrunk to a few thousand parameters; `extra` overrides."""
  return tiny_config("text_to_image_shapes.py", *extra)
