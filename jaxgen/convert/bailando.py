"""Bailando checkpoints (lisiyao21/Bailando) <-> jaxgen params, both ways.

Two reference modules, each a strict table `{torch name: (jaxgen path, layout)}`:

- `SepVQVAER` (`models/sep_vqvae_root.py`) <-> `jaxgen.models.bailando_vq.BailandoVQVAE`:
  `vqvae_up` / `vqvae_down` are the upper and lower halves, `vqvae_down.decoders_root.0`
  the root branch. The openai/jukebox conv stacks nest Sequentials: an encoder's
  `level_blocks.0.model.<i>` is (down conv `.0`, Resnet1D `.1`) for i < down_t and its
  output conv at i = down_t; a decoder's `level_blocks.0.model.0` is its input conv and
  `.<i + 1>` is (Resnet1D `.0`, ConvTranspose1d `.1`); a residual block's convs are
  `model.1` and `model.3` (ReLUs between). Conv1d weights are (out, in, k) there, flax
  (k, in, out); ConvTranspose1d weights are (in, out, k), flax (k, in, out) flipped in time.
  The codebook is the buffer `bottleneck.level_blocks.0.k`; jukebox keeps its EMA sums
  off the state dict, so reading one sets code_sum = k, code_count = 1, initialized = 1
  (a trained codebook, each row its own mean), and writing one keeps only `k`.
- `CrossCondGPT2` (`models/cross_cond_gpt2.py`) <-> `jaxgen.models.bailando_gpt.BailandoGPT`:
  `gpt_base` holds the embeddings and base blocks, `gpt_head` the head blocks, `ln_f`
  and the two bias-free heads; a block's attention is `attn.key|query|value|proj`, its
  MLP `mlp.0` and `mlp.2`; `pos_emb` is (1, 3·block_size, C) there, (3·block_size, C)
  here. Each attention's causal-mask buffer `attn.mask` is a constant: skipped on the way
  in, left out on the way out (add the module's own to load with `strict=True`).

A training checkpoint (`epoch_<n>.pt`) holds the state dict under `model`, its keys
wrapped in `module.` by DataParallel; `load_bailando_checkpoint` unwraps both, from a
`.pt` (`torch.load(weights_only=True)`, torch optional) or a `.safetensors` file.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.convert.edge import unwrapped_state_dict
from jaxgen.convert.keymap import BIAS, KeyMap, LeafRule, flatten, format_names, to_numpy, unflatten
from jaxgen.convert.torch_state_dict import StateDictMismatchError, read_state_dict
from jaxgen.models.bailando_gpt import BailandoGPT, BailandoGPTConfig
from jaxgen.models.bailando_vq import BailandoVQConfig, BailandoVQVAE

Path = tuple[str, ...]
Table = dict[str, tuple[Path, LeafRule]]

KINDS = ("vq", "gpt")
CHECKPOINT_KEY = "model"
MASK_SUFFIX = ".attn.mask"

CONV1D = LeafRule(
  "kernel",
  3,
  "weight",
  lambda k: k.transpose(2, 1, 0),
  lambda w: w.transpose(2, 1, 0),
  lambda s: s[::-1],
  "Conv (k, in, out) <-> Conv1d (out, in, k)",
)
CONV_TRANSPOSE1D = LeafRule(
  "kernel",
  3,
  "weight",
  lambda k: k[::-1].transpose(1, 2, 0),
  lambda w: w.transpose(2, 0, 1)[::-1],
  lambda s: (s[1], s[2], s[0]),
  "ConvTranspose (k, in, out), time-flipped <-> ConvTranspose1d (in, out, k)",
)
CODEBOOK = LeafRule("codebook", 2, "k", lambda x: x, lambda x: x, tuple, "codebook <-> buffer k")
POSITIONS = LeafRule(
  "pos_emb",
  2,
  "pos_emb",
  lambda x: x[None],
  lambda x: x[0],
  lambda s: (1, *s),
  "(n, C) <-> (1, n, C)",
)


# -- the tables ------------------------------------------------------------------------------


def _conv(table: Table, torch_module: str, path: Path, kernel: LeafRule = CONV1D) -> None:
  table[f"{torch_module}.weight"] = (path + ("kernel",), kernel)
  table[f"{torch_module}.bias"] = (path + ("bias",), BIAS)


def _resnet(table: Table, torch_module: str, path: Path, depth: int) -> None:
  for j in range(depth):
    block = f"{torch_module}.model.{j}.model"
    _conv(table, f"{block}.1", path + (f"blocks_{j}", "conv1"))
    _conv(table, f"{block}.3", path + (f"blocks_{j}", "conv2"))


def _encoder(table: Table, torch_module: str, path: Path, config: BailandoVQConfig) -> None:
  stack = f"{torch_module}.level_blocks.0.model"
  for i in range(config.down_t):
    _conv(table, f"{stack}.{i}.0", path + (f"down_{i}",))
    _resnet(table, f"{stack}.{i}.1", path + (f"resnet_{i}",), config.depth)
  _conv(table, f"{stack}.{config.down_t}", path + ("conv_out",))


def _decoder(table: Table, torch_module: str, path: Path, config: BailandoVQConfig) -> None:
  stack = f"{torch_module}.level_blocks.0.model"
  _conv(table, f"{stack}.0", path + ("conv_in",))
  for i in range(config.down_t):
    _resnet(table, f"{stack}.{i + 1}.0", path + (f"resnet_{i}",), config.depth)
    _conv(table, f"{stack}.{i + 1}.1", path + (f"up_{i}",), CONV_TRANSPOSE1D)
  _conv(table, f"{torch_module}.out", path + ("conv_out",))


def vq_table(config: BailandoVQConfig) -> Table:
  """Every `SepVQVAER` state-dict name -> its `BailandoVQVAE` parameter path and layout."""
  table: Table = {}
  for half, torch_half in (("upper", "vqvae_up"), ("lower", "vqvae_down")):
    _encoder(table, f"{torch_half}.encoders.0", (half, "encoder"), config)
    _decoder(table, f"{torch_half}.decoders.0", (half, "decoder"), config)
    table[f"{torch_half}.bottleneck.level_blocks.0.k"] = ((half, "quantizer", "codebook"), CODEBOOK)
  _decoder(table, "vqvae_down.decoders_root.0", ("root_decoder",), config)
  return table


def gpt_keymap(config: BailandoGPTConfig) -> KeyMap:
  """jaxgen `BailandoGPT` module names -> the reference's (stream roles, the base/head split)."""
  renames = {
    "cond_emb": "gpt_base.cond_emb",
    "tok_emb_upper": "gpt_base.tok_emb_up",
    "tok_emb_lower": "gpt_base.tok_emb_down",
    "ln_f": "gpt_head.ln_f",
    "head_upper": "gpt_head.head_up",
    "head_lower": "gpt_head.head_down",
    "to_k": "key",
    "to_q": "query",
    "to_v": "value",
    "to_out": "proj",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
  }
  renames.update(
    {f"base_blocks_{i}": f"gpt_base.blocks.{i}" for i in range(config.num_base_layers)}
  )
  renames.update(
    {f"head_blocks_{i}": f"gpt_head.blocks.{i}" for i in range(config.num_head_layers)}
  )
  return KeyMap(renames=renames)


def gpt_table(config: BailandoGPTConfig) -> Table:
  """Every `CrossCondGPT2` parameter name (no mask buffers) -> its `BailandoGPT` path and layout."""
  keymap = gpt_keymap(config)
  table: Table = {"gpt_base.pos_emb": (("pos_emb",), POSITIONS)}
  for path, shape in gpt_param_shapes(config).items():
    if path != ("pos_emb",):
      table[keymap.torch_name(path, len(shape))] = (path, keymap.rule(path, len(shape)))
  return table


@functools.lru_cache(maxsize=8)
def vq_param_shapes(config: BailandoVQConfig) -> dict[Path, tuple[int, ...]]:
  """{path: shape} of every `BailandoVQVAE` parameter, traced without computing."""
  motion = jnp.zeros((1, config.downsample, config.motion_dim))
  shapes = jax.eval_shape(BailandoVQVAE(config).init, jax.random.PRNGKey(0), motion)
  return {path: tuple(x.shape) for path, x in flatten(nn.meta.unbox(shapes)["params"]).items()}


@functools.lru_cache(maxsize=8)
def gpt_param_shapes(config: BailandoGPTConfig) -> dict[Path, tuple[int, ...]]:
  """{path: shape} of every `BailandoGPT` parameter, traced without computing."""
  codes, music = jnp.zeros((1, 1), jnp.int32), jnp.zeros((1, 1, config.music_dim))
  shapes = jax.eval_shape(BailandoGPT(config).init, jax.random.PRNGKey(0), codes, codes, music)
  return {path: tuple(x.shape) for path, x in flatten(nn.meta.unbox(shapes)["params"]).items()}


# -- the strict maps ---------------------------------------------------------------------------


def _state_dict(params: Mapping[str, Any], table: Table) -> dict[str, np.ndarray]:
  if set(params) == {"params"}:
    params = params["params"]
  flat = flatten(params)
  return {
    name: np.ascontiguousarray(rule.to_torch(np.asarray(flat[path])))
    for name, (path, rule) in table.items()
  }


def _params(
  state_dict: Mapping[str, Any], table: Table, shapes: Mapping[Path, tuple[int, ...]], model: str
) -> dict[Path, np.ndarray]:
  """Flat float32 params from a state dict; one `StateDictMismatchError` names every problem."""
  given = unwrapped_state_dict(state_dict)
  missing = [name for name in table if name not in given]
  unexpected = [name for name in given if name not in table]
  flat, bad_shapes = {}, []
  for name, (path, rule) in table.items():
    if name not in given:
      continue
    array = to_numpy(given[name])
    want = tuple(rule.torch_shape(shapes[path]))
    if array.shape != want:
      bad_shapes.append(f"  {name}: expected {want} (jaxgen {'/'.join(path)}), found {array.shape}")
      continue
    flat[path] = np.ascontiguousarray(rule.to_jax(array)).astype(np.float32)
  problems = [
    format_names(title, names, limit=10)
    for title, names in (("missing keys", missing), ("unexpected keys", unexpected))
    if names
  ]
  if bad_shapes:
    problems.append(f"shape mismatches ({len(bad_shapes)}):\n" + "\n".join(bad_shapes[:10]))
  if problems:
    raise StateDictMismatchError(f"state dict does not match {model}:\n" + "\n".join(problems))
  return flat


def vq_params_from_torch(state_dict: Mapping[str, Any], config: BailandoVQConfig) -> dict[str, Any]:
  """A `SepVQVAER` state dict (numpy or torch) -> `BailandoVQVAE` params (float32 numpy),
  each codebook restored as trained: code_sum = k, code_count = 1, initialized = 1."""
  flat = _params(state_dict, vq_table(config), vq_param_shapes(config), "Bailando's SepVQVAER")
  for half in ("upper", "lower"):
    codebook = flat[(half, "quantizer", "codebook")]
    flat[(half, "quantizer", "code_sum")] = codebook.copy()
    flat[(half, "quantizer", "code_count")] = np.ones(len(codebook), np.float32)
    flat[(half, "quantizer", "initialized")] = np.float32(1.0)
  return unflatten(flat)


def vq_state_dict(params: Mapping[str, Any], config: BailandoVQConfig) -> dict[str, np.ndarray]:
  """`BailandoVQVAE` params -> a `SepVQVAER` state dict (numpy; `load_state_dict(strict=True)`).
  The EMA statistics are dropped: the reference's state dict has only the codebooks `k`."""
  return _state_dict(params, vq_table(config))


def gpt_params_from_torch(
  state_dict: Mapping[str, Any], config: BailandoGPTConfig
) -> dict[str, Any]:
  """A `CrossCondGPT2` state dict (numpy or torch) -> `BailandoGPT` params (float32 numpy).
  The `attn.mask` buffers are skipped: jaxgen builds its mask from the positions."""
  state = {k: v for k, v in unwrapped_state_dict(state_dict).items() if not k.endswith(MASK_SUFFIX)}
  return unflatten(
    _params(state, gpt_table(config), gpt_param_shapes(config), "Bailando's CrossCondGPT2")
  )


def gpt_state_dict(params: Mapping[str, Any], config: BailandoGPTConfig) -> dict[str, np.ndarray]:
  """`BailandoGPT` params -> a `CrossCondGPT2` state dict (numpy) without the `attn.mask`
  buffers: add the reference module's own before `load_state_dict(strict=True)`."""
  return _state_dict(params, gpt_table(config))


# -- files -------------------------------------------------------------------------------------

_EXPECTED = "a Bailando checkpoint (epoch_<n>.pt with its 'model' state dict, or .safetensors)"


def load_bailando_checkpoint(
  path: str | os.PathLike, kind: str, config: BailandoVQConfig | BailandoGPTConfig
) -> dict[str, Any]:
  """A reference checkpoint file -> params of `BailandoVQVAE` (kind "vq") or `BailandoGPT` ("gpt").

  Named errors: `MissingWeightsError` for no such file, `UnreadableWeightsError` for a file
  neither safetensors nor weights-only torch reads, `StateDictMismatchError` listing
  missing and unexpected keys and wrong shapes.
  """
  readers = {
    "vq": (BailandoVQConfig, vq_params_from_torch),
    "gpt": (BailandoGPTConfig, gpt_params_from_torch),
  }
  if kind not in readers:
    raise ValueError(f"kind: expected one of {KINDS}, found {kind!r}")
  config_class, params_from_torch = readers[kind]
  if not isinstance(config, config_class):
    raise TypeError(
      f"config: expected a {config_class.__name__} for kind {kind!r}, found {type(config).__name__}"
    )
  state = read_state_dict(
    path,
    _EXPECTED,
    entry=CHECKPOINT_KEY,
    # The reference's training checkpoints also pickle their config (an easydict.EasyDict).
    if_refused="from a trusted source, re-save checkpoint['model'] alone or convert it to "
    ".safetensors",
  )
  return params_from_torch(state, config)
