"""Several processes on one workflow (core.distributed, torchrun), tested on the CPU with the gloo backend and
2 processes: the ranks share the tiles of a tiled LTX-2 video VAE decode and sum their shares, or split the rows
of an untiled decode of either video VAE (Cosmos3's Wan2.1 / Wan2.2, LTX-2.0 / 2.3, whole or streamed), which gives
the single-process decode to float rounding; under torchrun only rank 0 reports and writes files."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from comfyui_cosmos3_ltx2.core import distributed
from helpers import ROOT
from helpers.ltx2_video_vae_ref import TINY_20, TINY_23

TILE = dict(spatial_tile=64, spatial_overlap=32, temporal_chunk=2)


def _vae_and_latent():
    from comfyui_cosmos3_ltx2.ltx2.loader import load_ltx2_checkpoint
    from comfyui_cosmos3_ltx2.ltx2.tiny import default_demo

    vae = load_ltx2_checkpoint(default_demo().checkpoint, components=("video_vae",), dtype="fp32").video_vae
    z = torch.randn(1, vae.latent_channels, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    return vae, z


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        vae, z = _vae_and_latent()
        tiles = []
        with torch.no_grad():
            frames = vae.decode(z, callback=lambda done, total: tiles.append(done), **TILE)
        torch.save({"frames": frames, "calls": len(tiles)}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


# Tiny decoders with random weights; the latents have an odd row count, so the two bands differ in height.
WAN22 = dict(base_dim=8, decoder_base_dim=8, z_dim=8, dim_mult=[1, 2, 4, 4], num_res_blocks=1, is_residual=True,
             in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16, latents_mean=[0.0] * 8,
             latents_std=[1.0] * 8)
WAN21 = dict(base_dim=8, z_dim=4, num_res_blocks=1)


def _row_split_decodes() -> dict:
    """Untiled decodes of every video VAE kind (the ranks split the rows when distributed)."""
    from comfyui_cosmos3_ltx2.cosmos3.vae import WanVAE
    from comfyui_cosmos3_ltx2.ltx2.video_vae import LTX2VideoVAE

    out = {}
    for name, config, rows in (("wan2.2", WAN22, 3), ("wan2.1", WAN21, 5)):
        torch.manual_seed(1)
        vae = WanVAE(config).eval()
        with torch.no_grad():
            for p in vae.parameters():  # gains and biases away from their identity values
                p.add_(0.1 * torch.randn_like(p))
        z = torch.randn(1, vae.z_dim, 3, rows, 4, generator=torch.Generator().manual_seed(2))
        out[name] = vae.decode(z)
    for name, config, rows in (("ltx2.0-reflect", TINY_20, 5), ("ltx2.3-zeros", TINY_23, 3)):
        torch.manual_seed(3)
        vae = LTX2VideoVAE(config).eval()
        with torch.no_grad():
            for p in vae.parameters():
                p.add_(0.1 * torch.randn_like(p))
        z = torch.randn(1, vae.latent_channels, 3, rows, 2, generator=torch.Generator().manual_seed(4))
        out[name] = vae.decode(z)
        out[name + "-streamed"] = vae.decode(z, temporal_chunk=2)
    return out


def _row_split_main(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        assert distributed.RowShard.for_decode(3).counts == [2, 1]
        assert distributed.RowShard.for_decode(3, "reflect") is None  # a reflect band needs two rows
        calls, halo, gather = {"halo": 0, "gather": 0}, distributed.RowShard.halo, distributed.RowShard.gather

        def counted(name, fn):
            def wrapper(*args, **kwargs):
                calls[name] += 1
                return fn(*args, **kwargs)
            return wrapper

        distributed.RowShard.halo, distributed.RowShard.gather = counted("halo", halo), counted("gather", gather)
        decodes = _row_split_decodes()
        assert calls["halo"] > 50 and calls["gather"] > 10, calls  # the rows were split, not decoded whole
        torch.save(decodes, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_not_distributed_by_default():
    assert not distributed.init_from_env() and distributed.world_size() == 1 and distributed.is_main()
    assert all(distributed.mine(i) for i in range(5))


def test_two_ranks_share_a_tiled_decode(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "frames")
    mp.spawn(_rank_main, args=(2, _free_port(), out), nprocs=2, join=True)
    vae, z = _vae_and_latent()
    want = vae.decode(z, **TILE)
    parts = [torch.load(f"{out}.{r}") for r in range(2)]
    assert len(vae._spatial_tiles(5, 6, 64, 32)) > 2  # several tiles, so each rank had some
    for part in parts:  # every rank holds the whole decode, equal to one process's to float rounding
        assert part["frames"].shape == want.shape
        assert (part["frames"] - want).abs().max() <= 1e-5 * want.abs().max()
    assert 0 < parts[0]["calls"] and 0 < parts[1]["calls"]


def test_two_ranks_split_the_rows_of_an_untiled_decode(tmp_path):
    """Each rank decodes a band of rows, borrowing its neighbour's edge rows before every convolution (and every
    band's keys in the Wan mid-block attention); both ranks end with the whole one-process decode."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "frames")
    mp.spawn(_row_split_main, args=(2, _free_port(), out), nprocs=2, join=True)
    want = _row_split_decodes()
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        for name, frames in want.items():
            assert got[name].shape == frames.shape, name
            assert (got[name] - frames).abs().max() <= 1e-5 * frames.abs().max(), (rank, name)


def test_row_shard_bands_without_processes():
    shard = distributed.RowShard(7, world=3, rank_=1)
    assert shard.counts == [3, 2, 2] and shard.lo == 3
    assert shard.split(torch.arange(7.0).view(7, 1)).flatten().tolist() == [3.0, 4.0]
    assert distributed.RowShard.for_decode(8) is None  # one process: nothing to split


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun's standalone rendezvous")
def test_torchrun_runs_a_workflow_and_only_rank_0_writes(tmp_path):
    small = ["--set", "3.width=64", "--set", "3.height=64", "--set", "3.frames=9", "--set", "5.steps=2",
             "--set", "6.spatial_tile=64", "--set", "6.tile_overlap=32"]
    workflow = str(ROOT / "workflows" / "api" / "ltx2_t2v_api.json")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "comfyui_cosmos3_ltx2", "run", workflow, "--output-dir", str(tmp_path / "two"), *small]
    two = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "comfyui_cosmos3_ltx2", "run", workflow, "--output-dir",
                          str(tmp_path / "one"), *small], capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    files = sorted((tmp_path / "two").rglob("*.mp4"))
    assert len(files) == 1 and two.stdout.count("file(s) written") == 1  # rank 0 only
    import av

    def frames(path):
        with av.open(str(path)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float64)

    a, b = frames(files[0]), frames(next((tmp_path / "one").rglob("*.mp4")))
    assert a.shape == b.shape and np.abs(a - b).mean() < 0.5  # same frames up to rounding (and H.264)


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun's standalone rendezvous")
def test_a_failing_workflow_stops_every_rank_with_its_message(tmp_path):
    """A problem on the ranks ends the whole torchrun (no rank left waiting) with the error on stderr."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "comfyui_cosmos3_ltx2", "run", str(ROOT / "workflows" / "api" / "ltx2_t2v_api.json"),
           "--output-dir", str(tmp_path), "--set", "3.width=100"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode != 0 and "width" in out.stderr and "multiple of 32" in out.stderr, out.stderr[-2000:]
    assert not list(tmp_path.rglob("*.mp4"))
