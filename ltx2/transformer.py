"""LTX-2 / LTX-2.3 joint audio + video diffusion transformer (the DiT), in one file.

Two token streams run side by side through ``num_layers`` blocks: video tokens (width
``heads * head_dim``, 4096 in the real model) and audio tokens (2048). Each block, per stream:

1. self-attention with LTX RoPE (3-D positions for video, 1-D time for audio), AdaLN-modulated input
   and gated residual;
2. cross-attention to the text context (no RoPE). LTX-2.3 (``cross_attn_mod``) also modulates the
   query input (rows 6-8 of a 9-row table) and the context itself (per-block prompt table plus a
   timestep-dependent ``prompt_adaln`` embedding of the per-sample sigma);
3. audio-to-video (queries video, keys/values audio) and video-to-audio cross-attention, both on the
   RMS-normed streams taken once before either update, with their own scale/shift/gate tables and a
   1-D time-only RoPE of width ``audio_cross_attention_dim``;
4. GELU-tanh MLP, modulated and gated.

Optional per-head output gates ``2 sigmoid(W x)`` (LTX-2.3 ``gated_attn``). The output head is a
weightless LayerNorm modulated by the embedded timestep, then ``proj_out``. The model predicts a
velocity (``x0 = x - sigma * v``).

Timesteps here are **sigmas** (0..1), not the ``1000 * sigma`` the diffusers model takes: the model
multiplies by ``timestep_scale_multiplier`` itself, as the official code does. The AdaLN timestep may be
given per token (``timestep`` [B, S], e.g. ``sigma * denoise_mask`` for conditioned tokens); the
prompt modulation and the audio/video cross-attention use the per-sample sigmas. By default the
cross-attention modulation of one stream uses the *other* stream's sigma (``use_cross_timestep``,
the official behaviour; False is diffusers' legacy option of using the stream's own timestep).

Positions are diffusers-style pixel bounds: ``video_coords`` [B, 3, S, 2] holding [start, end) of
(time in seconds, y px, x px) per token, ``audio_coords`` [B, 1, Sa, 2] in seconds; :func:`video_coords`
and :func:`audio_coords` build them for a plain latent grid. :meth:`LTX2Transformer.rope` turns them into
the four cos/sin tables, which can be built once per resolution and passed to every call.

The model knows nothing of guidance passes. What a pass changes is a plain per-call (or, with ``per_item``,
per-sample) switch: ``skip_video_self_attn_blocks`` / ``skip_audio_self_attn_blocks`` (STG: in those blocks
the self-attention returns its value projection, still gated and projected out) and ``disable_a2v`` /
``disable_v2a`` (modality isolation). A call is also available in pieces (:meth:`LTX2Transformer.prepare`,
``embed``, ``run_blocks`` over any range of blocks, ``head``), so a caller can share the first blocks of two
calls. Nothing in a call reads a tensor on the host.

Attribute names are the diffusers ``transformer/`` checkpoint keys; :func:`official_to_module_key`
renames the official single-file (ComfyUI) keys.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core import distributed
from ..core.attention import attention
from ..core.compile import compile_blocks
from ..core.checkpoint import CheckpointError, list_keys, load_into, read_config
from ..core.ltx_rope import apply_rope, rope_tables
from ..core.norms import RMSNorm

__all__ = [
    "DEFAULT_CONFIG",
    "BlockInputs",
    "LTX2Transformer",
    "video_coords",
    "keyframe_coords",
    "TokenTimesteps",
    "audio_coords",
    "official_to_module_key",
    "config_from_official",
    "load_ltx2_transformer",
]

# diffusers ``LTX2VideoTransformer3DModel`` config fields and their defaults.
DEFAULT_CONFIG: dict = {
    "in_channels": 128,
    "out_channels": 128,
    "patch_size": 1,
    "patch_size_t": 1,
    "num_attention_heads": 32,
    "attention_head_dim": 128,
    "cross_attention_dim": 4096,
    "vae_scale_factors": (8, 32, 32),
    "pos_embed_max_pos": 20,
    "base_height": 2048,
    "base_width": 2048,
    "gated_attn": False,
    "cross_attn_mod": False,
    "audio_in_channels": 128,
    "audio_out_channels": 128,
    "audio_patch_size": 1,
    "audio_patch_size_t": 1,
    "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64,
    "audio_cross_attention_dim": 2048,
    "audio_scale_factor": 4,
    "audio_pos_embed_max_pos": 20,
    "audio_sampling_rate": 16000,
    "audio_hop_length": 160,
    "audio_gated_attn": False,
    "audio_cross_attn_mod": False,
    "num_layers": 48,
    "activation_fn": "gelu-approximate",
    "qk_norm": "rms_norm_across_heads",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "caption_channels": 3840,
    "attention_bias": True,
    "attention_out_bias": True,
    "rope_theta": 10000.0,
    "rope_double_precision": True,
    "causal_offset": 1,
    "timestep_scale_multiplier": 1000,
    "cross_attn_timestep_scale_multiplier": 1000,
    "rope_type": "interleaved",
    "use_prompt_embeddings": True,
    "perturbed_attn": False,
    "ff_bias": True,
    "audio_ff_bias": True,
    "use_prompt_adaln_single": True,
    "use_keyframes_abs_pos_embedding": False,
}


# --------------------------------------------------------------------------------------------------
# Small pieces


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMS normalisation, statistics in float32, result in x's dtype (one fused kernel, which
    computes in float32 and rounds once, also for bf16 / fp16 input)."""
    return F.rms_norm(x, (x.shape[-1],), None, eps)


def _modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` (the product and sum as one fused multiply-add)."""
    return torch.addcmul(shift, x, 1 + scale)


def sinusoid(t: torch.Tensor, channels: int = 256) -> torch.Tensor:
    """[cos | sin] features of the 1-D float tensor ``t`` at ``exp(-ln(1e4) k / (channels/2))``."""
    half = channels // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(k * -math.log(10000.0) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class _TimestepMLP(nn.Module):
    def __init__(self, dim: int, in_channels: int = 256):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class _TimestepEmbedding(nn.Module):
    """Holds ``timestep_embedder`` (the checkpoint nests it under ``emb``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = _TimestepMLP(dim)


class AdaLNSingle(nn.Module):
    """Timestep -> (``rows`` modulation vectors of width ``dim`` flattened, embedded timestep)."""

    def __init__(self, dim: int, rows: int):
        super().__init__()
        self.rows = rows
        self.emb = _TimestepEmbedding(dim)
        self.linear = nn.Linear(dim, rows * dim)

    def forward(self, t: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``t`` is any shape with ``batch`` leading elements (already scaled); returns [B, N, rows*D]
        and [B, N, D] where N = t.numel() // batch."""
        mlp = self.emb.timestep_embedder
        e = mlp(sinusoid(t.reshape(-1)).to(mlp.linear_1.weight.dtype))
        mod = self.linear(F.silu(e))
        return mod.view(batch, -1, mod.shape[-1]), e.view(batch, -1, e.shape[-1])


class CaptionProjection(nn.Module):
    """LTX-2.0 text projection: Linear, GELU-tanh, Linear."""

    def __init__(self, in_features: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


class _GeluProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, bias: bool):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """GELU-tanh MLP, 4x wide; keys ``net.0.proj.*`` and ``net.2.*``."""

    def __init__(self, dim: int, bias: bool = True, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([_GeluProj(dim, dim * mult, bias), nn.Identity(),
                                  nn.Linear(dim * mult, dim, bias=bias)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


Rope = tuple[torch.Tensor, torch.Tensor]


class Attention(nn.Module):
    """Multi-head attention with q/k RMS-normed across all heads, optional RoPE on q and k (separate
    tables for cross-modal attention) and optional per-head output gates."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, head_dim: int, gated: bool,
                 eps: float, bias: bool = True, out_bias: bool = True):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.norm_q = RMSNorm(inner, eps, fp32_weight=True)
        self.norm_k = RMSNorm(inner, eps, fp32_weight=True)
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias)])
        self.to_gate_logits = nn.Linear(query_dim, heads) if gated else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *,
                q_rope: Rope | None = None, k_rope: Rope | None = None,
                mask: torch.Tensor | None = None, value_only: bool | torch.Tensor = False,
                shard=None, context_shard=None) -> torch.Tensor:
        """``value_only``: True passes the values through instead of attending (STG); a boolean [B, 1, 1]
        tensor does so for the rows where it is True (per-sample switches of a batched call).
        Sequence parallel (:class:`core.distributed.SequenceShard`): ``shard`` when ``x`` is this rank's share of a
        self-attending sequence (Ulysses all-to-all over heads); ``context_shard`` when ``context`` is this rank's
        share of the keys' sequence (its keys and values are gathered)."""
        ctx = x if context is None else context
        v = self.to_v(ctx)
        if value_only is True:  # STG: skip the attention itself, pass the values through
            out = v
        else:
            q = self.norm_q(self.to_q(x))
            k = self.norm_k(self.to_k(ctx))
            if q_rope is not None:
                q = apply_rope(q, *q_rope)
                k = apply_rope(k, *(k_rope if k_rope is not None else q_rope))
            if shard is not None:
                out = shard.self_attention(q, k, v, self.heads, lambda qh, kh, vh, m: attention(qh, kh, vh, mask=m))
            else:
                if context_shard is not None:
                    k, v_keys = context_shard.gather(k), context_shard.gather(v)
                else:
                    v_keys = v
                qh, kh, vh = (z.unflatten(-1, (self.heads, -1)).transpose(1, 2) for z in (q, k, v_keys))
                out = attention(qh, kh, vh, mask=mask).transpose(1, 2).flatten(2)
            if isinstance(value_only, torch.Tensor):
                out = torch.where(value_only, v, out)
        if self.to_gate_logits is not None:
            gates = 2.0 * torch.sigmoid(self.to_gate_logits(x))
            out = (out.unflatten(-1, (self.heads, -1)) * gates.unsqueeze(-1)).flatten(2)
        return self.to_out[0](out)


class TokenTimesteps(NamedTuple):
    """Per-token timesteps given as a few levels: token s of sample b has ``values[b, index[b, s]]``.

    Conditioned tokens take only a handful of values (``sigma * mask`` with mask 0, 1 - strength or 1), so
    the timestep MLP runs on the K levels and each block gathers its modulation rows per token, instead
    of embedding every token ([B, S, rows*D]) as a per-token [B, S] timestep does. Same numbers up to
    float rounding of the MLP's matrix products.
    """

    values: torch.Tensor  # [B, K] sigmas (not scaled)
    index: torch.Tensor  # [B, S] int64 in [0, K)

    def per_token(self) -> torch.Tensor:
        """The equivalent [B, S] per-token timestep."""
        return torch.gather(self.values, 1, self.index)

    def repeat(self, n: int) -> "TokenTimesteps":
        """The levels of a batch repeated ``n`` times (passes concatenated along the batch)."""
        return TokenTimesteps(self.values.repeat(n, 1), self.index.repeat(n, 1))


def _per_token(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """[B, K, D] level rows -> [B, S, D] token rows (identity without an index)."""
    if index is None:
        return x
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class _Rows:
    """Modulation rows ``table[i] + temb[..., i*D:(i+1)*D]`` ([B, N, D]) of one block and stream.

    When they are few (one shared timestep, N = 1, or the levels of :class:`TokenTimesteps`), all K rows
    and their ``1 + row`` are formed up front in one op each (fewer kernel launches); with an ``index`` the
    rows are then gathered per token when used. With one timestep per token ([B, S, K*D]) each row is
    formed only when used, so all K rows never exist at once."""

    __slots__ = ("table", "temb", "index", "_rows", "_plus")

    def __init__(self, table: torch.Tensor, temb: torch.Tensor, index: torch.Tensor | None = None):
        self.table, self.temb, self.index = table, temb, index
        self._rows = self._plus = None
        if index is not None or temb.shape[-2] == 1:
            self._rows = table + temb.unflatten(-1, tuple(table.shape))  # [B, N, K, D]
            self._plus = 1 + self._rows

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._rows is not None:
            return _per_token(self._rows[:, :, i], self.index)
        d = self.table.shape[1]
        return self.table[i] + self.temb[..., i * d:(i + 1) * d]

    def modulate(self, x: torch.Tensor, scale: int, shift: int) -> torch.Tensor:
        """``x * (1 + row[scale]) + row[shift]`` (one fused multiply-add)."""
        plus = (_per_token(self._plus[:, :, scale], self.index) if self._plus is not None
                else 1 + self[scale])
        return torch.addcmul(self[shift], x, plus)

    def gated(self, x: torch.Tensor, out: torch.Tensor, gate: int) -> torch.Tensor:
        """The gated residual ``x + out * row[gate]`` (one fused multiply-add)."""
        return torch.addcmul(x, out, self[gate])


def _keep_rows(keep: bool | torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new``, or per row ``new`` where the boolean [B, 1, 1] ``keep`` is True and ``old`` elsewhere."""
    return new if keep is True else torch.where(keep, new, old)


def _ada(table: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All rows of ``table`` [K, D] plus the matching D-slices of ``temb`` [B, N, K*D] -> K x [B, N, D]."""
    k, d = table.shape
    return (table + temb.unflatten(-1, (k, d))).unbind(2)


# --------------------------------------------------------------------------------------------------
# Block


class LTX2Block(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        adim = cfg["audio_num_attention_heads"] * cfg["audio_attention_head_dim"]
        heads, hd = cfg["num_attention_heads"], cfg["attention_head_dim"]
        aheads, ahd = cfg["audio_num_attention_heads"], cfg["audio_attention_head_dim"]
        eps = cfg["norm_eps"]
        vg, ag = cfg["gated_attn"], cfg["audio_gated_attn"]
        b, ob = cfg["attention_bias"], cfg["attention_out_bias"]
        self.eps = eps
        self.video_cross_attn_adaln = bool(cfg["cross_attn_mod"])
        self.audio_cross_attn_adaln = bool(cfg["audio_cross_attn_mod"])
        self.cross_attn_adaln = self.video_cross_attn_adaln or self.audio_cross_attn_adaln

        self.attn1 = Attention(dim, dim, heads, hd, vg, eps, b, ob)
        self.audio_attn1 = Attention(adim, adim, aheads, ahd, ag, eps, b, ob)
        self.attn2 = Attention(dim, cfg["cross_attention_dim"], heads, hd, vg, eps, b, ob)
        self.audio_attn2 = Attention(adim, cfg["audio_cross_attention_dim"], aheads, ahd, ag, eps, b, ob)
        # both cross-modal attentions run with the audio head layout
        self.audio_to_video_attn = Attention(dim, adim, aheads, ahd, vg, eps, b, ob)
        self.video_to_audio_attn = Attention(adim, dim, aheads, ahd, ag, eps, b, ob)
        self.ff = FeedForward(dim, cfg["ff_bias"])
        self.audio_ff = FeedForward(adim, cfg["audio_ff_bias"])

        self.scale_shift_table = nn.Parameter(torch.zeros(9 if self.video_cross_attn_adaln else 6, dim))
        self.audio_scale_shift_table = nn.Parameter(
            torch.zeros(9 if self.audio_cross_attn_adaln else 6, adim))
        if self.cross_attn_adaln:
            self.prompt_scale_shift_table = nn.Parameter(torch.zeros(2, dim))
            self.audio_prompt_scale_shift_table = nn.Parameter(torch.zeros(2, adim))
        self.video_a2v_cross_attn_scale_shift_table = nn.Parameter(torch.zeros(5, dim))
        self.audio_a2v_cross_attn_scale_shift_table = nn.Parameter(torch.zeros(5, adim))

    def _text(self, x, ctx, attn, rows: _Rows, prompt_table, temb_prompt, mask, adaln: bool):
        """Text cross-attention residual for one stream."""
        n = _rms(x, self.eps)
        if adaln:
            n = rows.modulate(n, 7, 6)
        if self.cross_attn_adaln:
            if temb_prompt is not None:
                shift_kv, scale_kv = _ada(prompt_table, temb_prompt)
            else:
                shift_kv, scale_kv = prompt_table.to(ctx.dtype).unbind(0)
            ctx = _modulate(ctx, scale_kv, shift_kv)
        out = attn(n, ctx, mask=mask)
        return rows.gated(x, out, 8) if adaln else x + out

    def forward(self, vx, ax, vctx, actx, t, *, skip_video_self: bool | torch.Tensor = False,
                skip_audio_self: bool | torch.Tensor = False, a2v: bool | torch.Tensor = True,
                v2a: bool | torch.Tensor = True):
        """``t`` holds the per-call tensors built by :meth:`LTX2Transformer.forward` (see there). Each switch is
        a bool for the whole call or a boolean [B, 1, 1] tensor per row (``skip_*``: True = values passed
        through; ``a2v`` / ``v2a``: True = cross-modal attention kept)."""
        eps = self.eps
        # rows: 0 shift_msa, 1 scale_msa, 2 gate_msa, 3 shift_mlp, 4 scale_mlp, 5 gate_mlp,
        # (9-row tables) 6 shift_q, 7 scale_q, 8 gate_q of the text cross-attention
        v = _Rows(self.scale_shift_table, t["temb"], t["temb_index"])
        a = _Rows(self.audio_scale_shift_table, t["temb_audio"])

        # 1. self-attention
        shard = t.get("shard")  # sequence parallel: vx holds this rank's video tokens
        n = v.modulate(_rms(vx, eps), 1, 0)
        vx = v.gated(vx, self.attn1(n, q_rope=t["rope"][0], value_only=skip_video_self, shard=shard), 2)
        n = a.modulate(_rms(ax, eps), 1, 0)
        ax = a.gated(ax, self.audio_attn1(n, q_rope=t["rope"][1], value_only=skip_audio_self), 2)

        # 2. text cross-attention
        pv = getattr(self, "prompt_scale_shift_table", None)
        pa = getattr(self, "audio_prompt_scale_shift_table", None)
        vx = self._text(vx, vctx, self.attn2, v, pv, t["temb_prompt"], t["mask"],
                        self.video_cross_attn_adaln)
        ax = self._text(ax, actx, self.audio_attn2, a, pa, t["temb_prompt_audio"], t["audio_mask"],
                        self.audio_cross_attn_adaln)

        # 3. audio <-> video cross-attention, both from the norms taken before either update
        if a2v is not False or v2a is not False:
            vn, an = _rms(vx, eps), _rms(ax, eps)
            vt, at = self.video_a2v_cross_attn_scale_shift_table, self.audio_a2v_cross_attn_scale_shift_table
            # rows: 0 scale_a2v, 1 shift_a2v, 2 scale_v2a, 3 shift_v2a
            vr, ar = _Rows(vt[:4], t["temb_ca"]), _Rows(at[:4], t["temb_ca_audio"])
            if a2v is not False:
                gate = _ada(vt[4:], t["temb_ca_gate"])[0]
                out = self.audio_to_video_attn(vr.modulate(vn, 0, 1), ar.modulate(an, 0, 1),
                                               q_rope=t["rope"][2], k_rope=t["rope"][3])
                vx = _keep_rows(a2v, torch.addcmul(vx, gate, out), vx)
            if v2a is not False:
                gate = _ada(at[4:], t["temb_ca_gate_audio"])[0]
                out = self.video_to_audio_attn(ar.modulate(an, 2, 3), vr.modulate(vn, 2, 3),
                                               q_rope=t["rope"][3], k_rope=t["rope"][2], context_shard=shard)
                ax = _keep_rows(v2a, torch.addcmul(ax, gate, out), ax)

        # 4. feed-forward
        vx = v.gated(vx, self.ff(v.modulate(_rms(vx, eps), 4, 3)), 5)
        ax = a.gated(ax, self.audio_ff(a.modulate(_rms(ax, eps), 4, 3)), 5)
        return vx, ax


# --------------------------------------------------------------------------------------------------
# Positions


def _pixel_bounds(frames: int, height: int, width: int, scale_factors: Sequence[int], device) -> torch.Tensor:
    """[3, F*H*W, 2] pixel-space [start, end) bounds of each latent cell, tokens in (f, h, w) order."""
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in (frames, height, width)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).flatten(1)  # [3, S]
    scale = torch.tensor([float(s) for s in scale_factors], device=device).view(3, 1, 1)
    return torch.stack([grid, grid + 1], dim=-1) * scale


def _with_time(pix: torch.Tensor, t: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([t[None], pix[1:]], dim=0).unsqueeze(0).expand(batch, -1, -1, -1).contiguous()


def video_coords(batch: int, frames: int, height: int, width: int, *, fps: float = 24.0,
                 scale_factors: Sequence[int] = (8, 32, 32), causal_offset: int = 1,
                 device=None) -> torch.Tensor:
    """[B, 3, F*H*W, 2] pixel-space [start, end) bounds of each latent token, tokens in (f, h, w)
    order; the time axis is shifted for the causal first frame, clamped at 0 and given in seconds."""
    pix = _pixel_bounds(frames, height, width, scale_factors, device)
    return _with_time(pix, (pix[0] + causal_offset - scale_factors[0]).clamp(min=0) / fps, batch)


def keyframe_coords(batch: int, frames: int, height: int, width: int, frame_idx: int, *, fps: float = 24.0,
                    scale_factors: Sequence[int] = (8, 32, 32), device=None) -> torch.Tensor:
    """[B, 3, F*H*W, 2] bounds of keyframe tokens appended after the video tokens (official
    ``VideoConditionByKeyframeIndex``): the keyframe latent's own pixel grid with no causal shift, its time
    axis moved by the pixel frame index ``frame_idx`` and then given in seconds."""
    pix = _pixel_bounds(frames, height, width, scale_factors, device)
    return _with_time(pix, (pix[0] + float(frame_idx)) / fps, batch)


def audio_coords(batch: int, frames: int, *, scale_factor: int = 4, causal_offset: int = 1,
                 hop_length: int = 160, sampling_rate: int = 16000, shift: int = 0,
                 device=None) -> torch.Tensor:
    """[B, 1, T, 2] [start, end) of each audio latent frame in seconds (causal first-frame shift)."""
    i = torch.arange(shift, frames + shift, dtype=torch.float32, device=device)

    def seconds(idx):
        mel = (idx * scale_factor + causal_offset - scale_factor).clip(min=0)
        return mel * hop_length / sampling_rate

    out = torch.stack([seconds(i), seconds(i + 1)], dim=-1)
    return out[None, None].expand(batch, 1, -1, -1).contiguous()


def _fractions(coords: torch.Tensor, max_pos: Sequence[float]) -> torch.Tensor:
    """Midpoints of [B, A, T, 2] bounds (or [B, A, T] points) over max_pos -> [B, T, A]."""
    if coords.ndim == 4:
        start, end = coords.unbind(-1)
        coords = (start + end) / 2.0
    return torch.stack([coords[:, i] / max_pos[i] for i in range(coords.shape[1])], dim=-1)


# --------------------------------------------------------------------------------------------------
# Model


class LTX2Transformer(nn.Module):
    """The LTX-2 / LTX-2.3 audio-video DiT; ``config`` is the diffusers ``config.json`` (missing
    fields take diffusers' defaults). Returns (video velocity [B, S, out], audio velocity [B, Sa, out])."""

    def __init__(self, config: dict):
        super().__init__()
        cfg = dict(DEFAULT_CONFIG)
        cfg.update({k: v for k, v in config.items() if not k.startswith("_")})
        cfg["out_channels"] = cfg["out_channels"] or cfg["in_channels"]
        cfg["audio_out_channels"] = cfg["audio_out_channels"] or cfg["audio_in_channels"]
        if cfg["qk_norm"] != "rms_norm_across_heads" or cfg["norm_elementwise_affine"]:
            raise ValueError("LTX-2 transformer: only weightless block norms and rms_norm_across_heads q/k norms exist.")
        if cfg["rope_type"] not in ("interleaved", "split"):
            raise ValueError(f"LTX-2 transformer: rope_type must be 'interleaved' or 'split', got {cfg['rope_type']!r}.")
        if cfg["patch_size"] != 1 or cfg["patch_size_t"] != 1 or cfg["audio_patch_size"] != 1 \
                or cfg["audio_patch_size_t"] != 1:
            raise ValueError("LTX-2 transformer: only patch size 1 is supported.")
        if cfg["use_keyframes_abs_pos_embedding"]:
            raise ValueError("LTX-2 transformer: use_keyframes_abs_pos_embedding (LTX-2.5) is not supported.")
        self.config = cfg
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        adim = cfg["audio_num_attention_heads"] * cfg["audio_attention_head_dim"]
        self.inner_dim, self.audio_inner_dim = dim, adim

        self.proj_in = nn.Linear(cfg["in_channels"], dim)
        self.audio_proj_in = nn.Linear(cfg["audio_in_channels"], adim)
        if cfg["use_prompt_embeddings"]:
            self.caption_projection = CaptionProjection(cfg["caption_channels"], dim)
            self.audio_caption_projection = CaptionProjection(cfg["caption_channels"], adim)
        self.prompt_modulation = bool(cfg["cross_attn_mod"] or cfg["audio_cross_attn_mod"])
        self.time_embed = AdaLNSingle(dim, 9 if cfg["cross_attn_mod"] else 6)
        self.audio_time_embed = AdaLNSingle(adim, 9 if cfg["audio_cross_attn_mod"] else 6)
        self.av_cross_attn_video_scale_shift = AdaLNSingle(dim, 4)
        self.av_cross_attn_audio_scale_shift = AdaLNSingle(adim, 4)
        self.av_cross_attn_video_a2v_gate = AdaLNSingle(dim, 1)
        self.av_cross_attn_audio_v2a_gate = AdaLNSingle(adim, 1)
        self.scale_shift_table = nn.Parameter(torch.zeros(2, dim))
        self.audio_scale_shift_table = nn.Parameter(torch.zeros(2, adim))
        if self.prompt_modulation and cfg["use_prompt_adaln_single"]:
            self.prompt_adaln = AdaLNSingle(dim, 2)
            self.audio_prompt_adaln = AdaLNSingle(adim, 2)
        self.transformer_blocks = compile_blocks(nn.ModuleList(LTX2Block(cfg) for _ in range(cfg["num_layers"])))
        self.proj_out = nn.Linear(dim, cfg["out_channels"])
        self.audio_proj_out = nn.Linear(adim, cfg["audio_out_channels"])

    # ---- positions -----------------------------------------------------------------------------

    def video_coords(self, batch: int, frames: int, height: int, width: int, fps: float = 24.0,
                     device=None) -> torch.Tensor:
        c = self.config
        return video_coords(batch, frames, height, width, fps=fps, scale_factors=c["vae_scale_factors"],
                            causal_offset=c["causal_offset"], device=device)

    def keyframe_coords(self, batch: int, frames: int, height: int, width: int, frame_idx: int,
                        fps: float = 24.0, device=None) -> torch.Tensor:
        return keyframe_coords(batch, frames, height, width, frame_idx, fps=fps,
                               scale_factors=self.config["vae_scale_factors"], device=device)

    def audio_coords(self, batch: int, frames: int, device=None) -> torch.Tensor:
        c = self.config
        return audio_coords(batch, frames, scale_factor=c["audio_scale_factor"], causal_offset=c["causal_offset"],
                            hop_length=c["audio_hop_length"], sampling_rate=c["audio_sampling_rate"],
                            device=device)

    def rope(self, video_coords: torch.Tensor, audio_coords: torch.Tensor) -> tuple[Rope, Rope, Rope, Rope]:
        """(video self, audio self, video cross-modal, audio cross-modal) float32 cos/sin tables."""
        c = self.config
        kw = dict(rope_type=c["rope_type"], theta=c["rope_theta"], double_precision=c["rope_double_precision"])
        heads, aheads = c["num_attention_heads"], c["audio_num_attention_heads"]
        vmax = (c["pos_embed_max_pos"], c["base_height"], c["base_width"])
        amax = (c["audio_pos_embed_max_pos"],)
        xmax = (max(c["pos_embed_max_pos"], c["audio_pos_embed_max_pos"]),)
        xdim = c["audio_cross_attention_dim"]
        return (
            rope_tables(_fractions(video_coords, vmax), self.inner_dim, num_heads=heads, **kw),
            rope_tables(_fractions(audio_coords, amax), self.audio_inner_dim, num_heads=aheads, **kw),
            rope_tables(_fractions(video_coords[:, 0:1], xmax), xdim, num_heads=heads, **kw),
            rope_tables(_fractions(audio_coords[:, 0:1], xmax), xdim, num_heads=aheads, **kw),
        )

    # ---- time conditioning -----------------------------------------------------------------------

    def time_conditioning(self, sigma: torch.Tensor | float, audio_sigma: torch.Tensor | float | None = None, *,
                          timestep=None, audio_timestep: torch.Tensor | None = None, batch: int, device,
                          use_cross_timestep: bool = True) -> dict:
        """Every AdaLN table of a call from its sigmas and timesteps (arguments as in :meth:`forward`):
        the block tables (``temb*``), the output ones (``emb``, ``emb_audio``) and the per-token level index.
        Calls at the same sigmas and batch size can share one result (``forward(conditioning=...)``)."""
        c = self.config
        mult = float(c["timestep_scale_multiplier"])
        gate_factor = c["cross_attn_timestep_scale_multiplier"] / c["timestep_scale_multiplier"]

        def per_sample(s) -> torch.Tensor:
            if not isinstance(s, torch.Tensor):  # a Python number: filled on the device, no copy
                return torch.full((batch,), float(s), dtype=torch.float32, device=device)
            s = s.to(device=device, dtype=torch.float32)
            return s.reshape(-1).expand(batch) if s.numel() == 1 else s.reshape(batch)

        sigma = per_sample(sigma)
        audio_sigma = sigma if audio_sigma is None else per_sample(audio_sigma)
        index = None
        if isinstance(timestep, TokenTimesteps):
            if use_cross_timestep:
                index = timestep.index.to(device)
                timestep = timestep.values
            else:  # the legacy cross-modal modulation follows each token's own timestep
                timestep = timestep.per_token()
        t_video = (sigma if timestep is None else timestep.to(device=device, dtype=torch.float32)) * mult
        t_audio = (audio_sigma if audio_timestep is None
                   else audio_timestep.to(device=device, dtype=torch.float32)) * mult

        temb, emb = self.time_embed(t_video, batch)
        temb_audio, emb_audio = self.audio_time_embed(t_audio, batch)
        if self.prompt_modulation and c["use_prompt_adaln_single"]:
            temb_prompt = self.prompt_adaln(sigma * mult, batch)[0]
            temb_prompt_audio = self.audio_prompt_adaln(audio_sigma * mult, batch)[0]
        else:
            temb_prompt = temb_prompt_audio = None
        # cross-modal modulation follows the other stream's sigma (official) or the own timestep (legacy)
        ca_v = audio_sigma * mult if use_cross_timestep else t_video
        ca_a = sigma * mult if use_cross_timestep else t_audio
        return {
            "temb": temb,
            "temb_index": index,
            "temb_audio": temb_audio,
            "temb_prompt": temb_prompt,
            "temb_prompt_audio": temb_prompt_audio,
            "temb_ca": self.av_cross_attn_video_scale_shift(ca_v, batch)[0],
            "temb_ca_audio": self.av_cross_attn_audio_scale_shift(ca_a, batch)[0],
            "temb_ca_gate": self.av_cross_attn_video_a2v_gate(ca_v * gate_factor, batch)[0],
            "temb_ca_gate_audio": self.av_cross_attn_audio_v2a_gate(ca_a * gate_factor, batch)[0],
            "emb": emb,
            "emb_audio": emb_audio,
        }

    # ---- forward -------------------------------------------------------------------------------
    # A call is ``head(run_blocks(embed(latents), prepare(...)), ...)``. ``forward`` chains the four; a caller
    # that runs two calls agreeing on their first blocks (the denoiser's conditional and STG passes) runs the
    # pieces itself and starts the second call's blocks from the first call's states.

    def forward(
        self,
        hidden_states: torch.Tensor,
        audio_hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        audio_encoder_hidden_states: torch.Tensor,
        sigma: torch.Tensor | float,
        audio_sigma: torch.Tensor | float | None = None,
        **options,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocities for packed video tokens ``hidden_states`` [B, S, in] and audio tokens
        ``audio_hidden_states`` [B, Sa, audio_in].

        * ``encoder_hidden_states`` / ``audio_encoder_hidden_states``: the connector outputs [B, L, D]
          (LTX-2.0: [B, L, caption_channels], projected here).
        * ``sigma`` / ``audio_sigma``: per-sample sigmas ([B] tensor or float; audio defaults to video).
        * ``options``: the keyword arguments of :meth:`prepare` (timesteps, positions, masks, switches,
          shared time conditioning).
        """
        inputs = self.prepare(encoder_hidden_states, audio_encoder_hidden_states, sigma, audio_sigma,
                              batch=hidden_states.shape[0], device=hidden_states.device, **options)
        states = self.run_blocks(self.embed(hidden_states, audio_hidden_states), inputs)
        return self.head(states, inputs)

    def prepare(
        self,
        encoder_hidden_states: torch.Tensor,
        audio_encoder_hidden_states: torch.Tensor,
        sigma: torch.Tensor | float | None,
        audio_sigma: torch.Tensor | float | None = None,
        *,
        batch: int,
        device,
        timestep: torch.Tensor | None = None,
        audio_timestep: torch.Tensor | None = None,
        video_coords: torch.Tensor | None = None,
        audio_coords: torch.Tensor | None = None,
        rope: tuple[Rope, Rope, Rope, Rope] | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        audio_encoder_attention_mask: torch.Tensor | None = None,
        use_cross_timestep: bool = True,
        skip_video_self_attn_blocks: Sequence[int] = (),
        skip_audio_self_attn_blocks: Sequence[int] = (),
        disable_a2v: bool = False,
        disable_v2a: bool = False,
        per_item: Sequence[dict] | None = None,
        conditioning: dict | None = None,
    ) -> "BlockInputs":
        """What every block of one call reads besides the stream states, for a batch of ``batch`` on ``device``.

        * ``timestep`` / ``audio_timestep``: optional per-token sigmas [B, S] / [B, Sa] for the block and
          output AdaLN (e.g. ``sigma * denoise_mask``; 0 for clean conditioning tokens); default sigma.
          The video one may be a :class:`TokenTimesteps` (a few levels and a per-token index).
        * positions: ``rope`` from :meth:`rope`, or ``video_coords`` [B, 3, S, 2] and ``audio_coords``
          [B, 1, Sa, 2] (:meth:`video_coords`, :meth:`audio_coords`).
        * masks: optional [B, L] text masks (1 = keep).
        * ``skip_*_self_attn_blocks``: block indices where that stream's self-attention passes its values
          through (STG). ``disable_a2v`` / ``disable_v2a``: drop the cross-modal attention.
        * ``per_item``: the same four switches per sample instead: a list of n dicts with those keys, dict j
          applying to rows ``j*B/n .. (j+1)*B/n - 1``. A block where only some rows are switched runs for all
          rows and keeps, per row, the values passed through (STG) or the residual without the cross-modal
          term (as ltx-core's per-sample perturbation masks do).
        * ``conditioning``: :meth:`time_conditioning` of these sigmas / timesteps and batch, computed once and
          shared by calls that agree on them; then the sigma and timestep arguments are not read.
        """
        if conditioning is None:
            conditioning = self.time_conditioning(sigma, audio_sigma, timestep=timestep, audio_timestep=audio_timestep,
                                                  batch=batch, device=device, use_cross_timestep=use_cross_timestep)
        elif conditioning["temb"].shape[0] != batch:
            raise ValueError(f"LTX2Transformer: conditioning for batch {conditioning['temb'].shape[0]}, "
                             f"inputs {batch}")
        if rope is None:
            if video_coords is None or audio_coords is None:
                raise ValueError("LTX2Transformer.forward: pass `rope`, or both `video_coords` and `audio_coords`.")
            rope = self.rope(video_coords.to(device), audio_coords.to(device))
        tensors = {
            **conditioning,
            "rope": rope,
            "mask": _key_mask(encoder_attention_mask),
            "audio_mask": _key_mask(audio_encoder_attention_mask),
        }
        vctx, actx = encoder_hidden_states, audio_encoder_hidden_states
        if self.config["use_prompt_embeddings"]:
            vctx = self.caption_projection(vctx)
            actx = self.audio_caption_projection(actx)
        if per_item is None:
            per_item = [dict(skip_video_self_attn_blocks=skip_video_self_attn_blocks,
                             skip_audio_self_attn_blocks=skip_audio_self_attn_blocks,
                             disable_a2v=disable_a2v, disable_v2a=disable_v2a)]
        elif skip_video_self_attn_blocks or skip_audio_self_attn_blocks or disable_a2v or disable_v2a:
            raise ValueError("LTX2Transformer.forward: give the switches per call or per_item, not both")
        switch = _RowSwitches(per_item, batch, device)
        a2v = switch.rows([not d.get("disable_a2v", False) for d in switch.items])
        v2a = switch.rows([not d.get("disable_v2a", False) for d in switch.items])
        if distributed.world_size() > 1:
            _shard_video_tokens(tensors)
        return BlockInputs(batch, tensors, vctx, actx, switch, a2v, v2a)

    def embed(self, hidden_states: torch.Tensor, audio_hidden_states: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The stream states entering block 0: the packed latents projected to the model width."""
        return self.proj_in(hidden_states), self.audio_proj_in(audio_hidden_states)

    def run_blocks(self, states: tuple[torch.Tensor, torch.Tensor], inputs: "BlockInputs", start: int = 0,
                   stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks ``start .. stop - 1`` (default: to the last) from the (video, audio) ``states`` entering block
        ``start``; returns the states entering block ``stop``."""
        vx, ax = states
        if vx.shape[0] != inputs.batch or ax.shape[0] != inputs.batch:
            raise ValueError(f"LTX2Transformer.run_blocks: states have batch {vx.shape[0]}, inputs {inputs.batch}")
        stop = len(self.transformer_blocks) if stop is None else stop
        switch, t = inputs.switches, inputs.tensors
        shard = t.get("shard")
        if shard is not None and shard.n != shard.local and vx.shape[1] == shard.n:
            vx = shard.split(vx)  # the whole video sequence (from embed): keep this rank's tokens
        for i in range(start, stop):
            vx, ax = self.transformer_blocks[i](vx, ax, inputs.video_context, inputs.audio_context, t,
                                                skip_video_self=switch.skip("video", i),
                                                skip_audio_self=switch.skip("audio", i), a2v=inputs.a2v, v2a=inputs.v2a)
        return vx, ax

    def head(self, states: tuple[torch.Tensor, torch.Tensor], inputs: "BlockInputs"
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The output head: the states after the last block -> (video velocity, audio velocity)."""
        vx, ax = states
        t = inputs.tensors
        index, emb, emb_audio = t["temb_index"], t["emb"], t["emb_audio"]
        shift, scale = (_per_token(self.scale_shift_table[0] + emb, index),
                        _per_token(self.scale_shift_table[1] + emb, index))
        out = self.proj_out(_modulate(F.layer_norm(vx, (vx.shape[-1],), eps=1e-6), scale, shift))
        if t.get("shard") is not None:
            out = t["shard"].gather(out)  # every rank gets the whole video velocity
        ashift, ascale = (self.audio_scale_shift_table + emb_audio.unsqueeze(2)).unbind(2)
        aout = self.audio_proj_out(_modulate(F.layer_norm(ax, (ax.shape[-1],), eps=1e-6), ascale, ashift))
        return out, aout


def _shard_video_tokens(tensors: dict) -> None:
    """Sequence parallel (``torchrun``): the blocks see this rank's share of the video tokens. The video rotary
    tables and every per-token AdaLN input are cut the same way (``tensors["shard"]``); text, audio and the
    per-sample tables stay whole on every rank (they are small, and replicated work needs no communication)."""
    rope = tensors["rope"]
    shard = distributed.SequenceShard(rope[0][0].shape[1])
    tensors["shard"] = shard
    cut = lambda table: tuple(shard.split(x) for x in table)  # noqa: E731
    tensors["rope"] = (cut(rope[0]), rope[1], cut(rope[2]), rope[3])
    if tensors["temb_index"] is not None:  # a few levels, chosen per token
        tensors["temb_index"] = shard.split(tensors["temb_index"])
        return
    for key in ("temb", "emb", "temb_ca", "temb_ca_gate"):  # one timestep per token: [B, S, ...]
        x = tensors.get(key)
        if x is not None and x.ndim == 3 and x.shape[1] == shard.n and shard.n > 1:
            tensors[key] = shard.split(x)


class BlockInputs(NamedTuple):
    """What :meth:`LTX2Transformer.prepare` builds for one call: the AdaLN tables, rotary tables and key masks
    (``tensors``), the projected prompt contexts and the per-sample switches (see :class:`_RowSwitches`)."""

    batch: int
    tensors: dict
    video_context: torch.Tensor
    audio_context: torch.Tensor
    switches: "_RowSwitches"
    a2v: bool | torch.Tensor
    v2a: bool | torch.Tensor


class _RowSwitches:
    """Per-sample pass switches of one call -> what each block gets: False (no row), True (every row) or a
    boolean [B, 1, 1] row mask, built from the Python lists once per distinct pattern (no host reads)."""

    KEYS = ("skip_video_self_attn_blocks", "skip_audio_self_attn_blocks", "disable_a2v", "disable_v2a")

    def __init__(self, items: Sequence[dict], batch: int, device):
        items = list(items)
        if not items or batch % len(items):
            raise ValueError(f"LTX2Transformer.forward: per_item has {len(items)} entries for a batch of {batch}")
        for d in items:
            unknown = set(d) - set(self.KEYS)
            if unknown:
                raise ValueError(f"LTX2Transformer.forward: unknown per_item switches {sorted(unknown)}")
        self.items, self.batch, self.device = items, batch, device
        self._blocks = {s: [set(d.get(f"skip_{s}_self_attn_blocks", ())) for d in items] for s in ("video", "audio")}
        self._masks: dict = {}

    def rows(self, flags: list[bool]) -> bool | torch.Tensor:
        if all(flags):
            return True
        if not any(flags):
            return False
        key = tuple(flags)
        if key not in self._masks:
            per = torch.tensor(key, dtype=torch.bool, device=self.device)
            self._masks[key] = per.repeat_interleave(self.batch // len(flags)).view(-1, 1, 1)
        return self._masks[key]

    def skip(self, stream: str, block: int) -> bool | torch.Tensor:
        return self.rows([block in blocks for blocks in self._blocks[stream]])


def _key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, L] keep-mask (1 keep, 0 drop) -> boolean [B, 1, 1, L] for attention."""
    if mask is None:
        return None
    return (mask > 0.5)[:, None, None, :]


# --------------------------------------------------------------------------------------------------
# Checkpoints

_OFFICIAL_PREFIX = "model.diffusion_model."
_OFFICIAL_DROP = ("video_embeddings_connector.", "audio_embeddings_connector.")
# top-level official names -> diffusers names (longest match first, applied once at the start)
_OFFICIAL_TOP = (
    ("av_ca_video_scale_shift_adaln_single.", "av_cross_attn_video_scale_shift."),
    ("av_ca_audio_scale_shift_adaln_single.", "av_cross_attn_audio_scale_shift."),
    ("av_ca_a2v_gate_adaln_single.", "av_cross_attn_video_a2v_gate."),
    ("av_ca_v2a_gate_adaln_single.", "av_cross_attn_audio_v2a_gate."),
    ("audio_prompt_adaln_single.", "audio_prompt_adaln."),
    ("prompt_adaln_single.", "prompt_adaln."),
    ("audio_adaln_single.", "audio_time_embed."),
    ("adaln_single.", "time_embed."),
    ("audio_patchify_proj.", "audio_proj_in."),
    ("patchify_proj.", "proj_in."),
)
# inside blocks (and attention modules)
_OFFICIAL_INNER = (
    (".q_norm.", ".norm_q."),
    (".k_norm.", ".norm_k."),
    (".scale_shift_table_a2v_ca_video", ".video_a2v_cross_attn_scale_shift_table"),
    (".scale_shift_table_a2v_ca_audio", ".audio_a2v_cross_attn_scale_shift_table"),
)


def official_to_module_key(key: str) -> str | None:
    """Name in :class:`LTX2Transformer` for a key of the official single-file checkpoint; None for
    keys of other components (text connectors, VAEs, vocoder, text projection)."""
    if not key.startswith(_OFFICIAL_PREFIX):
        return None
    key = key[len(_OFFICIAL_PREFIX):]
    if key.startswith(_OFFICIAL_DROP):
        return None
    for old, new in _OFFICIAL_TOP:
        if key.startswith(old):
            key = new + key[len(old):]
            break
    if key.startswith("transformer_blocks."):
        for old, new in _OFFICIAL_INNER:
            key = key.replace(old, new)
    return key


def config_from_official(config: dict, *, has_caption_projection: bool,
                         caption_channels: int = 3840) -> dict:
    """diffusers-style transformer config from the official single-file config (safetensors metadata
    ``config``, its ``transformer`` section). Defaults are the official code's."""
    tc = config.get("transformer", config)
    max_pos = list(tc.get("positional_embedding_max_pos", [20, 2048, 2048]))
    amax = list(tc.get("audio_positional_embedding_max_pos", [20]))
    gated = bool(tc.get("apply_gated_attention", False))
    ca_mod = bool(tc.get("cross_attention_adaln", False))
    out = dict(DEFAULT_CONFIG)
    out.update(
        in_channels=tc.get("in_channels", 128),
        out_channels=tc.get("out_channels", 128),
        num_attention_heads=tc.get("num_attention_heads", 32),
        attention_head_dim=tc.get("attention_head_dim", 128),
        cross_attention_dim=tc.get("cross_attention_dim", 4096),
        pos_embed_max_pos=max_pos[0], base_height=max_pos[1], base_width=max_pos[2],
        gated_attn=gated, audio_gated_attn=gated,
        cross_attn_mod=ca_mod, audio_cross_attn_mod=ca_mod,
        audio_in_channels=tc.get("audio_in_channels", 128),
        audio_out_channels=tc.get("audio_out_channels", 128),
        audio_num_attention_heads=tc.get("audio_num_attention_heads", 32),
        audio_attention_head_dim=tc.get("audio_attention_head_dim", 64),
        audio_cross_attention_dim=tc.get("audio_cross_attention_dim", 2048),
        audio_pos_embed_max_pos=amax[0],
        num_layers=tc.get("num_layers", 48),
        norm_eps=tc.get("norm_eps", 1e-6),
        caption_channels=caption_channels,
        rope_theta=float(tc.get("positional_embedding_theta", 10000.0)),
        rope_double_precision=tc.get("frequencies_precision", False) == "float64",
        timestep_scale_multiplier=tc.get("timestep_scale_multiplier", 1000),
        cross_attn_timestep_scale_multiplier=tc.get("av_ca_timestep_scale_multiplier", 1),
        rope_type=tc.get("rope_type", "interleaved"),
        use_prompt_embeddings=has_caption_projection,
        perturbed_attn=True,
    )
    return out


def load_ltx2_transformer(path, *, device="cpu", dtype: torch.dtype | str | None = None,
                          caption_channels: int | None = None) -> LTX2Transformer:
    """Build and load the transformer from a diffusers ``transformer/`` folder (or its safetensors
    file / shard index) or from the official single-file checkpoint (config in its metadata; the
    LTX-2.0 caption width, absent from that config, is read from the caption projection's shape)."""
    p = Path(path)
    keys = list_keys(p)
    official = any(k.startswith(_OFFICIAL_PREFIX) for k in keys)
    cfg = read_config(p)
    if official:
        cap = keys.get(_OFFICIAL_PREFIX + "caption_projection.linear_1.weight")
        if caption_channels is None:
            caption_channels = cap[1][1] if cap is not None else 3840
        cfg = config_from_official(cfg, has_caption_projection=cap is not None, caption_channels=caption_channels)
    with torch.device("meta"):
        module = LTX2Transformer(cfg)
    try:
        load_into(module, p, device=device, dtype=dtype, key_map=official_to_module_key if official else None)
    except CheckpointError as e:
        raise CheckpointError(f"LTX-2 transformer: {e}") from None
    return module.eval()
