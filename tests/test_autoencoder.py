"""KL autoencoder (diffusers AutoencoderKL): config, parity on random weights, conversion, posterior, loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.configs.arch import sd_vae
from jaxgen.convert.diffusers_vae import (
  LEGACY_ATTENTION_NAMES,
  vae_from_diffusers,
  vae_to_diffusers,
)
from jaxgen.convert.keymap import ConversionError
from jaxgen.data import shapes
from jaxgen.errors import UnsupportedConfigError
from jaxgen.models.autoencoder import (
  AutoencoderKL,
  AutoencoderKLConfig,
  DiagonalGaussian,
  abstract_variables,
  autoencoder_loss,
  reconstruction_loss,
  scale_latents,
  unscale_latents,
  vae_loss,
)
from jaxgen.nn import Attention, unannotated_params

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

ATOL = 1e-4
CASES = {
  # Two blocks, mid-block attention, quant convs: the Stable Diffusion layout in small.
  "attention_quant_convs": {
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "latent_channels": 3,
    "norm_num_groups": 8,
    "sample_size": 16,
  },
  # Three blocks with 2 resnets each, no attention, no quant convs, other channel counts.
  "no_attention_no_quant_convs": {
    "in_channels": 2,
    "out_channels": 5,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (8, 16, 16),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 16,
    "mid_block_add_attention": False,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
  },
}


def count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def randomize_(module, seed: int, std: float = 0.2):
  """Overwrites every parameter (convs, linears, norms, biases) with N(0, std^2) noise."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * std)
  return module.eval()


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
  cfg = AutoencoderKLConfig(**CASES[request.param])
  torch_model = randomize_(diffusers.AutoencoderKL(**cfg.to_diffusers()), seed=len(request.param))
  return cfg, torch_model


# ----------------------------------------------------------------------------
# Config.


def test_sd_vae_parameter_count():
  cfg = AutoencoderKLConfig(**sd_vae.get_config().vae.to_dict())
  variables = abstract_variables(cfg)
  assert set(variables) == {"params"}
  assert count(variables) == 83_653_863
  assert unannotated_params(variables) == []
  assert cfg.downsample_factor == 8
  attn = variables["params"]["decoder"]["mid_block"]["attentions_0"]
  assert attn["to_q"]["kernel"].value.shape == (512, 512)
  assert attn["group_norm"]["scale"].names == ("norm",)


def test_config_from_diffusers_model(case):
  cfg, torch_model = case
  assert AutoencoderKLConfig.from_diffusers(torch_model.config) == cfg
  assert AutoencoderKLConfig.from_diffusers(cfg.to_diffusers()) == cfg


def test_unsupported_config_options_are_named():
  base = AutoencoderKLConfig().to_diffusers()
  with pytest.raises(
    UnsupportedConfigError, match=r"latents_mean=\[0.1\].*frobnicate=1 \(unknown option\)"
  ):
    AutoencoderKLConfig.from_diffusers(
      {**base, "latents_mean": [0.1], "frobnicate": 1, "_class_name": "x"}
    )
  with pytest.raises(UnsupportedConfigError, match=r"down_block_types: .*\['DownBlock2D'\]"):
    AutoencoderKLConfig(down_block_types=("DownBlock2D",))
  with pytest.raises(UnsupportedConfigError, match="act_fn"):
    AutoencoderKLConfig(act_fn="relu")
  with pytest.raises(
    ValueError, match=r"block_out_channels\[1\]=48 must be divisible by norm_num_groups=32"
  ):
    AutoencoderKLConfig(
      block_out_channels=(64, 48),
      down_block_types=("DownEncoderBlock2D",) * 2,
      up_block_types=("UpDecoderBlock2D",) * 2,
    )
  with pytest.raises(ValueError, match="same length"):
    AutoencoderKLConfig(block_out_channels=(32, 32))


# ----------------------------------------------------------------------------
# Parity with diffusers.


def test_encode_decode_forward_parity(case):
  cfg, torch_model = case
  params = {"params": vae_from_diffusers(torch_model.state_dict(), cfg)}
  model = AutoencoderKL(cfg)
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, 16, 16, cfg.in_channels)).astype(np.float32)
  size = 16 // cfg.downsample_factor
  latents = rng.standard_normal((2, size, size, cfg.latent_channels)).astype(np.float32)

  reconstruction, posterior = jax.jit(model.apply)(params, images)
  decoded = jax.jit(functools.partial(model.apply, method=model.decode))(params, latents)
  with torch.no_grad():
    ref_posterior = torch_model.encode(nchw(images)).latent_dist
    ref_decoded = nhwc(
      torch_model.decode(torch.from_numpy(latents.transpose(0, 3, 1, 2).copy())).sample
    )
    ref_reconstruction = nhwc(torch_model(nchw(images), sample_posterior=False).sample)

  assert posterior.mean.dtype == posterior.logvar.dtype == jnp.float32
  assert posterior.mean.shape == (2, size, size, cfg.latent_channels)
  for ours, ref in ((posterior.mean, ref_posterior.mean), (posterior.logvar, ref_posterior.logvar)):
    ref = nhwc(ref)
    assert np.abs(ref).max() > 0.1  # a meaningful signal, not a collapsed output
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)
  assert decoded.shape == ref_decoded.shape == (2, 16, 16, cfg.out_channels)
  np.testing.assert_allclose(decoded, ref_decoded, atol=ATOL, rtol=0)
  np.testing.assert_allclose(reconstruction, ref_reconstruction, atol=ATOL, rtol=0)


def test_group_norm_residual_attention_matches_diffusers():
  """The VAE mid-block flavour of `jaxgen.nn.Attention` (4-D input, GroupNorm, residual), with 2 heads."""
  from diffusers.models.attention_processor import Attention as TorchAttention

  from jaxgen.convert.keymap import KeyMap, from_torch

  ref = randomize_(
    TorchAttention(
      16, heads=2, dim_head=8, norm_num_groups=4, eps=1e-6, bias=True, residual_connection=True
    ),
    3,
    std=0.3,
  )
  x = np.random.default_rng(3).standard_normal((2, 3, 5, 16)).astype(np.float32)
  model = Attention(
    heads=2, dim_head=8, qkv_bias=True, norm_num_groups=4, norm_eps=1e-6, residual_connection=True
  )
  template = jax.eval_shape(lambda: model.init(jax.random.key(0), x))["params"]
  params = from_torch(ref.state_dict(), template, KeyMap(list_modules=frozenset({"to_out"})))
  out = model.apply({"params": params}, x)
  with torch.no_grad():
    expected = nhwc(ref(nchw(x)))
  assert out.shape == x.shape
  np.testing.assert_allclose(out, expected, atol=ATOL, rtol=0)


def test_posterior_matches_diffusers_including_clipping():
  from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

  rng = np.random.default_rng(4)
  moments = rng.standard_normal((2, 3, 5, 8)).astype(np.float32)
  moments[0, 0, 0, 4:] = [-45.0, 25.0, -29.0, 19.0]  # log-variances outside and inside [-30, 20]
  other_moments = rng.standard_normal((2, 3, 5, 8)).astype(np.float32)
  sample = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
  ours, other = DiagonalGaussian.from_moments(moments), DiagonalGaussian.from_moments(other_moments)
  ref, ref_other = (
    DiagonalGaussianDistribution(nchw(moments)),
    DiagonalGaussianDistribution(nchw(other_moments)),
  )
  np.testing.assert_array_equal(ours.logvar[0, 0, 0], [-30.0, 20.0, -29.0, 19.0])
  for name in ("mean", "logvar", "std", "var"):
    np.testing.assert_allclose(
      getattr(ours, name), nhwc(getattr(ref, name)), rtol=1e-6, err_msg=name
    )
  np.testing.assert_array_equal(ours.mode(), ours.mean)
  small = (
    slice(1, None),
  )  # example 0 has var = e^20: compare the KL of the well-scaled example tightly
  np.testing.assert_allclose(ours.kl()[small], ref.kl().numpy()[small], rtol=1e-5)
  np.testing.assert_allclose(ours.kl(), ref.kl().numpy(), rtol=1e-4)
  np.testing.assert_allclose(ours.kl(other), ref.kl(ref_other).numpy(), rtol=1e-4)
  np.testing.assert_allclose(
    ours.nll(sample)[small], ref.nll(nchw(sample)).numpy()[small], rtol=1e-5
  )


def test_kl_of_standard_normal_is_zero_and_sampling_follows_the_posterior():
  standard = DiagonalGaussian.from_moments(jnp.zeros((3, 4, 4, 8)))
  np.testing.assert_array_equal(standard.kl(), np.zeros(3))
  shifted = DiagonalGaussian.from_moments(
    jnp.concatenate([jnp.full((1, 2, 2, 4), 2.0), jnp.zeros((1, 2, 2, 4))], -1)
  )
  np.testing.assert_allclose(shifted.kl(), [0.5 * 4.0 * 16], rtol=1e-6)  # 0.5 * mean^2 per latent
  np.testing.assert_allclose(shifted.kl(shifted), [0.0], atol=1e-7)
  posterior = DiagonalGaussian(
    jnp.full((2000, 1, 1, 2), 1.5), jnp.full((2000, 1, 1, 2), jnp.log(0.25))
  )
  draws = np.asarray(posterior.sample(jax.random.key(0)))
  assert abs(draws.mean() - 1.5) < 0.03 and abs(draws.std() - 0.5) < 0.02


def test_latent_scaling_round_trip():
  cfg = AutoencoderKLConfig(**CASES["no_attention_no_quant_convs"])
  z = jnp.linspace(-3.0, 3.0, 24).reshape(1, 2, 3, 4)
  np.testing.assert_allclose(scale_latents(z, cfg), (z - 0.1159) * 0.3611, rtol=1e-6)
  np.testing.assert_allclose(unscale_latents(scale_latents(z, cfg), cfg), z, atol=1e-6)
  sd = AutoencoderKLConfig(**sd_vae.get_config().vae.to_dict())
  np.testing.assert_allclose(scale_latents(z, sd), z * 0.18215, rtol=1e-6)


# ----------------------------------------------------------------------------
# Conversion.


def test_torch_to_jaxgen_to_torch_is_bit_identical(case):
  cfg, torch_model = case
  state = torch_model.state_dict()
  back = vae_to_diffusers(vae_from_diffusers(state, cfg))
  assert sorted(back) == sorted(state)
  for key, tensor in state.items():
    assert back[key].dtype == np.float32
    np.testing.assert_array_equal(back[key], tensor.numpy(), err_msg=key)


def test_jaxgen_params_load_strictly_into_diffusers(case):
  cfg, _ = case
  rng = np.random.default_rng(1)
  boxed = jax.tree.map(lambda x: rng.standard_normal(x.shape, np.float32), abstract_variables(cfg))
  state = vae_to_diffusers(boxed)
  fresh = diffusers.AutoencoderKL(**cfg.to_diffusers())
  result = fresh.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  assert not result.missing_keys and not result.unexpected_keys
  for key, tensor in fresh.state_dict().items():
    np.testing.assert_array_equal(tensor.numpy(), state[key], err_msg=key)


@pytest.fixture(scope="module")
def numpy_state():
  cfg = AutoencoderKLConfig(**CASES["attention_quant_convs"])
  rng = np.random.default_rng(2)
  params = jax.tree.map(lambda x: rng.standard_normal(x.shape, np.float32), abstract_variables(cfg))
  return cfg, vae_to_diffusers(params)


def test_missing_unexpected_and_misshapen_keys_are_named(numpy_state):
  cfg, state = numpy_state
  broken = dict(state)
  del broken["encoder.mid_block.attentions.0.to_k.weight"]
  del broken["post_quant_conv.bias"]
  broken["decoder.up_blocks.1.upsamplers.0.conv.weight"] = np.zeros((16, 16, 3, 3), np.float32)
  broken["decoder.conv_out.weight"] = np.zeros((3, 16, 1, 1), np.float32)
  with pytest.raises(ConversionError) as err:
    vae_from_diffusers(broken, cfg)
  message = str(err.value)
  assert "missing torch keys (2)" in message
  assert (
    "encoder.mid_block.attentions.0.to_k.weight" in message and "post_quant_conv.bias" in message
  )
  assert "unexpected torch keys (1):\n  decoder.up_blocks.1.upsamplers.0.conv.weight" in message
  assert (
    "decoder.conv_out.weight: expected (3, 16, 3, 3)" in message
    and "found (3, 16, 1, 1)" in message
  )
  # A config that disagrees with the weights is caught the same way.
  other = AutoencoderKLConfig(**{**CASES["attention_quant_convs"], "latent_channels": 4})
  with pytest.raises(ConversionError, match=r"quant_conv.weight: expected \(8, 8, 1, 1\)"):
    vae_from_diffusers(state, other)


def test_legacy_attention_names_are_upgraded(numpy_state):
  cfg, state = numpy_state
  legacy = {}
  for key, value in state.items():
    for new, old in ((v, k) for k, v in LEGACY_ATTENTION_NAMES.items()):
      key = key.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
    legacy[key] = value
  assert "decoder.mid_block.attentions.0.proj_attn.weight" in legacy
  params = vae_from_diffusers(legacy, cfg)
  back = vae_to_diffusers(params)
  assert sorted(back) == sorted(state)
  for key in state:
    np.testing.assert_array_equal(back[key], state[key], err_msg=key)
  both = {
    **state,
    "encoder.mid_block.attentions.0.query.bias": state["encoder.mid_block.attentions.0.to_q.bias"],
  }
  with pytest.raises(ConversionError, match="both encoder.mid_block.attentions.0.query.bias"):
    vae_from_diffusers(both, cfg)


# ----------------------------------------------------------------------------
# Input errors, compute dtype.


def test_bad_inputs_are_named_before_compiling():
  cfg = AutoencoderKLConfig(**CASES["attention_quant_convs"])
  model = AutoencoderKL(cfg)
  params = jax.tree.map(
    jnp.zeros_like, jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 2, 2, 3))))
  )
  encode = functools.partial(model.apply, params, method=model.encode)
  decode = functools.partial(model.apply, params, method=model.decode)
  with pytest.raises(
    ValueError, match=r"images: expected 3 channels \(config.in_channels, NHWC\), found 16"
  ):
    encode(jnp.zeros((1, 3, 16, 16)))
  with pytest.raises(
    ValueError, match=r"images: height and width must be multiples of 2.*found 15x16"
  ):
    encode(jnp.zeros((1, 15, 16, 3)))
  with pytest.raises(ValueError, match="images: expected a floating dtype"):
    encode(jnp.zeros((1, 16, 16, 3), jnp.uint8))
  with pytest.raises(ValueError, match=r"images: expected NHWC"):
    encode(jnp.zeros((16, 16, 3)))
  with pytest.raises(ValueError, match=r"latents: expected 3 channels \(config.latent_channels"):
    decode(jnp.zeros((1, 8, 8, 4)))
  with pytest.raises(ValueError, match="rng: a PRNG key is required"):
    model.apply(params, jnp.zeros((1, 16, 16, 3)), sample_posterior=True)
  with pytest.raises(ValueError, match="moments: expected an even last axis"):
    DiagonalGaussian.from_moments(jnp.zeros((1, 2, 2, 3)))
  with pytest.raises(ValueError, match="kind: expected one of"):
    reconstruction_loss(jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 2, 3)), kind="l3")


def test_bfloat16_compute_keeps_float32_moments(numpy_state):
  cfg, state = numpy_state
  params = {"params": vae_from_diffusers(state, cfg)}
  images = np.random.default_rng(5).uniform(-1, 1, (1, 16, 16, cfg.in_channels)).astype(np.float32)

  def encode(dtype):
    model = AutoencoderKL(cfg, dtype=dtype)
    return jax.jit(functools.partial(model.apply, method=model.encode))(params, images)

  reference, moments = encode(jnp.float32), encode(jnp.bfloat16)
  assert moments.dtype == jnp.float32
  assert jax.tree.leaves(params)[0].dtype == np.float32
  scale = float(np.abs(reference).max())
  assert float(np.abs(moments - reference).max()) < 0.1 * scale


# ----------------------------------------------------------------------------
# Training objective.


def test_reconstruction_and_vae_loss_values():
  rng = np.random.default_rng(6)
  images = rng.uniform(-1, 1, (2, 4, 4, 3)).astype(np.float32)
  recon = rng.uniform(-1, 1, (2, 4, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(
    reconstruction_loss(images, recon, "l1"), np.abs(recon - images).sum((1, 2, 3)), rtol=1e-6
  )
  np.testing.assert_allclose(
    reconstruction_loss(images, recon, "l2"), np.square(recon - images).sum((1, 2, 3)), rtol=1e-6
  )
  posterior = DiagonalGaussian.from_moments(
    jnp.asarray(rng.standard_normal((2, 2, 2, 8)), jnp.float32)
  )
  loss, metrics = vae_loss(images, recon, posterior, kl_weight=0.5, kind="l2")
  expected = (
    np.square(recon - images).sum((1, 2, 3)).mean() + 0.5 * np.asarray(posterior.kl()).mean()
  )
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert set(metrics) == {"loss", "reconstruction", "kl", "mse"}
  np.testing.assert_allclose(metrics["mse"], np.square(recon - images).mean(), rtol=1e-6)


def test_loss_falls_on_shapes():
  # One block (no downsampling) keeps the compile short; encoder, mid-block attention and decoder are all there.
  cfg = AutoencoderKLConfig(block_out_channels=(16,), latent_channels=3, norm_num_groups=8)
  images = (
    jnp.asarray(shapes.make_split("train", 32, resolution=16)["image"], jnp.float32) / 127.5 - 1.0
  )
  model = AutoencoderKL(cfg)
  # Start from diffusers' own initialisation: compiling jaxgen's init costs more (~7 s) than the training here.
  with torch.random.fork_rng():
    torch.manual_seed(0)
    params = vae_from_diffusers(diffusers.AutoencoderKL(**cfg.to_diffusers()).state_dict(), cfg)
  optimizer = optax.adam(2e-3)
  loss_fn = functools.partial(autoencoder_loss, model=model, kl_weight=1e-6, kind="l1")

  @jax.jit
  def step(params, opt_state, rng):
    (_loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, images=images, rng=rng
    )
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  opt_state = optimizer.init(params)
  history = []
  for rng in jax.random.split(jax.random.key(1), 8):
    params, opt_state, metrics = step(params, opt_state, rng)
    history.append({k: float(v) for k, v in metrics.items()})
  assert all(np.isfinite(m["loss"]) for m in history)
  assert history[-1]["reconstruction"] < 0.7 * history[0]["reconstruction"], history
  assert history[-1]["kl"] > 0.0
