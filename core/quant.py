"""Quantized (fp8) Linear weights: reading the scaled-fp8 checkpoint formats, and storing bf16 weights in fp8.

Three on-disk formats are recognised, all "fp8 codes times a scale" (facts from /work/shared/reference/scale.md 3
and the code it cites):

* **ComfyUI's per-layer format** (``comfy/ops.py`` ``_load_quantized_module``, ``comfy/quant_ops.py QUANT_ALGOS``):
  ``<layer>.weight`` in float8, ``<layer>.weight_scale`` (a per-tensor float32 scale, multiply to dequantize),
  optionally ``<layer>.input_scale``, and ``<layer>.comfy_quant``: the UTF-8 bytes of a JSON object as a uint8
  tensor, e.g. ``{"format": "float8_e4m3fn"}`` (``"full_precision_matrix_mult": true`` asks for no fp8 matmul).
  The same JSON may instead sit in the header metadata ``_quantization_metadata`` as ``{"layers": {name: conf}}``.
  Formats ``float8_e4m3fn`` and ``float8_e5m2`` load; ``nvfp4``, ``mxfp8`` and ``int8_tensorwise`` are refused.
* **ComfyUI's older scaled-fp8 files** (``comfy/utils.py convert_old_quants``): a ``scaled_fp8`` marker tensor
  (its dtype is the fp8 dtype; two elements mean "no fp8 matmul") and per-layer ``<layer>.scale_weight`` /
  ``<layer>.scale_input``, which are ``weight_scale`` / ``input_scale`` under older names.
* **ModelOpt exports of Cosmos3** (the FP8 release, recipe ``fp8_blockwise_mixed``; per vllm-omni's
  ``checkpoint_adapters/modelopt_native.py``): ``<layer>.weight`` in F8_E4M3 with ``<layer>.weight_quantizer._scale``,
  a bf16 grid of one scale per 128 x 128 block (``[ceil(out/128), ceil(in/128)]``, multiply to dequantize) and its
  ``_amax`` twin (``_scale == _amax / 448``, informational). Older per-tensor ModelOpt exports carry a one-element
  ``_scale`` (diffusers ``pipelines/cosmos/mixed_precision.py`` ``_w8a16_linear``: weight x scale) or
  ``weight_scale`` / ``input_scale``.

A Linear whose weight is quantized becomes a :class:`QuantLinear`: it keeps the fp8 codes and the scale(s) and, in
each call, dequantizes its weight to the activation dtype (one layer at a time, so only one layer's wide copy
exists at once) and runs ``F.linear``. On a GPU with fp8 matrix multiplies (NVIDIA compute capability 8.9 or
later) a per-tensor e4m3 layer uses ``torch._scaled_mm`` instead, with the activations scaled per call by their
absolute maximum. Norms, embeddings and biases are never quantized.

Error bound: e4m3 keeps 3 mantissa bits, so rounding to it changes a normal value by at most 2**-4 relative
(half a unit in the last place); with the scale set from the tensor's absolute maximum (so the largest value maps to
448) no value overflows, and values below the smallest normal (2**-6 x scale) lose relative precision but are at most
2**-10 x scale off. A layer's output error is therefore about 2**-4 / sqrt(3) (~3.6%) of the output's RMS in the
worst case of uniform rounding, and in practice ~2% for Gaussian-like weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FP8_MAX",
    "LayerQuant",
    "QuantFormatError",
    "QuantLinear",
    "QuantPlan",
    "dequantize",
    "fp8_matmul_supported",
    "quantize_fp8",
    "recognise",
    "to_quant_linear",
]

FP8_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448

# safetensors dtype names of fp8 storage, and ComfyUI's format names for them.
_FP8_HEADER = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
_COMFY_FP8 = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}

# Per-layer tensor names (suffixes after "<layer>.") by role.
_WEIGHT_SCALES = ("weight_scale", "scale_weight", "weight_quantizer._scale")
_INPUT_SCALES = ("input_scale", "scale_input", "input_quantizer._scale")
_INFO = ("comfy_quant", "weight_quantizer._amax", "input_quantizer._amax")  # read or dropped, never installed
_UNSUPPORTED = {"weight_scale_2": "an NVFP4 (4-bit) layer", "pre_quant_scale": "SmoothQuant pre-scaling"}
MARKER = "scaled_fp8"


class QuantFormatError(ValueError):
    """A quantized layout this version cannot load; the message says what was found."""

    def __init__(self, key: str, reason: str):
        super().__init__(reason)
        self.key = key
        self.reason = reason


@dataclass
class LayerQuant:
    """One quantized layer: where its pieces are (names in the module's namespace) and how to read them."""

    layer: str
    storage: torch.dtype  # float8_e4m3fn or float8_e5m2
    weight: str
    weight_scale: str
    scale_shape: tuple[int, ...]
    input_scale: str | None = None
    input_scale_shape: tuple[int, ...] = ()
    fp8_matmul: bool = True  # False when the file asks for full-precision matmuls
    source: str = "comfy"


@dataclass
class QuantPlan:
    layers: dict[str, LayerQuant] = field(default_factory=dict)  # layer name -> pieces
    drop: set[str] = field(default_factory=set)  # names read for information only (comfy_quant, _amax, marker)

    def __bool__(self) -> bool:
        return bool(self.layers)


def _split(name: str) -> tuple[str, str] | None:
    """(layer, role suffix) for a per-layer quantization tensor name, else None."""
    for suffix in (*_WEIGHT_SCALES, *_INPUT_SCALES, *_INFO, *_UNSUPPORTED):
        if name.endswith("." + suffix):
            return name[: -len(suffix) - 1], suffix
    if "_quantizer." in name:
        head, _, _ = name.partition("_quantizer.")
        layer, _, _ = head.rpartition(".")
        return layer, name[len(layer) + 1:]
    return None


def recognise(entries: Mapping[str, tuple[str, tuple[int, ...]]], read: Callable[[str], torch.Tensor],
              metadata: Mapping[str, str] | None = None) -> QuantPlan:
    """Find the quantized layers among ``entries`` (name -> (safetensors dtype, shape), names already in the
    module's namespace). ``read(name)`` returns a small tensor (the ``comfy_quant`` JSON). Raises
    :class:`QuantFormatError` for a layout that cannot be loaded (fp4, mxfp8, int8, a scale without fp8 codes...)."""
    plan = QuantPlan()
    metadata = metadata or {}
    meta_layers: dict[str, dict] = {}
    if "_quantization_metadata" in metadata:
        try:
            meta_layers = dict(json.loads(metadata["_quantization_metadata"]).get("layers", {}))
        except (ValueError, AttributeError, TypeError):
            raise QuantFormatError("_quantization_metadata", "its _quantization_metadata is not valid JSON") from None
    marker = next((n for n in entries if n == MARKER or n.endswith("." + MARKER)), None)
    full_precision_file = False
    if marker is not None:
        plan.drop.add(marker)
        _dt, shape = entries[marker]
        full_precision_file = math.prod(shape) == 2  # per convert_old_quants: 2 elements = full-precision matmul

    pieces: dict[str, dict[str, str]] = {}
    for name in entries:
        hit = _split(name)
        if hit is not None:
            pieces.setdefault(hit[0], {})[hit[1]] = name
    for layer, roles in pieces.items():
        for role, why in _UNSUPPORTED.items():
            if role in roles:
                raise QuantFormatError(roles[role], f"{why} ('{role}')")
        known = (*_WEIGHT_SCALES, *_INPUT_SCALES, *_INFO)
        for role, name in roles.items():
            if role not in known:
                raise QuantFormatError(name, f"a quantizer tensor of an unknown kind ('{role}')")
        conf = None
        if "comfy_quant" in roles:
            raw = read(roles["comfy_quant"])
            try:
                conf = json.loads(bytes(raw.to(torch.uint8).flatten().tolist()).decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                raise QuantFormatError(roles["comfy_quant"], "its comfy_quant entry is not valid JSON") from None
        elif layer in meta_layers:
            conf = meta_layers[layer]
        if conf is not None and not isinstance(conf, dict):
            raise QuantFormatError(roles.get("comfy_quant", layer), "its comfy_quant entry is not a JSON object")
        fmt = None if conf is None else conf.get("format")
        if conf is not None and fmt not in _COMFY_FP8:
            raise QuantFormatError(roles.get("comfy_quant", layer), f"ComfyUI quantization format {fmt!r} "
                                   "(only float8_e4m3fn and float8_e5m2 load; nvfp4, mxfp8 and int8 do not)")
        plan.drop.update(roles[r] for r in _INFO if r in roles)
        scale_role = next((r for r in _WEIGHT_SCALES if r in roles), None)
        weight = f"{layer}.weight"
        if scale_role is None:
            if conf is not None:
                raise QuantFormatError(roles.get("comfy_quant", layer), f"layer '{layer}' has no weight_scale")
            # Input scales or _amax on a layer whose weight is not quantized: information only.
            plan.drop.update(roles[r] for r in _INPUT_SCALES if r in roles)
            continue
        if weight not in entries:
            raise QuantFormatError(roles[scale_role], f"a weight scale without a weight ('{weight}' is missing)")
        wdt, wshape = entries[weight]
        storage = _FP8_HEADER.get(wdt)
        if storage is None and wdt == "U8" and fmt in _COMFY_FP8:
            storage = _COMFY_FP8[fmt]  # older ComfyUI files keep the fp8 bytes as uint8
        if storage is None:
            what = "4-bit" if wdt == "F4" else wdt
            raise QuantFormatError(roles[scale_role], f"a {what} weight with a scale (only float8 weights with scales load)")
        if fmt is not None and _COMFY_FP8[fmt] != storage:
            raise QuantFormatError(roles["comfy_quant"], f"comfy_quant says {fmt} but the weight is {wdt}")
        if len(wshape) != 2:
            raise QuantFormatError(weight, f"a quantized weight of shape {list(wshape)} (only 2-D weights load)")
        sshape = tuple(entries[roles[scale_role]][1])
        _scale_grid(sshape, tuple(wshape), roles[scale_role])  # checks the shape
        plan.layers[layer] = LayerQuant(
            layer=layer, storage=storage, weight=weight, weight_scale=roles[scale_role], scale_shape=sshape,
            input_scale=next((roles[r] for r in _INPUT_SCALES if r in roles), None),
            input_scale_shape=next((tuple(entries[roles[r]][1]) for r in _INPUT_SCALES if r in roles), ()),
            fp8_matmul=not (full_precision_file or bool((conf or {}).get("full_precision_matrix_mult", False))),
            source="modelopt" if scale_role.startswith("weight_quantizer") else
            ("comfy_legacy" if scale_role == "scale_weight" else "comfy"),
        )
    return plan


def _scale_grid(sshape: tuple[int, ...], wshape: tuple[int, int], where: str = "") -> tuple[int, int] | None:
    """The (rows, cols) block of a scale of shape ``sshape`` for a weight ``wshape``: None for one per-tensor scale,
    else a grid [ceil(out/block_rows), ceil(in/block_cols)] (a 1-D scale of length out is one scale per row)."""
    if math.prod(sshape) == 1:
        return None
    if len(sshape) == 1 and sshape[0] == wshape[0]:
        return 1, wshape[1]
    if len(sshape) == 2:
        # The block edge: 128 when it fits (the Cosmos3 release), else the one ceil-division gives.
        block = []
        for n, s in zip(wshape, sshape):
            b = 128 if math.ceil(n / 128) == s else math.ceil(n / s)
            if s < 1 or math.ceil(n / b) != s:
                break
            block.append(b)
        if len(block) == 2:
            return block[0], block[1]
    raise QuantFormatError(where, f"a weight scale of shape {list(sshape)} that fits no block grid of a "
                           f"{list(wshape)} weight")


def expand_scale(scale: torch.Tensor, wshape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """The scale broadcastable to the weight: a scalar, or the block grid repeated over its blocks."""
    block = _scale_grid(tuple(scale.shape), wshape)
    if block is None:
        return scale.reshape(()).to(dtype)
    grid = scale.reshape(math.ceil(wshape[0] / block[0]), math.ceil(wshape[1] / block[1])).to(dtype)
    return grid.repeat_interleave(block[0], 0)[: wshape[0]].repeat_interleave(block[1], 1)[:, : wshape[1]]


def dequantize(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp8 codes x scale in ``dtype`` (codes and scale are cast to ``dtype``, then multiplied)."""
    w = weight.to(dtype)
    if scale.numel() == 1:
        return w.mul_(scale.reshape(()).to(dtype))
    rows, cols = w.shape
    block = _scale_grid(tuple(scale.shape), (rows, cols))
    if rows % block[0] == 0 and cols % block[1] == 0:  # broadcast over a block view, no full-size scale
        grid = scale.reshape(rows // block[0], 1, cols // block[1], 1).to(dtype)
        return w.view(rows // block[0], block[0], cols // block[1], block[1]).mul_(grid).view(rows, cols)
    return w.mul_(expand_scale(scale, (rows, cols), dtype))


def quantize_fp8(weight: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled fp8: (codes, float32 scale) with scale = max|w| / fmax(dtype), so that codes x scale ~ w.
    An all-zero weight gets scale 1."""
    w = weight.detach().float()
    amax = w.abs().amax()
    scale = torch.where(amax > 0, amax / torch.finfo(dtype).max, torch.ones_like(amax))
    codes = (w / scale).clamp_(-torch.finfo(dtype).max, torch.finfo(dtype).max).to(dtype)
    return codes, scale.reshape(())


def fp8_matmul_supported(device: torch.device) -> bool:
    """True on CUDA devices with fp8 tensor cores (NVIDIA compute capability 8.9 or later) and ``torch._scaled_mm``,
    the condition ComfyUI's ``supports_fp8_compute`` uses (comfy/model_management.py)."""
    if device.type != "cuda" or not hasattr(torch, "_scaled_mm") or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


class QuantLinear(nn.Linear):
    """A Linear layer holding fp8 codes (``weight``) and their scale (``weight_scale``: one value, or one per block).

    Made from an ``nn.Linear`` by :func:`to_quant_linear` (in place, so the model's code and names do not change).
    ``fp8_matmul`` (class default True) lets a per-tensor e4m3 layer use ``torch._scaled_mm`` where the GPU has fp8
    matrix multiplies; set it False on an instance (or the class) to always dequantize. ``lora_terms`` (set by
    :mod:`.lora`): LoRAs applied beside the codes, ``{key: (A [r, in], B [out, r], strength)}``, since merging into
    fp8 codes would round the update away.
    """

    fp8_matmul = True
    _mm_ok: ClassVar[dict] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.bias is None or self.bias.dtype == x.dtype else self.bias.to(x.dtype)
        if self._can_fp8_mm(x):
            out = self._fp8_mm(x, bias)
        else:
            out = F.linear(x, dequantize(self.weight, self.weight_scale, x.dtype), bias)
        for a, b, strength in getattr(self, "lora_terms", {}).values():
            # a LoRA on fp8 codes stays beside them (core.lora): + strength * B (A x), in the activations' dtype
            out = out + strength * F.linear(F.linear(x, a.to(x.device, x.dtype)), b.to(x.device, x.dtype))
        return out

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.weight, self.weight_scale, dtype)

    def _can_fp8_mm(self, x: torch.Tensor) -> bool:
        if not (self.fp8_matmul and self.weight.dtype == torch.float8_e4m3fn and self.weight_scale.numel() == 1
                and x.dtype in (torch.bfloat16, torch.float16) and self.in_features % 16 == 0
                and self.out_features % 16 == 0 and x.is_cuda):
            return False
        ok = QuantLinear._mm_ok.get(x.device)
        if ok is None:
            ok = QuantLinear._mm_ok[x.device] = fp8_matmul_supported(x.device)
        return ok

    def _fp8_mm(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # Activations: one dynamic per-tensor scale (max|x| / 448), kept on the device (no host sync).
        x2 = x.reshape(-1, self.in_features)
        x_scale = (x2.abs().amax().float() / FP8_MAX).clamp_(min=1e-12)
        xq = (x2 / x_scale.to(x2.dtype)).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(xq, self.weight.t(), scale_a=x_scale, scale_b=self.weight_scale.float().reshape(()),
                               bias=bias, out_dtype=x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


def to_quant_linear(linear: nn.Linear, storage: torch.dtype, scale_shape: tuple[int, ...] = (),
                    input_scale: tuple[int, ...] | None = None, fp8_matmul: bool = True) -> QuantLinear:
    """Turn ``linear`` into a :class:`QuantLinear` in place, with meta placeholders for the codes and scales (to be
    filled by the loader). Its bias (if any) is left as it is."""
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
    linear.__class__ = QuantLinear
    linear._parameters["weight"] = nn.Parameter(
        torch.empty(linear.out_features, linear.in_features, dtype=storage, device="meta"), requires_grad=False)
    linear.register_buffer("weight_scale", torch.empty(scale_shape, dtype=torch.float32, device="meta"))
    if input_scale is not None:  # kept for reference; the fp8 matmul scales activations per call instead
        linear.register_buffer("input_scale", torch.empty(input_scale, dtype=torch.float32, device="meta"))
    if not fp8_matmul:
        linear.fp8_matmul = False
    return linear
