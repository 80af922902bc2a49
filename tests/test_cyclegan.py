"""CycleGAN: ResNet generator counts and parity, its weight map, the image pool, the task."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_configs import tiny_config

from jaxgen.convert import cyclegan as convert
from jaxgen.convert.keymap import ConversionError, unflatten
from jaxgen.models import discriminator as disc_lib
from jaxgen.models import image_pool
from jaxgen.models import resnet_generator as rg
from jaxgen.nn.partitioning import unannotated_params
from jaxgen.training.task import STATE_UPDATES_KEY

SMALL = rg.ResnetGeneratorConfig(channels=8, num_blocks=2)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(tree)))


@pytest.fixture(scope="module")
def small_generator():
  """Random weights (biases too, so their layout is checked), inputs and jaxgen's outputs."""
  rng = np.random.default_rng(0)
  shapes = convert.abstract_generator_params(SMALL)
  flat = {path: rng.normal(0, 0.1, x.shape).astype(np.float32) for path, x in shapes.items()}
  params = unflatten(flat)
  images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  outputs = jax.jit(rg.ResnetGenerator(SMALL).apply)({"params": params}, images)
  return params, images, np.asarray(outputs)


# ----------------------------------------------------------------------------
# Faithful counts, without memory.


def test_faithful_parameter_counts():
  image = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
  g = jax.eval_shape(rg.ResnetGenerator(rg.resnet_9blocks()).init, jax.random.PRNGKey(0), image)
  assert _count(g) == 11_378_179  # the reference's G_A print
  d_config = disc_lib.PatchDiscriminatorConfig(norm="instance")
  d = jax.eval_shape(disc_lib.PatchDiscriminator(d_config).init, jax.random.PRNGKey(0), image)
  assert _count(d) == 2_764_737  # D_A, basic PatchGAN with instance norm
  assert unannotated_params(g) == []


def test_generator_rejects_bad_input():
  model = rg.ResnetGenerator(SMALL)
  with pytest.raises(ValueError, match="images: expected NHWC with 3 channels"):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
  with pytest.raises(ValueError, match="divisible by 4, found 30x32"):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 30, 32, 3)))
  with pytest.raises(ValueError, match="num_blocks: expected an int >= 1, found 0"):
    rg.ResnetGeneratorConfig(num_blocks=0)


# ----------------------------------------------------------------------------
# Converter and parity with a PyTorch transcription.


def test_keymap_names_match_the_reference_layout():
  names = {name for name, _ in convert.generator_keymap(rg.resnet_9blocks()).values()}
  assert {"model.1.weight", "model.4.bias", "model.7.weight", "model.19.weight"} <= names
  assert {f"model.{i}.conv_block.{j}.weight" for i in range(10, 19) for j in (1, 5)} <= names
  assert {"model.22.weight", "model.26.weight", "model.26.bias"} <= names
  assert len(names) == 2 * (6 + 2 * 9)  # weight and bias of 6 convs and 18 block convs


def test_round_trip_is_exact(small_generator):
  params = small_generator[0]
  state = convert.generator_to_torch(params, SMALL)
  assert state["model.12.weight"].shape == (32, 16, 3, 3)  # ConvTranspose2d (in, out, kh, kw)
  back = convert.generator_from_torch(state, SMALL)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
    np.testing.assert_array_equal(np.asarray(a), b)
  assert jax.tree.structure(params) == jax.tree.structure(back)


def test_from_torch_reports_every_problem(small_generator):
  state = convert.generator_to_torch(small_generator[0], SMALL)
  state["model.2.running_mean"] = np.zeros(8)  # an old checkpoint's IN statistics: dropped
  convert.generator_from_torch(state, SMALL)
  del state["model.1.bias"]
  state["model.99.weight"] = np.zeros(1)
  state["model.4.weight"] = np.zeros((16, 8, 1, 1))
  with pytest.raises(ConversionError) as error:
    convert.generator_from_torch(state, SMALL)
  message = str(error.value)
  assert "model.1.bias" in message and "model.99.weight" in message
  assert "model.4.weight: expected (16, 8, 3, 3), found (16, 8, 1, 1)" in message


def test_instance_norm_discriminator_round_trip():
  """CycleGAN's D (instance norm: a bias on every conv, no buffers) through the PatchGAN map."""
  from jaxgen.convert import patch_discriminator

  config = disc_lib.PatchDiscriminatorConfig(channels=8, num_layers=3, norm="instance")
  rng = np.random.default_rng(3)
  template = patch_discriminator.abstract_discriminator_params(config)
  params = jax.tree.map(lambda x: rng.normal(0, 0.1, x.shape).astype(np.float32), template)
  state = patch_discriminator.discriminator_to_torch(params, config)
  assert sorted(state) == sorted(
    f"model.{i}.{leaf}" for i in (0, 2, 5, 8, 11) for leaf in ("weight", "bias")
  )
  back = patch_discriminator.discriminator_from_torch(state, config)
  jax.tree.map(np.testing.assert_array_equal, params, back)


def _torch_resnet_generator(torch, config):
  """ResnetGenerator transcribed from the reference's layer list (instance norm, no dropout)."""
  tnn = torch.nn

  class ResnetBlock(tnn.Module):
    def __init__(self, dim):
      super().__init__()
      self.conv_block = tnn.Sequential(
        tnn.ReflectionPad2d(1),
        tnn.Conv2d(dim, dim, 3, bias=True),
        tnn.InstanceNorm2d(dim),
        tnn.ReLU(True),
        tnn.ReflectionPad2d(1),
        tnn.Conv2d(dim, dim, 3, bias=True),
        tnn.InstanceNorm2d(dim),
      )

    def forward(self, x):
      return x + self.conv_block(x)

  class ResnetGenerator(tnn.Module):
    def __init__(self, input_nc, output_nc, ngf, n_blocks):
      super().__init__()
      model = [tnn.ReflectionPad2d(3), tnn.Conv2d(input_nc, ngf, 7), tnn.InstanceNorm2d(ngf)]
      model += [tnn.ReLU(True)]
      for i in range(2):
        mult = 2**i
        model += [
          tnn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1),
          tnn.InstanceNorm2d(ngf * mult * 2),
          tnn.ReLU(True),
        ]
      model += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
      for i in range(2):
        mult = 2 ** (2 - i)
        model += [
          tnn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, 2, padding=1, output_padding=1),
          tnn.InstanceNorm2d(ngf * mult // 2),
          tnn.ReLU(True),
        ]
      model += [tnn.ReflectionPad2d(3), tnn.Conv2d(ngf, output_nc, 7), tnn.Tanh()]
      self.model = tnn.Sequential(*model)

    def forward(self, x):
      return self.model(x)

  return ResnetGenerator(
    config.in_channels, config.out_channels, config.channels, config.num_blocks
  )


def test_generator_matches_pytorch_transcription(small_generator):
  torch = pytest.importorskip("torch")
  params, images, outputs = small_generator
  reference = _torch_resnet_generator(torch, SMALL)
  state = convert.generator_to_torch(params, SMALL)
  reference.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=True)
  with torch.no_grad():
    expected = reference(torch.from_numpy(np.array(images).transpose(0, 3, 1, 2))).numpy()
  error = np.max(np.abs(np.asarray(outputs) - expected.transpose(0, 2, 3, 1)))
  assert error <= 1e-4, error
  # And back: the reference's own weights load into jaxgen.
  back = convert.generator_from_torch(reference.state_dict(), SMALL)
  np.testing.assert_array_equal(back["up_1"]["kernel"], np.asarray(params["up_1"]["kernel"]))


# ----------------------------------------------------------------------------
# Image pool: the reference's semantics as a pure function.


def _numbered(start: int, count: int) -> jax.Array:
  """Images whose every pixel is their number, so outputs can be traced to inputs."""
  return jnp.broadcast_to(
    jnp.arange(start, start + count, dtype=jnp.float32)[:, None, None, None], (count, 2, 2, 1)
  )


def _ids(images) -> list[int]:
  images = np.asarray(images)
  assert (images == images[:, :1, :1, :1]).all()
  return [int(x) for x in images[:, 0, 0, 0]]


@pytest.fixture(scope="module")
def query():
  return jax.jit(image_pool.query_pool)


def test_pool_fills_first_then_mixes(query):
  pool = image_pool.init_pool(4, (2, 2, 1))
  out, pool = query(pool, _numbered(1, 3), jax.random.PRNGKey(0))
  assert _ids(out) == [1, 2, 3] and int(pool["count"]) == 3
  assert _ids(pool["images"]) == [1, 2, 3, 0]
  # The first image of the next batch fills the last slot; later ones see a full pool.
  out, pool = query(pool, _numbered(4, 3), jax.random.PRNGKey(1))
  assert _ids(out)[0] == 4 and int(pool["count"]) == 4
  before = set(_ids(pool["images"]))
  # Full pool: each new image is returned or stored, each stored one kept or returned.
  stored, returned, swaps = set(_ids(pool["images"])), [], 0
  for step in range(60):
    new = _numbered(100 + 3 * step, 3)
    out, pool = query(pool, new, jax.random.PRNGKey(10 + step))
    after = _ids(pool["images"])
    assert sorted(_ids(out) + after) == sorted(_ids(new) + sorted(stored))
    swaps += sum(a != b for a, b in zip(_ids(out), _ids(new)))
    returned += _ids(out)
    stored = set(after)
  assert int(pool["count"]) == 4
  assert 0.35 < swaps / 180 < 0.65  # p = 1/2 per image (fixed keys: deterministic)
  assert before & set(returned)  # images from the earlier batches come back


def test_pool_is_deterministic_detached_and_optional(query):
  pool = image_pool.init_pool(4, (2, 2, 1))
  for i in range(2):
    pool = query(pool, _numbered(1 + 3 * i, 3), jax.random.PRNGKey(i))[1]
  a = query(pool, _numbered(10, 3), jax.random.PRNGKey(5))
  b = query(pool, _numbered(10, 3), jax.random.PRNGKey(5))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(query(pool, x, jax.random.PRNGKey(5))[0])))
  assert not np.any(grad(_numbered(10, 3)))
  empty = image_pool.init_pool(0, (2, 2, 1))
  out, same = image_pool.query_pool(empty, _numbered(1, 2), jax.random.PRNGKey(0))
  assert _ids(out) == [1, 2] and same is empty
  with pytest.raises(ValueError, match="pool_size: expected an int >= 0, found -1"):
    image_pool.init_pool(-1, (2, 2, 1))
  with pytest.raises(ValueError, match=r"images: expected \(B, 2, 2, 1\) like the pool"):
    image_pool.query_pool(pool, jnp.zeros((1, 3, 3, 1)), jax.random.PRNGKey(0))


# ----------------------------------------------------------------------------
# The task.


def _tiny_config(*extra: str):
  return tiny_config("cyclegan_scenes.py", *extra)


def test_config_errors_are_named():
  from jaxgen.tasks.image_to_image.cyclegan import CycleGANConfigError, CycleGANTask
  from jaxgen.tasks.image_to_image.translation import ImageToImageConfigError

  cases = [
    ("data.paired=True", CycleGANConfigError, "data.paired: CycleGAN trains on unpaired"),
    ("data.source='label'", ImageToImageConfigError, "data.source: expected one of \\('day',\\)"),
    ("loss.gan_mode='wgan'", CycleGANConfigError, "loss.gan_mode: expected one of"),
    ("loss.lambda_a=-1.0", CycleGANConfigError, "loss.lambda_a: expected a number >= 0"),
    ("loss.pool_size=-1", CycleGANConfigError, "loss.pool_size: expected an int >= 0"),
    ("generator.num_blocks=0", CycleGANConfigError, "num_blocks: expected an int >= 1"),
    ("data.resolution=18", CycleGANConfigError, "data.resolution: expected a multiple of 4"),
  ]
  for override, error, message in cases:
    with pytest.raises(error, match=message):
      CycleGANTask(_tiny_config(override))


def _mse(x, target):
  return jnp.mean(jnp.square(x - target))


def test_loss_terms_and_each_players_gradient(monkeypatch):
  """The loss on stand-in networks: the reference's terms, and each player's exact gradient."""
  from jaxgen.tasks.image_to_image.cyclegan import CycleGANTask

  task = CycleGANTask(_tiny_config("loss.pool_size=8"))
  # One-parameter-pair stand-ins, so the loss's wiring is checked in a small program.
  monkeypatch.setattr(task, "_generate", lambda p, x: jnp.tanh(x * p["w"] + p["b"]))
  monkeypatch.setattr(task, "_discriminate", lambda p, x: jnp.mean(x, -1) * p["w"] + p["b"])
  values = {"g_ab": (0.9, 0.1), "g_ba": (1.1, -0.2), "d_a": (0.7, 0.3), "d_b": (-0.5, 0.2)}
  params = {k: {"w": jnp.float32(w), "b": jnp.float32(b)} for k, (w, b) in values.items()}
  empty = image_pool.init_pool(8, (16, 16, 3))
  params["pools"] = {"a": empty, "b": dict(empty)}
  rng = np.random.default_rng(0)
  batch = {
    "source": rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8),
    "target": rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8),
  }
  a, b = task.source_input(batch["source"]), task.target_input(batch["target"])
  g = lambda name, x: task._generate(params[name], x)
  d = lambda name, x: task._discriminate(params[name], x)
  l1 = lambda x, y: jnp.mean(jnp.abs(x - y))
  fake_b, fake_a = g("g_ab", a), g("g_ba", b)
  g_expected = (
    _mse(d("d_b", fake_b), 1.0)
    + _mse(d("d_a", fake_a), 1.0)
    + 10.0 * (l1(g("g_ba", fake_b), a) + l1(g("g_ab", fake_a), b))
    + 5.0 * (l1(g("g_ab", b), b) + l1(g("g_ba", a), a))
  )
  # A pool with room for the whole batch hands the new fakes through and keeps them.
  d_b_expected = 0.5 * (_mse(d("d_b", b), 1.0) + _mse(d("d_b", fake_b), 0.0))

  @jax.jit
  def run(p):
    (total, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(
      p, batch, jax.random.PRNGKey(1)
    )
    own = {
      name: jax.grad(lambda q, part=part: task.loss(q, batch, jax.random.PRNGKey(1))[1][part])(p)
      for name, part in (("g", "g_loss"), ("d_a", "d_a"), ("d_b", "d_b"))
    }
    return total, metrics, grads, own

  total, metrics, grads, own = run(params)
  np.testing.assert_allclose(metrics["g_loss"], g_expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["d_b"], d_b_expected, rtol=1e-5)
  np.testing.assert_allclose(total, metrics["g_loss"] + metrics["d_a"] + metrics["d_b"], rtol=1e-6)
  # Each player's gradient of the one scalar is exactly the gradient of its own loss.
  for name, part in (("g_ab", "g"), ("g_ba", "g"), ("d_a", "d_a"), ("d_b", "d_b")):
    for leaf in ("w", "b"):
      assert float(grads[name][leaf]) != 0.0
      np.testing.assert_allclose(grads[name][leaf], own[part][name][leaf], rtol=1e-6)
  assert not any(np.any(x) for x in jax.tree.leaves(grads["pools"]))
  pool_b = metrics[STATE_UPDATES_KEY]["pools"]["b"]
  assert float(pool_b["count"]) == 8.0
  np.testing.assert_allclose(pool_b["images"], fake_b, rtol=1e-6)


def test_loss_falls_and_pools_update_through_the_trainer():
  from jaxgen.tasks.image_to_image.cyclegan import CycleGANTask
  from jaxgen.training import trainer
  from jaxgen.training.optimizers import make_optimizer
  from jaxgen.training.train_state import TrainState

  # Identity terms off: they are checked above, and two fewer generator passes compile faster.
  config = _tiny_config("loss.lambda_identity=0.0")
  task = CycleGANTask(config)
  batch = {k: jnp.asarray(v[:8]) for k, v in task.train_arrays().items()}
  # Weights drawn here as the reference's init (N(0, 0.02), zero biases): no init program to compile.
  abstract = nn.meta.unbox(jax.eval_shape(task.init, jax.random.PRNGKey(0), batch))
  assert set(abstract) == {"g_ab", "g_ba", "d_a", "d_b", "pools"}
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map_with_path(
    lambda path, x: (
      np.zeros(x.shape, np.float32)
      if path[0].key == "pools" or x.ndim == 1
      else rng.normal(0, 0.02, x.shape).astype(np.float32)
    ),
    abstract,
  )

  tx, _ = make_optimizer(dict(config.optim, learning_rate=2e-3), 20)
  state = TrainState.create(params, tx, jax.random.PRNGKey(2))
  step = jax.jit(lambda s, b: trainer.train_step(s, b, task=task, ema_decay=0.0, ema_warmup=0))
  history = []
  for _ in range(20):
    state, metrics = step(state, batch)
    history.append({k: float(v) for k, v in metrics.items()})
  cycle = [m["cycle_a"] + m["cycle_b"] for m in history]
  assert cycle[-1] < 0.6 * cycle[0], cycle
  assert history[-1]["loss"] < history[0]["loss"], [m["loss"] for m in history]
  # The pools were written back (4 slots full), identically in the EMA copy.
  pools = state.params["pools"]
  assert float(pools["a"]["count"]) == float(pools["b"]["count"]) == 4.0
  assert (np.abs(np.asarray(pools["b"]["images"])).max(axis=(1, 2, 3)) > 0).all()
  np.testing.assert_array_equal(pools["b"]["images"], state.ema_params["pools"]["b"]["images"])
  source = task.source_input(batch["source"])
  out = jax.eval_shape(task.translate, state.params, source, jax.random.PRNGKey(0))
  assert out.shape == (8, 16, 16, 3)
