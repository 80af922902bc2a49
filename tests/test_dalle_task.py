"""The `dalle` task: DALL·E's loss on VQGAN codes, one-scan ancestral sampling, option and
config errors, the trainer and registry round trip, and reranking (by the shapes judge, by a
colour score and by a `clip` run)."""

import os

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.data import judge as shapes_judge
from jaxgen.models import dalle as dalle_model
from jaxgen.tasks import registry
from jaxgen.tasks.image import image_tokens
from jaxgen.tasks.image import dalle as dalle_task
from jaxgen.tasks.image.dalle import DalleTask, DalleTaskConfigError, RerankError, rerank_scorer
from jaxgen.training import trainer

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
STEPS = 40
# 8×8 shapes -> the tiny VQGAN's 4×4 codes of 16; a one-block transformer of width 16.
TINY = (
  "data.resolution=8",
  "data.num_train_examples=64",
  "dalle.embed_dim=16",
  "dalle.num_layers=1",
  "dalle.num_heads=2",
  "train.batch_size=16",
  f"train.num_steps={STEPS}",
  "train.log_every=10",
  "train.sample_every=0",
  "train.max_minutes=None",
  "optim.learning_rate=1e-2",
  "optim.warmup_steps=2",
  f"checkpoint.save_every={STEPS}",
  "eval.num_examples=8",
)
CAPTIONS = [
  "a small red circle in the top left",
  "a large blue square in the center",
  "a small green triangle in the bottom right",
]
TASKS = {"dalle": "jaxgen.tasks.image.dalle:DalleTask", "clip": "jaxgen.tasks.image.clip:ClipTask"}


def config_of(name, tiny, *extra):
  return apply_overrides(load_config_file(os.path.join(CONFIGS, name)), [*tiny, *extra])


def dalle_config(vq_workdir, *extra):
  return config_of("dalle_shapes.py", TINY, f"vq.workdir={vq_workdir}", *extra)


def unboxed_init(task, batch):
  return nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(task.config.seed), batch))


@pytest.fixture(scope="module")
def registered():
  with pytest.MonkeyPatch.context() as patch:
    for name, path in TASKS.items():
      patch.setitem(registry.TASKS, name, path)
    yield


@pytest.fixture(scope="module")
def run(registered, tiny_vqgan_workdir, tmp_path_factory):
  config = dalle_config(tiny_vqgan_workdir)
  task = DalleTask(config)
  workdir = str(tmp_path_factory.mktemp("dalle"))
  state = trainer.train(task, config, workdir)
  return task, workdir, state


@pytest.fixture(scope="module")
def fixed_batch(run):
  task, _, _ = run
  return {k: jnp.asarray(v[:32]) for k, v in task.train_arrays().items()}


def scans(jaxpr):
  """Every `scan` equation in a (closed) jaxpr, sub-jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan":
      found.append(eqn)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found.extend(scans(sub))
  return found


def test_training_lowers_dalles_weighted_loss(run, fixed_batch):
  task, _, state = run
  loss = jax.jit(task.loss)
  rng = jax.random.PRNGKey(7)
  before, before_metrics = loss(unboxed_init(task, fixed_batch), fixed_batch, rng)
  after, metrics = loss(state.params, fixed_batch, rng)
  assert float(after) < float(before) - 0.3, (before, after)
  assert float(metrics["image_loss"]) < float(before_metrics["image_loss"])
  assert float(metrics["image_accuracy"]) > float(before_metrics["image_accuracy"])
  # DALL·E's 1/8 text + 7/8 image weighting of the two means.
  np.testing.assert_allclose(
    after, metrics["text_loss"] / 8 + 7 * metrics["image_loss"] / 8, rtol=1e-6
  )
  # The task's loss is the model's `dalle_loss` (captions dropped with the same key).
  expected, expected_metrics = dalle_model.dalle_loss(
    task.model,
    {"params": state.params["dalle"]},
    fixed_batch["text_tokens"],
    fixed_batch["codes"],
    rng,
  )
  np.testing.assert_allclose(after, expected, rtol=1e-6)
  np.testing.assert_allclose(metrics["text_loss"], expected_metrics["text_loss"], rtol=1e-6)


def test_caption_stream_honours_the_mask(run, fixed_batch):
  task, _, state = run
  loss = jax.jit(task.loss)
  rng = jax.random.PRNGKey(3)
  # Slots outside the mask are padding whatever ids they hold.
  masked = dict(
    fixed_batch, text_tokens=jnp.where(fixed_batch["text_mask"] > 0, fixed_batch["text_tokens"], 5)
  )
  np.testing.assert_array_equal(
    loss(state.params, masked, rng)[0], loss(state.params, fixed_batch, rng)[0]
  )
  # The captions are the tokenizer's: [BOS] words [EOS] then [PAD] = the model's pad id.
  assert task.model_config.text_pad_id == task.tokenizer.pad_id
  assert task.model_config.text_vocab == task.tokenizer.vocab_size
  assert (task.model_config.image_rows, task.model_config.image_cols) == task.token_grid
  assert task.model_config.num_image_codes == task.num_codes == 16


def test_generate_is_seeded_uint8_and_the_models_sampler(run):
  task, _, state = run
  params = state.ema_params
  conditions = task.conditions(CAPTIONS)
  first = task.generate(params, conditions, jax.random.PRNGKey(0))["image"]
  again = task.generate(params, conditions, jax.random.PRNGKey(0))["image"]
  other = task.generate(params, conditions, jax.random.PRNGKey(1))["image"]
  assert first.shape == (3, 8, 8, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  # The images are the model's guided KV-cache sampler (chunk 0's key) through the VQGAN.
  tokens, _ = task.tokenize(CAPTIONS)
  codes = dalle_model.sample_image_tokens(
    task.model,
    {"params": params["dalle"]},
    tokens,
    jax.random.fold_in(jax.random.PRNGKey(0), 0),
    temperature=1.0,
    guidance_scale=task.config.sample.guidance,
  )
  decoded = image_tokens.decode_codes_to_images(task.vq_task, task.vq_params, np.asarray(codes))
  assert np.abs(decoded.astype(int) - first.astype(int)).max() <= 1


def test_guidance_one_is_the_conditional_model(run):
  task, _, state = run
  params = state.ema_params
  tokens, mask = task.tokenize(CAPTIONS)
  rng = jax.random.PRNGKey(5)
  sample = lambda scale: task.sample_codes(  # noqa: E731
    params, tokens, mask, rng, sampler="ancestral", num_steps=16, guidance_scale=scale
  )
  unguided = dalle_model.sample_image_tokens(
    task.model, {"params": params["dalle"]}, tokens, rng, temperature=1.0
  )
  assert task.guided
  np.testing.assert_array_equal(sample(1.0), unguided)
  assert not np.array_equal(sample(3.0), unguided)


def test_sampler_is_one_scan_over_the_cells(run):
  task, _, state = run
  tokens, mask = task.tokenize(CAPTIONS)
  jaxpr = jax.make_jaxpr(
    lambda params, tokens, mask, rng: task.sample_images(
      params,
      task.vq_params,
      tokens,
      mask,
      rng,
      sampler="ancestral",
      num_steps=16,
      guidance_scale=jnp.float32(3.0),
    )
  )(state.ema_params, tokens, mask, jax.random.PRNGKey(0))
  found = scans(jaxpr.jaxpr)
  assert len(found) == 1 and found[0].params["length"] == 16  # 4×4 cells, one step each


def test_options_are_checked_and_named(run, tiny_vqgan_workdir):
  task, _, _ = run
  assert task.sampling_options(None, None, None) == ("ancestral", 16, 2.0)
  task.check_options({"num_steps": 16, "guidance_scale": 0.0})
  with pytest.raises(ValueError, match=r"sampler: expected one of \('ancestral',\)"):
    task.check_options({"sampler": "ddim"})
  with pytest.raises(ValueError, match="num_steps: the autoregressive sampler draws one code"):
    task.check_options({"num_steps": 8})
  with pytest.raises(ValueError, match="num_steps: expected an integer"):
    task.check_options({"num_steps": 0})
  with pytest.raises(ValueError, match="guidance_scale: expected a finite number >= 0"):
    task.check_options({"guidance_scale": -1.0})
  assert task.sample_spec.options == ("guidance_scale",)
  unguided = DalleTask(
    dalle_config(tiny_vqgan_workdir, "dalle.caption_dropout=0.0", "sample.guidance=1.0")
  )
  unguided.check_options({"guidance_scale": 1.0})
  with pytest.raises(
    ValueError, match="guidance_scale: expected 1: this run trained with dalle.caption_dropout off"
  ):
    unguided.check_options({"guidance_scale": 2.0})


@pytest.mark.parametrize(
  "override, message",
  [
    ("dalle.num_heads=3", r"dalle.embed_dim \(16\) must be divisible by num_heads \(3\)"),
    ("dalle.caption_dropout=1.0", r"dalle.caption_dropout: expected a rate in \[0, 1\)"),
    ({"text_vocab": 100}, r"dalle: \['text_vocab'\] are set from the tokenizer"),
    ({"width": 32}, r"dalle: unknown fields \['width'\]"),
    ("text.max_length=1", "text.max_length: expected >= 2"),
    ("sample.temperature=-1.0", "sample.temperature: expected >= 0"),
    ("sample.top_p=1.5", r"sample.top_p: expected None or a float in \(0, 1\]"),
    ("sample.num_steps=8", "sample.num_steps: the autoregressive sampler"),
    ("sample.sampler='ddpm'", "sample.sampler: expected one of"),
    ("sample.guidance=-2.0", "sample.guidance: expected a finite number"),
    ("rerank.num_candidates=0", "rerank.num_candidates: expected an integer >= 1"),
  ],
)
def test_bad_config_fields_are_named(tiny_vqgan_workdir, override, message):
  """Each before anything compiles: building the task fails."""
  if isinstance(override, dict):  # fields the config file does not have
    config = dalle_config(tiny_vqgan_workdir)
    config.dalle.update(override)
  else:
    config = dalle_config(tiny_vqgan_workdir, override)
  with pytest.raises((DalleTaskConfigError, RerankError), match=message):
    DalleTask(config)


def test_trains_through_the_trainer_and_reloads(run, tmp_path):
  task, workdir, state = run
  loaded, params = registry.load_run(workdir)
  assert isinstance(loaded, DalleTask)
  assert os.path.isabs(loaded.config.vq.workdir)
  jax.tree.map(np.testing.assert_array_equal, params, state.ema_params)
  # Same model and sampling settings, so the same samples as the trained task.
  assert loaded.model_config == task.model_config and loaded.guided == task.guided
  jax.tree.map(np.testing.assert_array_equal, loaded.token_options, task.token_options)
  assert loaded.sampling_options(None, None, None) == task.sampling_options(None, None, None)
  conditions = loaded.conditions(CAPTIONS)
  samples = task.generate(params, conditions, jax.random.PRNGKey(0))
  path = loaded.save_samples(samples, conditions, str(tmp_path / "grid.png"))
  assert os.path.getsize(path) > 0


def correct_attributes(images, captions):
  """The shapes judge's number of right attributes (0–4) per image."""
  correct = shapes_judge.judge_images(images, list(captions))["correct"]
  return sum(correct[k].astype(int) for k in ("shape", "colour", "size", "position"))


def test_reranking_keeps_the_best_candidate(run):
  task, _, state = run
  k = 6
  seen = {}

  def judge_score(images, captions):
    seen.update(images=images, captions=captions)
    return correct_attributes(images, captions).astype(float)

  captions = CAPTIONS * 2
  out = task.generate_reranked(
    state.ema_params,
    task.conditions(captions),
    jax.random.PRNGKey(0),
    num_candidates=k,
    score_fn=judge_score,
    batch_size=4,  # two chunks of 4 captions × 6 candidates
  )
  candidates = seen["images"].reshape(len(captions), k, 8, 8, 3)
  assert seen["captions"] == [c for c in captions for _ in range(k)]
  assert out["image"].shape == (6, 8, 8, 3) and out["image"].dtype == np.uint8
  scores = out["candidate_scores"]
  np.testing.assert_array_equal(out["chosen"], np.argmax(scores, axis=1))
  np.testing.assert_array_equal(out["image"], candidates[np.arange(6), out["chosen"]])
  np.testing.assert_array_equal(out["score"], scores.max(axis=1))
  # The candidates of one caption differ (independent draws), and reranking by the judge
  # never lowers its verdict on the first candidate.
  assert all(len({c.tobytes() for c in group}) > 1 for group in candidates)
  kept = correct_attributes(out["image"], captions)
  first = correct_attributes(candidates[:, 0], captions)
  assert np.all(kept >= first) and np.all(kept == scores.max(axis=1))
  assert np.mean(kept == 4) >= np.mean(first == 4)

  # A continuous score: the reddest candidate is kept.
  redness = lambda images, _: images[..., 0].mean((1, 2)) - images[..., 1:].mean((1, 2, 3))  # noqa: E731
  out = task.generate_reranked(
    state.ema_params,
    task.conditions(captions),
    jax.random.PRNGKey(0),
    num_candidates=k,
    score_fn=redness,
    batch_size=4,
  )
  red = redness(seen["images"], None).reshape(6, k)
  np.testing.assert_array_equal(out["image"], candidates[np.arange(6), red.argmax(1)])
  np.testing.assert_allclose(out["score"], red.max(1))

  with pytest.raises(RerankError, match=r"score_fn: expected \(36,\) scores"):
    task.generate_reranked(
      state.ema_params,
      task.conditions(captions),
      jax.random.PRNGKey(0),
      num_candidates=k,
      score_fn=lambda images, _: np.zeros(3),
      batch_size=4,
    )
  with pytest.raises(RerankError, match="num_candidates: expected an integer >= 1"):
    task.generate_reranked(
      state.ema_params,
      task.conditions(captions),
      jax.random.PRNGKey(0),
      num_candidates=0,
      score_fn=judge_score,
    )
  with pytest.raises(RerankError, match="rerank.workdir: reranking needs the directory of a clip"):
    task.generate(state.ema_params, task.conditions(captions), jax.random.PRNGKey(0), rerank=True)


def test_rerank_workdir_makes_generate_rerank(run, tiny_vqgan_workdir, monkeypatch):
  task, _, state = run
  # The scorer of a run that is no clip run is refused, naming the flag.
  with pytest.raises(registry.DependentRunError, match="rerank.workdir: expected a clip run"):
    rerank_scorer(tiny_vqgan_workdir)
  # A relative rerank.workdir is made absolute when the task is built.
  relative = dalle_config(
    tiny_vqgan_workdir, f"rerank.workdir={os.path.relpath(tiny_vqgan_workdir)}"
  )
  assert DalleTask(relative).config.rerank.workdir == tiny_vqgan_workdir
  # With rerank.workdir set, `generate` keeps the best of rerank.num_candidates by the
  # scorer of that run, loaded once on first use (the judge stands in for a CLIP run).
  loaded = []

  def scorer_of(path):
    loaded.append(path)
    return lambda images, captions: correct_attributes(images, captions).astype(float)

  monkeypatch.setattr(dalle_task, "rerank_scorer", scorer_of)
  monkeypatch.setattr(task.config.rerank, "workdir", tiny_vqgan_workdir)
  monkeypatch.setattr(task.config.rerank, "num_candidates", 6)
  try:
    captions, rng = CAPTIONS * 2, jax.random.PRNGKey(0)
    conditions = task.conditions(captions)
    out = task.generate(state.ema_params, conditions, rng, batch_size=4)
    again = task.generate(state.ema_params, conditions, rng, batch_size=4)
    expected = task.generate_reranked(
      state.ema_params, conditions, rng, num_candidates=6, score_fn=scorer_of(None), batch_size=4
    )
    plain = task.generate(state.ema_params, task.conditions(CAPTIONS), rng, rerank=False)
  finally:
    task.__dict__.pop("reranker", None)  # the cached scorer of the patched workdir
  for key in ("image", "chosen", "candidate_scores"):
    np.testing.assert_array_equal(out[key], expected[key])
    np.testing.assert_array_equal(again[key], expected[key])
  assert set(plain) == {"image"} and plain["image"].shape == (3, 8, 8, 3)
  assert loaded == [tiny_vqgan_workdir, None]
