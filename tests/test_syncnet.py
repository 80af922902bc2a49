"""SyncNet: key map, parameter count, weight import, parity with a torch reference, training.

The reference below is syncnet_python's `SyncNetModel.S`, transcribed layer by
layer from the public source into torch.nn (indices matter: they are the
state-dict keys of `syncnet_v2.model`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch import nn as tnn

from jaxgen.convert import metric_networks
from jaxgen.convert.torch_state_dict import MissingWeightsError, StateDictMismatchError
from jaxgen.models import syncnet


class ReferenceS(tnn.Module):
  """syncnet_python SyncNetModel.S (num_layers_in_fc_layers=1024)."""

  def __init__(self, embedding_dim=1024):
    super().__init__()
    self.netcnnaud = tnn.Sequential(
      tnn.Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
      tnn.BatchNorm2d(64),
      tnn.ReLU(),
      tnn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
      tnn.Conv2d(64, 192, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
      tnn.BatchNorm2d(192),
      tnn.ReLU(),
      tnn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
      tnn.Conv2d(192, 384, kernel_size=(3, 3), padding=(1, 1)),
      tnn.BatchNorm2d(384),
      tnn.ReLU(),
      tnn.Conv2d(384, 256, kernel_size=(3, 3), padding=(1, 1)),
      tnn.BatchNorm2d(256),
      tnn.ReLU(),
      tnn.Conv2d(256, 256, kernel_size=(3, 3), padding=(1, 1)),
      tnn.BatchNorm2d(256),
      tnn.ReLU(),
      tnn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
      tnn.Conv2d(256, 512, kernel_size=(5, 4), padding=(0, 0)),
      tnn.BatchNorm2d(512),
      tnn.ReLU(),
    )
    self.netfcaud = tnn.Sequential(
      tnn.Linear(512, 512), tnn.BatchNorm1d(512), tnn.ReLU(), tnn.Linear(512, embedding_dim)
    )
    self.netfclip = tnn.Sequential(
      tnn.Linear(512, 512), tnn.BatchNorm1d(512), tnn.ReLU(), tnn.Linear(512, embedding_dim)
    )
    self.netcnnlip = tnn.Sequential(
      tnn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),
      tnn.BatchNorm3d(96),
      tnn.ReLU(),
      tnn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
      tnn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
      tnn.BatchNorm3d(256),
      tnn.ReLU(),
      tnn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
      tnn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
      tnn.BatchNorm3d(256),
      tnn.ReLU(),
      tnn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
      tnn.BatchNorm3d(256),
      tnn.ReLU(),
      tnn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
      tnn.BatchNorm3d(256),
      tnn.ReLU(),
      tnn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
      tnn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0),
      tnn.BatchNorm3d(512),
      tnn.ReLU(),
    )

  def forward_aud(self, x):  # x: (N, 1, 13, 20)
    mid = self.netcnnaud(x)
    return self.netfcaud(mid.view(mid.size(0), -1))

  def forward_lip(self, x):  # x: (N, 3, 5, 224, 224)
    mid = self.netcnnlip(x)
    return self.netfclip(mid.view(mid.size(0), -1))


def randomize(module, seed=0):
  """Default torch init for weights, plus random BatchNorm affine and running statistics."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, (tnn.BatchNorm1d, tnn.BatchNorm2d, tnn.BatchNorm3d)):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.1)
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
  return module.eval()


@pytest.fixture(scope="module")
def reference():
  return randomize(ReferenceS())


@pytest.fixture(scope="module")
def state_dict(reference):
  return {k: v.numpy() for k, v in reference.state_dict().items()}


@pytest.fixture(scope="module")
def variables(state_dict):
  return metric_networks.SYNCNET.from_torch(state_dict)


def test_key_map_matches_reference_state_dict(state_dict):
  expected = {k: v.shape for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  found = {k: entry.torch_shape for k, entry in metric_networks.SYNCNET.key_map().items()}
  assert found == expected


def test_parameter_count_matches_reference(reference):
  conv = lambda i, o, *k: i * o * int(np.prod(k)) + o + 2 * o  # conv + bias + BN affine
  audio = (
    conv(1, 64, 3, 3)
    + conv(64, 192, 3, 3)
    + conv(192, 384, 3, 3)
    + conv(384, 256, 3, 3)
    + conv(256, 256, 3, 3)
    + conv(256, 512, 5, 4)
  )
  lip = (
    conv(3, 96, 5, 7, 7)
    + conv(96, 256, 1, 5, 5)
    + 3 * conv(256, 256, 1, 3, 3)
    + conv(256, 512, 1, 6, 6)
  )
  head = 512 * 512 + 512 + 2 * 512 + 512 * 1024 + 1024
  assert audio + lip + 2 * head == 13_631_616
  assert syncnet.parameter_count() == 13_631_616
  assert sum(p.numel() for p in reference.parameters()) == 13_631_616


def test_import_export_round_trip_is_bit_identical(state_dict, variables):
  exported = metric_networks.SYNCNET.to_torch(variables)
  originals = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  assert exported.keys() == originals.keys()
  for key, value in originals.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_strict_key_and_shape_errors(state_dict):
  missing = dict(state_dict)
  del missing["netcnnlip.4.weight"]
  with pytest.raises(StateDictMismatchError, match=r"netcnnlip\.4\.weight"):
    metric_networks.SYNCNET.from_torch(missing)
  extra = {**state_dict, "netcnnaud.21.weight": np.zeros(3, np.float32)}
  with pytest.raises(StateDictMismatchError, match=r"netcnnaud\.21\.weight"):
    metric_networks.SYNCNET.from_torch(extra)
  wrong = {**state_dict, "netfcaud.3.weight": np.zeros((512, 512), np.float32)}
  with pytest.raises(StateDictMismatchError, match=r"netfcaud\.3\.weight.*\(1024, 512\)"):
    metric_networks.SYNCNET.from_torch(wrong)


def test_weight_files_safetensors_and_torch_pickle(tmp_path, reference, state_dict, variables):
  from safetensors.numpy import save_file

  save_file(
    {k: np.ascontiguousarray(v) for k, v in state_dict.items()}, str(tmp_path / "w.safetensors")
  )
  torch.save(reference.state_dict(), tmp_path / "syncnet_v2.model")
  for name in ("w.safetensors", "syncnet_v2.model"):
    loaded = metric_networks.SYNCNET.load(tmp_path / name)
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  with pytest.raises(MissingWeightsError, match="nope.model"):
    metric_networks.SYNCNET.load(tmp_path / "nope.model")


def _close(got, want):
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)


def test_audio_tower_parity(reference, variables):
  mfcc = np.random.default_rng(1).normal(0, 5, (3, 20, 13)).astype(np.float32)
  with torch.no_grad():
    want = reference.forward_aud(torch.from_numpy(mfcc).transpose(1, 2)[:, None]).numpy()
  model = syncnet.SyncNet()
  got = jax.jit(lambda v, x: model.apply(v, x, method=model.embed_audio))(variables, mfcc)
  assert got.shape == (3, 1024)
  _close(got, want)


def test_lip_tower_parity(reference, variables):
  video = np.random.default_rng(2).uniform(0, 255, (2, 5, 224, 224, 3)).astype(np.float32)
  with torch.no_grad():
    want = reference.forward_lip(torch.from_numpy(video).permute(0, 4, 1, 2, 3)).numpy()
  model = syncnet.SyncNet()
  got = jax.jit(lambda v, x: model.apply(v, x, method=model.embed_video))(variables, video)
  assert got.shape == (2, 1024)
  _close(got, want)


def test_rejects_bad_input(variables):
  model = syncnet.SyncNet()
  with pytest.raises(ValueError, match=r"video must have shape \(N, 5, 224, 224, 3\)"):
    model.apply(variables, jnp.zeros((1, 5, 112, 112, 3)), method=model.embed_video)
  with pytest.raises(ValueError, match=r"mfcc must have shape \(N, 20, 13\).*\(1, 13, 20\)"):
    model.apply(variables, jnp.zeros((1, 13, 20)), method=model.embed_audio)


def test_losses_on_constructed_pairs():
  v = jnp.array([[3.0, 4.0], [1.0, 0.0]])
  a = jnp.array([[0.0, 0.0], [1.0, 0.0]])
  # d = (5, 0): synced pair 0 costs d^2, unsynced pair 1 costs (margin - 0)^2.
  loss = syncnet.contrastive_loss(v, a, jnp.array([1, 0]), margin=2.0)
  assert float(loss) == pytest.approx(0.5 * (25 + 4) / 2, rel=1e-5)
  # Cosines of ReLU'd embeddings: pair 0 orthogonal (0), pair 1 parallel after the ReLU (1).
  v = jnp.array([[1.0, 0.0], [2.0, -1.0]])
  a = jnp.array([[0.0, 3.0], [1.0, 0.0]])
  bce = syncnet.cosine_bce_loss(v, a, jnp.array([0.0, 1.0]))
  assert float(bce) == pytest.approx(0.0, abs=1e-6)
  bce = syncnet.cosine_bce_loss(v, a, jnp.array([1.0, 0.0]))
  assert float(bce) == pytest.approx(100.0, rel=1e-6)  # torch BCELoss clamps log at -100
  with pytest.raises(ValueError, match=r"is_synced must have shape \(2,\)"):
    syncnet.contrastive_loss(v, a, jnp.array([1.0]))


def test_train_step_updates_batch_stats_and_lowers_loss(variables):
  """SGD steps of the contrastive loss in training mode (batch statistics).

  Only the audio tower is trained here, against fixed lip embeddings: a
  gradient through the 224x224 lip tower takes a minute to compile on CPU.
  Both towers share `ConvTower` / `EmbeddingHead`, and the lip tower's
  training-mode pass is checked abstractly below.
  """
  rng = np.random.default_rng(3)
  mfcc = jnp.asarray(rng.normal(0, 5, (8, 20, 13)), jnp.float32)
  lip = jnp.asarray(rng.normal(0, 1, (8, 1024)), jnp.float32)
  is_synced = jnp.array([1.0, 0.0] * 4)
  model = syncnet.SyncNet()
  tx = optax.sgd(1e-4)

  frozen = {k: v for k, v in variables["params"].items() if k.startswith(("netcnnlip", "netfclip"))}

  def loss_fn(audio_params, batch_stats):
    audio, updates = model.apply(
      {"params": {**frozen, **audio_params}, "batch_stats": batch_stats},
      mfcc,
      train=True,
      method=model.embed_audio,
      mutable=["batch_stats"],
    )
    return syncnet.contrastive_loss(lip, audio, is_synced, margin=20.0), updates["batch_stats"]

  @jax.jit
  def step(params, batch_stats, opt_state):
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  params = {k: v for k, v in variables["params"].items() if k not in frozen}
  batch_stats = variables["batch_stats"]
  opt_state = tx.init(params)
  losses = []
  for _ in range(3):
    params, new_stats, opt_state, loss = step(params, batch_stats, opt_state)
    losses.append(float(loss))
  assert np.isfinite(losses).all() and losses[-1] < losses[0]
  old = batch_stats["netcnnaud"]["netcnnaud_1"]["mean"]
  assert not np.allclose(new_stats["netcnnaud"]["netcnnaud_1"]["mean"], old)


def test_training_mode_of_both_towers_is_well_formed(variables):
  model = syncnet.SyncNet()
  video = jax.ShapeDtypeStruct((4, 5, 224, 224, 3), jnp.float32)
  mfcc = jax.ShapeDtypeStruct((4, 20, 13), jnp.float32)
  (v, a), updates = jax.eval_shape(
    lambda x, y: model.apply(variables, x, y, train=True, mutable=["batch_stats"]), video, mfcc
  )
  assert v.shape == a.shape == (4, 1024)
  assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(variables["batch_stats"])


def test_compute_dtype_keeps_float32_params():
  model = syncnet.SyncNet(dtype=jnp.bfloat16)
  video = jax.ShapeDtypeStruct((2, 5, 224, 224, 3), jnp.float32)
  mfcc = jax.ShapeDtypeStruct((2, 20, 13), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), video, mfcc)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  v, a = jax.eval_shape(model.apply, variables, video, mfcc)
  assert v.dtype == a.dtype == jnp.bfloat16 and v.shape == a.shape == (2, 1024)
