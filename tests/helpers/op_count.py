"""Counting what a call dispatches: host reads (host-device synchronisations) and kernel launches.

The one counter of the tests and the benchmarks (``bench/common.py`` imports it from here).

* ``host_reads``: ``aten._local_scalar_dense`` calls. Every ``.item()`` / ``bool(tensor)`` / ``int(tensor)`` goes
  through it, and on a GPU each is a wait for the device; a loop free of syncs makes none.
* ``kernels``: ops that compute (not views, not allocations of uninitialised memory). On a GPU each is one or
  more kernel launches, so at sizes where launches and Python dominate, time follows it. ``F.rms_norm`` is one
  fused kernel on CUDA but a chain of ops on the CPU: it counts once.
* ``all``: every dispatched op (the ops inside a fused call not counted). ``by_op``: kernels per op name.

Counts do not depend on the machine.
"""

from __future__ import annotations

import collections

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# ops that launch nothing: metadata, aliases, uninitialised allocations, and the host read itself
_NO_KERNEL = {"_unsafe_view", "detach", "lift_fresh", "alias", "empty", "empty_strided", "sym_size",
              "sym_stride", "sym_numel", "sym_storage_offset", "_local_scalar_dense"}
_FUSED_ON_CUDA = {torch.nn.functional.rms_norm, torch.rms_norm}


def _is_view(func) -> bool:
    """An op whose output aliases its input without writing it (view, transpose, slice, expand, ...)."""
    schema = func._schema
    return not schema.is_mutable and any(r.alias_info is not None for r in schema.returns)


class OpCount:
    """``with OpCount() as c: ...`` then read ``c.host_reads``, ``c.kernels``, ``c.all``, ``c.by_op``."""

    def __init__(self):
        self.host_reads = 0
        self.kernels = 0
        self.all = 0
        self.by_op: collections.Counter = collections.Counter()
        self._inside = 0  # > 0 while a call that CUDA runs as one kernel is being decomposed
        self._modes = (_Fused(self), _Dispatched(self))

    def __enter__(self) -> "OpCount":
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for m in reversed(self._modes):
            m.__exit__(*exc)

    def as_dict(self, by_op: bool = False) -> dict:
        out = dict(all=self.all, kernels=self.kernels, host_reads=self.host_reads)
        if by_op:
            out["by_op"] = self.by_op
        return out


class _Dispatched(TorchDispatchMode):
    def __init__(self, count: OpCount):
        super().__init__()
        self.c = count

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name == "_local_scalar_dense":
            self.c.host_reads += 1
        if not self.c._inside:
            self.c.all += 1
            if name not in _NO_KERNEL and not _is_view(func):
                self.c.kernels += 1
                self.c.by_op[name] += 1
        return func(*args, **(kwargs or {}))


class _Fused(TorchFunctionMode):
    def __init__(self, count: OpCount):
        super().__init__()
        self.c = count

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _FUSED_ON_CUDA and not self.c._inside:
            self.c.all += 1
            self.c.kernels += 1
            self.c.by_op[func.__name__] += 1
            self.c._inside += 1
            try:
                return func(*args, **(kwargs or {}))
            finally:
                self.c._inside -= 1
        return func(*args, **(kwargs or {}))


def count_ops(run, by_op: bool = False) -> tuple[object, dict]:
    """Call ``run()`` once under ``OpCount``; returns (its result, the counts as a dict)."""
    with OpCount() as c:
        out = run()
    return out, c.as_dict(by_op)
