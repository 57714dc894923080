"""Scaled dot-product attention with grouped-query heads: the one attention entry point of both models.

Tensors use the SDPA layout ``[batch, heads, tokens, head_dim]``. Keys and values may have fewer
heads than queries (GQA); on PyTorch builds whose SDPA cannot broadcast groups itself, the key and
value heads are repeated once per call.

Backends (:func:`set_backend`, process-wide; the command line's ``--attention``, and inside ComfyUI its own
``--use-flash-attention`` / ``--use-sage-attention`` flags, choose one):

* ``"sdpa"`` (default): PyTorch's ``scaled_dot_product_attention``, which picks its own fused kernel.
* ``"flash"``: FlashAttention's ``flash_attn_func`` (package ``flash-attn``, CUDA fp16 / bf16).
* ``"sage"``: SageAttention's ``sageattn`` (package ``sageattention``, CUDA; quantised QK^T).

flash and sage take no arbitrary mask: a call with a padding mask (the LTX text connectors and prompt
cross-attention with padded prompts) runs on SDPA whatever the backend. A chosen backend whose package is not
installed is an error when it is chosen, not a silent fallback.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "flash", "sage")
_PACKAGES = {"flash": ("flash_attn", "flash-attn"), "sage": ("sageattention", "sageattention")}
_backend = {"name": "sdpa", "fn": None}


def set_backend(name: str) -> str:
    """Use backend ``name`` for every attention call from now on; returns the previous one. Raises ``ValueError``
    for an unknown name and ``ImportError`` (saying what to install) when its package is missing."""
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r}: not one of {', '.join(BACKENDS)}")
    fn = None
    if name != "sdpa":
        module, package = _PACKAGES[name]
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise ImportError(f"attention backend {name!r} needs the {package} package, which is not installed "
                              f"({e}); pip install {package}, or choose 'sdpa'") from None
        fn = mod.flash_attn_func if name == "flash" else mod.sageattn
    previous = _backend["name"]
    _backend.update(name=name, fn=fn)
    return previous


def get_backend() -> str:
    return _backend["name"]


def _external(q, k, v, causal: bool) -> torch.Tensor:
    """flash / sage on ``[B, H, N, D]`` tensors (both take grouped key/value heads as they are)."""
    if _backend["name"] == "flash":  # layout [B, N, H, D]
        out = _backend["fn"](q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)
        return out.transpose(1, 2)
    return _backend["fn"](q, k, v, tensor_layout="HND", is_causal=causal)

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
    if _backend["fn"] is not None and mask is None:
        return _external(q, k, v, causal)
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
