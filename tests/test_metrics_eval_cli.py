"""`jaxgen eval` (`run_eval`) on folders of small PNGs, with a random-weight InceptionV3 file."""

import argparse
import json

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file as safe_load_file
from safetensors.numpy import save_file

import jax

from jaxgen import cli
from jaxgen.cli import eval as eval_command
from jaxgen.cli import eval_folders as eval_cli
from jaxgen.convert import metric_networks, torch_state_dict
from jaxgen.metrics import frechet, image_folder, image_quality, inception_score, kid
from jaxgen.metrics.frechet import TooFewSamplesError
from test_readme import readme_argv
from jaxgen.models import inception

BATCH = 4  # with 32x32 images: the shape the Inception parity test compiles too


def _write_pngs(folder, images, names=None):
  folder.mkdir(parents=True, exist_ok=True)
  for i, image in enumerate(images):
    name = names[i] if names else f"{i:03d}.png"
    Image.fromarray(image).save(folder / name)
  return folder


def _random_weights(path, seed=0):
  rng = np.random.default_rng(seed)
  state = {}
  for key, entry in metric_networks.FID_INCEPTION.key_map().items():
    shape = entry.torch_shape
    if key.endswith("conv.weight"):
      value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    elif key.endswith(("bn.weight", "running_var")):
      value = rng.uniform(0.5, 1.5, shape)
    elif key == "fc.weight":
      value = rng.normal(0, 1 / np.sqrt(shape[1]), shape)
    else:
      value = rng.normal(0, 0.1, shape)
    state[key] = value.astype(np.float32)
  save_file(state, str(path))
  return path


def _args(**overrides):
  parser = argparse.ArgumentParser()
  eval_command.add_arguments(parser)
  argv = []
  for key, value in overrides.items():
    argv += [f"--{key.replace('_', '-')}", str(value)]
  return parser.parse_args(argv + ["--no-progress"])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval")
  rng = np.random.default_rng(0)
  # 3 real images: one padded batch of BATCH; 4 fake: one full batch.
  fake = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
  real = np.clip(fake[:3].astype(int) + rng.integers(-40, 40, size=(3, 32, 32, 3)), 0, 255).astype(
    np.uint8
  )
  return {
    "real_images": real,
    "fake_images": fake,
    "real": _write_pngs(root / "real", real),
    "fake": _write_pngs(root / "fake", fake),
    "weights": _random_weights(root / "inception.safetensors"),
    "root": root,
  }


@pytest.fixture(scope="module")
def reference_outputs(data):
  """Inception outputs computed directly, in BATCH-sized chunks, without the folder code."""
  variables = metric_networks.FID_INCEPTION.load(data["weights"])
  outputs = {}
  for name in ("real", "fake"):
    images = data[f"{name}_images"].astype(np.float32) / 255.0
    padded = np.concatenate([images, np.zeros((-len(images) % BATCH, 32, 32, 3), np.float32)])
    chunks = [
      inception.inception_outputs(variables, padded[i : i + BATCH])
      for i in range(0, len(padded), BATCH)
    ]
    outputs[name] = jax.tree.map(lambda *x: np.concatenate(x)[: len(images)], *chunks)
  return outputs


def test_fid_streams_the_same_statistics(data, reference_outputs, tmp_path, monkeypatch):
  # The distance itself is tested in test_metrics_frechet.py; a 2048-d matrix
  # square root costs seconds, so here a spy checks what run_eval feeds it.
  calls = []

  def spy(mu1, sigma1, mu2, sigma2, **kwargs):
    calls.append((mu1, sigma1, mu2, sigma2, kwargs))
    return 42.0

  monkeypatch.setattr(eval_cli.frechet, "frechet_distance", spy)
  out = tmp_path / "fid.json"
  result = eval_cli.run_eval(
    _args(
      metric="fid",
      real=data["real"],
      fake=data["fake"],
      weights=data["weights"],
      batch_size=BATCH,
      out=out,
      fid_method="sqrtm",
    )
  )
  assert result == {"metric": "fid", "value": 42.0, "num_real": 3, "num_fake": 4}
  assert json.loads(out.read_text()) == result
  ((mu1, sigma1, mu2, sigma2, kwargs),) = calls
  assert kwargs == {"method": "sqrtm"}
  for (mu, sigma), name in (((mu1, sigma1), "real"), ((mu2, sigma2), "fake")):
    pool = reference_outputs[name].pool.astype(np.float64)
    scale = np.abs(pool).max()
    np.testing.assert_allclose(mu, pool.mean(axis=0), atol=1e-5 * scale)
    np.testing.assert_allclose(sigma, np.cov(pool, rowvar=False), atol=1e-5 * scale**2)


def test_fid_from_statistics_files(tmp_path):
  rng = np.random.default_rng(1)
  for name, shift in (("a", 0.0), ("b", 1.0)):
    frechet.save_statistics(
      tmp_path / f"{name}.npz", frechet.statistics_from_features(rng.normal(shift, size=(50, 8)))
    )
  result = eval_cli.run_eval(_args(metric="fid", real=tmp_path / "a.npz", fake=tmp_path / "b.npz"))
  mu_a, sigma_a = frechet.load_statistics(tmp_path / "a.npz")
  mu_b, sigma_b = frechet.load_statistics(tmp_path / "b.npz")
  assert result["value"] == pytest.approx(frechet.frechet_distance(mu_a, sigma_a, mu_b, sigma_b))
  assert result["num_real"] is None  # counts are unknown for statistics files


def test_kid_and_is(data, reference_outputs):
  result = eval_cli.run_eval(
    _args(
      metric="kid",
      real=data["real"],
      fake=data["fake"],
      weights=data["weights"],
      batch_size=BATCH,
      kid_subsets=3,
      kid_subset_size=3,
      seed=5,
    )
  )
  key_real, key_fake = jax.random.split(jax.random.key(5))
  expected = kid.kid_from_subset_indices(
    reference_outputs["real"].pool,
    reference_outputs["fake"].pool,
    kid.sample_subset_indices(key_real, 3, 3, 3),
    kid.sample_subset_indices(key_fake, 4, 3, 3),
  )
  assert result["value"] == pytest.approx(expected.mean, rel=1e-4, abs=1e-6)
  assert result["std"] == pytest.approx(expected.std, rel=1e-3, abs=1e-6)

  result = eval_cli.run_eval(
    _args(
      metric="is", fake=data["fake"], weights=data["weights"], batch_size=BATCH, is_splits=2, seed=0
    )
  )
  expected = inception_score.inception_score(
    reference_outputs["fake"].logits_unbiased, splits=2, key=jax.random.key(0)
  )
  assert result["value"] == pytest.approx(expected.mean, rel=1e-4)
  assert result["num_fake"] == 4


@pytest.mark.parametrize("metric", ["ssim", "psnr"])
def test_ssim_psnr_on_paired_folders(data, metric):
  fake = _write_pngs(data["root"] / f"paired_fake_{metric}", data["fake_images"][:3])
  # batch 2 over 3 pairs: a full batch and a padded one.
  result = eval_cli.run_eval(_args(metric=metric, real=data["real"], fake=fake, batch_size=2))
  fn = {"ssim": image_quality.ssim, "psnr": image_quality.psnr}[metric]
  expected = np.asarray(fn(data["fake_images"][:3], data["real_images"], data_range=255.0))
  assert result["num_pairs"] == 3 and result["data_range"] == 255.0
  assert result["value"] == pytest.approx(expected.mean(), rel=1e-6)


def test_named_errors(data, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(image_folder.EmptyFolderError, match="--fake"):
    eval_cli.run_eval(_args(metric="fid", real=data["real"], fake=empty, weights=data["weights"]))
  with pytest.raises(eval_cli.UnknownMetricError, match="lpips"):
    eval_cli.run_eval(_args(metric="lpips", real=data["real"], fake=data["fake"]))
  one = _write_pngs(tmp_path / "one", data["real_images"][:1])
  with pytest.raises(TooFewSamplesError, match="at least 2"):
    eval_cli.run_eval(_args(metric="fid", real=data["real"], fake=one, weights=data["weights"]))
  with pytest.raises(TooFewSamplesError, match="--kid-subset-size 1000"):
    eval_cli.run_eval(
      _args(metric="kid", real=data["real"], fake=data["fake"], weights=data["weights"])
    )
  with pytest.raises(TooFewSamplesError, match="--is-splits 10"):
    eval_cli.run_eval(_args(metric="is", fake=data["fake"], weights=data["weights"]))
  with pytest.raises(torch_state_dict.MissingWeightsError, match="missing.pth"):
    eval_cli.run_eval(
      _args(metric="fid", real=data["real"], fake=data["fake"], weights=tmp_path / "missing.pth")
    )
  with pytest.raises(torch_state_dict.MissingWeightsError, match="--weights is required"):
    eval_cli.run_eval(_args(metric="is", fake=data["fake"], is_splits=2))
  mixed = _write_pngs(
    tmp_path / "mixed",
    [data["real_images"][0], data["real_images"][1, :16]],
    names=["000.png", "001.png"],
  )
  with pytest.raises(image_folder.MixedImageSizesError, match="001.png is 16x32"):
    eval_cli.run_eval(_args(metric="ssim", real=mixed, fake=mixed))
  with pytest.raises(eval_cli.UnpairedImagesError, match="003.png"):
    eval_cli.run_eval(_args(metric="psnr", real=data["real"], fake=data["fake"]))
  for error in (
    image_folder.EmptyFolderError,
    eval_cli.UnknownMetricError,
    TooFewSamplesError,
    torch_state_dict.MissingWeightsError,
    image_folder.MixedImageSizesError,
  ):
    assert issubclass(error, ValueError)


def test_mixed_sizes_stream_through_inception(data, tmp_path):
  # A size change starts a new batch; rows stay in file order.
  images = [data["real_images"][0], data["real_images"][1, :, :24], data["real_images"][2]]
  paths = sorted(_write_pngs(tmp_path / "mixed", images).iterdir())
  batches = list(image_folder.iterate_batches(paths, 4))
  assert [(b.shape, n) for b, n in batches] == [
    ((4, 32, 32, 3), 1),
    ((4, 32, 24, 3), 1),
    ((4, 32, 32, 3), 1),
  ]
  np.testing.assert_array_equal(batches[1][0][0], images[1])
  assert not batches[1][0][1:].any()


def test_readme_eval_commands(data, tmp_path, monkeypatch, capsys):
  """The README's fid and ssim commands, run as written on small PNG folders."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(2)
  fake = data["fake_images"]
  real = np.clip(fake.astype(int) + rng.integers(-40, 40, size=fake.shape), 0, 255).astype(np.uint8)
  _write_pngs(tmp_path / "real", real)
  _write_pngs(tmp_path / "samples", fake)
  state = {k: torch.from_numpy(v) for k, v in safe_load_file(str(data["weights"])).items()}
  torch.save(state, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
  monkeypatch.chdir(tmp_path)
  commands = readme_argv("jaxgen eval --metric fid") + readme_argv("jaxgen eval --metric ssim")
  assert len(commands) == 2
  for argv in commands:
    # The batch the other tests compile Inception for; no progress bar in the log.
    assert (
      cli.main(
        ["--compilation-cache", ""] + argv[1:] + ["--batch-size", str(BATCH), "--no-progress"]
      )
      == 0
    ), argv
    result = json.loads(capsys.readouterr().out)
    assert result["metric"] == argv[3] and np.isfinite(result["value"])
  assert json.loads((tmp_path / "fid.json").read_text())["num_real"] == 4
