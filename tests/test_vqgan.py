"""VQGAN tokenizer (diffusers VQModel): faithful counts, parity both ways, quantizer, EMA, GAN losses."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.configs.arch import vqgan_imagenet_f16_1024, vqgan_imagenet_f16_16384
from jaxgen.convert.diffusers_vqmodel import (
  CODEBOOK_KEY,
  vqmodel_from_diffusers,
  vqmodel_to_diffusers,
)
from jaxgen.convert.keymap import ConversionError
from jaxgen.errors import UnsupportedConfigError
from jaxgen.models import vqgan
from jaxgen.models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from jaxgen.models.vqgan import (
  BETA,
  CodebookUpdateError,
  LpipsUnavailableError,
  VQGANLossConfig,
  VQModel,
  VQModelConfig,
  abstract_variables,
)
from jaxgen.nn import unannotated_params

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

ATOL = 1e-4
# Attention in the deepest encoder level and the first decoder level (taming's
# f16 layout in small), vq_embed_dim != latent_channels, 2 layers per block.
TINY = dict(
  down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
  up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
  block_out_channels=(16, 32),
  layers_per_block=2,
  latent_channels=4,
  vq_embed_dim=6,
  num_vq_embeddings=32,
  norm_num_groups=8,
  sample_size=16,
)


def count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def tiny():
  """Tiny config, a randomised diffusers VQModel whose codebook sits among its latents, images."""
  cfg = VQModelConfig(**TINY)
  torch_model = diffusers.VQModel(**cfg.to_diffusers()).eval()
  gen = torch.Generator().manual_seed(0)
  images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  with torch.no_grad():
    for p in torch_model.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    latents = torch_model.encode(nchw(images)).latents.permute(0, 2, 3, 1).reshape(-1, 6)
    rows = latents[torch.randperm(len(latents), generator=gen)[: cfg.num_vq_embeddings]]
    torch_model.quantize.embedding.weight.copy_(
      rows + 0.05 * torch.randn(rows.shape, generator=gen)
    )
  return cfg, torch_model, images


# ----------------------------------------------------------------------------
# Config and faithful counts.


@pytest.mark.parametrize(
  "arch, codes, total",
  [(vqgan_imagenet_f16_16384, 16384, 76_073_859), (vqgan_imagenet_f16_1024, 1024, 72_141_699)],
)
def test_faithful_taming_imagenet_f16_counts(arch, codes, total):
  cfg = VQModelConfig(**arch.get_config().vq.to_dict())
  variables = abstract_variables(cfg)
  params = variables["params"]
  assert unannotated_params(variables) == []
  assert cfg.downsample_factor == 16 and cfg.embed_dim == 256
  assert count(params["encoder"]) == 29_298_176
  assert count(params["decoder"]) == 42_449_795
  assert count(params["quantizer"]) == codes * 256
  assert count(params["quant_conv"]) == count(params["post_quant_conv"]) == 256 * 256 + 256
  assert count(variables) == total
  # Attention only at 16x16: last encoder level, first decoder level (3 resnets there).
  assert "attentions_1" in params["encoder"]["down_blocks_4"]
  assert "attentions_0" not in params["encoder"]["down_blocks_3"]
  assert "attentions_2" in params["decoder"]["up_blocks_0"]
  assert "attentions_0" not in params["decoder"]["up_blocks_1"]
  # taming NLayerDiscriminator(ndf 64, n_layers 2, BatchNorm) as jaxgen's PatchGAN.
  disc = PatchDiscriminator(PatchDiscriminatorConfig(**arch.get_config().disc.to_dict()))
  disc_vars = jax.eval_shape(lambda: disc.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  assert count(disc_vars) == 663_361
  VQGANLossConfig(**arch.get_config().loss.to_dict())


def test_config_reads_diffusers_and_names_bad_options(tiny):
  cfg, torch_model, _ = tiny
  assert VQModelConfig.from_diffusers(torch_model.config) == cfg
  assert VQModelConfig.from_diffusers(cfg.to_diffusers()) == cfg
  with pytest.raises(UnsupportedConfigError, match="norm_type: only 'group'.*'spatial'"):
    VQModelConfig(norm_type="spatial")
  with pytest.raises(UnsupportedConfigError, match=r"frobnicate=1 \(unknown option\)"):
    VQModelConfig.from_diffusers({**cfg.to_diffusers(), "frobnicate": 1})
  with pytest.raises(UnsupportedConfigError, match="down_block_types"):
    VQModelConfig(down_block_types=("CrossAttnDownBlock2D",))
  with pytest.raises(ValueError, match="vq_embed_dim: expected None or an int >= 1, found 0"):
    VQModelConfig(vq_embed_dim=0)
  with pytest.raises(CodebookUpdateError, match="codebook_update: expected one of"):
    abstract_variables(cfg, "kmeans")
  with pytest.raises(LpipsUnavailableError, match="perceptual_weight"):
    VQGANLossConfig(perceptual_weight=1.0)
  with pytest.raises(ValueError, match="disc_loss"):
    VQGANLossConfig(disc_loss="wgan")


# ----------------------------------------------------------------------------
# Parity with diffusers, both ways.


@functools.cache
def _outputs_fn(cfg):
  """One compiled function for every jaxgen output the parity tests compare."""
  model = VQModel(cfg)

  def outputs(params, images):
    variables = {"params": params}
    latents = model.apply(variables, images, method=VQModel.encode)
    out = model.apply(variables, latents, method=VQModel.quantize)
    reconstruction, forward_out = model.apply(variables, images)
    return dict(
      latents=latents,
      codes=out.codes,
      loss=out.loss,
      decoded=model.apply(variables, latents, method=VQModel.decode),
      from_codes=model.apply(variables, out.codes, method=VQModel.decode_codes),
      reconstruction=reconstruction,
      forward_loss=forward_out.loss,
    )

  return jax.jit(outputs)


def test_parity_with_diffusers_vqmodel(tiny):
  cfg, torch_model, images = tiny
  ours = _outputs_fn(cfg)(vqmodel_from_diffusers(torch_model.state_dict(), cfg), images)
  with torch.no_grad():
    ref_latents = torch_model.encode(nchw(images)).latents
    _, ref_loss, (_, _, ref_codes) = torch_model.quantize(ref_latents)
    ref_decoded = torch_model.decode(ref_latents)
    ref_forward = torch_model(nchw(images))

  assert ours["latents"].shape == (2, 8, 8, 6)
  np.testing.assert_allclose(ours["latents"], nhwc(ref_latents), atol=ATOL, rtol=0)
  assert len(np.unique(ours["codes"])) >= 10  # codes spread over the codebook, not collapsed
  np.testing.assert_array_equal(ours["codes"], ref_codes.numpy().reshape(2, 8, 8))
  np.testing.assert_allclose(ours["loss"], ref_loss.numpy(), rtol=1e-5)
  np.testing.assert_allclose(ours["forward_loss"], ref_forward.commit_loss.numpy(), rtol=1e-5)
  assert np.abs(nhwc(ref_decoded.sample)).max() > 0.1
  for name in ("decoded", "from_codes", "reconstruction"):
    assert ours[name].shape == (2, 16, 16, 3)
    np.testing.assert_allclose(
      ours[name], nhwc(ref_forward.sample), atol=ATOL, rtol=0, err_msg=name
    )
  np.testing.assert_allclose(ours["decoded"], nhwc(ref_decoded.sample), atol=ATOL, rtol=0)


def test_weights_round_trip_both_ways(tiny):
  cfg, torch_model, images = tiny
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  params = vqmodel_from_diffusers(state, cfg)
  back = vqmodel_to_diffusers(params)
  assert set(back) == set(state)
  for key, value in state.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)

  # Weights that exist only in jaxgen load strictly into diffusers and give the same outputs.
  noise = np.random.default_rng(5)
  changed = jax.tree.map(lambda a: a + noise.normal(0, 0.02, a.shape).astype(np.float32), params)
  fresh = diffusers.VQModel(**cfg.to_diffusers()).eval()
  fresh.load_state_dict(
    {k: torch.from_numpy(v.copy()) for k, v in vqmodel_to_diffusers({"params": changed}).items()}
  )
  ours = _outputs_fn(cfg)(changed, images)
  with torch.no_grad():
    ref = fresh(nchw(images))
  np.testing.assert_allclose(ours["reconstruction"], nhwc(ref.sample), atol=ATOL, rtol=0)
  assert (
    np.abs(
      np.asarray(ours["reconstruction"]) - nhwc(torch_model(nchw(images)).sample.detach())
    ).max()
    > 1e-3
  )

  # EMA models: statistics start at the loaded codebook and are dropped on the way out.
  ema_params = vqmodel_from_diffusers(state, cfg, "ema")
  ema = ema_params["quantizer"]
  np.testing.assert_array_equal(ema["code_sum"], state[CODEBOOK_KEY])
  assert ema["code_count"].tolist() == [1.0] * 32 and float(ema["initialized"]) == 1.0
  assert set(vqmodel_to_diffusers(ema_params)) == set(state)

  broken = dict(state)
  broken[CODEBOOK_KEY] = state[CODEBOOK_KEY][:5]
  del broken["quant_conv.bias"]
  with pytest.raises(
    ConversionError, match=r"(?s)quantize.embedding.weight: expected \(32, 6\).*quant_conv.bias"
  ):
    vqmodel_from_diffusers(broken, cfg)


# ----------------------------------------------------------------------------
# Quantizer.


def test_straight_through_gradient_and_legacy_loss():
  cfg = VQModelConfig(**TINY)
  model = VQModel(cfg)
  # Only the quantizer's parameters: `quantize` touches nothing else.
  codebook = np.random.default_rng(0).uniform(-1 / 32, 1 / 32, (32, 6)).astype(np.float32)
  params = {"quantizer": {"codebook": jnp.asarray(codebook)}}
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.normal(0, 0.05, (2, 3, 3, 6)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=z.shape), jnp.float32)

  def terms(params, z):
    out = model.apply({"params": params}, z, method=VQModel.quantize)
    return jnp.sum(out.quantized * weights) + out.loss, out

  (_, out), (grad_params, grad_z) = jax.value_and_grad(terms, argnums=(0, 1), has_aux=True)(
    params, z
  )
  codebook = np.asarray(params["quantizer"]["codebook"])
  z_np = np.asarray(z).reshape(-1, 6)
  codes = np.argmin(((z_np[:, None] - codebook[None]) ** 2).sum(-1), axis=1)
  rows = codebook[codes]
  np.testing.assert_array_equal(np.asarray(out.codes).ravel(), codes)
  np.testing.assert_allclose(np.asarray(out.quantized).reshape(-1, 6), rows, atol=1e-7)
  mse = np.mean((rows - z_np) ** 2)
  np.testing.assert_allclose(
    out.loss, (1 + BETA) * mse, rtol=1e-5
  )  # legacy: commit + beta codebook
  n = z_np.size
  # Straight-through: d/dz sum(w * quantized) = w; commitment adds 2 (z - z_q) / n (weight 1, legacy).
  np.testing.assert_allclose(
    np.asarray(grad_z).reshape(-1, 6),
    np.asarray(weights).reshape(-1, 6) + 2 * (z_np - rows) / n,
    atol=1e-6,
  )
  # The codebook sees only beta * mean (z_q - sg(z))^2, summed over the vectors per code.
  expected = np.zeros_like(codebook)
  np.add.at(expected, codes, 2 * BETA * (rows - z_np) / n)
  np.testing.assert_allclose(grad_params["quantizer"]["codebook"], expected, atol=1e-7)


def test_ema_codebook_updates_as_state_without_gradients():
  cfg = VQModelConfig(**TINY)
  model = VQModel(cfg, codebook_update="ema")
  quantizer = abstract_variables(cfg, "ema")["params"]["quantizer"]
  assert set(quantizer) == {"codebook", "code_sum", "code_count", "initialized"}
  params = {"quantizer": jax.tree.map(lambda a: jnp.zeros(a.shape), nn.unbox(quantizer))}
  z = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4, 4, 6)), jnp.float32)

  def loss(params, rng, z):
    out = model.apply({"params": params}, z, rng, 0.9, method=VQModel.quantize)
    return out.loss, out

  step = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (value, out), grads = step(params, jax.random.key(3), z)
  state = out.state
  assert float(state["initialized"]) == 1.0
  # First batch initialises the codebook to batch vectors (32 codes > 32 vectors: all of them).
  flat = np.asarray(z).reshape(-1, 6)
  assert np.abs(np.asarray(out.quantized).reshape(-1, 6) - flat).max() < 1e-6
  np.testing.assert_allclose(value, BETA * out.commitment, rtol=1e-6)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["quantizer"]))
  # Second step, a moved batch, from the written-back state: the EMA formula per code.
  z2 = z + 0.3
  flat = np.asarray(z2).reshape(-1, 6)
  (_, out2), _ = step({**params, "quantizer": state}, jax.random.key(4), z2)
  onehot = np.eye(32)[np.asarray(out2.codes).ravel()]
  np.testing.assert_allclose(
    out2.state["code_count"], 0.9 * state["code_count"] + 0.1 * onehot.sum(0), atol=1e-6
  )
  np.testing.assert_allclose(
    out2.state["code_sum"], 0.9 * state["code_sum"] + 0.1 * onehot.T @ flat, atol=1e-5
  )
  assert not np.allclose(out2.state["codebook"], state["codebook"], atol=1e-3)
  alive = np.asarray(out2.state["code_count"]) >= 1
  assert alive.any()
  np.testing.assert_allclose(
    np.asarray(out2.state["codebook"])[alive],
    (np.asarray(out2.state["code_sum"]) / np.asarray(out2.state["code_count"])[:, None])[alive],
    rtol=1e-5,
  )
  with pytest.raises(CodebookUpdateError, match="rng, ema_decay"):
    model.apply({"params": params}, z, None, 0.9, method=VQModel.quantize)

  usage = vqgan.codebook_usage(jnp.array([[0, 0], [1, 3]]), 8)
  assert int(usage["used_codes"]) == 3 and int(usage["dead_codes"]) == 5
  p = np.array([0.5, 0.25, 0.25])
  np.testing.assert_allclose(usage["perplexity"], np.exp(-(p * np.log(p)).sum()), rtol=1e-5)


# ----------------------------------------------------------------------------
# GAN losses.


def test_adaptive_weight_and_losses_match_hand_computation():
  # A one-level model (cheap to compile): the formula does not depend on depth.
  cfg = VQModelConfig(block_out_channels=(8,), norm_num_groups=4, mid_block_add_attention=False)
  images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  model = VQModel(cfg)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(1), images)["params"])
  disc = PatchDiscriminator(PatchDiscriminatorConfig(channels=8, num_layers=1, norm="batch"))
  disc_params = jax.jit(disc.init)(jax.random.key(0), jnp.asarray(images))["params"]
  loss_cfg = VQGANLossConfig(disc_start=5, disc_weight=0.75)
  x = jnp.asarray(images)

  def g_fn(rec):
    return -jnp.mean(disc.apply({"params": disc_params}, rec))

  nll_fn = functools.partial(vqgan.reconstruction_nll, x)

  def generator(params, step_index):
    latents = model.apply({"params": params}, x, method=VQModel.encode)
    out = model.apply({"params": params}, latents, method=VQModel.quantize)

    def reconstruct(kernel):
      p = vqgan.with_last_layer(params, kernel)
      return model.apply({"params": p}, out.quantized, method=VQModel.decode_quantized)

    rec, nll_grad, g_grad = vqgan.last_layer_gradients(
      reconstruct, vqgan.last_layer(params), nll_fn, g_fn
    )
    weight = vqgan.adaptive_weight(nll_grad, g_grad, loss_cfg.disc_weight)
    logits = disc.apply({"params": disc_params}, rec)
    total, metrics = vqgan.generator_loss(
      nll_fn(rec), logits, out.loss, weight, step_index, loss_cfg
    )
    return total, dict(
      metrics, nll_grad=nll_grad, g_grad=g_grad, rec=rec, logits=logits, q_loss=out.loss
    )

  @jax.jit
  def run(params, step_index):
    (total, aux), grads = jax.value_and_grad(generator, has_aux=True)(params, step_index)

    # Hand computation: each loss's gradient w.r.t. the last kernel by plain jax.grad.
    def full(kernel, fn):
      return fn(model.apply({"params": vqgan.with_last_layer(params, kernel)}, x)[0])

    kernel = vqgan.last_layer(params)
    refs = dict(
      ref_nll_grad=jax.grad(full)(kernel, nll_fn), ref_g_grad=jax.grad(full)(kernel, g_fn)
    )
    return total, dict(aux, **refs), grads

  total, aux, grads = run(params, 7)
  np.testing.assert_allclose(aux["nll_grad"], aux["ref_nll_grad"], atol=1e-6)
  np.testing.assert_allclose(aux["g_grad"], aux["ref_g_grad"], atol=1e-6)
  lam = np.linalg.norm(aux["ref_nll_grad"]) / (np.linalg.norm(aux["ref_g_grad"]) + 1e-4) * 0.75
  assert 0 < lam < 1e4
  np.testing.assert_allclose(aux["d_weight"], lam, rtol=1e-4)
  rec = np.asarray(aux["rec"])
  nll = np.mean(np.abs(images - rec))
  g = -np.mean(np.asarray(aux["logits"]))
  q_loss = float(aux["q_loss"])
  np.testing.assert_allclose(total, nll + lam * g + 1.0 * q_loss, rtol=1e-4)
  # The weight carries no gradient; the reconstructions of the vjp pass do.
  assert np.abs(np.asarray(grads["encoder"]["conv_in"]["kernel"])).max() > 0
  # Before disc_start the adversarial term is off; the weight is clamped to [0, 1e4].
  before, before_aux, _ = run(params, 4)
  assert float(before_aux["disc_factor"]) == 0.0
  np.testing.assert_allclose(before, nll + q_loss, rtol=1e-5)

  real = np.array([0.5, 2.0, -1.0], np.float32)
  fake = np.array([-2.0, 0.0, 1.5], np.float32)
  vanilla = VQGANLossConfig(disc_loss="vanilla")
  small = jax.jit(
    lambda real, fake: dict(
      clamped=vqgan.adaptive_weight(jnp.ones(3), jnp.zeros(3), 2.0),
      hinge_on=vqgan.discriminator_loss(real, fake, 5, loss_cfg),
      hinge_off=vqgan.discriminator_loss(real, fake, 4, loss_cfg),
      vanilla=vqgan.discriminator_loss(real, fake, 0, vanilla),
    )
  )(real, fake)
  assert float(small["clamped"]) == 2e4
  hinge = 0.5 * (np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake)))
  np.testing.assert_allclose(small["hinge_on"], hinge, rtol=1e-6)
  assert float(small["hinge_off"]) == 0.0
  softplus = lambda v: np.log1p(np.exp(v))  # noqa: E731
  expected = 0.5 * (np.mean(softplus(-real)) + np.mean(softplus(fake)))
  np.testing.assert_allclose(small["vanilla"], expected, rtol=1e-5)


def test_bad_inputs_are_named():
  cfg = VQModelConfig(**TINY)
  model = VQModel(cfg)
  params = {"params": {}}  # inputs are checked before any weight is read
  with pytest.raises(ValueError, match="images: height and width must be multiples of 2"):
    model.apply(params, jnp.zeros((1, 3, 3, 3)))
  with pytest.raises(ValueError, match=r"latents: expected \(batch, height, width, 6\)"):
    model.apply(params, jnp.zeros((1, 2, 2, 4)), method=VQModel.quantize)
  with pytest.raises(ValueError, match="codes: expected"):
    model.apply(params, jnp.zeros((1, 2, 2)), method=VQModel.decode_codes)
