"""Config files and key=value overrides."""

import os

import pytest

from jaxgen.configuration import ConfigError, apply_overrides, load_config_file

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
QUICKSTART = os.path.join(CONFIGS, "text_to_image_shapes.py")


def test_load_and_override():
  config = load_config_file(QUICKSTART)
  new = apply_overrides(
    config,
    [
      "train.num_steps=7",
      "optim.learning_rate=2",
      "unet.block_out_channels=(8, 16, 16)",
      "sample.sampler=euler",
    ],
  )
  assert new.train.num_steps == 7
  assert new.optim.learning_rate == 2.0 and isinstance(new.optim.learning_rate, float)
  assert tuple(new.unet.block_out_channels) == (8, 16, 16)
  assert new.sample.sampler == "euler"
  assert config.train.num_steps != 7  # the original is untouched


@pytest.mark.parametrize(
  "override, match",
  [
    ("train.num_step=3", "not a config field"),
    ("nothere.x=3", "not a config field"),
    ("train.num_steps", "key=value"),
    ("train.num_steps=fast", "expected a int"),
  ],
)
def test_bad_overrides_are_named(override, match):
  with pytest.raises(ConfigError, match=match):
    apply_overrides(load_config_file(QUICKSTART), [override])


def test_missing_config_file():
  with pytest.raises(ConfigError, match="no such file"):
    load_config_file("configs/does_not_exist.py")
