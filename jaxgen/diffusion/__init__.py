"""Gaussian diffusion: schedules, forward process and losses, samplers, guidance."""

from jaxgen.diffusion.gaussian import (
  PREDICTION_TYPES,
  alpha_sigma,
  convert_prediction,
  diffusion_loss,
  min_snr_weight,
  prediction_coefficients,
  q_sample,
  sample_timesteps,
  snr,
  training_target,
  velocity,
)
from jaxgen.diffusion.guidance import classifier_free_guidance, drop_condition
from jaxgen.diffusion.samplers import (
  SAMPLERS,
  SamplerPlan,
  SamplerState,
  StepTable,
  ddim_sample,
  ddpm_sample,
  dpm_solver_pp_2m_sample,
  euler_sample,
  make_plan,
  run_sampler,
  sample,
  sampler_step,
)
from jaxgen.diffusion.schedules import (
  SCHEDULE_KINDS,
  NoiseSchedule,
  make_betas,
  make_schedule,
  schedule_from_betas,
)
from jaxgen.diffusion.timesteps import TIMESTEP_SPACINGS
