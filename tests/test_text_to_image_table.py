"""The text-to-image comparison table: its arithmetic, and the benchmark on a tiny trained run."""

import json
import os
import sys

import jax
import numpy as np
import pytest

from jaxgen.data import shapes
from jaxgen.tasks.image import caption_table
from jaxgen.tasks.image.text_to_image import TextToImageTask
from jaxgen.training import trainer
from tiny_configs import ONE_LEVEL_TEXT_TO_IMAGE, TINY_TEXT_TO_IMAGE, tiny_text_to_image_config

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import text_to_image_table  # noqa: E402  pylint: disable=g-import-not-at-top

RESOLUTION = 32


@pytest.fixture(scope="module")
def held_out():
  return shapes.make_split("test", 24, resolution=RESOLUTION, seed=1)


def oracle(held_out):
  """A generator that returns each caption's held-out image: the judge's ceiling, no diversity."""
  by_caption = {str(c): im for c, im in zip(held_out["caption"], held_out["image"])}
  return lambda captions, rng: np.stack([by_caption[c] for c in captions])


def test_ground_truth_and_oracle_agree_and_shuffling_the_captions_costs_accuracy(held_out):
  captions = [str(c) for c in held_out["caption"]]
  row, images = caption_table.score_method(
    "oracle", oracle(held_out), captions, jax.random.PRNGKey(0), diversity_captions=4
  )
  truth, shuffled = caption_table.reference_rows(held_out["image"], captions, ("oracle", images))
  assert row.accuracy == truth.accuracy and truth.accuracy["all"] > 0.9
  assert shuffled.method == "oracle, shuffled captions"
  assert shuffled.accuracy["all"] < truth.accuracy["all"] - 0.5
  # The same image for every draw of a caption: one distinct sample, no distance.
  assert row.distinct == 1.0 and row.pairwise_l1 == 0.0
  assert row.seconds_per_image >= 0


def test_diversity_counts_samples_that_differ_beyond_the_threshold():
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (3, 1, 8, 8, 3), dtype=np.uint8)
  noise = rng.integers(0, 256, (3, 3, 8, 8, 3), dtype=np.uint8)
  assert caption_table.diversity(np.concatenate([base, noise], 1))[0] == 4.0
  # One pixel value off by 1 everywhere: below the threshold, so one distinct sample each.
  near = np.concatenate([base, np.clip(base.astype(int) + 1, 0, 255).astype(np.uint8)], 1)
  distinct, l1 = caption_table.diversity(near)
  assert distinct == 1.0 and 0 < l1 < caption_table.DISTINCT_THRESHOLD
  # Two draws alike, the third different: two distinct.
  mixed = np.concatenate([base, base, 255 - base], 1)
  assert caption_table.diversity(mixed)[0] == 2.0


def test_bad_input_is_named(held_out):
  captions = [str(c) for c in held_out["caption"]]
  with pytest.raises(caption_table.CaptionTableError, match="at least 2 captions"):
    caption_table.shuffled_pairing(1)
  with pytest.raises(caption_table.CaptionTableError, match=r"k >= 2"):
    caption_table.diversity(held_out["image"][:, None])
  floats = lambda caps, rng: np.zeros((len(caps), 8, 8, 3), np.float32)
  with pytest.raises(caption_table.CaptionTableError, match="broken: expected 24 uint8 images"):
    caption_table.score_method("broken", floats, captions, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("t2i_table") / "run")
  config = tiny_text_to_image_config(*ONE_LEVEL_TEXT_TO_IMAGE[len(TINY_TEXT_TO_IMAGE) :])
  trainer.train(TextToImageTask(config), config, workdir)
  return workdir


def test_benchmark_scores_one_run_under_two_labels_and_writes_table_and_grid(tiny_run, tmp_path):
  out = str(tmp_path / "table.json")
  argv = ["--run", f"two-steps={tiny_run}", "--run", f"one-step={tiny_run}"]
  argv += ["--option", "one-step:num_steps=1", "--num-examples", "12", "--batch-size", "8"]
  argv += ["--diversity-captions", "2", "--samples-per-caption", "2"]
  rows = text_to_image_table.main(argv + ["--out", out, "--grid", str(tmp_path / "grid.png")])
  names = [r["method"] for r in rows]
  assert names == ["ground truth", "two-steps", "one-step", "two-steps, shuffled captions"]
  assert json.load(open(out)) == json.loads(json.dumps(rows))
  assert os.path.isfile(str(tmp_path / "table.md")) and os.path.isfile(str(tmp_path / "grid.png"))
  one, two = rows[2], rows[1]
  assert one["parameters"] == two["parameters"] > 0 and one["train_steps"] == 4
  assert one["seconds_per_image"] > 0
  # Different sampling options are different methods: one and two denoising steps differ.
  assert one["pairwise_l1"] != two["pairwise_l1"]
  with pytest.raises(text_to_image_table.TableArgumentError, match="no --run is labelled"):
    text_to_image_table.main(argv[:2] + ["--option", "other:num_steps=1"])
  with pytest.raises(text_to_image_table.TableArgumentError, match="needs --clip-run"):
    text_to_image_table.main(argv[:2] + ["--option", "two-steps:rerank=4", "--num-examples", "8"])
