"""The GAN text-to-image tasks: `damsm` (matching pretraining), `stackgan` and `attngan` on its run.

One tiny DAMSM run (16×16 shapes, 4×4 regions) is trained once for the module;
the two GAN tasks train a few steps on it (two branches, 8×8 then 16×16),
reload through the registry and sample.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.tasks import registry
from jaxgen.tasks.image import damsm as damsm_task
from jaxgen.tasks.image import stackgan as stackgan_task
from jaxgen.tasks.image.attngan import AttnGANTask
from jaxgen.training import trainer
from jaxgen.training.task import STATE_UPDATES_KEY

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
BATCH = 8
_RUN = [
  f"train.batch_size={BATCH}",
  "train.log_every=1",
  "optim.warmup_steps=1",
  "train.max_minutes=None",
  "train.sample_every=0",
  "data.resolution=16",
  "data.num_train_examples=32",
  f"eval.num_examples={BATCH}",
]
DAMSM_STEPS = 24
TINY_DAMSM = _RUN + [
  f"train.num_steps={DAMSM_STEPS}",
  f"checkpoint.save_every={DAMSM_STEPS}",
  "optim.learning_rate=1e-2",
  "damsm.word_dim=8",
  "damsm.embed_dim=8",
  "damsm.cnn_channels=(8, 8)",
  f"eval.group_size={BATCH}",
]
GAN_STEPS = 3
TINY_GAN = _RUN + [
  f"train.num_steps={GAN_STEPS}",
  f"checkpoint.save_every={GAN_STEPS}",
  "model.condition_dim=4",
  "model.z_dim=4",
  "model.gf_dim=8",
  "model.df_dim=4",
  "model.base_size=8",
]
CAPTIONS = [
  "a small red circle in the top left",
  "a large blue square in the center",
  "a small green triangle in the bottom right",
]
TASKS = {
  "damsm": "jaxgen.tasks.image.damsm:DAMSMTask",
  "stackgan": "jaxgen.tasks.image.stackgan:StackGANTask",
  "attngan": "jaxgen.tasks.image.attngan:AttnGANTask",
}


def config(name, *overrides):
  return apply_overrides(load_config_file(os.path.join(CONFIGS, name)), list(overrides))


@pytest.fixture(scope="module", autouse=True)
def registered():
  """The three task names, whether or not the registry lists them yet."""
  with pytest.MonkeyPatch.context() as patch:
    for name, path in TASKS.items():
      patch.setitem(registry.TASKS, name, path)
    yield


def norm(tree) -> float:
  """Squared L2 norm of a tree, on the host (no small programs to compile)."""
  return float(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree)))


def fixed_batch(task, count=BATCH):
  arrays = task.train_arrays()
  return {k: jnp.asarray(v[:count]) for k, v in arrays.items()}


def initial_params(task):
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in task.abstract_batch(BATCH).items()}
  return nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0), batch))


@pytest.fixture(scope="module")
def damsm_run(registered, tmp_path_factory):
  cfg = config("damsm_shapes.py", *TINY_DAMSM)
  task = damsm_task.DAMSMTask(cfg)
  workdir = str(tmp_path_factory.mktemp("damsm"))
  state = trainer.train(task, cfg, workdir)
  return task, workdir, state


def gan_config(name, damsm_workdir, *extra):
  return config(f"{name}_shapes.py", *TINY_GAN, f"damsm.workdir={damsm_workdir}", *extra)


@pytest.fixture(scope="module")
def stackgan_run(damsm_run, tmp_path_factory):
  cfg = gan_config("stackgan", damsm_run[1])
  task = registry.get_task(cfg)
  workdir = str(tmp_path_factory.mktemp("stackgan"))
  return task, workdir, trainer.train(task, cfg, workdir)


# ---------------------------------------------------------------- DAMSM


def test_caption_helpers():
  tokens = np.array([[2, 5, 6, 7, 3, 0], [2, 5, 3, 0, 0, 0], [2, 5, 6, 7, 3, 0]])

  @jax.jit
  def helpers(tokens, twins, same):
    words = damsm_task.caption_words(tokens, (tokens > 0).astype(jnp.int32))
    mismatched = [stackgan_task.mismatched_indices(t) for t in (tokens, twins, same)]
    return words, damsm_task.caption_classes(tokens), mismatched

  (words, lengths), classes, mismatched = helpers(
    tokens, np.array([[4], [4], [5], [4]]), np.ones((2, 1))
  )
  np.testing.assert_array_equal(words, [[5, 6, 7, 0, 0], [5, 0, 0, 0, 0], [5, 6, 7, 0, 0]])
  np.testing.assert_array_equal(lengths, [3, 1, 3])
  np.testing.assert_array_equal(classes, [0, 1, 0])
  # a mismatched image is the next one whose caption differs: row 2 skips its twin, row 0
  np.testing.assert_array_equal(mismatched[0], [1, 2, 1])
  np.testing.assert_array_equal(mismatched[1], [2, 2, 3, 2])
  np.testing.assert_array_equal(mismatched[2], [1, 0])  # all alike: the next row


def test_damsm_training_lowers_the_matching_loss(damsm_run):
  task, _, state = damsm_run
  batch = fixed_batch(task)
  before = task.scores(
    initial_params(task), batch["image"], batch["text_tokens"], batch["text_mask"]
  )
  after = task.scores(state.params, batch["image"], batch["text_tokens"], batch["text_mask"])
  assert float(after[2]) < 0.7 * float(before[2]), (before[2], after[2])
  assert before[0].shape == before[1].shape == (BATCH, BATCH)
  metrics = task.evaluate(state.params)
  assert metrics["chance"] == 1 / BATCH and np.isfinite(metrics["loss"])
  assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k.startswith(("sentence", "words")))
  # identical captions in the batch are not negatives: masking them can only lower the loss
  twin = {k: np.concatenate([v[:1], v[:1], v[2:]]) for k, v in batch.items()}

  @jax.jit
  def masked_and_unmasked(params, batch):
    text = task.encode_text(params, batch["text_tokens"], batch["text_mask"])
    regions, codes = task.encode_images(params, damsm_task.to_model_range(batch["image"]))
    classes = damsm_task.caption_classes(batch["text_tokens"])
    return [task.matching_loss(regions, codes, text, c)[0] for c in (classes, None)]

  masked, unmasked = masked_and_unmasked(state.params, twin)
  assert float(masked) < float(unmasked)


def test_damsm_bad_configs_are_named():
  with pytest.raises(damsm_task.DAMSMTaskConfigError, match="damsm.backbone: expected 'cnn'"):
    damsm_task.DAMSMTask(config("damsm_shapes.py", "damsm.backbone=inception"))
  with pytest.raises(damsm_task.DAMSMTaskConfigError, match="data.resolution: expected a multiple"):
    damsm_task.DAMSMTask(config("damsm_shapes.py", "data.resolution=20"))
  with pytest.raises(damsm_task.DAMSMTaskConfigError, match="loss.gamma3: expected a number > 0"):
    damsm_task.DAMSMTask(config("damsm_shapes.py", "loss.gamma3=0.0"))
  with pytest.raises(ValueError, match="embed_dim: expected an even width"):
    damsm_task.DAMSMTask(config("damsm_shapes.py", "damsm.embed_dim=7"))


# ---------------------------------------------------------------- StackGAN++


def test_stackgan_trains_with_running_statistics_and_reloads(stackgan_run, tmp_path):
  task, workdir, state = stackgan_run
  assert os.path.isabs(task.config.damsm.workdir)
  assert set(state.params["discriminators"]) == {"d_net8", "d_net16"}
  # BatchNorm running statistics moved by the G passes, and the EMA model samples with them
  stats = state.params["generator"]["batch_stats"]
  means = np.concatenate([np.ravel(x) for x in jax.tree.leaves(stats)])
  assert np.abs(means).max() > 0.0
  jax.tree.map(np.testing.assert_array_equal, stats, state.ema_params["generator"]["batch_stats"])
  loaded, params = registry.load_run(workdir)
  assert isinstance(loaded, stackgan_task.StackGANTask)
  jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(state.ema_params))
  conditions = loaded.conditions(CAPTIONS)
  first = loaded.generate(params, conditions, jax.random.PRNGKey(0))["image"]
  again = loaded.generate(params, conditions, jax.random.PRNGKey(0))["image"]
  other = loaded.generate(params, conditions, jax.random.PRNGKey(1))["image"]
  assert first.shape == (3, 16, 16, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  path = loaded.save_samples({"image": first}, conditions, str(tmp_path / "grid.png"))
  assert Image.open(path).size[0] > 16 * 3


def test_each_player_gets_only_its_own_games_gradient(stackgan_run):
  task, _, state = stackgan_run
  batch = dict(fixed_batch(task), step=jnp.int32(0))
  rng = jax.random.PRNGKey(5)

  @jax.jit
  def gradients(params):
    def term(key):
      def f(p):
        loss, metrics = task.loss(p, batch, rng)
        return metrics[key], (loss, metrics)

      return jax.grad(f, has_aux=True)(params)

    (d_grads, (loss, metrics)), (g_grads, _) = term("d_loss"), term("g_loss")
    return d_grads, g_grads, loss, metrics

  d_grads, g_grads, loss, metrics = gradients(state.params)
  # the generator's term reads D frozen, D's terms read the fakes frozen
  assert norm(g_grads["discriminators"]) == 0.0 and norm(d_grads["generator"]) == 0.0
  assert all(norm(d_grads["discriminators"][name]) > 0 for name in ("d_net8", "d_net16"))
  assert (
    norm(g_grads["generator"]["params"]["h_net2"]) > 0
    and norm(g_grads["generator"]["params"]["ca_net"]) > 0
  )
  assert norm(g_grads["generator"]["batch_stats"]) == 0.0  # statistics move by state updates alone
  np.testing.assert_allclose(loss, metrics["g_loss"] + metrics["d_loss"], rtol=1e-5)
  assert float(metrics["kl"]) > 0.0 and float(metrics["d_loss_d_net16"]) > 0.0
  updated = metrics[STATE_UPDATES_KEY]["generator"]["batch_stats"]
  assert jax.tree.structure(updated) == jax.tree.structure(state.params["generator"]["batch_stats"])


def test_stackgan_options_and_configs_are_named(stackgan_run, damsm_run, tmp_path):
  task, workdir, state = stackgan_run
  with pytest.raises(SamplingOptionError, match="sampler: task 'stackgan' draws an image in one"):
    task.check_options({"sampler": "ddim"})
  with pytest.raises(SamplingOptionError, match="num_steps"):
    task.generate(state.ema_params, task.conditions(CAPTIONS), jax.random.PRNGKey(0), num_steps=4)
  accuracy, images, captions = task.evaluate(state.ema_params, jax.random.PRNGKey(0))
  assert images.shape == (BATCH, 16, 16, 3) and len(captions) == BATCH
  assert set(accuracy) >= {"shape", "colour", "size", "position", "all"}
  assert all(0.0 <= v <= 1.0 for v in accuracy.values())

  damsm_dir = damsm_run[1]
  bad = stackgan_task.TextGANTaskConfigError
  with pytest.raises(bad, match="model.base_size, model.num_stages: the last stage draws 16"):
    registry.get_task(gan_config("stackgan", damsm_dir, "data.resolution=32"))
  with pytest.raises(damsm_task.DAMSMTaskConfigError, match="data.resolution: the DAMSM in"):
    registry.get_task(gan_config("stackgan", damsm_dir, "data.resolution=32", "model.base_size=16"))
  with_text_dim = gan_config("stackgan", damsm_dir)
  with_text_dim.model.text_dim = 8
  with pytest.raises(bad, match="model.text_dim: expected no value"):
    registry.get_task(with_text_dim)
  with pytest.raises(bad, match="loss.kl_weight: expected a number >= 0"):
    registry.get_task(gan_config("stackgan", damsm_dir, "loss.kl_weight=-1.0"))
  with pytest.raises(registry.DependentRunError, match="damsm.workdir: expected a damsm run"):
    registry.get_task(gan_config("stackgan", workdir))


# ---------------------------------------------------------------- AttnGAN


def test_attngan_learns_against_the_frozen_damsm(damsm_run):
  damsm, damsm_dir, damsm_state = damsm_run
  task = registry.get_task(gan_config("attngan", damsm_dir))
  assert isinstance(task, AttnGANTask) and task.arch.text_dim == damsm.embed_dim
  jax.tree.map(np.testing.assert_array_equal, task.damsm_params, jax.device_get(damsm_state.params))
  params = initial_params(task)
  assert set(params) == {"generator", "discriminators"}  # the DAMSM is not trained here
  batch = dict(fixed_batch(task), step=jnp.int32(0))
  grad_fn = jax.jit(jax.grad(lambda p: task.loss(p, batch, jax.random.PRNGKey(2)), has_aux=True))
  grads, metrics = grad_fn(params)
  assert float(metrics["damsm"]) > 0.0 and np.isfinite(float(metrics["g_loss"]))
  assert float(metrics["d_loss_d_net16"]) > 0.0
  attention = grads["generator"]["params"]["h_net2"]["att"]["conv_context"]["kernel"]
  assert norm(attention) > 0.0  # the word features reach the generator
  conditions = task.conditions(CAPTIONS)
  first = task.generate(params, conditions, jax.random.PRNGKey(0))["image"]
  again = task.generate(params, conditions, jax.random.PRNGKey(0))["image"]
  assert first.shape == (3, 16, 16, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(first, again)
