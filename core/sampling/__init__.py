"""Samplers and sigma schedules in the k-diffusion shape: sampler(model, x, sigmas, extra_args, callback)."""

from .euler import sample_euler, sample_euler_stochastic
from .schedules import beta_ppf, flow_euler_schedule, shift_sigmas, unipc_flow_schedule
from .unipc import sample_unipc, unipc_step_orders

__all__ = [
    "beta_ppf",
    "flow_euler_schedule",
    "sample_euler",
    "sample_euler_stochastic",
    "sample_unipc",
    "shift_sigmas",
    "unipc_flow_schedule",
    "unipc_step_orders",
]
