"""The image tasks' generation signature: conditions, checked options, the PNG grid.

Nothing here compiles: every bad argument must be named before the sampler
is traced (generate is called with params=None, which any traced program
would trip over with another error).
"""

import math

import jax
import numpy as np
import pytest
from PIL import Image
from tiny_configs import tiny_text_to_image_config

from jaxgen.render.grid import make_grid
from jaxgen.tasks.image.autoencoder import AutoencoderTask
from jaxgen.tasks.image.latent_diffusion import LatentDiffusionTask
from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.tasks.image.text_to_image import TextToImageTask
from jaxgen.training.task import PromptError
from jaxgen.training.task import GenerativeTask, SampleSpec, Task

CAPTIONS = ["a small red circle in the top left", "a large blue square in the centre"]


@pytest.fixture(scope="module")
def task():
  return TextToImageTask(tiny_text_to_image_config())


def test_image_tasks_implement_the_task_protocol():
  spec = SampleSpec(
    default_out="grid.png",
    out_extensions=(".png",),
    options=("sampler", "num_steps", "guidance_scale"),
  )
  for cls in (TextToImageTask, LatentDiffusionTask):
    assert issubclass(cls, GenerativeTask) and cls.sample_spec == spec
  assert issubclass(LatentDiffusionTask, TextToImageTask)  # it inherits generation
  assert issubclass(AutoencoderTask, Task) and not issubclass(AutoencoderTask, GenerativeTask)


def test_conditions_are_captions(task):
  conditions = task.conditions(CAPTIONS)
  assert set(conditions) == {"caption"}
  assert conditions["caption"].dtype.kind == "U"
  assert conditions["caption"].tolist() == CAPTIONS


@pytest.mark.parametrize(
  "prompts, seconds, message",
  [
    ([], None, "prompts: expected at least one prompt, found none"),
    (["a red circle", " "], None, r"prompts: expected non-empty strings, found \[' '\]"),
    (["a red circle", ""], None, r"prompts: expected non-empty strings, found \[''\]"),
    ("a red circle", None, "prompts: expected a sequence of strings, found str"),
    (
      ["a red circle"],
      2.0,
      "seconds: images have no duration; expected None for task 'text_to_image', found 2.0",
    ),
  ],
)
def test_conditions_name_bad_prompts(task, prompts, seconds, message):
  with pytest.raises(PromptError, match=message):
    task.conditions(prompts, seconds=seconds)


@pytest.mark.parametrize(
  "options, option, message",
  [
    (dict(sampler="plms"), "sampler", "sampler: expected one of .*'ddim'.*, found 'plms'"),
    (
      dict(num_steps=0),
      "num_steps",
      "num_steps: expected a positive number of steps at most "
      r"1000 \(the training timesteps",
    ),
    (dict(num_steps=1001), "num_steps", "num_steps: expected .* at most 1000 .*found 1001"),
    (dict(num_steps=2.5), "num_steps", "num_steps: expected .*found 2.5"),
    (
      dict(guidance_scale=-1.0),
      "guidance_scale",
      "guidance_scale: expected a finite scale >= 0, found -1.0",
    ),
    (dict(guidance_scale=math.nan), "guidance_scale", "guidance_scale: expected a finite scale"),
    (dict(guidance_scale=math.inf), "guidance_scale", "guidance_scale: expected a finite scale"),
  ],
)
def test_generate_names_bad_options_before_compiling(task, options, option, message):
  with pytest.raises(SamplingOptionError, match=message) as error:
    task.generate(None, task.conditions(CAPTIONS), jax.random.PRNGKey(0), **options)
  assert error.value.option == option


def test_generate_names_bad_conditions_and_batch_size(task):
  rng = jax.random.PRNGKey(0)
  with pytest.raises(PromptError, match=r"conditions: expected a 'caption' entry, found keys \[\]"):
    task.generate(None, {}, rng)
  with pytest.raises(PromptError, match=r"conditions\['caption'\]: expected non-empty strings"):
    task.generate(None, {"caption": np.array(["a red circle", ""])}, rng)
  with pytest.raises(ValueError, match="batch_size: expected a positive integer, found 0"):
    task.generate(None, task.conditions(CAPTIONS), rng, batch_size=0)


def test_save_samples_writes_the_captioned_grid(task, tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), np.uint8)
  conditions = task.conditions(CAPTIONS)
  path = str(tmp_path / "out" / "grid.png")
  assert task.save_samples({"image": images}, conditions, path, scale=2, ncols=1) == path
  written = np.asarray(Image.open(path).convert("RGB"))
  np.testing.assert_array_equal(written, make_grid(images, CAPTIONS, scale=2, ncols=1))
  with pytest.raises(ValueError, match=r"--out: expected a file ending in one of \('.png',\)"):
    task.save_samples({"image": images}, conditions, str(tmp_path / "grid.gif"))
  with pytest.raises(ValueError, match="--out: expected a file ending"):
    task.check_output("samples.jpg")
  task.check_output("SAMPLES.PNG")
