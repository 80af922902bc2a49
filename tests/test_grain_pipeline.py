"""The grain input pipeline: order, process shards, resumable state, bad records, sources.

And the trainer on a grain-fed task: a run killed with SIGKILL and resumed ends
with bit-identical params, having read the same batches, as an uninterrupted run.
The task's params record the ids of every batch it trained on, so equal params
prove an equal data order.
"""

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxgen.data import grain_sources
from jaxgen.data.grain_pipeline import ExampleDataset, GrainIterator, GrainStateError, ShardPlan
from jaxgen.data.image_text import ImageTextRecord
from jaxgen.data.image_text_pipeline import ImageTextTransform, image_text_dataset
from jaxgen.training.checkpoint import checkpoint_dir
from jaxgen.training.task import STATE_UPDATES_KEY, Task

RESOLUTION = 8


def _jpeg(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
  return buffer.getvalue()


def write_image_folder(folder: str, num_good: int = 21) -> list[ImageTextRecord]:
  """`num_good` JPEGs of assorted sizes captioned with their id, then three bad records.

  Bad: a truncated JPEG (id num_good), an image without a caption (num_good + 1)
  and a 3×3 image (num_good + 2), below the default minimum of RESOLUTION // 2.
  """
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  records = []
  for i in range(num_good + 3):
    size = (3, 3) if i == num_good + 2 else (RESOLUTION + i % 5, RESOLUTION + i % 3)
    data = _jpeg(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    if i == num_good:
      data = data[: len(data) // 2]
    path = os.path.join(folder, f"{i:03d}.jpg")
    with open(path, "wb") as f:
      f.write(data)
    records.append(ImageTextRecord(path, () if i == num_good + 1 else (str(i),), key=str(i)))
  return records


def caption_id(caption: str) -> dict[str, np.ndarray]:
  """A `tokenize` for tests: the caption is the record's id."""
  return {"id": np.int32(int(caption))}


def id_dataset(num: int) -> ExampleDataset:
  return ExampleDataset(list(range(num)), lambda r, rng: {"id": np.int32(r)})


def _ids(iterator, num_batches: int) -> list[list[int]]:
  return [next(iterator)["id"].tolist() for _ in range(num_batches)]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
  return write_image_folder(str(tmp_path_factory.mktemp("images")))


def test_each_epoch_is_a_fresh_permutation_of_whole_batches():
  plan = ShardPlan(num_records=22, batch_size=4, seed=3)
  assert plan.steps_per_epoch == 5  # the last 2 positions of an epoch are dropped
  batches = _ids(GrainIterator(id_dataset(22), 4, seed=3), 10)
  assert batches == _ids(GrainIterator(id_dataset(22), 4, seed=3), 10)
  epochs = [sum(batches[:5], []), sum(batches[5:], [])]
  for epoch in epochs:
    assert len(set(epoch)) == 20 and set(epoch) <= set(range(22))
  assert epochs[0] != epochs[1]
  assert batches != _ids(GrainIterator(id_dataset(22), 4, seed=4), 10)


def test_processes_together_hold_the_rows_of_one_process(records):
  clean = records[:20]
  dataset = image_text_dataset(
    clean, resolution=RESOLUTION, random_crop=True, random_flip=True, tokenize=caption_id
  )
  one = GrainIterator(dataset, 8, seed=1)
  two = [GrainIterator(dataset, 8, seed=1, process_index=p, process_count=2) for p in range(2)]
  for _ in range(5):  # 2 steps per epoch: crosses two epoch boundaries
    whole = next(one)
    halves = [next(it) for it in two]
    for key in ("id", "image"):  # crops and flips do not depend on the process count
      np.testing.assert_array_equal(whole[key], np.concatenate([h[key] for h in halves]))


def test_state_restored_mid_epoch_continues_identically(records):
  dataset = image_text_dataset(
    records, resolution=RESOLUTION, random_flip=True, tokenize=caption_id
  )
  iterator = GrainIterator(dataset, 4, seed=0)
  _ids(iterator, 3)
  state = json.loads(json.dumps(iterator.get_state()))  # as the checkpoint's JSON meta
  after = [next(iterator) for _ in range(8)]
  resumed = GrainIterator(dataset, 4, seed=0)
  resumed.set_state(state)
  assert resumed.skipped == {k: v for k, v in state["skipped"].items()}
  for a, b in zip(after, [next(resumed) for _ in range(8)]):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["id"], b["id"])
  assert resumed.skipped == iterator.skipped
  with pytest.raises(GrainStateError, match="in-memory arrays"):
    resumed.set_state(dict(epoch=0, position=8))


def test_bad_records_are_counted_skipped_and_warned(records, caplog):
  good = len(records) - 3
  dataset = image_text_dataset(records, resolution=RESOLUTION, tokenize=caption_id)
  iterator = GrainIterator(dataset, 4, seed=0, shuffle=False)
  with caplog.at_level(logging.WARNING):
    ids = sum(_ids(iterator, 6), [])  # one pass over all 24 records
  assert ids == list(range(good)) + [0, 1, 2]  # the holes are filled, shapes kept
  assert iterator.skipped == {"corrupt image": 1, "missing caption": 1, "image too small": 1}
  assert iterator.skipped_records == 3
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 3
  for message, name in zip(warnings, (f"{good:03d}.jpg", f"{good + 1:03d}.jpg", "3×3")):
    assert "skipped a bad record" in message and name in message
  assert next(iterator)["image"].shape == (4, RESOLUTION, RESOLUTION, 3)
  assert iterator.batch_shapes() == [dict(image=(RESOLUTION, RESOLUTION, 3), id=())]


def test_image_transform_resizes_the_shorter_side_then_crops_and_flips(tmp_path):
  pixels = np.random.default_rng(1).integers(0, 256, (12, 20, 3), dtype=np.uint8)
  path = str(tmp_path / "a.png")
  Image.fromarray(pixels).save(path)
  record = ImageTextRecord(path, ("a", "b"))
  resized = np.asarray(Image.fromarray(pixels).resize((10, 6), Image.BILINEAR))
  centre = ImageTextTransform(6, random_caption=False)(record, np.random.default_rng(0))
  np.testing.assert_array_equal(centre["image"], resized[:, 2:8])
  assert centre["caption"] == "a"
  crops = [
    ImageTextTransform(6, random_crop=True, random_flip=True)(record, np.random.default_rng(s))
    for s in range(20)
  ]
  windows = [resized[:, left : left + 6] for left in range(5)]
  for crop in crops:  # every random crop is a window of the resized image, maybe flipped
    assert any(
      np.array_equal(crop["image"], w) or np.array_equal(crop["image"], w[:, ::-1]) for w in windows
    )
  assert len({c["image"].tobytes() for c in crops}) > 3
  assert {c["caption"] for c in crops} == {"a", "b"}


def test_tar_shards_and_array_records_read_back_what_was_written(tmp_path):
  rng = np.random.default_rng(2)
  pixels = [rng.integers(0, 256, (RESOLUTION, RESOLUTION, 3), dtype=np.uint8) for _ in range(3)]
  pngs = []
  for p in pixels:
    buffer = io.BytesIO()
    Image.fromarray(p).save(buffer, format="PNG")
    pngs.append(buffer.getvalue())
  shard = grain_sources.write_tar_shard(
    str(tmp_path / "shard-000000.tar"),
    [("a", pngs[0], "a red cat\n\na blue cat"), ("b", pngs[1], None), ("c", pngs[2], "dog")],
  )
  tar_records = grain_sources.tar_shard_records([shard])
  assert [r.key for r in tar_records] == ["a", "b", "c"] and tar_records[1].caption is None
  transform = ImageTextTransform(RESOLUTION, random_caption=False)
  first = transform(tar_records[0], np.random.default_rng(0))
  np.testing.assert_array_equal(first["image"], pixels[0])  # PNG, same size: exact
  assert first["caption"] == "a red cat"
  iterator = GrainIterator(ExampleDataset(tar_records, transform), 1, shuffle=False)
  assert [next(iterator)["caption"].tolist() for _ in range(2)] == [["a red cat"], ["dog"]]
  assert iterator.skipped == {"missing caption": 1}

  path = grain_sources.write_image_text_array_record(
    str(tmp_path / "data.array_record"),
    [(k, png, caps) for k, png, caps in zip("xyz", pngs, [["one"], ["two", "2"], ["three"]])],
  )
  source = grain_sources.array_record_image_text_records(path)
  assert (
    len(source) == 3 and source[1]["captions"] == ["two", "2"] and source[2]["image"] == pngs[2]
  )
  iterator = GrainIterator(ExampleDataset(source, transform), 3, shuffle=False)
  batch = next(iterator)
  np.testing.assert_array_equal(batch["image"], np.stack(pixels))
  assert batch["caption"].tolist() == ["one", "two", "three"]


def test_workers_yield_what_this_process_does(records):
  def dataset(workers):
    return image_text_dataset(
      records, resolution=RESOLUTION, random_crop=True, tokenize=caption_id, worker_count=workers
    )

  # One worker: each costs a process that imports grain and JAX (seconds on 2 busy cores);
  # benchmarks/input_pipeline.py checks that 2 workers give these batches too.

  here = GrainIterator(dataset(0), 4, seed=5)
  expected = [next(here) for _ in range(6)]
  workers = GrainIterator(dataset(1), 4, seed=5)
  try:
    for want in expected[:3]:
      got = next(workers)
      np.testing.assert_array_equal(got["image"], want["image"])
    state = json.loads(json.dumps(workers.get_state()))
    workers.set_state(state)  # rewinds the workers to the same place
    for want in expected[3:]:
      np.testing.assert_array_equal(next(workers)["id"], want["id"])
    assert workers.skipped == here.skipped
  finally:
    workers.close()
  with pytest.raises(GrainStateError, match="worker_count=1"):
    GrainIterator(dataset(0), 4, seed=5).set_state(state)


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="exceeds the number of records"):
    GrainIterator(id_dataset(3), 4)
  with pytest.raises(ValueError, match="multiple of the process count"):
    GrainIterator(id_dataset(8), 3, process_count=2)
  with pytest.raises(ValueError, match="worker_count"):
    ExampleDataset([1], worker_count=-1)
  with pytest.raises(ValueError, match="resolution"):
    image_text_dataset([], resolution=0)
  with pytest.raises(FileNotFoundError, match="shards"):
    grain_sources.tar_shard_records(["/nonexistent/shard.tar"])


# ---------------------------------------------------------------------------
# The trainer on a grain-fed task, killed and resumed.

NUM_STEPS, BATCH = 8, 4


class SeenIdsTask(Task):
  """A linear model on 8×8 JPEG crops; `params["seen"]` records the ids of each step's batch."""

  def __init__(self, config):
    self.config = config

  def train_dataset(self):
    folder = self.config.data.folder
    records = [
      ImageTextRecord(
        os.path.join(folder, name), (str(int(name[:3])),) if name != "022.jpg" else ()
      )
      for name in sorted(os.listdir(folder))
    ]
    transform = image_text_dataset(
      records, resolution=RESOLUTION, random_crop=True, random_flip=True, tokenize=caption_id
    ).transform
    if os.environ.get("SLOW_DATA"):  # the run to be killed: slow enough to land mid-run
      transform = _Slowed(transform)
    return ExampleDataset(records, transform)

  def abstract_batch(self, batch_size):
    return dict(
      image=jax.ShapeDtypeStruct((batch_size, RESOLUTION, RESOLUTION, 3), jnp.uint8),
      id=jax.ShapeDtypeStruct((batch_size,), jnp.int32),
    )

  def check_batch(self, batch):
    pass

  def init(self, rng, batch):
    return dict(
      w=jax.random.normal(rng, (RESOLUTION * RESOLUTION * 3,)) * 0.01,
      seen=-jnp.ones((NUM_STEPS, BATCH), jnp.float32),
    )

  def loss(self, params, batch, rng):
    x = batch["image"].reshape(batch["image"].shape[0], -1).astype(jnp.float32) / 255
    target = x[:, ::2].mean(axis=1) - x[:, 1::2].mean(axis=1)
    loss = jnp.mean((x @ params["w"] - target) ** 2)
    seen = params["seen"].at[batch["step"]].set(batch["id"].astype(jnp.float32))
    return loss, {STATE_UPDATES_KEY: dict(seen=seen)}


class _Slowed:
  def __init__(self, transform):
    self.transform = transform

  def __call__(self, record, rng):
    time.sleep(0.02)
    return self.transform(record, rng)


def seen_ids_config(folder: str, save_every: int = 2) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      seed=7,
      data=dict(folder=folder),
      train=dict(batch_size=BATCH, num_steps=NUM_STEPS, log_every=4),
      optim=dict(learning_rate=1e-2, warmup_steps=1),
      checkpoint=dict(save_every=save_every, keep=2),
    )
  )


def _train_main(workdir: str, folder: str, start_file: str) -> None:
  """The run to be killed: imports, then waits for `start_file`, then trains slowly."""
  from jaxgen.training.trainer import train  # pylint: disable=g-import-not-at-top

  while not os.path.exists(start_file):
    time.sleep(0.01)
  config = seen_ids_config(folder)
  train(SeenIdsTask(config), config, workdir)


def test_killed_grain_fed_run_resumes_bit_identically(tmp_path):
  from jaxgen.training.trainer import train  # pylint: disable=g-import-not-at-top

  folder = str(tmp_path / "images")
  write_image_folder(folder)
  killed = str(tmp_path / "killed")
  env = dict(os.environ, JAX_PLATFORMS="cpu", SLOW_DATA="1")
  env["PYTHONPATH"] = os.pathsep.join(
    [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env.get("PYTHONPATH", "")]
  )
  process = subprocess.Popen(
    [sys.executable, os.path.abspath(__file__), killed, folder, str(tmp_path / "start")],
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
  )
  # The uninterrupted run, here while the subprocess imports. Saving only at the end
  # changes nothing but time (checkpoint.* may change on resume).
  once = seen_ids_config(folder, save_every=NUM_STEPS)
  reference = jax.device_get(train(SeenIdsTask(once), once, str(tmp_path / "uninterrupted")))
  open(tmp_path / "start", "w").close()

  deadline = time.monotonic() + 120
  while time.monotonic() < deadline and process.poll() is None:
    steps = os.listdir(checkpoint_dir(killed)) if os.path.isdir(checkpoint_dir(killed)) else []
    if any(s.isdigit() and int(s) >= 2 for s in steps):
      break
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  _, err = process.communicate()
  assert process.returncode == -signal.SIGKILL, err.decode()[-3000:]
  done = [int(s) for s in os.listdir(checkpoint_dir(killed)) if s.isdigit()]
  assert 2 <= max(done) < NUM_STEPS

  config = seen_ids_config(folder)
  resumed = jax.device_get(train(SeenIdsTask(config), config, killed))
  assert int(resumed.step) == NUM_STEPS
  for name in ("params", "ema_params", "opt_state", "rng"):
    leaves = zip(jax.tree.leaves(getattr(resumed, name)), jax.tree.leaves(getattr(reference, name)))
    assert all(np.array_equal(a, b) for a, b in leaves), name
  # The data order itself: every step's ids, as the pipeline yields them.
  expected = GrainIterator(SeenIdsTask(config).train_dataset(), BATCH, seed=config.seed)
  np.testing.assert_array_equal(resumed.params["seen"], np.array(_ids(expected, NUM_STEPS)))


if __name__ == "__main__":
  _train_main(*sys.argv[1:])
