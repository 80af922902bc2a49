"""Image-to-image and inpainting: plan truncation vs diffusers, strength, known regions, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_latent_diffusion_training import fit, tiny_latent_task

from jaxgen.diffusion import editing, samplers, schedules
from jaxgen.data.images import to_uint8

SCHEDULE = schedules.make_schedule("squaredcos_cap_v2", 1000)
PREDICTION = "v_prediction"


def analytic_model(x, t):
  """A nonlinear stand-in for a denoiser, also written in torch below."""
  return 0.7 * jnp.tanh(x) + 1e-3 * t.astype(jnp.float32).reshape(-1, 1, 1, 1)


def _x0_and_noise(shape=(2, 4, 4, 3)):
  x0 = jax.random.uniform(jax.random.PRNGKey(0), shape, minval=-1, maxval=1)
  return x0, jax.random.normal(jax.random.PRNGKey(1), shape)


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_full_strength_edit_is_the_plain_sampler(sampler):
  plan = samplers.make_plan(SCHEDULE, sampler, 8, prediction_type=PREDICTION)
  x0, noise = _x0_and_noise()
  rng = jax.random.PRNGKey(2) if plan.stochastic else None
  want = samplers.run_sampler(analytic_model, plan, noise, rng)
  got = editing.edit(analytic_model, plan, SCHEDULE, x0, noise, rng, strength=1.0)
  np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddim", "dpm_solver_pp_2m", "euler"])
def test_img2img_matches_diffusers_img2img_loop(sampler):
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  num_steps, strength = 10, 0.6
  common = dict(
    num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=PREDICTION
  )
  scheduler = {
    "ddim": lambda: diffusers.DDIMScheduler(clip_sample=False, **common),
    "dpm_solver_pp_2m": lambda: diffusers.DPMSolverMultistepScheduler(**common),
    "euler": lambda: diffusers.EulerDiscreteScheduler(**common),
  }[sampler]()
  x0, noise = _x0_and_noise()
  plan = samplers.make_plan(SCHEDULE, sampler, num_steps, prediction_type=PREDICTION)
  got = editing.edit(analytic_model, plan, SCHEDULE, x0, noise, strength=strength)

  # diffusers' StableDiffusionImg2ImgPipeline loop, NCHW.
  scheduler.set_timesteps(num_steps)
  t_start = num_steps - editing.num_edit_steps(num_steps, strength)
  timesteps = scheduler.timesteps[t_start * scheduler.order :]
  if hasattr(scheduler, "set_begin_index"):  # as the pipeline does
    scheduler.set_begin_index(t_start * scheduler.order)
  to_torch = lambda a: torch.from_numpy(np.asarray(a).transpose(0, 3, 1, 2).copy())
  latents = scheduler.add_noise(to_torch(x0), to_torch(noise), timesteps[:1])
  for t in timesteps:
    model_input = scheduler.scale_model_input(latents, t)
    prediction = 0.7 * torch.tanh(model_input) + 1e-3 * t.float()
    latents = scheduler.step(prediction, t, latents).prev_sample
  np.testing.assert_allclose(got, latents.numpy().transpose(0, 2, 3, 1), atol=2e-5)


def test_zero_strength_and_known_region_are_exact():
  x0, noise = _x0_and_noise()
  plan = samplers.make_plan(SCHEDULE, "dpm_solver_pp_2m", 8, prediction_type=PREDICTION)
  assert editing.edit(analytic_model, plan, SCHEDULE, x0, noise, strength=0.0) is x0
  keep = jnp.zeros(x0.shape[:3] + (1,)).at[:, 1:3, 1:3].set(1.0)  # 1 = generate
  out = editing.edit(analytic_model, plan, SCHEDULE, x0, noise, strength=1.0, keep_mask=keep)
  known = np.asarray(keep[..., 0]) == 0
  np.testing.assert_array_equal(np.asarray(out)[known], np.asarray(x0)[known])
  assert not np.allclose(np.asarray(out)[~known], np.asarray(x0)[~known], atol=1e-2)


def test_named_errors_before_anything_compiles():
  for bad in (1.5, -0.1, "0.5", True):
    with pytest.raises(ValueError, match="strength: expected"):
      editing.check_strength(bad)
  like = jnp.zeros((2, 16, 16, 3))
  with pytest.raises(ValueError, match=r"mask: expected shape \(2, 16, 16\)"):
    editing.check_mask(jnp.zeros((2, 8, 8)), like)
  with pytest.raises(ValueError, match=r"mask: expected shape"):
    editing.check_mask(jnp.zeros((2, 16, 16, 3)), like)


@pytest.fixture(scope="module")
def plain_task():
  task, params, batch = tiny_latent_task()
  images = np.asarray(batch["image"][:2])
  return task, params, images, ["a small red circle in the top left"] * 2


def test_task_edit_rejects_bad_inputs_by_name(plain_task):
  task, params, images, captions = plain_task
  rng = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="strength: expected a number in"):
    task.edit(params, images, captions, rng, strength=2.0)
  with pytest.raises(ValueError, match="mask: expected shape"):
    task.edit(params, images, captions, rng, mask=np.ones((2, 4, 4)))
  with pytest.raises(ValueError, match=r"images: expected uint8 \(B, 8, 8, 3\)"):
    task.edit(params, images[:, :4], captions, rng)
  with pytest.raises(ValueError, match="captions: expected one per image"):
    task.edit(params, images, captions[:1], rng)


def test_img2img_strength_towards_zero_returns_the_reconstruction(plain_task):
  task, params, images, captions = plain_task
  x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
  reconstruction = to_uint8(np.asarray(task.autoencoder.decode(task.autoencoder.encode(x))))
  rng = jax.random.PRNGKey(3)
  edit = lambda s, n: task.edit(params, images, captions, rng, strength=s, num_steps=n)
  distance = lambda out: np.abs(out.astype(int) - reconstruction).mean()
  np.testing.assert_array_equal(edit(0.0, 3), reconstruction)
  # One step of 100 from t ~ 10 (sigma ~ 0.03) vs a full edit from noise,
  # with a random-weight U-Net: the small edit stays near the reconstruction.
  assert distance(edit(0.01, 100)) < 0.25 * distance(edit(1.0, 3))


def test_plain_model_inpainting_keeps_the_unmasked_region(plain_task):
  task, params, images, captions = plain_task
  mask = np.zeros(images.shape[:3], np.float32)
  mask[:, 2:6, 2:6] = 1.0
  out = task.edit(params, images, captions, jax.random.PRNGKey(4), mask=mask)
  np.testing.assert_array_equal(out[mask == 0], images[mask == 0])
  assert np.abs(out[mask == 1].astype(int) - images[mask == 1]).mean() > 1.0


def test_inpainting_channel_model_trains_and_keeps_the_unmasked_region():
  factor = tiny_latent_task()[0].autoencoder.config.scaling_factor  # measured once, reused
  task, params, batch = tiny_latent_task(
    "model.inpainting=True", "unet.in_channels=11", f"autoencoder.scaling_factor={factor!r}"
  )
  assert task.unet_input_channels == 9
  params, losses = fit(task, params, batch, 10)
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
  images = np.asarray(batch["image"][:2])
  mask = np.zeros(images.shape[:3], np.float32)
  mask[:, :4] = 1.0
  out = task.edit(
    params,
    images,
    ["a large green triangle in the top right"] * 2,
    jax.random.PRNGKey(5),
    mask=mask,
    num_steps=3,
  )
  np.testing.assert_array_equal(out[mask == 0], images[mask == 0])
