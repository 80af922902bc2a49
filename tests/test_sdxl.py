"""SDXL against diffusers: U-Net text_time parity, both text encoders, folders both ways.

A tiny random-weight `StableDiffusionXLPipeline` (SDXL's layout: a first
level without attention, per-level transformer depth, linear projections,
the text_time added embedding, CLIP + projected CLIP text encoders, offline
BPE tokenizers, the second padding with "!") is saved by diffusers; jaxgen
loads it, samples the same images from the same latents, writes it back, and
diffusers reloads it strictly and samples the same again. The paper-size
counts come from `jax.eval_shape` and diffusers/transformers on the meta device.
"""

import copy
import importlib.util
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
safe_open = pytest.importorskip("safetensors").safe_open

from tiny_diffusers import tiny_text_config, tiny_tokenizer, tiny_vae

from jaxgen.convert import diffusers_sdxl, transformers_clip
from jaxgen.convert.diffusers_pipeline import DIFFUSERS_WEIGHTS_NAME, PipelineFolderError
from jaxgen.convert.diffusers_unet import unet_from_diffusers
from jaxgen.errors import UnsupportedConfigError
from jaxgen.models.clip_text import (
  CLIPTextModelWithProjection,
  CLIPTextWithProjectionConfig,
  abstract_projection_variables,
)
from jaxgen.models.unet import UNet2DConditionModel, UNetConfig, abstract_variables
from jaxgen.nn.partitioning import unannotated_params
from jaxgen.pipelines import stable_diffusion_xl

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs" / "arch"
PROMPTS = ["a cat", "dog on a mat"]
NUM_STEPS = 4
GUIDANCE = 5.0
HEIGHT = WIDTH = 16  # Latents 8x8: the tiny VAE downsamples by 2.
MAX_LENGTH = 12

# SDXL's U-Net layout in miniature (two levels, not three, for a shorter
# compile): no attention at the first level, per-level transformer depth (2 at
# the second level and in the mid block), linear projections, per-level heads,
# text_time with a 24-wide pooled embedding and six 8-wide time-id sinusoids
# (24 + 6 * 8 = 72).
TINY_UNET = dict(
  sample_size=8,
  block_out_channels=(32, 64),
  layers_per_block=1,
  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
  transformer_layers_per_block=(1, 2),
  attention_head_dim=(2, 4),
  use_linear_projection=True,
  cross_attention_dim=32 + 48,
  norm_num_groups=16,
  addition_embed_type="text_time",
  addition_time_embed_dim=8,
  projection_class_embeddings_input_dim=24 + 6 * 8,
)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("sdxl"))
  torch.manual_seed(0)
  tokenizer = tiny_tokenizer(os.path.join(root, "tok"), MAX_LENGTH)
  tokenizer_2 = tiny_tokenizer(os.path.join(root, "tok2"), MAX_LENGTH, pad_token="!")
  # Two layers: the penultimate state (SDXL's context) is the first layer's output.
  text_encoder = transformers.CLIPTextModel(tiny_text_config(tokenizer))
  # SDXL's second encoder: GELU, legacy ids (pooled at the largest id), a projection.
  text_encoder_2 = transformers.CLIPTextModelWithProjection(
    tiny_text_config(
      tokenizer_2,
      hidden_size=48,
      hidden_act="gelu",
      projection_dim=24,
      bos_token_id=0,
      eos_token_id=2,
    )
  )
  vae = tiny_vae(scaling_factor=0.13025)
  pipe = diffusers.StableDiffusionXLPipeline(
    vae=vae,
    text_encoder=text_encoder,
    text_encoder_2=text_encoder_2,
    tokenizer=tokenizer,
    tokenizer_2=tokenizer_2,
    unet=diffusers.UNet2DConditionModel(**TINY_UNET),
    # SDXL base's scheduler: Euler on scaled-linear betas, 'leading' spacing.
    scheduler=diffusers.EulerDiscreteScheduler(
      beta_start=0.00085,
      beta_end=0.012,
      beta_schedule="scaled_linear",
      timestep_spacing="leading",
      steps_offset=1,
    ),
    force_zeros_for_empty_prompt=True,
    add_watermarker=False,
  )
  folder = os.path.join(root, "pipeline")
  pipe.save_pretrained(folder)
  return folder


@pytest.fixture(scope="module")
def latents():
  return np.random.default_rng(0).standard_normal((len(PROMPTS), 8, 8, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def sdxl(tiny_folder):
  return diffusers_sdxl.load_stable_diffusion_xl(tiny_folder)


@pytest.fixture(scope="module")
def diffusers_pipe(tiny_folder):
  return _diffusers_pipeline(tiny_folder)


@pytest.fixture(scope="module")
def reference(diffusers_pipe, latents):
  """diffusers' images with SDXL's defaults (zeros as the negative branch, no size options)."""
  return _diffusers_images(diffusers_pipe, latents)


def _diffusers_pipeline(folder):
  pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
  pipe.set_progress_bar_config(disable=True)
  return pipe


def _diffusers_images(pipe, latents, **kwargs):
  with torch.no_grad():
    return pipe(
      prompt=PROMPTS,
      num_inference_steps=NUM_STEPS,
      guidance_scale=GUIDANCE,
      height=HEIGHT,
      width=WIDTH,
      latents=torch.from_numpy(latents.transpose(0, 3, 1, 2).copy()),
      output_type="np",
      **kwargs,
    ).images


def test_pipeline_matches_diffusers_and_round_trips(
  sdxl, diffusers_pipe, latents, reference, tmp_path
):
  assert sdxl.scheduler.sampler == "euler" and sdxl.scheduler.timestep_spacing == "leading"
  assert sdxl.force_zeros_for_empty_prompt
  images = np.asarray(
    stable_diffusion_xl.sample(sdxl, PROMPTS, latents, num_steps=NUM_STEPS, guidance_scale=GUIDANCE)
  )
  assert images.shape == reference.shape == (2, HEIGHT, WIDTH, 3)
  # Not degenerate: the images vary and differ between prompts.
  assert reference.std() > 0.01 and np.abs(reference[0] - reference[1]).max() > 1e-3
  np.testing.assert_allclose(images, reference, atol=1e-4)

  exported = str(tmp_path / "exported")
  diffusers_sdxl.save_stable_diffusion_xl(sdxl, exported)
  with open(os.path.join(exported, "model_index.json")) as f:
    assert json.load(f)["force_zeros_for_empty_prompt"] is True
  reloaded = _diffusers_pipeline(exported)
  # Strict and exact: each weight file holds the original module's keys, no
  # more, no fewer, and diffusers loads them bit for bit.
  for name in stable_diffusion_xl.COMPONENTS:
    original = getattr(diffusers_pipe, name).state_dict()
    file_name = "model.safetensors" if name.startswith("text") else DIFFUSERS_WEIGHTS_NAME
    with safe_open(os.path.join(exported, name, file_name), framework="np") as f:
      assert set(f.keys()) == set(original), name
    for key, value in getattr(reloaded, name).state_dict().items():
      np.testing.assert_array_equal(value.numpy(), original[key].numpy(), err_msg=key)
  np.testing.assert_allclose(_diffusers_images(reloaded, latents), reference, atol=1e-5)


def test_negative_prompts_and_size_conditions_match_diffusers(
  diffusers_pipe, sdxl, latents, reference
):
  """Encoded negative prompts (not zeros) and non-default size/crop time ids reach the U-Net."""
  options = {"original_size": (32, 24), "crops_coords_top_left": (4, 2)}
  negative = ["blurry", "a cat"]
  expected = _diffusers_images(diffusers_pipe, latents, negative_prompt=negative, **options)
  images = np.asarray(
    stable_diffusion_xl.sample(
      sdxl,
      PROMPTS,
      latents,
      num_steps=NUM_STEPS,
      guidance_scale=GUIDANCE,
      negative_prompts=negative,
      **options,
    )
  )
  np.testing.assert_allclose(images, expected, atol=1e-4)
  assert np.abs(expected - reference).max() > 1e-3  # The options changed the image.


def _randomize(module, seed: int, std: float = 0.2):
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * std)
  return module.eval()


def test_unet_text_time_matches_diffusers(diffusers_pipe):
  """Random weights everywhere (add_embedding included) and random size ids."""
  config = UNetConfig(**TINY_UNET)
  torch_unet = _randomize(copy.deepcopy(diffusers_pipe.unet), seed=1)
  params = unet_from_diffusers(torch_unet.state_dict(), config)
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
  t = np.array([3, 700])
  context = rng.standard_normal((2, 5, 80)).astype(np.float32)
  pooled = rng.standard_normal((2, 24)).astype(np.float32)
  time_ids = np.array([[1024, 768, 0, 0, 1024, 1024], [512, 512, 16, 8, 256, 256]], np.float32)
  apply = jax.jit(
    lambda ids: UNet2DConditionModel(config).apply(
      {"params": params}, x, t, context, text_embeds=pooled, time_ids=ids
    )
  )
  out = np.asarray(apply(time_ids))
  with torch.no_grad():
    reference = torch_unet(
      torch.from_numpy(x.transpose(0, 3, 1, 2)),
      torch.from_numpy(t),
      torch.from_numpy(context),
      added_cond_kwargs={
        "text_embeds": torch.from_numpy(pooled),
        "time_ids": torch.from_numpy(time_ids),
      },
    ).sample.numpy()
  reference = reference.transpose(0, 2, 3, 1)
  assert np.abs(reference).max() > 0.1
  np.testing.assert_allclose(out, reference, atol=1e-4 * np.abs(reference).max())
  # The time ids matter: another crop gives another output.
  moved = apply(time_ids[::-1].copy())
  assert np.abs(np.asarray(moved) - out).max() > 1e-3


def test_projected_text_encoder_matches_transformers(tiny_folder, diffusers_pipe):
  torch_model = diffusers_pipe.text_encoder_2
  config, params = transformers_clip.load_clip_text_projection_model(
    os.path.join(tiny_folder, "text_encoder_2")
  )
  assert config.projection_dim == 24 and config.eos_token_id == 2
  # Legacy ids (eos_token_id=2): the pooled state is at the largest id, the end-of-text token.
  ids = np.random.default_rng(2).integers(1, config.vocab_size - 1, (2, MAX_LENGTH))
  ids[0, 4], ids[1, 9] = config.vocab_size - 1, config.vocab_size - 1
  out = jax.jit(
    lambda ids: CLIPTextModelWithProjection(config).apply(
      {"params": params}, ids, output_hidden_states=True
    )
  )(jnp.asarray(ids))
  with torch.no_grad():
    reference = torch_model(torch.from_numpy(ids), output_hidden_states=True)
  np.testing.assert_allclose(out.text_embeds, reference.text_embeds.numpy(), atol=1e-5)
  np.testing.assert_allclose(out.hidden_states[-2], reference.hidden_states[-2].numpy(), atol=1e-5)
  state = transformers_clip.clip_text_projection_to_transformers(params)
  torch_state = torch_model.state_dict()
  assert set(state) == set(torch_state)
  for name, value in state.items():
    np.testing.assert_array_equal(value, torch_state[name].numpy(), err_msg=name)


def _arch(name: str):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_paper_size_parameter_counts():
  """SDXL base U-Net and the OpenCLIP bigG encoder: jax.eval_shape = diffusers/transformers."""
  unet_config = UNetConfig(**_arch("sdxl_unet").unet.to_dict())
  text_config = CLIPTextWithProjectionConfig(**_arch("openclip_bigg_text").text_encoder.to_dict())
  # diffusers' count (2.7 s more to build on the meta device): REFERENCES_WAVE2.md section 16.
  unet_variables = abstract_variables(unet_config)
  assert _count(unet_variables) == 2_567_463_684
  assert unannotated_params(unet_variables) == []  # add_embedding included: shardable.
  with torch.device("meta"):
    torch_text = transformers.CLIPTextModelWithProjection(
      transformers.CLIPTextConfig(**text_config.to_transformers())
    )
  text_variables = abstract_projection_variables(text_config)
  assert _count(text_variables) == 694_659_840
  assert unannotated_params(text_variables) == []
  assert sum(p.numel() for p in torch_text.parameters()) == 694_659_840


def test_bad_configs_and_inputs_are_named(tiny_folder, sdxl, tmp_path):
  with pytest.raises(ValueError, match="addition_time_embed_dim: addition_embed_type='text_time'"):
    UNetConfig(**{**TINY_UNET, "addition_time_embed_dim": None})
  with pytest.raises(UnsupportedConfigError, match="addition_embed_type: expected one of"):
    UNetConfig(**{**TINY_UNET, "addition_embed_type": "text_image"})
  with pytest.raises(UnsupportedConfigError, match="only used with addition_embed_type"):
    UNetConfig(**{**TINY_UNET, "addition_embed_type": None})
  with pytest.raises(UnsupportedConfigError, match="addition_embed_type"):
    UNetConfig.from_diffusers({**TINY_UNET, "addition_embed_type": "image"})

  config = UNetConfig(**TINY_UNET)
  model = UNet2DConditionModel(config)
  x, t, context = jnp.zeros((2, 8, 8, 4)), jnp.zeros((2,)), jnp.zeros((2, 3, 80))
  with pytest.raises(ValueError, match="text_embeds, time_ids: required"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, context))
  with pytest.raises(ValueError, match=r"text_embeds: expected shape \(2, 24\)"):
    jax.eval_shape(
      lambda: model.init(
        jax.random.key(0), x, t, context, text_embeds=jnp.zeros((2, 32)), time_ids=jnp.zeros((2, 6))
      )
    )
  plain = UNet2DConditionModel(UNetConfig(**{**TINY_UNET, **dict.fromkeys(_TEXT_TIME_KEYS)}))
  with pytest.raises(ValueError, match="this U-Net has no text_time embedding"):
    jax.eval_shape(lambda: plain.init(jax.random.key(0), x, t, context, time_ids=jnp.zeros((2, 6))))

  with pytest.raises(ValueError, match="unet_config.cross_attention_dim: expected the two text"):
    stable_diffusion_xl.StableDiffusionXL(
      UNetConfig(**{**TINY_UNET, "cross_attention_dim": 48}),
      sdxl.vae_config,
      sdxl.text_config,
      sdxl.text_config_2,
      sdxl.scheduler,
      sdxl.params,
      sdxl.tokenizer,
      sdxl.tokenizer_2,
    )
  with pytest.raises(ValueError, match="height, width: the latents describe a 16x16 image"):
    stable_diffusion_xl.sample(sdxl, PROMPTS, np.zeros((2, 8, 8, 4), np.float32), height=32)

  with open(os.path.join(tiny_folder, "model_index.json")) as f:
    index = json.load(f)
  wrong = tmp_path / "wrong"
  wrong.mkdir()
  (wrong / "model_index.json").write_text(
    json.dumps({**index, "text_encoder_2": ["transformers", "CLIPTextModel"]})
  )
  with pytest.raises(PipelineFolderError, match="text_encoder_2: expected one of"):
    diffusers_sdxl.load_stable_diffusion_xl(wrong)
  (wrong / "model_index.json").write_text(
    json.dumps({**index, "_class_name": "StableDiffusionPipeline"})
  )
  with pytest.raises(PipelineFolderError, match="expected _class_name 'StableDiffusionXLPipeline'"):
    diffusers_sdxl.load_stable_diffusion_xl(wrong)
  assert diffusers_sdxl.is_sdxl_folder(tiny_folder) and not diffusers_sdxl.is_sdxl_folder(wrong)


_TEXT_TIME_KEYS = (
  "addition_embed_type",
  "addition_time_embed_dim",
  "projection_class_embeddings_input_dim",
)
