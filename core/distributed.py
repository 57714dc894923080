"""Running one workflow on several processes with PyTorch's own distributed runtime (``torchrun``).

``torchrun --nproc-per-node N -m comfyui_cosmos3_ltx2 run WORKFLOW.json`` starts N ranks; :func:`init_from_env`
joins them (NCCL with a GPU per rank, gloo on the CPU). Every rank runs the whole graph with the same seed, so the
ranks agree on every tensor; the work that is split is reduced so that all ranks hold the full result again
(today: the tiles of a tiled video VAE decode). Progress, previews and output files come from rank 0 only
(:func:`is_main`). A rank that fails exits non-zero, and torchrun then stops the others.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1 in the environment); True when distributed."""
    if initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def mine(index: int) -> bool:
    """Whether work item ``index`` of a list shared round-robin among the ranks is this rank's."""
    return index % world_size() == rank()


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """In place: the sum of ``tensor`` over the ranks (each rank contributed its share); returned for chaining."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
