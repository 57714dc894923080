"""The one attention entry point (core.attention): SDPA by default, FlashAttention or SageAttention when chosen (a
clear error when the package is missing; a call with a padding mask stays on SDPA), and optional regional
torch.compile of the transformer blocks (core.compile), off by default.

flash-attn and sageattention are CUDA-only packages; here labelled stand-ins with their call signatures and tensor
layouts (flash: [B, N, H, D]; sage: tensor_layout="HND") check the wiring, and compute plain softmax attention so
the results can be compared with SDPA.
"""

import sys
import types

import pytest
import torch
import torch.nn.functional as F

from comfyui_cosmos3_ltx2.core import attention as A
from comfyui_cosmos3_ltx2.core.compile import regional_compile_enabled, set_regional_compile


def _reference(q, k, v, causal):
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


@pytest.fixture
def standins(monkeypatch):
    """Stand-ins of the two packages, recording their calls."""
    calls = []

    def flash_attn_func(q, k, v, causal=False):  # flash-attn's layout: [B, N, H, D]
        calls.append(("flash", tuple(q.shape), tuple(k.shape)))
        return _reference(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal).transpose(1, 2)

    def sageattn(q, k, v, tensor_layout="HND", is_causal=False):
        assert tensor_layout == "HND"
        calls.append(("sage", tuple(q.shape), tuple(k.shape)))
        return _reference(q, k, v, is_causal)

    monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_func=flash_attn_func))
    monkeypatch.setitem(sys.modules, "sageattention", types.SimpleNamespace(sageattn=sageattn))
    yield calls
    A.set_backend("sdpa")


def _qkv(hq=4, hkv=2, n=7, d=8):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, hq, n, d, generator=g), torch.randn(2, hkv, n, d, generator=g),
            torch.randn(2, hkv, n, d, generator=g))


def test_default_is_sdpa_and_bad_choices_are_refused(monkeypatch):
    assert A.get_backend() == "sdpa"
    with pytest.raises(ValueError, match="not one of sdpa, flash, sage"):
        A.set_backend("xformers")
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # "not installed", even where it is
    with pytest.raises(ImportError, match="needs the flash-attn package.*pip install flash-attn"):
        A.set_backend("flash")
    assert A.get_backend() == "sdpa"  # a refused choice changes nothing


@pytest.mark.parametrize("backend", ["flash", "sage"])
@pytest.mark.parametrize("causal", [False, True])
def test_backends_compute_the_same_attention(standins, backend, causal):
    q, k, v = _qkv()
    want = A.attention(q, k, v, causal=causal)  # SDPA
    assert A.set_backend(backend) == "sdpa"
    got = A.attention(q, k, v, causal=causal)
    assert standins == [(backend, (2, 7, 4, 8) if backend == "flash" else (2, 4, 7, 8),
                         (2, 7, 2, 8) if backend == "flash" else (2, 2, 7, 8))]  # grouped heads passed as they are
    assert (got - want).abs().max() < 1e-6


def test_a_padding_mask_stays_on_sdpa(standins):
    q, k, v = _qkv()
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[0, ..., 5:] = False
    want = A.attention(q, k, v, mask=mask)
    A.set_backend("flash")
    assert torch.equal(A.attention(q, k, v, mask=mask), want) and standins == []


def test_whole_models_run_on_the_chosen_backend(standins):
    """Both transformers route every unmasked attention through the entry point: a Cosmos3 run on the embedded
    demo model gives the same frames on the flash stand-in as on SDPA (to float rounding)."""
    from comfyui_cosmos3_ltx2.cosmos3 import generate
    from comfyui_cosmos3_ltx2.cosmos3.tiny import default_checkpoint

    kw = dict(width=64, height=32, num_frames=5, steps=2, seed=3, device="cpu", dtype="fp32")
    want = generate(default_checkpoint(), "a red robot", **kw)
    A.set_backend("flash")
    got = generate(default_checkpoint(), "a red robot", **kw)
    assert standins and (got - want).abs().max() < 1e-4


def test_regional_compile_is_off_by_default_and_compiles_each_block():
    from comfyui_cosmos3_ltx2.ltx2.transformer import LTX2Transformer
    from helpers.ltx2_transformer_ref import CONFIGS

    cfg = dict(CONFIGS["2.3"])
    assert not regional_compile_enabled()
    plain = LTX2Transformer(cfg)
    assert all(getattr(b, "_compiled_call_impl", None) is None for b in plain.transformer_blocks)
    set_regional_compile(True, backend="eager")
    try:
        compiled = LTX2Transformer(cfg)
    finally:
        set_regional_compile(False)
    assert all(b._compiled_call_impl is not None for b in compiled.transformer_blocks)
    assert list(compiled.state_dict()) == list(plain.state_dict())  # checkpoint keys unchanged


def test_command_line_flags(capsys):
    from comfyui_cosmos3_ltx2.__main__ import main

    assert main(["generate", "--attention", "sage", "--prompt", "x", "--output", "x.webp"]) == 2
    assert "--attention='sage': attention backend 'sage' needs the sageattention package" in capsys.readouterr().err


def test_compiled_blocks_give_the_same_frames():
    """Regional compile changes how the blocks run, not what they compute (TorchDynamo with its eager backend here,
    which needs no C++ toolchain; on a GPU the default inductor backend fuses the kernels)."""
    from comfyui_cosmos3_ltx2.cosmos3 import generate
    from comfyui_cosmos3_ltx2.cosmos3.tiny import default_checkpoint

    kw = dict(width=64, height=32, num_frames=5, steps=2, seed=3, device="cpu", dtype="fp32")
    want = generate(default_checkpoint(), "a red robot", **kw)
    set_regional_compile(True, backend="eager")
    try:
        got = generate(default_checkpoint(), "a red robot", **kw)
    finally:
        set_regional_compile(False)
    assert torch.equal(got, want)


def test_inside_comfyui_its_own_attention_flags_choose(monkeypatch):
    """ComfyUI started with --use-sage-attention / --use-flash-attention: the model loaders pick the same kernels."""
    from comfyui_cosmos3_ltx2.nodes import comfy

    assert comfy.attention_backend() == "sdpa"  # outside ComfyUI
    monkeypatch.setattr(comfy, "mm", types.SimpleNamespace(sage_attention_enabled=lambda: True,
                                                           flash_attention_enabled=lambda: False))
    assert comfy.attention_backend() == "sage"
    monkeypatch.setattr(comfy, "mm", types.SimpleNamespace(sage_attention_enabled=lambda: False,
                                                           flash_attention_enabled=lambda: True))
    assert comfy.attention_backend() == "flash"
