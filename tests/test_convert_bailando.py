"""`load_bailando_checkpoint`: reference checkpoint files (.pt, .safetensors) and their named
errors. The maps themselves are checked against the PyTorch transcriptions in
`test_bailando_vq.py` and `test_bailando_gpt.py`."""

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from jaxgen.convert.bailando import (
  gpt_param_shapes,
  gpt_params_from_torch,
  gpt_state_dict,
  load_bailando_checkpoint,
  vq_param_shapes,
  vq_state_dict,
)
from jaxgen.convert.keymap import unflatten
from jaxgen.convert.torch_state_dict import (
  MissingWeightsError,
  StateDictMismatchError,
  UnreadableWeightsError,
)
from jaxgen.models.bailando_gpt import BailandoGPTConfig
from jaxgen.models.bailando_vq import BailandoVQConfig

VQ = BailandoVQConfig(width=4, code_dim=4, num_codes=6, down_t=1, depth=1)
GPT = BailandoGPTConfig(
  num_codes_upper=5,
  num_codes_lower=3,
  music_dim=2,
  embed_dim=4,
  block_size=3,
  num_base_layers=1,
  num_head_layers=1,
  num_heads=1,
)
UPPER_K = "vqvae_up.bottleneck.level_blocks.0.k"
ROOT_OUT = "vqvae_down.decoders_root.0.out.weight"


class PickledConfig(dict):
  """Stands in for the reference checkpoints' pickled config (an easydict.EasyDict)."""


def _random_state(shapes: dict, state_dict, config, seed: int) -> dict:
  """A reference-layout state dict of random values, written by the map under test (whose
  layout `test_bailando_vq.py` and `test_bailando_gpt.py` check against PyTorch)."""
  rng = np.random.default_rng(seed)
  params = {path: rng.normal(size=shape).astype(np.float32) for path, shape in shapes.items()}
  return state_dict(unflatten(params), config)


@pytest.fixture(scope="module")
def vq_state():
  return _random_state(vq_param_shapes(VQ), vq_state_dict, VQ, 0)


@pytest.fixture(scope="module")
def gpt_state():
  return _random_state(gpt_param_shapes(GPT), gpt_state_dict, GPT, 1)


def test_safetensors_and_training_checkpoint_load_the_same_params(vq_state, gpt_state, tmp_path):
  torch = pytest.importorskip("torch")
  for kind, config, state in (("vq", VQ, vq_state), ("gpt", GPT, gpt_state)):
    save_file(state, tmp_path / f"{kind}.safetensors")
    from_safetensors = load_bailando_checkpoint(tmp_path / f"{kind}.safetensors", kind, config)
    # The reference's `epoch_<n>.pt`: DataParallel keys under "model", beside the epoch.
    model = {f"module.{k}": torch.from_numpy(v) for k, v in state.items()}
    if kind == "gpt":
      model["module.gpt_base.blocks.0.attn.mask"] = torch.tril(torch.ones(3, 3))
    torch.save({"model": model, "epoch": 7}, tmp_path / f"{kind}.pt")
    from_pt = load_bailando_checkpoint(tmp_path / f"{kind}.pt", kind, config)
    jax.tree.map(np.testing.assert_array_equal, from_pt, from_safetensors)
    written = (vq_state_dict if kind == "vq" else gpt_state_dict)(from_pt, config)
    assert written.keys() == state.keys()
    for name in state:
      np.testing.assert_array_equal(written[name], state[name], err_msg=name)


def test_named_errors_for_missing_files_keys_and_shapes(vq_state, tmp_path):
  with pytest.raises(MissingWeightsError, match=r"'.*absent\.pt' does not exist; pass a Bailando"):
    load_bailando_checkpoint(tmp_path / "absent.pt", "vq", VQ)
  with pytest.raises(ValueError, match=r"kind: expected one of \('vq', 'gpt'\), found 'vqvae'"):
    load_bailando_checkpoint(tmp_path / "absent.pt", "vqvae", VQ)
  with pytest.raises(TypeError, match="config: expected a BailandoGPTConfig for kind 'gpt'"):
    load_bailando_checkpoint(tmp_path / "absent.pt", "gpt", VQ)

  broken = dict(vq_state)
  del broken[UPPER_K]
  broken["vqvae_up.extra.weight"] = np.zeros(1, np.float32)
  broken[ROOT_OUT] = np.zeros((4, 4, 3), np.float32)  # root decoder writes 3 channels, not 4
  save_file(broken, tmp_path / "broken.safetensors")
  with pytest.raises(StateDictMismatchError) as error:
    load_bailando_checkpoint(tmp_path / "broken.safetensors", "vq", VQ)
  message = str(error.value)
  assert "state dict does not match Bailando's SepVQVAER" in message
  assert f"missing keys (1):\n  {UPPER_K}" in message
  assert "unexpected keys (1):\n  vqvae_up.extra.weight" in message
  assert f"{ROOT_OUT}: expected (3, 4, 3) (jaxgen root_decoder/conv_out/kernel)" in message
  assert "found (4, 4, 3)" in message

  # A VQ checkpoint read as a GPT: every key named missing or unexpected, the first ten listed.
  with pytest.raises(StateDictMismatchError) as error:
    gpt_params_from_torch(vq_state, GPT)
  message = str(error.value)
  assert (
    f"unexpected keys ({len(vq_state)}):\n  vqvae_down.bottleneck.level_blocks.0.k\n" in message
  )
  assert f"  ... and {len(vq_state) - 10} more" in message
  assert "missing keys (" in message and "\n  gpt_base.blocks.0.attn.key.bias\n" in message

  (tmp_path / "truncated.safetensors").write_bytes(b"\x08\x00\x00")
  with pytest.raises(UnreadableWeightsError, match="expected a complete safetensors file"):
    load_bailando_checkpoint(tmp_path / "truncated.safetensors", "vq", VQ)


def test_pickled_objects_are_refused_by_name(vq_state, tmp_path):
  torch = pytest.importorskip("torch")

  model = {k: torch.from_numpy(v) for k, v in vq_state.items()}
  torch.save({"model": model, "config": PickledConfig(lr=1.0)}, tmp_path / "with_config.pt")
  with pytest.raises(UnreadableWeightsError) as error:
    load_bailando_checkpoint(tmp_path / "with_config.pt", "vq", VQ)
  assert "pickled objects other than tensors (test_convert_bailando.PickledConfig)" in str(
    error.value
  )
  assert "re-save checkpoint['model'] alone or convert it to .safetensors" in str(error.value)
  (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
  with pytest.raises(UnreadableWeightsError, match="found a file it cannot read"):
    load_bailando_checkpoint(tmp_path / "garbage.pt", "vq", VQ)
  torch.save({"model": {"a": 1}}, tmp_path / "not_tensors.pt")
  with pytest.raises(StateDictMismatchError, match=r"non-tensor values under \['a'\]"):
    load_bailando_checkpoint(tmp_path / "not_tensors.pt", "vq", VQ)
