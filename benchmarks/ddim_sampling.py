"""50-step DDIM with classifier-free guidance: one scan vs a Python loop vs diffusers' pipeline.

One random-weight, Stable-Diffusion-shaped U-Net (built by diffusers, converted
to jaxgen) denoises the same initial latents with the same text states
(random stand-ins for CLIP states of the prompt and of the empty prompt),
guidance scale 7.5, Stable Diffusion's DDIM schedule (scaled-linear betas,
'leading' spacing, steps_offset 1, no final alpha = 1), three ways:

  jaxgen scan      `samplers.run_sampler` inside one `jax.jit`: one compiled
                   program, one `lax.scan` over the 50 steps.
  jaxgen loop      the same `samplers.sampler_step`, jitted once and called
                   50 times from Python (one dispatch per step).
  diffusers        `StableDiffusionPipeline.__call__` with `prompt_embeds`,
                   `negative_prompt_embeds`, `latents` and
                   `output_type="latent"` (its denoising loop: U-Net on the
                   doubled batch, guidance, `DDIMScheduler.step`), eager.

Printed: wall time per image (median of `--repeats` interleaved runs,
compilation excluded and shown separately) and the largest difference of the
final latents from diffusers'.

Command:
  python benchmarks/ddim_sampling.py                    # 50 steps, 1 image, 16x16x4 latents
  taskset -c 0 python benchmarks/ddim_sampling.py       # one core each (busy machine)
  python benchmarks/ddim_sampling.py --steps 50 --batch 2 --size 32 --repeats 3
"""

from __future__ import annotations

import argparse
import functools
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

import _common  # noqa: E402
from jaxgen.diffusion import guidance, samplers  # noqa: E402
from jaxgen.models.unet import UNet2DConditionModel, UNetConfig  # noqa: E402
from jaxgen.pipelines.stable_diffusion import SchedulerConfig  # noqa: E402

GUIDANCE_SCALE = 7.5
# Stable Diffusion 1.x's DDIM settings; SchedulerConfig() holds the same values for jaxgen.
DIFFUSERS_DDIM = dict(
  num_train_timesteps=1000,
  beta_start=0.00085,
  beta_end=0.012,
  beta_schedule="scaled_linear",
  clip_sample=False,
  set_alpha_to_one=False,
  steps_offset=1,
)
SCAN, LOOP, DIFFUSERS = "jaxgen scan (1 program)", "jaxgen loop (jitted step)", "diffusers pipeline"
COLUMNS = (
  "sampler",
  "s/image (median)",
  "s/image (min)",
  "CPU s/image",
  "compile s",
  "ms/step",
  "speed-up vs diffusers",
  "max abs diff vs diffusers",
)


def guided_model(config: UNetConfig, params: Any, cond: jax.Array, uncond: jax.Array):
  """`fn(x, t)`: the U-Net with classifier-free guidance, both branches in one batched call."""
  unet = UNet2DConditionModel(config)
  denoise = lambda x, t, context: unet.apply({"params": params}, x, t, context)
  return guidance.classifier_free_guidance(denoise, cond, uncond, GUIDANCE_SCALE)


@functools.partial(jax.jit, static_argnames="config")
def sample_scan(params, plan, x_T, cond, uncond, *, config):
  """All steps in one compiled program (a `lax.scan` over the plan's table)."""
  return samplers.run_sampler(guided_model(config, params, cond, uncond), plan, x_T)


@functools.partial(jax.jit, static_argnames="config")
def sample_one_step(params, plan, index, x, cond, uncond, *, config):
  """Step `index` of the plan: what the scan body does, as its own program."""
  row = jax.tree.map(lambda column: column[index], plan.table)
  state = samplers.SamplerState(x=x)
  state, _ = samplers.sampler_step(guided_model(config, params, cond, uncond), plan, state, row)
  return state.x


def sample_python_loop(params, plan, x_T, cond, uncond, *, config):
  x = x_T.astype(jnp.float32) * plan.init_noise_sigma
  for i in range(plan.num_steps):
    x = sample_one_step(params, plan, jnp.int32(i), x, cond, uncond, config=config)
  return x


def diffusers_pipeline(torch_unet: Any) -> Any:
  """A `StableDiffusionPipeline` around the U-Net; text states and latents are passed in."""
  import diffusers  # pylint: disable=g-import-not-at-top

  pipe = diffusers.StableDiffusionPipeline(
    vae=None,
    text_encoder=None,
    tokenizer=None,
    unet=torch_unet.eval(),
    scheduler=diffusers.DDIMScheduler(**DIFFUSERS_DDIM),
    safety_checker=None,
    feature_extractor=None,
    requires_safety_checker=False,
  )
  pipe.set_progress_bar_config(disable=True)
  return pipe


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--unet", default="sd_shaped", choices=sorted(_common.UNET_PRESETS))
  parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
  parser.add_argument("--batch", type=int, default=1, help="images per call")
  parser.add_argument("--size", type=int, default=16, help="latent height and width")
  parser.add_argument("--context-length", type=int, default=_common.CONTEXT_LENGTH)
  parser.add_argument("--repeats", type=int, default=3, help="timed runs of each sampler")
  args = parser.parse_args(argv)
  for name in ("steps", "batch", "context_length", "repeats"):
    _common.check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
  return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Runs the three samplers, prints the markdown table and returns its rows."""
  import torch  # pylint: disable=g-import-not-at-top

  args = parse_args(argv)
  config = _common.unet_config(args.unet, args.size)
  torch_unet, params = _common.diffusers_unet_and_params(config)
  threads = _common.set_torch_threads()
  rng = np.random.default_rng(0)
  shape = (args.batch, args.size, args.size, config.in_channels)
  latents = rng.standard_normal(shape, np.float32)
  cond = rng.standard_normal(
    (args.batch, args.context_length, config.cross_attention_dim), np.float32
  )
  uncond = rng.standard_normal((1, args.context_length, config.cross_attention_dim), np.float32)

  plan = SchedulerConfig(sampler="ddim").plan(args.steps)
  jax_args = (
    jax.tree.map(jnp.asarray, params),
    plan,
    jnp.asarray(latents),
    jnp.asarray(cond),
    jnp.asarray(uncond),
  )
  pipe = diffusers_pipeline(torch_unet)
  pipe_kwargs = dict(
    prompt_embeds=torch.from_numpy(cond),
    negative_prompt_embeds=torch.from_numpy(np.repeat(uncond, args.batch, axis=0)),
    latents=torch.from_numpy(latents.transpose(0, 3, 1, 2).copy()),
    num_inference_steps=args.steps,
    guidance_scale=GUIDANCE_SCALE,
    output_type="latent",
    height=args.size * pipe.vae_scale_factor,
    width=args.size * pipe.vae_scale_factor,
  )

  outputs: dict[str, np.ndarray] = {}
  runners = {
    SCAN: lambda: outputs.__setitem__(
      SCAN, np.asarray(jax.block_until_ready(sample_scan(*jax_args, config=config)))
    ),
    LOOP: lambda: outputs.__setitem__(
      LOOP, np.asarray(jax.block_until_ready(sample_python_loop(*jax_args, config=config)))
    ),
    DIFFUSERS: lambda: outputs.__setitem__(
      DIFFUSERS, pipe(**pipe_kwargs).images.numpy().transpose(0, 2, 3, 1)
    ),
  }
  # The first call compiles (jaxgen; the loop compiles its one step) or warms up (torch).
  first_call = {}
  for name, run in runners.items():
    start = time.perf_counter()
    run()
    first_call[name] = time.perf_counter() - start
  times = _common.time_interleaved(runners, args.repeats)

  reference_wall = _common.summarize(times[DIFFUSERS]["wall"])["median"]
  rows = []
  for name in runners:
    wall = _common.summarize(times[name]["wall"])
    rows.append(
      {
        "sampler": name,
        "s/image (median)": wall["median"] / args.batch,
        "s/image (min)": wall["min"] / args.batch,
        "CPU s/image": _common.summarize(times[name]["cpu"])["median"] / args.batch,
        "compile s": first_call[name] - wall["median"] if name != DIFFUSERS else 0.0,
        "ms/step": 1e3 * wall["median"] / args.steps,
        "speed-up vs diffusers": reference_wall / wall["median"],
        "max abs diff vs diffusers": float(np.max(np.abs(outputs[name] - outputs[DIFFUSERS]))),
      }
    )
  print(
    f"DDIM {args.steps} steps, guidance {GUIDANCE_SCALE}, U-Net {args.unet} at "
    f"{args.size}x{args.size}x4, {args.batch} image(s) per call (U-Net batch {2 * args.batch}); "
    f"{args.repeats} interleaved runs each; torch threads {threads}; {_common.machine_line()}\n"
  )
  print(_common.markdown_table(rows, COLUMNS))
  return rows


if __name__ == "__main__":
  logging.basicConfig(level=logging.INFO)
  main()
