"""Several processes on one workflow (core.distributed, torchrun), tested on the CPU with the gloo backend and
2 processes: the ranks share the tiles of a tiled LTX-2 video VAE decode and sum their shares, which gives the
single-process decode to float rounding; under torchrun only rank 0 reports and writes files."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from comfyui_cosmos3_ltx2.core import distributed
from helpers import ROOT

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
