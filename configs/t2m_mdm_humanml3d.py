"""MDM (Tevet et al. 2023) on HumanML3D: the published architecture and recipe.

Denoiser: 8 post-norm Transformer encoder layers, width 512, 4 heads, FF
1024, GELU, dropout 0.1; 17,880,327 trainable parameters, the reference's
count without CLIP. Text: the frozen CLIP ViT-B/32 text tower with its
projection (512-d), read from a local transformers folder
(`CLIPTextModelWithProjection`, e.g. openai/clip-vit-base-patch32 saved as
safetensors); captions cut to 20 words + start/end tokens as the reference.
Diffusion: cosine schedule, 1000 steps, x0 prediction, 10% condition
dropout, guidance 2.5; batch 64, AdamW lr 1e-4 without weight decay (the
frozen CLIP weights sit in the parameter tree), 600k steps in the paper.
The published model attends to padding frames (mask_padding=False).

Launch (with the HumanML3D data prepared at data.path and CLIP at text.clip_path):
  jaxgen train --config configs/t2m_mdm_humanml3d.py --workdir runs/mdm_humanml3d \
      data.path=/data/HumanML3D text.clip_path=/models/clip-vit-base-patch32
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "t2m_mdm"
  c.seed = 0
  c.mesh_shape = None
  c.data = dict(name="humanml3d", format="humanml3d", seed=0, path="", max_examples=None)
  c.text = dict(encoder="clip", clip_path="", max_length=22, width=512, num_layers=0, num_heads=8)
  c.mdm = dict(
    latent_dim=512,
    ff_size=1024,
    num_layers=8,
    num_heads=4,
    dropout=0.1,
    activation="gelu",
    mask_padding=False,
    frames_per_token=1,
    text_tokens=False,
  )
  c.diffusion = dict(
    schedule="squaredcos_cap_v2",
    num_train_timesteps=1000,
    prediction_type="sample",
    cond_drop_prob=0.1,
    timestep_distribution="uniform",
    timestep_mean=0.0,
    timestep_std=1.0,
  )
  c.loss = dict(position=0.0, velocity=0.0, foot_contact=0.0)
  c.sample = dict(sampler="ddpm", num_steps=1000, guidance=2.5)
  c.optim = dict(
    learning_rate=1e-4,
    warmup_steps=0,
    weight_decay=0.0,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    grad_clip_norm=0.0,
    decay="constant",
    end_factor=1.0,
  )
  c.train = dict(
    batch_size=64,
    num_steps=600_000,
    max_minutes=None,
    log_every=100,
    sample_every=0,
    ema_decay=0.9999,
    ema_warmup=0,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=10_000, keep=3)
  c.eval = dict(num_examples=4096)
  return c
