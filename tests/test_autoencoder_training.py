"""Autoencoder task: the one-scalar GAN objective's gradients, training, and the PatchGAN."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.models import discriminator as disc_lib
from jaxgen.models.autoencoder import vae_loss
from jaxgen.tasks.image.autoencoder import AutoencoderTask

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")

# 8×8 images and the smallest widths: every test here compiles the tiny model.
TINY_AUTOENCODER = [
  "data.resolution=8",
  "vae.sample_size=8",
  "data.num_train_examples=16",
  "vae.block_out_channels=(8, 8)",
  "vae.norm_num_groups=4",
  "disc.channels=8",
  "disc.num_layers=1",
  "disc.norm_num_groups=4",
  "train.batch_size=8",
  "train.num_steps=2",
  "train.log_every=1",
  "train.sample_every=0",
  "checkpoint.save_every=2",
  "optim.warmup_steps=1",
  "train.max_minutes=None",
  "eval.num_examples=8",
]


def tiny_autoencoder_config(*extra):
  config = load_config_file(os.path.join(CONFIGS, "autoencoder_shapes.py"))
  return apply_overrides(config, TINY_AUTOENCODER + list(extra))


@pytest.fixture(scope="module")
def task_and_batch():
  # disc.start=1: the games switch on at step 1, so one task (and one compiled
  # gradient, `loss_grad`) serves the gating, gradient and training tests.
  task = AutoencoderTask(tiny_autoencoder_config("disc.start=1"))
  batch = {k: jnp.asarray(v[:8]) for k, v in task.train_arrays().items()}
  batch["step"] = jnp.int32(1)
  params = jax.tree.map(
    lambda x: x.unbox() if hasattr(x, "unbox") else x,
    jax.jit(task.init)(jax.random.PRNGKey(0), batch),
    is_leaf=lambda x: hasattr(x, "unbox"),
  )
  # Train the discriminator's params away from init a little: random logits
  # near zero make both hinge terms nearly linear, a weak test.
  params["discriminator"] = jax.tree.map(lambda p: p * 3.0, params["discriminator"])
  return task, batch, params


@pytest.fixture(scope="module")
def loss_grad(task_and_batch):
  task = task_and_batch[0]
  return jax.jit(jax.value_and_grad(task.loss, has_aux=True))


def _max_rel_diff(a, b):
  """Largest leaf-wise max|a - b| / max|b|, the scale floored at 1e-3 of the tree's largest.

  The floor is for leaves whose true gradient is zero (attention key biases:
  softmax ignores a shift shared by all keys), where only rounding remains.
  """
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  tree_scale = max(float(jnp.max(jnp.abs(y))) for y in leaves_b)
  return max(
    float(jnp.max(jnp.abs(x - y))) / max(float(jnp.max(jnp.abs(y))), 1e-3 * tree_scale)
    for x, y in zip(leaves_a, leaves_b)
  )


def test_combined_loss_gradients_equal_those_of_the_separate_games(task_and_batch, loss_grad):
  task, batch, params = task_and_batch
  rng = jax.random.PRNGKey(1)
  _, grads = loss_grad(params, batch, rng)
  images = batch["image"].astype(jnp.float32) / 127.5 - 1.0
  weight = task.config.disc.weight
  disc = lambda p, x: task.discriminator.apply({"params": p}, x)

  def generator_loss(ae_params):  # rec + KL + weight * g_loss, discriminator a constant
    recs, posterior = task.model.apply({"params": ae_params}, images, rng, sample_posterior=True)
    loss, _ = vae_loss(
      images,
      recs,
      posterior,
      kl_weight=task.config.loss.kl_weight,
      kind=task.config.loss.reconstruction,
    )
    return loss + weight * disc_lib.hinge_generator_loss(disc(params["discriminator"], recs))

  def discriminator_loss(disc_params):  # hinge loss alone, on fixed reconstructions
    recs, _ = task.model.apply(
      {"params": params["autoencoder"]}, images, rng, sample_posterior=True
    )
    return disc_lib.hinge_discriminator_loss(disc(disc_params, images), disc(disc_params, recs))

  def rec_and_kl_loss(ae_params):  # the generator's loss without the adversarial term
    recs, posterior = task.model.apply({"params": ae_params}, images, rng, sample_posterior=True)
    return vae_loss(
      images,
      recs,
      posterior,
      kl_weight=task.config.loss.kl_weight,
      kind=task.config.loss.reconstruction,
    )[0]

  @jax.jit  # one program for the three references: eager VJPs run op by op
  def reference_grads(params):
    return (
      jax.grad(generator_loss)(params["autoencoder"]),
      jax.grad(discriminator_loss)(params["discriminator"]),
      jax.grad(rec_and_kl_loss)(params["autoencoder"]),
    )

  want_ae, want_disc, without_gan = reference_grads(params)
  assert _max_rel_diff(grads["autoencoder"], want_ae) < 1e-4
  assert _max_rel_diff(grads["discriminator"], want_disc) < 1e-4
  # Both games really contribute: the adversarial term moves the autoencoder.
  assert _max_rel_diff(want_ae, without_gan) > 1e-3


def test_disc_start_gates_both_games_by_the_step_in_the_batch(task_and_batch, loss_grad):
  task, batch, params = task_and_batch  # disc.start=1
  rng = jax.random.PRNGKey(2)
  without_step = {k: v for k, v in batch.items() if k != "step"}
  with pytest.raises(ValueError, match="disc.start=1 needs the training step"):
    jax.eval_shape(task.loss, params, without_step, rng)  # traced: raised before compiling
  (_, metrics), before = loss_grad(params, dict(batch, step=jnp.int32(0)), rng)
  _, after = loss_grad(params, dict(batch, step=jnp.int32(1)), rng)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(before["discriminator"]))
  assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(after["discriminator"]))
  assert float(metrics["disc_active"]) == 0.0


def test_training_steps_reduce_the_loss(task_and_batch, loss_grad):
  _, batch, params = task_and_batch
  tx = optax.adam(2e-3, b1=0.5, b2=0.9)
  opt_state = tx.init(params)
  recs = []
  for i in range(30):  # the compiled gradient, eager Adam (a few ops on tiny params)
    (_, metrics), grads = loss_grad(params, batch, jax.random.PRNGKey(i))
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    recs.append(float(metrics["reconstruction"]))
  assert np.isfinite(recs).all()
  assert np.mean(recs[-5:]) < 0.7 * np.mean(recs[:5]), recs


def test_perceptual_loss_is_refused_not_faked():
  with pytest.raises(ValueError, match="loss.perceptual_weight: jaxgen has no LPIPS"):
    AutoencoderTask(tiny_autoencoder_config("loss.perceptual_weight=1.0"))


def test_task_without_discriminator_has_only_autoencoder_params():
  task = AutoencoderTask(tiny_autoencoder_config("disc.enabled=False"))
  batch = task.abstract_batch(2)
  params = jax.eval_shape(task.init, jax.random.PRNGKey(0), batch)
  assert set(params) == {"autoencoder"}


def test_patch_discriminator_matches_the_pytorch_layout():
  torch = pytest.importorskip("torch")
  cfg = disc_lib.PatchDiscriminatorConfig(
    in_channels=3, channels=8, num_layers=2, norm_num_groups=4
  )
  model = disc_lib.PatchDiscriminator(cfg)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  params = jax.tree.map(
    lambda p: p.unbox() if hasattr(p, "unbox") else p, params, is_leaf=lambda p: hasattr(p, "unbox")
  )
  # pix2pix's NLayerDiscriminator with GroupNorm in place of BatchNorm.
  nn = torch.nn
  widths = cfg.layer_channels()
  layers, cin = [], 3
  for i, w in enumerate(widths):
    stride = 1 if i == len(widths) - 1 else 2
    layers.append(nn.Conv2d(cin, w, 4, stride, 1, bias=i == 0))
    if i > 0:
      layers.append(nn.GroupNorm(4, w, eps=1e-5))
    layers.append(nn.LeakyReLU(0.2))
    cin = w
  layers.append(nn.Conv2d(cin, 1, 4, 1, 1))
  ref = nn.Sequential(*layers)
  convs = [m for m in ref if isinstance(m, nn.Conv2d)]
  norms = [m for m in ref if isinstance(m, nn.GroupNorm)]
  with torch.no_grad():
    for i, conv in enumerate(convs):
      p = params["conv_out" if i == len(convs) - 1 else f"conv_{i}"]
      conv.weight.copy_(torch.from_numpy(np.asarray(p["kernel"]).transpose(3, 2, 0, 1).copy()))
      if conv.bias is not None:
        conv.bias.copy_(torch.from_numpy(np.asarray(p["bias"])))
    for i, norm in enumerate(norms, start=1):
      norm.weight.copy_(torch.from_numpy(np.asarray(params[f"norm_{i}"]["scale"])))
      norm.bias.copy_(torch.from_numpy(np.asarray(params[f"norm_{i}"]["bias"])))
    want = ref(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  got = np.asarray(model.apply({"params": params}, x))
  assert got.shape == want.shape == (2, 2, 2, 1)
  np.testing.assert_allclose(got, want, atol=1e-5)
  with pytest.raises(ValueError, match="images: a 2-layer PatchGAN needs height and width >= 12"):
    model.apply({"params": params}, jnp.zeros((1, 8, 8, 3)))
