"""diffusers Stable Diffusion pipeline folders <-> jaxgen `StableDiffusion` bundles.

A folder in diffusers' layout (what `StableDiffusionPipeline.save_pretrained`
writes) holds:

  model_index.json                         component classes
  unet/config.json, diffusion_pytorch_model.safetensors
  vae/config.json, diffusion_pytorch_model.safetensors
  text_encoder/config.json, model.safetensors      (transformers CLIPTextModel)
  tokenizer/vocab.json, merges.txt, ...            (transformers CLIPTokenizer)
  scheduler/scheduler_config.json

Weights are read from safetensors only (pickled .bin files never), with
strict key checks (`ConversionError` lists missing and unexpected keys). The
safety checker and feature extractor are not part of the bundle: they are
written as absent, so diffusers loads the folder with
`safety_checker=None, requires_safety_checker=False`.

Schedulers map to jaxgen's `SchedulerConfig` (`scheduler_from_diffusers`):

  DDIMScheduler                    -> sampler "ddim"
  DDPMScheduler                    -> "ddpm" (variance_type "fixed_small")
  EulerDiscreteScheduler           -> "euler"
  DPMSolverMultistepScheduler      -> "dpm_solver_pp_2m" (dpmsolver++, order 2, midpoint),
                                      "dpm_solver_pp_2m_karras" with use_karras_sigmas
  PNDMScheduler                    -> "pndm" (PLMS: skip_prk_steps must be true)
  EulerAncestralDiscreteScheduler  -> "euler_ancestral"
  HeunDiscreteScheduler            -> "heun"
  LMSDiscreteScheduler             -> "lms"
  UniPCMultistepScheduler          -> "unipc" (bh2, order 2, predict_x0, corrector on)

and each sampler back to its class, so a folder round-trips to its own scheduler.

Options jaxgen does not implement are accepted only at the value that makes
them a no-op (e.g. thresholding=False); others raise `UnsupportedConfigError`.
Keys that are not options of the named scheduler class are ignored with a
warning, as diffusers ignores them.

Example (`stable_diffusion` is `jaxgen.pipelines.stable_diffusion`):
  sd = load_stable_diffusion("stable-diffusion-v1-5")
  images = stable_diffusion.sample(sd, ["a photo of a cat"], rng=jax.random.key(0))
  save_stable_diffusion(sd, "exported")  # StableDiffusionPipeline.from_pretrained("exported", ...)
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from jaxgen.convert import transformers_text
from jaxgen.convert.diffusers_unet import unet_from_diffusers, unet_to_diffusers
from jaxgen.convert.diffusers_vae import vae_from_diffusers, vae_to_diffusers
from jaxgen.diffusion.samplers import DEFAULT_SPACING
from jaxgen.errors import UnsupportedConfigError
from jaxgen.models.autoencoder import AutoencoderKLConfig
from jaxgen.models.unet_config import UNetConfig
from jaxgen.pipelines.stable_diffusion import SchedulerConfig, StableDiffusion
from jaxgen.pipelines.stable_diffusion_checkpoint import load_clip_tokenizer

PathLike = str | os.PathLike

MODEL_INDEX_NAME = "model_index.json"
DIFFUSERS_CONFIG_NAME = "config.json"
DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
PIPELINE_CLASSES = ("StableDiffusionPipeline",)
# diffusers version written into configs (the one these files were tested with).
DIFFUSERS_VERSION = "0.42.1"

_LOG = logging.getLogger(__name__)


class PipelineFolderError(FileNotFoundError, ValueError):
  """A pipeline folder lacks a component, a file, or names a class jaxgen cannot read."""


# ----------------------------------------------------------------------------
# Schedulers.

# Scheduler keys that map onto `SchedulerConfig` fields, per diffusers class.
_COMMON_KEYS = (
  "num_train_timesteps",
  "beta_start",
  "beta_end",
  "beta_schedule",
  "trained_betas",
  "prediction_type",
  "timestep_spacing",
  "steps_offset",
)
_SCHEDULER_KEYS: Mapping[str, tuple[str, ...]] = {
  "DDIMScheduler": _COMMON_KEYS + ("set_alpha_to_one", "clip_sample", "clip_sample_range"),
  "DDPMScheduler": _COMMON_KEYS + ("clip_sample", "clip_sample_range"),
  "PNDMScheduler": _COMMON_KEYS + ("set_alpha_to_one",),
  "EulerDiscreteScheduler": _COMMON_KEYS,
  "DPMSolverMultistepScheduler": _COMMON_KEYS,
  "EulerAncestralDiscreteScheduler": _COMMON_KEYS,
  "HeunDiscreteScheduler": _COMMON_KEYS,
  "LMSDiscreteScheduler": _COMMON_KEYS,
  "UniPCMultistepScheduler": _COMMON_KEYS,
}
_SAMPLER_OF_SCHEDULER: Mapping[str, str] = {
  "DDIMScheduler": "ddim",
  "DDPMScheduler": "ddpm",
  "PNDMScheduler": "pndm",
  "EulerDiscreteScheduler": "euler",
  "DPMSolverMultistepScheduler": "dpm_solver_pp_2m",
  "EulerAncestralDiscreteScheduler": "euler_ancestral",
  "HeunDiscreteScheduler": "heun",
  "LMSDiscreteScheduler": "lms",
  "UniPCMultistepScheduler": "unipc",
}
_SCHEDULER_OF_SAMPLER: Mapping[str, str] = {
  **{sampler: name for name, sampler in _SAMPLER_OF_SCHEDULER.items()},
  "dpm_solver_pp_2m_karras": "DPMSolverMultistepScheduler",
}
# Options that pick another sampler of the same class: (class, key) -> {value: sampler}.
_SAMPLER_OPTIONS: Mapping[tuple[str, str], Mapping[Any, str]] = {
  ("DPMSolverMultistepScheduler", "use_karras_sigmas"): {
    False: "dpm_solver_pp_2m",
    True: "dpm_solver_pp_2m_karras",
  }
}
# diffusers' defaults, where a key a config leaves out would select an unsupported option.
_UNSUPPORTED_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
  "PNDMScheduler": {"skip_prk_steps": False}
}
# diffusers' beta range where a class's default is not DDPM's 0.0001..0.02.
_BETA_DEFAULTS: Mapping[str, tuple[float, float]] = {"HeunDiscreteScheduler": (0.00085, 0.012)}
_NO_EXTRA_SIGMAS = {
  "use_karras_sigmas": False,
  "use_exponential_sigmas": False,
  "use_beta_sigmas": False,
}
_NO_THRESHOLDING = {"thresholding": False, "rescale_betas_zero_snr": False}
# Options accepted only at these values (each is a no-op there).
_FIXED_OPTIONS: Mapping[str, Mapping[str, Any]] = {
  "DDIMScheduler": _NO_THRESHOLDING,
  "DDPMScheduler": {**_NO_THRESHOLDING, "variance_type": "fixed_small"},
  # Runge-Kutta warm-up (PRK) is not implemented: PLMS from the first step, as Stable Diffusion.
  "PNDMScheduler": {"skip_prk_steps": True},
  "EulerAncestralDiscreteScheduler": {"rescale_betas_zero_snr": False},
  "HeunDiscreteScheduler": {**_NO_EXTRA_SIGMAS, "clip_sample": False},
  "LMSDiscreteScheduler": _NO_EXTRA_SIGMAS,
  "UniPCMultistepScheduler": {
    **_NO_THRESHOLDING,
    **_NO_EXTRA_SIGMAS,
    "solver_order": 2,
    "predict_x0": True,
    "solver_type": "bh2",
    "lower_order_final": True,
    "disable_corrector": [],
    "solver_p": None,
    "use_flow_sigmas": False,
    "final_sigmas_type": "zero",
    "use_dynamic_shifting": False,
  },
  "EulerDiscreteScheduler": {
    "rescale_betas_zero_snr": False,
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "sigma_min": None,
    "sigma_max": None,
    "timestep_type": "discrete",
    "final_sigmas_type": "zero",
  },
  "DPMSolverMultistepScheduler": {
    **_NO_THRESHOLDING,
    "solver_order": 2,
    "algorithm_type": "dpmsolver++",
    "solver_type": "midpoint",
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_lu_lambdas": False,
    "use_flow_sigmas": False,
    "use_dynamic_shifting": False,
    "final_sigmas_type": "zero",
    "variance_type": None,
    "lambda_min_clipped": -math.inf,
  },
}
# Options with no effect on what jaxgen computes, given the fixed options above:
# thresholding parameters (thresholding is off), clipping ranges (clipping is
# off), DPM-Solver's final-step order (the last step to sigma = 0 is always
# first order), flow-matching shifts (flow sigmas are off) and sigma bounds of
# Karras-style sigmas (off for UniPC).
_IGNORED_OPTIONS: Mapping[str, tuple[str, ...]] = {
  "DDIMScheduler": ("dynamic_thresholding_ratio", "sample_max_value"),
  "DDPMScheduler": ("dynamic_thresholding_ratio", "sample_max_value"),
  "PNDMScheduler": (),
  "EulerAncestralDiscreteScheduler": (),
  "HeunDiscreteScheduler": ("clip_sample_range",),
  "LMSDiscreteScheduler": (),
  "UniPCMultistepScheduler": (
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "flow_shift",
    "time_shift_type",
    "sigma_min",
    "sigma_max",
    "shift_terminal",
  ),
  "EulerDiscreteScheduler": (),
  "DPMSolverMultistepScheduler": (
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "lower_order_final",
    "euler_at_final",
    "flow_shift",
    "time_shift_type",
  ),
}


def scheduler_from_diffusers(config: Mapping[str, Any]) -> SchedulerConfig:
  """A diffusers `scheduler_config.json` dict (with `_class_name`) -> SchedulerConfig."""
  class_name = config.get("_class_name")
  if class_name not in _SAMPLER_OF_SCHEDULER:
    raise UnsupportedConfigError(
      f"scheduler _class_name: expected one of {sorted(_SAMPLER_OF_SCHEDULER)}, "
      f"found {class_name!r}"
    )
  mapped, fixed, ignored = (
    _SCHEDULER_KEYS[class_name],
    _FIXED_OPTIONS[class_name],
    _IGNORED_OPTIONS[class_name],
  )
  kwargs, problems, foreign = {"sampler": _SAMPLER_OF_SCHEDULER[class_name]}, [], []
  for key, value in {**_UNSUPPORTED_DEFAULTS.get(class_name, {}), **config}.items():
    if key.startswith("_") or key in ignored:
      continue
    choices = _SAMPLER_OPTIONS.get((class_name, key))
    if choices is not None:
      if isinstance(value, bool) and value in choices:
        kwargs["sampler"] = choices[value]
      else:
        problems.append(f"{key}={value!r} (only {sorted(choices)} are supported)")
    elif key in mapped:
      kwargs[key] = value
    elif key in fixed:
      if value != fixed[key]:
        problems.append(f"{key}={value!r} (only {fixed[key]!r} is supported)")
    else:
      foreign.append(key)
  if problems:
    raise UnsupportedConfigError(f"unsupported {class_name} config options: " + "; ".join(problems))
  if foreign:
    # Released configs carry other schedulers' keys (SD 2.1's DDIM config has
    # skip_prk_steps, SD 1.5's PNDM config clip_sample); diffusers ignores them too.
    _LOG.warning("%s config: ignoring keys that are not its options: %s", class_name, foreign)
  # diffusers' defaults for keys a config leaves out (not SchedulerConfig's SD defaults).
  beta_start, beta_end = _BETA_DEFAULTS.get(class_name, (0.0001, 0.02))
  defaults = {
    "num_train_timesteps": 1000,
    "beta_start": beta_start,
    "beta_end": beta_end,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "steps_offset": 0,
    "timestep_spacing": DEFAULT_SPACING[kwargs["sampler"]],
    "set_alpha_to_one": class_name == "DDIMScheduler",
    "clip_sample": class_name in ("DDIMScheduler", "DDPMScheduler"),
  }
  return SchedulerConfig(**{**defaults, **kwargs})


def scheduler_to_diffusers(config: SchedulerConfig) -> dict[str, Any]:
  """SchedulerConfig -> `scheduler_config.json` dict of the diffusers scheduler of its sampler."""
  class_name = _SCHEDULER_OF_SAMPLER[config.sampler]
  values = config.to_dict()
  result = {"_class_name": class_name, "_diffusers_version": DIFFUSERS_VERSION}
  result.update({key: values[key] for key in _SCHEDULER_KEYS[class_name]})
  result.update(_FIXED_OPTIONS[class_name])
  for (option_class, key), choices in _SAMPLER_OPTIONS.items():
    if option_class == class_name:
      result[key] = next(value for value, sampler in choices.items() if sampler == config.sampler)
  if class_name == "DPMSolverMultistepScheduler":
    del result["lambda_min_clipped"]  # -inf is not JSON; diffusers' default is -inf.
  return result


# ----------------------------------------------------------------------------
# Folders.


def require_path(path: str, what: str) -> str:
  """`path`, or a PipelineFolderError naming `what` is missing there."""
  if not os.path.exists(path):
    raise PipelineFolderError(f"folder: expected {what} at {path}, found nothing")
  return path


def read_json(path: str, what: str) -> dict[str, Any]:
  with open(require_path(path, what)) as f:
    return json.load(f)


def _read_safetensors(path: str) -> dict[str, Any]:
  """Every tensor of one safetensors file as host numpy (bfloat16 through the flax backend)."""
  import jax  # Imported here: only folder I/O needs it.
  import numpy as np
  from safetensors import safe_open

  state = {}
  cpu = jax.local_devices(backend="cpu")[0]
  with jax.default_device(cpu), safe_open(path, framework="flax") as f:
    for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
      state[key] = np.asarray(f.get_tensor(key))
  return state


def _check_model_index(
  folder: str, pipeline_classes: tuple[str, ...] = PIPELINE_CLASSES
) -> dict[str, Any]:
  index = read_json(
    os.path.join(folder, MODEL_INDEX_NAME), f"a diffusers pipeline's {MODEL_INDEX_NAME}"
  )
  if index.get("_class_name") not in pipeline_classes:
    raise PipelineFolderError(
      f"{MODEL_INDEX_NAME}: expected _class_name in {pipeline_classes}, "
      f"found {index.get('_class_name')!r}"
    )
  for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
    entry = index.get(component)
    if not entry or entry[1] is None:
      raise PipelineFolderError(
        f"{MODEL_INDEX_NAME}: expected a {component} component, found {entry!r}"
      )
  for component, classes in (
    ("text_encoder", ("CLIPTextModel",)),
    ("tokenizer", ("CLIPTokenizer", "CLIPTokenizerFast")),
  ):
    if index[component][1] not in classes:
      raise PipelineFolderError(
        f"{MODEL_INDEX_NAME}: {component}: expected one of {classes}, found {index[component][1]!r}"
      )
  return index


def load_stable_diffusion(
  folder: PathLike, pipeline_classes: tuple[str, ...] = PIPELINE_CLASSES
) -> StableDiffusion:
  """Reads a local diffusers `StableDiffusionPipeline` folder into a bundle (never downloads).

  pipeline_classes: the model index classes accepted (a ControlNet pipeline
  folder reads its SD components here; `jaxgen.convert.diffusers_controlnet`).
  """
  folder = os.fspath(folder)
  _check_model_index(folder, pipeline_classes)
  unet_dir, vae_dir = os.path.join(folder, "unet"), os.path.join(folder, "vae")
  unet_config, vae_config, scheduler = read_unet_vae_scheduler_configs(folder, unet_dir, vae_dir)
  text_config, text_params = transformers_text.load_clip_text_model(
    require_path(os.path.join(folder, "text_encoder"), "the text_encoder folder")
  )
  params = {
    **read_unet_vae_params(unet_dir, vae_dir, unet_config, vae_config),
    "text_encoder": text_params,
  }
  tokenizer = load_clip_tokenizer(
    require_path(os.path.join(folder, "tokenizer"), "the tokenizer folder")
  )
  _LOG.info(
    "loaded a Stable Diffusion pipeline from %s (scheduler -> %s)", folder, scheduler.sampler
  )
  return StableDiffusion(unet_config, vae_config, text_config, scheduler, params, tokenizer)


def read_unet_vae_scheduler_configs(
  folder: str, unet_dir: str, vae_dir: str
) -> tuple[UNetConfig, AutoencoderKLConfig, SchedulerConfig]:
  """The U-Net, VAE and scheduler configs of a pipeline folder (SD and SDXL alike)."""
  unet_config = UNetConfig.from_diffusers(
    read_json(os.path.join(unet_dir, DIFFUSERS_CONFIG_NAME), "the U-Net config")
  )
  vae_config = AutoencoderKLConfig.from_diffusers(
    read_json(os.path.join(vae_dir, DIFFUSERS_CONFIG_NAME), "the VAE config")
  )
  scheduler = scheduler_from_diffusers(
    read_json(os.path.join(folder, "scheduler", SCHEDULER_CONFIG_NAME), "the scheduler config")
  )
  return unet_config, vae_config, scheduler


def read_unet_vae_params(
  unet_dir: str, vae_dir: str, unet_config: UNetConfig, vae_config: AutoencoderKLConfig
) -> dict[str, Any]:
  """{"unet": ..., "vae": ...} params from the folders' safetensors, keys checked strictly."""
  return {
    "unet": unet_from_diffusers(read_diffusers_weights(unet_dir), unet_config),
    "vae": vae_from_diffusers(read_diffusers_weights(vae_dir), vae_config),
  }


def read_diffusers_weights(folder: str) -> dict[str, Any]:
  """The safetensors weights of one diffusers model folder (pickled .bin is refused by name)."""
  path = os.path.join(folder, DIFFUSERS_WEIGHTS_NAME)
  if not os.path.isfile(path):
    raise PipelineFolderError(
      f"folder: expected {DIFFUSERS_WEIGHTS_NAME} in {folder} (pickled .bin weights are not read; "
      "re-save the pipeline with safe_serialization=True)"
    )
  return _read_safetensors(path)


def write_diffusers_model(
  state: Mapping[str, Any], config: Mapping[str, Any], class_name: str, folder: str
) -> None:
  """One diffusers model folder: config.json naming `class_name`, and its safetensors weights."""
  from safetensors.numpy import save_file  # Imported here: only folder I/O needs it.

  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, DIFFUSERS_CONFIG_NAME), "w") as f:
    json.dump(
      {"_class_name": class_name, "_diffusers_version": DIFFUSERS_VERSION, **config}, f, indent=2
    )
  save_file(dict(state), os.path.join(folder, DIFFUSERS_WEIGHTS_NAME), metadata={"format": "pt"})


def save_stable_diffusion(sd: StableDiffusion, folder: PathLike) -> None:
  """Writes `sd` as a diffusers folder: `StableDiffusionPipeline.from_pretrained` loads it strictly.

  Load it with `from_pretrained(folder, safety_checker=None, requires_safety_checker=False)`;
  the scheduler is the diffusers class of `sd.scheduler.sampler`.
  """
  folder = os.fspath(folder)
  write_pipeline_folder(
    sd,
    folder,
    "StableDiffusionPipeline",
    {
      "feature_extractor": [None, None],
      "image_encoder": [None, None],
      "requires_safety_checker": False,
      "safety_checker": [None, None],
      "text_encoder": ["transformers", "CLIPTextModel"],
      "tokenizer": ["transformers", "CLIPTokenizer"],
    },
    {
      "text_encoder": lambda path: transformers_text.save_clip_text_folder(
        sd.params["text_encoder"], sd.text_config, path
      ),
      "tokenizer": sd.tokenizer.save_pretrained,
    },
  )
  _LOG.info("wrote a diffusers Stable Diffusion pipeline to %s", folder)


def write_pipeline_folder(
  bundle: Any,
  folder: str,
  pipeline_class: str,
  index_entries: Mapping[str, Any],
  writers: Mapping[str, Callable[[str], Any]],
) -> None:
  """Writes what every SD-family diffusers folder holds, then the bundle's own components.

  model_index.json (`pipeline_class`, `index_entries` and the scheduler, U-Net
  and VAE entries, keys sorted as diffusers writes them), unet/ and vae/ from
  `bundle`'s configs and params, then each `writers` entry (subfolder -> a
  function writing it there, in order), then scheduler/.
  """
  os.makedirs(folder, exist_ok=True)
  scheduler = scheduler_to_diffusers(bundle.scheduler)
  index = {
    "_class_name": pipeline_class,
    "_diffusers_version": DIFFUSERS_VERSION,
    **index_entries,
    "scheduler": ["diffusers", scheduler["_class_name"]],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
  }
  with open(os.path.join(folder, MODEL_INDEX_NAME), "w") as f:
    json.dump(index, f, indent=2, sort_keys=True)
  write_diffusers_model(
    unet_to_diffusers(bundle.params["unet"]),
    bundle.unet_config.to_diffusers(),
    "UNet2DConditionModel",
    os.path.join(folder, "unet"),
  )
  write_diffusers_model(
    vae_to_diffusers(bundle.params["vae"]),
    bundle.vae_config.to_diffusers(),
    "AutoencoderKL",
    os.path.join(folder, "vae"),
  )
  for name, write in writers.items():
    write(os.path.join(folder, name))
  os.makedirs(os.path.join(folder, "scheduler"), exist_ok=True)
  with open(os.path.join(folder, "scheduler", SCHEDULER_CONFIG_NAME), "w") as f:
    json.dump(scheduler, f, indent=2)
