"""Rotary position embeddings: the inverse-frequency table, multi-axis (mRoPE) angles, rotation.

The angles are always formed in float32 (positions up to ~1e5 must stay exact) and only the final
cos/sin tables are cast to the activation dtype.
"""

from __future__ import annotations

import torch


def inverse_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """``1 / theta^(2j / head_dim)`` for j in [0, head_dim/2), float32."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def interleaved_axis_of_slot(num_slots: int, sections: list[int] | tuple[int, int, int]) -> list[int]:
    """Axis (0 = time, 1 = height, 2 = width) driving each frequency slot in interleaved mRoPE.

    Slots cycle T, H, W while the height and width sections last; every remaining slot is time.
    """
    axes = [0] * num_slots
    for axis, offset in ((1, 1), (2, 2)):
        for j in range(offset, min(3 * sections[axis], num_slots), 3):
            axes[j] = axis
    return axes


def mrope_cos_sin(
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    axis_of_slot: list[int],
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``[..., N, 2 * slots]`` from positions ``[3, ..., N]`` (one row per axis).

    Each slot j takes its angle from the axis ``axis_of_slot[j]``; the table is duplicated over the two
    halves of the head (rotate-half convention).
    """
    inv_freq = inv_freq.to(positions.device)
    pos = positions.float()
    angles = torch.empty(*pos.shape[1:], inv_freq.numel(), dtype=torch.float32, device=pos.device)
    for axis in range(3):
        slots = [j for j, a in enumerate(axis_of_slot) if a == axis]
        if not slots:
            continue
        idx = torch.tensor(slots, device=pos.device)
        angles[..., idx] = pos[axis].unsqueeze(-1) * inv_freq[idx]
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[a, b] -> [-b, a]`` over the last dimension's two halves."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` by the angles whose cos/sin are given (broadcast against x)."""
    return x * cos + rotate_half(x) * sin
