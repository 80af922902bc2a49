"""Compute-dtype and rematerialisation policies (`jaxgen.nn.precision`) on a tiny U-Net.

bfloat16 compute: every convolution and matmul takes bfloat16 inputs, every
reduction (norm statistics, softmax) and exponential runs in float32, the
output stays within 2e-2 relative L2 error of float32, and parameters,
gradients and the loss are float32. Remat: each policy gives the no-remat
gradients (to 1e-6) and the same parameter tree, so checkpoints and the
diffusers conversion do not depend on it.
"""

import dataclasses
import functools
import importlib.util
import os
import shlex
import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_configs import tiny_text_to_image_config

from jaxgen.errors import UnsupportedConfigError
from jaxgen.models.text_conditioned_unet import TextConditionedUNet
from jaxgen.models.unet import UNet2DConditionModel, UNetConfig
from jaxgen.nn import precision
from jaxgen.training.config import RESUME_MAY_CHANGE

# Two levels: cross-attention and plain blocks, down/upsampling, the cross-attention mid
# block. Traced only (abstract parameters): nothing of it compiles.
CONFIG = UNetConfig(
  sample_size=8,
  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
  block_out_channels=(16, 16),
  layers_per_block=1,
  attention_head_dim=2,
  cross_attention_dim=8,
  norm_num_groups=8,
)
# One level, attention in the mid block only: what the tests compile and run (every
# compiled U-Net costs seconds of a 2-core CI machine).
SMALL = dataclasses.replace(
  CONFIG, down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), block_out_channels=(16,)
)
BF16_RELATIVE_TOLERANCE = 2e-2
REMAT_TOLERANCE = 1e-6
# The name of `jax.checkpoint`'s primitive has changed across JAX versions.
REMAT_PRIMITIVES = ("checkpoint", "remat", "remat2")
# XLA:CPU without LLVM's expensive optimisations: the same float32 arithmetic, compiled
# in a fraction of the time (the tests compile six small programs).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min", "argmax", "argmin", "cumsum")


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  return {
    "sample": jnp.asarray(rng.standard_normal((2, 8, 8, 4)), jnp.float32),
    "timesteps": jnp.array([10, 700], jnp.int32),
    "encoder_hidden_states": jnp.asarray(rng.standard_normal((2, 5, 8)), jnp.float32),
  }


def init_params(config, inputs, dtype=jnp.bfloat16, remat="none"):
  """Unboxed parameter shapes (ShapeDtypeStructs) of a model built with `dtype` and `remat`."""
  init = UNet2DConditionModel(config, dtype=dtype, remat=remat).init
  boxed = jax.eval_shape(functools.partial(init, jax.random.key(0), **inputs))
  return nn.meta.unbox(boxed["params"])


@pytest.fixture(scope="module")
def abstract_params(inputs):
  """Parameter shapes of CONFIG, built by the bfloat16 model."""
  return init_params(CONFIG, inputs)


@pytest.fixture(scope="module")
def params(inputs):
  """Random float32 parameters of SMALL, drawn on the host (no init program to compile)."""
  rng = np.random.default_rng(1)

  def draw(path, x):
    name = jax.tree_util.keystr(path)
    if x.ndim > 1:  # kernels: unit-variance outputs, as a trained net has
      return rng.standard_normal(x.shape, np.float32) / np.sqrt(np.prod(x.shape[:-1]))
    if name.endswith("['scale']"):
      return 1 + 0.1 * rng.standard_normal(x.shape, np.float32)
    return 0.1 * rng.standard_normal(x.shape, np.float32)

  return jax.tree_util.tree_map_with_path(draw, init_params(SMALL, inputs))


def model_loss(params, inputs, dtype=jnp.float32, remat="none", config=SMALL):
  """Mean squared output: the model output is cast to float32 before the loss, as tasks do."""
  model = UNet2DConditionModel(config, dtype=dtype, remat=remat)
  out = model.apply({"params": params}, **inputs)
  return jnp.mean(jnp.square(out.astype(jnp.float32)))


def run_compiled(fn, *args):
  """`fn(*args)`, compiled ahead of time with FAST_COMPILE."""
  return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)(*args)


def all_equations(jaxpr):
  """Every equation of a jaxpr and of the jaxprs nested in it (jit, remat, custom rules)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          yield from all_equations(sub)


def forward_equations(params, inputs, dtype=jnp.float32, remat="none"):
  """The equations of CONFIG's forward pass, traced (nothing compiles)."""
  model = UNet2DConditionModel(CONFIG, dtype=dtype, remat=remat)
  fn = lambda p: model.apply({"params": p}, **inputs)
  return list(all_equations(jax.make_jaxpr(fn)(params).jaxpr))


def input_dtypes(eqn):
  return {str(v.aval.dtype) for v in eqn.invars}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_compute_dtype_reaches_every_conv_and_matmul(inputs, abstract_params, dtype):
  eqns = forward_equations(abstract_params, inputs, precision.compute_dtype(dtype))
  products = [e for e in eqns if e.primitive.name in ("conv_general_dilated", "dot_general")]
  # conv_in/out, resnets, shortcuts, samplers, attention projections and products, FF, time MLP.
  assert len(products) > 40
  assert {d for e in products for d in input_dtypes(e)} == {dtype}
  # Statistics stay float32: GroupNorm/LayerNorm moments, softmax max/sum and its exp.
  reductions = [e for e in eqns if e.primitive.name in REDUCTIONS]
  assert reductions and all(input_dtypes(e) == {"float32"} for e in reductions)
  exps = [e for e in eqns if e.primitive.name == "exp"]
  assert exps and all(input_dtypes(e) == {"float32"} for e in exps)


def test_bfloat16_forward_stays_close_to_float32(params, inputs):
  def forward(dtype):
    model = UNet2DConditionModel(SMALL, dtype=dtype)
    return run_compiled(lambda p, x: model.apply({"params": p}, **x), params, inputs)

  ref, out = forward(jnp.float32), forward(jnp.bfloat16)
  assert ref.dtype == jnp.float32 and out.dtype == jnp.bfloat16
  error = float(jnp.linalg.norm(out.astype(jnp.float32) - ref) / jnp.linalg.norm(ref))
  # Really computed in bfloat16 (an 8-bit mantissa leaves a visible error), yet close.
  assert 1e-4 < error < BF16_RELATIVE_TOLERANCE, error


def test_bfloat16_keeps_params_grads_and_loss_float32(inputs, abstract_params):
  params = abstract_params  # built by the bfloat16 model
  float32 = jnp.dtype(jnp.float32)
  assert {x.dtype for x in jax.tree.leaves(params)} == {float32}
  loss_fn = functools.partial(model_loss, dtype=jnp.bfloat16, config=CONFIG)
  loss, grads = jax.eval_shape(jax.value_and_grad(loss_fn), params, inputs)
  assert loss.dtype == float32 and loss.shape == ()
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert {x.dtype for x in jax.tree.leaves(grads)} == {float32}


@pytest.mark.parametrize("remat", list(precision.REMAT_POLICIES))
def test_remat_policy_wraps_every_block_and_keeps_the_names(inputs, abstract_params, remat):
  eqns = forward_equations(abstract_params, inputs, remat=remat)
  checkpoints = [e for e in eqns if e.primitive.name in REMAT_PRIMITIVES]
  if remat == "none":
    assert not checkpoints
  else:  # 2 down + mid + 2 up blocks, each with this policy
    assert len(checkpoints) == 5
    assert {e.params["policy"] for e in checkpoints} == {precision.REMAT_POLICIES[remat]}
  # Same parameter names and shapes, so checkpoints and diffusers conversion are unaffected.
  assert init_params(CONFIG, inputs, remat=remat) == abstract_params


@pytest.fixture(scope="module")
def reference_grads(params, inputs):
  return run_compiled(jax.grad(model_loss), params, inputs)


# The policies; "save_dots_no_batch" differs from "save_dots" only in the policy
# function, which test_remat_policy_wraps_every_block_and_keeps_the_names checks.
@pytest.mark.parametrize("remat", ["full", "save_dots"])
def test_remat_policy_gives_the_same_gradients(params, inputs, reference_grads, remat):
  grads = run_compiled(jax.grad(functools.partial(model_loss, remat=remat)), params, inputs)
  assert jax.tree.structure(grads) == jax.tree.structure(reference_grads)
  for (path, g), ref in zip(
    jax.tree_util.tree_flatten_with_path(grads)[0], jax.tree.leaves(reference_grads)
  ):
    np.testing.assert_allclose(
      g, ref, rtol=0, atol=REMAT_TOLERANCE, err_msg=jax.tree_util.keystr(path)
    )


def test_model_policy_reads_the_config_and_names_bad_values():
  assert precision.model_policy(None) == {"dtype": jnp.float32, "remat": "none"}
  policy = precision.model_policy({"compute_dtype": "bfloat16", "remat": "save_dots"})
  assert policy == {"dtype": jnp.bfloat16, "remat": "save_dots"}
  assert precision.compute_dtype(jnp.bfloat16) == jnp.bfloat16
  with pytest.raises(UnsupportedConfigError, match=r"model\.compute_dtype: .*'float16'"):
    precision.model_policy({"compute_dtype": "float16"})
  with pytest.raises(UnsupportedConfigError, match=r"model\.remat: .*'dots'"):
    precision.model_policy({"remat": "dots"})
  with pytest.raises(UnsupportedConfigError, match=r"^remat: expected one of"):
    UNet2DConditionModel(SMALL, remat="everything").init(
      jax.random.key(0), jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 1, 8))
    )


def test_text_to_image_task_takes_the_policy_from_its_config():
  from jaxgen.tasks.image.text_to_image import TextToImageTask  # pylint: disable=g-import-not-at-top

  config = tiny_text_to_image_config()
  default = TextToImageTask(config).model
  assert isinstance(default, TextConditionedUNet)
  assert (default.dtype, default.remat) == (jnp.float32, "none")
  config.model.compute_dtype, config.model.remat = "bfloat16", "full"
  task = TextToImageTask(config)
  assert (task.model.dtype, task.model.remat) == (jnp.bfloat16, "full")
  config.model.remat = "most"
  with pytest.raises(UnsupportedConfigError, match=r"model\.remat: .*'most'"):
    TextToImageTask(config)
  # A resume may change what is recomputed (same numbers), not the compute dtype.
  assert "model.remat" in RESUME_MAY_CHANGE and "model.compute_dtype" not in RESUME_MAY_CHANGE


def launch_command(env_extra: dict[str, str]) -> list[str]:
  """The remote command of `tpu_scripts/launch.sh --dry-run`, split into words."""
  script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tpu_scripts")
  result = subprocess.run(
    ["bash", os.path.join(script, "launch.sh"), "--name", "pod", "--zone", "z", "--dry-run"]
    + ["--config", "configs/sd15_finetune.py", "--workdir", "gs://b/run"],
    capture_output=True,
    text=True,
    timeout=30,
    check=False,
    env={
      **{k: v for k, v in os.environ.items() if k != "JAXGEN_LIBTPU_INIT_ARGS"},
      "PATH": "/usr/bin:/bin",
      **env_extra,
    },
  )
  assert result.returncode == 0, result.stderr
  command = next(a for a in shlex.split(result.stdout) if a.startswith("--command="))
  return shlex.split(command.removeprefix("--command="))


def test_tpu_launch_overlaps_collectives_with_compute():
  env, nohup = launch_command({})[:2]
  assert nohup == "nohup" and env.startswith("LIBTPU_INIT_ARGS=")
  flags = env.removeprefix("LIBTPU_INIT_ARGS=").split()
  for flag in (
    "--xla_enable_async_all_gather=true",
    "--xla_tpu_enable_async_collective_fusion=true",
    "--xla_tpu_enable_async_collective_fusion_fuse_all_gather=true",
    "--xla_tpu_overlap_compute_collective_tc=true",
  ):
    assert flag in flags
  # A user's own flags replace them.
  assert (
    launch_command({"JAXGEN_LIBTPU_INIT_ARGS": "--xla_foo=1"})[0] == "LIBTPU_INIT_ARGS=--xla_foo=1"
  )


def test_aot_memory_fits_the_largest_batch_per_chip():
  """benchmarks/aot_memory.py's batch fit (its compiles are the benchmark's, not CI's)."""
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
  spec = importlib.util.spec_from_file_location("aot_memory", os.path.join(path, "aot_memory.py"))
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  gib = 2**30
  # 4 GiB of state, 1.25 GiB of activations per example: (16 - 4) / 1.25 = 9.6 fit in 16 GiB.
  fit = bench.fit_batches([{"batch": b, "peak": 4 * gib + b * 1.25 * gib} for b in (1, 2, 4)])
  assert fit["fixed"] == pytest.approx(4 * gib) and fit["slope"] == pytest.approx(1.25 * gib)
  assert fit["max_batch"] == {"TPU v5e": 9, "TPU v4": 22, "TPU v5p": 72}
  with pytest.raises(ValueError, match="batches: need two different"):
    bench.fit_batches([{"batch": 1, "peak": gib}])
  with pytest.raises(UnsupportedConfigError, match="--remats: expected one of"):
    bench.parse_args(["--remats", "none,most"])
