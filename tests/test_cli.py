"""The `jaxgen` command line: start-up without JAX, every config file, train --dry-run, errors.

`jaxgen train --config F` runs for every F in configs/: an experiment trains
two steps on its tiny overrides (tests/tiny_configs.TINY), or is dry-run
where it needs real data; an architecture file gets the named refusal.
"""

import contextlib
import glob
import json
import os
import subprocess
import sys

import pytest

from jaxgen import cli
from jaxgen.cli import eval as eval_command
from test_readme import readme_argv
from tiny_configs import CONFIGS, TINY

ROOT = os.path.dirname(CONFIGS)
# Experiments that read data from disk: dry-run on small fake folders (see `humanml3d_args`).
DRY_RUN_ONLY = ("t2m_mdm_humanml3d.py",)
# Stable Diffusion fine-tunes need a diffusers folder and image-caption data: dry-run on the
# tiny ones of tests/test_sd_finetune.py (which trains them end to end).
SD_FINETUNE = ("sd15_finetune.py", "sd2_finetune.py")
# Experiments that start from another experiment's run: config -> (its override, that config).
NEEDS_RUN = {
  "latent_diffusion_shapes.py": ("autoencoder.workdir", "autoencoder_shapes.py"),
  "bbdm_latent_scenes.py": ("autoencoder.workdir", "autoencoder_shapes.py"),
  "controlnet_scenes.py": ("base.workdir", "text_to_image_scenes.py"),
  "t2m_gpt_synthetic.py": ("vq.workdir", "t2m_vq_synthetic.py"),
  "bailando_gpt_music_dance.py": ("vq.workdir", "bailando_vq_music_dance.py"),
  "wav2lip_talking_heads.py": ("expert.workdir", "wav2lip_expert_talking_heads.py"),
  "difftalk_talking_heads.py": ("autoencoder.workdir", "autoencoder_talking_heads.py"),
  "text_to_video_shapes.py": ("image.workdir", "text_to_image_shapes.py"),
  "dalle_shapes.py": ("vq.workdir", "vqgan_shapes.py"),
  "vq_diffusion_shapes.py": ("vq.workdir", "vqgan_shapes.py"),
  "maskgit_shapes.py": ("vq.workdir", "vqgan_shapes.py"),
  "stackgan_shapes.py": ("damsm.workdir", "damsm_shapes.py"),
  "attngan_shapes.py": ("damsm.workdir", "damsm_shapes.py"),
}


def run_cli(argv):
  """`jaxgen ARGV` in-process, without touching the user's compilation cache."""
  return cli.main(["--compilation-cache", ""] + [str(a) for a in argv])


def config_files():
  return sorted(
    os.path.relpath(p, CONFIGS)
    for p in glob.glob(os.path.join(CONFIGS, "**", "*.py"), recursive=True)
  )


# -- start-up ------------------------------------------------------------------


@pytest.mark.parametrize("command", [[]] + [[name] for name in cli.COMMANDS])
def test_help_imports_no_jax(command):
  code = (
    "import sys\nfrom jaxgen.cli import main\n"
    f"try:\n  main({command + ['--help']!r})\nexcept SystemExit as e:\n  assert e.code == 0\n"
    "print(sorted(m for m in ('jax', 'flax', 'numpy', 'optax') if m in sys.modules))"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
  )
  assert result.returncode == 0, result.stderr
  assert "usage: jaxgen" in result.stdout
  assert result.stdout.strip().splitlines()[-1] == "[]", "`--help` imported " + result.stdout


def test_eval_choices_match_the_modules_that_compute_them():
  from jaxgen.cli import eval_folders  # pylint: disable=g-import-not-at-top
  from jaxgen.metrics import fvd  # pylint: disable=g-import-not-at-top

  assert eval_command.METRICS == tuple(eval_folders.RUNNERS)
  assert eval_command.FVD_RESIZE_MODES == fvd.RESIZE_MODES
  assert eval_command.FVD_FEATURES == tuple(fvd.FEATURE_DIMS)


# -- every config file, as the README launches it ---------------------------------


class Project:
  """A scratch directory with configs/ where README commands run (runs/ lands in it)."""

  def __init__(self, root):
    self.root = root
    os.symlink(CONFIGS, os.path.join(root, "configs"))
    self.workdirs = {}  # config name -> its run directory, relative to root

  def run(self, argv) -> int:
    with contextlib.chdir(self.root):
      return run_cli(argv)

  def train(self, name: str) -> str:
    """Trains configs/`name` on its tiny overrides (once) by the README's command, if any."""
    if name not in self.workdirs:
      readme = [argv[1:] for argv in readme_argv(f"jaxgen train --config configs/{name} ")]
      argv = (
        readme[0]
        if readme
        else ["train", "--config", f"configs/{name}", "--workdir", f"runs/{name[:-3]}"]
      )
      if name in NEEDS_RUN:
        key, needed = NEEDS_RUN[name]
        needed_dir = self.train(needed)
        if not any(a.startswith(key + "=") for a in argv):
          argv.append(f"{key}={needed_dir}")
      assert self.run(argv + TINY[name]) == 0, argv
      self.workdirs[name] = argv[argv.index("--workdir") + 1]
    return self.workdirs[name]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
  return Project(str(tmp_path_factory.mktemp("project")))


@pytest.fixture(scope="module")
def humanml3d_args(tmp_path_factory):
  """data.path and text.clip_path overrides: a fake HumanML3D folder and a tiny CLIP."""
  from test_humanml3d_builder import _write_folder  # pylint: disable=g-import-not-at-top
  from test_text_to_motion import _tiny_clip_folder  # pylint: disable=g-import-not-at-top
  from jaxgen.data import motion_formats  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp("humanml3d")
  _write_folder(root / "HumanML3D", motion_formats.HUMANML3D)
  _tiny_clip_folder(str(root / "clip"))
  # Five training examples in the fake folder: a batch of 4 over the README's 4 devices.
  return {
    "data.path": str(root / "HumanML3D"),
    "text.clip_path": str(root / "clip"),
    "train.batch_size": "4",
  }


@pytest.fixture(scope="module")
def sd_finetune_args(tmp_path_factory):
  from test_sd_finetune import sd_finetune_args

  return sd_finetune_args(str(tmp_path_factory.mktemp("sd_finetune")))


def _with(argv, overrides):
  """argv with `key=value` overrides replaced (or appended) by `overrides`."""
  kept = [a for a in argv if a.split("=", 1)[0] not in overrides]
  return kept + [f"{k}={v}" for k, v in overrides.items()]


@pytest.mark.parametrize("name", config_files())
def test_train_runs_every_experiment_and_refuses_architecture_files(name, project, request, capsys):
  path = os.path.join(CONFIGS, name)
  if os.path.basename(name) == "__init__.py":
    assert run_cli(["train", "--config", path]) == 2
    assert "defines no get_config(), so it is not a config file" in capsys.readouterr().err
  elif name.startswith("arch" + os.sep):
    assert run_cli(["train", "--config", path]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "is an architecture file" in err and "Build the model from Python" in err
    assert f"from jaxgen.configs.arch import {os.path.basename(name)[:-3]}" in err
  elif name in DRY_RUN_ONLY or name in SD_FINETUNE:
    fixture = "humanml3d_args" if name in DRY_RUN_ONLY else "sd_finetune_args"
    overrides = request.getfixturevalue(fixture)
    assert run_cli(_with(["train", "--config", path, "--dry-run"], overrides)) == 0
    assert "nothing compiled" in capsys.readouterr().out
  else:
    assert name in TINY, f"configs/{name}: add its tiny overrides to tests/tiny_configs.TINY"
    workdir = os.path.join(project.root, project.train(name))
    with open(os.path.join(workdir, "config.json")) as f:
      config = json.load(f)
    assert os.path.basename(name).startswith(config["task"] + "_")  # <task>_<variant/data>.py
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")))
    assert steps[-1] == config["train"]["num_steps"]


def test_readme_commands_that_need_a_pod_or_real_data_dry_run(humanml3d_args, capsys):
  commands = [
    argv[1:]
    for argv in readme_argv("jaxgen train")
    if {"--dry-run", "--distributed", "--coordinator"} & set(argv)
  ]
  assert len(commands) == 3
  for argv in commands:
    if "--dry-run" not in argv:
      argv.insert(1, "--dry-run")  # before the overrides: they stay one positional run
    if "configs/t2m_mdm_humanml3d.py" in argv:
      argv = _with(argv, humanml3d_args)
    with contextlib.chdir(ROOT):
      assert run_cli(argv) == 0, argv
    assert "nothing compiled" in capsys.readouterr().out


def _write_label_maps(folder: str, count: int = 2) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from jaxgen.data import scenes  # pylint: disable=g-import-not-at-top

  os.makedirs(folder, exist_ok=True)
  labels = scenes.make_scenes("test", count)["label"]
  for i, label in enumerate(labels):
    Image.fromarray(scenes.labels_to_rgb(label)).save(os.path.join(folder, f"scene_{i}.png"))


def _write_song(path: str, seconds: float = 4.0) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxgen.data import music_synth  # pylint: disable=g-import-not-at-top
  from jaxgen.render.music_video import write_wav  # pylint: disable=g-import-not-at-top

  track = music_synth.synthesize_track(np.random.default_rng(0), seconds, sample_rate=22050)
  write_wav(path, track.audio, track.sample_rate)


def _write_speech_and_face(speech_path: str, face_path: str) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from jaxgen.data import face_render, speech_synth  # pylint: disable=g-import-not-at-top
  from jaxgen.render.music_video import write_wav  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  utterance = speech_synth.synthesize_utterance(rng, speech_synth.random_speaker(rng), 1.0)
  write_wav(speech_path, utterance.audio, utterance.sample_rate)
  face = face_render.draw_face(face_render.random_identity(rng), utterance.mouth[0], size=96)
  Image.fromarray(face).save(face_path)


def test_readme_sample_and_eval_motion_commands(project):
  for name in TINY:
    project.train(name)
  commands = readme_argv("jaxgen sample") + readme_argv("jaxgen eval-motion")
  assert len(commands) == 8
  for argv in commands:
    if "--input" in argv:  # image-to-image: a folder of held-out label maps
      _write_label_maps(os.path.join(project.root, argv[argv.index("--input") + 1]))
    if "--music" in argv:  # dance: a synthesized song
      _write_song(os.path.join(project.root, argv[argv.index("--music") + 1]))
    if "--audio" in argv:  # talking face: synthesized speech and a drawn face
      _write_speech_and_face(
        os.path.join(project.root, argv[argv.index("--audio") + 1]),
        os.path.join(project.root, argv[argv.index("--reference") + 1]),
      )
    # One R-precision batch (32 test captions) instead of the whole split.
    extra = ["--num-examples", "32"] if argv[1] == "eval-motion" else []
    assert project.run(argv[1:] + extra) == 0, argv
    out = argv[argv.index("--out") + 1]
    assert os.path.getsize(os.path.join(project.root, out)) > 0


def test_every_config_docstring_launches_itself():
  for name in config_files():
    if os.path.basename(name) == "__init__.py" or name.startswith("arch" + os.sep):
      continue
    with open(os.path.join(CONFIGS, name)) as f:
      text = f.read()
    assert f"jaxgen train --config configs/{name}" in text, name


# -- train --dry-run -----------------------------------------------------------


def test_dry_run_prints_the_parameter_count_and_compiles_nothing(tmp_path, capsys):
  workdir = tmp_path / "never"
  assert (
    run_cli(
      [
        "train",
        "--config",
        os.path.join(CONFIGS, "text_to_image_shapes.py"),
        "--workdir",
        workdir,
        "--dry-run",
      ]
    )
    == 0
  )
  out = capsys.readouterr().out
  assert "1,112,227 parameters" in out and "nothing compiled" in out
  assert not workdir.exists()


@pytest.mark.parametrize(
  "overrides, message",
  [
    (["mesh_shape=(1, 8)"], "mesh_shape: expected None or three positive ints"),
    (["mesh_shape=(1, 3, 1)"], "train.batch_size: expected a multiple of the mesh's 3 devices"),
    (["train.batch_size=999999"], "train.batch_size: expected at most the 20000"),
    (["data.resolution=15"], "data.resolution must be a multiple of 2"),
    (["mesh_shap=(1, 8, 1)"], "'mesh_shap' is not a config field"),
  ],
)
def test_dry_run_names_what_a_pod_run_would_trip_on(overrides, message, capsys):
  path = os.path.join(CONFIGS, "text_to_image_shapes.py")
  assert run_cli(["train", "--config", path, "--dry-run"] + overrides) == 2
  err = capsys.readouterr().err
  assert message in err and len(err.strip().splitlines()) == 1


def test_dry_run_of_a_pod_mesh_needs_no_pod(capsys):
  path = os.path.join(CONFIGS, "text_to_image_shapes.py")
  assert run_cli(["train", "--config", path, "--dry-run", "mesh_shape=(1, 32, 1)"]) == 0
  assert "mesh_shape=(1, 32, 1) (32 devices)" in capsys.readouterr().out


# -- sample and eval-motion: named errors before anything loads ------------------


@pytest.fixture(scope="module")
def autoencoder_run(project):
  return os.path.join(project.root, project.train("autoencoder_shapes.py"))


def test_sample_refuses_runs_of_tasks_that_do_not_generate(autoencoder_run, capsys):
  assert run_cli(["sample", "--checkpoint", autoencoder_run, "--prompt", "a red circle"]) == 2
  assert "is a 'autoencoder' run, a task that does not generate" in capsys.readouterr().err


def test_sample_has_no_task_flag(capsys):
  with pytest.raises(SystemExit):
    run_cli(["sample", "--task", "text2motion", "--checkpoint", "x", "--prompt", "p"])
  assert "unrecognized arguments: --task" in capsys.readouterr().err


@pytest.mark.parametrize(
  "args, message",
  [
    (["--run", "nope"], "--run: directory 'nope' does not exist"),
    (["--evaluator", "nope"], "--evaluator: directory 'nope' does not exist"),
    (["--steps", "0"], "--steps: expected a positive number of steps, got 0"),
    (["--guidance", "-1"], "--guidance: expected a scale >= 0, got -1.0"),
    (["--num-examples", "0"], "--num-examples: expected >= 1, got 0"),
    ([], "is a 'autoencoder' run, a task that does not generate"),
  ],
)
def test_eval_motion_names_bad_arguments(args, message, autoencoder_run, tmp_path, capsys):
  defaults = {"--run": autoencoder_run, "--evaluator": str(tmp_path)}
  argv = ["eval-motion"] + args
  for flag, value in defaults.items():
    if flag not in args:
      argv += [flag, value]
  assert run_cli(argv) == 2
  assert message in capsys.readouterr().err
