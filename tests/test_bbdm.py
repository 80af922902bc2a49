"""BBDM: the Brownian bridge against a numpy transcription of the reference, one scan, the task.

The reference is xuekt98/BBDM (`model/BrownianBridge/BrownianBridgeModel.py`):
`register_schedule`, `q_sample`, `predict_x0_from_objective` and `p_sample`
are transcribed below in float64 numpy, line by line.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.linen import meta
from tiny_configs import CONFIGS, tiny_config

from jaxgen.configuration import load_config_file
from jaxgen.data import scenes
from jaxgen.diffusion import bridge
from jaxgen.models.adm_unet import parameter_count
from jaxgen.models.autoencoder import AutoencoderKL, AutoencoderKLConfig
from jaxgen.pipelines.frozen_autoencoder import FrozenAutoencoder
from jaxgen.tasks.image_to_image import bbdm
from jaxgen.tasks.registry import DependentRunError

SHAPE = (2, 4, 4, 3)


# -- a numpy transcription of the reference ----------------------------------------


def ref_schedule(num_timesteps, max_var=1.0, dtype=np.float64):
  """m_t and variance_t; the reference registers them as float32 buffers (dtype=np.float32)."""
  m_t = np.linspace(0.001, 0.999, num_timesteps)
  variance_t = 2.0 * (m_t - m_t**2) * max_var
  return m_t.astype(dtype), variance_t.astype(dtype)


def ref_steps(num_timesteps, sample_step):
  midsteps = np.arange(num_timesteps - 1, 1, -((num_timesteps - 1) // (sample_step - 2)))
  return np.concatenate([midsteps, [1, 0]])


def ref_predict_x0(objective, x_t, y, m_t, var_t, objective_recon):
  if objective == "grad":
    return x_t - objective_recon
  if objective == "noise":
    return (x_t - m_t * y - np.sqrt(var_t) * objective_recon) / (1.0 - m_t)
  return y - objective_recon


def ref_p_sample(x_t, y, i, steps, m, var, objective_recon, noise, objective, eta, clip):
  t = steps[i]
  x0_recon = ref_predict_x0(objective, x_t, y, m[t], var[t], objective_recon)
  if clip:
    x0_recon = np.clip(x0_recon, -1.0, 1.0)
  if t == 0:
    return x0_recon
  n_t = steps[i + 1]
  m_t, m_nt, var_t, var_nt = m[t], m[n_t], var[t], var[n_t]
  sigma2_t = (var_t - var_nt * (1.0 - m_t) ** 2 / (1.0 - m_nt) ** 2) * var_nt / var_t
  sigma_t = np.sqrt(sigma2_t) * eta
  x_tminus_mean = (
    (1.0 - m_nt) * x0_recon
    + m_nt * y
    + np.sqrt((var_nt - sigma2_t) / var_t) * (x_t - (1.0 - m_t) * x0_recon - m_t * y)
  )
  return x_tminus_mean + sigma_t * noise


def np_model(x, t):
  return 0.3 * x * np.cos(t / 1000.0) + 0.05 * np.sin(t / 100.0)


def jax_model(x, t):
  t = t.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
  return 0.3 * x * jnp.cos(t / 1000.0) + 0.05 * jnp.sin(t / 100.0)


def normal(seed, shape=SHAPE, dtype=np.float64):
  return np.asarray(jax.random.normal(jax.random.key(seed), shape), dtype)


# -- schedule and forward process ------------------------------------------------------


def test_schedule_matches_the_reference_with_its_endpoints():
  schedule = bridge.make_bridge_schedule(1000, "linear", max_var=1.0)
  m, var = ref_schedule(1000)
  np.testing.assert_allclose(schedule.m_t, m, rtol=1e-6)
  np.testing.assert_allclose(schedule.variance_t, var, rtol=1e-6)
  assert float(schedule.m_t[0]) == pytest.approx(0.001) and float(schedule.m_t[-1]) == (
    pytest.approx(0.999)
  )
  # delta is largest (s / 2) in the middle and 2 s (0.001 - 0.001^2) at both ends.
  assert float(schedule.variance_t[0]) == pytest.approx(0.001998, rel=1e-5)
  assert float(schedule.variance_t[-1]) == pytest.approx(0.001998, rel=1e-5)
  assert float(jnp.max(schedule.variance_t)) == pytest.approx(0.5, rel=1e-5)
  half = bridge.make_bridge_schedule(1000, max_var=0.5)
  np.testing.assert_allclose(half.variance_t, var / 2, rtol=1e-6)


def test_marginal_starts_at_x0_and_ends_near_y():
  schedule = bridge.make_bridge_schedule(1000)
  x0, y, noise = normal(0), normal(1), normal(2)
  ends = jnp.array([0, 999])

  def at(t):
    return np.asarray(bridge.q_sample(schedule, x0, y, jnp.full((2,), t), noise))

  start, end = at(0), at(999)
  sd = np.sqrt(0.001998)
  np.testing.assert_allclose(start, 0.999 * x0 + 0.001 * y + sd * noise, atol=1e-5)
  np.testing.assert_allclose(end, 0.001 * x0 + 0.999 * y + sd * noise, atol=1e-5)
  assert np.max(np.abs(start - x0)) < 0.002 * np.max(np.abs(x0 - y)) + 0.05 * np.max(np.abs(noise))
  assert np.max(np.abs(end - y)) < 0.002 * np.max(np.abs(x0 - y)) + 0.05 * np.max(np.abs(noise))
  # Per example t: each row gets its own m_t.
  mixed = np.asarray(bridge.q_sample(schedule, x0, y, ends, noise))
  np.testing.assert_allclose(mixed[0], start[0], atol=1e-6)
  np.testing.assert_allclose(mixed[1], end[1], atol=1e-6)


@pytest.mark.parametrize("objective", bridge.OBJECTIVES)
def test_targets_and_x0_recovery_match_the_reference(objective):
  schedule = bridge.make_bridge_schedule(1000)
  m, var = ref_schedule(1000)
  x0, y, noise = normal(3), normal(4), normal(5)
  t = np.array([17, 803])
  target = bridge.training_target(objective, schedule, x0, y, jnp.asarray(t), noise)
  mt, vt = m[t][:, None, None, None], var[t][:, None, None, None]
  x_t = (1 - mt) * x0 + mt * y + np.sqrt(vt) * noise  # the reference's q_sample
  expected = {"grad": mt * (y - x0) + np.sqrt(vt) * noise, "noise": noise, "ysubx": y - x0}
  np.testing.assert_allclose(target, expected[objective], atol=1e-5)
  # x0 comes back exactly from the true target.
  recovered = bridge.predict_x0(objective, mt, vt, x_t, y, np.asarray(target, np.float64))
  np.testing.assert_allclose(recovered, x0, atol=1e-4)


# -- the sampler ------------------------------------------------------------------


def test_skip_steps_are_the_reference_ones():
  steps = bridge.sampling_timesteps(1000, 200)
  np.testing.assert_array_equal(steps, ref_steps(1000, 200))
  assert len(steps) == 202 and steps[0] == 999 and list(steps[-3:]) == [4, 1, 0]
  np.testing.assert_array_equal(
    bridge.sampling_timesteps(5, 200, skip_sample=False), [4, 3, 2, 1, 0]
  )


@pytest.mark.parametrize(
  "objective, eta, clip", [("grad", 1.0, True), ("noise", 0.5, False), ("ysubx", 0.0, True)]
)
def test_posterior_step_matches_the_reference_p_sample(objective, eta, clip):
  # In float32, as the reference runs (float32 buffers and tensors).
  schedule = bridge.make_bridge_schedule(1000)
  m, var = ref_schedule(1000, dtype=np.float32)
  steps = ref_steps(1000, 200)
  table = bridge.make_step_table(schedule, steps)
  y = normal(6, dtype=np.float32)
  for i in (0, 57, 199, 200, 201):  # first, middle, t=4 -> 1, t=1 -> 0, the final t=0
    x_t, output, noise = (normal(k + i, dtype=np.float32) for k in (10, 20, 30))
    row = jax.tree.map(lambda a, i=i: a[i], table)
    got, _ = bridge.bridge_step(objective, row, x_t, y, output, noise, eta=eta, clip_denoised=clip)
    want = ref_p_sample(x_t, y, i, steps, m, var, output, noise, objective, eta, clip)
    assert want.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"step {i} (t={steps[i]})")


def test_scanned_sampler_equals_the_reference_loop():
  num_timesteps, sample_step, eta = 50, 10, 1.0
  schedule = bridge.make_bridge_schedule(num_timesteps)
  m, var = ref_schedule(num_timesteps)
  steps = ref_steps(num_timesteps, sample_step)
  y, rng = normal(7), jax.random.key(3)
  got = jax.jit(
    lambda y, rng: bridge.bridge_sample(
      jax_model, schedule, y, rng, objective="grad", sample_step=sample_step, eta=eta
    )
  )(jnp.asarray(y, jnp.float32), rng)
  keys = jax.random.split(rng, len(steps))  # the sampler's per-step noise
  x = y
  for i, t in enumerate(steps):
    noise = np.asarray(jax.random.normal(keys[i], SHAPE), np.float64)
    x = ref_p_sample(x, y, i, steps, m, var, np_model(x, t), noise, "grad", eta, True)
  np.testing.assert_allclose(got, x, atol=1e-4)


def _equations(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for value in param if isinstance(param, (list, tuple)) else [param]:
        if isinstance(value, jax.extend.core.ClosedJaxpr):
          yield from _equations(value.jaxpr)
        elif isinstance(value, jax.extend.core.Jaxpr):
          yield from _equations(value)


def _calls(jaxpr, name):
  return [
    e
    for e in _equations(jaxpr)
    if e.primitive.name in ("pjit", "jit") and e.params.get("name") == name
  ]


def test_sampler_is_one_scan_with_the_model_inside():
  schedule = bridge.make_bridge_schedule(1000)

  @jax.jit
  def denoiser(x, t):
    return jax_model(x, t)

  def generate(y, rng):
    return bridge.bridge_sample(denoiser, schedule, y, rng, sample_step=200)

  closed = jax.make_jaxpr(jax.jit(generate))(jnp.zeros(SHAPE), jax.random.key(0))
  equations = list(_equations(closed.jaxpr))
  scans = [e for e in equations if e.primitive.name == "scan"]
  assert len(scans) == 1 and scans[0].params["length"] == 202
  assert not [e for e in equations if e.primitive.name in ("cond", "switch", "while")]
  assert len(_calls(closed.jaxpr, "denoiser")) == 1
  assert len(_calls(scans[0].params["jaxpr"].jaxpr, "denoiser")) == 1


# -- named errors ------------------------------------------------------------------


@pytest.mark.parametrize(
  "call, message",
  [
    (lambda: bridge.make_bridge_schedule(1), "num_timesteps: expected an int >= 2"),
    (lambda: bridge.make_bridge_schedule(1000, "cosine"), "mt_type: expected one of"),
    (lambda: bridge.make_bridge_schedule(1000, max_var=0.0), "max_var: expected a number > 0"),
    (lambda: bridge.sampling_timesteps(1000, 2), "sample_step: expected an int >= 3"),
    (lambda: bridge.sampling_timesteps(10, 20), "sample_step: expected at most"),
    (lambda: bridge.check_objective("eps"), "objective: expected one of"),
    (lambda: bridge.check_loss_type("huber"), "loss_type: expected one of"),
    (lambda: bridge.check_sampling(200, -1.0, "grad", 1000), "eta: expected a number >= 0"),
  ],
)
def test_bad_bridge_options_are_named(call, message):
  with pytest.raises(bridge.BridgeConfigError, match=message):
    call()


# -- the task ------------------------------------------------------------------------

# Template-LBBDM-f4.yaml's UNetParams, as the reference passes them to UNetModel.
LBBDM_F4_UNET = {
  "image_size": 64,
  "in_channels": 6,
  "model_channels": 128,
  "out_channels": 3,
  "num_res_blocks": 2,
  "attention_resolutions": (32, 16, 8),
  "channel_mult": (1, 4, 8),
  "conv_resample": True,
  "dims": 2,
  "num_heads": 8,
  "num_head_channels": 64,
  "use_scale_shift_norm": True,
  "resblock_updown": True,
  "use_spatial_transformer": False,
  "context_dim": None,
  "condition_key": "SpatialRescaler",
}


def reference_unet_count(in_ch, mc, out_ch, num_res_blocks, attention, mult):
  """Parameters of BBDM's `UNetModel` (openaimodel.py), layer by layer, with scale-shift
  norm and residual up/down blocks; attention where the downsample rate ds is in `attention`."""
  emb = 4 * mc
  conv = lambda i, o, k: k * k * i * o + o
  norm = lambda c: 2 * c

  def res(i, o=None):
    o = o or i
    n = norm(i) + conv(i, o, 3) + emb * 2 * o + 2 * o + norm(o) + conv(o, o, 3)
    return n + (conv(i, o, 1) if o != i else 0)

  def attn(c):
    return norm(c) + 3 * c * c + 3 * c + c * c + c

  total = mc * emb + emb + emb * emb + emb + conv(in_ch, mc, 3)  # time_embed, input conv
  chans, ch, ds = [mc], mc, 1
  for level, m in enumerate(mult):
    for _ in range(num_res_blocks):
      total += res(ch, m * mc) + (attn(m * mc) if ds in attention else 0)
      ch = m * mc
      chans.append(ch)
    if level != len(mult) - 1:
      total += res(ch)
      chans.append(ch)
      ds *= 2
  total += res(ch) + attn(ch) + res(ch)  # middle block
  for level, m in list(enumerate(mult))[::-1]:
    for i in range(num_res_blocks + 1):
      total += res(ch + chans.pop(), mc * m) + (attn(mc * m) if ds in attention else 0)
      ch = mc * m
      if level and i == num_res_blocks:
        total += res(ch)
        ds //= 2
  return total + norm(ch) + conv(mc, out_ch, 3)


def test_lbbdm_f4_count_equals_the_reference():
  config = bbdm.unet_config(LBBDM_F4_UNET)
  assert config.attention_levels == ()  # ds in {1, 2, 4} never meets (32, 16, 8)
  expected = reference_unet_count(6, 128, 3, 2, (32, 16, 8), (1, 4, 8))
  assert expected == 237_094_787
  # U-Net + condition stage (SpatialRescaler: a bias-free 1x1 conv 3 -> 3), by jax.eval_shape.
  denoiser = bbdm.BridgeDenoiser(config, rescale_stages=2)
  variables = jax.eval_shape(
    lambda: denoiser.init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1,)), jnp.zeros((1, 256, 256, 3))
    )
  )
  params = meta.unbox(variables)["params"]
  count = lambda tree: sum(leaf.size for leaf in jax.tree_util.tree_leaves(tree))
  assert count(params["denoise_fn"]) == expected
  assert count(params["cond_stage_model"]) == 9


def test_scenes_config_is_the_reference_architecture_at_cpu_size():
  full = bbdm.unet_config(load_config_file(os.path.join(CONFIGS, "bbdm_scenes.py")).unet)
  assert parameter_count(full) == reference_unet_count(6, 32, 3, 1, (32, 16, 8), (1, 2, 4))
  assert parameter_count(full) == 2_963_907


def test_sources_become_rgb_pictures_like_pil_convert():
  labels = np.array([[[[0], [1]], [[2], [scenes.NUM_LABELS - 1]]]], np.uint8)
  one_hot = jax.nn.one_hot(labels[..., 0], scenes.NUM_LABELS)
  rgb = bbdm.source_image("label", one_hot)
  np.testing.assert_allclose(rgb, scenes.LABEL_COLOURS[labels[..., 0]] / 127.5 - 1.0, atol=1e-6)
  grey = jnp.asarray([[[[0.5], [-1.0]]]])
  np.testing.assert_array_equal(bbdm.source_image("sketch", grey), jnp.repeat(grey, 3, axis=-1))


@pytest.fixture(scope="module")
def pixel_task():
  return bbdm.BBDMTask(tiny_config("bbdm_scenes.py", "data.source=sketch"))


def test_loss_falls_on_a_fixed_batch(pixel_task):
  arrays = pixel_task.train_arrays()
  batch = {k: jnp.asarray(v[:4]) for k, v in arrays.items()}
  params = meta.unbox(pixel_task.init(jax.random.key(0), batch))
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(params)
  rng = jax.random.key(1)  # the same t and noise every step

  @jax.jit
  def step(params, opt_state):
    (loss, _), grads = jax.value_and_grad(pixel_task.loss, has_aux=True)(params, batch, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for _ in range(20):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.6 * losses[0], losses
  out = pixel_task.translate_pixels(params, arrays["source"][:2], jax.random.key(2), sample_step=4)
  assert out.shape == (2, 16, 16, 3) and out.dtype == np.uint8


def random_params(init, *args, scale=0.2):
  """Normal random parameters of the shapes `init(*args)` makes, without compiling the init."""
  shapes = meta.unbox(jax.eval_shape(init, *args))
  leaves, tree = jax.tree_util.tree_flatten(shapes)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  return tree.unflatten(
    [scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
  )


def tiny_autoencoder():
  """A random ×2 KL autoencoder with 4 latent channels, as configs/autoencoder_shapes.py."""
  config = AutoencoderKLConfig(
    block_out_channels=(8, 8),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=16,
  )
  init = AutoencoderKL(config).init
  params = random_params(init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  return FrozenAutoencoder(config, params["params"])


def test_latent_mode_encodes_both_ends_and_decodes_samples():
  task = bbdm.BBDMTask(tiny_config("bbdm_latent_scenes.py"), autoencoder=tiny_autoencoder())
  assert task.latent_factor == 2 and task.sample_channels == 4
  assert not task.config.bridge.clip_denoised  # latents are not in [-1, 1]
  # autoencoder.scaling_factor None: 1/std of the training targets' latents.
  assert task.autoencoder.config.scaling_factor not in (1.0, 0.18215)
  batch = {k: jnp.asarray(v[:2]) for k, v in task.train_arrays().items()}
  # Random weights everywhere (the U-Net's zero-initialised last conv would block gradients).
  params = random_params(task.init, jax.random.key(0), batch, scale=0.05)
  assert params["cond_stage_model"]["channel_mapper"]["kernel"].shape == (1, 1, 3, 3)

  @jax.jit
  def loss_and_ends(params):
    loss, _ = task.loss(params, batch, jax.random.key(1))
    return loss, task.endpoints(batch)

  loss, (x0, y, condition) = loss_and_ends(params)
  assert x0.shape == y.shape == (2, 8, 8, 4) and condition.shape == (2, 16, 16, 3)
  # The condition stage is part of the trained model (the reference optimises it with the
  # U-Net): the loss depends on its weights. (A forward pass: compiling the gradient
  # through encoder and U-Net cost ~45 CPU-s here.)
  mapper = params["cond_stage_model"]["channel_mapper"]["kernel"]
  changed = jax.tree.map(lambda x: x, params)
  changed["cond_stage_model"]["channel_mapper"]["kernel"] = mapper + 0.5
  assert abs(float(loss_and_ends(changed)[0]) - float(loss)) > 1e-6


@pytest.mark.parametrize(
  "overrides, autoencoder_workdir, error, message",
  [
    (["bridge.mt_type=cosine"], None, bridge.BridgeConfigError, "mt_type: expected one of"),
    (["bridge.max_var=-1.0"], None, bridge.BridgeConfigError, "max_var: expected a number > 0"),
    (["bridge.objective=eps"], None, bridge.BridgeConfigError, "objective: expected one of"),
    (["bridge.sample_step=2"], None, bridge.BridgeConfigError, "sample_step: expected an int >= 3"),
    (["model.space=voxel"], None, ValueError, "model.space: expected one of"),
    (["unet.in_channels=4"], None, ValueError, "unet.in_channels/out_channels: expected 6/3"),
    # Latent mode without an autoencoder run, or with a directory that holds none.
    (["model.space=latent"], None, ValueError, "autoencoder.workdir: expected the run directory"),
    (
      ["model.space=latent"],
      "/nonexistent/run",
      DependentRunError,
      "autoencoder.workdir: expected the directory of an autoencoder run",
    ),
  ],
)
def test_bad_configs_are_named(overrides, autoencoder_workdir, error, message):
  config = tiny_config("bbdm_scenes.py", *overrides)
  if autoencoder_workdir:
    config.autoencoder = {"workdir": autoencoder_workdir, "step": None}
  with pytest.raises(error, match=message):
    bbdm.BBDMTask(config)


def test_bad_sampling_options_are_named(pixel_task):
  with pytest.raises(ValueError, match="steps: not a BBDM sampling option"):
    pixel_task.check_options({"steps": 10})
  with pytest.raises(bridge.BridgeConfigError, match="eta: expected a number >= 0"):
    pixel_task.check_options({"eta": -0.5})
