"""The `vqgan` task (training, disc start, EMA codebook, evaluation) and the token-prior base."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image
from tiny_configs import tiny_config

from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.tasks.image import image_tokens
from jaxgen.tasks.image.vqgan import DiscStartError, VQGANTask
from jaxgen.tasks.registry import DependentRunError
from jaxgen.training import trainer

STEPS = 30
DISC_START = 20
# 16×16 images (SSIM's 11×11 window fits) -> 8×8 codes of 16.
TINY_16 = (
  "data.resolution=16",
  "vq.sample_size=16",
  "data.num_train_examples=64",
  "eval.num_examples=16",
  f"train.num_steps={STEPS}",
  f"checkpoint.save_every={STEPS}",
  "optim.learning_rate=3e-3",
  # No attention: the model tests cover it, and it doubles these programs' compile time.
  "vq.down_block_types=('DownEncoderBlock2D', 'DownEncoderBlock2D')",
  "vq.up_block_types=('UpDecoderBlock2D', 'UpDecoderBlock2D')",
  "vq.mid_block_add_attention=False",
  "optim.warmup_steps=3",
  f"loss.disc_start={DISC_START}",
)


def vqgan_config(*extra):
  return tiny_config("vqgan_shapes.py", *TINY_16, *extra)


def initial_params(task, batch_size=8):
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in task.abstract_batch(batch_size).items()}
  return nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(task.config.seed), batch))


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
  config = vqgan_config()
  task = VQGANTask(config)
  workdir = str(tmp_path_factory.mktemp("vqgan_learned"))
  state = trainer.train(task, config, workdir)
  return task, workdir, state


def test_training_lowers_reconstruction_error(learned_run):
  task, _, state = learned_run
  before = task.evaluate(initial_params(task))
  after = task.evaluate(state.params)
  assert after["l1"] < 0.7 * before["l1"], (before, after)
  assert after["psnr"] > before["psnr"] + 2.0
  assert after["ssim"] > before["ssim"]
  k = task.num_codes
  for metrics in (before, after):
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["used_codes"] + metrics["dead_codes"] == k
    assert 1.0 <= metrics["perplexity"] <= metrics["used_codes"]
    assert 0.0 <= metrics["judge_all"] <= 1.0


def test_disc_start_switches_both_games_on(learned_run):
  task, _, state = learned_run
  batch = {"image": jnp.asarray(task.train_arrays()["image"][:8])}
  loss_and_grad = jax.jit(jax.value_and_grad(task.loss, has_aux=True))
  rng = jax.random.PRNGKey(3)
  (off_loss, off), off_grads = loss_and_grad(state.params, dict(batch, step=DISC_START - 1), rng)
  (on_loss, on), on_grads = loss_and_grad(state.params, dict(batch, step=DISC_START), rng)
  assert float(off["disc_factor"]) == 0.0 and float(on["disc_factor"]) == 1.0
  assert float(off["d_loss"]) == 0.0 and float(on["d_loss"]) > 0.0
  np.testing.assert_allclose(off_loss, off["nll"] + off["quant_loss"], rtol=1e-5)
  expected = on["nll"] + on["d_weight"] * on["g_loss"] + on["quant_loss"] + on["d_loss"]
  np.testing.assert_allclose(on_loss, expected, rtol=1e-5)
  # The adaptive weight is measured either way (taming), positive and clamped.
  assert 0.0 < float(off["d_weight"]) <= 1e4 * task.loss_config.disc_weight
  # The discriminator learns only once its game is on; the encoder and the
  # (gradient-trained) codebook learn in both phases.
  norm = lambda tree: float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))  # noqa: E731
  assert norm(off_grads["disc"]) == 0.0 and norm(on_grads["disc"]) > 0.0
  for grads in (off_grads, on_grads):
    assert norm(grads["vqgan"]["encoder"]) > 0.0
    assert norm(grads["vqgan"]["quantizer"]["codebook"]) > 0.0
  # Outside the trainer the step is needed once the GAN starts later.
  with pytest.raises(DiscStartError, match="loss.disc_start=20 needs the training step"):
    task.loss(state.params, batch, rng)


def test_ema_codebook_trains_through_state_updates(tmp_path):
  config = vqgan_config("quantizer.codebook_update=ema", "train.num_steps=8")
  task = VQGANTask(config)
  state = trainer.train(task, config, str(tmp_path / "ema"))
  quantizer = state.params["vqgan"]["quantizer"]
  assert float(quantizer["initialized"]) == 1.0  # set from the first batch
  codebook = np.asarray(quantizer["codebook"])
  assert np.abs(codebook).max() > 0.0  # moved off its zero init by the state updates
  alive = np.asarray(quantizer["code_count"]) >= 1
  np.testing.assert_allclose(
    codebook[alive],
    np.asarray(quantizer["code_sum"])[alive] / np.asarray(quantizer["code_count"])[alive, None],
    rtol=1e-4,
  )
  # The EMA model samples with the same statistics.
  np.testing.assert_array_equal(state.ema_params["vqgan"]["quantizer"]["codebook"], codebook)
  metrics = task.evaluate(state.params)
  assert all(np.isfinite(v) for v in metrics.values())
  assert metrics["used_codes"] + metrics["dead_codes"] == task.num_codes
  assert 1.0 <= metrics["perplexity"] <= metrics["used_codes"]


def test_bad_configs_are_named():
  with pytest.raises(ValueError, match="quantizer.codebook_update: expected one of"):
    VQGANTask(vqgan_config("quantizer.codebook_update=gumbel"))
  with pytest.raises(ValueError, match="data.resolution: expected a multiple of"):
    VQGANTask(vqgan_config("data.resolution=15"))
  with pytest.raises(ValueError, match="perceptual_weight"):
    VQGANTask(vqgan_config("loss.perceptual_weight=1.0"))


# ----------------------------------------------------------------------------
# The token-prior base.


class CodeHashPrior(image_tokens.TokenPriorTask):
  """A prior whose 'sampler' is a fixed function of the caption tokens: tests the plumbing."""

  samplers = ("hash",)
  guidance_setting = "sample.hash_guidance"  # never on: `guided` stays the base's False

  def sample_codes(self, params, tokens, mask, rng, *, sampler, num_steps, guidance_scale):
    del params, rng, sampler, num_steps, guidance_scale
    h, w = self.token_grid
    offsets = jnp.sum(tokens * mask, axis=-1)[:, None, None]
    return ((offsets + jnp.arange(h * w).reshape(h, w)) % self.num_codes).astype(jnp.int32)


def prior_config(vq_config, workdir):
  return ml_collections.ConfigDict(
    dict(
      task="code_hash_prior",
      data=vq_config.data.to_dict(),
      text=dict(max_length=12),
      vq=dict(workdir=workdir),
      sample=dict(sampler="hash", num_steps=1, guidance=1.0),
      eval=dict(num_examples=4),
    )
  )


def test_token_prior_base_round_trips_codes(learned_run, tmp_path):
  task, workdir, _ = learned_run
  prior = CodeHashPrior(prior_config(task.config, workdir))
  arrays = prior.train_arrays()
  n = task.config.data.num_train_examples
  assert arrays["codes"].shape == (n, 8, 8) and arrays["codes"].dtype == np.int32
  assert arrays["text_tokens"].shape == arrays["text_mask"].shape == (n, 12)
  assert arrays["codes"].min() >= 0 and arrays["codes"].max() < task.num_codes
  prior.check_batch({k: v[:4] for k, v in arrays.items()})
  # The codes are the VQGAN's, and decode to its reconstructions.
  images = task.train_arrays()["image"][:10]
  codes = image_tokens.encode_images_to_codes(prior.vq_task, prior.vq_params, images, batch=4)
  np.testing.assert_array_equal(codes, arrays["codes"][:10])
  decoded = image_tokens.decode_codes_to_images(prior.vq_task, prior.vq_params, codes, batch=4)
  assert decoded.shape == images.shape and decoded.dtype == np.uint8
  recs, rec_codes = prior.vq_task.reconstruct(prior.vq_params, jnp.asarray(images))
  np.testing.assert_array_equal(rec_codes, codes)
  assert np.abs(decoded.astype(int) - np.round((np.asarray(recs) + 1) * 127.5)).max() <= 1
  # Generation: the sampler's codes through the decoder, as a captioned grid.
  captions = ["a small red circle in the top left", "a large blue square in the center"]
  conditions = prior.conditions(captions)
  samples = prior.generate(None, conditions, jax.random.PRNGKey(0))["image"]
  tokens, mask = prior.tokenize(captions)
  expected = prior.sample_codes(
    None, tokens, mask, None, sampler="hash", num_steps=1, guidance_scale=1.0
  )
  np.testing.assert_array_equal(
    samples, image_tokens.decode_codes_to_images(prior.vq_task, prior.vq_params, expected)
  )
  path = prior.save_samples({"image": samples}, conditions, str(tmp_path / "grid.png"))
  assert Image.open(path).size[0] > 0
  with pytest.raises(SamplingOptionError, match="sample.hash_guidance off"):
    prior.check_options({"guidance_scale": 2.0})  # no unconditional model to guide against


def test_token_prior_base_names_bad_input(learned_run, tmp_path):
  task, workdir, _ = learned_run
  prior = CodeHashPrior(prior_config(task.config, workdir))
  arrays = {k: v[:4] for k, v in prior.train_arrays().items()}
  with pytest.raises(image_tokens.ImageTokenDataError, match=r"batch\['codes'\]: expected ids"):
    prior.check_batch(dict(arrays, codes=arrays["codes"] + task.num_codes))
  with pytest.raises(image_tokens.ImageTokenDataError, match=r"batch\['text_mask'\]: expected"):
    prior.check_batch(dict(arrays, text_mask=arrays["text_mask"][:, :3]))
  with pytest.raises(ValueError, match="sampler: expected one of"):
    prior.check_options({"sampler": "ddim"})
  with pytest.raises(ValueError, match="num_steps: expected an integer"):
    prior.check_options({"num_steps": 0})
  other = prior_config(task.config, workdir)
  other.data.resolution = 32
  with pytest.raises(image_tokens.ImageTokenDataError, match="data.resolution: the VQGAN in"):
    CodeHashPrior(other)
  with pytest.raises(DependentRunError, match="vq.workdir: expected the directory of a vqgan run"):
    image_tokens.load_vqgan_run(str(tmp_path / "missing"))
  assert os.path.isabs(prior.config.vq.workdir)
