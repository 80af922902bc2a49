"""Image grids: tiling, captions, value conversion."""

import numpy as np
import pytest

from jaxgen.data.images import to_uint8
from jaxgen.render.grid import make_grid, save_png


def test_to_uint8_maps_the_value_range():
  x = np.array([-1.0, 0.0, 1.0, 2.0], np.float32)
  np.testing.assert_array_equal(to_uint8(x), [0, 128, 255, 255])
  np.testing.assert_array_equal(to_uint8(x, (0.0, 2.0)), [0, 0, 128, 255])


def test_grid_places_each_tile_scaled_and_in_order():
  images = np.stack([np.full((4, 4, 3), 40 * i, np.uint8) for i in range(5)])
  grid = make_grid(images, ncols=3, scale=2, pad=1)
  assert grid.shape == (2 * (8 + 1) + 1, 3 * (8 + 1) + 1, 3)
  for i in range(5):
    r, c = divmod(i, 3)
    tile = grid[1 + r * 9 : 1 + r * 9 + 8, 1 + c * 9 : 1 + c * 9 + 8]
    assert (tile == 40 * i).all()


def test_captions_add_text_below_tiles(tmp_path):
  images = np.zeros((2, 8, 8, 3), np.uint8)
  plain = make_grid(images, scale=4)
  captioned = make_grid(images, ["a small red circle in the top left", "x"], scale=4)
  assert captioned.shape[0] > plain.shape[0]
  text_band = captioned[2 + 32 :, :]
  assert (text_band < 128).any()  # dark text on the white band
  path = save_png(str(tmp_path / "sub" / "g.png"), captioned)
  assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match="uint8"):
    make_grid(np.zeros((2, 4, 4, 3), np.float32))
  with pytest.raises(ValueError, match="one entry per image"):
    make_grid(np.zeros((2, 4, 4, 3), np.uint8), ["only one"])
