"""DiffTalk: the audio networks against a PyTorch transcription, the task's data, training,
one-scan sampler and named errors."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.core.meta import unbox

from jaxgen.configuration import apply_overrides, load_config_file
from jaxgen.data import audio as audio_lib
from jaxgen.diffusion import samplers
from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.models import difftalk
from jaxgen.models.autoencoder import AutoencoderKL, AutoencoderKLConfig
from jaxgen.pipelines.frozen_autoencoder import FrozenAutoencoder
from jaxgen.tasks.talking_face import difftalk as task_lib
from jaxgen.tasks.talking_face import talking_data
from jaxgen.tasks.talking_face.talking_samples import ReferenceFaceError

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")

# 24×24 faces, an f4 random autoencoder (6×6×3 latents) and a one-level U-Net.
TINY_DIFFTALK = [
  "data.num_clips=2",
  "data.seconds=1.0",
  "data.size=24",
  "data.reference_gap=12",
  "autoencoder.scaling_factor=1.0",
  "unet.sample_size=6",
  "unet.down_block_types=('CrossAttnDownBlock2D',)",
  "unet.up_block_types=('CrossAttnUpBlock2D',)",
  "unet.block_out_channels=(16,)",
  "unet.attention_head_dim=(2,)",
  "unet.norm_num_groups=4",
  "sample.num_steps=4",
  "sample.keep_rows=2",
  "eval.num_clips=2",
]

TINY_VAE = AutoencoderKLConfig(
  down_block_types=("DownEncoderBlock2D",) * 3,
  up_block_types=("UpDecoderBlock2D",) * 3,
  block_out_channels=(8, 8, 8),
  norm_num_groups=4,
  latent_channels=3,
  sample_size=24,
  scaling_factor=1.0,
  mid_block_add_attention=False,
)


def tiny_config(*extra):
  config = load_config_file(os.path.join(CONFIGS, "difftalk_talking_heads.py"))
  return apply_overrides(config, TINY_DIFFTALK + list(extra))


@functools.cache
def random_autoencoder():
  params = jax.jit(AutoencoderKL(TINY_VAE).init)(jax.random.PRNGKey(0), jnp.zeros((1, 24, 24, 3)))
  return FrozenAutoencoder(TINY_VAE, unbox(params["params"]))


@functools.cache
def tiny_task():
  """The tiny task, its training arrays, params and a batch of 8 frames (shared by the tests)."""
  task = task_lib.DiffTalkTask(tiny_config(), autoencoder=random_autoencoder())
  arrays = task.train_arrays()
  batch = {k: jnp.asarray(v[::6][:8]) for k, v in arrays.items()}
  params = unbox(jax.jit(task.init)(jax.random.PRNGKey(1), batch))
  return task, arrays, params, batch


# -- the audio networks against DiffTalk's modules -------------------------------------------


def _torch_audio_networks(torch):
  """DiffTalk's AudioNet (80 mel features in place of 29 logits) and AudioAttNet(dim_aud=32)."""
  nn = torch.nn

  def convs(channels, stride):
    layers = []
    for c_in, c_out in zip(channels, channels[1:]):
      layers += [nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1), nn.LeakyReLU(0.02, True)]
    return nn.Sequential(*layers)

  class AudioNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.encoder_conv = convs((80, 32, 32, 64, 64), 2)
      self.encoder_fc1 = nn.Sequential(
        nn.Linear(64, 64), nn.LeakyReLU(0.02, True), nn.Linear(64, 64)
      )

    def forward(self, x):
      x = self.encoder_conv(x.permute(0, 2, 1)).squeeze(-1)
      return self.encoder_fc1(x)

  class AudioAttNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.attentionConvNet = convs((32, 16, 8, 4, 2, 1), 1)
      self.attentionNet = nn.Sequential(nn.Linear(8, 8), nn.Softmax(dim=2))

    def forward(self, x):
      y = self.attentionNet(self.attentionConvNet(x[..., :32].permute(0, 2, 1)))
      return torch.matmul(y, x).squeeze(1)

  return AudioNet(), AudioAttNet()


def _torch_to_flax(module):
  """params of the flax twin: Sequential index i -> `<name>_<i>`, kernels transposed."""
  params = {}
  for key, value in module.state_dict().items():
    name, index, kind = key.split(".")
    value = value.detach().numpy()
    if kind == "weight":
      value = value.transpose(2, 1, 0) if value.ndim == 3 else value.T
    params.setdefault(f"{name}_{index}", {})["kernel" if kind == "weight" else "bias"] = value
  return params


def test_audio_networks_match_difftalk_in_torch():
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  audio_net, att_net = _torch_audio_networks(torch)
  windows = np.random.default_rng(0).uniform(-4, 4, (3, 8, 16, 80)).astype(np.float32)
  with torch.no_grad():
    features = audio_net(torch.from_numpy(windows.reshape(-1, 16, 80))).reshape(3, 8, 64)
    expected = att_net(features).numpy()
  audio_features = jax.jit(difftalk.AudioNet().apply)(
    {"params": _torch_to_flax(audio_net)}, jnp.asarray(windows)
  )
  ours = jax.jit(difftalk.AudioAttNet().apply)({"params": _torch_to_flax(att_net)}, audio_features)
  assert ours.shape == (3, 64)
  np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-5, rtol=1e-4)


def test_audio_smoothing_is_a_convex_combination_of_the_windows():
  features = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 64))
  net = difftalk.AudioAttNet()
  params = jax.jit(net.init)(jax.random.PRNGKey(1), features)
  apply = jax.jit(net.apply)
  same = jnp.broadcast_to(features[:, :1], features.shape)  # eight identical windows
  np.testing.assert_allclose(apply(params, same), features[:, 0], atol=1e-5)
  out = apply(params, features)
  assert jnp.all(out <= features.max(axis=1) + 1e-5) and jnp.all(out >= features.min(axis=1) - 1e-5)


def test_denoiser_shapes_and_context():
  task, _, params, batch = tiny_task()
  out = jax.jit(task.model.apply)(
    {"params": params},
    batch["latent"],
    jnp.zeros(8, jnp.int32),
    batch["masked_latent"],
    batch["reference_latent"],
    batch["audio"],
  )
  assert out.shape == batch["latent"].shape == (8, 6, 6, 3) and out.dtype == jnp.float32
  condition = functools.partial(task.model.apply, method=difftalk.DiffTalkDenoiser.condition)
  context = jax.jit(condition)({"params": params}, batch["audio"])
  assert context.shape == (8, 1, difftalk.AUDIO_FEATURES)


# -- data --------------------------------------------------------------------------------------


def test_neighbour_windows_read_frames_i_minus_4_to_i_plus_3_with_silence_outside():
  mel = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 16, 80), np.float32)
  windows = task_lib.neighbour_windows(mel)
  assert windows.shape == (10, 8, 16, 80)
  np.testing.assert_array_equal(windows[5, :, 0, 0], np.arange(1, 9))
  np.testing.assert_array_equal(windows[0, :, 0, 0], [-4, -4, -4, -4, 0, 1, 2, 3])
  np.testing.assert_array_equal(windows[9, 5:, 0, 0], [audio_lib.MEL_SILENCE] * 3)


def test_references_are_at_least_the_gap_away():
  picks = task_lib.reference_indices(np.random.default_rng(0), 75, 25)
  assert np.all(np.abs(picks - np.arange(75)) >= 25) and len(set(picks.tolist())) > 10


def test_training_arrays_mask_the_lower_half_and_reuse_frame_latents():
  task, arrays, _, _ = tiny_task()
  assert set(arrays) == {"latent", "masked_latent", "reference_latent", "audio"}
  assert arrays["latent"].shape == (50, 6, 6, 3) and arrays["audio"].shape == (50, 8, 16, 80)
  # Every reference latent is the latent of a frame of the same clip, never its own frame.
  for i in (0, 30):
    clip = slice(i // 25 * 25, i // 25 * 25 + 25)
    distance = np.abs(arrays["latent"][clip] - arrays["reference_latent"][i]).sum(axis=(1, 2, 3))
    assert distance.min() == 0 and abs(int(distance.argmin()) - i % 25) >= 12
  task.check_batch({k: v[:4] for k, v in arrays.items()})
  frames = np.full((2, 24, 24, 3), 200, np.uint8)
  masked = task_lib.masked_lower_half(frames)
  assert masked[:, :12].min() == 200 and masked[:, 12:].max() == 0


# -- training and sampling ---------------------------------------------------------------------


def test_a_few_steps_lower_the_loss():
  task, _, params, batch = tiny_task()
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(lambda p: task.loss(p, batch, jax.random.PRNGKey(7))[0])(
      params
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for _ in range(25):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert np.isfinite(losses).all() and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])


def test_schedule_and_ddim_steps_are_ldms():
  task, _, _, _ = tiny_task()
  betas = np.linspace(0.0015**0.5, 0.0195**0.5, 1000) ** 2  # LDM's "linear" make_beta_schedule
  np.testing.assert_allclose(task.schedule.betas, betas, rtol=1e-6)
  plan = samplers.make_plan(task.schedule, "ddim", 4, **task_lib.DDIM_OPTIONS)
  np.testing.assert_array_equal(plan.table.timestep, [751, 501, 251, 1])  # range(0, T, T/n) + 1


def _equations(jaxpr):
  for equation in jaxpr.eqns:
    yield equation
    for value in equation.params.values():
      if isinstance(value, jax.extend.core.ClosedJaxpr):
        yield from _equations(value.jaxpr)
      elif isinstance(value, jax.extend.core.Jaxpr):
        yield from _equations(value)


def test_sampler_is_one_scan_with_only_the_unet_inside():
  task, _, params, batch = tiny_task()
  inputs = (batch["masked_latent"], batch["reference_latent"], batch["audio"], batch["latent"])
  closed = jax.make_jaxpr(
    lambda p, *x: task_lib.DiffTalkTask.sample_latents.__wrapped__(task, p, *x, num_steps=4)
  )(params, *inputs)
  equations = list(_equations(closed.jaxpr))
  scans = [e for e in equations if e.primitive.name == "scan"]
  assert len(scans) == 1 and scans[0].params["length"] == 4
  assert not [e for e in equations if e.primitive.name in ("cond", "switch", "while")]
  inside = {e.primitive.name for e in _equations(scans[0].params["jaxpr"].jaxpr)}
  # The U-Net's convolutions run per step; the audio networks (1-D convs) once, outside.
  convs = [e for e in equations if e.primitive.name == "conv_general_dilated"]
  scan_convs = [
    e
    for e in _equations(scans[0].params["jaxpr"].jaxpr)
    if e.primitive.name == "conv_general_dilated"
  ]
  one_d = [e for e in convs if len(e.params["window_strides"]) == 1]
  assert "conv_general_dilated" in inside and len(one_d) == 9
  assert not [e for e in scan_convs if len(e.params["window_strides"]) == 1]


def test_generate_dubs_a_clip_deterministically_and_keeps_the_upper_rows():
  task, _, params, _ = tiny_task()
  clips = talking_data.make_clips(task.config.data, "test", 1)
  frames, mel = clips.video[0, :6], clips.mel[0, :6]
  one = task.generate_clip(params, frames, frames[0], mel, jax.random.PRNGKey(3))
  two = task.generate_clip(params, frames, frames[0], mel, jax.random.PRNGKey(3))
  assert one.shape == (6, 24, 24, 3) and one.dtype == np.uint8
  np.testing.assert_array_equal(one, two)
  conditions = {"mel": [mel, mel], "target": [frames] * 2, "reference": [frames[:1]] * 2}
  out = task.generate(params, conditions, jax.random.PRNGKey(3))
  assert len(out["video"]) == 2 and out["video"][0].shape == (6, 24, 24, 3)
  assert not np.array_equal(out["video"][0], out["video"][1])  # each utterance its own noise
  # The kept top latent rows are the masked frame's own: the latents there are equal.
  masked = task.encode(jnp.asarray(task_lib.masked_lower_half(frames), jnp.float32) / 127.5 - 1)
  noise = jax.random.normal(jax.random.PRNGKey(0), masked.shape)
  z = task.sample_latents(
    params,
    masked,
    jnp.broadcast_to(masked[:1], masked.shape),
    jnp.asarray(task_lib.neighbour_windows(mel)),
    noise,
    num_steps=4,
  )
  np.testing.assert_array_equal(np.asarray(z[:, :2]), np.asarray(masked[:, :2]))
  assert not np.allclose(np.asarray(z[:, 2:]), np.asarray(masked[:, 2:]))


def test_audio_guidance_trains_a_null_token_and_extrapolates_from_it():
  base, _, params, batch = tiny_task()
  task = task_lib.DiffTalkTask(
    tiny_config("diffusion.audio_dropout=0.5", "sample.guidance_scale=3.0"),
    autoencoder=random_autoencoder(),
  )
  rng = jax.random.PRNGKey(7)  # training drops whole audio tokens: another loss on the same key
  assert float(task.loss(params, batch, rng)[0]) != float(base.loss(params, batch, rng)[0])
  inputs = (batch["masked_latent"], batch["reference_latent"], batch["audio"], batch["latent"])
  sample = lambda scale: np.asarray(
    task.sample_latents(params, *inputs, num_steps=1, guidance_scale=scale)
  )
  # One DDIM step is affine in the noise prediction, so the latents extrapolate as the
  # predictions do: scale 0 is the null token alone, 1 the audio alone.
  null, audio, guided = sample(0.0), sample(1.0), sample(3.0)
  assert np.abs(audio - null).max() > 1e-3
  np.testing.assert_allclose(guided, null + 3.0 * (audio - null), atol=1e-4)
  closed = jax.make_jaxpr(
    lambda p, *x: task_lib.DiffTalkTask.sample_latents.__wrapped__(
      task, p, *x, num_steps=4, guidance_scale=3.0
    )
  )(params, *inputs)
  scans = [e for e in _equations(closed.jaxpr) if e.primitive.name == "scan"]
  assert len(scans) == 1 and scans[0].params["length"] == 4
  assert task.check_options({}) == (4, 3.0)
  with pytest.raises(SamplingOptionError, match="guidance_scale: expected a finite number"):
    task.check_options({"guidance_scale": float("nan")})
  with pytest.raises(SamplingOptionError, match="guidance_scale: expected a finite number >= 0"):
    task.check_options({"guidance_scale": -1.0})
  with pytest.raises(SamplingOptionError, match="diffusion.audio_dropout=0"):
    base.check_options({"guidance_scale": 3.0})
  with pytest.raises(task_lib.DiffTalkConfigError, match="diffusion.audio_dropout"):
    task_lib.DiffTalkTask(tiny_config("diffusion.audio_dropout=1.0"), random_autoencoder())


# -- named errors ------------------------------------------------------------------------------


def test_named_errors_for_bad_inputs():
  task, arrays, params, _ = tiny_task()
  clips = talking_data.make_clips(task.config.data, "test", 1)
  frames, mel = clips.video[0, :4], clips.mel[0, :4]
  with pytest.raises(ReferenceFaceError, match="reference: expected a 24x24 RGB face crop"):
    task.generate_clip(params, frames, frames[0, :, :, :1], mel, jax.random.PRNGKey(0))
  with pytest.raises(ReferenceFaceError, match="face.png: expected a 24x24 RGB face crop"):
    task.speech_conditions(
      [clips.audio[0]], [16000], ["a.wav"], np.zeros((96, 96, 3), np.uint8), "face.png"
    )
  with pytest.raises(audio_lib.AudioInputError, match="a.wav is silent"):
    task.speech_conditions([np.zeros(16000, np.float32)], [16000], ["a.wav"], frames[0], "face.png")
  spoken = task.speech_conditions([clips.audio[0]], [16000], ["a.wav"], frames[0], "face.png")
  assert spoken["mel"][0].shape == (25, 16, 80) and spoken["target"][0].shape == (25, 24, 24, 3)
  with pytest.raises(task_lib.DiffTalkBatchError, match=r"mel: expected one \(16, 80\) window"):
    task.generate_clip(params, frames, frames[0], mel[:3], jax.random.PRNGKey(0))
  with pytest.raises(task_lib.DiffTalkBatchError, match="frames: expected uint8"):
    task.generate_clip(params, frames.astype(np.float32), frames[0], mel, jax.random.PRNGKey(0))
  with pytest.raises(SamplingOptionError, match="num_steps"):
    task.check_options({"num_steps": 0})
  with pytest.raises(SamplingOptionError, match="guidance_scale"):
    task.check_options({"guidance_scale": 2.0})
  with pytest.raises(task_lib.DiffTalkBatchError, match=r"batch\['audio'\]: expected float32"):
    task.check_batch({**{k: v[:2] for k, v in arrays.items()}, "audio": arrays["audio"][:2, :4]})
  with pytest.raises(difftalk.DiffTalkInputError, match="audio windows: expected"):
    difftalk.AudioNet().init(jax.random.PRNGKey(0), jnp.zeros((2, 12, 80)))


@pytest.mark.parametrize(
  "override, error, message",
  [
    ("data.reference_gap=20", task_lib.DiffTalkConfigError, "needs at least 40 frames"),
    (
      "sample.keep_rows=4",
      task_lib.DiffTalkConfigError,
      r"sample.keep_rows: expected an integer in \[0, 3\]",
    ),
    ("unet.in_channels=6", difftalk.DiffTalkInputError, r"expected \(9, 3, 64\)"),
    (
      "diffusion.prediction_type='v_prediction'",
      task_lib.DiffTalkConfigError,
      "expected 'epsilon'",
    ),
    ("data.size=26", task_lib.DiffTalkConfigError, "data.size must be a multiple"),
  ],
)
def test_named_config_errors(override, error, message):
  with pytest.raises(error, match=message):
    task_lib.DiffTalkTask(tiny_config(override), autoencoder=random_autoencoder())


def test_autoencoder_task_reads_talking_head_frames():
  from jaxgen.tasks.image.autoencoder import AutoencoderTask

  overrides = ["data.resolution=24", "data.num_clips=2", "data.seconds=1.0", "vae.sample_size=24"]
  config = apply_overrides(
    load_config_file(os.path.join(CONFIGS, "autoencoder_talking_heads.py")), overrides
  )
  task = AutoencoderTask(config)
  images = task.train_arrays()["image"]
  assert images.shape == (50, 24, 24, 3) and images.dtype == np.uint8
  held_out = task.eval_split(30)
  assert held_out["image"].shape == (30, 24, 24, 3) and held_out["mouth"].shape == (30, 3)
  assert not np.array_equal(held_out["image"][0], images[0])  # test identities, not train ones
  with pytest.raises(ValueError, match="data.source: expected one of"):
    AutoencoderTask(apply_overrides(config, ["data.source='faces'"]))
