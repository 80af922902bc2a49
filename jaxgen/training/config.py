"""The trainer's settings: every config key it reads, its default and its checks.

`train(task, config, workdir)`, `create_state` and `jit_train_step` read only
the keys below from an experiment config (the task reads its own sections).
A key the config leaves out takes its default; a key marked REQUIRED has
none, and its absence is a `TrainerConfigError` naming it. Values are checked
before anything compiles; an unknown key in `train`, `optim` or `checkpoint`
(e.g. a typo) is an error too.

  seed                        0         PRNG seed of init, data order and the step RNG
  mesh_shape                  None      (data, fsdp, tensor) device counts; None: all on data
  train.batch_size            REQUIRED  global batch, all processes together
  train.num_steps             REQUIRED  updates in the run; the learning-rate decay is
                                        planned for this many
  train.max_minutes           None      wall-clock cap of the loop (compilation excluded);
                                        a run it stops early logs that its decay was cut
  train.max_cpu_minutes       None      process CPU-time cap of the loop (all threads,
                                        compilation excluded): equal compute for runs
                                        compared on a shared machine
  train.log_every             50        steps between scalar logs (TensorBoard, progress bar)
  train.sample_every          0         steps between `task.preview` grids; 0: never
  train.ema_decay             0.999     EMA of the params, in [0, 1); 0 keeps a copy
  train.ema_warmup            10        EMA decay ramps as min(ema_decay, (1 + step) /
                                        (ema_warmup + step)); 0: constant ema_decay
  train.max_consecutive_skips 10        this many non-finite updates in a row stop the
                                        run (its last good state is saved); 0: never
  optim.learning_rate         REQUIRED  peak AdamW learning rate, > 0
  optim.warmup_steps          0         linear warm-up from 0 to the peak
  optim.decay                 "cosine"  after warm-up: "cosine" (to end_factor × peak at
                                        train.num_steps) or "constant"
  optim.end_factor            0.0       final learning rate / peak, for "cosine"
  optim.weight_decay          0.0       AdamW's decoupled weight decay
  optim.b1, optim.b2          0.9, 0.999  AdamW moment decays, in [0, 1)
  optim.eps                   1e-8      AdamW's epsilon, > 0
  optim.grad_clip_norm        1.0       clip gradients to this global norm; 0: no clipping
  optim.lr_multipliers        {}        top-level param key -> factor on its learning rate
                                        (e.g. {"discriminator": 4.0}: TTUR); others 1
  checkpoint.save_every       1000      steps between checkpoints (the last step is
                                        always saved)
  checkpoint.keep             3         newest checkpoints kept

`with_trainer_defaults(config)` returns a copy of `config` with these filled
in and checked; the trainer saves that copy as the run's `config.json`.

On resume, only the keys in `RESUME_MAY_CHANGE` may differ from the run's
config without `allow_config_change` (`jaxgen train --allow-config-change`):
they extend or finish a run (`train.num_steps`, `train.max_minutes`), change
what it logs (`train.log_every`, `train.sample_every`), how it saves
(`checkpoint.*`), when it gives up (`train.max_consecutive_skips`), where it
runs (`mesh_shape`: checkpoints are resharded as they are read) or what the
backward pass recomputes (`model.remat`, a task's model key read by
`jaxgen.nn.precision`: the same numbers, traded between memory and time; the
compute dtype `model.compute_dtype` changes the numbers and is guarded). Every other
key shapes the weights (architecture, data, optimizer, seed, batch) and a
change is refused by name (`jaxgen.training.run_directory`). Note that
extending `train.num_steps` also stretches the learning-rate decay planned
for it.
"""

from __future__ import annotations

import difflib
import numbers
from typing import Any, Mapping

import ml_collections

REQUIRED = object()  # marks a key without a default

# section -> key -> default (None: top-level keys).
DEFAULTS: dict[str | None, dict[str, Any]] = {
  None: dict(seed=0, mesh_shape=None),
  "train": dict(
    batch_size=REQUIRED,
    num_steps=REQUIRED,
    max_minutes=None,
    max_cpu_minutes=None,
    log_every=50,
    sample_every=0,
    ema_decay=0.999,
    ema_warmup=10,
    max_consecutive_skips=10,
  ),
  "optim": dict(
    learning_rate=REQUIRED,
    warmup_steps=0,
    decay="cosine",
    end_factor=0.0,
    weight_decay=0.0,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    grad_clip_norm=1.0,
    lr_multipliers={},
  ),
  "checkpoint": dict(save_every=1000, keep=3),
}
DECAYS = ("cosine", "constant")

# Keys a resume may change without `allow_config_change` (see the module docstring).
RESUME_MAY_CHANGE = frozenset(
  {
    "mesh_shape",
    "model.remat",
    "train.num_steps",
    "train.max_minutes",
    "train.max_cpu_minutes",
    "train.log_every",
    "train.sample_every",
    "train.max_consecutive_skips",
    "checkpoint.save_every",
    "checkpoint.keep",
  }
)


class TrainerConfigError(ValueError):
  """A trainer setting is missing, unknown or out of range."""


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


# key -> (test, what a valid value is). Keys not listed take any value.
_CHECKS = {
  "seed": (_is_int, "an int"),
  "mesh_shape": (
    lambda v: (
      v is None
      or (isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_int(s) and s > 0 for s in v))
    ),
    "None or three positive ints (data, fsdp, tensor)",
  ),
  "train.batch_size": (lambda v: _is_int(v) and v > 0, "a positive int"),
  "train.num_steps": (lambda v: _is_int(v) and v > 0, "a positive int"),
  "train.max_minutes": (
    lambda v: v is None or (_is_real(v) and v > 0),
    "None or a positive number of minutes",
  ),
  "train.max_cpu_minutes": (
    lambda v: v is None or (_is_real(v) and v > 0),
    "None or a positive number of CPU minutes",
  ),
  "train.log_every": (lambda v: _is_int(v) and v > 0, "a positive int"),
  "train.sample_every": (lambda v: _is_int(v) and v >= 0, "an int >= 0 (0: never)"),
  "train.ema_decay": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
  "train.ema_warmup": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
  "train.max_consecutive_skips": (lambda v: _is_int(v) and v >= 0, "an int >= 0 (0: never)"),
  "optim.learning_rate": (lambda v: _is_real(v) and v > 0, "a number > 0"),
  "optim.warmup_steps": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
  "optim.decay": (lambda v: v in DECAYS, f"one of {DECAYS}"),
  "optim.end_factor": (lambda v: _is_real(v) and v >= 0, "a number >= 0"),
  "optim.weight_decay": (lambda v: _is_real(v) and v >= 0, "a number >= 0"),
  "optim.b1": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
  "optim.b2": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
  "optim.eps": (lambda v: _is_real(v) and v > 0, "a number > 0"),
  "optim.grad_clip_norm": (lambda v: _is_real(v) and v >= 0, "a number >= 0 (0: no clipping)"),
  "optim.lr_multipliers": (
    lambda v: (
      hasattr(v, "items")
      and all(isinstance(k, str) and _is_real(f) and f > 0 for k, f in v.items())
    ),
    "a dict of top-level param key -> factor > 0",
  ),
  "checkpoint.save_every": (lambda v: _is_int(v) and v > 0, "a positive int"),
  "checkpoint.keep": (lambda v: _is_int(v) and v > 0, "a positive int"),
}


def _dotted(section: str | None, key: str) -> str:
  return key if section is None else f"{section}.{key}"


def fill_section(section: str, values: Mapping[str, Any] | None) -> ml_collections.ConfigDict:
  """`values` of one section (`train`, `optim`, `checkpoint`) with defaults filled in, checked."""
  values = dict(values or {})
  defaults = DEFAULTS[section]
  unknown = sorted(set(values) - set(defaults))
  if unknown:
    hints = [
      f"{section}.{k}"
      + (
        f" (did you mean {section}.{m[0]}?)"
        if (m := difflib.get_close_matches(k, defaults, 1))
        else ""
      )
      for k in unknown
    ]
    raise TrainerConfigError(
      f"unknown trainer setting(s) {', '.join(hints)}; the keys of `{section}` are "
      f"{sorted(defaults)} (see jaxgen.training.config)"
    )
  filled = {}
  for key, default in defaults.items():
    name = _dotted(section, key)
    if key not in values and default is REQUIRED:
      raise TrainerConfigError(
        f"{name}: required by the trainer and not set in the config "
        "(see jaxgen.training.config for every key and default)"
      )
    filled[key] = values.get(key, default)
    _check(name, filled[key])
  return ml_collections.ConfigDict(filled)


def _check(name: str, value: Any) -> None:
  test, expected = _CHECKS[name]
  if not test(value):
    raise TrainerConfigError(f"{name}: expected {expected}, found {value!r}")


def with_trainer_defaults(
  config: Mapping[str, Any] | ml_collections.ConfigDict,
) -> ml_collections.ConfigDict:
  """A copy of `config` with every trainer key (see the module docstring) filled in and checked.

  Other sections (the task's) are copied unchanged. Idempotent.
  """
  config = ml_collections.ConfigDict(config).to_dict()  # a deep copy, as plain dicts
  out = ml_collections.ConfigDict(config)
  for key, default in DEFAULTS[None].items():
    out[key] = config.get(key, default)
    _check(key, out[key])
  for section in ("train", "optim", "checkpoint"):
    values = config.get(section)
    if values is not None and not isinstance(values, Mapping):
      raise TrainerConfigError(
        f"{section}: expected a section of settings (a dict), found {values!r}"
      )
    out[section] = fill_section(section, values)
  return out
