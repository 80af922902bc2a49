"""Task names used in configs -> task classes."""

from __future__ import annotations

import importlib

# name -> "module:Class", imported lazily so one task's dependencies never
# slow down another's start-up.
_TASKS = {
    "text_to_image": "jaxgen.tasks.text_to_image:TextToImageTask",
    "text_to_motion": "jaxgen.tasks.text_to_motion:TextToMotionTask",
    "t2m_vq": "jaxgen.tasks.motion_tokens:MotionVQTask",
    "t2m_gpt": "jaxgen.tasks.motion_tokens:MotionGPTTask",
    "t2m_vae": "jaxgen.tasks.motion_vae:MotionVAETask",
    "motion_evaluator": "jaxgen.tasks.motion_evaluator:MotionEvaluatorTask",
    "autoencoder": "jaxgen.tasks.autoencoder:AutoencoderTask",
    "latent_diffusion": "jaxgen.tasks.latent_diffusion:LatentDiffusionTask",
}


def get_task(config):
  """Builds the task named by `config.task`."""
  name = config.task
  if name not in _TASKS:
    raise ValueError(f"config.task must be one of {sorted(_TASKS)}, got {name!r}")
  module, cls = _TASKS[name].split(":")
  return getattr(importlib.import_module(module), cls)(config)
