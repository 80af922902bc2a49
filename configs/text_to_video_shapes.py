"""Text-to-video on the captioned shape videos (16 frames, 16×16), inflated from an image run.

Make-A-Video / Video LDM on CPU: the U-Net, text encoder and noise schedule
of a trained `text_to_image` run (`image.workdir`, e.g. the quickstart of
configs/text_to_image_shapes.py) gain temporal layers (ModelScope's layout:
a temporal conv after every resnet, temporal attention after every spatial
transformer, identity at init) and masked-frame input channels, so one model
makes clips from text, from a first frame, or between keyframes. The clips
are drawn at the image run's resolution. `video.temporal_only=True` trains
only what the image model lacks (Video LDM: spatial layers frozen).

Launch:
  jaxgen train --config configs/text_to_image_shapes.py --workdir runs/shapes
  jaxgen train --config configs/text_to_video_shapes.py --workdir runs/video \
      image.workdir=runs/shapes
  jaxgen sample --checkpoint runs/video --prompt "a small red circle moving right quickly" \
      --out video.gif
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "text_to_video"
  c.seed = 0
  c.mesh_shape = None

  c.image = dict(workdir="runs/shapes")  # a trained text_to_image run
  c.data = dict(frames=16, num_train_videos=5000, seed=0)  # resolution: the image run's
  # Up to 15 words: two objects each moving diagonally, plus [BOS] and [EOS].
  c.text = dict(max_length=17)
  c.video = dict(
    temporal="modelscope",
    temporal_merge="residual",  # "learned": Video LDM's alpha blend
    temporal_frame_embedding=True,  # frame-index sinusoids in the temporal attention
    temporal_dropout=0.0,
    temporal_only=False,  # True: spatial layers frozen (Video LDM)
  )
  # Conditioning modes drawn per training clip: text only, first frame, keyframes.
  c.modes = dict(probabilities=(0.5, 0.25, 0.25), keyframe_spacings=(3, 5))
  c.diffusion = dict(cond_drop_prob=0.1)  # the rest is the image run's
  c.sample = dict(
    sampler="dpm_solver_pp_2m",
    num_steps=20,
    guidance=3.0,
    eta=0.0,
    mode="text",
    keyframe_every=5,
    paste_known=True,  # given frames replace the sampled ones in the output
    fps=8.0,
  )
  c.optim = dict(
    learning_rate=5e-4,
    warmup_steps=100,
    weight_decay=0.0,
    b1=0.9,
    b2=0.99,
    eps=1e-8,
    grad_clip_norm=1.0,
    decay="cosine",
    end_factor=0.05,
  )
  c.train = dict(
    batch_size=16,
    num_steps=2000,
    max_minutes=None,
    log_every=50,
    sample_every=500,
    ema_decay=0.999,
    ema_warmup=10,
    max_consecutive_skips=10,
  )
  c.checkpoint = dict(save_every=500, keep=2)
  c.eval = dict(num_examples=128)
  return c
