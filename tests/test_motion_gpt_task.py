"""The T2M-GPT stage-2 task end to end: a tiny VQ run, a GPT run on its codes, generation, CLI."""

import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxgen import cli
from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.tasks.motion.t2m_gpt import MotionGPTTask
from jaxgen.tasks.registry import load_run
from jaxgen.tasks.registry import get_task
from jaxgen.training.trainer import train

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
DATA = ["data.max_examples=24"]
RUN = ["train.batch_size=8", "train.log_every=1", "optim.warmup_steps=1", "train.ema_warmup=0"]
VQ = (
  DATA
  + RUN
  + [
    "vq.width=16",
    "vq.output_emb_width=8",
    "vq.depth=1",
    "vq.num_codes=16",
    "train.num_steps=2",
    "checkpoint.save_every=2",
  ]
)
GPT = (
  DATA
  + RUN
  + [
    "gpt.embed_dim=16",
    "gpt.num_layers=1",
    "gpt.num_heads=2",
    "text.width=16",
    "text.num_layers=1",
    "text.num_heads=2",
    "train.num_steps=60",
    "checkpoint.save_every=60",
    "gpt_train.pkeep=1.0",
    "optim.learning_rate=3e-3",
    "train.ema_decay=0.0",
  ]
)


def _config(name, overrides):
  return apply_overrides(load_config_file(os.path.join(CONFIGS, name)), overrides)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("t2m_gpt")
  vq_dir, gpt_dir = str(root / "vq"), str(root / "gpt")
  vq_config = _config("t2m_vq_synthetic.py", VQ)
  train(get_task(vq_config), vq_config, vq_dir)
  gpt_config = _config("t2m_gpt_synthetic.py", GPT + [f"vq.workdir={vq_dir}"])
  train(get_task(gpt_config), gpt_config, gpt_dir)
  return vq_dir, gpt_dir


def test_gpt_on_vq_codes_learns_and_generates_given_lengths(runs):
  _, gpt_dir = runs
  task, params = load_run(gpt_dir)
  assert isinstance(task, MotionGPTTask)
  data = task.split("train")
  arrays = task.train_arrays()
  batch = {k: v[:8] for k, v in arrays.items()}
  # Cross-entropy on the training codes fell below that of the initial weights (ln 17).
  loss = lambda p: float(task.loss(p, batch, jax.random.PRNGKey(0))[0])
  initial = nn.meta.unbox(task.init(jax.random.PRNGKey(0), batch))
  assert loss(params) < 0.9 * loss(initial), (loss(params), loss(initial))
  lengths = np.array([40, 64, 23])
  conditions = dict(caption=np.asarray(data["caption"][:3], dtype=str), length=lengths)
  samples = task.generate(params, conditions, jax.random.PRNGKey(1))
  features = samples["motion"]
  assert features.shape == (3, task.max_frames, task.fmt.feature_dim)
  real = np.abs(features).sum(-1) > 0
  # "given" lengths round down to whole codes (4 frames each); nothing beyond them.
  np.testing.assert_array_equal(real.sum(-1), lengths // 4 * 4)
  np.testing.assert_array_equal(samples["length"], lengths // 4 * 4)
  samples = task.generate(params, conditions, jax.random.PRNGKey(1), length_mode="end_token")
  features, frames = samples["motion"], samples["length"]
  assert frames.min() >= 4 and frames.max() <= task.max_frames and frames.dtype == np.int32
  np.testing.assert_array_equal((np.abs(features).sum(-1) > 0).sum(-1), frames)
  with pytest.raises(ValueError, match="length_mode: expected one of"):
    task.generate(params, conditions, jax.random.PRNGKey(1), length_mode="sampled")
  too_short = "conditions\\['length'\\]: expected frame counts in \\[4, 196\\]"
  with pytest.raises(ValueError, match=too_short):
    task.generate(params, dict(conditions, length=np.array([40, 64, 3])), jax.random.PRNGKey(1))
  assert task.sample_spec.options == ("length_mode",)
  with pytest.raises(ValueError, match="--seconds: expected at least 0.2 s"):
    task.conditions(["a person walks"], seconds=0.1)


def test_cli_samples_a_gpt_run_and_names_a_vq_run_mismatch(runs, tmp_path, capsys):
  vq_dir, gpt_dir = runs
  out = str(tmp_path / "walk.npy")
  assert (
    cli.main(
      [
        "--compilation-cache",
        "",
        "sample",
        "--checkpoint",
        gpt_dir,
        "--prompt",
        "a person walks forward",
        "--seconds",
        "3.1",
        "--out",
        out,
      ]
    )
    == 0
  )
  joints = np.load(out)
  assert joints.shape == (1, 60, 22, 3) and np.isfinite(joints).all()
  config = _config("t2m_gpt_synthetic.py", GPT + [f"vq.workdir={vq_dir}", "data.seed=1"])
  with pytest.raises(ValueError, match="data: the VQ-VAE in"):
    MotionGPTTask(config)
  config = _config("t2m_gpt_synthetic.py", GPT + [f"vq.workdir={gpt_dir}"])
  with pytest.raises(ValueError, match="vq.workdir: expected a t2m_vq run"):
    MotionGPTTask(config)
