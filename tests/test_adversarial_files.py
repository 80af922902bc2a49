"""Adversarial inputs of `jaxgen eval`, `jaxgen convert`, the caption tokenizer and the motion code.

Each row of a table is one case found by trying the commands and the public
API as a careless user would: its input, the named error (or logged warning)
it must now give and a fragment of the message. Add a row for every new case.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from jaxgen.cli import build_parser, eval_folders
from jaxgen.cli import convert as convert_cli
from jaxgen.convert import torch_state_dict
from jaxgen.data import motion
from jaxgen.data.tokenizer import build_caption_tokenizer
from jaxgen.metrics import dance, image_folder, image_quality
from jaxgen.metrics import motion as motion_metrics
from jaxgen.pipelines import stable_diffusion_checkpoint
from jaxgen.training.task import OutputPathError

SIZE = 16  # pixels of the test images


def _eval(*argv: str) -> dict:
  return eval_folders.run_eval(build_parser().parse_args(["eval", *argv, "--no-progress"]))


def _convert(*argv: str) -> dict:
  return convert_cli.run_convert(build_parser().parse_args(["convert", *argv]))


def _save_images(folder, count: int, seed: int) -> str:
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(count):
    pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))
  return str(folder)


def _image_pair(tmp) -> tuple[str, str]:
  return _save_images(tmp / "real", 2, 0), _save_images(tmp / "fake", 2, 1)


def _write(path, content: bytes | str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb" if isinstance(content, bytes) else "w") as f:
    f.write(content)
  return str(path)


def _pipeline_marker(folder) -> str:
  """A folder that looks like a jaxgen pipeline checkpoint (its config file only)."""
  config = {"format": stable_diffusion_checkpoint.CHECKPOINT_FORMAT, "version": 1}
  _write(folder / stable_diffusion_checkpoint.CHECKPOINT_CONFIG_NAME, json.dumps(config))
  return str(folder)


# --- rows: inputs that must raise a named error --------------------------------------------


def _corrupt_png(tmp):
  real, fake = _image_pair(tmp)
  _write(os.path.join(fake, "1.png"), b"not a png")
  _eval("--metric", "psnr", "--real", real, "--fake", fake)


def _truncated_png(tmp):
  real, fake = _image_pair(tmp)
  path = os.path.join(real, "0.png")
  with open(path, "rb") as f:
    head = f.read(60)  # the header survives, the pixels do not
  _write(path, head)
  _eval("--metric", "ssim", "--real", real, "--fake", fake)


def _truncated_safetensors(tmp):
  real, fake = _image_pair(tmp)
  weights = _write(tmp / "inception.safetensors", b"\x40\x00\x00\x00\x00\x00\x00\x00{")
  _eval("--metric", "fid", "--real", real, "--fake", fake, "--weights", weights)


def _pickled_module_pth(tmp):
  torch = pytest.importorskip("torch")
  real, fake = _image_pair(tmp)
  torch.save(torch.nn.Linear(2, 2), tmp / "inception.pth")  # a whole module, not a state dict
  _eval("--metric", "fid", "--real", real, "--fake", fake, "--weights", str(tmp / "inception.pth"))


def _out_under_a_file(tmp):
  real, fake = _image_pair(tmp)
  _write(os.path.join(fake, "1.png"), b"corrupt: must not be reached")  # --out is checked first
  blocker = _write(tmp / "results", "a file, not a folder")
  _eval("--metric", "psnr", "--real", real, "--fake", fake, "--out", f"{blocker}/psnr.json")


def _out_is_a_folder(tmp):
  real, fake = _image_pair(tmp)
  _eval("--metric", "psnr", "--real", real, "--fake", fake, "--out", str(tmp))


def _convert_onto_source(tmp):
  source = _pipeline_marker(tmp / "ckpt")
  _convert("--from", "jaxgen", source, "--to", "diffusers", source, "--overwrite")


def _convert_into_source(tmp):
  source = _pipeline_marker(tmp / "ckpt")
  _convert("--from", "jaxgen", source, "--to", "diffusers", f"{source}/out", "--overwrite")


def _convert_onto_parent_of_source(tmp):
  source = _pipeline_marker(tmp / "ckpt")
  _convert("--from", "jaxgen", source, "--to", "diffusers", str(tmp), "--overwrite")


def _convert_unreadable_source_overwrite(tmp):
  os.makedirs(tmp / "empty")
  _write(tmp / "out" / "keep.txt", "the old target")
  _convert(
    "--from", "jaxgen", str(tmp / "empty"), "--to", "diffusers", str(tmp / "out"), "--overwrite"
  )


def _pipeline_checkpoint_as_run(tmp):
  stable_diffusion_checkpoint.check_not_pipeline_checkpoint(
    _pipeline_marker(tmp / "ckpt"), "--checkpoint"
  )


def _nan_features(tmp):
  features = np.zeros((60, motion.HUMANML3D.feature_dim), np.float32)
  features[5:8, 10] = np.nan
  motion.features_to_joints(features)


def _no_frames(tmp):
  motion.features_to_joints(np.zeros((0, motion.HUMANML3D.feature_dim), np.float32))


def _nan_mpjpe(tmp):
  joints = np.random.default_rng(0).standard_normal((2, 30, 22, 3))
  pred = joints.copy()
  pred[1, 4, 7] = np.nan
  motion_metrics.mpjpe(pred, joints)


def _nan_beats(tmp):
  joints = np.random.default_rng(0).standard_normal((60, 24, 3))
  joints[10] = np.nan
  dance.motion_beats(joints, fps=60)


@dataclasses.dataclass(frozen=True)
class ErrorRow:
  name: str
  run: Callable[..., None]
  error: type[Exception]
  fragment: str
  survives: tuple[str, ...] = ()  # files under tmp_path that must still exist afterwards


ERROR_ROWS = [
  ErrorRow("eval: a corrupt PNG", _corrupt_png, image_folder.UnreadableImageError, "1.png"),
  ErrorRow("eval: a truncated PNG", _truncated_png, image_folder.UnreadableImageError, "0.png"),
  ErrorRow(
    "eval: a truncated safetensors weights file",
    _truncated_safetensors,
    torch_state_dict.UnreadableWeightsError,
    "inception.safetensors': expected a complete safetensors file",
  ),
  ErrorRow(
    "eval: a pickled module as .pth weights",
    _pickled_module_pth,
    torch_state_dict.UnreadableWeightsError,
    "torch.load(weights_only=True)",
  ),
  ErrorRow(
    "eval: --out under a file", _out_under_a_file, OutputPathError, "is a file, not a directory"
  ),
  ErrorRow("eval: --out is a folder", _out_is_a_folder, OutputPathError, "directory"),
  ErrorRow(
    "convert --overwrite onto its source",
    _convert_onto_source,
    convert_cli.OverlappingFoldersError,
    "is the source folder",
    ("ckpt/stable_diffusion.json",),
  ),
  ErrorRow(
    "convert into a folder inside its source",
    _convert_into_source,
    convert_cli.OverlappingFoldersError,
    "lies inside the source folder",
    ("ckpt/stable_diffusion.json",),
  ),
  ErrorRow(
    "convert --overwrite onto a folder holding its source",
    _convert_onto_parent_of_source,
    convert_cli.OverlappingFoldersError,
    "holds the source folder",
    ("ckpt/stable_diffusion.json",),
  ),
  ErrorRow(
    "convert --overwrite from an unreadable source",
    _convert_unreadable_source_overwrite,
    stable_diffusion_checkpoint.CheckpointError,
    "expected stable_diffusion.json",
    ("out/keep.txt",),
  ),
  ErrorRow(
    "a converted pipeline given as a run (jaxgen sample)",
    _pipeline_checkpoint_as_run,
    stable_diffusion_checkpoint.PipelineCheckpointIsNotARunError,
    "not a `jaxgen train` run directory: load it with",
  ),
  ErrorRow(
    "features_to_joints on NaN frames",
    _nan_features,
    motion.NonFiniteMotionError,
    "features: 3 of 60 frames hold NaN (first ones at index 5, 6, 7)",
  ),
  ErrorRow("features_to_joints on 0 frames", _no_frames, motion.EmptyMotionError, "found 0"),
  ErrorRow(
    "mpjpe with NaN",
    _nan_mpjpe,
    motion.NonFiniteMotionError,
    "pred_joints: 1 of 60 frames hold NaN (first ones at index (1, 4))",
  ),
  ErrorRow(
    "motion_beats on NaN joints", _nan_beats, motion.NonFiniteMotionError, "joints: 1 of 60 frames"
  ),
]


@pytest.mark.parametrize("row", ERROR_ROWS, ids=[row.name for row in ERROR_ROWS])
def test_named_error(row, tmp_path):
  with pytest.raises(row.error) as raised:
    row.run(tmp_path)
  assert isinstance(raised.value, ValueError)  # `jaxgen` prints ValueErrors as one line, rc 2
  assert row.fragment in str(raised.value)
  for path in row.survives:
    assert os.path.exists(tmp_path / path), path
  assert not glob.glob(str(tmp_path / "**" / ".*converting-*"), recursive=True)


# --- rows: inputs that work but must log a warning ------------------------------------------


@dataclasses.dataclass(frozen=True)
class WarningRow:
  name: str
  captions: tuple[str, ...]
  fragment: str


WARNING_ROWS = [
  WarningRow(
    "a 10,000-character prompt",
    ("a red circle " * 770, "a red circle"),
    "1 of 2 captions were cut to their first 10 words (2300 words dropped)",
  ),
  WarningRow(
    "an emoji and non-ASCII prompt",
    ("🎉 日本語 été",),
    "3 words in 1 of 1 captions are not in the tokenizer's vocabulary and became [UNK] "
    "(e.g. '🎉', '日本語', 'été')",
  ),
]


@pytest.mark.parametrize("row", WARNING_ROWS, ids=[row.name for row in WARNING_ROWS])
def test_logged_warning(row, caplog):
  tokenizer = build_caption_tokenizer()
  with caplog.at_level(logging.WARNING, logger="jaxgen.data.tokenizer"):
    tokenizer.encode(list(row.captions), max_length=12)
  assert [r.levelno for r in caplog.records] == [logging.WARNING]
  assert row.fragment in caplog.text


def test_tokenizer_in_vocabulary_prompt_logs_nothing(caplog):
  with caplog.at_level(logging.WARNING, logger="jaxgen.data.tokenizer"):
    build_caption_tokenizer().encode(["a red circle"], max_length=12)
  assert not caplog.records


# --- cases that must now compute the right value -----------------------------------------


def test_sixteen_bit_images_keep_their_precision(tmp_path):
  rng = np.random.default_rng(0)
  real, fake = (rng.integers(0, 65536, (SIZE, SIZE), dtype=np.uint16) for _ in range(2))
  for name, pixels in (("real", real), ("fake", fake)):
    os.makedirs(tmp_path / name)
    Image.fromarray(pixels).save(tmp_path / name / "0.png")
  assert Image.open(tmp_path / "real" / "0.png").mode.startswith("I;16")
  mse = np.mean((real.astype(np.float64) - fake) ** 2)
  expected = 10 * np.log10(65535.0**2 / mse)  # the same in any data range
  result = _eval(
    "--metric", "psnr", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake")
  )
  assert result["value"] == pytest.approx(expected, abs=1e-3)
  # uint8 readers (FID, CLIP score) scale 16-bit values instead of clipping them at 255.
  eight_bit = image_folder.load_image(tmp_path / "real" / "0.png")
  np.testing.assert_array_equal(eight_bit[..., 0], np.round(real * (255 / 65535)).astype(np.uint8))


def _write_rgb16_png(path, pixels: np.ndarray) -> None:
  """A 16-bit RGB PNG (Pillow writes none): IHDR, one unfiltered IDAT, IEND."""
  height, width, _ = pixels.shape
  rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header))
    f.write(chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_sixteen_bit_colour_pngs_are_read_at_eight_bits_with_a_warning(tmp_path, caplog):
  pixels = np.random.default_rng(0).integers(0, 65536, (4, 4, 3), dtype=np.uint16)
  _write_rgb16_png(tmp_path / "deep.png", pixels)
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "plain.png")
  paths = sorted(tmp_path.glob("*.png"))
  with caplog.at_level(logging.WARNING, logger="jaxgen.metrics.image_folder"):
    assert image_folder.warn_reduced_precision(paths, name="--real") == 1
  assert "--real: 1 of 2 images are 16-bit colour PNGs" in caplog.text
  np.testing.assert_array_equal(image_folder.load_image(tmp_path / "deep.png"), pixels >> 8)


def test_ssim_batches_by_memory(tmp_path, caplog):
  # 50 pairs of 4000x4000 images asked for 76 GB; the batch is now what fits in the budget.
  assert image_quality.batch_size_for_memory("ssim", (4000, 4000, 3), 4e9, 50) == 1
  assert image_quality.batch_size_for_memory("ssim", (256, 256, 3), 4e9, 50) == 50
  with caplog.at_level(logging.WARNING, logger="jaxgen.metrics.image_quality"):
    assert image_quality.batch_size_for_memory("ssim", (4000, 4000, 3), 1e9, 50) == 1
  assert "more than the 1.0 GB budget" in caplog.text
  real, fake = _save_images(tmp_path / "real", 3, 0), _save_images(tmp_path / "fake", 3, 1)
  memory_gb = 2.5 * 4 * image_quality.PEAK_FLOATS_PER_VALUE["ssim"] * SIZE * SIZE * 3 / 1e9
  with caplog.at_level(logging.INFO, logger="jaxgen.cli.eval_folders"):
    small = _eval("--metric", "ssim", "--real", real, "--fake", fake, "--memory-gb", str(memory_gb))
  assert "ssim: 2 image pairs per call" in caplog.text
  whole = _eval("--metric", "ssim", "--real", real, "--fake", fake)
  assert small["num_pairs"] == whole["num_pairs"] == 3
  assert small["value"] == pytest.approx(whole["value"], abs=1e-6)


def test_convert_replaces_the_target_only_after_a_complete_write(tmp_path):
  target = tmp_path / "out"
  _write(target / "old.txt", "old")

  def fail(folder):
    _write(os.path.join(folder, "half.txt"), "half written")
    raise RuntimeError("disk full")

  with pytest.raises(RuntimeError, match="disk full"):
    convert_cli.write_replacing(str(target), fail)
  assert os.listdir(target) == ["old.txt"]
  convert_cli.write_replacing(
    str(target), lambda folder: _write(os.path.join(folder, "new.txt"), "new")
  )
  assert os.listdir(target) == ["new.txt"]
  assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging or replaced copies left


def test_a_training_preview_draws_non_finite_motions_with_a_warning(caplog):
  # features_to_joints refuses NaN; a preview of a diverging model must not stop training.
  from jaxgen.data import motion_formats
  from jaxgen.tasks.motion.motion_task import motion_preview

  fmt = motion_formats.HUMANML3D
  features = np.zeros((2, 12, fmt.feature_dim), np.float32)
  features[1, 3] = np.nan
  with caplog.at_level("WARNING"):
    picture = motion_preview(features, np.array([12, 12]), ["a", "b"], fmt)
  assert picture.dtype == np.uint8 and picture.ndim == 3
  assert "1 of 2 motions hold NaN or inf" in caplog.text
