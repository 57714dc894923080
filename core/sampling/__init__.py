"""Samplers and sigma schedules in the k-diffusion shape: sampler(model, x, sigmas, extra_args, callback).

The contract every sampler keeps (a tensor or a tuple of tensors as the state, one callback dict) is
written down in :mod:`.state`.
"""

from .euler import sample_euler, sample_euler_stochastic
from .ltx_schedule import ltx2_sigmas
from .res2s import sample_res2s, seeded_noise_sampler
from .schedules import beta_ppf, flow_euler_schedule, shift_sigmas, unipc_flow_schedule
from .state import StateForm, step_info
from .unipc import sample_unipc, unipc_step_orders

__all__ = [
    "beta_ppf",
    "flow_euler_schedule",
    "ltx2_sigmas",
    "sample_euler",
    "sample_euler_stochastic",
    "sample_res2s",
    "sample_unipc",
    "seeded_noise_sampler",
    "shift_sigmas",
    "StateForm",
    "step_info",
    "unipc_flow_schedule",
    "unipc_step_orders",
]
