"""Shared pieces of the benchmarks: the small SD-shaped U-Net, weights, timing, tables.

The benchmarks compare jaxgen with diffusers on *the same weights*: the U-Net
is built by diffusers (PyTorch), and its state dict is converted to jaxgen
params with `jaxgen.convert.diffusers_unet.unet_from_diffusers`.
"""

from __future__ import annotations

import ast
import glob
import math
import os
import struct
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxgen.models.unet import UNetConfig

# Stable Diffusion's layout (three cross-attention levels, a plain bottom
# level, a cross-attention mid block, 77-token context) at a width a
# 2-core CPU trains in well under a second per step.
SD_SHAPED_UNET = dict(
  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
  block_out_channels=(32, 64, 64),
  layers_per_block=2,
  attention_head_dim=4,  # diffusers' name: 4 heads per block.
  cross_attention_dim=64,
  norm_num_groups=32,
)
CONTEXT_LENGTH = 77
# Smallest U-Net with every kind of block the SD layout uses (resnets, cross-attention
# transformers, the cross-attention mid block), for the smoke tests.
TINY_UNET = dict(
  down_block_types=("CrossAttnDownBlock2D",),
  up_block_types=("CrossAttnUpBlock2D",),
  block_out_channels=(32,),
  layers_per_block=1,
  attention_head_dim=2,
  cross_attention_dim=16,
  norm_num_groups=16,
)
UNET_PRESETS = {"sd_shaped": SD_SHAPED_UNET, "tiny": TINY_UNET}


def unet_config(preset: str, sample_size: int) -> UNetConfig:
  """One of `UNET_PRESETS` at latent size `sample_size` (4 latent channels, as SD)."""
  if preset not in UNET_PRESETS:
    raise ValueError(f"unet: expected one of {sorted(UNET_PRESETS)}, found {preset!r}")
  config = UNetConfig(sample_size=sample_size, **UNET_PRESETS[preset])
  factor = 2**config.num_downsamples
  if sample_size <= 0 or sample_size % factor:
    raise ValueError(f"sample_size: expected a positive multiple of {factor}, found {sample_size}")
  return config


def diffusers_unet_and_params(config: UNetConfig, seed: int = 0) -> tuple[Any, dict[str, Any]]:
  """A diffusers `UNet2DConditionModel` (its own random init) and the same weights as jaxgen params."""
  import diffusers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  from jaxgen.convert.diffusers_unet import unet_from_diffusers  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  torch_unet = diffusers.UNet2DConditionModel(**config.to_diffusers())
  # Copies: torch later trains its module in place, which must not move these.
  state = {k: v.detach().numpy().copy() for k, v in torch_unet.state_dict().items()}
  return torch_unet, unet_from_diffusers(state, config)


def usable_cores() -> int:
  """Cores this process may run on (its CPU affinity, e.g. under `taskset`); XLA sizes its pool so."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_torch_threads() -> int:
  """Gives torch as many threads as XLA's CPU client uses (every usable core); returns the count."""
  import torch  # pylint: disable=g-import-not-at-top

  threads = usable_cores()
  torch.set_num_threads(threads)
  return threads


def time_calls(fn: Callable[[], Any], repeats: int) -> list[float]:
  """Wall seconds of `repeats` calls of `fn` (which must block until its work is done)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def time_interleaved(
  runners: Mapping[str, Callable[[], Any]], rounds: int
) -> dict[str, dict[str, list[float]]]:
  """Wall and process-CPU seconds of each runner, called in turn for `rounds` rounds.

  Each runner must block until its work is done. Alternating the runners
  (and their order every round) exposes all of them to the same background
  load, which matters on a shared machine.
  """
  names = list(runners)
  times = {name: {"wall": [], "cpu": []} for name in names}
  for r in range(rounds):
    for name in names if r % 2 == 0 else names[::-1]:
      wall, cpu = time.perf_counter(), time.process_time()
      runners[name]()
      times[name]["cpu"].append(time.process_time() - cpu)
      times[name]["wall"].append(time.perf_counter() - wall)
  return times


def summarize(times: Sequence[float]) -> dict[str, float]:
  """Median and min of a list of timings, in seconds."""
  return dict(median=statistics.median(times), min=min(times))


def check_positive(name: str, value: int) -> int:
  if value <= 0:
    raise ValueError(f"{name}: expected a positive integer, found {value}")
  return value


def parse_run(item: str, error: type[ValueError], example: str) -> tuple[str, str]:
  """`--run NAME=RUN_DIR` -> (name, run directory), or `error` naming the flag (`example`: a sample
  NAME=RUN_DIR for the message)."""
  name, sep, workdir = item.partition("=")
  if not (sep and name and workdir):
    raise error(f"--run: expected NAME=RUN_DIR (e.g. {example}), found {item!r}")
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    raise error(
      f"--run {name}: {workdir!r} holds no config.json: expected a run directory of `jaxgen train`"
    )
  return name, workdir


def parse_options(
  items: Sequence[str], labels: Sequence[str], error: type[ValueError]
) -> dict[str, dict]:
  """`--option LABEL:KEY=VALUE` items -> {label: {key: value}} (values as Python literals, else
  strings), or `error` naming the item; every label must be a --run's."""
  options = {label: {} for label in labels}
  for item in items:
    label, _, assignment = item.partition(":")
    key, _, value = assignment.partition("=")
    if not (label and key and value):
      raise error(f"--option: expected LABEL:KEY=VALUE, found {item!r}")
    if label not in options:
      raise error(f"--option {item!r}: no --run is labelled {label!r}")
    try:
      options[label][key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      options[label][key] = value
  return options


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
  """A GitHub markdown table of dict rows (floats with 4 significant digits)."""
  columns = list(columns or rows[0].keys())

  def cell(value: Any) -> str:
    if isinstance(value, float):
      if math.isfinite(value) and value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3g}"
      return f"{value:.4g}"
    return str(value)

  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
  return "\n".join(lines)


def machine_line() -> str:
  """One line that says what the numbers were measured on."""
  parts = [
    f"{usable_cores()} of {os.cpu_count()} CPU cores",
    f"load average {os.getloadavg()[0]:.1f}",
    f"jax {jax.__version__}",
    f"python {sys.version.split()[0]}",
  ]
  try:
    import torch  # pylint: disable=g-import-not-at-top

    parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
  except ImportError:
    pass
  flags = os.environ.get("XLA_FLAGS")
  if flags:
    parts.append(f"XLA_FLAGS={flags}")
  return ", ".join(parts)


def random_batch(
  rng: np.random.Generator, config: UNetConfig, batch: int, context_length: int
) -> dict[str, np.ndarray]:
  """A training batch as NHWC numpy: clean latents, their noise, timesteps and text context."""
  size = config.sample_size
  return dict(
    latents=rng.standard_normal((batch, size, size, config.in_channels), np.float32),
    noise=rng.standard_normal((batch, size, size, config.in_channels), np.float32),
    timesteps=rng.integers(0, 1000, (batch,)).astype(np.int32),
    context=rng.standard_normal((batch, context_length, config.cross_attention_dim), np.float32),
  )


def logged_series(run_dir: str, tag: str) -> list[tuple[int, float]]:
  """(step, value) of one scalar in a run's TensorBoard event files (TFRecord framing, read
  directly), in file order."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  series = []
  for path in sorted(
    glob.glob(os.path.join(run_dir, "**", "events.out.tfevents.*"), recursive=True)
  ):
    with open(path, "rb") as f:
      data = f.read()
    offset = 0
    while offset + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[offset : offset + 8])
      record = data[offset + 12 : offset + 12 + length]
      offset += 12 + length + 4  # length, its crc, the record, its crc
      event = event_pb2.Event.FromString(record)
      series += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
  return series


def logged_scalars(run_dir: str, tag: str) -> list[float]:
  """Values of one scalar in a run's TensorBoard event files."""
  return [value for _, value in logged_series(run_dir, tag)]


def logged_at(run_dir: str, tag: str, step: int) -> float | None:
  """The last value of a scalar logged at or before `step` (e.g. cpu_minutes at a checkpoint)."""
  values = [value for at, value in logged_series(run_dir, tag) if at <= step]
  return values[-1] if values else None


def train_rate(run_dir: str) -> float | None:
  """Median training steps/s the trainer logged, if any."""
  rates = logged_scalars(run_dir, "steps_per_sec")
  return float(np.median(rates)) if rates else None


def checkpoint_step(run_dir: str) -> int:
  """The newest checkpoint's step (the one `load_run` restores)."""
  steps = [int(s) for s in os.listdir(os.path.join(run_dir, "checkpoints")) if s.isdigit()]
  return max(steps)


def parameter_count(params) -> int:
  """Number of scalars in a params tree."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
