"""The MDM text-to-motion task: loss, one-scan sampling, generation, CLIP text, CLI."""

import json
import os
import string

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import cli
from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.tasks.motion.motion_task import MotionSampleError, motion_preview
from jaxgen.tasks.motion.t2m_mdm import MotionDiffusionTask, geometric_losses
from jaxgen.training.task import PromptError

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
TINY = [
  "data.max_examples=40",
  "mdm.latent_dim=16",
  "mdm.ff_size=32",
  "mdm.num_layers=1",
  "mdm.num_heads=2",
  "text.width=16",
  "text.num_layers=1",
  "text.num_heads=2",
  "sample.num_steps=3",
  "train.batch_size=8",
  "train.num_steps=2",
  "train.log_every=1",
  "checkpoint.save_every=2",
  "optim.warmup_steps=1",
]


def tiny_config(*extra):
  return apply_overrides(
    load_config_file(os.path.join(CONFIGS, "t2m_mdm_synthetic.py")), TINY + list(extra)
  )


@pytest.fixture(scope="module")
def task():
  return MotionDiffusionTask(tiny_config())


@pytest.fixture(scope="module")
def params(task):
  batch = {k: jnp.asarray(v[:4]) for k, v in task.train_arrays().items()}
  return nn.meta.unbox(task.init(jax.random.PRNGKey(0), batch))


def _loops(jaxpr) -> list:
  """Every scan / while equation in a jaxpr, nested ones included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ("scan", "while"):
      found.append(eqn)
    for value in eqn.params.values():
      for item in value if isinstance(value, (list, tuple)) else [value]:
        inner = getattr(item, "jaxpr", item)
        if hasattr(inner, "eqns"):
          found += _loops(inner)
  return found


def test_sampling_is_one_scan_over_the_steps(task, params):
  tokens, mask = task.tokenize(["a person walks forward", "someone jumps"])
  motion_mask = np.arange(196)[None] < np.array([[40], [80]])
  for sampler, steps in (("ddim", 5), ("dpm_solver_pp_2m", 4)):
    jaxpr = jax.make_jaxpr(
      lambda p, sampler=sampler, steps=steps: task.sample(
        p,
        tokens,
        mask,
        motion_mask,
        jax.random.PRNGKey(0),
        sampler=sampler,
        num_steps=steps,
        guidance_scale=2.5,
      )
    )(params)
    loops = _loops(jaxpr.jaxpr)
    assert [(e.primitive.name, e.params.get("length")) for e in loops] == [("scan", steps)]


def test_loss_has_finite_gradients_and_geometric_terms(task, params):
  batch = {k: jnp.asarray(v[:4]) for k, v in task.train_arrays().items()}
  (loss, metrics), grads = jax.jit(jax.value_and_grad(task.loss, has_aux=True))(
    params, batch, jax.random.PRNGKey(1)
  )
  assert np.isfinite(loss) and set(metrics) == {"mse"}
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert (
    np.abs(np.asarray(grads["text_encoder"]["transformer"]["token_embedding"]["embedding"])).sum()
    > 0
  )
  x0, mask = batch["motion"], batch["motion_mask"]
  # The geometric terms (joints from the features) give finite gradients to x0.
  geometric_grad = jax.jit(
    jax.grad(lambda x: sum(geometric_losses(x, x0, mask, task.normalizer, task.fmt).values()))
  )(x0 + 0.1)
  assert np.isfinite(geometric_grad).all() and np.abs(geometric_grad).sum() > 0
  exact = geometric_losses(x0, x0, mask, task.normalizer, task.fmt)
  assert float(exact["position"]) == 0.0 and float(exact["velocity"]) == 0.0
  # Still ground-truth feet move less than the threshold per frame.
  assert 0.0 <= float(exact["foot_contact"]) <= 0.01**2
  moved = geometric_losses(x0 + 0.5, x0, mask, task.normalizer, task.fmt)
  assert float(moved["position"]) > 0 and float(moved["velocity"]) > 0


def _conditions(captions, lengths):
  return dict(caption=np.asarray(captions, dtype=str), length=np.asarray(lengths))


def test_generate_returns_denormalised_motions_zero_beyond_lengths(task, params):
  lengths = np.array([40, 120, 196])
  out = task.generate(
    params,
    _conditions(["a person walks", "someone waves", "a man jumps"], lengths),
    jax.random.PRNGKey(2),
    batch_size=2,
  )
  assert set(out) == {"motion", "length"}
  np.testing.assert_array_equal(out["length"], lengths)
  out = out["motion"]
  assert out.shape == (3, 196, 263) and out.dtype == np.float32
  assert np.abs(out[0, 40:]).max() == 0 and np.abs(out[1, 120:]).max() == 0
  assert np.isfinite(out).all() and np.abs(out[2]).mean() > 0
  rng = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="conditions\\['length'\\]"):
    task.generate(params, _conditions(["a person walks"], [400]), rng)
  with pytest.raises(ValueError, match="conditions\\['length'\\]"):
    task.generate(params, _conditions(["a person walks", "x"], [40]), rng)
  with pytest.raises(ValueError, match="conditions\\['caption'\\]"):
    task.generate(params, _conditions([""], [40]), rng)
  with pytest.raises(ValueError, match="conditions: expected keys"):
    task.generate(params, dict(caption=np.asarray(["a"])), rng)
  with pytest.raises(ValueError, match="sampler"):
    task.generate(params, _conditions(["a"], [40]), rng, sampler="plms")
  with pytest.raises(ValueError, match="num_steps: expected a positive .* at most 1000"):
    task.generate(params, _conditions(["a"], [40]), rng, num_steps=1001)
  with pytest.raises(ValueError, match="guidance_scale"):
    task.generate(params, _conditions(["a"], [40]), rng, guidance_scale=-1.0)


def test_sample_protocol_conditions_outputs_and_files(task, params, tmp_path):
  assert task.sample_spec.options == ("sampler", "num_steps", "guidance_scale")
  assert task.sample_spec.takes_seconds and task.sample_spec.default_out == "motion.mp4"
  conditions = task.conditions(["a person walks", "someone waves"], seconds=2.0)
  assert conditions["caption"].tolist() == ["a person walks", "someone waves"]
  assert conditions["length"].dtype == np.int32 and conditions["length"].tolist() == [40, 40]
  with pytest.raises(MotionSampleError, match="--seconds: expected at most 9.8 s"):
    task.conditions(["a person walks"], seconds=20)
  with pytest.raises(MotionSampleError, match="--seconds: expected a positive duration"):
    task.conditions(["a person walks"], seconds=None)
  with pytest.raises(MotionSampleError, match="--seconds: expected a positive duration"):
    task.conditions(["a person walks"], seconds=-1)
  with pytest.raises(PromptError, match="prompts: expected at least one prompt, found none"):
    task.conditions([], seconds=2)
  with pytest.raises(PromptError, match=r"prompts: expected non-empty strings, found \[' '\]"):
    task.conditions(["a person walks", " "], seconds=2)
  with pytest.raises(ValueError, match="--out: expected a file ending in one of"):
    task.check_output(str(tmp_path / "x.txt"))
  samples = task.generate(params, conditions, jax.random.PRNGKey(0), num_steps=2)
  path = task.save_samples(samples, conditions, str(tmp_path / "two.npy"))
  joints = np.load(path)
  assert joints.shape == (2, 40, 22, 3) and joints.dtype == np.float32
  assert np.isfinite(joints).all()
  path = task.save_samples(
    samples, conditions, str(tmp_path / "two.gif"), scale=4, ncols=None, dpi=20
  )
  assert os.path.getsize(path) > 0


def test_an_mp4_without_ffmpeg_is_named_and_suggests_a_gif(task, monkeypatch, tmp_path):
  from jaxgen.render import motion as render_motion

  def missing():
    raise render_motion.FfmpegNotFoundError("no ffmpeg here")

  monkeypatch.setattr(render_motion, "find_ffmpeg", missing)
  with pytest.raises(MotionSampleError, match="--out: an .mp4 needs ffmpeg .*write a .gif"):
    task.check_output(str(tmp_path / "walk.mp4"))
  task.check_output(str(tmp_path / "walk.gif"))


def test_check_batch_and_config_errors(task):
  arrays = {k: v[:2] for k, v in task.train_arrays().items()}
  task.check_batch(arrays)
  with pytest.raises(ValueError, match="batch\\['motion'\\]"):
    task.check_batch(dict(arrays, motion=arrays["motion"][..., :10]))
  with pytest.raises(ValueError, match="mdm.frames_per_token"):
    MotionDiffusionTask(tiny_config("mdm.frames_per_token=3"))
  with pytest.raises(ValueError, match="text.encoder"):
    MotionDiffusionTask(tiny_config("text.encoder=bert"))
  with pytest.raises(FileNotFoundError, match="text.clip_path"):
    MotionDiffusionTask(tiny_config("text.encoder=clip", "text.clip_path=/nonexistent"))


def test_length_buckets_cut_only_padding_the_denoiser_ignores(task, params):
  arrays = task.train_arrays()
  (buckets,) = task.train_buckets(arrays)
  assert (buckets.bounds, buckets.keys) == ((64, 128, 196), ("motion", "motion_mask"))
  short = np.flatnonzero(arrays["motion_mask"].sum(1) <= 64)[:3]
  assert len(short) == 3 and arrays["motion_mask"][short].sum(1).min() < 64
  full = {k: jnp.asarray(v[short]) for k, v in arrays.items()}
  cropped = dict(full, motion=full["motion"][:, :64], motion_mask=full["motion_mask"][:, :64])
  t = jnp.array([10, 500, 990])

  def denoise(batch):
    x_t = batch["motion"] + 0.3  # padding of x_t is not zero while sampling either
    text = task.encode_text(params, batch["text_tokens"], batch["text_mask"])
    return np.asarray(task.denoise(params, x_t, t, text, batch["motion_mask"]))

  real = np.asarray(cropped["motion_mask"])
  np.testing.assert_allclose(denoise(cropped)[real], denoise(full)[:, :64][real], atol=1e-5)


@pytest.mark.parametrize(
  "override, message",
  [
    ("mdm.mask_padding=False", "mdm.mask_padding=True"),
    ("data.length_buckets.frames=(62, 196)", "multiples of mdm.frames_per_token=4"),
    ("data.length_buckets.frames=(64, 128)", "hold every example"),
    ("data.length_buckets.frames=(64, 200)", "at most the 196 positions"),
    ("words", "only the key 'frames'"),
  ],
)
def test_bad_length_buckets_are_named(override, message):
  config = tiny_config()
  if override == "words":
    config.data.length_buckets.words = (12, 24)
  else:
    config = tiny_config(override)
  task = MotionDiffusionTask(config)
  with pytest.raises(ValueError, match=message):
    task.train_buckets(task.train_arrays())


def test_motion_preview_draws_a_picture(task):
  data = task.split("test")
  picture = motion_preview(
    data["motion"][:2, :12], np.array([8, 12]), data["caption"][:2], task.fmt, num_snapshots=2
  )
  assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[-1] == 3


def _tiny_clip_folder(folder):
  """A random-weight CLIPTextModelWithProjection and a letters-only CLIP tokenizer."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  os.makedirs(folder, exist_ok=True)
  tokens = (
    ["<|startoftext|>", "<|endoftext|>"]
    + list(string.ascii_lowercase)
    + [c + "</w>" for c in string.ascii_lowercase]
  )
  with open(os.path.join(folder, "vocab.json"), "w") as f:
    json.dump({t: i for i, t in enumerate(tokens)}, f)
  with open(os.path.join(folder, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n")
  transformers.CLIPTokenizer(
    os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
  ).save_pretrained(folder)
  torch.manual_seed(0)
  config = transformers.CLIPTextConfig(
    vocab_size=len(tokens),
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=32,
    projection_dim=12,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
  )
  model = transformers.CLIPTextModelWithProjection(config).eval()
  model.save_pretrained(folder, safe_serialization=True)
  return model


def test_frozen_clip_text_encoder_matches_transformers_and_gets_no_update(tmp_path):
  torch = pytest.importorskip("torch")
  reference = _tiny_clip_folder(str(tmp_path / "clip"))
  task = MotionDiffusionTask(
    tiny_config("text.encoder=clip", f"text.clip_path={tmp_path / 'clip'}", "text.max_length=22")
  )
  assert task.mdm_config.text_dim == 12
  batch = {k: jnp.asarray(v[:2]) for k, v in task.train_arrays().items()}
  params = nn.meta.unbox(task.init(jax.random.PRNGKey(0), batch))
  tokens, mask = task.tokenize(["a person walks", "someone waves the right hand"])
  ours = task.encode_text(params, jnp.asarray(tokens), jnp.asarray(mask))[0]
  with torch.no_grad():
    theirs = reference(
      input_ids=torch.tensor(tokens).long(), attention_mask=torch.tensor(mask).long()
    ).text_embeds.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4)
  grads = jax.jit(jax.grad(lambda p: task.loss(p, batch, jax.random.PRNGKey(1))[0]))(params)
  assert all(np.abs(np.asarray(g)).max() == 0 for g in jax.tree.leaves(grads["clip"]))
  with pytest.raises(ValueError, match="optim.weight_decay"):
    MotionDiffusionTask(
      tiny_config(
        "text.encoder=clip", f"text.clip_path={tmp_path / 'clip'}", "optim.weight_decay=0.01"
      )
    )


def test_train_then_cli_sample_writes_joints_and_named_errors(tmp_path, capsys):
  from jaxgen.tasks.registry import get_task
  from jaxgen.training.trainer import train

  workdir = str(tmp_path / "run")
  train(get_task(tiny_config()), tiny_config(), workdir)
  out = str(tmp_path / "walk.npy")
  common = [
    "--compilation-cache",
    "",
    "sample",
    "--checkpoint",
    workdir,
    "--prompt",
    "a person walks forward then waves the right hand",
  ]
  assert cli.main(common + ["--seconds", "6", "--out", out, "--steps", "2"]) == 0
  joints = np.load(out)
  assert joints.shape == (1, 120, 22, 3) and np.isfinite(joints).all()
  assert cli.main(common + ["--seconds", "20", "--out", out]) == 2
  assert "--seconds: expected at most 9.8 s" in capsys.readouterr().err
  assert cli.main(common + ["--seconds", "2", "--out", str(tmp_path / "x.txt")]) == 2
  assert "--out" in capsys.readouterr().err
  assert cli.main(common + ["--out", out]) == 2
  assert "--seconds" in capsys.readouterr().err
