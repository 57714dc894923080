"""Sequence parallelism of the Cosmos3 transformer (GEN path) on 2 gloo processes: the video tokens are split over
the ranks, the GEN attention runs Ulysses-style (all-to-all over heads; the tiny model's single key/value head is
repeated to the query heads so it can split), the prompt's UND keys and values stay whole on every rank and are
sliced to each rank's heads, and the tokens are gathered before the output head. A whole generate on 2 ranks
gives the 1-process frames to float rounding, with an odd token count (padding) and image-to-video."""

import socket

import torch
import torch.multiprocessing as mp

KW = dict(steps=2, seed=3, guidance=4.0, device="cpu", dtype="fp32")
CASES = {"t2v": dict(width=64, height=32, num_frames=9), "padded-i2v": dict(width=32, height=32, num_frames=9)}  # 6, 3 tokens


def _frames() -> dict:
    from PIL import Image

    from comfyui_cosmos3_ltx2.cosmos3 import generate
    from comfyui_cosmos3_ltx2.cosmos3.tiny import default_checkpoint

    image = Image.new("RGB", (40, 30), (200, 30, 90))
    return {name: generate(default_checkpoint(), "a red robot", "blurry", image if "i2v" in name else None,
                           **case, **KW) for name, case in CASES.items()}


def _rank_main(rank: int, world: int, port: int, path: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.save(_frames(), f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_give_the_one_process_frames(tmp_path):
    from comfyui_cosmos3_ltx2.cosmos3.tiny import default_checkpoint

    default_checkpoint()  # written once before the ranks read it
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = str(tmp_path / "frames")
    mp.spawn(_rank_main, args=(2, port, path), nprocs=2, join=True)
    want = _frames()
    for rank in range(2):
        got = torch.load(f"{path}.{rank}")
        for name, frames in want.items():
            assert got[name].shape == frames.shape
            assert (got[name] - frames).abs().max() < 1e-4, (rank, name)
