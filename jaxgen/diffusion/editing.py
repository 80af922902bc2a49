"""Image editing with a diffusion sampler: image-to-image (SDEdit) and inpainting.

Both reuse the samplers' step tables (`samplers.SamplerPlan`) and run as one
`lax.scan` of `samplers.sampler_step`:

- Image-to-image (Meng et al. 2022, diffusers' img2img): keep the last
  `int(num_steps * strength)` rows of the plan, noise the encoded image to
  the first kept row's level, and sample from there. strength 0 returns the
  image untouched, strength 1 starts from (almost) pure noise.
- Inpainting with a plain model (RePaint-style replacement, as diffusers'
  legacy inpainting pipeline): before every step the known region of the
  state is replaced by the original noised to that step's level (with the
  starting noise), and after the last step by the original itself, so the
  known region ends exactly equal to the input.
- Inpainting with a model trained for it (GLIDE, SD-inpainting): the mask and
  the masked image's latents are extra input channels; that is the model's
  business (`inpainting_inputs`), and the sampler runs unchanged.

Masks follow diffusers: 1 marks the region to generate, 0 the region to keep.

The noise level of a row: VP samplers (DDPM, DDIM, DPM-Solver) keep the
state x_t = alpha_t x0 + sigma_t eps at integer timesteps; Euler keeps
x_t / alpha_t with alpha_t = its `input_scale` (fractional timesteps), so
the state at a row is (alpha x0 + sigma eps) / input_scale in both cases.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxgen.diffusion.samplers import SamplerPlan, init_state, sampler_step
from jaxgen.diffusion.schedules import NoiseSchedule

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def check_strength(strength: float) -> float:
  """Raises a ValueError unless `strength` is a Python number in [0, 1] (it fixes the step count)."""
  if isinstance(strength, bool) or not isinstance(strength, numbers.Real):
    raise ValueError(
      f"strength: expected a Python number in [0, 1] (it sets the number of "
      f"steps), found {type(strength).__name__} {strength!r}"
    )
  if not 0.0 <= strength <= 1.0:
    raise ValueError(f"strength: expected a number in [0, 1], found {strength}")
  return float(strength)


def num_edit_steps(num_steps: int, strength: float) -> int:
  """Sampler steps an edit of `strength` runs out of `num_steps` (diffusers' rule)."""
  return min(int(num_steps * check_strength(strength)), num_steps)


def truncate_plan(plan: SamplerPlan, num_kept: int) -> SamplerPlan:
  """The plan's last `num_kept` rows.

  A multistep solver (DPM-Solver++ 2M) has no previous x0 at its new first
  row, so that row becomes first order: its second-order correction
  weight is folded into the x0 weight (x_next = ... - d0 * x0), exactly the
  first-order step the full plan takes at its own first row.
  """
  if not 0 <= num_kept <= plan.num_steps:
    raise ValueError(f"num_kept: expected 0..{plan.num_steps}, found {num_kept}")
  if (plan.history_size or plan.uses_anchor) and 0 < num_kept < plan.num_steps:
    raise ValueError(
      "strength: this sampler's steps depend on the ones before (a history or a saved sample); "
      f"it edits at strength 0 or 1 only, found {num_kept} of {plan.num_steps} rows kept"
    )
  table = jax.tree.map(lambda column: column[plan.num_steps - num_kept :], plan.table)
  if plan.uses_prev_x0 and num_kept:
    table = table.replace(
      next_from_x0=table.next_from_x0.at[0].add(table.next_from_prev_x0[0]),
      next_from_prev_x0=table.next_from_prev_x0.at[0].set(0.0),
    )
  return plan.replace(table=table)


def row_noise_levels(plan: SamplerPlan, schedule: NoiseSchedule) -> tuple[jax.Array, jax.Array]:
  """(alpha, sigma) of the state at every row of the plan, each (num_steps,)."""
  timestep = plan.table.timestep
  if jnp.issubdtype(timestep.dtype, jnp.floating):  # Euler: the model input scale is alpha
    alpha = plan.table.input_scale
  else:
    alpha = schedule.sqrt_alphas_cumprod[timestep]
  return alpha, jnp.sqrt(jnp.maximum(1.0 - alpha**2, 0.0))


def noised_state(
  x0: jax.Array, noise: jax.Array, alpha: jax.Array, sigma: jax.Array, input_scale: jax.Array
) -> jax.Array:
  """The sampler state holding x0 noised to (alpha, sigma) with `noise`."""
  return (alpha * x0 + sigma * noise) / input_scale


def check_mask(mask: jax.Array, like: jax.Array, name: str = "mask") -> jax.Array:
  """A (B, H, W) or (B, H, W, 1) mask matching `like` (B, H, W, C) -> float32 (B, H, W, 1)."""
  shape = tuple(getattr(mask, "shape", ()))
  if len(shape) == 3:
    shape = shape + (1,)
  if len(shape) != 4 or shape[-1] != 1 or shape[:3] != tuple(like.shape[:3]):
    raise ValueError(
      f"{name}: expected shape {tuple(like.shape[:3])} or "
      f"{tuple(like.shape[:3]) + (1,)} (1 = generate, 0 = keep), found "
      f"{tuple(getattr(mask, 'shape', ()))}"
    )
  return jnp.asarray(mask, jnp.float32).reshape(shape)


def downsample_mask(mask: jax.Array, factor: int) -> jax.Array:
  """(B, H, W, 1) pixel mask -> (B, H/f, W/f, 1) latent mask by max-pooling.

  A latent is regenerated if any pixel it covers is, so no latent that
  straddles the hole is pasted back from the original.
  """
  if factor == 1:
    return mask
  b, h, w, _ = mask.shape
  if h % factor or w % factor:
    raise ValueError(f"mask: height and width must be multiples of {factor}, found {h}x{w}")
  return mask.reshape(b, h // factor, factor, w // factor, factor, 1).max(axis=(2, 4))


def masked_image(images: jax.Array, mask: jax.Array) -> jax.Array:
  """Images in [-1, 1] with the region to generate set to 0 (SD-inpainting's masked image)."""
  return images * (1.0 - (mask >= 0.5).astype(images.dtype))


def inpainting_inputs(mask: jax.Array, masked_latents: jax.Array) -> jax.Array:
  """The extra U-Net channels of an inpainting model: [mask (1), masked-image latents (C)]."""
  return jnp.concatenate([mask.astype(masked_latents.dtype), masked_latents], axis=-1)


def composite(generated: jax.Array, original: jax.Array, mask: jax.Array) -> jax.Array:
  """mask * generated + (1 - mask) * original: paste the known region back in pixel space."""
  return mask * generated + (1.0 - mask) * original


def edit(
  model_fn: ModelFn,
  plan: SamplerPlan,
  schedule: NoiseSchedule,
  x0: jax.Array,
  noise: jax.Array,
  rng: jax.Array | None = None,
  *,
  strength: float = 1.0,
  keep_mask: jax.Array | None = None,
) -> jax.Array:
  """Samples from x0 noised to the level `strength` selects, optionally pasting a known region.

  Args:
    model_fn: `model_fn(x, t) -> prediction`, as for `samplers.run_sampler`.
    plan: the full sampler plan (`samplers.make_plan`).
    schedule: the training noise schedule.
    x0: clean data (B, ...) (encoded image latents).
    noise: standard-normal noise of x0's shape: the starting noise and the
      noise of the pasted known region.
    rng: key for stochastic samplers.
    strength: in [0, 1]; static (it sets the number of steps). 1 starts from
      pure noise (scaled by the plan's initial sigma), as diffusers does at
      full strength.
    keep_mask: optional (B, ..., 1) mask, 1 = generate, 0 = keep x0 there
      (RePaint-style replacement before every step and after the last).

  Returns:
    The final sample (B, ...): x0 itself when no step runs (strength 0).
  """
  num_kept = num_edit_steps(plan.num_steps, strength)
  if noise.shape != x0.shape:
    raise ValueError(f"noise: expected x0's shape {x0.shape}, found {noise.shape}")
  if num_kept == 0:
    return x0
  if plan.stochastic and rng is None:
    raise ValueError("rng: this sampler draws noise at every step and needs a PRNG key, found None")
  plan = truncate_plan(plan, num_kept)
  alpha, sigma = row_noise_levels(plan, schedule)
  if strength == 1.0:
    x = noise.astype(jnp.float32) * plan.init_noise_sigma
  else:
    x = noised_state(x0, noise, alpha[0], sigma[0], plan.table.input_scale[0])
  x = x.astype(jnp.float32)
  state = init_state(plan, x, rng)

  def body(state, inputs):
    row, a, s = inputs
    if keep_mask is not None:
      known = noised_state(x0, noise, a, s, row.input_scale)
      state = state.replace(x=keep_mask * state.x + (1.0 - keep_mask) * known)
    state, _ = sampler_step(model_fn, plan, state, row)
    return state, None

  state, _ = jax.lax.scan(body, state, (plan.table, alpha, sigma))
  if keep_mask is not None:
    return keep_mask * state.x + (1.0 - keep_mask) * x0
  return state.x
