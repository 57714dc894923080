"""ltx2.loader: whole LTX-2.0 / LTX-2.3 checkpoints (official single file and diffusers folder), the Gemma-3
text encoder and the distilled LoRA, on tiny random models (CPU, seconds).

The tiny component configs are the ones the per-component tests use (imported from them). The official
single file is written with those tests' independent diffusers -> official renames, and its metadata
config uses the official field names.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError
from comfyui_cosmos3_ltx2.core.lora import LoraError
from comfyui_cosmos3_ltx2.ltx2 import loader, text_encoding, video_vae
from comfyui_cosmos3_ltx2.ltx2.text import LTX2TextConnectors
from helpers import ltx2_text_ref as t_text
from helpers import ltx2_video_vae_ref as t_vae
from helpers.ltx2_checkpoint_ref import VERSIONS, lora_file, official_vae, tiny_configs, tiny_tokenizer, write_official

# diffusers -> official names, per component (the component tests' own inverse maps where they have one)


def _load(path, **kw):
    """The tiny LTX-2.3 single file needs the Gemma width (3 x 32 features, not 49 x 3840)."""
    return loader.load_ltx2_checkpoint(path, text_hidden_size=32, **kw)


def _assert_same(ckpt: loader.LTX2Checkpoint, states: dict, components=loader.COMPONENTS) -> None:
    for comp in components:
        got = getattr(ckpt, comp).state_dict()
        want = states[comp]
        assert set(got) == set(want), comp
        for k, v in want.items():
            assert got[k].dtype == v.dtype and torch.equal(got[k], v), (comp, k)


# --------------------------------------------------------------------------------------------------
# Checkpoints


def test_both_layouts_load_identical_weights(tiny):
    version, states, folder, file, _, _ = tiny
    a = _load(folder, dtype="fp32")
    b = _load(file, dtype="fp32")
    assert (a.version, a.layout, b.version, b.layout) == (version, "diffusers", version, "single_file")
    assert a.is_v23 == b.is_v23 == (version == "2.3")
    _assert_same(a, states)
    _assert_same(b, states)
    for comp in loader.COMPONENTS:
        assert not getattr(b, comp).training
    # The modules were built from equivalent configs: same classes and same derived settings.
    assert type(a.vocoder) is type(b.vocoder)
    assert a.connectors.is_v2 == b.connectors.is_v2 == (version == "2.3")
    assert b.config["transformer"]["num_layers"] == 2 and "model_index" in a.config


def test_model_runs_after_loading_single_file(tiny):
    """The loaded text connectors and transformer work together (shapes only; parity is tested per module)."""
    version, _, _, file, _, _ = tiny
    ck = _load(file, dtype="fp32", components=("connectors",))
    states = [torch.randn(1, 256, 32) for _ in range(3)]
    mask = torch.zeros(1, 256, dtype=torch.int64)
    mask[:, -20:] = 1
    video, audio, m = ck.connectors(states, mask)
    assert video.shape[:2] == audio.shape[:2] == m.shape == (1, 256)
    assert ck.transformer is None and ck.video_vae is None


def test_default_dtype_and_component_subset(tiny):
    _, _, folder, file, _, _ = tiny
    for path in (file, folder):
        ck = _load(path, components=("transformer", "vocoder"))
        assert ck.transformer.proj_in.weight.dtype == torch.bfloat16
        assert ck.connectors is None and ck.video_vae is None and ck.audio_vae is None
        assert ck.vocoder is not None and set(ck.configs) == {"transformer", "vocoder"}


def test_gemma_width_is_needed_for_other_text_encoders(tiny):
    version, _, _, file, _, _ = tiny
    if version == "2.0":  # read from the aggregate_embed shape
        assert loader.load_ltx2_checkpoint(file, components=("connectors",)).configs["connectors"][
            "text_proj_in_factor"] == 3
    else:
        with pytest.raises(CheckpointError, match="96 features.*text_hidden_size"):
            loader.load_ltx2_checkpoint(file, components=("connectors",))
        ck = loader.load_ltx2_checkpoint(file, components=("connectors",), text_num_hidden_states=3)
        assert ck.configs["connectors"]["caption_channels"] == 32


def test_version_detection(tiny, tmp_path):
    version, _, folder, file, official, ocfg = tiny
    assert loader.detect_version(file) == version
    assert loader.detect_version(folder) == version
    # Without model_version the tensors decide.
    bare = write_official(tmp_path / "no_version.safetensors", official, ocfg, None)
    assert _load(bare, components=("connectors",)).version == version
    # A model_version that contradicts the tensors is refused.
    other = "2.0.0" if version == "2.3" else "2.3.0"
    bad = write_official(tmp_path / "wrong_version.safetensors", official, ocfg, other)
    with pytest.raises(CheckpointError, match=r"wrong_version\.safetensors.*inconsistent"):
        _load(bad)
    # Another numbering scheme on an LTX-2 audio-video file: the tensors decide.
    odd = write_official(tmp_path / "odd_version.safetensors", official, ocfg, "1.0.0")
    assert loader.detect_version(odd) == version


def test_unsupported_version_is_refused(tiny, tmp_path):
    _, _, _, _, official, ocfg = tiny
    bad = write_official(tmp_path / "ltx-2.5.safetensors", official, ocfg, "2.5.0")
    with pytest.raises(CheckpointError, match=r"ltx-2\.5\.safetensors.*'2\.5\.0' is not supported"):
        _load(bad)
    # LTX-Video 0.9 style: a video-only DiT + VAE, no audio stream.
    ltxv = {k: v for k, v in official.items() if not k.startswith(("audio_vae.", "vocoder.", "text_embedding"))
            and not k.startswith("model.diffusion_model.audio_") and ".audio_" not in k}
    f = write_official(tmp_path / "ltxv-0.9.safetensors", ltxv, {"transformer": {}}, "0.9.8")
    with pytest.raises(CheckpointError, match=r"ltxv-0\.9\.safetensors.*LTX-Video.*not supported"):
        _load(f)


def test_other_models_are_refused(tmp_path):
    cosmos = {"net.blocks.0.self_attn.q_proj.weight": torch.zeros(4, 4), "net.x_embedder.proj.1.weight": torch.zeros(4, 4)}
    f = tmp_path / "cosmos3.safetensors"
    save_file(cosmos, str(f), metadata={"config": "{}"})
    with pytest.raises(CheckpointError, match=r"cosmos3\.safetensors: not an LTX-2 checkpoint"):
        _load(f)
    with pytest.raises(CheckpointError, match=r"model\.pt.*not a \.safetensors"):
        (tmp_path / "model.pt").write_bytes(b"x")
        _load(tmp_path / "model.pt")
    other = tmp_path / "wan"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(CheckpointError, match=r"'WanPipeline' is not an LTX-2 pipeline"):
        _load(other)
    ltxv = tmp_path / "ltxv"
    ltxv.mkdir()
    (ltxv / "model_index.json").write_text(json.dumps({"_class_name": "LTXConditionPipeline"}))
    with pytest.raises(CheckpointError, match=r"LTX-Video.*not supported"):
        _load(ltxv)
    with pytest.raises(CheckpointError, match="no model_index.json"):
        _load(tmp_path)
    with pytest.raises(CheckpointError, match="unknown LTX-2 component"):
        _load(f, components=("text_encoder",))


def test_missing_component(tiny, tmp_path):
    version, _, folder, _, official, ocfg = tiny
    no_vocoder = {k: v for k, v in official.items() if not k.startswith("vocoder.")}
    f = write_official(tmp_path / "no_vocoder.safetensors", no_vocoder, ocfg, f"{version}.0")
    with pytest.raises(CheckpointError, match=r"no_vocoder\.safetensors.*no vocoder tensors"):
        _load(f)
    ck = _load(f, components=("audio_vae",))  # the rest still loads
    assert ck.audio_vae is not None and ck.vocoder is None
    # A tensor missing inside a component: strict load, the error names the component and the file.
    cut = dict(official)
    cut.pop("model.diffusion_model.proj_out.weight")
    f2 = write_official(tmp_path / "cut.safetensors", cut, ocfg, f"{version}.0")
    with pytest.raises(CheckpointError, match=r"LTX-2 transformer from .*cut\.safetensors.*proj_out\.weight"):
        _load(f2, components=("transformer",))
    # No config metadata.
    f3 = write_official(tmp_path / "no_config.safetensors", official, None, f"{version}.0")
    with pytest.raises(CheckpointError, match=r"no_config\.safetensors: no 'config' entry"):
        _load(f3)
    # A diffusers folder without vocoder/.
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("model_index.json",):
        (partial / name).write_text((folder / name).read_text())
    for sub in ("transformer", "connectors"):
        (partial / sub).mkdir()
        for f_ in (folder / sub).iterdir():
            (partial / sub / f_.name).write_bytes(f_.read_bytes())
    with pytest.raises(CheckpointError, match=r"partial.*no vae/config\.json, so the video_vae"):
        _load(partial)
    with pytest.raises(CheckpointError, match=r"partial.*no vocoder/config\.json"):
        _load(partial, components=("transformer", "vocoder"))
    assert _load(partial, components=("connectors",)).version == version


_VAE_FIELDS = ("latent_channels", "block_out_channels", "layers_per_block", "downsample_type",
               "decoder_block_out_channels", "decoder_layers_per_block", "upsample_type", "upsample_residual",
               "upsample_factor", "timestep_conditioning", "decoder_causal", "encoder_spatial_padding_mode",
               "decoder_spatial_padding_mode", "patch_size")


@pytest.mark.parametrize("version", VERSIONS)
def test_video_vae_config_from_official_blocks(version):
    want = t_vae.TINY_23 if version == "2.3" else t_vae.TINY_20
    for conv_in in (None, 64):  # from decoder_base_channels, or from the conv_in tensor's shape
        got = video_vae.config_from_official(official_vae(version), decoder_conv_in_channels=conv_in)
        for k in _VAE_FIELDS:
            assert list(got[k]) == list(want[k]) if isinstance(want[k], list) else got[k] == want[k], (k, got[k], want[k])
    # The released LTX-2.0 layout (ltx2.md 8.4) gives diffusers' default LTX-2.0 config.
    res = lambda n: ["res_x", {"num_layers": n}]  # noqa: E731
    up = ["compress_all", {"residual": True, "multiplier": 2}]
    real = {"encoder_blocks": [res(4), ["compress_space_res", {"multiplier": 2}], res(6),
                               ["compress_time_res", {"multiplier": 2}], res(6), ["compress_all_res", {"multiplier": 2}],
                               res(2), ["compress_all_res", {"multiplier": 2}], res(2)],
            "decoder_blocks": [res(5), up, res(5), up, res(5), up, res(5)], "timestep_conditioning": False}
    cfg = video_vae.config_from_official(real)
    assert cfg["block_out_channels"] == [256, 512, 1024, 2048] and cfg["layers_per_block"] == [4, 6, 6, 2, 2]
    assert cfg["decoder_block_out_channels"] == [256, 512, 1024] and cfg["decoder_layers_per_block"] == [5, 5, 5, 5]
    assert cfg["upsample_residual"] == [True] * 3 and cfg["upsample_factor"] == [2] * 3
    assert cfg["decoder_spatial_padding_mode"] == "reflect" and cfg["encoder_spatial_padding_mode"] == "zeros"


def test_video_vae_diffusers_style_section_and_bad_layout(tiny, tmp_path):
    version, states, _, _, official, ocfg = tiny
    cfg = dict(ocfg, vae=tiny_configs(version)["video_vae"])  # a diffusers-style vae section is taken as is
    f = write_official(tmp_path / "diffusers_vae.safetensors", official, cfg, f"{version}.0")
    _assert_same(_load(f, dtype="fp32", components=("video_vae",)), states, ("video_vae",))
    bad = dict(ocfg, vae=dict(ocfg["vae"], encoder_blocks=[["res_x", 1], ["res_x", 1]]))
    f2 = write_official(tmp_path / "bad_vae.safetensors", official, bad, f"{version}.0")
    with pytest.raises(CheckpointError, match=r"bad_vae\.safetensors \(video VAE\): unsupported encoder block layout"):
        _load(f2, components=("video_vae",))


# --------------------------------------------------------------------------------------------------
# Distilled LoRA


def test_distilled_lora_merge_and_strength(tiny, tmp_path):
    _, states, _, file, _, _ = tiny
    ck = _load(file, dtype="fp32", components=("transformer",))
    tr = ck.transformer
    path, factors = lora_file(tmp_path / "ltx-2-tiny-distilled-lora-384.safetensors")
    before = {k: v.clone() for k, v in tr.state_dict().items()}
    handle = loader.load_distilled_lora(tr, path, strength=0.5)
    assert handle.strength == 0.5 and set(handle.targets) == set(factors)

    def check(strength):
        sd = tr.state_dict()
        for name, w0 in before.items():
            if name in factors:
                a, b = factors[name]
                want = (w0.float() + (b @ a).mul_(strength)).to(w0.dtype)
                assert torch.equal(sd[name], want), name
            else:
                assert torch.equal(sd[name], w0), name

    check(0.5)
    handle.set_strength(1.0)
    check(1.0)
    handle.set_strength(0.0)
    for name, w0 in before.items():
        assert torch.equal(tr.state_dict()[name], w0), name
    handle.remove()


def test_distilled_lora_wrong_keys(tiny, tmp_path):
    _, _, _, file, _, _ = tiny
    tr = _load(file, dtype="fp32", components=("transformer",)).transformer
    bad, _ = lora_file(tmp_path / "bad.safetensors", extra={
        "diffusion_model.transformer_blocks.9.attn1.to_q.lora_A.weight": torch.zeros(2, 64),
        "diffusion_model.transformer_blocks.9.attn1.to_q.lora_B.weight": torch.zeros(64, 2)})
    w = tr.proj_in.weight.clone()
    with pytest.raises(LoraError, match="transformer_blocks.9"):
        loader.load_distilled_lora(tr, bad)
    assert torch.equal(tr.proj_in.weight, w)  # nothing changed


# --------------------------------------------------------------------------------------------------
# Gemma-3 text encoder


def test_gemma_hidden_states_and_left_padding(gemma_folder):
    folder, ref = gemma_folder
    enc = text_encoding.load_gemma_text_encoder(folder, device="cpu", dtype="fp32")
    assert enc.num_hidden_states == 3 and enc.hidden_size == 32 and enc.dtype == torch.float32
    states, mask = enc.encode("  a cat walks on the beach  ")
    assert len(states) == 3 and all(s.shape == (1, 1024, 32) for s in states)
    assert mask.shape == (1, 1024)
    n = int(mask.sum())
    assert 0 < n < 30 and mask[0, -n:].all() and not mask[0, :-n].any()  # left padding
    ids, _ = enc.tokenize("a cat walks on the beach")
    assert (ids[0, :-n] == enc.tokenizer.pad_token_id).all()
    # The prompt is stripped: same tokens as without the spaces.
    assert torch.equal(ids, enc.tokenize("  a cat walks on the beach  ")[0])
    # Same as running the inner HF model directly.
    with torch.no_grad():
        want = ref.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for a, b in zip(states, want):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    # Truncation to max_length.
    long_ids, long_mask = enc.tokenize("the quick brown fox " * 600)
    assert long_ids.shape == (1, 1024) and bool(long_mask.all())
    # Hidden states feed the tiny connectors (3 states of width 32).
    torch.manual_seed(0)
    conn = LTX2TextConnectors(t_text.V23)
    video, audio, _ = conn(states, mask)
    assert video.shape == (1, 1024, 64) and audio.shape == (1, 1024, 32)


def test_gemma_bf16_and_pad_fallback(gemma_folder, tmp_path):
    folder, _ = gemma_folder
    enc = text_encoding.load_gemma_text_encoder(folder, device="cpu", dtype="bf16", max_length=64)
    states, mask = enc.encode("a red car")
    assert enc.dtype == torch.bfloat16 and states[0].shape == (1, 64, 32) and states[-1].dtype == torch.bfloat16
    # Without a pad token the eos token pads.
    tok = tiny_tokenizer(with_pad=False)
    assert tok.pad_token is None
    enc2 = text_encoding.GemmaTextEncoder(enc.model, tok, max_length=16)
    ids, m = enc2.tokenize("a red car")
    assert tok.pad_token_id == tok.eos_token_id == 1
    assert (ids[0][m[0] == 0] == 1).all() and m[0, -1] == 1 and m[0, 0] == 0


def test_gemma_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        text_encoding.load_gemma_text_encoder(tmp_path / "gemma.safetensors", device="cpu", dtype="bf16")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="not Gemma-3"):
        text_encoding.load_gemma_text_encoder(tmp_path, device="cpu", dtype="bf16")
