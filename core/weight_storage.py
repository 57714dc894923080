"""Low-precision weight storage: keep Linear weights in float8 and compute in a wider dtype.

The weights of every ``nn.Linear`` under a module are stored as ``float8_e4m3fn`` (half the memory of
bf16) and cast to the activation dtype inside each call. Norms, embeddings and biases keep their dtype.
This is plain storage compression (a per-tensor cast, no scaling), so values beyond the fp8 range are
clipped; it is meant for bf16 checkpoints whose weights are small.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CastLinear(nn.Linear):
    """An ``nn.Linear`` whose stored weight dtype may differ from its compute dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        b = self.bias if self.bias is None or self.bias.dtype == x.dtype else self.bias.to(x.dtype)
        return F.linear(x, w, b)


def store_linear_weights(module: nn.Module, dtype: torch.dtype = torch.float8_e4m3fn,
                         skip: tuple[str, ...] = ()) -> int:
    """Convert the Linear weights of ``module`` (names not starting with ``skip``) to ``dtype`` in place.

    Returns the number of layers converted. Each layer is converted on its own device, one at a time.
    """
    count = 0
    for name, child in module.named_modules():
        if isinstance(child, nn.Linear) and not name.startswith(skip):
            fp8 = child.weight.detach().clamp(-448.0, 448.0).to(dtype)
            child.weight = nn.Parameter(fp8, requires_grad=False)
            child.__class__ = CastLinear
            count += 1
    return count
