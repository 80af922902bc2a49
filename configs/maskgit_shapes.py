"""MaskGIT-style masked parallel decoding over VQGAN tokens on the built-in captioned shapes.

The masked-decoding family of issue 20's comparison: a bidirectional
transformer (the reference's post-LN BERT, `jaxgen.models.maskgit`) over the
8×8 codes of 128 of a `configs/vqgan_shapes.py` run, with the caption's 12
tokens as a prefix of the stream. 1.3M parameters (width 160, 4 layers), the
size class of the other priors on this data. Trained with the cosine mask
schedule, label smoothing 0.1 and 10% caption dropout (classifier-free
guidance); sampled with T parallel-decoding steps, confidence-based
re-masking and the reference's choice temperature 4.5 annealed to 0.

Launch (the VQGAN first):
  jaxgen train --config configs/vqgan_shapes.py --workdir runs/vqgan_shapes
  jaxgen train --config configs/maskgit_shapes.py --workdir runs/maskgit_shapes \
      vq.workdir=runs/vqgan_shapes
Sample (T = 4, 8 or 16 decoding steps; each T compiles once):
  jaxgen sample --checkpoint runs/maskgit_shapes --prompt "a small red circle in the top left" \
      --steps 8 --out grid.png
Evaluate (the shapes judge on held-out captions):
  python -c "from jaxgen.tasks.registry import load_run; import jax; \
      t, p = load_run('runs/maskgit_shapes'); print(t.evaluate(p, jax.random.PRNGKey(0))[0])"
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "maskgit"
  c.seed = 0
  c.mesh_shape = None

  # The images the VQGAN run was trained on (kind and resolution are checked against it).
  c.data = dict(kind="shapes", resolution=32, num_train_examples=20_000, seed=0)
  c.vq = dict(workdir="runs/vqgan_shapes")  # a run of configs/vqgan_shapes.py
  c.text = dict(max_length=12)
  # The reference's layout (post-LN, GELU, eps 1e-12, tied MLM head) at CPU size;
  # the codebook, token grid and caption vocabulary come from the runs above.
  c.maskgit = dict(
    width=160,
    num_layers=4,
    num_heads=4,
    mlp_dim=640,
    dropout=0.1,
    layer_norm_eps=1e-12,
    initializer_range=0.02,
  )
  # google-research/maskgit: cosine schedule, smoothing 0.1, loss on masked tokens only.
  c.loss = dict(mask_schedule="cosine", label_smoothing=0.1, caption_dropout=0.1)
  # num_steps: T decoding steps (the paper: 8 at 256×256; the table runs 4, 8, 16).
  c.sample = dict(
    sampler="maskgit", num_steps=8, guidance=2.0, choice_temperature=4.5, temperature=1.0
  )
  # The reference's AdamW betas (0.9, 0.96) and weight decay 0.045, at a CPU-sized
  # rate: 1e-4 at batch 256 for 2M steps would not move in a few thousand.
  c.optim = dict(
    learning_rate=1e-3,
    warmup_steps=100,
    weight_decay=0.045,
    b1=0.9,
    b2=0.96,
    eps=1e-8,
    grad_clip_norm=1.0,
    decay="cosine",
    end_factor=0.05,
  )
  c.train = dict(
    batch_size=32,
    num_steps=3000,
    max_minutes=15.0,
    log_every=50,
    sample_every=1000,
    ema_decay=0.999,
    ema_warmup=10,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=500, keep=2)
  c.eval = dict(num_examples=512)
  return c
