"""Running one workflow on several processes with PyTorch's own distributed runtime (``torchrun``).

``torchrun --nproc-per-node N -m comfyui_cosmos3_ltx2 run WORKFLOW.json`` starts N ranks; :func:`init_from_env`
joins them (NCCL with a GPU per rank, gloo on the CPU). Every rank runs the whole graph with the same seed, so the
ranks agree on every tensor; the work that is split is reduced so that all ranks hold the full result again:
the LTX-2 transformer's video tokens (:class:`SequenceShard`, sequence parallel) and the tiles of a tiled LTX-2
video decode. Progress, previews and output files come from rank 0 only
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


class SequenceShard:
    """One sequence of ``n`` tokens split over the ranks along dim 1 (padded to a multiple of the rank count; the
    last rank holds the pad). Ulysses attention (:meth:`self_attention`): an all-to-all turns the token shard
    into a head shard, every rank attends over the whole sequence for its heads, and the reverse all-to-all
    gives each rank its tokens back (scale.md §1, SGLang's USPAttention)."""

    def __init__(self, n: int, world: int | None = None, rank_: int | None = None):
        self.world = world_size() if world is None else world
        self.rank = rank() if rank_ is None else rank_
        self.n = n
        self.local = -(-n // self.world)
        self.padded = self.local * self.world
        self.lo = self.rank * self.local

    def split(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This rank's tokens of the full ``x`` (zero-padded at the end)."""
        if self.padded != self.n:
            shape = list(x.shape)
            shape[dim] = self.padded - self.n
            x = torch.cat([x, x.new_zeros(shape)], dim=dim)
        return x.narrow(dim, self.lo, self.local)

    def gather(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """The full sequence from every rank's tokens ``x`` (pad removed)."""
        x = x.contiguous()
        parts = [torch.empty(x.shape, dtype=x.dtype, device=x.device) for _ in range(self.world)]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=dim).narrow(dim, 0, self.n)

    def _all_to_all(self, x: torch.Tensor) -> torch.Tensor:
        """[world, ...] chunks: chunk r goes to rank r; returns the chunks received, in rank order."""
        x = x.contiguous()
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous (empty_like would keep x's strides)
        dist.all_to_all_single(out, x)
        return out

    def self_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, attend) -> torch.Tensor:
        """``q``, ``k``, ``v``: this rank's tokens [B, T_local, heads * d]; ``attend(q, k, v, mask)`` on
        [B, h, T, d] tensors. Returns this rank's tokens of the attention output [B, T_local, heads * d]."""
        if heads % self.world:
            raise ValueError(f"sequence parallel: {heads} heads do not split over {self.world} ranks")
        b, t, width = q.shape
        hl = heads // self.world

        def to_heads(x):  # [B, t, H*d] -> send head group r to rank r -> [B, h_l, T_pad, d]
            x = x.view(b, t, self.world, hl, width // heads).permute(2, 0, 3, 1, 4)  # [w, B, h_l, t, d]
            x = self._all_to_all(x)  # now [w (source rank = token block), B, h_l, t, d]
            return x.permute(1, 2, 0, 3, 4).reshape(b, hl, self.world * t, width // heads)

        qh, kh, vh = to_heads(q), to_heads(k), to_heads(v)
        mask = None
        if self.padded != self.n:  # the pad tokens are no keys
            mask = torch.arange(self.padded, device=q.device) < self.n
            mask = mask.view(1, 1, 1, -1)
        out = attend(qh, kh, vh, mask)  # [B, h_l, T_pad, d]
        out = out.view(b, hl, self.world, t, width // heads).permute(2, 0, 3, 1, 4)  # [w (token block), B, t, h_l, d]
        out = self._all_to_all(out)  # [w (source rank = head group), B, t, h_l, d]
        return out.permute(1, 2, 0, 3, 4).reshape(b, t, width)
