"""A stand-in for a GPU run on a machine without one.

Everything that matters for the CUDA paths, other than speed, is where tensors live and whether the host
waits for the device. ``OneDevice`` is a dispatch mode that checks every aten op: all tensor arguments with
at least one dimension must be on one device (CUDA also accepts 0-dim CPU tensors as scalars, so those are
let through, and copies between devices are what ``.to()`` is for). Run a pipeline with its weights and
inputs on the ``meta`` device under it and

* any tensor made on the CPU by mistake and then combined with the model's tensors fails, in every op
  (the meta kernels of some ops, ``mm`` and ``linear`` among them, do not check devices themselves);
* any read of a device value on the host (``.item()``, ``bool(t)``, ``nonzero``, ``unique``) fails, since
  meta tensors hold no values.
"""

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_COPIES = {
    torch.ops.aten._to_copy.default,
    torch.ops.aten.copy_.default,
    torch.ops.aten._copy_from.default,
    torch.ops.aten._copy_from_and_resize.default,
    torch.ops.aten.lift_fresh.default,
}


class DeviceMismatch(AssertionError):
    pass


class OneDevice(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _COPIES:
            flat, _ = tree_flatten((args, kwargs))
            devices = {t.device for t in flat if isinstance(t, torch.Tensor) and t.ndim > 0}
            if len(devices) > 1:
                shapes = [(tuple(t.shape), str(t.device)) for t in flat if isinstance(t, torch.Tensor)]
                raise DeviceMismatch(f"{func}: tensors on {sorted(map(str, devices))}: {shapes}")
        self.ops += 1
        return func(*args, **kwargs)
