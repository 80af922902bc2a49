"""Image–caption records read from the released layouts of real data sets.

Every reader returns `ImageTextRecords`: a list of `ImageTextRecord`s (a
path to an image file and its captions) that also says which entries were
skipped and why. A record whose caption is missing or empty (or whose image
file is missing) is skipped with a warning, never fatal and never silent; a
layout that is not what the reader expects (no folder, no annotation file,
malformed JSON, an empty split) raises `ImageTextDataError` naming the path.

Layouts (`manual_dir` is the folder the user points at):

  COCO captions (kind 'coco2014' / 'coco2017'; splits 'train', 'val'):
    annotations/captions_{split}{year}.json  {"images": [{"id", "file_name"}],
                                              "annotations": [{"image_id", "caption"}]}
    {split}{year}/<file_name>                (or images/{split}{year}/<file_name>)

  CUB-200-2011 with the 10-captions text release (kind 'cub'; splits 'train',
  'test'), the folder AttnGAN calls `data/birds` (or its parent):
    CUB_200_2011/images/<class>/<img>.jpg
    CUB_200_2011/images.txt             "<image id> <class>/<img>.jpg"
    CUB_200_2011/bounding_boxes.txt     "<image id> <x> <y> <width> <height>" (pixels)
    CUB_200_2011/train_test_split.txt   "<image id> <1 = train, 0 = test>"
    text/<class>/<img>.txt              10 captions, one a line (Reed et al.'s
                                        release names the folder text_c10)
    train/filenames.pickle, test/filenames.pickle  (AttnGAN's class-disjoint split)

  Image–caption folder (kind 'folder'; diffusers/HF ImageFolder convention):
    metadata.jsonl  lines {"file_name": "a.png", "text": "..."} (or "caption");
                    file_name relative to the metadata file's folder
    or  <any/sub/folder>/a.png + <any/sub/folder>/a.txt  (one caption a line)
    split subfolders (train/, validation/, test/) when present.

Pure host Python: no TensorFlow, no image decoding (the input pipeline and the
TFDS builders decode).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import logging
import os
import pickle
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

KINDS = ("coco2014", "coco2017", "cub", "folder")
COCO_SPLITS = ("train", "val")
CUB_SPLITS = ("train", "test")
CUB_SPLIT_SOURCES = ("cub", "attngan")
CUB_CAPTIONS_PER_IMAGE = 10
CUB_TEXT_FOLDERS = ("text", "text_c10")  # AttnGAN's name, Reed et al.'s name.
FOLDER_SPLITS = ("train", "validation", "val", "test")
FOLDER_CAPTION_COLUMNS = ("text", "caption")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
_EXAMPLES_IN_WARNING = 3
_LOG = logging.getLogger(__name__)


class ImageTextDataError(ValueError):
  """A data folder that is not in the layout its reader expects."""


@dataclasses.dataclass(frozen=True)
class ImageTextRecord:
  """One image file and its captions.

  `key` is unique within a split: the COCO image id (decimal), the CUB name
  `<class>/<img>` (AttnGAN's key), or the path relative to a caption folder.
  `label` is the 0-based class (CUB); `bbox` is (x, y, width, height) in
  pixels of the original image (CUB's bounding_boxes.txt).
  """

  image_path: str
  captions: tuple[str, ...]
  key: str = ""
  label: int | None = None
  bbox: tuple[float, float, float, float] | None = None


class ImageTextRecords(list):
  """A list of `ImageTextRecord`s plus `skipped`: reason -> skipped keys."""

  def __init__(self, records: Iterable[ImageTextRecord] = (), skipped=None):
    super().__init__(records)
    self.skipped: dict[str, list[str]] = {k: list(v) for k, v in (skipped or {}).items()}

  @property
  def num_skipped(self) -> int:
    return sum(len(keys) for keys in self.skipped.values())


class _Collector:
  """Gathers records and skip reasons; `finish` warns and checks emptiness."""

  def __init__(self, source: str):
    self.source = source
    self.records: list[ImageTextRecord] = []
    self.skipped: dict[str, list[str]] = collections.defaultdict(list)

  def add(
    self, image_path: str, captions: Iterable[str], key: str, limit: int | None = None, **fields
  ) -> None:
    """Adds a record of the non-empty stripped captions (the first `limit`), or skips it."""
    captions = list(captions)
    cleaned = tuple(c for c in (_clean(c) for c in captions) if c)[:limit]
    if not cleaned:
      self.skip("empty caption" if captions else "missing caption", key)
    else:
      self.records.append(ImageTextRecord(image_path, cleaned, key, **fields))

  def skip(self, reason: str, key: str) -> None:
    self.skipped[reason].append(key)

  def finish(self) -> ImageTextRecords:
    out = ImageTextRecords(self.records, self.skipped)
    if out.num_skipped:
      reasons = "; ".join(
        f"{len(keys)} {reason} (e.g. {keys[:_EXAMPLES_IN_WARNING]})"
        for reason, keys in out.skipped.items()
      )
      _LOG.warning(
        "%s: skipped %d of %d records: %s",
        self.source,
        out.num_skipped,
        out.num_skipped + len(out),
        reasons,
      )
    if not out:
      counts = {reason: len(keys) for reason, keys in out.skipped.items()}
      raise ImageTextDataError(
        f"{self.source}: expected at least one image with a caption, found none "
        f"(skipped: {counts})."
      )
    return out


def _clean(caption) -> str:
  # AttnGAN replaces the mis-decoded pair U+FFFD U+FFFD in the CUB text release by a space.
  return str(caption).replace("\ufffd\ufffd", " ").strip() if caption is not None else ""


def _check_dir(path, what: str) -> str:
  if path is None or not os.path.isdir(path):
    raise ImageTextDataError(
      f"{what}: expected a folder, found {'nothing' if path is None else 'no folder'} at {path!r}."
    )
  return os.fspath(path)


def _require_file(path: str, what: str) -> str:
  if not os.path.isfile(path):
    folder = os.path.dirname(path)
    found = sorted(os.listdir(folder))[:20] if os.path.isdir(folder) else "no folder"
    raise ImageTextDataError(f"{what}: expected the file {path!r}; {folder!r} holds {found}.")
  return path


def _check_split(split: str, splits: Sequence[str], what: str) -> None:
  if split not in splits:
    raise ImageTextDataError(f"{what}: split must be one of {list(splits)}, found {split!r}.")


def _load_json(path: str):
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ImageTextDataError(
        f"{path!r}: expected valid JSON, found an error at line {e.lineno} column {e.colno}: {e.msg}."
      ) from e


# --- MS-COCO captions ---------------------------------------------------------------


def read_coco_captions(
  manual_dir, split: str, year: int = 2017, *, check_files: bool = True
) -> ImageTextRecords:
  """COCO `captions_{split}{year}.json` records (≈5 captions per image), in JSON image order.

  `check_files` skips (with a warning) images whose file is missing.
  """
  manual_dir = _check_dir(manual_dir, f"COCO {year} manual_dir")
  _check_split(split, COCO_SPLITS, f"COCO {year}")
  if year not in (2014, 2017):
    raise ImageTextDataError(f"COCO captions: year must be 2014 or 2017, found {year!r}.")
  json_path = _require_file(
    os.path.join(manual_dir, "annotations", f"captions_{split}{year}.json"),
    f"COCO {year} {split} captions",
  )
  image_dir = os.path.join(manual_dir, f"{split}{year}")
  if not os.path.isdir(image_dir) and os.path.isdir(
    os.path.join(manual_dir, "images", f"{split}{year}")
  ):
    image_dir = os.path.join(manual_dir, "images", f"{split}{year}")
  if check_files:
    _check_dir(image_dir, f"COCO {year} {split} images")
  data = _load_json(json_path)
  if not isinstance(data, Mapping) or not {"images", "annotations"} <= set(data):
    found = sorted(data) if isinstance(data, Mapping) else type(data).__name__
    raise ImageTextDataError(
      f"{json_path!r}: expected a COCO captions object with 'images' and 'annotations', found {found}."
    )
  captions = collections.defaultdict(list)
  out = _Collector(f"COCO {year} {split} ({json_path})")
  try:
    image_ids = {image["id"] for image in data["images"]}
    for ann in data["annotations"]:
      if ann["image_id"] in image_ids:
        captions[ann["image_id"]].append(ann.get("caption"))
      else:
        out.skip("caption of an unknown image_id", str(ann["image_id"]))
    for image in data["images"]:
      key, path = str(image["id"]), os.path.join(image_dir, image["file_name"])
      if check_files and not os.path.isfile(path):
        out.skip("missing image file", path)
      else:
        out.add(path, captions.get(image["id"], ()), key)
  except (KeyError, TypeError) as e:
    raise ImageTextDataError(
      f"{json_path!r}: expected images with 'id' and 'file_name' and annotations with "
      f"'image_id' and 'caption', found an entry without {e}."
    ) from e
  return out.finish()


# --- CUB-200-2011 + the 10-captions text release -------------------------------------


def cub_root(manual_dir) -> str:
  """The folder holding CUB_200_2011/: `manual_dir` itself or its `birds/`."""
  manual_dir = _check_dir(manual_dir, "CUB manual_dir")
  for root in (manual_dir, os.path.join(manual_dir, "birds")):
    if os.path.isdir(os.path.join(root, "CUB_200_2011")):
      return root
  raise ImageTextDataError(
    f"CUB manual_dir {manual_dir!r}: expected CUB_200_2011/ in it or in birds/, found "
    f"{sorted(os.listdir(manual_dir))[:20]}."
  )


def _read_table(path: str, columns: int, what: str) -> dict[str, list[str]]:
  """Whitespace-separated `<image id> <fields...>` lines -> {id: fields}."""
  table = {}
  with open(_require_file(path, what), encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) != columns:
        raise ImageTextDataError(
          f"{path!r} line {number}: expected {columns} fields, found {len(fields)}: {line.strip()!r}."
        )
      table[fields[0]] = fields[1:]
  return table


class _ListOfStrUnpickler(pickle.Unpickler):
  """Unpickles plain containers of strings only: every class/global lookup is refused."""

  def find_class(self, module, name):
    raise ImageTextDataError(f"refusing to load {module}.{name}: only a list of str is expected.")


def load_filenames_pickle(path: str) -> list[str]:
  """AttnGAN's `filenames.pickle` (a list of str) through a restricted unpickler.

  No global can be resolved, so no code runs; the result must be a list of str.
  """
  with open(_require_file(path, "AttnGAN split file"), "rb") as f:
    data = f.read()
  try:
    names = _ListOfStrUnpickler(io.BytesIO(data), encoding="utf-8").load()
  except (pickle.UnpicklingError, EOFError, ValueError) as e:
    raise ImageTextDataError(f"{path!r}: expected a pickled list of str, found: {e}") from e
  if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
    raise ImageTextDataError(
      f"{path!r}: expected a pickled list of str, found {type(names).__name__}."
    )
  return names


def read_cub(
  manual_dir,
  split: str,
  *,
  split_source: str = "cub",
  max_captions: int = CUB_CAPTIONS_PER_IMAGE,
  check_files: bool = True,
) -> ImageTextRecords:
  """CUB-200-2011 images with their text-release captions, class and bounding box.

  `split_source='cub'` takes the split from CUB's own train_test_split.txt
  (5,994 / 5,794 images, every class in both); 'attngan' takes AttnGAN's
  class-disjoint split (150 / 50 classes: 8,855 / 2,933 images, the
  text-to-image literature's) from `{split}/filenames.pickle`, read with a
  restricted unpickler that admits only a list of str. At most
  `max_captions` captions are kept per image (AttnGAN's 10).
  """
  root = cub_root(manual_dir)
  _check_split(split, CUB_SPLITS, "CUB")
  if split_source not in CUB_SPLIT_SOURCES:
    raise ImageTextDataError(
      f"CUB split_source must be one of {list(CUB_SPLIT_SOURCES)}, found {split_source!r}."
    )
  cub = os.path.join(root, "CUB_200_2011")
  names = {
    i: f[0] for i, f in _read_table(os.path.join(cub, "images.txt"), 2, "CUB images").items()
  }
  boxes = _read_table(os.path.join(cub, "bounding_boxes.txt"), 5, "CUB bounding boxes")
  text_dirs = [os.path.join(root, t) for t in CUB_TEXT_FOLDERS]
  text_dir = next((t for t in text_dirs if os.path.isdir(t)), None)
  if text_dir is None:
    raise ImageTextDataError(
      f"CUB captions: expected one of the folders {text_dirs} (the 10-captions text release), "
      f"found {sorted(os.listdir(root))[:20]} in {root!r}."
    )
  ids_by_key = {os.path.splitext(name)[0]: i for i, name in names.items()}
  if split_source == "cub":
    flags = _read_table(os.path.join(cub, "train_test_split.txt"), 2, "CUB train/test split")
    wanted = "1" if split == "train" else "0"
    ids = [i for i in names if flags.get(i, [None])[0] == wanted]
  else:
    path = os.path.join(root, split, "filenames.pickle")
    keys = load_filenames_pickle(path)
    unknown = [k for k in keys if k not in ids_by_key]
    if unknown:
      raise ImageTextDataError(
        f"{path!r}: expected names listed in CUB_200_2011/images.txt, found "
        f"{len(unknown)} that are not, e.g. {unknown[:3]}."
      )
    ids = [ids_by_key[k] for k in keys]
  out = _Collector(f"CUB {split} ({split_source} split, {root})")
  for image_id in ids:
    name = names[image_id]
    key = os.path.splitext(name)[0]
    image_path = os.path.join(cub, "images", name)
    caption_path = os.path.join(text_dir, key + ".txt")
    if image_id not in boxes:
      raise ImageTextDataError(
        f"{os.path.join(cub, 'bounding_boxes.txt')!r}: expected a box for image id {image_id} ({name})."
      )
    if check_files and not os.path.isfile(image_path):
      out.skip("missing image file", image_path)
    elif not os.path.isfile(caption_path):
      out.skip("missing caption file", caption_path)
    else:
      out.add(
        image_path,
        _read_lines(caption_path),
        key,
        limit=max_captions,
        label=_cub_label(name, cub),
        bbox=tuple(float(v) for v in boxes[image_id]),
      )
  return out.finish()


def _read_lines(path: str) -> list[str]:
  with open(path, encoding="utf-8", errors="replace") as f:
    return f.read().split("\n")


def _cub_label(name: str, cub: str) -> int:
  """0-based class from the class folder `NNN.Name` (CUB's 1-based class id)."""
  prefix = name.split("/", 1)[0].split(".", 1)[0]
  if not prefix.isdigit():
    raise ImageTextDataError(
      f"{os.path.join(cub, 'images.txt')!r}: expected names '<NNN.Class>/<img>.jpg', found {name!r}."
    )
  return int(prefix) - 1


def attngan_crop_box(bbox, width: int, height: int) -> tuple[int, int, int, int]:
  """AttnGAN's crop around a CUB box: a square of side 1.5·max(w, h), clipped to the image.

  Returns (left, top, right, bottom) pixel bounds, as AttnGAN's `get_imgs`
  (boxes truncated to int first, as its pandas `astype(int)`).
  """
  x, y, w, h = (int(v) for v in bbox)
  r = int(max(w, h) * 0.75)
  cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
  return max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)


def attngan_crop(image: np.ndarray, bbox) -> np.ndarray:
  """An (H, W, C) image cropped around its CUB box as AttnGAN does."""
  left, top, right, bottom = attngan_crop_box(bbox, image.shape[1], image.shape[0])
  return image[top:bottom, left:right]


# --- image–caption folders ------------------------------------------------------------


def read_caption_folder(folder, *, caption_column: str | None = None) -> ImageTextRecords:
  """Images with captions from `metadata.jsonl` files, or from `<image>.txt` beside each image.

  If any `metadata.jsonl` exists under `folder`, those files alone list the
  records (`file_name` relative to the metadata file's folder; the caption
  column is `caption_column`, else `text`, else `caption`; a caption may be a
  list of str). Otherwise every image file under `folder` (nested folders
  too) is a record whose captions are the non-empty lines of the `.txt` file
  with the same stem. Keys are paths relative to `folder`, in sorted path
  order (metadata mode: in the order of the metadata lines).
  """
  folder = _check_dir(folder, "image–caption folder")
  metadata, images = [], []
  for parent, dirs, files in os.walk(folder):
    dirs.sort()
    for name in sorted(files):
      if name == "metadata.jsonl":
        metadata.append(os.path.join(parent, name))
      elif name.lower().endswith(IMAGE_EXTENSIONS):
        images.append(os.path.join(parent, name))
  out = _Collector(f"image–caption folder {folder!r}")
  if metadata:
    for path in metadata:
      _read_metadata(path, folder, caption_column, out)
  else:
    for image_path in sorted(images):
      key = os.path.relpath(image_path, folder)
      caption_path = os.path.splitext(image_path)[0] + ".txt"
      if os.path.isfile(caption_path):
        out.add(image_path, _read_lines(caption_path), key)
      else:
        out.skip("missing caption file", key)
  return out.finish()


def _read_metadata(path: str, folder: str, caption_column: str | None, out: _Collector) -> None:
  rows = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ImageTextDataError(
          f"{path!r} line {number}: expected one JSON object, found an error at column "
          f"{e.colno}: {e.msg}."
        ) from e
      if not isinstance(row, dict) or "file_name" not in row:
        raise ImageTextDataError(
          f"{path!r} line {number}: expected an object with 'file_name', found "
          f"{line.strip()[:80]!r}."
        )
      rows.append(row)
  columns = {c for row in rows for c in row}
  column = caption_column or next((c for c in FOLDER_CAPTION_COLUMNS if c in columns), None)
  if column not in columns:
    expected = [caption_column] if caption_column else list(FOLDER_CAPTION_COLUMNS)
    raise ImageTextDataError(
      f"{path!r}: expected a caption column {expected}, found columns {sorted(columns)}."
    )
  base = os.path.dirname(path)
  for row in rows:
    image_path = os.path.normpath(os.path.join(base, row["file_name"]))
    key = os.path.relpath(image_path, folder)
    caption = row.get(column)
    if not os.path.isfile(image_path):
      out.skip("missing image file", key)
    elif caption is None:
      out.skip("missing caption", key)
    else:
      out.add(image_path, [caption] if isinstance(caption, str) else caption, key)


def folder_splits(manual_dir) -> tuple[str, ...]:
  """The split subfolders of an image–caption folder; ('train',) when it has none."""
  manual_dir = _check_dir(manual_dir, "image–caption folder")
  found = tuple(s for s in FOLDER_SPLITS if os.path.isdir(os.path.join(manual_dir, s)))
  return found or ("train",)


# --- one entry point --------------------------------------------------------------------


def read_image_text(kind: str, manual_dir, split: str, **options) -> ImageTextRecords:
  """The records of one split of a data set of `kind` in ('coco2014', 'coco2017', 'cub', 'folder').

  `options` go to the reader: `check_files` (COCO, CUB), `split_source` and
  `max_captions` (CUB), `caption_column` (folder). A folder without split
  subfolders is all 'train'.
  """
  if kind not in KINDS:
    raise ImageTextDataError(f"image–text data kind must be one of {list(KINDS)}, found {kind!r}.")
  if kind.startswith("coco"):
    return read_coco_captions(manual_dir, split, int(kind[4:]), **options)
  if kind == "cub":
    return read_cub(manual_dir, split, **options)
  splits = folder_splits(manual_dir)
  _check_split(split, splits, f"image–caption folder {os.fspath(manual_dir)!r}")
  has_split_dirs = os.path.isdir(os.path.join(manual_dir, splits[0]))
  folder = os.path.join(manual_dir, split) if has_split_dirs else manual_dir
  return read_caption_folder(folder, **options)
