"""FID feature extraction: jaxgen's InceptionV3 vs pytorch-fid's, same weights, same CPU.

pytorch-fid's `InceptionV3([3])` (pool3, 2048-d) is built by pytorch-fid's
own code; only its weight download is replaced by a random state dict (no
network, no real weights here). jaxgen imports the same state dict with
`metric_networks.FID_INCEPTION.from_torch` and runs the jitted
`inception.inception_outputs`. Both take the same (N, H, W, 3) batch in
[0, 1] (NCHW for torch), resize it bilinearly to 299x299 and map it to [-1, 1].

Printed: per-image milliseconds (median and min of `--repeats` rounds after
one warm-up call, which also compiles jaxgen; the implementations take turns
within each round, so they share the same background load) and the ratio.
On CPU a third row compiles jaxgen with XLA's own options, which hand the
convolutions to YNNPACK: `inception.XLA_CPU_COMPILER_OPTIONS` keeps them on
Eigen because YNNPACK's unpadded stride-1 convolutions are several times
slower, shown per convolution in the second table (the stem's convolutions,
`--conv-batch` images, torch `conv2d` vs XLA:CPU YNNPACK vs Eigen). Last,
the feature parity for each weight init:

  he:      He-normal convolutions, BatchNorm scale/var in U(0.5, 1.5), small
           shifts: activations stay O(1) through the 94 conv layers, like
           trained weights; the tight, meaningful comparison.
  default: the init pytorch-fid's network has before its weights load
           (torchvision's truncated-normal std 0.1 for the stem, Mixed_6a and
           Mixed_7a; torch's kaiming-uniform for the FID blocks; identity
           BatchNorm): badly scaled, so activations blow up or vanish layer by
           layer and float32 rounding is amplified.

This needs torchvision, which does not import beside jaxgen's CPU torch
2.13; run it in the separate reference venv:

  python3 -m venv .venv-fidref && .venv-fidref/bin/pip install -e ".[fid-reference,dev]"
  .venv-fidref/bin/python benchmarks/fid_extraction.py --batch 50 --repeats 3

Both frameworks use every core this process may run on; `taskset -c 0`
compares them on one thread each.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common
import jax
import numpy as np

from jaxgen.convert import metric_networks
from jaxgen.models import inception

INITS = ("he", "default")
logger = logging.getLogger(__name__)


def random_fid_state_dict(init: str, seed: int = 0) -> dict[str, np.ndarray]:
  """A float32 state dict with pytorch-fid's keys and shapes."""
  if init not in INITS:
    raise ValueError(f"init: expected one of {INITS}, found {init!r}")
  if init == "default":
    return _torchvision_initialised_state_dict(seed)
  rng = np.random.default_rng(seed)
  state = {}
  for key, entry in metric_networks.FID_INCEPTION.key_map().items():
    shape = entry.torch_shape
    if key.endswith("conv.weight"):
      value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    elif key.endswith(("bn.weight", "running_var")):
      value = rng.uniform(0.5, 1.5, shape)
    elif key == "fc.weight":
      value = rng.normal(0, 1 / np.sqrt(shape[1]), shape)
    else:  # bn.bias, running_mean, fc.bias
      value = rng.normal(0, 0.1, shape)
    state[key] = np.asarray(value, np.float32)
  return state


def _torchvision_initialised_state_dict(seed: int) -> dict[str, np.ndarray]:
  """The FID network as pytorch-fid builds it before loading weights: torchvision's init
  (truncated-normal std 0.1 convolutions, identity BatchNorm)."""
  import torch  # pylint: disable=g-import-not-at-top
  from pytorch_fid import inception as fid  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  net = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
  for name, block in (
    ("Mixed_5b", fid.FIDInceptionA(192, pool_features=32)),
    ("Mixed_5c", fid.FIDInceptionA(256, pool_features=64)),
    ("Mixed_5d", fid.FIDInceptionA(288, pool_features=64)),
    ("Mixed_6b", fid.FIDInceptionC(768, channels_7x7=128)),
    ("Mixed_6c", fid.FIDInceptionC(768, channels_7x7=160)),
    ("Mixed_6d", fid.FIDInceptionC(768, channels_7x7=160)),
    ("Mixed_6e", fid.FIDInceptionC(768, channels_7x7=192)),
    ("Mixed_7b", fid.FIDInceptionE_1(1280)),
    ("Mixed_7c", fid.FIDInceptionE_2(2048)),
  ):
    setattr(net, name, block)  # fresh blocks keep torch's plain init, as in pytorch-fid
  return {
    k: v.numpy().copy()
    for k, v in net.state_dict().items()
    if not k.endswith("num_batches_tracked")
  }


def pytorch_fid_inception(state_dict: Mapping[str, np.ndarray]):
  """pytorch-fid's `InceptionV3([3])`, its weight download answered with `state_dict`."""
  import torch  # pylint: disable=g-import-not-at-top
  from pytorch_fid import inception as fid_inception  # pylint: disable=g-import-not-at-top

  tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}
  original = fid_inception.load_state_dict_from_url
  fid_inception.load_state_dict_from_url = lambda *args, **kwargs: tensors
  try:
    model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
  finally:
    fid_inception.load_state_dict_from_url = original
  return model.eval()


def torch_features(model, images_nhwc: np.ndarray) -> np.ndarray:
  import torch  # pylint: disable=g-import-not-at-top

  with torch.no_grad():
    (pool,) = model(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2))
  return pool[:, :, 0, 0].numpy()


def jaxgen_features(variables, images_nhwc: np.ndarray, xla_cpu_defaults: bool = False):
  forward = inception.jitted_forward(xla_cpu_defaults)
  return np.asarray(forward(variables, images_nhwc).pool)


# The stem's convolutions at a 299x299 input: (name, input H=W, in, out, kernel, padding).
STEM_CONVOLUTIONS = (
  ("Conv2d_2a_3x3", 149, 32, 32, 3, 0),
  ("Conv2d_2b_3x3", 147, 32, 64, 3, 1),
  ("Conv2d_4a_3x3", 73, 80, 192, 3, 0),
)


def convolution_row(spec: tuple[str, int, int, int, int, int], batch: int, repeats: int):
  """Per-image ms of one convolution: torch vs XLA:CPU's YNNPACK and Eigen kernels."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  name, size, cin, cout, kernel, pad = spec
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, size, size, cin), dtype=np.float32)
  w = rng.standard_normal((kernel, kernel, cin, cout), dtype=np.float32)
  x_torch = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
  w_torch = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
  x, w = jax.device_put(x), jax.device_put(w)

  def conv(x, w):
    padding = ((pad, pad), (pad, pad))
    return jax.lax.conv_general_dilated(
      x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  ynnpack = jax.jit(conv)
  eigen = jax.jit(conv, compiler_options=inception.XLA_CPU_COMPILER_OPTIONS)
  runners = {
    "torch conv2d": lambda: F.conv2d(x_torch, w_torch, padding=pad),
    "XLA:CPU YNNPACK": lambda: ynnpack(x, w).block_until_ready(),
    "XLA:CPU Eigen": lambda: eigen(x, w).block_until_ready(),
  }
  for run in runners.values():
    run()  # compiles
  row = {"convolution": f"{name} {size}x{size}x{cin}->{cout}, pad {pad}"}
  for runner, t in _common.time_interleaved(runners, repeats).items():
    row[f"{runner} ms/image"] = 1e3 * _common.summarize(t["wall"])["median"] / batch
  row["YNNPACK / Eigen"] = row["XLA:CPU YNNPACK ms/image"] / row["XLA:CPU Eigen ms/image"]
  return row


def parity(init: str, images: np.ndarray) -> dict[str, float | str]:
  """Max abs and max relative (to the largest |feature|) difference of pool3 features."""
  state = random_fid_state_dict(init)
  want = torch_features(pytorch_fid_inception(state), images)
  got = jaxgen_features(metric_networks.FID_INCEPTION.from_torch(state), images)
  diff = np.abs(got - want).max()
  return {
    "init": init,
    "max abs diff": float(diff),
    "max abs feature": float(np.abs(want).max()),
    "diff / max feature": float(diff / np.abs(want).max()),
  }


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=50)
  parser.add_argument("--size", type=int, default=299, help="input height and width")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--parity-batch", type=int, default=8)
  parser.add_argument(
    "--conv-batch", type=int, default=10, help="batch of the stem convolution table; 0: skip it"
  )
  args = parser.parse_args(argv)
  for name in ("batch", "size", "repeats", "parity_batch"):
    _common.check_positive(name, getattr(args, name))
  if args.conv_batch < 0:
    raise ValueError(f"conv_batch: expected a non-negative integer, found {args.conv_batch}")
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  threads = _common.set_torch_threads()

  rng = np.random.default_rng(0)
  images = rng.random((args.batch, args.size, args.size, 3), dtype=np.float32)
  state = random_fid_state_dict("he")
  torch_model = pytorch_fid_inception(state)
  variables = metric_networks.FID_INCEPTION.from_torch(state)

  runners = {
    "pytorch-fid InceptionV3 (torch eager)": lambda: torch_features(torch_model, images),
    "jaxgen FIDInceptionV3 (jit)": lambda: jaxgen_features(variables, images),
  }
  if jax.default_backend() == "cpu":
    runners["jaxgen, XLA:CPU default options (YNNPACK convolutions)"] = lambda: jaxgen_features(
      variables, images, xla_cpu_defaults=True
    )
  warmups = {name: _common.time_calls(run, 1)[0] for name, run in runners.items()}
  times = _common.time_interleaved(runners, args.repeats)
  rows = []
  for name, t in times.items():
    stats = _common.summarize(t["wall"])
    logger.info("%s: warm-up %.2f s, median batch %.2f s", name, warmups[name], stats["median"])
    rows.append(
      {
        "implementation": name,
        "batch": args.batch,
        "ms/image (median)": 1e3 * stats["median"] / args.batch,
        "ms/image (min)": 1e3 * stats["min"] / args.batch,
        "warm-up s": warmups[name],
      }
    )
  torch_ms = rows[0]["ms/image (median)"]
  for row in rows:
    row["time / pytorch-fid"] = row["ms/image (median)"] / torch_ms
  conv_rows = [
    convolution_row(spec, args.conv_batch, args.repeats)
    for spec in STEM_CONVOLUTIONS
    if args.conv_batch and jax.default_backend() == "cpu"
  ]

  parity_images = images[: args.parity_batch]
  parity_rows = [parity(init, parity_images) for init in INITS]

  print(
    f"FID feature extraction, {args.size}x{args.size} inputs, float32 "
    f"({_common.machine_line()}; torch threads {threads})\n"
  )
  print(_common.markdown_table(rows))
  if conv_rows:
    print(f"\nThe stem's convolutions alone, {args.conv_batch} images, float32:\n")
    print(_common.markdown_table(conv_rows))
  print(f"\npool3 parity with pytorch-fid on {len(parity_images)} images:\n")
  print(_common.markdown_table(parity_rows))


if __name__ == "__main__":
  main()
