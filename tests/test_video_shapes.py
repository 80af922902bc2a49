"""Captioned shape videos: the dataset, its analytic motion judge and its TFDS builder."""

import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import ndimage

from jaxgen.data import shapes, video_judge, video_shapes
from jaxgen.data.datasets import captioned_videos


def _every_kind_specs() -> list[video_shapes.VideoSpec]:
  """One clip per motion (shapes, colours and sizes rotating) and four two-object clips."""
  specs = []
  for i, motion in enumerate(video_shapes.MOTIONS):
    shape = shapes.SHAPES[i % 3]
    colour = shapes.COLOURS[(i + 1) % 6]  # Never the colour a "turning" motion names.
    size = (
      shapes.SIZES[i % 2]
      if video_shapes.motion_info(motion).kind not in ("grow", "shrink")
      else None
    )
    specs.append(video_shapes.VideoSpec((video_shapes.ObjectSpec(shape, colour, motion, size),)))
  for caption in (
    "a red circle moving left and a blue square moving up",
    "a green triangle moving down and right and a yellow circle moving up and left",
    "a cyan square moving right and a magenta triangle moving right",
    "a blue circle moving down and a red triangle moving down and left",
  ):
    specs.append(video_shapes.parse_video_caption(caption))
  return specs


@pytest.fixture(scope="module")
def every_kind():
  specs = _every_kind_specs()
  data = video_shapes.render_videos(specs, 32, 16, np.random.default_rng(7))
  return specs, data


def test_make_video_split_is_bit_identical_and_seeded():
  first = video_shapes.make_video_split("train", 12, resolution=16, frames=8)
  second = video_shapes.make_video_split("train", 12, resolution=16, frames=8)
  assert first.keys() == second.keys()
  for key in first:
    np.testing.assert_array_equal(first[key], second[key])
  other = video_shapes.make_video_split("train", 12, resolution=16, frames=8, seed=1)
  assert not np.array_equal(first["video"], other["video"])


def test_split_arrays_and_ground_truth_match_the_renderer():
  data = video_shapes.make_video_split("test", 40, resolution=32, frames=16)
  assert data["video"].shape == (40, 16, 32, 32, 3) and data["video"].dtype == np.uint8
  assert data["centre"].shape == (40, 16, 2, 2) and data["centre"].dtype == np.float32
  for key in ("half_size", "frame_colour", "frame_shape"):
    assert data[key].shape == (40, 16, 2)
  single = data["num_objects"] == 1
  assert 0 < single.sum() < 40 and set(data["num_objects"].tolist()) == {1, 2}
  assert np.all(data["shape"][single, 1] == -1) and np.all(np.isnan(data["centre"][single, :, 1]))

  # Each object stays inside the frame in every frame.
  valid = ~np.isnan(data["half_size"])
  half, centre = data["half_size"][valid], data["centre"][valid]
  assert np.all(centre - half[:, None] >= -1e-6) and np.all(centre + half[:, None] <= 1 + 1e-6)

  # A one-object clip of constant colour is, frame by frame, the still renderer's image.
  kinds = [video_shapes.parse_video_caption(str(c)).kind for c in data["caption"]]
  i = next(i for i, k in enumerate(kinds) if k == "move")
  still = shapes.render(
    {"shape": data["frame_shape"][i, :, 0], "colour": data["frame_colour"][i, :, 0]},
    data["centre"][i, :, 0].astype(np.float64),
    data["half_size"][i, :, 0].astype(np.float64),
    32,
  )
  np.testing.assert_array_equal(data["video"][i], still)


def test_moves_travel_their_direction_at_their_speed(every_kind):
  specs, data = every_kind
  for i, spec in enumerate(specs):
    for slot, obj in enumerate(spec.objects):
      info = obj.info
      centre = data["centre"][i, :, slot]
      if info.kind == "move":
        travel = centre[-1] - centre[0]
        expected = video_shapes.SPEEDS[info.speed] * np.asarray(info.step)
        np.testing.assert_allclose(
          travel, expected, rtol=video_shapes.SPEED_JITTER + 1e-3, atol=1e-6
        )
      elif info.kind == "bounce":
        axis = 0 if info.step[0] else 1
        away = centre[:, axis] * info.step[axis]
        turn = int(np.argmin(away))
        assert 0 < turn < 15 and away[0] > away[turn] + 0.2 and away[-1] > away[turn] + 0.2
      elif info.kind in ("grow", "shrink"):
        ratio = data["half_size"][i, -1, 0] / data["half_size"][i, 0, 0]
        grow = video_shapes.GROW_HALF_SIZES[1] / video_shapes.GROW_HALF_SIZES[0]
        assert ratio == pytest.approx(grow if info.kind == "grow" else 1 / grow, rel=1e-5)
        np.testing.assert_array_equal(centre[0], centre[-1])
      else:  # turn
        assert data["frame_colour"][i, 0, 0] == shapes.COLOURS.index(obj.colour)
        assert data["frame_colour"][i, -1, 0] == shapes.COLOURS.index(info.end_colour)
  # Two objects keep their bounding boxes apart in every frame.
  pairs = data["num_objects"] == 2
  gap = np.abs(data["centre"][pairs, :, 0] - data["centre"][pairs, :, 1]).max(axis=-1)
  assert np.all(gap > data["half_size"][pairs].sum(axis=-1))


def test_held_out_combinations_are_disjoint_and_train_covers_every_value():
  train = set(video_shapes.split_combinations("train"))
  test = set(video_shapes.split_combinations("test"))
  assert not train & test
  assert len(train | test) == len(video_shapes.motion_combinations()) == 486
  # Two (shape, colour) combinations of every motion are held out.
  assert len(test) == 2 * len(video_shapes.MOTIONS)
  assert {c[2] for c in test} == set(video_shapes.MOTIONS)
  for position, values in enumerate((shapes.SHAPES, shapes.COLOURS, video_shapes.MOTIONS)):
    assert {c[position] for c in train} == set(values)

  for split, own in (("train", train), ("test", test)):
    data = video_shapes.make_video_split(split, 60, resolution=16, frames=4)
    for caption in data["caption"]:
      objects = video_shapes.parse_video_caption(str(caption)).objects
      combos = [(o.shape, o.colour, o.motion) for o in objects]
      # A test clip's (first) object is held out; train clips use train combinations only.
      assert combos[0] in own
      if split == "train":
        assert set(combos) <= train


def test_captions_parse_back_to_their_specs():
  for shape, colour, motion in video_shapes.motion_combinations():
    kind = video_shapes.motion_info(motion).kind
    for size in (None,) if kind in ("grow", "shrink") else shapes.SIZES:
      spec = video_shapes.VideoSpec((video_shapes.ObjectSpec(shape, colour, motion, size),))
      assert video_shapes.parse_video_caption(spec.caption) == spec
  spec = video_shapes.parse_video_caption(
    "a red circle moving up and left and a blue square moving up"
  )
  assert [o.motion for o in spec.objects] == ["moving up and left quickly", "moving up quickly"]
  assert spec.caption == "a red circle moving up and left and a blue square moving up"
  assert video_shapes.parse_video_caption("A  small red circle moving left quickly").kind == "move"
  assert video_shapes.parse_video_caption("a green square growing").objects[0].size is None
  assert video_shapes.parse_video_caption("a small blue triangle turning yellow").kind == "turn"
  np.testing.assert_array_equal(
    video_shapes.render_video("a green square growing", resolution=16, frames=8, seed=3),
    video_shapes.render_video(
      video_shapes.parse_video_caption("a green square growing"), resolution=16, frames=8, seed=3
    ),
  )


def test_caption_vocabulary_is_small_and_sorted():
  vocab = video_shapes.video_caption_vocabulary()
  assert vocab == sorted(vocab) and len(vocab) == len(set(vocab)) == 29
  assert {"moving", "quickly", "bouncing", "edge", "growing", "turning", "and"} <= set(vocab)


@pytest.mark.parametrize(
  "caption",
  [
    "a small red circle moving sideways quickly",  # unknown motion
    "a small red circle",  # no motion
    "a red circle moving left quickly",  # missing size
    "a small red square growing",  # size on a growing object
    "a small red square turning red",  # turning into its own colour
    "a small purple square moving up slowly",  # unknown colour
    "a red circle moving left and a red square moving up",  # two objects, one colour
    "a red circle moving left quickly and a blue square moving up",  # speed in a pair
    "a red circle moving left and a blue square growing",  # a pair that does not move
    "a red circle moving left and a blue square moving up and a green circle moving down",
  ],
)
def test_unknown_captions_raise_a_named_error(caption):
  with pytest.raises(video_shapes.VideoCaptionError):
    video_shapes.parse_video_caption(caption)


def test_bad_arguments_raise_named_errors():
  with pytest.raises(video_shapes.VideoSpecError, match="split"):
    video_shapes.make_video_split("validation", 4)
  with pytest.raises(video_shapes.VideoSpecError, match="frames"):
    video_shapes.make_video_split("train", 4, frames=3)
  with pytest.raises(video_shapes.VideoSpecError, match="resolution"):
    video_shapes.make_video_split("train", 4, resolution=4)
  with pytest.raises(video_shapes.VideoSpecError, match="num_videos"):
    video_shapes.make_video_split("train", 0)
  with pytest.raises(video_shapes.VideoSpecError, match="size"):
    video_shapes.ObjectSpec("circle", "red", "moving left quickly")
  videos = np.zeros((2, 8, 16, 16, 3), np.uint8)
  caption = "a small red circle moving left quickly"
  with pytest.raises(video_judge.VideoJudgeInputError, match="one video per caption"):
    video_judge.judge_videos(videos, [caption])
  with pytest.raises(video_judge.VideoJudgeInputError, match="value_range"):
    video_judge.judge_videos(videos.astype(np.float32), [caption] * 2)
  with pytest.raises(video_judge.VideoJudgeInputError, match=r"\[N, T, S, S, 3\]"):
    video_judge.judge_videos(videos[:, 0], [caption] * 2)
  with pytest.raises(video_shapes.VideoCaptionError):
    video_judge.judge_videos(videos, ["a cat", caption])


# The motion judge.


def test_judge_scores_ground_truth_at_one_and_breaks_static_reversed_and_shuffled(every_kind):
  specs, data = every_kind
  videos = data["video"]
  captions = [s.caption for s in specs]
  truth = video_judge.judge_videos(videos, captions)
  assert truth["accuracy"] == {name: 1.0 for name in video_judge.COLUMNS}
  assert set(truth["by_kind"]) == {*video_shapes.MOTION_KINDS, "two objects"}
  assert truth["jitter"] < 0.01

  # Floats in [-1, 1] score as the uint8 videos they came from.
  scaled = video_judge.judge_videos(videos[:6] / 127.5 - 1, captions[:6], value_range=(-1, 1))
  assert scaled["accuracy"] == {name: 1.0 for name in video_judge.COLUMNS}

  # Nothing moves: every direction fails; only motions in place keep the speed right.
  static = video_judge.judge_videos(np.repeat(videos[:, :1], 16, axis=1), captions)
  assert not static["per_video"]["direction"].any()
  in_place = np.isin(static["per_video"]["kind"], ["grow", "shrink", "turn"])
  np.testing.assert_array_equal(static["per_video"]["speed"], in_place)
  assert static["accuracy"]["frame_shape"] == 1.0 and static["jitter"] == 0.0

  # Backwards in time: only bounces (symmetric in time) keep their direction.
  reverse = video_judge.judge_videos(videos[:, ::-1], captions)
  np.testing.assert_array_equal(
    reverse["per_video"]["direction"], reverse["per_video"]["kind"] == "bounce"
  )
  assert reverse["accuracy"]["speed"] == 1.0

  # Captions of other clips: low on everything the caption decides.
  order = np.roll(np.arange(len(captions)), 5)
  shuffled = video_judge.judge_videos(videos, [captions[i] for i in order])
  for name in ("direction", "frame_shape", "frame_colour"):
    assert shuffled["accuracy"][name] < 0.3, (name, shuffled["accuracy"])


def test_judge_survives_blur_and_noise_and_finds_no_motion_in_noise(every_kind):
  specs, data = every_kind
  captions = [s.caption for s in specs]
  rng = np.random.default_rng(0)
  videos = ndimage.gaussian_filter(data["video"].astype(np.float32), (0, 0, 0.8, 0.8, 0))
  videos = np.clip(videos + rng.normal(0, 20, videos.shape), 0, 255).astype(np.uint8)
  blurred = video_judge.judge_videos(videos, captions)["accuracy"]
  assert blurred["direction"] == blurred["speed"] == blurred["frame_colour"] == 1.0
  assert blurred["frame_shape"] >= 0.9 and blurred["consistent"] >= 0.8
  noise = rng.integers(0, 256, data["video"].shape, dtype=np.uint8)
  assert video_judge.judge_videos(noise, captions)["accuracy"]["direction"] == 0.0


def test_judge_reads_speed_direction_and_size_off_the_video_not_the_ground_truth():
  video = video_shapes.render_video("a large red square moving left quickly", seed=2)[None]
  verdict = {
    caption: video_judge.judge_videos(video, [caption])["per_video"]
    for caption in (
      "a large red square moving left quickly",
      "a large red square moving left slowly",
      "a large red square moving right quickly",
      "a large red square moving up and left quickly",
      "a small red square moving left quickly",
      "a large blue circle moving left quickly",
      "a large red square bouncing off the left edge",
    )
  }
  right = verdict["a large red square moving left quickly"]
  assert right["direction"][0] and right["speed"][0] and right["frame_size"][0] == 1.0
  slow = verdict["a large red square moving left slowly"]
  assert slow["direction"][0] and not slow["speed"][0]
  assert not verdict["a large red square moving right quickly"]["direction"][0]
  assert not verdict["a large red square moving up and left quickly"]["direction"][0]
  assert verdict["a small red square moving left quickly"]["frame_size"][0] == 0.0
  wrong = verdict["a large blue circle moving left quickly"]
  assert wrong["frame_shape"][0] == 0.0 and wrong["frame_colour"][0] == 0.0
  assert wrong["consistent"][0]  # Still the same shape in every frame.
  assert not verdict["a large red square bouncing off the left edge"]["direction"][0]


def test_judge_tracks_two_objects_separately(every_kind):
  specs, data = every_kind
  pairs = np.flatnonzero(data["num_objects"] == 2)
  result = video_judge.judge_videos(data["video"][pairs], [specs[i].caption for i in pairs])
  tracks = result["tracks"]
  assert tracks["found"].all()
  for row, i in enumerate(pairs):
    for slot, obj in enumerate(specs[i].objects):
      # The triangle's centroid sits a third of its half size below its box centre.
      drop = data["half_size"][i, :, slot] / 3 if obj.shape == "triangle" else 0.0
      expected = data["centre"][i, :, slot] + np.stack([np.zeros(16), drop + np.zeros(16)], -1)
      np.testing.assert_allclose(tracks["centroid"][row, :, slot], expected, atol=0.01)
      assert np.all(tracks["colour"][row, :, slot] == shapes.COLOURS.index(obj.colour))
  # Swapping the two objects' motions breaks the direction of a clip.
  swapped = []
  for i in pairs:
    a, b = specs[i].objects
    swapped.append(
      video_shapes.VideoSpec(
        (
          video_shapes.ObjectSpec(a.shape, a.colour, b.motion, a.size),
          video_shapes.ObjectSpec(b.shape, b.colour, a.motion, b.size),
        )
      )
    )
  differ = [specs[i].objects[0].motion != specs[i].objects[1].motion for i in pairs]
  verdict = video_judge.judge_videos(data["video"][pairs], swapped)["per_video"]["direction"]
  np.testing.assert_array_equal(verdict, ~np.asarray(differ))


def test_judge_on_the_16px_test_split_is_near_perfect():
  data = video_shapes.make_video_split("test", 40, resolution=16)
  accuracy = video_judge.judge_videos(data["video"], data["caption"])["accuracy"]
  assert accuracy["direction"] == accuracy["speed"] == accuracy["frame_colour"] == 1.0
  assert accuracy["frame_shape"] >= 0.98 and accuracy["consistent"] >= 0.9


# TFDS builder.

_TINY = dict(
  name="tiny16", description="Test size.", resolution=16, frames=6, num_train=10, num_test=4
)


def test_tfds_builder_prepares_array_record_and_data_source_reads_it_back(tmp_path):
  config = captioned_videos.CaptionedVideosConfig(**_TINY)
  builder = tfds.builder("captioned_videos", config=config, data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert builder.info.file_format.value == "array_record"
  assert builder.info.features["video"].shape == (6, 16, 16, 3)
  assert builder.info.metadata["motions"] == list(video_shapes.MOTIONS)
  for split in ("train", "test"):
    count = _TINY[f"num_{split}"]
    source = tfds.data_source(
      f"captioned_videos/{_TINY['name']}", split=split, data_dir=str(tmp_path)
    )
    examples = [source[i] for i in range(len(source))]
    expected = video_shapes.make_video_split(split, count, resolution=16, frames=6)
    assert len(examples) == count
    assert [e["caption"].decode() for e in examples] == expected["caption"].tolist()
    for key in set(expected) - {"caption"}:
      np.testing.assert_array_equal(np.stack([e[key] for e in examples]), expected[key])


def test_tfds_registered_configs(tmp_path):
  builder = tfds.builder("captioned_videos", data_dir=str(tmp_path))
  assert builder.builder_config.name == "32px"
  assert builder.info.features["video"].shape == (16, 32, 32, 3)
  assert builder.info.features["centre"].shape == (16, 2, 2)
  small = tfds.builder("captioned_videos/16px", data_dir=str(tmp_path))
  assert small.info.features["video"].shape == (16, 16, 16, 3)


def test_every_pair_of_directions_places_two_objects():
  directions = list(video_shapes.DIRECTIONS)
  specs = [
    video_shapes.parse_video_caption(f"a red circle moving {a} and a blue square moving {b}")
    for a, b in itertools.product(directions, directions)
  ]
  data = video_shapes.render_videos(specs, 16, 16, np.random.default_rng(0))
  gap = np.abs(data["centre"][:, :, 0] - data["centre"][:, :, 1]).max(axis=-1)
  assert np.all(gap > data["half_size"].sum(axis=-1))
