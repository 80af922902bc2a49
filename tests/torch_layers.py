"""jaxgen parameters copied into PyTorch modules, for parity tests on random weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def linear(p) -> "torch.nn.Linear":
  """A Dense's {"kernel", "bias"} as a torch Linear."""
  kernel = np.asarray(p["kernel"])
  layer = torch.nn.Linear(*kernel.shape)
  layer.weight.data = torch.tensor(kernel.T.copy())
  layer.bias.data = torch.tensor(np.asarray(p["bias"]).copy())
  return layer


def _load_attention(mha: "torch.nn.MultiheadAttention", p) -> None:
  mha.in_proj_weight.data = torch.tensor(
    np.concatenate([np.asarray(p[k]["kernel"]).T for k in ("to_q", "to_k", "to_v")])
  )
  mha.in_proj_bias.data = torch.tensor(
    np.concatenate([np.asarray(p[k]["bias"]) for k in ("to_q", "to_k", "to_v")])
  )
  out = linear(p["to_out_0"])
  mha.out_proj.weight.data, mha.out_proj.bias.data = out.weight.data, out.bias.data


def _load_norms(layer, p, names) -> None:
  for name in names:
    getattr(layer, name).weight.data = torch.tensor(np.asarray(p[name]["scale"]).copy())
    getattr(layer, name).bias.data = torch.tensor(np.asarray(p[name]["bias"]).copy())


def encoder_layer(
  p, width: int, heads: int, ff_size: int, *, activation: str = "gelu", norm_first: bool = False
) -> "torch.nn.TransformerEncoderLayer":
  """`jaxgen.nn.sequence_layers.TransformerEncoderLayer` params in the PyTorch layer (eval)."""
  layer = torch.nn.TransformerEncoderLayer(
    width, heads, ff_size, dropout=0.0, activation=activation, norm_first=norm_first
  )
  _load_attention(layer.self_attn, p["self_attn"])
  layer.linear1, layer.linear2 = linear(p["linear1"]), linear(p["linear2"])
  _load_norms(layer, p, ("norm1", "norm2"))
  return layer.eval()


def decoder_layer(
  p, width: int, heads: int, ff_size: int, *, activation: str = "gelu", norm_first: bool = False
) -> "torch.nn.TransformerDecoderLayer":
  """`jaxgen.nn.sequence_layers.TransformerDecoderLayer` params in the PyTorch layer (eval)."""
  layer = torch.nn.TransformerDecoderLayer(
    width, heads, ff_size, dropout=0.0, activation=activation, norm_first=norm_first
  )
  _load_attention(layer.self_attn, p["self_attn"])
  _load_attention(layer.multihead_attn, p["cross_attn"])
  layer.linear1, layer.linear2 = linear(p["linear1"]), linear(p["linear2"])
  _load_norms(layer, p, ("norm1", "norm2", "norm3"))
  return layer.eval()


def sinusoidal_table(length: int, width: int) -> "torch.Tensor":
  """The `PositionalEncoding` buffer of MDM / TEMOS / ACTOR: (length, width)."""
  pe = torch.zeros(length, width)
  position = torch.arange(0, length, dtype=torch.float).unsqueeze(1)
  div = torch.exp(torch.arange(0, width, 2).float() * (-np.log(10000.0) / width))
  pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
  return pe
