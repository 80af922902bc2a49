"""ControlNet: the SD 1.5 count, diffusers parity both ways, controlled U-Net parity, zero init,
and a tiny `StableDiffusionControlNetPipeline` folder sampled to diffusers' image in one scan."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.configs.arch import sd15_unet
from jaxgen.convert.diffusers_controlnet import controlnet_from_diffusers, controlnet_to_diffusers
from jaxgen.convert.diffusers_unet import unet_from_diffusers
from jaxgen.models.controlnet import (
  ControlNetConfig,
  ControlNetModel,
  abstract_variables,
  init_from_unet,
)
from jaxgen.models.unet import UNet2DConditionModel, UNetConfig
from jaxgen.nn import unannotated_params

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# Cross-attention and plain blocks, a 2x hint encoder (8, 16), class labels, guess mode below.
TINY_UNET = {
  "sample_size": 8,
  "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
  "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
  "block_out_channels": (32, 64),
  "layers_per_block": 1,
  "norm_num_groups": 8,
  "cross_attention_dim": 16,
  "attention_head_dim": 2,
}
TINY_HINT = {"conditioning_channels": 3, "conditioning_embedding_out_channels": (8, 16)}


def count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def randomize_(module, seed: int, std: float = 0.2):
  """Every parameter (zero convs included) as N(0, std^2) noise, so parity is not trivially 0."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * std)
  return module.eval()


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(x):
  return x.detach().numpy().transpose(0, 2, 3, 1)


def test_sd15_controlnet_parameter_count():
  config = ControlNetConfig.from_unet(UNetConfig(**sd15_unet.get_config().unet.to_dict()))
  variables = abstract_variables(config)
  params = variables["params"]
  assert count(variables) == 361_279_120
  assert count(params["controlnet_cond_embedding"]) == 1_086_480
  zero_convs = [k for k in params if k.startswith("controlnet_") and "cond" not in k]
  assert len(zero_convs) == 13 and count({k: params[k] for k in zero_convs}) == 11_479_680
  assert unannotated_params(variables) == []


@pytest.fixture(scope="module")
def tiny():
  """(jaxgen config, randomised diffusers ControlNet, randomised diffusers U-Net, inputs)."""
  unet_config = UNetConfig(**TINY_UNET)
  config = ControlNetConfig.from_unet(unet_config, **TINY_HINT)
  torch.manual_seed(0)
  controlnet = randomize_(diffusers.ControlNetModel(**config.to_diffusers()), seed=1)
  unet = randomize_(diffusers.UNet2DConditionModel(**unet_config.to_diffusers()), seed=2)
  rng = np.random.default_rng(0)
  inputs = {
    "sample": rng.standard_normal((2, 8, 8, 4)).astype(np.float32),
    "timesteps": np.array([10, 900], np.int32),
    "context": rng.standard_normal((2, 5, 16)).astype(np.float32),
    "hint": rng.uniform(size=(2, 16, 16, 3)).astype(np.float32),
  }
  return config, controlnet, unet, inputs


@pytest.fixture(scope="module")
def applies(tiny):
  """Jitted (ControlNet, U-Net) applies, shared by the tests (scale traced, guess_mode static)."""
  config = tiny[0]
  controlnet = jax.jit(ControlNetModel(config).apply, static_argnames=("guess_mode",))
  return controlnet, jax.jit(UNet2DConditionModel(UNetConfig(**TINY_UNET)).apply)


def _torch_controlnet(controlnet, inputs, scale, guess_mode=False):
  with torch.no_grad():
    return controlnet(
      nchw(inputs["sample"]),
      torch.from_numpy(inputs["timesteps"]).long(),
      torch.from_numpy(inputs["context"]),
      nchw(inputs["hint"]),
      conditioning_scale=scale,
      guess_mode=guess_mode,
      return_dict=False,
    )


def test_controlnet_matches_diffusers_and_round_trips(tiny, applies):
  config, controlnet, _, inputs = tiny
  state = {k: v.numpy() for k, v in controlnet.state_dict().items()}
  params = controlnet_from_diffusers(state, config)
  back = controlnet_to_diffusers(params)
  assert back.keys() == state.keys()
  assert all(np.array_equal(back[k], state[k]) for k in state)  # Bit-exact round trip.
  for scale, guess_mode in ((0.7, False), (1.3, True)):
    down, mid = applies[0](
      {"params": params},
      inputs["sample"],
      inputs["timesteps"],
      inputs["context"],
      inputs["hint"],
      scale,
      guess_mode=guess_mode,
    )
    ref_down, ref_mid = _torch_controlnet(controlnet, inputs, scale, guess_mode)
    assert len(down) == len(ref_down) == 4
    for ours, ref in zip((*down, mid), (*ref_down, ref_mid)):
      assert float(np.abs(nhwc(ref)).max()) > 1e-2  # Not trivially zero.
      np.testing.assert_allclose(np.asarray(ours), nhwc(ref), atol=1e-4, rtol=1e-4)
  assert ControlNetConfig.from_diffusers(dict(controlnet.config)) == config


def test_controlled_unet_matches_diffusers(tiny, applies):
  config, controlnet, unet, inputs = tiny
  unet_config = UNetConfig(**TINY_UNET)
  cn_params = controlnet_from_diffusers(controlnet.state_dict(), config)
  unet_params = unet_from_diffusers(unet.state_dict(), unet_config)
  down, mid = applies[0](
    {"params": cn_params},
    inputs["sample"],
    inputs["timesteps"],
    inputs["context"],
    inputs["hint"],
    1.0,
    guess_mode=False,
  )
  apply = applies[1]
  ours = apply(
    {"params": unet_params},
    inputs["sample"],
    inputs["timesteps"],
    inputs["context"],
    down_block_additional_residuals=down,
    mid_block_additional_residual=mid,
  )
  ref_down, ref_mid = _torch_controlnet(controlnet, inputs, 1.0)
  with torch.no_grad():
    ref = unet(
      nchw(inputs["sample"]),
      torch.from_numpy(inputs["timesteps"]).long(),
      torch.from_numpy(inputs["context"]),
      down_block_additional_residuals=ref_down,
      mid_block_additional_residual=ref_mid,
    ).sample
  plain = apply({"params": unet_params}, inputs["sample"], inputs["timesteps"], inputs["context"])
  assert float(np.abs(np.asarray(ours) - np.asarray(plain)).max()) > 1e-2  # The control matters.
  np.testing.assert_allclose(np.asarray(ours), nhwc(ref), atol=1e-4, rtol=1e-4)
  with pytest.raises(ValueError, match="down_block_additional_residuals: expected 4 arrays"):
    apply(
      {"params": unet_params},
      inputs["sample"],
      inputs["timesteps"],
      inputs["context"],
      down_block_additional_residuals=down[:-1],
      mid_block_additional_residual=mid,
    )


def test_init_from_unet_copies_the_encoder_and_leaves_the_unet_unchanged(tiny, applies):
  config, _, unet, inputs = tiny
  unet_config = UNetConfig(**TINY_UNET)
  unet_params = unet_from_diffusers(unet.state_dict(), unet_config)
  params = init_from_unet(config, unet_params, jax.random.key(0))
  assert unannotated_params({"params": params}) == []
  # The same weights as diffusers' ControlNetModel.from_unet (zero convs and conv_out zero).
  reference = diffusers.ControlNetModel.from_unet(
    unet, conditioning_embedding_out_channels=(8, 16)
  ).state_dict()
  ours = controlnet_to_diffusers(params)
  for key, value in reference.items():
    if not key.startswith("controlnet_cond_embedding.") or key.startswith(
      "controlnet_cond_embedding.conv_out"
    ):
      np.testing.assert_array_equal(ours[key], value.numpy(), err_msg=key)
  down, mid = applies[0](
    {"params": nn_unbox(params)},
    inputs["sample"],
    inputs["timesteps"],
    inputs["context"],
    inputs["hint"],
    1.0,
    guess_mode=False,
  )
  apply = applies[1]
  base = apply({"params": unet_params}, inputs["sample"], inputs["timesteps"], inputs["context"])
  controlled = apply(
    {"params": unet_params},
    inputs["sample"],
    inputs["timesteps"],
    inputs["context"],
    down_block_additional_residuals=down,
    mid_block_additional_residual=mid,
  )
  np.testing.assert_array_equal(np.asarray(controlled), np.asarray(base))  # Zero convs: exact.
  with pytest.raises(ValueError, match="controlnet_cond: expected the hint image of shape"):
    applies[0](
      {"params": nn_unbox(params)},
      inputs["sample"],
      inputs["timesteps"],
      inputs["context"],
      inputs["hint"][:, :8, :8],
      1.0,
      guess_mode=False,
    )


def nn_unbox(tree):
  import flax.linen as nn

  return nn.unbox(tree)


# -- the pipeline ---------------------------------------------------------------

PROMPTS = ["a cat", "dog on a mat"]
NUM_STEPS = 4
GUIDANCE = 7.5
HEIGHT = WIDTH = 16  # Latents 8x8: the tiny VAE downsamples by 2, and so does the hint encoder.


@pytest.fixture(scope="module")
def controlnet_folder(tmp_path_factory, tiny):
  from tiny_diffusers import (
    save_sd_controlnet_pipeline,
    sd15_ddim_scheduler,
    tiny_text_config,
    tiny_tokenizer,
    tiny_vae,
  )

  transformers = pytest.importorskip("transformers")
  _, controlnet, _, _ = tiny
  folder = str(tmp_path_factory.mktemp("sd_controlnet"))
  torch.manual_seed(0)
  tokenizer = tiny_tokenizer(os.path.join(folder, "_tokenizer_src"), max_length=12)
  text_encoder = transformers.CLIPTextModel(tiny_text_config(tokenizer, hidden_size=16))
  unet = diffusers.UNet2DConditionModel(**UNetConfig(**TINY_UNET).to_diffusers())
  return save_sd_controlnet_pipeline(
    folder,
    vae=tiny_vae(),
    text_encoder=text_encoder,
    tokenizer=tokenizer,
    unet=unet,
    controlnet=controlnet,
    scheduler=sd15_ddim_scheduler(),
  )


def test_pipeline_matches_diffusers_in_one_scan(controlnet_folder):
  from jaxgen.convert.diffusers_controlnet import load_stable_diffusion_controlnet
  from jaxgen.pipelines import stable_diffusion_controlnet as pipeline

  rng = np.random.default_rng(1)
  latents = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
  hint = rng.uniform(size=(2, HEIGHT, WIDTH, 3)).astype(np.float32)
  pipe = diffusers.StableDiffusionControlNetPipeline.from_pretrained(
    controlnet_folder, safety_checker=None, requires_safety_checker=False
  )
  pipe.set_progress_bar_config(disable=True)
  bundle = load_stable_diffusion_controlnet(controlnet_folder)
  # Guess mode's residual weights are checked at the model level (test above); the
  # pipeline is compared once, at a scale that is not 1.
  for scale, guess_mode in ((0.8, False),):
    with torch.no_grad():
      reference = pipe(
        prompt=PROMPTS,
        image=nchw(hint),
        num_inference_steps=NUM_STEPS,
        guidance_scale=GUIDANCE,
        controlnet_conditioning_scale=scale,
        guess_mode=guess_mode,
        height=HEIGHT,
        width=WIDTH,
        latents=nchw(latents),
        output_type="np",
      ).images
    images = pipeline.sample(
      bundle,
      PROMPTS,
      hint,
      latents,
      num_steps=NUM_STEPS,
      guidance_scale=GUIDANCE,
      conditioning_scale=scale,
      guess_mode=guess_mode,
    )
    assert reference.std() > 0.01
    np.testing.assert_allclose(np.asarray(images), reference, atol=1e-4)
  # The control matters: scale 0 is another image.
  uncontrolled = pipeline.sample(
    bundle,
    PROMPTS,
    hint,
    latents,
    num_steps=NUM_STEPS,
    guidance_scale=GUIDANCE,
    conditioning_scale=0.0,
  )
  assert np.abs(np.asarray(uncontrolled) - np.asarray(images)).max() > 1e-3
  # The whole sampler is one scan in one program.
  sd = bundle.sd
  plan = sd.scheduler.plan(NUM_STEPS)
  jaxpr = jax.make_jaxpr(
    lambda p, ids, h, x: pipeline.generate(
      p,
      plan,
      ids,
      ids,
      h,
      x,
      None,
      jnp.float32(GUIDANCE),
      jnp.float32(1.0),
      unet_config=sd.unet_config,
      vae_config=sd.vae_config,
      text_config=sd.text_config,
      controlnet_config=bundle.controlnet_config,
      guided=True,
      guess_mode=False,
    )
  )(
    {**sd.params, "controlnet": bundle.controlnet_params},
    jnp.asarray(sd.tokenize(PROMPTS)),
    jnp.asarray(hint),
    jnp.asarray(latents),
  )
  text = str(jaxpr)
  assert text.count("scan[") == 1
  with pytest.raises(ValueError, match="image: expected 2 hint images"):
    pipeline.sample(bundle, PROMPTS, hint[:1], latents, num_steps=NUM_STEPS)


# -- the task: a ControlNet on a (tiny, untrained) text_to_image base ------------------------


@pytest.fixture(scope="module")
def scenes_task():
  import flax.linen as nn
  from tiny_configs import tiny_config

  from jaxgen.tasks.image.text_to_image import TextToImageTask
  from jaxgen.tasks.image_to_image.controlnet import ControlNetTask

  # The tiny CLI configs: a 16×16 base of three U-Net levels, its ControlNet.
  base = TextToImageTask(tiny_config("text_to_image_scenes.py"))
  dummy = {k: jnp.zeros(v.shape, v.dtype) for k, v in base.abstract_batch(2).items()}
  base_params = nn.unbox(jax.jit(base.init)(jax.random.key(0), dummy))
  config = tiny_config("controlnet_scenes.py", "data.num_train_examples=4")
  task = ControlNetTask(config, base=(base, base_params))
  batch = {k: jnp.asarray(v) for k, v in task.train_arrays().items()}
  return task, base_params, batch, nn.unbox(task.init(jax.random.key(1), batch))


def test_task_starts_as_the_base_and_trains_only_the_controlnet(scenes_task):
  from jaxgen.models.text_conditioned_unet import TextConditionedUNet

  task, base_params, batch, params = scenes_task
  # The task's params (so the optimizer's) are the ControlNet's alone.
  assert set(params) == set(abstract_variables(task.controlnet_config)["params"])
  assert "text_encoder" not in params and "controlnet_mid_block" in params
  hint = task.source_input(batch["source"])
  assert hint.shape == (4, 16, 16, 8)  # One-hot labels.
  x = jax.random.normal(jax.random.key(2), (4, 16, 16, 3))
  t = jnp.array([1, 200, 500, 999])

  @jax.jit
  def controlled_and_base(params, x, t, tokens, mask, hint):
    states, pooled, mask = task.encode_text(tokens, mask)
    controlled = task._denoise(params, x, t, (states, pooled, mask, hint), 1.0)
    base = task.base.model.apply(
      {"params": base_params}, x, t, states, mask, pooled, method=TextConditionedUNet.denoise
    )
    return controlled, base

  controlled, base = controlled_and_base(
    params, x, t, batch["text_tokens"], batch["text_mask"], hint
  )
  np.testing.assert_array_equal(np.asarray(controlled), np.asarray(base))  # Zero convs: exact.
  (loss, _), grads = jax.jit(jax.value_and_grad(task.loss, has_aux=True))(
    params, batch, jax.random.key(3)
  )
  assert np.isfinite(float(loss))
  # At zero init only the zero convs receive gradient (they gate everything behind them).
  assert float(jnp.abs(grads["controlnet_mid_block"]["kernel"]).max()) > 0
  # translate is one sampler scan.
  jaxpr = jax.make_jaxpr(lambda p, s: task.translate(p, s, jax.random.key(0)))(params, hint)
  assert str(jaxpr).count("scan[") == 1
