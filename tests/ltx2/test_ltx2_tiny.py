"""The embedded LTX-2.3 demo (``ltx2.tiny``): written once into the cache and reused, deterministic, in the
official formats (the checkpoint's key names and shapes, the upsampler and the LoRA are compared with what
Lightricks' ltx-core, the oracle, builds from the files' own configs; the tokenizer is read by
``sentencepiece`` itself), loaded by our loaders without any size passed, and ``ltx2.generate`` runs
one-stage, HQ (upsampler + LoRA) and distilled on it."""

from __future__ import annotations

import json

import pytest
import torch

from comfyui_cosmos3_ltx2.core.checkpoint import list_keys, safetensors_metadata
from comfyui_cosmos3_ltx2.ltx2 import generate, tiny
from comfyui_cosmos3_ltx2.ltx2.loader import load_distilled_lora, load_ltx2_checkpoint
from comfyui_cosmos3_ltx2.ltx2.text_encoding import load_gemma_text_encoder
from comfyui_cosmos3_ltx2.ltx2.upsampler import load_latent_upsampler
from helpers.ltx_oracle import ltx_core_importable, ltx_core_name, official_parts

FRAMES, SIZE, AUDIO_SAMPLES = 9, 64, 15840  # 9 frames at 24 fps: 9 audio latents, 33 mel frames x 160 x 3

needs_ltx_core = pytest.mark.skipif(not ltx_core_importable(), reason="ltx-core (the oracle) not importable")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def demo(cache):
    return tiny.default_demo(cache)


@pytest.fixture(scope="module")
def loaded(demo):
    pytest.importorskip("sentencepiece")
    return (load_ltx2_checkpoint(demo.checkpoint, dtype="fp32"),
            load_gemma_text_encoder(demo.text_encoder, dtype="fp32"))


# --------------------------------------------------------------------------------------------------
# Writing


def test_written_once_then_reused(demo, cache, monkeypatch):
    folder = tiny.cache_folder(cache)
    assert folder.parent == cache and folder.name.startswith(f"ltx2-tiny-random-v{tiny.DEMO_VERSION}-")
    assert all(p.is_file() and p.parent == folder for p in demo.files)
    assert sorted(p.name for p in cache.iterdir()) == [folder.name]  # no temporary folder left behind
    stamps = [p.stat().st_mtime_ns for p in demo.files]

    def no_write(*a, **k):
        raise AssertionError("the demo was written again")

    monkeypatch.setattr(tiny, "write_demo", no_write)
    assert tiny.default_demo(cache) == demo
    monkeypatch.setenv("COMFYUI_COSMOS3_LTX2_CACHE", str(cache))
    assert tiny.default_demo() == demo
    assert [p.stat().st_mtime_ns for p in demo.files] == stamps


def test_interrupted_or_incomplete_writes_are_redone(tmp_path, monkeypatch):
    calls = []

    def failing(folder, seed=0):
        tiny.LTX2Demo.in_folder(folder).checkpoint.parent.mkdir(parents=True)
        tiny.LTX2Demo.in_folder(folder).checkpoint.write_bytes(b"half")
        raise KeyboardInterrupt

    def fake(folder, seed=0):
        calls.append(folder)
        demo = tiny.LTX2Demo.in_folder(folder)
        demo.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        for p in demo.files:
            p.write_bytes(b"x")
        return demo

    monkeypatch.setattr(tiny, "write_demo", failing)
    with pytest.raises(KeyboardInterrupt):
        tiny.default_demo(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing that could pass for a finished demo
    # A finished folder that lost a file is written again (into a temporary folder, then renamed).
    folder = tiny.cache_folder(tmp_path)
    folder.mkdir()
    tiny.LTX2Demo.in_folder(folder).checkpoint.write_bytes(b"old")
    monkeypatch.setattr(tiny, "write_demo", fake)
    demo = tiny.default_demo(tmp_path)
    assert len(calls) == 1 and calls[0] != folder and calls[0].parent == tmp_path
    assert all(p.read_bytes() == b"x" for p in demo.files) and [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_same_seed_same_files(demo, tmp_path):
    """The same tensors, bit for bit, and the same metadata (safetensors may order the header differently)."""
    from safetensors.torch import load_file

    again = tiny.write_demo(tmp_path / "again", seed=0)
    for a, b in zip(demo.files, again.files):
        assert safetensors_metadata(a) == safetensors_metadata(b), a.name
        x, y = load_file(str(a)), load_file(str(b))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), a.name


# --------------------------------------------------------------------------------------------------
# Formats (oracle: ltx-core built from the files' own configs; sentencepiece)


@needs_ltx_core
def test_checkpoint_keys_and_shapes_are_ltx_cores(demo):
    """Every tensor of the checkpoint is one ltx-core builds from the file's metadata config (after its own
    single-file key operations), with its shape; nothing is missing. Only the text projections' input
    width differs: ltx-core fixes it to Gemma-3-12B's 3840 x 49, the demo's Gemma has 3840 x 2."""
    meta = safetensors_metadata(demo.checkpoint)
    assert meta["model_version"] == "2.3.0"
    cfg = json.loads(meta["config"])
    header = {k: shape for k, (_, shape, _) in list_keys([demo.checkpoint]).items()}
    official = {}
    for _, (module, ops, to_file) in official_parts(cfg).items():
        for k, t in module.state_dict().items():
            assert ltx_core_name(ops, to_file(k)) == k
            official[to_file(k)] = tuple(t.shape)
    assert set(header) == set(official)
    differ = {k: (header[k], official[k]) for k in header if tuple(header[k]) != official[k]}
    p = "text_embedding_projection."
    assert differ == {p + "video_aggregate_embed.weight": ((64, 7680), (64, 188160)),
                      p + "audio_aggregate_embed.weight": ((32, 7680), (32, 188160))}
    # ComfyUI's native LTX code hard-codes these widths: video latent 128, audio 8 x 16 (128 statistics)
    d = "model.diffusion_model."
    assert header[d + "patchify_proj.weight"][1] == header[d + "audio_patchify_proj.weight"][1] == 128
    assert header["audio_vae.per_channel_statistics.mean-of-means"] == (128,)
    assert cfg["audio_vae"]["model"]["params"]["ddconfig"]["z_channels"] == 8


@needs_ltx_core
def test_upsampler_and_lora_match_ltx_core(demo):
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator

    up_cfg = json.loads(safetensors_metadata(demo.upsampler)["config"])
    with torch.device("meta"):
        up = LatentUpsamplerConfigurator.from_config(up_cfg)
        dit = LTXModelConfigurator.from_config(json.loads(safetensors_metadata(demo.checkpoint)["config"]))
    want = {k: tuple(t.shape) for k, t in up.state_dict().items()}
    assert {k: tuple(s) for k, (_, s, _) in list_keys([demo.upsampler]).items()} == want
    # LoRA: diffusion_model.<ltx-core module>.lora_A [r, in] / lora_B [out, r] for each linear weight
    params = {k: tuple(t.shape) for k, t in dit.state_dict().items()}
    lora = {k: s for k, (_, s, _) in list_keys([demo.lora]).items()}
    assert lora and len(lora) % 2 == 0
    for key, shape in lora.items():
        assert key.startswith("diffusion_model.") and key.endswith((".lora_A.weight", ".lora_B.weight")), key
        out_f, in_f = params[key[len("diffusion_model."):-len(".lora_A.weight")] + ".weight"]
        assert shape == ((tiny.LORA_RANK, in_f) if ".lora_A." in key else (out_f, tiny.LORA_RANK)), key


def test_tokenizer_is_a_sentencepiece_model():
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_proto=tiny.spiece_model())
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (0, 1, 2, 3)  # Gemma's ids
    assert sp.id_to_piece(2) == "<bos>" and sp.is_control(4) and sp.get_piece_size() == len(tiny._pieces())
    for text in ("a cat walks on the beach", "Ünïcödé ☃ 123", "two  spaces"):
        ids = sp.encode(text)
        assert sp.decode(ids) == text
    assert [sp.id_to_piece(i) for i in sp.encode("a b")] == ["a", "\u2581", "b"]
    assert [sp.id_to_piece(i) for i in sp.encode("é")] == ["<0xC3>", "<0xA9>"]  # byte fallback


# --------------------------------------------------------------------------------------------------
# Loading and generating


def test_loads_through_our_loaders_without_sizes(demo, loaded):
    from comfyui_cosmos3_ltx2.ltx2.gemma_file import SentencePieceGemmaTokenizer
    from comfyui_cosmos3_ltx2.ltx2.vocoder import LTX2VocoderWithBWE

    ck, gemma = loaded
    assert ck.version == "2.3" and ck.layout == "single_file"
    tc = ck.transformer.config
    assert (tc["in_channels"], tc["audio_in_channels"], tc["num_layers"]) == (128, 128, tiny.NUM_LAYERS)
    assert tc["gated_attn"] and tc["cross_attn_mod"] and tc["rope_type"] == "split"
    assert ck.connectors.is_v2
    assert isinstance(ck.vocoder, LTX2VocoderWithBWE) and ck.vocoder.sampling_rate == 48000
    assert (ck.audio_vae.latent_channels, ck.audio_vae.mel_bins, ck.video_vae.latent_channels) == (8, 64, 128)
    assert (gemma.hidden_size, gemma.num_hidden_states) == (tiny.GEMMA_WIDTH, tiny.GEMMA_LAYERS + 1)
    assert isinstance(gemma.tokenizer, SentencePieceGemmaTokenizer)
    ids, mask = gemma.tokenize("  a cat ")
    assert ids.shape == (1, 1024) and int(mask.sum()) == 6 and ids[0, -6] == 2  # left padding, <bos> first
    states, _ = gemma.encode("a cat")
    assert len(states) == 2 and all(torch.isfinite(s).all() for s in states)

    up = load_latent_upsampler(demo.upsampler, dtype=torch.float32)
    x = torch.randn(1, 128, 2, 2, 3)
    assert up(x).shape == (1, 128, 2, 4, 6)

    before = {k: v.clone() for k, v in ck.transformer.state_dict().items()}
    handle = load_distilled_lora(ck.transformer, demo.lora, strength=1.0)
    changed = [k for k, v in ck.transformer.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) == len(list_keys([demo.lora])) // 2
    handle.remove()
    assert all(torch.equal(v, before[k]) for k, v in ck.transformer.state_dict().items())


def _check(frames, wave, rate, size=SIZE):
    assert frames.shape == (FRAMES, size, size, 3) and torch.isfinite(frames).all()
    assert 0 <= float(frames.min()) and float(frames.max()) <= 1 and float(frames.std()) > 0.05
    assert wave.shape == (2, AUDIO_SAMPLES) and torch.isfinite(wave).all() and rate == 48000
    assert 0 < float(wave.abs().max()) < 1  # quiet noise, not clipped


def test_generate_one_stage_from_the_paths(demo):
    """As a user calls it: the file paths, default dtype and the official one-stage guidance (STG block 28)."""
    pytest.importorskip("sentencepiece")
    frames, wave, rate = generate(demo.checkpoint, demo.text_encoder, "a cat walks on the beach", "blurry",
                                  width=SIZE, height=SIZE, num_frames=FRAMES, steps=2, seed=1, device="cpu")
    _check(frames, wave, rate)


def test_generate_hq_and_distilled(demo, loaded):
    ck, gemma = loaded
    kw = dict(width=SIZE, height=SIZE, num_frames=FRAMES, seed=3, device="cpu", dtype="fp32",
              upsampler=demo.upsampler)
    steps = []
    hq = generate(ck, gemma, "a cat", "blurry", pipeline="hq", steps=2, distilled_lora=demo.lora,
                  callback=steps.append, **kw)
    _check(*hq)
    assert [s["stage"] for s in steps] == ["stage1"] * 2 + ["stage2"] * 3
    distilled = generate(ck, gemma, "a cat", pipeline="distilled", **kw)
    _check(*distilled)
    assert not torch.equal(hq[0], distilled[0])
