"""Stable Diffusion folders in and out, and text-to-image sampling, against diffusers.

A tiny random-weight `StableDiffusionPipeline` (with an offline CLIP BPE
tokenizer) is built and saved by diffusers; jaxgen loads it, samples the same
image from the same latents, writes it back, and diffusers reloads it.
"""

import argparse
import json
import os
import shutil

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from tiny_diffusers import (
  save_sd_pipeline,
  sd15_ddim_scheduler,
  tiny_text_config,
  tiny_tokenizer,
  tiny_vae,
)

from jaxgen.cli import convert as cli_convert
from jaxgen.convert import diffusers_pipeline
from jaxgen.convert.keymap import ConversionError
from jaxgen.errors import UnsupportedConfigError
from jaxgen.pipelines import stable_diffusion, stable_diffusion_checkpoint

PROMPTS = ["a cat", "dog on a mat"]
NUM_STEPS = 5
GUIDANCE = 7.5
HEIGHT = WIDTH = 16  # Latents 8x8: the tiny VAE downsamples by 2.


def _tiny_pipeline(folder: str, scheduler) -> str:
  torch.manual_seed(0)
  tokenizer = tiny_tokenizer(os.path.join(folder, "_tokenizer_src"), max_length=12)
  text_encoder = transformers.CLIPTextModel(tiny_text_config(tokenizer))
  unet = diffusers.UNet2DConditionModel(
    sample_size=8,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=2,
    norm_num_groups=16,
  )
  return save_sd_pipeline(
    folder,
    vae=tiny_vae(),
    text_encoder=text_encoder,
    tokenizer=tokenizer,
    unet=unet,
    scheduler=scheduler,
  )


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
  return _tiny_pipeline(str(tmp_path_factory.mktemp("sd")), sd15_ddim_scheduler())


@pytest.fixture(scope="module")
def latents():
  return np.random.default_rng(0).standard_normal((len(PROMPTS), 8, 8, 4)).astype(np.float32)


def _diffusers_images(
  folder: str, latents: np.ndarray, scheduler: str | None = None, **scheduler_options
) -> np.ndarray:
  pipe = diffusers.StableDiffusionPipeline.from_pretrained(
    folder, safety_checker=None, requires_safety_checker=False
  )
  if scheduler is not None:  # Same betas and spacing, another solver.
    pipe.scheduler = getattr(diffusers, scheduler).from_config(
      pipe.scheduler.config, **scheduler_options
    )
  pipe.set_progress_bar_config(disable=True)
  with torch.no_grad():
    return pipe(
      prompt=PROMPTS,
      num_inference_steps=NUM_STEPS,
      guidance_scale=GUIDANCE,
      height=HEIGHT,
      width=WIDTH,
      latents=torch.from_numpy(latents.transpose(0, 3, 1, 2).copy()),
      output_type="np",
    ).images


def _check_strict_reload(folder: str) -> None:
  """Every model of the folder loads with no missing or unexpected keys."""
  for cls, sub in (
    (diffusers.UNet2DConditionModel, "unet"),
    (diffusers.AutoencoderKL, "vae"),
    (transformers.CLIPTextModel, "text_encoder"),
  ):
    _, info = cls.from_pretrained(folder, subfolder=sub, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], (sub, info)


def test_text_to_image_matches_diffusers_and_round_trips(tiny_folder, latents, tmp_path):
  reference = _diffusers_images(tiny_folder, latents)
  sd = diffusers_pipeline.load_stable_diffusion(tiny_folder)
  assert sd.scheduler == stable_diffusion.SchedulerConfig(
    sampler="ddim",
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    steps_offset=1,
    set_alpha_to_one=False,
    clip_sample=False,
  )
  images = np.asarray(
    stable_diffusion.sample(sd, PROMPTS, latents, num_steps=NUM_STEPS, guidance_scale=GUIDANCE)
  )
  assert images.shape == reference.shape == (2, HEIGHT, WIDTH, 3)
  assert (
    reference.std() > 0.01 and np.abs(reference[0] - reference[1]).max() > 1e-3
  )  # Not degenerate.
  np.testing.assert_allclose(images, reference, atol=1e-4)
  # Guidance matters: the conditional model alone gives another image.
  unguided = np.asarray(
    stable_diffusion.sample(sd, PROMPTS, latents, num_steps=NUM_STEPS, guidance_scale=1.0)
  )
  assert np.abs(unguided - images).max() > 1e-3

  exported = str(tmp_path / "exported")
  diffusers_pipeline.save_stable_diffusion(sd, exported)
  _check_strict_reload(exported)
  np.testing.assert_allclose(_diffusers_images(exported, latents), reference, atol=1e-5)
  with open(os.path.join(exported, "scheduler", "scheduler_config.json")) as f:
    assert json.load(f)["steps_offset"] == 1


# scheduler/scheduler_config.json of Stable Diffusion 1.5 (PLMS), with its keys of other schedulers.
SD15_SCHEDULER_CONFIG = {
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.6.0",
  "beta_start": 0.00085,
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "num_train_timesteps": 1000,
  "set_alpha_to_one": False,
  "skip_prk_steps": True,
  "steps_offset": 1,
  "trained_betas": None,
  "clip_sample": False,
}


@pytest.fixture(scope="module")
def pndm_folder(tiny_folder, tmp_path_factory):
  """The tiny pipeline with SD 1.5's shipped scheduler."""
  folder = str(tmp_path_factory.mktemp("sd15") / "pipeline")
  shutil.copytree(tiny_folder, folder)
  with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
    json.dump(SD15_SCHEDULER_CONFIG, f)
  with open(os.path.join(folder, "model_index.json")) as f:
    index = json.load(f)
  index["scheduler"] = ["diffusers", "PNDMScheduler"]
  with open(os.path.join(folder, "model_index.json"), "w") as f:
    json.dump(index, f)
  return folder


@pytest.mark.parametrize(
  ("sampler", "scheduler", "options"),
  [
    ("euler", "EulerDiscreteScheduler", {}),
    ("dpm_solver_pp_2m", "DPMSolverMultistepScheduler", {}),
    ("dpm_solver_pp_2m_karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("pndm", None, {}),  # The folder's own scheduler: SD 1.5's PNDM.
  ],
)
def test_other_samplers_match_diffusers_schedulers(
  tiny_folder, pndm_folder, latents, sampler, scheduler, options
):
  # Euler starts from latents * init_noise_sigma (sqrt(sigma_max^2 + 1), 'leading'), in both.
  folder = pndm_folder if scheduler is None else tiny_folder
  sd = diffusers_pipeline.load_stable_diffusion(folder)
  images = stable_diffusion.sample(
    sd,
    PROMPTS,
    latents,
    num_steps=NUM_STEPS,
    guidance_scale=GUIDANCE,
    sampler=None if scheduler is None else sampler,
  )
  assert sd.scheduler.sampler == ("pndm" if scheduler is None else "ddim")
  np.testing.assert_allclose(
    np.asarray(images), _diffusers_images(folder, latents, scheduler, **options), atol=1e-4
  )


def test_convert_cli_round_trip_is_bit_identical(tiny_folder, tmp_path):
  parser = argparse.ArgumentParser()
  cli_convert.add_arguments(parser)
  ckpt, back = str(tmp_path / "ckpt"), str(tmp_path / "back")
  cli_convert.run_convert(parser.parse_args(["--from", "diffusers", tiny_folder, "--to", ckpt]))
  cli_convert.run_convert(parser.parse_args(["--from", "jaxgen", ckpt, "--to", "diffusers", back]))
  for sub, name in (
    ("unet", "diffusion_pytorch_model.safetensors"),
    ("vae", "diffusion_pytorch_model.safetensors"),
    ("text_encoder", "model.safetensors"),
  ):
    original, written = (
      safetensors_numpy.load_file(os.path.join(tiny_folder, sub, name)),
      safetensors_numpy.load_file(os.path.join(back, sub, name)),
    )
    original.pop("text_model.embeddings.position_ids", None)
    original = {
      k.removeprefix("text_model.") if sub == "text_encoder" else k: v for k, v in original.items()
    }
    written = {
      k.removeprefix("text_model.") if sub == "text_encoder" else k: v for k, v in written.items()
    }
    assert sorted(original) == sorted(written), sub
    for key in original:
      np.testing.assert_array_equal(original[key], written[key], err_msg=key)
  sd = stable_diffusion_checkpoint.load_checkpoint(ckpt)
  assert (
    sd.tokenizer("a cat")["input_ids"]
    == diffusers_pipeline.load_stable_diffusion(back).tokenizer("a cat")["input_ids"]
  )
  with pytest.raises(ValueError, match="already exists"):
    cli_convert.run_convert(parser.parse_args(["--from", "diffusers", tiny_folder, "--to", ckpt]))


@pytest.mark.parametrize(
  ("scheduler", "options", "sampler"),
  [
    ("EulerDiscreteScheduler", {}, "euler"),
    ("DPMSolverMultistepScheduler", {}, "dpm_solver_pp_2m"),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "dpm_solver_pp_2m_karras"),
    ("PNDMScheduler", {"skip_prk_steps": True}, "pndm"),
    ("EulerAncestralDiscreteScheduler", {}, "euler_ancestral"),
    ("HeunDiscreteScheduler", {}, "heun"),
    ("LMSDiscreteScheduler", {}, "lms"),
    ("UniPCMultistepScheduler", {}, "unipc"),
  ],
)
def test_scheduler_configs_map_to_jaxgen(scheduler, options, sampler):
  config = dict(
    getattr(diffusers, scheduler)(
      beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, **options
    ).config
  )
  config = {"_class_name": scheduler, **{k: v for k, v in config.items() if not k.startswith("_")}}
  ours = diffusers_pipeline.scheduler_from_diffusers(config)
  assert ours.sampler == sampler
  assert (ours.beta_schedule, ours.beta_start, ours.beta_end, ours.steps_offset) == (
    "scaled_linear",
    0.00085,
    0.012,
    1,
  )
  # Written back as the same class with the same options.
  written = diffusers_pipeline.scheduler_to_diffusers(ours)
  assert written["_class_name"] == scheduler
  assert diffusers_pipeline.scheduler_from_diffusers(written) == ours
  reloaded = getattr(diffusers, scheduler).from_config(written)
  for key, value in written.items():
    if not key.startswith("_"):
      assert reloaded.config[key] == value, key
  # The timesteps jaxgen samples at are diffusers' (PLMS repeats one, Heun all but the first).
  reloaded.set_timesteps(7)
  np.testing.assert_allclose(np.asarray(ours.plan(7).table.timestep), reloaded.timesteps.numpy())


def test_released_scheduler_configs():
  # scheduler_config.json of Stable Diffusion 1.5 (PNDM) and 2.1 (DDIM, v-prediction), with their
  # keys that belong to other schedulers (clip_sample, skip_prk_steps).
  common = {k: v for k, v in SD15_SCHEDULER_CONFIG.items() if not k.startswith("_")}
  sd15 = diffusers_pipeline.scheduler_from_diffusers(SD15_SCHEDULER_CONFIG)
  sd21 = diffusers_pipeline.scheduler_from_diffusers(
    {
      "_class_name": "DDIMScheduler",
      "_diffusers_version": "0.8.0",
      **common,
      "prediction_type": "v_prediction",
    }
  )
  # jaxgen's default is SD 1.x's schedule with DDIM; SD 1.5 folders sample with their PLMS.
  assert sd15 == stable_diffusion.SchedulerConfig(sampler="pndm")
  assert sd21 == stable_diffusion.SchedulerConfig(prediction_type="v_prediction")
  # A class's own diffusers defaults fill the keys a config leaves out (Heun's betas are SD's).
  heun = diffusers_pipeline.scheduler_from_diffusers({"_class_name": "HeunDiscreteScheduler"})
  assert (heun.beta_start, heun.beta_end, heun.timestep_spacing) == (0.00085, 0.012, "linspace")


def test_named_errors(tiny_folder, tmp_path):
  with pytest.raises(UnsupportedConfigError, match="thresholding"):
    diffusers_pipeline.scheduler_from_diffusers(
      {"_class_name": "DDIMScheduler", "thresholding": True}
    )
  with pytest.raises(UnsupportedConfigError, match="_class_name"):
    diffusers_pipeline.scheduler_from_diffusers({"_class_name": "KDPM2DiscreteScheduler"})
  # PNDM's Runge-Kutta warm-up (its default) is not implemented: named, not replaced by PLMS.
  with pytest.raises(UnsupportedConfigError, match="skip_prk_steps"):
    diffusers_pipeline.scheduler_from_diffusers({"_class_name": "PNDMScheduler"})
  with pytest.raises(UnsupportedConfigError, match="solver_order=3"):
    diffusers_pipeline.scheduler_from_diffusers(
      {"_class_name": "UniPCMultistepScheduler", "solver_order": 3}
    )
  with pytest.raises(UnsupportedConfigError, match="use_karras_sigmas"):
    diffusers_pipeline.scheduler_from_diffusers(
      {"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True}
    )
  with pytest.raises(cli_convert.ConvertUsageError, match="--to"):
    parser = argparse.ArgumentParser()
    cli_convert.add_arguments(parser)
    cli_convert.run_convert(
      parser.parse_args(["--from", "diffusers", tiny_folder, "--to", "diffusers", str(tmp_path)])
    )
  with pytest.raises(diffusers_pipeline.PipelineFolderError, match="model_index.json"):
    diffusers_pipeline.load_stable_diffusion(str(tmp_path))
  # A folder with one U-Net tensor missing and one unknown: both are named.
  broken = str(tmp_path / "broken")
  shutil.copytree(tiny_folder, broken)
  weights = os.path.join(broken, "unet", "diffusion_pytorch_model.safetensors")
  state = safetensors_numpy.load_file(weights)
  state["extra.weight"] = state.pop("conv_in.weight")
  safetensors_numpy.save_file(state, weights)
  with pytest.raises(
    ConversionError, match=r"(?s)missing torch keys.*conv_in\.weight.*unexpected.*extra\.weight"
  ):
    diffusers_pipeline.load_stable_diffusion(broken)
  state["conv_in.weight"] = state.pop("extra.weight")
  safetensors_numpy.save_file(state, weights)
  os.remove(os.path.join(broken, "vae", "diffusion_pytorch_model.safetensors"))
  with pytest.raises(
    diffusers_pipeline.PipelineFolderError, match="diffusion_pytorch_model.safetensors"
  ):
    diffusers_pipeline.load_stable_diffusion(broken)
  sd = diffusers_pipeline.load_stable_diffusion(tiny_folder)
  with pytest.raises(ValueError, match="latents"):
    stable_diffusion.sample(sd, PROMPTS, np.zeros((1, 8, 8, 4), np.float32))
  with pytest.raises(ValueError, match="negative_prompts"):
    stable_diffusion.sample(sd, PROMPTS, rng=jax.random.key(0), negative_prompts=["x"])
