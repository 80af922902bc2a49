"""The Guo et al. co-embedding: BiGRU parity with PyTorch, loss, the Evaluator API, errors."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.models.motion_evaluator import (
  BiGRUCoEncoder,
  EvaluatorConfig,
  MotionEvaluator,
  co_embedding_loss,
  contrastive_loss,
)
from jaxgen.models.motion_transformer import count_params
from jaxgen.nn import unannotated_params

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
TINY = [
  "data.max_examples=40",
  "evaluator.dim_word=8",
  "evaluator.dim_text_hidden=8",
  "evaluator.dim_movement_enc_hidden=8",
  "evaluator.dim_movement_latent=8",
  "evaluator.dim_motion_hidden=8",
  "evaluator.dim_coemb_hidden=16",
  "train.batch_size=8",
  "train.num_steps=2",
  "train.log_every=1",
  "checkpoint.save_every=2",
  "optim.warmup_steps=1",
]


def tiny_config(*extra):
  return apply_overrides(
    load_config_file(os.path.join(CONFIGS, "t2m_evaluator_synthetic.py")), TINY + list(extra)
  )


def test_published_widths_and_annotations():
  config = EvaluatorConfig(vocab_size=100)
  args = (
    jnp.ones((2, 22), jnp.int32),
    jnp.ones((2, 22), bool),
    jnp.zeros((2, 196, 263)),
    jnp.array([40, 196]),
  )
  abstract = jax.eval_shape(MotionEvaluator(config).init, jax.random.PRNGKey(0), *args)
  assert unannotated_params(abstract) == []
  params = nn.meta.unbox(abstract["params"])
  # Movement encoder reads 263 - 4 contact dims; BiGRU widths 1024 (motion), 512 (text).
  assert params["movement_encoder"]["main_0"]["kernel"].shape == (4, 259, 512)
  assert params["motion_encoder"]["gru_forward"]["hn"]["kernel"].shape == (1024, 1024)
  assert params["text_encoder"]["output_net_3"]["kernel"].shape == (512, 512)
  # Reference (GloVe and POS inputs aside; flax sums the r/z biases): text 512-d BiGRU
  # encoder + movement convolutions + 1024-d motion BiGRU encoder.
  gru = lambda i, h: 2 * (3 * (i * h + h * h) + 4 * h)
  head = lambda h: 2 * h * h + h + 2 * h + h * 512 + 512
  text = 100 * 300 + 300 * 512 + 512 + gru(512, 512) + 2 * 512 + head(512)
  movement = 4 * 259 * 512 + 512 + 4 * 512 * 512 + 512 + 512 * 512 + 512
  motion = 512 * 1024 + 1024 + gru(1024, 1024) + 2 * 1024 + head(1024)
  assert count_params(params) == text + movement + motion


def test_bigru_matches_pytorch_packed_bigru():
  torch = pytest.importorskip("torch")
  from torch_layers import linear  # pylint: disable=g-import-not-at-top

  hidden, out = 6, 5
  module = BiGRUCoEncoder(hidden, out)
  x = np.random.default_rng(0).normal(size=(3, 7, 4)).astype(np.float32)
  lengths = np.array([7, 3, 5])
  params = jax.tree.map(
    np.asarray, nn.meta.unbox(module.init(jax.random.PRNGKey(0), x, lengths)["params"])
  )
  ours = module.apply({"params": params}, x, lengths)

  t = lambda a: torch.tensor(np.ascontiguousarray(a))
  gru = torch.nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
  for suffix, cell in (("", params["gru_forward"]), ("_reverse", params["gru_backward"])):
    getattr(gru, "weight_ih_l0" + suffix).data = t(
      np.concatenate([cell[g]["kernel"].T for g in ("ir", "iz", "in")])
    )
    getattr(gru, "weight_hh_l0" + suffix).data = t(
      np.concatenate([cell[g]["kernel"].T for g in ("hr", "hz", "hn")])
    )
    getattr(gru, "bias_ih_l0" + suffix).data = t(
      np.concatenate([cell[g]["bias"] for g in ("ir", "iz", "in")])
    )
    getattr(gru, "bias_hh_l0" + suffix).data = t(
      np.concatenate([np.zeros(2 * hidden, np.float32), cell["hn"]["bias"]])
    )

  norm = torch.nn.LayerNorm(hidden)
  norm.weight.data, norm.bias.data = (
    t(params["output_net_1"]["scale"]),
    t(params["output_net_1"]["bias"]),
  )
  head = torch.nn.Sequential(
    linear(params["output_net_0"]), norm, torch.nn.LeakyReLU(0.2), linear(params["output_net_3"])
  )
  with torch.no_grad():  # the reference's forward: sort by length, pack, BiGRU, last states
    order = np.argsort(-lengths, kind="stable")
    emb = linear(params["input_emb"])(t(x[order]))
    packed = torch.nn.utils.rnn.pack_padded_sequence(emb, lengths[order].tolist(), batch_first=True)
    initial = t(params["hidden"])[:, None].repeat(1, 3, 1)
    _, last = gru(packed, initial)
    theirs = head(torch.cat([last[0], last[1]], -1)).numpy()[np.argsort(order)]
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5)


def test_contrastive_loss_matches_the_reference_formula():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
  label = np.array([0, 1, 0, 1, 1, 0])
  d = np.linalg.norm(a - b + 1e-6, axis=-1)
  expected = np.mean((1 - label) * d**2 + label * np.maximum(3.0 - d, 0) ** 2)
  np.testing.assert_allclose(contrastive_loss(a, b, label), expected, rtol=1e-5)
  loss, aux = co_embedding_loss(jnp.asarray(a), jnp.asarray(b), jnp.asarray(2))
  rolled = np.roll(b, -2, axis=0)
  np.testing.assert_allclose(aux["loss_neg"], contrastive_loss(a, rolled, np.ones(6)), rtol=1e-5)
  np.testing.assert_allclose(loss, aux["loss_pos"] + aux["loss_neg"], rtol=1e-6)


@pytest.fixture(scope="module")
def evaluator_dir(tmp_path_factory):
  from jaxgen.tasks.motion.evaluation import train_evaluator

  workdir = str(tmp_path_factory.mktemp("evaluator"))
  train_evaluator(tiny_config(), workdir)
  return workdir


@pytest.fixture(scope="module")
def trained(evaluator_dir):
  from jaxgen.tasks.motion.evaluation import load_evaluator

  return load_evaluator(evaluator_dir, batch_size=16)


def test_evaluate_generations_of_real_motions_equal_the_ground_truth(trained):
  from jaxgen.tasks.motion.evaluation import evaluate_generations

  data = trained.task.split("test")
  captions, motion, lengths = data["caption"][:32], data["motion"][:32], data["length"][:32]
  assert trained.embed_text(captions).shape == (32, 16)
  scores = evaluate_generations(
    trained, captions, motion, lengths, motion, lengths, jax.random.PRNGKey(0), diversity_pairs=20
  )
  for key in ("r_precision_top1", "r_precision_top2", "r_precision_top3", "matching_score"):
    assert scores["generated"][key] == pytest.approx(scores["real"][key])
  assert scores["generated"]["fid"] == pytest.approx(0.0, abs=1e-6)
  assert 0 <= scores["real"]["r_precision_top1"] <= scores["real"]["r_precision_top3"] <= 1
  # Shorter inputs (T < 196) are padded; the result only depends on the real frames.
  short = trained.embed_motion(motion[:4, :120], np.minimum(lengths[:4], 120))
  full = trained.embed_motion(motion[:4], np.minimum(lengths[:4], 120))
  np.testing.assert_allclose(short, full, atol=1e-5)


def test_bad_inputs_raise_named_errors(trained):
  from jaxgen.tasks.motion.evaluation import EvaluationError, evaluate_generations, load_evaluator

  with pytest.raises(ValueError, match="features"):
    trained.embed_motion(np.zeros((2, 196, 251)), np.array([40, 40]))
  with pytest.raises(ValueError, match="lengths"):
    trained.embed_motion(np.zeros((2, 196, 263)), np.array([40, 400]))
  with pytest.raises(ValueError, match="fake_lengths"):
    evaluate_generations(
      trained,
      ["a person walks"] * 2,
      np.zeros((2, 196, 263)),
      np.array([40, 40]),
      np.zeros((2, 196, 263)),
      np.array([40]),
      jax.random.PRNGKey(0),
    )
  with pytest.raises(
    EvaluationError, match="--evaluator: .* found no directory '/nonexistent/run'"
  ):
    load_evaluator("/nonexistent/run")


def test_score_run_generates_the_test_captions_and_scores_them(evaluator_dir, tmp_path):
  from jaxgen.tasks.motion.evaluation import EvaluationError, score_run
  from jaxgen.tasks.registry import get_task
  from jaxgen.training.trainer import train

  config = apply_overrides(
    load_config_file(os.path.join(CONFIGS, "t2m_mdm_synthetic.py")),
    [
      "data.max_examples=40",
      "mdm.latent_dim=16",
      "mdm.ff_size=32",
      "mdm.num_layers=1",
      "mdm.num_heads=2",
      "text.width=16",
      "text.num_layers=1",
      "text.num_heads=2",
      "train.batch_size=8",
      "train.num_steps=1",
      "checkpoint.save_every=1",
      "optim.warmup_steps=1",
    ],
  )
  run_dir = str(tmp_path / "mdm")
  train(get_task(config), config, run_dir)
  scores = score_run(run_dir, evaluator_dir, num_examples=32, seed=1, num_steps=2, sampler=None)
  assert scores["options"] == {"num_steps": 2} and scores["seconds"] >= 0
  assert set(scores["generated"]) == {
    "r_precision_top1",
    "r_precision_top2",
    "r_precision_top3",
    "matching_score",
    "diversity",
    "fid",
  }
  assert all(np.isfinite(v) for v in scores["generated"].values())
  assert 0 <= scores["generated"]["r_precision_top1"] <= scores["generated"]["r_precision_top3"]
  with pytest.raises(EvaluationError, match="num_examples: expected at least 32"):
    score_run(run_dir, evaluator_dir, num_examples=8)
  with pytest.raises(EvaluationError, match="options: task 't2m_mdm' takes"):
    score_run(run_dir, evaluator_dir, length_mode="given")
  with pytest.raises(EvaluationError, match="--run: expected a text-to-motion run"):
    score_run(evaluator_dir, evaluator_dir)
  with pytest.raises(EvaluationError, match="--evaluator: expected a t2m_evaluator run"):
    score_run(run_dir, run_dir)
