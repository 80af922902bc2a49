"""The `clip` task: CLIP loss, end-of-text pooling, similarity, evaluation, training, reloading."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.data import shapes
from jaxgen.models import clip as clip_model
from jaxgen.models.clip_text import clip_pooled_index
from jaxgen.tasks import registry
from jaxgen.tasks.image import clip
from jaxgen.tasks.image.clip import ClipConfigError, ClipInputError, ClipTask
from jaxgen.training import trainer
from jaxgen.training.task import PromptError
from tiny_configs import CONFIGS, TINY

TINY_CLIP = TINY["clip_shapes.py"]  # the CLI test trains the same tiny CLIP
STEPS = 4


def clip_config(*extra):
  config = load_config_file(f"{CONFIGS}/clip_shapes.py")
  return apply_overrides(config, TINY_CLIP + list(extra))


def first_batch(task, n):
  arrays = task.train_arrays()
  return {k: jnp.asarray(v[:n]) for k, v in arrays.items()}


@pytest.fixture(scope="module")
def task():
  return ClipTask(clip_config("data.num_train_examples=64"))


@pytest.fixture(scope="module")
def fixed_batch(task):
  """Eight training pairs with eight different captions, and initial params."""
  arrays = task.train_arrays()
  _, first = np.unique(arrays["text_tokens"], axis=0, return_index=True)
  batch = {k: jnp.asarray(v[np.sort(first)[:8]]) for k, v in arrays.items()}
  return batch, nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  config = clip_config(
    f"train.num_steps={STEPS}", f"checkpoint.save_every={STEPS}", "optim.learning_rate=3e-3"
  )
  task = ClipTask(config)
  workdir = str(tmp_path_factory.mktemp("clip_run"))
  state = trainer.train(task, config, workdir)
  return task, workdir, state


def test_loss_is_clips_infonce_and_falls_on_a_fixed_batch(task, fixed_batch):
  # Eight different captions: the loss is CLIP's exactly.
  batch, params = fixed_batch
  embed = jax.jit(task.embed)
  image, text, scale = embed(params, batch["image"], batch["text_tokens"], batch["text_mask"])
  logits = np.asarray(scale * image @ text.T, np.float64)
  labels = np.arange(8)

  def cross_entropy(x):
    x = x - x.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(x).sum(axis=1)) - x[labels, labels]))

  expected = (cross_entropy(logits) + cross_entropy(logits.T)) / 2
  loss_fn = jax.jit(task.loss)
  loss, metrics = loss_fn(params, batch, jax.random.key(1))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["logit_scale"]), 1 / 0.07, rtol=1e-4)
  # exp(logit_scale) never exceeds clip.max_logit_scale (exp(9) = 8103).
  _, clamped = loss_fn(dict(params, logit_scale=jnp.float32(9.0)), batch, jax.random.key(1))
  np.testing.assert_allclose(float(clamped["logit_scale"]), 100.0, rtol=1e-5)

  optimizer = optax.adam(3e-3)  # 1e-2 collapses the tiny towers to one embedding
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state):
    grads = jax.grad(lambda p: task.loss(p, batch, jax.random.key(1))[0])(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  for _ in range(30):
    params, opt_state = step(params, opt_state)
  after, _ = loss_fn(params, batch, jax.random.key(1))
  assert float(after) < 0.7 * float(loss), (float(loss), float(after))


def test_repeated_captions_are_positives():
  rng = np.random.default_rng(0)
  image = clip.l2_normalize(jnp.asarray(rng.normal(size=(4, 8)), jnp.float32))
  text = clip.l2_normalize(jnp.asarray(rng.normal(size=(4, 8)), jnp.float32))
  tokens = jnp.asarray([[2, 5, 3], [2, 6, 3], [2, 5, 3], [2, 7, 3]])
  positives = clip.same_caption(tokens)
  assert np.asarray(positives).sum() == 6  # the diagonal and the pair (0, 2) both ways
  loss, metrics = clip_model.clip_loss(image, text, jnp.float32(10.0), positives)
  logits = 10.0 * np.asarray(image @ text.T, np.float64)
  targets = np.asarray(positives, np.float64) / np.asarray(positives).sum(1, keepdims=True)

  def soft_ce(x):
    log_p = x - x.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    return -np.mean(np.sum(targets * log_p, axis=1))

  np.testing.assert_allclose(float(loss), (soft_ce(logits) + soft_ce(logits.T)) / 2, rtol=1e-5)
  plain, _ = clip_model.clip_loss(image, text, jnp.float32(10.0))
  assert abs(float(plain) - float(loss)) > 1e-3


def test_text_tower_pools_at_the_end_of_each_caption(task, fixed_batch):
  captions = ["a small red circle in the top left", "a large blue square at the top", "a circle"]
  tokens, mask = task.tokenize(captions)
  ends = np.asarray([len(c.split()) + 1 for c in captions])  # [BOS] words [EOS]
  np.testing.assert_array_equal(tokens[np.arange(3), ends], task.tokenizer.eos_id)
  text_config = task.model_config.text_config
  assert text_config.eos_token_id == task.tokenizer.eos_id != 2  # 2 is [BOS]: the legacy rule
  np.testing.assert_array_equal(
    clip_pooled_index(jnp.asarray(tokens), text_config.eos_token_id), ends
  )
  # The legacy argmax rule would pool at the largest word id instead.
  assert (np.asarray(clip_pooled_index(jnp.asarray(tokens), 2)) != ends).any()
  # Behaviourally: the pooled state is the [EOS] state, and what follows [EOS] changes nothing.
  _, params = fixed_batch
  text_model = jax.jit(lambda t, m: task.model.bind({"params": params}).text_model(t, m)[:2])
  out = text_model(jnp.asarray(tokens), jnp.asarray(mask))
  np.testing.assert_allclose(out[1], np.asarray(out[0])[np.arange(3), ends], rtol=1e-6)
  after_end = np.arange(tokens.shape[1])[None] > ends[:, None]
  scrambled = np.where(after_end, 5 + np.arange(tokens.shape[1])[None] % 7, tokens)
  moved = text_model(jnp.asarray(scrambled), jnp.asarray(mask))
  np.testing.assert_allclose(moved[1], out[1], rtol=1e-5, atol=1e-6)
  # ...while the last word before [EOS] does.
  changed = tokens.copy()
  changed[0, ends[0] - 1] = task.tokenizer.tokenizer.token_to_id("right")
  other = text_model(jnp.asarray(changed), jnp.asarray(mask))
  assert np.abs(np.asarray(other[1][0] - out[1][0])).max() > 1e-3


def test_similarity_is_deterministic_chunked_and_in_range(trained_run):
  task, _, state = trained_run
  data = task.eval_split(7)
  images, captions = data["image"], list(data["caption"])
  params = state.ema_params
  before = task._pair_similarity._cache_size()
  chunked = ClipTask(clip_config("eval.batch_size=3"))  # 7 pairs in three chunks of 3
  similarity = chunked.similarity(params, images, captions)
  assert task._pair_similarity._cache_size() - before <= 1  # one program for every chunk
  assert similarity.shape == (7,) and similarity.dtype == np.float32
  assert np.all(np.abs(similarity) <= 1.0 + 1e-6)
  np.testing.assert_array_equal(similarity, chunked.similarity(params, images, captions))
  image_embeds = chunked.encode_images(params, images)
  text_embeds = chunked.encode_texts(params, captions)
  assert image_embeds.shape == text_embeds.shape == (7, task.model_config.projection_dim)
  np.testing.assert_allclose(np.linalg.norm(image_embeds, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(text_embeds, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(similarity, np.sum(image_embeds * text_embeds, -1), atol=1e-5)


def test_trains_through_the_trainer_and_reloads(trained_run, monkeypatch):
  task, workdir, state = trained_run
  monkeypatch.setitem(registry.TASKS, "clip", "jaxgen.tasks.image.clip:ClipTask")
  loaded, params = registry.load_run(workdir)
  assert isinstance(loaded, ClipTask)
  jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(state.ema_params))
  metrics = loaded.evaluate(params)
  assert metrics["num_pairs"] == 32
  for key in ("image_to_text_top1", "text_to_image_top1", "judge_all"):
    assert 0.0 <= metrics[key] <= 1.0
  for name in shapes.ATTRIBUTES:
    assert 0.0 <= metrics[f"judge_{name}"] <= 1.0
  assert -1.0 <= metrics["positive_cosine"] <= 1.0
  picture = loaded.preview(params, jax.random.key(0))
  assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[-1] == 3
  assert picture.shape[0] > clip.PREVIEW_PAIRS * 64


def test_perturbations_change_one_attribute_and_retrieval_counts_repeats():
  caption = "a small red circle in the top left"
  changes = clip.attribute_perturbations(caption)
  counts = {name: len(values) - 1 for name, values in shapes.ATTRIBUTE_VALUES.items()}
  assert {name: len(c) for name, c in changes.items()} == counts
  spec = shapes.parse_caption(caption)
  for name, captions in changes.items():
    for changed in captions:
      other = shapes.parse_caption(changed)
      differs = [a for a in shapes.ATTRIBUTES if getattr(other, a) != getattr(spec, a)]
      assert differs == [name]
  similarity = np.asarray([[0.9, 0.1, 0.95], [0.2, 0.8, 0.1], [0.3, 0.2, 0.1]])
  image_to_text, text_to_image = clip.retrieval_hits(similarity, ["x", "y", "x"])
  # Image 0 picks caption 2, the same text as its own: a hit. Image 2 picks caption 0: also "x".
  np.testing.assert_array_equal(image_to_text, [True, True, True])
  np.testing.assert_array_equal(text_to_image, [True, True, True])
  image_to_text, _ = clip.retrieval_hits(similarity, ["x", "y", "z"])
  np.testing.assert_array_equal(image_to_text, [False, True, False])


@pytest.mark.parametrize(
  "override, message",
  [
    ("clip.vision.patch_size=3", "clip.vision: image_size=8 must be divisible by patch_size=3"),
    ("clip.text.num_attention_heads=3", "clip.text: hidden_size=16 must be divisible"),
    ("clip.projection_dim=0", "clip.projection_dim: expected a positive int, found 0"),
    ("clip.max_logit_scale=1.0", "clip.max_logit_scale: expected a number > 1"),
    ("eval.retrieval_batch=1", "eval.retrieval_batch: expected an integer >= 2"),
    ("eval.num_examples=8", "eval.num_examples: expected at least eval.retrieval_batch=32"),
  ],
)
def test_bad_config_is_named(override, message):
  with pytest.raises(ClipConfigError, match=message):
    ClipTask(clip_config(override))


@pytest.mark.parametrize(
  "section, key, message",
  [
    ("text", "eos_token_id", r"clip.text.eos_token_id: set by the task \(3 for this data"),
    ("vision", "image_size", r"clip.vision.image_size: set by the task \(8 for"),
    ("text", "width", r"clip.text.width: unknown field; expected some of \['hidden_act'"),
  ],
)
def test_fields_the_task_sets_or_does_not_know_are_named(section, key, message):
  config = clip_config()
  config.clip[section][key] = 2
  with pytest.raises(ClipConfigError, match=message):
    ClipTask(config)


def test_bad_inputs_are_named(task):
  params = None  # every check runs before the weights are read
  images = task.eval_split(2)["image"]
  with pytest.raises(ClipInputError, match=r"images: expected uint8 \(N, 8, 8, 3\)"):
    task.similarity(params, images.astype(np.float32), ["a red circle"] * 2)
  with pytest.raises(ClipInputError, match=r"found uint8 \(2, 8, 8, 4\)"):
    task.encode_images(params, np.concatenate([images, images[..., :1]], -1))
  with pytest.raises(ClipInputError, match=r"captions: expected one per image \(2\), found 3"):
    task.similarity(params, images, ["a red circle"] * 3)
  with pytest.raises(PromptError, match="captions: expected non-empty strings"):
    task.encode_texts(params, ["a red circle", " "])
  with pytest.raises(PromptError, match="captions: expected a sequence of strings"):
    task.similarity(params, images, "a red circle")
  batch = {k: np.asarray(v) for k, v in first_batch(task, 4).items()}
  with pytest.raises(ClipInputError, match=r"batch\['text_mask'\]: expected int32 \(4, 12\)"):
    task.check_batch(dict(batch, text_mask=batch["text_mask"][:, :5]))
  with pytest.raises(
    ClipInputError, match="num_examples: expected at least eval.retrieval_batch=32"
  ):
    task.evaluate(params, num_examples=31)
  with pytest.raises(ClipInputError, match=r"batch: expected key 'image'"):
    task.check_batch({k: v for k, v in batch.items() if k != "image"})
