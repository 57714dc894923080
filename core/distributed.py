"""Running one workflow on several processes with PyTorch's own distributed runtime (``torchrun``).

``torchrun --nproc-per-node N -m comfyui_cosmos3_ltx2 run WORKFLOW.json`` starts N ranks; :func:`init_from_env`
joins them (NCCL with a GPU per rank, gloo on the CPU). Every rank runs the whole graph with the same seed, so the
ranks agree on every tensor; the work that is split is reduced so that all ranks hold the full result again:
both transformers' video tokens (:class:`SequenceShard`, sequence parallel) and the tiles of a tiled LTX-2 video
decode. Progress, previews and output files come from rank 0 only
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

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attend, prefix=None) -> torch.Tensor:
        """Ulysses attention over the whole sequence. ``q`` [B, t, Hq, d] and ``k``, ``v`` [B, t, Hkv, d] hold this
        rank's tokens; ``prefix``: optional keys and values [B, Hkv, L, d] every rank holds whole (a prompt), attended
        before the sequence and never communicated. ``attend(q, k, v, mask)`` works on [B, heads, tokens, d].
        Returns this rank's tokens of the output [B, t, Hq, d]. Grouped key/value heads that do not split over the
        ranks are repeated to the query heads first."""
        w = self.world
        hq, hkv = q.shape[2], k.shape[2]
        if hq % w:
            raise ValueError(f"sequence parallel: {hq} attention heads do not split over {w} ranks")
        if hkv % w:  # e.g. one key/value head for 2 ranks: give every query head its own
            k, v = k.repeat_interleave(hq // hkv, dim=2), v.repeat_interleave(hq // hkv, dim=2)
            if prefix is not None:
                prefix = tuple(x.repeat_interleave(hq // hkv, dim=1) for x in prefix)
            hkv = hq

        def to_heads(x):  # [B, t, H, d]: head group r goes to rank r -> [B, H/w, T_pad, d]
            b, t, h, d = x.shape
            x = self._all_to_all(x.view(b, t, w, h // w, d).permute(2, 0, 3, 1, 4))  # [w (token block), B, h/w, t, d]
            return x.permute(1, 2, 0, 3, 4).reshape(b, h // w, w * t, d)

        qh, kh, vh = to_heads(q), to_heads(k), to_heads(v)
        keep = None
        if self.padded != self.n:  # the pad tokens are no keys
            keep = torch.arange(self.padded, device=q.device) < self.n
        if prefix is not None:
            group = hkv // w
            pk, pv = (x[:, self.rank * group:(self.rank + 1) * group] for x in prefix)
            kh = torch.cat([pk.expand(kh.shape[0], -1, -1, -1), kh], dim=2)
            vh = torch.cat([pv.expand(vh.shape[0], -1, -1, -1), vh], dim=2)
            if keep is not None:
                keep = torch.cat([torch.ones(pk.shape[2], dtype=torch.bool, device=q.device), keep])
        out = attend(qh, kh, vh, None if keep is None else keep.view(1, 1, 1, -1))  # [B, Hq/w, T_pad, d]
        b, hl, _, d = out.shape
        out = self._all_to_all(out.view(b, hl, w, -1, d).permute(2, 0, 3, 1, 4))  # [w (head group), B, t, Hq/w, d]
        return out.permute(1, 2, 0, 3, 4).reshape(b, -1, w * hl, d)

    def self_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, attend) -> torch.Tensor:
        """:meth:`attend` for ``q``, ``k``, ``v`` laid out [B, t, heads * d] (the same head count for all three)."""
        split = lambda x: x.unflatten(-1, (heads, -1))  # noqa: E731
        return self.attend(split(q), split(k), split(v), attend).flatten(2)
