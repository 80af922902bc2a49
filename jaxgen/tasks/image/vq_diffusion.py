"""VQ-Diffusion (Gu et al. 2022) over the codes of a VQGAN run, task `vq_diffusion`.

A token prior (`jaxgen.tasks.image.image_tokens.TokenPriorTask`): the
images of `config.data` are encoded once to codes by the `vqgan` run in
`vq.workdir`, and `jaxgen.models.vq_diffusion.VQDiffusion` learns
p(codes | caption) by mask-and-replace discrete diffusion
(`jaxgen.diffusion.discrete`):

- Text: the model's own `TextTransformer` (`text.*`), trained from scratch on
  the caption tokens with their padding mask (the reference's frozen CLIP is
  not available offline). With `diffusion.cond_drop_prob` > 0 an example's
  caption is swapped for the learned null text (`model.learned_null_text`),
  which classifier-free guidance extrapolates from at sampling time.
- Transition schedule: the reference's linear ᾱ_t / γ̄_t (`diffusion.*`:
  `num_timesteps`, `alpha_cum_start/end`, `gamma_cum_start/end`), one table
  for the model's AdaLN steps and the process.
- Loss: the variational bound with the x_0 reparameterisation plus the
  auxiliary x_0 term and its adaptive weight, divided by p(t); t is drawn by
  the reference's importance sampling (`diffusion.importance_sampling`). The
  importance statistics (E[L_t²] per step, draw counts) are training state,
  not gradients: they live in the params tree under "importance" and the loss
  hands their new values to the trainer under `STATE_UPDATES_KEY`.
- Sampling (`sampler="vq_diffusion"`): from the all-mask grid, `num_steps`
  reverse steps in one `lax.scan`. Fewer steps than `diffusion.num_timesteps`
  skip steps as the reference's `sample_fast` does, so `num_steps` must be a
  count that some skip reaches (`reachable_step_counts`); p_θ(x_0 | x_t) is
  truncated to `sample.truncation_rate` (the reference's `top0.85r`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.diffusion import discrete
from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.models.vq_diffusion import VQDiffusion, VQDiffusionConfig, x0_logits_fn
from jaxgen.tasks.image.image_tokens import TokenPriorTask
from jaxgen.training.task import STATE_UPDATES_KEY

SAMPLER = "vq_diffusion"
_SCHEDULE_ENDS = ("alpha_cum_start", "alpha_cum_end", "gamma_cum_start", "gamma_cum_end")


class VQDiffusionTaskConfigError(ValueError):
  """A `vq_diffusion` config field is out of range or contradicts another one."""


def reachable_step_counts(num_timesteps: int) -> dict[int, int]:
  """{number of reverse steps: the smallest skip_step giving it} for `discrete.sampling_steps`."""
  counts: dict[int, int] = {}
  for skip in range(num_timesteps):
    counts.setdefault(len(discrete.sampling_steps(num_timesteps, skip)[0]), skip)
  return counts


def skip_step_for(num_timesteps: int, num_steps: int) -> int:
  """The skip_step whose chain has exactly `num_steps` model calls; a named error if none has."""
  counts = reachable_step_counts(num_timesteps)
  if num_steps in counts:
    return counts[num_steps]
  below = max((c for c in counts if c < num_steps), default=None)
  above = min((c for c in counts if c > num_steps), default=None)
  nearest = " or ".join(str(c) for c in (below, above) if c is not None)
  raise SamplingOptionError(
    "num_steps",
    f"expected a number of reverse steps that skipping reaches from "
    f"diffusion.num_timesteps={num_timesteps} (nearest: {nearest}), found {num_steps}",
  )


def check_config(config: ml_collections.ConfigDict) -> None:
  """Named errors for diffusion, model and sampling fields, before anything compiles."""
  d = config.diffusion
  if isinstance(d.num_timesteps, bool) or not isinstance(d.num_timesteps, int):
    raise VQDiffusionTaskConfigError(
      f"diffusion.num_timesteps: expected an integer >= 2, found {d.num_timesteps!r}"
    )
  if not 0.0 <= d.cond_drop_prob < 1.0:
    raise VQDiffusionTaskConfigError(
      f"diffusion.cond_drop_prob: expected a probability in [0, 1), found {d.cond_drop_prob}"
    )
  if d.cond_drop_prob > 0 and not config.model.learned_null_text:
    raise VQDiffusionTaskConfigError(
      f"diffusion.cond_drop_prob={d.cond_drop_prob} drops captions for the learned null text, "
      "but model.learned_null_text is False; set it True or cond_drop_prob=0"
    )
  if not d.auxiliary_loss_weight >= 0:
    raise VQDiffusionTaskConfigError(
      f"diffusion.auxiliary_loss_weight: expected a number >= 0, found {d.auxiliary_loss_weight}"
    )
  if len(d.mask_weight) != 2 or min(d.mask_weight) < 0:
    raise VQDiffusionTaskConfigError(
      f"diffusion.mask_weight: expected (masked, unmasked) weights >= 0, found {d.mask_weight}"
    )
  rate = config.sample.truncation_rate
  if rate is not None and not 0.0 < rate <= 1.0:
    raise VQDiffusionTaskConfigError(
      f"sample.truncation_rate: expected a probability in (0, 1] or None, found {rate}"
    )
  if not config.sample.temperature > 0:
    raise VQDiffusionTaskConfigError(
      f"sample.temperature: expected a number > 0, found {config.sample.temperature}"
    )


def model_config(
  config: ml_collections.ConfigDict, token_grid: tuple[int, int], num_codes: int, vocab_size: int
) -> VQDiffusionConfig:
  """The denoiser over a `token_grid` of `num_codes` codes, its text encoder from `text.*`."""
  m, t = config.model, config.text
  return VQDiffusionConfig(
    num_codes=num_codes,
    height=token_grid[0],
    width=token_grid[1],
    embed_dim=m.embed_dim,
    num_layers=m.num_layers,
    num_heads=m.num_heads,
    mlp_ratio=m.mlp_ratio,
    condition_dim=t.width,
    num_timesteps=config.diffusion.num_timesteps,
    dropout=m.dropout,
    text_vocab_size=vocab_size,
    text_max_length=t.max_length,
    text_layers=t.num_layers,
    text_heads=t.num_heads,
    learned_null_text=m.learned_null_text,
  )


class VQDiffusionTask(TokenPriorTask):
  """The `vq_diffusion` task (see module docstring).

  Params: {"model": the `VQDiffusion` tree, "importance": {"loss_sq", "count"}
  (T,) float32, present with `diffusion.importance_sampling`}.
  """

  samplers = (SAMPLER,)
  guidance_setting = "model.learned_null_text"

  def __init__(self, config: ml_collections.ConfigDict):
    check_config(config)
    super().__init__(config)
    d = config.diffusion
    self.model_config = model_config(
      config, self.token_grid, self.num_codes, self.tokenizer.vocab_size
    )
    self.model = VQDiffusion(self.model_config)
    self.schedule = discrete.mask_schedule(
      self.num_codes, d.num_timesteps, **{k: d[k] for k in _SCHEDULE_ENDS}
    )
    self.importance_sampling = bool(d.importance_sampling)
    self.loss_weights = dict(
      auxiliary_loss_weight=float(d.auxiliary_loss_weight),
      adaptive_auxiliary_loss=bool(d.adaptive_auxiliary_loss),
      mask_weight=tuple(float(w) for w in d.mask_weight),
    )
    # A named error for the config's default step count now, not at the first preview.
    self.sampling_options(None, None, None)

  @property
  def num_tokens(self) -> int:
    return self.model_config.num_tokens

  @property
  def guided(self) -> bool:
    """A learned null text is the unconditional model guidance pushes away from."""
    return self.model_config.learned_null_text

  # -- model -------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    codes = jnp.reshape(batch["codes"], (-1, self.num_tokens))
    drop = jnp.zeros(codes.shape[:1], bool) if self.model_config.learned_null_text else None
    params = self.model.init(
      rng,
      codes,
      jnp.zeros(codes.shape[:1], jnp.int32),
      batch["text_tokens"],
      jnp.asarray(batch["text_mask"], bool),
      drop,
    )["params"]
    tree = {"model": params}
    if self.importance_sampling:
      tree["importance"] = discrete.init_importance_state(self.schedule.num_timesteps)._asdict()
    return tree

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    d = self.config.diffusion
    x0 = jnp.reshape(batch["codes"], (-1, self.num_tokens))
    drop_rng, dropout_rng, loss_rng = jax.random.split(rng, 3)
    drop = None
    if self.model_config.learned_null_text:
      drop = jax.random.bernoulli(drop_rng, d.cond_drop_prob, x0.shape[:1])
    deterministic = self.model_config.dropout == 0.0
    state = None
    if self.importance_sampling:
      state = discrete.ImportanceState(**jax.lax.stop_gradient(params["importance"]))

    def logits_fn(x_t, t):
      return self.model.apply(
        {"params": params["model"]},
        x_t,
        t,
        batch["text_tokens"],
        jnp.asarray(batch["text_mask"], bool),
        drop,
        deterministic=deterministic,
        rngs=None if deterministic else {"dropout": dropout_rng},
      )

    out = discrete.vq_diffusion_loss(
      self.schedule,
      logits_fn,
      x0,
      loss_rng,
      num_codes=self.num_codes,
      state=state,
      **self.loss_weights,
    )
    metrics = dict(
      loss=out.loss, vb_loss=out.vb_loss, aux_loss=out.aux_loss, x0_accuracy=out.x0_accuracy
    )
    if out.state is not None:
      ready = jnp.all(state.count > discrete.IMPORTANCE_MIN_COUNT)
      metrics["importance_ready"] = ready.astype(jnp.float32)
      metrics[STATE_UPDATES_KEY] = {"importance": out.state._asdict()}
    return out.loss, metrics

  # -- sampling ----------------------------------------------------------

  def sampling_options(
    self, sampler: str | None, num_steps: int | None, guidance_scale: float | None
  ) -> tuple[str, int, float]:
    """The base checks, then: num_steps reachable by skipping."""
    sampler, num_steps, guidance_scale = super().sampling_options(
      sampler, num_steps, guidance_scale
    )
    skip_step_for(self.config.diffusion.num_timesteps, num_steps)
    return sampler, num_steps, guidance_scale

  def sample_codes(
    self,
    params,
    tokens: jax.Array,
    mask: jax.Array,
    rng: jax.Array,
    *,
    sampler: str,
    num_steps: int,
    guidance_scale: jax.Array,
  ) -> jax.Array:
    """Codes (B, h, w) int32: `num_steps` reverse steps from the all-mask grid, one scan."""
    del sampler  # the only one: checked by `sampling_options`
    s = self.config.sample
    fn = x0_logits_fn(
      self.model,
      params["model"],
      tokens,
      jnp.asarray(mask, bool),
      guidance_scale if self.guided else None,
    )
    codes = discrete.sample(
      self.schedule,
      fn,
      rng,
      (tokens.shape[0], self.num_tokens),
      num_codes=self.num_codes,
      skip_step=skip_step_for(self.schedule.num_timesteps, num_steps),
      temperature=float(s.temperature),
      truncation_rate=None if s.truncation_rate is None else float(s.truncation_rate),
    )
    return codes.reshape(tokens.shape[0], *self.token_grid)

  @functools.cached_property
  def parameter_count(self) -> int:
    """Trained parameters (the denoiser, its text encoder and the null text)."""
    batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in self.abstract_batch(1).items()}
    shapes = jax.eval_shape(self.init, jax.random.PRNGKey(0), batch)
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(nn.meta.unbox(shapes["model"]))))
