"""Parameter + optimizer bytes per device of the SD 1.5 U-Net on (data, fsdp, tensor) meshes.

Nothing is allocated: the parameter and AdamW-state shapes come from
`jax.eval_shape`, their shardings from jaxgen's logical-axis rules
(`jaxgen.training.sharding.param_shardings` / `opt_state_shardings`, exactly
what the trainer jits with), and each leaf's bytes on a device from
`NamedSharding.shard_shape`. The meshes live on 8 simulated CPU devices, so
the computation runs in a child process started with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (the device count is fixed
when JAX starts).

"ratio" is max bytes on a device / (total / 8): 1.0 is a perfect 8-way split,
8.0 full replication.

Command:
  python benchmarks/memory_per_device.py                 # SD 1.5 U-Net (859.5M params)
  python benchmarks/memory_per_device.py --unet sd_shaped
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

NUM_DEVICES = 8
MESHES = ((8, 1, 1), (1, 8, 1), (2, 4, 1), (2, 2, 2))
# AdamW (two float32 moments per parameter) with global-norm clipping, as jaxgen trains.
OPTIM = dict(
  learning_rate=1e-4,
  warmup_steps=1000,
  weight_decay=1e-2,
  b1=0.9,
  b2=0.999,
  eps=1e-8,
  grad_clip_norm=1.0,
)
FSDP_MESH = (1, 8, 1)
COLUMNS = (
  "mesh (data,fsdp,tensor)",
  "params MiB",
  "params+opt MiB",
  "max MiB/device",
  "min MiB/device",
  "ratio to total/8",
  "sharded leaves",
)
MIB = 2**20


def unet_config(name: str):
  """The U-Net config named on the command line: 'sd15' (paper size) or a `_common` preset."""
  from jaxgen.models.unet import UNetConfig  # pylint: disable=g-import-not-at-top

  if name == "sd15":
    from jaxgen.configs.arch import sd15_unet  # pylint: disable=g-import-not-at-top

    return UNetConfig(**sd15_unet.get_config().unet.to_dict())
  import _common  # pylint: disable=g-import-not-at-top

  return _common.unet_config(name, sample_size=32)


def _leaf_bytes(shape_dtype: Any, sharding: Any = None) -> int:
  shape = shape_dtype.shape if sharding is None else sharding.shard_shape(shape_dtype.shape)
  size = 1
  for dim in shape:
    size *= dim
  return size * shape_dtype.dtype.itemsize


def _leaves(tree: Any) -> list[Any]:
  import jax  # pylint: disable=g-import-not-at-top

  return jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))


def mesh_memory(boxed_params: Any, mesh_shape: tuple[int, int, int]) -> dict[str, Any]:
  """Bytes of params and optimizer state, in total and on each device, for one mesh (no allocation).

  `boxed_params`: the abstract, logically annotated "params" collection
  (`abstract_variables(config)["params"]`).
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  from jaxgen.training import sharding  # pylint: disable=g-import-not-at-top
  from jaxgen.training.optimizers import make_optimizer  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh(mesh_shape, jax.devices()[:NUM_DEVICES])
  boxed = boxed_params
  params = nn.meta.unbox(boxed)
  tx, _ = make_optimizer(OPTIM, total_steps=10_000)
  opt_state = jax.eval_shape(tx.init, params)
  param_sharding = sharding.param_shardings(boxed, mesh)
  opt_sharding = sharding.opt_state_shardings(tx, opt_state, param_sharding, mesh)

  shapes = _leaves(params) + _leaves(opt_state)
  shardings = _leaves(param_sharding) + _leaves(opt_sharding)
  if len(shapes) != len(shardings):
    raise RuntimeError(f"{len(shapes)} array leaves but {len(shardings)} shardings")
  per_device = {d.id: 0 for d in mesh.devices.flat}
  for shape, leaf_sharding in zip(shapes, shardings):
    # Every device of the mesh holds one shard of every leaf (replicated axes repeat it).
    for device in leaf_sharding.device_set:
      per_device[device.id] += _leaf_bytes(shape, leaf_sharding)

  paths = jax.tree_util.tree_flatten_with_path(params)[0]
  replicated = [
    (jax.tree_util.keystr(path), _leaf_bytes(leaf))
    for (path, leaf), s in zip(paths, _leaves(param_sharding))
    if s.is_fully_replicated
  ]
  return dict(
    mesh=list(mesh_shape),
    param_bytes=sum(_leaf_bytes(x) for x in _leaves(params)),
    total_bytes=sum(_leaf_bytes(x) for x in shapes),
    max_device_bytes=max(per_device.values()),
    min_device_bytes=min(per_device.values()),
    param_leaves=len(paths),
    sharded_param_leaves=len(paths) - len(replicated),
    replicated_params=sorted(replicated, key=lambda item: -item[1]),
  )


def _worker(unet: str) -> None:
  """Child process (8 simulated devices): prints one JSON list, one entry per mesh."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.device_count() < NUM_DEVICES:
    raise RuntimeError(f"expected {NUM_DEVICES} devices (XLA_FLAGS), found {jax.device_count()}")
  from jaxgen.models.unet import abstract_variables  # pylint: disable=g-import-not-at-top

  boxed = abstract_variables(unet_config(unet))["params"]
  print(json.dumps([mesh_memory(boxed, mesh) for mesh in MESHES]))


def run_worker(unet: str) -> list[dict[str, Any]]:
  """Runs `_worker` in a fresh process that sees 8 CPU devices."""
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={NUM_DEVICES}",
  )
  result = subprocess.run(
    [sys.executable, os.path.abspath(__file__), "--unet", unet, "--worker"],
    env=env,
    capture_output=True,
    text=True,
    check=False,
  )
  if result.returncode != 0:
    raise RuntimeError(f"memory worker failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def table_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  rows = []
  for r in results:
    rows.append(
      {
        "mesh (data,fsdp,tensor)": "(" + ",".join(map(str, r["mesh"])) + ")",
        "params MiB": r["param_bytes"] / MIB,
        "params+opt MiB": r["total_bytes"] / MIB,
        "max MiB/device": r["max_device_bytes"] / MIB,
        "min MiB/device": r["min_device_bytes"] / MIB,
        "ratio to total/8": r["max_device_bytes"] / (r["total_bytes"] / NUM_DEVICES),
        "sharded leaves": f"{r['sharded_param_leaves']}/{r['param_leaves']}",
      }
    )
  return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--unet", default="sd15", choices=("sd15", "sd_shaped", "tiny"))
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Prints the memory table (and what FSDP leaves replicated); returns the rows."""
  args = parse_args(argv)
  import _common  # pylint: disable=g-import-not-at-top

  results = run_worker(args.unet)
  rows = table_rows(results)
  print(
    f"U-Net {args.unet}: float32 params + AdamW state (mu, nu, counters), {NUM_DEVICES} "
    "simulated CPU devices, bytes from NamedSharding.shard_shape (nothing allocated)\n"
  )
  print(_common.markdown_table(rows, COLUMNS))
  fsdp = next(r for r in results if tuple(r["mesh"]) == FSDP_MESH)
  replicated = fsdp["replicated_params"]
  replicated_bytes = sum(b for _, b in replicated)
  print(
    f"\nFSDP {FSDP_MESH}: {len(replicated)} of {fsdp['param_leaves']} parameter leaves stay "
    f"replicated, {replicated_bytes / MIB:.2f} MiB = {100 * replicated_bytes / fsdp['param_bytes']:.2f}% "
    "of the parameters; largest:"
  )
  for path, size in replicated[:8]:
    print(f"  {path}: {size / MIB:.3f} MiB")
  return rows


if __name__ == "__main__":
  if "--worker" in sys.argv[1:]:
    _worker(parse_args(sys.argv[1:]).unet)
  else:
    main()
