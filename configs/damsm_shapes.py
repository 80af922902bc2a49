"""AttnGAN's DAMSM (text–image matching encoders) on the built-in captioned shapes (32×32).

The first stage of the GAN text-to-image families: `stackgan_shapes.py`
conditions on its sentence embedding and `attngan_shapes.py` also trains its
generator against its word and sentence losses, both naming this run as
`damsm.workdir`. The reference's bidirectional LSTM (words embedded in 64-d
rather than 300-d for a vocabulary of ~30 words, 2×32 hidden) and, in place
of the frozen Inception-v3, a small CNN trained with the heads: three
stride-2 stages, so a 32×32 image gives 4×4 = 16 regions. Losses, smoothing
factors (γ₁ 4, γ₂ 5, γ₃ 10), Adam (2e-3, β 0.5, 0.999) and batch 48 are
`pretrain_DAMSM.py`'s; identical captions in a batch are not each other's
negatives (the reference's same-class masking).

Launch:
  jaxgen train --config configs/damsm_shapes.py --workdir runs/damsm_shapes
Evaluate (held-out loss, top-1 retrieval among 32 captions):
  python -c "from jaxgen.tasks.registry import load_run; t, p = load_run('runs/damsm_shapes'); \
      print(t.evaluate(p))"
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "damsm"
  c.seed = 0
  c.mesh_shape = None

  c.data = dict(kind="shapes", resolution=32, num_train_examples=20_000, seed=0)
  c.text = dict(max_length=12)  # [BOS] + at most 10 words + [EOS]
  c.damsm = dict(word_dim=64, embed_dim=64, dropout=0.5, backbone="cnn", cnn_channels=(32, 64, 128))
  c.loss = dict(gamma1=4.0, gamma2=5.0, gamma3=10.0, mask_same_captions=True)
  # pretrain_DAMSM.py: Adam(2e-3, betas (0.5, 0.999)); it clips the LSTM's gradient
  # norm at 0.25 alone, here the global norm is clipped.
  c.optim = dict(
    learning_rate=2e-3,
    warmup_steps=20,
    weight_decay=0.0,
    b1=0.5,
    b2=0.999,
    eps=1e-8,
    grad_clip_norm=1.0,
    decay="cosine",
    end_factor=0.1,
  )
  c.train = dict(
    batch_size=48,
    num_steps=1000,
    max_minutes=None,
    log_every=50,
    sample_every=500,
    ema_decay=0.0,  # the reference keeps no average: the "EMA" params are the params
    ema_warmup=0,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=500, keep=2)
  c.eval = dict(num_examples=512, group_size=32)
  return c
