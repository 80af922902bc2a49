"""`jaxgen train` as separate processes: multi-process runs, resharding, SIGKILL.

Each run is a real `python -m jaxgen.cli train` subprocess on simulated CPU
devices; runs are compared through the params in their final checkpoints.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
from sharded_steps import TEN_STEPS
from tiny_configs import CONFIGS, ONE_LEVEL_TEXT_TO_IMAGE

from jaxgen.tasks.registry import get_task
from jaxgen.training.checkpoint import Checkpointer, checkpoint_dir
from jaxgen.training.run_directory import load_run_config
from jaxgen.training.trainer import abstract_train_state

CONFIG = os.path.join(CONFIGS, "text_to_image_shapes.py")


def _env(num_devices: int) -> dict:
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={num_devices}",
  )
  env["PYTHONPATH"] = os.pathsep.join(
    [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
  )
  return env


def _command(workdir: str, overrides, *flags: str) -> list[str]:
  # No cache of the CLI's own: the session's (tests/conftest.py) comes through the
  # environment, so a run reuses what an earlier run on the same devices compiled.
  return (
    [
      sys.executable,
      "-m",
      "jaxgen.cli",
      "--log-level",
      "warning",
      "--compilation-cache",
      "",
      "train",
      "--config",
      CONFIG,
      "--workdir",
      workdir,
    ]
    + list(flags)
    + list(overrides)
  )


def _run(workdir, overrides, num_devices=8):
  result = subprocess.run(
    _command(workdir, overrides), env=_env(num_devices), capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 0, result.stderr[-3000:]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _final_state(workdir: str):
  """The newest checkpoint's state, restored onto this (single-device) process."""
  config = load_run_config(workdir)
  task = get_task(config)
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    state, _, step = checkpointer.restore(
      abstract_train_state(task, config, task.abstract_batch(1))
    )
  finally:
    checkpointer.close()
  return step, jax.device_get(state)


def _max_difference(a, b) -> float:
  return max(
    float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def test_two_processes_and_a_resharded_resume_match_one_process(tmp_path):
  # Both comparisons share the one reference run.
  reference = str(tmp_path / "one_process")  # 10 steps, one process, FSDP mesh (2, 4, 1)
  _run(reference, TEN_STEPS + ["mesh_shape=(2, 4, 1)"])
  ref_step, ref_state = _final_state(reference)
  assert ref_step == 10

  two_processes = str(tmp_path / "two_processes")
  port = _free_port()
  processes = [
    subprocess.Popen(
      _command(
        two_processes,
        TEN_STEPS + ["mesh_shape=(2, 4, 1)"],
        "--coordinator",
        f"127.0.0.1:{port}",
        "--num-processes",
        "2",
        "--process-id",
        str(i),
      ),
      env=_env(4),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  for p in processes:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  step, state = _final_state(two_processes)
  assert step == 10
  assert _max_difference(state.params, ref_state.params) <= 1e-5
  assert _max_difference(state.opt_state, ref_state.opt_state) <= 1e-5

  # Steps 1-5 of the reference on the FSDP mesh, then 6-10 on a pure
  # data-parallel mesh: the restore reshards every array onto the new layout.
  resharded = str(tmp_path / "reshard")
  shutil.copytree(reference, resharded)
  shutil.rmtree(os.path.join(checkpoint_dir(resharded), "10"))
  _run(resharded, TEN_STEPS + ["mesh_shape=(8, 1, 1)"])
  step, state = _final_state(resharded)
  assert step == 10
  assert _max_difference(state.params, ref_state.params) <= 1e-5


def test_sigkill_then_rerun_is_bit_identical(tmp_path):
  # Long enough that the kill lands mid-run: checkpoints every 20 steps, and
  # 80 steps still to run when the first one appears.
  num_steps = 100
  overrides = ONE_LEVEL_TEXT_TO_IMAGE + [
    f"train.num_steps={num_steps}",
    "train.log_every=50",
    "checkpoint.save_every=20",
    "checkpoint.keep=2",
  ]
  uninterrupted = str(tmp_path / "uninterrupted")
  _run(uninterrupted, overrides, 1)

  killed = str(tmp_path / "killed")
  process = subprocess.Popen(
    _command(killed, overrides), env=_env(1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and process.poll() is None:
    steps = os.listdir(checkpoint_dir(killed)) if os.path.isdir(checkpoint_dir(killed)) else []
    if any(s.isdigit() and int(s) >= 20 for s in steps):
      break
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  step_at_kill, _ = _final_state(killed)
  assert step_at_kill < num_steps

  _run(killed, overrides, 1)  # the same command again
  step, state = _final_state(killed)
  ref_step, ref_state = _final_state(uninterrupted)
  assert step == ref_step == num_steps
  for name in ("params", "ema_params", "opt_state", "rng"):
    leaves = zip(jax.tree.leaves(getattr(state, name)), jax.tree.leaves(getattr(ref_state, name)))
    assert all(np.array_equal(a, b) for a, b in leaves), name
