"""Careless and hostile inputs, one table row each (issue 22): a named error, a warning or a fix.

Each `Case` is either `jaxgen` argv (run in-process through `jaxgen.cli.main`)
or a callable. Strings in the argv and the expected fragment may name
fixtures of this module in braces (`{image_run}`, `{tmp}`); a callable names
them as its parameters. Only the fixtures a row names are built. The run
directories hold a config.json and no checkpoint: every row must fail before
the weights are read, let alone compiled, and nothing here trains.

A new case is one row: argv or a callable, the exit code or exception
expected, and a fragment of the message (or of what the callable returns).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import inspect
import math
import os
import string
import subprocess
import sys
from collections.abc import Callable

import pytest

import jaxgen.cli
from jaxgen.cli.errors import UsageError
from jaxgen.tasks import registry
from tiny_configs import TINY, TINY_TEXT_TO_IMAGE, tiny_config

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CONFIGS = os.path.join(REPO, "configs")
SEED_RANGE_TEXT = f"0 .. {2**32 - 1}"


@dataclasses.dataclass(frozen=True)
class Case:
  """One adversarial input.

  Attributes:
    id: the test id.
    run: `jaxgen` argv (strings formatted with fixtures), or a callable whose
      parameters are fixtures; it returns a string to search.
    expect: the exit code of `jaxgen` (argv), or the exception the callable
      raises (None: it returns).
    fragment: formatted with fixtures; must appear in stderr + stdout, in the
      exception's message, or in what the callable returned.
  """

  id: str
  run: tuple[str, ...] | Callable[..., str]
  expect: int | type[BaseException] | None
  fragment: str


# -- fixtures: run directories that hold only a config.json ---------------------


def _config_only_run(path, config) -> str:
  """A run directory with config.json and no checkpoint: sampling must fail before restoring."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  return str(path)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> str:
  """A scratch folder holding a plain file `afile` and an empty folder `adir`."""
  path = tmp_path_factory.mktemp("adversarial")
  (path / "afile").write_text("not a directory\n")
  (path / "adir").mkdir()
  return str(path)


@pytest.fixture(scope="module")
def image_run(tmp) -> str:
  return _config_only_run(os.path.join(tmp, "image_run"), tiny_config("text_to_image_shapes.py"))


@pytest.fixture(scope="module")
def motion_run(tmp) -> str:
  return _config_only_run(os.path.join(tmp, "motion_run"), tiny_config("t2m_mdm_synthetic.py"))


@pytest.fixture(scope="module")
def autoencoder_run(tmp) -> str:
  return _config_only_run(os.path.join(tmp, "ae_run"), tiny_config("autoencoder_shapes.py"))


@pytest.fixture(scope="module")
def pipeline_folder(tmp) -> str:
  """What `jaxgen convert` writes, as far as `jaxgen sample` looks: its format file."""
  from jaxgen.pipelines import stable_diffusion_checkpoint as checkpoint

  path = os.path.join(tmp, "converted_pipeline")
  os.makedirs(path)
  with open(os.path.join(path, checkpoint.CHECKPOINT_CONFIG_NAME), "w") as f:
    f.write('{"format": "%s"}\n' % checkpoint.CHECKPOINT_FORMAT)
  return path


@pytest.fixture(scope="module")
def bad_configs(tmp) -> str:
  """Config files that do not parse, raise on import, or raise in get_config()."""
  path = os.path.join(tmp, "bad_configs")
  os.makedirs(path)
  files = {
    "syntax.py": "import ml_collections\n\ndef get_config(:\n  pass\n",
    "import_error.py": "import jaxgen_no_such_module\n",
    "get_config_error.py": "def get_config():\n  width = 1\n  return width / 0\n",
  }
  for name, text in files.items():
    with open(os.path.join(path, name), "w") as f:
      f.write(text)
  return path


def _jaxgen(argv) -> int:
  return jaxgen.cli.main(["--compilation-cache", "", *argv])


# -- callables --------------------------------------------------------------


def _write_run(path, name, **overrides) -> None:
  """A config-only run of tiny configs/`name` with dotted `overrides` (values as is)."""
  config = tiny_config(name)
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  _config_only_run(path, config)


def latent_task_makes_its_autoencoder_absolute(tmp) -> str:
  """Built from a relative `autoencoder.workdir`, the config (so config.json) holds it absolute."""
  from jaxgen.tasks.image.latent_diffusion import LatentDiffusionTask

  config = tiny_config("latent_diffusion_shapes.py", "autoencoder.workdir=ae_not_trained")
  with (
    contextlib.chdir(tmp),
    pytest.raises(registry.DependentRunError, match="autoencoder.workdir"),
  ):
    LatentDiffusionTask(config)
  return config.autoencoder.workdir


def old_relative_autoencoder_found_from_elsewhere(tmp) -> str:
  """An old run trained from `project/` names `runs/ae`; sampled from another cwd, it is found."""
  project = os.path.join(tmp, "old_project")
  _write_run(os.path.join(project, "runs", "ae"), "autoencoder_shapes.py")
  run = os.path.join(project, "runs", "ldm")
  _write_run(run, "latent_diffusion_shapes.py", **{"autoencoder.workdir": "runs/ae"})
  with contextlib.chdir(os.path.join(tmp, "adir")):
    return registry.run_config(run).autoencoder.workdir


def old_relative_vq_found_beside_the_run(tmp) -> str:
  """An old GPT run whose `vq.workdir` is a sibling folder named relatively."""
  project = os.path.join(tmp, "sibling_project")
  _write_run(os.path.join(project, "vq"), "t2m_vq_synthetic.py")
  run = os.path.join(project, "gpt")
  _write_run(run, "t2m_gpt_synthetic.py", **{"vq.workdir": "vq"})
  with contextlib.chdir(os.path.join(tmp, "adir")):
    return registry.run_config(run).vq.workdir


def sample_old_relative_run_from_elsewhere(tmp) -> str:
  """`jaxgen sample` resolves the dependent run: the error is now about its missing checkpoint."""
  old_relative_autoencoder_found_from_elsewhere(tmp)
  run = os.path.join(tmp, "old_project", "runs", "ldm")
  with contextlib.chdir(os.path.join(tmp, "adir")):
    jaxgen.cli.main(["--log-level", "debug", "sample", "--checkpoint", run, "--prompt", "a"])
  return ""


def out_directory_gets_the_default_name(tmp) -> str:
  """`--out DIR` names the task's default file inside it (grid.png)."""
  from jaxgen.cli.sample import output_path
  from jaxgen.tasks.image.text_to_image import TextToImageTask

  return output_path(os.path.join(tmp, "adir"), TextToImageTask.sample_spec)


def motion_conditions_infinite_seconds(motion_run) -> str:
  """The task's own check (the Python API, below the command line)."""
  config = registry.run_config(motion_run)
  registry.get_task(config).conditions(["a person walks"], seconds=math.inf)
  return ""


def version_without_jax() -> str:
  code = (
    "import sys\nfrom jaxgen.cli import main\ntry:\n  main(['--version'])\n"
    "except SystemExit:\n  pass\nprint('jax imported:', 'jax' in sys.modules)"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
  )
  return result.stdout


def describe_permission_error() -> str:
  return jaxgen.cli.describe_os_error(PermissionError(13, "Permission denied", "/data/run"))


def debug_log_level_reraises(tmp) -> str:
  missing = os.path.join(tmp, "no_such_run")
  jaxgen.cli.main(["--log-level", "debug", "sample", "--checkpoint", missing, "--prompt", "a"])
  return ""


# -- the table ----------------------------------------------------------------

_SAMPLE = ("sample", "--checkpoint", "{image_run}", "--prompt", "a red circle")
_MOTION = ("sample", "--checkpoint", "{motion_run}", "--prompt", "a person walks")
_LATENT = ("train", "--config", f"{CONFIGS}/latent_diffusion_shapes.py", "--workdir", "{tmp}/ldm")
_GPT = ("train", "--config", f"{CONFIGS}/t2m_gpt_synthetic.py", "--workdir", "{tmp}/gpt")
_QUICKSTART = ("quickstart", "--workdir", "{tmp}/quickstart")
_GUIDANCE = "--guidance: expected a finite scale, got"
_SCALE = "--scale: expected a pixel upscaling >= 1, got"
_SECONDS = "--seconds: expected a positive duration"
_MINUTES = "--train-minutes: expected a finite positive number of minutes, got"

CASES = [
  # Config files.
  Case(
    "config_syntax_error",
    ("train", "--config", "{bad_configs}/syntax.py"),
    2,
    "syntax.py', line 3: SyntaxError while importing the file",
  ),
  Case(
    "config_raises_on_import",
    ("train", "--config", "{bad_configs}/import_error.py"),
    2,
    "import_error.py', line 1: ModuleNotFoundError while importing the file",
  ),
  Case(
    "config_raises_in_get_config",
    ("train", "--config", "{bad_configs}/get_config_error.py"),
    2,
    "get_config_error.py', line 3: ZeroDivisionError while calling get_config()",
  ),
  # Dependent runs: named by their config key.
  Case(
    "latent_autoencoder_missing",
    (*_LATENT, *TINY["latent_diffusion_shapes.py"], "autoencoder.workdir={tmp}/none"),
    2,
    "autoencoder.workdir: expected the directory of an autoencoder run (written by `jaxgen "
    "train`), found no directory '{tmp}/none'",
  ),
  Case(
    "latent_autoencoder_not_trained",
    (*_LATENT, *TINY["latent_diffusion_shapes.py"], "autoencoder.workdir={autoencoder_run}"),
    2,
    "autoencoder.workdir: expected the directory of an autoencoder run (written by `jaxgen "
    "train`), found '{autoencoder_run}' without checkpoints",
  ),
  Case(
    "latent_autoencoder_of_another_task",
    (*_LATENT, *TINY["latent_diffusion_shapes.py"], "autoencoder.workdir={image_run}"),
    2,
    "autoencoder.workdir: expected an autoencoder run, found a 'text_to_image' run",
  ),
  Case(
    "gpt_vq_missing",
    (*_GPT, *TINY["t2m_gpt_synthetic.py"], "vq.workdir={tmp}/none"),
    2,
    "vq.workdir: expected the directory of a t2m_vq run (written by `jaxgen train`), "
    "found no directory '{tmp}/none'",
  ),
  Case(
    "dependent_run_stored_absolute",
    latent_task_makes_its_autoencoder_absolute,
    None,
    "{tmp}/ae_not_trained",
  ),
  Case(
    "old_relative_run_found_from_the_run_folder",
    old_relative_autoencoder_found_from_elsewhere,
    None,
    "{tmp}/old_project/runs/ae",
  ),
  Case(
    "old_relative_run_found_beside_the_run",
    old_relative_vq_found_beside_the_run,
    None,
    "{tmp}/sibling_project/vq",
  ),
  Case(
    "sample_old_relative_run_from_elsewhere",
    sample_old_relative_run_from_elsewhere,
    registry.DependentRunError,
    "found '{tmp}/old_project/runs/ae' without checkpoints",
  ),
  # Sampling options: named before the weights are read (the runs have no checkpoint).
  Case("guidance_nan", (*_SAMPLE, "--guidance", "nan"), 2, f"{_GUIDANCE} nan"),
  Case("guidance_inf", (*_SAMPLE, "--guidance", "inf"), 2, f"{_GUIDANCE} inf"),
  Case(
    "guidance_negative",
    (*_SAMPLE, "--guidance", "-1"),
    2,
    "--guidance: expected a scale >= 0, got -1.0",
  ),
  Case(
    "steps_past_the_schedule",
    (*_SAMPLE, "--steps", "5000"),
    2,
    "--steps: expected a positive number of steps at most 1000",
  ),
  Case("sampler_unknown", (*_SAMPLE, "--sampler", "plms"), 2, "--sampler: expected one of"),
  Case(
    "seed_past_uint32",
    (*_SAMPLE, "--seed", str(2**64)),
    2,
    f"--seed: expected an integer in {SEED_RANGE_TEXT}, got {2**64}",
  ),
  Case(
    "seed_negative",
    (*_SAMPLE, "--seed", "-1"),
    2,
    f"--seed: expected an integer in {SEED_RANGE_TEXT}, got -1",
  ),
  Case("scale_zero", (*_SAMPLE, "--scale", "0"), 2, f"{_SCALE} 0"),
  Case("scale_negative", (*_SAMPLE, "--scale", "-3"), 2, f"{_SCALE} -3"),
  Case(
    "out_extension_unknown",
    (*_SAMPLE, "--out", "{tmp}/grid.bmp"),
    2,
    "--out: expected a file ending in one of ('.png',)",
  ),
  Case(
    "out_parent_is_a_file",
    (*_SAMPLE, "--out", "{tmp}/afile/grid.png"),
    2,
    "--out: cannot write '{tmp}/afile/grid.png': '{tmp}/afile' is a file, not a directory",
  ),
  Case(
    "out_jpeg_refused",  # never PNG bytes in a .jpg
    (*_SAMPLE, "--out", "{tmp}/grid.jpg"),
    2,
    "--out: expected a file ending in one of ('.png',) for task 'text_to_image', got",
  ),
  Case(
    "out_directory_gets_default_name",
    out_directory_gets_the_default_name,
    None,
    "{tmp}/adir/grid.png",
  ),
  Case(
    "out_directory_passes_the_checks",  # and fails only where the weights are read
    (*_SAMPLE, "--out", "{tmp}/adir"),
    2,
    "--checkpoint: '{image_run}' has no checkpoints/ folder",
  ),
  Case(
    "sample_a_converted_pipeline_folder",
    ("sample", "--checkpoint", "{pipeline_folder}", "--prompt", "a red circle"),
    2,
    "is a Stable Diffusion pipeline checkpoint (written by `jaxgen convert`), not a `jaxgen "
    "train` run directory",
  ),
  Case(
    "sample_a_task_that_cannot",
    ("sample", "--checkpoint", "{autoencoder_run}", "--prompt", "a red circle"),
    2,
    "run, a task that does not generate from prompts",
  ),
  Case(
    "image_takes_no_seconds",
    (*_SAMPLE, "--seconds", "2"),
    2,
    "--seconds: task 'text_to_image' takes no duration",
  ),
  Case(
    "motion_seconds_inf",
    (*_MOTION, "--seconds", "inf"),
    2,
    f"{_SECONDS} for task 't2m_mdm' (a finite number of seconds)",
  ),
  Case(
    "motion_seconds_nan",
    (*_MOTION, "--seconds", "nan"),
    2,
    f"{_SECONDS} for task 't2m_mdm' (a finite number of seconds)",
  ),
  Case(
    "motion_seconds_too_short",
    (*_MOTION, "--seconds", "0.001"),
    2,
    "--seconds: expected at least 0.05 s (1 frames at 20 fps), found 0.001",
  ),
  Case(
    "motion_seconds_too_long",
    (*_MOTION, "--seconds", "100"),
    2,
    "--seconds: expected at most 9.8 s (196 frames at 20 fps), found 100.0",
  ),
  Case(
    "motion_conditions_seconds_inf",
    motion_conditions_infinite_seconds,
    ValueError,
    f"{_SECONDS} for a text-to-motion run (a finite number of seconds), found inf",
  ),
  # The command line.
  Case("version", ("--version",), 0, f"jaxgen {importlib.metadata.version('jaxgen')}"),
  Case("version_imports_no_jax", version_without_jax, None, "jax imported: False"),
  Case(
    "quickstart_minutes_negative", (*_QUICKSTART, "--train-minutes", "-1"), 2, f"{_MINUTES} -1.0"
  ),
  Case("quickstart_minutes_zero", (*_QUICKSTART, "--train-minutes", "0"), 2, f"{_MINUTES} 0.0"),
  Case("quickstart_minutes_nan", (*_QUICKSTART, "--train-minutes", "nan"), 2, f"{_MINUTES} nan"),
  Case(
    "os_error_is_one_line",
    describe_permission_error,
    None,
    "'/data/run': Permission denied (check its permissions or choose another path)",
  ),
  Case(
    "workdir_is_a_file",
    (
      *("train", "--config", f"{CONFIGS}/text_to_image_shapes.py", "--workdir", "{tmp}/afile"),
      *TINY_TEXT_TO_IMAGE,
    ),
    2,
    "{tmp}/afile",
  ),
  Case("debug_reraises", debug_log_level_reraises, UsageError, "--checkpoint: directory"),
]


def _fixture_names(case: Case) -> set[str]:
  if callable(case.run):
    return set(inspect.signature(case.run).parameters)
  texts = [*case.run, case.fragment]
  return {name for text in texts for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_adversarial_input(case: Case, request, capsys):
  fixtures = {name: request.getfixturevalue(name) for name in _fixture_names(case)}
  fragment = case.fragment.format(**fixtures)
  if callable(case.run):
    if case.expect is None:
      assert fragment in case.run(**fixtures)
    else:
      with pytest.raises(case.expect) as info:
        case.run(**fixtures)
      assert fragment in str(info.value)
    return
  argv = [arg.format(**fixtures) for arg in case.run]
  try:
    rc = _jaxgen(argv)
  except SystemExit as e:  # argparse: --version, --help
    rc = e.code
  out = capsys.readouterr()
  assert rc == case.expect, out.err
  assert fragment in out.out + out.err
  assert "Traceback" not in out.err  # a named error is one line
