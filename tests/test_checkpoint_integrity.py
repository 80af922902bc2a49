"""Verified checkpoints: corrupt steps are skipped, moved aside, and never restored.

One uninterrupted tiny text-to-image run (4 steps, a checkpoint after each)
serves every test; each test corrupts a copy of it. Its config compiles the
same programs as test_training.py's run, so the session's persistent
compilation cache (tests/conftest.py) serves both, and the resumed run here.
"""

import gc
import glob
import logging
import os
import shutil

import jax
import numpy as np
import pytest
import tensorstore as ts

from jaxgen.tasks.registry import get_task
from jaxgen.training.checkpoint import (
  CHECKSUMS_ITEM,
  CheckpointNotFoundError,
  Checkpointer,
  NoGoodCheckpointError,
  _block_sum,
  checkpoint_dir,
  tree_checksums,
)
from jaxgen.training.inference import restore_ema_params
from jaxgen.training.trainer import abstract_train_state, train
from tiny_configs import tiny_text_to_image_config

# A failed restore leaves tensorstore reads that report "Event loop is closed" later, as
# unraisable exceptions (hundreds on a larger model): none may get through.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

OVERRIDES = ("checkpoint.save_every=1", "checkpoint.keep=4")
STATE_FIELDS = ("step", "params", "ema_params", "opt_state", "rng", "skipped_steps")


def config():
  return tiny_text_to_image_config(*OVERRIDES)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  state = train(get_task(config()), config(), workdir)
  assert _steps(workdir) == [1, 2, 3, 4]
  return workdir, jax.device_get(state)


def _steps(workdir: str) -> list[int]:
  checkpointer = Checkpointer(workdir, read_only=True)
  steps = checkpointer.all_steps()
  checkpointer.close()
  return steps


def _copy(run: str, tmp_path) -> str:
  copy = str(tmp_path / "run")
  shutil.copytree(run, copy)
  return copy


def _step_dir(workdir: str, step: int) -> str:
  return os.path.join(checkpoint_dir(workdir), str(step))


def _array_files(workdir: str, step: int) -> list[str]:
  """The files that hold a step's array data (orbax's OCDBT data files)."""
  return glob.glob(os.path.join(_step_dir(workdir, step), "state", "ocdbt.process_*", "d", "*"))


def flip_a_bit(workdir: str, step: int) -> None:
  """One bit flipped in the middle of the step's largest array, where it lies on disk.

  The bytes of the array (a compressed zarr chunk) are found through
  tensorstore's view of the OCDBT store, then in the data files. (The middle
  of the largest data *file* would do for big models; for this tiny one it is
  a per-process B-tree node that orbax no longer reads once it has merged
  the processes' trees, and a flip there changes nothing that is restored.)
  """
  store = f"file://{os.path.abspath(_step_dir(workdir, step))}/state/"
  kvstore = ts.KvStore.open({"driver": "ocdbt", "base": store}).result()
  values = [kvstore.read(key).result().value for key in kvstore.list().result()]
  largest = max(values, key=len)
  for path in _array_files(workdir, step):
    data = bytearray(open(path, "rb").read())
    start = data.find(largest)
    if start >= 0:
      data[start + len(largest) // 2] ^= 0x04
      open(path, "wb").write(bytes(data))
      return
  raise AssertionError(f"the largest array of step {step} is in none of its data files")


def zero_a_file(workdir: str, step: int) -> None:
  """The step's largest array file overwritten with zeros (same length)."""
  path = max(_array_files(workdir, step), key=os.path.getsize)
  open(path, "wb").write(bytes(os.path.getsize(path)))


def delete_metadata(workdir: str, step: int) -> None:
  """Orbax's tree metadata of the state (`state/_METADATA`) deleted."""
  os.remove(os.path.join(_step_dir(workdir, step), "state", "_METADATA"))


def zero_every_file(workdir: str, step: int) -> None:
  for path in _array_files(workdir, step):
    open(path, "wb").write(bytes(os.path.getsize(path)))


CORRUPTIONS = {
  "bit_flip": (flip_a_bit, "corrupt (checksum mismatch in "),
  "zeroed_file": (zero_a_file, "unreadable (Exception: Encountered error while reading array"),
  "deleted_metadata": (delete_metadata, "unreadable (ValueError: pytree structure error"),
}


def _template():
  task = get_task(config())
  return abstract_train_state(task, config(), task.abstract_batch(1))


def _restore(workdir: str, *, read_only: bool = True, step=None):
  checkpointer = Checkpointer(workdir, read_only=read_only)
  try:
    state, meta, restored_step = checkpointer.restore(_template(), step)
  finally:
    checkpointer.close()
  return jax.device_get(state), meta, restored_step


def _assert_equal_trees(a, b, name):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b), name
  for x, y in zip(leaves_a, leaves_b):
    assert np.array_equal(np.asarray(x), np.asarray(y)), name


def _warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_corrupt_newest_step_is_skipped_with_one_warning(
  uninterrupted, tmp_path, caplog, capfd, corruption
):
  run, _ = uninterrupted
  corrupt, reason = CORRUPTIONS[corruption]
  broken = _copy(run, tmp_path)
  corrupt(broken, 4)
  capfd.readouterr()
  with caplog.at_level(logging.INFO):
    state, meta, step = _restore(broken)
    # The reads orbax abandoned must not log "Task exception was never retrieved" later,
    # when they are collected (in CI that landed in the next test's log).
    gc.collect()
  out, err = capfd.readouterr()
  assert step == 3
  expected, expected_meta, _ = _restore(run, step=3)
  for name in STATE_FIELDS:
    _assert_equal_trees(getattr(state, name), getattr(expected, name), name)
  assert meta == expected_meta and meta["data_iterator"] == expected_meta["data_iterator"]
  (warning,) = _warnings(caplog)
  assert f"checkpoint step 4 is {reason}" in warning
  assert len(out + err) < 2000 and "Traceback" not in out + err
  # A read-only checkpointer (sampling, evaluation) leaves the run as it is.
  assert os.path.isdir(_step_dir(broken, 4))


def test_resume_past_corrupt_steps_ends_bit_identical(uninterrupted, tmp_path, caplog):
  run, final = uninterrupted
  broken = _copy(run, tmp_path)
  for step, name in ((4, "bit_flip"), (3, "zeroed_file"), (2, "deleted_metadata")):
    CORRUPTIONS[name][0](broken, step)
  with caplog.at_level(logging.WARNING):
    state = jax.device_get(train(get_task(config()), config(), broken))
  bad = [w for w in _warnings(caplog) if "skipped" in w]
  assert len(bad) == 3
  for warning, (step, name) in zip(
    bad, ((4, "bit_flip"), (3, "zeroed_file"), (2, "deleted_metadata"))
  ):
    assert f"checkpoint step {step} is {CORRUPTIONS[name][1]}" in warning
  for name in STATE_FIELDS:
    _assert_equal_trees(getattr(state, name), getattr(final, name), name)
  # The bad steps are kept for inspection, out of orbax's way; the run saved 2, 3, 4 again.
  corrupt = os.path.join(checkpoint_dir(broken), "corrupt")
  assert sorted(os.listdir(corrupt), key=int) == ["2", "3", "4"]
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    restored, _, step = _restore(broken)
  assert step == 4 and not _warnings(caplog)
  assert _steps(broken) == [1, 2, 3, 4]
  _assert_equal_trees(restored.params, final.params, "params")


def test_no_good_step_is_a_named_error_listing_each_reason(uninterrupted, tmp_path):
  run, _ = uninterrupted
  broken = _copy(run, tmp_path)
  for step in (1, 2):
    shutil.rmtree(_step_dir(broken, step))
  flip_a_bit(broken, 4)
  zero_a_file(broken, 3)
  with pytest.raises(NoGoodCheckpointError) as error:
    _restore(broken, read_only=False)
  assert isinstance(error.value, CheckpointNotFoundError)
  assert sorted(error.value.reasons) == [3, 4]
  message = str(error.value)
  assert "step 4: corrupt (checksum mismatch in" in message
  assert "step 3: unreadable (Exception: Encountered error while reading array" in message
  # Nothing is moved when nothing could be restored: the run stays as it was.
  assert sorted(os.listdir(checkpoint_dir(broken))) == ["3", "4"]


def test_sampling_restore_falls_back_quietly(uninterrupted, tmp_path, caplog, capfd):
  run, _ = uninterrupted
  broken = _copy(run, tmp_path)
  zero_every_file(broken, 4)
  task = get_task(config())
  capfd.readouterr()
  with caplog.at_level(logging.WARNING):
    params = restore_ema_params(task, broken)
    gc.collect()  # no "Task exception was never retrieved" from the abandoned reads
  out, err = capfd.readouterr()
  _assert_equal_trees(params, restore_ema_params(task, run, step=3), "ema_params")
  (warning,) = _warnings(caplog)
  assert "step 4" in warning
  assert len(out + err) < 2000 and "Traceback" not in out + err


def test_a_step_saved_before_checksums_restores_unverified(uninterrupted, tmp_path, caplog):
  run, final = uninterrupted
  old = _copy(run, tmp_path)
  for step in (1, 2, 3, 4):
    shutil.rmtree(os.path.join(_step_dir(old, step), CHECKSUMS_ITEM))
  with caplog.at_level(logging.INFO):
    state, _, step = _restore(old)
  assert step == 4 and not _warnings(caplog)
  assert any("no checksums" in r.getMessage() for r in caplog.records)
  _assert_equal_trees(state.params, final.params, "params")


def test_checksums_do_not_depend_on_how_an_array_is_cut():
  x = np.random.default_rng(0).standard_normal((6, 10, 4)).astype(np.float32)
  whole = _block_sum(x, (0, 0, 0), x.shape)
  # Blocks as shardings cut them: along the first axis, along inner axes, in a grid.
  for cuts in (
    ((0, 3, 6), (0, 10), (0, 4)),
    ((0, 6), (0, 5, 10), (0, 2, 4)),
    ((0, 2, 6), (0, 7, 10), (0, 4)),
  ):
    total = 0
    for a, b in zip(cuts[0], cuts[0][1:]):
      for c, d in zip(cuts[1], cuts[1][1:]):
        for e, f in zip(cuts[2], cuts[2][1:]):
          total += _block_sum(x[a:b, c:d, e:f], (a, c, e), x.shape)
    assert total % 2**64 == whole % 2**64, cuts
  flipped = x.copy()
  flipped.view(np.uint32)[5, 9, 3] ^= 1 << 17
  assert _block_sum(flipped, (0, 0, 0), x.shape) != whole
  assert tree_checksums({"x": x}) == tree_checksums({"x": jax.numpy.asarray(x)})


def test_an_abandoned_read_collected_after_the_restore_logs_nothing(caplog):
  """The CI race: asyncio reports an abandoned read's future once it is collected,
  which may be after the restore returned and the loggers were live again."""
  import asyncio

  from jaxgen.training.checkpoint import _quiet_libraries

  with _quiet_libraries():
    pass
  read_error = Exception("Encountered error while reading array index: (slice(0, 16, 1),).")
  other_error = ValueError("a user's own unretrieved error")
  loop = asyncio.new_event_loop()
  with caplog.at_level(logging.ERROR, logger="asyncio"):
    for error in (read_error, other_error):
      future = loop.create_future()
      future.set_exception(error)
      del future
      gc.collect()
  loop.close()
  logged = [r.exc_info[1] for r in caplog.records if r.exc_info]
  assert logged == [other_error]
