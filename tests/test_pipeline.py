"""ArrayIterator: deterministic, resumable, disjoint across processes, length-bucketed."""

import numpy as np
import pytest

from jaxgen.data.pipeline import ArrayIterator, LengthBuckets


def _arrays(n=10):
  return dict(x=np.arange(n), y=np.arange(n) * 10)


def test_epoch_covers_every_example_once():
  it = ArrayIterator(_arrays(12), batch_size=4, seed=3)
  seen = np.concatenate([next(it)["x"] for _ in range(3)])
  np.testing.assert_array_equal(np.sort(seen), np.arange(12))


def test_keys_stay_aligned():
  batch = next(ArrayIterator(_arrays(), batch_size=5, seed=0))
  np.testing.assert_array_equal(batch["y"], batch["x"] * 10)


def test_resume_from_state_gives_the_same_batches():
  it = ArrayIterator(_arrays(), batch_size=3, seed=1)
  for _ in range(4):  # crosses an epoch boundary (10 // 3 = 3 batches per epoch)
    next(it)
  state = it.get_state()
  expected = [next(it)["x"] for _ in range(5)]
  resumed = ArrayIterator(_arrays(), batch_size=3, seed=1)
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)["x"], want)


def test_epochs_are_reshuffled():
  it = ArrayIterator(_arrays(100), 50, seed=0)
  first = next(it)["x"]
  next(it)
  second = next(it)["x"]  # first batch of epoch 1
  assert set(first) != set(second)


def test_processes_together_hold_the_single_process_batch_in_order():
  a = ArrayIterator(_arrays(), batch_size=4, seed=2, process_index=0, process_count=2)
  b = ArrayIterator(_arrays(), batch_size=4, seed=2, process_index=1, process_count=2)
  whole = ArrayIterator(_arrays(), batch_size=4, seed=2)
  for _ in range(3):
    xa, xb, xw = next(a)["x"], next(b)["x"], next(whole)["x"]
    # Row i of the global batch is the same example however many processes
    # feed it, so per-example noise keys see the same data.
    np.testing.assert_array_equal(np.concatenate([xa, xb]), xw)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(arrays={}, batch_size=2), "at least one array"),
    (dict(arrays=dict(x=np.zeros(3), y=np.zeros(4)), batch_size=2), "same length"),
    (dict(arrays=dict(x=np.zeros(3)), batch_size=4), "exceeds"),
    (dict(arrays=dict(x=np.zeros(8)), batch_size=3, process_count=2), "multiple"),
  ],
)
def test_bad_arguments_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ArrayIterator(**kwargs)


def _padded(n=60, width=12, seed=0):
  """Sequences of random lengths 1..width, padded with -1 (row i holds i)."""
  lengths = np.random.default_rng(seed).integers(1, width + 1, n)
  seq = np.where(np.arange(width)[None] < lengths[:, None], np.arange(n)[:, None], -1)
  return dict(seq=seq, id=np.arange(n)), lengths


def test_buckets_batch_similar_lengths_cropped_to_their_bound():
  arrays, lengths = _padded()
  buckets = [LengthBuckets(lengths, (4, 8, 12), ("seq",))]
  it = ArrayIterator(arrays, batch_size=5, seed=0, buckets=buckets)
  bound_of = np.array([4, 8, 12])[np.searchsorted([4, 8, 12], lengths)]
  seen, widths = [], set()
  for _ in range(it.steps_per_epoch):
    batch = next(it)
    width = batch["seq"].shape[1]
    widths.add(width)
    # Every example's bound is the batch's width, and only padding was cut.
    np.testing.assert_array_equal(bound_of[batch["id"]], width)
    np.testing.assert_array_equal((batch["seq"] >= 0).sum(1), lengths[batch["id"]])
    seen.extend(batch["id"])
  assert len(seen) == len(set(seen)) == it.steps_per_epoch * 5
  # Each bucket drops fewer than one batch.
  assert len(seen) > len(lengths) - 3 * 5
  assert widths == {4, 8, 12} == {s["seq"][0] for s in it.batch_shapes()}
  assert next(it)["id"].tolist() != []  # the next epoch starts


def test_two_bucketings_combine_and_resume_exactly():
  arrays, lengths = _padded(80)
  words = np.random.default_rng(1).integers(1, 7, 80)
  arrays["words"] = np.where(np.arange(6)[None] < words[:, None], 1, 0)
  buckets = [LengthBuckets(lengths, (6, 12), ("seq",)), LengthBuckets(words, (3, 6), ("words",))]
  it = ArrayIterator(arrays, batch_size=4, seed=5, buckets=buckets)
  shapes = {(s["seq"][0], s["words"][0]) for s in it.batch_shapes()}
  assert shapes == {(6, 3), (6, 6), (12, 3), (12, 6)}
  for _ in range(it.steps_per_epoch + 2):  # crosses an epoch boundary
    batch = next(it)
    assert (batch["seq"].shape[1], batch["words"].shape[1]) in shapes
  state = it.get_state()
  expected = [next(it)["id"] for _ in range(6)]
  resumed = ArrayIterator(arrays, batch_size=4, seed=5, buckets=buckets)
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)["id"], want)


def test_bucketed_processes_together_hold_the_single_process_batch():
  arrays, lengths = _padded()
  buckets = [LengthBuckets(lengths, (4, 8, 12), ("seq",))]
  kwargs = dict(batch_size=4, seed=2, buckets=buckets)
  a = ArrayIterator(arrays, process_index=0, process_count=2, **kwargs)
  b = ArrayIterator(arrays, process_index=1, process_count=2, **kwargs)
  whole = ArrayIterator(arrays, **kwargs)
  for _ in range(8):
    xa, xb, xw = next(a), next(b), next(whole)
    assert xa["seq"].shape[1] == xb["seq"].shape[1] == xw["seq"].shape[1]
    np.testing.assert_array_equal(np.concatenate([xa["id"], xb["id"]]), xw["id"])


@pytest.mark.parametrize(
  "bounds, keys, match",
  [
    ((8, 4, 12), ("seq",), "ascending"),
    ((4, 8), ("seq",), "hold every example"),
    ((4, 16), ("seq",), "at most"),
    ((4, 12), ("tokens",), "keys"),
    ((4, 12), ("id",), "length axis"),
  ],
)
def test_bad_buckets_are_named(bounds, keys, match):
  arrays, lengths = _padded()
  with pytest.raises(ValueError, match=match):
    ArrayIterator(arrays, batch_size=4, buckets=[LengthBuckets(lengths, bounds, keys)])


def test_a_batch_larger_than_every_bucket_is_named():
  arrays, lengths = _padded(12)
  with pytest.raises(ValueError, match="every bucket"):
    ArrayIterator(arrays, batch_size=12, buckets=[LengthBuckets(lengths, (4, 8, 12), ("seq",))])
