"""The `maskgit` task on a tiny VQGAN run: it learns, decodes in one scan, guides, samples, reloads."""

import functools
import os

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxgen import cli
from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.tasks import registry
from jaxgen.tasks.image.maskgit import MaskGITTask, MaskGITTaskConfigError
from jaxgen.training import trainer

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
STEPS = 40
# The tiny VQGAN's 8×8 shapes -> 4×4 codes of 16; a one-layer transformer of width 16.
TINY = (
  "data.resolution=8",
  "data.num_train_examples=32",
  "maskgit.width=16",
  "maskgit.num_layers=1",
  "maskgit.num_heads=2",
  "maskgit.mlp_dim=32",
  "maskgit.dropout=0.0",
  "train.batch_size=8",
  f"train.num_steps={STEPS}",
  "train.log_every=10",
  "train.sample_every=0",
  "train.max_minutes=None",
  "train.ema_decay=0.0",  # the EMA params are the trained ones: the reload compares them
  "optim.learning_rate=1e-2",
  "optim.warmup_steps=2",
  f"checkpoint.save_every={STEPS}",
  "sample.num_steps=4",
  "eval.num_examples=8",
)
CAPTIONS = ["a small red circle in the top left", "a large blue square in the center"]


def maskgit_config(vq_workdir, *extra):
  config = load_config_file(os.path.join(CONFIGS, "maskgit_shapes.py"))
  return apply_overrides(config, [*TINY, f"vq.workdir={vq_workdir}", *extra])


def scan_equations(jaxpr) -> list:
  """Every `scan` equation of a jaxpr, sub-jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan":
      found.append(eqn)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += scan_equations(sub)
  return found


@pytest.fixture(scope="module")
def run(tiny_vqgan_workdir, tmp_path_factory):
  """(task, workdir, trained state) of a tiny run trained through the trainer."""
  config = maskgit_config(tiny_vqgan_workdir)
  task = MaskGITTask(config)
  workdir = str(tmp_path_factory.mktemp("maskgit"))
  return task, workdir, trainer.train(task, config, workdir)


@pytest.fixture(scope="module")
def batch(run):
  task, _, _ = run
  return {k: jnp.asarray(v[:16]) for k, v in task.train_arrays().items()}


def test_training_lowers_the_masked_token_loss(run, batch):
  task, _, state = run
  initial = nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0), batch))
  loss_fn = jax.jit(task.loss)
  rngs = jax.random.split(jax.random.PRNGKey(7), 8)  # the same masks for both weights
  before = [loss_fn(initial, batch, r) for r in rngs]
  after = [loss_fn(state.params, batch, r) for r in rngs]
  mean = lambda results: float(np.mean([loss for loss, _ in results]))  # noqa: E731
  assert mean(after) < 0.8 * mean(before), (mean(before), mean(after))
  for _, metrics in before + after:
    assert set(metrics) == {"masked_accuracy", "mask_ratio"}
    assert 0.0 <= float(metrics["masked_accuracy"]) <= 1.0
    assert 0.0 < float(metrics["mask_ratio"]) <= 1.0
  accuracy = lambda results: np.mean([float(m["masked_accuracy"]) for _, m in results])  # noqa: E731
  assert accuracy(after) > accuracy(before)
  assert set(state.params) == {"maskgit"}


def test_sample_images_is_one_scan_of_guided_decoding(run):
  task, _, state = run
  tokens, mask = task.tokenize(CAPTIONS)

  def sample(params, rng, scale):
    return task.sample_images(
      params,
      task.vq_params,
      tokens,
      mask,
      rng,
      sampler="maskgit",
      num_steps=5,
      guidance_scale=scale,
    )

  jaxpr = jax.make_jaxpr(sample)(state.params, jax.random.PRNGKey(0), jnp.float32(2.0))
  scans = scan_equations(jaxpr.jaxpr)
  assert len(scans) == 1 and scans[0].params["length"] == 5
  assert "while" not in str(jaxpr)
  body = str(scans[0].params["jaxpr"])
  assert "dot_general" in body  # the transformer runs inside the scan, once per step ...
  h, w = task.token_grid
  # ... on the conditional and null-caption halves as one doubled batch.
  assert f"f32[{2 * len(CAPTIONS)},{h * w},{task.num_codes}]" in body
  # The VQGAN decoder follows the scan in the same program: convolutions, outside the loop.
  assert "conv_general_dilated" in str(jaxpr) and "conv_general_dilated" not in body
  assert jaxpr.out_avals[0].shape == (2, 8, 8, 3)


def test_guidance_extrapolates_from_the_null_caption(run):
  task, _, state = run
  tokens, mask = task.tokenize(CAPTIONS)
  codes = jax.random.randint(jax.random.PRNGKey(3), (2, 16), 0, task.num_codes + 1)
  variables = {"params": state.params["maskgit"]}

  @jax.jit
  def logits(scale):
    guided = task.code_logits_fn(state.params, tokens, mask, scale)(codes)
    cond, uncond = (
      task.model.apply(
        variables, codes, caption=tokens, caption_mask=mask, drop_caption=jnp.full(2, d)
      )[..., : task.num_codes]
      for d in (False, True)
    )
    return guided, cond, uncond

  guided, cond, uncond = logits(jnp.float32(3.0))
  assert guided.shape == (2, 16, task.num_codes)
  assert float(jnp.abs(cond - uncond).max()) > 1e-4  # the caption matters
  np.testing.assert_allclose(guided, uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logits(jnp.float32(1.0))[0], cond, rtol=1e-5, atol=1e-5)


def test_one_and_four_decoding_steps_give_valid_codes_that_differ(run):
  task, _, state = run
  tokens, mask = task.tokenize(CAPTIONS * 2)

  @functools.partial(jax.jit, static_argnums=1)  # one program per T
  def decode(rng, num_steps):
    return task.sample_codes(
      state.params,
      tokens,
      mask,
      rng,
      sampler="maskgit",
      num_steps=num_steps,
      guidance_scale=jnp.float32(2.0),
    )

  rng = jax.random.PRNGKey(5)
  one, four = np.asarray(decode(rng, 1)), np.asarray(decode(rng, 4))
  for codes in (one, four):
    assert codes.shape == (4, *task.token_grid) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < task.num_codes  # never the [MASK] id
  assert (one != four).any()
  np.testing.assert_array_equal(decode(rng, 4), four)  # a seed fixes the codes


def test_generate_is_deterministic_and_writes_a_grid(run, tmp_path):
  task, _, state = run
  captions = list(task.eval_split(16)["caption"])  # 16, as the preview draws: one program
  conditions = task.conditions(captions)
  first = task.generate(state.ema_params, conditions, jax.random.PRNGKey(0))["image"]
  again = task.generate(state.ema_params, conditions, jax.random.PRNGKey(0))["image"]
  other = task.generate(state.ema_params, conditions, jax.random.PRNGKey(1))["image"]
  assert first.shape == (16, 8, 8, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(first, again)
  assert (first != other).any()
  path = task.save_samples({"image": first[:2]}, task.conditions(captions[:2]), tmp_path / "g.png")
  assert Image.open(path).size[0] > 0
  preview = task.preview(state.ema_params, jax.random.PRNGKey(0))
  assert preview.dtype == np.uint8 and preview.ndim == 3


def test_check_options_names_bad_sampler_steps_and_guidance(run, tiny_vqgan_workdir):
  task, _, _ = run
  with pytest.raises(SamplingOptionError, match=r"sampler: expected one of \('maskgit',\)"):
    task.check_options({"sampler": "ddim"})
  for steps in (0, 2.5, True):
    with pytest.raises(SamplingOptionError, match="num_steps: expected an integer >= 1"):
      task.check_options({"num_steps": steps})
  with pytest.raises(SamplingOptionError, match="guidance_scale"):
    task.check_options({"guidance_scale": -1.0})
  task.check_options({"sampler": "maskgit", "num_steps": 16, "guidance_scale": 0.0})
  # Without caption dropout there is no trained null caption to guide against.
  unguided = MaskGITTask(maskgit_config(tiny_vqgan_workdir, "loss.caption_dropout=0.0"))
  with pytest.raises(SamplingOptionError, match="guidance_scale: expected 1: .*caption_dropout"):
    unguided.check_options({"guidance_scale": 3.0})
  assert unguided.sampling_options(None, None, 1.0) == ("maskgit", 4, 1.0)


@pytest.mark.parametrize(
  "override, message",
  [
    ("loss.mask_schedule='log'", "loss.mask_schedule: expected one of"),
    ("loss.caption_dropout=1.5", r"loss.caption_dropout: expected a number in \[0.0, 1.0\]"),
    ("loss.label_smoothing=1.0", r"loss.label_smoothing: expected a number in \[0.0, 1.0\)"),
    ("sample.choice_temperature=-1.0", "sample.choice_temperature: expected a number in"),
    ("maskgit.width=15", r"maskgit.width: expected a multiple of num_heads \(2\), found 15"),
  ],
)
def test_bad_config_fields_are_named_when_the_task_is_built(tiny_vqgan_workdir, override, message):
  with pytest.raises(MaskGITTaskConfigError, match=message):
    MaskGITTask(maskgit_config(tiny_vqgan_workdir, override))


def test_unknown_model_key_is_named(tiny_vqgan_workdir):
  config = maskgit_config(tiny_vqgan_workdir)
  config.maskgit.codebook_size = 64  # comes from the VQGAN run, not the config
  with pytest.raises(
    MaskGITTaskConfigError, match=r"maskgit: expected keys among .*'codebook_size'"
  ):
    MaskGITTask(config)


def test_run_reloads_through_the_registry_and_samples_from_the_cli(
  run, monkeypatch, tmp_path, capsys
):
  task, workdir, state = run
  monkeypatch.setitem(registry.TASKS, "maskgit", "jaxgen.tasks.image.maskgit:MaskGITTask")
  loaded, params = registry.load_run(workdir)
  assert isinstance(loaded, MaskGITTask)
  jax.tree.map(np.testing.assert_array_equal, params, state.ema_params)
  assert loaded.config.vq.workdir == task.config.vq.workdir and os.path.isabs(workdir)
  out = tmp_path / "grid.png"
  argv = ["--compilation-cache", "", "sample", "--checkpoint", workdir, "--out", out]
  argv += ["--prompt", CAPTIONS[0], "--steps", "2", "--guidance", "1.5"]
  assert cli.main([str(a) for a in argv]) == 0, capsys.readouterr().err
  assert Image.open(out).size[0] > 0
  # The task names its samplers: its own is accepted, a diffusion solver is not.
  assert cli.main([str(a) for a in argv + ["--sampler", "maskgit"]]) == 0, capsys.readouterr().err
  assert cli.main([str(a) for a in argv[:-2] + ["--sampler", "ddim"]]) == 2
  assert "--sampler: expected one of ('maskgit',)" in capsys.readouterr().err
