"""Block offload (core.offload): N blocks resident, the rest streamed from host memory around their forward.

No GPU here, so the compute device is the CPU too: the tests count what holds a device copy instead of measuring
memory (at most the resident blocks plus two streamed ones: the running block and the prefetched next one), and
check that an offloaded run equals the resident run bit for bit, for both models through ``generate``.
"""

import weakref

import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from comfyui_cosmos3_ltx2.core.offload import enable_block_offload


class Stack(nn.Module):
    def __init__(self, n=5, width=8):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(width, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.GELU()) for _ in range(n))
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x):
        x = self.inp(x)
        for b in self.blocks:
            x = x + b(x)
        return x * self.scale


@pytest.mark.parametrize("resident", [0, 2, 5, 9])
def test_streams_all_but_the_resident_blocks_and_computes_the_same(resident):
    model = Stack()
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    want = model(x)
    host = {n: p.data for n, p in model.named_parameters()}
    state = enable_block_offload(model, model.blocks, "cpu", resident)
    assert state.streamed == list(range(min(resident, 5), 5)) and model.block_offload is state
    seen = []  # streamed blocks with device copies while each block runs
    for i, b in enumerate(model.blocks):
        b.register_forward_hook(lambda m, a, o, i=i: seen.append(set(state.on_device)))
    for _ in range(2):  # a second pass (the next step) streams again
        assert torch.equal(model(x), want)
    n_streamed = len(state.streamed)
    assert state.copies == 2 * n_streamed  # each streamed block copied once per pass
    assert state.peak_on_device == min(2, n_streamed) and state.on_device == set()
    assert all(len(s) <= 2 for s in seen)
    # between calls the streamed blocks hold their host tensors again (nothing stays on the device)
    for name, p in model.named_parameters():
        if name.startswith("blocks.") and int(name.split(".")[1]) >= resident:
            assert p.data.data_ptr() == host[name].data_ptr()
    state.remove()
    assert torch.equal(model(x), want) and state.copies == 2 * n_streamed


def test_weights_changed_in_place_between_runs_are_streamed():
    """A LoRA merge writes into the weights between runs; the streamed copies carry it, also for a block that a
    partial forward left prefetched."""
    model = Stack()
    x = torch.randn(2, 8)
    state = enable_block_offload(model, model.blocks, "cpu", 1)
    model(x)
    state._fetch(3)  # as if a partial forward had prefetched it ...
    model(x)  # ... the model's forward ends with nothing on the device
    assert state.on_device == set()
    with torch.no_grad():
        model.blocks[3][0].weight.add_(0.25)
    changed = model(x)
    fresh = Stack()
    with torch.no_grad():
        fresh.blocks[3][0].weight.add_(0.25)
    assert torch.equal(changed, fresh(x))


class NoHostWeights(TorchDispatchMode):
    """Fails any op that reads a streamed block's host tensor itself: on a GPU that op would mix host weights with
    device activations. (On the CPU the fetched copies are distinct tensors too, so they can be told apart.)"""

    def __init__(self):
        super().__init__()
        self.refs, self.ops = [], 0

    def watch(self, model):
        self.refs += [weakref.ref(h) for pairs in model.block_offload.host.values() for _, h in pairs]

    @property
    def host(self) -> set:
        """Storages of the host tensors still alive (a model freed before the decode frees them, and the decode
        may then reuse their memory)."""
        return {h.untyped_storage().data_ptr() for h in (r() for r in self.refs) if h is not None}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        flat, _ = tree_flatten((args, kwargs or {}))
        host = self.host if func not in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default,
                                         torch.ops.aten.detach.default, torch.ops.aten.alias.default) else ()
        if host:
            for t in flat:
                if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.untyped_storage().data_ptr() in host:
                    raise AssertionError(f"{func} reads a streamed block's host weight {tuple(t.shape)}")
        self.ops += 1
        return func(*args, **(kwargs or {}))


def _watching(monkeypatch, module):
    """Wrap enable_block_offload where ``module`` calls it, so the check starts watching once blocks stream."""
    check = NoHostWeights()
    real = module.enable_block_offload

    def enable(model, blocks, device, resident):
        state = real(model, blocks, device, resident)
        check.watch(model)
        return state

    monkeypatch.setattr(module, "enable_block_offload", enable)
    return check


def test_cosmos3_generate_offloaded_equals_resident(monkeypatch):
    """Both paths (the prompt's and the video's) run every layer through its module call, so each streamed layer
    computes only with its fetched copy; the frames equal the resident run's."""
    from comfyui_cosmos3_ltx2.cosmos3 import generate, pipeline
    from comfyui_cosmos3_ltx2.cosmos3.tiny import default_checkpoint

    kw = dict(width=64, height=32, num_frames=5, steps=2, seed=3, device="cpu", dtype="fp32")
    want = generate(default_checkpoint(), "a red robot", **kw)
    check = _watching(monkeypatch, pipeline)
    with check:
        got = generate(default_checkpoint(), "a red robot", resident_blocks=0, **kw)
    assert torch.equal(got, want) and check.refs and check.ops > 100


def test_ltx2_generate_offloaded_equals_resident(monkeypatch):
    from comfyui_cosmos3_ltx2.ltx2 import api, generate
    from comfyui_cosmos3_ltx2.ltx2.tiny import default_demo

    demo = default_demo()
    kw = dict(width=64, height=64, num_frames=9, steps=2, seed=3, device="cpu", dtype="fp32")
    frames, wave, rate = generate(demo.checkpoint, demo.text_encoder, "a cat", **kw)
    check = _watching(monkeypatch, api)
    with check:
        frames2, wave2, rate2 = generate(demo.checkpoint, demo.text_encoder, "a cat", resident_blocks=3, **kw)
    assert torch.equal(frames2, frames) and torch.equal(wave2, wave) and rate2 == rate and check.refs
