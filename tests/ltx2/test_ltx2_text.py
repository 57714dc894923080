"""LTX-2 / LTX-2.3 text connectors against diffusers' ``LTX2TextConnectors`` (test-only oracle).

Tiny random models in both checkpoint layouts: the diffusers ``connectors/`` folder (save_pretrained)
and the official single file (renamed keys, config in the safetensors metadata).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError, load_into
from comfyui_cosmos3_ltx2.core.ltx_rope import apply_rope, rope_tables
from comfyui_cosmos3_ltx2.ltx2.text import (
    LTX2TextConnectors,
    config_from_official,
    load_text_connectors,
    official_to_module_key,
)

diffusers = pytest.importorskip("diffusers")
from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors as RefConnectors  # noqa: E402

from helpers.ltx2_text_ref import LAYERS, V20, V23, WIDTH, T, official_config, to_official_key
from helpers.measures import rel

VARIANTS = {
    "2.0": V20,
    "2.0-interleaved-f32rope": dict(V20, rope_type="interleaved", rope_double_precision=False),
    "2.0-no-registers": dict(V20, video_connector_num_learnable_registers=None,
                             audio_connector_num_learnable_registers=None),
    "2.3": V23,
    "2.3-no-registers": dict(V23, video_connector_num_learnable_registers=None,
                             audio_connector_num_learnable_registers=None),
}


def _reference(config: dict, seed: int = 0) -> RefConnectors:
    torch.manual_seed(seed)
    ref = RefConnectors(**config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith(("norm_q.weight", "norm_k.weight")):
                # q/k gain makes the attention pattern matter (see the oracle notes).
                p.copy_(3.0 * (0.75 + 0.5 * torch.rand(p.shape, generator=g)))
            elif name.endswith("to_gate_logits.bias"):
                p.copy_(torch.randn(p.shape, generator=g))
    return ref


def _inputs(batch_lengths=(100, 256, 1), seed: int = 7):
    g = torch.Generator().manual_seed(seed)
    b = len(batch_lengths)
    states = [torch.randn(b, T, WIDTH, generator=g) * (1 + 2 * i) + i for i in range(LAYERS)]
    mask = torch.zeros(b, T, dtype=torch.int64)
    for i, n in enumerate(batch_lengths):
        mask[i, T - n:] = 1  # left padding
    return states, mask


def _save_diffusers(ref: RefConnectors, path) -> None:
    ref.save_pretrained(str(path), safe_serialization=True)


def _check_outputs(ours, ref, states, mask):
    with torch.no_grad():
        want = ref(torch.stack(states, dim=-1), mask)
        got = ours(states, mask)
    for g_, w_ in zip(got, want):
        assert g_.shape == w_.shape and g_.dtype == w_.dtype
    errs = [rel(got[0], want[0]), rel(got[1], want[1])]
    assert torch.equal(got[2], want[2])
    return errs


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_diffusers_folder(variant, tmp_path):
    cfg = VARIANTS[variant]
    ref = _reference(cfg)
    _save_diffusers(ref, tmp_path / "connectors")
    ours = load_text_connectors(tmp_path / "connectors")  # strict keys
    assert set(ours.state_dict()) == set(ref.state_dict())
    states, mask = _inputs()
    errs = _check_outputs(ours, ref, states, mask)
    print(f"{variant}: max rel diff video {errs[0]:.2e} audio {errs[1]:.2e}")
    assert max(errs) < 1e-5, errs


def test_input_forms_agree():
    ref = _reference(V23)
    ours = LTX2TextConnectors(dict(ref.config))
    ours.load_state_dict(ref.state_dict())
    states, mask = _inputs()
    a = ours(states, mask)
    b = ours(torch.stack(states, dim=-1), mask)
    c = ours(torch.stack(states, dim=-1).flatten(2), mask)
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y) and torch.equal(x, z)


def test_prompt_changes_output_and_padding_is_ignored():
    ref = _reference(V23)
    ours = LTX2TextConnectors(dict(ref.config))
    ours.load_state_dict(ref.state_dict())
    states, mask = _inputs((100,))
    base = ours(states, mask)
    # Changing padded positions changes nothing.
    noisy = [s.clone() for s in states]
    for s in noisy:
        s[:, :50] += 100.0
    again = ours(noisy, mask)
    assert torch.equal(base[0], again[0]) and torch.equal(base[1], again[1])
    # Changing a real token changes the context.
    other = [s.clone() for s in states]
    other[1][:, -1] += 1.0
    assert not torch.allclose(ours(other, mask)[0], base[0])


def test_register_multiple_error():
    ref = _reference(V20)
    ours = LTX2TextConnectors(dict(ref.config))
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(0)
    states = [torch.randn(1, 100, WIDTH, generator=g) for _ in range(LAYERS)]
    with pytest.raises(ValueError, match="multiple of the 128"):
        ours(states, torch.ones(1, 100, dtype=torch.int64))
    with pytest.raises(ValueError, match="Gemma hidden states"):
        ours(states[:2], torch.ones(1, 100, dtype=torch.int64))


# --------------------------------------------------------------------------------------------------
# Official single-file layout


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
def test_official_single_file(variant, tmp_path):
    cfg = VARIANTS[variant]
    v2 = variant == "2.3"
    ref = _reference(cfg, seed=3)
    sd = {to_official_key(k): v.contiguous() for k, v in ref.state_dict().items()}
    # Other components of the single file must be ignored.
    sd["model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"] = torch.zeros(4, 4)
    sd["model.diffusion_model.audio_embeddings_connector_extra"] = torch.zeros(1)  # no trailing dot: not ours
    sd["vae.decoder.conv_in.weight"] = torch.zeros(2)
    file = tmp_path / "ltx-2-tiny.safetensors"
    official_cfg = official_config(v2)
    save_file(sd, str(file), metadata={"config": json.dumps(official_cfg), "model_version": "2.3.0" if v2 else "2.0.0"})

    derived = config_from_official(official_cfg, caption_channels=WIDTH, text_proj_in_factor=LAYERS)
    for k, v in cfg.items():
        assert derived[k] == v, (k, derived[k], v)

    ours = load_text_connectors(file, caption_channels=WIDTH, text_proj_in_factor=LAYERS)
    ref_sd = ref.state_dict()
    ours_sd = ours.state_dict()
    assert set(ours_sd) == set(ref_sd)
    for k, v in ref_sd.items():
        assert torch.equal(ours_sd[k], v), k

    # The same file through core.checkpoint.load_into with the key map, on a meta-built module.
    with torch.device("meta"):
        direct = LTX2TextConnectors(derived)
    load_into(direct, file, key_map=official_to_module_key)
    for k, v in ref_sd.items():
        assert torch.equal(direct.state_dict()[k], v), k

    states, mask = _inputs()
    errs = _check_outputs(ours, ref, states, mask)
    assert max(errs) < 1e-5, errs


def test_official_key_map_examples():
    m = official_to_module_key
    assert m("model.diffusion_model.video_embeddings_connector.transformer_1d_blocks.3.attn1.q_norm.weight") \
        == "video_connector.transformer_blocks.3.attn1.norm_q.weight"
    assert m("model.diffusion_model.audio_embeddings_connector.learnable_registers") \
        == "audio_connector.learnable_registers"
    assert m("model.diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.ff.net.0.proj.bias") \
        == "video_connector.transformer_blocks.0.ff.net.0.proj.bias"
    assert m("text_embedding_projection.video_aggregate_embed.weight") == "video_text_proj_in.weight"
    assert m("text_embedding_projection.aggregate_embed.weight") == "text_proj_in.weight"
    assert m("model.diffusion_model.transformer_blocks.0.attn1.to_q.weight") is None
    assert m("vae.decoder.conv_in.weight") is None


def test_wrong_checkpoint_is_rejected(tmp_path):
    ref = _reference(V20)
    _save_diffusers(ref, tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    cfg["video_connector_num_layers"] = 3
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing keys"):
        load_text_connectors(tmp_path / "c")


# --------------------------------------------------------------------------------------------------
# RoPE helper against the reference 1-D rope and rotations


@pytest.mark.parametrize("rope_type", ["split", "interleaved"])
@pytest.mark.parametrize("double", [True, False])
def test_rope_1d_matches_reference(rope_type, double):
    from diffusers.models.transformers.transformer_ltx2 import (
        apply_interleaved_rotary_emb,
        apply_split_rotary_emb,
    )
    from diffusers.pipelines.ltx2.connectors import LTX2RotaryPosEmbed1d

    dim, heads, t = 64, 2, 40
    ref_rope = LTX2RotaryPosEmbed1d(dim, base_seq_len=4096, theta=1e4, double_precision=double,
                                    rope_type=rope_type, num_attention_heads=heads)
    rc, rs = ref_rope(1, t, "cpu")
    pos = torch.arange(t, dtype=torch.float32)[None, :, None] / 4096
    cos, sin = rope_tables(pos, dim, num_heads=heads, rope_type=rope_type, theta=1e4, double_precision=double)
    if rope_type == "split":
        assert torch.equal(cos.transpose(1, 2), rc) and torch.equal(sin.transpose(1, 2), rs)
    else:
        assert torch.equal(cos, rc) and torch.equal(sin, rs)
    x = torch.randn(1, t, dim)
    apply_ref = apply_split_rotary_emb if rope_type == "split" else apply_interleaved_rotary_emb
    torch.testing.assert_close(apply_rope(x, cos, sin), apply_ref(x, (rc, rs)), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Cross-check against ltx-core (the official code), batch 1 (it assumes batch 1 for registers)


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
def test_matches_ltx_core_batch1(variant):
    pytest.importorskip("ltx_core")
    from ltx_core.model.transformer.rope import LTXRopeType
    from ltx_core.text_encoders.gemma.embeddings_connector import Embeddings1DConnector
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor
    from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1, FeatureExtractorV2

    cfg = VARIANTS[variant]
    v2 = variant == "2.3"
    ref = _reference(cfg, seed=5)
    with torch.no_grad():  # official registers are bf16: use bf16-exact weights everywhere
        for p in ref.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    flat = WIDTH * LAYERS
    if v2:
        fe = FeatureExtractorV2(video_aggregate_embed=torch.nn.Linear(flat, 64), embedding_dim=WIDTH,
                                audio_aggregate_embed=torch.nn.Linear(flat, 32))
    else:
        fe = FeatureExtractorV1(aggregate_embed=torch.nn.Linear(flat, WIDTH, bias=False), is_av=True)

    def connector(m):
        return Embeddings1DConnector(
            attention_head_dim=cfg[f"{m}_connector_attention_head_dim"],
            num_attention_heads=cfg[f"{m}_connector_num_attention_heads"], num_layers=2,
            positional_embedding_max_pos=[4096], rope_type=LTXRopeType.SPLIT, double_precision_rope=True,
            apply_gated_attention=v2)

    official = EmbeddingsProcessor(feature_extractor=fe, video_connector=connector("video"),
                                   audio_connector=connector("audio")).eval()
    renames = {  # ltx-core's loader renames (encoder_configurator.py), applied to the file keys
        "text_embedding_projection.aggregate_embed.": "feature_extractor.aggregate_embed.",
        "text_embedding_projection.video_aggregate_embed.": "feature_extractor.video_aggregate_embed.",
        "text_embedding_projection.audio_aggregate_embed.": "feature_extractor.audio_aggregate_embed.",
        "model.diffusion_model.video_embeddings_connector.": "video_connector.",
        "model.diffusion_model.audio_embeddings_connector.": "audio_connector.",
    }
    sd = {}
    for k, v in ref.state_dict().items():
        k = to_official_key(k)
        for old, new in renames.items():
            if k.startswith(old):
                k = new + k[len(old):]
        sd[k] = v
    official.load_state_dict(sd, strict=True)

    ours = LTX2TextConnectors(dict(ref.config))
    ours.load_state_dict(ref.state_dict())
    states, mask = _inputs((100,))
    want = official.process_hidden_states(tuple(states), mask, padding_side="left")
    got = ours(states, mask)
    errs = [rel(got[0], want.video_encoding), rel(got[1], want.audio_encoding)]
    assert torch.equal(got[2], want.attention_mask)
    print(f"ltx-core {variant}: max rel diff video {errs[0]:.2e} audio {errs[1]:.2e}")
    assert max(errs) < 1e-5, errs
