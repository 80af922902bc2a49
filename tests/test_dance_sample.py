"""`jaxgen sample --music` on a dance run: WAV in, MP4 of the dancer with the music and joints out."""

import argparse
import os
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile

from jaxgen.cli import sample as sample_command
from jaxgen.cli.eval_dance import read_dance_folder
from jaxgen.data import music_synth
from jaxgen.render.music_video import MusicVideoError, mux_music, write_wav
from jaxgen.training.task import SampleSpec
from test_cli import run_cli
from tiny_configs import CONFIGS, TINY

FPS = 20  # the dances' frame rate
SR = 22050


def song(seconds: float, seed: int = 0) -> np.ndarray:
  return music_synth.synthesize_track(np.random.default_rng(seed), seconds, sample_rate=SR).audio


def probe(path: str) -> dict:
  """imageio-ffmpeg's reading of a video: codecs (audio_codec only with sound) and duration."""
  frames = imageio_ffmpeg.read_frames(path)
  meta = next(frames)
  frames.close()
  return meta


def decoded_audio(path: str) -> np.ndarray:
  """The audio stream of `path`, decoded by ffmpeg to mono float32 at SR."""
  command = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", path, "-vn"]
  command += ["-f", "f32le", "-ac", "1", "-ar", str(SR), "-"]
  return np.frombuffer(subprocess.run(command, capture_output=True, check=True).stdout, np.float32)


def silent_video(path: str, num_frames: int) -> str:
  writer = imageio_ffmpeg.write_frames(path, (32, 32), fps=FPS, macro_block_size=1)
  writer.send(None)
  for i in range(num_frames):
    writer.send(np.full((32, 32, 3), i * 3 % 256, np.uint8))
  writer.close()
  return path


# -- the muxer -----------------------------------------------------------------


def test_muxed_video_keeps_the_frames_and_carries_the_music_to_its_end(tmp_path):
  music = song(4.0)
  wav = write_wav(str(tmp_path / "song.wav"), music, SR)
  # 79 frames: the dance of 4 s of music is whole frames, up to one frame short.
  video = silent_video(str(tmp_path / "silent.mp4"), 79)
  out = mux_music(video, wav, str(tmp_path / "dance.mp4"))
  meta = probe(out)
  assert meta["codec"] == "h264" and meta["audio_codec"] == "aac"
  assert "audio_codec" not in probe(video)
  assert abs(meta["duration"] - 4.0) <= 1 / FPS
  assert imageio_ffmpeg.count_frames_and_secs(out)[0] == 79
  # The sound is the music: AAC is lossy, but decoded it matches sample for sample.
  sound = decoded_audio(out)
  assert abs(len(sound) - len(music)) <= SR / FPS
  n = min(len(sound), len(music))
  assert np.corrcoef(sound[:n], music[:n])[0, 1] > 0.99


def test_wav_holds_the_waveform_as_16_bit_pcm(tmp_path):
  audio = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.7, -3.0, 1e-5], np.float32)
  path = write_wav(str(tmp_path / "a.wav"), audio, 12345)
  pcm, sr = soundfile.read(path, dtype="int16")
  assert sr == 12345
  np.testing.assert_array_equal(pcm, [0, 16384, -16384, 32767, -32767, 32767, -32767, 0])


def test_muxer_names_bad_inputs(tmp_path):
  wav = write_wav(str(tmp_path / "song.wav"), song(1.0), SR)
  video = silent_video(str(tmp_path / "silent.mp4"), 5)
  with pytest.raises(FileNotFoundError, match="video_path: no such file"):
    mux_music(str(tmp_path / "none.mp4"), wav, str(tmp_path / "o.mp4"))
  with pytest.raises(FileNotFoundError, match="music_path: no such file"):
    mux_music(video, str(tmp_path / "none.wav"), str(tmp_path / "o.mp4"))
  with pytest.raises(MusicVideoError, match="out_path: expected a file ending in .mp4"):
    mux_music(video, wav, str(tmp_path / "o.gif"))
  with pytest.raises(MusicVideoError, match="music_path: .* holds no audio stream"):
    mux_music(video, video, str(tmp_path / "o.mp4"))
  with pytest.raises(MusicVideoError, match="video_path: .* holds no video stream"):
    mux_music(wav, wav, str(tmp_path / "o.mp4"))
  with pytest.raises(MusicVideoError, match=r"audio: expected a non-empty mono float"):
    write_wav(str(tmp_path / "s.wav"), np.zeros((2, 100), np.float32), SR)
  with pytest.raises(MusicVideoError, match="sample_rate: expected an int"):
    write_wav(str(tmp_path / "s.wav"), np.zeros(100, np.float32), 22050.0)


# -- jaxgen sample --music on a tiny EDGE run ------------------------------------


@pytest.fixture(scope="module")
def edge_run(tmp_path_factory):
  """A tiny EDGE run trained for 2 steps, and a folder for music."""
  root = tmp_path_factory.mktemp("edge")
  workdir = str(root / "run")
  argv = ["train", "--config", os.path.join(CONFIGS, "edge_music_dance.py"), "--workdir", workdir]
  assert run_cli(argv + TINY["edge_music_dance.py"]) == 0
  return workdir, root


def test_sample_writes_the_dance_video_with_its_music_and_the_joints(edge_run):
  workdir, root = edge_run
  wav = write_wav(str(root / "song.wav"), song(4.0), SR)
  out = str(root / "out" / "dance.mp4")
  assert run_cli(["sample", "--checkpoint", workdir, "--music", wav, "--out", out]) == 0
  meta = probe(out)
  assert meta["audio_codec"] == "aac" and meta["fps"] == FPS
  assert abs(meta["duration"] - 4.0) <= 1 / FPS
  assert imageio_ffmpeg.count_frames_and_secs(out)[0] == 4 * FPS
  joints = np.load(str(root / "out" / "dance.npy"))
  assert joints.shape == (4 * FPS, 22, 3) and joints.dtype == np.float32
  assert np.isfinite(joints).all() and joints.std(axis=0).max() > 0  # it moves
  # The format `jaxgen eval --metric dance` reads.
  (clip,) = read_dance_folder(str(root / "out"), name="--generated", fps=FPS)
  assert clip.name == "dance" and clip.joints.shape == (4 * FPS, 22, 3)


def test_a_folder_of_music_gives_one_joints_file_per_song_named_after_it(edge_run):
  workdir, root = edge_run
  folder = root / "album"
  folder.mkdir()
  write_wav(str(folder / "a.wav"), song(4.0, seed=1), SR)
  write_wav(str(folder / "b.wav"), song(3.6, seed=2), SR)
  (folder / "notes.txt").write_text("not music")
  out = str(root / "dances.npy")
  assert run_cli(["sample", "--checkpoint", workdir, "--music", folder, "--out", out]) == 0
  clips = read_dance_folder(str(root / "dances"), name="--generated", fps=FPS)
  assert [(c.name, len(c.joints)) for c in clips] == [("a", 80), ("b", 72)]
  assert not os.path.exists(root / "dances" / "a.mp4")  # a .npy output draws nothing


def _write_bad_music(root) -> dict[str, str]:
  bad = root / "bad"
  bad.mkdir(exist_ok=True)
  write_wav(str(bad / "silent.wav"), np.zeros(4 * SR, np.float32), SR)
  write_wav(str(bad / "short.wav"), song(0.5), SR)
  write_wav(str(bad / "low_rate.wav"), song(2.0, seed=3)[::4], SR // 4)
  (bad / "noise.wav").write_bytes(os.urandom(4000))
  (bad / "song.mp3").write_bytes(b"ID3")
  (bad / "empty").mkdir(exist_ok=True)
  return {name: str(bad / name) for name in os.listdir(bad)}


def test_sample_names_bad_music_before_loading_weights(edge_run, monkeypatch, capsys):
  from jaxgen.training import inference  # pylint: disable=g-import-not-at-top

  def never(*args, **kwargs):
    raise AssertionError("weights were read before the music was checked")

  monkeypatch.setattr(inference, "restore_ema_params", never)
  workdir, root = edge_run
  files = _write_bad_music(root)
  cases = [
    (["--music", str(root / "none.wav")], "--music: no such file or folder"),
    (["--music", files["empty"]], "--music: folder '" + files["empty"] + "' holds no .wav files"),
    (["--music", files["song.mp3"]], "--music: expected a .wav file, got"),
    (["--music", files["noise.wav"]], "as WAV audio (Error opening"),
    (["--music", files["silent.wav"]], "music 'silent.wav': audio is silent"),
    (["--music", files["short.wav"]], "music 'short.wav': audio: expected at least 1 s of music"),
    (["--music", files["low_rate.wav"]], "music 'low_rate.wav': sr: expected an int sample rate"),
    (["--prompt", "a dance"], "--music: task 'edge' dances to music; give a WAV file"),
    (
      ["--music", files["short.wav"], "--prompt", "x"],
      "--prompt: task 'edge' dances to --music and takes no prompts",
    ),
    (["--music", files["short.wav"], "--seconds", "3"], "--seconds: task 'edge' takes no duration"),
    (
      ["--music", files["short.wav"], "--num-per-prompt", "2"],
      "--num-per-prompt: task 'edge' makes one dance per music file, got 2",
    ),
  ]
  for args, message in cases:
    assert run_cli(["sample", "--checkpoint", workdir] + args) == 2, args
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, (args, err)


def test_music_for_a_task_that_takes_none_is_named():
  args = argparse.Namespace(
    input=None, music=["song.wav"], prompt=["p"], prompts_file=None, num_per_prompt=1
  )
  spec = SampleSpec("grid.png", (".png",))
  with pytest.raises(sample_command.UsageError, match="--music: task 'text_to_image' takes no"):
    sample_command._check_inputs(args, spec, "text_to_image")
