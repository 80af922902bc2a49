"""Pix2Pix: U-Net generator and PatchGAN against a PyTorch transcription, converters, the task.

The transcription below is written from the facts of
junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py` (UnetGenerator,
UnetSkipConnectionBlock, NLayerDiscriminator): same layer order, biases,
in-place activations and `nn.Sequential` indices, so the converter's state
dicts load into it with `strict=True`. BatchNorm runs in training mode
(batch statistics), as the reference's test script does without `--eval`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.convert.keymap import ConversionError
from jaxgen.convert.patch_discriminator import (
  abstract_discriminator_params,
  discriminator_from_torch,
  discriminator_to_torch,
)
from jaxgen.convert.pix2pix import generator_from_torch, generator_to_torch, level_module
from jaxgen.models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from jaxgen.models.pix2pix import UnetGenerator, UnetGeneratorConfig, abstract_params

torch = pytest.importorskip("torch")
tnn = torch.nn

# The reference's printed "Total number of parameters" (REFERENCES_WAVE2.md §1).
UNET_256_PARAMS = 54_413_955
PIX2PIX_D_PARAMS = 2_768_705

# Small configs of the same architectures: 6 levels so one has dropout.
SMALL_G = UnetGeneratorConfig(in_channels=3, out_channels=3, num_downs=6, ngf=8)
SMALL_G_SIDE = 64
SMALL_D = PatchDiscriminatorConfig(in_channels=6, channels=8, num_layers=3, norm="batch")
SMALL_D_SIDE = 32


def count(tree) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------
# PyTorch transcription of the reference modules.


class TorchUnetBlock(tnn.Module):
  """UnetSkipConnectionBlock with BatchNorm (convs before a norm have no bias)."""

  def __init__(
    self, outer, inner, input_nc=None, sub=None, outermost=False, innermost=False, dropout=False
  ):
    super().__init__()
    self.outermost = outermost
    down = tnn.Conv2d(input_nc or outer, inner, 4, 2, 1, bias=False)
    if outermost:
      layers = [
        down,
        sub,
        tnn.ReLU(True),
        tnn.ConvTranspose2d(inner * 2, outer, 4, 2, 1),
        tnn.Tanh(),
      ]
    elif innermost:
      up = tnn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=False)
      layers = [tnn.LeakyReLU(0.2, True), down, tnn.ReLU(True), up, tnn.BatchNorm2d(outer)]
    else:
      up = tnn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=False)
      layers = [tnn.LeakyReLU(0.2, True), down, tnn.BatchNorm2d(inner), sub]
      layers += [tnn.ReLU(True), up, tnn.BatchNorm2d(outer)] + (
        [tnn.Dropout(0.5)] if dropout else []
      )
    self.model = tnn.Sequential(*layers)

  def forward(self, x):
    # As the reference: the in-place LeakyReLU also rewrites the skip `x`; the
    # parent's ReLU makes that invisible (relu(lrelu(x)) == relu(x)).
    return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class TorchUnetGenerator(tnn.Module):
  def __init__(self, input_nc, output_nc, num_downs, ngf, use_dropout):
    super().__init__()
    block = TorchUnetBlock(ngf * 8, ngf * 8, innermost=True)
    for _ in range(num_downs - 5):
      block = TorchUnetBlock(ngf * 8, ngf * 8, sub=block, dropout=use_dropout)
    block = TorchUnetBlock(ngf * 4, ngf * 8, sub=block)
    block = TorchUnetBlock(ngf * 2, ngf * 4, sub=block)
    block = TorchUnetBlock(ngf, ngf * 2, sub=block)
    self.model = TorchUnetBlock(output_nc, ngf, input_nc=input_nc, sub=block, outermost=True)

  def forward(self, x):
    return self.model(x)


class TorchNLayerDiscriminator(tnn.Module):
  """NLayerDiscriminator with BatchNorm."""

  def __init__(self, input_nc, ndf, n_layers):
    super().__init__()
    layers = [tnn.Conv2d(input_nc, ndf, 4, 2, 1), tnn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers + 1):
      prev, mult = mult, min(2**n, 8)
      stride = 2 if n < n_layers else 1
      layers += [
        tnn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False),
        tnn.BatchNorm2d(ndf * mult),
      ]
      layers += [tnn.LeakyReLU(0.2, True)]
    layers += [tnn.Conv2d(ndf * mult, 1, 4, 1, 1)]
    self.model = tnn.Sequential(*layers)

  def forward(self, x):
    return self.model(x)


def nchw(x) -> "torch.Tensor":
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t) -> np.ndarray:
  return t.detach().numpy().transpose(0, 2, 3, 1)


def torch_state(state) -> dict:
  return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def random_params(abstract, seed: int):
  """Params of the shapes in `abstract` (from `jax.eval_shape`: nothing to compile): kernels
  N(0, 0.02) as the reference's init, norm scales 1 + N(0, 0.2), biases N(0, 0.2), so the
  parity checks every leaf."""
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree.flatten_with_path(nn.meta.unbox(abstract))
  out = []
  for path, leaf in leaves:
    noise = rng.standard_normal(leaf.shape).astype(np.float32)
    name = path[-1].key
    out.append({"kernel": 0.02 * noise, "scale": 1 + 0.2 * noise}.get(name, 0.2 * noise))
  return jax.tree.unflatten(treedef, out)


# ----------------------------------------------------------------------------
# Fixtures: one init and one compiled forward per model.


@pytest.fixture(scope="module")
def generator():
  model = UnetGenerator(SMALL_G)
  x = np.random.default_rng(1).uniform(-1, 1, (2, SMALL_G_SIDE, SMALL_G_SIDE, 3)).astype(np.float32)
  params = random_params(abstract_params(SMALL_G, SMALL_G_SIDE), seed=2)
  return model, params, x


@pytest.fixture(scope="module")
def discriminator():
  model = PatchDiscriminator(SMALL_D)
  x = (
    np.random.default_rng(3).standard_normal((2, SMALL_D_SIDE, SMALL_D_SIDE, 6)).astype(np.float32)
  )
  params = random_params(abstract_discriminator_params(SMALL_D), seed=5)
  return model, params, x


# ----------------------------------------------------------------------------
# Parameter counts of the faithful configs.


def test_faithful_parameter_counts_equal_the_reference():
  assert count(abstract_params(UnetGeneratorConfig())) == UNET_256_PARAMS
  d_config = PatchDiscriminatorConfig(in_channels=6, channels=64, num_layers=3, norm="batch")
  x = jax.ShapeDtypeStruct((1, 256, 256, 6), jnp.float32)
  d_vars = jax.eval_shape(lambda x: PatchDiscriminator(d_config).init(jax.random.PRNGKey(0), x), x)
  assert count(d_vars) == PIX2PIX_D_PARAMS
  logits = jax.eval_shape(lambda v, x: PatchDiscriminator(d_config).apply(v, x), d_vars, x)
  assert logits.shape == (1, 30, 30, 1)  # the 70×70 PatchGAN's 30×30 map at 256


def test_unet_256_matches_the_reference_keys_and_dropout_levels():
  config = UnetGeneratorConfig()
  assert [level for level in range(8) if config.has_dropout(level)] == [4, 5, 6]
  assert level_module(0) == "model"
  assert level_module(3) == "model.model.1.model.3.model.3"
  # unet_256's key tree at ngf 1 (the same names; shapes checked against torch's).
  narrow = UnetGeneratorConfig(ngf=1)
  state = generator_to_torch(
    jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_params(narrow)), narrow
  )
  reference = TorchUnetGenerator(3, 3, 8, 1, use_dropout=True).state_dict()
  assert {k: tuple(v.shape) for k, v in state.items()} == {
    k: tuple(v.shape) for k, v in reference.items()
  }
  assert len(state) == 8 * 2 + 13 * 5 + 1  # convs, BatchNorms (2 tensors + 3 buffers), out bias


# ----------------------------------------------------------------------------
# Parity with the transcription, through the converter.


def test_generator_matches_pytorch(generator):
  model, params, x = generator
  reference = TorchUnetGenerator(3, 3, SMALL_G.num_downs, SMALL_G.ngf, use_dropout=True)
  reference.load_state_dict(torch_state(generator_to_torch(params, SMALL_G)), strict=True)
  reference.train()
  for module in reference.modules():  # BatchNorm on batch statistics; dropout off on both sides
    if isinstance(module, tnn.Dropout):
      module.eval()
  with torch.no_grad():
    expected = nhwc(reference(nchw(x)))
  got = np.asarray(jax.jit(model.apply)({"params": params}, x))
  assert got.shape == (2, SMALL_G_SIDE, SMALL_G_SIDE, 3)
  assert np.max(np.abs(got - expected)) <= 1e-4


def test_generator_dropout_is_active_only_when_asked(generator):
  model, params, x = generator
  run = jax.jit(
    lambda rng: model.apply({"params": params}, x, deterministic=False, rngs={"dropout": rng})
  )
  a, b = run(jax.random.PRNGKey(0)), run(jax.random.PRNGKey(1))
  assert np.max(np.abs(np.asarray(a) - np.asarray(b))) > 1e-3
  np.testing.assert_array_equal(np.asarray(run(jax.random.PRNGKey(0))), np.asarray(a))


def test_discriminator_matches_pytorch(discriminator):
  model, params, x = discriminator
  reference = TorchNLayerDiscriminator(6, SMALL_D.channels, SMALL_D.num_layers)
  reference.load_state_dict(torch_state(discriminator_to_torch(params, SMALL_D)), strict=True)
  with torch.no_grad():
    expected = nhwc(reference.train()(nchw(x)))
  got = np.asarray(jax.jit(model.apply)({"params": params}, x))
  assert got.shape == expected.shape == (2, 2, 2, 1)
  assert np.max(np.abs(got - expected)) <= 1e-4


# ----------------------------------------------------------------------------
# Round trips and named conversion errors.


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_generator_round_trip_is_exact_and_buffers_are_fresh(generator):
  _, params, _ = generator
  state = generator_to_torch(params, SMALL_G)
  norm = "model.model.1.model.2"
  np.testing.assert_array_equal(state[f"{norm}.running_mean"], 0.0)
  np.testing.assert_array_equal(state[f"{norm}.running_var"], 1.0)
  assert state[f"{norm}.num_batches_tracked"].dtype == np.int64
  assert_trees_equal(generator_from_torch(state, SMALL_G), params)
  # Through torch, whose BatchNorm updated its running stats: import ignores them.
  reference = TorchUnetGenerator(3, 3, SMALL_G.num_downs, SMALL_G.ngf, use_dropout=True)
  reference.load_state_dict(torch_state(state), strict=True)
  reference.train()(torch.randn(2, 3, SMALL_G_SIDE, SMALL_G_SIDE))
  assert_trees_equal(generator_from_torch(reference.state_dict(), SMALL_G), params)
  # Buffers are optional on import.
  no_buffers = {k: v for k, v in state.items() if "running" not in k and "batches" not in k}
  assert_trees_equal(generator_from_torch(no_buffers, SMALL_G), params)


def test_discriminator_round_trip_is_exact(discriminator):
  _, params, _ = discriminator
  state = discriminator_to_torch(params, SMALL_D)
  assert {k for k in state if k.endswith(".weight")} == {
    f"model.{i}.weight" for i in (0, 2, 3, 5, 6, 8, 9, 11)
  }
  assert_trees_equal(discriminator_from_torch(state, SMALL_D), params)


def test_conversion_errors_name_the_keys(generator):
  _, params, _ = generator
  state = generator_to_torch(params, SMALL_G)
  broken = dict(state)
  del broken["model.model.0.weight"]
  broken["model.model.3.weight"] = np.zeros((1, 2, 4, 4), np.float32)
  broken["model.extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(ConversionError) as error:
    generator_from_torch(broken, SMALL_G)
  for name in ("model.model.0.weight", "model.model.3.weight", "model.extra.weight"):
    assert name in str(error.value)
  with pytest.raises(ConversionError, match="norm"):
    discriminator_to_torch({}, PatchDiscriminatorConfig(norm="group", norm_num_groups=8))


# ----------------------------------------------------------------------------
# Named errors for bad configs and inputs.


@pytest.mark.parametrize(
  "overrides, match",
  [
    ({"num_downs": 4}, "num_downs"),
    ({"norm": "group"}, "norm"),
    ({"ngf": 0}, "ngf"),
    ({"in_channels": 2.5}, "in_channels"),
  ],
)
def test_generator_config_errors(overrides, match):
  with pytest.raises(ValueError, match=match):
    UnetGeneratorConfig(**overrides)


def test_generator_input_errors(generator):
  model, params, _ = generator
  with pytest.raises(ValueError, match="channels"):
    model.apply({"params": params}, jnp.zeros((1, 64, 64, 1)))
  with pytest.raises(ValueError, match="multiples of 64"):
    model.apply({"params": params}, jnp.zeros((1, 96, 96, 3)))


# ----------------------------------------------------------------------------
# The task.


def tiny_task(*overrides):
  from tiny_configs import tiny_config  # pylint: disable=g-import-not-at-top

  from jaxgen.tasks.registry import get_task  # pylint: disable=g-import-not-at-top

  return get_task(tiny_config("pix2pix_scenes.py", *overrides))


def test_task_loss_falls_in_one_jitted_loop():
  import optax  # pylint: disable=g-import-not-at-top

  task = tiny_task()
  arrays = task.train_arrays()
  batch = {k: jnp.asarray(v[:4]) for k, v in arrays.items()}
  # eval_shape: a jitted init spends most of its compile time on the RNG.
  params = random_params(jax.eval_shape(task.init, jax.random.PRNGKey(0), batch), seed=0)
  assert set(params) == {"generator", "discriminator"}
  optimizer = optax.adam(2e-3, b1=0.5)

  @jax.jit
  def train(params):
    def step(carry, rng):
      params, opt_state = carry
      (_, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, rng)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), metrics

    rngs = jax.random.split(jax.random.PRNGKey(1), 20)
    (params, _), metrics = jax.lax.scan(step, (params, optimizer.init(params)), rngs)
    outputs = task.translate(params, task.source_input(batch["source"]), jax.random.PRNGKey(2))
    return metrics, outputs

  metrics, outputs = train(params)
  loss, l1 = np.asarray(metrics["loss"]), np.asarray(metrics["l1"])
  assert np.all(np.isfinite(loss))
  assert np.mean(loss[-5:]) < 0.7 * np.mean(loss[:3])
  assert np.mean(l1[-5:]) < np.mean(l1[:3])
  assert outputs.shape == (4, 32, 32, 3) and float(jnp.max(jnp.abs(outputs))) <= 1.0


@pytest.mark.parametrize(
  "override, match",
  [
    ("generator.num_downs=4", "num_downs"),
    ("data.resolution=48", "multiple of 32"),
    ("loss.gan_mode='wgan'", "gan_mode"),
    ("loss.l1_weight=-1.0", "l1_weight"),
    ("discriminator.num_layers=4", "num_layers"),
    ("generator.norm='group'", "norm"),
  ],
)
def test_task_config_errors(override, match):
  from jaxgen.tasks.image_to_image.pix2pix import Pix2PixConfigError  # pylint: disable=g-import-not-at-top

  with pytest.raises(Pix2PixConfigError, match=match):
    tiny_task(override)
