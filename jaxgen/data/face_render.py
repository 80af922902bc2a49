"""Procedurally drawn talking faces and the analytic judge that reads their mouths.

A face is drawn from a `FaceIdentity` (head shape, skin, hair, eyes, lips,
background) and per-frame state: the mouth (opening, width, rounding, each in
[0, 1]), a blink in [0, 1] and a small head offset. Geometry is in fractions
of the image side, so one face draws at any size (48, 64, 96 pixels). The head
is centred as a face detector's crop would centre it: eyes above the middle,
nose tip and mouth in the lower half, the half Wav2Lip masks.

Every shape is anti-aliased analytically: its pixel coverage is
clip(0.5 - d, 0, 1) for the signed distance d (in pixels) to its contour,
linearised from an implicit superellipse, so a sub-pixel change of the mouth
changes pixel values continuously (the judge and the models see a smooth
signal) while a whole clip renders as a few array operations per shape.

The mouth (see `mouth_extent`):
  width     the outer lip contour's full width, 0.20 - 0.38 of the side;
  opening   the height of the dark mouth interior, 0 - 0.13 of the side
            (0: closed lips meeting in a seam, a thin line);
  rounding  narrows the mouth by up to 30 %, thickens (protrudes) the lips
            and makes the contour oval instead of pointed at the corners.

The judge (`mouth_measurements`) reads opening and width off pixels only. In
the lower middle of the face every pixel is a mix of at most three colours:
skin, lips and the mouth interior (`_INTERIOR`, the same near-black on every
face). Per frame it takes the skin colour from the cheeks (the median of
skin-coloured pixels) and the lip colour from the purest lip-coloured pixel
(the one farthest from the line through skin and interior), and unmixes every
pixel into the three by least squares. The opening is the tallest column of
interior weight, the width the widest row of lip and interior weight; both
count anti-aliased (or blurred) edges by their coverage, so they are
sub-pixel accurate and follow the head as it moves. The palette keeps this
unambiguous: skin and everything drawn as darkened skin (shading, neck,
nostrils) keep G/R >= 0.68, backgrounds and shirts are not reddish, lips have
G/R <= 0.55, so only the mouth has green well below red.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MOUTH_CHANNELS: tuple[str, ...] = ("opening", "width", "rounding")
MIN_SIZE = 24

# Mouth geometry, in fractions of the image side.
MAX_OPENING = 0.13
_WIDTH_RANGE = (0.20, 0.38)  # Full outer width at rounding 0.
_ROUNDING_NARROWING = 0.3
_UPPER_LIP, _LOWER_LIP, _LIP_PROTRUSION = 0.026, 0.034, 0.018
_INTERIOR_WIDTH = 0.8  # Of the outer width.

# Colours (RGB, 0-255).
_INTERIOR = np.asarray((24, 7, 11), np.float32)
_SCLERA = np.asarray((242, 242, 236), np.float32)
_LASHES = np.asarray((40, 28, 26), np.float32)
_SKIN_TONES = np.asarray(
  [(255, 226, 200), (240, 196, 166), (222, 172, 138), (196, 142, 106), (160, 112, 82),
   (124, 86, 62)], np.float32,
)  # fmt: skip
_HAIR_COLOURS = np.asarray(
  [(28, 24, 24), (70, 46, 30), (112, 76, 46), (150, 84, 48), (214, 184, 122), (165, 162, 158)],
  np.float32,
)
_IRIS_COLOURS = np.asarray([(92, 60, 36), (70, 110, 160), (78, 118, 80), (42, 32, 26)], np.float32)
_BACKGROUNDS = np.asarray(
  [(180, 200, 228), (190, 216, 190), (212, 212, 212), (226, 220, 180), (168, 192, 204),
   (204, 194, 224)], np.float32,
)  # fmt: skip
_SHIRTS = np.asarray(
  [(60, 92, 150), (40, 112, 92), (200, 202, 204), (92, 92, 104), (150, 172, 204), (230, 204, 124)],
  np.float32,
)
_MIN_SKIN_GREEN_RATIO = 0.68
_LIP_TINT = np.asarray((0.8, 0.44, 0.5), np.float32)  # Lips = skin x tint (G/R <= 0.55).
_MIN_LIP_LUMA = 64.0  # Lips, even their seam, stay well apart from the interior.

# The judge's thresholds and search windows (fractions of the side).
_LIP_RATIO = (0.56, 0.66)  # G/R at and above which a pixel is fully / not lip-coloured.
_SKIN_RATIO = _MIN_SKIN_GREEN_RATIO - 0.005  # Skin samples have at least this G/R.
_SKIN_RATIO_MARGIN = 0.02  # A pixel this far below its skin's G/R is mouth.
_CHEEK_BOTTOM, _CHEEK_HALF_WIDTH = 0.75, 0.2  # Mostly face at any head shape and offset.
_SKIN_MIN_LUMA = 60.0  # Skin samples are at least this bright (skin, neck, nostrils are).
_MOUTH_ROWS = (0.52, 0.95)
_OPENING_COLUMNS = (0.3, 0.7)
_WIDTH_COLUMNS = (0.2, 0.8)
_LUMA = np.asarray((0.299, 0.587, 0.114), np.float32)


class FaceInputError(ValueError):
  """A mouth, blink, offset, size or frame array the face renderer or judge cannot take."""


@dataclasses.dataclass(frozen=True)
class FaceIdentity:
  """What makes one face: shape, colours and feature placement (fractions of the side).

  head_width, head_height: half-axes of the head; jaw: exponent of the lower
  head's contour (2 round, larger squarer); hairline: height of the hairline
  at the middle of the forehead; hair_length: where the hair beside the head
  ends; eye_spacing: half the distance between the eyes; eye_size: half-width
  of an eye; mouth_drop: the lip line below the head centre. Colours are RGB
  triples in [0, 255].
  """

  head_width: float
  head_height: float
  jaw: float
  skin: tuple[float, float, float]
  hair: tuple[float, float, float]
  hairline: float
  hair_length: float
  eye_spacing: float
  eye_size: float
  iris: tuple[float, float, float]
  lips: tuple[float, float, float]
  mouth_drop: float
  background: tuple[float, float, float]
  shirt: tuple[float, float, float]


def _jitter(rng: np.random.Generator, palette: np.ndarray, amount: float) -> np.ndarray:
  colour = palette[rng.integers(len(palette))] + rng.uniform(-amount, amount, 3)
  return np.clip(colour, 0, 255)


def random_identity(rng: np.random.Generator) -> FaceIdentity:
  """A random face; every colour keeps the judge's palette rules (module docstring)."""
  tone = rng.uniform(0, len(_SKIN_TONES) - 1)
  low = int(tone)
  high = min(low + 1, len(_SKIN_TONES) - 1)
  skin = _SKIN_TONES[low] + (tone - low) * (_SKIN_TONES[high] - _SKIN_TONES[low])
  skin = np.clip(skin + rng.uniform(-6, 6, 3), 0, 255)
  skin[1] = max(skin[1], _MIN_SKIN_GREEN_RATIO * skin[0] + 2)
  hue = np.asarray([1.0, *rng.uniform(0.97, 1.03, 2)], np.float32)
  lips = skin * _LIP_TINT * hue * rng.uniform(0.9, 1.05)
  lips = np.clip(lips * max(1.0, _MIN_LIP_LUMA / float(lips @ _LUMA)), 0, 255)

  def colour(values: np.ndarray) -> tuple[float, float, float]:
    return tuple(round(float(v), 2) for v in values)

  return FaceIdentity(
    head_width=rng.uniform(0.27, 0.32),
    head_height=rng.uniform(0.37, 0.41),
    jaw=rng.uniform(2.0, 3.2),
    skin=colour(skin),
    hair=colour(_jitter(rng, _HAIR_COLOURS, 10)),
    hairline=rng.uniform(0.17, 0.25),
    hair_length=rng.uniform(0.34, 0.48),
    eye_spacing=rng.uniform(0.10, 0.13),
    eye_size=rng.uniform(0.042, 0.055),
    iris=colour(_jitter(rng, _IRIS_COLOURS, 10)),
    lips=colour(lips),
    mouth_drop=rng.uniform(0.17, 0.19),
    background=colour(_jitter(rng, _BACKGROUNDS, 8)),
    shirt=colour(_jitter(rng, _SHIRTS, 10)),
  )


def mouth_extent(mouth: np.ndarray) -> np.ndarray:
  """Drawn (interior height, outer width) of mouths (..., 3), fractions of the side: (..., 2).

  What the pixels carry and `mouth_measurements` reads back: the height
  follows the opening alone, the width the width narrowed by rounding.
  """
  mouth = np.asarray(mouth, np.float32)
  opening, width, rounding = mouth[..., 0], mouth[..., 1], mouth[..., 2]
  outer = _WIDTH_RANGE[0] + (_WIDTH_RANGE[1] - _WIDTH_RANGE[0]) * width
  outer = outer * (1.0 - _ROUNDING_NARROWING * rounding)
  return np.stack([MAX_OPENING * opening, outer], axis=-1)


def _check_state(mouth, blinks, offsets, size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  mouth = np.asarray(mouth, np.float32)
  if mouth.ndim != 2 or mouth.shape[1] != 3:
    raise FaceInputError(
      f"mouth: expected (frames, 3) opening/width/rounding, found shape {mouth.shape}"
    )
  if not np.all((mouth >= 0) & (mouth <= 1)):
    raise FaceInputError(
      f"mouth: expected values in [0, 1], found [{mouth.min():.3g}, {mouth.max():.3g}]"
    )
  frames = len(mouth)
  blinks = np.asarray(blinks, np.float32)
  if blinks.shape != (frames,) or not np.all((blinks >= 0) & (blinks <= 1)):
    raise FaceInputError(
      f"blinks: expected ({frames},) values in [0, 1], found shape {blinks.shape}"
      + (f", range [{blinks.min():.3g}, {blinks.max():.3g}]" if blinks.size else "")
    )
  offsets = np.asarray(offsets, np.float32)
  if offsets.shape != (frames, 2) or not np.all(np.abs(offsets) <= 0.1):
    raise FaceInputError(
      f"offsets: expected ({frames}, 2) head shifts within 0.1 of the side, found shape "
      f"{offsets.shape}" + (f", largest {np.abs(offsets).max():.3g}" if offsets.size else "")
    )
  if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
    raise FaceInputError(f"size: expected an integer >= {MIN_SIZE} pixels, found {size!r}")
  return mouth, blinks, offsets


def _power(u, p):
  """u**p and its derivative's factor p*u**(p-1); squares skip the slow pow."""
  if isinstance(p, (int, float)) and p == 2:
    return u * u, 2.0 * u
  up = u**p
  return up, p * up / np.maximum(u, 1e-6)


def _coverage(dx, dy, a, b, px, py, size) -> np.ndarray:
  """Anti-aliased pixel coverage of the superellipse |dx/a|^px + |dy/b|^py <= 1.

  The signed distance is the implicit function's value over its gradient's
  length (first order, exact on the contour), bounded below by the distance
  to the bounding box, which keeps thin shapes from smearing along their
  long axis; a shape thinner than a pixel covers at most its thickness.
  """
  u, v = np.abs(dx) / a, np.abs(dy) / b
  (ux, gx), (vy, gy) = _power(u, px), _power(v, py)
  gx, gy = gx / a, gy / b
  distance = (ux + vy - 1.0) / np.maximum(np.sqrt(gx * gx + gy * gy), 1e-6)
  distance = np.maximum(distance, np.maximum(np.abs(dx) - a, np.abs(dy) - b))
  thickness = 2.0 * size * np.minimum(a, b)
  return np.clip(0.5 - distance * size, 0.0, np.minimum(thickness, 1.0))


class _Canvas:
  """Frames being painted: the head's centre per frame and pixel windows around shapes."""

  def __init__(self, background, offsets: np.ndarray, size: int):
    self.size = size
    self.grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    self.centre_x = 0.5 + offsets[:, 0]
    self.centre_y = 0.48 + offsets[:, 1]
    gradient = (1.05 - 0.12 * self.grid)[:, None, None] * np.asarray(background, np.float32)
    self.pixels = np.repeat(np.broadcast_to(gradient, (size, size, 3))[None], len(offsets), 0)

  def _span(self, centres: np.ndarray, reach: float) -> slice:
    low = int(np.floor((centres.min() - reach) * self.size)) - 1
    high = int(np.ceil((centres.max() + reach) * self.size)) + 1
    return slice(min(max(low, 0), self.size), min(max(high, 0), self.size))

  def window(self, x, y, reach_x: float, reach_y: float):
    """Pixels within reach of a shape centred (x, y) from the head's centre (scalars or (T,)).

    Returns (rows, cols, dx, dy): dx (T, 1, cols) and dy (T, rows, 1), the
    pixel centres' offsets from the shape's centre.
    """
    x = self.centre_x + np.asarray(x, np.float32)
    y = self.centre_y + np.asarray(y, np.float32)
    rows, cols = self._span(y, reach_y), self._span(x, reach_x)
    dx = self.grid[None, None, cols] - x[:, None, None]
    dy = self.grid[None, rows, None] - y[:, None, None]
    return rows, cols, dx, dy

  def paint(self, rows: slice, cols: slice, alpha: np.ndarray, colour) -> None:
    view = self.pixels[:, rows, cols]
    view += alpha[..., None] * (np.asarray(colour, np.float32) - view)

  def ellipse(self, x, y, a, b, colour, *, power=2, opacity=1.0) -> None:
    rows, cols, dx, dy = self.window(x, y, a, b)
    self.paint(rows, cols, opacity * _coverage(dx, dy, a, b, power, 2, self.size), colour)


def _draw_head(canvas: _Canvas, f: FaceIdentity, opening: np.ndarray) -> None:
  """Shoulders, neck, hair, ears and the head (a jaw that drops a little with the mouth)."""
  skin = np.asarray(f.skin, np.float32)
  canvas.ellipse(0.0, 0.72, 0.42, 0.3, f.shirt)
  canvas.ellipse(0.0, 0.42, 0.1, 0.2, skin * 0.8, power=4)
  rows, cols, dx, dy = canvas.window(0.0, -0.03, f.head_width + 0.04, f.head_height + 0.05)
  behind = _coverage(dx, dy, f.head_width + 0.035, f.head_height + 0.045, 2, 2, canvas.size)
  ends = np.clip(0.5 + (f.hair_length - 0.45 - dy) * canvas.size, 0.0, 1.0)
  canvas.paint(rows, cols, behind * ends, f.hair)
  for side in (-1, 1):
    canvas.ellipse(side * f.head_width, 0.02, 0.035, 0.065, skin * 0.9)
  rows, cols, dx, dy = canvas.window(0.0, 0.0, f.head_width, f.head_height + MAX_OPENING)
  above = dy < 0
  height = np.where(above, f.head_height, f.head_height + 0.3 * opening[:, None, None])
  head = _coverage(dx, dy, f.head_width, height, np.where(above, 2.0, f.jaw), 2, canvas.size)
  across = np.minimum((dx / f.head_width) ** 2, 1.0)
  face = skin * (1.0 - 0.1 * across)[..., None]  # Shaded by scaling: the skin keeps its G/R.
  # Hair on the head, above a hairline that dips at the temples.
  hair = np.clip(0.5 + (f.hairline - 0.48 + 0.07 * across - dy) * canvas.size, 0, 1)[..., None]
  canvas.paint(rows, cols, head, face + hair * (np.asarray(f.hair, np.float32) - face))


def _draw_eyes_and_nose(canvas: _Canvas, f: FaceIdentity, blinks: np.ndarray) -> None:
  skin = np.asarray(f.skin, np.float32)
  height = np.maximum(0.58 * f.eye_size * (1.0 - blinks), 1e-4)[:, None, None]
  for side in (-1, 1):
    x = side * f.eye_spacing
    canvas.ellipse(x, -0.13, 1.2 * f.eye_size, 0.011, np.asarray(f.hair, np.float32) * 0.8)
    rows, cols, dx, dy = canvas.window(x, -0.06, f.eye_size, f.eye_size)
    sclera = _coverage(dx, dy, f.eye_size, height, 2, 2, canvas.size)
    canvas.paint(rows, cols, sclera, _SCLERA)
    iris = 0.6 * f.eye_size
    canvas.paint(rows, cols, sclera * _coverage(dx, dy, iris, iris, 2, 2, canvas.size), f.iris)
    # The upper lid's lash line follows the lid down as the eye closes.
    lid = _coverage(dx, dy + 0.9 * height, 1.05 * f.eye_size, 0.009, 2, 2, canvas.size)
    canvas.paint(rows, cols, lid, _LASHES)
  canvas.ellipse(0.0, 0.095, 0.045, 0.028, skin * 0.85, opacity=0.6)
  for side in (-1, 1):  # Nostrils: darkened skin, never as dark as the mouth.
    canvas.ellipse(side * 0.025, 0.1, 0.014, 0.009, skin * 0.8)


def _draw_mouth(canvas: _Canvas, f: FaceIdentity, mouth: np.ndarray) -> None:
  """Lips around the dark interior, centred between the lips; see `mouth_extent`."""
  extent = mouth_extent(mouth)
  opening, half_width = extent[:, 0, None, None], 0.5 * extent[:, 1, None, None]
  rounding = mouth[:, 2, None, None]
  reach_y = 0.5 * MAX_OPENING + _LOWER_LIP + _LIP_PROTRUSION
  rows, cols, dx, dy = canvas.window(
    0.0, f.mouth_drop + 0.5 * extent[:, 0], 0.5 * _WIDTH_RANGE[1], reach_y
  )
  above = dy < 0
  lip = np.where(above, _UPPER_LIP, _LOWER_LIP) + _LIP_PROTRUSION * rounding
  corner = 1.5 + 0.8 * rounding  # Pointed corners when spread, oval when rounded.
  lips = _coverage(dx, dy, half_width, 0.5 * opening + lip, corner, 2, canvas.size)
  canvas.paint(rows, cols, lips, f.lips)
  seam = _coverage(dx, dy, 0.85 * half_width, 0.006, 2, 2, canvas.size)
  canvas.paint(rows, cols, seam, np.asarray(f.lips, np.float32) * 0.8)
  interior = _coverage(
    dx, dy, _INTERIOR_WIDTH * half_width, np.maximum(0.5 * opening, 1e-4), 1.8 + 0.4 * rounding,
    2, canvas.size,
  )  # fmt: skip
  canvas.paint(rows, cols, interior, _INTERIOR)


def draw_video(
  identity: FaceIdentity, mouth: np.ndarray, blinks: np.ndarray, offsets: np.ndarray, size: int = 48
) -> np.ndarray:
  """Frames of one face: uint8 (T, size, size, 3).

  mouth (T, 3) opening/width/rounding in [0, 1]; blinks (T,) in [0, 1]
  (1 = eyes shut); offsets (T, 2) head shift (x, y) in fractions of the side.
  """
  mouth, blinks, offsets = _check_state(mouth, blinks, offsets, size)
  canvas = _Canvas(identity.background, offsets, size)
  _draw_head(canvas, identity, mouth_extent(mouth)[:, 0])
  _draw_eyes_and_nose(canvas, identity, blinks)
  _draw_mouth(canvas, identity, mouth)
  return np.round(np.clip(canvas.pixels, 0, 255)).astype(np.uint8)


def draw_face(
  identity: FaceIdentity,
  mouth,
  *,
  blink: float = 0.0,
  head_offset: tuple[float, float] = (0.0, 0.0),
  size: int = 48,
) -> np.ndarray:
  """One frame: uint8 (size, size, 3); mouth = (opening, width, rounding) in [0, 1]."""
  return draw_video(
    identity, np.asarray(mouth, np.float32)[None], np.asarray([blink]), np.asarray([head_offset]),
    size,
  )[0]  # fmt: skip


# --- The analytic judge -----------------------------------------------------------------------


def _check_frames(frames) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim < 3 or frames.shape[-1] != 3:
    raise FaceInputError(
      f"frames: expected uint8 (..., H, W, 3), found {frames.dtype} {frames.shape}"
    )
  if frames.shape[-3] < MIN_SIZE or frames.shape[-3] != frames.shape[-2]:
    raise FaceInputError(
      f"frames: expected square faces of at least {MIN_SIZE} pixels, found "
      f"{frames.shape[-3]}x{frames.shape[-2]}"
    )
  return frames


def _window(size: int, bounds: tuple[float, float]) -> slice:
  return slice(int(np.floor(bounds[0] * size)), int(np.ceil(bounds[1] * size)))


def _masked_quantile(values: np.ndarray, mask: np.ndarray, quantile: float) -> np.ndarray:
  """A quantile over the last axis of the entries where `mask` holds: (F, P) -> (F,), nan if none."""
  count = mask.sum(axis=-1, keepdims=True)
  ordered = np.sort(np.where(mask, values, np.inf), axis=-1)
  index = np.floor(quantile * np.maximum(count - 1, 0)).astype(np.int64)
  value = np.take_along_axis(ordered, index, axis=-1)[..., 0]
  return np.where(count[..., 0] > 0, value, np.nan)


def _endmembers(
  pixels: np.ndarray, ratio: np.ndarray, cheeks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Per frame the colours of bare skin and of pure lips, from pixels (F, P, 3).

  Skin: the median of the skin-coloured pixels (G/R above the lips') where
  the face surely is, around and above the mouth (`cheeks`, (P,) bool).
  Lips: every pixel is a mix of skin, lip and interior, so the purest lip
  pixel is the lip-coloured one farthest from the line through skin and the
  interior colour (mixing with either brings it closer).
  """
  skin_like = (ratio >= _SKIN_RATIO) & (pixels @ _LUMA >= _SKIN_MIN_LUMA) & cheeks
  skin = np.stack([_masked_quantile(pixels[..., c], skin_like, 0.5) for c in range(3)], axis=-1)
  skin = np.where(np.isnan(skin), pixels.mean(axis=-2), skin)  # No skin seen: a guess.
  axis = _INTERIOR - skin
  axis /= np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-6)
  offset = pixels - skin[:, None]
  along = np.einsum("fpc,fc->fp", offset, axis)
  distance = np.linalg.norm(offset - along[..., None] * axis[:, None], axis=-1)
  distance = np.where(ratio <= _LIP_RATIO[0], distance, 0.0)
  purest = distance >= 0.95 * distance.max(axis=-1, keepdims=True)
  lips = (pixels * purest[..., None]).sum(axis=-2) / purest.sum(axis=-1)[..., None]
  return skin, lips


def _unmix(pixels: np.ndarray, skin: np.ndarray, lips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Each pixel's weights of lips and interior when unmixed into skin, lips and interior."""
  to_lips, to_interior = lips - skin, _INTERIOR - skin
  offset = pixels - skin[:, None]
  aa = (to_lips * to_lips).sum(-1)[:, None]
  ab = (to_lips * to_interior).sum(-1)[:, None]
  bb = (to_interior * to_interior).sum(-1)[:, None]
  va = np.einsum("fpc,fc->fp", offset, to_lips)
  vb = np.einsum("fpc,fc->fp", offset, to_interior)
  determinant = aa * bb - ab * ab
  separable = determinant > 1e-3 * aa * bb  # Else no lips were seen: all darkening is interior.
  determinant = np.maximum(determinant, 1e-6)
  lip = np.where(separable, (bb * va - ab * vb) / determinant, 0.0)
  interior = np.where(separable, (aa * vb - ab * va) / determinant, vb / np.maximum(bb, 1e-6))
  return lip, interior


def mouth_measurements(frames) -> dict[str, np.ndarray]:
  """Mouth opening and width read off face pixels: {"opening", "width"}, each (...,).

  frames: uint8 (..., H, W, 3) faces (H == W). Opening is the height of the
  dark interior at its tallest column, width the extent of lip colour (or
  interior) at its widest row, both in fractions of the side (comparable
  with `mouth_extent`). Each pixel of the mouth region is unmixed (least
  squares) into the frame's skin, lip and the interior colour, so
  anti-aliased or blurred edges count by their coverage; only pixels coloured
  like lips or the interior (G/R below skin's) count at all, which keeps
  nostrils, shading, chin and background out.
  """
  frames = _check_frames(frames)
  size = frames.shape[-3]
  leading = frames.shape[:-3]
  region = frames[..., _window(size, _MOUTH_ROWS), _window(size, _WIDTH_COLUMNS), :]
  rows, cols = region.shape[-3:-1]
  pixels = region.reshape(-1, rows * cols, 3).astype(np.float32)
  ratio = pixels[..., 1] / np.maximum(pixels[..., 0], 1.0)
  row_y = (np.arange(rows) + _window(size, _MOUTH_ROWS).start + 0.5) / size
  col_x = (np.arange(cols) + _window(size, _WIDTH_COLUMNS).start + 0.5) / size
  cheeks = (row_y[:, None] <= _CHEEK_BOTTOM) & (np.abs(col_x - 0.5) <= _CHEEK_HALF_WIDTH)
  skin, lips = _endmembers(pixels, ratio, cheeks.ravel())
  lip, interior = _unmix(pixels, skin, lips)
  # Interior counts where the colour is lip-like (mixes of lips and interior); the
  # mouth's width wherever G/R is below the skin's (shading, neck, nostrils and
  # backgrounds are not).
  lip_like = np.clip((_LIP_RATIO[1] - ratio) / (_LIP_RATIO[1] - _LIP_RATIO[0]), 0, 1)
  skin_ratio = skin[:, 1:2] / np.maximum(skin[:, 0:1], 1.0)
  not_skin = np.clip((skin_ratio - ratio) / _SKIN_RATIO_MARGIN, 0, 1)
  interior = (np.clip(interior, 0, 1) * lip_like).reshape(-1, rows, cols)
  mouth = (np.clip(lip + interior.reshape(lip.shape), 0, 1) * not_skin).reshape(-1, rows, cols)
  columns = _window(size, _OPENING_COLUMNS)
  start = columns.start - _window(size, _WIDTH_COLUMNS).start
  central = interior[..., start : start + columns.stop - columns.start]
  # The widest row is the mouth's middle, where lip colour is widest; rows further off
  # may hold other colours (the shirt) that are not skin either.
  row_widths = mouth.sum(axis=-1)
  middle = lip_like.reshape(-1, rows, cols).sum(axis=-1).argmax(axis=-1)[:, None]
  near = np.abs(np.arange(rows) - middle) <= 1
  return {
    "opening": (central.sum(axis=-2).max(axis=-1) / size).reshape(leading),
    "width": (np.where(near, row_widths, 0.0).max(axis=-1) / size).reshape(leading),
  }


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Pearson correlation along the last axis; 0 where either side is constant."""
  constant = (np.ptp(a, axis=-1) == 0) | (np.ptp(b, axis=-1) == 0)
  a = a.astype(np.float64) - a.mean(axis=-1, keepdims=True)
  b = b.astype(np.float64) - b.mean(axis=-1, keepdims=True)
  scale = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
  return np.where(constant, 0.0, (a * b).sum(axis=-1) / np.where(constant, 1.0, scale))


def mouth_correlation(pred_frames, truth) -> float:
  """Correlation of the mouth opening in `pred_frames` with the ground truth over time.

  pred_frames: uint8 (..., T, H, W, 3) clips. truth: their mouth parameters
  (..., T, 3) (the opening column is used) or ground-truth frames of the
  same shape (their measured opening is used). The Pearson correlation over
  each clip's T frames, averaged over clips: it scores lip motion, not how
  open a face's mouth is on average. A clip whose opening never changes (a
  static face) scores 0.
  """
  measured = mouth_measurements(pred_frames)["opening"]
  if measured.ndim < 1 or measured.shape[-1] < 2:
    raise FaceInputError(
      f"pred_frames: expected clips (..., T, H, W, 3) with T >= 2, found shape "
      f"{np.shape(pred_frames)}"
    )
  truth = np.asarray(truth)
  if truth.shape == (*measured.shape, 3):
    reference = truth[..., 0]
  elif truth.shape == np.shape(pred_frames):
    reference = mouth_measurements(truth)["opening"]
  else:
    raise FaceInputError(
      f"truth: expected mouth parameters {(*measured.shape, 3)} or frames "
      f"{np.shape(pred_frames)}, found shape {truth.shape}"
    )
  return float(_pearson(measured, reference).mean())
