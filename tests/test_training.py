"""Trainer: exact resume, checkpoint fall-back, non-finite guard, and the CLI.

One tiny text-to-image run (module-scoped) serves every test, so the model
compiles a handful of times in total.
"""

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import cli
from jaxgen.tasks.registry import get_task
from jaxgen.training import inference, optimizers, sharding, trainer
from jaxgen.training.checkpoint import Checkpointer
from jaxgen.training.config import TrainerConfigError, with_trainer_defaults
from jaxgen.training.trainer import create_state, train, train_step
from tiny_configs import TINY_TEXT_TO_IMAGE, tiny_text_to_image_config

tiny_config = tiny_text_to_image_config


def run_cli(argv):
  """`jaxgen ARGV` in-process, without touching the user's compilation cache."""
  return cli.main(["--compilation-cache", ""] + argv)


def _params_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished 4-step run; checkpoints at steps 2 and 4."""
  workdir = str(tmp_path_factory.mktemp("run"))
  state = train(get_task(tiny_config()), tiny_config(), workdir)
  return workdir, jax.device_get(state)


def test_run_writes_checkpoints_config_and_logs(trained):
  workdir, state = trained
  assert int(state.step) == 4
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert os.path.isfile(os.path.join(workdir, "config.json"))
  assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tensorboard")))
  assert not _params_equal(state.params, state.ema_params)  # EMA lags the params


def test_resume_after_preemption_is_bit_identical(trained, tmp_path):
  workdir, final = trained
  resumed_dir = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed_dir)
  # Preempted after the step-2 checkpoint: the newest one never got written.
  shutil.rmtree(os.path.join(resumed_dir, "checkpoints", "4"))
  state = jax.device_get(train(get_task(tiny_config()), tiny_config(), resumed_dir))
  assert int(state.step) == 4
  assert _params_equal(state.params, final.params)
  assert _params_equal(state.ema_params, final.ema_params)
  assert _params_equal(state.opt_state, final.opt_state)


def test_truncated_newest_checkpoint_falls_back_to_the_previous(trained, tmp_path, caplog):
  workdir, _ = trained
  broken = str(tmp_path / "broken")
  shutil.copytree(workdir, broken)
  newest = os.path.join(broken, "checkpoints", "4", "state")
  for root, _, files in os.walk(newest):
    for f in files:
      with open(os.path.join(root, f), "r+b") as fh:
        fh.truncate(max(os.path.getsize(os.path.join(root, f)) // 3, 1))
  config = tiny_config()
  task = get_task(config)
  example = {k: jnp.asarray(v[:8]) for k, v in task.train_arrays().items()}
  template, _, _ = create_state(task, config, example, sharding.make_mesh())
  checkpointer = Checkpointer(broken, read_only=True)
  with caplog.at_level("WARNING"):
    state, meta, step = checkpointer.restore(template)
  checkpointer.close()
  assert step == 2 and int(state.step) == 2
  assert meta["data_iterator"] == dict(epoch=0, position=16)
  assert "step 4 is unreadable" in caplog.text


def test_non_finite_loss_skips_the_update_and_counts_it():
  config = tiny_config()
  task = get_task(config)
  example = {k: jnp.asarray(v[:8]) for k, v in task.train_arrays().items()}
  state, _, _ = create_state(task, config, example, sharding.make_mesh())

  class PoisonedTask:
    def loss(self, params, batch, rng):
      loss, metrics = task.loss(params, batch, rng)
      return loss * jnp.nan, metrics

  step = jax.jit(functools.partial(train_step, task=PoisonedTask(), ema_decay=0.99, ema_warmup=0))
  new, metrics = step(state, example)
  new, metrics = step(new, example)
  assert not np.isfinite(metrics["loss"])
  assert _params_equal(new.params, state.params)
  assert _params_equal(new.ema_params, state.ema_params)
  assert _params_equal(new.opt_state, state.opt_state)
  assert int(new.step) == 2 and int(new.skipped_steps) == 2 and int(new.consecutive_skips) == 2

  good = jax.jit(functools.partial(train_step, task=task, ema_decay=0.99, ema_warmup=0))
  for _ in range(2):  # the first real update has warm-up learning rate 0
    new, metrics = good(new, example)
  assert np.isfinite(metrics["loss"])
  assert int(new.consecutive_skips) == 0 and int(new.skipped_steps) == 2
  assert not _params_equal(new.params, state.params)


class _PoisonedTask:
  """The tiny task, with a loss that is always NaN."""

  def __init__(self, task):
    self._task = task

  def __getattr__(self, name):
    return getattr(self._task, name)

  def loss(self, params, batch, rng):
    loss, metrics = self._task.loss(params, batch, rng)
    return loss * jnp.nan, metrics


def test_consecutive_skips_freeze_the_state_and_stop_the_run(tmp_path):
  config = tiny_config(
    "train.num_steps=20", "train.max_consecutive_skips=3", "checkpoint.save_every=100"
  )
  workdir = str(tmp_path / "diverged")
  with pytest.raises(FloatingPointError, match="3 consecutive non-finite .* at step 3"):
    train(_PoisonedTask(get_task(config)), config, workdir)
  # The state froze at the third skip; its checkpoint holds the initial
  # (last good) params, and the run can be inspected or resumed from it.
  assert Checkpointer(workdir, read_only=True).all_steps() == [3]
  template = create_state(
    get_task(config),
    config,
    {k: jnp.asarray(v[:8]) for k, v in get_task(config).train_arrays().items()},
    sharding.make_mesh(),
  )[0]
  restored, _, _ = Checkpointer(workdir, read_only=True).restore(template)
  assert int(restored.step) == 3 and int(restored.consecutive_skips) == 3
  assert _params_equal(restored.params, template.params)


def test_sample_cli_same_seed_writes_identical_images(trained, tmp_path):
  workdir, _ = trained
  outs = [str(tmp_path / f"grid{i}.png") for i in range(3)]
  common = [
    "sample",
    "--checkpoint",
    workdir,
    "--prompt",
    "a small red circle in the top left",
    "--prompt",
    "a large blue square in the center",
    "--steps",
    "3",
    "--guidance",
    "2",
  ]
  for out, seed in zip(outs, (0, 0, 1)):
    assert run_cli(common + ["--seed", str(seed), "--out", out]) == 0
  data = [open(p, "rb").read() for p in outs]
  assert data[0] == data[1]
  assert data[0] != data[2]


@pytest.mark.parametrize(
  "args, message",
  [
    (["--sampler", "plms"], "--sampler: expected one of"),
    (["--guidance", "-1"], "--guidance: expected a scale >= 0"),
    (["--steps", "0"], "--steps: expected a positive"),
    (["--prompt", " "], "--prompt: prompts must be non-empty"),
  ],
)
def test_sample_cli_rejects_bad_arguments(trained, capsys, args, message):
  workdir, _ = trained
  base = ["--prompt", "a small red circle in the top left"] if "--prompt" not in args else []
  code = run_cli(["sample", "--checkpoint", workdir] + base + args)
  assert code == 2
  assert message in capsys.readouterr().err


def test_sample_cli_rejects_missing_checkpoint_and_empty_prompts(tmp_path, capsys):
  assert run_cli(["sample", "--checkpoint", str(tmp_path / "nope"), "--prompt", "x"]) == 2
  assert "does not exist" in capsys.readouterr().err
  assert run_cli(["sample", "--checkpoint", str(tmp_path)]) == 2
  assert "at least one prompt" in capsys.readouterr().err
  assert run_cli(["sample", "--checkpoint", str(tmp_path), "--prompt", "a red circle"]) == 2
  assert "is it a directory written by `jaxgen train`" in capsys.readouterr().err


def test_image_size_or_channels_that_do_not_fit_the_unet_are_named():
  with pytest.raises(ValueError, match=r"data.resolution must be a multiple of 2 \(patch size 1"):
    get_task(tiny_config("data.resolution=15"))
  with pytest.raises(ValueError, match=r"data.resolution must be a multiple of 4 \(patch size 2"):
    get_task(
      tiny_config(
        "data.resolution=18", "model.patch_size=2", "unet.in_channels=14", "unet.out_channels=12"
      )
    )
  with pytest.raises(ValueError, match="unet.in_channels/out_channels must be 5/3"):
    get_task(tiny_config("unet.in_channels=3"))
  with pytest.raises(ValueError, match="must be 3/3 .* patches, got 5/3"):
    get_task(tiny_config("model.coord_channels=False"))


def test_batch_of_the_wrong_image_size_is_named():
  task = get_task(tiny_config())
  with pytest.raises(ValueError, match=r"batch\['image'\] must be \[B, 16, 16, 3\]"):
    task.check_batch(dict(image=np.zeros((2, 32, 32, 3), np.uint8)))


def test_quickstart_trains_judges_and_writes_its_report(tmp_path, capsys):
  workdir = tmp_path / "qs"
  overrides = [o for o in TINY_TEXT_TO_IMAGE if not o.startswith("train.sample_every")]
  assert run_cli(["quickstart", "--workdir", str(workdir), "--train-minutes", "5"] + overrides) == 0
  report = json.loads((workdir / "quickstart.json").read_text())
  assert report["steps"] == 4 and report["held_out_examples"] == 8
  assert set(report["accuracy"]) == {"guidance_1", "guidance_3"}
  for accuracy in report["accuracy"].values():
    assert set(accuracy) >= {"colour", "position", "shape", "size", "all"}
    assert all(0.0 <= v <= 1.0 for v in accuracy.values())
  assert (workdir / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "quickstart.json" in capsys.readouterr().out


def test_state_updates_from_the_loss_overwrite_params_and_ema():
  """Non-gradient parameters (an EMA codebook) take the values the loss returns."""
  import optax  # pylint: disable=g-import-not-at-top
  from jaxgen.training.task import STATE_UPDATES_KEY  # pylint: disable=g-import-not-at-top
  from jaxgen.training.train_state import TrainState  # pylint: disable=g-import-not-at-top

  class CodebookTask:
    def loss(self, params, batch, rng):
      new_sum = params["quantizer"]["code_sum"] * 0.5 + batch["x"].sum()
      loss = jnp.sum((params["encoder"] - batch["x"]) ** 2)
      return loss, {STATE_UPDATES_KEY: dict(quantizer=dict(code_sum=new_sum))}

  params = dict(encoder=jnp.ones(3), quantizer=dict(code_sum=jnp.full(2, 4.0)))
  state = TrainState.create(params, optax.adamw(0.1, weight_decay=0.5), jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(train_step, task=CodebookTask(), ema_decay=0.9, ema_warmup=0))
  new, metrics = step(state, dict(x=jnp.arange(3.0)))
  np.testing.assert_array_equal(new.params["quantizer"]["code_sum"], [5.0, 5.0])
  np.testing.assert_array_equal(new.ema_params["quantizer"]["code_sum"], [5.0, 5.0])
  assert not np.array_equal(new.params["encoder"], params["encoder"])  # trained as usual
  assert STATE_UPDATES_KEY not in metrics


def test_restoring_ema_params_builds_no_optimizer_and_falls_back(
  trained, tmp_path, monkeypatch, caplog
):
  workdir, final = trained

  def no_optimizer(*args, **kwargs):
    raise AssertionError("restoring for sampling built an optimizer")

  monkeypatch.setattr(optimizers, "make_optimizer", no_optimizer)
  monkeypatch.setattr(trainer, "make_optimizer", no_optimizer)
  task = get_task(inference.load_run_config(workdir))
  assert _params_equal(
    jax.device_get(inference.restore_ema_params(task, workdir)), final.ema_params
  )
  # The newest checkpoint truncated: the step-2 EMA params are read instead.
  broken = str(tmp_path / "broken")
  shutil.copytree(workdir, broken)
  for root, _, files in os.walk(os.path.join(broken, "checkpoints", "4", "state")):
    for f in files:
      with open(os.path.join(root, f), "r+b") as fh:
        fh.truncate(max(os.path.getsize(os.path.join(root, f)) // 3, 1))
  with caplog.at_level("WARNING"):
    older = jax.device_get(inference.restore_ema_params(task, broken))
  assert "step 4 is unreadable" in caplog.text
  step_2 = jax.device_get(inference.restore_ema_params(task, workdir, step=2))
  assert _params_equal(older, step_2) and not _params_equal(older, final.ema_params)


def test_trainer_settings_have_defaults_and_named_errors():
  minimal = dict(train=dict(batch_size=8, num_steps=4), optim=dict(learning_rate=1e-3))
  filled = with_trainer_defaults(minimal)
  assert filled.seed == 0 and filled.mesh_shape is None
  assert filled.optim.grad_clip_norm == 1.0 and filled.optim.decay == "cosine"
  assert filled.train.ema_decay == 0.999 and filled.train.max_minutes is None
  assert filled.checkpoint.to_dict() == dict(save_every=1000, keep=3)
  assert with_trainer_defaults(filled) == filled
  # Filling a shipped config keeps every value it sets (it only adds missing keys).
  shipped, filled_shipped = tiny_config().to_dict(), with_trainer_defaults(tiny_config()).to_dict()
  for section in ("train", "optim", "checkpoint"):
    for key, value in shipped[section].items():
      assert filled_shipped[section][key] == value, f"{section}.{key}"
  assert filled_shipped["train"]["max_cpu_minutes"] is None
  for config, message in [
    (dict(minimal, train=dict(batch_size=8)), "train.num_steps: required by the trainer"),
    (dict(minimal, optim=dict()), "optim.learning_rate: required by the trainer"),
    (
      dict(minimal, optim=dict(learning_rate=1e-3, grad_clip=1.0)),
      r"optim.grad_clip \(did you mean optim.grad_clip_norm\?\)",
    ),
    (
      dict(minimal, train=dict(batch_size=8, num_steps=4, ema_decay=1.0)),
      r"train.ema_decay: expected a number in \[0, 1\), found 1.0",
    ),
    (dict(minimal, checkpoint=dict(save_every=0)), "checkpoint.save_every: expected a positive"),
    (dict(minimal, mesh_shape=(2, 4)), "mesh_shape: expected None or three positive ints"),
  ]:
    with pytest.raises(TrainerConfigError, match=message):
      with_trainer_defaults(config)


class _LinearTask:
  """The smallest task: least squares on fixed data (compiles in a blink)."""

  def init(self, rng, batch):
    return dict(w=jax.random.normal(rng, (batch["x"].shape[-1],)))

  def loss(self, params, batch, rng):
    del rng
    loss = jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)
    return loss, {}


def test_building_blocks_take_a_minimal_config():
  """create_state and jit_train_step fill the trainer's defaults (no KeyError)."""
  import ml_collections  # pylint: disable=g-import-not-at-top

  task = _LinearTask()
  minimal = ml_collections.ConfigDict(
    dict(train=dict(batch_size=8, num_steps=4), optim=dict(learning_rate=1e-2))
  )
  example = dict(x=jnp.ones((8, 3)), y=jnp.zeros((8,)))
  mesh = sharding.make_mesh()
  state, state_sharding, schedule = create_state(task, minimal, example, mesh)
  step = trainer.jit_train_step(task, minimal, state_sharding, example, mesh)
  new, metrics = step(state, example)
  assert int(new.step) == 1 and np.isfinite(metrics["loss"])
  assert not _params_equal(new.params, state.params)
  assert float(schedule(0)) == pytest.approx(1e-2)  # no warm-up by default: the peak at once
  with pytest.raises(TrainerConfigError, match="optim.learning_rate: required"):
    create_state(task, dict(train=dict(batch_size=8, num_steps=4)), example, mesh)


def test_time_capped_cosine_run_says_its_decay_may_be_cut(caplog):
  config = with_trainer_defaults(tiny_config("train.num_steps=1000", "train.log_every=10"))
  config.train.max_minutes = 2.0
  _, schedule = optimizers.make_optimizer(config.optim, config.train.num_steps)
  with caplog.at_level("WARNING"):
    assert trainer.warn_decay_may_be_cut(config, first_step=0)
    # 10 steps timed at 2 steps/s, 60 s left: the run stops near step 130.
    assert trainer.warn_projected_stop(config, 10, 2.0, 60.0, schedule)
  assert "train.max_minutes=2.0 may stop this run before train.num_steps=1000" in caplog.text
  assert "cosine learning-rate decay (optim.decay)" in caplog.text
  assert "will stop near step 130 of train.num_steps=1000" in caplog.text
  assert "train.num_steps=130 would fit the time budget" in caplog.text
  caplog.clear()
  with caplog.at_level("WARNING"):
    assert not trainer.warn_projected_stop(config, 10, 100.0, 60.0, schedule)  # fits
    config.optim.decay = "constant"
    assert not trainer.warn_decay_may_be_cut(config, first_step=0)  # nothing to cut
  assert not caplog.text
