"""Train-step throughput: jaxgen's U-Net vs diffusers' PyTorch `UNet2DConditionModel` on CPU.

Both sides train the same small Stable-Diffusion-shaped U-Net from the same
weights (built by diffusers, converted with jaxgen's converter) on the same
batch, with the same step: q_sample -> U-Net -> epsilon MSE -> backward ->
global-norm clipping -> AdamW. jaxgen's step is one jitted program (state
donated); PyTorch runs eagerly with as many threads as XLA uses (every core
the process may run on). Compilation / first-call warm-up is excluded and
reported separately; the two are timed in alternation (see README.md).

Command:
  python benchmarks/train_step_throughput.py            # batch 8, 16x16x4 latents
  taskset -c 0 python benchmarks/train_step_throughput.py --steps 10   # one core each (busy machine)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import _common  # noqa: E402
from jaxgen.diffusion import gaussian, schedules  # noqa: E402
from jaxgen.models.unet import UNet2DConditionModel, UNetConfig  # noqa: E402
from jaxgen.training.optimizers import make_optimizer  # noqa: E402

# AdamW with global-norm clipping at a constant rate: the same in optax and torch.
OPTIM = dict(
  learning_rate=1e-4,
  warmup_steps=0,
  decay="constant",
  weight_decay=1e-2,
  b1=0.9,
  b2=0.999,
  eps=1e-8,
  grad_clip_norm=1.0,
)
TORCH, JAX = "diffusers (PyTorch, eager)", "jaxgen (JAX, jit)"
COLUMNS = (
  "framework",
  "samples/s",
  "step ms (median)",
  "step ms (min)",
  "CPU s/step",
  "warm-up s",
  "loss step 1",
  "ratio (median)",
  "ratio (min)",
)


def sd_schedule() -> schedules.NoiseSchedule:
  return schedules.make_schedule("scaled_linear", 1000, 0.00085, 0.012)


# ----------------------------------------------------------------------------
# jaxgen


def make_jax_step(config: UNetConfig, tx: optax.GradientTransformation):
  """(params, opt_state, batch) -> (params, opt_state, loss), jitted with params/state donated."""
  unet = UNet2DConditionModel(config)
  schedule = sd_schedule()

  def loss_fn(params, batch):
    x_t = gaussian.q_sample(schedule, batch["latents"], batch["timesteps"], batch["noise"])
    pred = unet.apply({"params": params}, x_t, batch["timesteps"], batch["context"])
    return jnp.mean((pred - batch["noise"]) ** 2)

  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def jax_runner(
  config: UNetConfig, params: Any, batch: dict[str, np.ndarray], total_steps: int
) -> tuple[Any, list[float]]:
  """A no-argument callable that runs one blocking jaxgen train step, and its loss list."""
  tx, _ = make_optimizer(OPTIM, total_steps=total_steps)
  step = make_jax_step(config, tx)
  params = jax.tree.map(jnp.asarray, params)
  opt_state = tx.init(params)
  batch = jax.tree.map(jnp.asarray, batch)
  losses = []

  def run():
    nonlocal params, opt_state
    params, opt_state, loss = step(params, opt_state, batch)
    losses.append(float(jax.block_until_ready(loss)))

  return run, losses


# ----------------------------------------------------------------------------
# diffusers / PyTorch


def torch_runner(torch_unet: Any, batch: dict[str, np.ndarray]) -> tuple[Any, list[float]]:
  """A no-argument callable that runs one eager PyTorch train step, and its loss list."""
  import torch  # pylint: disable=g-import-not-at-top

  model = torch_unet.train()
  optimizer = torch.optim.AdamW(
    model.parameters(),
    lr=OPTIM["learning_rate"],
    betas=(OPTIM["b1"], OPTIM["b2"]),
    eps=OPTIM["eps"],
    weight_decay=OPTIM["weight_decay"],
  )
  abar = torch.from_numpy(np.array(sd_schedule().alphas_cumprod))
  nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  latents, noise = nchw(batch["latents"]), nchw(batch["noise"])
  timesteps = torch.from_numpy(batch["timesteps"]).long()
  context = torch.from_numpy(batch["context"])
  alpha = abar[timesteps].sqrt().view(-1, 1, 1, 1)
  sigma = (1 - abar[timesteps]).sqrt().view(-1, 1, 1, 1)
  losses = []

  def run():
    x_t = alpha * latents + sigma * noise
    pred = model(x_t, timesteps, encoder_hidden_states=context).sample
    loss = torch.nn.functional.mse_loss(pred, noise)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM["grad_clip_norm"])
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    losses.append(float(loss.detach()))

  return run, losses


# ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--unet", default="sd_shaped", choices=sorted(_common.UNET_PRESETS))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=16, help="latent height and width")
  parser.add_argument("--context-length", type=int, default=_common.CONTEXT_LENGTH)
  parser.add_argument("--steps", type=int, default=10, help="timed steps per framework")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compile) first")
  args = parser.parse_args(argv)
  for name in ("batch", "context_length", "steps", "warmup"):
    _common.check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
  return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Runs both frameworks, prints the markdown table and returns its rows."""
  args = parse_args(argv)
  config = _common.unet_config(args.unet, args.size)
  batch = _common.random_batch(np.random.default_rng(0), config, args.batch, args.context_length)
  torch_unet, params = _common.diffusers_unet_and_params(config)
  threads = _common.set_torch_threads()
  runners, losses, warmup = {}, {}, {}
  for name, make in (
    (TORCH, lambda: torch_runner(torch_unet, batch)),
    (JAX, lambda: jax_runner(config, params, batch, args.steps + args.warmup)),
  ):
    runners[name], losses[name] = make()
    start = time.perf_counter()
    for _ in range(args.warmup):  # jaxgen compiles here; torch warms its allocator / oneDNN.
      runners[name]()
    warmup[name] = time.perf_counter() - start
  times = _common.time_interleaved(runners, args.steps)

  torch_wall = _common.summarize(times[TORCH]["wall"])
  rows = []
  for name in runners:
    wall = _common.summarize(times[name]["wall"])
    rows.append(
      {
        "framework": name,
        "samples/s": args.batch / wall["median"],
        "step ms (median)": 1e3 * wall["median"],
        "step ms (min)": 1e3 * wall["min"],
        "CPU s/step": _common.summarize(times[name]["cpu"])["median"],
        "warm-up s": warmup[name],
        "loss step 1": losses[name][0],
        "ratio (median)": torch_wall["median"] / wall["median"],
        "ratio (min)": torch_wall["min"] / wall["min"],
      }
    )
  num_params = sum(p.numel() for p in torch_unet.parameters())
  print(
    f"U-Net {args.unet}: {num_params:,} params; batch {args.batch} x {args.size}x{args.size}x4, "
    f"context {args.context_length}x{config.cross_attention_dim}; {args.steps} timed steps each "
    f"(interleaved) after {args.warmup} warm-up; torch threads {threads}; {_common.machine_line()}\n"
  )
  print(_common.markdown_table(rows, COLUMNS))
  return rows


if __name__ == "__main__":
  logging.basicConfig(level=logging.INFO)
  main()
