"""The base of jaxgen's TFDS builders that write ArrayRecord by default."""

from __future__ import annotations

import tensorflow_datasets as tfds


# Abstract (no `_info` ...) and kept out of TFDS's registry; its subclasses register as usual.
class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A GeneratorBasedBuilder that prepares ArrayRecord files unless told a file_format.

  Not prepared yet, it writes ArrayRecord rather than TFDS's default TFRecord,
  since writing it and random access through `tfds.data_source` need no
  TensorFlow. A prepared copy keeps the format it was written in.
  """

  def __init__(self, *, file_format: str | None = None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    if file_format is None and not self.info.initialized:
      self.info.set_file_format("array_record", override=True)
