"""Real-size-run mechanisms on one medium random LTX-2.3 transformer, as ratios measured in one run.

    python bench/bench_scale.py [--device cuda] [--layers 16] [--width 1024] [--resident 4] [--json out.json]

* one guided denoising call (two transformer passes: conditional and negative prompt) with every block resident,
  then with only ``--resident`` blocks on the device and the rest streamed from host memory (core.offload), then
  with the blocks' linear weights stored as scaled fp8 (core.quant): time and peak memory, as x resident;
* video VAE decodes on 1 process and on 2 (torch.distributed, gloo on the CPU): LTX-2's tiled decode (tiles shared)
  and untiled decode (rows split), and a Wan2.2-layout decode as Cosmos3 runs it (rows split): time, as x 1 process.

On the CPU the offload copies are host to host, so its time ratio is the bookkeeping's cost and its memory ratio
says nothing (the "device" is the host); on a GPU the peak memory is what offload saves. Not a test: it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MemProbe, med  # noqa: E402

from comfyui_cosmos3_ltx2.core.offload import enable_block_offload  # noqa: E402
from comfyui_cosmos3_ltx2.ltx2.transformer import LTX2Transformer  # noqa: E402


def config(layers: int, width: int) -> dict:
    heads = width // 64
    return dict(in_channels=128, out_channels=128, num_attention_heads=heads, attention_head_dim=64,
                cross_attention_dim=width, audio_in_channels=128, audio_out_channels=128,
                audio_num_attention_heads=heads // 2, audio_attention_head_dim=64, audio_cross_attention_dim=width // 2,
                num_layers=layers, caption_channels=width, use_prompt_embeddings=False, rope_type="split",
                rope_double_precision=True, rope_theta=10000.0, timestep_scale_multiplier=1000,
                cross_attn_timestep_scale_multiplier=1000, gated_attn=True, audio_gated_attn=True,
                cross_attn_mod=True, audio_cross_attn_mod=True, perturbed_attn=True)


def build(cfg: dict, device, dtype) -> LTX2Transformer:
    torch.manual_seed(0)
    model = LTX2Transformer(cfg).to(dtype=dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, p.shape[-1] ** -0.5 if p.ndim > 1 else 0.02)
    return model


def step_inputs(model, device, dtype, frames=5, h=8, w=12):
    c = model.config
    g = torch.Generator().manual_seed(1)
    s, sa, text = frames * h * w, 4 * frames, 64
    mk = lambda *shape: torch.randn(*shape, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    x, ax = mk(1, s, c["in_channels"]), mk(1, sa, c["audio_in_channels"])
    ctx = [mk(1, text, c["cross_attention_dim"]), mk(1, text, c["audio_cross_attention_dim"])]
    neg = [mk(1, text, c["cross_attention_dim"]), mk(1, text, c["audio_cross_attention_dim"])]
    kw = dict(video_coords=model.video_coords(1, frames, h, w, device=device), audio_coords=model.audio_coords(1, sa))
    return lambda: [model(x, ax, *ctx, 0.7, **kw), model(x, ax, *neg, 0.7, **kw)]


def measure(run, device, repeats: int) -> tuple[float, int | None]:
    probe = MemProbe(device)
    times, peak = [], None
    with torch.no_grad():
        run()  # warm-up
        for _ in range(repeats):
            probe.start()
            t0 = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            got = probe.stop()
            peak = got[1] if got else None
    return med(times), peak


def _wan_vae():
    """A Wan2.2-layout VAE (48 latent channels, 2x2 pixel patches) of modest width with random weights."""
    from comfyui_cosmos3_ltx2.cosmos3.vae import WanVAE

    torch.manual_seed(0)
    return WanVAE(dict(base_dim=32, decoder_base_dim=32, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                       is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                       latents_mean=[0.0] * 48, latents_std=[1.0] * 48)).eval()


DECODES = {  # name -> (VAE builder, latent shape, decode keywords)
    "tiled LTX-2 video decode (demo VAE)": ("ltx", (5, 12, 16), dict(spatial_tile=128, spatial_overlap=32)),
    "untiled LTX-2 video decode (demo VAE, rows split)": ("ltx", (5, 12, 16), {}),
    "Cosmos3 Wan2.2 VAE decode (width 32, rows split)": ("wan", (3, 8, 12), {}),
}


def _decode_rank(rank, world, port, out):
    import torch.distributed as dist

    from comfyui_cosmos3_ltx2.ltx2.loader import load_ltx2_checkpoint
    from comfyui_cosmos3_ltx2.ltx2.tiny import default_demo

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    vaes = {"ltx": load_ltx2_checkpoint(default_demo().checkpoint, components=("video_vae",), dtype="fp32").video_vae,
            "wan": _wan_vae()}
    times = {}
    for name, (kind, shape, kw) in DECODES.items():
        vae = vaes[kind]
        channels = vae.latent_channels if kind == "ltx" else vae.z_dim
        z = torch.randn(1, channels, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            vae.decode(z, **kw)
            t0 = time.perf_counter()
            vae.decode(z, **kw)
            times[name] = time.perf_counter() - t0
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    if world > 1:
        dist.destroy_process_group()


def decode_times(tmp: Path) -> dict:
    """{decode name: {1: seconds on one process, 2: on two}} (rank 0's wall time)."""
    import torch.multiprocessing as mp

    out = {}
    for world in (1, 2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        path = tmp / f"decode{world}"
        mp.spawn(_decode_rank, args=(world, port, str(path)), nprocs=world, join=True)
        for name, t in json.loads(path.read_text()).items():
            out.setdefault(name, {})[world] = t
    return out


def store_fp8(model) -> None:
    """The blocks' linear weights as per-tensor scaled fp8 codes (core.quant), as ``--dtype fp8_e4m3fn`` stores
    them at load; norms, embeddings and biases stay as they are."""
    from comfyui_cosmos3_ltx2.core import quant

    for sub in model.transformer_blocks.modules():
        if type(sub) is torch.nn.Linear:
            codes, scale = quant.quantize_fp8(sub.weight.detach())
            quant.to_quant_linear(sub, torch.float8_e4m3fn)
            sub.weight = torch.nn.Parameter(codes, requires_grad=False)
            sub.weight_scale = scale


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--resident", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json")
    a = p.parse_args()
    device, dtype = torch.device(a.device), {"bf16": torch.bfloat16, "fp32": torch.float32}[a.dtype]
    cfg = config(a.layers, a.width)
    res = {}

    model = build(cfg, device, dtype).to(device)
    res["resident"] = measure(step_inputs(model, device, dtype), device, a.repeats)
    del model
    model = build(cfg, device, dtype)
    enable_block_offload(model, model.transformer_blocks, device, a.resident)
    res[f"offload ({a.resident} of {a.layers} resident)"] = measure(step_inputs(model, device, dtype), device, a.repeats)
    del model
    model = build(cfg, device, dtype)
    store_fp8(model)
    model.to(device)
    res["fp8 weights"] = measure(step_inputs(model, device, dtype), device, a.repeats)
    del model

    base_t, base_m = res["resident"]
    print(f"LTX-2.3-shaped transformer: {a.layers} blocks, width {a.width}, {a.dtype} on {device}; one guided call "
          "(2 passes)")
    print(f"{'':<32} {'s':>8} {'x resident':>11} {'peak MB':>9} {'x resident':>11}")
    for name, (t, m) in res.items():
        mr = f"{m / base_m:11.2f}" if m and base_m else f"{'-':>11}"
        print(f"{name:<32} {t:8.3f} {t / base_t:11.2f} {(m or 0) / 2**20:9.0f} {mr}")
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_scale_{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    dec = decode_times(tmp)
    print("video VAE decode, 1 process vs 2 (torch.distributed, gloo on the CPU, one thread each):")
    for name, t in dec.items():
        print(f"  {name:<52} 1 process {t[1]:.3f} s, 2 processes {t[2]:.3f} s = {t[2] / t[1]:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps({"steps": res, "decode": dec}, indent=1))


if __name__ == "__main__":
    main()
