"""Joining a multi-process (multi-host) JAX run before anything touches a device.

On a TPU pod slice `jax.distributed.initialize()` finds the coordinator and
the process id itself (from the TPU metadata), so `jaxgen train --distributed`
is all a worker needs. Elsewhere (GPU clusters, CPU processes on one machine
for tests) the coordinator address, the process count and this process's id
are given explicitly.
"""

from __future__ import annotations

import dataclasses
import logging

import jax


class DistributedConfigError(ValueError):
  """The multi-process settings are inconsistent."""


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """How this process joins the run.

  Attributes:
    enabled: join a multi-process run at all.
    coordinator_address: "host:port" of process 0's coordination service;
      None lets JAX detect it (TPU pods, SLURM, Open MPI).
    num_processes: total number of processes; None = detect.
    process_id: this process's index in [0, num_processes); None = detect.
  """

  enabled: bool = False
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  def __post_init__(self):
    explicit = (self.coordinator_address, self.num_processes, self.process_id)
    if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
      raise DistributedConfigError(
        "coordinator address, number of processes and process id must be given together "
        f"(or all left to auto-detection), got coordinator_address="
        f"{self.coordinator_address!r}, num_processes={self.num_processes}, "
        f"process_id={self.process_id}"
      )
    if self.num_processes is not None and self.num_processes < 1:
      raise DistributedConfigError(f"num_processes must be >= 1, got {self.num_processes}")
    if self.process_id is not None and not 0 <= self.process_id < self.num_processes:
      raise DistributedConfigError(
        f"process_id must be in [0, {self.num_processes}), got {self.process_id}"
      )
    if self.coordinator_address is not None and ":" not in self.coordinator_address:
      raise DistributedConfigError(
        f"coordinator_address must be host:port, got {self.coordinator_address!r}"
      )


def initialize(config: DistributedConfig) -> None:
  """Calls `jax.distributed.initialize` when `config.enabled` (once per process).

  Must run before the first JAX computation. CPU processes exchange data
  through gloo collectives (the default CPU backend has none across
  processes).
  """
  if not config.enabled:
    return
  # Only the CPU backend reads this; TPU and GPU bring their own collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=config.coordinator_address,
    num_processes=config.num_processes,
    process_id=config.process_id,
  )
  logging.info(
    "process %d of %d joined; %d local and %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
