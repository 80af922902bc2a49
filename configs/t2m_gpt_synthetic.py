"""T2M-GPT stage 2: the GPT prior over a trained VQ-VAE's codes, sized for CPU.

The T2M-GPT recipe (text vector as the first token, causal transformer with
a base and a head half, fixed sinusoidal positions, block 51 = 1 + 49 codes +
End, cross-entropy on codes + End, inputs corrupted keeping 50% of the codes,
AdamW β = (0.5, 0.99)) at width 128 with 2 + 2 blocks instead of 1024 with
9 + 9, and a small text encoder trained with it instead of frozen CLIP
(set text.encoder="clip" and text.clip_path to a local CLIP folder for that).
`gpt_faithful()` gives the published sizes (228,311,040 parameters).
On 2 CPU cores the 2,600 steps took 14.5 minutes; generating the 600
synthetic test captions at their lengths then scores R-precision top-3
0.899 and FID 0.011 by the synthetic evaluator (ground truth 0.983). An
earlier one-core run (2,524 steps, an evaluator whose ground truth scored
0.970) gave 0.882.
Sampling is one scan with a KV cache; the length is the requested one
(sample.length_mode="given") or the model's End ("end_token").

Launch (after configs/t2m_vq_synthetic.py trained into runs/t2m_vq):
  jaxgen train --config configs/t2m_gpt_synthetic.py --workdir runs/t2m_gpt
"""

import ml_collections


def gpt_faithful() -> dict:
  """The reference GPT sizes (`train_t2m_trans.py` in Mael-zys/T2M-GPT's README)."""
  return dict(embed_dim=1024, num_layers=9, num_heads=16, ff_rate=4, dropout=0.1)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "t2m_gpt"
  c.seed = 0
  c.mesh_shape = None
  c.data = dict(name="synthetic", format="humanml3d", seed=0, path="", max_examples=None)
  c.vq = dict(workdir="runs/t2m_vq")
  c.text = dict(
    encoder="trained", clip_path="", max_length=24, width=128, num_layers=2, num_heads=4
  )
  c.gpt = dict(gpt_faithful(), embed_dim=128, num_layers=2, num_heads=4)
  c.gpt_train = dict(pkeep=0.5)
  c.sample = dict(length_mode="given", temperature=1.0, top_k=None)
  c.optim = dict(
    learning_rate=1e-3,
    warmup_steps=50,
    weight_decay=1e-6,
    b1=0.5,
    b2=0.99,
    eps=1e-8,
    grad_clip_norm=1.0,
    decay="cosine",
    end_factor=0.1,
  )
  c.train = dict(
    batch_size=32,
    num_steps=2600,
    max_minutes=15.0,
    log_every=50,
    sample_every=0,
    ema_decay=0.999,
    ema_warmup=10,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=1000, keep=1)
  return c
