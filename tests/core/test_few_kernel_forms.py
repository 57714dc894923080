"""The forms that launch fewer kernels, against the plain formulas they replace, in float32, bfloat16 and float16.

* ``F.rms_norm`` and the modulation rows formed in one op: the same numbers, bit for bit.
* The fused multiply-adds (``torch.addcmul``: AdaLN modulation, gated residuals, RoPE finished in place):
  one rounding where the plain form has two, so not bit-identical; checked against float64 to be at least
  as accurate as the plain form."""

import pytest
import torch

from comfyui_cosmos3_ltx2.core.ltx_rope import apply_rope
from comfyui_cosmos3_ltx2.core.norms import rms_norm, rms_norm_fp32_weight
from comfyui_cosmos3_ltx2.ltx2.transformer import _rms, _Rows

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _x(shape, dtype, seed=0):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norms_equal_the_formulas(dtype):
    x, eps = _x((2, 37, 96), dtype), 1e-6
    xf = x.float()
    inv = torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    assert torch.equal(_rms(x, eps), (xf * inv).to(dtype))
    for wdtype in DTYPES:
        w = (torch.rand(96, generator=torch.Generator().manual_seed(1)) + 0.5).to(wdtype)
        assert torch.equal(rms_norm_fp32_weight(x, w, eps), (w.float() * (xf * inv)).to(dtype))
        y = x * inv
        want = (y.to(wdtype) if wdtype != torch.float32 else y) * w
        assert torch.equal(rms_norm(x, w, eps), want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_rope_equals_the_formula(dtype):
    b, t, heads, r = 2, 11, 3, 8
    x = _x((b, t, heads * 2 * r), dtype)
    angles = _x((b, t, heads, r), torch.float32, seed=2)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float().unflatten(-1, (heads, 2, r)).unbind(-2)
    want = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-2).flatten(-3).to(dtype)
    exact = _split_rope64(x, cos, sin)
    before = x.clone()
    _no_less_accurate(apply_rope(x, cos, sin), want, exact)
    assert torch.equal(x, before)  # the input is not touched by the in-place finish


@pytest.mark.parametrize("dtype", DTYPES)
def test_interleaved_rope_equals_the_formula(dtype):
    b, t, dim = 2, 11, 48
    x = _x((b, t, dim), dtype)
    angles = _x((b, t, dim // 2), torch.float32, seed=2)
    cos, sin = angles.cos().repeat_interleave(2, -1), angles.sin().repeat_interleave(2, -1)

    def rope(v, c, s):
        p = v.unflatten(-1, (-1, 2))
        return v * c + torch.stack((-p[..., 1], p[..., 0]), dim=-1).flatten(-2) * s

    before = x.clone()
    _no_less_accurate(apply_rope(x, cos, sin), rope(x.float(), cos, sin).to(dtype),
                      rope(x.double(), cos.double(), sin.double()))
    assert torch.equal(x, before)


def _split_rope64(x, cos, sin):
    heads, r = cos.shape[-2:]
    x1, x2 = x.double().unflatten(-1, (heads, 2, r)).unbind(-2)
    c, s = cos.double(), sin.double()
    return torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), dim=-2).flatten(-3)


def _no_less_accurate(got, plain, exact):
    """``got`` (one rounding) is as close to the float64 ``exact`` as the ``plain`` form (two roundings), and
    both are within their dtype's rounding of it."""
    err_got = (got.double() - exact).abs().max().item()
    err_plain = (plain.double() - exact).abs().max().item()
    assert err_got <= err_plain * 1.01 + 1e-12, (err_got, err_plain)
    ulp = torch.finfo(got.dtype).eps * exact.abs().max().item()
    assert err_got <= 2 * ulp, (err_got, ulp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["shared", "levels", "per-token"])
def test_modulation_rows_equal_the_formula(kind, dtype):
    k, d, b, s = 9, 16, 2, 13
    table = _x((k, d), dtype, seed=3)
    index = None
    if kind == "shared":
        temb = _x((b, 1, k * d), dtype, seed=4)
    elif kind == "levels":
        temb = _x((b, 3, k * d), dtype, seed=4)
        index = torch.randint(0, 3, (b, s), generator=torch.Generator().manual_seed(5))
    else:
        temb = _x((b, s, k * d), dtype, seed=4)
    rows = _Rows(table, temb, index)
    x = _x((b, s, d), dtype, seed=6)

    def row(i):  # the plain form: one add per row, then gathered per token
        r = table[i] + temb[..., i * d:(i + 1) * d]
        return r if index is None else torch.gather(r, 1, index.unsqueeze(-1).expand(-1, -1, d))

    for i in range(k):
        assert torch.equal(rows[i], row(i))
    exact = x.double() * (1 + row(1)).double() + row(0).double()
    _no_less_accurate(rows.modulate(x, 1, 0), x * (1 + row(1)) + row(0), exact)
    out = _x((b, s, d), dtype, seed=7)
    _no_less_accurate(rows.gated(x, out, 2), x + out * row(2), x.double() + out.double() * row(2).double())
    assert (rows._rows is None) == (kind == "per-token")  # per-token rows are formed one at a time
