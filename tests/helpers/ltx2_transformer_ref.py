"""Tiny LTX-2.0 / LTX-2.3 transformer configs (diffusers' names) and the official single-file key names and
config (``model.diffusion_model.*``)."""

from __future__ import annotations

BASE = dict(
    in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=32, cross_attention_dim=64,
    audio_in_channels=32, audio_out_channels=32, audio_num_attention_heads=2, audio_attention_head_dim=16,
    audio_cross_attention_dim=32, num_layers=2, rope_type="split", rope_double_precision=True,
    rope_theta=10000.0, timestep_scale_multiplier=1000, cross_attn_timestep_scale_multiplier=1000,
    perturbed_attn=True,
)

CONFIGS = {
    "2.0": dict(BASE, caption_channels=32, use_prompt_embeddings=True),
    "2.3": dict(BASE, caption_channels=32, use_prompt_embeddings=False, gated_attn=True, audio_gated_attn=True,
                cross_attn_mod=True, audio_cross_attn_mod=True),
    # the other rope flavour, single precision frequencies, and a non-default AV gate multiplier
    "2.0-interleaved": dict(BASE, caption_channels=32, use_prompt_embeddings=True, rope_type="interleaved",
                            rope_double_precision=False, cross_attn_timestep_scale_multiplier=1),
}

# diffusers name -> official name, written from the reference tables (independently of the module's map)
_TOP = {
    "proj_in.": "patchify_proj.",
    "audio_proj_in.": "audio_patchify_proj.",
    "time_embed.": "adaln_single.",
    "audio_time_embed.": "audio_adaln_single.",
    "prompt_adaln.": "prompt_adaln_single.",
    "audio_prompt_adaln.": "audio_prompt_adaln_single.",
    "av_cross_attn_video_scale_shift.": "av_ca_video_scale_shift_adaln_single.",
    "av_cross_attn_audio_scale_shift.": "av_ca_audio_scale_shift_adaln_single.",
    "av_cross_attn_video_a2v_gate.": "av_ca_a2v_gate_adaln_single.",
    "av_cross_attn_audio_v2a_gate.": "av_ca_v2a_gate_adaln_single.",
}

_BLOCK = {
    ".norm_q.": ".q_norm.",
    ".norm_k.": ".k_norm.",
    ".video_a2v_cross_attn_scale_shift_table": ".scale_shift_table_a2v_ca_video",
    ".audio_a2v_cross_attn_scale_shift_table": ".scale_shift_table_a2v_ca_audio",
}


def to_official_key(name: str) -> str:
    for new, old in _TOP.items():
        if name.startswith(new):
            name = old + name[len(new):]
            break
    for new, old in _BLOCK.items():
        name = name.replace(new, old)
    return "model.diffusion_model." + name


def official_config(cfg: dict) -> dict:
    return {"transformer": {
        "num_attention_heads": cfg["num_attention_heads"], "attention_head_dim": cfg["attention_head_dim"],
        "in_channels": cfg["in_channels"], "out_channels": cfg["out_channels"], "num_layers": cfg["num_layers"],
        "cross_attention_dim": cfg["cross_attention_dim"], "norm_eps": 1e-6,
        "positional_embedding_theta": 10000.0, "positional_embedding_max_pos": [20, 2048, 2048],
        "timestep_scale_multiplier": 1000, "use_middle_indices_grid": True,
        "audio_num_attention_heads": cfg["audio_num_attention_heads"],
        "audio_attention_head_dim": cfg["audio_attention_head_dim"],
        "audio_in_channels": cfg["audio_in_channels"], "audio_out_channels": cfg["audio_out_channels"],
        "audio_cross_attention_dim": cfg["audio_cross_attention_dim"],
        "audio_positional_embedding_max_pos": [20],
        "av_ca_timestep_scale_multiplier": cfg["cross_attn_timestep_scale_multiplier"],
        "rope_type": cfg["rope_type"], "frequencies_precision": "float64" if cfg["rope_double_precision"] else "float32",
        "apply_gated_attention": cfg.get("gated_attn", False),
        "cross_attention_adaln": cfg.get("cross_attn_mod", False),
        "connector_num_layers": 2,
    }}
