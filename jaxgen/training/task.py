"""The protocol through which the trainer and the command line know a task.

The trainer is handed a task object (`trainer.train(task, config, workdir)`);
it never looks a task up by name. A task subclasses `Task` (to inherit the
defaults of its optional hooks) or implements every method below.

Tasks that generate from prompts also subclass `GenerativeTask`: one
generation signature, conditions in and samples out (both dicts of host
arrays keyed like a batch), sampler options as keyword arguments, so the
command line never probes a task with `hasattr` or `inspect`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import jax
import numpy as np

if TYPE_CHECKING:
  from jaxgen.data.grain_pipeline import ExampleDataset

PyTree = Any
Batch = Mapping[str, jax.Array]

# A loss may return, under this key of its metrics, new values for some
# parameters that are not trained by gradients (e.g. a VQ codebook's EMA
# cluster statistics): a nested dict shaped like a sub-tree of the params.
# The trainer writes them over params and EMA params after the optimizer step.
STATE_UPDATES_KEY = "state_updates"


class PromptError(ValueError):
  """Prompts for an image task are missing or empty, or come with a duration."""


def check_prompts(prompts: Any, name: str = "prompts") -> list[str]:
  """The prompts as a list of str; a PromptError for none, a lone string or an empty one."""
  if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (Sequence, np.ndarray)):
    raise PromptError(f"{name}: expected a sequence of strings, found {type(prompts).__name__}")
  prompts = list(prompts)
  if not prompts:
    raise PromptError(f"{name}: expected at least one prompt, found none")
  empty = [p for p in prompts if not isinstance(p, str) or not p.strip()]
  if empty:
    raise PromptError(f"{name}: expected non-empty strings, found {empty[:5]!r}")
  return [str(p) for p in prompts]


class Task:
  """A trainable task: its data, its model's init, loss and preview pictures.

  `config` is the experiment's `ml_collections.ConfigDict`. Every method that
  takes `params` is pure and jittable, except `train_arrays`, `train_dataset`,
  `check_batch`, `train_buckets` and `preview`, which run on the host.
  """

  config: Any
  # Dotted config keys that name other run directories this task loads (e.g. a
  # frozen autoencoder's `autoencoder.workdir`). The task makes them absolute in
  # its config when it is built, so the run's config.json finds them from any
  # working directory; `jaxgen.tasks.registry.run_config` resolves older relative ones.
  dependent_runs: ClassVar[tuple[str, ...]] = ()

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    """The training split as equally long host arrays, keyed like a batch."""
    raise NotImplementedError

  def abstract_batch(self, batch_size: int) -> Mapping[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of a batch, for building states without data."""
    raise NotImplementedError

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    """Raises a named ValueError if a host batch does not fit the config."""
    raise NotImplementedError

  def init(self, rng: jax.Array, batch: Batch) -> PyTree:
    """Parameters (boxed with logical axis names, or plain) for a batch of this shape."""
    raise NotImplementedError

  def loss(self, params: PyTree, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict]:
    """Scalar training loss and a dict of scalar metrics.

    The trainer adds `batch["step"]` (int32 scalar, updates so far). The
    metrics may carry `STATE_UPDATES_KEY` (see above).
    """
    raise NotImplementedError

  def preview(self, params: PyTree, rng: jax.Array) -> np.ndarray:
    """A uint8 (H, W, 3) picture showing the model now (e.g. a captioned sample grid)."""
    raise NotImplementedError

  def train_dataset(self) -> ExampleDataset | None:
    """Optional: the training split as records decoded on the fly by grain, instead of arrays.

    Return a `jaxgen.data.grain_pipeline.ExampleDataset` (random-access records
    and a `transform(record, rng) -> {key: array}` run in `worker_count` worker
    processes) and the trainer batches it with `GrainIterator`: per-process
    slices of each global batch, a fresh shuffle every epoch, bad records
    (`BadRecordError`) skipped and counted, the iterator state in every
    checkpoint. `train_arrays` and `train_buckets` are then not called, and
    every example must have the shapes of `abstract_batch`. For image-caption
    records, `jaxgen.data.image_text_pipeline.image_text_dataset` builds one:

      def train_dataset(self):
        records = read_image_text("coco2017", self.config.data.manual_dir, "train")
        return image_text_dataset(records, resolution=64, random_flip=True,
                                  tokenize=CaptionIds(...), worker_count=2)

    The default, None, trains on `train_arrays()` held in memory.
    """
    return None

  def train_buckets(self, arrays: Mapping[str, np.ndarray]) -> tuple:
    """Optional: `jaxgen.data.pipeline.LengthBuckets` that crop padded axes of batches.

    One train step compiles per bucket; only a task whose loss ignores that
    padding may crop it. The default, no buckets, keeps every batch whole.
    """
    del arrays
    return ()


@dataclasses.dataclass(frozen=True)
class SampleSpec:
  """What `jaxgen sample` checks before it builds anything.

  Attributes:
    default_out: output file when `--out` is not given.
    out_extensions: the file endings `save_samples` can write (lower case).
    options: the keyword options `generate` takes (`sampler`, `num_steps`,
      `guidance_scale`, ...); the CLI passes only these, and only when set.
    takes_seconds: whether each sample needs a duration (`--seconds`).
    takes_images: whether samples are made from input images (`--input`,
      through `image_conditions`; prompts are then optional).
    takes_audio: whether samples are made from music files (`--music`,
      through `audio_conditions`; the task then takes no prompts).
    takes_speech: whether samples are made from speech files and one
      reference face (`--audio`, `--reference`, through `speech_conditions`;
      the task then takes no prompts): talking faces.
    takes_first_frame: whether a sample may start from a given first frame
      (`--first-frame`, through `first_frame_conditions`; prompts are still
      required): image-to-video.
  """

  default_out: str
  out_extensions: tuple[str, ...]
  options: tuple[str, ...] = ()
  takes_seconds: bool = False
  takes_images: bool = False
  takes_audio: bool = False
  takes_speech: bool = False
  takes_first_frame: bool = False


class OutputPathError(ValueError):
  """An output file cannot be written where it is asked for (checked before sampling)."""


def check_writable_file(path: str, name: str = "--out") -> None:
  """Named error unless `path` can be created or overwritten as a file.

  Missing parent folders are fine (`save_samples` creates them) as long as the
  nearest existing one is a writable directory. Remote paths (gs://) are not checked.
  """
  path = os.fspath(path)
  if "://" in path:
    return
  if os.path.isdir(path):
    raise OutputPathError(f"{name}: expected a file name, found the directory {path!r}")
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise OutputPathError(f"{name}: cannot write {path!r}: {parent!r} is a file, not a directory")
  if os.path.exists(path) and not os.access(path, os.W_OK):
    raise OutputPathError(f"{name}: cannot overwrite {path!r}: permission denied")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise OutputPathError(
      f"{name}: cannot write {path!r}: permission denied in {parent!r}; choose another path"
    )


class GenerativeTask(Task):
  """A task that generates samples from text prompts."""

  sample_spec: ClassVar[SampleSpec]

  def conditions(
    self, prompts: Sequence[str], *, seconds: float | None = None
  ) -> dict[str, np.ndarray]:
    """Host conditions for `generate` (keyed like a batch), with named errors for bad input."""
    raise NotImplementedError

  def image_conditions(
    self, images: Sequence[np.ndarray], names: Sequence[str], prompts: Sequence[str] | None = None
  ) -> dict[str, np.ndarray]:
    """Host conditions from input images, for a task whose `sample_spec.takes_images`.

    `images` are uint8 arrays as read from the files `names` (which messages
    and grids use); `prompts`, when given, caption them. Named errors for bad
    images, before anything compiles.
    """
    raise NotImplementedError

  def audio_conditions(
    self, audio: Sequence[np.ndarray], sr: Sequence[int], names: Sequence[str]
  ) -> dict[str, Any]:
    """Host conditions from music, for a task whose `sample_spec.takes_audio`.

    `audio` are mono float waveforms as read from the files `names`, `sr` their
    sample rates (one per waveform). Named errors for music the task cannot
    use (too short, silent, a rate too low), before anything compiles.
    """
    del audio, sr, names
    raise NotImplementedError(
      f"audio_conditions: task {self.config.task!r} takes no music (its "
      "sample_spec.takes_audio is False)"
    )

  def speech_conditions(
    self,
    audio: Sequence[np.ndarray],
    sr: Sequence[int],
    names: Sequence[str],
    reference: np.ndarray,
    reference_name: str,
  ) -> dict[str, Any]:
    """Host conditions from speech and a face, for a task whose `sample_spec.takes_speech`.

    `audio` are mono float waveforms as read from the files `names`, `sr` their
    sample rates; `reference` is the face image as read from `reference_name`
    (uint8, as stored). Named errors for speech or a face the task cannot use
    (silent, too short, a face of the wrong size or channels), before anything
    compiles.
    """
    del audio, sr, names, reference, reference_name
    raise NotImplementedError(
      f"speech_conditions: task {self.config.task!r} takes no speech (its "
      "sample_spec.takes_speech is False)"
    )

  def first_frame_conditions(
    self, image: np.ndarray, name: str, prompts: Sequence[str]
  ) -> dict[str, Any]:
    """Host conditions for clips that start from `image`, for a `sample_spec.takes_first_frame`
    task: each prompt's clip starts from it. `image` is uint8 as read from the file `name`.
    Named errors for an image the task cannot use (size, channels), before anything compiles.
    """
    del image, name, prompts
    raise NotImplementedError(
      f"first_frame_conditions: task {self.config.task!r} takes no first frame (its "
      "sample_spec.takes_first_frame is False)"
    )

  def check_options(self, options: Mapping[str, Any]) -> None:
    """Named errors for `generate` options (a subset of `sample_spec.options`) before sampling.

    Raise `jaxgen.diffusion.samplers.SamplingOptionError(option, message)` so
    that a command line can name its flag. The default checks nothing.
    """
    del options

  def check_output(self, path: str) -> None:
    """Named error if `path` is not a file `save_samples` can write (checked before sampling)."""
    extensions = self.sample_spec.out_extensions
    if not str(path).lower().endswith(extensions):
      raise OutputPathError(
        f"--out: expected a file ending in one of {extensions} for task "
        f"{self.config.task!r}, got {path!r}"
      )
    check_writable_file(path)

  def generate(
    self, params: PyTree, conditions: Mapping[str, Any], rng: jax.Array, **options
  ) -> dict[str, np.ndarray]:
    """Samples for `conditions`, as host arrays keyed like a batch (e.g. `image`, `motion`)."""
    raise NotImplementedError

  def save_samples(
    self, samples: Mapping[str, np.ndarray], conditions: Mapping[str, Any], path: str, **display
  ) -> str:
    """Writes samples to `path` (a kind from `sample_spec.out_extensions`); returns the path.

    `display` carries the command line's layout options to every task alike:
    `scale` (pixel upscaling of an image grid) and `ncols` (grid columns). A
    task uses those that apply to its output and ignores the others.
    """
    raise NotImplementedError
