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
import os

# name -> "module:Class", imported lazily so one task's dependencies never
# slow down another's start-up.
TASKS = {
  "text_to_image": "jaxgen.tasks.image.text_to_image:TextToImageTask",
  "latent_diffusion": "jaxgen.tasks.image.latent_diffusion:LatentDiffusionTask",
  "sd_finetune": "jaxgen.tasks.image.sd_finetune:SDFinetuneTask",
  "autoencoder": "jaxgen.tasks.image.autoencoder:AutoencoderTask",
  "vqgan": "jaxgen.tasks.image.vqgan:VQGANTask",
  "clip": "jaxgen.tasks.image.clip:ClipTask",
  "dalle": "jaxgen.tasks.image.dalle:DalleTask",
  "maskgit": "jaxgen.tasks.image.maskgit:MaskGITTask",
  "damsm": "jaxgen.tasks.image.damsm:DAMSMTask",
  "stackgan": "jaxgen.tasks.image.stackgan:StackGANTask",
  "attngan": "jaxgen.tasks.image.attngan:AttnGANTask",
  "vq_diffusion": "jaxgen.tasks.image.vq_diffusion:VQDiffusionTask",
  "t2m_mdm": "jaxgen.tasks.motion.t2m_mdm:MotionDiffusionTask",
  "t2m_vq": "jaxgen.tasks.motion.t2m_vq:MotionVQTask",
  "t2m_gpt": "jaxgen.tasks.motion.t2m_gpt:MotionGPTTask",
  "t2m_vae": "jaxgen.tasks.motion.t2m_vae:MotionVAETask",
  "t2m_evaluator": "jaxgen.tasks.motion.t2m_evaluator:MotionEvaluatorTask",
  "edge": "jaxgen.tasks.dance.edge:EDGETask",
  "bailando_vq": "jaxgen.tasks.dance.bailando_vq:BailandoVQTask",
  "bailando_gpt": "jaxgen.tasks.dance.bailando_gpt:BailandoGPTTask",
  "cyclegan": "jaxgen.tasks.image_to_image.cyclegan:CycleGANTask",
  "pix2pix": "jaxgen.tasks.image_to_image.pix2pix:Pix2PixTask",
  "spade": "jaxgen.tasks.image_to_image.spade:SPADETask",
  "bbdm": "jaxgen.tasks.image_to_image.bbdm:BBDMTask",
  "controlnet": "jaxgen.tasks.image_to_image.controlnet:ControlNetTask",
  "palette": "jaxgen.tasks.image_to_image.palette:PaletteTask",
  "wav2lip_expert": "jaxgen.tasks.talking_face.wav2lip_expert:Wav2LipExpertTask",
  "wav2lip": "jaxgen.tasks.talking_face.wav2lip:Wav2LipTask",
  "difftalk": "jaxgen.tasks.talking_face.difftalk:DiffTalkTask",
  "text_to_video": "jaxgen.tasks.video.text_to_video:TextToVideoTask",
}

# Names that run directories written before the tasks were renamed still carry.
RENAMED = {"text_to_motion": "t2m_mdm", "motion_evaluator": "t2m_evaluator"}


class UnknownTaskError(ValueError):
  """A config names a task this registry does not know."""


class DependentRunError(ValueError):
  """A config key that names another run directory (e.g. `vq.workdir`) does not hold that run."""


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


def _get(config, key: str):
  *parents, leaf = key.split(".")
  for p in parents:
    config = config.get(p) if config is not None and p in config else None
  return config.get(leaf) if config is not None else None


def _set(config, key: str, value: str) -> None:
  *parents, leaf = key.split(".")
  for p in parents:
    config = config[p]
  config[leaf] = value


def _is_local_relative(path) -> bool:
  return isinstance(path, str) and bool(path) and "://" not in path and not os.path.isabs(path)


def absolute_dependent_runs(config, task_cls: type) -> None:
  """Makes the run directories named by `task_cls.dependent_runs` absolute (from the cwd), in place.

  Tasks call this when they are built, before the trainer writes config.json,
  so that a run can be sampled from any working directory.
  """
  for key in task_cls.dependent_runs:
    path = _get(config, key)
    if _is_local_relative(path):
      _set(config, key, os.path.abspath(path))


def resolve_dependent_runs(config, task_cls: type, run_dir: str) -> None:
  """Relative dependent runs of an older run directory, found from the cwd or beside the run.

  A run written before dependent runs were stored absolute names them relative
  to the directory it was trained from. If that path does not exist from the
  cwd, it is looked up relative to the run directory's parent, then that
  folder's parents (the usual `runs/<name>` layout trained from the folder
  above `runs/`). A path found nowhere is left as it is: loading it names the key.
  """
  for key in task_cls.dependent_runs:
    path = _get(config, key)
    if not _is_local_relative(path) or os.path.isdir(path):
      continue
    base = os.path.dirname(os.path.abspath(run_dir))
    while True:
      candidate = os.path.join(base, path)
      if os.path.isdir(candidate):
        logging.info("%s: %r found as %r (relative to %r)", key, path, candidate, base)
        _set(config, key, candidate)
        break
      if os.path.dirname(base) == base:
        break
      base = os.path.dirname(base)


def run_config(workdir: str):
  """A run directory's config, with the run directories it depends on resolved (see above)."""
  from jaxgen.training import inference  # pylint: disable=g-import-not-at-top  (JAX: lazily)

  config = inference.load_run_config(workdir)
  if "task" in config and task_name(config) in TASKS:
    resolve_dependent_runs(config, task_class(config), workdir)
  return config


def load_run(workdir: str, step: int | None = None):
  """(task, EMA params) of the newest readable checkpoint (or `step`) of a run directory."""
  from jaxgen.training import inference  # pylint: disable=g-import-not-at-top  (JAX: lazily)

  task = get_task(run_config(workdir))
  return task, inference.restore_ema_params(task, workdir, step)


def _registered_name(task_cls: type) -> str:
  return next(
    name for name, path in TASKS.items() if path == f"{task_cls.__module__}:{task_cls.__name__}"
  )


def load_run_of(
  task_cls: type,
  workdir: str,
  *,
  flag: str,
  step: int | None = None,
  error: type = DependentRunError,
):
  """(task, EMA params) of a run directory that must hold a run of `task_cls`.

  For the tasks that start from another task's run (a frozen autoencoder, a
  VQ tokenizer, the motion evaluator): a missing directory, one without
  config.json or checkpoints, or a run of any other task is `error`, naming
  `flag` (a config key or a command-line flag); old names of renamed tasks
  count as their new ones.
  """
  from jaxgen.training import inference  # pylint: disable=g-import-not-at-top  (JAX: lazily)
  from jaxgen.training.checkpoint import checkpoint_dir  # pylint: disable=g-import-not-at-top
  from jaxgen.training.run_directory import CONFIG_FILE  # pylint: disable=g-import-not-at-top

  expected = _registered_name(task_cls)
  article = "an" if expected[0] in "aeiou" else "a"
  wanted = f"{flag}: expected the directory of {article} {expected} run (written by `jaxgen train`)"
  if not isinstance(workdir, str) or not workdir:
    raise error(f"{wanted}, found {workdir!r}")
  if "://" not in workdir:  # local: name what is missing (remote paths fail when read)
    if not os.path.isdir(workdir):
      raise error(f"{wanted}, found no directory {workdir!r}")
    if not os.path.isfile(os.path.join(workdir, CONFIG_FILE)):
      raise error(f"{wanted}, found {workdir!r} without {CONFIG_FILE}")
  config = run_config(workdir)
  found = config.get("task")
  if RENAMED.get(found, found) != expected:
    raise error(f"{flag}: expected {article} {expected} run, found a {found!r} run in {workdir!r}")
  if "://" not in workdir and not os.path.isdir(checkpoint_dir(workdir)):
    raise error(f"{wanted}, found {workdir!r} without checkpoints (has it trained a step?)")
  task = task_cls(config)
  try:
    params = inference.restore_ema_params(task, workdir, step)
  except FileNotFoundError as e:  # no checkpoints/ yet, or none readable
    raise error(f"{wanted}, found {workdir!r} without a readable checkpoint: {e}") from e
  return task, params
