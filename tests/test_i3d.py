"""I3D (jaxgen.models.i3d) against a PyTorch reference of pytorch-i3d's InceptionI3d.

The reference below is written from piergiaj/pytorch-i3d `pytorch_i3d.py`
(module names, channel tables, TF-style SAME padding computed in forward,
zero-padded max pools, BatchNorm3d(eps=0.001, momentum=0.01), 2x7x7 average
pool and a biased 1x1x1 logits conv), so its state-dict keys are the ones of
the released rgb_imagenet.pt / rgb_charades.pt checkpoints.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.convert import keymap, metric_networks
from jaxgen.convert.torch_state_dict import MissingWeightsError
from jaxgen.models import i3d, inception

torch = pytest.importorskip("torch")
F = torch.nn.functional

# Parameter counts at paper size (trainable parameters, no BatchNorm buffers).
I3D_PARAMETERS = 12_697_264  # pytorch-i3d InceptionI3d(400, in_channels=3)
FID_INCEPTION_PARAMETERS = 23_850_960  # pytorch-fid FIDInceptionV3 (1008 logits, no aux head)

# The smallest clip the 2x7x7 logits pool accepts: 9 frames of 193x193.
SMALLEST_CLIP = (1, i3d.MIN_FRAMES, i3d.MIN_INPUT_SIZE, i3d.MIN_INPUT_SIZE, 3)


# --- the PyTorch reference ----------------------------------------------------


def _same_pad(size, kernel, stride):
  total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
  return total // 2, total - total // 2


def _pad_same(x, kernel, stride):
  (t0, t1), (h0, h1), (w0, w1) = (
    _same_pad(s, k, st) for s, k, st in zip(x.shape[2:], kernel, stride)
  )
  return F.pad(x, (w0, w1, h0, h1, t0, t1))


class TorchMaxPool3dSamePadding(torch.nn.MaxPool3d):
  def forward(self, x):
    return super().forward(_pad_same(x, self.kernel_size, self.stride))


class TorchUnit3D(torch.nn.Module):
  def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1), bn=True, bias=False, relu=True):
    super().__init__()
    self.kernel, self.stride, self.relu = kernel, stride, relu
    self.conv3d = torch.nn.Conv3d(cin, cout, kernel, stride=stride, padding=0, bias=bias)
    self.bn = torch.nn.BatchNorm3d(cout, eps=0.001, momentum=0.01) if bn else None

  def forward(self, x):
    x = self.conv3d(_pad_same(x, self.kernel, self.stride))
    if self.bn is not None:
      x = self.bn(x)
    return F.relu(x) if self.relu else x


class TorchInceptionModule(torch.nn.Module):
  def __init__(self, cin, c):
    super().__init__()
    self.b0 = TorchUnit3D(cin, c[0])
    self.b1a = TorchUnit3D(cin, c[1])
    self.b1b = TorchUnit3D(c[1], c[2], (3, 3, 3))
    self.b2a = TorchUnit3D(cin, c[3])
    self.b2b = TorchUnit3D(c[3], c[4], (3, 3, 3))
    self.b3a = TorchMaxPool3dSamePadding((3, 3, 3), stride=(1, 1, 1), padding=0)
    self.b3b = TorchUnit3D(cin, c[5])

  def forward(self, x):
    b3 = self.b3b(self.b3a(x))
    return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), b3], dim=1)


class TorchInceptionI3d(torch.nn.Module):
  """pytorch-i3d's InceptionI3d(num_classes, in_channels=3) in evaluation mode."""

  ENDPOINTS = (
    ("Conv3d_1a_7x7", lambda: TorchUnit3D(3, 64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", lambda: TorchMaxPool3dSamePadding((1, 3, 3), (1, 2, 2), 0)),
    ("Conv3d_2b_1x1", lambda: TorchUnit3D(64, 64)),
    ("Conv3d_2c_3x3", lambda: TorchUnit3D(64, 192, (3, 3, 3))),
    ("MaxPool3d_3a_3x3", lambda: TorchMaxPool3dSamePadding((1, 3, 3), (1, 2, 2), 0)),
    ("Mixed_3b", lambda: TorchInceptionModule(192, [64, 96, 128, 16, 32, 32])),
    ("Mixed_3c", lambda: TorchInceptionModule(256, [128, 128, 192, 32, 96, 64])),
    ("MaxPool3d_4a_3x3", lambda: TorchMaxPool3dSamePadding((3, 3, 3), (2, 2, 2), 0)),
    ("Mixed_4b", lambda: TorchInceptionModule(128 + 192 + 96 + 64, [192, 96, 208, 16, 48, 64])),
    ("Mixed_4c", lambda: TorchInceptionModule(192 + 208 + 48 + 64, [160, 112, 224, 24, 64, 64])),
    ("Mixed_4d", lambda: TorchInceptionModule(160 + 224 + 64 + 64, [128, 128, 256, 24, 64, 64])),
    ("Mixed_4e", lambda: TorchInceptionModule(128 + 256 + 64 + 64, [112, 144, 288, 32, 64, 64])),
    ("Mixed_4f", lambda: TorchInceptionModule(112 + 288 + 64 + 64, [256, 160, 320, 32, 128, 128])),
    ("MaxPool3d_5a_2x2", lambda: TorchMaxPool3dSamePadding((2, 2, 2), (2, 2, 2), 0)),
    (
      "Mixed_5b",
      lambda: TorchInceptionModule(256 + 320 + 128 + 128, [256, 160, 320, 32, 128, 128]),
    ),
    (
      "Mixed_5c",
      lambda: TorchInceptionModule(256 + 320 + 128 + 128, [384, 192, 384, 48, 128, 128]),
    ),
  )

  def __init__(self, num_classes=400):
    super().__init__()
    for name, make in self.ENDPOINTS:
      self.add_module(name, make())
    self.avg_pool = torch.nn.AvgPool3d((2, 7, 7), stride=(1, 1, 1))
    self.dropout = torch.nn.Dropout(0.5)
    self.logits = TorchUnit3D(384 + 384 + 128 + 128, num_classes, bn=False, bias=True, relu=False)

  def forward(self, x):
    """(N, 3, T, H, W) -> pooled (N, 1024, T', 1, 1), logits (N, classes, T') as pytorch-i3d."""
    for name, _ in self.ENDPOINTS:
      x = self._modules[name](x)
    pooled = self.avg_pool(x)
    return pooled, self.logits(self.dropout(pooled)).squeeze(3).squeeze(3)


def randomised_reference(seed=0):
  """The reference with random weights and non-trivial BatchNorm running statistics."""
  torch.manual_seed(seed)
  model = TorchInceptionI3d().eval()
  generator = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for name, module in model.named_modules():
      if isinstance(module, torch.nn.Conv3d):
        fan_in = np.prod(module.weight.shape[1:])
        module.weight.normal_(0, float(np.sqrt(2.0 / fan_in)), generator=generator)
        if module.bias is not None:
          module.bias.normal_(0, 0.1, generator=generator)
      if isinstance(module, torch.nn.BatchNorm3d):
        module.weight.uniform_(0.5, 1.5, generator=generator)
        module.bias.normal_(0, 0.1, generator=generator)
        module.running_mean.normal_(0, 0.1, generator=generator)
        module.running_var.uniform_(0.5, 1.5, generator=generator)
  return model


@pytest.fixture(scope="module")
def reference():
  return randomised_reference()


@pytest.fixture(scope="module")
def variables(reference):
  return metric_networks.I3D.from_torch(reference.state_dict())


# --- sizes --------------------------------------------------------------------


def test_parameter_counts_equal_the_pytorch_references():
  with torch.device("meta"):  # shapes only
    reference_count = sum(p.numel() for p in TorchInceptionI3d(400).parameters())
  assert reference_count == I3D_PARAMETERS
  assert i3d.parameter_count() == I3D_PARAMETERS  # jax.eval_shape at 16x224x224
  assert inception.parameter_count() == FID_INCEPTION_PARAMETERS  # see test_metrics_inception


def test_paper_size_output_shapes_by_eval_shape():
  variables = i3d.abstract_variables()
  clip = jax.ShapeDtypeStruct((2, 16, 224, 224, 3), jnp.float32)
  outputs, state = jax.eval_shape(
    lambda v, x: i3d.InceptionI3d().apply(v, x, mutable=["intermediates"]), variables, clip
  )
  assert outputs.logits.shape == (2, 400)
  assert outputs.pool.shape == (2, 1024)
  shapes = {k: v.shape for k, v in state["intermediates"]["endpoints"][0].items()}
  assert shapes["Conv3d_1a_7x7"] == (2, 8, 112, 112, 64)
  assert shapes["Mixed_3c"] == (2, 8, 28, 28, 480)
  assert shapes["Mixed_4f"] == (2, 4, 14, 14, 832)
  assert shapes["Mixed_5c"] == (2, 2, 7, 7, 1024)
  assert shapes["Logits"] == (2, 1, 1, 1, 400)


@pytest.mark.parametrize(
  "size, kernel, stride, expected",
  [
    (224, 7, 2, (2, 3)),
    (16, 7, 2, (2, 3)),
    (7, 2, 2, (0, 1)),
    (8, 2, 2, (0, 0)),
    (56, 3, 2, (0, 1)),
    (57, 3, 2, (1, 1)),
    (8, 3, 1, (1, 1)),
    (1, 3, 1, (1, 1)),
  ],
)
def test_same_padding_is_tensorflows(size, kernel, stride, expected):
  assert i3d.same_padding(size, kernel, stride) == expected
  assert _same_pad(size, kernel, stride) == expected
  out = -(-size // stride)  # TF SAME: ceil(size / stride) outputs
  assert (size + sum(expected) - kernel) // stride + 1 == out


@pytest.mark.parametrize(
  "shape", [(1, 8, 193, 193, 3), (1, 9, 192, 224, 3), (1, 16, 224, 224), (1, 16, 224, 224, 1)]
)
def test_too_small_or_malformed_clips_are_named_errors(variables, shape):
  with pytest.raises(ValueError, match="videos must"):
    i3d.InceptionI3d().apply(variables, jnp.zeros(shape))


# --- weights ------------------------------------------------------------------


def test_key_map_matches_the_reference_state_dict(reference):
  expected = {
    k: tuple(v.shape)
    for k, v in reference.state_dict().items()
    if not k.endswith("num_batches_tracked")
  }
  assert {k: e.torch_shape for k, e in metric_networks.I3D.key_map().items()} == expected
  assert "Conv3d_1a_7x7.conv3d.weight" in expected and "logits.conv3d.bias" in expected
  assert "Mixed_5c.b3b.bn.running_var" in expected


def test_round_trip_is_bit_identical_and_loads_strictly(reference, variables):
  state = metric_networks.I3D.to_torch(variables)
  for key, value in reference.state_dict().items():
    if key.endswith("num_batches_tracked"):
      assert key not in state
      continue
    np.testing.assert_array_equal(state[key], value.numpy(), err_msg=key)
  fresh = TorchInceptionI3d()
  result = fresh.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
  assert not result.unexpected_keys
  assert all(k.endswith("num_batches_tracked") for k in result.missing_keys)


def test_strict_check_lists_missing_unexpected_and_misshapen_keys(reference):
  state = {k: v.numpy() for k, v in reference.state_dict().items()}
  del state["Mixed_4c.b1b.conv3d.weight"]
  del state["Conv3d_1a_7x7.bn.running_mean"]
  state["Mixed_4c.b1b.conv.weight"] = np.zeros(1, np.float32)
  state["logits.conv3d.bias"] = np.zeros(157, np.float32)  # a Charades head
  with pytest.raises(keymap.ConversionError) as error:
    metric_networks.I3D.from_torch(state)
  message = str(error.value)
  assert "missing keys (2)" in message and "Mixed_4c.b1b.conv3d.weight" in message
  assert "Conv3d_1a_7x7.bn.running_mean" in message
  assert "unexpected keys (1)" in message and "Mixed_4c.b1b.conv.weight" in message
  assert "logits.conv3d.bias: expected (400,), found (157,)" in message


def test_weights_load_from_pt_and_safetensors_files(tmp_path, reference, variables):
  from safetensors.numpy import save_file

  torch.save(reference.state_dict(), tmp_path / "rgb_imagenet.pt")
  state = {k: v.numpy() for k, v in reference.state_dict().items() if "num_batches" not in k}
  save_file(state, str(tmp_path / "i3d.safetensors"))
  for name in ("rgb_imagenet.pt", "i3d.safetensors"):
    loaded = metric_networks.I3D.load(tmp_path / name)
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)
  with pytest.raises(MissingWeightsError, match="does not exist"):
    metric_networks.I3D.load(tmp_path / "absent.pt")


# --- parity -------------------------------------------------------------------


def test_forward_matches_the_reference_on_the_smallest_clip(reference, variables):
  # i3d_outputs is the jitted forward FVD uses; the FVD tests reuse this compile.
  rng = np.random.default_rng(0)
  clip = rng.uniform(-1, 1, SMALLEST_CLIP).astype(np.float32)
  with torch.no_grad():
    pooled, logits = reference(torch.from_numpy(clip.transpose(0, 4, 1, 2, 3)))
  outputs = i3d.i3d_outputs(variables, clip)
  # (N, C, T', 1, 1) pool and (N, classes, T') logits, averaged over T' (= 1 here).
  want_pool = pooled.mean(dim=(2, 3, 4)).numpy()
  want_logits = logits.mean(dim=2).numpy()
  np.testing.assert_allclose(np.asarray(outputs.pool), want_pool, atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(outputs.logits), want_logits, atol=1e-4, rtol=0)
  assert np.abs(want_logits).max() > 1.0  # a signal that survived all 16 endpoints
