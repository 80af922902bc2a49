"""Bailando's upper/lower-body VQ-VAEs: faithful counts, PyTorch parity, losses, named errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.convert.bailando import vq_params_from_torch, vq_state_dict
from jaxgen.models import bailando_vq as bvq
from jaxgen.models import vq
from jaxgen.training.train_state import replace_leaves

TINY = bvq.BailandoVQConfig(width=16, code_dim=8, num_codes=32)


def count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _motion(batch: int, frames: int, seed: int = 0) -> np.ndarray:
  """Smooth dance-like positions in the reference layout: root absolute, joints root-relative."""
  rng = np.random.default_rng(seed)
  t = np.arange(frames)[None, :, None, None] / 60.0
  offsets = rng.normal(size=(batch, 1, 24, 3)) * 0.3
  freq = rng.uniform(0.5, 2.0, size=(batch, 1, 24, 3))
  phase = rng.uniform(0, 2 * np.pi, size=(batch, 1, 24, 3))
  joints = offsets + 0.1 * np.sin(2 * np.pi * freq * t + phase)
  root = np.concatenate(
    [0.8 * t[..., 0, :], 0.9 + 0.05 * np.sin(6 * t[..., 0, :]), -0.3 * t[..., 0, :]], -1
  )
  joints[:, :, 0] = root + rng.normal(size=(batch, 1, 3))
  return joints.reshape(batch, frames, 72).astype(np.float32)


# -- a PyTorch transcription of the reference (lisiyao21/Bailando models/encdec.py, resnet.py,
# -- vqvae.py, vqvae_root.py, sep_vqvae_root.py), with the reference's module names ----------


def _torch_reference(config: bvq.BailandoVQConfig):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn as tnn  # pylint: disable=g-import-not-at-top

  c = config

  class Block(tnn.Module):
    def __init__(self, *layers):
      super().__init__()
      self.model = tnn.Sequential(*layers)

    def forward(self, x):
      return self.model(x)

  class ResConv1DBlock(Block):
    def __init__(self, dilation):
      w = c.width
      super().__init__(
        tnn.ReLU(), tnn.Conv1d(w, w, 3, 1, dilation, dilation), tnn.ReLU(), tnn.Conv1d(w, w, 1)
      )

    def forward(self, x):
      return x + self.model(x)

  def resnet1d(reverse):
    blocks = [ResConv1DBlock(c.dilation_growth_rate**d) for d in range(c.depth)]
    return Block(*(blocks[::-1] if reverse else blocks))

  class Encoder(tnn.Module):
    def __init__(self, channels):
      super().__init__()
      w = c.width
      downs = [
        tnn.Sequential(tnn.Conv1d(channels if i == 0 else w, w, 4, 2, 1), resnet1d(False))
        for i in range(c.down_t)
      ]
      self.level_blocks = tnn.ModuleList([Block(*downs, tnn.Conv1d(w, c.code_dim, 3, 1, 1))])

    def forward(self, x):
      return self.level_blocks[0](x)

  class Decoder(tnn.Module):
    def __init__(self, channels):
      super().__init__()
      w, e = c.width, c.code_dim
      ups = [
        tnn.Sequential(
          resnet1d(True), tnn.ConvTranspose1d(w, e if i == c.down_t - 1 else w, 4, 2, 1)
        )
        for i in range(c.down_t)
      ]
      self.level_blocks = tnn.ModuleList([Block(tnn.Conv1d(e, w, 3, 1, 1), *ups)])
      self.out = tnn.Conv1d(e, channels, 3, 1, 1)

    def forward(self, x):
      return self.out(self.level_blocks[0](x))

  class BottleneckBlock(tnn.Module):
    def __init__(self):
      super().__init__()
      self.register_buffer("k", torch.randn(c.num_codes, c.code_dim))

  class Half(tnn.Module):  # VQVAE / VQVAER with one level
    def __init__(self, num_joints, root):
      super().__init__()
      channels = num_joints * c.joint_channels
      self.encoders = tnn.ModuleList([Encoder(channels)])
      self.decoders = tnn.ModuleList([Decoder(channels)])
      if root:
        self.decoders_root = tnn.ModuleList([Decoder(c.joint_channels)])
      self.bottleneck = tnn.Module()
      self.bottleneck.level_blocks = tnn.ModuleList([BottleneckBlock()])

  class SepVQVAER(tnn.Module):
    def __init__(self):
      super().__init__()
      self.vqvae_up = Half(len(c.upper_joints), root=False)
      self.vqvae_down = Half(len(c.lower_joints), root=True)

  return SepVQVAER()


def _torch_forward(model, motion: np.ndarray, config: bvq.BailandoVQConfig) -> dict:
  """The reference's stage-1 and stage-2 computations on one batch, without EMA updates."""
  import torch  # pylint: disable=g-import-not-at-top

  c = config
  out = {}
  with torch.no_grad():
    pose = torch.tensor(motion).clone()
    b, t, _ = pose.shape
    # motion_vqvae.py (global_vel): root channels -> per-frame velocity, last repeated.
    pose[:, :-1, :3] = pose[:, 1:, :3] - pose[:, :-1, :3]
    pose[:, -1, :3] = pose[:, -2, :3]
    joints = pose.view(b, t, c.num_joints, 3)
    velocity = joints[:, :, 0].clone()
    halves = {
      "upper": (model.vqvae_up, joints[:, :, list(c.upper_joints)].reshape(b, t, -1)),
      "lower": (model.vqvae_down, joints[:, :, list(c.lower_joints)].reshape(b, t, -1)),
    }
    for name, (half, x) in halves.items():
      if name == "lower":
        x[:, :, :3] = 0  # VQVAER.forward's x_zero (stage 1 zeroes the root everywhere)
      z = half.encoders[0](x.permute(0, 2, 1)).permute(0, 2, 1)  # NTC
      k = half.bottleneck.level_blocks[0].k
      flat = z.reshape(-1, z.shape[-1])
      distance = (
        (flat**2).sum(-1, keepdim=True) - 2 * flat @ k.t() + (k.t() ** 2).sum(0, keepdim=True)
      )
      codes = distance.argmin(-1)
      rows = k[codes]
      commit = torch.norm(rows - flat) ** 2 / np.prod(flat.shape)
      x_out = half.decoders[0](rows.view(z.shape).permute(0, 2, 1)).permute(0, 2, 1)
      l1 = lambda a, b: torch.mean(torch.abs(a - b))
      d1 = lambda y: y[:, 1:] - y[:, :-1]
      d2 = lambda y: y[:, 2:] + y[:, :-2] - 2 * y[:, 1:-1]
      out[name] = {
        "z": z.numpy(),
        "codes": codes.view(z.shape[:-1]).numpy(),
        "x_out": x_out.numpy().copy(),
        "recons": l1(x, x_out).item(),
        "commit": commit.item(),
        "velocity": l1(d1(x_out), d1(x)).item(),
        "acceleration": l1(d2(x_out), d2(x)).item(),
      }
      if name == "lower":
        v_out = half.decoders_root[0](rows.view(z.shape).permute(0, 2, 1)).permute(0, 2, 1)
        out["root"] = {
          "velocity": v_out.numpy(),
          "recons": l1(velocity, v_out).item(),
          "acceleration": l1(d1(v_out), d1(velocity)).item(),
        }
        # SepVQVAER.forward: scatter the halves back; the root channels take the root branch.
        x_out[:, :, :3] = v_out
    full = torch.zeros(b, t, c.num_joints, 3)
    full[:, :, list(c.upper_joints)] = torch.tensor(out["upper"]["x_out"]).view(b, t, -1, 3)
    full[:, :, list(c.lower_joints)] = x_out.view(b, t, -1, 3)
    # motion_vqvae.py: integrate the root velocity from the origin.
    vel = full[:, :, 0].clone()
    full[:, 0, 0] = 0
    for i in range(1, t):
      full[:, i, 0] = full[:, i - 1, 0] + vel[:, i - 1]
    out["motion"] = full.view(b, t, -1).numpy()
  return out


# -- tests --------------------------------------------------------------------------------------


def test_faithful_parameter_count():
  """Reference `SepVQVAER` (configs/sep_vqvae_root.yaml) counted from its layers, W = E = 512:
  encoder(C) = Conv1d(C,W,4) + 2 Conv1d(W,W,4) + 3 Resnet1D (each 3 × [Conv1d(W,W,3) +
  Conv1d(W,W,1)]) + Conv1d(W,E,3) = 2048·C + 12,332,032; decoder(C) = Conv1d(E,W,3) + 3 Resnet1D
  + 2 ConvTranspose1d(W,W,4) + ConvTranspose1d(W,E,4) + Conv1d(E,C,3) = 13,380,608 + 1537·C;
  upper C = 45, lower C = 27, root decoder C = 3. The 512 × 512 codebooks are buffers there (`k`;
  the EMA sums are not even in the state dict), here params leaves with their statistics: they
  are compared apart."""
  config = bvq.BailandoVQConfig()
  shapes = jax.eval_shape(
    bvq.BailandoVQVAE(config).init, jax.random.PRNGKey(0), jnp.zeros((1, 240, 72))
  )
  params = nn.meta.unbox(shapes)["params"]
  expected = {"upper": (12_424_192, 13_449_773), "lower": (12_387_328, 13_422_107)}
  for half, (encoder, decoder) in expected.items():
    assert count(params[half]["encoder"]) == encoder
    assert count(params[half]["decoder"]) == decoder
    assert params[half]["quantizer"]["codebook"].shape == (512, 512)
  assert count(params["root_decoder"]) == 13_385_219
  without_codebooks = dict(params)
  for half in ("upper", "lower"):
    without_codebooks[half] = {k: v for k, v in params[half].items() if k != "quantizer"}
  assert count(without_codebooks) == 65_068_619

  torch = pytest.importorskip("torch")
  with torch.device("meta"):
    reference = _torch_reference(config)
  assert sum(p.numel() for p in reference.parameters()) == 65_068_619
  assert sum(p.numel() for p in reference.vqvae_down.decoders_root.parameters()) == 13_385_219


def _flax_forward(model: bvq.BailandoVQVAE, params, motion: jax.Array) -> dict:
  """Reconstruction through the codes (`__call__`) with the encoder and decoder outputs it made."""
  motion_out, state = model.apply(
    {"params": params}, motion, capture_intermediates=True, mutable=["intermediates"]
  )
  seen = state["intermediates"]
  out = {"motion": motion_out, "root_velocity": seen["root_decoder"]["__call__"][0]}
  for half in ("upper", "lower"):
    z = seen[half]["encoder"]["__call__"][0]
    out[half] = {
      "z": z,
      "codes": vq.quantize(z, params[half]["quantizer"]["codebook"]),
      "x_out": seen[half]["decoder"]["__call__"][0],
    }
  return out


def _train(model: bvq.BailandoVQVAE, params, motion: jax.Array, steps: int, learning_rate: float):
  """SGD with momentum on `losses` (Adam's per-leaf state takes longer to compile), the EMA
  statistics written back after each step as the trainer does."""
  tx = optax.sgd(learning_rate, momentum=0.9)

  @jax.jit
  def step(params, opt_state, rng):
    def loss(p):
      total, metrics, updates = model.apply(
        {"params": p}, motion, rng, method=bvq.BailandoVQVAE.losses
      )
      return total, (metrics, updates)

    (total, (metrics, updates)), grads = jax.value_and_grad(loss, has_aux=True)(params)
    changes, opt_state = tx.update(grads, opt_state)
    new_params = replace_leaves(optax.apply_updates(params, changes), updates)
    codebook_grad = jnp.maximum(
      jnp.abs(grads["upper"]["quantizer"]["codebook"]).max(),
      jnp.abs(grads["lower"]["quantizer"]["codebook"]).max(),
    )
    return new_params, opt_state, total, metrics, codebook_grad

  opt_state = tx.init(params)
  history = []
  for i in range(steps):
    params, opt_state, total, metrics, codebook_grad = step(params, opt_state, jax.random.key(i))
    history.append(
      {"total": total, "metrics": metrics, "params": params, "codebook_grad": codebook_grad}
    )
  return history


@pytest.fixture(scope="module")
def tiny():
  """Random PyTorch reference weights mapped into the Flax params; both models' outputs; a
  short training run from those weights (its first step's losses are the reference's)."""
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  reference = _torch_reference(TINY)
  model = bvq.BailandoVQVAE(TINY)
  params = vq_params_from_torch(reference.state_dict(), TINY)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 72)))
  # The map fills every Flax parameter with an array of its shape.
  jax.tree.map(
    lambda a, b: np.testing.assert_equal(a.shape, np.shape(b)),
    nn.meta.unbox(shapes)["params"],
    params,
  )
  params = jax.tree.map(jnp.asarray, params)
  motion = _motion(8, 32)
  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # tiny convs: threads only contend
  try:
    expected = _torch_forward(reference, motion, TINY)
  finally:
    torch.set_num_threads(threads)
  return {
    "state_dict": {k: v.numpy() for k, v in reference.state_dict().items()},
    "ref": expected,
    "out": jax.jit(functools.partial(_flax_forward, model))(params, jnp.asarray(motion)),
    "history": _train(model, params, jnp.asarray(motion), steps=30, learning_rate=0.05),
  }


def test_encoder_decoder_and_codes_match_pytorch(tiny):
  out, ref = tiny["out"], tiny["ref"]
  for half in ("upper", "lower"):
    np.testing.assert_allclose(out[half]["z"], ref[half]["z"], atol=1e-4)
    assert out[half]["codes"].shape == (8, 4)
    np.testing.assert_array_equal(out[half]["codes"], ref[half]["codes"])
    np.testing.assert_allclose(out[half]["x_out"], ref[half]["x_out"], atol=1e-4)
  np.testing.assert_allclose(out["root_velocity"], ref["root"]["velocity"], atol=1e-4)
  # Codes -> motion: halves in SMPL order, the root trajectory integrated as motion_vqvae.py does.
  np.testing.assert_allclose(out["motion"], ref["motion"], atol=1e-4)


def test_losses_match_pytorch(tiny):
  first, ref = tiny["history"][0], tiny["ref"]
  expected_total = 0.0
  for half in ("upper", "lower"):
    for term in ("recons", "commit", "velocity", "acceleration"):
      np.testing.assert_allclose(
        first["metrics"][f"{half}/{term}"], ref[half][term], rtol=1e-5, atol=1e-7
      )
    r = ref[half]
    expected_total += r["recons"] + 0.02 * r["commit"] + r["velocity"] + r["acceleration"]
  for term in ("recons", "acceleration"):
    np.testing.assert_allclose(
      first["metrics"][f"root/{term}"], ref["root"][term], rtol=1e-5, atol=1e-7
    )
  expected_total += ref["root"]["recons"] + ref["root"]["acceleration"]
  np.testing.assert_allclose(first["total"], expected_total, rtol=1e-5)
  # The EMA step counted the batch's 8 × 4 lower vectors: counts mu·1 + (1 - mu)·n_k.
  counts = first["params"]["lower"]["quantizer"]["code_count"]
  np.testing.assert_allclose(counts.sum(), 0.99 * TINY.num_codes + 0.01 * 32, rtol=1e-6)


def test_loss_falls_and_codebooks_get_no_gradient(tiny):
  totals = [float(h["total"]) for h in tiny["history"]]
  assert totals[-1] < 0.7 * totals[0], totals
  assert max(float(h["codebook_grad"]) for h in tiny["history"]) == 0.0


def test_state_dict_round_trips_and_loads_strictly(tiny):
  """torch -> jaxgen -> torch is the identity, bit for bit; the written dict loads into the
  reference with `strict=True`; a trained jaxgen model's weights survive jaxgen -> torch ->
  jaxgen exactly, its EMA statistics (absent from the reference) become (k, 1, 1)."""
  torch = pytest.importorskip("torch")
  state = tiny["state_dict"]
  params = vq_params_from_torch({f"module.{k}": v for k, v in state.items()}, TINY)  # DataParallel
  written = vq_state_dict({"params": params}, TINY)
  assert written.keys() == state.keys()
  for name, array in state.items():
    np.testing.assert_array_equal(written[name], array, err_msg=name)
    assert written[name].dtype == np.float32 and written[name].flags.c_contiguous
  _torch_reference(TINY).load_state_dict(
    {k: torch.from_numpy(v) for k, v in written.items()}, strict=True
  )

  trained = jax.tree.map(np.asarray, tiny["history"][-1]["params"])
  back = vq_params_from_torch(vq_state_dict(trained, TINY), TINY)
  for half in ("upper", "lower"):
    quantizer, restored = trained[half].pop("quantizer"), back[half].pop("quantizer")
    assert not np.array_equal(quantizer["code_sum"], quantizer["codebook"])  # really trained
    np.testing.assert_array_equal(restored["codebook"], quantizer["codebook"])
    np.testing.assert_array_equal(restored["code_sum"], quantizer["codebook"])
    np.testing.assert_array_equal(restored["code_count"], np.ones(TINY.num_codes))
    assert restored["initialized"] == 1.0
  jax.tree.map(np.testing.assert_array_equal, back, trained)


def test_split_merge_and_root_trajectory_round_trip():
  @jax.jit
  def round_trip(motion):
    upper, lower = bvq.split_body(motion, TINY)
    velocity = bvq.root_velocity(motion[..., :3])
    return upper, lower, bvq.merge_body(upper, lower, TINY), velocity, bvq.root_trajectory(velocity)

  motion = _motion(2, 16, seed=3)
  upper, lower, merged, velocity, trajectory = round_trip(motion)
  assert upper.shape == (2, 16, 45) and lower.shape == (2, 16, 27)
  np.testing.assert_array_equal(merged[..., 3:], motion[..., 3:])
  np.testing.assert_array_equal(merged[..., :3], 0.0)
  np.testing.assert_array_equal(upper[..., 6:9], motion[..., 27:30])  # upper joint 2 is SMPL 9
  np.testing.assert_array_equal(lower[..., 9:12], motion[..., 12:15])  # lower joint 3 is SMPL 4
  np.testing.assert_allclose(velocity[:, :-1], np.diff(motion[..., :3], axis=1), atol=1e-7)
  np.testing.assert_array_equal(velocity[:, -1], velocity[:, -2])
  np.testing.assert_allclose(trajectory, motion[..., :3] - motion[:, :1, :3], atol=1e-6)


def test_named_errors():
  model = bvq.BailandoVQVAE(TINY)
  no_params = {"params": {}}  # every check runs before a parameter is read
  with pytest.raises(
    ValueError,
    match=r"motion: expected \(batch, frames, 72\) = 24 joints × 3, found shape \(1, 16, 66\)",
  ):
    model.apply(no_params, jnp.zeros((1, 16, 66)))
  with pytest.raises(ValueError, match="motion: expected a frame count divisible by 8 .* found 20"):
    model.apply(no_params, jnp.zeros((1, 20, 72)))
  with pytest.raises(
    ValueError, match=r"upper_joints \+ lower_joints: expected a partition of range\(22\)"
  ):
    bvq.BailandoVQConfig(num_joints=22)
  with pytest.raises(ValueError, match="lower_joints: expected the root joint 0"):
    bvq.BailandoVQConfig(upper_joints=(0,) + bvq.SMPL_UPPER, lower_joints=bvq.SMPL_LOWER[1:])
  codes = jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 3), jnp.int32)
  with pytest.raises(
    ValueError, match=r"upper_codes, lower_codes: expected .* found \(1, 2\) and \(1, 3\)"
  ):
    model.apply(no_params, *codes, method=bvq.BailandoVQVAE.decode_codes)
  with pytest.raises(ValueError, match="VQVAEConfig.layout: expected one of"):
    vq.VQVAEConfig(layout="jukbox")
