"""FID InceptionV3: key map, parameter count, weight import, parity with a torch reference.

pytorch-fid itself cannot run here (it needs torchvision, which does not
import beside the CPU torch 2.13). The reference below is pytorch-fid's
network transcribed into torch.nn.functional from the public sources:
torchvision `models/inception.py` (BasicConv2d = conv without bias +
BatchNorm2d(eps=0.001) + ReLU; InceptionA-E layer shapes and paddings) and
pytorch-fid `inception.py` (FIDInceptionA/C/E_1 average-pool with
count_include_pad=False, FIDInceptionE_2 max-pools, 1008-way fc, no aux
head, bilinear resize to 299 with align_corners=False, then 2x - 1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxgen.convert import metric_networks
from jaxgen.convert.torch_state_dict import MissingWeightsError, StateDictMismatchError
from jaxgen.models import inception

# --- the reference architecture: name -> (in, out, kernel, stride, padding) ----


def _block_a(cin, pool_features):
  return {
    "branch1x1": (cin, 64, (1, 1), 1, (0, 0)),
    "branch5x5_1": (cin, 48, (1, 1), 1, (0, 0)),
    "branch5x5_2": (48, 64, (5, 5), 1, (2, 2)),
    "branch3x3dbl_1": (cin, 64, (1, 1), 1, (0, 0)),
    "branch3x3dbl_2": (64, 96, (3, 3), 1, (1, 1)),
    "branch3x3dbl_3": (96, 96, (3, 3), 1, (1, 1)),
    "branch_pool": (cin, pool_features, (1, 1), 1, (0, 0)),
  }


def _block_b(cin):
  return {
    "branch3x3": (cin, 384, (3, 3), 2, (0, 0)),
    "branch3x3dbl_1": (cin, 64, (1, 1), 1, (0, 0)),
    "branch3x3dbl_2": (64, 96, (3, 3), 1, (1, 1)),
    "branch3x3dbl_3": (96, 96, (3, 3), 2, (0, 0)),
  }


def _block_c(cin, c7):
  return {
    "branch1x1": (cin, 192, (1, 1), 1, (0, 0)),
    "branch7x7_1": (cin, c7, (1, 1), 1, (0, 0)),
    "branch7x7_2": (c7, c7, (1, 7), 1, (0, 3)),
    "branch7x7_3": (c7, 192, (7, 1), 1, (3, 0)),
    "branch7x7dbl_1": (cin, c7, (1, 1), 1, (0, 0)),
    "branch7x7dbl_2": (c7, c7, (7, 1), 1, (3, 0)),
    "branch7x7dbl_3": (c7, c7, (1, 7), 1, (0, 3)),
    "branch7x7dbl_4": (c7, c7, (7, 1), 1, (3, 0)),
    "branch7x7dbl_5": (c7, 192, (1, 7), 1, (0, 3)),
    "branch_pool": (cin, 192, (1, 1), 1, (0, 0)),
  }


def _block_d(cin):
  return {
    "branch3x3_1": (cin, 192, (1, 1), 1, (0, 0)),
    "branch3x3_2": (192, 320, (3, 3), 2, (0, 0)),
    "branch7x7x3_1": (cin, 192, (1, 1), 1, (0, 0)),
    "branch7x7x3_2": (192, 192, (1, 7), 1, (0, 3)),
    "branch7x7x3_3": (192, 192, (7, 1), 1, (3, 0)),
    "branch7x7x3_4": (192, 192, (3, 3), 2, (0, 0)),
  }


def _block_e(cin):
  return {
    "branch1x1": (cin, 320, (1, 1), 1, (0, 0)),
    "branch3x3_1": (cin, 384, (1, 1), 1, (0, 0)),
    "branch3x3_2a": (384, 384, (1, 3), 1, (0, 1)),
    "branch3x3_2b": (384, 384, (3, 1), 1, (1, 0)),
    "branch3x3dbl_1": (cin, 448, (1, 1), 1, (0, 0)),
    "branch3x3dbl_2": (448, 384, (3, 3), 1, (1, 1)),
    "branch3x3dbl_3a": (384, 384, (1, 3), 1, (0, 1)),
    "branch3x3dbl_3b": (384, 384, (3, 1), 1, (1, 0)),
    "branch_pool": (cin, 192, (1, 1), 1, (0, 0)),
  }


STEM = {
  "Conv2d_1a_3x3": (3, 32, (3, 3), 2, (0, 0)),
  "Conv2d_2a_3x3": (32, 32, (3, 3), 1, (0, 0)),
  "Conv2d_2b_3x3": (32, 64, (3, 3), 1, (1, 1)),
  "Conv2d_3b_1x1": (64, 80, (1, 1), 1, (0, 0)),
  "Conv2d_4a_3x3": (80, 192, (3, 3), 1, (0, 0)),
}
MIXED = {
  "Mixed_5b": _block_a(192, 32),
  "Mixed_5c": _block_a(256, 64),
  "Mixed_5d": _block_a(288, 64),
  "Mixed_6a": _block_b(288),
  "Mixed_6b": _block_c(768, 128),
  "Mixed_6c": _block_c(768, 160),
  "Mixed_6d": _block_c(768, 160),
  "Mixed_6e": _block_c(768, 192),
  "Mixed_7a": _block_d(768),
  "Mixed_7b": _block_e(1280),
  "Mixed_7c": _block_e(2048),
}
CONVS = {
  **STEM,
  **{f"{block}.{conv}": spec for block, convs in MIXED.items() for conv, spec in convs.items()},
}


def reference_shapes():
  """Every key of the pytorch-fid state dict (as torch writes it) and its shape."""
  shapes = {}
  for name, (cin, cout, (kh, kw), _, _) in CONVS.items():
    shapes[f"{name}.conv.weight"] = (cout, cin, kh, kw)
    for leaf in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{name}.bn.{leaf}"] = (cout,)
    shapes[f"{name}.bn.num_batches_tracked"] = ()
  shapes["fc.weight"] = (1008, 2048)
  shapes["fc.bias"] = (1008,)
  return shapes


def random_state_dict(seed=0):
  """Random float32 weights that keep activations O(1) through the 94 layers."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in reference_shapes().items():
    if key.endswith("num_batches_tracked"):
      value = np.array(0, np.int64)
    elif key.endswith("conv.weight"):
      value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    elif key.endswith(("bn.weight", "running_var")):
      value = rng.uniform(0.5, 1.5, shape)
    elif key == "fc.weight":
      value = rng.normal(0, 1 / np.sqrt(shape[1]), shape)
    else:  # bn.bias, running_mean, fc.bias
      value = rng.normal(0, 0.1, shape)
    state[key] = value.astype(np.float32) if value.dtype != np.int64 else value
  return state


# --- the torch.nn.functional reference forward --------------------------------


def t_conv(sd, name, x):
  _, _, _, stride, padding = CONVS[name]
  x = F.conv2d(x, sd[f"{name}.conv.weight"], stride=stride, padding=padding)
  x = F.batch_norm(
    x,
    sd[f"{name}.bn.running_mean"],
    sd[f"{name}.bn.running_var"],
    sd[f"{name}.bn.weight"],
    sd[f"{name}.bn.bias"],
    training=False,
    eps=0.001,
  )
  return F.relu(x)


def t_avg_pool_exclude_pad(x):
  return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def t_block_a(sd, p, x):
  c = lambda name, y: t_conv(sd, f"{p}.{name}", y)  # noqa: E731
  return torch.cat(
    [
      c("branch1x1", x),
      c("branch5x5_2", c("branch5x5_1", x)),
      c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x))),
      c("branch_pool", t_avg_pool_exclude_pad(x)),
    ],
    1,
  )


def t_block_b(sd, p, x):
  c = lambda name, y: t_conv(sd, f"{p}.{name}", y)  # noqa: E731
  return torch.cat(
    [
      c("branch3x3", x),
      c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x))),
      F.max_pool2d(x, kernel_size=3, stride=2),
    ],
    1,
  )


def t_block_c(sd, p, x):
  c = lambda name, y: t_conv(sd, f"{p}.{name}", y)  # noqa: E731
  dbl = x
  for i in range(1, 6):
    dbl = c(f"branch7x7dbl_{i}", dbl)
  return torch.cat(
    [
      c("branch1x1", x),
      c("branch7x7_3", c("branch7x7_2", c("branch7x7_1", x))),
      dbl,
      c("branch_pool", t_avg_pool_exclude_pad(x)),
    ],
    1,
  )


def t_block_d(sd, p, x):
  c = lambda name, y: t_conv(sd, f"{p}.{name}", y)  # noqa: E731
  b7 = x
  for i in range(1, 5):
    b7 = c(f"branch7x7x3_{i}", b7)
  return torch.cat(
    [c("branch3x3_2", c("branch3x3_1", x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1
  )


def t_block_e(sd, p, x, pool):
  c = lambda name, y: t_conv(sd, f"{p}.{name}", y)  # noqa: E731
  b3 = c("branch3x3_1", x)
  dbl = c("branch3x3dbl_2", c("branch3x3dbl_1", x))
  if pool == "avg":  # FIDInceptionE_1
    pooled = t_avg_pool_exclude_pad(x)
  else:  # FIDInceptionE_2
    pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
  return torch.cat(
    [
      c("branch1x1", x),
      torch.cat([c("branch3x3_2a", b3), c("branch3x3_2b", b3)], 1),
      torch.cat([c("branch3x3dbl_3a", dbl), c("branch3x3dbl_3b", dbl)], 1),
      c("branch_pool", pooled),
    ],
    1,
  )


def t_stem(sd, x):
  for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
    x = t_conv(sd, name, x)
  x = F.max_pool2d(x, kernel_size=3, stride=2)
  x = t_conv(sd, "Conv2d_4a_3x3", t_conv(sd, "Conv2d_3b_1x1", x))
  return F.max_pool2d(x, kernel_size=3, stride=2)


T_BLOCKS = {
  "Mixed_5b": t_block_a,
  "Mixed_5c": t_block_a,
  "Mixed_5d": t_block_a,
  "Mixed_6a": t_block_b,
  "Mixed_6b": t_block_c,
  "Mixed_6c": t_block_c,
  "Mixed_6d": t_block_c,
  "Mixed_6e": t_block_c,
  "Mixed_7a": t_block_d,
  "Mixed_7b": lambda sd, p, x: t_block_e(sd, p, x, "avg"),
  "Mixed_7c": lambda sd, p, x: t_block_e(sd, p, x, "max"),
}


def t_fid_inception(sd, images_nchw):
  """pytorch-fid's InceptionV3 forward (resize, normalise, pool3, fc)."""
  x = F.interpolate(images_nchw, size=(299, 299), mode="bilinear", align_corners=False)
  x = t_stem(sd, 2 * x - 1)
  for name, block in T_BLOCKS.items():
    x = block(sd, name, x)
  pool = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
  return pool, F.linear(pool, sd["fc.weight"], sd["fc.bias"]), pool @ sd["fc.weight"].T


# --- tests ------------------------------------------------------------------


@pytest.fixture(scope="module")
def state_dict():
  return random_state_dict()


@pytest.fixture(scope="module")
def variables(state_dict):
  return metric_networks.FID_INCEPTION.from_torch(state_dict)


def test_key_map_matches_reference_state_dict():
  expected = {k: v for k, v in reference_shapes().items() if not k.endswith("num_batches_tracked")}
  found = {k: entry.torch_shape for k, entry in metric_networks.FID_INCEPTION.key_map().items()}
  assert found == expected


def test_parameter_count_matches_torchvision_derivation():
  # torchvision documents inception_v3 with 27,161,264 parameters (1000 classes,
  # aux head). pytorch-fid drops the aux head (conv0 768->128 1x1 + BN,
  # conv1 128->768 5x5 + BN, fc 768->1000) and uses 1008 classes.
  aux_head = (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) + (768 * 1000 + 1000)
  expected = 27_161_264 - aux_head + 8 * (2048 + 1)
  assert expected == 23_850_960
  assert inception.parameter_count() == expected
  reference = sum(
    int(np.prod(s))
    for k, s in reference_shapes().items()
    if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
  )
  assert reference == expected


def test_import_export_round_trip_is_bit_identical(state_dict, variables):
  exported = metric_networks.FID_INCEPTION.to_torch(variables)
  originals = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  assert exported.keys() == originals.keys()
  for key, value in originals.items():
    assert exported[key].dtype == np.float32
    np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_strict_key_and_shape_errors(state_dict):
  missing = dict(state_dict)
  del missing["Mixed_6b.branch7x7_2.conv.weight"]
  with pytest.raises(StateDictMismatchError, match="Mixed_6b.branch7x7_2.conv.weight"):
    metric_networks.FID_INCEPTION.from_torch(missing)
  extra = {**state_dict, "AuxLogits.fc.weight": np.zeros((1000, 768), np.float32)}
  with pytest.raises(StateDictMismatchError, match="AuxLogits.fc.weight"):
    metric_networks.FID_INCEPTION.from_torch(extra)
  wrong = {**state_dict, "fc.weight": np.zeros((1000, 2048), np.float32)}
  with pytest.raises(StateDictMismatchError, match=r"fc.weight.*\(1008, 2048\)"):
    metric_networks.FID_INCEPTION.from_torch(wrong)


def test_weight_files_safetensors_and_torch_pickle(tmp_path, state_dict, variables):
  from safetensors.numpy import save_file

  save_file(state_dict, str(tmp_path / "w.safetensors"))
  torch.save(
    {k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, tmp_path / "w.pth"
  )
  for name in ("w.safetensors", "w.pth"):
    loaded = metric_networks.FID_INCEPTION.load(tmp_path / name)
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  with pytest.raises(MissingWeightsError, match="nope.pth"):
    metric_networks.FID_INCEPTION.load(tmp_path / "nope.pth")


@pytest.mark.parametrize("size", [(32, 40), (400, 333)])
def test_resize_equals_torch_bilinear(size):
  rng = np.random.default_rng(1)
  images = rng.random((2, *size, 3))
  with jax.enable_x64(True):
    ours = np.asarray(inception.resize_like_pytorch_fid(jnp.asarray(images)))
  theirs = (
    F.interpolate(
      torch.from_numpy(images).permute(0, 3, 1, 2),
      size=(299, 299),
      mode="bilinear",
      align_corners=False,
    )
    .permute(0, 2, 3, 1)
    .numpy()
  )
  np.testing.assert_allclose(ours, theirs, atol=1e-12, rtol=0)


# (flax block, input channels, spatial size) for every distinct block variant.
BLOCKS = {
  "Mixed_5b": (inception.InceptionA(32), 192, 9),
  "Mixed_6a": (inception.InceptionB(), 288, 9),
  "Mixed_6b": (inception.InceptionC(128), 768, 7),
  "Mixed_7a": (inception.InceptionD(), 768, 9),
  "Mixed_7b": (inception.InceptionE("avg"), 1280, 5),
  "Mixed_7c": (inception.InceptionE("max"), 2048, 5),
}


def _float64(tree):
  return jax.tree.map(lambda x: jnp.asarray(np.asarray(x, np.float64)), tree)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_parity_float64(name, state_dict, variables):
  module, channels, size = BLOCKS[name]
  rng = np.random.default_rng(2)
  # Negative inputs too, so max-pool padding (-inf, not 0) matters.
  x = rng.normal(size=(2, size, size, channels))
  sd = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in state_dict.items()}
  expected = T_BLOCKS[name](sd, name, torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
  with jax.enable_x64(True):
    block_vars = _float64({c: variables[c][name] for c in ("params", "batch_stats")})
    got = np.asarray(jax.jit(module.apply)(block_vars, jnp.asarray(x)))
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, expected.numpy(), atol=1e-10, rtol=1e-10)


def test_stem_parity_float64(state_dict, variables):
  # 75x75 is the smallest input the network takes.
  x = np.random.default_rng(3).normal(size=(2, 75, 75, 3))
  sd = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in state_dict.items()}
  expected = t_stem(sd, torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  model = inception.FIDInceptionV3()
  stem_vars = {
    c: {k: v for k, v in variables[c].items() if k in STEM} for c in ("params", "batch_stats")
  }
  with jax.enable_x64(True):
    apply = jax.jit(
      lambda v, images: model.apply(v, images, method=model.stem, mutable=["intermediates"])
    )
    got, state = apply(_float64(stem_vars), jnp.asarray(x))
    got = np.asarray(got)
  np.testing.assert_allclose(got, expected, atol=1e-10, rtol=1e-10)
  np.testing.assert_array_equal(np.asarray(state["intermediates"]["features_192"][0]), got)


def test_end_to_end_parity_float32(state_dict, variables):
  # Same batch shape as the eval CLI tests, so the compiled network is shared.
  rng = np.random.default_rng(4)
  images = rng.random((4, 32, 32, 3)).astype(np.float32)
  outputs = inception.inception_outputs(variables, images)
  sd = {k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}
  with torch.no_grad():
    pool, logits, logits_unbiased = t_fid_inception(
      sd, torch.from_numpy(images).permute(0, 3, 1, 2)
    )
  assert outputs.pool.shape == (4, 2048) and outputs.logits.shape == (4, 1008)
  for got, want in (
    (outputs.pool, pool),
    (outputs.logits, logits),
    (outputs.logits_unbiased, logits_unbiased),
  ):
    want = want.numpy()
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU compiler options")
def test_cpu_compiler_options_keep_convolutions_off_ynnpack():
  # XLA:CPU hands this convolution to YNNPACK, whose unpadded stride-1 kernels run
  # several times slower than Eigen's (benchmarks/fid_extraction.py); the forward's
  # compiler options must stay valid and keep it on Eigen.
  def conv(x, w):
    return jax.lax.conv_general_dilated(
      x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  x, w = jnp.ones((1, 9, 9, 32)), jnp.ones((3, 3, 32, 32))
  assert "ynn_fusion" in jax.jit(conv).lower(x, w).compile().as_text()
  options = inception.XLA_CPU_COMPILER_OPTIONS
  compiled = jax.jit(conv, compiler_options=options).lower(x, w).compile()
  assert "convolution(" in compiled.as_text() and "ynn_fusion" not in compiled.as_text()
  np.testing.assert_array_equal(np.asarray(compiled(x, w)), np.full((1, 7, 7, 32), 288.0))


def test_rejects_bad_input(variables):
  with pytest.raises(ValueError, match="3 channels"):
    inception.FIDInceptionV3().apply(variables, jnp.zeros((1, 32, 32, 1)))
  with pytest.raises(ValueError, match="at least 75x75"):
    inception.FIDInceptionV3(resize_input=False).apply(variables, jnp.zeros((1, 64, 80, 3)))


def test_compute_dtype_keeps_float32_params():
  model = inception.FIDInceptionV3(dtype=jnp.bfloat16)
  images = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  outputs = jax.eval_shape(model.apply, variables, images)
  assert outputs.pool.dtype == jnp.bfloat16 and outputs.logits.shape == (2, 1008)
