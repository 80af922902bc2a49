"""TFDS builders; importing this package registers them with TFDS."""

from jaxgen.data.datasets.aist_plusplus import AistPlusPlus
from jaxgen.data.datasets.captioned_shapes import CaptionedShapes
from jaxgen.data.datasets.captioned_videos import CaptionedVideos
from jaxgen.data.datasets.coco_captions import CocoCaptions
from jaxgen.data.datasets.cub_birds import CubBirds
from jaxgen.data.datasets.cyclegan_folders import CycleganFolders
from jaxgen.data.datasets.finedance import FineDance
from jaxgen.data.datasets.grid_corpus import GridCorpus
from jaxgen.data.datasets.hdtf import Hdtf
from jaxgen.data.datasets.humanml3d import HumanML3D
from jaxgen.data.datasets.image_caption_folder import ImageCaptionFolder
from jaxgen.data.datasets.kit_ml import KitMl
from jaxgen.data.datasets.lrs2 import Lrs2
from jaxgen.data.datasets.music_dance import MusicDance
from jaxgen.data.datasets.paired_folder import PairedFolder
from jaxgen.data.datasets.paired_scenes import PairedScenes
from jaxgen.data.datasets.pix2pix_folders import Pix2PixFolders
from jaxgen.data.datasets.sketchy import Sketchy
from jaxgen.data.datasets.synthetic_motion import SyntheticMotion
from jaxgen.data.datasets.talking_heads import TalkingHeads
from jaxgen.data.datasets.ucf101 import Ucf101

__all__ = [
  "AistPlusPlus",
  "CaptionedShapes",
  "CaptionedVideos",
  "CocoCaptions",
  "CubBirds",
  "CycleganFolders",
  "FineDance",
  "GridCorpus",
  "Hdtf",
  "HumanML3D",
  "ImageCaptionFolder",
  "KitMl",
  "Lrs2",
  "MusicDance",
  "PairedFolder",
  "PairedScenes",
  "Pix2PixFolders",
  "Sketchy",
  "SyntheticMotion",
  "TalkingHeads",
  "Ucf101",
]
