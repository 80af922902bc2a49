"""What every image-to-image task shares: scene data, model inputs, generation, grids.

A method's task (Pix2Pix, CycleGAN, SPADE, Palette, BBDM, ControlNet)
subclasses `ImageToImageTask` and supplies `init`, `loss` and

    translate(params, source, rng, **options) -> float32 (B, H, W, 3) in [-1, 1]

a jittable map from `source_input(...)` to target images. This base turns the
procedural scenes (`jaxgen.data.scenes`) into training arrays, encodes
sources as model inputs, checks the command line's `--input` images, runs
`translate` in fixed-size chunks and writes input | output (| target) grids.

Config section `data`: `source` (label | sketch | edges | day), `target`
(image | night), `resolution`, `num_train_examples`, `seed`, `paired`
(False: the two domains come from disjoint scenes, for unpaired methods).

Model inputs: a label map becomes a one-hot map with `scenes.NUM_LABELS`
channels; a sketch or edge map one channel in [-1, 1] (paper white = 1); a
day photo three channels in [-1, 1]. Targets are RGB in [-1, 1].
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data import scenes
from jaxgen.data.chunks import map_padded_chunks
from jaxgen.data.images import to_uint8
from jaxgen.render.grid import make_grid, save_png
from jaxgen.training.task import GenerativeTask, PromptError, SampleSpec, check_prompts

# The views of a scene a source/target name reads (`make_scenes` keys).
SOURCE_VIEWS = {"label": "label", "sketch": "sketch", "edges": "edges", "day": "image"}
TARGET_VIEWS = {"image": "image", "night": "night"}
PREVIEW_EXAMPLES = 8


class ImageToImageConfigError(ValueError):
  """The `data` section names a source or target this family cannot translate."""


def check_data_config(data, *, sources: Sequence[str] = tuple(SOURCE_VIEWS)) -> None:
  """Named errors for `data.source`, `data.target`, `data.resolution` before anything is built."""
  if data.source not in sources:
    raise ImageToImageConfigError(
      f"data.source: expected one of {tuple(sources)}, found {data.source!r}"
    )
  if data.target not in TARGET_VIEWS:
    raise ImageToImageConfigError(
      f"data.target: expected one of {tuple(TARGET_VIEWS)}, found {data.target!r}"
    )
  if data.source == "day" and data.target == "image":
    raise ImageToImageConfigError("data.target: a day photo translated to itself; use 'night'")
  if not isinstance(data.resolution, int) or data.resolution < 8:
    raise ImageToImageConfigError(
      f"data.resolution: expected an int >= 8, found {data.resolution!r}"
    )


def source_channels(source: str) -> int:
  """Channels of the model input a source becomes."""
  return {"label": scenes.NUM_LABELS, "day": 3}.get(source, 1)


def encode_source(source: str, pixels: jax.Array) -> jax.Array:
  """uint8 source pixels (B, H, W, Cs) -> float32 model input (jittable)."""
  if source == "label":
    return jax.nn.one_hot(pixels[..., 0].astype(jnp.int32), scenes.NUM_LABELS, dtype=jnp.float32)
  return pixels.astype(jnp.float32) / 127.5 - 1.0


def source_picture(source: str, pixels: np.ndarray) -> np.ndarray:
  """uint8 source pixels -> the uint8 RGB picture a person would look at."""
  pixels = np.asarray(pixels)
  if source == "label":
    return scenes.LABEL_COLOURS[pixels[..., 0]]
  if pixels.shape[-1] == 1:
    return np.repeat(pixels, 3, axis=-1)
  return pixels


def translation_grid(
  source: str,
  sources: np.ndarray,
  outputs: np.ndarray,
  targets: np.ndarray | None = None,
  captions: Sequence[str] | None = None,
  *,
  scale: int = 2,
) -> np.ndarray:
  """One row per example: input | output (| target), captioned under the input."""
  columns = [source_picture(source, sources), outputs]
  if targets is not None:
    columns.append(targets)
  tiles = np.stack(columns, axis=1).reshape(-1, *outputs.shape[1:])
  labels = None
  if captions is not None:
    names = ["input", "output", "target"][: len(columns)]
    labels = [f"{c}: {n}" if n == "input" else n for c in captions for n in names]
  return make_grid(tiles, labels, ncols=len(columns), scale=scale)


class ImageToImageTask(GenerativeTask):
  """Base of the image-to-image tasks (see the module docstring)."""

  sample_spec = SampleSpec("translation.png", (".png",), takes_images=True)
  sources: tuple[str, ...] = tuple(SOURCE_VIEWS)  # what this family can translate from
  generate_batch_size: int = 64

  def __init__(self, config):
    self.config = config
    check_data_config(config.data, sources=self.sources)
    self.source = config.data.source
    self.target = config.data.target
    self.resolution = config.data.resolution
    self.paired = bool(config.data.get("paired", True))

  # ---- data -----------------------------------------------------------------

  @property
  def source_channels(self) -> int:
    return source_channels(self.source)

  @property
  def source_pixel_channels(self) -> int:
    return 3 if self.source == "day" else 1

  @property
  def target_style(self) -> str:
    return "night" if self.target == "night" else "day"

  def split_arrays(self, split: str, count: int) -> dict[str, np.ndarray]:
    """{"source", "target"} uint8 of a split, plus the scenes' views (paired, or "test")."""
    data = self.config.data
    if self.paired or split != "train":
      views = scenes.make_scenes(split, count, resolution=self.resolution, seed=data.seed)
      views = dict(views)
      views["source"] = views[SOURCE_VIEWS[self.source]]
      views["target"] = views[TARGET_VIEWS[self.target]]
      return views
    if self.source != "day" or self.target != "night":
      raise ImageToImageConfigError(
        f"data.paired: unpaired data exists for day -> night only, found "
        f"{self.source!r} -> {self.target!r}"
      )
    domains = scenes.make_unpaired(split, count, resolution=self.resolution, seed=data.seed)
    return {"source": domains["day"], "target": domains["night"]}

  def train_arrays(self) -> dict[str, np.ndarray]:
    arrays = self.split_arrays("train", self.config.data.num_train_examples)
    return {"source": arrays["source"], "target": arrays["target"]}

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    r = self.resolution
    return {
      "source": jax.ShapeDtypeStruct((batch_size, r, r, self.source_pixel_channels), jnp.uint8),
      "target": jax.ShapeDtypeStruct((batch_size, r, r, 3), jnp.uint8),
    }

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    for key, spec in self.abstract_batch(len(batch["target"])).items():
      if key not in batch or tuple(batch[key].shape[1:]) != spec.shape[1:]:
        found = None if key not in batch else tuple(batch[key].shape)
        raise ValueError(
          f"batch[{key!r}]: expected (B, {', '.join(map(str, spec.shape[1:]))}) for "
          f"data.source={self.source!r} at resolution {self.resolution}, found {found}"
        )

  def source_input(self, pixels: jax.Array) -> jax.Array:
    return encode_source(self.source, pixels)

  def target_input(self, pixels: jax.Array) -> jax.Array:
    return pixels.astype(jnp.float32) / 127.5 - 1.0

  # ---- the method -----------------------------------------------------------

  def translate(self, params, source: jax.Array, rng: jax.Array, **options) -> jax.Array:
    """float32 (B, H, W, 3) in [-1, 1] for model inputs `source` (jittable)."""
    raise NotImplementedError

  def translation_params(self, params):
    """The parameters `translate` reads (GANs leave their discriminators out)."""
    return params

  # ---- generation -----------------------------------------------------------

  def conditions(self, prompts, *, seconds=None):
    raise PromptError(
      f"task {self.config.task!r} translates images: give input images (`--input`), "
      f"not only prompts"
    )

  def image_conditions(
    self, images: Sequence[np.ndarray], names: Sequence[str], prompts: Sequence[str] | None = None
  ) -> dict[str, np.ndarray]:
    """{"source": uint8 (N, H, W, Cs), "name": (N,) str[, "caption"]}; named errors first."""
    if not len(images):
      raise scenes.SourceImageError("--input: expected at least one image, found none")
    checked = []
    for image, name in zip(images, names, strict=True):
      try:
        checked.append(scenes.check_source(self.source, image, self.resolution))
      except scenes.SourceImageError as e:
        raise scenes.SourceImageError(f"--input {name}: {e}") from e
    conditions = {"source": np.stack(checked), "name": np.asarray(list(names), dtype=str)}
    if prompts is not None:
      prompts = check_prompts(prompts)
      if len(prompts) not in (1, len(images)):
        raise PromptError(
          f"--prompt: expected one prompt or one per input image ({len(images)}), "
          f"found {len(prompts)}"
        )
      conditions["caption"] = np.asarray(prompts * (len(images) // len(prompts)), dtype=str)
    return conditions

  @functools.partial(jax.jit, static_argnames=("self", "options"))
  def _translate_pixels(self, params, pixels, rng, options=()):
    return self.translate(params, self.source_input(pixels), rng, **dict(options))

  def translate_pixels(
    self, params, pixels: np.ndarray, rng: jax.Array, batch_size: int | None = None, **options
  ) -> np.ndarray:
    """uint8 outputs for uint8 source pixels, in fixed-size chunks (one compiled program)."""
    self.check_options(options)
    frozen = tuple(sorted(options.items()))
    chunk = min(batch_size or self.generate_batch_size, len(pixels))

    def run(i, chunk_pixels):
      out = self._translate_pixels(params, chunk_pixels, jax.random.fold_in(rng, i), frozen)
      return to_uint8(np.asarray(out))

    return map_padded_chunks(run, [np.asarray(pixels)], chunk)

  def generate(self, params, conditions, rng, **options) -> dict[str, np.ndarray]:
    """{"image": uint8 (N, H, W, 3)} for `conditions["source"]`."""
    if "source" not in conditions:
      raise ValueError(f"conditions: expected a 'source' entry, found keys {sorted(conditions)}")
    return {"image": self.translate_pixels(params, conditions["source"], rng, **options)}

  def save_samples(self, samples, conditions, path, *, scale=None, ncols=None) -> str:
    """Writes one PNG: a row per input, input | output (| target when known)."""
    del ncols  # one row per input
    self.check_output(path)
    grid = translation_grid(
      self.source,
      conditions["source"],
      samples["image"],
      conditions.get("target"),
      [str(n) for n in conditions.get("name", range(len(samples["image"])))],
      scale=scale or 2,
    )
    return save_png(path, grid)

  def preview(self, params, rng) -> np.ndarray:
    test = self.split_arrays("test", PREVIEW_EXAMPLES)
    outputs = self.translate_pixels(params, test["source"], rng)
    return translation_grid(self.source, test["source"], outputs, test["target"], scale=2)
