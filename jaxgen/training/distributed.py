"""Joining a multi-process (multi-host) JAX run before anything touches a device.

On a TPU pod slice `jax.distributed.initialize()` finds the coordinator and
the process id itself (from the TPU metadata), so `jaxgen train --distributed`
is all a worker needs. Elsewhere (GPU clusters, CPU processes on one machine
for tests) the coordinator address, the process count and this process's id
are given explicitly.

`initialization_timeout` bounds the wait for the coordinator (and, on process
0, for the other processes to join). JAX aborts the whole process when it
runs out, so a process other than 0 first waits for the coordinator's port to
accept connections itself and raises a `CoordinatorTimeoutError` naming the
address if it never does; process 0 logs what it waits for before it waits.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time

import jax


class DistributedConfigError(ValueError):
  """The multi-process settings are inconsistent."""


class CoordinatorTimeoutError(TimeoutError, ValueError):
  """The coordinator did not answer within `initialization_timeout` seconds."""


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """How this process joins the run.

  Attributes:
    enabled: join a multi-process run at all.
    coordinator_address: "host:port" of process 0's coordination service;
      None lets JAX detect it (TPU pods, SLURM, Open MPI).
    num_processes: total number of processes; None = detect.
    process_id: this process's index in [0, num_processes); None = detect.
    initialization_timeout: seconds to wait for the coordinator and the
      other processes (`jaxgen train --coordinator-timeout`).
  """

  enabled: bool = False
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  initialization_timeout: int = 300

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
    timeout = self.initialization_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
      raise DistributedConfigError(
        f"initialization_timeout (--coordinator-timeout): expected a positive number of "
        f"seconds, got {timeout!r}"
      )
    address = self.coordinator_address
    if address is not None and not address.rpartition(":")[2].isdigit():
      raise DistributedConfigError(f"coordinator_address must be host:port, got {address!r}")


def initialize(config: DistributedConfig) -> None:
  """Calls `jax.distributed.initialize` when `config.enabled` (once per process).

  Must run before the first JAX computation. CPU processes exchange data
  through gloo collectives (the default CPU backend has none across
  processes).
  """
  if not config.enabled:
    return
  address, timeout = config.coordinator_address, config.initialization_timeout
  if address is not None and config.process_id != 0:
    start = time.monotonic()
    wait_for_coordinator(address, timeout)
    timeout = max(1, int(timeout - (time.monotonic() - start)))
  # Only the CPU backend reads this; TPU and GPU bring their own collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  logging.info(
    "joining the multi-process run%s; waiting up to %d s (--coordinator-timeout)",
    f" at coordinator {address}" if address else "",
    timeout,
  )
  jax.distributed.initialize(
    coordinator_address=address,
    num_processes=config.num_processes,
    process_id=config.process_id,
    initialization_timeout=timeout,
  )
  logging.info(
    "process %d of %d joined; %d local and %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def wait_for_coordinator(address: str, timeout: float, *, poll_seconds: float = 0.5) -> None:
  """Returns once `address` (host:port) accepts TCP connections, else `CoordinatorTimeoutError`."""
  host, _, port = address.rpartition(":")
  host = host.strip("[]")  # [::1]:1234
  deadline = time.monotonic() + timeout
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=poll_seconds):
        return
    except OSError as e:
      if time.monotonic() + poll_seconds > deadline:
        raise CoordinatorTimeoutError(
          f"--coordinator {address}: nothing answered there within {timeout:g} s "
          f"(--coordinator-timeout; last error: {e}). Start process 0 (--process-id 0) "
          "first, or check the host, port and firewall"
        ) from e
    time.sleep(poll_seconds)
