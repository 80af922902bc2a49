"""A run directory that loses nothing: its config revisions and its writer lock.

Layout (beside the orbax checkpoints of `jaxgen.training.checkpoint`)::

    workdir/
      config.json        the config the run was started with; never rewritten once
                         the run has a checkpoint
      config.1.json      revision 1: the config of the first resume that changed it
      config.2.json      revision 2, ... (each holds the whole config, as config.json)
      train.lock         the live writer: {"host", "pid", "started", "token"} (JSON)
      checkpoints/       orbax steps; each step's `meta` holds the config it was saved with

Config revisions. A resume compares its config with the newest revision. Keys
in `may_change` (the trainer passes `jaxgen.training.config.RESUME_MAY_CHANGE`:
steps, time budget, logging, checkpoint cadence, mesh) are how a user extends
or finishes a run and change freely. Any other key (architecture, data,
optimizer, seed, ...) is a `RunConfigMismatchError` listing every differing
key as `old -> new`, unless the caller passes `allow_change=True`
(`jaxgen train --allow-config-change`). Either way a changed config is
written as the next revision `config.<n>.json`, the files before it are kept,
and the trainer writes it only once the newest checkpoint has restored under
it: `load_run_config(workdir)` (the newest revision, what `jaxgen sample`
reads) always fits the newest checkpoint. Which step a revision started at is
in the `config` each checkpoint's `meta` holds. A directory without a
checkpoint holds no run yet: its config files are replaced.

The lock. `RunLock(workdir)` creates `train.lock` atomically (a hard link of a
complete file) and removes it on exit. A lock whose holder is a dead process
on this host is stale and taken over with a warning; a live holder, or one on
another host (which cannot be checked from here), is a `RunLockedError`
naming it and how to remove it. On remote paths (`gs://`) the lock is a
best-effort check-then-write. In a multi-process run only process 0 locks.

Every check here runs before the trainer writes anything, and every error is
a `RunDirectoryError` (a `ValueError`) that names the path, what was found
and the fix.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import socket
import uuid
from typing import Any, Collection, Mapping

import ml_collections
from etils import epath

from jaxgen.training.checkpoint import CHECKPOINT_SUBDIR

CONFIG_FILE = "config.json"
LOCK_FILE = "train.lock"
_REVISION = re.compile(r"^config\.(\d+)\.json$")
_ABSENT = "<absent>"


class RunDirectoryError(ValueError):
  """A run directory cannot be used as asked; the message names the path and the fix."""


class WorkdirError(RunDirectoryError):
  """The workdir is a file, or it (or the folder that would hold it) is not writable."""


class RunConfigFileError(RunDirectoryError):
  """A run's config file is not a JSON object."""


class RunConfigMismatchError(RunDirectoryError):
  """A resume's config differs from the run's in keys that may not change silently."""


class RunLockedError(RunDirectoryError):
  """Another process (or an unverifiable one) holds the run directory's lock."""


def _is_remote(workdir: str) -> bool:
  return "://" in os.fspath(workdir)


# ---------------------------------------------------------------------------
# The workdir itself.


def check_workdir(workdir: str) -> None:
  """A `WorkdirError` if `workdir` is a file or cannot be created or written; writes nothing."""
  if _is_remote(workdir):
    return  # object stores have no files in the way nor permission bits to read
  path = os.path.abspath(os.fspath(workdir))
  fix = "pass another --workdir (train(..., workdir=...))"
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(
      f"workdir {workdir!r} is a file, not a directory: {fix}, or move the file away"
    )
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise WorkdirError(
      f"workdir {workdir!r} cannot be created: {existing!r} is a file, not a directory; {fix}"
    )
  if not os.access(existing, os.W_OK | os.X_OK):
    what = "is not writable" if existing == path else f"cannot be created in {existing!r}"
    raise WorkdirError(
      f"workdir {workdir!r} {what} by this user: grant write permission "
      f"(chmod u+w {existing!r}) or {fix}"
    )


def make_workdir(workdir: str) -> bool:
  """Creates `workdir` (and parents); True if it did not exist. File-system errors are named."""
  path = epath.Path(workdir)
  existed = path.exists()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise WorkdirError(
      f"workdir {os.fspath(workdir)!r} cannot be created ({type(e).__name__}: {e}): "
      "check the permissions of its parent or pass another --workdir"
    ) from e
  return not existed


def remove_if_empty(workdir: str) -> None:
  """Removes a workdir this run created if a failed check left it empty."""
  path = epath.Path(workdir)
  if path.is_dir() and not any(path.iterdir()):
    path.rmdir()


def has_checkpoints(workdir: str) -> bool:
  """Whether the run directory holds any checkpoint step (orbax names them by number)."""
  path = epath.Path(workdir) / CHECKPOINT_SUBDIR
  return path.is_dir() and any(p.name.isdigit() for p in path.iterdir())


# ---------------------------------------------------------------------------
# Config revisions.


def config_paths(workdir: str) -> list[epath.Path]:
  """The run's config files, oldest first: config.json, config.1.json, config.2.json, ..."""
  root = epath.Path(workdir)
  if not root.is_dir():
    return []
  revisions = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _REVISION.match(p.name)))
  original = root / CONFIG_FILE
  return ([original] if original.is_file() else []) + [p for _, p in revisions]


def read_config_file(path: epath.Path | str) -> ml_collections.ConfigDict:
  """One config file of a run, with a `RunConfigFileError` naming it if it is not JSON."""
  path = epath.Path(path)
  try:
    values = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise RunConfigFileError(
      f"{os.fspath(path)} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}): "
      "restore it from a backup, or from the `config` in a checkpoint's "
      f"{CHECKPOINT_SUBDIR}/<step>/meta"
    ) from e
  if not isinstance(values, dict):
    raise RunConfigFileError(
      f"{os.fspath(path)}: expected a JSON object (a config), found {type(values).__name__}"
    )
  return ml_collections.ConfigDict(values)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config of a run directory's newest checkpoint: its newest config revision."""
  paths = config_paths(workdir)
  if not paths:
    raise FileNotFoundError(
      f"checkpoint directory {os.fspath(workdir)!r} has no {CONFIG_FILE}: "
      "is it a jaxgen run directory?"
    )
  return read_config_file(paths[-1])


def _plain(config: Mapping[str, Any] | ml_collections.ConfigDict) -> dict:
  """`config` as its JSON file holds it (tuples as lists), so both sides compare alike."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(dict(config), default=str))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping) and value:
      flat.update(_flatten(value, name + "."))
    else:
      flat[name] = value
  return flat


def config_changes(old, new) -> dict[str, tuple[Any, Any]]:
  """{dotted key: (old value, new value)} of every differing key; `<absent>` where one lacks it."""
  old, new = _flatten(_plain(old)), _flatten(_plain(new))
  return {
    key: (old.get(key, _ABSENT), new.get(key, _ABSENT))
    for key in sorted(set(old) | set(new))
    if old.get(key, _ABSENT) != new.get(key, _ABSENT)
  }


def _describe(changes: Mapping[str, tuple[Any, Any]]) -> str:
  return "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())


def check_resume_config(
  workdir: str,
  config: ml_collections.ConfigDict,
  *,
  may_change: Collection[str] = (),
  allow_change: bool = False,
) -> dict[str, tuple[Any, Any]]:
  """The changes of `config` against the run's newest config revision, if the run may resume.

  Returns {} for a directory without a checkpoint (nothing to resume) or an
  unchanged config. Reads only. Raises `RunConfigMismatchError` when a key
  outside `may_change` differs and `allow_change` is False.
  """
  paths = config_paths(workdir)
  if not paths or not has_checkpoints(workdir):
    return {}
  changes = config_changes(read_config_file(paths[-1]), config)
  guarded = {k: v for k, v in changes.items() if k not in may_change}
  if guarded and not allow_change:
    raise RunConfigMismatchError(
      f"{os.fspath(paths[-1])}: the run in {os.fspath(workdir)!r} was trained with another "
      f"config; resuming would change {_describe(guarded)}. Resume with the run's config, "
      "train into a new --workdir, or pass --allow-config-change (train(..., "
      f"allow_config_change=True)) to record it as revision config.{len(paths)}.json. Keys "
      f"that may change on resume without it: {', '.join(sorted(may_change)) or 'none'}"
    )
  return changes


def record_run_config(workdir: str, config: ml_collections.ConfigDict) -> epath.Path | None:
  """Writes `config` where the run keeps it; returns the file written (None: unchanged).

  A run with a checkpoint gets a new revision `config.<n>.json` if `config`
  differs from its newest one; a directory without a checkpoint gets
  `config.json` and loses any older config files. Call `check_resume_config`
  first (it raises; this writes). Single-writer: call it on process 0.
  """
  root = epath.Path(workdir)
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  paths = config_paths(workdir)
  if not has_checkpoints(workdir):
    if paths and paths[0].read_text() != text:
      logging.warning("%s has no checkpoint yet: its config files are replaced", workdir)
    for revision in paths[1:]:
      revision.unlink()
    target = root / CONFIG_FILE
  elif not paths:
    target = root / CONFIG_FILE
  else:
    changes = config_changes(read_config_file(paths[-1]), config)
    if not changes:
      return None
    target = root / f"config.{len(paths)}.json"
    logging.warning(
      "the config changed on resume (%s); written as revision %s, the earlier ones are kept",
      _describe(changes),
      target,
    )
  if target.exists() and target.read_text() == text:
    return None
  _write_atomically(target, text)
  return target


def _write_atomically(path: epath.Path, text: str) -> None:
  """Whole file or none: a crash mid-write never leaves a truncated config."""
  tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
  tmp.write_text(text)
  tmp.replace(path)


# ---------------------------------------------------------------------------
# The writer lock.


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, owned by another user
    return True
  return True


class RunLock:
  """`train.lock` in a run directory: one writer at a time. Use as a context manager.

  `enabled=False` (processes other than 0 of a multi-process run) makes it a
  no-op: the run is shared, process 0 holds the lock for all of them.
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.workdir = os.fspath(workdir)
    self.path = epath.Path(workdir) / LOCK_FILE
    self.enabled = enabled
    self._record = dict(
      host=socket.gethostname(),
      pid=os.getpid(),
      started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      token=uuid.uuid4().hex,
    )
    self._held = False

  def __enter__(self) -> RunLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def acquire(self) -> None:
    """Takes the lock, taking over a stale one; `RunLockedError` if someone holds it."""
    if not self.enabled:
      return
    text = json.dumps(self._record, indent=2)
    for _ in range(3):  # a stale lock taken over, then a race lost: try again
      if self._create(text):
        self._held = True
        return
      holder = self._read_holder()
      if holder is None:
        continue  # released between our attempt and the read
      self._refuse_unless_stale(holder)
      self._take_over(holder)
    raise RunLockedError(
      f"{self.path}: could not take the lock (another process keeps taking it); "
      "is another `jaxgen train` starting on this workdir?"
    )

  def release(self) -> None:
    """Removes the lock if it is still this process's (idempotent)."""
    if not self._held:
      return
    self._held = False
    holder = self._read_holder()
    if holder is not None and holder.get("token") == self._record["token"]:
      self.path.unlink(missing_ok=True)

  def _create(self, text: str) -> bool:
    """Atomically creates the lock file holding `text`; False if it exists."""
    try:
      if _is_remote(self.workdir):
        if self.path.exists():
          return False
        self.path.write_text(text)
        return True
      # A complete temporary file hard-linked into place: the lock never exists half-written.
      tmp = self.path.parent / f".{LOCK_FILE}.{self._record['token']}.tmp"
      tmp.write_text(text)
      try:
        os.link(tmp, self.path)
      except FileExistsError:
        return False
      finally:
        tmp.unlink(missing_ok=True)
      return True
    except FileExistsError:
      return False
    except OSError as e:
      raise WorkdirError(
        f"workdir {self.workdir!r} is not writable ({type(e).__name__}: {e}): grant write "
        "permission or pass another --workdir"
      ) from e

  def _read_holder(self) -> dict | None:
    try:
      text = self.path.read_text()
    except FileNotFoundError:
      return None
    try:
      holder = json.loads(text)
    except json.JSONDecodeError:
      holder = None
    if not isinstance(holder, dict) or not {"host", "pid"} <= set(holder):
      raise RunLockedError(
        f"{self.path} is not a lock jaxgen wrote ({text[:80]!r}): if no `jaxgen train` "
        f"runs on this workdir, delete it (rm {self.path})"
      )
    return holder

  def _refuse_unless_stale(self, holder: dict) -> None:
    who = f"pid {holder['pid']} on host {holder['host']!r} (since {holder.get('started', '?')})"
    if holder["host"] != socket.gethostname():
      raise RunLockedError(
        f"{self.path}: the run is locked by {who}, another host, whose process cannot be "
        f"checked from here: if no `jaxgen train` runs there on this workdir, delete the "
        f"lock (rm {self.path}) and start again"
      )
    if _pid_alive(int(holder["pid"])):
      raise RunLockedError(
        f"{self.path}: the run is locked by {who}, a live process: wait for it to finish, "
        f"stop it, or train into another --workdir"
      )

  def _take_over(self, stale: dict) -> None:
    """Removes the stale lock `stale`, but only if the file still is that lock."""
    aside = self.path.parent / f".{LOCK_FILE}.{self._record['token']}.stale"
    try:
      self.path.rename(aside)
    except FileNotFoundError:
      return  # someone else removed it first
    moved = json.loads(aside.read_text())
    if moved != stale:
      # We moved a fresh lock another process had just taken: put it back, it holds the run.
      aside.rename(self.path)
      return
    aside.unlink(missing_ok=True)
    logging.warning(
      "%s: took over a stale lock of pid %s on host %r (since %s; that process is gone)",
      self.path,
      stale["pid"],
      stale["host"],
      stale.get("started", "?"),
    )
