"""Task names -> task classes, for the command line and for loading run directories.

The trainer never looks a task up: it is handed a task object. A run
directory's `config.json` names its task (`config.task`), which is all
`jaxgen sample` needs. One name per task everywhere: this table, the module
(`jaxgen/tasks/<modality>/<name>.py`) and the config files
(`configs/<name>_<dataset>.py`).
"""

from __future__ import annotations

import importlib
import logging

# name -> "module:Class", imported lazily so one task's dependencies never
# slow down another's start-up.
TASKS = {
  "text_to_image": "jaxgen.tasks.image.text_to_image:TextToImageTask",
  "latent_diffusion": "jaxgen.tasks.image.latent_diffusion:LatentDiffusionTask",
  "autoencoder": "jaxgen.tasks.image.autoencoder:AutoencoderTask",
  "t2m_mdm": "jaxgen.tasks.motion.t2m_mdm:MotionDiffusionTask",
  "t2m_vq": "jaxgen.tasks.motion.t2m_vq:MotionVQTask",
  "t2m_gpt": "jaxgen.tasks.motion.t2m_gpt:MotionGPTTask",
  "t2m_vae": "jaxgen.tasks.motion.t2m_vae:MotionVAETask",
  "t2m_evaluator": "jaxgen.tasks.motion.t2m_evaluator:MotionEvaluatorTask",
}

# Names that run directories written before the tasks were renamed still carry.
RENAMED = {"text_to_motion": "t2m_mdm", "motion_evaluator": "t2m_evaluator"}


class UnknownTaskError(ValueError):
  """A config names a task this registry does not know."""


def task_name(config) -> str:
  """The registered name of `config.task` (old names of renamed tasks are accepted)."""
  if "task" not in config:
    raise UnknownTaskError(
      f"config has no `task` field (fields: {sorted(config.keys())}); "
      f"expected one of {sorted(TASKS)}"
    )
  name = config.task
  if name in RENAMED:
    logging.info("task %r is now called %r", name, RENAMED[name])
    name = RENAMED[name]
  if name not in TASKS:
    raise UnknownTaskError(f"config.task must be one of {sorted(TASKS)}, got {name!r}")
  return name


def task_class(config) -> type:
  """The class of the task `config` names, without building it."""
  module, cls = TASKS[task_name(config)].split(":")
  return getattr(importlib.import_module(module), cls)


def get_task(config):
  """Builds the task named by `config.task`."""
  return task_class(config)(config)


def load_run(workdir: str, step: int | None = None):
  """(task, EMA params) of the newest readable checkpoint (or `step`) of a run directory."""
  from jaxgen.training import inference  # pylint: disable=g-import-not-at-top  (JAX: lazily)

  config = inference.load_run_config(workdir)
  task = get_task(config)
  return task, inference.restore_ema_params(task, workdir, step)


def load_run_of(
  task_cls: type, workdir: str, *, flag: str, step: int | None = None, error: type = ValueError
):
  """(task, EMA params) of a run directory that must hold a run of `task_cls`.

  For the tasks that start from another task's run (a frozen autoencoder, a
  VQ tokenizer, the motion evaluator): a run of any other task is `error`,
  naming `flag`; old names of renamed tasks count as their new ones.
  """
  from jaxgen.training import inference  # pylint: disable=g-import-not-at-top  (JAX: lazily)

  config = inference.load_run_config(workdir)
  expected = next(
    name for name, path in TASKS.items() if path == f"{task_cls.__module__}:{task_cls.__name__}"
  )
  found = config.get("task")
  if RENAMED.get(found, found) != expected:
    article = "an" if expected[0] in "aeiou" else "a"
    raise error(f"{flag}: expected {article} {expected} run, found a {found!r} run in {workdir!r}")
  task = task_cls(config)
  return task, inference.restore_ema_params(task, workdir, step)
