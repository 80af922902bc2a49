"""TFDS builders; importing this package registers them with TFDS."""

from jaxgen.data.datasets.captioned_shapes import CaptionedShapes

__all__ = ["CaptionedShapes"]
