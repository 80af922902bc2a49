"""Bring your own task: class-conditional diffusion defined here, outside jaxgen.

The task below uses only jaxgen's public pieces — the U-Net with a label
table and a null class, the diffusion losses, schedules, samplers and
classifier-free guidance — and is handed to jaxgen's trainer, which gives it
EMA, checkpoints and exact resumes. docs/custom_task.md walks through the
same code.

Data: 8×8 images of a square on a grey background whose colour is the
class (red, green, blue, yellow). An analytic judge reads the colour back.
One trained run (module-scoped) serves every test.
"""

import functools
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxgen.diffusion import classifier_free_guidance, diffusion_loss, drop_condition
from jaxgen.diffusion import make_schedule, sample
from jaxgen.models.unet import UNet2DConditionModel, UNetConfig, check_class_labels
from jaxgen.render.grid import save_png
from jaxgen.training.inference import restore_ema_params
from jaxgen.training.task import GenerativeTask, SampleSpec
from jaxgen.training.trainer import train

CLASSES = ("red", "green", "blue", "yellow")
COLOURS = np.array([(1, -1, -1), (-1, 1, -1), (-1, -1, 1), (1, 1, -1)], np.float32)
BACKGROUND = -0.5  # grey, in [-1, 1]
SIZE = 8
NUM_STEPS = 120


def colour_squares(num_examples: int, seed: int) -> dict[str, np.ndarray]:
  """Images (N, 8, 8, 3) in [-1, 1]: a 3-5 pixel square of the class colour; labels (N,)."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, len(CLASSES), num_examples).astype(np.int32)
  images = np.full((num_examples, SIZE, SIZE, 3), BACKGROUND, np.float32)
  for image, label in zip(images, labels):
    side = rng.integers(3, 6)
    y, x = rng.integers(0, SIZE - side + 1, 2)
    image[y : y + side, x : x + side] = COLOURS[label]
  return dict(image=images, label=labels)


def judge(images: np.ndarray) -> np.ndarray:
  """The class whose colour is nearest the mean of the bright pixels; -1 if none is bright."""
  bright = images.max(axis=-1) > 0.0  # (N, H, W); the background is at -0.5
  count = bright.sum(axis=(1, 2))
  mean = (images * bright[..., None]).sum(axis=(1, 2)) / np.maximum(count, 1)[:, None]
  nearest = np.argmin(((mean[:, None] - COLOURS[None]) ** 2).sum(-1), axis=1)
  return np.where(count > 0, nearest, -1)


class ColourSquaresTask(GenerativeTask):
  """Class-conditional pixel diffusion; the U-Net's null class drives the guidance."""

  sample_spec = SampleSpec(
    default_out="squares.png", out_extensions=(".png",), options=("num_steps", "guidance_scale")
  )

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.unet_config = UNetConfig(**config.unet)
    self.unet = UNet2DConditionModel(self.unet_config)
    self.schedule = make_schedule(config.diffusion.schedule)
    self.null_label = self.unet_config.null_class_label

  # Training hooks.
  def train_arrays(self):
    return colour_squares(self.config.data.num_examples, self.config.data.seed)

  def abstract_batch(self, batch_size):
    return dict(
      image=jax.ShapeDtypeStruct((batch_size, SIZE, SIZE, 3), jnp.float32),
      label=jax.ShapeDtypeStruct((batch_size,), jnp.int32),
    )

  def check_batch(self, batch):
    if batch["image"].shape[1:] != (SIZE, SIZE, 3):
      raise ValueError(
        f"batch['image']: expected [B, {SIZE}, {SIZE}, 3], found {batch['image'].shape}"
      )
    # Under jit the U-Net cannot see label values: check them on the host.
    check_class_labels(self.unet_config, batch["label"], name="batch['label']")

  def init(self, rng, batch):
    return self.unet.init(
      rng, batch["image"][:1], jnp.zeros((1,), jnp.int32), class_labels=batch["label"][:1]
    )

  def loss(self, params, batch, rng):
    drop_rng, noise_rng = jax.random.split(rng)
    # Some examples train the null class: the unconditional half of guidance.
    labels = drop_condition(
      drop_rng, batch["label"], jnp.int32(self.null_label), self.config.diffusion.cond_drop_prob
    )
    loss, aux = diffusion_loss(
      lambda x, t: self.unet.apply(params, x, t, class_labels=labels),
      batch["image"],
      noise_rng,
      self.schedule,
      prediction_type=self.config.diffusion.prediction_type,
    )
    return loss, dict(mse=aux["mse"])

  def preview(self, params, rng):
    labels = np.arange(len(CLASSES), dtype=np.int32)
    images = self.generate(params, dict(label=labels), rng)["image"]
    return to_uint8(np.concatenate(list(images), axis=1))

  # Generation hooks.
  def conditions(self, prompts, *, seconds=None):
    del seconds
    unknown = [p for p in prompts if p not in CLASSES]
    if unknown:
      raise ValueError(f"--prompt: expected class names from {CLASSES}, found {unknown}")
    return dict(label=np.array([CLASSES.index(p) for p in prompts], np.int32))

  def generate(self, params, conditions, rng, *, num_steps=20, guidance_scale=3.0):
    labels = jnp.asarray(conditions["label"])
    return dict(image=np.asarray(_generate(self, params, labels, rng, guidance_scale, num_steps)))

  def save_samples(self, samples, conditions, path, **display):
    del conditions, display
    save_png(path, to_uint8(np.concatenate(list(samples["image"]), axis=1)))
    return path


def to_uint8(images: np.ndarray) -> np.ndarray:
  return np.clip(np.round((images + 1) * 127.5), 0, 255).astype(np.uint8)


@functools.partial(jax.jit, static_argnums=(0, 5))  # the task object is static
def _generate(task, params, labels, rng, guidance_scale, num_steps):
  # guidance_scale is traced: one compiled sampler serves every scale.
  guided = classifier_free_guidance(
    lambda x, t, c: task.unet.apply(params, x, t, class_labels=c),
    labels,
    jnp.full_like(labels, task.null_label),
    guidance_scale,
  )
  noise = jax.random.normal(rng, labels.shape + (SIZE, SIZE, 3))
  return sample(
    guided,
    task.schedule,
    noise,
    sampler="ddim",
    num_steps=num_steps,
    prediction_type=task.config.diffusion.prediction_type,
  )


def get_config() -> ml_collections.ConfigDict:
  """The task's own sections plus the few trainer keys without a default."""
  c = ml_collections.ConfigDict()
  c.task = "colour_squares"  # a name for humans: the trainer is handed the object
  c.data = dict(num_examples=1024, seed=0)
  c.unet = dict(
    sample_size=SIZE,
    in_channels=3,
    out_channels=3,
    # One attention-free 8×8 block (no text context at all): compiles fast.
    down_block_types=("DownBlock2D",),
    up_block_types=("UpBlock2D",),
    mid_block_type="UNetMidBlock2D",  # the default mid block has cross-attention
    block_out_channels=(32,),
    layers_per_block=1,
    norm_num_groups=8,
    num_class_embeds=len(CLASSES),
    class_embed_null=True,
  )
  c.diffusion = dict(
    schedule="squaredcos_cap_v2", prediction_type="v_prediction", cond_drop_prob=0.2
  )
  c.train = dict(batch_size=32, num_steps=NUM_STEPS, max_minutes=30.0, log_every=30)
  c.optim = dict(learning_rate=3e-3, warmup_steps=20)
  c.checkpoint = dict(save_every=NUM_STEPS // 2)
  return c


def _leaves_equal(a, b) -> bool:
  a, b = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, final state, start-up log) of one full run."""
  workdir = str(tmp_path_factory.mktemp("colour_squares"))
  records = []
  handler = logging.Handler()
  handler.emit = records.append
  logging.getLogger().addHandler(handler)
  try:
    state = train(ColourSquaresTask(get_config()), get_config(), workdir)
  finally:
    logging.getLogger().removeHandler(handler)
  return workdir, jax.device_get(state), "\n".join(r.getMessage() for r in records)


def test_trains_with_ema_checkpoints_and_the_trainer_defaults(run):
  workdir, state, log = run
  assert int(state.step) == NUM_STEPS and int(state.skipped_steps) == 0
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int) == ["60", "120"]
  assert not _leaves_equal(state.params, state.ema_params)  # the EMA lags
  # The config left most trainer keys out; the run recorded their defaults.
  from jaxgen.training.run_directory import load_run_config  # pylint: disable=g-import-not-at-top

  saved = load_run_config(workdir)
  assert saved.train.ema_decay == 0.999 and saved.optim.grad_clip_norm == 1.0
  # A time cap on a cosine decay is announced at start.
  assert "train.max_minutes=30.0 may stop this run before train.num_steps=120" in log


def test_resume_from_the_halfway_checkpoint_is_bit_identical(run, tmp_path):
  workdir, final, _ = run
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  # Stopped after the step-60 checkpoint: the second half runs in a new call.
  shutil.rmtree(os.path.join(resumed, "checkpoints", str(NUM_STEPS)))
  state = jax.device_get(train(ColourSquaresTask(get_config()), get_config(), resumed))
  assert int(state.step) == NUM_STEPS
  for name in ("params", "ema_params", "opt_state", "rng", "step"):
    assert _leaves_equal(getattr(state, name), getattr(final, name)), name


def test_guided_samples_show_the_requested_class(run, tmp_path):
  workdir, _, _ = run
  task = ColourSquaresTask(get_config())
  params = restore_ema_params(task, workdir)  # EMA weights only: no optimizer built
  per_class = 16
  conditions = task.conditions([name for name in CLASSES for _ in range(per_class)])
  requested = conditions["label"]
  rng = jax.random.PRNGKey(1)

  def samples_and_accuracy(labels):
    samples = task.generate(params, dict(label=labels), rng, guidance_scale=3.0)
    return samples, float(np.mean(judge(samples["image"]) == requested))

  samples, guided = samples_and_accuracy(requested)
  _, null = samples_and_accuracy(np.full_like(requested, task.null_label))
  _, shuffled = samples_and_accuracy(np.random.default_rng(0).permutation(requested))
  chance = 1 / len(CLASSES)
  assert guided >= 0.9, (guided, null, shuffled)
  assert null <= chance + 0.2 and shuffled <= chance + 0.2, (guided, null, shuffled)
  out = task.save_samples(samples, conditions, str(tmp_path / "squares.png"))
  assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_judge_reads_the_training_data():
  data = colour_squares(256, seed=1)
  assert np.mean(judge(data["image"]) == data["label"]) == 1.0


def test_a_label_past_the_null_class_is_named_before_training():
  task = ColourSquaresTask(get_config())
  batch = task.train_arrays()
  batch = dict(image=batch["image"][:4], label=np.array([0, 1, 4, 5], np.int32))
  with pytest.raises(ValueError, match=r"batch\['label'\]: expected labels in \[0, 5\)"):
    task.check_batch(batch)
  with pytest.raises(ValueError, match="--prompt: expected class names"):
    task.conditions(["purple"])
