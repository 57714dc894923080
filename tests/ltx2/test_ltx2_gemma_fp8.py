"""fp8 Gemma-3 text encoders (LTX-2.3's ``gemma_3_12B_it_fp8_scaled.safetensors``) from one safetensors file.

A tiny random Gemma-3 (transformers' ``Gemma3TextModel``) is written in ComfyUI's single-file layout (text weights
under ``model.``, a vision tensor, the SentencePiece model as ``spiece_model``) with its decoder layers' Linear
weights as scaled fp8 in ComfyUI's three forms: per-layer ``comfy_quant`` + ``weight_scale``, the
``_quantization_metadata`` header table, and the older ``scaled_fp8`` marker + ``scale_weight``. The oracle is the
same transformers model with each Linear weight replaced by codes x scale: the loaded encoder must give its hidden
states (to float rounding), and stay within the fp8 error of the full-precision model.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

spm = pytest.importorskip("sentencepiece")

from comfyui_cosmos3_ltx2.core import quant  # noqa: E402
from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError  # noqa: E402
from comfyui_cosmos3_ltx2.ltx2 import gemma_file, text_encoding  # noqa: E402
from helpers.measures import rel  # noqa: E402
from helpers.sentencepiece_model import train_spm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_LEN = 24
PROMPTS = ["a cat walks on the beach at sunset", "the quick brown fox jumps over the lazy dog"]
_CORPUS = ["a cat walks on the beach at sunset, waves roll in", "the quick brown fox jumps over the lazy dog",
           "a red car drives through the rainy city at night"] * 30
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _train_spm() -> bytes:
    return train_spm(_CORPUS, 300)


def _gemma3_text():
    import transformers

    cfg = transformers.Gemma3TextConfig(
        vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32, sliding_window=8,
        max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"])
    torch.manual_seed(0)
    model = transformers.Gemma3TextModel(cfg).eval()
    with torch.no_grad():  # Gemma's RMSNorm weights start at 0; make them matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.5)
    return model


def _comfy_quant(conf: dict) -> torch.Tensor:
    return torch.tensor(list(json.dumps(conf).encode()), dtype=torch.uint8)


def _is_linear(key: str) -> bool:
    return key.startswith("model.layers.") and key.endswith(tuple(f"{n}.weight" for n in LINEARS))


def _quantize(sd: dict, form: str, embed: bool = False) -> dict:
    """ComfyUI's scaled fp8 (per-tensor scale = max|w| / 448) of the decoder Linear weights (and of the
    embedding when ``embed``), in ``form`` "comfy_quant", "metadata" or "legacy"."""
    out = dict(sd)
    if form == "legacy":
        out["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    for k, v in sd.items():
        if not (_is_linear(k) or (embed and k == "model.embed_tokens.weight")):
            continue
        layer = k[: -len(".weight")]
        codes, scale = quant.quantize_fp8(v)
        out[k] = codes
        if form == "legacy":
            out[layer + ".scale_weight"] = scale.reshape(1)
            out[layer + ".scale_input"] = torch.ones(1)
        else:
            out[layer + ".weight_scale"] = scale
            out[layer + ".input_scale"] = torch.ones(())
            if form == "comfy_quant":
                out[layer + ".comfy_quant"] = _comfy_quant({"format": "float8_e4m3fn"})
    return out


def _write(path, text_sd: dict, proto: bytes, *, form: str | None = None, embed: bool = False, config=None,
           extra: dict | None = None):
    tensors = {"model." + k: v.clone().contiguous() for k, v in text_sd.items()}
    if form is not None:
        tensors = _quantize(tensors, form, embed)
    # A vision tensor, quantized too: ignored with its scales.
    vision = "vision_model.encoder.layers.0.self_attn.q_proj"
    vcodes, vscale = quant.quantize_fp8(torch.randn(16, 16))
    tensors[vision + ".weight"] = vcodes
    tensors[vision + ".weight_scale"] = vscale
    tensors[vision + ".comfy_quant"] = _comfy_quant({"format": "float8_e4m3fn"})
    tensors["spiece_model"] = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    tensors.update(extra or {})
    meta = {"config": json.dumps(config)}
    if form == "metadata":
        layers = {k[: -len(".weight")]: {"format": "float8_e4m3fn"} for k in tensors
                  if k.endswith(".weight") and tensors[k].dtype == torch.float8_e4m3fn}
        meta["_quantization_metadata"] = json.dumps({"format_version": "1.0", "layers": layers})
    save_file(tensors, str(path), metadata=meta)
    return path


def _oracle(model, text_sd: dict, fp8: dict, proto: bytes):
    """The transformers model (fp32) with every quantized weight replaced by its codes x scale."""
    import transformers

    ref = transformers.Gemma3TextModel(model.config).eval()
    sd = {k: v.float() for k, v in text_sd.items()}
    for name, (codes, scale) in fp8.items():
        sd[name] = quant.dequantize(codes, scale, torch.float32)
    ref.load_state_dict(sd)
    return text_encoding.GemmaTextEncoder(ref, gemma_file.SentencePieceGemmaTokenizer(proto), max_length=MAX_LEN)


def _states(enc, prompts=PROMPTS) -> torch.Tensor:
    hidden, mask = enc.encode(prompts)
    m = mask.bool()[..., None]
    return torch.stack([h.float() * m for h in hidden])  # every hidden state, padding zeroed


def _rms_rel(a, b) -> float:
    """||a - b|| / ||b|| in float64 (b is the reference)."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def _near_full(got: torch.Tensor, full: torch.Tensor, embedding: float) -> None:
    """fp8 weights against the full-precision model. Each weight's e4m3 rounding is ~2.7% RMS (under core.quant's
    2**-4 / sqrt(3) bound); each decoder layer adds seven such layers, and the sandwich norms pass a branch's
    relative error on whole, so the hidden states drift by (measured, the three layers) 6.4%, 8.9% and 10.1% RMS
    (max error 0.115 of the largest value). The embedding output (state 0) has the embedding's own rounding:
    ``embedding`` (0 for fp32, 0.0017 for bf16, 0.027 for fp8 embeddings, measured)."""
    emb = _rms_rel(got[0], full[0])
    assert emb == embedding == 0.0 or 0.5 * embedding <= emb <= 1.5 * embedding, emb
    for i, want in ((1, 0.064), (2, 0.089), (3, 0.101)):
        err = _rms_rel(got[i], full[i])
        assert 0.5 * want <= err <= 1.5 * want, (i, err)
    assert rel(got, full) < 0.2


@pytest.fixture(scope="module")
def setup():
    proto = _train_spm()
    model = _gemma3_text()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    full = text_encoding.GemmaTextEncoder(model, gemma_file.SentencePieceGemmaTokenizer(proto), max_length=MAX_LEN)
    return {"proto": proto, "model": model, "sd": sd, "full": _states(full), "config": model.config.to_dict()}


def _check_layers(enc, dtype: torch.dtype):
    m = enc.model
    quantized = {n for n, s in m.named_modules() if isinstance(s, quant.QuantLinear)}
    assert quantized == {f"layers.{i}.{'self_attn' if p.endswith('_proj') and p[0] in 'qkvo' else 'mlp'}.{p}"
                         for i in range(3) for p in LINEARS}
    for n in quantized:
        sub = m.get_submodule(n)
        assert sub.weight.dtype == torch.float8_e4m3fn and sub.weight_scale.dtype == torch.float32
    for n, p in m.named_parameters():
        if not n.endswith("proj.weight"):
            assert p.dtype == dtype, n  # embeddings and norms in the compute dtype
    assert enc.dtype == dtype and m.embed_tokens.weight.dtype == dtype


@pytest.mark.parametrize("form", ["comfy_quant", "metadata", "legacy"])
def test_comfy_fp8_file(setup, tmp_path, form):
    sd, proto = setup["sd"], setup["proto"]
    embed = form == "comfy_quant"  # one file with an fp8 embedding too (widened at load)
    file = _write(tmp_path / "gemma_3_12B_it_fp8_scaled.safetensors", sd, proto, form=form, embed=embed,
                  config=setup["config"])
    enc = text_encoding.load_gemma_text_encoder(file, device="cpu", dtype="fp32", max_length=MAX_LEN)
    _check_layers(enc, torch.float32)
    fp8 = {k: quant.quantize_fp8(v) for k, v in sd.items()
           if _is_linear("model." + k) or (embed and k == "embed_tokens.weight")}
    for k, (codes, scale) in fp8.items():  # the codes and scales of the file, as they were written
        if k == "embed_tokens.weight":
            assert torch.equal(enc.model.embed_tokens.weight, quant.dequantize(codes, scale, torch.float32))
        else:
            sub = enc.model.get_submodule(k[: -len(".weight")])
            assert torch.equal(sub.weight.view(torch.uint8), codes.view(torch.uint8))
            assert torch.equal(sub.weight_scale.reshape(()), scale)
            assert sub.fp8_matmul  # (the legacy marker has 0 elements: fp8 matmul allowed)
    got = _states(enc)
    want = _states(_oracle(setup["model"], sd, fp8, proto))
    assert rel(got, want) < 1e-6  # the same weights: only float rounding (measured: 0.0, the same ops)
    _near_full(got, setup["full"], 0.027 if embed else 0.0)


def test_fp8_file_bf16_compute(setup, tmp_path):
    """Default dtype (bf16): codes stay fp8, everything else bf16; close to the fp32 dequantized oracle. ``.to``
    a device keeps the codes fp8."""
    sd, proto = setup["sd"], setup["proto"]
    file = _write(tmp_path / "g.safetensors", sd, proto, form="comfy_quant", config=setup["config"])
    enc = text_encoding.load_gemma_text_encoder(file, device="cpu", max_length=MAX_LEN)
    _check_layers(enc, torch.bfloat16)
    enc.model.to(torch.device("cpu"))
    assert enc.model.layers[0].self_attn.q_proj.weight.dtype == torch.float8_e4m3fn
    fp8 = {k: quant.quantize_fp8(v) for k, v in sd.items() if _is_linear("model." + k)}
    want = _states(_oracle(setup["model"], sd, fp8, proto))
    got = _states(enc)
    assert rel(got, want) < 0.03 and _rms_rel(got, want) < 0.03  # bf16 activations (measured 0.0134 and 0.0136)
    # dtype=None: the file's high-precision dtype (fp32 here); with an fp8 embedding, bf16 (never a float8 type)
    model, _ = gemma_file.load_gemma_single_file(file, dtype=None)
    assert model.embed_tokens.weight.dtype == torch.float32 and model.norm.weight.dtype == torch.float32
    file = _write(tmp_path / "e.safetensors", sd, proto, form="comfy_quant", embed=True, config=setup["config"])
    model, _ = gemma_file.load_gemma_single_file(file, dtype=None)
    assert model.embed_tokens.weight.dtype == torch.bfloat16 and model.norm.weight.dtype == torch.bfloat16
    assert model.layers[2].mlp.up_proj.weight.dtype == torch.float8_e4m3fn


def test_store_fp8_on_bf16_file(setup, tmp_path):
    sd, proto = setup["sd"], setup["proto"]
    sd16 = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    file = _write(tmp_path / "gemma_3_12B_it.safetensors", sd16, proto, config=setup["config"])
    enc = text_encoding.load_gemma_text_encoder(file, device="cpu", dtype="fp32", max_length=MAX_LEN,
                                                weight_dtype="fp8_e4m3fn")
    _check_layers(enc, torch.float32)
    fp8 = {k: quant.quantize_fp8(v) for k, v in sd16.items() if _is_linear("model." + k)}
    for k, (codes, scale) in fp8.items():
        sub = enc.model.get_submodule(k[: -len(".weight")])
        assert torch.equal(sub.weight.view(torch.uint8), codes.view(torch.uint8))
        assert torch.equal(sub.weight_scale, scale)
    got = _states(enc)
    assert rel(got, _states(_oracle(setup["model"], sd16, fp8, proto))) < 1e-6  # measured 0.0
    _near_full(got, setup["full"], 0.0017)
    # "default" keeps the file's weights wide, as before.
    plain = text_encoding.load_gemma_text_encoder(file, device="cpu", dtype="fp32", max_length=MAX_LEN)
    assert not any(isinstance(s, quant.QuantLinear) for s in plain.model.modules())
    with pytest.raises(CheckpointError, match="weight_dtype='fp4' is not one of"):
        text_encoding.load_gemma_text_encoder(file, dtype="fp32", weight_dtype="fp4")
    # A Hugging Face folder loads through transformers: weight_dtype is refused there.
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(setup["config"]))
    with pytest.raises(CheckpointError, match="applies to a single Gemma-3 .safetensors file only"):
        text_encoding.load_gemma_text_encoder(folder, dtype="fp32", weight_dtype="fp8_e4m3fn")


def test_unsupported_layouts_refused(setup, tmp_path):
    sd, proto = setup["sd"], setup["proto"]
    q = "model.layers.0.self_attn.q_proj"
    out_f, in_f = sd["layers.0.self_attn.q_proj.weight"].shape
    # ComfyUI's nvfp4: packed uint8 codes, fp8 block scales, a second per-tensor scale.
    nvfp4 = {q + ".weight": torch.zeros(out_f, in_f // 2, dtype=torch.uint8),
             q + ".weight_scale": torch.ones(out_f, in_f // 16).to(torch.float8_e4m3fn),
             q + ".weight_scale_2": torch.ones(()), q + ".comfy_quant": _comfy_quant({"format": "nvfp4"})}
    file = _write(tmp_path / "gemma_nvfp4.safetensors", sd, proto, config=setup["config"], extra=nvfp4)
    with pytest.raises(CheckpointError, match=r"gemma_nvfp4\.safetensors: a quantized Gemma-3 file in a layout this "
                       r"version does not load .*NVFP4.*Use the bf16 .*fp8_scaled"):
        text_encoding.load_gemma_text_encoder(file, dtype="fp32")
    # int8 with ComfyUI's marker, and bare int8 weights.
    int8 = {q + ".weight": torch.zeros(out_f, in_f, dtype=torch.int8), q + ".weight_scale": torch.ones(()),
            q + ".comfy_quant": _comfy_quant({"format": "int8_tensorwise"})}
    file = _write(tmp_path / "gemma_int8.safetensors", sd, proto, config=setup["config"], extra=int8)
    with pytest.raises(CheckpointError, match=r"gemma_int8\.safetensors: a quantized Gemma-3 .*int8_tensorwise"):
        text_encoding.load_gemma_text_encoder(file, dtype="fp32")
    file = _write(tmp_path / "gemma_i8.safetensors", sd, proto, config=setup["config"],
                  extra={q + ".weight": torch.zeros(out_f, in_f, dtype=torch.int8)})
    with pytest.raises(CheckpointError, match=r"gemma_i8\.safetensors: .*q_proj\.weight': a int8 tensor"):
        text_encoding.load_gemma_text_encoder(file, dtype="fp32")
    with pytest.raises(CheckpointError, match="fp8 storage of its linear weights is weight_dtype"):
        gemma_file.load_gemma_single_file(file, dtype=torch.float8_e4m3fn)


def test_node_fp8_choice(setup, tmp_path):
    from comfyui_cosmos3_ltx2.nodes import NODE_CLASS_MAPPINGS as N

    node = N["LTX2TextEncoderLoader"]
    dtypes, opts = node.INPUT_TYPES()["required"]["dtype"]
    assert dtypes == ["bf16", "fp16", "fp32", "fp8_e4m3fn"] and opts["default"] == "bf16"
    sd16 = {k: v.to(torch.bfloat16) for k, v in setup["sd"].items()}
    file = _write(tmp_path / "gemma_3_12B_it.safetensors", sd16, setup["proto"], config=setup["config"])
    te, = node().load(str(file), "fp8_e4m3fn", "cpu")
    direct = text_encoding.load_gemma_text_encoder(file, device="cpu", dtype="bf16", weight_dtype="fp8_e4m3fn")
    assert te.encoder.dtype == torch.bfloat16
    assert te.encoder.model.layers[1].mlp.down_proj.weight.dtype == torch.float8_e4m3fn
    a, _ = te.encoder.encode(PROMPTS[0])
    b, _ = direct.encode(PROMPTS[0])
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    te, = node().load(str(file), "bf16", "cpu")  # the old choices load as before
    assert not any(isinstance(s, quant.QuantLinear) for s in te.encoder.model.modules())
