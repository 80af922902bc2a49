"""Runs the slowest test modules first, so the two xdist workers finish together.

Also the session fixtures that several modules share (`tiny_vqgan_workdir`).

With `--dist loadscope` each module goes whole to one worker, in collection
order (`--no-loadscope-reorder` keeps that order instead of xdist's "most
tests first"). A long module handed out last leaves the other worker idle
for its whole run: in one CI run, `test_multiprocess` (~6 min) started last
and the suite took 30.5 min for 19 min of work per core. Longest first is the
classic fix for packing jobs onto machines.
"""

import os
import shutil
import tempfile

import pytest

# One persistent XLA compilation cache for the whole session, in a fresh
# folder: tests (and the `jaxgen` processes they start) that compile the same
# program again (a resumed run, a second sampling call, another process on the
# same mesh) load it instead. It is set before any test imports jax; xdist
# workers and subprocesses inherit it through the environment, and the process
# that made the folder removes it at the end.
_SESSION_CACHE = "JAXGEN_TEST_COMPILATION_CACHE"
_OWNS_CACHE = not os.environ.get(_SESSION_CACHE)
if _OWNS_CACHE:
  os.environ[_SESSION_CACHE] = tempfile.mkdtemp(prefix="jaxgen-test-xla-cache-")
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ[_SESSION_CACHE]
# Only programs that took a second or more to compile, as `jaxgen --compilation-cache`
# does: writing every small program would cost more than it saves.
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "1"
# LLVM at -O0: the suite's programs are tiny and mostly compile once, so compile
# time dominates. Measured on 2 CPU cores: a tiny pix2pix run compiles its train
# state in 2.7 s instead of 24 s (its train step in 4.4 s instead of 10.6 s), and
# even the Inception/I3D/FVD metric modules, which run real convolutions, finish
# in 88 s instead of 111 s. Tests that start processes keep it when they add
# flags of their own.
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if _FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

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
  "test_bailando_task.py",
  "test_edge_task.py",
  "test_wav2lip_task.py",
  "test_difftalk.py",
  "test_text_to_video.py",
  "test_vqgan_task.py",
  "test_text_gan_tasks.py",
  "test_text_to_image_table.py",
  "test_vq_diffusion_task.py",
  "test_dalle_task.py",
  "test_maskgit_task.py",
  "test_clip_task.py",
  "test_video_unet.py",
  "test_vq_diffusion.py",
  "test_text_gans.py",
  "test_maskgit.py",
  "test_vqgan.py",
  "test_dalle.py",
  "test_wav2lip.py",
  "test_sd_finetune.py",
  "test_sdxl.py",
  "test_controlnet.py",
  "test_bbdm.py",
  "test_spade.py",
  "test_image_to_image.py",
  "test_cyclegan.py",
  "test_pix2pix.py",
  "test_palette.py",
)


def _module_rank(item) -> int:
  name = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
  return SLOWEST_MODULES.index(name) if name in SLOWEST_MODULES else len(SLOWEST_MODULES)


def pytest_collection_modifyitems(items):
  items.sort(key=_module_rank)  # stable: tests keep their order within a module


@pytest.fixture(scope="session")
def tiny_vqgan_workdir(tmp_path_factory) -> str:
  """A two-step tiny `vqgan` run (8×8 shapes -> 4×4 codes of 16), once per worker."""
  from tiny_vqgan import train_tiny_vqgan  # pylint: disable=g-import-not-at-top

  return train_tiny_vqgan(str(tmp_path_factory.mktemp("tiny_vqgan")))


def pytest_unconfigure(config):
  del config
  if _OWNS_CACHE:
    shutil.rmtree(os.environ[_SESSION_CACHE], ignore_errors=True)
