"""Block offload in the nodes. offload_blocks = -1: the count of streamed blocks comes from the free memory ComfyUI
reports (patched here: no GPU), and the transformer computes as the all-resident one. A streamed transformer, which
ComfyUI cannot move, leaves the device (parks in host memory) when a VAE or a text encoder loads, and comes back
when a sampler loads it."""

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
    streamed_model, vae = loader.load(ltx2_nodes.EMBEDDED, weight_dtype="fp32", device="cpu", offload_blocks=-1)
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

        # A VAE load parks the streamed transformer; the sampler's load brings it back, computing the same.
        vae.load()
        assert state.parked and len(state.device_tensors) > 0
        assert streamed_model.load() is streamed_model.transformer and not state.parked
        again = streamed_model.transformer(x, ax, ctx, actx, 0.5, **kw)
        assert all(torch.equal(a, b) for a, b in zip(again, want))


def test_park_streamed_spares_the_one_kept():
    def streamed_stack():
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        return model, offload.enable_block_offload(model, model, "cpu", 1)

    (_, sa), (b, sb) = streamed_stack(), streamed_stack()
    x = torch.randn(2, 4)
    want = b(x)
    offload.park_streamed(keep=sa)
    assert sb.parked and not sa.parked
    sb.unpark()
    assert torch.equal(b(x), want)
    sb.park()
    sb.remove()  # stopping the offload brings everything back first
    assert not sb.parked and torch.equal(b(x), want)
    offload.park_streamed()
    assert sa.parked and not sb.parked  # a removed offload is no longer parked
    sa.remove()
