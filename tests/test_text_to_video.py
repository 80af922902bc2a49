"""The text_to_video task: inflation from an image run, training, the three modes, the CLI.

One tiny image run (8×8, one U-Net level with cross-attention) and one tiny
video run on it (4 frames) are shared by every test through module fixtures.
"""

from __future__ import annotations

import json
import logging
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tiny_configs import CONFIGS, ONE_LEVEL_TEXT_TO_IMAGE, tiny_config

from jaxgen.cli import main as cli_main
from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.data import video_shapes
from jaxgen.metrics import video_folder
from jaxgen.nn.temporal import fold_frames
from jaxgen.tasks.image.text_to_image import TextToImageTask
from jaxgen.tasks.registry import load_run
from jaxgen.tasks.video import text_to_video, video_conditioning, video_samples
from jaxgen.training.inference import restore_ema_params
from jaxgen.training.trainer import train

FRAMES = 4
VIDEO_STEPS = 30
# Captions of at most 10 words fit the image run's 12 caption tokens.
CAPTIONS = ["a small red circle moving left quickly", "a large blue square moving up slowly"]


def count_scans(jaxpr) -> int:
  """`scan`s in a jaxpr, nested ones included."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name == "scan"
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
          count += count_scans(sub)
  return count


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
  config = load_config_file(os.path.join(CONFIGS, "text_to_image_shapes.py"))
  config = apply_overrides(
    config, ONE_LEVEL_TEXT_TO_IMAGE + ["train.num_steps=1", "checkpoint.save_every=1"]
  )
  workdir = str(tmp_path_factory.mktemp("image_run"))
  train(TextToImageTask(config), config, workdir)
  return workdir


def video_config(image_workdir: str, *extra: str):
  return tiny_config(
    "text_to_video_shapes.py",
    f"image.workdir={image_workdir}",
    f"data.frames={FRAMES}",
    "data.num_train_videos=256",
    *extra,
  )


class LoggedLosses(logging.Handler):
  """The trainer's logged `loss` of every step (`train.log_every=1`)."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.losses = {}

  def emit(self, record):
    found = re.match(r"step (\d+): .*\bloss=([-+.\deE]+)", record.getMessage())
    if found:
      self.losses[int(found[1])] = float(found[2])


@pytest.fixture(scope="module")
def video_run(tmp_path_factory, image_run):
  """(workdir, task, params at init, params after VIDEO_STEPS steps, loss of every step)."""
  config = video_config(
    image_run,
    f"train.num_steps={VIDEO_STEPS}",
    "train.batch_size=8",
    "optim.learning_rate=3e-3",
    "optim.warmup_steps=3",
    "train.ema_decay=0.0",
    "train.log_every=1",
    f"checkpoint.save_every={VIDEO_STEPS}",
  )
  workdir = str(tmp_path_factory.mktemp("video_run"))
  task = text_to_video.TextToVideoTask(config)
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in task.abstract_batch(1).items()}
  initial = nn.meta.unbox(task.init(jax.random.PRNGKey(config.seed), batch))
  root, handler = logging.getLogger(), LoggedLosses()
  level = root.level
  root.setLevel(logging.INFO)
  root.addHandler(handler)
  try:
    train(task, config, workdir)
  finally:
    root.removeHandler(handler)
    root.setLevel(level)
  losses = [handler.losses[step] for step in range(1, VIDEO_STEPS + 1)]
  return workdir, task, initial, restore_ema_params(task, workdir), losses


def test_inflated_model_is_the_image_model_on_every_frame(image_run, video_run):
  _, task, initial, _, _ = video_run
  image_task, image_params = load_run(image_run)
  r = task.resolution
  x = jax.random.normal(jax.random.PRNGKey(1), (2, FRAMES, r, r, 3))
  # The new channels hold anything (here random given frames and a random mask): their
  # kernels start at zero.
  extra = jax.random.normal(jax.random.PRNGKey(2), (2, FRAMES, r, r, 4))
  t = jnp.array([30, 700], jnp.int32)
  video_tokens, video_mask = task.tokenize(CAPTIONS)
  image_tokens, image_mask = image_task.tokenize(CAPTIONS)  # motion words: [UNK]
  assert (image_tokens == image_task.tokenizer.unk_id).any()
  assert not (video_tokens == task.tokenizer.unk_id).any()
  video_out = jax.jit(task.model.apply)(
    {"params": initial}, jnp.concatenate([x, extra], -1), t, video_tokens, video_mask
  )
  image_out = jax.jit(image_task.model.apply)(
    {"params": image_params},
    fold_frames(x),
    jnp.repeat(t, FRAMES),
    np.repeat(image_tokens, FRAMES, 0),
    np.repeat(image_mask, FRAMES, 0),
  )
  assert video_out.shape == x.shape
  np.testing.assert_allclose(fold_frames(video_out), image_out, atol=2e-5)
  # The frames are denoised apart only while the temporal layers are the identity.
  assert len(jax.tree.leaves(initial)) > len(jax.tree.leaves(image_params))


def test_training_lowers_the_loss(video_run):
  losses = video_run[4]
  first, last = np.mean(losses[:8]), np.mean(losses[-8:])
  assert np.isfinite(losses).all()
  assert last < 0.75 * first, losses


def test_temporal_only_stops_the_gradients_of_the_spatial_layers(video_run):
  _, _, initial, _, _ = video_run
  mask = text_to_video.trainable_mask(initial)
  grads = jax.jit(
    jax.grad(lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(text_to_video.freeze_spatial(p))))
  )(initial)
  paths = [
    "/".join(str(getattr(k, "key", k)) for k in path)
    for path, _ in jax.tree_util.tree_flatten_with_path(mask)[0]
  ]
  for path, trained, grad, value in zip(
    paths, jax.tree.leaves(mask), jax.tree.leaves(grads), jax.tree.leaves(initial)
  ):
    np.testing.assert_allclose(grad, 2 * value if trained else 0 * value, err_msg=path)
  trained = {p for p, f in zip(paths, jax.tree.leaves(mask)) if f}
  assert any("temp_convs" in p for p in trained) and any("temp_attentions" in p for p in trained)
  assert any("conv_in" in p for p in trained) and any("token_embedding" in p for p in trained)
  assert not any(("resnets" in p or "conv_out" in p) and "temp" not in p for p in trained)


@pytest.mark.parametrize("mode", video_conditioning.MODES)
def test_every_mode_samples_in_one_scan(video_run, mode):
  _, task, _, trained, _ = video_run
  n, r = 2, task.resolution
  tokens, mask = task.tokenize(CAPTIONS)
  known_mask = np.broadcast_to(video_conditioning.frame_mask(mode, FRAMES, 2), (n, FRAMES))
  known = np.zeros((n, FRAMES, r, r, 3), np.float32)
  jaxpr = jax.make_jaxpr(
    lambda p, k, m: task.sample(
      p,
      tokens,
      mask,
      k,
      m,
      jax.random.PRNGKey(0),
      sampler="ddim",
      num_steps=3,
      guidance_scale=jnp.float32(2.0),
    )
  )(trained, known, known_mask)
  assert count_scans(jaxpr) == 1


def test_first_frame_mode_keeps_the_given_frame_and_reads_it(video_run):
  _, task, _, trained, _ = video_run
  given = video_shapes.make_video_split("test", 2, task.resolution, FRAMES, seed=3)["video"][:, 0]
  rng = jax.random.PRNGKey(5)
  options = dict(num_steps=2, guidance_scale=2.0)
  out = task.generate(
    trained, task.first_frame_conditions(given[0], "f.png", CAPTIONS), rng, **options
  )["video"]
  assert out.shape == (2, FRAMES, task.resolution, task.resolution, 3)
  np.testing.assert_array_equal(out[:, 0], np.stack([given[0]] * 2))
  # Without pasting, frame 0 is the model's own; the given frame reaches the other frames
  # through the conditioning channels (their kernels trained away from zero).
  other = task.generate(
    trained, task.first_frame_conditions(given[1], "g.png", CAPTIONS), rng, **options
  )["video"]
  assert np.abs(out[:, 1:].astype(int) - other[:, 1:]).max() > 0
  text_only = task.generate(trained, task.conditions(CAPTIONS), rng, **options)["video"]
  assert not np.array_equal(text_only, out)


def test_same_seed_same_video_and_keyframes_mode(video_run):
  _, task, _, trained, _ = video_run
  conditions = task.conditions(CAPTIONS)
  options = dict(num_steps=2)
  a = task.generate(trained, conditions, jax.random.PRNGKey(9), **options)["video"]
  b = task.generate(trained, conditions, jax.random.PRNGKey(9), **options)["video"]
  c = task.generate(trained, conditions, jax.random.PRNGKey(10), **options)["video"]
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  clips = video_shapes.make_video_split("test", 2, task.resolution, FRAMES, seed=4)["video"]
  keyed = task.generate(
    trained,
    dict(conditions, frames=clips),
    jax.random.PRNGKey(9),
    mode="keyframes",
    keyframe_every=3,
    **options,
  )["video"]
  np.testing.assert_array_equal(keyed[:, [0, 3]], clips[:, [0, 3]])


def test_named_errors_before_compiling(video_run):
  _, task, _, trained, _ = video_run
  r = task.resolution
  with pytest.raises(video_samples.FirstFrameError, match=f"{r}x{r}"):
    task.first_frame_conditions(np.zeros((r + 1, r, 3), np.uint8), "big.png", CAPTIONS)
  with pytest.raises(video_samples.FirstFrameError, match="RGB"):
    task.first_frame_conditions(np.zeros((r, r, 4), np.uint8), "rgba.png", CAPTIONS)
  with pytest.raises(video_samples.FirstFrameError, match="one channel"):
    task.first_frame_conditions(np.zeros((r, r), np.uint8), "grey.png", CAPTIONS)
  conditions = task.conditions(CAPTIONS)
  with pytest.raises(video_conditioning.VideoModeError, match="mode: expected one of"):
    task.generate(trained, conditions, jax.random.PRNGKey(0), mode="backwards")
  with pytest.raises(video_conditioning.VideoModeError, match="conditions\\['frames'\\]"):
    task.generate(trained, conditions, jax.random.PRNGKey(0), mode="keyframes")
  with pytest.raises(video_conditioning.KeyframeSpecError, match=f"\\[2, {FRAMES - 1}\\]"):
    task.check_options({"keyframe_every": FRAMES})
  with pytest.raises(video_conditioning.KeyframeSpecError, match="integer"):
    video_conditioning.frame_mask("keyframes", FRAMES, 2.5)
  with pytest.raises(text_to_video.VideoConfigError, match="data.frames"):
    text_to_video.check_video_config(tiny_config("text_to_video_shapes.py", "data.frames=2"))


def test_sample_cli_writes_captioned_gif_mp4_and_npy_clips(video_run, tmp_path):
  workdir, task, _, _, _ = video_run
  r = task.resolution
  gif = tmp_path / "grid.gif"
  base = ["--compilation-cache", "", "sample", "--checkpoint", workdir, "--steps", "2"]
  assert cli_main(base + ["--prompt", CAPTIONS[0], "--prompt", CAPTIONS[1], "--out", str(gif)]) == 0
  with Image.open(gif) as image:
    assert image.n_frames == FRAMES
    # One clip per prompt (--num-per-prompt 1: one column), 4× upscaled, captions below.
    assert image.size[0] >= r * 4 and image.size[1] > 2 * r * 4
  clips = tmp_path / "grid_clips"
  assert sorted(os.listdir(clips)) == ["0000.npy", "0001.npy", "captions.json"]
  assert np.load(clips / "0000.npy").shape == (FRAMES, r, r, 3)
  assert json.loads((clips / "captions.json").read_text())["0001.npy"] == CAPTIONS[1]
  paths = video_folder.list_videos(clips)
  assert len(paths) == 2
  assert video_folder.probe_videos(paths, clip_length=FRAMES) == (r, r)

  frame = tmp_path / "start.png"
  start = video_shapes.make_video_split("test", 1, r, FRAMES, seed=2)["video"][0, 0]
  Image.fromarray(start).save(frame)
  mp4 = tmp_path / "first.mp4"
  argv = base + [
    "--prompt",
    CAPTIONS[0],
    "--prompt",
    CAPTIONS[1],
    "--first-frame",
    str(frame),
    "--out",
    str(mp4),
  ]
  assert cli_main(argv) == 0
  assert mp4.stat().st_size > 0
  np.testing.assert_array_equal(np.load(tmp_path / "first_clips" / "0000.npy")[0], start)
