"""How many transformer blocks stay on the device when the count is derived from free memory (core.offload
``resident_for_memory``, the loaders' ``offload_blocks = -1``, ``generate(resident_blocks="auto")``,
``--resident-blocks auto``): the model outside the blocks and a quarter of the free memory for activations come
first; if every block fits all stay, else two streamed copies are set aside and the rest filled block by block.
No GPU here: free memory is given (or patched) and the CPU stands in for the device."""

import pytest
import torch
import torch.nn as nn

from comfyui_cosmos3_ltx2.core import offload
from comfyui_cosmos3_ltx2.core.checks import OptionError


def _blocks(n=6):
    return nn.ModuleList(nn.Linear(10, 10) for _ in range(n))  # 110 fp32 values = 440 bytes each


def test_resident_count_from_free_memory():
    blocks = _blocks()
    assert offload.tensor_bytes(*blocks) == 6 * 440
    count = lambda free, outside=0: offload.resident_for_memory(blocks, "cuda", free_bytes=free,  # noqa: E731
                                                                outside_bytes=outside)
    assert count(4 * 6 * 440) == 6  # 3/4 of it holds all six: nothing streams
    # 3/4 of 3000 = 2250 < 2640; less 2 x 440 for the streamed copies = 1370: three blocks (1320), not four
    assert count(3000) == 3
    assert count(3000, outside=500) == 1  # 2250 - 500 - 880 = 870: one block
    assert count(1000) == 0  # not even room beyond the streamed copies
    assert offload.resident_for_memory(blocks, "cpu") == 6  # the host: nothing to stream


def test_streamed_block_choice():
    model = nn.Module()
    model.blocks, model.head = _blocks(), nn.Linear(10, 25)  # the head: 275 values = 1100 bytes
    assert offload.streamed_blocks(0, model, model.blocks, "cpu") == 0
    assert offload.streamed_blocks(2, model, model.blocks, "cpu") == 2
    assert offload.streamed_blocks(99, model, model.blocks, "cpu") == 6
    assert offload.streamed_blocks(offload.AUTO, model, model.blocks, "cpu") == 0  # the host holds all
    # 3000 - 1100 (the head) - 880 = 1020: two resident blocks, four streamed
    assert offload.streamed_blocks(offload.AUTO, model, model.blocks, "cuda", free_bytes=4000) == 4


def test_resident_blocks_values():
    assert offload.check_resident(None) is None and offload.check_resident("auto") == "auto"
    assert offload.check_resident(3) == 3
    for bad, why in ((-1, "at least 0"), ("lots", 'whole number or "auto"'), (2.5, "whole number")):
        with pytest.raises(OptionError, match=why):
            offload.check_resident(bad)


def test_cosmos3_generate_auto_streams_what_free_memory_requires(monkeypatch):
    """With the device's free memory patched to hold the model outside the layers and 1.5 of its 2 layers, no layer
    stays (two slots go to the streamed copies) and both stream; the frames equal the resident run's."""
    from comfyui_cosmos3_ltx2.cosmos3 import generate, pipeline
    from comfyui_cosmos3_ltx2.cosmos3.loader import load_checkpoint
    from comfyui_cosmos3_ltx2.cosmos3.tiny import default_checkpoint

    kw = dict(width=64, height=32, num_frames=5, steps=2, seed=3, device="cpu", dtype="fp32")
    want = generate(default_checkpoint(), "a red robot", **kw)
    assert torch.equal(generate(default_checkpoint(), "a red robot", resident_blocks="auto", **kw), want)

    ckpt = load_checkpoint(default_checkpoint(), device="cpu", dtype="fp32")
    layers = ckpt.transformer.layers
    size = offload.tensor_bytes(layers[0])
    outside = offload.tensor_bytes(ckpt.transformer) - offload.tensor_bytes(*layers)
    assert len(layers) == 2 and all(offload.tensor_bytes(b) == size for b in layers)
    monkeypatch.setattr(offload, "free_device_memory", lambda device: int((outside + 1.5 * size) / 0.75))
    states = []
    real = pipeline.enable_block_offload
    monkeypatch.setattr(pipeline, "enable_block_offload", lambda *a: states.append(real(*a)) or states[-1])
    got = generate(default_checkpoint(), "a red robot", resident_blocks="auto", **kw)
    assert states[0].resident == 0 and states[0].streamed == [0, 1]
    assert torch.equal(got, want)


def test_cli_takes_auto():
    from comfyui_cosmos3_ltx2.__main__ import build_parser

    parser = build_parser()
    assert parser.parse_args(["generate", "--resident-blocks", "auto"]).resident_blocks == "auto"
    ltx = ["ltx-generate", "--checkpoint", "c.safetensors", "--text-encoder", "g.safetensors"]
    assert parser.parse_args([*ltx, "--resident-blocks", "3"]).resident_blocks == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "--resident-blocks", "many"])
