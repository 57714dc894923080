"""Quantized checkpoints load and run (core/quant.py through core/checkpoint.load_into): ComfyUI's per-layer scaled
fp8 format (comfy_quant + weight_scale), its older scaled_fp8 / scale_weight files, the Cosmos3 FP8 release
(ModelOpt, 128 x 128 block scales in weight_quantizer._scale, _amax twins), and bf16 files stored as fp8 at load.

The fp8 files are written here from the tiny models' own weights, with the real formats' key names, dtypes and
shapes (scale.md 3; comfy/ops.py, comfy/utils.py convert_old_quants; vllm-omni modelopt_native.py).

Tolerance: e4m3 rounds each weight to 3 mantissa bits, a relative error of at most 2**-4 per weight, ~2**-4/sqrt(3)
~ 3.6% RMS for uniformly spread rounding. A layer's output error is about that fraction of its RMS, and errors of the
layers of a short stack add up roughly in quadrature, so a forward of these 2-block models is held to a relative
(Frobenius) error of 0.1 against the unquantized run, and the one-step quantization of a single Linear to 0.05.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_cosmos3_ltx2.core import quant
from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError
from comfyui_cosmos3_ltx2.cosmos3 import loader as c3
from comfyui_cosmos3_ltx2.cosmos3.tiny import write_tiny_checkpoint
from comfyui_cosmos3_ltx2.ltx2 import loader as l2
from comfyui_cosmos3_ltx2.ltx2.tiny import write_demo

LAYER_TOL = 0.05
MODEL_TOL = 0.10


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def comfy_quant(conf: dict) -> torch.Tensor:
    return torch.tensor(list(json.dumps(conf).encode("utf-8")), dtype=torch.uint8)


def to_comfy(sd: dict, is_layer, legacy: bool = False) -> dict:
    """ComfyUI's scaled fp8: per-tensor scale = max|w| / 448, codes = w / scale."""
    out = dict(sd)
    if legacy:
        out["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    for k, v in sd.items():
        if k.endswith(".weight") and v.ndim == 2 and is_layer(k):
            layer = k[: -len(".weight")]
            codes, scale = quant.quantize_fp8(v)
            out[k] = codes
            if legacy:
                out[layer + ".scale_weight"] = scale.reshape(1)
                out[layer + ".scale_input"] = torch.ones(1)
            else:
                out[layer + ".weight_scale"] = scale
                out[layer + ".input_scale"] = torch.ones(())
                out[layer + ".comfy_quant"] = comfy_quant({"format": "float8_e4m3fn"})
    return out


def to_modelopt_blocks(sd: dict, is_layer, block: int = 128) -> dict:
    """The Cosmos3 FP8 release: bf16 scale per 128 x 128 block (= block amax / 448), amax twin [R, 1, C, 1]."""
    out = dict(sd)
    for k, v in sd.items():
        if k.endswith(".weight") and v.ndim == 2 and is_layer(k):
            layer = k[: -len(".weight")]
            rows, cols = v.shape
            r, c = math.ceil(rows / block), math.ceil(cols / block)
            padded = torch.zeros(r * block, c * block)
            padded[:rows, :cols] = v.float()
            amax = padded.view(r, block, c, block).abs().amax(dim=(1, 3)).to(torch.bfloat16)
            scale = (amax.float() / 448).to(torch.bfloat16)
            full = scale.float().repeat_interleave(block, 0)[:rows].repeat_interleave(block, 1)[:, :cols]
            out[k] = (v.float() / full).clamp(-448, 448).to(torch.float8_e4m3fn)
            out[layer + ".weight_quantizer._scale"] = scale
            out[layer + ".weight_quantizer._amax"] = amax.reshape(r, 1, c, 1)
    return out


def test_block_scaled_linear_matches_dequantized_formula():
    """A 300 x 260 weight (blocks that do not divide it): the QuantLinear output equals F.linear with codes x the
    expanded block scale, and is within LAYER_TOL of the original weight's output."""
    torch.manual_seed(0)
    w = torch.randn(300, 260) * torch.linspace(0.1, 3, 260)  # columns of different size: blocks matter
    sd = to_modelopt_blocks({"l.weight": w}, lambda k: True)
    codes, scale = sd["l.weight"], sd["l.weight_quantizer._scale"]
    assert scale.shape == (3, 3) and scale.dtype == torch.bfloat16
    lin = torch.nn.Linear(260, 300, bias=False)
    quant.to_quant_linear(lin, torch.float8_e4m3fn, (3, 3))
    lin._parameters["weight"] = torch.nn.Parameter(codes, requires_grad=False)
    lin.weight_scale = scale.float()
    x = torch.randn(5, 260)
    expanded = scale.float().repeat_interleave(128, 0)[:300].repeat_interleave(128, 1)[:, :260]
    torch.testing.assert_close(lin(x), x @ (codes.float() * expanded).T)
    assert rel(lin(x), x @ w.T) < LAYER_TOL


@pytest.fixture(scope="module")
def cosmos_dir(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("c3") / "ckpt")


def _cosmos_variant(src, dst, fmt: str):
    import shutil

    shutil.copytree(src, dst)
    f = dst / "transformer" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f))
    if fmt == "comfy":
        sd = to_comfy(sd, lambda k: k.startswith("layers."))
    elif fmt == "comfy_legacy":
        sd = to_comfy(sd, lambda k: k.startswith("layers."), legacy=True)
    else:  # the FP8 release: MLP weights and lm_head only, plus the sidecars that are never opened
        sd = to_modelopt_blocks(sd, lambda k: ".mlp." in k or ".mlp_moe_gen." in k or k.startswith("lm_head."))
        (dst / "quantization_config.json").write_text(json.dumps({"recipe": "fp8_blockwise_mixed"}))
        (dst / "transformer" / "modelopt_state.pt").write_bytes(b"PK\x03\x04 not to be opened")
        cfg = json.loads((dst / "transformer" / "config.json").read_text())
        cfg["quantization_config"] = {"quant_method": "modelopt"}
        (dst / "transformer" / "config.json").write_text(json.dumps(cfg))
    save_file(sd, str(f))
    return dst


def _cosmos_outputs(model, seed=0):
    """UND keys of a prompt (through every layer) and the GEN velocity of one step."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 200, (7,), generator=g).tolist()
    text = model.encode_text(ids)
    lat = torch.randn(1, model.config.latent_channel, 1, 4, 4, generator=g)
    ctx = model.prepare([text], (1, 4, 4), 24.0)
    v = model(lat, torch.tensor([500.0]), ctx)
    return torch.cat([t.flatten() for t in text.keys + text.values]), v


@pytest.mark.parametrize("fmt", ["comfy", "comfy_legacy", "modelopt_blocks"])
def test_cosmos3_quantized_files_load_and_run(cosmos_dir, tmp_path, fmt):
    ref = c3.load_transformer(cosmos_dir / "transformer", dtype="fp32")
    q = c3.load_transformer(_cosmos_variant(cosmos_dir, tmp_path / fmt, fmt) / "transformer", dtype="fp32")
    mlp = q.layers[0].mlp_moe_gen.down_proj
    assert isinstance(mlp, quant.QuantLinear) and mlp.weight.dtype == torch.float8_e4m3fn
    attn = q.layers[0].self_attn.to_q
    assert isinstance(attn, quant.QuantLinear) == (fmt != "modelopt_blocks")
    # Norms, embeddings, biases and the layers outside the blocks stay high precision.
    assert q.embed_tokens.weight.dtype == torch.float32 and q.proj_in.weight.dtype == torch.float32
    for name, p in q.named_parameters():
        if p.dtype == torch.float8_e4m3fn:
            assert name.startswith("layers.") and name.endswith(".weight") and p.ndim == 2, name
    with torch.no_grad():
        k_ref, v_ref = _cosmos_outputs(ref)
        k_q, v_q = _cosmos_outputs(q)
    err = rel(v_q, v_ref)
    assert 0 < err < MODEL_TOL, err
    assert rel(k_q, k_ref) < MODEL_TOL


def test_cosmos3_bf16_stored_as_fp8_and_generate(cosmos_dir):
    """weight_dtype="fp8_e4m3fn": the block Linear weights of a plain file become fp8 with one scale each at load;
    a short generate stays within MODEL_TOL of the unquantized one."""
    from comfyui_cosmos3_ltx2.cosmos3.pipeline import generate

    ref = c3.load_checkpoint(cosmos_dir, dtype="fp32")
    q = c3.load_checkpoint(cosmos_dir, dtype="fp32", weight_dtype="fp8_e4m3fn")
    lin = q.transformer.layers[1].self_attn.add_k_proj
    assert isinstance(lin, quant.QuantLinear) and lin.weight.dtype == torch.float8_e4m3fn
    assert lin.weight_scale.dtype == torch.float32 and lin.weight_scale.numel() == 1
    assert q.transformer.time_embedder.linear_1.weight.dtype == torch.float32
    w_ref = ref.transformer.layers[1].self_attn.add_k_proj.weight
    assert rel(lin.dequantized_weight(), w_ref) < LAYER_TOL
    kw = {"width": 32, "height": 32, "num_frames": 1, "steps": 2, "seed": 3, "guidance": 2.0}
    a = generate(ref, "a red ball", **kw)
    b = generate(q, "a red ball", **kw)
    assert 0 < rel(b, a) < MODEL_TOL
    with pytest.raises(ValueError, match="weight_dtype"):
        c3.load_transformer(cosmos_dir / "transformer", weight_dtype="int4")


@pytest.fixture(scope="module")
def ltx_file(tmp_path_factory):
    return write_demo(tmp_path_factory.mktemp("ltx")).checkpoint


def _ltx_forward(tr, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = tr.config
    x = torch.randn(1, 8, cfg["in_channels"], generator=g)
    ax = torch.randn(1, 4, cfg["audio_in_channels"], generator=g)
    ctx = torch.randn(1, 5, tr.proj_in.out_features, generator=g)
    actx = torch.randn(1, 5, tr.audio_proj_in.out_features, generator=g)
    return tr(x, ax, ctx, actx, 0.5, video_coords=tr.video_coords(1, 2, 2, 2), audio_coords=tr.audio_coords(1, 4))


@pytest.mark.parametrize("fmt", ["comfy", "comfy_legacy", "comfy_metadata", "bf16_as_fp8"])
def test_ltx2_quantized_files_load_and_run(ltx_file, tmp_path, fmt):
    ref = l2.load_ltx2_checkpoint(ltx_file, dtype="fp32", components=("transformer",)).transformer
    if fmt == "bf16_as_fp8":
        q = l2.load_ltx2_checkpoint(ltx_file, dtype="fp32", components=("transformer",),
                                    weight_dtype="fp8_e4m3fn").transformer
    else:
        from safetensors import safe_open

        with safe_open(str(ltx_file), framework="pt") as sf:
            meta = sf.metadata()
        sd = load_file(str(ltx_file))
        blocks = "model.diffusion_model.transformer_blocks."
        qsd = to_comfy(sd, lambda k: k.startswith(blocks), legacy=fmt == "comfy_legacy")
        if fmt == "comfy_legacy":
            qsd["model.diffusion_model.scaled_fp8"] = qsd.pop("scaled_fp8")
        if fmt == "comfy_metadata":  # the layer table in the header instead of comfy_quant tensors
            layers = {k[: -len(".comfy_quant")]: {"format": "float8_e4m3fn"} for k in qsd if k.endswith(".comfy_quant")}
            qsd = {k: v for k, v in qsd.items() if not k.endswith(".comfy_quant")}
            meta = {**meta, "_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
        f = tmp_path / "ltx-fp8.safetensors"
        save_file(qsd, str(f), metadata=meta)
        q = l2.load_ltx2_checkpoint(f, dtype="fp32", components=("transformer", "video_vae")).transformer
    blk = q.transformer_blocks[0]
    assert isinstance(blk.attn1.to_q, quant.QuantLinear) and blk.attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert blk.attn1.to_q.bias.dtype == torch.float32  # biases stay wide
    assert blk.scale_shift_table.dtype == torch.float32  # AdaLN tables stay wide
    assert q.proj_in.weight.dtype == torch.float32 and type(q.proj_in) is torch.nn.Linear
    with torch.no_grad():
        v_ref, a_ref = _ltx_forward(ref)
        v_q, a_q = _ltx_forward(q)
    assert 0 < rel(v_q, v_ref) < MODEL_TOL, rel(v_q, v_ref)
    assert 0 < rel(a_q, a_ref) < MODEL_TOL, rel(a_q, a_ref)


@pytest.mark.parametrize("extra, why", [
    ({"format": "nvfp4"}, "nvfp4"),
    ({"format": "mxfp8"}, "mxfp8"),
])
def test_unsupported_layouts_are_still_refused(ltx_file, tmp_path, extra, why):
    sd = load_file(str(ltx_file))
    k = "model.diffusion_model.transformer_blocks.0.attn1.to_q"
    sd[k + ".weight"], sd[k + ".weight_scale"] = quant.quantize_fp8(sd[k + ".weight"])
    sd[k + ".comfy_quant"] = comfy_quant(extra)
    f = tmp_path / "fp4.safetensors"
    from safetensors import safe_open

    with safe_open(str(ltx_file), framework="pt") as sf:
        save_file(sd, str(f), metadata=sf.metadata())
    with pytest.raises(CheckpointError, match=rf"quantized weights \('{k}.comfy_quant'.*{why}.*does not load"):
        l2.load_ltx2_checkpoint(f, dtype="fp32", components=("transformer",))


def test_fp4_weight_is_refused(tmp_path):
    lin = torch.nn.Sequential(torch.nn.Linear(32, 16))
    sd = {"0.weight": torch.zeros(16, 16, dtype=torch.uint8), "0.bias": torch.zeros(16),
          "0.weight_scale": torch.ones(16, 2, dtype=torch.float8_e4m3fn), "0.weight_scale_2": torch.ones(()),
          "0.comfy_quant": comfy_quant({"format": "nvfp4"})}
    f = tmp_path / "nvfp4.safetensors"
    save_file(sd, str(f))
    from comfyui_cosmos3_ltx2.core.checkpoint import load_into

    with pytest.raises(CheckpointError, match=r"quantized weights \('0.weight_scale_2': an NVFP4"):
        load_into(lin, f)


def test_lora_beside_fp8_weights(ltx_file):
    """A LoRA on scaled fp8 codes runs beside them (merging into the codes would round the update away): each fp8
    layer computes dequant(W) x + s B (A x); strength changes and removal act on that term alone, so removal
    gives back the LoRA-free output bit for bit, and the result tracks the same LoRA merged into the wide weights."""
    from comfyui_cosmos3_ltx2.core.quant import QuantLinear

    demo_lora = ltx_file.parent / "ltx-2.3-tiny-distilled-lora.safetensors"
    q = l2.load_ltx2_checkpoint(ltx_file, dtype="fp32", components=("transformer",), weight_dtype="fp8_e4m3fn")
    wide = l2.load_ltx2_checkpoint(ltx_file, dtype="fp32", components=("transformer",))
    with torch.no_grad():
        plain = _ltx_forward(q.transformer)
        handle = l2.load_distilled_lora(q.transformer, demo_lora, strength=0.5)
        layers = [m for m in q.transformer.modules() if isinstance(m, QuantLinear) and m.__dict__.get("lora_terms")]
        assert layers and all(m.weight.dtype == torch.float8_e4m3fn for m in layers)  # the codes are untouched
        # one layer: exactly the formula
        m = layers[0]
        (a_, b_, s_), = m.lora_terms.values()
        x = torch.randn(3, m.in_features, generator=torch.Generator().manual_seed(0))
        want = torch.nn.functional.linear(x, m.dequantized_weight() + s_ * (b_.float() @ a_.float()), m.bias)
        assert torch.allclose(m(x), want, rtol=1e-5, atol=1e-5) and s_ == 0.5
        with_lora = _ltx_forward(q.transformer)
        l2.load_distilled_lora(wide.transformer, demo_lora, strength=0.5)
        merged = _ltx_forward(wide.transformer)
        for got, ref, base in zip(with_lora, merged, plain):
            assert not torch.equal(got, base)
            assert rel(got, ref) < 0.1  # fp8 rounding of the base weights only
        handle.set_strength(0.0)
        assert all(torch.equal(u, v) for u, v in zip(_ltx_forward(q.transformer), plain))
        handle.set_strength(0.5)
        assert all(torch.equal(u, v) for u, v in zip(_ltx_forward(q.transformer), with_lora))
        handle.remove()
        assert all(torch.equal(u, v) for u, v in zip(_ltx_forward(q.transformer), plain))
        assert not any(m.__dict__.get("lora_terms") for m in layers)


def test_ltx2_generate_with_fp8_weights():
    """ltx2.generate(weight_dtype="fp8_e4m3fn") (the command line's --dtype fp8_e4m3fn): the blocks' weights are
    stored as scaled fp8, so the clip differs from the full-precision run, but only as fp8 rounding carried through
    two steps and the decoder of a random model does (mean error a few percent of the mean; the largest single
    pixel error is not bounded as tightly on random weights)."""
    from comfyui_cosmos3_ltx2.ltx2 import generate
    from comfyui_cosmos3_ltx2.ltx2.tiny import default_demo

    demo = default_demo()
    kw = dict(width=64, height=64, num_frames=9, steps=2, seed=3, device="cpu", dtype="fp32")
    frames, _, _ = generate(demo.checkpoint, demo.text_encoder, "a cat", **kw)
    fp8, _, _ = generate(demo.checkpoint, demo.text_encoder, "a cat", weight_dtype="fp8_e4m3fn", **kw)
    err = ((fp8 - frames).abs().mean() / frames.abs().mean()).item()
    assert 0 < err < 0.1, err
