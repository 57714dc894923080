"""Gemma-3 text encoder from a single safetensors file (ComfyUI's gemma_3_12B_it.safetensors layout).

A tiny random Gemma-3 is saved as a Hugging Face folder (read by the folder loader) and as single files in
ComfyUI's layout (text weights under ``model.``, vision junk, the SentencePiece model as a uint8
``spiece_model`` tensor) and in transformers' ``model.language_model.`` / ``language_model.model.`` layouts.
Both tokenizers come from one trained SentencePiece model, so the single file must give bit-identical hidden
states and masks to the folder loader.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

spm = pytest.importorskip("sentencepiece")

from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError  # noqa: E402
from comfyui_cosmos3_ltx2.ltx2 import gemma_file, text_encoding  # noqa: E402
from helpers.sentencepiece_model import train_spm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_LEN = 48
PROMPTS = ["  a cat walks on the beach at sunset  ", "the quick brown fox\tjumps", "Ünïcödé 123 ☃",
           "<start_of_turn>user\na red car<end_of_turn>", "<bos>x<eos> <mask><unk>", ""]
_CORPUS = ["a cat walks on the beach at sunset, waves roll in", "the quick brown fox jumps over the lazy dog",
           "a red car drives through the rainy city at night", "Unicode 12345 ca  double  spaces"] * 30


def _train_spm() -> bytes:
    return train_spm(_CORPUS, 360, remove_extra_whitespaces=False, split_digits=True,
                     allow_whitespace_only_pieces=True, user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
                     control_symbols=["<mask>"])


def _hf_tokenizer(proto: bytes):
    """The Hugging Face Gemma tokenizer of the same SentencePiece model (vocab + score-ordered merges, as
    transformers' Gemma converter builds it, and the BOS template of Gemma's tokenizer.json)."""
    import transformers
    from tokenizers import AddedToken, processors
    from transformers.tokenization_utils_base import generate_merges

    sp = spm.SentencePieceProcessor(model_proto=proto)
    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    merges = generate_merges(vocab, {sp.id_to_piece(i): sp.get_score(i) for i in range(n)})
    tok = transformers.GemmaTokenizer(vocab=vocab, merges=merges)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in ("<start_of_turn>", "<end_of_turn>")])
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)])
    return tok


def _gemma3(text_kw: dict, seed: int):
    import transformers

    text = transformers.Gemma3TextConfig(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
        head_dim=16, max_position_embeddings=2048, pad_token_id=0, eos_token_id=1, bos_token_id=2, **text_kw)
    vision = transformers.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=28, patch_size=14)
    cfg = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=1,
                                    boi_token_index=7, eoi_token_index=8, image_token_index=9)
    torch.manual_seed(seed)
    model = transformers.Gemma3ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # Gemma's RMSNorm weights start at 0; make them matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.5)
    return model


# Gemma-3-12B's settings at a tiny size: 6 layers, every 6th full attention, query_pre_attn_scalar = head_dim.
_12B_LIKE = dict(num_hidden_layers=6, query_pre_attn_scalar=16, sliding_window=1024,
                 rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                                  "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
                 layer_types=["sliding_attention"] * 5 + ["full_attention"])
# Different settings, only reachable through the metadata config (sliding window shorter than the prompt).
_OTHER = dict(num_hidden_layers=3, query_pre_attn_scalar=24, sliding_window=4,
              rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 5e5},
                               "sliding_attention": {"rope_type": "default", "rope_theta": 1e3}},
              layer_types=["sliding_attention", "full_attention", "sliding_attention"])


def _text_weights(model, prefix: str) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    src = "model.language_model."
    return {prefix + k[len(src):]: v.clone() for k, v in sd.items() if k.startswith(src)}


def _comfy_file(path: Path, model, proto: bytes | None, *, config: dict | None = None, extra=None) -> Path:
    tensors = _text_weights(model, "model.")
    sd = model.state_dict()
    # ComfyUI names the vision parts differently; they must be ignored.
    patch = next(k for k in sd if k.endswith("patch_embedding.weight"))
    proj = next(k for k in sd if k.endswith("mm_input_projection_weight"))
    tensors["vision_model.embeddings.patch_embedding.weight"] = sd[patch].clone()
    tensors["multi_modal_projector.mm_input_projection_weight"] = sd[proj].clone()
    if proto is not None:
        tensors["spiece_model"] = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    tensors.update(extra or {})
    save_file(tensors, str(path), metadata={"config": json.dumps(config)} if config is not None else None)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    proto = _train_spm()
    root = tmp_path_factory.mktemp("gemma_file")
    (root / "tokenizer.model").write_bytes(proto)
    hf_tok = _hf_tokenizer(proto)
    out = {"root": root, "proto": proto, "hf_tok": hf_tok}
    for name, kw, seed in (("like12b", _12B_LIKE, 0), ("other", _OTHER, 1)):
        model = _gemma3(kw, seed)
        folder = root / name
        model.save_pretrained(folder)
        hf_tok.save_pretrained(folder)
        out[name] = (folder, model)
    return out


def _same_encoding(a, b, prompts=PROMPTS):
    for p in (prompts[0], prompts):  # one prompt, and all of them as a batch
        sa, ma = a.encode(p)
        sb, mb = b.encode(p)
        assert torch.equal(ma, mb)
        assert len(sa) == len(sb)
        for x, y in zip(sa, sb):
            assert x.dtype == y.dtype and torch.equal(x, y)
    ids_a, mask_a = a.tokenize(prompts)
    ids_b, mask_b = b.tokenize(prompts)
    assert torch.equal(ids_a, ids_b) and torch.equal(mask_a, mask_b)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_comfy_layout_matches_folder(setup, tmp_path, dtype):
    folder, model = setup["like12b"]
    file = _comfy_file(tmp_path / "gemma_3_12B_it.safetensors", model, setup["proto"])
    single = text_encoding.load_gemma_text_encoder(file, device="cpu", dtype=dtype, max_length=MAX_LEN)
    ref = text_encoding.load_gemma_text_encoder(folder, device="cpu", dtype=dtype, max_length=MAX_LEN)
    assert isinstance(single, text_encoding.GemmaTextEncoder)
    assert isinstance(single.tokenizer, gemma_file.SentencePieceGemmaTokenizer)
    assert (single.hidden_size, single.num_hidden_states) == (32, 7)
    assert single.dtype == ref.dtype and single.device == torch.device("cpu")
    # The config came from the tensor shapes + Gemma-3-12B's settings.
    cfg = single.model.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size,
            cfg.vocab_size, cfg.query_pre_attn_scalar, cfg.sliding_window) == (2, 1, 16, 64, 512, 16, 1024)
    assert list(cfg.layer_types) == list(ref.model.config.text_config.layer_types)
    _same_encoding(single, ref)
    # Buffers rebuilt after the meta build equal the ones from_pretrained makes.
    ref_inner = ref.model.model.language_model
    for name, buf in single.model.named_buffers():
        other = dict(ref_inner.named_buffers())[name]
        assert buf.dtype == other.dtype and torch.equal(buf, other), name


def test_tokenization_matches_hf(setup, tmp_path):
    folder, model = setup["like12b"]
    file = _comfy_file(tmp_path / "g.safetensors", model, setup["proto"])
    enc = text_encoding.load_gemma_text_encoder(file, device="cpu", dtype="fp32", max_length=16)
    hf = setup["hf_tok"]
    hf.padding_side = "left"
    for p in PROMPTS + ["the quick brown fox " * 20]:
        ids, mask = enc.tokenize(p)
        want = hf([p.strip()], padding="max_length", max_length=16, truncation=True, return_tensors="pt")
        assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"]), p
        n = int(mask.sum())
        assert ids[0, 16 - n] == 2 and (ids[0, : 16 - n] == 0).all() and not mask[0, : 16 - n].any()  # BOS, left pad
        assert 1 not in ids[0, 16 - n + 1:].tolist() or "<eos>" in p  # no EOS appended
    long_ids, long_mask = enc.tokenize("the quick brown fox " * 20)
    assert long_mask.all() and long_ids[0, 0] == 2  # truncated at the end, BOS kept
    assert enc.tokenizer.decode(enc.tokenize("a red car")[0][0], skip_special_tokens=True) == "a red car"


def test_metadata_config_and_transformers_layouts(setup, tmp_path):
    folder, model = setup["other"]
    ref = text_encoding.load_gemma_text_encoder(folder, device="cpu", dtype="fp32", max_length=MAX_LEN)
    text_cfg = model.config.text_config.to_dict()
    # ComfyUI layout with the text config in the metadata (the tensor shapes alone would give other settings).
    file = _comfy_file(tmp_path / "meta.safetensors", model, setup["proto"], config=text_cfg)
    enc = text_encoding.load_gemma_text_encoder(file, device="cpu", dtype="fp32", max_length=MAX_LEN)
    assert enc.model.config.sliding_window == 4 and enc.model.config.query_pre_attn_scalar == 24
    _same_encoding(enc, ref)
    # A full Gemma3Config in the metadata works too.
    file = _comfy_file(tmp_path / "meta_full.safetensors", model, setup["proto"], config=model.config.to_dict())
    _same_encoding(text_encoding.load_gemma_text_encoder(file, device="cpu", dtype="fp32", max_length=MAX_LEN), ref)

    # transformers 4 layout (language_model.model.*, what save_pretrained writes): a folder's own
    # model.safetensors, no metadata config (so Gemma-3-12B's settings), tokenizer found beside it.
    folder12, _ = setup["like12b"]
    assert gemma_file.find_text_prefix(load_file(str(folder12 / "model.safetensors"))) == "language_model.model."
    enc = text_encoding.load_gemma_text_encoder(folder12 / "model.safetensors", device="cpu", dtype="fp32", max_length=MAX_LEN)
    _same_encoding(enc, text_encoding.load_gemma_text_encoder(folder12, device="cpu", dtype="fp32", max_length=MAX_LEN))
    # ... with a text config in the metadata, tokenizer given as the .model file.
    sub = tmp_path / "tf"
    sub.mkdir()
    save_file(load_file(str(folder / "model.safetensors")), str(sub / "gemma4x.safetensors"),
              metadata={"config": json.dumps(text_cfg)})
    enc = text_encoding.load_gemma_text_encoder(sub / "gemma4x.safetensors", device="cpu", dtype="fp32",
                                         max_length=MAX_LEN, tokenizer=setup["root"] / "tokenizer.model")
    _same_encoding(enc, ref)
    # transformers 5 names (model.language_model.*, the in-memory state dict), full config in the metadata,
    # tokenizer given as a folder.
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert gemma_file.find_text_prefix(sd) == "model.language_model."
    save_file(sd, str(sub / "gemma5x.safetensors"), metadata={"config": json.dumps(model.config.to_dict())})
    enc = text_encoding.load_gemma_text_encoder(sub / "gemma5x.safetensors", device="cpu", dtype="fp32",
                                         max_length=MAX_LEN, tokenizer=folder)
    _same_encoding(enc, ref)
    # tokenizer= also overrides the folder's tokenizer.
    enc = text_encoding.load_gemma_text_encoder(folder, device="cpu", dtype="fp32", max_length=MAX_LEN,
                                         tokenizer=setup["root"] / "tokenizer.model")
    assert isinstance(enc.tokenizer, gemma_file.SentencePieceGemmaTokenizer)
    _same_encoding(enc, ref)


def test_tokenizer_beside_file(setup, tmp_path):
    folder, model = setup["like12b"]
    file = _comfy_file(tmp_path / "gemma.safetensors", model, None)  # no spiece_model
    (tmp_path / "tokenizer.model").write_bytes(setup["proto"])
    enc = text_encoding.load_gemma_text_encoder(file, device="cpu", dtype="fp32", max_length=MAX_LEN)
    ref = text_encoding.load_gemma_text_encoder(folder, device="cpu", dtype="fp32", max_length=MAX_LEN)
    _same_encoding(enc, ref)
    # A lone tokenizer.json (no tokenizer_config.json) beside the file works too.
    other = tmp_path / "json"
    other.mkdir()
    _comfy_file(other / "gemma.safetensors", model, None)
    (other / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    _same_encoding(text_encoding.load_gemma_text_encoder(other / "gemma.safetensors", device="cpu", dtype="fp32",
                                                  max_length=MAX_LEN), ref)


def test_errors(setup, tmp_path):
    folder, model = setup["like12b"]
    kw = dict(device="cpu", dtype="fp32")
    with pytest.raises(CheckpointError, match="no such file or folder"):
        text_encoding.load_gemma_text_encoder(tmp_path / "nothing.safetensors", **kw)
    # Not Gemma: an LTX-2 checkpoint given by mistake, and a T5.
    save_file({"model.diffusion_model.patchify_proj.weight": torch.zeros(2, 2)}, str(tmp_path / "ltx.safetensors"))
    with pytest.raises(CheckpointError, match="not a Gemma-3 text encoder.*LTX-2 model checkpoint"):
        text_encoding.load_gemma_text_encoder(tmp_path / "ltx.safetensors", **kw)
    save_file({"encoder.block.0.layer.0.SelfAttention.k.weight": torch.zeros(2, 2)}, str(tmp_path / "t5.safetensors"))
    with pytest.raises(CheckpointError, match="not a Gemma-3 text encoder.*T5"):
        text_encoding.load_gemma_text_encoder(tmp_path / "t5.safetensors", **kw)
    # Missing tokenizer (no spiece_model and nothing beside the file).
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    _comfy_file(lonely / "gemma.safetensors", model, None)
    with pytest.raises(CheckpointError, match="no tokenizer.*spiece_model.*tokenizer="):
        text_encoding.load_gemma_text_encoder(lonely / "gemma.safetensors", **kw)
    # fp8 (tests/ltx2/test_ltx2_gemma_fp8.py has the scaled fp8 files): unscaled float8 weights are widened at
    # load; a scale on a weight that is not fp8 codes, and an nvfp4 layer, are refused.
    w = _text_weights(model, "model.")
    f8 = {k: (v.to(torch.float8_e4m3fn) if k.endswith("proj.weight") else v) for k, v in w.items()}
    save_file(f8, str(tmp_path / "f8.safetensors"), metadata={"config": json.dumps(model.config.text_config.to_dict())})
    enc = text_encoding.load_gemma_text_encoder(tmp_path / "f8.safetensors",
                                                tokenizer=setup["root"] / "tokenizer.model", **kw)
    q = enc.model.layers[0].self_attn.q_proj
    assert type(q) is torch.nn.Linear and torch.equal(q.weight, f8["model.layers.0.self_attn.q_proj.weight"].float())
    _comfy_file(tmp_path / "scaled.safetensors", model, setup["proto"],
                extra={"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn),
                       "model.layers.0.self_attn.q_proj.scale_weight": torch.ones(1)})
    with pytest.raises(CheckpointError, match=r"scaled\.safetensors: a quantized Gemma-3 .*F32 weight with a scale"):
        text_encoding.load_gemma_text_encoder(tmp_path / "scaled.safetensors", **kw)
    _comfy_file(tmp_path / "nvfp4.safetensors", model, setup["proto"],
                extra={"model.layers.0.self_attn.q_proj.weight_scale_2": torch.ones(()),
                       "model.layers.0.self_attn.q_proj.weight_scale": torch.ones(1)})
    with pytest.raises(CheckpointError, match=r"nvfp4\.safetensors: a quantized Gemma-3 file .*NVFP4.*bf16.*fp8"):
        text_encoding.load_gemma_text_encoder(tmp_path / "nvfp4.safetensors", **kw)
    # Missing tensors: a layer's weight, and a whole middle layer.
    _comfy_file(tmp_path / "incomplete.safetensors", model, setup["proto"])
    sd = load_file(str(tmp_path / "incomplete.safetensors"))
    sd.pop("model.layers.2.mlp.up_proj.weight")
    save_file(sd, str(tmp_path / "incomplete.safetensors"))
    with pytest.raises(CheckpointError, match=r"incomplete\.safetensors.*missing keys.*layers\.2\.mlp\.up_proj"):
        text_encoding.load_gemma_text_encoder(tmp_path / "incomplete.safetensors", **kw)
    sd = {k: v for k, v in sd.items() if not k.startswith("model.layers.3.")}
    save_file(sd, str(tmp_path / "gap.safetensors"))
    with pytest.raises(CheckpointError, match="layer 3 is missing"):
        text_encoding.load_gemma_text_encoder(tmp_path / "gap.safetensors", **kw)
    # Wrong metadata config.
    _comfy_file(tmp_path / "llama.safetensors", model, setup["proto"], config={"model_type": "llama"})
    with pytest.raises(CheckpointError, match="'llama' model, not Gemma-3"):
        text_encoding.load_gemma_text_encoder(tmp_path / "llama.safetensors", **kw)
    # A tokenizer path that does not exist.
    good = _comfy_file(tmp_path / "good.safetensors", model, setup["proto"])
    with pytest.raises(CheckpointError, match="no such tokenizer"):
        text_encoding.load_gemma_text_encoder(good, tokenizer=tmp_path / "nope.model", **kw)
    (tmp_path / "bad.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(CheckpointError, match="not a valid SentencePiece model"):
        text_encoding.load_gemma_text_encoder(good, tokenizer=tmp_path / "bad.model", **kw)


def test_sentencepiece_missing(setup, tmp_path, monkeypatch):
    _, model = setup["like12b"]
    file = _comfy_file(tmp_path / "g.safetensors", model, setup["proto"])
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(CheckpointError, match="pip install sentencepiece"):
        text_encoding.load_gemma_text_encoder(file, device="cpu", dtype="fp32")


def _gemma3_12b_header() -> dict:
    """list_keys()-style entries of ComfyUI's gemma_3_12B_it.safetensors (text part, some vision, tokenizer)."""
    f, H, L, D, Q, KV, FF, V = Path("gemma_3_12B_it.safetensors"), 3840, 48, 256, 16 * 256, 8 * 256, 15360, 262208
    keys = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "spiece_model": (4_689_074,),
            "vision_model.embeddings.patch_embedding.weight": (1152, 3, 14, 14),
            "multi_modal_projector.mm_input_projection_weight": (1152, H)}
    for i in range(L):
        p = f"model.layers.{i}."
        keys.update({p + "self_attn.q_proj.weight": (Q, H), p + "self_attn.k_proj.weight": (KV, H),
                     p + "self_attn.v_proj.weight": (KV, H), p + "self_attn.o_proj.weight": (H, Q),
                     p + "self_attn.q_norm.weight": (D,), p + "self_attn.k_norm.weight": (D,),
                     p + "mlp.gate_proj.weight": (FF, H), p + "mlp.up_proj.weight": (FF, H),
                     p + "mlp.down_proj.weight": (H, FF)})
        for n in ("input", "post_attention", "pre_feedforward", "post_feedforward"):
            keys[p + f"{n}_layernorm.weight"] = (H,)
    return {k: (f, s, "U8" if k == "spiece_model" else "BF16") for k, s in keys.items()}


def test_gemma3_12b_config_and_names_from_header():
    """The 12B config read from ComfyUI's tensor names and shapes, and those names covering exactly the
    parameters of transformers' Gemma3TextModel (built on meta, nothing allocated)."""
    import transformers

    keys = _gemma3_12b_header()
    assert gemma_file.find_text_prefix(keys) == "model."
    cfg = gemma_file.gemma_text_config(Path("gemma_3_12B_it.safetensors"), keys, {})
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
            cfg.intermediate_size, cfg.vocab_size) == (3840, 48, 16, 8, 256, 15360, 262208)
    assert cfg.query_pre_attn_scalar == 256 and cfg.sliding_window == 1024 and cfg.rms_norm_eps == 1e-6
    assert cfg.hidden_activation == "gelu_pytorch_tanh"
    full = [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"]
    assert full == list(range(5, 48, 6))
    rope = getattr(cfg, "rope_parameters", None)
    if rope is not None:  # transformers 5
        assert rope["full_attention"]["rope_theta"] == 1e6 and rope["full_attention"]["rope_type"] == "linear"
        assert rope["full_attention"]["factor"] == 8.0
        assert rope["sliding_attention"]["rope_theta"] == 1e4 and rope["sliding_attention"]["rope_type"] == "default"
    with torch.device("meta"):
        model = transformers.Gemma3TextModel(cfg)
    want = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    kmap = gemma_file.text_key_map("model.")
    got = {kmap(k): s for k, (_, s, _) in keys.items() if kmap(k) is not None}
    assert got == want
