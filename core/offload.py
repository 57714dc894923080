"""Block offload: keep N transformer blocks on the compute device and stream the others from host memory.

For a model whose weights do not fit the GPU. :func:`enable_block_offload` leaves the first ``resident`` blocks of a
block list (and everything outside the list) on the compute device; the other blocks keep their weights in host
memory (pinned when CUDA is there) and are copied to the device just before they run and dropped just after. The
copy of the next streamed block is issued on a side CUDA stream while the current block computes (the
WanVideoWrapper "block swap" / prefetch pattern, scale.md §2), so with enough compute per block the transfers hide
behind it.

The copies are exact, so an offloaded run equals the resident run bit for bit. At most two streamed blocks hold
device copies at any time (the one running and the one being fetched): the device holds the resident blocks plus
two, whatever the model's depth; when the model's forward returns, none. The weights' host tensors stay the blocks' own between calls, so anything that
changes weights in place between runs (LoRA merges) changes what is streamed.

How many blocks to keep can also be derived from the device's free memory (:func:`resident_for_memory`): the part
of the model outside the blocks, room for activations and the two streamed copies come first, then as many blocks
as fit.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn as nn

from .checks import OptionError, integer


def _tensors(module: nn.Module):
    """Every parameter and buffer of ``module`` (each once)."""
    seen = set()
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            yield t


class BlockOffload:
    """The streaming state of one block list (made by :func:`enable_block_offload`)."""

    def __init__(self, blocks: nn.ModuleList, device, resident: int):
        self.blocks = blocks
        self.device = torch.device(device)
        self.resident = max(0, min(int(resident), len(blocks)))
        self.streamed = list(range(self.resident, len(blocks)))
        pin = self.device.type == "cuda" and torch.cuda.is_available()
        self.host: dict[int, list] = {}
        for i, block in enumerate(blocks):
            if i < self.resident:
                block.to(self.device)
                continue
            pairs = []
            for t in _tensors(block):
                host = t.data if t.device.type == "cpu" else t.data.to("cpu")
                pairs.append((t, host.pin_memory() if pin else host))
                t.data = pairs[-1][1]
            self.host[i] = pairs
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.ready: dict[int, object] = {}  # block -> event (CUDA) or True: its device copy is issued
        self.on_device: set[int] = set()
        self.device_tensors: list[torch.Tensor] = []  # what stays on the device (set by enable_block_offload)
        self.parked = False
        self.peak_on_device = 0  # the most streamed blocks holding device copies at once (a test reads it)
        self.copies = 0
        self._hooks = []
        for i in self.streamed:
            self._hooks.append(blocks[i].register_forward_pre_hook(self._before(i)))
            self._hooks.append(blocks[i].register_forward_hook(self._after(i)))

    # a block's weights -> device (on the side stream when there is one)
    def _fetch(self, i: int) -> None:
        if i in self.on_device:
            return
        self.on_device.add(i)
        self.peak_on_device = max(self.peak_on_device, len(self.on_device))
        self.copies += 1
        if self.stream is None:
            for t, host in self.host[i]:
                t.data = host.to(self.device, copy=True)  # a copy even where the device is the host
            self.ready[i] = True
            return
        with torch.cuda.stream(self.stream):
            for t, host in self.host[i]:
                t.data = host.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        self.ready[i] = event

    def _release(self, i: int) -> None:
        for t, host in self.host[i]:
            t.data = host
        self.on_device.discard(i)
        self.ready.pop(i, None)

    def _next(self, i: int) -> int | None:
        k = self.streamed.index(i)
        return self.streamed[k + 1] if k + 1 < len(self.streamed) else None

    def _before(self, i: int):
        def hook(module, args):
            self._fetch(i)
            event = self.ready[i]
            if event is not True:
                torch.cuda.current_stream(self.device).wait_event(event)
            nxt = self._next(i)
            if nxt is not None:
                self._fetch(nxt)  # overlaps with this block's compute
        return hook

    def _after(self, i: int):
        def hook(module, args, output):
            if self.stream is not None:
                # the side stream must not reuse the memory before this block's kernels are done with it
                for t, _ in self.host[i]:
                    t.data.record_stream(torch.cuda.current_stream(self.device))
            self._release(i)
        return hook

    def flush(self) -> None:
        """Drop every device copy (a prefetched block that a partial forward did not reach): between two calls of
        the model nothing streamed stays on the device, and weights changed in place in between (a LoRA strength
        switch) are copied afresh."""
        for i in list(self.on_device):
            self._release(i)

    def park(self) -> None:
        """Take what this offload keeps on the device (the resident blocks and the model outside the blocks) to host
        memory, so that another model (a text encoder, a VAE) has the device to itself; :meth:`unpark` brings it
        back. Copies are exact."""
        if self.parked or not self.device_tensors:
            return
        for t in self.device_tensors:
            t.data = t.data.to("cpu")
        self.parked = True

    def unpark(self) -> None:
        """Undo :meth:`park` (nothing to do when not parked)."""
        if not self.parked:
            return
        for t in self.device_tensors:
            t.data = t.data.to(self.device)
        self.parked = False

    def remove(self) -> None:
        """Stop streaming: every block back on the compute device."""
        self.unpark()
        _LIVE.discard(self)
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for i in list(self.host):
            for t, host in self.host[i]:
                t.data = host.to(self.device)
        self.host.clear()


# The share of the device's free memory left to activations when the resident block count is derived from it.
# Activations grow with the request (frames x resolution), so this is a rule of thumb, not a bound; set the count
# by hand for long or large requests.
ACTIVATION_RESERVE = 0.25
AUTO = -1  # the loaders' "as many as fit" setting


def tensor_bytes(*modules: nn.Module) -> int:
    """Bytes of the parameters and buffers of ``modules`` (a tensor shared between them counted once)."""
    seen, total = set(), 0
    for module in modules:
        for t in _tensors(module):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def free_device_memory(device) -> int | None:
    """Free bytes on a CUDA device (what the driver reports); None for the host, which has nothing to stream."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.mem_get_info(device)[0]
    return None


def resident_for_memory(blocks: nn.ModuleList, device, *, outside_bytes: int = 0, free_bytes: int | None = None,
                        reserve: float = ACTIVATION_RESERVE) -> int:
    """How many of ``blocks`` (from the first) can stay on ``device``: of its free memory (``free_bytes``, else what
    :func:`free_device_memory` reports), ``reserve`` is left to activations and ``outside_bytes`` (the model's
    tensors outside the blocks, which are always resident) are taken first; if every block then fits, all stay;
    otherwise room for the two streamed copies (the running block and the prefetched one) is set aside and the rest
    is filled block by block. Without ``free_bytes`` the host is never short: every block stays on a CPU device."""
    free = free_device_memory(device) if free_bytes is None else int(free_bytes)
    if free is None:
        return len(blocks)
    sizes = [tensor_bytes(b) for b in blocks]
    budget = int(free * (1.0 - reserve)) - int(outside_bytes)
    if sum(sizes) <= budget:
        return len(blocks)
    budget -= 2 * max(sizes, default=0)
    count = 0
    while count < len(sizes) and sizes[count] <= budget:
        budget -= sizes[count]
        count += 1
    return count


def streamed_blocks(choice: int, model: nn.Module, blocks: nn.ModuleList, device, *,
                    free_bytes: int | None = None) -> int:
    """The loader nodes' ``offload_blocks``: ``choice`` blocks to stream (0: none), or with :data:`AUTO` as many as
    the device's free memory requires (:func:`resident_for_memory`; ``model`` minus ``blocks`` counts as always on
    the device). Returns how many blocks to stream."""
    choice = int(choice)
    if choice != AUTO:
        return max(0, min(choice, len(blocks)))
    outside = tensor_bytes(model) - tensor_bytes(*blocks)
    return len(blocks) - resident_for_memory(blocks, device, outside_bytes=outside, free_bytes=free_bytes)


def check_resident(value) -> int | str | None:
    """``generate``'s ``resident_blocks``: None (no offload), a block count (at least 0) or ``"auto"``."""
    if value is None or value == "auto":
        return value
    if isinstance(value, str):
        raise OptionError("resident_blocks", value, 'must be a whole number or "auto"')
    return integer("resident_blocks", value, low=0)


def resident_for_model(value: int | str, model: nn.Module, blocks: nn.ModuleList, device) -> int:
    """A checked ``resident_blocks`` as a count: ``"auto"`` -> :func:`resident_for_memory` with the model's tensors
    outside ``blocks`` counted as resident (call it once everything else that shares the device is there)."""
    if value != "auto":
        return value
    return resident_for_memory(blocks, device, outside_bytes=tensor_bytes(model) - tensor_bytes(*blocks))


_LIVE: weakref.WeakSet = weakref.WeakSet()  # every BlockOffload of a model still alive


def park_streamed(keep: BlockOffload | None = None) -> None:
    """:meth:`BlockOffload.park` every offloaded model still alive but ``keep``: before another model takes the
    device (ComfyUI frees its own models for that, but it cannot move a model whose blocks stream)."""
    for state in list(_LIVE):
        if state is not keep:
            state.park()


def enable_block_offload(model: nn.Module, blocks: nn.ModuleList, device, resident: int) -> BlockOffload:
    """Put ``model`` on ``device`` except ``blocks[resident:]``, which stream from host memory (see the module).
    Returns the :class:`BlockOffload`; ``model.block_offload`` holds it too."""
    device = torch.device(device)
    inside = {id(m) for b in list(blocks)[max(0, int(resident)):] for m in b.modules()}
    for module in model.modules():  # everything but the streamed blocks goes to the device
        if id(module) in inside:
            continue
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            t.data = t.data.to(device)
    state = BlockOffload(blocks, device, resident)
    state.device_tensors = [t for m in model.modules() if id(m) not in inside
                            for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))]
    _LIVE.add(state)
    state._hooks.append(model.register_forward_hook(lambda module, args, output: state.flush()))
    model.block_offload = state
    return state
