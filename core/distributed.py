"""Running one workflow on several processes with PyTorch's own distributed runtime (``torchrun``).

``torchrun --nproc-per-node N -m comfyui_cosmos3_ltx2 run WORKFLOW.json`` starts N ranks; :func:`init_from_env`
joins them (NCCL with a GPU per rank, gloo on the CPU). Every rank runs the whole graph with the same seed, so the
ranks agree on every tensor; the work that is split is reduced so that all ranks hold the full result again:
both transformers' video tokens (:class:`SequenceShard`, sequence parallel), the rows of a video VAE decode
(:class:`RowShard`, both VAEs) and the tiles of a tiled LTX-2 video decode. Progress, previews and output files come from rank 0 only
(:func:`is_main`). A rank that fails exits non-zero, and torchrun then stops the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

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


class RowShard:
    """The rows of an image split over the ranks in contiguous bands, top to bottom (the first ``rows % world``
    ranks hold one row more), for convolutional decoders: each rank runs the decoder on its band; before every
    convolution taller than one row the band borrows its neighbours' edge rows (:meth:`halo`), the image's own
    top and bottom padded as the convolution pads them, so each rank computes exactly its band of the whole
    image's result; frame-wide attention reads every band's keys (:meth:`gather`). Operations that turn one row
    into ``f`` rows (nearest upsampling, depth-to-space, pixel patches) keep the bands aligned, so the bands of
    later, taller feature maps are the latent bands times ``f``. This is the lossless height-split decode of
    scale.md §1 (SGLang's LTX-2 decoder); the edge rows are exchanged with one ``all_gather`` of two rows per
    rank rather than point-to-point, which costs more only at rank counts far above a node's."""

    PADDINGS = ("zeros", "reflect", "replicate")

    def __init__(self, rows: int, world: int | None = None, rank_: int | None = None):
        self.world = world_size() if world is None else world
        self.rank = rank() if rank_ is None else rank_
        self.rows = rows
        self.counts = [rows // self.world + (r < rows % self.world) for r in range(self.world)]
        self.lo = sum(self.counts[: self.rank])

    @classmethod
    def for_decode(cls, rows: int, padding: str = "zeros") -> RowShard | None:
        """A split of ``rows`` latent rows over this run's ranks, or None when there is one rank, or too few rows
        for every band to hold one (two for reflect padding, which mirrors the row below the edge)."""
        world = world_size()
        if world <= 1 or padding not in cls.PADDINGS or rows < world * (2 if padding == "reflect" else 1):
            return None
        return cls(rows, world)

    def split(self, x: torch.Tensor, dim: int = -2) -> torch.Tensor:
        """This rank's band of the whole ``x`` (rows along ``dim``)."""
        return x.narrow(dim, self.lo, self.counts[self.rank])

    def halo(self, x: torch.Tensor, rows: int = 1, padding: str = "zeros") -> torch.Tensor:
        """This rank's band ``x`` [..., h, W] with ``rows`` more rows above and below: the neighbouring bands' rows
        inside the image, the image border's ``padding`` (zeros, reflect, replicate) at its top and bottom."""
        if padding not in self.PADDINGS:
            raise ValueError(f"RowShard: unsupported padding {padding!r}")
        edges = torch.cat([x[..., :rows, :], x[..., -rows:, :]], dim=-2).contiguous()
        parts = [torch.empty_like(edges) for _ in range(self.world)]
        dist.all_gather(parts, edges)
        if self.rank > 0:
            top = parts[self.rank - 1][..., rows:, :]
        elif padding == "zeros":
            top = torch.zeros_like(x[..., :rows, :])
        elif padding == "reflect":
            top = x[..., 1 : rows + 1, :].flip(-2)
        else:
            top = x[..., :1, :].expand(*x.shape[:-2], rows, x.shape[-1])
        if self.rank < self.world - 1:
            bottom = parts[self.rank + 1][..., :rows, :]
        elif padding == "zeros":
            bottom = torch.zeros_like(x[..., -rows:, :])
        elif padding == "reflect":
            bottom = x[..., -rows - 1 : -1, :].flip(-2)
        else:
            bottom = x[..., -1:, :].expand(*x.shape[:-2], rows, x.shape[-1])
        return torch.cat([top, x, bottom], dim=-2)

    def gather(self, x: torch.Tensor, dim: int = -2) -> torch.Tensor:
        """The whole image from every rank's band ``x`` (rows along ``dim``; a band may be ``f`` times its latent
        rows, the same ``f`` on every rank)."""
        dim = dim % x.ndim
        f = x.shape[dim] // self.counts[self.rank]
        tallest = f * max(self.counts)
        if x.shape[dim] < tallest:  # all_gather wants one shape: pad the shorter bands, cut the pad after
            pad = list(x.shape)
            pad[dim] = tallest - x.shape[dim]
            x = torch.cat([x, x.new_zeros(pad)], dim=dim)
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x)
        return torch.cat([p.narrow(dim, 0, f * n) for p, n in zip(parts, self.counts)], dim=dim)


@contextmanager
def rows_split(module: torch.nn.Module, shard: RowShard | None) -> Iterator[None]:
    """Within the block, every submodule of ``module`` that has a ``rows`` attribute (the layers that mix
    neighbouring rows) works on ``shard``'s band; nothing changes when ``shard`` is None."""
    layers = [] if shard is None else [m for m in module.modules() if hasattr(m, "rows")]
    for layer in layers:
        layer.rows = shard
    try:
        yield
    finally:
        for layer in layers:
            layer.rows = None
