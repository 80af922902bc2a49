"""SPADE: faithful counts, parity with a PyTorch transcription, TTUR learning rates, the task."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.models import discriminator as disc_lib
from jaxgen.models import spade
from jaxgen.nn.normalization import SpectralConv, spectral_norm_estimate
from jaxgen.training.optimizers import LearningRateMultiplierError, make_optimizer

POWER_ITERATIONS = SpectralConv.power_iterations  # PyTorch runs as many from the matching u
CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")


def _abstract_count(module, *shapes) -> int:
  args = [jnp.zeros(s, jnp.float32) for s in shapes]
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *args))
  return spade.count_params(variables["params"])


def _generator_count(config: spade.SPADEGeneratorConfig) -> int:
  return _abstract_count(
    spade.SPADEGenerator(config), (1, *config.output_size(), config.semantic_nc)
  )


# ----------------------------------------------------------------------------
# Faithful configurations (NVlabs/SPADE's printed "Total number of parameters").


def test_generator_counts_equal_the_reference():
  ade20k = spade.SPADEGeneratorConfig(label_nc=150, contain_dontcare=True, no_instance=True)
  assert ade20k.semantic_nc == 151 and ade20k.start_size() == (8, 8)
  assert _generator_count(ade20k) == 96_492_483
  cityscapes = spade.SPADEGeneratorConfig(
    label_nc=35, crop_size=512, aspect_ratio=2.0, num_upsampling_layers="more"
  )
  assert cityscapes.semantic_nc == 36 and cityscapes.output_size() == (256, 512)
  assert _generator_count(cityscapes) == 93_048_003


def test_multiscale_discriminator_count_equals_the_reference():
  # COCO-Stuff: 182 labels + dontcare + instance edges, and the 3 image channels.
  config = disc_lib.PatchDiscriminatorConfig(
    in_channels=184 + 3,
    channels=64,
    num_layers=3,  # n_layers_D 4: three stride-2 convs and one stride-1
    norm="instance",
    conv_bias=False,
    spectral_norm=True,
    padding=2,
  )
  module = disc_lib.MultiscaleDiscriminator(config, num_scales=2)
  assert _abstract_count(module, (1, 256, 256, 187)) == 5_904_514


def test_config_errors_name_the_argument():
  with pytest.raises(ValueError, match="num_upsampling_layers"):
    spade.SPADEGeneratorConfig(num_upsampling_layers="many")
  with pytest.raises(ValueError, match="crop_size"):
    spade.SPADEGeneratorConfig(crop_size=16)  # 16 / 2**5 < 1
  config = spade.SPADEGeneratorConfig(label_nc=3, no_instance=True, ngf=1, crop_size=32)
  with pytest.raises(ValueError, match="segmap"):
    spade.SPADEGenerator(config).init(jax.random.key(0), jnp.zeros((1, 32, 32, 4)))


# ----------------------------------------------------------------------------
# Parity with a PyTorch transcription of models/networks/{normalization,architecture,generator}.py


def _torch_modules():
  torch = pytest.importorskip("torch")
  F = torch.nn.functional

  class TorchSPADE(torch.nn.Module):
    def __init__(self, norm_nc, label_nc):
      super().__init__()
      self.param_free_norm = torch.nn.BatchNorm2d(norm_nc, affine=False)
      self.mlp_shared = torch.nn.Sequential(
        torch.nn.Conv2d(label_nc, 128, 3, padding=1), torch.nn.ReLU()
      )
      self.mlp_gamma = torch.nn.Conv2d(128, norm_nc, 3, padding=1)
      self.mlp_beta = torch.nn.Conv2d(128, norm_nc, 3, padding=1)

    def forward(self, x, segmap):
      normalized = self.param_free_norm(x)
      segmap = F.interpolate(segmap, size=x.size()[2:], mode="nearest")
      actv = self.mlp_shared(segmap)
      return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)

  class TorchBlock(torch.nn.Module):
    def __init__(self, fin, fout, label_nc, spectral):
      super().__init__()
      self.learned_shortcut = fin != fout
      fmiddle = min(fin, fout)
      sn = (
        (lambda m: torch.nn.utils.spectral_norm(m, n_power_iterations=POWER_ITERATIONS))
        if spectral
        else (lambda m: m)
      )
      self.conv_0 = sn(torch.nn.Conv2d(fin, fmiddle, 3, padding=1))
      self.conv_1 = sn(torch.nn.Conv2d(fmiddle, fout, 3, padding=1))
      if self.learned_shortcut:
        self.conv_s = sn(torch.nn.Conv2d(fin, fout, 1, bias=False))
        self.norm_s = TorchSPADE(fin, label_nc)
      self.norm_0 = TorchSPADE(fin, label_nc)
      self.norm_1 = TorchSPADE(fmiddle, label_nc)

    def forward(self, x, seg):
      x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
      dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
      dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
      return x_s + dx

  class TorchGenerator(torch.nn.Module):
    def __init__(self, cfg):
      super().__init__()
      nf, nc = cfg.ngf, cfg.semantic_nc
      self.sh, self.sw = cfg.start_size()
      self.fc = torch.nn.Conv2d(nc, 16 * nf, 3, padding=1)
      widths = [("head_0", 16, 16), ("G_middle_0", 16, 16), ("G_middle_1", 16, 16)]
      widths += [("up_0", 16, 8), ("up_1", 8, 4), ("up_2", 4, 2), ("up_3", 2, 1)]
      for name, fin, fout in widths:
        self.add_module(name, TorchBlock(fin * nf, fout * nf, nc, cfg.spectral_norm))
      self.conv_img = torch.nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, seg):
      up = lambda t: F.interpolate(t, scale_factor=2)
      x = self.fc(F.interpolate(seg, size=(self.sh, self.sw)))
      x = self.G_middle_0(up(self.head_0(x, seg)), seg)
      x = self.G_middle_1(x, seg)
      for name in ("up_0", "up_1", "up_2", "up_3"):
        x = getattr(self, name)(up(x), seg)
      return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))

  return torch, TorchSPADE, TorchBlock, TorchGenerator


def _load_conv(torch, conv, p):
  """HWIO kernel -> OIHW; a spectral-norm conv gets `weight_orig` and the start u jaxgen uses."""
  weight = torch.tensor(np.asarray(p["kernel"]).transpose(3, 2, 0, 1).copy())
  if hasattr(conv, "weight_orig"):
    conv.weight_orig.data = weight
    # jaxgen starts the power iteration at v0 = 1/sqrt(n); PyTorch alternates
    # v = Wᵀu, u = Wv from its stored u, so u = normalize(W v0) gives both the
    # same iterations.
    matrix = weight.reshape(weight.shape[0], -1)
    v0 = torch.ones(matrix.shape[1]) / matrix.shape[1] ** 0.5
    conv.weight_u.data = torch.nn.functional.normalize(matrix @ v0, dim=0)
  else:
    conv.weight.data = weight
  if "bias" in p:
    conv.bias.data = torch.tensor(np.asarray(p["bias"]).copy())


def _load_spade(torch, layer, p):
  _load_conv(torch, layer.mlp_shared[0], p["mlp_shared"])
  _load_conv(torch, layer.mlp_gamma, p["mlp_gamma"])
  _load_conv(torch, layer.mlp_beta, p["mlp_beta"])


def _load_block(torch, block, p):
  for name in ("norm_0", "norm_1", "norm_s"):
    if name in p:
      _load_spade(torch, getattr(block, name), p[name])
  for name in ("conv_0", "conv_1", "conv_s"):
    if name in p:
      _load_conv(torch, getattr(block, name), p[name])


def _random_params(module, seed, *args, scale=0.2):
  """Every parameter drawn from N(0, scale²): Xavier(0.02) weights would hide γ, β and the shortcut.

  Drawn by numpy from the abstract tree: nothing to compile.
  """
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), *args)["params"])
  leaves, tree = jax.tree_util.tree_flatten(nn.meta.unbox(abstract))
  state = np.random.RandomState(seed)
  drawn = [jnp.asarray(scale * state.standard_normal(leaf.shape), jnp.float32) for leaf in leaves]
  return jax.tree_util.tree_unflatten(tree, drawn)


def _segmap(rng, shape, classes):
  return jax.nn.one_hot(jax.random.randint(rng, shape, 0, classes), classes)


def _nchw(torch, x):
  return torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy())


def _max_abs(torch_out, jax_out) -> float:
  return float(
    np.max(np.abs(torch_out.detach().numpy().transpose(0, 2, 3, 1) - np.asarray(jax_out)))
  )


def test_spade_layer_matches_pytorch():
  torch, TorchSPADE, _, _ = _torch_modules()
  rng = jax.random.key(1)
  x = 2.0 * jax.random.normal(rng, (2, 8, 8, 6)) + 0.5
  seg = _segmap(jax.random.fold_in(rng, 2), (2, 16, 16), 5)  # resized 16 -> 8 inside
  layer = spade.SPADE()
  params = _random_params(layer, 1, x, seg)
  reference = TorchSPADE(6, 5).train()  # training mode: batch statistics
  _load_spade(torch, reference, params)
  out = jax.jit(layer.apply)({"params": params}, x, seg)
  assert _max_abs(reference(_nchw(torch, x), _nchw(torch, seg)), out) <= 1e-4


@pytest.mark.parametrize("fin, fout", [(6, 4), (4, 4)])  # learned and identity shortcut
def test_spade_resnet_block_matches_pytorch_with_spectral_norm(fin, fout):
  torch, _, TorchBlock, _ = _torch_modules()
  rng = jax.random.key(fin + fout)
  x = jax.random.normal(rng, (2, 8, 8, fin))
  seg = _segmap(jax.random.fold_in(rng, 2), (2, 32, 32), 5)
  block = spade.SPADEResnetBlock(fout, spectral_norm=True)
  params = _random_params(block, fin + fout, x, seg)
  assert ("conv_s" in params) == (fin != fout) and "bias" not in params.get("conv_s", {})
  reference = TorchBlock(fin, fout, 5, spectral=True).train()
  _load_block(torch, reference, params)
  out = jax.jit(block.apply)({"params": params}, x, seg)
  assert _max_abs(reference(_nchw(torch, x), _nchw(torch, seg)), out) <= 1e-4


def test_generator_matches_pytorch():
  torch, _, _, TorchGenerator = _torch_modules()
  config = spade.SPADEGeneratorConfig(label_nc=3, no_instance=True, ngf=2, crop_size=32)
  # A 1×1 start map: PyTorch's nearest downsampling keeps pixel (0, 0), not the centre.
  assert config.start_size() == (1, 1)
  rng = jax.random.key(3)
  seg = _segmap(rng, (2, 32, 32), 3)
  generator = spade.SPADEGenerator(config)
  params = _random_params(generator, 3, seg, scale=0.1)
  reference = TorchGenerator(config).train()
  _load_conv(torch, reference.fc, params["fc"])
  _load_conv(torch, reference.conv_img, params["conv_img"])
  for name in ("head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3"):
    _load_block(torch, getattr(reference, name), params[name])
  out = jax.jit(generator.apply)({"params": params}, seg)
  assert out.shape == (2, 32, 32, 3)
  assert _max_abs(reference(_nchw(torch, seg)), out) <= 1e-4


def test_spectral_estimate_matches_the_exact_norm():
  torch = pytest.importorskip("torch")
  state = np.random.RandomState(4)
  # (out, in·kh·kw) matrices of the block's 3×3 convs and its 1×1 shortcut.
  matrices = [state.standard_normal(shape).astype(np.float32) for shape in ((8, 108), (12, 72))]
  matrices.append(state.standard_normal((8, 12)).astype(np.float32))
  estimate = jax.jit(lambda m: spectral_norm_estimate(m, POWER_ITERATIONS))
  for matrix in matrices:
    exact = float(torch.linalg.matrix_norm(torch.tensor(matrix), ord=2))
    assert float(estimate(jnp.asarray(matrix))) == pytest.approx(exact, rel=1e-3), matrix.shape


# ----------------------------------------------------------------------------
# TTUR: per-subtree learning rates.


def _updates(optim: dict):
  params = {"generator": {"w": jnp.ones(3)}, "discriminator": {"w": jnp.ones(3), "b": jnp.ones(2)}}
  grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 2.0, p.size), params)
  tx, _ = make_optimizer({"learning_rate": 1e-4, "decay": "constant", **optim}, total_steps=10)

  @jax.jit
  def first_update(params, grads):
    return tx.update(grads, tx.init(params), params)[0]

  return first_update(params, grads)


def test_lr_multipliers_scale_each_subtree():
  base = _updates({})
  ttur = _updates({"lr_multipliers": {"discriminator": 4.0}})
  np.testing.assert_allclose(ttur["generator"]["w"], base["generator"]["w"], rtol=1e-6)
  for key in ("w", "b"):
    np.testing.assert_allclose(
      ttur["discriminator"][key], 4.0 * base["discriminator"][key], rtol=1e-6
    )
  assert float(jnp.abs(base["discriminator"]["w"]).max()) > 0
  with pytest.raises(LearningRateMultiplierError, match="disciminator"):
    _updates({"lr_multipliers": {"disciminator": 4.0}})


# ----------------------------------------------------------------------------
# The task.


def tiny_task(*overrides):
  from tiny_configs import tiny_config  # pylint: disable=g-import-not-at-top

  from jaxgen.tasks.registry import get_task  # pylint: disable=g-import-not-at-top

  return get_task(tiny_config("spade_scenes.py", *overrides))


def _task_params(task, batch, seed):
  """Kernels N(0, 0.1²), biases 0, from the abstract tree (a jitted init compiles the RNG for long)."""
  abstract = jax.eval_shape(task.init, jax.random.key(0), batch)
  leaves, tree = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(abstract))
  state = np.random.RandomState(seed)
  drawn = [
    jnp.asarray(
      0.1 * state.standard_normal(leaf.shape) if path[-1].key == "kernel" else np.zeros(leaf.shape),
      jnp.float32,
    )
    for path, leaf in leaves
  ]
  return jax.tree_util.tree_unflatten(tree, drawn)


def test_task_trains_in_one_jitted_loop():
  import optax  # pylint: disable=g-import-not-at-top

  task = tiny_task()
  batch = {k: jnp.asarray(v[:4]) for k, v in task.train_arrays().items()}
  params = _task_params(task, batch, seed=0)
  assert set(params) == {"generator", "discriminator"}
  assert set(params["discriminator"]) == {"scale_0", "scale_1"}
  tx, _ = make_optimizer(
    {
      "learning_rate": 1e-3,
      "lr_multipliers": {"discriminator": 4.0},
      "b1": 0.0,
      "b2": 0.9,
      "decay": "constant",
      "grad_clip_norm": 0.0,
    },
    total_steps=20,
  )

  @jax.jit
  def train(params):
    def step(carry, rng):
      params, opt_state = carry
      (_, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, rng)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), metrics

    rngs = jax.random.split(jax.random.key(1), 20)
    (params, _), metrics = jax.lax.scan(step, (params, tx.init(params)), rngs)
    return metrics, task.translate(params, task.source_input(batch["source"]), None)

  metrics, outputs = train(params)
  metrics = {k: np.asarray(v) for k, v in metrics.items()}
  assert all(np.all(np.isfinite(v)) for v in metrics.values())
  # The summed game need not fall. The discriminator's hinge loss does (it
  # learns to separate the fixed batch), and the generator, pulled by feature
  # matching, moves its outputs towards the targets (~0.41 -> 0.31 in L1).
  assert np.mean(metrics["d_loss"][-5:]) < 0.9 * np.mean(metrics["d_loss"][:3])
  assert np.mean(metrics["l1_to_target"][-5:]) < 0.85 * np.mean(metrics["l1_to_target"][:3])
  assert outputs.shape == (4, 32, 32, 3) and float(jnp.max(jnp.abs(outputs))) <= 1.0


@pytest.mark.parametrize(
  "override, match",
  [
    ("loss.vgg_weight=10.0", "vgg_weight.*VGG19"),
    ("data.resolution=48", "multiple of 32"),
    ("generator.num_upsampling_layers='many'", "num_upsampling_layers"),
    ("loss.gan_mode='wgan'", "gan_mode"),
    ("loss.feat_weight=-1.0", "feat_weight"),
  ],
)
def test_task_config_errors(override, match):
  from jaxgen.tasks.image_to_image.spade import SPADEConfigError  # pylint: disable=g-import-not-at-top

  with pytest.raises(SPADEConfigError, match=match):
    tiny_task(override)


def test_task_takes_only_label_maps():
  from jaxgen.tasks.image_to_image.translation import ImageToImageConfigError  # pylint: disable=g-import-not-at-top

  with pytest.raises(ImageToImageConfigError, match=r"data.source: expected one of \('label',\)"):
    tiny_task("data.source='sketch'")
