"""Sharded training equals single-device training (8 simulated CPU devices)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxgen.training import sharding

TESTS = os.path.dirname(os.path.abspath(__file__))


def sharded_report() -> dict:
  """tests/sharded_steps.py's report, from a process that sees 8 CPU devices."""
  env = dict(
    os.environ,
    XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""),
  )
  out = subprocess.run(
    [sys.executable, os.path.join(TESTS, "sharded_steps.py")],
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
    check=False,
  )
  assert out.returncode == 0, out.stderr[-4000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_three_sharded_steps_equal_the_single_device_run():
  # One test checks every mesh of the one subprocess run.
  report = sharded_report()
  assert np.all(np.isfinite(report["losses"]))
  for mesh in ("(8, 1, 1)", "(2, 4, 1)", "(2, 2, 2)"):
    result = report[mesh]
    assert result["loss_diff"] <= 1e-5, (mesh, result)
    assert result["param_diff"] <= 1e-5, (mesh, result)
    if mesh != "(8, 1, 1)":  # fsdp/tensor axes really split parameters
      assert result["sharded_param_leaves"] > 0, (mesh, result)


def test_dimensions_the_mesh_does_not_divide_stay_whole():
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  fake = type("Mesh", (), {"shape": {"data": 2, "fsdp": 4, "tensor": 2}})()
  assert sharding._fit_to_shape(P(None, "fsdp"), (3, 8), fake) == P(None, "fsdp")
  assert sharding._fit_to_shape(P(None, "fsdp"), (3, 6), fake) == P(None, None)
  assert sharding._fit_to_shape(P(("data", "fsdp")), (16,), fake) == P(("data", "fsdp"))
  assert sharding._fit_to_shape(P(("data", "fsdp")), (12,), fake) == P(None)
  assert mesh.axis_names == sharding.MESH_AXES


def test_mesh_shape_errors_are_named():
  with pytest.raises(ValueError, match="three positive sizes"):
    sharding.make_mesh((1, 1))
  with pytest.raises(ValueError, match="needs 8 devices"):
    sharding.make_mesh((2, 2, 2), jax.devices()[:1])
