"""diffusers `VQModel` state dicts <-> jaxgen `VQModel` params.

Encoder, decoder and the 1x1 quant convs follow the KL autoencoder's key map
(`jaxgen.convert.diffusers_vae.VAE_KEYMAP`: ModuleList segments only). The
one extra tensor is the codebook, jaxgen `quantizer/codebook` (K, D) <->
diffusers `quantize.embedding.weight` (K, D), unchanged.

An EMA-codebook model (`codebook_update="ema"`) also holds its cluster
statistics; diffusers has none, so `vqmodel_to_diffusers` drops them and
`vqmodel_from_diffusers` starts them from the loaded codebook (each code a
cluster of count 1 at its row, marked initialised), so EMA training continues
from the converted codebook instead of re-initialising it from a batch.

Example:
  config = VQModelConfig.from_diffusers(json.load(open("vqvae/config.json")))
  params = vqmodel_from_diffusers(safetensors.numpy.load_file(".../diffusion_pytorch_model.safetensors"), config)
  reconstruction, out = VQModel(config).apply({"params": params}, images)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgen.convert.diffusers_vae import VAE_KEYMAP
from jaxgen.convert.keymap import (
  ConversionError,
  flatten,
  from_torch,
  to_numpy,
  to_torch,
  unflatten,
)
from jaxgen.models.vqgan import VQModelConfig, abstract_variables, check_codebook_update

CODEBOOK_KEY = "quantize.embedding.weight"
QUANTIZER = "quantizer"


def vqmodel_from_diffusers(
  state_dict: Mapping[str, Any], config: VQModelConfig, codebook_update: str = "learned"
) -> dict[str, Any]:
  """diffusers `VQModel` state dict (numpy arrays or torch tensors) -> unboxed jaxgen params.

  Host numpy float32 arrays for `VQModel(config, codebook_update).apply({"params": params}, ...)`.
  Strict: raises `ConversionError` listing missing/unexpected keys and shape mismatches.
  """
  ema = check_codebook_update(codebook_update) == "ema"
  template = dict(abstract_variables(config, codebook_update)["params"])
  quantizer_template = template.pop(QUANTIZER)
  state = dict(state_dict)
  codebook_leaf = quantizer_template["codebook"]
  want = tuple(getattr(codebook_leaf, "value", codebook_leaf).shape)  # boxed or not
  problems = []
  codebook = None
  if CODEBOOK_KEY not in state:
    problems.append(f"missing torch key {CODEBOOK_KEY} (for jaxgen {QUANTIZER}/codebook)")
  else:
    codebook = to_numpy(state.pop(CODEBOOK_KEY)).astype(np.float32)
    if codebook.shape != want:
      problems.append(f"{CODEBOOK_KEY}: expected {want}, found {codebook.shape}")
  try:
    params = from_torch(state, template, VAE_KEYMAP)
  except ConversionError as error:
    problems.append(str(error))
  if problems:
    raise ConversionError("\n".join(problems))
  quantizer = {"codebook": codebook}
  if ema:
    quantizer.update(
      code_sum=codebook.copy(),
      code_count=np.ones(want[0], np.float32),
      initialized=np.ones((), np.float32),
    )
  params[QUANTIZER] = quantizer
  return params


def vqmodel_to_diffusers(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """jaxgen `VQModel` params (boxed or unboxed, with or without "params") -> diffusers state dict.

  Loads into `diffusers.VQModel(**config.to_diffusers())` with `strict=True`
  (after `torch.from_numpy`); EMA statistics are dropped (see the module docstring).
  """
  if set(params) == {"params"}:
    params = params["params"]
  flat = flatten(params)
  codebook = [v for path, v in flat.items() if path == (QUANTIZER, "codebook")]
  if not codebook:
    raise ConversionError(f"params: expected a {QUANTIZER}/codebook entry, found none")
  rest = unflatten({path: v for path, v in flat.items() if path[0] != QUANTIZER})
  state = to_torch(rest, VAE_KEYMAP)
  state[CODEBOOK_KEY] = np.ascontiguousarray(np.asarray(codebook[0], np.float32))
  return state
