"""A PyTorch transcription of Wav2Lip's networks, for parity tests on random weights.

Written from Rudrabha/Wav2Lip `models/conv.py`, `models/wav2lip.py` and
`models/syncnet.py`: the same module tree and `nn.Sequential` indices, so the
state-dict keys are the reference checkpoints' (`face_encoder_blocks.1.0.conv_block.0.weight`,
`audio_encoder.3.conv_block.1.running_var`, ...). Only `.cuda()` is left out of
`perceptual_forward`. Layout is the reference's: faces (B, C, T, H, W) or
(B, C, H, W), mel windows (B, T, 1, 80, 16) or (B, 1, 80, 16).
"""

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class Conv2d(nn.Module):
  def __init__(self, cin, cout, kernel_size, stride, padding, residual=False):
    super().__init__()
    self.conv_block = nn.Sequential(
      nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout)
    )
    self.act = nn.ReLU()
    self.residual = residual

  def forward(self, x):
    out = self.conv_block(x)
    if self.residual:
      out += x
    return self.act(out)


class nonorm_Conv2d(nn.Module):  # noqa: N801 (the reference's name)
  def __init__(self, cin, cout, kernel_size, stride, padding):
    super().__init__()
    self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding))
    self.act = nn.LeakyReLU(0.01, inplace=True)

  def forward(self, x):
    return self.act(self.conv_block(x))


class Conv2dTranspose(nn.Module):
  def __init__(self, cin, cout, kernel_size, stride, padding, output_padding=0):
    super().__init__()
    self.conv_block = nn.Sequential(
      nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
      nn.BatchNorm2d(cout),
    )
    self.act = nn.ReLU()

  def forward(self, x):
    return self.act(self.conv_block(x))


def audio_encoder(res_at_256):
  """The generator's (1 residual block at 256) and SyncNet_color's (2) audio encoders."""
  return nn.Sequential(
    Conv2d(1, 32, kernel_size=3, stride=1, padding=1),
    Conv2d(32, 32, kernel_size=3, stride=1, padding=1, residual=True),
    Conv2d(32, 32, kernel_size=3, stride=1, padding=1, residual=True),
    Conv2d(32, 64, kernel_size=3, stride=(3, 1), padding=1),
    Conv2d(64, 64, kernel_size=3, stride=1, padding=1, residual=True),
    Conv2d(64, 64, kernel_size=3, stride=1, padding=1, residual=True),
    Conv2d(64, 128, kernel_size=3, stride=3, padding=1),
    Conv2d(128, 128, kernel_size=3, stride=1, padding=1, residual=True),
    Conv2d(128, 128, kernel_size=3, stride=1, padding=1, residual=True),
    Conv2d(128, 256, kernel_size=3, stride=(3, 2), padding=1),
    *[
      Conv2d(256, 256, kernel_size=3, stride=1, padding=1, residual=True) for _ in range(res_at_256)
    ],
    Conv2d(256, 512, kernel_size=3, stride=1, padding=0),
    Conv2d(512, 512, kernel_size=1, stride=1, padding=0),
  )


def residuals(channels, count):
  return [
    Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, residual=True)
    for _ in range(count)
  ]


def up(cin, cout, count):
  return nn.Sequential(
    Conv2dTranspose(cin, cout, kernel_size=3, stride=2, padding=1, output_padding=1),
    *residuals(cout, count),
  )


class Wav2Lip(nn.Module):
  def __init__(self):
    super().__init__()
    self.face_encoder_blocks = nn.ModuleList(
      [
        nn.Sequential(Conv2d(6, 16, kernel_size=7, stride=1, padding=3)),
        nn.Sequential(Conv2d(16, 32, kernel_size=3, stride=2, padding=1), *residuals(32, 2)),
        nn.Sequential(Conv2d(32, 64, kernel_size=3, stride=2, padding=1), *residuals(64, 3)),
        nn.Sequential(Conv2d(64, 128, kernel_size=3, stride=2, padding=1), *residuals(128, 2)),
        nn.Sequential(Conv2d(128, 256, kernel_size=3, stride=2, padding=1), *residuals(256, 2)),
        nn.Sequential(Conv2d(256, 512, kernel_size=3, stride=2, padding=1), *residuals(512, 1)),
        nn.Sequential(
          Conv2d(512, 512, kernel_size=3, stride=1, padding=0),
          Conv2d(512, 512, kernel_size=1, stride=1, padding=0),
        ),
      ]
    )
    self.audio_encoder = audio_encoder(res_at_256=1)
    self.face_decoder_blocks = nn.ModuleList(
      [
        nn.Sequential(Conv2d(512, 512, kernel_size=1, stride=1, padding=0)),
        nn.Sequential(
          Conv2dTranspose(1024, 512, kernel_size=3, stride=1, padding=0), *residuals(512, 1)
        ),
        up(1024, 512, 2),
        up(768, 384, 2),
        up(512, 256, 2),
        up(320, 128, 2),
        up(160, 64, 2),
      ]
    )
    self.output_block = nn.Sequential(
      Conv2d(80, 32, kernel_size=3, stride=1, padding=1),
      nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0),
      nn.Sigmoid(),
    )

  def forward(self, audio_sequences, face_sequences):
    B = audio_sequences.size(0)
    input_dim_size = len(face_sequences.size())
    if input_dim_size > 4:
      audio_sequences = torch.cat(
        [audio_sequences[:, i] for i in range(audio_sequences.size(1))], dim=0
      )
      face_sequences = torch.cat(
        [face_sequences[:, :, i] for i in range(face_sequences.size(2))], dim=0
      )
    audio_embedding = self.audio_encoder(audio_sequences)
    feats = []
    x = face_sequences
    for f in self.face_encoder_blocks:
      x = f(x)
      feats.append(x)
    x = audio_embedding
    for f in self.face_decoder_blocks:
      x = f(x)
      x = torch.cat((x, feats[-1]), dim=1)
      feats.pop()
    x = self.output_block(x)
    if input_dim_size > 4:
      return torch.stack(torch.split(x, B, dim=0), dim=2)
    return x


class Wav2Lip_disc_qual(nn.Module):  # noqa: N801 (the reference's name)
  def __init__(self):
    super().__init__()
    self.face_encoder_blocks = nn.ModuleList(
      [
        nn.Sequential(nonorm_Conv2d(3, 32, kernel_size=7, stride=1, padding=3)),
        nn.Sequential(
          nonorm_Conv2d(32, 64, kernel_size=5, stride=(1, 2), padding=2),
          nonorm_Conv2d(64, 64, kernel_size=5, stride=1, padding=2),
        ),
        nn.Sequential(
          nonorm_Conv2d(64, 128, kernel_size=5, stride=2, padding=2),
          nonorm_Conv2d(128, 128, kernel_size=5, stride=1, padding=2),
        ),
        nn.Sequential(
          nonorm_Conv2d(128, 256, kernel_size=5, stride=2, padding=2),
          nonorm_Conv2d(256, 256, kernel_size=5, stride=1, padding=2),
        ),
        nn.Sequential(
          nonorm_Conv2d(256, 512, kernel_size=3, stride=2, padding=1),
          nonorm_Conv2d(512, 512, kernel_size=3, stride=1, padding=1),
        ),
        nn.Sequential(
          nonorm_Conv2d(512, 512, kernel_size=3, stride=2, padding=1),
          nonorm_Conv2d(512, 512, kernel_size=3, stride=1, padding=1),
        ),
        nn.Sequential(
          nonorm_Conv2d(512, 512, kernel_size=3, stride=1, padding=0),
          nonorm_Conv2d(512, 512, kernel_size=1, stride=1, padding=0),
        ),
      ]
    )
    self.binary_pred = nn.Sequential(
      nn.Conv2d(512, 1, kernel_size=1, stride=1, padding=0), nn.Sigmoid()
    )
    self.label_noise = 0.0

  def get_lower_half(self, face_sequences):
    return face_sequences[:, :, face_sequences.size(2) // 2 :]

  def to_2d(self, face_sequences):
    return torch.cat([face_sequences[:, :, i] for i in range(face_sequences.size(2))], dim=0)

  def perceptual_forward(self, false_face_sequences):
    false_face_sequences = self.get_lower_half(self.to_2d(false_face_sequences))
    false_feats = false_face_sequences
    for f in self.face_encoder_blocks:
      false_feats = f(false_feats)
    return F.binary_cross_entropy(
      self.binary_pred(false_feats).view(len(false_feats), -1), torch.ones((len(false_feats), 1))
    )

  def forward(self, face_sequences):
    x = self.get_lower_half(self.to_2d(face_sequences))
    for f in self.face_encoder_blocks:
      x = f(x)
    return self.binary_pred(x).view(len(x), -1)


class SyncNet_color(nn.Module):  # noqa: N801 (the reference's name)
  def __init__(self):
    super().__init__()
    self.face_encoder = nn.Sequential(
      Conv2d(15, 32, kernel_size=(7, 7), stride=1, padding=3),
      Conv2d(32, 64, kernel_size=5, stride=(1, 2), padding=1),
      *residuals(64, 2),
      Conv2d(64, 128, kernel_size=3, stride=2, padding=1),
      *residuals(128, 3),
      Conv2d(128, 256, kernel_size=3, stride=2, padding=1),
      *residuals(256, 2),
      Conv2d(256, 512, kernel_size=3, stride=2, padding=1),
      *residuals(512, 2),
      Conv2d(512, 512, kernel_size=3, stride=2, padding=1),
      Conv2d(512, 512, kernel_size=3, stride=1, padding=0),
      Conv2d(512, 512, kernel_size=1, stride=1, padding=0),
    )
    self.audio_encoder = audio_encoder(res_at_256=2)

  def forward(self, audio_sequences, face_sequences):
    face_embedding = self.face_encoder(face_sequences)
    audio_embedding = self.audio_encoder(audio_sequences)
    audio_embedding = audio_embedding.view(audio_embedding.size(0), -1)
    face_embedding = face_embedding.view(face_embedding.size(0), -1)
    audio_embedding = F.normalize(audio_embedding, p=2, dim=1)
    face_embedding = F.normalize(face_embedding, p=2, dim=1)
    return audio_embedding, face_embedding


logloss = nn.BCELoss()


def cosine_loss(a, v, y):
  """`wav2lip_train.cosine_loss`: BCE of the cosine similarity; y is (B, 1)."""
  d = nn.functional.cosine_similarity(a, v)
  return logloss(d.unsqueeze(1), y)


def randomize(module, seed=0):
  """Torch's default init, plus random BatchNorm affines and running statistics (eval mode)."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.1)
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
        m.num_batches_tracked.fill_(7)
  return module.eval()


def parameter_count(module, prefixes=("",)):
  """Trainable parameters whose names start with one of `prefixes`."""
  return sum(
    p.numel()
    for name, p in module.named_parameters()
    if p.requires_grad and name.startswith(tuple(prefixes))
  )
