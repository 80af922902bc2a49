"""A PyTorch transcription of the guided-diffusion (ADM) U-Net, for parity tests.

Written from openai/guided-diffusion `unet.py` / `nn.py` and Palette's copy
(`models/guided_diffusion_modules/`): the same module tree, so its state-dict
keys are the reference's (`input_blocks.1.0.in_layers.2.weight`, ...).
`load_jaxgen_params` copies a jaxgen `ADMUNet`'s parameters into it.
"""

import math

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


def normalization(channels):
  return nn.GroupNorm(32, channels)


def timestep_embedding(t, dim, max_period=10000):
  half = dim // 2
  freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
  args = t[:, None].float() * freqs[None]
  return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Upsample(nn.Module):
  def __init__(self, channels, use_conv, out_channels=None):
    super().__init__()
    self.use_conv = use_conv
    if use_conv:
      self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

  def forward(self, x):
    x = F.interpolate(x, scale_factor=2, mode="nearest")
    return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
  def __init__(self, channels, use_conv, out_channels=None):
    super().__init__()
    if use_conv:
      self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)
    else:
      self.op = nn.AvgPool2d(kernel_size=2, stride=2)

  def forward(self, x):
    return self.op(x)


class ResBlock(nn.Module):
  def __init__(
    self, channels, emb_channels, dropout, out_channels=None, use_conv=False,
    use_scale_shift_norm=False, up=False, down=False,
  ):  # fmt: skip
    super().__init__()
    out_channels = out_channels or channels
    self.use_scale_shift_norm = use_scale_shift_norm
    self.in_layers = nn.Sequential(
      normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
    )
    self.updown = up or down
    if up:
      self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
    elif down:
      self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
    else:
      self.h_upd = self.x_upd = nn.Identity()
    self.emb_layers = nn.Sequential(
      nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
    )
    self.out_layers = nn.Sequential(
      normalization(out_channels),
      nn.SiLU(),
      nn.Dropout(p=dropout),
      nn.Conv2d(out_channels, out_channels, 3, padding=1),
    )
    if out_channels == channels:
      self.skip_connection = nn.Identity()
    elif use_conv:
      self.skip_connection = nn.Conv2d(channels, out_channels, 3, padding=1)
    else:
      self.skip_connection = nn.Conv2d(channels, out_channels, 1)

  def forward(self, x, emb):
    if self.updown:
      in_rest, in_conv = self.in_layers[:-1], self.in_layers[-1]
      h = in_conv(self.h_upd(in_rest(x)))
      x = self.x_upd(x)
    else:
      h = self.in_layers(x)
    emb_out = self.emb_layers(emb)[..., None, None]
    if self.use_scale_shift_norm:
      scale, shift = torch.chunk(emb_out, 2, dim=1)
      h = self.out_layers[0](h) * (1 + scale) + shift
      h = self.out_layers[1:](h)
    else:
      h = self.out_layers(h + emb_out)
    return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
  def __init__(self, channels, num_heads=1, num_head_channels=-1, use_new_attention_order=False):
    super().__init__()
    self.num_heads = num_heads if num_head_channels == -1 else channels // num_head_channels
    self.new_order = use_new_attention_order
    self.norm = normalization(channels)
    self.qkv = nn.Conv1d(channels, channels * 3, 1)
    self.proj_out = nn.Conv1d(channels, channels, 1)

  def attention(self, qkv):
    bs, width, length = qkv.shape
    ch = width // (3 * self.num_heads)
    scale = 1 / math.sqrt(math.sqrt(ch))
    if self.new_order:  # QKVAttention: split q, k, v before heads
      q, k, v = (a.reshape(bs * self.num_heads, ch, length) for a in qkv.chunk(3, dim=1))
    else:  # QKVAttentionLegacy: split heads before q, k, v
      q, k, v = qkv.reshape(bs * self.num_heads, ch * 3, length).split(ch, dim=1)
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)

  def forward(self, x):
    b, c, *spatial = x.shape
    x = x.reshape(b, c, -1)
    h = self.proj_out(self.attention(self.qkv(self.norm(x))))
    return (x + h).reshape(b, c, *spatial)


class EmbedSequential(nn.Sequential):
  def forward(self, x, emb):
    for layer in self:
      x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
    return x


class UNetModel(nn.Module):
  """guided-diffusion `UNetModel` (dims=2); Palette's `UNet` with its keys renamed."""

  def __init__(
    self, image_size, in_channels, model_channels, out_channels, num_res_blocks,
    attention_resolutions, dropout=0, channel_mult=(1, 2, 4, 8), conv_resample=True, dims=2,
    num_classes=None, num_heads=1, num_head_channels=-1, num_heads_upsample=-1,
    use_scale_shift_norm=False, resblock_updown=False, use_new_attention_order=False,
  ):  # fmt: skip
    super().__init__()
    num_heads_upsample = num_heads if num_heads_upsample == -1 else num_heads_upsample
    self.model_channels, self.num_classes = model_channels, num_classes
    emb_dim = model_channels * 4
    self.time_embed = nn.Sequential(
      nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
    )
    if num_classes is not None:
      self.label_emb = nn.Embedding(num_classes, emb_dim)

    def res(ch, out, **kw):
      return ResBlock(ch, emb_dim, dropout, out, use_scale_shift_norm=use_scale_shift_norm, **kw)

    def attn(ch, heads):
      return AttentionBlock(ch, heads, num_head_channels, use_new_attention_order)

    ch = input_ch = int(channel_mult[0] * model_channels)
    self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
    chans, ds = [ch], 1
    for level, mult in enumerate(channel_mult):
      for _ in range(num_res_blocks):
        layers = [res(ch, int(mult * model_channels))]
        ch = int(mult * model_channels)
        if ds in attention_resolutions:
          layers.append(attn(ch, num_heads))
        self.input_blocks.append(EmbedSequential(*layers))
        chans.append(ch)
      if level != len(channel_mult) - 1:
        down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, ch)
        self.input_blocks.append(EmbedSequential(down))
        chans.append(ch)
        ds *= 2
    self.middle_block = EmbedSequential(res(ch, None), attn(ch, num_heads), res(ch, None))
    self.output_blocks = nn.ModuleList([])
    for level, mult in list(enumerate(channel_mult))[::-1]:
      for i in range(num_res_blocks + 1):
        layers = [res(ch + chans.pop(), int(model_channels * mult))]
        ch = int(model_channels * mult)
        if ds in attention_resolutions:
          layers.append(attn(ch, num_heads_upsample))
        if level and i == num_res_blocks:
          layers.append(
            res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample, ch)
          )
          ds //= 2
        self.output_blocks.append(EmbedSequential(*layers))
    self.out = nn.Sequential(
      normalization(ch), nn.SiLU(), nn.Conv2d(input_ch, out_channels, 3, padding=1)
    )

  def forward(self, x, timesteps, y=None):
    emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
    if self.num_classes is not None:
      emb = emb + self.label_emb(y)
    hs, h = [], x
    for module in self.input_blocks:
      h = module(h, emb)
      hs.append(h)
    h = self.middle_block(h, emb)
    for module in self.output_blocks:
      h = module(torch.cat([h, hs.pop()], dim=1), emb)
    return self.out(h)


def parameter_count(model) -> int:
  return sum(p.numel() for p in model.parameters())


def jaxgen_path(key: str) -> tuple[str, ...]:
  """The jaxgen parameter path of a reference state-dict key."""
  *modules, leaf = key.split(".")
  path = []
  for part in modules:
    if part.isdigit() and path:
      path[-1] += f"_{part}"
    else:
      path.append(part)
  renames = {"time_embed_0": ("time_embed", "linear_1"), "time_embed_2": ("time_embed", "linear_2")}
  path = [q for p in path for q in renames.get(p, (p,))]
  path = ["conv" if p == "op" else p for p in path]  # jaxgen's Downsample2D names its conv `conv`
  return (*path, leaf)


def _to_torch(path: tuple[str, ...], value: np.ndarray, shape) -> np.ndarray:
  *_, leaf = path
  if leaf == "bias":
    return value
  if path[-2] == "label_emb":
    return value  # (classes, width) either way
  if len(shape) == 1:
    return value  # norm scale
  if len(shape) == 4:
    return value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
  if len(shape) == 3:
    return value.T[:, :, None]  # 1x1 Conv1d: dense (I, O) -> (O, I, 1)
  return value.T


def load_jaxgen_params(model, params) -> None:
  """Copies jaxgen `ADMUNet` params (unboxed, under "params") into `model`; every key must match."""
  flat = {
    tuple(getattr(k, "key", None) for k in path): np.asarray(v)
    for path, v in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  names = {"weight": ("kernel", "scale", "embedding"), "bias": ("bias",)}
  state, used = {}, set()
  for key, tensor in model.state_dict().items():
    *path, leaf = jaxgen_path(key)
    found = [(*path, n) for n in names[leaf] if (*path, n) in flat]
    assert len(found) == 1, f"{key}: no single jaxgen parameter at {path} ({found})"
    value = _to_torch(found[0], flat[found[0]], tensor.shape)
    assert value.shape == tuple(tensor.shape), (key, value.shape, tensor.shape)
    state[key] = torch.tensor(np.ascontiguousarray(value))
    used.add(found[0])
  assert used == set(flat), f"jaxgen parameters without a reference key: {set(flat) - used}"
  model.load_state_dict(state)
