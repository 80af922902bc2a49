"""Samplers: step-by-step parity with diffusers' PyTorch schedulers, one scan, debug loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.diffusion import make_schedule, samplers

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
scheduling_ddpm = pytest.importorskip("diffusers.schedulers.scheduling_ddpm")

SHAPE = (2, 6, 6, 3)  # NHWC; the schedulers are elementwise, so layout does not matter.


def jax_model(x, t):
  """Deterministic stand-in for a denoiser, identical to `torch_model`."""
  t = t.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
  return 0.1 * x * jnp.cos(t / 1000.0) + 0.05 * jnp.sin(t / 100.0)


def torch_model(x, t):
  t = torch.as_tensor(t, dtype=torch.float32)
  return 0.1 * x * torch.cos(t / 1000.0) + 0.05 * torch.sin(t / 100.0)


def initial_noise(seed=0):
  return np.asarray(jax.random.normal(jax.random.key(seed), SHAPE, jnp.float32))


def jax_step_noises(rng, num_steps):
  """The noise the JAX sampler draws at each step, reproduced with its own helper."""
  noises = []
  for _ in range(num_steps):
    rng, noise = samplers.draw_step_noise(rng, SHAPE)
    noises.append(torch.from_numpy(np.array(noise)))
  return noises


def torch_trajectory(scheduler, x_T, num_steps, noises=None, step_kwargs=None, monkeypatch=None):
  """Runs a diffusers scheduler like its pipelines do; returns the latents after each step."""
  scheduler.set_timesteps(num_steps)
  current = {}
  if monkeypatch is not None:
    # DDPMScheduler.step draws its noise with randn_tensor; hand it the JAX step noise instead.
    monkeypatch.setattr(
      scheduling_ddpm, "randn_tensor", lambda shape, **kwargs: current["noise"].reshape(shape)
    )
  x = torch.from_numpy(x_T) * scheduler.init_noise_sigma
  trajectory = []
  for i, t in enumerate(scheduler.timesteps):
    model_input = scheduler.scale_model_input(x, t)
    output = torch_model(model_input, t)
    kwargs = dict(step_kwargs or {})
    if noises is not None:
      current["noise"] = noises[i]
      if monkeypatch is None:
        kwargs["variance_noise"] = noises[i]
    x = scheduler.step(output, t, x, **kwargs).prev_sample
    trajectory.append(x.numpy().copy())
  return np.stack(trajectory)


def run_jax(name, schedule, x_T, rng, num_steps, **options):
  fn = jax.jit(
    lambda x, key: samplers.sample(
      jax_model,
      schedule,
      x,
      key,
      sampler=name,
      num_steps=num_steps,
      return_trajectory=True,
      **options,
    )
  )
  final, trajectory = fn(jnp.asarray(x_T), rng)
  np.testing.assert_array_equal(final, trajectory[-1])
  initial_state = x_T * np.asarray(
    samplers.make_plan(schedule, name, num_steps, **options).init_noise_sigma
  )
  return np.asarray(trajectory), initial_state


def assert_trajectories_close(ours, reference, initial_state, atol=1e-5):
  assert ours.shape == reference.shape, (ours.shape, reference.shape)
  for step, (a, b) in enumerate(zip(ours, reference)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol, err_msg=f"step {step}")


SCHEDULE_KW = {
  "linear": {},
  "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
  "squaredcos_cap_v2": {},
}


@pytest.mark.parametrize(
  "kind, prediction_type, spacing, num_steps, clip",
  [
    ("linear", "epsilon", "leading", 10, False),
    ("squaredcos_cap_v2", "v_prediction", "trailing", 8, False),
    ("scaled_linear", "sample", "linspace", 7, True),
  ],
)
def test_ddpm_matches_diffusers(monkeypatch, kind, prediction_type, spacing, num_steps, clip):
  schedule = make_schedule(kind, **SCHEDULE_KW[kind])
  x_T, rng = initial_noise(1), jax.random.key(7)
  ours, initial_state = run_jax(
    "ddpm",
    schedule,
    x_T,
    rng,
    num_steps,
    prediction_type=prediction_type,
    timestep_spacing=spacing,
    clip_sample=clip,
  )
  reference_scheduler = diffusers.DDPMScheduler(
    beta_schedule=kind,
    prediction_type=prediction_type,
    timestep_spacing=spacing,
    clip_sample=clip,
    **SCHEDULE_KW[kind],
  )
  reference = torch_trajectory(
    reference_scheduler,
    x_T,
    num_steps,
    noises=jax_step_noises(rng, num_steps),
    monkeypatch=monkeypatch,
  )
  assert_trajectories_close(ours, reference, initial_state)


@pytest.mark.parametrize(
  "kind, prediction_type, spacing, eta, set_alpha_to_one, steps_offset",
  [
    ("linear", "epsilon", "leading", 0.0, True, 0),
    ("scaled_linear", "v_prediction", "trailing", 0.0, False, 0),
    ("squaredcos_cap_v2", "epsilon", "leading", 0.7, False, 1),
    ("linear", "sample", "linspace", 1.0, True, 0),
  ],
)
def test_ddim_matches_diffusers(
  kind, prediction_type, spacing, eta, set_alpha_to_one, steps_offset
):
  schedule = make_schedule(kind, **SCHEDULE_KW[kind])
  num_steps = 12
  x_T, rng = initial_noise(2), jax.random.key(3)
  ours, initial_state = run_jax(
    "ddim",
    schedule,
    x_T,
    rng,
    num_steps,
    eta=eta,
    prediction_type=prediction_type,
    timestep_spacing=spacing,
    set_alpha_to_one=set_alpha_to_one,
    steps_offset=steps_offset,
  )
  reference_scheduler = diffusers.DDIMScheduler(
    beta_schedule=kind,
    prediction_type=prediction_type,
    timestep_spacing=spacing,
    set_alpha_to_one=set_alpha_to_one,
    steps_offset=steps_offset,
    clip_sample=False,
    **SCHEDULE_KW[kind],
  )
  noises = jax_step_noises(rng, num_steps) if eta > 0 else None
  reference = torch_trajectory(
    reference_scheduler, x_T, num_steps, noises=noises, step_kwargs={"eta": eta}
  )
  assert_trajectories_close(ours, reference, initial_state)


@pytest.mark.parametrize(
  "kind, prediction_type, spacing, num_steps",
  [
    ("linear", "epsilon", None, 20),
    ("scaled_linear", "v_prediction", "trailing", 20),
    ("squaredcos_cap_v2", "sample", "leading", 10),
    ("scaled_linear", "epsilon", "linspace", 1),
  ],
)
def test_dpm_solver_pp_2m_matches_diffusers(kind, prediction_type, spacing, num_steps):
  schedule = make_schedule(kind, **SCHEDULE_KW[kind])
  x_T = initial_noise(4)
  ours, initial_state = run_jax(
    "dpm_solver_pp_2m",
    schedule,
    x_T,
    None,
    num_steps,
    prediction_type=prediction_type,
    timestep_spacing=spacing,
  )
  reference_scheduler = diffusers.DPMSolverMultistepScheduler(
    beta_schedule=kind,
    prediction_type=prediction_type,
    algorithm_type="dpmsolver++",
    solver_order=2,
    solver_type="midpoint",
    lower_order_final=True,
    **({"timestep_spacing": spacing} if spacing else {}),
    **SCHEDULE_KW[kind],
  )
  reference = torch_trajectory(reference_scheduler, x_T, num_steps)
  assert_trajectories_close(ours, reference, initial_state)


@pytest.mark.parametrize(
  "kind, prediction_type, spacing, num_steps",
  [
    ("scaled_linear", "epsilon", None, 25),
    ("linear", "v_prediction", "leading", 25),
    ("scaled_linear", "sample", "trailing", 9),
    ("squaredcos_cap_v2", "epsilon", "trailing", 9),
  ],
)
def test_euler_matches_diffusers(kind, prediction_type, spacing, num_steps):
  schedule = make_schedule(kind, **SCHEDULE_KW[kind])
  x_T = initial_noise(5)
  ours, initial_state = run_jax(
    "euler",
    schedule,
    x_T,
    None,
    num_steps,
    prediction_type=prediction_type,
    timestep_spacing=spacing,
  )
  reference_scheduler = diffusers.EulerDiscreteScheduler(
    beta_schedule=kind,
    prediction_type=prediction_type,
    **({"timestep_spacing": spacing} if spacing else {}),
    **SCHEDULE_KW[kind],
  )
  reference = torch_trajectory(reference_scheduler, x_T, num_steps)
  atol = 1e-5
  if kind == "squaredcos_cap_v2":
    # sigma_max ~ 2e4: the state starts at |x| ~ 6e4, where a float32 ulp is
    # 4e-3, and diffusers' x + derivative * dt keeps that absolute rounding.
    atol = 4 * float(np.spacing(np.abs(initial_state).max()))
  assert_trajectories_close(ours, reference, initial_state, atol=atol)


def _linear_kw(kind):
  # Spelled out: HeunDiscreteScheduler's defaults are 0.00085..0.012, not DDPM's.
  return {"beta_start": 0.0001, "beta_end": 0.02} if kind == "linear" else SCHEDULE_KW[kind]


@pytest.mark.parametrize(
  "name, scheduler, kind, prediction_type, num_steps, options",
  [
    # SD 1.5's shipped scheduler: PLMS, leading spacing, steps_offset 1.
    ("pndm", "PNDMScheduler", "scaled_linear", "epsilon", 10, {"steps_offset": 1}),
    (
      "pndm",
      "PNDMScheduler",
      "linear",
      "v_prediction",
      7,
      {"timestep_spacing": "linspace", "set_alpha_to_one": True},
    ),
    ("pndm", "PNDMScheduler", "linear", "epsilon", 1, {}),
    ("pndm", "PNDMScheduler", "squaredcos_cap_v2", "epsilon", 2, {}),
    ("euler_ancestral", "EulerAncestralDiscreteScheduler", "scaled_linear", "epsilon", 10, {}),
    (
      "euler_ancestral",
      "EulerAncestralDiscreteScheduler",
      "linear",
      "v_prediction",
      8,
      {"timestep_spacing": "leading", "steps_offset": 1},
    ),
    ("dpm_solver_pp_2m_karras", "DPMSolverMultistepScheduler", "scaled_linear", "epsilon", 12, {}),
    ("dpm_solver_pp_2m_karras", "DPMSolverMultistepScheduler", "linear", "v_prediction", 5, {}),
    ("heun", "HeunDiscreteScheduler", "scaled_linear", "epsilon", 6, {}),
    (
      "heun",
      "HeunDiscreteScheduler",
      "linear",
      "v_prediction",
      5,
      {"timestep_spacing": "trailing"},
    ),
    ("lms", "LMSDiscreteScheduler", "scaled_linear", "epsilon", 10, {}),
    ("lms", "LMSDiscreteScheduler", "linear", "v_prediction", 6, {"timestep_spacing": "leading"}),
    ("unipc", "UniPCMultistepScheduler", "scaled_linear", "epsilon", 10, {}),
    ("unipc", "UniPCMultistepScheduler", "linear", "v_prediction", 3, {}),
    ("unipc", "UniPCMultistepScheduler", "squaredcos_cap_v2", "sample", 1, {}),
    ("unipc", "UniPCMultistepScheduler", "linear", "epsilon", 2, {"timestep_spacing": "trailing"}),
  ],
)
def test_sd_samplers_match_diffusers(
  monkeypatch, name, scheduler, kind, prediction_type, num_steps, options
):
  schedule = make_schedule(kind, **SCHEDULE_KW[kind])
  x_T, rng = initial_noise(6), jax.random.key(11)
  ours, initial_state = run_jax(
    name, schedule, x_T, rng, num_steps, prediction_type=prediction_type, **options
  )
  plan = samplers.make_plan(schedule, name, num_steps, prediction_type=prediction_type, **options)
  reference_options = {"set_alpha_to_one": False, "skip_prk_steps": True} if name == "pndm" else {}
  if name == "dpm_solver_pp_2m_karras":
    reference_options = {"use_karras_sigmas": True}
  reference_scheduler = getattr(diffusers, scheduler)(
    beta_schedule=kind,
    prediction_type=prediction_type,
    **{**reference_options, **options},
    **_linear_kw(kind),
  )
  if plan.stochastic:
    # Euler ancestral draws its noise with randn_tensor: hand it the JAX sampler's step noise.
    noises = iter(jax_step_noises(rng, plan.num_steps))
    monkeypatch.setattr(
      diffusers.schedulers.scheduling_euler_ancestral_discrete,
      "randn_tensor",
      lambda shape, **kwargs: next(noises).reshape(shape),
    )
  reference = torch_trajectory(reference_scheduler, x_T, num_steps)
  # One model evaluation per row: the timesteps the model sees are diffusers' (PLMS repeats one,
  # Heun evaluates each but the first twice).
  np.testing.assert_array_equal(
    plan.table.timestep, reference_scheduler.timesteps.numpy().astype(plan.table.timestep.dtype)
  )
  # Sigma-space states start at |x| ~ sigma_max |x_T|; their absolute rounding follows.
  atol = max(1e-5, 8 * float(np.spacing(np.abs(initial_state).max())))
  error = float(np.abs(ours - reference).max())
  print(
    f"{name} parity: max abs {error:.1e}, relative to max |x| {error / np.abs(reference).max():.1e}"
  )
  assert_trajectories_close(ours, reference, initial_state, atol=atol)


def test_euler_passes_fractional_timesteps():
  schedule = make_schedule("linear")
  seen = []

  def model(x, t):
    seen.append(t)
    return jax_model(x, t)

  plan = samplers.make_plan(schedule, "euler", 25)
  jax.jit(lambda x: samplers.run_sampler(model, plan, x))(jnp.asarray(initial_noise()))
  assert seen[0].dtype == jnp.float32 and seen[0].shape == (SHAPE[0],)
  reference = diffusers.EulerDiscreteScheduler()
  reference.set_timesteps(25)
  np.testing.assert_array_equal(plan.table.timestep, reference.timesteps.numpy())
  assert np.any(plan.table.timestep != np.round(plan.table.timestep))


# ---------------------------------------------------------------------------
# Program structure: one scan with the model inside, no branches, debug loop.
# ---------------------------------------------------------------------------


def _sub_jaxprs(eqn):
  for param in eqn.params.values():
    for value in param if isinstance(param, (list, tuple)) else [param]:
      if isinstance(value, jax.extend.core.ClosedJaxpr):
        yield value.jaxpr
      elif isinstance(value, jax.extend.core.Jaxpr):
        yield value


def _equations(jaxpr):
  """All equations of a jaxpr, recursively, with the nesting depth of scans above them."""
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in _sub_jaxprs(eqn):
      yield from _equations(sub)


def _named_calls(jaxpr, name):
  return [
    e
    for e in _equations(jaxpr)
    if e.primitive.name in ("pjit", "jit") and e.params.get("name") == name
  ]


@pytest.mark.parametrize(
  "name, options",
  [
    ("ddpm", {}),
    ("ddim", {"eta": 0.0}),
    ("ddim", {"eta": 0.5}),
    ("dpm_solver_pp_2m", {}),
    ("euler", {}),
    ("pndm", {}),
    ("euler_ancestral", {}),
    ("dpm_solver_pp_2m_karras", {}),
    ("heun", {}),
    ("lms", {}),
    ("unipc", {}),
  ],
)
def test_sampler_is_one_scan_over_steps_with_model_inside(name, options):
  schedule = make_schedule("linear")
  num_steps = 6

  @jax.jit
  def noise_model(x, t):
    return jax_model(x, t)

  def generate(x, key):
    return samplers.sample(
      noise_model, schedule, x, key, sampler=name, num_steps=num_steps, **options
    )

  x_T, rng = jnp.asarray(initial_noise()), jax.random.key(0)
  closed = jax.make_jaxpr(jax.jit(generate))(x_T, rng)
  equations = list(_equations(closed.jaxpr))
  scans = [e for e in equations if e.primitive.name == "scan"]
  assert len(scans) == 1
  # One row per model evaluation: PLMS has num_steps + 1, Heun 2 num_steps - 1.
  num_rows = samplers.make_plan(schedule, name, num_steps, **options).num_steps
  assert scans[0].params["length"] == num_rows == {"pndm": 7, "heun": 11}.get(name, num_steps)
  assert not [e for e in equations if e.primitive.name in ("cond", "switch", "while")]
  # The model is called exactly once, inside the scanned body.
  assert len(_named_calls(closed.jaxpr, "noise_model")) == 1
  assert len(_named_calls(scans[0].params["jaxpr"].jaxpr, "noise_model")) == 1

  scanned = jax.jit(generate)(x_T, rng)
  looped = samplers.sample(
    noise_model,
    schedule,
    x_T,
    rng,
    sampler=name,
    num_steps=num_steps,
    debug_python_loop=True,
    **options,
  )
  # Fused and eager arithmetic round differently; sigma-space states start at |x| ~ sigma_max.
  scale = max(1.0, float(samplers.make_plan(schedule, name, num_steps, **options).init_noise_sigma))
  np.testing.assert_allclose(looped, scanned, rtol=1e-5, atol=1e-6 * scale)


def test_debug_loop_trajectory_equals_scan():
  schedule = make_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
  x_T, rng = jnp.asarray(initial_noise()), jax.random.key(1)
  kwargs = {"sampler": "ddpm", "num_steps": 5, "return_trajectory": True}
  final_scan, traj_scan = jax.jit(
    lambda x, k: samplers.sample(jax_model, schedule, x, k, **kwargs)
  )(x_T, rng)
  final_loop, traj_loop = samplers.sample(
    jax_model, schedule, x_T, rng, debug_python_loop=True, **kwargs
  )
  assert traj_scan.shape == (5,) + SHAPE
  np.testing.assert_allclose(traj_loop, traj_scan, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(final_loop, final_scan, rtol=1e-6, atol=1e-6)


def test_stochastic_samplers_depend_only_on_rng():
  # (Euler ancestral's noise is draw_step_noise's too: its parity test feeds diffusers that noise.)
  schedule = make_schedule("linear")
  x_T = jnp.asarray(initial_noise())
  run = jax.jit(
    lambda key: samplers.sample(jax_model, schedule, x_T, key, sampler="ddpm", num_steps=4)
  )
  np.testing.assert_array_equal(run(jax.random.key(0)), run(jax.random.key(0)))
  assert not np.allclose(run(jax.random.key(0)), run(jax.random.key(1)))


@pytest.mark.parametrize(
  "named, sampler, num_steps",
  [
    (samplers.ddpm_sample, "ddpm", 50),
    (samplers.ddim_sample, "ddim", 50),
    (samplers.dpm_solver_pp_2m_sample, "dpm_solver_pp_2m", 20),
    (samplers.euler_sample, "euler", 50),
  ],
)
def test_named_samplers_are_sample_with_the_sampler_bound(named, sampler, num_steps):
  schedule = make_schedule("linear")
  x_T, rng = jnp.asarray(initial_noise()), jax.random.key(3)
  _, trajectory = named(jax_model, schedule, x_T, rng, return_trajectory=True)
  assert trajectory.shape == (num_steps,) + SHAPE
  expected = samplers.sample(jax_model, schedule, x_T, rng, sampler=sampler, num_steps=3)
  np.testing.assert_array_equal(named(jax_model, schedule, x_T, rng, num_steps=3), expected)


# ---------------------------------------------------------------------------
# Argument validation happens before anything is traced.
# ---------------------------------------------------------------------------


def _never_called(x, t):
  raise AssertionError("model_fn must not be traced for invalid arguments")


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"sampler": "plms"}, "sampler"),
    ({"sampler": "pndm", "prediction_type": "sample"}, "prediction_type"),
    ({"sampler": "euler_ancestral", "rng": None}, "rng"),
    ({"sampler": "lms", "eta": 0.5}, "eta"),
    ({"num_steps": 0}, "num_steps"),
    ({"num_steps": 1001}, "num_steps"),
    ({"num_steps": 2.5}, "num_steps"),
    ({"prediction_type": "eps"}, "prediction_type"),
    ({"timestep_spacing": "uniform"}, "timestep_spacing"),
    ({"sampler": "euler", "eta": 0.5}, "eta"),
    ({"sampler": "ddim", "eta": -1.0}, "eta"),
    ({"sampler": "ddpm", "rng": None}, "rng"),
    ({"sampler": "ddim", "eta": 0.3, "rng": None}, "rng"),
    ({"sampler": "ddim", "steps_offset": 200, "num_steps": 5}, "steps_offset"),
    (
      {"sampler": "dpm_solver_pp_2m", "num_steps": 1000, "timestep_spacing": "leading"},
      "num_steps",
    ),
  ],
)
def test_bad_arguments_raise_named_value_errors(kwargs, match):
  schedule = make_schedule("linear")
  kwargs = dict(kwargs)
  rng = kwargs.pop("rng", jax.random.key(0))
  with pytest.raises(ValueError, match=match):
    samplers.sample(_never_called, schedule, jnp.zeros(SHAPE), rng, **kwargs)
