"""AttnGAN on the built-in captioned shapes: two branches, 16×16 then 32×32 with word attention.

StackGAN++'s tree and settings (`stackgan_shapes.py`, built on here) with AttnGAN's changes: the second
branch attends from every pixel over the caption's word features of a frozen
DAMSM (`damsm.workdir`, a run of `configs/damsm_shapes.py`), the
discriminators are conditioned on its sentence feature, and the generator
also minimises λ = 5 times the DAMSM word + sentence losses of its images
(AttnGAN's bird_attn2.yml: λ 5, KL weight 1; its Adam β (0.5, 0.999), 2e-4 in
the reference and 5e-4 here for the short CPU budget; its 0.999 average of
the generator's weights).

Launch:
  jaxgen train --config configs/damsm_shapes.py --workdir runs/damsm_shapes
  jaxgen train --config configs/attngan_shapes.py --workdir runs/attngan_shapes \
      damsm.workdir=runs/damsm_shapes
  jaxgen sample --checkpoint runs/attngan_shapes --prompt "a small green square in the top left" \
      --out attngan.png
"""

import ml_collections

from jaxgen.configs import stackgan_shapes


def get_config() -> ml_collections.ConfigDict:
  c = stackgan_shapes.get_config()
  c.task = "attngan"
  c.loss = dict(damsm_weight=5.0, kl_weight=1.0)
  return c
