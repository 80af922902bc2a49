"""One tiny trained `vqgan` run that the token-prior task tests build on.

The priors (autoregressive, masked decoding, VQ-Diffusion) only need a
tokenizer whose codes are deterministic, not a good one: two steps of the
tiny `vqgan_shapes.py` config (8×8 images -> 4×4 codes of 16) are enough and
cost one compile of the VQGAN's train step per test module.
"""

from jaxgen.tasks.image.vqgan import VQGANTask
from jaxgen.training import trainer
from tiny_configs import tiny_config


def train_tiny_vqgan(workdir: str, *extra: str) -> str:
  """A two-step tiny `vqgan` run in `workdir` (8×8 shapes, 4×4 codes of 16); returns workdir."""
  config = tiny_config("vqgan_shapes.py", *extra)
  trainer.train(VQGANTask(config), config, workdir)
  return workdir
