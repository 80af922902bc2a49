"""The text_to_video task: inflation, training, the three modes, `jaxgen sample` and CLIPSIM.

One tiny image run (8×8, one U-Net level with cross-attention) and one tiny
video run on it (4 frames) are shared by every test through module fixtures.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clip_tokenizer_files import write_clip_tokenizer
from PIL import Image
from tiny_configs import CONFIGS, ONE_LEVEL_TEXT_TO_IMAGE, tiny_config

from jaxgen.cli import main as cli_main
from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.data import video_shapes
from jaxgen.metrics import clipsim, video_folder
from jaxgen.nn.temporal import fold_frames
from jaxgen.tasks.image.text_to_image import TextToImageTask
from jaxgen.tasks.registry import load_run
from jaxgen.tasks.video import text_to_video, video_conditioning, video_samples
from jaxgen.training.inference import restore_ema_params
from jaxgen.training.trainer import train

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

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


# -- jaxgen sample --mode/--keyframe-every/--frames and jaxgen eval --metric clipsim --------
# With random CLIP weights the CLIPSIM numbers mean nothing: the test checks the pipeline
# (the folder `jaxgen sample` writes, every frame scored with its own video's caption,
# averaged per video, then over videos) against PyTorch transformers on the same files.

RESOLUTION = 8
CLIP_SIZE = 32
CLI = ["--compilation-cache", ""]


@pytest.fixture(scope="module")
def runs(image_run, video_run):
  """(image run, video run) directories: the module's trained runs."""
  return image_run, video_run[0]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
  """A tiny random transformers `CLIPModel` with its tokenizer and a 32-pixel image processor."""
  folder = tmp_path_factory.mktemp("clip")
  tokenizer = write_clip_tokenizer(str(folder), ("c i", "ci r"), max_length=64)
  text = dict(
    vocab_size=len(tokenizer),
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=1,
    num_attention_heads=4,
    max_position_embeddings=64,
    bos_token_id=tokenizer.bos_token_id,
    eos_token_id=tokenizer.eos_token_id,
    pad_token_id=tokenizer.pad_token_id,
  )
  vision = dict(
    image_size=CLIP_SIZE,
    patch_size=8,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=1,
    num_attention_heads=4,
  )
  config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
  torch.manual_seed(0)
  model = transformers.CLIPModel(config).eval()
  with torch.no_grad():  # Larger than the 0.02 init, so frames and captions disagree visibly.
    for p in model.parameters():
      if p.ndim >= 2:
        p.mul_(4.0)
  model.save_pretrained(folder)
  processor = transformers.CLIPImageProcessor(
    size={"shortest_edge": CLIP_SIZE}, crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE}
  )
  transformers.CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)
  return folder


def sample(video_run: str, out, *extra: str, prompts=CAPTIONS) -> int:
  argv = CLI + ["sample", "--checkpoint", video_run, "--steps", "2", "--out", str(out)]
  for prompt in prompts:
    argv += ["--prompt", prompt]
  return cli_main(argv + list(extra))


def clips(out) -> np.ndarray:
  """The (N, T, H, W, 3) clips `jaxgen sample` wrote beside the grid at `out`."""
  folder = str(out).rsplit(".", 1)[0] + "_clips"
  names = sorted(n for n in os.listdir(folder) if n.endswith(".npy"))
  return np.stack([np.load(os.path.join(folder, n)) for n in names])


def torch_clipsim(folder, videos: list[np.ndarray], captions: list[str]) -> list[float]:
  """Each video's mean of 100 * cos(frame, caption) by transformers' CLIPModel and processor."""
  model = transformers.CLIPModel.from_pretrained(folder).eval()
  processor = transformers.CLIPProcessor.from_pretrained(folder)
  means = []
  with torch.no_grad():
    for video, caption in zip(videos, captions):
      inputs = processor(
        text=[caption] * len(video), images=list(video), return_tensors="pt", padding=True
      )
      image = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
      text = model.get_text_features(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
      ).pooler_output
      cos = torch.nn.functional.cosine_similarity(image, text, dim=-1)
      means.append(float(100 * cos.mean()))
  return means


def truth_clip(seed: int = 2) -> np.ndarray:
  return video_shapes.make_video_split("test", 1, RESOLUTION, FRAMES, seed=seed)["video"][0]


def test_clipsim_of_the_folder_jaxgen_sample_writes(runs, clip_folder, tmp_path):
  """Random weights: a pipeline check. CLIPSIM of the sampled clips (captions.json read as
  `jaxgen sample` wrote it) equals transformers' per-frame scores averaged per video, then over
  videos; a shorter third video shows the mean is over videos, not over all frames."""
  _, video_run = runs
  assert sample(video_run, tmp_path / "grid.gif") == 0
  folder = tmp_path / "grid_clips"
  videos = list(clips(tmp_path / "grid.gif"))
  out = tmp_path / "clipsim.json"
  argv = CLI + ["eval", "--metric", "clipsim", "--fake", str(folder)]
  argv += ["--clip-model", str(clip_folder), "--out", str(out), "--no-progress"]
  assert cli_main(argv) == 0
  result = json.loads(out.read_text())
  expected = torch_clipsim(clip_folder, videos, CAPTIONS)
  assert result["num_videos"] == 2 and result["num_frames"] == 2 * FRAMES
  assert result["value"] == pytest.approx(max(np.mean(expected), 0.0), abs=1e-3)
  assert result["cosine"] == pytest.approx(result["value"] / 100)
  assert result["std"] == pytest.approx(np.std(expected), abs=1e-3)

  mixed = tmp_path / "mixed"
  shutil.copytree(folder, mixed)
  short = truth_clip()[:2]
  np.save(mixed / "0002.npy", short)
  captions = json.loads((folder / "captions.json").read_text())
  captions["0002.npy"] = "a small green triangle moving down quickly"
  (mixed / "captions.json").write_text(json.dumps(captions))
  videos.append(short)
  expected = torch_clipsim(clip_folder, videos, list(captions.values()))
  scorer = clipsim.transformers_frame_scorer(
    clipsim.clip_score.load_clip_scorer(clip_folder, batch_size=4)
  )
  # Two videos per call: a group boundary inside the folder, batches padded.
  found = clipsim.folder_clipsim(
    clipsim.captioned_videos(mixed), scorer, frames_per_call=FRAMES + 2
  )
  np.testing.assert_allclose(found.per_video, expected, atol=1e-3)
  assert found.value == pytest.approx(max(np.mean(expected), 0.0), abs=1e-3)
  frame_mean = (FRAMES * (expected[0] + expected[1]) + 2 * expected[2]) / (2 * FRAMES + 2)
  assert abs(np.mean(expected) - frame_mean) > 1e-3  # the two means differ on this folder
  assert found.names == ["0000.npy", "0001.npy", "0002.npy"]


def test_keyframes_and_first_frame_modes_keep_the_given_frames(runs, tmp_path):
  _, video_run = runs
  truth = np.stack([truth_clip(2), truth_clip(3)])
  np.save(tmp_path / "truth.npy", truth[0])
  np.save(tmp_path / "other.npy", truth[1])
  keys = tmp_path / "keys"  # only the keyframes 0 and 2 of truth[0], as a folder of PNG frames
  keys.mkdir()
  for i, frame in enumerate(truth[0, ::2]):
    Image.fromarray(frame).save(keys / f"frame{i}.png")

  # One whole clip per prompt, the mode and the spacing given.
  whole = tmp_path / "whole.gif"
  argv = ["--mode", "keyframes", "--keyframe-every", "2"]
  argv += ["--frames", str(tmp_path / "truth.npy"), "--frames", str(tmp_path / "other.npy")]
  assert sample(video_run, whole, *argv) == 0
  made = clips(whole)
  np.testing.assert_array_equal(made[:, [0, 2]], truth[:, [0, 2]])
  assert np.abs(made[:, [1, 3]].astype(int) - truth[:, [1, 3]]).max() > 0  # generated between
  # Only the keyframes, for every prompt; the mode implied by --frames, the run's spacing (2):
  # prompt 0 (same seed, same noise, same keyframes) gets the same video.
  only_keys = tmp_path / "keys.gif"
  assert sample(video_run, only_keys, "--frames", str(keys)) == 0
  np.testing.assert_array_equal(clips(only_keys)[0], made[0])
  np.testing.assert_array_equal(clips(only_keys)[1, [0, 2]], truth[0, [0, 2]])

  first = tmp_path / "first.gif"
  argv = ["--mode", "first_frame", "--frames", str(tmp_path / "truth.npy")]
  assert sample(video_run, first, *argv) == 0
  made = clips(first)
  np.testing.assert_array_equal(made[:, 0], truth[[0, 0], 0])
  assert np.abs(made[:, 1:].astype(int) - truth[[0, 0], 1:]).max() > 0


def test_named_errors(runs, clip_folder, tmp_path, capsys):
  image_run, video_run = runs
  clip = tmp_path / "clip.npy"
  np.save(clip, truth_clip())
  np.save(tmp_path / "three.npy", truth_clip()[:3])
  np.save(tmp_path / "big.npy", np.zeros((FRAMES, 16, 16, 3), np.uint8))
  (tmp_path / "notes.txt").write_text("x")
  Image.fromarray(truth_clip()[0]).save(tmp_path / "start.png")

  def error(run_dir, *argv) -> str:
    assert sample(run_dir, tmp_path / "out.gif", *argv) == 2
    return capsys.readouterr().err.strip().removeprefix("jaxgen sample: error: ")

  assert error(image_run, "--mode", "text").startswith("--mode: task 'text_to_image' takes no mode")
  assert "takes no keyframe_every" in error(image_run, "--keyframe-every", "2")
  assert error(image_run, "--frames", str(clip)) == (
    "--frames: task 'text_to_image' makes no videos from given frames"
  )
  assert error(video_run, "--mode", "backwards").startswith("--mode: expected one of ('text'")
  assert "needs the keyframes" in error(video_run, "--mode", "keyframes")
  assert "needs the first frame" in error(video_run, "--mode", "first_frame")
  assert error(video_run, "--mode", "text", "--frames", str(clip)).startswith(
    "--frames: --mode text generates every frame"
  )
  assert error(video_run, "--first-frame", str(tmp_path / "start.png"), "--frames", str(clip))
  assert error(video_run, "--mode", "keyframes", "--first-frame", str(tmp_path / "start.png"))
  assert error(video_run, "--keyframe-every", "2").startswith("--keyframe-every: spaces")
  message = error(
    video_run, "--mode", "first_frame", "--keyframe-every", "2", "--frames", str(clip)
  )
  assert message.endswith("found --mode first_frame")
  assert error(video_run, "--keyframe-every", "9", "--frames", str(clip)).startswith(
    "--keyframe-every: expected a spacing in [2, 3] for clips of 4 frames"
  )
  assert error(video_run, "--frames", str(tmp_path / "three.npy")) == (
    "--frames 'three.npy': expected a whole clip (at least 4 frames) or only the 2 given frames "
    "(frames [0, 2]), found 3 frames"
  )
  assert "expected 8x8 pixels" in error(video_run, "--frames", str(tmp_path / "big.npy"))
  assert "no such file or folder" in error(video_run, "--frames", str(tmp_path / "none.npy"))
  assert "expected a video (.npy" in error(video_run, "--frames", str(tmp_path / "notes.txt"))
  three = ["--frames", str(clip)] * 3
  assert "one per prompt (2), found 3" in error(video_run, *three)
  assert not os.path.exists(tmp_path / "out.gif")

  # The task's own errors are SamplingOptionErrors that name the option (the CLI names the flag).
  with pytest.raises(video_conditioning.VideoModeError, match="mode: expected one of") as e:
    video_conditioning.check_mode("backwards")
  assert e.value.option == "mode"

  empty = tmp_path / "empty_captions"
  empty.mkdir()
  np.save(empty / "0000.npy", truth_clip())

  def eval_error(*argv) -> str:
    assert cli_main(CLI + ["eval", "--metric", "clipsim", "--no-progress", *argv]) == 2
    return capsys.readouterr().err.strip().removeprefix("jaxgen eval: error: ")

  assert "holds no captions.json or captions.txt" in eval_error("--fake", str(empty))
  (empty / "captions.json").write_text(json.dumps({"0001.npy": "a red circle"}))
  assert "no caption for ['0000.npy']" in eval_error("--fake", str(empty))
  (empty / "captions.json").write_text(json.dumps({"0000.npy": "a red circle"}))
  assert eval_error("--fake", str(empty)).startswith(
    "--clip-model is required for --metric clipsim"
  )
  (tmp_path / "nothing").mkdir()
  assert "holds no videos" in eval_error("--fake", str(tmp_path / "nothing"))
