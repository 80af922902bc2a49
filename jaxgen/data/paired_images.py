"""Image-to-image records read from the released layouts of real data sets, and their pixels.

Readers return records (paths, keys, labels) and open no image; `load_image`,
`decode_pair`, `paired_arrays` and `unpaired_arrays` decode them. A layout
that is not what a reader expects (no folder, no split folder, no images,
files in A/ without a partner in B/) raises `PairedImageDataError` naming the
path and the layout it expected. A file that does not decode, or a pix2pix
image that is not two square halves side by side, is skipped while decoding:
counted, with a warning that names a few, never fatal and never silent.

Layouts (`manual_dir` is the folder the user points at; image files are
those the reference's `IMG_EXTENSIONS` accepts, found in nested folders too
and taken in sorted path order, as its `make_dataset`):

  pix2pix (`datasets/download_pix2pix_dataset.sh`: facades, maps, edges2shoes,
  edges2handbags, night2day; splits train, val, and test for facades):
    <split>/<name>.jpg    A | B side by side: A the left half, B the right half
  Every released image is exactly 2:1 (two 256×256 halves; maps two 600×600),
  so an image whose width is not twice its height is skipped with a warning:
  the reference would cut it at int(w / 2) and, for an odd width, silently
  hand B one column more than A. `direction` is the reference's --direction:
  'AtoB' makes A the source, 'BtoA' makes B the source (facades is photo |
  labels, so label→photo is BtoA).

  CycleGAN (`datasets/download_cyclegan_dataset.sh`: horse2zebra, monet2photo, …):
    trainA/  trainB/  testA/  testB/    unpaired images of domain A and domain B

  Sketchy, rendered (`rendered_256x256.7z`; `manual_dir` may be the folder that
  holds rendered_256x256/, rendered_256x256/ itself or its 256x256/):
    rendered_256x256/256x256/photo/<variant>/<category>/<photo id>.jpg
    rendered_256x256/256x256/sketch/<variant>/<category>/<photo id>-<n>.png
  `variant` is a tx_* folder (tx_000000000000, the default: the whole image
  scaled to 256×256; the others are the release's re-framed variants). Every
  sketch is paired with its photo (photos without a sketch are not records);
  the label is the category's index in the sorted category folders of the
  photo variant. The layout has no split file, so the split is deterministic
  by photo: a photo and all its sketches are 'test' when the first 8 hex
  digits of sha256(photo id) modulo 100 are below `test_percent` (10), else
  'train' — stable across machines and independent of the other files.

  Paired folder:
    <split>/A/<name>.<ext>   <split>/B/<name>.<ext>   (any split folder names)
  matched by the path below A/ or B/ without its extension.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
from PIL import Image

from jaxgen.data import image_text

# The reference's data/image_folder.py list: matched case-sensitively, as it does.
IMG_EXTENSIONS = (
  ".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".ppm", ".PPM", ".bmp", ".BMP",
  ".tif", ".TIF", ".tiff", ".TIFF",
)  # fmt: skip
DIRECTIONS = ("AtoB", "BtoA")
PIX2PIX_SPLITS = ("train", "val", "test")
CYCLEGAN_SPLITS = ("train", "test")
DOMAINS = ("A", "B")
SKETCHY_SPLITS = ("train", "test")
SKETCHY_VARIANT = "tx_000000000000"
SKETCHY_TEST_PERCENT = 10
HALVES = ("left", "right")
_EXAMPLES_IN_WARNING = 3
_LISTED = 20
_LOG = logging.getLogger(__name__)


class PairedImageDataError(image_text.ImageTextDataError):
  """A data folder that is not in the layout its reader expects."""


class SideBySideImageError(ValueError):
  """A pix2pix image that is not two square halves side by side (skipped when decoding)."""


@dataclasses.dataclass(frozen=True)
class ImageRecord:
  """One image file of an unpaired domain; `key` is its path below the domain folder."""

  path: str
  key: str


@dataclasses.dataclass(frozen=True)
class PairedImageRecord:
  """A source image and its target.

  A side-by-side pix2pix file is both paths, with `source_half` and
  `target_half` saying which half ('left' = A, 'right' = B) is which; the
  halves are None for whole files. `key` is unique within a split; `label`
  is the class (Sketchy's category), None elsewhere.
  """

  source_path: str
  target_path: str
  key: str
  source_half: str | None = None
  target_half: str | None = None
  label: int | None = None


class Records(image_text.ImageTextRecords):
  """A list of records plus `skipped` (reason -> keys) and `label_names` (label -> name)."""

  def __init__(self, records=(), skipped=None, label_names: Iterable[str] = ()):
    super().__init__(records, skipped)
    self.label_names = tuple(label_names)


# --- folders ----------------------------------------------------------------------------


def _listing(folder: str) -> list[str] | str:
  return sorted(os.listdir(folder))[:_LISTED] if os.path.isdir(folder) else "no folder"


def _check_manual_dir(manual_dir, what: str, layout: str) -> str:
  if manual_dir is None or not os.path.isdir(manual_dir):
    raise PairedImageDataError(
      f"{what} manual_dir: expected a folder in the layout {layout}, found "
      f"{'nothing' if manual_dir is None else 'no folder'} at {manual_dir!r}."
    )
  return os.fspath(manual_dir)


def _require_dir(path: str, what: str, layout: str) -> str:
  if not os.path.isdir(path):
    parent = os.path.dirname(path)
    raise PairedImageDataError(
      f"{what}: expected the folder {path!r} ({layout}); {parent!r} holds {_listing(parent)}."
    )
  return path


def _check_choice(value, choices, what: str) -> None:
  if value not in choices:
    raise PairedImageDataError(f"{what} must be one of {list(choices)}, found {value!r}.")


def image_files(folder: str, what: str) -> list[str]:
  """Sorted paths of the image files under `folder` (nested folders too); an error if none."""
  paths = [
    os.path.join(parent, name)
    for parent, _, names in os.walk(folder)
    for name in names
    if name.endswith(IMG_EXTENSIONS)
  ]
  if not paths:
    raise PairedImageDataError(
      f"{what}: expected image files ({', '.join(IMG_EXTENSIONS[::2])}) in {folder!r}, found "
      f"{_listing(folder)}."
    )
  return sorted(paths)


def _ordered(pair: tuple[str, str], direction: str) -> tuple[str, str]:
  """(source, target) of an (A, B) pair under the reference's --direction."""
  _check_choice(direction, DIRECTIONS, "direction")
  return pair if direction == "AtoB" else pair[::-1]


# --- pix2pix ------------------------------------------------------------------------------


def pix2pix_splits(manual_dir) -> tuple[str, ...]:
  """The split folders (train, val, test) a pix2pix data set has."""
  manual_dir = _check_manual_dir(manual_dir, "pix2pix", "<split>/<name>.jpg")
  found = tuple(s for s in PIX2PIX_SPLITS if os.path.isdir(os.path.join(manual_dir, s)))
  if not found:
    raise PairedImageDataError(
      f"pix2pix manual_dir {manual_dir!r}: expected split folders {list(PIX2PIX_SPLITS)} of "
      f"side-by-side A|B images, found {_listing(manual_dir)}."
    )
  return found


def read_pix2pix(manual_dir, split: str, direction: str = "AtoB") -> Records:
  """One record per side-by-side image of `<manual_dir>/<split>/`, in sorted path order."""
  manual_dir = _check_manual_dir(manual_dir, "pix2pix", "<split>/<name>.jpg")
  _check_choice(split, PIX2PIX_SPLITS, "pix2pix split")
  source_half, target_half = _ordered(HALVES, direction)
  layout = "side-by-side A|B images: train/, val/, and test/ for facades"
  folder = _require_dir(os.path.join(manual_dir, split), f"pix2pix {split} split", layout)
  return Records(
    PairedImageRecord(path, path, os.path.relpath(path, folder), source_half, target_half)
    for path in image_files(folder, f"pix2pix {split} split")
  )


# --- CycleGAN -----------------------------------------------------------------------------


def read_domain(manual_dir, split: str, domain: str) -> Records:
  """The images of one CycleGAN folder `<manual_dir>/<split><domain>/` (e.g. trainA)."""
  manual_dir = _check_manual_dir(manual_dir, "CycleGAN", "trainA/ trainB/ testA/ testB/")
  _check_choice(split, CYCLEGAN_SPLITS, "CycleGAN split")
  _check_choice(domain, DOMAINS, "CycleGAN domain")
  folder = _require_dir(
    os.path.join(manual_dir, split + domain),
    f"CycleGAN {split} domain {domain}",
    "unpaired domains trainA/ trainB/ testA/ testB/",
  )
  paths = image_files(folder, f"CycleGAN {split}{domain}")
  return Records(ImageRecord(path, os.path.relpath(path, folder)) for path in paths)


def read_cyclegan(manual_dir, split: str) -> dict[str, Records]:
  """{'A': records of <split>A/, 'B': records of <split>B/}: the two unpaired domains."""
  return {domain: read_domain(manual_dir, split, domain) for domain in DOMAINS}


def cyclegan_folders(manual_dir) -> tuple[str, ...]:
  """The domain folders (trainA, trainB, testA, testB) a CycleGAN data set has."""
  manual_dir = _check_manual_dir(manual_dir, "CycleGAN", "trainA/ trainB/ testA/ testB/")
  names = tuple(s + d for s in CYCLEGAN_SPLITS for d in DOMAINS)
  found = tuple(n for n in names if os.path.isdir(os.path.join(manual_dir, n)))
  if not found:
    raise PairedImageDataError(
      f"CycleGAN manual_dir {manual_dir!r}: expected domain folders {list(names)}, found "
      f"{_listing(manual_dir)}."
    )
  return found


# --- Sketchy ------------------------------------------------------------------------------


def sketchy_root(manual_dir) -> str:
  """The folder holding photo/ and sketch/: manual_dir, 256x256/ or rendered_256x256/256x256/."""
  layout = "rendered_256x256/256x256/{photo,sketch}/<variant>/<category>/"
  manual_dir = _check_manual_dir(manual_dir, "Sketchy", layout)
  for root in (
    os.path.join(manual_dir, "rendered_256x256", "256x256"),
    os.path.join(manual_dir, "256x256"),
    manual_dir,
  ):
    if os.path.isdir(os.path.join(root, "photo")) and os.path.isdir(os.path.join(root, "sketch")):
      return root
  raise PairedImageDataError(
    f"Sketchy manual_dir {manual_dir!r}: expected {layout} (or photo/ and sketch/ directly), "
    f"found {_listing(manual_dir)}."
  )


def sketchy_split(photo_id: str, test_percent: int = SKETCHY_TEST_PERCENT) -> str:
  """'test' for about `test_percent` % of photos (by a hash of the id), else 'train'."""
  digest = int(hashlib.sha256(photo_id.encode("utf-8")).hexdigest()[:8], 16)
  return "test" if digest % 100 < test_percent else "train"


def read_sketchy(
  manual_dir,
  split: str,
  variant: str = SKETCHY_VARIANT,
  *,
  photo_variant: str | None = None,
  test_percent: int = SKETCHY_TEST_PERCENT,
) -> Records:
  """Every sketch of `split` paired with its photo (source = sketch, target = photo).

  `photo_variant` (default: `variant`) is the photo tx_* folder. Records are
  sorted by category, then sketch name; `label_names` are the categories. A
  sketch whose photo is missing, or whose name is not `<photo id>-<n>`, is
  skipped with a warning.
  """
  root = sketchy_root(manual_dir)
  _check_choice(split, SKETCHY_SPLITS, "Sketchy split")
  if not 0 < test_percent < 100:
    raise PairedImageDataError(
      f"Sketchy test_percent must be in (0, 100) so both splits hold photos, found "
      f"{test_percent!r}."
    )
  photo_variant = photo_variant or variant
  layout = "<variant> is a tx_* folder"
  sketch_dir = _require_dir(os.path.join(root, "sketch", variant), "Sketchy sketch variant", layout)
  photo_dir = _require_dir(
    os.path.join(root, "photo", photo_variant), "Sketchy photo variant (photo_variant)", layout
  )
  categories = sorted(d for d in os.listdir(photo_dir) if os.path.isdir(os.path.join(photo_dir, d)))
  if not categories:
    raise PairedImageDataError(
      f"Sketchy photos: expected category folders in {photo_dir!r}, found {_listing(photo_dir)}."
    )
  records, skipped = [], {}
  for label, category in enumerate(categories):
    photos = {
      os.path.splitext(os.path.basename(p))[0]: p
      for p in image_files(os.path.join(photo_dir, category), f"Sketchy photos of {category!r}")
    }
    folder = os.path.join(sketch_dir, category)
    for path in image_files(folder, f"Sketchy sketches of {category!r}"):
      stem = os.path.splitext(os.path.basename(path))[0]
      key = f"{category}/{stem}"
      photo_id, _, number = stem.rpartition("-")
      if not (photo_id and number.isdigit()):
        skipped.setdefault("sketch name not '<photo id>-<n>'", []).append(key)
      elif photo_id not in photos:
        skipped.setdefault("sketch without its photo", []).append(key)
      elif sketchy_split(photo_id, test_percent) == split:
        records.append(PairedImageRecord(path, photos[photo_id], key, label=label))
  out = Records(records, skipped, categories)
  _warn_skipped(out, f"Sketchy {split} ({root})")
  if not out:
    raise PairedImageDataError(
      f"Sketchy {split} ({sketch_dir}): expected at least one sketch paired with a photo of "
      f"{photo_dir!r}, found none (skipped: { ({k: len(v) for k, v in skipped.items()}) })."
    )
  return out


# --- a generic paired folder -----------------------------------------------------------------


def paired_folder_splits(manual_dir) -> tuple[str, ...]:
  """The split folders (those holding A/ or B/) of a paired folder, sorted."""
  layout = "<split>/A/<name>.<ext> and <split>/B/<name>.<ext>"
  manual_dir = _check_manual_dir(manual_dir, "paired folder", layout)
  found = tuple(
    sorted(
      s
      for s in os.listdir(manual_dir)
      if any(os.path.isdir(os.path.join(manual_dir, s, d)) for d in DOMAINS)
    )
  )
  if not found:
    raise PairedImageDataError(
      f"paired folder {manual_dir!r}: expected split folders holding A/ and B/ ({layout}), "
      f"found {_listing(manual_dir)}."
    )
  return found


def _files_by_stem(folder: str, what: str) -> dict[str, str]:
  stems = {}
  for path in image_files(folder, what):
    stem = os.path.splitext(os.path.relpath(path, folder))[0]
    if stem in stems:
      raise PairedImageDataError(
        f"{what}: expected one file per name, found {stems[stem]!r} and {path!r}."
      )
    stems[stem] = path
  return stems


def read_paired_folder(manual_dir, split: str, direction: str = "AtoB") -> Records:
  """A/<name> paired with B/<name> (same path without extension), sorted by name."""
  layout = "<split>/A/<name>.<ext> and <split>/B/<name>.<ext>"
  manual_dir = _check_manual_dir(manual_dir, "paired folder", layout)
  source, target = _ordered(DOMAINS, direction)
  split_dir = _require_dir(
    os.path.join(manual_dir, split), f"paired folder split {split!r}", layout
  )
  files = {
    d: _files_by_stem(_require_dir(os.path.join(split_dir, d), f"paired folder {split}", layout), d)
    for d in DOMAINS
  }
  only = {d: sorted(set(files[d]) - set(files[o])) for d, o in zip(DOMAINS, DOMAINS[::-1])}
  if only["A"] or only["B"]:
    raise PairedImageDataError(
      f"paired folder {split_dir!r}: expected every name in A/ to have a file of the same name "
      f"(any extension) in B/ and vice versa, found {len(only['A'])} only in A/ "
      f"(e.g. {only['A'][:_EXAMPLES_IN_WARNING]}) and {len(only['B'])} only in B/ "
      f"(e.g. {only['B'][:_EXAMPLES_IN_WARNING]})."
    )
  return Records(
    PairedImageRecord(files[source][stem], files[target][stem], stem) for stem in sorted(files["A"])
  )


# --- decoding -------------------------------------------------------------------------------


def load_image(path: str, half: str | None = None, *, mode: str = "RGB") -> np.ndarray:
  """An image file as uint8 (H, W, 3), or (H, W, 1) for mode 'L'; `half` cuts a pix2pix pair.

  Decoded whole (a truncated file raises OSError), converted to RGB, then cut
  at w/2 (`SideBySideImageError` unless w = 2h), then to `mode` — the
  reference's order (`convert('RGB')`, crop, `Grayscale`).
  """
  with Image.open(path) as image:
    image.load()
    rgb = image.convert("RGB")
  if half is not None:
    width, height = rgb.size
    if width != 2 * height:
      raise SideBySideImageError(
        f"{path!r}: expected two square halves side by side (width = 2 × height), found "
        f"{width}×{height}."
      )
    left = HALVES.index(half) * height
    rgb = rgb.crop((left, 0, left + height, height))
  pixels = np.asarray(rgb.convert(mode) if mode != "RGB" else rgb)
  return pixels.reshape(*pixels.shape[:2], -1)


def resize(image: np.ndarray, resolution: int | None) -> np.ndarray:
  """uint8 (H, W, C) -> (resolution, resolution, C), bicubic as the reference; None keeps it."""
  if resolution is None or image.shape[:2] == (resolution, resolution):
    return image
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((resolution, resolution), Image.Resampling.BICUBIC))
  return out.reshape(resolution, resolution, channels)


def decode_pair(
  record: PairedImageRecord, resolution: int | None = None, *, source_mode: str = "RGB"
) -> tuple[np.ndarray, np.ndarray]:
  """(source, target) uint8 images of one record, each resized to `resolution` (None: as stored)."""
  source = load_image(record.source_path, record.source_half, mode=source_mode)
  target = load_image(record.target_path, record.target_half)
  return resize(source, resolution), resize(target, resolution)


def png_bytes(image: np.ndarray) -> bytes:
  """uint8 (H, W, 1 or 3) as PNG bytes (lossless: stored halves stay pixel-exact)."""
  out = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out, format="PNG")
  return out.getvalue()


def decoded(records, load: Callable, source: str) -> Iterator[tuple[object, object]]:
  """(record, load(record)) for each record that decodes; the rest are counted and logged."""
  failed = Records()
  for record in records:
    try:
      value = load(record)
    except SideBySideImageError as e:
      failed.skipped.setdefault("not side by side", []).append(str(e))
      continue
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      failed.skipped.setdefault("do not decode", []).append(
        f"{record.key} ({type(e).__name__}: {e})"
      )
      continue
    yield record, value
  _warn_skipped(failed, source, total=len(records))


def _warn_skipped(records: Records, source: str, total: int | None = None) -> None:
  if not records.num_skipped:
    return
  reasons = "; ".join(
    f"{len(keys)} {reason} (e.g. {keys[:_EXAMPLES_IN_WARNING]})"
    for reason, keys in records.skipped.items()
  )
  total = total if total is not None else records.num_skipped + len(records)
  _LOG.warning("%s: skipped %d of %d records: %s", source, records.num_skipped, total, reasons)


def _check_resolution(resolution) -> None:
  if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
    raise PairedImageDataError(f"resolution must be a positive int, found {resolution!r}.")


def _stack(images: list[np.ndarray], what: str) -> np.ndarray:
  if not images:
    raise PairedImageDataError(f"{what}: expected at least one image that decodes, found none.")
  return np.stack(images)


def paired_arrays(
  records: Iterable[PairedImageRecord], resolution: int, *, source_channels: int = 3
) -> dict[str, np.ndarray]:
  """{'source': uint8 (N, R, R, C), 'target': uint8 (N, R, R, 3)}: records decoded and resized.

  No crop or flip: training augments. `source_channels` 1 reads the source
  as greyscale (PIL 'L', as the reference's input_nc = 1). Records that do
  not decode are skipped with a warning.
  """
  _check_resolution(resolution)
  _check_choice(source_channels, (1, 3), "source_channels")
  mode = "L" if source_channels == 1 else "RGB"
  pairs = [
    pair
    for _, pair in decoded(
      list(records), lambda r: decode_pair(r, resolution, source_mode=mode), "paired_arrays"
    )
  ]
  return {
    "source": _stack([s for s, _ in pairs], "paired_arrays"),
    "target": _stack([t for _, t in pairs], "paired_arrays"),
  }


def domain_arrays(records: Iterable[ImageRecord], resolution: int) -> np.ndarray:
  """uint8 (N, R, R, 3): the images of one unpaired domain, resized; bad files skipped."""
  _check_resolution(resolution)
  images = decoded(list(records), lambda r: resize(load_image(r.path), resolution), "domain_arrays")
  return _stack([image for _, image in images], "domain_arrays")


def unpaired_arrays(
  domains: Mapping[str, Iterable[ImageRecord]],
  resolution: int,
  *,
  direction: str = "AtoB",
  seed: int = 0,
) -> dict[str, np.ndarray]:
  """{'source', 'target'} uint8 (N, R, R, 3) from CycleGAN domains, N = the larger domain.

  As the reference's UnalignedDataset (length max(|A|, |B|), each A beside a
  random B): the larger domain in order, the smaller one tiled in a seeded
  random order. 'AtoB' makes A the source.
  """
  source_domain, target_domain = _ordered(DOMAINS, direction)
  source = domain_arrays(domains[source_domain], resolution)
  target = domain_arrays(domains[target_domain], resolution)
  count = max(len(source), len(target))
  rng = np.random.default_rng(seed)

  def tiled(images):
    if len(images) == count:
      return images
    order = np.concatenate([rng.permutation(len(images)) for _ in range(-(-count // len(images)))])
    return images[order[:count]]

  return {"source": tiled(source), "target": tiled(target)}
