"""Scaled dot-product attention with grouped-query heads, on PyTorch's fused kernels.

Tensors use the SDPA layout ``[batch, heads, tokens, head_dim]``. Keys and values may have fewer
heads than queries (GQA); on PyTorch builds whose SDPA cannot broadcast groups itself, the key and
value heads are repeated once per call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

def _sdpa_supports_gqa() -> bool:
    try:
        q = torch.zeros(1, 2, 1, 4)
        kv = torch.zeros(1, 1, 1, 4)
        F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
        return True
    except (TypeError, RuntimeError):
        return False


_SDPA_HAS_GQA = _sdpa_supports_gqa()


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention of ``q`` over ``k``/``v`` (scale ``1/sqrt(head_dim)``).

    ``mask`` is an optional boolean tensor broadcastable to ``[B, Hq, Nq, Nk]`` where True keeps a key.
    Query head ``h`` reads key/value head ``h // (Hq / Hkv)`` (the usual grouped-query layout).
    """
    groups = q.shape[1] // k.shape[1]
    if groups == 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    if not causal and mask is None:
        # Without a mask every query row is independent, so the query heads that share a key/value head
        # can be laid end to end as one longer sequence of that head: plain attention, no group handling
        # in the kernel (several times faster than enable_gqa on the CPU kernels).
        b, hq, n, d = q.shape
        hkv = k.shape[1]
        folded = q.reshape(b, hkv, groups * n, d)
        out = F.scaled_dot_product_attention(folded, k, v)
        return out.view(b, hq, n, d)
    if _SDPA_HAS_GQA:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
