"""Structure of the REAL released LTX-2.3 / LTX-2.0 single-file checkpoints vs. what our loader builds.

No weights are available, so the checkpoint is simulated by its header only: the official key names and
tensor shapes are produced by Lightricks' ltx-core 1.0.0 (the test oracle) from the config that the released
files carry in their safetensors metadata (``tests/ltx2/data/ltx2_real_configs/*.json``, sources in the README
there), built on the ``meta`` device with ltx-core's own configurators and mapped to single-file names with
the inverse of ltx-core's own SDOps (checked against those SDOps below).

Our side runs the real single-file path, ``ltx2.loader._load_single_file``, with only the header readers and
``load_into`` replaced by a header-only fake that applies our key maps exactly as ``load_into`` does
(``core.checkpoint._target_name``) and compares the resulting plan with each module's state dict: every
official key must land on one of our parameters / persistent buffers with the same shape (or be dropped on
purpose), no two keys may land on the same name, and every one of our tensors must be covered.

Everything stays on ``meta``: the whole file runs in a few seconds. Skipped when ltx-core is not installed.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import torch

from helpers.header_plan import header_plan
from helpers.ltx_oracle import ltx_core_importable, ltx_core_name, official_parts

pytestmark = pytest.mark.skipif(not ltx_core_importable(), reason="ltx-core (with transformers) not importable")

DATA = Path(__file__).parent / "data" / "ltx2_real_configs"
CONFIG_23 = "ltx-2.3-22b.config.json"
CONFIG_20 = "ltx-2-19b.config.json"

# Tensor counts per top-level prefix of the real ltx-2.3-22b-dev.safetensors (5947 tensors), as reported
# from its header in https://github.com/tenstorrent/tt-xla/issues/4542 .
REAL_23_COUNTS = {"model": 4444, "vocoder": 1227, "vae": 170, "audio_vae": 102, "text_embedding_projection": 4}

# Unused video-VAE statistics that LTX-2.0-era files may carry besides mean-of-means / std-of-means
# (diffusers' convert_ltx2_to_diffusers.py removes "per_channel_statistics.channel" and every key containing
# "per_channel_statistics.mean-of-stds"); our key map must drop them.
EXTRA_20_STATS = {
    "vae.per_channel_statistics.channel": (128,),
    "vae.per_channel_statistics.mean-of-stds": (128,),
    "vae.per_channel_statistics.mean-of-stds_over_std-of-means": (128,),
}


def _config(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------
# The official side: ltx-core modules -> single-file key names and shapes


_HEADERS: dict[str, tuple[dict, dict]] = {}


def _official_header(name: str) -> tuple[dict, dict]:
    """(single-file key -> shape, component -> set of its single-file keys), from ltx-core."""
    if name not in _HEADERS:
        header, owners = {}, {}
        for comp, (module, ops, to_file) in official_parts(_config(name)).items():
            keys = owners.setdefault(comp, set())
            for k, t in module.state_dict().items():
                file_key = to_file(k)
                # The inverse is right: ltx-core's own SDOps bring the single-file name back to the module's.
                assert ltx_core_name(ops, file_key) == k, (comp, k, file_key)
                shape = tuple(t.shape)
                assert header.setdefault(file_key, shape) == shape, f"{file_key}: two shapes"
                keys.add(file_key)
        _HEADERS[name] = (header, owners)
    return _HEADERS[name]


# --------------------------------------------------------------------------------------------------
# Our side: the real _load_single_file on a header-only fake


class _FakeFile:
    def __init__(self, header: dict, metadata: dict):
        self.header, self.metadata = header, metadata
        self.plans: dict[str, dict] = {}  # module class -> {our name: file key}


def _run_our_loader(monkeypatch, header: dict, cfg: dict, model_version: str | None, components):
    from comfyui_cosmos3_ltx2.ltx2 import loader

    file = Path("/nonexistent/ltx-header-only.safetensors")
    metadata = {"config": json.dumps(cfg)}
    if model_version:
        metadata["model_version"] = model_version
    fake = _FakeFile(header, metadata)
    problems: list[str] = []

    def list_keys(_files):
        return {k: (file, shape, "BF16") for k, shape in header.items()}

    def load_into(module, _files, *, key_map=None, strip_prefix=None, ignore=(), strict=True, **_kw):
        what = type(module).__name__
        plan, found = header_plan(module, header, key_map=key_map, strip_prefix=strip_prefix, ignore=ignore)
        problems.extend(f"{what}: {p}" for p in found)
        fake.plans[what] = plan

    monkeypatch.setattr(loader, "list_keys", list_keys)
    monkeypatch.setattr(loader, "safetensors_metadata", lambda _f: dict(metadata))
    monkeypatch.setattr(loader, "metadata_config", lambda _f, m=None: json.loads(metadata["config"]))
    monkeypatch.setattr(loader, "load_into", load_into)
    ckpt = loader._load_single_file(file, tuple(components), "cpu", torch.bfloat16, None, None)
    return ckpt, fake, problems


def _assert_all_official_keys_used(header: dict, owners: dict, fake: _FakeFile, dropped: set[str] = frozenset()):
    """Every official key of every component (from ltx-core) is loaded by exactly one of our modules,
    apart from ``dropped`` ones."""
    used = collections.Counter(k for plan in fake.plans.values() for k in plan.values())
    missing = sorted(k for k in header if used[k] == 0 and k not in dropped)
    twice = sorted(k for k, n in used.items() if n > 1)
    assert not missing, f"{len(missing)} official keys load into none of our modules, e.g. {missing[:10]}"
    assert not twice, f"official keys loaded by two of our modules: {twice[:10]}"


# --------------------------------------------------------------------------------------------------
# Tests


def test_23_config_reproduces_the_real_file_tensor_counts():
    """The LTX-2.3 config, built by ltx-core, gives exactly the per-prefix tensor counts of the real
    ltx-2.3-22b-dev.safetensors header (so the config and the oracle's layout are the released ones)."""
    header, _ = _official_header(CONFIG_23)
    counts = collections.Counter(k.split(".")[0] for k in header)
    assert dict(counts) == REAL_23_COUNTS
    assert len(header) == 5947


def test_23_official_shapes_match_the_fact_sheet():
    header, _ = _official_header(CONFIG_23)
    p = "model.diffusion_model."
    expect = {
        f"{p}patchify_proj.weight": (4096, 128),
        f"{p}audio_patchify_proj.weight": (2048, 128),
        f"{p}adaln_single.linear.weight": (9 * 4096, 4096),
        f"{p}audio_adaln_single.linear.weight": (9 * 2048, 2048),
        f"{p}prompt_adaln_single.linear.weight": (2 * 4096, 4096),
        f"{p}audio_prompt_adaln_single.linear.weight": (2 * 2048, 2048),
        f"{p}av_ca_video_scale_shift_adaln_single.linear.weight": (4 * 4096, 4096),
        f"{p}av_ca_a2v_gate_adaln_single.linear.weight": (4096, 4096),
        f"{p}transformer_blocks.47.attn1.to_gate_logits.weight": (32, 4096),
        f"{p}transformer_blocks.0.audio_to_video_attn.to_q.weight": (2048, 4096),
        f"{p}transformer_blocks.0.video_to_audio_attn.to_k.weight": (2048, 4096),
        f"{p}transformer_blocks.0.scale_shift_table": (9, 4096),
        f"{p}transformer_blocks.0.prompt_scale_shift_table": (2, 4096),
        f"{p}transformer_blocks.0.scale_shift_table_a2v_ca_video": (5, 4096),
        f"{p}video_embeddings_connector.learnable_registers": (128, 4096),
        f"{p}audio_embeddings_connector.learnable_registers": (128, 2048),
        f"{p}video_embeddings_connector.transformer_1d_blocks.7.attn1.to_gate_logits.weight": (32, 4096),
        "text_embedding_projection.video_aggregate_embed.weight": (4096, 3840 * 49),
        "text_embedding_projection.audio_aggregate_embed.weight": (2048, 3840 * 49),
        "vae.decoder.conv_in.conv.weight": (1024, 128, 3, 3, 3),
        "vae.encoder.conv_out.conv.weight": (129, 1024, 3, 3, 3),
        "vae.per_channel_statistics.mean-of-means": (128,),
        "audio_vae.per_channel_statistics.mean-of-means": (128,),
        "vocoder.vocoder.conv_pre.weight": (1536, 128, 7),
        "vocoder.bwe_generator.conv_pre.weight": (512, 128, 7),
        "vocoder.mel_stft.mel_basis": (64, 257),
    }
    assert {k: header.get(k) for k in expect} == expect
    assert f"{p}caption_projection.linear_1.weight" not in header
    assert "vae.decoder.last_time_embedder.timestep_embedder.linear_1.weight" not in header
    assert "vocoder.vocoder.conv_post.bias" not in header  # use_bias_at_final False


@pytest.mark.parametrize("name,version", [(CONFIG_23, "2.3"), (CONFIG_20, "2.0")])
def test_single_file_loader_builds_the_official_structure(monkeypatch, name, version):
    """Every official tensor of every component maps onto one of our tensors with its shape, and every
    one of our tensors is covered (through _load_single_file and our key maps)."""
    from comfyui_cosmos3_ltx2.ltx2 import loader

    header, owners = _official_header(name)
    header = dict(header)
    dropped: set[str] = set()
    if version == "2.0":
        header.update(EXTRA_20_STATS)
        dropped = set(EXTRA_20_STATS)
    cfg = _config(name)
    ckpt, fake, problems = _run_our_loader(monkeypatch, header, cfg, "2.3.0" if version == "2.3" else None,
                                           loader.COMPONENTS)
    assert ckpt.version == version
    assert not problems, f"{len(problems)} structure mismatches:\n" + "\n".join(problems[:40])
    _assert_all_official_keys_used(header, owners, fake, dropped)


def test_23_component_configs(monkeypatch):
    """The configs our loader derived for LTX-2.3 carry the released values."""
    from comfyui_cosmos3_ltx2.ltx2 import loader

    header, _ = _official_header(CONFIG_23)
    ckpt, _, problems = _run_our_loader(monkeypatch, dict(header), _config(CONFIG_23), "2.3.0", loader.COMPONENTS)
    assert not problems
    tr, tx, vv, av, vo = (ckpt.configs[c] for c in loader.COMPONENTS)
    assert (tr["num_layers"], tr["gated_attn"], tr["cross_attn_mod"], tr["use_prompt_embeddings"]) == (48, True, True, False)
    assert (tr["rope_type"], tr["rope_double_precision"], tr["cross_attn_timestep_scale_multiplier"]) == ("split", True, 1000.0)
    assert (tx["per_modality_projections"], tx["video_connector_num_layers"], tx["connector_rope_base_seq_len"]) == (True, 8, 4096)
    assert (tx["video_gated_attn"], tx["video_hidden_dim"], tx["audio_hidden_dim"]) == (True, 4096, 2048)
    assert vv["timestep_conditioning"] is False
    assert vv["decoder_spatial_padding_mode"] == "zeros"  # ltx-core: the file's spatial_padding_mode
    assert vv["upsample_type"] == ["spatiotemporal", "spatiotemporal", "temporal", "spatial"]
    assert vv["upsample_factor"] == [2, 2, 1, 2] and vv["decoder_block_out_channels"] == [256, 512, 512, 1024]
    assert vv["block_out_channels"] == [256, 512, 1024, 1024] and vv["layers_per_block"] == [4, 6, 4, 2, 2]
    assert av["mid_block_add_attention"] is False and av["attn_resolutions"] == []
    assert vo["_class_name"] == "LTX2VocoderWithBWE" and vo["input_sampling_rate"] == 16000
    assert vo["output_sampling_rate"] == 48000 and vo["final_bias"] is False


def test_20_timestep_conditioned_vae_variant(monkeypatch):
    """The LTX-2.0 video-VAE metadata is not verified (see README): whether its decoder is timestep-conditioned
    is checked both ways, so a file with ``last_time_embedder`` / ``time_embedder`` tensors also maps."""
    cfg = _config(CONFIG_20)
    cfg["vae"]["timestep_conditioning"] = True
    name = "ltx-2-19b.tc.config.json"
    if name not in _HEADERS:
        parts = official_parts(cfg)
        header = {}
        for comp in ("video_decoder", "video_encoder"):
            module, ops, to_file = parts[comp]
            for k, t in module.state_dict().items():
                assert ltx_core_name(ops, to_file(k)) == k
                header[to_file(k)] = tuple(t.shape)
        _HEADERS[name] = (header, {})
    header = dict(_official_header(CONFIG_20)[0])
    header = {k: v for k, v in header.items() if not k.startswith("vae.")}
    header.update(_HEADERS[name][0])
    assert "vae.decoder.last_time_embedder.timestep_embedder.linear_1.weight" in header
    ckpt, fake, problems = _run_our_loader(monkeypatch, header, cfg, None, ("video_vae",))
    assert not problems, "\n".join(problems[:40])
    assert ckpt.configs["video_vae"]["timestep_conditioning"] is True
    vae_keys = {k for k in header if k.startswith("vae.")}
    assert set(fake.plans["LTX2VideoVAE"].values()) == vae_keys
