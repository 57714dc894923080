"""Sequence parallelism of the LTX-2.3 transformer (core.distributed.SequenceShard) on 2 gloo processes: the video
tokens are split over the ranks, the video self-attention runs Ulysses-style (all-to-all over heads), the
audio-from-video attention gathers the video keys, text and audio stay whole on every rank, and the velocities are
gathered at the end. The 2-rank velocities equal the 1-process ones to float rounding, with one shared timestep,
per-token timestep levels (conditioned frames), a video length the ranks do not divide (padding) and per-sample
STG / cross-modal switches."""

import socket

import torch
import torch.multiprocessing as mp

from comfyui_cosmos3_ltx2.ltx2.transformer import LTX2Transformer, TokenTimesteps
from helpers.ltx2_transformer_ref import CONFIGS

B, SA, L = 2, 10, 8
CASES = {"even": (3, 2, 3), "padded": (3, 1, 3)}  # latent frames, height, width: 18 and 9 video tokens


def _model() -> LTX2Transformer:
    torch.manual_seed(0)
    model = LTX2Transformer(dict(CONFIGS["2.3"])).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.5 if "scale_shift_table" in name else (p.shape[-1] ** -0.5 if p.ndim > 1 else 0.1)
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def _velocities(model: LTX2Transformer) -> dict:
    cfg = model.config
    out = {}
    with torch.no_grad():
        for case, (f, h, w) in CASES.items():
            g = torch.Generator().manual_seed(2)
            s = f * h * w
            x = torch.randn(B, s, cfg["in_channels"], generator=g)
            ax = torch.randn(B, SA, cfg["audio_in_channels"], generator=g)
            ctx = torch.randn(B, L, cfg["cross_attention_dim"], generator=g)
            actx = torch.randn(B, L, cfg["audio_cross_attention_dim"], generator=g)
            mask = torch.ones(B, L)
            mask[1, :3] = 0
            kw = dict(video_coords=model.video_coords(B, f, h, w, fps=24.0), audio_coords=model.audio_coords(B, SA),
                      encoder_attention_mask=mask, audio_encoder_attention_mask=mask)
            out[case, "shared"] = model(x, ax, ctx, actx, 0.7, **kw)
            index = torch.zeros(B, s, dtype=torch.long)
            index[:, : h * w] = 1  # the first latent frame clean (image-to-video)
            levels = TokenTimesteps(torch.tensor([[0.7, 0.0]] * B), index)
            out[case, "levels"] = model(x, ax, ctx, actx, 0.7, timestep=levels, **kw)
            per_item = [dict(skip_video_self_attn_blocks=(1,)), dict(disable_v2a=True, disable_a2v=True)]
            out[case, "switches"] = model(x, ax, ctx, actx, 0.7, per_item=per_item, **kw)
    return out


def _rank_main(rank: int, world: int, port: int, path: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.save(_velocities(_model()), f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_give_the_one_process_velocities(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = str(tmp_path / "velocities")
    mp.spawn(_rank_main, args=(2, port, path), nprocs=2, join=True)
    want = _velocities(_model())
    for rank in range(2):
        got = torch.load(f"{path}.{rank}")
        for key, (video, audio) in want.items():
            gv, ga = got[key]
            assert gv.shape == video.shape and ga.shape == audio.shape, key
            for g_, w_ in ((gv, video), (ga, audio)):
                err = ((g_ - w_).abs().max() / w_.abs().max()).item()
                assert err < 1e-5, (rank, key, err)
