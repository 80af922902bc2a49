"""tpu_scripts/: every script's dry run prints the gcloud commands it would run."""

import os
import shlex
import subprocess

import pytest

from test_readme import readme_argv

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tpu_scripts")
WHERE = ["--name", "pod", "--zone", "us-central2-b", "--project", "proj"]


def dry_run(script: str, *args: str) -> list[list[str]]:
  """The commands `script --dry-run` prints, each split back into its arguments."""
  result = subprocess.run(
    ["bash", os.path.join(SCRIPTS, script), *WHERE, "--dry-run", *args],
    capture_output=True,
    text=True,
    timeout=30,
    env=dict(os.environ, PATH="/usr/bin:/bin"),
  )  # no gcloud needed
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines()]


def ssh_command(argv: list[str]) -> str:
  assert argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
  assert "--zone=us-central2-b" in argv and "--project=proj" in argv
  return next(a for a in argv if a.startswith("--command=")).removeprefix("--command=")


def test_create_tpu_vm_and_queued_resource():
  [vm] = dry_run("create.sh", "--accelerator-type", "v4-32")
  assert vm[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod"]
  assert "--accelerator-type=v4-32" in vm
  [queued] = dry_run("create.sh", "--queued", "--spot")
  assert queued[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "pod"]
  assert "--node-id=pod" in queued and "--spot" in queued


def test_install_copies_the_committed_tree_to_every_worker():
  archive, scp, ssh = dry_run("install.sh", "--source", os.path.dirname(SCRIPTS))
  assert archive[:3] == ["git", "-C", os.path.dirname(SCRIPTS)] and "HEAD" in archive
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
  assert "--worker=all" in ssh
  assert "jax[tpu]" in ssh_command(ssh) and "pip install ./jaxgen-src.tar.gz" in ssh_command(ssh)


def test_launch_runs_the_same_train_command_on_all_workers():
  [ssh] = dry_run(
    "launch.sh",
    "--config",
    "configs/t2m_mdm_humanml3d.py",
    "--workdir",
    "gs://b/run",
    "--",
    "train.batch_size=256",
    "mesh_shape=(1, 32, 1)",
  )
  assert "--worker=all" in ssh
  remote = shlex.split(ssh_command(ssh))
  train = remote[remote.index("jaxgen") : remote.index(">")]
  assert train == [
    "jaxgen",
    "train",
    "--distributed",
    "--config",
    "configs/t2m_mdm_humanml3d.py",
    "--workdir",
    "gs://b/run",
    "train.batch_size=256",
    "mesh_shape=(1, 32, 1)",
  ]


def test_tail_stop_and_copy():
  [tail] = dry_run("tail.sh", "--worker", "3")
  assert "--worker=3" in tail and "jaxgen_train.log" in ssh_command(tail)
  stop, delete = dry_run("stop.sh", "--delete")
  assert "pkill" in ssh_command(stop) and delete[4:6] == ["delete", "pod"]
  [sync] = dry_run("copy_checkpoints.sh", "--workdir", "gs://b/run", "--dest", "/tmp/run")
  assert sync == ["gcloud", "storage", "rsync", "--recursive", "gs://b/run", "/tmp/run"]


@pytest.mark.parametrize(
  "script, args, message",
  [
    ("create.sh", ["--zone", "z"], "--name is required"),
    ("create.sh", ["--name", "n", "--zone", "z", "--bogus"], "unknown argument --bogus"),
    ("install.sh", ["--name", "n", "--zone", "z"], "give --source DIR or --git URL"),
    ("launch.sh", ["--name", "n", "--zone", "z", "--workdir", "gs://b"], "--config is required"),
    ("tail.sh", ["--name", "n", "--zone", "z", "--worker", "x"], "--worker must be"),
  ],
)
def test_bad_arguments_print_usage_and_fail(script, args, message):
  result = subprocess.run(
    ["bash", os.path.join(SCRIPTS, script), *args, "--dry-run"],
    capture_output=True,
    text=True,
    timeout=30,
  )
  assert result.returncode == 2
  assert message in result.stderr and "usage:" in result.stderr


def test_scripts_are_strict_executable_and_documented():
  for name in sorted(os.listdir(SCRIPTS)):
    path = os.path.join(SCRIPTS, name)
    text = open(path).read()
    if name == "common.sh":  # sourced, not run
      continue
    assert os.access(path, os.X_OK), name
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text, name
    assert "usage()" in text, name
    assert subprocess.run(["bash", "-n", path]).returncode == 0, name


def test_readme_commands_dry_run():
  """Each tpu_scripts command of the README, as written, with --dry-run: the gcloud it would run."""
  commands = readme_argv("tpu_scripts/")
  assert len(commands) == 6
  for script, *args in commands:
    result = subprocess.run(
      ["bash", os.path.join(os.path.dirname(SCRIPTS), script), *args, "--dry-run"],
      capture_output=True,
      text=True,
      timeout=30,
      env=dict(os.environ, PATH="/usr/bin:/bin"),
    )
    assert result.returncode == 0, (script, result.stderr)
    printed = result.stdout.splitlines()
    assert printed and all(shlex.split(line)[0] in ("gcloud", "git") for line in printed), printed
