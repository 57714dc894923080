"""Measuring helpers shared by the benchmarks (imported as ``common`` when a script runs from ``bench/``)."""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import sys
from pathlib import Path

import torch

# the one op / host-read counter, shared with the tests (tests/helpers/op_count.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.op_count import count_ops  # noqa: E402,F401  (re-exported to the benchmarks)


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


def ops_table(names: list[str], res: dict, ref: str, per: int = 1) -> list[str]:
    """Report lines for the ``count_ops`` results in ``res[name]["ops"]`` (divided by ``per`` steps), with
    ratios to side ``ref``; empty when a side has none."""
    if not all("ops" in res[n] for n in names):
        return []
    ro = res[ref]["ops"] if ref in res else None
    head = f"{'aten ops/step':<13} {'kernels':>9} {'x ref':>7} {'host reads':>11} {'all ops':>9}"
    lines = ["", head, "-" * len(head)]
    for n in names:
        o = res[n]["ops"]
        lines.append(f"{n:<13} {o['kernels'] / per:9.0f} {ratio(o['kernels'], ro['kernels'] if ro else None):>7} "
                     f"{o['host_reads'] / per:11.1f} {o['all'] / per:9.0f}")
    lines.append(f"kernels: dispatched aten ops that compute (not views; F.rms_norm counted once, as CUDA runs it), "
                 f"each one or more kernel launches on a GPU; host reads: .item() / bool(tensor), each a host-device "
                 f"sync on a GPU; ref = {ref} (counts are the same on any machine of the same device type)")
    return lines


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def ratio(x, y) -> str:
    return f"{x / y:.3f}" if x is not None and y and x == x and y == y else "-"


def add_report_args(p: argparse.ArgumentParser, run: str) -> None:
    """The options that pick the extra measurements and the output; ``run``: what one timed run is ("run",
    "step")."""
    p.add_argument("--profile-rows", type=int, default=18)
    p.add_argument("--no-tensor-peak", dest="tensor_peak", action="store_false",
                   help="CPU: skip the profiler-based tensor peak (measured during the warm-up run)")
    p.add_argument("--no-op-count", dest="op_count", action="store_false",
                   help=f"skip the extra {run} per side that counts dispatched aten ops")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")


def _cell(v: float | None, width: int) -> str:
    return f"{v:{width}.1f}" if v is not None else f"{'-':>{width}}"


def mem_table(a, names: list[str], res: dict, ref: dict | None, x: str, last: tuple, span: str,
              rss_at: str) -> list[str]:
    """Report lines for the memory figures of ``measure``: per side the step memory, the tensor peak (each with
    its ratio to ``ref``, column title ``x``), the absolute peak, the weights and a last column ``last`` =
    (title, width, cell text of a side's name); then the legend. ``span``: what the step figure covers ("a
    step"); ``rss_at``: which process the CPU peak RSS belongs to."""
    mb = 1 / 2**20
    cuda = a.device.startswith("cuda")
    kind = "CUDA alloc" if cuda else "RSS"
    title, width, last_cell = last
    xw = len(x) + 1
    head = (f"{'memory MB':<13} {'step ' + kind:>14} {x:>{xw}} {'tensors':>8} {x:>{xw}} "
            f"{kind + ' @peak':>13} {'weights':>8} {title:>{width}}")
    lines = ["", head, "-" * len(head)]
    ref_act = med(ref["act"]) * mb if ref and ref["act"] else None
    ref_tp = ref.get("tensor_peak") * mb if ref and ref.get("tensor_peak") is not None else None
    for n in names:
        r = res[n]
        act = med(r["act"]) * mb if r["act"] else None
        tp = r.get("tensor_peak")
        tp = tp * mb if tp is not None else None
        peak = med(r["peak"]) * mb if r["peak"] else None
        lines.append(f"{n:<13} {_cell(act, 14)} {ratio(act, ref_act):>{xw}} {_cell(tp, 8)} {ratio(tp, ref_tp):>{xw}} "
                     f"{_cell(peak, 13)} {r['weights'] * mb:8.1f} {last_cell(n):>{width}}")
    spread = ("; per repeat " + ", ".join(f"{n} {min(res[n]['act']) * mb:.0f}-{max(res[n]['act']) * mb:.0f}"
                                          for n in names if res[n]["act"]) if not cuda else "")
    return lines + [
        f"step {kind}: high-water mark during {span} minus the value before it (median of {a.repeats}{spread})",
        "tensors: peak of live tensor bytes above the start (profiler memory records, warm-up run; CPU only)",
        f"{kind} @peak: " + ("allocated at the peak, weights included" if cuda
                             else f"process RSS at the peak ({rss_at})"),
    ]


def finish(a, res: dict, text: str, profiles: dict, heading: str, tensors: str) -> None:
    """Print the report ``text`` and each side's profile under ``heading`` (``{name}``: the side); with
    ``--json``, write the arguments and the results less each side's output tensors (key ``tensors``)."""
    print(text)
    for name, table in profiles.items():
        print(f"\n== {heading.format(name=name)} ==\n{table}")
    if a.json is not None:
        out = {k: {kk: vv for kk, vv in r.items() if kk != tensors} for k, r in res.items()}
        a.json.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(a).items()}, results=out), indent=1))
