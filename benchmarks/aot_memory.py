"""Ahead-of-time memory proof: the SD 1.5 U-Net training step, compiled from shapes alone.

The trainer's own step (`jaxgen.training.trainer.jit_train_step`: loss,
gradients, global-norm clipping, AdamW, EMA, the non-finite-update guard) is
lowered with `jax.ShapeDtypeStruct` inputs (`create_state(..., abstract=True)`
and the task's `abstract_batch`: no array is allocated) and compiled for an
FSDP mesh (data, fsdp, tensor) = (1, 8, 1) of 8 simulated CPU devices, with
parameters and AdamW moments sharded by jaxgen's logical-axis rules. The
task is a latent text-to-image denoiser: 64x64x4 latents, 77x768 text states
(SD 1.5 at 512x512), epsilon loss in float32.

For each compute dtype (float32, bfloat16: `model.compute_dtype`) and remat
policy (`model.remat`), it prints XLA's per-device `memory_analysis()` of the
compiled step (arguments, outputs, their aliasing through the donated
state, temporaries, generated code) beside the parameter + AdamW + EMA bytes
per device, and the compile time.

Largest batch per device: a device needs arguments + outputs - aliased +
temporaries; everything but the temporaries (and the tiny batch) is fixed,
and temporaries grow linearly with the batch (activations). The benchmark
compiles two per-device batches, fits peak(b) = fixed + slope * b through
them, and solves peak(b) <= HBM for 16 GiB (TPU v5e), 32 GiB (v4) and
95 GiB (v5p). `--verify` compiles each predicted batch and reports its
measured peak.

Compilation cache: every worker process uses one fresh persistent cache
directory (`jax_compilation_cache_dir`, `jax_persistent_cache_min_compile_time_secs=0`);
the first configuration is then compiled again in a fresh process, which
reads it from the cache: "second start" times.

Caveats: these are XLA:CPU's buffer assignments; TPU's compiler schedules,
fuses and lays out differently (and runs bfloat16 matmuls natively where
XLA:CPU may upcast), so the TPU numbers will differ — the table shows the
shape of the trade-offs, to be confirmed on a chip.

Command (slow: each SD 1.5 compile takes minutes on a 2-core CPU):
  nice python benchmarks/aot_memory.py                      # SD 1.5, 2 dtypes x 3 remats
  python benchmarks/aot_memory.py --quick                   # tiny U-Net smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

NUM_DEVICES = 8
FSDP_MESH = (1, 8, 1)
DTYPES = ("float32", "bfloat16")
REMATS = ("none", "full", "save_dots")
# HBM of one chip, GiB.
HBM_GIB = {"TPU v5e": 16, "TPU v4": 32, "TPU v5p": 95}
GIB, MIB = 2**30, 2**20
# AdamW with warm-up, cosine decay and clipping, as `configs/sd*_finetune.py` train.
OPTIM = {"learning_rate": 1e-5, "warmup_steps": 500, "weight_decay": 1e-2, "grad_clip_norm": 1.0}
# XLA:CPU code generation without LLVM's expensive optimisations: buffer
# assignment (the memory analysis) is decided on HLO before it and comes out
# identical (checked on the tiny U-Net), in a fraction of the compile time.
FAST_CODEGEN = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
COLUMNS = (
  "compute",
  "remat",
  "batch/device",
  "arguments MiB",
  "outputs MiB",
  "aliased MiB",
  "temp MiB",
  "code MiB",
  "peak MiB",
  "params+opt+EMA MiB",
  "lower s",
  "compile s",
)
FIT_COLUMNS = (
  "compute",
  "remat",
  "fixed MiB",
  "peak MiB/example",
  *(f"max batch/device {name} ({gib} GiB)" for name, gib in HBM_GIB.items()),
)


def setups(quick: bool) -> dict[str, Any]:
  """U-Net architecture and shapes: SD 1.5 (64x64x4 latents, 77x768 text) or the tiny preset."""
  from jaxgen.models.unet import UNetConfig  # pylint: disable=g-import-not-at-top

  if quick:
    import _common  # pylint: disable=g-import-not-at-top

    return {"unet": _common.unet_config("tiny", sample_size=8), "context_length": 4}
  from jaxgen.configs.arch import sd15_unet  # pylint: disable=g-import-not-at-top

  return {"unet": UNetConfig(**sd15_unet.get_config().unet.to_dict()), "context_length": 77}


def latent_unet_task(unet, compute_dtype: str, remat: str, context_length: int):
  """A `Task` training `unet` on latents + text states (epsilon loss, SD's schedule)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from jaxgen.diffusion import gaussian, schedules  # pylint: disable=g-import-not-at-top
  from jaxgen.models.unet import UNet2DConditionModel  # pylint: disable=g-import-not-at-top
  from jaxgen.nn import precision  # pylint: disable=g-import-not-at-top
  from jaxgen.training.task import Task  # pylint: disable=g-import-not-at-top

  policy = precision.model_policy({"compute_dtype": compute_dtype, "remat": remat})
  model = UNet2DConditionModel(unet, **policy)
  schedule = schedules.make_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)

  class LatentUNetTask(Task):
    def abstract_batch(self, batch_size):
      size = unet.sample_size
      return {
        "latents": jax.ShapeDtypeStruct((batch_size, size, size, unet.in_channels), jnp.float32),
        "context": jax.ShapeDtypeStruct(
          (batch_size, context_length, unet.cross_attention_dim), jnp.float32
        ),
      }

    def init(self, rng, batch):
      t = jnp.zeros(batch["latents"].shape[:1], jnp.int32)
      return model.init(rng, batch["latents"], t, batch["context"])["params"]

    def loss(self, params, batch, rng):
      def model_fn(x_t, t):
        out = model.apply({"params": params}, x_t, t, batch["context"], train=True)
        return out.astype(jnp.float32)

      loss, aux = gaussian.diffusion_loss(model_fn, batch["latents"], rng, schedule)
      return loss, {"mse": aux["mse"]}

  return LatentUNetTask()


def residual_bytes(quick: bool, dtype: str, remat: str) -> int:
  """Bytes per example the backward pass keeps from the forward pass, as JAX traces it.

  The leaves of `jax.vjp`'s backward function (by `jax.eval_shape`: nothing
  runs) at batch 2 minus batch 1, so parameters (and their bfloat16 copies)
  cancel: what remat and bfloat16 shrink on any backend, before a compiler
  schedules the program.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  setup = setups(quick)
  task = latent_unet_task(setup["unet"], dtype, remat, setup["context_length"])
  params = nn.meta.unbox(jax.eval_shape(task.init, jax.random.key(0), task.abstract_batch(1)))
  rng = jax.ShapeDtypeStruct((2,), np.uint32)

  def saved_bytes(batch_size):
    def backward(p, b, r):
      return jax.vjp(lambda q: task.loss(q, b, r)[0], p)[1]

    saved = jax.eval_shape(backward, params, task.abstract_batch(batch_size), rng)
    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(saved))

  return saved_bytes(2) - saved_bytes(1)


def _device_bytes(tree: Any, shardings: Any) -> int:
  """Bytes one device holds of `tree` (ShapeDtypeStructs) under `shardings` (the most loaded one)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  leaves = jax.tree.leaves(tree)
  shards = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  return sum(
    int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize for x, s in zip(leaves, shards)
  )


def compile_step(job: dict[str, Any], quick: bool) -> dict[str, Any]:
  """Lowers and compiles the train step of one (dtype, remat, batch) from shapes; its memory."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top

  from jaxgen.training import sharding, trainer  # pylint: disable=g-import-not-at-top

  setup = setups(quick)
  task = latent_unet_task(setup["unet"], job["dtype"], job["remat"], setup["context_length"])
  global_batch = job["batch"] * NUM_DEVICES
  config = ml_collections.ConfigDict(
    {"train": {"batch_size": global_batch, "num_steps": 10_000}, "optim": OPTIM}
  )
  mesh = sharding.make_mesh(FSDP_MESH, jax.devices()[:NUM_DEVICES])
  batch = task.abstract_batch(global_batch)
  state, state_sharding, _ = trainer.create_state(task, config, batch, mesh, abstract=True)
  step = trainer.jit_train_step(task, config, state_sharding, batch, mesh)
  start = time.perf_counter()
  lowered = step.lower(state, batch)
  lowered_at = time.perf_counter()
  compiled = lowered.compile(compiler_options=job.get("compiler_options") or None)
  compiled_at = time.perf_counter()
  mem = compiled.memory_analysis()
  state_bytes = _device_bytes(
    (state.params, state.opt_state, state.ema_params),
    (state_sharding.params, state_sharding.opt_state, state_sharding.ema_params),
  )
  param_dtypes = sorted({str(x.dtype) for x in jax.tree.leaves(state.params)})
  return dict(
    job,
    arguments=mem.argument_size_in_bytes,
    outputs=mem.output_size_in_bytes,
    aliased=mem.alias_size_in_bytes,
    temp=mem.temp_size_in_bytes,
    code=mem.generated_code_size_in_bytes,
    peak=mem.argument_size_in_bytes
    + mem.output_size_in_bytes
    - mem.alias_size_in_bytes
    + mem.temp_size_in_bytes,
    state=state_bytes,
    param_dtypes=param_dtypes,
    lower_s=lowered_at - start,
    compile_s=compiled_at - lowered_at,
  )


def _worker(jobs: list[dict[str, Any]], quick: bool, cache_dir: str) -> None:
  """Child process (8 simulated devices): one JSON line per compiled job."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.device_count() < NUM_DEVICES:
    raise RuntimeError(f"expected {NUM_DEVICES} devices (XLA_FLAGS), found {jax.device_count()}")
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  for job in jobs:
    print("RESULT " + json.dumps(compile_step(job, quick)), flush=True)


def run_worker(jobs: list[dict[str, Any]], quick: bool, cache_dir: str) -> list[dict[str, Any]]:
  """Runs `_worker` in a fresh process that sees 8 CPU devices; adds its wall time."""
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={NUM_DEVICES}",
  )
  command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(jobs)]
  command += ["--cache-dir", cache_dir] + (["--quick"] if quick else [])
  start = time.perf_counter()
  result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
  wall = time.perf_counter() - start
  if result.returncode != 0:
    raise RuntimeError(f"AOT worker failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
  rows = [json.loads(line[7:]) for line in result.stdout.splitlines() if line.startswith("RESULT ")]
  return [dict(row, process_s=wall) for row in rows]


def _progress(r: dict[str, Any]) -> str:
  return (
    f"{r['dtype']} remat={r['remat']} batch/device={r['batch']}: peak {r['peak'] / MIB:.1f} MiB, "
    f"temp {r['temp'] / MIB:.1f} MiB, compile {r['compile_s']:.1f} s, process {r['process_s']:.1f} s"
  )


def fit_batches(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Least-squares peak(b) = fixed + slope * b of one (dtype, remat); the largest b per HBM size."""
  bs = [r["batch"] for r in results]
  peaks = [r["peak"] for r in results]
  if len(set(bs)) < 2:
    raise ValueError(f"batches: need two different per-device batches to fit, found {bs}")
  mean_b, mean_p = sum(bs) / len(bs), sum(peaks) / len(peaks)
  slope = sum((b - mean_b) * (p - mean_p) for b, p in zip(bs, peaks)) / sum(
    (b - mean_b) ** 2 for b in bs
  )
  fixed = mean_p - slope * mean_b
  fits = {}
  for name, gib in HBM_GIB.items():
    fits[name] = max(0, int((gib * GIB - fixed) // slope)) if slope > 0 else None
  return {"fixed": fixed, "slope": slope, "max_batch": fits}


def table_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  return [
    {
      "compute": r["dtype"],
      "remat": r["remat"],
      "batch/device": r["batch"],
      "arguments MiB": r["arguments"] / MIB,
      "outputs MiB": r["outputs"] / MIB,
      "aliased MiB": r["aliased"] / MIB,
      "temp MiB": r["temp"] / MIB,
      "code MiB": r["code"] / MIB,
      "peak MiB": r["peak"] / MIB,
      "params+opt+EMA MiB": r["state"] / MIB,
      "lower s": r["lower_s"],
      "compile s": r["compile_s"],
    }
    for r in results
  ]


def fit_rows(fits: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
  rows = []
  for (dtype, remat), fit in fits.items():
    row = {
      "compute": dtype,
      "remat": remat,
      "fixed MiB": fit["fixed"] / MIB,
      "peak MiB/example": fit["slope"] / MIB,
    }
    for name, gib in HBM_GIB.items():
      row[f"max batch/device {name} ({gib} GiB)"] = fit["max_batch"][name]
    rows.append(row)
  return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny U-Net (smoke test)")
  parser.add_argument("--dtypes", default=",".join(DTYPES), help="compute dtypes, comma-separated")
  parser.add_argument("--remats", default=",".join(REMATS), help="remat policies, comma-separated")
  parser.add_argument(
    "--batches", default="1,2", help="per-device batches compiled for the fit, comma-separated"
  )
  parser.add_argument(
    "--verify", action="store_true", help="compile every predicted largest batch and report it"
  )
  parser.add_argument("--cache-dir", default=None, help="persistent compilation cache directory")
  parser.add_argument(
    "--full-codegen",
    action="store_true",
    help="compile with XLA:CPU's default LLVM optimisation (slower; the same memory analysis)",
  )
  parser.add_argument(
    "--no-second-start", action="store_true", help="skip the compilation-cache measurement"
  )
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  from jaxgen.nn import precision  # pylint: disable=g-import-not-at-top

  args.dtypes = [d for d in args.dtypes.split(",") if d]
  args.remats = [r for r in args.remats.split(",") if r]
  for d in args.dtypes:
    precision.compute_dtype(d, "--dtypes")
  for r in args.remats:
    precision.check_remat(r, "--remats")
  try:
    args.batches = sorted({int(b) for b in args.batches.split(",")})
  except ValueError:
    parser.error(f"--batches: expected comma-separated ints, found {args.batches!r}")
  if len(args.batches) < 2 or args.batches[0] <= 0:
    parser.error(f"--batches: expected two or more positive ints, found {args.batches}")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Prints the memory table, the batch fit and the cache timings; returns them."""
  args = parse_args(argv)
  import _common  # pylint: disable=g-import-not-at-top

  cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="jaxgen_aot_cache_")
  options = None if args.full_codegen else FAST_CODEGEN
  configs = [(d, r) for r in args.remats for d in args.dtypes]
  jobs = {
    c: [
      {"dtype": c[0], "remat": c[1], "batch": b, "compiler_options": options} for b in args.batches
    ]
    for c in configs
  }
  unet = "tiny U-Net (--quick)" if args.quick else "SD 1.5 U-Net (859.5M params)"
  setup = setups(args.quick)
  size, length = setup["unet"].sample_size, setup["context_length"]
  print(
    f"{unet} training step (trainer.jit_train_step: loss, grads, clip, AdamW, EMA), "
    f"{size}x{size}x{setup['unet'].in_channels} latents, {length}x"
    f"{setup['unet'].cross_attention_dim} text states, FSDP mesh {FSDP_MESH} on "
    f"{NUM_DEVICES} simulated CPU devices; XLA:CPU memory_analysis() per device; "
    f"compiler options {options}\n{_common.machine_line()}\n",
    flush=True,
  )
  if args.quick:  # one process for every job: fast enough to smoke-test
    results = run_worker([j for c in configs for j in jobs[c]], True, cache_dir)
    warm = None
  else:  # one process per configuration: memory returns to the system between them
    results, warm = [], None
    for c in configs:
      results += run_worker(jobs[c], False, cache_dir)
      for r in results[-len(jobs[c]) :]:
        print(f"  compiled: {_progress(r)}", flush=True)
      if warm is None and not args.no_second_start:  # as soon as something is cached
        warm = run_worker([jobs[c][0]], False, cache_dir)[0]
        print(f"  second start (cache): {_progress(warm)}", flush=True)
  if warm is None and not args.no_second_start:
    warm = run_worker([jobs[configs[0]][0]], args.quick, cache_dir)[0]
  first = results[0]
  fits = {c: fit_batches([r for r in results if (r["dtype"], r["remat"]) == c]) for c in configs}
  verified = []
  if args.verify:
    for (dtype, remat), fit in fits.items():
      for b in sorted({b for b in fit["max_batch"].values() if b}):
        verified.append({"dtype": dtype, "remat": remat, "batch": b, "compiler_options": options})
    verified = run_worker(verified, args.quick, cache_dir) if verified else []

  rows = table_rows(results)
  print(_common.markdown_table(rows, COLUMNS))
  print(
    "\npeak = arguments + outputs - aliased (donated state) + temp. Largest batch per device "
    f"from peak(b) = fixed + slope*b, least squares over batches {args.batches}:\n"
  )
  fitted = fit_rows(fits)
  print(_common.markdown_table(fitted, FIT_COLUMNS))
  residuals = [
    {
      "compute": dtype,
      "remat": remat,
      "saved for backward MiB/example": residual_bytes(args.quick, dtype, remat) / MIB,
    }
    for dtype, remat in configs
  ]
  print(
    "\nWhat the backward pass keeps from the forward pass per example, as JAX traces it "
    "(jax.vjp residuals; the compiler-independent effect of remat and bfloat16):\n"
  )
  print(_common.markdown_table(residuals))
  if verified:
    print("\nVerified by compiling the predicted batches:\n")
    print(_common.markdown_table(table_rows(verified), COLUMNS))
  if warm is not None:
    print(
      f"\nPersistent compilation cache ({first['dtype']}, remat {first['remat']}, batch/device "
      f"{first['batch']}): compile {first['compile_s']:.2f} s on the first start (empty cache), "
      f"{warm['compile_s']:.2f} s on a second start in a fresh process (cache hit): "
      f"{first['compile_s'] - warm['compile_s']:.2f} s saved; that process ran "
      f"{warm['process_s']:.1f} s in all (start-up, tracing and lowering are not cached)."
    )
  return {
    "rows": rows,
    "fits": fitted,
    "residuals": residuals,
    "verified": verified,
    "cold": first,
    "warm": warm,
  }


if __name__ == "__main__":
  arguments = parse_args(sys.argv[1:])
  if arguments.worker is not None:
    _worker(json.loads(arguments.worker), arguments.quick, arguments.cache_dir)
  else:
    main()
