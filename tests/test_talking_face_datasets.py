"""LRS2, HDTF and GRID readers and TFDS builders, on fake folders of tiny videos.

Each folder is written here in its released layout with videos made by
imageio-ffmpeg's binary from known frames (left half red, right half blue, a
grey square whose level counts the frames) and a 440 Hz tone, so the tests
can check the crop, the cut, the frame count, the audio length and content
and the split membership of what the builders store.
"""

import logging
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import scipy.io.wavfile
import tensorflow_datasets as tfds
from PIL import Image

from jaxgen.data import talking_face_datasets as talking
from jaxgen.data.datasets import grid_corpus, hdtf, lrs2  # noqa: F401 (registers builders)

RED, BLUE = (200, 30, 30), (30, 30, 200)
LEVEL_BASE, LEVEL_STEP = 20, 3  # Grey level of the counting square: base + step * frame.
TONE_HZ = 440.0


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _frames(count: int, height: int, width: int, squares=((0, 0),)) -> np.ndarray:
  """Left half red, right half blue, 8-px grey squares at (y, x) whose level counts frames."""
  frames = np.empty((count, height, width, 3), np.uint8)
  frames[:, :, : width // 2] = RED
  frames[:, :, width // 2 :] = BLUE
  for t in range(count):
    for y, x in squares:
      frames[t, y : y + 8, x : x + 8] = LEVEL_BASE + LEVEL_STEP * t
  return frames


def _tone(seconds: float, rate: int = 16000, channels: int = 1, switch_at=None) -> np.ndarray:
  """A 440 Hz tone (880 Hz from `switch_at` seconds on), 16-bit, `channels` copies."""
  time = np.arange(round(seconds * rate)) / rate
  hz = np.where(time < (switch_at or seconds), TONE_HZ, 2 * TONE_HZ)
  wave = 0.5 * np.sin(2 * np.pi * np.cumsum(hz) / rate)
  return (np.repeat(wave[:, None], channels, 1) * 32767).astype(np.int16)


def _video(path, frames, audio_seconds=None, rate=16000, channels=1, mpeg1=False, switch_at=None):
  """Writes `frames` at 25 fps with a tone of `audio_seconds` (None: no audio track)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  height, width = frames.shape[1:3]
  raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "25"]
  command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *raw, "-i", "pipe:0"]
  if audio_seconds is not None:
    wav = path.with_suffix(".tone.wav")
    scipy.io.wavfile.write(wav, rate, _tone(audio_seconds, rate, channels, switch_at))
    command += ["-i", str(wav), "-c:a", "mp2" if mpeg1 else "aac"]
  # Lossless 4:4:4 H.264 keeps the grey squares grey; MPEG-1 has only 4:2:0.
  video = ["mpeg1video", "-q:v", "2"] if mpeg1 else ["libx264", "-crf", "0"]
  command += ["-c:v", *video, "-pix_fmt", "yuv420p" if mpeg1 else "yuv444p", str(path)]
  subprocess.run(command, input=frames.tobytes(), check=True)
  if audio_seconds is not None:
    wav.unlink()


def _frame_index(frame: np.ndarray, square: int) -> int:
  """The frame number a counting square shows, `square` px wide at the frame's top left."""
  corner = frame[: square // 2, : square // 2].astype(float).mean()
  return round((corner - LEVEL_BASE) / LEVEL_STEP)


def _dominant_hz(audio: np.ndarray) -> float:
  return np.abs(np.fft.rfft(audio)).argmax() * talking.SAMPLE_RATE / len(audio)


def _build(name, manual_dir, data_dir, splits, **kwargs):
  builder = tfds.builder(name, data_dir=str(data_dir), **kwargs)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return builder, {s: list(builder.as_data_source(split=s)) for s in splits}


def _check_clip(example, frames, size, hz=TONE_HZ):
  assert example["frames"].shape == (frames, size, size, 3)
  assert example["frames"].dtype == np.uint8
  assert example["audio"].shape == (frames * talking.SAMPLES_PER_FRAME,)
  assert example["audio"].dtype == np.float32
  assert example["fps"] == 25
  assert abs(_dominant_hz(example["audio"]) - hz) < 30


# --- LRS2 -------------------------------------------------------------------------------------

TEST_ID, TRAIN_ID = "6330311066473698535", "5535415699068794046"


@pytest.fixture(scope="module")
def lrs2_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("lrs2")
  main = root / "mvlrs_v1" / "main"
  clips = {  # name: (frames, audio seconds, transcript)
    f"{TEST_ID}/00011": (10, 0.4, "WHEN YOU COOK"),
    f"{TEST_ID}/00012": (8, 0.32, "AT HOME"),
    f"{TRAIN_ID}/00001": (12, 0.48, "IT IS GOOD"),
    f"{TRAIN_ID}/00002": (12, 0.12, "TOO SHORT"),  # Audio 9 frames short: skipped.
  }
  for name, (count, seconds, words) in clips.items():
    _video(main / f"{name}.mp4", _frames(count, 32, 32), seconds)
    (main / f"{name}.txt").write_text(f"Text:  {words}\nConf:  4\n")
  (main / TRAIN_ID / "00003.mp4").write_bytes(b"not a video")  # Skipped.
  # Train lists a clip that was never downloaded (00004); test lines carry a token.
  train = [f"{TRAIN_ID}/0000{i}" for i in range(1, 5)]
  (root / "train.txt").write_text("\n".join(train) + "\n")
  (root / "val.txt").write_text(f"{TEST_ID}/00012\n")
  (root / "mvlrs_v1" / "test.txt").write_text(f"{TEST_ID}/00011 NF\n")
  return root


def test_lrs2_builder_examples_splits_and_skips(lrs2_folder, tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    builder, splits = _build("lrs2/main_96", lrs2_folder, tmp_path, ("train", "validation", "test"))
  ids = {s: [_text(e["id"]) for e in v] for s, v in splits.items()}
  assert ids == {
    "train": [f"{TRAIN_ID}/00001"],
    "validation": [f"{TEST_ID}/00012"],
    "test": [f"{TEST_ID}/00011"],
  }
  assert builder.info.metadata["fps"] == 25 and builder.info.metadata["sample_rate"] == 16000
  for example, count, words in zip(
    [splits["train"][0], splits["validation"][0], splits["test"][0]],
    (12, 8, 10),
    ("IT IS GOOD", "AT HOME", "WHEN YOU COOK"),
  ):
    _check_clip(example, count, 96)
    assert _text(example["transcript"]) == words
    frames = example["frames"].astype(float)
    assert frames[:, 40:, 20:40].mean((0, 1, 2)) == pytest.approx(RED, abs=12)  # Whole frame.
    assert frames[:, 40:, 60:80].mean((0, 1, 2)) == pytest.approx(BLUE, abs=12)
    assert [_frame_index(f, 24) for f in example["frames"]] == list(range(count))
  assert "skipped 3 of 4 clips" in caplog.text
  for reason in ("00002 (", "-9.0 frames", "00003 (", "00004 ("):
    assert reason in caplog.text


def test_lrs2_face_box_and_named_errors(lrs2_folder, tmp_path):
  (example,) = [
    e for _, e in talking.lrs2_examples(str(lrs2_folder), "main", "test", 8, (16, 0, 16, 32))
  ]
  assert example["frames"][:, 4:].astype(float).mean((0, 1, 2)) == pytest.approx(BLUE, abs=12)
  with pytest.raises(talking.FaceBoxError, match=r"inside the 32x32 frame"):
    list(talking.lrs2_examples(str(lrs2_folder), "main", "test", 8, (20, 0, 16, 32)))
  with pytest.raises(talking.TalkingFaceDataError, match=r"must contain \['main'\]"):
    talking.lrs2_examples(str(tmp_path), "main", "train", 8)
  (tmp_path / "mvlrs_v1" / "main").mkdir(parents=True)
  with pytest.raises(talking.TalkingFaceDataError, match="none of the split lists"):
    talking.lrs2_examples(str(tmp_path), "main", "train", 8)
  with pytest.raises(talking.TalkingFaceDataError, match="layout must be one of"):
    talking.lrs2_examples(str(tmp_path), "mvlrs", "train", 8)
  path = str(lrs2_folder / "mvlrs_v1" / "main" / TRAIN_ID / "00002.mp4")
  with pytest.raises(talking.MediaLengthError, match=r"12 frames at 25 fps need 7680 audio"):
    talking.read_clip(path, 8)
  with pytest.raises(talking.MediaLengthError, match="found 100"):
    talking.fit_audio(np.zeros(100, np.float32), 3, "clip", tolerance=2)
  np.testing.assert_array_equal(talking.fit_audio(np.ones(1500), 2, "clip", 1), np.ones(1280))
  assert talking.fit_audio(np.ones(1000), 2, "clip", 1)[1000:].tolist() == [0.0] * 280


def test_lrs2_wav2lip_preprocessed_layout(tmp_path):
  clip = tmp_path / TRAIN_ID / "00001"
  clip.mkdir(parents=True)
  for i, frame in enumerate(_frames(6, 40, 40)):
    Image.fromarray(frame).save(clip / f"{i}.jpg", quality=95)
  scipy.io.wavfile.write(clip / "audio.wav", 32000, _tone(6 / 25, 32000, channels=2))
  broken = tmp_path / TRAIN_ID / "00002"
  broken.mkdir()
  for i in (0, 1, 3):  # A gap in the numbering: skipped.
    Image.fromarray(_frames(1, 40, 40)[0]).save(broken / f"{i}.jpg")
  (tmp_path / "filelists").mkdir()
  (tmp_path / "filelists" / "train.txt").write_text(f"{TRAIN_ID}/00001\n{TRAIN_ID}/00002\n")
  examples = dict(talking.lrs2_examples(str(tmp_path), "preprocessed", "train", 20))
  assert list(examples) == [f"{TRAIN_ID}/00001"]
  _check_clip(examples[f"{TRAIN_ID}/00001"], 6, 20)
  assert examples[f"{TRAIN_ID}/00001"]["transcript"] == ""
  assert [_frame_index(f, 4) for f in examples[f"{TRAIN_ID}/00001"]["frames"]] == list(range(6))
  with pytest.raises(talking.FaceBoxError, match="face crops already"):
    talking.lrs2_examples(str(tmp_path), "preprocessed", "train", 20, (0, 0, 8, 8))


# --- HDTF -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hdtf_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("hdtf")
  notes = root / "HDTF_dataset"
  notes.mkdir()
  url = "https://www.youtube.com/watch?v="
  (notes / "RD_video_url.txt").write_text(f"Radio1 {url}a\nRadio2 {url}b\n")
  (notes / "RD_annotion_time.txt").write_text(
    "Radio1.mp4 00:00-00:01 00:01-00:03\nRadio2.mp4 00:00-00:01 00:01-00:02\n"
  )
  # Windows of Radio1 are in pixels of its listed 72-px height; its download is 36 px tall.
  (notes / "RD_crop_wh.txt").write_text(
    "Radio1_0.mp4 0 48 0 48\nRadio1_1.mp4 80 48 24 48\nRadio2_0.mp4 4 40 4 40\n"
  )
  (notes / "RD_resolution.txt").write_text("Radio1.mp4 72\n")
  (notes / "WDA_video_url.txt").write_text(f"AdamSchiff {url}c\n")  # Never downloaded.
  (notes / "WDA_annotion_time.txt").write_text("AdamSchiff.mp4 00:00-00:01\n")
  (notes / "WDA_crop_wh.txt").write_text("AdamSchiff_0.mp4 0 10 0 10\n")
  # Counting squares where both windows start; the tone rises to 880 Hz at 1 s.
  _video(root / "RD" / "Radio1.mp4", _frames(75, 36, 64, ((0, 0), (12, 40))), 3.0, switch_at=1)
  _video(root / "_videos_raw" / "RD_Radio2.mp4", _frames(50, 48, 48), 2.0)
  return root


def test_hdtf_builder_cuts_crops_and_splits(hdtf_folder, tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    _, splits = _build(
      "hdtf/face96", hdtf_folder, tmp_path, ("train", "test"), test_videos=["RD_Radio2"]
    )
  train = {_text(e["id"]): e for e in splits["train"]}
  test = {_text(e["id"]): e for e in splits["test"]}
  assert sorted(train) == ["RD_Radio1_0", "RD_Radio1_1"] and sorted(test) == ["RD_Radio2_0"]
  first, second, held_out = train["RD_Radio1_0"], train["RD_Radio1_1"], test["RD_Radio2_0"]
  _check_clip(first, 25, 96)
  _check_clip(second, 50, 96, hz=2 * TONE_HZ)
  _check_clip(held_out, 25, 96)
  # Clip 0: the scaled window (0, 0, 24, 24) is red; clip 1's (40, 12, 24, 24) is blue.
  assert first["frames"][:, 40:].astype(float).mean((0, 1, 2)) == pytest.approx(RED, abs=12)
  assert second["frames"][:, 40:].astype(float).mean((0, 1, 2)) == pytest.approx(BLUE, abs=12)
  # The cut: clip 0 shows frames 0..24 of the video, clip 1 frames 25..74 (from 1 s on).
  assert [_frame_index(f, 32) for f in first["frames"]] == list(range(25))
  assert [_frame_index(f, 32) for f in second["frames"]] == list(range(25, 75))
  assert _text(first["source"]) == "RD" and _text(first["video"]) == "Radio1"
  assert (int(second["clip"]), int(second["segment"])) == (1, 0)
  assert float(second["start_seconds"]) == 1.0
  np.testing.assert_array_equal(second["box"], [80, 24, 48, 48])  # As annotated.
  assert "skipped 1 of 3 clips" in caplog.text and "WDA_AdamSchiff_0" in caplog.text


def test_hdtf_segments_split_rule_and_named_errors(hdtf_folder, tmp_path):
  examples = dict(
    talking.hdtf_examples(
      str(hdtf_folder), "train", 8, segment_seconds=0.8, test_videos=["RD_Radio2"]
    )
  )
  pieces = [examples[k] for k in sorted(examples) if k.startswith("RD_Radio1_1/")]
  assert [len(p["frames"]) for p in pieces] == [20, 30]  # The 10-frame tail joins the last.
  assert [p["start_seconds"] for p in pieces] == [1.0, 1.8]
  assert all(len(p["audio"]) == len(p["frames"]) * 640 for p in pieces)
  assert talking.segment_bounds(50, 20) == [(0, 20), (20, 50)]
  assert talking.segment_bounds(70, 20) == [(0, 20), (20, 40), (40, 70)]
  assert talking.segment_bounds(12, None) == [(0, 12)]
  clips, videos = talking.hdtf_clips(str(hdtf_folder))
  assert videos == ["RD_Radio1", "RD_Radio2", "WDA_AdamSchiff"]
  assert [(c.video_key, c.index) for c in clips if c.video == "Radio2"] == [("RD_Radio2", 0)]
  assert clips[1].box == (80, 24, 48, 48) and clips[1].box_height == 72
  assert (clips[1].start, clips[1].end) == (1.0, 3.0)
  names = [f"RD_Radio{i}" for i in range(25)]
  assert talking.hdtf_test_videos(names) == {sorted(names)[9], sorted(names)[19]}
  assert talking.parse_hdtf_time("01:02:03", "x") == 3723.0
  with pytest.raises(talking.TalkingFaceDataError, match="mm:ss or hh:mm:ss"):
    talking.parse_hdtf_time("1.5", "RD_annotion_time.txt")
  with pytest.raises(talking.TalkingFaceDataError, match="unknown"):
    talking.hdtf_examples(str(hdtf_folder), "train", 8, test_videos=["Radio2"])
  with pytest.raises(talking.TalkingFaceDataError, match=r"RD_video_url\.txt"):
    talking.hdtf_examples(str(tmp_path), "train", 8)


# --- GRID -------------------------------------------------------------------------------------

ALIGN = {  # utterance: its words, one frame (1000 units) each after 2 frames of silence.
  "bbaf2n": "bin blue at f two now",
  "swwp2s": "set white with p two soon",
  "pwij3p": "place white in j three please",
  "lbax4n": "lay blue at x four now",
}


def _alignment(words: str, pause: bool = False) -> str:
  """An .align text: sil, one frame per word (+ a short pause, "sp", if asked), sil."""
  rows = ["0 2000 sil"] + [
    f"{2000 + 1000 * i} {3000 + 1000 * i} {w}" for i, w in enumerate(words.split())
  ]
  return "\n".join([*rows, *["8000 8500 sp"] * pause, "8500 10000 sil"]) + "\n"


@pytest.fixture(scope="module")
def grid_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("grid")
  clips = {"s1": "bbaf2n", "s3": "swwp2s", "s4": "pwij3p", "s5": "lbax4n"}
  for speaker, utterance in clips.items():
    silent = speaker == "s4"  # Its sound is in audio_25k/ instead.
    _video(
      root / speaker / f"{utterance}.mpg",
      _frames(10, 32, 40),
      None if silent else 0.4,
      rate=32000,
      channels=2,
      mpeg1=True,
    )
    words = ALIGN["bbaf2n"] if speaker == "s5" else ALIGN[utterance]  # s5's is misfiled.
    (root / "alignments" / speaker).mkdir(parents=True)
    (root / "alignments" / speaker / f"{utterance}.align").write_text(
      _alignment(words, pause=speaker == "s3")
    )
  (root / "audio_25k" / "s4").mkdir(parents=True)
  scipy.io.wavfile.write(root / "audio_25k" / "s4" / "pwij3p.wav", 25000, _tone(0.4, 25000))
  return root


def test_grid_builder_examples_words_and_unseen_speakers(grid_folder, tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    _, splits = _build(
      "grid_corpus/unseen_speakers_96",
      grid_folder,
      tmp_path,
      ("train", "test"),
      face_box={
        "s1": (20, 0, 20, 32),
        "s3": (0, 0, 20, 32),
        "s4": (0, 8, 16, 16),
        "s5": (0, 0, 8, 8),
      },
    )
  assert [_text(e["id"]) for e in splits["test"]] == ["s1/bbaf2n"]
  assert [_text(e["id"]) for e in splits["train"]] == ["s3/swwp2s", "s4/pwij3p"]
  colours = {"s1/bbaf2n": BLUE, "s3/swwp2s": RED, "s4/pwij3p": RED}
  for example in splits["train"] + splits["test"]:
    key = _text(example["id"])
    _check_clip(example, 10, 96)
    assert _text(example["speaker"]) == key.split("/")[0]
    assert [_text(w) for w in example["words"]] == ALIGN[key.split("/")[1]].split()
    assert _text(example["transcript"]) == ALIGN[key.split("/")[1]]
    np.testing.assert_array_equal(example["word_frames"], [[2 + i, 3 + i] for i in range(6)])
    bottom = example["frames"][:, 48:].astype(float).mean((0, 1, 2))
    assert bottom == pytest.approx(colours[key], abs=15)
  assert "GRID train: skipped 1 of 3 clips" in caplog.text and "s5/lbax4n" in caplog.text
  assert "wrong speaker" in caplog.text


def test_grid_sentence_face_box_and_layout_errors(grid_folder, tmp_path):
  assert grid_corpus.sentence("lwbz9a") == "lay white by z nine again".split()
  with pytest.raises(talking.UnusableClipError, match="6 letters"):
    grid_corpus.sentence("bbaw2n")  # GRID has no letter w.
  with pytest.raises(talking.FaceBoxError, match="pass face_box="):
    _build("grid_corpus/unseen_speakers_96", grid_folder, tmp_path, ())
  with pytest.raises(talking.FaceBoxError, match=r"no box for the speakers \['s1'\]"):
    grid_corpus.examples(str(grid_folder), "test", 8, {"s3": (0, 0, 8, 8)})
  with pytest.raises(talking.FaceBoxError, match=r"inside the 40x32 frame"):
    list(grid_corpus.examples(str(grid_folder), "test", 8, (30, 0, 16, 16)))
  with pytest.raises(talking.TalkingFaceDataError, match=r"must contain \['alignments'\]"):
    grid_corpus.examples(str(tmp_path), "train", 8, (0, 0, 8, 8))
