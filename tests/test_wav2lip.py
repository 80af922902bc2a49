"""Wav2Lip's three networks: parameter counts, parity with the reference, weights both ways.

The reference is `torch_wav2lip` (a transcription of Rudrabha/Wav2Lip's
modules) with torch's default init and random BatchNorm statistics; its
state dict is converted to jaxgen, both run the same random inputs (eval
mode with running statistics, train mode with batch statistics), and jaxgen's
variables convert back to the identical state dict.
"""

import copy
import os
import sys

import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch_wav2lip as ref  # noqa: E402

from jaxgen.convert import wav2lip as convert  # noqa: E402
from jaxgen.convert.torch_state_dict import (  # noqa: E402
  MissingWeightsError,
  StateDictMismatchError,
  UnreadableWeightsError,
)
from jaxgen.models import wav2lip  # noqa: E402

TOLERANCE = 1e-4
BATCH_COUNT = "num_batches_tracked"


def _numpy_state(module):
  return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _weights(state):
  return {k: v for k, v in state.items() if not k.endswith(BATCH_COUNT)}


def _mel(rng, *leading):
  return rng.uniform(-4, 4, (*leading, wav2lip.MEL_STEPS, wav2lip.NUM_MELS)).astype(np.float32)


def _torch_mel(mel):
  """(..., 16, 80) windows -> the reference's (..., 1, 80, 16)."""
  return torch.from_numpy(np.ascontiguousarray(np.swapaxes(mel, -1, -2)[..., None, :, :]))


def _torch_images(images):
  """NHWC / NTHWC -> NCHW / NCTHW."""
  axes = (0, 3, 1, 2) if images.ndim == 4 else (0, 4, 1, 2, 3)
  return torch.from_numpy(np.ascontiguousarray(images.transpose(axes)))


def _faces(rng, *leading):
  target = rng.random((*leading, 96, 96, 3), dtype=np.float32)
  target[..., 48:, :, :] = 0.0  # the masked lower half, as the reference feeds it
  reference = rng.random((*leading, 96, 96, 3), dtype=np.float32)
  return np.concatenate([target, reference], axis=-1)


@pytest.fixture(scope="module")
def generator():
  module = ref.randomize(ref.Wav2Lip(), seed=0)
  state = _numpy_state(module)
  return module, state, convert.generator_from_torch(state)


@pytest.fixture(scope="module")
def syncnet():
  module = ref.randomize(ref.SyncNet_color(), seed=1)
  state = _numpy_state(module)
  return module, state, convert.syncnet_from_torch(state)


@pytest.fixture(scope="module")
def discriminator():
  module = ref.randomize(ref.Wav2Lip_disc_qual(), seed=2)
  state = _numpy_state(module)
  return module, state, convert.discriminator_from_torch(state)


# ---------------------------------------------------------------------------
# Parameter counts.


def test_parameter_counts_are_the_reference_s(generator, syncnet, discriminator):
  counts = {network: wav2lip.parameter_count(network) for network in wav2lip.NETWORKS}
  assert counts == {"generator": 36_298_035, "syncnet": 16_435_072, "discriminator": 14_113_793}
  parts = {
    part: wav2lip.parameter_count("generator", m) for part, m in wav2lip.GENERATOR_PARTS.items()
  }
  assert parts == {"face_encoder": 8_171_056, "audio_encoder": 2_812_672, "decoder": 25_314_307}
  assert counts["generator"] == sum(parts.values())
  # The same numbers from the torch transcription.
  assert ref.parameter_count(generator[0]) == counts["generator"]
  assert ref.parameter_count(generator[0], ("face_decoder_blocks", "output_block")) == 25_314_307
  assert ref.parameter_count(syncnet[0]) == counts["syncnet"]
  assert ref.parameter_count(discriminator[0]) == counts["discriminator"]


def test_key_maps_name_every_reference_tensor(generator, syncnet, discriminator):
  for network, (_, state, _) in zip(wav2lip.NETWORKS, (generator, syncnet, discriminator)):
    found = {k: entry.torch_shape for k, entry in convert.key_map(network).items()}
    assert found == {k: v.shape for k, v in _weights(state).items()}, network


# ---------------------------------------------------------------------------
# Parity with the reference.


def test_generator_matches_reference_in_eval_mode(generator):
  module, _, variables = generator
  rng = np.random.default_rng(0)
  mel, faces = _mel(rng, 2), _faces(rng, 2)  # (B, ...): one frame per example
  ours = jax.jit(wav2lip.Wav2LipGenerator().apply)(variables, mel, faces)
  with torch.no_grad():
    theirs = module(_torch_mel(mel), _torch_images(faces)).numpy()
  assert ours.shape == (2, 96, 96, 3)
  np.testing.assert_allclose(ours, theirs.transpose(0, 2, 3, 1), atol=TOLERANCE, rtol=0)


def test_generator_matches_reference_in_train_mode_and_updates_statistics_alike(generator):
  module, state, variables = generator
  rng = np.random.default_rng(1)
  # (B, T, ...): time folded into the batch, so BatchNorm sees 4 values per channel at 1x1.
  # With 2, normalising two nearly equal values amplifies float32 rounding past 1e-4 in
  # places (in float64 the same networks agree to 1e-12).
  mel, faces = _mel(rng, 2, 2), _faces(rng, 2, 2)
  apply = jax.jit(
    lambda v, m, f: wav2lip.Wav2LipGenerator().apply(v, m, f, train=True, mutable=["batch_stats"])
  )
  ours, updates = apply(variables, mel, faces)
  module = copy.deepcopy(module).train()
  with torch.no_grad():
    theirs = module(_torch_mel(mel), _torch_images(faces)).numpy()
  assert ours.shape == (2, 2, 96, 96, 3)
  np.testing.assert_allclose(ours, theirs.transpose(0, 2, 3, 4, 1), atol=TOLERANCE, rtol=0)
  # The running statistics moved as torch's did (unbiased variance, momentum 0.1).
  exported = convert.generator_to_torch({"params": variables["params"], **updates})
  trained = _weights(_numpy_state(module))
  assert exported.keys() >= trained.keys()
  for key, value in trained.items():
    np.testing.assert_allclose(exported[key], value, atol=1e-5, rtol=1e-5, err_msg=key)
  assert not np.allclose(
    exported["audio_encoder.12.conv_block.1.running_var"],
    state["audio_encoder.12.conv_block.1.running_var"],
  )


def test_syncnet_matches_reference_in_both_modes_and_its_loss(syncnet):
  module, _, variables = syncnet
  rng = np.random.default_rng(2)
  mel = _mel(rng, 4)
  frames = rng.random((4, 5, 96, 96, 3), dtype=np.float32)
  faces = np.asarray(wav2lip.expert_face_window(frames))
  # The reference's get_sync_loss: lower halves, frames concatenated on channels.
  g = torch.from_numpy(frames.transpose(0, 4, 1, 2, 3).copy())[:, :, :, 48:]
  np.testing.assert_array_equal(
    _torch_images(faces).numpy(), torch.cat([g[:, :, i] for i in range(5)], dim=1).numpy()
  )
  model = wav2lip.SyncNetColor()
  labels = np.array([[1.0], [0.0], [0.0], [1.0]], np.float32)
  for train in (False, True):
    module = copy.deepcopy(module).train(train)
    apply = jax.jit(lambda v, m, f, t=train: model.apply(v, m, f, train=t, mutable=["batch_stats"]))
    (audio, face), _ = apply(variables, mel, faces)
    with torch.no_grad():
      their_audio, their_face = module(_torch_mel(mel), _torch_images(faces))
      their_loss = ref.cosine_loss(their_audio, their_face, torch.from_numpy(labels)).item()
    np.testing.assert_allclose(audio, their_audio.numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(face, their_face.numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(audio, axis=-1), 1.0, atol=1e-5)
    loss = wav2lip.sync_loss(audio, face, labels)
    np.testing.assert_allclose(loss, their_loss, atol=TOLERANCE, rtol=0)
    p = wav2lip.sync_probability(audio, face)
    assert np.all((p >= 0) & (p <= 1))  # ReLU'd embeddings: cosine is a probability


def test_discriminator_and_its_losses_match_reference(discriminator):
  module, _, variables = discriminator
  rng = np.random.default_rng(3)
  real = rng.random((2, 2, 96, 96, 3), dtype=np.float32)
  fake = rng.random((2, 2, 96, 96, 3), dtype=np.float32)
  model = wav2lip.QualityDiscriminator()
  apply = jax.jit(model.apply)
  ours_real, ours_fake = apply(variables, real), apply(variables, fake)
  assert ours_real.shape == (2, 2)
  with torch.no_grad():
    theirs = module(_torch_images(real)).numpy()  # time-major (T * B, 1)
    perceptual = module.perceptual_forward(_torch_images(fake)).item()
    fake_probability = module(_torch_images(fake))
    fake_loss = torch.nn.functional.binary_cross_entropy(
      fake_probability, torch.zeros_like(fake_probability)
    ).item()
  np.testing.assert_allclose(ours_real, theirs.reshape(2, 2).T, atol=TOLERANCE, rtol=0)
  np.testing.assert_allclose(wav2lip.perceptual_loss(ours_fake), perceptual, atol=TOLERANCE)
  real_loss, ours_fake_loss = wav2lip.discriminator_losses(ours_real, ours_fake)
  np.testing.assert_allclose(ours_fake_loss, fake_loss, atol=TOLERANCE)
  np.testing.assert_allclose(real_loss, -np.mean(np.log(theirs)), atol=TOLERANCE)


# ---------------------------------------------------------------------------
# Weights both ways, checkpoint files.


def test_round_trips_give_back_the_reference_state_dicts(generator, syncnet, discriminator):
  for network, (_, state, variables) in zip(wav2lip.NETWORKS, (generator, syncnet, discriminator)):
    back = convert.to_torch(variables, network)
    assert back.keys() == state.keys(), network
    for key, value in state.items():
      if key.endswith(BATCH_COUNT):
        assert back[key].dtype == np.int64 and back[key].shape == ()
      else:
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_initialisation_is_torch_s_default():
  """Uniform weights and biases with bound 1/sqrt(fan_in); a ConvTranspose2d's fan_in is out*k*k."""
  x = jnp.zeros((1, 3, 3, 64))
  for block, fan_in in (
    (wav2lip.Conv2dBlock(wav2lip.ConvSpec(32, 3)), 64 * 9),
    (wav2lip.Conv2dTransposeBlock(wav2lip.ConvSpec(32, 3, 2, output_padding=1)), 32 * 9),
  ):
    params = jax.jit(block.init, static_argnums=2)(jax.random.key(0), x, False)["params"]
    conv = jax.tree_util.tree_map(np.asarray, nn.meta.unbox(params["conv_block_0"]))
    bound = 1 / np.sqrt(fan_in)
    for leaf in (conv["kernel"], conv["bias"]):
      assert 0.8 * bound < np.abs(leaf).max() <= bound
    np.testing.assert_allclose(conv["kernel"].std(), bound / np.sqrt(3), rtol=0.05)
    norm = nn.meta.unbox(params["conv_block_1"])
    np.testing.assert_array_equal(norm["scale"], 1.0)


def test_reference_checkpoint_loads(tmp_path, syncnet):
  _, state, _ = syncnet
  optimizer = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=1e-4)
  optimizer.param_groups[0]["params"][0].grad = torch.ones(3)
  optimizer.step()
  path = tmp_path / "lipsync_expert.pth"
  # save_checkpoint of a DataParallel-wrapped model.
  torch.save(
    {
      "state_dict": {"module." + k: torch.from_numpy(v) for k, v in state.items()},
      "optimizer": optimizer.state_dict(),
      "global_step": 3,
      "global_epoch": 1,
    },
    path,
  )
  loaded = convert.load_wav2lip_checkpoint(path, "syncnet")
  np.testing.assert_array_equal(
    loaded["batch_stats"]["audio_encoder_0"]["conv_block_1"]["var"],
    state["audio_encoder.0.conv_block.1.running_var"],
  )
  with pytest.raises(StateDictMismatchError, match="missing keys"):
    convert.load_wav2lip_checkpoint(path, "generator")


def test_safetensors_state_dict_loads(tmp_path, discriminator):
  from safetensors.numpy import save_file

  _, state, variables = discriminator
  path = tmp_path / "disc.safetensors"
  save_file(state, str(path))
  loaded = convert.load_wav2lip_checkpoint(path, "discriminator")
  kernel = ("params", "binary_pred_0", "kernel")
  np.testing.assert_array_equal(
    loaded[kernel[0]][kernel[1]][kernel[2]], variables[kernel[0]][kernel[1]][kernel[2]]
  )


class _RunsCode:
  """Unpickling this would create `marker`: what a malicious checkpoint could do instead."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.makedirs, (self.marker,))


def test_files_that_would_run_code_or_are_missing_are_refused(tmp_path, monkeypatch):
  marker = tmp_path / "code_ran"
  path = tmp_path / "wav2lip.pth"
  torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _RunsCode(str(marker))}, path)
  with pytest.raises(UnreadableWeightsError, match="weights_only"):
    convert.load_wav2lip_checkpoint(path, "generator")
  assert not marker.exists()
  with pytest.raises(MissingWeightsError, match="does not exist"):
    convert.load_wav2lip_checkpoint(tmp_path / "absent.pth", "generator")
  with pytest.raises(wav2lip.UnknownNetworkError, match="network"):
    convert.load_wav2lip_checkpoint(path, "expert")
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match="needs torch"):
    convert.load_wav2lip_checkpoint(path, "generator")


def test_mismatched_state_dicts_name_every_problem(discriminator):
  _, state, _ = discriminator
  broken = dict(state)
  del broken["binary_pred.0.bias"]
  broken["binary_pred.1.weight"] = np.zeros(1, np.float32)
  broken["face_encoder_blocks.0.0.conv_block.0.bias"] = np.zeros(31, np.float32)
  with pytest.raises(StateDictMismatchError) as error:
    convert.discriminator_from_torch(broken)
  message = str(error.value)
  for expected in ("binary_pred.0.bias", "binary_pred.1.weight", "expected (32,), found (31,)"):
    assert expected in message


# ---------------------------------------------------------------------------
# Named errors before anything is traced into a program.


def _init(model, *inputs):
  return jax.eval_shape(model.init, jax.random.key(0), *(jnp.zeros(s) for s in inputs))


@pytest.mark.parametrize(
  "mel, faces, error, match",
  [
    ((2, 16, 80), (2, 64, 64, 6), wav2lip.FaceShapeError, r"faces: expected .*96, 96, 6"),
    ((2, 2, 16, 80), (2, 2, 96, 96, 3), wav2lip.FaceShapeError, r"found shape \(2, 2, 96, 96, 3\)"),
    ((2, 80, 16), (2, 96, 96, 6), wav2lip.MelWindowError, r"audio_windows: expected \(2, 16, 80\)"),
    ((2, 3, 16, 80), (2, 2, 96, 96, 6), wav2lip.MelWindowError, r"found shape \(2, 3, 16, 80\)"),
  ],
)
def test_generator_names_bad_inputs(mel, faces, error, match):
  with pytest.raises(error, match=match):
    _init(wav2lip.Wav2LipGenerator(), mel, faces)


def test_other_networks_and_helpers_name_bad_inputs():
  with pytest.raises(wav2lip.FaceShapeError, match=r"faces: expected \(B, 48, 96, 15\)"):
    _init(wav2lip.SyncNetColor(), (2, 16, 80), (2, 96, 96, 15))
  with pytest.raises(wav2lip.MelWindowError, match=r"mel: expected \(2, 16, 80\)"):
    _init(wav2lip.SyncNetColor(), (2, 16, 40), (2, 48, 96, 15))
  with pytest.raises(wav2lip.FaceShapeError, match="frames: expected"):
    _init(wav2lip.QualityDiscriminator(), (2, 48, 96, 3))
  with pytest.raises(wav2lip.FaceShapeError, match=r"frames: expected \(B, 5, 96, 96, 3\)"):
    wav2lip.expert_face_window(jnp.zeros((2, 4, 96, 96, 3)))
  with pytest.raises(wav2lip.EmbeddingShapeError, match=r"labels: expected shape \(2,\)"):
    wav2lip.sync_loss(jnp.ones((2, 512)), jnp.ones((2, 512)), jnp.ones((3,)))
  # torch refuses training BatchNorm on one value per channel; so does jaxgen, by name.
  abstract = wav2lip.abstract_variables("generator")
  with pytest.raises(wav2lip.BatchStatisticsError, match="more than 1 value per channel"):
    jax.eval_shape(
      lambda v: wav2lip.Wav2LipGenerator().apply(
        v, jnp.zeros((1, 16, 80)), jnp.zeros((1, 96, 96, 6)), train=True, mutable=["batch_stats"]
      ),
      abstract,
    )


def test_channel_order_helper_swaps_each_colour_triple():
  images = jnp.arange(12.0).reshape(1, 2, 6)
  np.testing.assert_array_equal(
    wav2lip.reverse_channel_order(images)[0, 0], [2.0, 1.0, 0.0, 5.0, 4.0, 3.0]
  )
