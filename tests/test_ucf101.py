"""The UCF-101 reader and TFDS builder on a fake folder of tiny .avi videos in the released layout.

Three classes x two groups (g01, g08) of 32x24 videos, written by imageio-ffmpeg's
binary as MJPEG (one class as MPEG-4 part 2, the codec of the XviD release):
the centre 24x24 is grey at a level that counts the frames, 4-px red strips at
both sides lie outside the centred square. So the tests can check which frames
a clip sampled and that the crop is centred. The lists use CRLF line ends and
the release's `HandstandPushups/v_HandStandPushups_...` spelling.
"""

import logging
import shutil
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxgen.data import image_text
from jaxgen.data import talking_face_datasets as talking
from jaxgen.data import video_datasets as video
from jaxgen.data.datasets import ucf101

CLASSES = ("ApplyEyeMakeup", "HandstandPushups", "YoYo")
CAPTIONS = (
  "a person doing apply eye makeup",
  "a person doing handstand push-ups",
  "a person doing yo-yo",
)
FILE_CLASS = {"HandstandPushups": "HandStandPushups"}  # The release's file-name spelling.
FRAMES, SHORT_FRAMES = 10, 6  # The short video is under one 7-frame clip (4 frames every 2nd).
LEVEL_BASE, LEVEL_STEP = 20, 20  # Grey level of frame t: base + step * t.
SPEC = video.ClipSpec(resolution=12, frames=4, stride=2)


def _file(class_name: str, group: int) -> str:
  return f"{class_name}/v_{FILE_CLASS.get(class_name, class_name)}_g{group:02d}_c01.avi"


def _write_avi(path, count: int, codec: str) -> None:
  frames = np.zeros((count, 24, 32, 3), np.uint8)
  frames[:, :, 4:28] = (LEVEL_BASE + LEVEL_STEP * np.arange(count))[:, None, None, None]
  frames[:, :, :4] = frames[:, :, 28:] = (255, 0, 0)
  path.parent.mkdir(parents=True, exist_ok=True)
  raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "32x24", "-r", "25", "-i", "pipe:0"]
  encode = {"mjpeg": ["mjpeg", "-pix_fmt", "yuvj444p"], "mpeg4": ["mpeg4", "-pix_fmt", "yuv420p"]}
  command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *raw, "-q:v", "2"]
  subprocess.run([*command, "-c:v", *encode[codec], str(path)], input=frames.tobytes(), check=True)


def _write_lists(lists, folds) -> None:
  """classInd.txt and {train,test}list0k.txt; folds: {k: (train groups, test groups)}."""
  lists.mkdir(parents=True, exist_ok=True)
  crlf = lambda lines: "".join(f"{line}\r\n" for line in lines)  # noqa: E731
  (lists / "classInd.txt").write_text(crlf(f"{i + 1} {c}" for i, c in enumerate(CLASSES)))
  for fold, (train, test) in folds.items():
    rows = [f"{_file(c, g)} {i + 1}" for g in train for i, c in enumerate(CLASSES)]
    if fold == 1:
      rows.insert(1, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02.avi 1")  # Never downloaded.
    (lists / f"trainlist0{fold}.txt").write_text(crlf(rows))
    (lists / f"testlist0{fold}.txt").write_text(crlf(_file(c, g) for g in test for c in CLASSES))


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("ucf")
  for class_name in CLASSES:
    for group in (1, 8):
      short = class_name == "HandstandPushups" and group == 8
      codec = "mpeg4" if class_name == "YoYo" else "mjpeg"
      _write_avi(
        root / "UCF-101" / _file(class_name, group), SHORT_FRAMES if short else FRAMES, codec
      )
  _write_lists(root / "ucfTrainTestlist", {1: ((8,), (1,)), 2: ((1,), (8,)), 3: ((8,), (1,))})
  return root


def _level(frame: np.ndarray) -> int:
  return round((frame.astype(float).mean() - LEVEL_BASE) / LEVEL_STEP)


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def test_captions_split_camel_case_with_a_table_for_odd_names():
  assert [video.class_caption(c) for c in CLASSES] == list(CAPTIONS)
  assert video.class_words("PlayingDaf") == "playing daf"
  assert video.class_words("TaiChi") == "tai chi"
  assert video.class_words("Skijet") == "jet ski"
  assert video.class_words("BoxingPunchingBag") == "boxing punching bag"
  assert video.class_words("CleanAndJerk") == "clean and jerk"
  assert video.class_words("PlayingABC2Drums") == "playing abc 2 drums"


def test_reader_samples_centred_clips_per_fold_and_skips_unusable_videos(ucf_root, caplog):
  with caplog.at_level(logging.WARNING):
    train = dict(video.ucf101_examples(str(ucf_root), "train", 1, SPEC))
  assert list(train) == ["v_ApplyEyeMakeup_g08_c01", "v_YoYo_g08_c01"]
  assert "skipped 2 of 4 clips" in caplog.text
  assert "v_ApplyEyeMakeup_g08_c02.avi (video" in caplog.text  # Listed, not downloaded.
  assert "needs 7 frames, the video has 6" in caplog.text  # v_HandStandPushups_g08_c01.
  for example, label in zip(train.values(), (0, 2)):
    assert example["video"].shape == (4, 12, 12, 3) and example["video"].dtype == np.uint8
    assert (example["label"], example["class_name"]) == (label, CLASSES[label])
    assert example["caption"] == CAPTIONS[label]
    # 10 frames leave 3 for a 7-frame clip: it starts at frame 1 and takes 1, 3, 5, 7.
    assert example["start_frame"] == 1
    assert [_level(f) for f in example["video"]] == [1, 3, 5, 7]
    # The centred 24x24 square is grey: no red from the strips at the sides.
    channels = example["video"].astype(int)
    assert np.abs(channels[..., 0] - channels[..., 1]).max() <= 12
  test = dict(video.ucf101_examples(str(ucf_root), "test", 1, SPEC))
  assert [e["name"] for e in test.values()] == [
    "v_ApplyEyeMakeup_g01_c01",
    "v_HandStandPushups_g01_c01",
    "v_YoYo_g01_c01",
  ]
  assert [e["label"] for e in test.values()] == [0, 1, 2]
  fold2 = {
    s: list(dict(video.ucf101_examples(str(ucf_root), s, 2, SPEC))) for s in ("train", "test")
  }
  assert fold2 == {
    "train": ["v_ApplyEyeMakeup_g01_c01", "v_HandStandPushups_g01_c01", "v_YoYo_g01_c01"],
    "test": ["v_ApplyEyeMakeup_g08_c01", "v_YoYo_g08_c01"],
  }


def test_several_clips_per_video_and_whole_video_clips(ucf_root):
  spread = video.ClipSpec(resolution=6, frames=2, stride=3, clips_per_video=3)
  examples = dict(video.ucf101_examples(str(ucf_root), "test", 1, spread))
  keys = [k for k in examples if k.startswith("v_YoYo_")]
  assert keys == ["v_YoYo_g01_c01/0", "v_YoYo_g01_c01/1", "v_YoYo_g01_c01/2"]
  # 10 frames leave 6 for a 4-frame clip: thirds of it centred at 1, 3, 5.
  assert [examples[k]["start_frame"] for k in keys] == [1, 3, 5]
  assert [[_level(f) for f in examples[k]["video"]] for k in keys] == [[1, 4], [3, 6], [5, 8]]
  path = str(ucf_root / "UCF-101" / _file("ApplyEyeMakeup", 1))
  ((start, clip),) = video.video_clips(path, video.ClipSpec(resolution=24, frames=10))
  assert start == 0 and clip.shape == (10, 24, 24, 3)
  assert [_level(f) for f in clip] == list(range(10))
  assert video.clip_starts(20, video.ClipSpec(8, 4, 2, 2), "v") == [3, 9]
  short = str(ucf_root / "UCF-101" / _file("HandstandPushups", 8))
  with pytest.raises(video.VideoTooShortError, match="needs 7 frames, the video has 6") as error:
    video.video_clips(short, SPEC)
  assert isinstance(error.value, talking.UnusableClipError)  # What the readers skip.


def test_layout_variants_find_the_same_videos_and_lists(ucf_root, tmp_path):
  videos, lists = str(ucf_root / "UCF-101"), str(ucf_root / "ucfTrainTestlist")
  assert video.ucf101_folders(str(ucf_root)) == (videos, lists)
  # manual_dir = the UCF-101 folder itself, the lists beside it.
  assert video.ucf101_folders(videos) == (videos, lists)
  names = list(dict(video.ucf101_examples(videos, "test", 1, SPEC)))
  assert names == list(dict(video.ucf101_examples(str(ucf_root), "test", 1, SPEC)))
  # The lists inside the UCF-101 folder.
  inner = tmp_path / "UCF-101"
  _write_lists(inner / "ucfTrainTestlist", {1: ((8,), (1,))})
  assert video.ucf101_folders(str(inner)) == (str(inner), str(inner / "ucfTrainTestlist"))


def test_named_errors_for_folders_lists_and_clip_shapes(ucf_root, tmp_path):
  with pytest.raises(video.VideoFolderLayoutError, match="is not a folder"):
    video.ucf101_examples(str(tmp_path / "absent"), "train", 1, SPEC)
  bare = tmp_path / "bare"
  (bare / "UCF-101" / "YoYo").mkdir(parents=True)
  with pytest.raises(video.VideoFolderLayoutError, match=r"no classInd.txt in any of .*'UCF-101'"):
    video.ucf101_examples(str(bare), "train", 1, SPEC)
  (bare / "ucfTrainTestlist").mkdir()  # The lists folder without classInd.txt.
  with pytest.raises(video.VideoFolderLayoutError, match="no classInd.txt"):
    video.ucf101_examples(str(bare), "train", 1, SPEC)
  _write_lists(bare / "ucfTrainTestlist", {1: ((8,), (1,))})
  with pytest.raises(video.VideoFolderLayoutError, match=r"testlist02.txt' does not exist"):
    video.ucf101_examples(str(bare), "test", 2, SPEC)
  lists = bare / "ucfTrainTestlist"
  shutil.rmtree(bare / "UCF-101")
  (bare / "UCF-101").mkdir()
  with pytest.raises(video.VideoFolderLayoutError, match=r"none of the 3 classes .* is a folder"):
    video.ucf101_examples(str(bare), "train", 1, SPEC)
  (bare / "UCF-101" / "YoYo").mkdir()
  (lists / "trainlist01.txt").write_text("YoYo/v_YoYo_g08_c01.avi 1\n")
  with pytest.raises(video.VideoFolderLayoutError, match="labelled 1, but classInd.txt numbers"):
    video.ucf101_examples(str(bare), "train", 1, SPEC)
  (lists / "testlist01.txt").write_text("Surfing/v_Surfing_g01_c01.avi\n")
  with pytest.raises(video.VideoFolderLayoutError, match="a class of classInd.txt, found"):
    video.ucf101_examples(str(bare), "test", 1, SPEC)
  (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n3 YoYo\n")
  with pytest.raises(video.VideoFolderLayoutError, match="numbered 1, 2, 3"):
    video.ucf101_examples(str(bare), "test", 1, SPEC)
  with pytest.raises(video.ClipSpecError, match="split must be one of"):
    video.ucf101_examples(str(ucf_root), "validation", 1, SPEC)
  with pytest.raises(video.ClipSpecError, match=r"fold must be one of \(1, 2, 3\), got 4"):
    video.ucf101_examples(str(ucf_root), "train", 4, SPEC)
  for bad in (0, -64, 2.5, "64", True):
    with pytest.raises(
      video.ClipSpecError, match=f"resolution must be a positive integer, got {bad!r}"
    ):
      video.ClipSpec(resolution=bad, frames=16)
  with pytest.raises(video.ClipSpecError, match="frames must be"):
    video.ClipSpec(resolution=64, frames=0)
  with pytest.raises(video.ClipSpecError, match="stride must be"):
    video.ClipSpec(resolution=64, frames=16, stride=0)


def test_builder_stores_clips_labels_and_captions(ucf_root, tmp_path):
  config = ucf101.Ucf101Config(name="tiny", fold=1, resolution=12, frames=4, stride=2)
  builder = ucf101.Ucf101(config=config, data_dir=str(tmp_path))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(ucf_root))
  )
  assert builder.info.metadata["fps"] == 25 and builder.info.metadata["stride"] == 2
  splits = {s: list(builder.as_data_source(split=s)) for s in ("train", "test")}
  readers = {s: list(video.ucf101_examples(str(ucf_root), s, 1, SPEC)) for s in ("train", "test")}
  for split, examples in splits.items():
    assert [_text(e["name"]) for e in examples] == [e["name"] for _, e in readers[split]]
    for stored, (_, read) in zip(examples, readers[split]):
      np.testing.assert_array_equal(stored["video"], read["video"])
      assert stored["video"].shape == (4, 12, 12, 3) and stored["video"].dtype == np.uint8
      assert int(stored["label"]) == read["label"]
      assert _text(stored["caption"]) == CAPTIONS[read["label"]]
      assert _text(stored["class_name"]) == CLASSES[read["label"]]
      assert int(stored["start_frame"]) == 1
  assert len(splits["train"]) == 2 and len(splits["test"]) == 3
  with pytest.raises(image_text.ImageTextDataError, match="DownloadConfig"):
    ucf101.Ucf101(config=config, data_dir=str(tmp_path / "other")).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "none"))
    )
  with pytest.raises(video.ClipSpecError, match="resolution must be a positive integer, got 0"):
    ucf101.Ucf101(config=ucf101.Ucf101Config(name="bad", resolution=0), data_dir=str(tmp_path))


def test_registered_as_ucf101_local_beside_tfds_own_ucf101():
  import tensorflow_datasets.video.ucf101 as tfds_ucf101  # Same name "ucf101": no clash.

  assert tfds.builder_cls("ucf101_local") is ucf101.Ucf101
  assert tfds.builder_cls("ucf101") is tfds_ucf101.Ucf101
  assert [c.name for c in ucf101.Ucf101.BUILDER_CONFIGS] == [
    "fold1_64",
    "fold2_64",
    "fold3_64",
    "fold1_128",
  ]
