"""LTX-2 / LTX-2.3 text path after Gemma: feature extractor and the two 1-D connectors.

Input: every hidden state of the Gemma-3 text model (embeddings + each layer, 49 for Gemma-3-12B),
each [B, T, D], and the tokenizer's binary mask [B, T] (left padding). Output: the video and audio
context the DiT cross-attends to, plus the context mask.

1. Feature extractor, on the stacked states E [B, T, D, L] flattened as index d * L + l:
   * V1 (LTX-2.0): per sample and layer, over valid tokens only, ``8 (E - mean) / (max - min)``; padded
     rows zeroed; one bias-free projection ``text_proj_in`` (D*L -> D) feeds both connectors.
   * V2 (LTX-2.3): per token and layer RMS normalisation; padded rows zeroed; separate projections
     ``video_text_proj_in`` / ``audio_text_proj_in`` (with bias) of the features scaled by
     ``sqrt(width / D)``.
2. Connector (one for video, one for audio): valid tokens move to the front in order, every other
   position takes learnable register ``p mod R``, and attention then sees all tokens; a stack of
   pre-norm blocks (weightless RMS norm, self-attention with RMS-normed q/k, 1-D split or interleaved
   RoPE over position / rope_base_seq_len, optional per-head output gates ``2 sigmoid(W x)``,
   GELU-tanh MLP) and a final weightless RMS norm.

Attribute names are the diffusers ``connectors/`` checkpoint keys, so that folder loads as is;
:func:`official_to_module_key` renames the official single-file (ComfyUI) keys. The result is
conditioning: compute it once per prompt and reuse it for every denoising step.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.attention import attention
from ..core.checkpoint import CheckpointError, list_keys, load_into, read_config
from ..core.ltx_rope import apply_rope, rope_tables

__all__ = [
    "DEFAULT_CONFIG",
    "LTX2TextConnectors",
    "Connector1d",
    "official_to_module_key",
    "config_from_official",
    "load_text_connectors",
]

# The diffusers config fields (defaults as diffusers' ``LTX2TextConnectors``).
DEFAULT_CONFIG: dict = {
    "caption_channels": 3840,
    "text_proj_in_factor": 49,
    "video_connector_num_attention_heads": 30,
    "video_connector_attention_head_dim": 128,
    "video_connector_num_layers": 2,
    "video_connector_num_learnable_registers": 128,
    "video_gated_attn": False,
    "audio_connector_num_attention_heads": 30,
    "audio_connector_attention_head_dim": 128,
    "audio_connector_num_layers": 2,
    "audio_connector_num_learnable_registers": 128,
    "audio_gated_attn": False,
    "connector_rope_base_seq_len": 4096,
    "rope_theta": 10000.0,
    "rope_double_precision": True,
    "causal_temporal_positioning": False,
    "rope_type": "interleaved",
    "per_modality_projections": False,
    "video_hidden_dim": 4096,
    "audio_hidden_dim": 2048,
    "proj_bias": False,
}

_EPS = 1e-6


# --------------------------------------------------------------------------------------------------
# Feature extraction


def _stack_layers(hidden_states, caption_channels: int) -> torch.Tensor:
    """Gemma hidden states as one [B, T, D, L] tensor (list of [B, T, D], [B, T, D, L] or [B, T, D*L])."""
    if isinstance(hidden_states, (list, tuple)):
        return torch.stack(list(hidden_states), dim=-1)
    if hidden_states.ndim == 3:
        return hidden_states.unflatten(2, (caption_channels, -1))
    if hidden_states.ndim == 4:
        return hidden_states
    raise ValueError(
        "LTX-2 text connectors: hidden_states must be a list of [B, T, D] Gemma states, a [B, T, D, L] "
        f"tensor or a flattened [B, T, D*L] tensor; got shape {tuple(hidden_states.shape)}."
    )


def masked_range_norm(stacked: torch.Tensor, lengths: torch.Tensor, padding_side: str = "left",
                      scale: float = 8.0) -> torch.Tensor:
    """V1 features: per sample and layer ``scale (E - mean) / (max - min)`` over valid tokens, flattened.

    ``stacked`` is [B, T, D, L]; ``lengths`` the valid-token count per sample. Returns [B, T, D*L] with
    padded rows zero.
    """
    b, t, d, _ = stacked.shape
    idx = torch.arange(t, device=stacked.device)[None, :]
    if padding_side == "left":
        valid = idx >= (t - lengths[:, None])
    elif padding_side == "right":
        valid = idx < lengths[:, None]
    else:
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    valid4 = valid[:, :, None, None]
    total = stacked.masked_fill(~valid4, 0.0).sum(dim=(1, 2), keepdim=True)
    mean = total / ((lengths * d).view(b, 1, 1, 1) + _EPS)
    lo = stacked.masked_fill(~valid4, float("inf")).amin(dim=(1, 2), keepdim=True)
    hi = stacked.masked_fill(~valid4, float("-inf")).amax(dim=(1, 2), keepdim=True)
    normed = (stacked - mean) / (hi - lo + _EPS) * scale
    return normed.flatten(2).masked_fill(~valid[:, :, None], 0.0).to(stacked.dtype)


def per_token_rms_features(stacked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """V2 features: RMS-normalise each token of each layer over D, flatten, zero padded rows."""
    normed = stacked * torch.rsqrt(stacked.square().mean(dim=2, keepdim=True) + _EPS)
    normed = normed.flatten(2)
    return torch.where(mask.bool()[:, :, None], normed, torch.zeros((), dtype=normed.dtype, device=normed.device))


# --------------------------------------------------------------------------------------------------
# Connector


class _GeluProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """GELU-tanh MLP, 4x wide; keys ``net.0.proj.*`` and ``net.2.*``."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([_GeluProj(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class SelfAttention(nn.Module):
    """Self-attention with RMS-normed q/k across heads, LTX RoPE and optional per-head gates."""

    def __init__(self, dim: int, heads: int, head_dim: int, gated: bool):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.norm_q = nn.RMSNorm(inner, eps=_EPS)
        self.norm_k = nn.RMSNorm(inner, eps=_EPS)
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])
        self.to_gate_logits = nn.Linear(dim, heads) if gated else None

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        q = apply_rope(self.norm_q(self.to_q(x)), *rope)
        k = apply_rope(self.norm_k(self.to_k(x)), *rope)
        v = self.to_v(x)
        q, k, v = (z.unflatten(-1, (self.heads, -1)).transpose(1, 2) for z in (q, k, v))
        out = attention(q, k, v, mask=mask).transpose(1, 2)  # [B, T, H, Dh]
        if self.to_gate_logits is not None:
            out = out * (2.0 * torch.sigmoid(self.to_gate_logits(x))).unsqueeze(-1)
        return self.to_out[0](out.reshape(b, t, -1))


class Block1d(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, gated: bool):
        super().__init__()
        self.attn1 = SelfAttention(dim, heads, head_dim, gated)
        self.ff = FeedForward(dim)

    def forward(self, x, rope, mask):
        x = x + self.attn1(F.rms_norm(x, (x.shape[-1],), eps=_EPS), rope, mask)
        return x + self.ff(F.rms_norm(x, (x.shape[-1],), eps=_EPS))


class Connector1d(nn.Module):
    """Embeddings1DConnector: registers, 1-D RoPE, ``num_layers`` blocks, final weightless RMS norm."""

    def __init__(self, heads: int, head_dim: int, num_layers: int, num_registers: int | None,
                 rope_base_seq_len: int, rope_theta: float, rope_double_precision: bool,
                 rope_type: str, gated: bool):
        super().__init__()
        self.heads = heads
        self.inner_dim = heads * head_dim
        self.num_registers = num_registers
        self.rope_base_seq_len = rope_base_seq_len
        self.rope_theta = rope_theta
        self.rope_double_precision = rope_double_precision
        self.rope_type = rope_type
        if num_registers:
            self.learnable_registers = nn.Parameter(torch.empty(num_registers, self.inner_dim))
        else:
            self.learnable_registers = None
        self.transformer_blocks = nn.ModuleList(
            [Block1d(self.inner_dim, heads, head_dim, gated) for _ in range(num_layers)])

    def rope(self, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(seq_len, dtype=torch.float32, device=device) / self.rope_base_seq_len
        return rope_tables(pos[None, :, None], self.inner_dim, num_heads=self.heads, rope_type=self.rope_type,
                           theta=self.rope_theta, double_precision=self.rope_double_precision)

    def _with_registers(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        r = self.num_registers
        if t % r:
            raise ValueError(
                f"LTX-2 text connector: the text length {t} must be a multiple of the {r} learnable "
                "registers; pad the prompt tokens to a multiple of it (the reference uses 1024)."
            )
        # Valid tokens first, in their order (stable sort), then register p mod R at position p.
        order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
        front = torch.gather(x, 1, order[:, :, None].expand(-1, -1, x.shape[-1]))
        n_valid = valid.sum(dim=1, keepdim=True)
        keep = (torch.arange(t, device=x.device)[None, :] < n_valid)[:, :, None]
        registers = self.learnable_registers.to(x.dtype).repeat(t // r, 1)
        return torch.where(keep, front, registers[None])

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``x`` [B, T, inner_dim]; ``valid`` boolean [B, T]. Returns [B, T, inner_dim]."""
        mask = None
        if self.learnable_registers is not None:
            x = self._with_registers(x, valid)
        else:
            mask = valid[:, None, None, :]
        rope = self.rope(x.shape[1], x.device)
        for block in self.transformer_blocks:
            x = block(x, rope, mask)
        return F.rms_norm(x, (x.shape[-1],), eps=_EPS)


# --------------------------------------------------------------------------------------------------
# The text connectors (feature extractor + video and audio connectors)


class LTX2TextConnectors(nn.Module):
    """Gemma hidden states -> (video context, audio context, mask), from diffusers' connectors config."""

    def __init__(self, config: dict):
        super().__init__()
        cfg = {k: config.get(k, default) for k, default in DEFAULT_CONFIG.items()}
        if cfg["rope_type"] not in ("interleaved", "split"):
            raise ValueError(f"LTX-2 text connectors: rope_type must be 'interleaved' or 'split', got {cfg['rope_type']!r}")
        self.config = cfg
        d = cfg["caption_channels"]
        flat = d * cfg["text_proj_in_factor"]
        if cfg["per_modality_projections"]:
            self.video_text_proj_in = nn.Linear(flat, cfg["video_hidden_dim"], bias=cfg["proj_bias"])
            self.audio_text_proj_in = nn.Linear(flat, cfg["audio_hidden_dim"], bias=cfg["proj_bias"])
        else:
            self.text_proj_in = nn.Linear(flat, d, bias=cfg["proj_bias"])
        common = dict(rope_base_seq_len=cfg["connector_rope_base_seq_len"], rope_theta=cfg["rope_theta"],
                      rope_double_precision=cfg["rope_double_precision"], rope_type=cfg["rope_type"])
        for m in ("video", "audio"):
            setattr(self, f"{m}_connector", Connector1d(
                heads=cfg[f"{m}_connector_num_attention_heads"],
                head_dim=cfg[f"{m}_connector_attention_head_dim"],
                num_layers=cfg[f"{m}_connector_num_layers"],
                num_registers=cfg[f"{m}_connector_num_learnable_registers"],
                gated=cfg[f"{m}_gated_attn"],
                **common,
            ))

    @property
    def is_v2(self) -> bool:
        return bool(self.config["per_modality_projections"])

    def features(self, hidden_states, attention_mask: torch.Tensor, padding_side: str = "left"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature extractor: (video features, audio features), each [B, T, connector width]."""
        cfg = self.config
        stacked = _stack_layers(hidden_states, cfg["caption_channels"])
        expected = (cfg["caption_channels"], cfg["text_proj_in_factor"])
        if tuple(stacked.shape[2:]) != expected:
            raise ValueError(
                f"LTX-2 text connectors: expected {expected[1]} Gemma hidden states of width {expected[0]}, "
                f"got {stacked.shape[3]} of width {stacked.shape[2]}; the text encoder does not match "
                "this checkpoint's connectors."
            )
        if tuple(attention_mask.shape) != tuple(stacked.shape[:2]):
            raise ValueError(
                f"LTX-2 text connectors: attention_mask has shape {tuple(attention_mask.shape)}, expected "
                f"{tuple(stacked.shape[:2])} (batch, tokens)."
            )
        if self.is_v2:
            feats = per_token_rms_features(stacked, attention_mask)
            d = cfg["caption_channels"]
            video = self.video_text_proj_in(feats * math.sqrt(cfg["video_hidden_dim"] / d))
            audio = self.audio_text_proj_in(feats * math.sqrt(cfg["audio_hidden_dim"] / d))
            return video, audio
        feats = masked_range_norm(stacked, attention_mask.sum(dim=-1), padding_side)
        proj = self.text_proj_in(feats)
        return proj, proj

    def forward(self, hidden_states, attention_mask: torch.Tensor, padding_side: str = "left"
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``hidden_states``: all Gemma hidden states (list of [B, T, D], or stacked); ``attention_mask``:
        [B, T] with 1 for real tokens. Returns (video context, audio context, mask [B, T] int64).

        As in the references, the returned mask is all ones: with registers every position is a
        valid token, and without registers the references' binarisation also keeps every position.
        """
        video, audio = self.features(hidden_states, attention_mask, padding_side)
        valid = attention_mask.bool()
        video = self.video_connector(video, valid)
        audio = self.audio_connector(audio, valid)
        mask = torch.ones(video.shape[:2], dtype=torch.int64, device=video.device)
        return video, audio, mask


# --------------------------------------------------------------------------------------------------
# Checkpoint layouts

_OFFICIAL_PREFIXES = (
    ("model.diffusion_model.video_embeddings_connector.", "video_connector."),
    ("model.diffusion_model.audio_embeddings_connector.", "audio_connector."),
    ("text_embedding_projection.aggregate_embed.", "text_proj_in."),
    ("text_embedding_projection.video_aggregate_embed.", "video_text_proj_in."),
    ("text_embedding_projection.audio_aggregate_embed.", "audio_text_proj_in."),
)
_OFFICIAL_INNER = (
    (".transformer_1d_blocks.", ".transformer_blocks."),
    (".attn1.q_norm.", ".attn1.norm_q."),
    (".attn1.k_norm.", ".attn1.norm_k."),
)


def official_to_module_key(key: str) -> str | None:
    """Name in :class:`LTX2TextConnectors` for a key of the official single-file checkpoint.

    Returns None for keys that belong to other components (transformer, VAEs, vocoder, ...).
    """
    for prefix, new in _OFFICIAL_PREFIXES:
        if key.startswith(prefix):
            key = new + key[len(prefix):]
            break
    else:
        return None
    for old, new in _OFFICIAL_INNER:
        key = key.replace(old, new)
    return key


_V2_KEYS = ("caption_proj_before_connector", "caption_projection_first_linear",
            "caption_proj_input_norm", "caption_projection_second_linear")


def config_from_official(config: dict, *, caption_channels: int = 3840, text_proj_in_factor: int = 49) -> dict:
    """diffusers-style connector config from the official single-file config (safetensors metadata).

    Gemma's width and hidden-state count are not part of that config (the official code fixes them
    to Gemma-3-12B: 3840 and 49); pass them for other text encoders.
    """
    tc = config.get("transformer", config)
    heads = tc.get("connector_num_attention_heads", 30)
    head_dim = tc.get("connector_attention_head_dim", 128)
    layers = tc.get("connector_num_layers", 2)
    gated = bool(tc.get("connector_apply_gated_attention", False))
    max_pos = tc.get("connector_positional_embedding_max_pos", [1])
    v2 = any(k in tc for k in _V2_KEYS)
    out = dict(DEFAULT_CONFIG)
    out.update(
        caption_channels=caption_channels,
        text_proj_in_factor=text_proj_in_factor,
        video_connector_num_attention_heads=heads,
        video_connector_attention_head_dim=head_dim,
        video_connector_num_layers=layers,
        video_connector_num_learnable_registers=128,
        video_gated_attn=gated,
        audio_connector_num_attention_heads=tc.get("audio_connector_num_attention_heads", heads),
        audio_connector_attention_head_dim=tc.get("audio_connector_attention_head_dim", head_dim),
        audio_connector_num_layers=tc.get("audio_connector_num_layers", layers),
        audio_connector_num_learnable_registers=128,
        audio_gated_attn=gated,
        connector_rope_base_seq_len=int(max_pos[0]),
        rope_theta=10000.0,
        rope_double_precision=tc.get("frequencies_precision") == "float64",
        rope_type=tc.get("rope_type", "interleaved"),
        per_modality_projections=v2,
        proj_bias=v2,
    )
    if v2:
        out["video_hidden_dim"] = tc["num_attention_heads"] * tc["attention_head_dim"]
        out["audio_hidden_dim"] = tc["audio_num_attention_heads"] * tc["audio_attention_head_dim"]
    return out


def load_text_connectors(path, *, device="cpu", dtype: torch.dtype | str | None = None,
                         caption_channels: int = 3840, text_proj_in_factor: int = 49) -> LTX2TextConnectors:
    """Build and load the connectors from a diffusers ``connectors/`` folder (or its safetensors file)
    or from the official single-file checkpoint (config in its metadata)."""
    p = Path(path)
    keys = list_keys(p)
    official = any(official_to_module_key(k) is not None for k in keys)
    cfg = read_config(p)
    if official:
        cfg = config_from_official(cfg, caption_channels=caption_channels, text_proj_in_factor=text_proj_in_factor)
    with torch.device("meta"):
        module = LTX2TextConnectors(cfg)
    try:
        load_into(module, p, device=device, dtype=dtype, key_map=official_to_module_key if official else None)
    except CheckpointError as e:
        raise CheckpointError(f"LTX-2 text connectors: {e}") from None
    return module.eval()
