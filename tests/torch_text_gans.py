"""PyTorch transcriptions of StackGAN-v2's and AttnGAN's modules, the parity and count reference for test_text_gans.

Layer lists as in hanzhanggit/StackGAN-v2 `code/model.py` and taoxugit/AttnGAN
`code/model.py` / `GlobalAttention.py`, with the global `cfg` replaced by
constructor arguments. Also: loaders that copy jaxgen parameters into them.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class GLU(nn.Module):
  def forward(self, x):
    nc = x.size(1) // 2
    return x[:, :nc] * torch.sigmoid(x[:, nc:])


def conv3x3(in_planes, out_planes):
  return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)


def upBlock(in_planes, out_planes):
  return nn.Sequential(
    nn.Upsample(scale_factor=2, mode="nearest"),
    conv3x3(in_planes, out_planes * 2),
    nn.BatchNorm2d(out_planes * 2),
    GLU(),
  )


def Block3x3_relu(in_planes, out_planes):
  return nn.Sequential(conv3x3(in_planes, out_planes * 2), nn.BatchNorm2d(out_planes * 2), GLU())


class ResBlock(nn.Module):
  def __init__(self, channel_num):
    super().__init__()
    self.block = nn.Sequential(
      conv3x3(channel_num, channel_num * 2),
      nn.BatchNorm2d(channel_num * 2),
      GLU(),
      conv3x3(channel_num, channel_num),
      nn.BatchNorm2d(channel_num),
    )

  def forward(self, x):
    return self.block(x) + x


class CA_NET(nn.Module):
  def __init__(self, t_dim, c_dim):
    super().__init__()
    self.c_dim = c_dim
    self.fc = nn.Linear(t_dim, c_dim * 4, bias=True)
    self.relu = GLU()

  def encode(self, text_embedding):
    x = self.relu(self.fc(text_embedding))
    return x[:, : self.c_dim], x[:, self.c_dim :]


class INIT_STAGE_G(nn.Module):
  def __init__(self, ngf, in_dim):
    super().__init__()
    self.gf_dim = ngf
    self.fc = nn.Sequential(
      nn.Linear(in_dim, ngf * 4 * 4 * 2, bias=False), nn.BatchNorm1d(ngf * 4 * 4 * 2), GLU()
    )
    self.upsample1 = upBlock(ngf, ngf // 2)
    self.upsample2 = upBlock(ngf // 2, ngf // 4)
    self.upsample3 = upBlock(ngf // 4, ngf // 8)
    self.upsample4 = upBlock(ngf // 8, ngf // 16)


class NEXT_STAGE_G(nn.Module):
  """StackGAN-v2's."""

  def __init__(self, ngf, ef_dim, num_residual):
    super().__init__()
    self.ef_dim = ef_dim
    self.jointConv = Block3x3_relu(ngf + ef_dim, ngf)
    self.residual = nn.Sequential(*[ResBlock(ngf) for _ in range(num_residual)])
    self.upsample = upBlock(ngf, ngf // 2)

  def forward(self, h_code, c_code):
    s_size = h_code.size(2)
    c_code = c_code.view(-1, self.ef_dim, 1, 1).repeat(1, 1, s_size, s_size)
    out = self.jointConv(torch.cat((c_code, h_code), 1))
    return self.upsample(self.residual(out))


def GET_IMAGE_G(ngf):
  return nn.Sequential(conv3x3(ngf, 3), nn.Tanh())


class StackGAN_G_NET(nn.Module):
  def __init__(self, text_dim=1024, ef_dim=128, z_dim=100, gf_dim=64, branches=3, r_num=2):
    super().__init__()
    self.ca_net = CA_NET(text_dim, ef_dim)
    self.h_net1 = INIT_STAGE_G(gf_dim * 16, z_dim + ef_dim)
    self.img_net1 = GET_IMAGE_G(gf_dim)
    if branches > 1:
      self.h_net2 = NEXT_STAGE_G(gf_dim, ef_dim, r_num)
      self.img_net2 = GET_IMAGE_G(gf_dim // 2)
    if branches > 2:
      self.h_net3 = NEXT_STAGE_G(gf_dim // 2, ef_dim, r_num)
      self.img_net3 = GET_IMAGE_G(gf_dim // 4)


def Block3x3_leakRelu(in_planes, out_planes):
  return nn.Sequential(
    conv3x3(in_planes, out_planes), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2)
  )


def downBlock(in_planes, out_planes):
  return nn.Sequential(
    nn.Conv2d(in_planes, out_planes, 4, 2, 1, bias=False),
    nn.BatchNorm2d(out_planes),
    nn.LeakyReLU(0.2),
  )


def encode_image_by_16times(ndf):
  return nn.Sequential(
    nn.Conv2d(3, ndf, 4, 2, 1, bias=False),
    nn.LeakyReLU(0.2),
    nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
    nn.BatchNorm2d(ndf * 2),
    nn.LeakyReLU(0.2),
    nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
    nn.BatchNorm2d(ndf * 4),
    nn.LeakyReLU(0.2),
    nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
    nn.BatchNorm2d(ndf * 8),
    nn.LeakyReLU(0.2),
  )


def _image_code(ndf, stage):
  """The encoder of D_NET64 (stage 0), D_NET128 (1), D_NET256 (2)."""
  layers = [encode_image_by_16times(ndf)]
  if stage == 1:
    layers += [downBlock(ndf * 8, ndf * 16), Block3x3_leakRelu(ndf * 16, ndf * 8)]
  if stage == 2:
    layers += [
      downBlock(ndf * 8, ndf * 16),
      downBlock(ndf * 16, ndf * 32),
      Block3x3_leakRelu(ndf * 32, ndf * 16),
      Block3x3_leakRelu(ndf * 16, ndf * 8),
    ]
  return nn.Sequential(*layers)


class StackGAN_D_NET(nn.Module):
  """D_NET64/128/256 with B_CONDITION (conditional and unconditional logits)."""

  def __init__(self, ndf=64, efg=128, stage=0):
    super().__init__()
    self.efg = efg
    self.img_code = _image_code(ndf, stage)
    self.logits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())
    self.jointConv = Block3x3_leakRelu(ndf * 8 + efg, ndf * 8)
    self.uncond_logits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())


# ---------------------------------------------------------------- AttnGAN


class GlobalAttentionGeneral(nn.Module):
  def __init__(self, idf, cdf):
    super().__init__()
    self.conv_context = nn.Conv2d(cdf, idf, kernel_size=1, stride=1, padding=0, bias=False)
    self.sm = nn.Softmax(dim=1)
    self.mask = None

  def forward(self, input, context):
    ih, iw = input.size(2), input.size(3)
    queryL = ih * iw
    batch_size, sourceL = context.size(0), context.size(2)
    target = input.view(batch_size, -1, queryL)
    targetT = torch.transpose(target, 1, 2).contiguous()
    sourceT = self.conv_context(context.unsqueeze(3)).squeeze(3)
    attn = torch.bmm(targetT, sourceT).view(batch_size * queryL, sourceL)
    if self.mask is not None:
      mask = self.mask.repeat(queryL, 1).to(torch.bool)
      attn.data.masked_fill_(mask.data, -float("inf"))
    attn = self.sm(attn).view(batch_size, queryL, sourceL)
    attn = torch.transpose(attn, 1, 2).contiguous()
    weightedContext = torch.bmm(sourceT, attn).view(batch_size, -1, ih, iw)
    return weightedContext, attn.view(batch_size, -1, ih, iw)


class ATTN_NEXT_STAGE_G(nn.Module):
  def __init__(self, ngf, nef, r_num):
    super().__init__()
    self.att = GlobalAttentionGeneral(ngf, nef)
    self.residual = nn.Sequential(*[ResBlock(ngf * 2) for _ in range(r_num)])
    self.upsample = upBlock(ngf * 2, ngf)

  def forward(self, h_code, word_embs, mask):
    self.att.mask = mask
    c_code, att = self.att(h_code, word_embs)
    out = self.residual(torch.cat((h_code, c_code), 1))
    return self.upsample(out), att


class AttnGAN_G_NET(nn.Module):
  def __init__(self, text_dim=256, ncf=100, z_dim=100, ngf=32, branches=3, r_num=2):
    super().__init__()
    self.ca_net = CA_NET(text_dim, ncf)
    self.h_net1 = INIT_STAGE_G(ngf * 16, z_dim + ncf)
    self.img_net1 = GET_IMAGE_G(ngf)
    if branches > 1:
      self.h_net2 = ATTN_NEXT_STAGE_G(ngf, text_dim, r_num)
      self.img_net2 = GET_IMAGE_G(ngf)
    if branches > 2:
      self.h_net3 = ATTN_NEXT_STAGE_G(ngf, text_dim, r_num)
      self.img_net3 = GET_IMAGE_G(ngf)


class D_GET_LOGITS(nn.Module):
  def __init__(self, ndf, nef, bcondition=False):
    super().__init__()
    if bcondition:
      self.jointConv = Block3x3_leakRelu(ndf * 8 + nef, ndf * 8)
    self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())


class AttnGAN_D_NET(nn.Module):
  def __init__(self, ndf=64, nef=256, stage=0):
    super().__init__()
    self.img_code = _image_code(ndf, stage)
    self.UNCOND_DNET = D_GET_LOGITS(ndf, nef, bcondition=False)
    self.COND_DNET = D_GET_LOGITS(ndf, nef, bcondition=True)


class RNN_ENCODER(nn.Module):
  """AttnGAN's text encoder (LSTM, eval mode: dropout off)."""

  def __init__(self, ntoken, ninput=300, nhidden=256):
    super().__init__()
    self.nhidden = nhidden // 2
    self.encoder = nn.Embedding(ntoken, ninput)
    self.drop = nn.Dropout(0.5)
    self.rnn = nn.LSTM(ninput, self.nhidden, 1, batch_first=True, bidirectional=True)

  def forward(self, captions, cap_lens):
    emb = self.drop(self.encoder(captions))
    packed = nn.utils.rnn.pack_padded_sequence(
      emb, cap_lens, batch_first=True, enforce_sorted=False
    )
    output, hidden = self.rnn(packed)
    output = nn.utils.rnn.pad_packed_sequence(
      output, batch_first=True, total_length=captions.shape[1]
    )[0]
    sent_emb = hidden[0].transpose(0, 1).contiguous().view(-1, self.nhidden * 2)
    return output, sent_emb


class CNN_ENCODER_HEADS(nn.Module):
  """CNN_ENCODER's trainable layers (the Inception-v3 layers before them are frozen)."""

  def __init__(self, nef=256):
    super().__init__()
    self.emb_features = nn.Conv2d(768, nef, kernel_size=1, stride=1, padding=0, bias=False)
    self.emb_cnn_code = nn.Linear(2048, nef)


def count(module) -> int:
  return sum(p.numel() for p in module.parameters())


def meta(factory, *args, **kwargs):
  """Builds a module on the meta device: shapes only, no memory."""
  with torch.device("meta"):
    return factory(*args, **kwargs)


# ---------------------------------------------------------------- jaxgen → torch loaders


def _t(x):
  return torch.tensor(np.array(x, dtype=np.float32))


def load_conv(layer, p):
  layer.weight.data = _t(np.transpose(np.asarray(p["kernel"]), (3, 2, 0, 1)))
  if "bias" in p:
    layer.bias.data = _t(p["bias"])


def load_bn(layer, p, stats):
  layer.weight.data, layer.bias.data = _t(p["scale"]), _t(p["bias"])
  layer.running_mean.data, layer.running_var.data = _t(stats["mean"]), _t(stats["var"])


def load_join(seq, p, s, offset=0):
  """A JoinBlock (conv, bn) into seq[offset], seq[offset + 1]."""
  load_conv(seq[offset], p["conv"])
  load_bn(seq[offset + 1], p["bn"], s["bn"])


def load_resblock(block, p, s):
  load_join(block.block, p["join"], s["join"])
  load_conv(block.block[3], p["conv"])
  load_bn(block.block[4], p["bn"], s["bn"])


def load_stackgan_next_stage(stage, p, s):
  load_join(stage.jointConv, p["joint"], s["joint"])
  for i, block in enumerate(stage.residual):
    load_resblock(block, p[f"residual{i}"], s[f"residual{i}"])
  load_join(stage.upsample, p["upsample"]["block"], s["upsample"]["block"], offset=1)


def load_attn_next_stage(stage, p, s):
  kernel = np.asarray(p["att"]["conv_context"]["kernel"])  # (cdf, idf)
  stage.att.conv_context.weight.data = _t(kernel.T[:, :, None, None])
  for i, block in enumerate(stage.residual):
    load_resblock(block, p[f"residual{i}"], s[f"residual{i}"])
  load_join(stage.upsample, p["upsample"]["block"], s["upsample"]["block"], offset=1)


def load_rnn_encoder(encoder, p):
  encoder.encoder.weight.data = _t(p["encoder"])
  for direction, suffix in (("forward", ""), ("backward", "_reverse")):
    cell = p[f"lstm_{direction}"]
    for name in ("weight_ih", "weight_hh"):
      getattr(encoder.rnn, f"{name}_l0{suffix}").data = _t(np.asarray(cell[name]).T)
    for name in ("bias_ih", "bias_hh"):
      getattr(encoder.rnn, f"{name}_l0{suffix}").data = _t(cell[name])
