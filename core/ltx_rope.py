"""LTX-style rotary embeddings: fractional positions, frequency grid, cos/sin tables, rotation.

LTX (LTX-Video, LTX-2, LTX-2.3) builds RoPE differently from the usual ``1/theta^(2j/d)`` table:

* every position axis is first turned into a fraction ``p / max_pos`` (max_pos per axis, e.g. seconds
  for time, pixels for space, text length for the 1-D connector);
* the ``n = dim // (2 * axes)`` angular frequencies are ``theta^(k/(n-1)) * pi/2`` for k = 0..n-1 (a
  linspace of exponents from 0 to 1), optionally formed in float64 and rounded to float32;
* the angle for frequency k and axis a is ``omega_k * (2 * frac_a - 1)``, flattened frequency-major
  (index ``k * axes + a``);
* "interleaved": cos/sin repeated for each (2j, 2j+1) channel pair over the whole attention width, front
  padded with cos=1/sin=0; "split": one value per channel pair of each head, where a head's channels
  are split in two halves (x1, x2), front padded to ``dim // 2`` and cut into ``heads`` equal chunks.

Tables here keep the token-major layout ``[B, T, dim]`` (interleaved) or ``[B, T, heads, dim/(2 heads)]``
(split), so queries and keys of shape ``[B, T, heads * head_dim]`` rotate without transposes. Tables
stay in float32 and the rotation runs in float32, casting the result back to the input dtype.
"""

from __future__ import annotations

import math

import torch

__all__ = ["frequency_grid", "rope_angles", "rope_tables", "apply_rope"]

ROPE_TYPES = ("interleaved", "split")


def frequency_grid(theta: float, num_axes: int, dim: int, double_precision: bool,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """The ``dim // (2 * num_axes)`` angular frequencies ``theta^(k/(n-1)) * pi / 2`` (float32)."""
    n = dim // (2 * num_axes)
    work = torch.float64 if double_precision else torch.float32
    exponents = torch.linspace(0.0, 1.0, n, dtype=work, device=device)
    omega = torch.pow(theta, exponents) * math.pi / 2
    return omega.to(torch.float32)


def rope_angles(fractions: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """Angles ``omega_k * (2 frac_a - 1)`` for ``fractions`` [B, T, A] -> [B, T, n * A] (index k*A + a)."""
    centred = (fractions.to(torch.float32) * 2 - 1).unsqueeze(-2)  # [B, T, 1, A]
    return (omega.to(fractions.device)[:, None] * centred).flatten(-2)


def rope_tables(
    fractions: torch.Tensor,
    dim: int,
    *,
    num_heads: int,
    rope_type: str = "interleaved",
    theta: float = 10000.0,
    double_precision: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (cos, sin) for positions given as fractions of max_pos, shape [B, T, A].

    ``dim`` is the full attention width (heads * head_dim). Returns [B, T, dim] for "interleaved"
    and [B, T, num_heads, dim // (2 * num_heads)] for "split".
    """
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"rope_type must be one of {ROPE_TYPES}, got {rope_type!r}")
    num_axes = fractions.shape[-1]
    omega = frequency_grid(theta, num_axes, dim, double_precision, device=fractions.device)
    angles = rope_angles(fractions, omega)
    cos, sin = angles.cos(), angles.sin()
    b, t = angles.shape[:2]
    if rope_type == "interleaved":
        cos = cos.repeat_interleave(2, dim=-1)
        sin = sin.repeat_interleave(2, dim=-1)
        pad = dim - cos.shape[-1]
    else:
        pad = dim // 2 - cos.shape[-1]
    if pad:
        cos = torch.cat([cos.new_ones(b, t, pad), cos], dim=-1)
        sin = torch.cat([sin.new_zeros(b, t, pad), sin], dim=-1)
    if rope_type == "split":
        cos = cos.reshape(b, t, num_heads, -1)
        sin = sin.reshape(b, t, num_heads, -1)
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [B, T, heads * head_dim] with tables from :func:`rope_tables`.

    The rope type is read from the table shape (4-D tables are "split"). Works in float32 (the tables
    are float32, so type promotion lifts ``x`` inside the first product, without a separate cast) and
    returns ``x``'s dtype.
    """
    xf = x if cos.dtype == torch.float32 else x.float()
    if cos.ndim == 4:  # split: per head, first half against second half
        heads, r = cos.shape[-2], cos.shape[-1]
        pairs = xf.unflatten(-1, (heads, 2, r))
        x1, x2 = pairs[..., 0, :], pairs[..., 1, :]
        out = pairs * cos.unsqueeze(-2)  # (x1 cos, x2 cos), then finished in place by two fused
        out[..., 0, :].addcmul_(x2, sin, value=-1.0)  # multiply-adds: 3 ops, no stack
        out[..., 1, :].addcmul_(x1, sin)
        out = out.flatten(-3)
    else:  # interleaved: channel pairs (2j, 2j+1), the tables repeated per pair; same 3-op finish
        pairs = xf.unflatten(-1, (-1, 2))
        out = xf * cos
        halves, s = out.unflatten(-1, (-1, 2)), sin.unflatten(-1, (-1, 2))
        halves[..., 0].addcmul_(pairs[..., 1], s[..., 0], value=-1.0)
        halves[..., 1].addcmul_(pairs[..., 0], s[..., 1])
    return out.to(x.dtype)
