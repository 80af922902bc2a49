"""Random-access image-caption records from files: tar shards, ArrayRecord, TFDS.

Every reader returns records that `image_text_pipeline.read_image_and_captions`
understands, for `image_text_pipeline.image_text_dataset`:

* an object with `image_path` and `captions` (`jaxgen.data.image_text.ImageTextRecord`
  from the COCO / CUB / caption-folder readers);
* `TarImageTextRecord`: one example of a WebDataset-style tar shard
  (`key.jpg` or `key.png` beside `key.txt` or `key.json`), read by offset;
* a mapping with `image` (encoded bytes or an (H, W, 3) uint8 array) and
  `captions` (or `caption`): an ArrayRecord example written by
  `write_image_text_array_record`, or a TFDS example.

Records hold paths and offsets, never pixels: they travel to every worker.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grain
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
CAPTION_EXTENSIONS = (".txt", ".json")


@dataclasses.dataclass(frozen=True)
class TarMember:
  """Where one file's bytes lie inside a tar shard."""

  name: str
  offset: int
  size: int


@dataclasses.dataclass(frozen=True)
class TarImageTextRecord:
  """One example of a tar shard: its image member and its caption member (None if missing)."""

  shard: str
  key: str
  image: TarMember
  caption: TarMember | None

  def read(self, member: TarMember) -> bytes:
    with open(self.shard, "rb") as f:
      f.seek(member.offset)
      return f.read(member.size)


def tar_shard_records(shards: str | Sequence[str]) -> list[TarImageTextRecord]:
  """The examples of WebDataset-style tar shards, indexed once by their headers.

  Files are grouped by key (the name up to its first dot after the last
  slash, as WebDataset does): `000001.jpg` and `000001.txt` are one example.
  A key with an image and no `.txt`/`.json` becomes a record whose caption is
  None (skipped and counted at decode time); a key without an image is
  ignored. Records are ordered by shard, then by position in the shard.
  """
  shards = [shards] if isinstance(shards, str) else list(shards)
  if not shards:
    raise ValueError("shards: expected at least one tar file, found none")
  records = []
  for shard in shards:
    if not os.path.isfile(shard):
      raise FileNotFoundError(f"shards: expected a tar file, found no file at {shard!r}")
    images, captions, order = {}, {}, []
    try:
      with tarfile.open(shard, "r:") as tar:  # uncompressed: members are readable by offset
        for info in tar:
          if not info.isfile():
            continue
          base = os.path.basename(info.name)
          key = os.path.join(os.path.dirname(info.name), base.split(".", 1)[0])
          ext = os.path.splitext(base)[1].lower()
          member = TarMember(info.name, info.offset_data, info.size)
          if ext in IMAGE_EXTENSIONS and key not in images:
            images[key] = member
            order.append(key)
          elif ext in CAPTION_EXTENSIONS and key not in captions:
            captions[key] = member
    except tarfile.TarError as e:
      raise ValueError(f"shards: {shard!r} is not an uncompressed tar file: {e}") from e
    records += [TarImageTextRecord(shard, k, images[k], captions.get(k)) for k in order]
  return records


def write_tar_shard(path: str, examples: Iterable[tuple[str, bytes, str | None]]) -> str:
  """Writes (key, encoded image, caption or None) examples as `key.jpg|png` + `key.txt`."""
  import io  # pylint: disable=g-import-not-at-top

  with tarfile.open(path, "w") as tar:
    for key, image, caption in examples:
      ext = ".png" if image[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"
      files = [(key + ext, image)]
      if caption is not None:
        files.append((key + ".txt", caption.encode("utf-8")))
      for name, data in files:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  return path


def captions_from_bytes(data: bytes, name: str) -> tuple[str, ...]:
  """Captions of a `.txt` member (one per non-empty line) or a `.json` one (`caption(s)`/`text`)."""
  text = data.decode("utf-8", errors="replace")
  if not name.lower().endswith(".json"):
    return tuple(line.strip() for line in text.splitlines() if line.strip())
  try:
    meta = json.loads(text)
  except json.JSONDecodeError:
    return ()
  value = None
  if isinstance(meta, Mapping):
    value = next((meta[k] for k in ("captions", "caption", "text") if k in meta), None)
  if isinstance(value, str):
    value = [value]
  if not isinstance(value, list):
    return ()
  return tuple(c.strip() for c in value if isinstance(c, str) and c.strip())


# ---------------------------------------------------------------------------
# ArrayRecord: one msgpack map per example (no pickle).


def encode_image_text_example(image: bytes, captions: Sequence[str], key: str = "") -> bytes:
  """One ArrayRecord entry: {"key", "image" (encoded bytes), "captions"} as msgpack."""
  import msgpack  # pylint: disable=g-import-not-at-top

  return msgpack.packb(dict(key=key, image=bytes(image), captions=list(captions)))


def decode_image_text_example(data: bytes) -> dict[str, Any]:
  import msgpack  # pylint: disable=g-import-not-at-top

  return msgpack.unpackb(data)


def write_image_text_array_record(
  path: str, examples: Iterable[tuple[str, bytes, Sequence[str]]]
) -> str:
  """Writes (key, encoded image, captions) examples to one ArrayRecord file."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  # group_size:1 makes every record readable on its own (random access).
  writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
  try:
    for key, image, captions in examples:
      writer.write(encode_image_text_example(image, captions, key))
  finally:
    writer.close()
  return path


def array_record_image_text_records(paths: str | Sequence[str]) -> grain.MapDataset:
  """Random-access examples of ArrayRecord files written by `write_image_text_array_record`."""
  paths = [paths] if isinstance(paths, str) else list(paths)
  missing = [p for p in paths if not os.path.isfile(p)]
  if not paths or missing:
    raise FileNotFoundError(f"paths: expected ArrayRecord files, found none at {missing or paths}")
  source = grain.sources.ArrayRecordDataSource(paths)
  return grain.MapDataset.source(source).map(decode_image_text_example)


def tfds_records(builder_dir: str, split: str = "train") -> Any:
  """Random-access examples of a TFDS dataset prepared as ArrayRecord in `builder_dir`.

  `builder_dir` is the versioned folder (`<data_dir>/<name>/<config>/<version>`).
  Examples come back as dicts of numpy values; an image-caption set should
  store `image` (encoded bytes or uint8 pixels) and `captions` (or `caption`).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if not os.path.isdir(builder_dir):
    raise FileNotFoundError(
      f"builder_dir: expected a prepared TFDS dataset folder, found nothing at {builder_dir!r}"
    )
  builder = tfds.builder_from_directory(builder_dir)
  if split not in builder.info.splits:
    raise ValueError(f"split: expected one of {sorted(builder.info.splits)}, found {split!r}")
  return builder.as_data_source(split=split)


def as_uint8_image(value: Any) -> np.ndarray | None:
  """`value` as (H, W, 3) uint8 pixels if it already is pixels, else None (encoded bytes)."""
  if isinstance(value, (bytes, bytearray, np.bytes_)):
    return None
  array = np.asarray(value)
  if array.dtype == np.uint8 and array.ndim == 3:
    return array
  return None
