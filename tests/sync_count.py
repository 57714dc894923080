"""Counting host-device synchronisations: every ``.item()`` / ``bool(tensor)`` goes through
``aten._local_scalar_dense``, so a loop free of syncs makes none of these calls."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class CountScalarReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))
