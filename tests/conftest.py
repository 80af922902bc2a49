"""Runs the slowest test modules first, so the two xdist workers finish together.

With `--dist loadscope` each module goes whole to one worker, in collection
order (`--no-loadscope-reorder` keeps that order instead of xdist's "most
tests first"). A long module handed out last leaves the other worker idle
for its whole run: in one CI run, `test_multiprocess` (~6 min) started last
and the suite took 30.5 min for 19 min of work per core. Longest first is the
classic fix for packing jobs onto machines.
"""

# Modules by measured wall time on the CI machine (2 cores), longest first; the
# rest keep their file order after these.
SLOWEST_MODULES = (
  "test_cli.py",  # trains every config: ~14 min
  "test_multiprocess.py",  # two-process, reshard and SIGKILL runs: ~6 min
  "test_training.py",
  "test_sharding.py",
  "test_checkpoint_integrity.py",
  "test_sd_pipeline.py",
  "test_benchmarks.py",
  "test_motion_gpt_task.py",
  "test_sd_finetune.py",
  "test_sdxl.py",
)


def _module_rank(item) -> int:
  name = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
  return SLOWEST_MODULES.index(name) if name in SLOWEST_MODULES else len(SLOWEST_MODULES)


def pytest_collection_modifyitems(items):
  items.sort(key=_module_rank)  # stable: tests keep their order within a module
