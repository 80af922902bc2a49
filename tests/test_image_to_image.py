"""The image-to-image tasks' shared half: `jaxgen sample --input`, the grids, the table's scores.

One tiny pix2pix run (trained once, in-process, by the README's command on
its tiny overrides) serves every test: the translation machinery of
`ImageToImageTask` is the same for every family.
"""

import os

import jax
import numpy as np
import pytest
from PIL import Image
from tiny_configs import CONFIGS, TINY

from jaxgen.cli import main as run_cli
from jaxgen.data import scenes
from jaxgen.tasks.image_to_image import evaluation, translation

RESOLUTION = 32


# Far more steps than 3 CPU seconds allow: `train.max_cpu_minutes` ends the run.
CPU_CAPPED = [
  "train.num_steps=1000000",
  "train.max_cpu_minutes=0.05",
  "checkpoint.save_every=1000000",
]


@pytest.fixture(scope="module")
def pix2pix_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("runs") / "pix2pix")
  argv = ["train", "--config", os.path.join(CONFIGS, "pix2pix_scenes.py"), "--workdir", workdir]
  assert run_cli(argv + TINY["pix2pix_scenes.py"] + CPU_CAPPED) == 0
  return workdir


def test_cpu_time_cap_stops_the_run_and_checkpoints_where_it_stopped(pix2pix_run):
  steps = [int(s) for s in os.listdir(os.path.join(pix2pix_run, "checkpoints")) if s.isdigit()]
  assert len(steps) == 1 and 0 < steps[0] < 1000000


@pytest.fixture(scope="module")
def label_inputs(tmp_path_factory):
  """A folder of three held-out label maps: two colour-coded PNGs and one palette-index PNG."""
  folder = tmp_path_factory.mktemp("inputs")
  labels = scenes.make_scenes("test", 3, resolution=RESOLUTION)["label"][..., 0]
  Image.fromarray(scenes.labels_to_rgb(labels[0])).save(folder / "a.png")
  Image.fromarray(scenes.labels_to_rgb(labels[1])).save(folder / "b.png")
  indexed = Image.fromarray(labels[2], mode="L").convert("P")
  indexed.save(folder / "c.png")
  return folder, labels


def test_sample_translates_a_folder_into_input_output_rows(pix2pix_run, label_inputs, tmp_path):
  folder, _ = label_inputs
  out = tmp_path / "grid.png"
  argv = ["sample", "--checkpoint", pix2pix_run, "--input", str(folder), "--out", str(out)]
  assert run_cli(argv + ["--scale", "1"]) == 0
  grid = np.asarray(Image.open(out))
  # Three rows (one per input) of input | output, each tile 32 px plus its caption.
  assert grid.shape[1] == 2 * RESOLUTION + 3 * 2
  assert grid.shape[0] > 3 * RESOLUTION
  again = tmp_path / "again.png"
  assert run_cli(argv[:-1] + [str(again), "--scale", "1"]) == 0
  np.testing.assert_array_equal(np.asarray(Image.open(again)), grid)  # same seed, same pixels


@pytest.mark.parametrize(
  "picture, message",
  [
    (np.zeros((16, 16, 3), np.uint8), "must be 32x32"),
    (np.zeros((32, 32, 4), np.uint8), "must have 1 or 3 channels"),
    (np.full((32, 32, 3), 7, np.uint8), "label colours must come from LABEL_COLOURS"),
    (np.full((32, 32), 200, np.uint8), "label ids must be in [0, 8)"),
  ],
  ids=["wrong_size", "rgba", "unknown_colour", "unknown_id"],
)
def test_bad_inputs_are_named_before_anything_compiles(
  pix2pix_run, tmp_path, capsys, picture, message
):
  path = tmp_path / "bad.png"
  Image.fromarray(picture).save(path)
  argv = [
    "sample",
    "--checkpoint",
    pix2pix_run,
    "--input",
    str(path),
    "--out",
    str(tmp_path / "o.png"),
  ]
  assert run_cli(argv) == 2
  err = capsys.readouterr().err
  assert "--input bad.png" in err and message in err
  assert not os.path.exists(tmp_path / "o.png")


def test_input_arguments_are_checked(pix2pix_run, tmp_path, capsys):
  out = ["--out", str(tmp_path / "o.png")]
  assert run_cli(["sample", "--checkpoint", pix2pix_run, "--prompt", "a house"] + out) == 2
  assert "translates images; give an image or a folder" in capsys.readouterr().err
  empty = tmp_path / "empty"
  empty.mkdir()
  assert run_cli(["sample", "--checkpoint", pix2pix_run, "--input", str(empty)] + out) == 2
  assert "holds no .png" in capsys.readouterr().err
  missing = str(tmp_path / "missing.png")
  assert run_cli(["sample", "--checkpoint", pix2pix_run, "--input", missing] + out) == 2
  assert "no such file or folder" in capsys.readouterr().err


def test_all_white_sketch_is_refused():
  with pytest.raises(scenes.SourceImageError, match="all white"):
    scenes.check_source("sketch", np.full((32, 32), 255, np.uint8), 32)


def test_reference_rows_bracket_the_scores(pix2pix_run):
  """Ground truth scores (near) 1 on every judge column; another scene's target clearly less."""
  from jaxgen.tasks.registry import load_run  # pylint: disable=g-import-not-at-top

  task, params = load_run(pix2pix_run)
  rows = evaluation.reference_rows(task, num_examples=24)
  truth, shuffled = rows["ground truth"], rows["another scene's target"]
  assert truth["ssim"] == pytest.approx(1.0) and truth["pixel_accuracy"] > 0.9
  for column in ("ssim", "pixel_accuracy", "miou", "edge_f1"):
    assert shuffled[column] < truth[column] - 0.1, column
  scores = evaluation.score_translation(task, params, num_examples=24)
  assert set(scores) == set(evaluation.COLUMNS)
  assert all(np.isfinite(v) for v in scores.values())


def test_translation_grid_shows_labels_in_their_display_colours():
  labels = np.zeros((2, 4, 4, 1), np.uint8)
  labels[1] = scenes.HOUSE
  outputs = np.zeros((2, 4, 4, 3), np.uint8)
  grid = translation.translation_grid("label", labels, outputs, scale=1)
  # Tiles are 4 px with 2 px padding: row 1, column 0 starts at (8, 2).
  np.testing.assert_array_equal(grid[9, 3], scenes.LABEL_COLOURS[scenes.HOUSE])
  np.testing.assert_array_equal(grid[3, 3], scenes.LABEL_COLOURS[scenes.SKY])


def test_readme_table_command(pix2pix_run, capsys):
  """The README's table command, its run directories replaced by the tiny pix2pix run."""
  import importlib.util  # pylint: disable=g-import-not-at-top

  from test_readme import ROOT, readme_argv  # pylint: disable=g-import-not-at-top

  (argv,) = readme_argv("python benchmarks/image_to_image_table.py")
  spec = importlib.util.spec_from_file_location("table", os.path.join(ROOT, argv[1]))
  table = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(table)
  args = [pix2pix_run if a.startswith("runs/") else a for a in argv[2:]][:1]
  text = table.main(args + ["--num-examples", "16"])
  lines = [line for line in text.splitlines() if line.startswith("| ")]
  # Header, ground truth, shuffled pairing and the run: every cell filled.
  assert [line.split(" | ")[0] for line in lines] == [
    "| method",
    "| ground truth",
    "| another scene's target",
    "| pix2pix (pix2pix)",
  ]
  assert all(cell.strip() for line in lines for cell in line.strip("|").split("|"))
  assert "label → image" in capsys.readouterr().out
  # The parameters a translation reads: the generator, not the PatchGAN.
  from jaxgen.tasks.registry import load_run  # pylint: disable=g-import-not-at-top

  _, params = load_run(pix2pix_run)
  header, row = ([c.strip() for c in line.strip("|").split("|")] for line in (lines[0], lines[3]))
  generator = sum(int(np.size(x)) for x in jax.tree.leaves(params["generator"]))
  assert row[header.index("parameters")] == f"{generator:,}"
