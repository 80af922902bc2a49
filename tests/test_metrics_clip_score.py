"""CLIP score / CLIPSIM vs torchmetrics `CLIPScore` on a tiny random transformers `CLIPModel` folder.

Parity route. torchmetrics 1.9.0 `CLIPScore` fails with transformers 5.x at
`torchmetrics/functional/multimodal/clip_score.py:193` (`_clip_score_update`):
`source_features / source_features.norm(...)` raises AttributeError
"'BaseModelOutputWithPooling' object has no attribute 'norm'", because
transformers 5 `CLIPModel.get_image_features` / `get_text_features` return a
`BaseModelOutputWithPooling` whose `pooler_output` holds the projected
embedding, where 4.x returned that tensor. torchmetrics documents a callable
`model_name_or_path` returning any (model, processor) pair whose model has
`get_image_features` / `get_text_features`. The reference is therefore
torchmetrics' own `CLIPScore` metric, unmodified (its processor call,
normalization, accumulation and clipped mean), given the real transformers
`CLIPProcessor` and `_TensorFeatures`, a 10-line adapter around the real
transformers `CLIPModel` that returns `.pooler_output`, i.e. exactly what
transformers 4.x returned. Without torchvision, `CLIPProcessor` runs
`CLIPImageProcessorPil`, the PIL path jaxgen reproduces.

The tokenizer is a CLIP BPE vocabulary of the 256 byte symbols (plain and
word-final) plus a few merges, written to the folder (the real 49k vocabulary
is not needed to test the plumbing).
"""

import argparse
import json
import shutil

import jax
import numpy as np
import pytest
from clip_tokenizer_files import write_clip_tokenizer
from PIL import Image

from jaxgen.cli import eval as eval_command
from jaxgen.cli import eval_folders as eval_cli
from jaxgen.metrics import clip_score as cs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
clip_score_module = pytest.importorskip("torchmetrics.multimodal.clip_score")

IMAGE_SIZE = 32
MERGES = ("c a", "ca t</w>", "d o", "do g</w>", "r e", "re d</w>", "a n</w>")
CAPTIONS = ("a red cat", "a dog on a mat", "an apple", "two dogs", "a cat and a dog", "red")


def _write_tokenizer(folder) -> "transformers.CLIPTokenizer":
  return write_clip_tokenizer(str(folder), MERGES, max_length=16)


class _TensorFeatures(torch.nn.Module):
  """transformers 5 `CLIPModel` with 4.x feature methods (projected tensors), for torchmetrics."""

  def __init__(self, model):
    super().__init__()
    self.model, self.config = model, model.config

  def get_image_features(self, pixel_values):
    return self.model.get_image_features(pixel_values).pooler_output

  def get_text_features(self, input_ids, attention_mask=None):
    return self.model.get_text_features(input_ids, attention_mask).pooler_output


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
  """A tiny random `CLIPModel` + `CLIPProcessor` (tokenizer, 32-pixel image processor) folder."""
  folder = tmp_path_factory.mktemp("clip")
  tokenizer = _write_tokenizer(folder)
  text = dict(
    vocab_size=len(tokenizer),
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=16,
    bos_token_id=tokenizer.bos_token_id,
    eos_token_id=tokenizer.eos_token_id,
    pad_token_id=tokenizer.pad_token_id,
  )
  vision = dict(
    image_size=IMAGE_SIZE,
    patch_size=8,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
  )
  config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
  torch.manual_seed(0)
  model = transformers.CLIPModel(config).eval()
  with torch.no_grad():  # Larger than the 0.02 init so random embeddings disagree visibly.
    for p in model.parameters():
      if p.ndim >= 2:
        p.mul_(4.0)
  model.save_pretrained(folder)
  image_processor = transformers.CLIPImageProcessor(
    size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
  )
  transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
    folder
  )
  return folder


@pytest.fixture(scope="module")
def reference(clip_folder):
  model = transformers.CLIPModel.from_pretrained(clip_folder).eval()
  processor = transformers.CLIPProcessor.from_pretrained(clip_folder)
  return _TensorFeatures(model), processor


@pytest.fixture(scope="module")
def scorer(clip_folder):
  return cs.load_clip_scorer(clip_folder, batch_size=4)


def _images(seed: int, sizes) -> list[np.ndarray]:
  """Smooth random images (noise plus gradients) of the given (H, W) sizes, uint8."""
  rng = np.random.default_rng(seed)
  out = []
  for height, width in sizes:
    y, x = np.mgrid[:height, :width]
    base = 128 + 90 * np.sin(
      x[..., None] / rng.uniform(3, 9, 3) + y[..., None] / rng.uniform(3, 9, 3)
    )
    out.append(np.clip(base + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8))
  return out


def _torchmetrics_clip_score(reference, images, captions) -> tuple[float, np.ndarray]:
  """torchmetrics `CLIPScore` value and its per-pair scores (from its own `_clip_score_update`)."""
  model, processor = reference
  metric = clip_score_module.CLIPScore(model_name_or_path=lambda: (model, processor))
  tensors = [torch.from_numpy(np.ascontiguousarray(i.transpose(2, 0, 1))) for i in images]
  with torch.no_grad():
    metric.update(tensors, list(captions))
    per_pair, _ = clip_score_module._clip_score_update(tensors, list(captions), model, processor)
  return float(metric.compute()), per_pair.numpy()


# ----------------------------------------------------------------------------
# Preprocessing.


def test_torchmetrics_clip_score_breaks_on_transformers_5_features(reference):
  """The failure the adapter exists for (if this starts passing, drop the adapter)."""
  model, processor = reference
  metric = clip_score_module.CLIPScore(model_name_or_path=lambda: (model.model, processor))
  image = torch.zeros(3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
  with pytest.raises(AttributeError, match="BaseModelOutputWithPooling"):
    metric.update([image], ["a cat"])


def test_preprocessing_config_read_from_processor_config(clip_folder, reference):
  pre = cs.CLIPImagePreprocessing.from_folder(clip_folder)
  assert pre.shortest_edge == IMAGE_SIZE and pre.crop_size == (IMAGE_SIZE, IMAGE_SIZE)
  assert pre.resample == 3 and pre.image_mean == cs.OPENAI_CLIP_MEAN
  assert pre.image_std == pytest.approx(reference[1].image_processor.image_std)


def test_preprocessor_config_json_takes_precedence(tmp_path, clip_folder):
  for name in ("processor_config.json",):
    shutil.copy(clip_folder / name, tmp_path / name)
  old_style = {  # transformers 4.x / hub files: int sizes, feature-extractor keys.
    "crop_size": 24,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.25, 0.25, 0.25],
    "resample": 2,
    "size": 28,
  }
  (tmp_path / "preprocessor_config.json").write_text(json.dumps(old_style))
  pre = cs.CLIPImagePreprocessing.from_folder(tmp_path)
  assert (pre.shortest_edge, pre.crop_size, pre.resample) == (28, (24, 24), 2)
  assert pre.image_mean == (0.5, 0.5, 0.5)
  assert cs.CLIPImagePreprocessing.from_folder(tmp_path / "nothing") == cs.CLIPImagePreprocessing()
  with pytest.raises(ValueError, match="crop_size: expected at most shortest_edge=28"):
    cs.CLIPImagePreprocessing.from_dict({**old_style, "crop_size": 30})
  with pytest.raises(ValueError, match="resample"):
    cs.CLIPImagePreprocessing.from_dict({**old_style, "resample": 9})


@pytest.mark.parametrize("resample", [3, 2])
def test_pil_preprocessing_equals_clip_image_processor(resample):
  """Downscale, upscale, portrait and landscape, odd crops: bit-for-bit the PIL backend's output."""
  pre = cs.CLIPImagePreprocessing(shortest_edge=30, crop_size=(27, 30), resample=resample)
  processor = transformers.CLIPImageProcessor(**{**pre.to_dict(), "resample": resample})
  images = _images(1, [(45, 61), (17, 23), (64, 30), (30, 30)])
  ours = cs.preprocess_images(images, pre)
  for image, mine in zip(images, ours):
    ref = processor(images=image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    np.testing.assert_allclose(mine, ref, atol=1e-6, rtol=0)
  assert ours.shape == (4, 27, 30, 3) and ours.dtype == np.float32


def test_resized_shape_truncates_like_transformers():
  assert cs.resized_shape(480, 640, 224) == (224, 298)
  assert cs.resized_shape(640, 480, 224) == (298, 224)
  assert cs.resized_shape(100, 100, 224) == (224, 224)


@pytest.mark.parametrize("size", [(45, 61), (20, 26), (300, 400)])
def test_jax_preprocessing_is_within_pil_weight_rounding(size):
  """Per-pass uint8 rounding as PIL: at most 2 levels apart on under 1% of the pixels."""
  pre = cs.CLIPImagePreprocessing(shortest_edge=IMAGE_SIZE, crop_size=(IMAGE_SIZE, IMAGE_SIZE))
  images = np.stack(_images(2, [size] * 2))
  exact = cs.preprocess_images(images, pre)
  approx = np.asarray(jax.jit(lambda x: cs.preprocess_images_jax(x, pre))(images))
  levels = np.abs(exact - approx) * np.asarray(pre.image_std, np.float32) * 255
  assert levels.max() <= 2 + 1e-3
  assert (levels > 0.5).mean() < 0.01
  unrounded = jax.image.resize(
    images.astype(np.float32), (2,) + cs.resized_shape(*size, 32) + (3,), "bicubic"
  )
  assert (
    np.abs(np.asarray(unrounded) - np.round(np.asarray(unrounded))).max() > 0.01
  )  # Not integers.


def test_bad_images_are_named(scorer):
  with pytest.raises(ValueError, match=r"images\[1\]: expected uint8 pixels"):
    cs.preprocess_images(
      [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)], scorer.preprocessing
    )
  with pytest.raises(ValueError, match=r"images\[0\]: expected an \(H, W, 3\) RGB image"):
    cs.preprocess_images([np.zeros((8, 8), np.uint8)], scorer.preprocessing)
  with pytest.raises(ValueError, match="one caption per image, found 2 images and 1 captions"):
    cs.clip_score(scorer, _images(0, [(32, 32)] * 2), ["a cat"])


# ----------------------------------------------------------------------------
# Scores.


def test_clip_score_matches_torchmetrics(scorer, reference):
  """Mixed sizes (resize + crop through PIL) and more pairs than one batch (padding)."""
  images = _images(3, [(40, 52), (48, 36), (32, 32), (70, 45), (33, 33), (64, 64)])
  ours = cs.clip_score(scorer, images, CAPTIONS)
  value, per_pair = _torchmetrics_clip_score(reference, images, CAPTIONS)
  np.testing.assert_allclose(ours.per_item, per_pair, atol=1e-4, rtol=0)
  assert abs(ours.value - value) < 1e-4
  assert np.ptp(per_pair) > 1.0  # The random towers do tell the pairs apart.


def test_clip_score_is_clipped_mean_not_mean_of_clipped(scorer):
  images = _images(4, [(32, 32)] * 6)
  scores = cs.image_text_scores(scorer, images, CAPTIONS)
  assert cs.clip_score(scorer, images, CAPTIONS).value == pytest.approx(
    max(scores.mean(), 0.0), abs=1e-5
  )
  assert cs.clipped_mean(np.array([-30.0, 10.0])) == 0.0
  assert cs.clipped_mean(np.array([-5.0, 25.0])) == pytest.approx(10.0)


def test_embeddings_match_transformers(scorer, reference):
  model, processor = reference
  images = _images(5, [(32, 32)] * 3)
  pixels = cs.preprocess_images(images, scorer.preprocessing)
  with torch.no_grad():
    ref_image = model.get_image_features(
      torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
    ).numpy()
    tokens = processor.tokenizer(list(CAPTIONS[:3]), padding=True, return_tensors="pt")
    ref_text = model.get_text_features(tokens["input_ids"], tokens["attention_mask"]).numpy()
  np.testing.assert_allclose(cs.image_features(scorer, pixels), ref_image, atol=1e-4, rtol=0)
  np.testing.assert_allclose(cs.text_features(scorer, CAPTIONS[:3]), ref_text, atol=1e-4, rtol=0)


def test_clipsim_is_the_frame_average(scorer, reference):
  videos = np.stack([np.stack(_images(6 + v, [(36, 44)] * 3)) for v in range(2)])  # (2, 3, H, W, 3)
  captions = ["a cat and a dog", "two dogs"]
  ours = cs.clipsim(scorer, videos, captions)
  frames = [frame for video in videos for frame in video]
  value, per_frame = _torchmetrics_clip_score(
    reference, frames, [c for c in captions for _ in range(3)]
  )
  assert abs(ours.value - value) < 1e-4
  np.testing.assert_allclose(ours.per_item, per_frame.reshape(2, 3).mean(1), atol=1e-4, rtol=0)
  single = cs.clipsim(scorer, videos[1], "two dogs")
  assert single.value == pytest.approx(max(float(ours.per_item[1]), 0.0), abs=1e-5)
  with pytest.raises(ValueError, match=r"captions: expected one caption per video \(2\), found 1"):
    cs.clipsim(scorer, videos, ["x"])


def test_long_captions_keep_the_end_token(scorer):
  ids, mask = cs.tokenize_captions(scorer.tokenizer, ["a cat " * 20], max_length=16)
  assert ids.shape == mask.shape == (1, 16) and mask.all()
  assert ids[0, -1] == scorer.tokenizer.eos_token_id


def test_scorer_rejects_a_processor_for_another_resolution(clip_folder):
  scorer = cs.load_clip_scorer(clip_folder)
  with pytest.raises(
    ValueError, match=r"crop_size \(224, 224\) must equal the vision tower's image_size"
  ):
    cs.CLIPScorer(scorer.config, scorer.params, scorer.tokenizer, cs.CLIPImagePreprocessing())


# ----------------------------------------------------------------------------
# `jaxgen eval --metric clip-score`.


def _args(**overrides):
  parser = argparse.ArgumentParser()
  eval_command.add_arguments(parser)
  argv = []
  for key, value in overrides.items():
    argv += [f"--{key.replace('_', '-')}", str(value)]
  return parser.parse_args(argv + ["--no-progress"])


@pytest.fixture(scope="module")
def fake_folder(tmp_path_factory):
  folder = tmp_path_factory.mktemp("fake")
  images = _images(7, [(40, 52), (48, 36), (32, 32), (70, 45), (33, 33)])
  names = ["e.png", "b.png", "a.png", "d.png", "c.png"]
  for name, image in zip(names, images):
    Image.fromarray(image).save(folder / name)
  by_name = dict(zip(names, images))
  order = sorted(names)
  return folder, [by_name[n] for n in order], order


def test_eval_cli_clip_score_with_captions_file(tmp_path, fake_folder, clip_folder, reference):
  folder, images, names = fake_folder
  captions = list(CAPTIONS[: len(names)])
  (tmp_path / "captions.txt").write_text("\n".join(captions) + "\n")
  out = tmp_path / "result.json"
  result = eval_cli.run_eval(
    _args(
      metric="clip-score",
      fake=folder,
      captions=tmp_path / "captions.txt",
      clip_model=clip_folder,
      batch_size=4,
      out=out,
    )
  )
  value, _ = _torchmetrics_clip_score(reference, images, captions)
  assert abs(result["value"] - value) < 1e-4
  assert result["num_fake"] == len(names)
  assert json.loads(out.read_text())["value"] == pytest.approx(result["value"])


def test_eval_cli_clip_score_with_captions_json(tmp_path, fake_folder, clip_folder, reference):
  folder, images, names = fake_folder
  mapping = {name: CAPTIONS[i] for i, name in enumerate(reversed(names))}
  (tmp_path / "captions.json").write_text(json.dumps(mapping))
  result = eval_cli.run_eval(
    _args(
      metric="clip-score",
      fake=folder,
      captions=tmp_path / "captions.json",
      clip_model=clip_folder,
      batch_size=4,
    )
  )
  value, _ = _torchmetrics_clip_score(reference, images, [mapping[n] for n in names])
  assert abs(result["value"] - value) < 1e-4


def test_eval_cli_clip_score_errors_are_named(tmp_path, fake_folder, clip_folder):
  folder, _, names = fake_folder
  short = tmp_path / "short.txt"
  short.write_text("a cat\na dog\n")
  with pytest.raises(
    ValueError, match=r"--captions .*short.txt' holds 2 captions, --fake holds 5 images"
  ):
    eval_cli.run_eval(
      _args(metric="clip-score", fake=folder, captions=short, clip_model=clip_folder)
    )
  partial = tmp_path / "partial.json"
  partial.write_text(json.dumps({n: "x" for n in names[:-1]}))
  with pytest.raises(ValueError, match=r"no caption for \['e.png'\]"):
    eval_cli.run_eval(
      _args(metric="clip-score", fake=folder, captions=partial, clip_model=clip_folder)
    )
  with pytest.raises(ValueError, match="--captions is required for --metric clip-score"):
    eval_cli.run_eval(_args(metric="clip-score", fake=folder, clip_model=clip_folder))
  captions = tmp_path / "ok.txt"
  captions.write_text("\n".join(["x"] * len(names)))
  with pytest.raises(ValueError, match="--clip-model is required for --metric clip-score"):
    eval_cli.run_eval(_args(metric="clip-score", fake=folder, captions=captions))
