"""Talking-face metrics (`metrics/talking_face.py`) and `jaxgen eval --metric lse | mouth`."""

import argparse
import json

import flax.linen as nn
import imageio_ffmpeg
import jax
import numpy as np
import pytest

from jaxgen.cli import eval as eval_command
from jaxgen.cli import eval_talking
from jaxgen.cli.errors import UsageError
from jaxgen.cli.eval_folders import run_eval
from jaxgen.convert import torch_state_dict
from jaxgen.data import audio as speech_features
from jaxgen.data import face_render, talking_heads
from jaxgen.metrics import talking_face
from jaxgen.models import wav2lip
from jaxgen.render.music_video import mux_music, write_wav
from jaxgen.tasks.registry import DependentRunError

SAMPLES = talking_face.SAMPLES_PER_FRAME


@pytest.fixture(scope="module")
def heads():
  """Two 3-s procedural talking heads of the test split, 48 px."""
  return talking_heads.make_talking_heads("test", num_clips=2, seconds=3.0, size=48)


def _args(metric, *argv):
  parser = argparse.ArgumentParser()
  eval_command.add_arguments(parser)
  return parser.parse_args(["--metric", metric, "--no-progress", *map(str, argv)])


def _zscore(x):
  return (x - x.mean()) / x.std()


def mouth_energy_embedder(frames, speech):
  """A 'trained' toy lip-sync network: per window, the judge's mouth opening of its 5 frames
  (video) and the speech's loudness in the same 5 frames (audio), each z-scored over the clip."""
  count = talking_face.window_count(len(frames), len(speech))
  opening = _zscore(face_render.mouth_measurements(frames)["opening"])
  whole = len(speech) // SAMPLES
  loudness = _zscore(np.sqrt((speech[: whole * SAMPLES].reshape(whole, SAMPLES) ** 2).mean(1)))
  windows = np.arange(count)[:, None] + np.arange(talking_face.WINDOW_FRAMES)
  return opening[windows], loudness[windows]


def _delayed(speech, frames):
  """The speech `frames` video frames later (< 0: earlier), silence where it has none."""
  shift = abs(frames) * SAMPLES
  silence = np.zeros(shift, speech.dtype)
  if frames >= 0:
    return np.concatenate([silence, speech[: len(speech) - shift]])
  return np.concatenate([speech[shift:], silence])


def _write_mp4(path, frames, speech=None, fps=25):
  """frames (T, S, S, 3) uint8 as H.264, with `speech` muxed in as AAC (as `jaxgen sample`)."""
  silent = path.with_name(path.stem + "_silent.mp4") if speech is not None else path
  writer = imageio_ffmpeg.write_frames(
    str(silent), frames.shape[2:0:-1], fps=fps, macro_block_size=1, output_params=["-crf", "8"]
  )
  writer.send(None)
  for frame in frames:
    writer.send(np.ascontiguousarray(frame).tobytes())
  writer.close()
  if speech is not None:
    wav = path.with_suffix(".tmp.wav")
    mux_music(str(silent), write_wav(str(wav), speech, 16000), str(path))
    silent.unlink()
    wav.unlink()
  return path


def _random_variables(abstract, seed):
  """Random weights of the right shapes without compiling an init; He-scaled kernels."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name in ("var", "scale"):  # BatchNorm: keep the signal O(1) through the layers
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    if name == "kernel":
      fan_in = np.prod(leaf.shape[:-1])
      return rng.normal(0, np.sqrt(2 / fan_in), leaf.shape).astype(np.float32)
    return rng.normal(0, 0.1, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, nn.meta.unbox(abstract))


# -- lip sync ----------------------------------------------------------------------------------


def test_a_lip_sync_network_prefers_sync_and_recovers_a_known_offset(heads):
  frames, speech, other = heads["video"][0], heads["audio"][0], heads["audio"][1]
  in_sync = talking_face.lip_sync_scores(mouth_energy_embedder, frames, speech)
  assert in_sync.offset == 0
  # Another utterance, or the speech 25 frames late (beyond the +-15 searched): no shift fits.
  for wrong in (other, _delayed(speech, 25)):
    off = talking_face.lip_sync_scores(mouth_energy_embedder, frames, wrong)
    assert in_sync.lse_d < off.lse_d - 0.5 and in_sync.lse_c > off.lse_c + 0.5
  # Within the search the best shift is found: audio k frames late is an offset of -k
  # (positive offsets are audio that leads), at about the in-sync distance.
  for k in (3, -4):
    shifted = talking_face.lip_sync_scores(mouth_energy_embedder, frames, _delayed(speech, k))
    assert shifted.offset == -k
    assert shifted.lse_d == pytest.approx(in_sync.lse_d, abs=0.1)
  assert len(in_sync.mean_distances) == 31


def test_resize_is_cv2_bilinear_with_half_pixel_centres():
  ramp = np.zeros((1, 2, 2, 3), np.uint8)
  ramp[:, :, 1] = 100  # columns 0 | 100
  up = talking_face.resize_frames(ramp, 4)
  np.testing.assert_array_equal(up[0, 0, :, 0], [0, 25, 75, 100])  # edges clamped
  np.testing.assert_array_equal(up[0, :, 0, 0], [0, 0, 0, 0])
  row = np.broadcast_to(np.asarray([0, 100, 200, 250], np.uint8)[None, :, None], (4, 4, 3))
  down = talking_face.resize_frames(row[None].copy(), 2)
  np.testing.assert_array_equal(down[0, 0, :, 0], [50, 225])  # no anti-aliasing: 2 taps
  same = np.arange(2 * 5 * 5 * 3, dtype=np.uint8).reshape(2, 5, 5, 3)
  assert talking_face.resize_frames(same, 5) is same


def test_syncnet_color_pairs_each_window_with_its_first_frames_mel(heads):
  width = 1 / 16
  variables = _random_variables(wav2lip.abstract_variables("syncnet", width), seed=0)
  frames, speech = heads["video"][0, :12], heads["audio"][0, : 12 * SAMPLES]
  embed = talking_face.syncnet_color_embedder(variables, width=width, batch_size=4)
  video, audio = embed(frames, speech)
  assert video.shape == audio.shape == (7, round(512 * width))  # min(12, 12) - 5 windows
  np.testing.assert_allclose(np.linalg.norm(video, axis=1), 1, rtol=1e-5)
  # The second batch, built by hand: window v is frames v..v+4 resized to 96 and the mel
  # window of frame v, from mel frame int(3.2 v); the batch padded to 4 with zeros.
  faces = talking_face.resize_frames(frames, 96)
  mel = speech_features.wav2lip_mel(speech)
  windows = np.zeros((4, 5, 96, 96, 3), np.uint8)
  mel_windows = np.zeros((4, 16, 80), np.float32)
  for row, v in enumerate(range(4, 7)):
    windows[row] = faces[v : v + 5]
    mel_windows[row] = mel[int(v * 3.2) : int(v * 3.2) + 16]
  want_video, want_audio = talking_face._color_embed(variables, mel_windows, windows, width)
  np.testing.assert_allclose(video[4:], want_video[:3], atol=1e-6)
  np.testing.assert_allclose(audio[4:], want_audio[:3], atol=1e-6)
  assert np.abs(video[5] - video[4]).max() > 1e-3 and np.abs(audio[5] - audio[4]).max() > 1e-3


def test_syncnet_python_sees_224_pixel_bgr_crops(heads, monkeypatch):
  seen = {}

  def embeddings(variables, frames, audio, *, channels, batch_size):
    seen.update(frames=frames, channels=channels, batch_size=batch_size, audio=audio)
    return np.zeros((3, 4)), np.zeros((3, 4))

  monkeypatch.setattr(talking_face.lipsync, "syncnet_embeddings", embeddings)
  frames, speech = heads["video"][0, :8], heads["audio"][0, : 8 * SAMPLES]
  talking_face.syncnet_python_embedder({}, batch_size=7)(frames, speech)
  np.testing.assert_array_equal(seen["frames"], talking_face.resize_frames(frames, 224))
  assert seen["channels"] == "rgb" and seen["batch_size"] == 7  # flipped to BGR by lipsync
  assert seen["audio"] is speech


def test_lse_cli_reads_mp4_speech_and_npy_with_wav(heads, tmp_path, monkeypatch):
  frames, speech = heads["video"][0], heads["audio"][0]
  fake = tmp_path / "fake"
  fake.mkdir()
  _write_mp4(fake / "spoken.mp4", frames, speech)
  np.save(fake / "late.npy", frames)  # its speech 3 frames late; a stale .mp4 is ignored
  write_wav(str(fake / "late.wav"), _delayed(speech, 3), 16000)
  _write_mp4(fake / "late.mp4", frames[::-1], speech)
  videos = talking_face.index_videos(fake, name="--fake")
  assert sorted(videos) == ["late", "spoken"]
  assert videos["late"].frames.name == "late.npy" and videos["late"].speech.name == "late.wav"
  decoded = talking_face.read_speech(videos["spoken"])
  assert len(decoded) == len(speech)  # AAC priming and padding trimmed by the MP4's edit list
  assert np.corrcoef(decoded, speech)[0, 1] > 0.95
  wav = talking_face.read_speech(videos["late"])
  assert np.abs(wav - _delayed(speech, 3)).max() < 1e-4  # 16-bit PCM
  read = talking_face.read_frames(videos["spoken"].frames)
  assert read.shape == frames.shape and np.abs(read.astype(int) - frames).mean() < 4

  # The CLI with the toy network (the real ones: test_metrics_lipsync, the test above).
  monkeypatch.setattr(
    eval_talking, "_embedder", lambda args: (mouth_energy_embedder, "mouth-energy")
  )
  out = tmp_path / "lse.json"
  result = run_eval(_args("lse", "--fake", fake, "--weights", "unused.pth", "--out", out))
  assert json.loads(out.read_text()) == json.loads(json.dumps(result))
  assert result["network"] == "mouth-energy" and result["num_videos"] == 2
  assert result["videos"]["spoken"]["offset"] == 0  # lossy H.264 + AAC still in sync
  assert result["videos"]["late"]["offset"] == -3
  want = talking_face.lip_sync_scores(mouth_energy_embedder, frames, _delayed(speech, 3))
  assert result["videos"]["late"]["lse_d"] == pytest.approx(want.lse_d)
  assert result["lse_c"] == pytest.approx(np.mean([v["lse_c"] for v in result["videos"].values()]))


# -- mouth -------------------------------------------------------------------------------------


def test_mouth_metrics_through_the_cli(heads, tmp_path):
  real, fake, static = tmp_path / "real", tmp_path / "fake", tmp_path / "static"
  for folder in (real, fake, static):
    folder.mkdir()
  for i, video in enumerate(heads["video"][:, :40]):
    np.save(real / f"clip{i}.npy", video)
    np.save(fake / f"clip{i}.npy", video)
  for i, video in enumerate(heads["video"]):  # frame 60, outside the 40 compared
    np.save(static / f"clip{i}.npy", np.repeat(video[60:61], 40, axis=0))
  same = run_eval(_args("mouth", "--fake", fake, "--real", real))
  assert same["correlation"] == pytest.approx(1.0)
  assert same["ssim"] == pytest.approx(1.0)
  assert same["opening_error"] == same["width_error"] == 0.0
  assert same["psnr"] == np.inf
  assert same["jitter"] == same["reference_jitter"] > 0.002
  assert same["num_videos"] == 2 and same["num_frames"] == 80

  frozen = run_eval(_args("mouth", "--fake", static, "--real", real))
  assert frozen["correlation"] == 0.0 and frozen["jitter"] == 0.0
  assert frozen["reference_jitter"] == same["reference_jitter"]
  assert frozen["opening_error"] > 0.005 and frozen["ssim"] < 0.99 and frozen["psnr"] < 60
  truth = face_render.mouth_measurements(heads["video"][0, :61])["opening"]
  assert frozen["videos"]["clip0"]["opening_error"] == pytest.approx(
    np.abs(truth[:40] - truth[60]).mean()
  )


# -- named errors ------------------------------------------------------------------------------


def test_bad_folders_and_arguments_are_named(heads, tmp_path):
  frames, speech = heads["video"][0, :10], heads["audio"][0, : 10 * SAMPLES]
  real, fake = tmp_path / "real", tmp_path / "fake"
  real.mkdir()
  fake.mkdir()
  np.save(real / "a.npy", frames)
  np.save(fake / "b.npy", frames)
  with pytest.raises(talking_face.UnpairedVideosError, match=r"--fake has no.*\['b'\]"):
    run_eval(_args("mouth", "--fake", fake, "--real", real))
  (fake / "b.npy").unlink()
  np.save(fake / "a.npy", frames[:9])
  with pytest.raises(talking_face.FrameCountMismatchError, match=r"'a'.*\(10\), found 9"):
    run_eval(_args("mouth", "--fake", fake, "--real", real))
  with pytest.raises(UsageError, match="--real is required"):
    run_eval(_args("mouth", "--fake", fake))

  weights = ("--weights", tmp_path / "missing.safetensors")
  with pytest.raises(talking_face.NoAudioError, match=r"'a'.*a\.wav"):
    run_eval(_args("lse", "--fake", real, *weights))
  write_wav(str(real / "a.wav"), speech[: 8 * SAMPLES], 16000)
  with pytest.raises(talking_face.AudioVideoLengthError, match="10 frames.*5120 samples"):
    run_eval(_args("lse", "--fake", real, *weights))
  assert issubclass(talking_face.AudioVideoLengthError, speech_features.VideoAudioLengthError)
  write_wav(str(real / "a.wav"), speech[: 9 * SAMPLES + 100], 16000)  # within one frame
  with pytest.raises(torch_state_dict.MissingWeightsError):
    run_eval(_args("lse", "--fake", real, *weights))
  with pytest.raises(torch_state_dict.MissingWeightsError, match="--weights is required"):
    run_eval(_args("lse", "--fake", real))
  with pytest.raises(UsageError, match="got both"):
    run_eval(_args("lse", "--fake", real, *weights, "--syncnet-run", tmp_path))
  with pytest.raises(DependentRunError, match="--syncnet-run.*wav2lip_expert"):
    run_eval(_args("lse", "--fake", real, "--syncnet-run", tmp_path / "no_run"))
  with pytest.raises(UsageError, match="--vshift"):
    run_eval(_args("lse", "--fake", real, *weights, "--vshift", -1))

  silent = tmp_path / "silent"
  silent.mkdir()
  _write_mp4(silent / "mute.mp4", frames)
  with pytest.raises(talking_face.NoAudioError, match="no audio stream"):
    run_eval(_args("lse", "--fake", silent, *weights))
  (silent / "mute.mp4").unlink()
  _write_mp4(silent / "fast.mp4", frames, speech, fps=30)
  with pytest.raises(talking_face.FrameRateError, match="25 fps.*30"):
    run_eval(_args("lse", "--fake", silent, *weights))
