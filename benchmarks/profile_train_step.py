"""Where a train step's time goes: phases and building blocks, jaxgen vs PyTorch, on CPU.

Companion of train_step_throughput.py (same U-Net, batch and weights). Times,
in both frameworks:

  phases: the U-Net forward, forward + backward (loss and gradients), and
          the whole train step (plus clipping and AdamW);
  blocks: forward + backward of the U-Net's building blocks at the shapes the
          step runs them (3x3 convolution, GroupNorm + SiLU, self-attention
          over the latent pixels, cross-attention to the text states).

Reported per row: the median process CPU seconds per call (robust to a busy
machine when the process is pinned to one core) and the median wall seconds.
Set XLA_FLAGS in the environment to see what a flag changes.

Command (one core for both frameworks, like the README's table):
  taskset -c 0 python benchmarks/profile_train_step.py
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
import train_step_throughput as tst  # noqa: E402
from jaxgen.models.unet import UNet2DConditionModel  # noqa: E402
from jaxgen.nn import partitioning as pt  # noqa: E402
from jaxgen.nn.attention import Attention  # noqa: E402
from jaxgen.training.optimizers import make_optimizer  # noqa: E402

COLUMNS = (
  "what",
  "jaxgen CPU ms",
  "torch CPU ms",
  "jaxgen wall ms",
  "torch wall ms",
  "torch/jaxgen (CPU)",
)


def _median_ms(times: dict[str, list[float]], kind: str) -> float:
  return 1e3 * _common.summarize(times[kind])["median"]


def _jax_grad_fn(apply: Callable[..., jax.Array]):
  """jit(grad of sum(apply(params, x)**2)) w.r.t. params and x: a block's forward + backward."""
  return jax.jit(jax.grad(lambda p, x: jnp.sum(apply(p, x) ** 2), argnums=(0, 1)))


def block_cases(config, batch: int, size: int, context_length: int) -> list[tuple[str, Any, Any]]:
  """(name, jax (fn, args), torch closure) for each building block at the step's shapes."""
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers.models.attention_processor import Attention as TorchAttention  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  c0 = config.block_out_channels[0]
  heads = config.num_heads[0]
  x = rng.standard_normal((batch, size, size, c0), np.float32)
  context = rng.standard_normal((batch, context_length, config.cross_attention_dim), np.float32)
  tokens = x.reshape(batch, size * size, c0)
  cases = []

  def add(name, flax_module, flax_inputs, torch_module, torch_inputs):
    params = flax_module.init(jax.random.key(0), *flax_inputs)
    fn = _jax_grad_fn(lambda p, a: flax_module.apply(p, a, *flax_inputs[1:]))
    jax_args = (params, jnp.asarray(flax_inputs[0]))
    t_inputs = [torch.from_numpy(np.ascontiguousarray(a)) for a in torch_inputs]
    t_inputs[0].requires_grad_(True)

    def torch_call():
      out = torch_module(*t_inputs)
      (out**2).sum().backward()

    cases.append((name, (fn, jax_args), torch_call))

  nchw = x.transpose(0, 3, 1, 2)
  add(
    f"conv 3x3 {c0}->{c0} at {size}x{size}",
    pt.conv(c0, 3, padding=1),
    (x,),
    torch.nn.Conv2d(c0, c0, 3, padding=1),
    (nchw,),
  )

  class NormSilu(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.norm = torch.nn.GroupNorm(config.norm_num_groups, c0)

    def forward(self, a):
      return torch.nn.functional.silu(self.norm(a))

  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class FlaxNormSilu(nn.Module):
    @nn.compact
    def __call__(self, a):
      return nn.silu(pt.group_norm(config.norm_num_groups, 1e-5)(a))

  add(f"GroupNorm+SiLU {c0} at {size}x{size}", FlaxNormSilu(), (x,), NormSilu(), (nchw,))
  dim_head = c0 // heads
  add(
    f"self-attention {size * size} tokens, {heads}x{dim_head}",
    Attention(heads=heads, dim_head=dim_head),
    (tokens,),
    TorchAttention(c0, heads=heads, dim_head=dim_head),
    (tokens,),
  )
  add(
    f"cross-attention {size * size}x{context_length} tokens",
    Attention(heads=heads, dim_head=dim_head),
    (tokens, context),
    _CrossAttention(
      TorchAttention(
        c0, cross_attention_dim=config.cross_attention_dim, heads=heads, dim_head=dim_head
      )
    ),
    (tokens, context),
  )
  return cases


class _CrossAttention:
  """Calls a diffusers Attention with encoder states as a second positional argument."""

  def __init__(self, module):
    self.module = module

  def __call__(self, x, context):
    return self.module(x, encoder_hidden_states=context)


def phase_cases(config, params, torch_unet, batch_np) -> list[tuple[str, Any, Any]]:
  import torch  # pylint: disable=g-import-not-at-top

  unet = UNet2DConditionModel(config)
  batch = jax.tree.map(jnp.asarray, batch_np)
  jparams = jax.tree.map(jnp.asarray, params)

  def loss_fn(p):
    pred = unet.apply({"params": p}, batch["latents"], batch["timesteps"], batch["context"])
    return jnp.mean((pred - batch["noise"]) ** 2)

  forward = jax.jit(loss_fn)
  forward_backward = jax.jit(jax.value_and_grad(loss_fn))
  tx, _ = make_optimizer(tst.OPTIM, total_steps=1000)
  step = tst.make_jax_step(config, tx)
  # make_jax_step donates its inputs: it gets a private copy of the params.
  state = {"params": jax.tree.map(jnp.copy, jparams), "opt": tx.init(jparams)}

  def jax_step():
    state["params"], state["opt"], loss = step(state["params"], state["opt"], batch)
    return loss

  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
  latents, noise = nchw(batch_np["latents"]), nchw(batch_np["noise"])
  timesteps = torch.from_numpy(batch_np["timesteps"]).long()
  context = torch.from_numpy(batch_np["context"])
  model = torch_unet.train()

  def torch_loss():
    pred = model(latents, timesteps, encoder_hidden_states=context).sample
    return torch.nn.functional.mse_loss(pred, noise)

  def torch_forward():
    with torch.no_grad():
      torch_loss()

  def torch_forward_backward():
    torch_loss().backward()
    model.zero_grad(set_to_none=True)

  torch_step, _ = tst.torch_runner(torch_unet, batch_np)
  return [
    ("U-Net forward (no grad)", (forward, (jparams,)), torch_forward),
    ("forward + backward", (forward_backward, (jparams,)), torch_forward_backward),
    ("train step (+ clip + AdamW)", (lambda: jax_step(), ()), torch_step),
  ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--unet", default="sd_shaped", choices=sorted(_common.UNET_PRESETS))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=16)
  parser.add_argument("--context-length", type=int, default=_common.CONTEXT_LENGTH)
  parser.add_argument("--repeats", type=int, default=5)
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  args = parse_args(argv)
  config = _common.unet_config(args.unet, args.size)
  batch = _common.random_batch(np.random.default_rng(0), config, args.batch, args.context_length)
  torch_unet, params = _common.diffusers_unet_and_params(config)
  threads = _common.set_torch_threads()
  rows = []
  cases = phase_cases(config, params, torch_unet, batch) + block_cases(
    config, args.batch, args.size, args.context_length
  )
  for name, (jax_fn, jax_args), torch_fn in cases:
    jax_call = lambda: jax.block_until_ready(jax_fn(*jax_args))
    jax_call(), torch_fn()  # Compile / warm up.
    times = _common.time_interleaved({"jax": jax_call, "torch": torch_fn}, args.repeats)
    jax_cpu, torch_cpu = _median_ms(times["jax"], "cpu"), _median_ms(times["torch"], "cpu")
    rows.append(
      {
        "what": name,
        "jaxgen CPU ms": jax_cpu,
        "torch CPU ms": torch_cpu,
        "jaxgen wall ms": _median_ms(times["jax"], "wall"),
        "torch wall ms": _median_ms(times["torch"], "wall"),
        "torch/jaxgen (CPU)": torch_cpu / jax_cpu,
      }
    )
  print(
    f"U-Net {args.unet}, batch {args.batch} x {args.size}x{args.size}x4, context "
    f"{args.context_length}; median of {args.repeats}; torch threads {threads}; "
    f"{_common.machine_line()}\n"
  )
  print(_common.markdown_table(rows, COLUMNS))
  return rows


if __name__ == "__main__":
  logging.basicConfig(level=logging.INFO)
  main()
