"""A protected run directory: named errors before anything is written, config revisions, the lock.

One tiny text-to-image run (module-scoped, 2 steps) is copied for every case.
Each row of `REFUSED` resumes (or starts) a run with a bad input and expects a
named error, raised before the run directory changes: config.json stays
byte-identical and no file appears or stays behind (no revision, no lock).
"""

import json
import os
import re
import shutil
import socket
import subprocess

import pytest

from jaxgen import cli
from jaxgen.tasks.registry import get_task
from jaxgen.training import distributed, inference, run_directory, trainer
from jaxgen.training.config import RESUME_MAY_CHANGE, TrainerConfigError
from jaxgen.training.run_directory import (
  RunConfigFileError,
  RunConfigMismatchError,
  RunLock,
  RunLockedError,
  WorkdirError,
)
from tiny_configs import CONFIGS, TINY_TEXT_TO_IMAGE, tiny_text_to_image_config

CONFIG = os.path.join(CONFIGS, "text_to_image_shapes.py")
# The tiny config with one U-Net level at 8x8: half its compile time.
TWO_STEPS = TINY_TEXT_TO_IMAGE + [
  "train.num_steps=2",
  "data.resolution=8",
  "unet.sample_size=8",
  "unet.block_out_channels=(8,)",
  "unet.down_block_types=('DownBlock2D',)",
  "unet.up_block_types=('UpBlock2D',)",
]


def run_cli(argv):
  """`jaxgen ARGV` in-process, without touching the user's compilation cache."""
  return cli.main(["--compilation-cache", ""] + argv)


def train_argv(workdir, *overrides, flags=()):
  # Flags first: the overrides stay one positional run.
  return ["train", "--config", CONFIG, "--workdir", workdir, *flags] + TWO_STEPS + list(overrides)


def _listing(workdir):
  """Every file under `workdir` with its bytes (checkpoints by name only: orbax owns them)."""
  files = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, workdir)
      if rel.startswith(("config", "train.lock")):
        with open(path, "rb") as f:
          files[rel] = f.read()
      else:
        files[rel] = None
  return files


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run") / "run")
  assert run_cli(train_argv(workdir)) == 0
  return workdir


@pytest.fixture
def run(trained, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained, workdir)
  return workdir


def _dead_pid() -> int:
  process = subprocess.Popen(["true"])
  process.wait()
  return process.pid


def _write_lock(workdir, **holder):
  record = dict(host=socket.gethostname(), pid=os.getpid(), started="2026-01-01T00:00:00+00:00")
  record.update(holder)
  with open(os.path.join(workdir, run_directory.LOCK_FILE), "w") as f:
    json.dump(record, f)


def _workdir_is_a_file(workdir, monkeypatch):
  shutil.rmtree(workdir)
  open(workdir, "w").close()  # pylint: disable=consider-using-with
  return workdir


def _parent_is_a_file(workdir, monkeypatch):
  return os.path.join(_workdir_is_a_file(workdir, monkeypatch), "run")


def _not_writable(workdir, monkeypatch):
  os.chmod(workdir, 0o555)
  if os.geteuid() == 0:  # root writes anywhere: answer as the file system would a user
    real_access = os.access
    monkeypatch.setattr(
      os, "access", lambda p, mode: False if p == workdir else real_access(p, mode)
    )
  return workdir


def _corrupt_config(workdir, monkeypatch):
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write('{"seed": 0,\n  task: "text_to_image"}')
  return workdir


def _locked_by_live_process(workdir, monkeypatch):
  _write_lock(workdir, pid=os.getppid())
  return workdir


def _locked_on_another_host(workdir, monkeypatch):
  _write_lock(workdir, host="another-host.example")
  return workdir


# (id, how the copied run is spoiled or None, CLI arguments, error class, message fragment)
REFUSED = [
  ("negative batch", None, ["train.batch_size=-1"], TrainerConfigError, "train.batch_size"),
  ("negative steps", None, ["train.num_steps=-5"], TrainerConfigError, "train.num_steps"),
  ("zero steps", None, ["train.num_steps=0"], TrainerConfigError, "train.num_steps"),
  ("mesh not ints", None, ["mesh_shape=abc"], TrainerConfigError, "mesh_shape: expected"),
  ("mesh too big", None, ["mesh_shape=(4096, 1, 1)"], TrainerConfigError, "mesh_shape: mesh"),
  (
    "other widths",
    None,
    ["unet.block_out_channels=(16,)"],
    RunConfigMismatchError,
    "unet.block_out_channels: [8] -> [16]",
  ),
  (
    "other optimizer",
    None,
    ["optim.learning_rate=0.5", "train.num_steps=4"],
    RunConfigMismatchError,
    "optim.learning_rate: 0.001 -> 0.5.",  # the allowed train.num_steps is not listed
  ),
  (
    "other widths, allowed",
    None,
    ["--allow-config-change", "unet.block_out_channels=(16,)"],  # it restores nothing
    RunConfigMismatchError,
    "do not fit the changed config (unet.block_out_channels)",
  ),
  ("workdir is a file", _workdir_is_a_file, [], WorkdirError, "is a file, not a directory"),
  ("parent is a file", _parent_is_a_file, [], WorkdirError, "cannot be created"),
  ("not writable", _not_writable, [], WorkdirError, "is not writable by this user"),
  ("config not JSON", _corrupt_config, [], RunConfigFileError, "not valid JSON (line 2, column 3"),
  ("lock held", _locked_by_live_process, [], RunLockedError, "a live process"),
  ("lock elsewhere", _locked_on_another_host, [], RunLockedError, "another host"),
]


@pytest.mark.parametrize(
  "spoil, extra, error, fragment", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_bad_input_is_refused_before_anything_is_written(
  run, spoil, extra, error, fragment, monkeypatch
):
  workdir = spoil(run, monkeypatch) if spoil else run
  before = _listing(workdir) if os.path.isdir(workdir) else None
  flags = [a for a in extra if a.startswith("--")]
  overrides = [a for a in extra if not a.startswith("--")]
  argv = ["--log-level", "debug"] + train_argv(workdir, *overrides, flags=flags)  # re-raises
  try:
    with pytest.raises(error, match=re.escape(fragment)):
      run_cli(argv)
  finally:
    if os.path.isdir(workdir):
      os.chmod(workdir, 0o755)  # so that pytest can clean up
  after = _listing(workdir) if os.path.isdir(workdir) else None
  assert after == before


def test_errors_are_one_line_on_the_command_line(run, capsys):
  assert run_cli(train_argv(run, "unet.block_out_channels=(16,)")) == 2
  err = capsys.readouterr().err
  assert err.startswith("jaxgen train: error: ") and err.count("\n") == 1
  assert "--allow-config-change" in err


def test_a_failing_first_batch_check_writes_nothing(run):
  config = tiny_text_to_image_config(*TWO_STEPS, "train.log_every=1")

  class Refusing:
    def __init__(self, task):
      self._task = task

    def __getattr__(self, name):
      return getattr(self._task, name)

    def check_batch(self, batch):
      raise ValueError("image: expected something else")

  before = _listing(run)
  with pytest.raises(ValueError, match="expected something else"):
    trainer.train(Refusing(get_task(config)), config, run)
  assert _listing(run) == before  # no config.1.json for the changed train.log_every, no lock


def test_a_fresh_workdir_left_empty_by_a_failed_check_is_removed(tmp_path):
  workdir = str(tmp_path / "new" / "run")
  config = tiny_text_to_image_config(*TWO_STEPS)
  task = get_task(config)

  class Refusing:
    def __getattr__(self, name):
      return getattr(task, name)

    def check_batch(self, batch):
      raise ValueError("no")

  with pytest.raises(ValueError, match="no"):
    trainer.train(Refusing(), config, workdir)
  assert not os.path.exists(workdir)


def test_allowed_change_writes_a_revision_and_the_run_still_samples(run, tmp_path, caplog):
  original = _listing(run)["config.json"]
  _write_lock(run, pid=_dead_pid())
  changes = ["optim.learning_rate=0.002", "train.log_every=1"]
  assert run_cli(train_argv(run, *changes, flags=["--allow-config-change"])) == 0
  assert "took over a stale lock" in caplog.text
  files = _listing(run)
  assert files["config.json"] == original
  assert "train.lock" not in files
  revision = json.loads(files["config.1.json"])
  assert revision["optim"]["learning_rate"] == 0.002 and revision["train"]["log_every"] == 1
  assert run_directory.load_run_config(run).optim.learning_rate == 0.002
  # What `jaxgen sample` and the registry read is that newest revision too.
  assert inference.load_run_config(run) == run_directory.load_run_config(run), (
    "jaxgen.training.inference must take load_run_config from run_directory"
  )
  out = str(tmp_path / "grid.png")
  prompt = ["--prompt", "a small red circle in the top left"]
  assert run_cli(["sample", "--checkpoint", run, "--out", out] + prompt) == 0
  assert os.path.getsize(out) > 0


def test_keys_a_resume_may_change_give_a_revision_without_the_flag(run):
  stored = run_directory.load_run_config(run)
  extended = run_directory.load_run_config(run)
  extended.train.num_steps = 10
  extended.checkpoint.keep = 1
  changes = run_directory.check_resume_config(run, extended, may_change=RESUME_MAY_CHANGE)
  assert changes == {"checkpoint.keep": (3, 1), "train.num_steps": (2, 10)}
  assert run_directory.record_run_config(run, extended).name == "config.1.json"
  assert run_directory.record_run_config(run, extended) is None  # unchanged: nothing written
  assert run_directory.load_run_config(run).train.num_steps == 10
  assert run_directory.read_config_file(os.path.join(run, "config.json")) == stored
  widened = run_directory.load_run_config(run)
  widened.seed = 1
  with pytest.raises(RunConfigMismatchError, match=r"config\.1\.json: .* seed: 0 -> 1\. "):
    run_directory.check_resume_config(run, widened, may_change=RESUME_MAY_CHANGE)


def test_a_directory_without_checkpoints_holds_no_run_yet(run):
  shutil.rmtree(os.path.join(run, "checkpoints"))
  with open(os.path.join(run, "config.3.json"), "w") as f:
    f.write("{}")
  config = run_directory.load_run_config(run)
  config.seed = 5
  assert run_directory.check_resume_config(run, config) == {}
  assert run_directory.record_run_config(run, config).name == "config.json"
  assert sorted(f for f in os.listdir(run) if f.startswith("config")) == ["config.json"]
  assert run_directory.load_run_config(run).seed == 5


def test_lock_is_exclusive_released_and_stale_locks_are_taken_over(tmp_path, caplog):
  workdir = str(tmp_path)
  lock_path = os.path.join(workdir, run_directory.LOCK_FILE)
  with RunLock(workdir):
    with open(lock_path) as f:
      holder = json.load(f)
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on host"):
      RunLock(workdir).acquire()
  assert not os.path.exists(lock_path)
  with pytest.raises(RuntimeError):  # released on errors too
    with RunLock(workdir):
      raise RuntimeError
  assert not os.path.exists(lock_path)
  with RunLock(workdir, enabled=False):  # processes other than 0 share process 0's lock
    assert not os.path.exists(lock_path)
  dead = _dead_pid()
  _write_lock(workdir, pid=dead)
  with RunLock(workdir):
    with open(lock_path) as f:
      assert json.load(f)["pid"] == os.getpid()
  assert f"took over a stale lock of pid {dead}" in caplog.text
  with open(lock_path, "w") as f:
    f.write("garbage")
  with pytest.raises(RunLockedError, match="not a lock jaxgen wrote.*rm "):
    RunLock(workdir).acquire()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_unreachable_coordinator_times_out_naming_it(tmp_path, capsys):
  address = f"127.0.0.1:{_free_port()}"
  flags = ["--coordinator", address, "--num-processes", "2", "--process-id", "1"]
  workdir = str(tmp_path / "run")
  argv = train_argv(workdir, flags=flags + ["--coordinator-timeout", "1"])
  assert run_cli(argv) == 2
  err = capsys.readouterr().err
  assert f"--coordinator {address}: nothing answered there within 1 s" in err
  assert err.count("\n") == 1
  with pytest.raises(distributed.DistributedConfigError, match="--coordinator-timeout"):
    distributed.DistributedConfig(enabled=True, initialization_timeout=0)
  with pytest.raises(distributed.DistributedConfigError, match="host:port"):
    distributed.DistributedConfig(
      enabled=True, coordinator_address="host:abc", num_processes=2, process_id=1
    )


def test_divergence_is_a_named_error_the_cli_prints_as_one_line(monkeypatch, capsys, tmp_path):
  def diverging(*args, **kwargs):
    raise trainer.TrainingDivergedError("10 consecutive non-finite losses ...")

  monkeypatch.setattr(trainer, "train", diverging)
  assert run_cli(train_argv(str(tmp_path / "run"))) == 2
  err = capsys.readouterr().err
  assert err == "jaxgen train: error: 10 consecutive non-finite losses ...\n"
  assert issubclass(trainer.TrainingDivergedError, FloatingPointError)
