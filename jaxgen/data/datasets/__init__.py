"""TFDS builders; importing this package registers them with TFDS."""

from jaxgen.data.datasets.captioned_shapes import CaptionedShapes
from jaxgen.data.datasets.humanml3d import HumanML3D
from jaxgen.data.datasets.kit_ml import KitMl
from jaxgen.data.datasets.synthetic_motion import SyntheticMotion

__all__ = ["CaptionedShapes", "HumanML3D", "KitMl", "SyntheticMotion"]
