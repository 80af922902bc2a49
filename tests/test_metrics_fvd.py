"""FVD: video folders, preprocessing, embeddings and `jaxgen eval --metric fvd`.

The one network run uses I3D's smallest valid clip (9 frames at 193x193,
batch 1): the shape tests/test_i3d.py's parity test compiles too.
"""

import argparse
import json
import math

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from jaxgen.convert import metric_networks
from jaxgen.convert.torch_state_dict import MissingWeightsError
from jaxgen.cli import eval as eval_command
from jaxgen.cli import eval_folders as eval_cli
from jaxgen.metrics import frechet, fvd, video_folder
from jaxgen.models import i3d

SMALL = fvd.FVDConfig(clip_length=i3d.MIN_FRAMES, resolution=i3d.MIN_INPUT_SIZE)


def _save_frames(folder, clip, names=None):
  folder.mkdir(parents=True)
  for t, frame in enumerate(clip):
    Image.fromarray(frame).save(folder / (names[t] if names else f"frame{t}.png"))
  return folder


def _clips(num, frames=9, height=20, width=24, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (num, frames, height, width, 3), np.uint8)


def _random_weights(path, seed=0):
  rng = np.random.default_rng(seed)
  state = {}
  for key, entry in metric_networks.I3D.key_map().items():
    shape = entry.torch_shape
    if key.endswith("conv3d.weight"):
      value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    elif key.endswith(("bn.weight", "running_var")):
      value = rng.uniform(0.5, 1.5, shape)
    else:
      value = rng.normal(0, 0.1, shape)
    state[key] = value.astype(np.float32)
  save_file(state, str(path))
  return path


def _args(**overrides):
  parser = argparse.ArgumentParser()
  eval_command.add_arguments(parser)
  argv = ["--metric", "fvd"]
  for key, value in overrides.items():
    argv += [f"--{key.replace('_', '-')}", str(value)]
  return parser.parse_args(argv + ["--no-progress"])


# --- Fréchet distance of embeddings ---------------------------------------------


def test_fvd_of_embeddings_is_frechets_distance():
  rng = np.random.default_rng(0)
  real = rng.normal(size=(60, 12))
  fake = rng.normal(0.3, 1.2, size=(50, 12)) @ rng.normal(size=(12, 12))
  want = frechet.frechet_distance(
    real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False)
  )
  assert fvd.fvd_from_embeddings(real, fake) == pytest.approx(want, rel=1e-12)
  sqrtm = fvd.fvd_from_embeddings(real, fake, method="sqrtm")
  assert sqrtm == pytest.approx(want, rel=1e-9)
  assert abs(fvd.fvd_from_embeddings(real, real)) < 1e-9 * np.trace(np.cov(real, rowvar=False))


# --- preprocessing ----------------------------------------------------------------


def test_tf1_bilinear_is_the_legacy_grid():
  x = np.array([0.0, 10.0, 20.0, 40.0])
  up = fvd.bilinear_matrix(4, 8, half_pixel=False) @ x  # source = dst * 0.5
  np.testing.assert_allclose(up, [0, 5, 10, 15, 20, 30, 40, 40])
  down = fvd.bilinear_matrix(4, 2, half_pixel=False) @ x  # source = dst * 2
  np.testing.assert_allclose(down, [0, 20])
  third = fvd.bilinear_matrix(4, 3, half_pixel=False) @ x  # source = 0, 4/3, 8/3
  np.testing.assert_allclose(third, [0, 10 + 10 / 3, 20 + 20 * 2 / 3])


@pytest.mark.parametrize("height, width", [(30, 40), (50, 21), (100, 100)])
def test_center_crop_is_stylegan_v_preprocessing(height, width):
  torch = pytest.importorskip("torch")
  clip = _clips(1, frames=2, height=height, width=width)
  found = np.asarray(fvd.preprocess_clips(clip, resolution=64, resize="center_crop"))[0]
  # StyleGAN-V: [0, 1], shorter side to 64 (torch bilinear), centre crop, -> [-1, 1].
  video = torch.from_numpy(clip[0]).permute(3, 0, 1, 2).double() / 255  # CTHW
  scale = 64 / min(height, width)
  size = (64, math.ceil(width * scale)) if height < width else (math.ceil(height * scale), 64)
  video = torch.nn.functional.interpolate(video, size=size, mode="bilinear", align_corners=False)
  top, left = (size[0] - 64) // 2, (size[1] - 64) // 2
  want = ((video[:, :, top : top + 64, left : left + 64] - 0.5) * 2).permute(1, 2, 3, 0).numpy()
  np.testing.assert_allclose(found, want, atol=2e-6)


def test_tf1_preprocessing_is_the_reference_protocol_on_the_first_frames(tmp_path):
  clip = _clips(1, frames=11, height=30, width=26, seed=1)[0]
  np.save(tmp_path / "clip.npy", clip)
  batch, num_valid = next(
    video_folder.iterate_clip_batches([tmp_path / "clip.npy"], clip_length=9, batch_size=1)
  )
  found = np.asarray(fvd.preprocess_clips(batch, resolution=193, resize="tf1"))
  # By hand, in float64: TF1 bilinear (source = dst * in / out) to 193x193, then 2x/255 - 1.
  rows = fvd.bilinear_matrix(30, 193, half_pixel=False)
  cols = fvd.bilinear_matrix(26, 193, half_pixel=False)
  frames = np.einsum("rh,thwc,sw->trsc", rows, clip[:9].astype(np.float64), cols, optimize=True)
  want = frames * 2 / 255 - 1
  assert num_valid == 1 and found.shape == (1, 9, 193, 193, 3)
  np.testing.assert_allclose(found[0], want, atol=1e-6)


def test_preprocessing_maps_uint8_to_minus_one_one_at_the_resolution():
  clip = np.zeros((1, 2, 5, 7, 3), np.uint8)
  clip[:, 1] = 255
  out = np.asarray(fvd.preprocess_clips(clip, resolution=11, resize="tf1"))
  assert out.shape == (1, 2, 11, 11, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out[0, 0], -1.0)
  np.testing.assert_allclose(out[0, 1], 1.0, atol=1e-6)


@pytest.mark.parametrize(
  "field, value, match",
  [
    ("clip_length", 8, "clip_length must be >= 9"),
    ("resolution", 192, "resolution must be >= 193"),
    ("resize", "bicubic", "resize must be one of"),
    ("feature", "probs", "feature must be one of"),
  ],
)
def test_config_names_bad_values(field, value, match):
  with pytest.raises(ValueError, match=match):
    fvd.FVDConfig(**{field: value})


# --- video folders --------------------------------------------------------------


def test_video_formats_read_in_natural_order(tmp_path):
  clips = _clips(3, frames=12)
  np.save(tmp_path / "clip10.npy", clips[0])
  _save_frames(tmp_path / "clip2", clips[1], names=[f"f{t}.png" for t in range(12)])
  palette = (clips[2] > 127).astype(np.uint8) * 255  # two levels: a GIF stores them exactly
  import imageio.v3 as iio

  iio.imwrite(tmp_path / "clip1.gif", palette, loop=0)
  (tmp_path / "notes.txt").write_text("not a video")
  paths = video_folder.list_videos(tmp_path)
  assert [p.name for p in paths] == ["clip1.gif", "clip2", "clip10.npy"]
  assert video_folder.probe_videos(paths, clip_length=12) == (20, 24)
  np.testing.assert_array_equal(video_folder.load_clip(paths[0], 9), palette[:9])
  np.testing.assert_array_equal(video_folder.load_clip(paths[1], 9), clips[1][:9])  # f10 after f9
  np.testing.assert_array_equal(video_folder.load_clip(paths[2], 9), clips[0][:9])
  batches = list(video_folder.iterate_clip_batches(paths, clip_length=9, batch_size=2))
  assert [(b.shape, n) for b, n in batches] == [((2, 9, 20, 24, 3), 2), ((2, 9, 20, 24, 3), 1)]
  assert not batches[1][0][1].any()  # padding


def test_folder_errors_are_named(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(video_folder.EmptyVideoFolderError, match="--fake .* holds no videos"):
    video_folder.list_videos(tmp_path / "empty", name="--fake")
  with pytest.raises(video_folder.VideoFolderError, match="must be a directory"):
    video_folder.list_videos(tmp_path / "absent")

  short = tmp_path / "short"
  short.mkdir()
  np.save(short / "a.npy", _clips(1, frames=16)[0])
  np.save(short / "b.npy", _clips(1, frames=15)[0])
  with pytest.raises(video_folder.TooFewFramesError, match=r"at least 16 frames.*b.npy \(15\)"):
    fvd.check_folder(short, fvd.FVDConfig(), name="--real")

  mixed = tmp_path / "mixed"
  mixed.mkdir()
  np.save(mixed / "a.npy", _clips(1)[0])
  np.save(mixed / "b.npy", _clips(1, height=22)[0])
  with pytest.raises(video_folder.MixedVideoSizesError, match="a.npy is 20x24 but b.npy is 22x24"):
    fvd.check_folder(mixed, SMALL)

  frames = tmp_path / "frames"
  _save_frames(frames / "clip", _clips(1, frames=2)[0])
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(frames / "clip" / "frame2.png")
  with pytest.raises(video_folder.MixedVideoSizesError, match="frames of"):
    video_folder.probe_video(frames / "clip")
  (frames / "blank").mkdir()
  with pytest.raises(video_folder.EmptyVideoFolderError, match="holds no frame images"):
    video_folder.probe_video(frames / "blank")

  bad = tmp_path / "bad"
  bad.mkdir()
  np.save(bad / "float.npy", np.zeros((9, 8, 8, 3), np.float32))
  (bad / "broken.mp4").write_bytes(b"\0" * 64)
  with pytest.raises(
    video_folder.VideoReadError, match=r"\(T, H, W, 3\) uint8 array, found float32"
  ):
    video_folder.probe_video(bad / "float.npy")
  with pytest.raises(video_folder.VideoReadError, match="cannot read video .*broken.mp4"):
    video_folder.probe_video(bad / "broken.mp4")


def test_cli_checks_folders_and_weights_before_any_network(tmp_path):
  real, fake = tmp_path / "real", tmp_path / "fake"
  real.mkdir()
  fake.mkdir()
  for k, clip in enumerate(_clips(2, frames=16)):
    np.save(real / f"{k}.npy", clip)
    np.save(fake / f"{k}.npy", clip[:12])
  with pytest.raises(video_folder.TooFewFramesError, match="--fake: every video needs at least 16"):
    eval_cli.run_eval(_args(real=real, fake=fake))
  with pytest.raises(MissingWeightsError, match="--weights is required for --metric fvd"):
    eval_cli.run_eval(_args(real=real, fake=real))
  with pytest.raises(MissingWeightsError, match="does not exist"):
    eval_cli.run_eval(_args(real=real, fake=real, weights=tmp_path / "rgb_imagenet.pt"))
  (fake / "1.npy").unlink()
  with pytest.raises(frechet.TooFewSamplesError, match="at least 2 videos, --fake holds 1"):
    eval_cli.run_eval(_args(real=real, fake=fake, clip_length=9))
  with pytest.raises(ValueError, match="clip_length must be >= 9"):
    eval_cli.run_eval(_args(real=real, fake=real, clip_length=4))


# --- network runs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  return _random_weights(tmp_path_factory.mktemp("i3d") / "i3d.safetensors")


def test_cli_identical_videos_in_two_formats_give_zero(tmp_path, weights):
  real, fake = tmp_path / "real", tmp_path / "fake"
  real.mkdir()
  clips = _clips(2, frames=10, seed=2)
  for k, clip in enumerate(clips):
    np.save(real / f"video{k}.npy", clip[:9])
    _save_frames(fake / f"video{k}", clip)  # one frame longer: clips use the first 9
  out = tmp_path / "fvd.json"
  result = eval_cli.run_eval(
    _args(
      real=real,
      fake=fake,
      weights=weights,
      clip_length=9,
      fvd_resolution=193,
      batch_size=1,
      out=out,
    )
  )
  assert json.loads(out.read_text()) == result
  assert result["metric"] == "fvd" and result["num_real"] == 2 and result["num_fake"] == 2
  assert (result["clip_length"], result["resolution"]) == (9, 193)
  assert (result["resize"], result["feature"]) == ("tf1", "logits")
  # What is left is float64 rounding under the square roots of the ~400
  # near-zero eigenvalues of a rank-1 covariance (~1e-5); two different pairs
  # of random clips are ~20 apart with these weights.
  assert abs(result["value"]) < 1e-4


def test_cli_on_precomputed_statistics_is_frechets_distance(tmp_path):
  rng = np.random.default_rng(3)
  real, fake = rng.normal(size=(30, 400)), rng.normal(0.1, 1.1, size=(25, 400))
  for name, embeddings in (("real", real), ("fake", fake)):
    frechet.save_statistics(tmp_path / f"{name}.npz", frechet.statistics_from_features(embeddings))
  result = eval_cli.run_eval(_args(real=tmp_path / "real.npz", fake=tmp_path / "fake.npz"))
  assert result["value"] == pytest.approx(fvd.fvd_from_embeddings(real, fake), rel=1e-10)
  assert result["num_real"] is None and result["feature"] == "logits"
