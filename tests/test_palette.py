"""Palette: continuous noise levels and the ancestral loop against a numpy transcription, the task.

The reference is Janspiry/Palette-Image-to-Image-Diffusion-Models
(`models/network.py`): `set_new_noise_schedule`, `forward` (a level drawn
between consecutive gammas) and `restoration`/`p_sample` are transcribed
below in float64 numpy.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.linen import meta
from flax.traverse_util import flatten_dict
from tiny_configs import CONFIGS, tiny_config

from jaxgen.configuration import load_config_file
from jaxgen.diffusion import noise_level
from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.diffusion.schedules import make_schedule
from jaxgen.models import adm_unet
from jaxgen.tasks.image_to_image import palette

# Palette's network in every config/*.json (`unet`), as the reference's UNet counts it.
PALETTE_UNET = {
  "inner_channel": 64,
  "channel_mults": (1, 2, 4, 8),
  "attn_res": (16,),
  "num_head_channels": 32,
  "res_blocks": 2,
  "dropout": 0.2,
  "image_size": 256,
}
PALETTE_COUNT = 62_641_347  # the reference UNet(in_channel=6, out_channel=3, **PALETTE_UNET)
# Tests run tiny programs once: XLA's cheapest CPU compile (as tests/test_precision.py).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast_jit(fn):
  return jax.jit(fn, compiler_options=FAST_COMPILE)


# -- a numpy transcription of the reference --------------------------------------------


def ref_buffers(betas):
  """`set_new_noise_schedule` in float64."""
  betas = np.asarray(betas, np.float64)
  alphas = 1.0 - betas
  gammas = np.cumprod(alphas)
  gammas_prev = np.append(1.0, gammas[:-1])
  return {
    "gammas": gammas,
    "sqrt_recip_gammas": np.sqrt(1.0 / gammas),
    "sqrt_recipm1_gammas": np.sqrt(1.0 / gammas - 1),
    "log_var": np.log(np.maximum(betas * (1.0 - gammas_prev) / (1.0 - gammas), 1e-20)),
    "coef1": betas * np.sqrt(gammas_prev) / (1.0 - gammas),
    "coef2": (1.0 - gammas_prev) * np.sqrt(alphas) / (1.0 - gammas),
  }


def ref_p_sample(buf, y_t, t, noise_hat, noise):
  y_0_hat = np.clip(
    buf["sqrt_recip_gammas"][t] * y_t - buf["sqrt_recipm1_gammas"][t] * noise_hat, -1, 1
  )
  mean = buf["coef1"][t] * y_0_hat + buf["coef2"][t] * y_t
  return mean + (noise if t > 0 else 0.0) * np.exp(0.5 * buf["log_var"][t])


def fake_denoiser(x, levels):
  """A smooth stand-in for the U-Net on [source, y_t] and the noise level (numpy or jax)."""
  xp = jnp if isinstance(x, jax.Array) else np
  levels = levels.reshape((-1,) + (1,) * (x.ndim - 1))
  return 0.4 * x[..., -3:] * xp.cos(3 * levels) + 0.1 * x[..., :1] + 0.2 * levels


# -- noise levels and the loss -----------------------------------------------------------


def test_noise_levels_and_loss_match_the_reference_forward():
  schedule = make_schedule("linear", 2000, 1e-6, 0.01)
  x0 = np.asarray(jax.random.uniform(jax.random.key(4), (64, 2, 2, 3)))

  @fast_jit
  def loss_and_draws(x0, rng):
    loss, aux = noise_level.noise_level_loss(
      lambda y, g: fake_denoiser(jnp.concatenate([y, y], -1), g), x0, rng, schedule
    )
    level_rng, noise_rng = jax.random.split(rng)  # the same draws, for the reference
    t_rng, u_rng = jax.random.split(level_rng)
    t = jax.random.randint(t_rng, (64,), 1, 2000)
    return loss, aux, t, jax.random.uniform(u_rng, (64,)), jax.random.normal(noise_rng, x0.shape)

  loss, aux, t, u, noise = jax.device_get(loss_and_draws(x0, jax.random.key(3)))
  gammas = ref_buffers(np.linspace(1e-6, 0.01, 2000))["gammas"]
  sample_gammas = (gammas[t] - gammas[t - 1]) * u.astype(np.float64) + gammas[t - 1]
  assert np.all((sample_gammas <= gammas[t - 1]) & (sample_gammas >= gammas[t]))
  g = sample_gammas[:, None, None, None]
  y_noisy = np.sqrt(g) * x0 + np.sqrt(1 - g) * noise
  noise_hat = fake_denoiser(np.concatenate([y_noisy, y_noisy], -1), sample_gammas)
  np.testing.assert_allclose(float(loss), np.mean((noise_hat - noise) ** 2), rtol=1e-4)
  np.testing.assert_allclose(float(aux["mean_noise_level"]), sample_gammas.mean(), rtol=1e-5)


# -- the task -------------------------------------------------------------------------


class FakeDenoiserPalette(palette.PaletteTask):
  def denoiser(self, params, source, train=False, rng=None):
    return lambda y, levels: fake_denoiser(jnp.concatenate([source, y], -1), levels)


def test_translate_is_the_reference_restoration_loop():
  """All test-schedule steps (sample.num_steps = n_timestep): Palette's `restoration` exactly."""
  task = FakeDenoiserPalette(
    tiny_config("palette_scenes.py", "data.source=sketch", "beta_schedule.test.n_timestep=12")
  )
  source = np.asarray(jax.random.uniform(jax.random.key(5), (2, 4, 4, 1), minval=-1.0))
  rng = jax.random.key(6)
  got = fast_jit(lambda s, r: task.translate(None, s, r, num_steps=12))(source, rng)

  buf = ref_buffers(np.linspace(1e-4, 0.09, 12))

  @fast_jit
  def draws(rng):  # y_T, then one split and draw per step, as the scanned sampler
    noise_rng, step_rng = jax.random.split(rng)
    noises = []
    for _ in range(12):
      step_rng, key = jax.random.split(step_rng)
      noises.append(jax.random.normal(key, (2, 4, 4, 3)))
    return jax.random.normal(noise_rng, (2, 4, 4, 3)), jnp.stack(noises)

  y_t, noises = (np.asarray(a, np.float64) for a in draws(rng))
  for i, t in enumerate(reversed(range(12))):
    noise = noises[i]
    noise_hat = fake_denoiser(np.concatenate([source, y_t], -1), np.full(2, buf["gammas"][t]))
    y_t = ref_p_sample(buf, y_t, t, noise_hat, noise)
  np.testing.assert_allclose(np.asarray(got), y_t, atol=1e-4)


def _equations(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for value in param if isinstance(param, (list, tuple)) else [param]:
        if isinstance(value, jax.extend.core.ClosedJaxpr):
          yield from _equations(value.jaxpr)
        elif isinstance(value, jax.extend.core.Jaxpr):
          yield from _equations(value)


@pytest.fixture(scope="module")
def task():
  return palette.PaletteTask(tiny_config("palette_scenes.py"))


def test_sampling_is_one_scan_with_the_unet_inside(task):
  batch = task.abstract_batch(2)
  params = meta.unbox(jax.eval_shape(lambda: task.init(jax.random.key(0), batch)))
  source = jax.ShapeDtypeStruct((2, 16, 16, task.source_channels), jnp.float32)
  closed = jax.make_jaxpr(lambda p, s, r: task.translate(p, s, r, num_steps=7))(
    params, source, jax.random.key(0)
  )
  loops = [e for e in _equations(closed.jaxpr) if e.primitive.name in ("scan", "while")]
  assert len(loops) == 1 and loops[0].params["length"] == 7
  body = list(_equations(loops[0].params["jaxpr"].jaxpr))
  convs = [e for e in body if e.primitive.name == "conv_general_dilated"]
  assert len(convs) == len(
    [e for e in _equations(closed.jaxpr) if e.primitive.name == "conv_general_dilated"]
  )
  assert convs, "the U-Net runs inside the scan"


def test_loss_falls_on_a_fixed_batch(task):
  arrays = task.train_arrays()
  batch = {k: jnp.asarray(v[:4]) for k, v in arrays.items()}
  params = meta.unbox(fast_jit(task.init)(jax.random.key(0), batch))
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(params)
  rng = jax.random.key(1)  # the same levels, noise and dropout every step

  @fast_jit
  def step(params, opt_state):
    (loss, _), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  # zero_module: every residual branch, attention projection and the output conv start at zero,
  # so the fresh U-Net predicts zero noise (loss = E[eps^2] = 1).
  zero = [k for k, v in flatten_dict(params, sep="/").items() if not np.any(np.asarray(v))]
  assert sorted(zero) == sorted(
    k
    for k in flatten_dict(params, sep="/")
    if "bias" in k or "out_layers_3" in k or "proj_out" in k or k.startswith("out_2")
  )
  losses = []
  for _ in range(20):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert abs(losses[0] - 1.0) < 0.1 and losses[-1] < 0.5 * losses[0], losses


def test_faithful_and_scenes_parameter_counts():
  """Palette's network (day -> night: 3 + 3 channels in, as the reference's 6) = the reference count."""
  faithful = tiny_config(
    "palette_scenes.py", "data.source=day", "data.target=night", "data.resolution=256"
  )
  faithful.unet = dict(faithful.unet, **PALETTE_UNET)
  cfg = palette.PaletteTask(faithful).unet_config
  assert (cfg.in_channels, cfg.out_channels) == (6, 3)
  assert adm_unet.parameter_count(cfg) == PALETTE_COUNT
  scenes_config = load_config_file(os.path.join(CONFIGS, "palette_scenes.py"))
  assert adm_unet.parameter_count(palette.PaletteTask(scenes_config).unet_config) == 4_094_979


@pytest.mark.parametrize(
  "overrides, message",
  [
    (["beta_schedule.train.schedule=warmup10"], "beta_schedule.train.schedule: expected one of"),
    (["beta_schedule.test.n_timestep=1"], "beta_schedule.test: num_train_timesteps"),
    (["unet.in_channel=6"], "unet.in_channel: expected 11 for data.source='label'"),
    (["unet.inner_channel=48"], "unet: model_channels x channel_mult"),
    (["data.resolution=18", "unet.channel_mults=(1, 2, 4)"], "data.resolution: .* multiple of 4"),
  ],
)
def test_bad_configs_are_named(overrides, message):
  with pytest.raises(palette.PaletteConfigError, match=message):
    palette.PaletteTask(tiny_config("palette_scenes.py", *overrides))


def test_bad_sampling_options_are_named(task):
  with pytest.raises(SamplingOptionError, match="steps: not a Palette sampling option"):
    task.check_options({"steps": 10})
  with pytest.raises(SamplingOptionError, match=r"num_steps: .*\[1, num_train_timesteps=1000\]"):
    task.check_options({"num_steps": 1001})
  with pytest.raises(SamplingOptionError, match="num_steps"):
    palette.PaletteTask(tiny_config("palette_scenes.py", "sample.num_steps=0"))
