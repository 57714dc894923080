"""The loader nodes' offload_blocks = -1: the count of streamed blocks comes from the free memory ComfyUI reports
(patched here: no GPU), and the video equals the all-resident one."""

import torch

from comfyui_cosmos3_ltx2.core import offload
from comfyui_cosmos3_ltx2.nodes import NODE_CLASS_MAPPINGS as M
from comfyui_cosmos3_ltx2.nodes import comfy as glue
from comfyui_cosmos3_ltx2.nodes import ltx2 as ltx2_nodes


def test_ltx2_loader_streams_what_free_memory_requires(monkeypatch):
    loader = M["LTX2CheckpointLoader"]()
    model, _ = loader.load(ltx2_nodes.EMBEDDED, weight_dtype="fp32", device="cpu", offload_blocks=-1)
    assert not model.streamed  # outside ComfyUI on the CPU nothing is short: every block stays

    blocks = model.transformer.transformer_blocks
    size = offload.tensor_bytes(blocks[0])
    outside = offload.tensor_bytes(model.transformer, model.connectors) - offload.tensor_bytes(*blocks)
    free = int((outside + (len(blocks) - 0.5) * size) / 0.75)  # all but half a block fits: 2 copies set aside
    monkeypatch.setattr(glue, "free_memory", lambda device: free)
    states, real = [], ltx2_nodes.enable_block_offload
    monkeypatch.setattr(ltx2_nodes, "enable_block_offload", lambda *a: states.append(real(*a)) or states[-1])
    streamed_model, _ = loader.load(ltx2_nodes.EMBEDDED, weight_dtype="fp32", device="cpu", offload_blocks=-1)
    (state,) = states
    assert streamed_model.streamed and state.resident == len(blocks) - 3 and len(state.streamed) == 3

    x = torch.randn(1, 4, model.transformer.config["in_channels"], generator=torch.Generator().manual_seed(0))
    coords = model.transformer.video_coords(1, 1, 2, 2)
    ctx = torch.randn(1, 3, model.transformer.config["cross_attention_dim"], generator=torch.Generator().manual_seed(1))
    actx = torch.randn(1, 3, model.transformer.config["audio_cross_attention_dim"])
    ax = torch.randn(1, 2, model.transformer.config["audio_in_channels"])
    kw = dict(video_coords=coords, audio_coords=model.transformer.audio_coords(1, 2))
    with torch.no_grad():
        want = model.transformer(x, ax, ctx, actx, 0.5, **kw)
        got = streamed_model.transformer(x, ax, ctx, actx, 0.5, **kw)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
