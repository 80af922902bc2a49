"""Latent diffusion task: latents of a frozen autoencoder, training, sampling, named errors."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.models.autoencoder import AutoencoderKL, AutoencoderKLConfig
from jaxgen.pipelines.frozen_autoencoder import FrozenAutoencoder, latent_std
from jaxgen.tasks.image.latent_diffusion import LatentDiffusionTask, train_images
from jaxgen.diffusion.samplers import SamplingOptionError

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")

# 8×8 images (4×4×4 latents), a one-level U-Net (cross-attention, no
# downsampling) and the smallest widths: every test compiles the U-Net.
TINY_LATENT_DIFFUSION = [
  "data.resolution=8",
  "unet.sample_size=4",
  "data.num_train_examples=16",
  "autoencoder.num_stat_examples=16",
  "unet.down_block_types=('CrossAttnDownBlock2D',)",
  "unet.up_block_types=('CrossAttnUpBlock2D',)",
  "unet.block_out_channels=(8,)",
  "unet.attention_head_dim=2",
  "unet.cross_attention_dim=16",
  "unet.norm_num_groups=4",
  "text.width=16",
  "text.num_layers=1",
  "text.num_heads=2",
  "train.batch_size=8",
  "train.num_steps=2",
  "train.sample_every=0",
  "sample.num_steps=3",
  "eval.num_examples=8",
]

TINY_VAE = AutoencoderKLConfig(
  down_block_types=("DownEncoderBlock2D",) * 2,
  up_block_types=("UpDecoderBlock2D",) * 2,
  block_out_channels=(8, 8),
  norm_num_groups=4,
  latent_channels=4,
  sample_size=8,
  scaling_factor=1.0,
)


def unbox(tree):
  return jax.tree.map(
    lambda x: x.unbox() if hasattr(x, "unbox") else x, tree, is_leaf=lambda x: hasattr(x, "unbox")
  )


def tiny_latent_config(*extra):
  config = load_config_file(os.path.join(CONFIGS, "latent_diffusion_shapes.py"))
  return apply_overrides(config, TINY_LATENT_DIFFUSION + list(extra))


@functools.cache
def random_autoencoder(seed=0):
  init = jax.jit(AutoencoderKL(TINY_VAE).init)  # jitted: eager init compiles op by op
  params = init(jax.random.PRNGKey(seed), jnp.zeros((1, 8, 8, 3)))
  return FrozenAutoencoder(TINY_VAE, unbox(params["params"]))


@functools.cache
def tiny_latent_task(*extra):
  """A tiny latent task on a random-weight autoencoder, its params and a batch of 8.

  Cached: test modules share one task per config, and with it its compiled programs.
  """
  task = LatentDiffusionTask(tiny_latent_config(*extra), autoencoder=random_autoencoder())
  batch = {k: jnp.asarray(v[:8]) for k, v in task.train_arrays().items()}
  params = unbox(jax.jit(task.init)(jax.random.PRNGKey(1), batch))
  return task, params, batch


def fit(task, params, batch, num_steps, learning_rate=3e-3):
  """Adam on one batch with a fixed key (a deterministic objective); returns (params, losses)."""
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(lambda p: task.loss(p, batch, jax.random.PRNGKey(7))[0])(
      params
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for _ in range(num_steps):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  return params, losses


@pytest.fixture(scope="module")
def latent_task():
  return tiny_latent_task()


def test_latents_are_scaled_to_unit_std(latent_task):
  task, _, _ = latent_task
  factor = task.autoencoder.config.scaling_factor
  unit = FrozenAutoencoder(TINY_VAE, task.autoencoder.params)
  images = train_images(task.config, 16)  # the images the task measured
  assert factor == pytest.approx(1.0 / latent_std(unit, images), rel=1e-6)
  x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
  assert float(jnp.std(task.autoencoder.encode(x, jax.random.PRNGKey(0)))) == pytest.approx(
    1.0, abs=0.05
  )


def test_training_steps_reduce_the_loss_and_leave_the_autoencoder_alone(latent_task):
  task, params, batch = latent_task
  assert set(params) == {"text_encoder", "pooled_text_proj", "denoiser"}
  before = jax.tree.map(np.asarray, task.autoencoder.params)
  _, losses = fit(task, params, batch, 15)
  assert np.isfinite(losses).all()
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
  after = task.autoencoder.params
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def test_generate_decodes_latent_samples_to_images(latent_task):
  task, params, _ = latent_task
  captions = ["a small red circle in the top left", "a large blue square in the centre"]
  samples = task.generate(params, task.conditions(captions), jax.random.PRNGKey(0), num_steps=2)
  assert set(samples) == {"image"}
  images = samples["image"]
  assert images.shape == (2, 8, 8, 3) and images.dtype == np.uint8
  # Inherited from text_to_image: options are checked against this config before compiling.
  with pytest.raises(SamplingOptionError, match="num_steps: expected .* at most 1000"):
    task.generate(params, task.conditions(captions), jax.random.PRNGKey(0), num_steps=1001)


def test_named_errors_for_configs_that_do_not_fit():
  ae = random_autoencoder()
  fixed = "autoencoder.scaling_factor=1.0"  # nothing to measure (and compile) before the check
  with pytest.raises(ValueError, match=r"unet.in_channels/out_channels must be 6/4"):
    LatentDiffusionTask(tiny_latent_config("unet.in_channels=5", fixed), autoencoder=ae)
  with pytest.raises(ValueError, match=r"must be 11/4 \(4 latent \+ 1 mask \+ 4 masked-image"):
    LatentDiffusionTask(tiny_latent_config("model.inpainting=True", fixed), autoencoder=ae)
  with pytest.raises(ValueError, match="autoencoder.scaling_factor: expected a positive number"):
    LatentDiffusionTask(tiny_latent_config("autoencoder.scaling_factor=0.0"), autoencoder=ae)
  with pytest.raises(ValueError, match="autoencoder.workdir: expected the run directory"):
    LatentDiffusionTask(tiny_latent_config("autoencoder.workdir=''"))


def test_loads_the_autoencoder_of_a_training_run(tmp_path):
  from test_autoencoder_training import tiny_autoencoder_config

  from jaxgen.tasks.registry import get_task
  from jaxgen.training.trainer import train

  workdir = str(tmp_path / "ae")
  ae_config = tiny_autoencoder_config(
    "disc.enabled=False", "train.num_steps=1", "checkpoint.save_every=1"
  )
  state = train(get_task(ae_config), ae_config, workdir)
  task = LatentDiffusionTask(
    tiny_latent_config(f"autoencoder.workdir='{workdir}'", "autoencoder.scaling_factor=0.5")
  )
  assert task.autoencoder.config.scaling_factor == 0.5
  assert task.autoencoder.config.block_out_channels == (8, 8)
  want = state.ema_params["autoencoder"]
  assert all(
    np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(task.autoencoder.params), jax.tree.leaves(want))
  )
