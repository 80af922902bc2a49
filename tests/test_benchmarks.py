"""Smoke tests of benchmarks/: each benchmark's `main` on its tiniest settings.

The tables must have their rows and columns with positive, finite numbers,
and what the benchmarks claim must hold: both frameworks train the same
weights on the same batch (equal first losses), the three DDIM samplers end
on the same latents as diffusers, FSDP splits the SD 1.5 U-Net's
parameters and AdamW state 8 ways, and length buckets shorten the sequences
the motion denoiser runs on.
"""

import importlib.util
import math
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def load_benchmark(name: str):
  path = os.path.join(BENCHMARKS, f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(autouse=True)
def keep_torch_threads():
  # The benchmarks size torch's thread pool; leave it as other tests found it.
  threads = torch.get_num_threads()
  yield
  torch.set_num_threads(threads)


def check_table(rows, columns, num_rows, numeric):
  assert len(rows) == num_rows
  for row in rows:
    assert list(row) == list(columns)
    for column in numeric:
      assert math.isfinite(row[column]) and row[column] > 0, (row, column)


def test_train_step_throughput(capsys):
  bench = load_benchmark("train_step_throughput")
  rows = bench.main(
    [
      "--unet",
      "tiny",
      "--size",
      "8",
      "--batch",
      "2",
      "--context-length",
      "4",
      "--steps",
      "2",
      "--warmup",
      "1",
    ]
  )
  check_table(rows, bench.COLUMNS, 2, numeric=[c for c in bench.COLUMNS if c != "framework"])
  assert [r["framework"] for r in rows] == [bench.TORCH, bench.JAX]
  # Same converted weights, same batch, same loss: the first losses agree.
  assert rows[0]["loss step 1"] == pytest.approx(rows[1]["loss step 1"], abs=1e-4)
  assert rows[0]["ratio (median)"] == 1.0
  assert "| framework | samples/s |" in capsys.readouterr().out


def test_ddim_sampling(capsys):
  bench = load_benchmark("ddim_sampling")
  rows = bench.main(
    ["--unet", "tiny", "--size", "8", "--steps", "3", "--context-length", "4", "--repeats", "1"]
  )
  timings = ["s/image (median)", "s/image (min)", "CPU s/image", "ms/step", "speed-up vs diffusers"]
  check_table(rows, bench.COLUMNS, 3, numeric=timings)
  assert [r["sampler"] for r in rows] == [bench.SCAN, bench.LOOP, bench.DIFFUSERS]
  for row in rows:
    assert row["max abs diff vs diffusers"] < 1e-4, row
    assert row["compile s"] >= 0
  assert "| sampler |" in capsys.readouterr().out


def test_memory_per_device_sd15_fsdp(capsys):
  bench = load_benchmark("memory_per_device")
  rows = bench.main([])  # SD 1.5 U-Net, shapes only, in an 8-device child process.
  text_columns = ("mesh (data,fsdp,tensor)", "sharded leaves")
  check_table(
    rows,
    bench.COLUMNS,
    len(bench.MESHES),
    numeric=[c for c in bench.COLUMNS if c not in text_columns],
  )
  by_mesh = {row["mesh (data,fsdp,tensor)"]: row for row in rows}
  assert list(by_mesh) == ["(8,1,1)", "(1,8,1)", "(2,4,1)", "(2,2,2)"]
  # 859,520,964 float32 params; AdamW keeps two more copies (plus scalar counters).
  params_mib = 859_520_964 * 4 / 2**20
  for row in rows:
    assert row["params MiB"] == pytest.approx(params_mib)
    assert row["params+opt MiB"] == pytest.approx(3 * params_mib, rel=1e-6)
  assert by_mesh["(8,1,1)"]["ratio to total/8"] == pytest.approx(8.0)  # Data parallel: replicated.
  # The criterion: FSDP over 8 devices holds <= 1.05 x total / 8 per device.
  assert by_mesh["(1,8,1)"]["ratio to total/8"] <= 1.05, capsys.readouterr().out
  assert by_mesh["(2,4,1)"]["ratio to total/8"] < by_mesh["(8,1,1)"]["ratio to total/8"]


def test_motion_length_buckets(capsys):
  bench = load_benchmark("motion_length_buckets")
  tiny = [
    "data.max_examples=48",
    "mdm.latent_dim=16",
    "mdm.ff_size=32",
    "mdm.num_layers=1",
    "mdm.num_heads=2",
    "text.width=16",
    "text.num_layers=1",
    "text.num_heads=2",
    "train.batch_size=4",
    "data.length_buckets.frames=(96, 196)",
  ]
  rows = bench.main(
    [arg for o in tiny for arg in ("--override", o)] + ["--steps", "2", "--rounds", "1"]
  )
  check_table(rows, bench.COLUMNS, 2, numeric=[c for c in bench.COLUMNS if c != "batches"])
  padded, bucketed = rows
  assert (padded["batches"], bucketed["batches"]) == (bench.PADDED, bench.BUCKETED)
  assert padded["batch shapes"] == 1 and bucketed["batch shapes"] >= 2
  # 1 condition + 24 words + 196 / 4 frames when padded; fewer when bucketed.
  assert padded["tokens per example"] == 74
  assert bucketed["tokens per example"] < 74
  assert "| batches |" in capsys.readouterr().out
