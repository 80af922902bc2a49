"""Stable Diffusion fine-tuning (task `sd_finetune`) end to end, on tiny random weights.

A tiny random diffusers `StableDiffusionPipeline` folder and a fake MS-COCO
2017 folder (the exact layout: annotations/captions_train2017.json and
train2017/) are written; `jaxgen train --config configs/sd15_finetune.py
pretrained=... data.manual_dir=...` trains the U-Net once, in-process and
grain-fed; the run is judged by its logged losses and its train state,
exported by `jaxgen convert` and reloaded by diffusers. The loss itself is
checked against diffusers' training script (epsilon and v-prediction, with
and without min-SNR weights).
"""

import contextlib
import dataclasses
import json
import logging
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
transformers = pytest.importorskip("transformers")

from PIL import Image
from test_readme import ROOT, readme_argv
from tiny_diffusers import (
  save_sd_pipeline,
  sd15_ddim_scheduler,
  tiny_text_config,
  tiny_tokenizer,
  tiny_vae,
)

from jaxgen import cli
from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.convert.diffusers_unet import unet_to_diffusers
from jaxgen.data.image_text import ImageTextDataError
from jaxgen.pipelines.stable_diffusion import SchedulerConfig
from jaxgen.tasks import registry
from jaxgen.tasks.image import sd_finetune
from jaxgen.training import trainer
from jaxgen.training.checkpoint import Checkpointer
from jaxgen.training.inference import abstract_params

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
SD15 = os.path.join(CONFIGS, "sd15_finetune.py")
SD2 = os.path.join(CONFIGS, "sd2_finetune.py")
CAPTIONS = ("a cat on a mat", "a dog", "a red cat", "dog on a mat")
# The tiny pipeline at 8×8 pixels (8×8 latents), a learning rate it moves at.
TINY = [
  "data.resolution=8",
  "train.batch_size=4",
  "train.num_steps=40",
  "train.log_every=1",
  "train.sample_every=0",
  "train.ema_decay=0.9",
  "optim.learning_rate=3e-3",
  "checkpoint.save_every=40",
  "sample.num_steps=2",
  "data.worker_count=0",  # decode in the training process (grain's workers have their own tests)
]


def write_fake_coco(root: str, num_images: int = 8, year: int = 2017, split: str = "train") -> str:
  """A COCO captions folder: annotations/captions_<split><year>.json and <split><year>/*.jpg."""
  rng = np.random.default_rng(0)
  images, annotations = [], []
  os.makedirs(os.path.join(root, f"{split}{year}"), exist_ok=True)
  for i in range(num_images):
    # COCO's sizes, landscape and portrait: resized and cropped at any training resolution.
    width, height = (640, 480) if i % 2 else (480, 640)
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(0, 255, (1, 1, 3))
    pixels = np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8)
    name = f"{i:012d}.jpg"
    Image.fromarray(pixels).save(os.path.join(root, f"{split}{year}", name), quality=95)
    images.append(dict(id=100 + i, file_name=name, width=width, height=height))
    for j in range(2):  # COCO has about five captions per image
      caption = CAPTIONS[(i + j) % len(CAPTIONS)]
      annotations.append(dict(id=1000 + 2 * i + j, image_id=100 + i, caption=caption))
  os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
  with open(os.path.join(root, "annotations", f"captions_{split}{year}.json"), "w") as f:
    json.dump(dict(images=images, annotations=annotations), f)
  return root


def write_tiny_sd_folder(folder: str, scheduler) -> str:
  """A random diffusers StableDiffusionPipeline small enough to compile its training step fast.

  One U-Net level with cross-attention and no mid block; a VAE that does not
  downsample (latents at pixel resolution); a one-layer CLIP text encoder.
  """
  torch.manual_seed(0)
  tokenizer = tiny_tokenizer(os.path.join(folder, "_tokenizer_src"), max_length=8)
  text_encoder = transformers.CLIPTextModel(
    tiny_text_config(
      tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
  )
  unet = diffusers.UNet2DConditionModel(
    sample_size=8,
    block_out_channels=(16,),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D",),
    up_block_types=("CrossAttnUpBlock2D",),
    mid_block_type=None,
    cross_attention_dim=16,
    attention_head_dim=8,
    norm_num_groups=8,
  )
  vae = tiny_vae((8,), norm_num_groups=8, sample_size=8, mid_block_add_attention=False)
  return save_sd_pipeline(
    folder, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler
  )


def sd_finetune_args(root: str) -> dict[str, str]:
  """`pretrained` and `data.manual_dir` overrides: a tiny random SD folder and a fake COCO 2017."""
  return {
    "pretrained": write_tiny_sd_folder(os.path.join(root, "sd"), sd15_ddim_scheduler()),
    "data.manual_dir": write_fake_coco(os.path.join(root, "coco2017")),
  }


def _config(args: dict[str, str], *extra: str):
  overrides = [f"{k}={v}" for k, v in args.items()] + TINY + list(extra)
  return apply_overrides(load_config_file(SD15), overrides)


def _run_cli(argv) -> int:
  return cli.main(["--compilation-cache", ""] + [str(a) for a in argv])


@pytest.fixture(scope="module")
def args(tmp_path_factory):
  return sd_finetune_args(str(tmp_path_factory.mktemp("sd_finetune")))


class _LoggedLosses(logging.Handler):
  """The `loss` of each `step N: ...` line the trainer logs."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.losses = {}

  def emit(self, record):
    match = re.fullmatch(r"step (\d+): .*\bloss=([-+.\deE]+)\b.*", record.getMessage())
    if match:
      self.losses[int(match.group(1))] = float(match.group(2))


@pytest.fixture(scope="module")
def run(args, tmp_path_factory):
  """(workdir, task of the run, {step: logged loss}) of one tiny training run (grain-fed)."""
  workdir = str(tmp_path_factory.mktemp("runs") / "sd15")
  overrides = [f"{k}={v}" for k, v in args.items()] + TINY
  root, handler = logging.getLogger(), _LoggedLosses()
  level = root.level
  root.addHandler(handler)
  root.setLevel(logging.INFO)
  try:
    assert _run_cli(["train", "--config", SD15, "--workdir", workdir] + overrides) == 0
  finally:
    root.removeHandler(handler)
    root.setLevel(level)
  return workdir, registry.get_task(registry.run_config(workdir)), handler.losses


def _restore(task, workdir: str, item: str):
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    items, _, step = checkpointer.restore_items({item: abstract_params(task)})
  finally:
    checkpointer.close()
  return items[item], step


def test_training_lowers_the_loss_and_keeps_the_frozen_models_out_of_the_state(run):
  workdir, task, losses = run
  params, step = _restore(task, workdir, "params")
  ema, _ = _restore(task, workdir, "ema_params")
  first, last = (np.mean([losses[s] for s in steps]) for steps in (range(1, 5), range(33, 41)))
  print(f"logged loss: steps 1-4 {first:.4f} -> steps 33-40 {last:.4f}")
  assert step == 40 and sorted(losses) == list(range(1, 41))
  assert last < 0.6 * first, losses
  # EMA: its own copy, between the pretrained and the trained U-Net.
  pretrained = task.sd.params["unet"]
  kernel = lambda p: np.asarray(p["unet"]["conv_in"]["kernel"])
  assert not np.array_equal(kernel(ema), kernel(params))
  assert not np.array_equal(kernel(ema), pretrained["conv_in"]["kernel"])
  # Only the U-Net is trained: the VAE and the text encoder have no params,
  # EMA or optimizer moments in the train state.
  abstract = trainer.abstract_train_state(task, task.config, task.abstract_batch(4))
  assert set(abstract.params) == set(abstract.ema_params) == {"unet"}
  unet_size = sum(x.size for x in jax.tree.leaves(abstract.params))
  moments = sum(x.size for x in jax.tree.leaves(abstract.opt_state) if x.ndim)
  assert moments == 2 * unet_size  # AdamW's mu and nu
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["pretrained"] == task.config.pretrained  # absolute


def test_export_loads_in_diffusers_with_the_ema_unet_and_the_frozen_models(run, args, tmp_path):
  workdir, task, _ = run
  out = str(tmp_path / "exported")
  assert _run_cli(["convert", "--from", "jaxgen", workdir, "--to", "diffusers", out]) == 0
  pipe = diffusers.StableDiffusionPipeline.from_pretrained(
    out, safety_checker=None, requires_safety_checker=False
  )
  _, info = diffusers.UNet2DConditionModel.from_pretrained(
    out, subfolder="unet", output_loading_info=True
  )
  assert not any(info.values()), info  # strict: nothing missing, unexpected or mismatched
  ema, _ = _restore(task, workdir, "ema_params")
  expected = unet_to_diffusers(jax.device_get(ema["unet"]))
  state = {k: v.numpy() for k, v in pipe.unet.state_dict().items()}
  assert set(state) == set(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(state[key], value, err_msg=key)
  # The frozen VAE and text encoder leave the run bit-identical to the folder.
  for sub, name in (("vae", "diffusion_pytorch_model"), ("text_encoder", "model")):
    original = safetensors_numpy.load_file(f"{args['pretrained']}/{sub}/{name}.safetensors")
    exported = safetensors_numpy.load_file(f"{out}/{sub}/{name}.safetensors")
    assert set(original) == set(exported)
    for key, value in original.items():
      np.testing.assert_array_equal(exported[key], value, err_msg=f"{sub}/{key}")


def test_named_errors(run, args, tmp_path, capsys):
  with pytest.raises(sd_finetune.PretrainedFolderError, match=r"pretrained: .*found None"):
    registry.get_task(_config({"data.manual_dir": args["data.manual_dir"]}))
  with pytest.raises(sd_finetune.PretrainedFolderError, match="model_index.json"):
    registry.get_task(_config(dict(args, pretrained=args["data.manual_dir"])))
  sd = run[1].sd  # the folder's pipeline, loaded once
  task = sd_finetune.SDFinetuneTask(_config({"pretrained": args["pretrained"]}), pipeline=sd)
  for load in (task.train_dataset, task.train_arrays):
    with pytest.raises(ImageTextDataError, match=r"data.manual_dir: .*found None"):
      load()
  nowhere = dict(args, **{"data.manual_dir": str(tmp_path / "nowhere")})
  task = sd_finetune.SDFinetuneTask(_config(nowhere), pipeline=sd)
  with pytest.raises(ImageTextDataError, match="data.manual_dir: .*found no folder"):
    task.train_dataset()
  with pytest.raises(ValueError, match=r"data.resolution: expected a positive multiple of 1"):
    sd_finetune.SDFinetuneTask(_config(args, "data.resolution=0"), pipeline=sd)
  with pytest.raises(ValueError, match=r"data.loader: expected one of"):
    sd_finetune.SDFinetuneTask(_config(args, "data.loader=disk"), pipeline=sd)
  other_run = tmp_path / "autoencoder_run"
  other_run.mkdir()
  (other_run / "config.json").write_text(json.dumps({"task": "autoencoder"}))
  assert _run_cli(["convert", "--from", "jaxgen", other_run, "--to", tmp_path / "out"]) == 2
  assert "expected a pipeline checkpoint or an sd_finetune run, found a 'autoencoder' run" in (
    capsys.readouterr().err
  )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("gamma", [None, 5.0])
def test_loss_matches_the_diffusers_training_script(prediction_type, gamma):
  """train_text_to_image.py's loss (add_noise, get_velocity, compute_snr) on the same t and noise."""
  from diffusers.training_utils import compute_snr  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  latents, noise = (rng.standard_normal((6, 4, 4, 4)).astype(np.float32) for _ in range(2))
  t = np.array([0, 1, 250, 500, 900, 999])
  scheduler = SchedulerConfig(prediction_type=prediction_type)
  loss, _ = sd_finetune.denoising_loss(
    lambda x, _: 0.5 * x,  # a stand-in U-Net
    jnp.asarray(latents),
    jnp.asarray(t),
    jnp.asarray(noise),
    scheduler.schedule(),
    prediction_type=prediction_type,
    min_snr_gamma=gamma,
  )
  reference = diffusers.DDPMScheduler(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
  )
  x0, eps, steps = (torch.from_numpy(a) for a in (latents, noise, t))
  pred = 0.5 * reference.add_noise(x0, eps, steps)
  target = eps if prediction_type == "epsilon" else reference.get_velocity(x0, eps, steps)
  mse = torch.nn.functional.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
  weight = torch.ones_like(mse)
  if gamma is not None:
    snr = compute_snr(reference, steps)
    weight = torch.minimum(snr, torch.full_like(snr, gamma))
    weight = weight / snr if prediction_type == "epsilon" else weight / (snr + 1)
  np.testing.assert_allclose(float(loss), float((mse * weight).mean()), rtol=1e-5)


def test_noise_offset_shifts_each_channel_mean():
  @jax.jit
  def noises(rng):
    latents = jnp.zeros((256, 4, 4, 3))
    _, plain = sd_finetune.draw_noise(rng, latents, 1000, 0.0)
    t, offset = sd_finetune.draw_noise(rng, latents, 1000, 1.0)
    centred = lambda noise: noise - noise.mean(axis=(1, 2), keepdims=True)
    spread = lambda noise: jnp.std(jnp.mean(noise, axis=(1, 2)))
    return t, spread(plain), spread(offset), jnp.max(jnp.abs(centred(offset) - centred(plain)))

  t, plain, offset, centred_change = noises(jax.random.key(0))
  assert t.shape == (256,) and int(t.min()) >= 0 and int(t.max()) < 1000
  # The offset is one value per example and channel: it spreads the channel means
  # (std 1/4 over 16 pixels -> about sqrt(1/16 + 1)) and leaves the rest of the noise.
  assert plain < 0.4 < 0.8 < offset
  assert centred_change < 1e-5


def test_paper_configs(run, args):
  sd = run[1].sd
  sd15 = sd_finetune.SDFinetuneTask(load_config_file(SD15), pipeline=sd)
  c = sd15.config
  assert (sd15.resolution, sd15.prediction_type, c.optim.learning_rate) == (512, "epsilon", 1e-5)
  assert (c.finetune.cond_drop_prob, c.finetune.min_snr_gamma, c.train.ema_decay) == (
    0.1,
    5.0,
    0.9999,
  )
  v_prediction = dataclasses.replace(sd, scheduler=SchedulerConfig(prediction_type="v_prediction"))
  sd2 = sd_finetune.SDFinetuneTask(load_config_file(SD2), pipeline=v_prediction)
  assert (sd2.resolution, sd2.prediction_type) == (768, "v_prediction")
  # The precision policy reaches the trained U-Net and the frozen text encoder.
  bf16 = apply_overrides(
    load_config_file(SD15), ["model.compute_dtype=bfloat16", "model.remat=full"]
  )
  task = sd_finetune.SDFinetuneTask(bf16, pipeline=sd)
  assert (task.unet.dtype, task.unet.remat, task.text_model.dtype) == (
    jnp.bfloat16,
    "full",
    jnp.bfloat16,
  )
  with pytest.raises(ValueError, match="model.compute_dtype: expected one of"):
    sd_finetune.SDFinetuneTask(_config(args, "model.compute_dtype=float16"), pipeline=sd)


def test_readme_commands(run, args, tmp_path, capsys):
  """README's fine-tuning commands: train dry-runs on the tiny folders, the export runs."""
  train = [
    argv[1:]
    for config in ("sd15_finetune.py", "sd2_finetune.py")
    for argv in readme_argv(f"jaxgen train --config configs/{config} ")
  ]
  export = [argv[1:] for argv in readme_argv("jaxgen convert --from jaxgen runs/sd")]
  assert len(train) == 2 and len(export) == 1, (train, export)
  for argv in train:
    argv = [a for a in argv if a.split("=", 1)[0] not in args] + [
      f"{k}={v}" for k, v in args.items()
    ]
    with contextlib.chdir(ROOT):
      assert _run_cli(argv[:1] + ["--dry-run"] + argv[1:]) == 0, argv
    assert "nothing compiled" in capsys.readouterr().out
  [argv] = export
  source, target = argv.index("--from") + 2, len(argv) - 1
  argv[source], argv[target] = run[0], str(tmp_path / argv[target])
  assert _run_cli(argv) == 0, argv
  assert os.path.isfile(tmp_path / argv[target] / "unet" / "diffusion_pytorch_model.safetensors")
