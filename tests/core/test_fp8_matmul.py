"""The fp8 matrix-multiply path of core.quant.QuantLinear (``torch._scaled_mm``, taken on sm89+ GPUs), checked on the
CPU, where torch 2.13 has ``_scaled_mm`` too: activations get one dynamic scale (max|x| / 448) and fp8 codes, the
product of the two scaled operands (plus the bias) comes out in the activations' dtype. Reference: the same formula
in float64 from the codes; and against the per-layer dequantize path, the error the fp8 activations add."""

import pytest
import torch
import torch.nn as nn

from comfyui_cosmos3_ltx2.core import quant
from helpers.measures import rel


def _layer(bias=True):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48, bias=bias)
    codes, scale = quant.quantize_fp8(linear.weight.detach())
    bias_value = None if linear.bias is None else linear.bias.detach().clone()
    layer = quant.to_quant_linear(linear, torch.float8_e4m3fn)
    layer.weight = nn.Parameter(codes, requires_grad=False)
    layer.weight_scale = scale
    if bias_value is not None:
        layer.bias = nn.Parameter(bias_value, requires_grad=False)
    return layer


@pytest.mark.parametrize("bias", [True, False])
def test_fp8_matmul_is_the_scaled_product(bias):
    layer = _layer(bias)
    x = (torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(1)) * 3).to(torch.bfloat16)
    b = None if layer.bias is None else layer.bias.to(torch.bfloat16)
    out = layer._fp8_mm(x, b)
    assert out.shape == (3, 5, 48) and out.dtype == torch.bfloat16

    # float64: (fp8(x / sx) * sx) @ (codes * sw)^T + bias, with sx = max|x| / 448 as the layer computes it
    x2 = x.reshape(-1, 64)
    sx = (x2.abs().amax().float() / quant.FP8_MAX).clamp(min=1e-12)
    xq = (x2 / sx.to(x2.dtype)).clamp(-quant.FP8_MAX, quant.FP8_MAX).to(torch.float8_e4m3fn)
    ref = (xq.double() * sx.double()) @ (layer.weight.double() * layer.weight_scale.double()).t()
    if b is not None:
        ref = ref + b.double()
    err = (out.reshape(-1, 48).double() - ref).abs()
    assert (err <= 2.0**-8 * ref.abs() + 1e-6 * ref.abs().max()).all()  # bf16 output rounding only

    # against dequantizing the weight and multiplying in bf16: the fp8 activations' rounding (measured 2.6 %)
    plain = layer(x)  # on the CPU the layer dequantizes
    assert 0.005 < rel(out, plain) < 0.05, rel(out, plain)


def test_the_cpu_never_takes_the_fp8_path():
    """The forward picks _scaled_mm only for CUDA activations on sm89+ (ComfyUI's supports_fp8_compute rule)."""
    layer = _layer()
    x = torch.randn(2, 64).to(torch.bfloat16)
    assert not layer._can_fp8_mm(x) and not quant.fp8_matmul_supported(torch.device("cpu"))
    assert torch.equal(layer(x), nn.functional.linear(x, layer.dequantized_weight(torch.bfloat16),
                                                      layer.bias.to(torch.bfloat16)))
