"""The `vq_diffusion` task: training with importance-sampled t, one-scan sampling, options, reload."""

import functools
import os

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.diffusion import discrete
from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.models.vq_diffusion import VQDiffusion
from jaxgen.tasks import registry
from jaxgen.tasks.image import image_tokens, vq_diffusion
from jaxgen.tasks.image.vq_diffusion import VQDiffusionTask, VQDiffusionTaskConfigError
from jaxgen.training import trainer

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
T = 8  # reverse steps reachable by skipping: 8, 5, 4, 3, 2
STEPS = 40
BATCH = 8
CAPTIONS = [
  "a small red circle in the top left",
  "a large blue square in the center",
  "a small green triangle in the bottom right",
  "a large yellow circle in the top right",
]
# 8×8 images -> the tiny VQGAN's 4×4 codes of 16; one block of width 16.
TINY = (
  "data.resolution=8",
  "data.num_train_examples=16",
  "text.width=16",
  "text.num_layers=1",
  "text.num_heads=2",
  "model.embed_dim=16",
  "model.num_layers=1",
  "model.num_heads=2",
  f"diffusion.num_timesteps={T}",
  f"sample.num_steps={T}",
  "sample.guidance=1.5",
  f"train.batch_size={BATCH}",
  f"train.num_steps={STEPS}",
  "train.log_every=10",
  "train.sample_every=0",
  "train.max_minutes=None",
  f"checkpoint.save_every={STEPS}",
  "optim.learning_rate=3e-3",
  "optim.warmup_steps=2",
  "eval.num_examples=4",
)


def task_config(vq_workdir, *extra):
  config = load_config_file(os.path.join(CONFIG, "vq_diffusion_shapes.py"))
  return apply_overrides(config, [*TINY, f"vq.workdir={vq_workdir}", *extra])


def scan_lengths(jaxpr) -> list[int]:
  lengths = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan":
      lengths.append(eqn.params["length"])
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      lengths += scan_lengths(sub)
  return lengths


@pytest.fixture(scope="module")
def run(tiny_vqgan_workdir, tmp_path_factory):
  config = task_config(tiny_vqgan_workdir)
  task = VQDiffusionTask(config)
  workdir = str(tmp_path_factory.mktemp("vq_diffusion"))
  batch = {k: jnp.asarray(v[:BATCH]) for k, v in task.train_arrays().items()}
  initial = nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(config.seed), batch))
  state = trainer.train(task, config, workdir)
  return task, workdir, state, initial


def mean_bound(loss, params, batch, rngs=8):
  """Per-token bound averaged over fixed draws of (t, x_t), t uniform (fresh importance state)."""
  params = dict(params, importance=discrete.init_importance_state(T)._asdict())
  return float(
    np.mean([loss(params, batch, jax.random.PRNGKey(i))[1]["vb_loss"] for i in range(rngs)])
  )


def test_training_lowers_the_loss_and_keeps_importance_state(run):
  task, _, state, initial = run
  batch = {k: jnp.asarray(v[:BATCH]) for k, v in task.train_arrays().items()}
  loss = jax.jit(task.loss)
  before, after = mean_bound(loss, initial, batch), mean_bound(loss, state.params, batch)
  assert np.isfinite(before) and after < 0.8 * before, (before, after)
  # Every example of every step was counted at its drawn t, through the trainer's state updates.
  importance = state.params["importance"]
  count, loss_sq = np.asarray(importance["count"]), np.asarray(importance["loss_sq"])
  assert count.sum() == STEPS * BATCH
  assert count.min() > discrete.IMPORTANCE_MIN_COUNT  # importance sampling took over
  assert np.all(loss_sq > 0)
  np.testing.assert_array_equal(state.ema_params["importance"]["count"], count)
  assert float(loss(state.params, batch, jax.random.PRNGKey(0))[1]["importance_ready"]) == 1.0
  # The importance tables are no gradient (p(t) divides the loss): the state update sets them.
  grads = jax.jit(
    jax.grad(
      lambda imp: task.loss(dict(state.params, importance=imp), batch, jax.random.PRNGKey(0))[0]
    )
  )(importance)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
  # Dropped captions trained the null text away from its zero init.
  assert float(jnp.abs(state.params["model"]["null_text"]).max()) > 0.0


def test_generate_is_deterministic_uint8_images(run):
  task, _, state, _ = run
  conditions = task.conditions(CAPTIONS)
  first = task.generate(state.ema_params, conditions, jax.random.PRNGKey(0))["image"]
  again = task.generate(state.ema_params, conditions, jax.random.PRNGKey(0))["image"]
  other = task.generate(state.ema_params, conditions, jax.random.PRNGKey(1))["image"]
  assert first.shape == (len(CAPTIONS), 8, 8, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


@pytest.mark.parametrize("num_steps", [T, 5, 2])
def test_sampler_is_one_scan_of_num_steps(run, num_steps):
  task, _, state, _ = run
  tokens, mask = task.tokenize(CAPTIONS)
  sample = functools.partial(task.sample_images, sampler="vq_diffusion", num_steps=num_steps)
  closed = jax.make_jaxpr(sample)(
    state.ema_params, task.vq_params, tokens, mask, jax.random.PRNGKey(0), guidance_scale=2.0
  )
  assert scan_lengths(closed.jaxpr) == [num_steps]
  assert closed.out_avals[0].shape == (len(CAPTIONS), 8, 8, 3)


def test_options_are_checked_by_name(run, tiny_vqgan_workdir):
  task = run[0]
  with pytest.raises(SamplingOptionError, match="sampler: expected one of"):
    task.check_options({"sampler": "ddim"})
  with pytest.raises(SamplingOptionError, match="num_steps: expected an integer"):
    task.check_options({"num_steps": 0})
  with pytest.raises(SamplingOptionError, match=r"num_steps: .*nearest: 5 or 8\), found 6"):
    task.check_options({"num_steps": 6})
  task.check_options({"num_steps": 5, "guidance_scale": 0.0})
  assert vq_diffusion.skip_step_for(100, 16) == 6
  # Without a learned null text there is nothing to guide from.
  plain = VQDiffusionTask(
    task_config(
      tiny_vqgan_workdir,
      "model.learned_null_text=False",
      "diffusion.cond_drop_prob=0.0",
      "sample.guidance=1.0",
    )
  )
  with pytest.raises(SamplingOptionError, match="guidance_scale: expected 1"):
    plain.check_options({"guidance_scale": 3.0})


@pytest.mark.parametrize(
  "override, error, message",
  [
    ("model.learned_null_text=False", VQDiffusionTaskConfigError, "diffusion.cond_drop_prob=0.1"),
    ("diffusion.cond_drop_prob=1.0", VQDiffusionTaskConfigError, "diffusion.cond_drop_prob"),
    ("sample.truncation_rate=1.5", VQDiffusionTaskConfigError, "sample.truncation_rate"),
    ("sample.num_steps=7", SamplingOptionError, "num_steps: .*nearest: 5 or 8"),
    ("diffusion.num_timesteps=1", discrete.MaskScheduleError, "num_timesteps"),
    ("diffusion.mask_weight=(1.0,)", VQDiffusionTaskConfigError, "diffusion.mask_weight"),
  ],
)
def test_bad_config_fields_are_named_before_compiling(tiny_vqgan_workdir, override, error, message):
  with pytest.raises(error, match=message):
    VQDiffusionTask(task_config(tiny_vqgan_workdir, override))


def test_run_reloads_through_the_registry(run, monkeypatch):
  task, workdir, state, _ = run
  monkeypatch.setitem(
    registry.TASKS, "vq_diffusion", "jaxgen.tasks.image.vq_diffusion:VQDiffusionTask"
  )
  loaded, params = registry.load_run(workdir)
  assert isinstance(loaded, VQDiffusionTask)
  assert loaded.model_config == task.model_config
  assert loaded.loss_weights == task.loss_weights
  restored = jax.tree_util.tree_leaves_with_path(params)
  assert [path for path, _ in restored] == [
    path for path, _ in jax.tree_util.tree_leaves_with_path(state.ema_params)
  ]
  for (path, ours), theirs in zip(restored, jax.tree.leaves(state.ema_params)):
    np.testing.assert_array_equal(ours, theirs, err_msg=jax.tree_util.keystr(path))
  loaded.check_options({"num_steps": 4})
  sizes = [int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(state.params["model"])]
  assert loaded.parameter_count == sum(sizes)


def test_shapes_config_size():
  """The CPU config over the vqgan_shapes codes (8×8 of 128): ~1.5 M parameters, like the other priors."""
  config = load_config_file(os.path.join(CONFIG, "vq_diffusion_shapes.py"))
  vocab = image_tokens.caption_tokenizer(config.data).vocab_size
  model = VQDiffusion(vq_diffusion.model_config(config, (8, 8), 128, vocab))
  shapes = jax.eval_shape(
    model.init,
    jax.random.PRNGKey(0),
    jnp.zeros((1, 64), jnp.int32),
    jnp.zeros((1,), jnp.int32),
    jnp.zeros((1, config.text.max_length), jnp.int32),
    jnp.ones((1, config.text.max_length), bool),
    jnp.zeros((1,), bool),
  )
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes))) == 1_495_488
