"""Checkpoint safety: what verification costs, and kill -9 during saves.

(a) Save and restore time of the quickstart model (`configs/text_to_image_shapes.py`
at its default size: params, EMA and AdamW state) with and without the
checksums of `jaxgen.training.checkpoint` (`Checkpointer(verify=...)`), timed
interleaved. "save (blocking)" is what the training loop waits for (the
device-to-host copy and, verified, the checksums); "save (on disk)" adds
orbax's background write until the step is finalised.

(b) kill -9 at random moments during saves: a `python -m jaxgen.cli train`
run that checkpoints every step is SIGKILLed at a random moment after it
has written a new step, then the same command is run again, `--kills` times,
and finally to the end. Every resume must succeed, restore a step at least
as new as the newest one finalised before the kill, and the final state must
equal an uninterrupted run's bit for bit.

Commands:
  python benchmarks/checkpoint_safety.py                  # (a) and (b), 10 kills
  python benchmarks/checkpoint_safety.py --part a --rounds 3
  python benchmarks/checkpoint_safety.py --part b --kills 3 --steps 20
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
from jaxgen.configuration import apply_overrides, load_config_file  # noqa: E402
from jaxgen.tasks.registry import get_task  # noqa: E402
from jaxgen.training import sharding, trainer  # noqa: E402
from jaxgen.training.checkpoint import (  # noqa: E402
  CORRUPT_SUBDIR,
  Checkpointer,
  checkpoint_dir,
  tree_checksums,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "text_to_image_shapes.py")
COST_COLUMNS = (
  "checkpoint",
  "state MiB",
  "save (blocking) ms",
  "save (on disk) ms",
  "restore ms",
  "checksums ms",
  "save ratio",
  "restore ratio",
)
KILL_COLUMNS = (
  "kill",
  "delay after a new step s",
  "save in flight",
  "newest finalised step",
  "resumed from",
  "steps lost",
  "resume ok",
)
# (b): a run that saves every step; the model stays at the quickstart's size.
KILL_RUN = (
  "train.batch_size=8",
  "train.sample_every=0",
  "train.log_every=10",
  "checkpoint.save_every=1",
  "checkpoint.keep=2",
)
_TMP = ".orbax-checkpoint-tmp"


def _quickstart_state(overrides: Sequence[str]):
  config = apply_overrides(load_config_file(CONFIG), list(overrides))
  task = get_task(config)
  mesh = sharding.make_mesh(config.get("mesh_shape"))
  batch = {k: jnp.asarray(v[: config.train.batch_size]) for k, v in task.train_arrays().items()}
  state, _, _ = trainer.create_state(task, config, batch, mesh)
  meta = dict(
    data_iterator=dict(epoch=0, position=0), config=json.loads(config.to_json_best_effort())
  )
  return jax.block_until_ready(state), meta


def verification_cost(overrides: Sequence[str], rounds: int) -> list[dict[str, Any]]:
  """(a): save / restore milliseconds with and without checksums, interleaved."""
  state, meta = _quickstart_state(overrides)
  nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
  work = tempfile.mkdtemp(prefix="checkpoint_safety_")
  times: dict[str, dict[str, list[float]]] = {}
  runners = {}
  for verify in (False, True):
    name = "verified" if verify else "unverified"
    times[name] = {"blocking": [], "disk": [], "restore": []}

    def run(verify=verify, name=name):
      workdir = tempfile.mkdtemp(dir=work)
      checkpointer = Checkpointer(workdir, keep=1, verify=verify)
      start = time.perf_counter()
      checkpointer.save(1, state, meta)
      blocking = time.perf_counter() - start
      checkpointer.wait()
      disk = time.perf_counter() - start
      checkpointer.close()
      reader = Checkpointer(workdir, read_only=True, verify=verify)
      start = time.perf_counter()
      restored, _, _ = reader.restore(state)
      jax.block_until_ready(restored)
      restore = time.perf_counter() - start
      reader.close()
      shutil.rmtree(workdir)
      for key, value in zip(("blocking", "disk", "restore"), (blocking, disk, restore)):
        times[name][key].append(value)

    runners[name] = run
  for run in runners.values():
    run()  # warm-up: the first save and restore build orbax's and tensorstore's machinery
  for name in times:
    times[name] = {key: [] for key in times[name]}
  _common.time_interleaved(runners, rounds)
  checksum_ms = 1e3 * min(_common.time_calls(lambda: tree_checksums(state), rounds))
  shutil.rmtree(work, ignore_errors=True)

  def median_ms(name, key):
    return 1e3 * _common.summarize(times[name][key])["median"]

  rows = []
  for name in times:
    rows.append(
      {
        "checkpoint": name,
        "state MiB": nbytes / 2**20,
        "save (blocking) ms": median_ms(name, "blocking"),
        "save (on disk) ms": median_ms(name, "disk"),
        "restore ms": median_ms(name, "restore"),
        "checksums ms": checksum_ms if name == "verified" else 0.0,
        "save ratio": median_ms(name, "disk") / median_ms("unverified", "disk"),
        "restore ratio": median_ms(name, "restore") / median_ms("unverified", "restore"),
      }
    )
  return rows


def _env() -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join(
    [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
  )
  return env


def _train_command(workdir: str, cache: str, overrides: Sequence[str]) -> list[str]:
  return [
    sys.executable,
    "-m",
    "jaxgen.cli",
    "--log-level",
    "info",
    "--compilation-cache",
    cache,
    "train",
    "--config",
    CONFIG,
    "--workdir",
    workdir,
    *overrides,
  ]


def _finalised_steps(workdir: str) -> list[int]:
  folder = checkpoint_dir(workdir)
  names = os.listdir(folder) if os.path.isdir(folder) else []
  return sorted(int(n) for n in names if n.isdigit())


def _save_in_flight(workdir: str) -> bool:
  folder = checkpoint_dir(workdir)
  return os.path.isdir(folder) and any(_TMP in n for n in os.listdir(folder))


def _resumed_from(log: str) -> int | None:
  found = re.findall(r"resumed from step (\d+)", log)
  return int(found[-1]) if found else None


def _final_state(workdir: str, overrides: Sequence[str]):
  config = apply_overrides(load_config_file(CONFIG), list(overrides))
  task = get_task(config)
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    state, _, step = checkpointer.restore(
      trainer.abstract_train_state(task, config, task.abstract_batch(1))
    )
  finally:
    checkpointer.close()
  return step, jax.device_get(state)


def _run_to_end(command, env, log_path: str) -> str:
  with open(log_path, "w") as log:
    result = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=3600)
  text = open(log_path).read()
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed (rc {result.returncode}):\n{text[-3000:]}")
  return text


def kill_loop(
  overrides: Sequence[str], kills: int, max_delay: float, seed: int, work: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """(b): kill -9 `kills` times at random moments after a new step, rerun, compare."""
  rng = random.Random(seed)
  os.makedirs(work, exist_ok=True)
  env, cache = _env(), os.path.join(work, "xla_cache")
  reference, killed = os.path.join(work, "uninterrupted"), os.path.join(work, "killed")
  _run_to_end(_train_command(reference, cache, overrides), env, os.path.join(work, "reference.log"))
  command = _train_command(killed, cache, overrides)
  rows, previous_log = [], None
  for k in range(1, kills + 1):
    log_path = os.path.join(work, f"launch_{k}.log")
    known = _finalised_steps(killed)
    with open(log_path, "w") as log:
      process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
      # Wait for this launch's first new step, then a random moment of the saves that follow.
      while process.poll() is None and max(_finalised_steps(killed), default=-1) <= max(
        known, default=-1
      ):
        time.sleep(0.01)
      delay = rng.uniform(0.0, max_delay)
      time.sleep(delay)
      finalised = _finalised_steps(killed)
      in_flight = _save_in_flight(killed)
      process.send_signal(signal.SIGKILL)
      process.wait()
    log = open(log_path).read()
    if process.returncode != -signal.SIGKILL:
      raise RuntimeError(
        f"launch {k} ended (rc {process.returncode}) before it was killed (a finished run "
        f"needs a larger --steps):\n{log[-3000:]}"
      )
    if previous_log is not None:  # this launch resumed from what the previous kill left
      rows[-1]["resumed from"] = _resumed_from(log)
    rows.append(
      {
        "kill": k,
        "delay after a new step s": delay,
        "save in flight": "yes" if in_flight else "no",
        "newest finalised step": max(finalised),
        "resumed from": None,
      }
    )
    previous_log = log
  final_log = _run_to_end(command, env, os.path.join(work, "final.log"))
  rows[-1]["resumed from"] = _resumed_from(final_log)
  for row in rows:
    resumed = row["resumed from"]
    row["resume ok"] = "yes" if resumed is not None else "NO"
    row["steps lost"] = max(0, row["newest finalised step"] - (resumed or 0))
  step, state = _final_state(killed, overrides)
  ref_step, ref_state = _final_state(reference, overrides)
  identical = all(
    np.array_equal(a, b)
    for name in ("params", "ema_params", "opt_state", "rng", "step")
    for a, b in zip(
      jax.tree.leaves(getattr(state, name)), jax.tree.leaves(getattr(ref_state, name))
    )
  )
  corrupt = os.path.join(checkpoint_dir(killed), CORRUPT_SUBDIR)
  summary = {
    "kills": kills,
    "kills with a save in flight": sum(r["save in flight"] == "yes" for r in rows),
    "resumes ok": sum(r["resume ok"] == "yes" for r in rows),
    "steps lost": sum(r["steps lost"] for r in rows),
    "steps set aside as corrupt": len(os.listdir(corrupt)) if os.path.isdir(corrupt) else 0,
    "stray temporary folders": sum(_TMP in n for n in os.listdir(checkpoint_dir(killed))),
    "final step (killed / uninterrupted)": f"{step} / {ref_step}",
    "final state bit-identical": "yes" if identical and step == ref_step else "NO",
  }
  return rows, summary


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--part", choices=("a", "b", "both"), default="both")
  parser.add_argument(
    "--override", action="append", default=[], help="key=value for both parts (repeatable)"
  )
  parser.add_argument("--rounds", type=int, default=5, help="(a): timed save+restore rounds")
  parser.add_argument("--kills", type=int, default=10, help="(b): kill -9 count")
  parser.add_argument("--steps", type=int, default=40, help="(b): train.num_steps of the run")
  parser.add_argument(
    "--max-delay", type=float, default=3.0, help="(b): kill within this many s of a new step"
  )
  parser.add_argument("--seed", type=int, default=0, help="(b): seed of the kill moments")
  parser.add_argument("--workdir", default=None, help="(b): keep the runs here (default: temp)")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  _common.check_positive("--rounds", args.rounds)
  _common.check_positive("--kills", args.kills)
  _common.check_positive("--steps", args.steps)
  results: dict[str, Any] = {}
  print(
    f"Checkpoint safety, {' '.join(args.override) or 'quickstart defaults'}; {_common.machine_line()}"
  )
  if args.part in ("a", "both"):
    rows = verification_cost(args.override, args.rounds)
    print(f"\n(a) save and restore, median of {args.rounds} interleaved rounds\n")
    print(_common.markdown_table(rows, COST_COLUMNS))
    results["cost"] = rows
  if args.part in ("b", "both"):
    work = args.workdir or tempfile.mkdtemp(prefix="checkpoint_kills_")
    overrides = [*KILL_RUN, f"train.num_steps={args.steps}", *args.override]
    rows, summary = kill_loop(overrides, args.kills, args.max_delay, args.seed, work)
    print(f"\n(b) kill -9 during saves: {' '.join(overrides)}\n")
    print(_common.markdown_table(rows, KILL_COLUMNS))
    print()
    print(_common.markdown_table([summary]))
    results["kills"], results["summary"] = rows, summary
    if not args.workdir:
      shutil.rmtree(work, ignore_errors=True)
  return results


if __name__ == "__main__":
  logging.basicConfig(level=logging.WARNING)
  main()
