"""Measuring helpers shared by the benchmarks (imported as ``common`` when a script runs from ``bench/``)."""

from __future__ import annotations

import ctypes
import gc
import statistics

import torch


def weight_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


_libc = None


def trim_heap() -> None:
    global _libc
    gc.collect()
    try:
        _libc = _libc or ctypes.CDLL("libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class MemProbe:
    """Peak memory of one run or step: CUDA allocator stats, or the CPU RSS high-water mark."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.cpu_ok = False
        if not self.cuda:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.cpu_ok = True
            except OSError:
                pass

    def start(self) -> None:
        trim_heap()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        elif self.cpu_ok:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := current RSS
            self.before = status_kb("VmRSS") * 1024

    def stop(self) -> tuple[int, int] | None:
        """(peak - before, absolute peak) in bytes."""
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.cpu_ok:
            peak = status_kb("VmHWM") * 1024
        else:
            return None
        return peak - self.before, peak


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def tensor_peak(run) -> tuple[object, int | None]:
    """Call ``run()`` once under the profiler's memory tracking; returns (its result, the peak of live tensor
    bytes above the start).

    Unlike RSS this counts exactly the tensors the run allocates (no allocator slack, thread stacks or
    library scratch), so it is deterministic; it reads the profiler's per-allocation records.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = run()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        events.sort(key=lambda e: e.start_ns())
        live = peak = 0
        for e in events:
            live += e.nbytes()
            peak = max(peak, live)
    except (AttributeError, RuntimeError):  # private profiler API moved: skip the figure
        peak = None
    return out, peak


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def ratio(x, y) -> str:
    return f"{x / y:.3f}" if x is not None and y and x == x and y == y else "-"
