"""Fine-tuning Stable Diffusion 1.5 on MS-COCO captions (task `sd_finetune`, 512×512).

diffusers' `examples/text_to_image/train_text_to_image.py` recipe: start from
a local diffusers folder of SD 1.5, train the U-Net only (the VAE and the CLIP
text encoder are frozen) at 512×512 with centre crops and random flips,
AdamW at a constant 1e-5 (weight decay 1e-2, gradients clipped to norm 1),
batch 4 (the example's 1 × 4 accumulation steps), 15,000 steps, EMA 0.9999
with diffusers' warm-up, the caption dropped 10% of the time, min-SNR-γ 5
loss weights. The prediction type (epsilon here) is the folder's scheduler's.
On a pod raise `train.batch_size` (and the learning rate with it).

Launch (a local SD 1.5 folder and the COCO 2017 folder with
annotations/captions_train2017.json and train2017/):
  jaxgen train --config configs/sd15_finetune.py --workdir runs/sd15_coco \
      pretrained=data/weights/stable-diffusion-v1-5 data.manual_dir=data/manual/coco2017
  jaxgen sample --checkpoint runs/sd15_coco --prompt "a red bus on a city street" --out bus.png
  jaxgen convert --from jaxgen runs/sd15_coco --to diffusers runs/sd15_coco_diffusers
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "sd_finetune"
  c.seed = 0
  c.mesh_shape = None  # (data, fsdp, tensor); None puts every device on `data`

  # A local diffusers StableDiffusionPipeline folder (REQUIRED; nothing downloads).
  c.pretrained = None
  c.data = dict(
    kind="coco2017",  # jaxgen.data.image_text kinds: coco2014, coco2017, cub, folder
    manual_dir=None,  # REQUIRED: the dataset's local folder
    split="train",
    resolution=512,
    center_crop=True,  # False: random square crops
    random_flip=True,
    max_examples=None,  # None: every record of the split
    loader="grain",  # decoded on the fly by grain workers; "memory": all decoded at start
    worker_count=2,  # grain worker processes (0: decode in the training process)
    seed=0,  # "memory": which crop and caption each image keeps
  )
  # The U-Net's compute dtype ("bfloat16": bf16 activations and matmuls, float32 weights,
  # optimizer and loss, like diffusers' --mixed_precision) and rematerialisation
  # ("none" | "full" | "save_dots" | "save_dots_no_batch"); see jaxgen/nn/precision.py.
  c.model = dict(compute_dtype="float32", remat="none")
  c.finetune = dict(
    cond_drop_prob=0.1,  # empty caption, for classifier-free guidance
    min_snr_gamma=5.0,  # None: plain MSE
    noise_offset=0.0,  # e.g. 0.05 lets the model change mean brightness
    sample_posterior=True,  # VAE posterior sample (True) or its mean
    prediction_type=None,  # None: the folder's scheduler (epsilon / v_prediction)
  )
  c.sample = dict(
    sampler=None,  # None: the folder's scheduler
    num_steps=50,
    guidance=7.5,
    eta=0.0,
    prompts=(
      "a red bus driving down a city street",
      "a plate of food with broccoli and rice",
      "a cat sitting on a laptop keyboard",
      "a man riding a wave on a surfboard",
    ),
  )
  c.optim = dict(
    learning_rate=1e-5,
    warmup_steps=0,
    decay="constant",
    weight_decay=1e-2,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    grad_clip_norm=1.0,
  )
  c.train = dict(
    batch_size=4,
    num_steps=15_000,
    max_minutes=None,
    log_every=50,
    sample_every=1000,
    ema_decay=0.9999,
    ema_warmup=10,  # diffusers' EMAModel: decay min(0.9999, (1 + step) / (10 + step))
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=500, keep=3)
  return c
