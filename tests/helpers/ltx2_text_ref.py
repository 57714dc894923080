"""Tiny LTX-2.0 / LTX-2.3 text-connector configs and the official single-file key names and config."""

from __future__ import annotations

WIDTH, LAYERS, T = 32, 3, 256

BASE = dict(
    caption_channels=WIDTH,
    text_proj_in_factor=LAYERS,
    video_connector_num_layers=2,
    audio_connector_num_layers=2,
    video_connector_num_learnable_registers=128,
    audio_connector_num_learnable_registers=128,
    connector_rope_base_seq_len=4096,
    rope_double_precision=True,
    rope_type="split",
)

V20 = dict(BASE, video_connector_num_attention_heads=2, video_connector_attention_head_dim=16,
           audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=16,
           per_modality_projections=False, proj_bias=False)

V23 = dict(BASE, video_connector_num_attention_heads=2, video_connector_attention_head_dim=32,
           audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=16,
           video_gated_attn=True, audio_gated_attn=True, per_modality_projections=True,
           video_hidden_dim=64, audio_hidden_dim=32, proj_bias=True)

_TO_OFFICIAL_PREFIX = {
    "video_connector.": "model.diffusion_model.video_embeddings_connector.",
    "audio_connector.": "model.diffusion_model.audio_embeddings_connector.",
    "text_proj_in.": "text_embedding_projection.aggregate_embed.",
    "video_text_proj_in.": "text_embedding_projection.video_aggregate_embed.",
    "audio_text_proj_in.": "text_embedding_projection.audio_aggregate_embed.",
}


def to_official_key(key: str) -> str:
    # Written independently of the module's own mapping, from ltx-core's names.
    for old, new in _TO_OFFICIAL_PREFIX.items():
        if key.startswith(old):
            key = new + key[len(old):]
            break
    else:
        raise AssertionError(key)
    return (key.replace(".transformer_blocks.", ".transformer_1d_blocks.")
               .replace(".norm_q.", ".q_norm.").replace(".norm_k.", ".k_norm."))


def official_config(v2: bool) -> dict:
    tc = {
        "rope_type": "split",
        "frequencies_precision": "float64",
        "connector_positional_embedding_max_pos": [4096],
        "connector_num_layers": 2,
        "connector_num_attention_heads": 2,
        "connector_attention_head_dim": 32 if v2 else 16,
        "num_attention_heads": 2,
        "attention_head_dim": 32,
        "audio_num_attention_heads": 2,
        "audio_attention_head_dim": 16,
    }
    if v2:
        tc.update(
            caption_proj_before_connector=True,
            caption_projection_first_linear=False,
            caption_proj_input_norm=False,
            caption_projection_second_linear=False,
            audio_connector_num_attention_heads=2,
            audio_connector_attention_head_dim=16,
            connector_apply_gated_attention=True,
        )
    return {"transformer": tc}
