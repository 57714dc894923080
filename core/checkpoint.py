"""Checkpoint loading shared by every model in the pack.

Only safetensors files are read; nothing is ever unpickled. The module knows three layouts:

* a diffusers-style folder: ``config.json`` next to ``diffusion_pytorch_model.safetensors`` or next to
  ``diffusion_pytorch_model.safetensors.index.json`` and the shards its ``weight_map`` names;
* a single ``.safetensors`` file, whose config may sit in the header metadata under ``"config"``
  (the LTX single-file convention) or in a JSON file beside it;
* an ``.index.json`` file given directly.

Weights go into a module that is usually built on the ``meta`` device, so no memory is spent on a
random initialisation. ``load_into`` checks everything it can from the file headers first (sizes,
key names, shapes), then reads tensor by tensor from the memory-mapped files, sends each one straight
to its device and dtype and installs it in the module. At most one tensor beyond the ones the module
keeps exists at any time.

Buffers that are not saved in checkpoints (``persistent=False``, e.g. rotary tables) cannot be loaded.
A module that holds such buffers defines ``reset_non_persistent_buffers(self, device)``; ``load_into``
calls it on every submodule that has it once the weights are in, so the module can rebuild them on
the right device.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, Union

import torch
from safetensors import SafetensorError, safe_open

from . import quant

__all__ = [
    "CheckpointError",
    "refuse_pickle",
    "resolve_weight_files",
    "read_config",
    "safetensors_metadata",
    "metadata_config",
    "list_keys",
    "load_into",
]

PathLike = Union[str, os.PathLike]
KeyMap = Union[Mapping[str, str], Callable[[str], "str | None"], None]

# Formats we refuse because loading them means unpickling arbitrary code.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# Bits per element for the safetensors dtype names, used to check that each tensor's byte range
# matches its shape. Unknown names are left to safetensors itself.
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4,
}

_DTYPE_NAMES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}

_HALF = (torch.float16, torch.bfloat16)


class CheckpointError(ValueError):
    """A checkpoint could not be used; the message names the file, the problem and a way out."""


# --------------------------------------------------------------------------------------------------
# Finding files


def resolve_weight_files(path: PathLike, weight_name: str = "diffusion_pytorch_model") -> list[Path]:
    """Return the safetensors files that hold the weights at ``path``.

    ``path`` is a folder, a ``.safetensors`` file or a ``*.safetensors.index.json`` file. In a folder
    we look, in order, for ``{weight_name}.safetensors``, ``{weight_name}.safetensors.index.json``,
    the only ``*.safetensors.index.json`` and the only ``*.safetensors`` file.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or folder. Check the path of the checkpoint.")

    if p.is_file():
        if p.name.endswith(".index.json"):
            return _shards_from_index(p)
        if p.suffix == ".safetensors":
            return [p]
        if p.suffix in _PICKLE_SUFFIXES:
            raise _pickle_error(p)
        raise CheckpointError(
            f"{p}: not a .safetensors file or a .safetensors.index.json file; "
            "point the loader at the model's weights (or at its folder)."
        )

    single = p / f"{weight_name}.safetensors"
    if single.is_file():
        return [single]
    index = p / f"{weight_name}.safetensors.index.json"
    if index.is_file():
        return _shards_from_index(index)

    indexes = sorted(p.glob("*.safetensors.index.json"))
    if len(indexes) == 1:
        return _shards_from_index(indexes[0])
    files = sorted(p.glob("*.safetensors"))
    if len(files) == 1 and not indexes:
        return files

    if indexes or files:
        names = ", ".join(f.name for f in (indexes or files)[:6])
        raise CheckpointError(
            f"{p}: several candidate weight files ({names}) and none named "
            f"'{weight_name}.safetensors' or '{weight_name}.safetensors.index.json'; "
            "pass the file (or its index.json) instead of the folder."
        )
    pickles = sorted(f for f in p.iterdir() if f.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise _pickle_error(pickles[0])
    raise CheckpointError(
        f"{p}: no weights found (expected '{weight_name}.safetensors', "
        f"'{weight_name}.safetensors.index.json' or one *.safetensors file)."
    )


def refuse_pickle(path: PathLike) -> None:
    """Raise the "only safetensors" error when ``path`` is a pickle-based weight file: by its suffix (``.pt``,
    ``.pth``, ``.bin``, ``.ckpt``, ``.pkl``, ``.pickle``) or, whatever its name, by its first bytes (a zip archive,
    as ``torch.save`` writes, or a pickle stream). Anything else passes; the file is never unpickled."""
    p = Path(path).expanduser()
    if p.is_file() and (p.suffix.lower() in _PICKLE_SUFFIXES or _looks_pickled(p)):
        raise _pickle_error(p)


def _looks_pickled(file: Path) -> bool:
    """A zip archive (``torch.save``'s format since PyTorch 1.6) or a pickle stream (protocol 2 or later: older
    ``torch.save`` files and plain pickles). A safetensors file whose header length happens to start with the same
    bytes is told apart by the ``{`` that opens its JSON header at byte 8."""
    try:
        with open(file, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    if len(head) == 9 and head[8:9] == b"{":
        return False
    return head[:4] == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _pickle_error(file: Path) -> CheckpointError:
    return CheckpointError(
        f"{file}: only .safetensors weights are read (pickle-based {file.suffix} files are never "
        "loaded, since unpickling can run arbitrary code). Download the safetensors version of "
        "this model or convert it first."
    )


def _read_json(file: Path) -> object:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e}); the file is probably damaged, re-download it.") from None


def _shards_from_index(index: Path) -> list[Path]:
    data = _read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: no 'weight_map' in this index file, so its shards cannot be found.")
    shards = [index.parent / n for n in sorted({str(v) for v in weight_map.values()})]
    for s in shards:
        if s.suffix != ".safetensors":
            raise _pickle_error(s) if s.suffix in _PICKLE_SUFFIXES else CheckpointError(
                f"{index}: shard '{s.name}' is not a .safetensors file.")
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise CheckpointError(
            f"{index}: {len(missing)} of {len(shards)} shard files are missing ({shown}); "
            "the download is incomplete, fetch the missing files into the same folder."
        )
    return shards


# --------------------------------------------------------------------------------------------------
# Config


def read_config(path: PathLike, weight_name: str = "diffusion_pytorch_model") -> dict:
    """Return the model config for ``path`` as a dict.

    Folder: its ``config.json`` (or, without one, the ``"config"`` metadata of its single weight file).
    ``.safetensors`` file: the JSON in its ``"config"`` metadata, else ``config.json`` beside it, else
    ``{stem}.json`` beside it. Index file: ``config.json`` beside it.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or folder. Check the path of the checkpoint.")

    if p.is_dir():
        if (p / "config.json").is_file():
            return _config_from_json(p / "config.json")
        files = resolve_weight_files(p, weight_name)
        if len(files) == 1:
            cfg = metadata_config(files[0])
            if cfg is not None:
                return cfg
        raise CheckpointError(f"{p}: no config.json in this folder; the model folder is incomplete.")

    if p.suffix.lower() in _PICKLE_SUFFIXES:
        raise _pickle_error(p)
    candidates = [p.parent / "config.json"]
    if p.suffix == ".safetensors":
        cfg = metadata_config(p)
        if cfg is not None:
            return cfg
        candidates.append(p.with_suffix(".json"))
    for c in candidates:
        if c.is_file():
            return _config_from_json(c)
    raise CheckpointError(
        f"{p}: no config found (no 'config' entry in the file's metadata, no "
        + " or ".join(c.name for c in candidates)
        + " beside it). Put the model's config.json next to the weights."
    )


def _config_from_json(file: Path) -> dict:
    cfg = _read_json(file)
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{file}: a config must be a JSON object, found {type(cfg).__name__}.")
    return cfg


def metadata_config(file: PathLike, metadata: dict | None = None) -> dict | None:
    """The JSON object stored under ``config`` in a safetensors file's metadata (read from ``file`` unless
    ``metadata`` is given), or None if absent."""
    file = Path(file)
    text = (safetensors_metadata(file) if metadata is None else metadata).get("config")
    if text is None:
        return None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: the 'config' entry in the metadata is not valid JSON ({e}).") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{file}: the 'config' entry in the metadata is not a JSON object.")
    return cfg


# --------------------------------------------------------------------------------------------------
# Headers


def _read_header(file: Path) -> tuple[dict, dict]:
    """Parse and check one file's header: returns (metadata, {key: entry}).

    A safetensors file is an 8-byte little-endian header length, a JSON header, then the data. Each
    entry's ``data_offsets`` are relative to the start of the data, so a file shorter than the
    largest end offset was cut off, which we report here before anything is loaded.
    """
    if file.suffix.lower() in _PICKLE_SUFFIXES:
        raise _pickle_error(file)
    bad = f"{file}: is truncated or not a safetensors file"
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{bad} (only {size} bytes). Re-download it.")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                refuse_pickle(file)
                raise CheckpointError(
                    f"{bad} (header claims {n} bytes, file has {size}). Re-download it.")
            raw = fh.read(n)
    except OSError as e:
        raise CheckpointError(f"{file}: cannot be read ({e}).") from None
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        refuse_pickle(file)
        raise CheckpointError(f"{bad} (its header is not valid JSON). Re-download it.") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{bad} (its header is not a JSON object). Re-download it.")

    metadata = header.pop("__metadata__", None) or {}
    data_size = size - 8 - n
    end_max = 0
    for key, entry in header.items():
        try:
            begin, end = (int(x) for x in entry["data_offsets"])
            shape = [int(s) for s in entry["shape"]]
            dt = str(entry["dtype"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{bad} (malformed header entry for '{key}'). Re-download it.") from None
        bits = _DTYPE_BITS.get(dt)
        numel = 1
        for s in shape:
            numel *= s
        if end < begin or (bits is not None and (end - begin) * 8 != numel * bits):
            raise CheckpointError(f"{bad} (bad byte range for '{key}'). Re-download it.")
        end_max = max(end_max, end)
    if end_max > data_size:
        raise CheckpointError(
            f"{bad}: its header needs {8 + n + end_max} bytes but the file has {size} "
            f"({8 + n + end_max - size} missing). The download was probably cut off; re-download it."
        )
    return {str(k): str(v) for k, v in metadata.items()}, header


def safetensors_metadata(file: PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (str -> str; empty if there is none)."""
    return _read_header(Path(file))[0]


def list_keys(files: PathLike | Iterable[PathLike]) -> dict[str, tuple[Path, tuple[int, ...], str]]:
    """Map every tensor name to (file, shape, safetensors dtype name such as "BF16").

    Reads only the headers, so it is fast on any checkpoint size. ``files`` may be one path (file,
    folder or index, resolved with :func:`resolve_weight_files`) or a list of safetensors files.
    """
    out: dict[str, tuple[Path, tuple[int, ...], str]] = {}
    for f in _as_files(files):
        for key, entry in _read_header(f)[1].items():
            if key in out:
                raise CheckpointError(
                    f"{f}: tensor '{key}' is also stored in {out[key][0].name}; the shards overlap, "
                    "so the checkpoint is inconsistent."
                )
            out[key] = (f, tuple(int(s) for s in entry["shape"]), str(entry["dtype"]))
    return out


def _as_files(files: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(files, (str, os.PathLike)):
        return resolve_weight_files(files)
    out = [Path(f) for f in files]
    for f in out:
        if f.suffix in _PICKLE_SUFFIXES:
            raise _pickle_error(f)
        if not f.is_file():
            raise CheckpointError(f"{f}: no such file. Check the path of the checkpoint.")
    return out


# --------------------------------------------------------------------------------------------------
# Loading


def load_into(
    module: torch.nn.Module,
    files: PathLike | Iterable[PathLike],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    keep_dtype: Sequence[str] = (),
    key_map: KeyMap = None,
    strip_prefix: str | None = None,
    strict: bool = True,
    ignore: Sequence[str] = (),
    quant_layers: Sequence[str] | None = None,
    store_fp8: Sequence[str] = (),
) -> None:
    """Load safetensors weights into ``module`` (which may live on ``meta``), in place.

    Key names go through three steps: ``strip_prefix`` keeps only the keys that start with it and
    removes it; ``key_map`` renames (a dict of alias prefix -> real prefix, or a callable returning
    the new name or None to drop the key); ``ignore`` drops keys starting with any of its prefixes
    (checked before and after renaming). What is left must match the module's parameters and
    persistent buffers: with ``strict`` a missing or unexpected name is an error, and a shape
    mismatch always is. All of this is checked from the headers before any tensor is read.

    Floating tensors are cast to ``dtype`` (names starting with a ``keep_dtype`` prefix get float32
    instead when ``dtype`` is float16/bfloat16); with ``dtype=None`` a tensor takes the dtype of the
    parameter it replaces, or keeps the file's dtype when that parameter is on ``meta``. Parameters
    come out with ``requires_grad=False``. Afterwards every submodule that defines
    ``reset_non_persistent_buffers(device)`` has it called, and nothing may be left on ``meta``.

    Quantized checkpoints (``core.quant``: ComfyUI's scaled fp8 files, old and new, and ModelOpt fp8 exports) load:
    an ``nn.Linear`` whose weight the file holds as fp8 codes with a scale becomes a ``QuantLinear`` keeping codes and
    scale (when its name starts with a ``quant_layers`` prefix; ``None``: any Linear); any other quantized tensor is
    dequantized at load to its load dtype. Layouts that cannot be loaded (fp4, mxfp8, int8, ...) are refused with
    one clear error. ``store_fp8``: prefixes of module names whose Linear layers are stored as fp8 (e4m3, one scale per
    weight) at load from a high-precision file, one layer at a time; their biases stay as they are.
    """
    device = torch.device(device)
    dtype = _as_dtype(dtype)
    file_list = _as_files(files)
    if not file_list:
        raise CheckpointError("no weight files given to load.")
    what = file_list[0] if len(file_list) == 1 else f"{file_list[0].parent} ({len(file_list)} shards)"
    keep_dtype, ignore = tuple(keep_dtype), tuple(ignore)

    # 1. Headers: validate every file (truncation etc.) before anything is loaded. Opening each one
    #    with safetensors too lets its own, stricter header checks fail early rather than half-way.
    headers = {f: _read_header(f)[1] for f in file_list}
    for f in file_list:
        try:
            with safe_open(str(f), framework="pt", device="cpu"):
                pass
        except SafetensorError as e:
            raise CheckpointError(f"{f}: is truncated or not a safetensors file ({e}). Re-download it.") from None

    # 2. Plan: target name -> (file, key in file, shape).
    plan: dict[str, tuple[Path, str, tuple[int, ...]]] = {}
    file_dtypes: dict[str, str] = {}
    for f, header in headers.items():
        for key, entry in header.items():
            name = _target_name(key, strip_prefix, key_map, ignore)
            if name is None:
                continue
            if name in plan:
                other = plan[name]
                raise CheckpointError(
                    f"{what}: both '{other[1]}' ({other[0].name}) and '{key}' ({f.name}) load into "
                    f"'{name}'; drop one of them with `ignore` or `key_map`."
                )
            plan[name] = (f, key, tuple(int(s) for s in entry["shape"]))
            file_dtypes[name] = str(entry["dtype"])

    # 2b. Quantized layers: fp8 codes + scales become QuantLinear layers (or are dequantized at load).
    owners = dict(module.named_modules(remove_duplicate=False))
    dequant_at_load, store_at_load = _plan_quantized(module, owners, plan, file_dtypes, headers, what,
                                                     quant_layers, tuple(store_fp8))

    # 3. Compare with the module.
    targets = module.state_dict(keep_vars=True)  # parameters and persistent buffers
    missing = [n for n in targets if n not in plan and n not in store_at_load]
    unexpected = [n for n in plan if n not in targets]
    if strict and (missing or unexpected):
        raise CheckpointError(_mismatch_message(what, module, missing, unexpected))
    for name, (f, key, shape) in plan.items():
        t = targets.get(name)
        if t is not None and tuple(t.shape) != shape:
            raise CheckpointError(
                f"{f}: tensor '{key}' has shape {list(shape)} but {type(module).__name__}.{name} "
                f"expects {list(t.shape)}; the checkpoint belongs to a different model size or "
                "variant than the config describes."
            )

    # 4. Read tensor by tensor, one open file at a time, and install each one right away.
    owners = dict(module.named_modules(remove_duplicate=False))
    by_file: dict[Path, list[str]] = {}
    for name, (f, _, _) in plan.items():
        if name in targets:
            by_file.setdefault(f, []).append(name)
    for f, names in by_file.items():
        try:
            with safe_open(str(f), framework="pt", device="cpu") as sf:
                for name in names:
                    key = plan[name][1]
                    tensor = sf.get_tensor(key)
                    old = targets[name]
                    owner_name, _, leaf = name.rpartition(".")
                    owner = owners[owner_name]
                    if isinstance(owner, quant.QuantLinear) and leaf in ("weight", "weight_scale", "input_scale"):
                        if leaf == "weight" and name in store_at_load:  # high precision in the file: quantize here
                            codes, scale = quant.quantize_fp8(tensor.to(device))
                            _install(owners, name, codes, old)
                            _install(owners, owner_name + ".weight_scale", scale, targets[owner_name + ".weight_scale"])
                            del codes, scale
                        elif leaf == "weight":  # fp8 codes as stored (older files keep them as uint8)
                            tensor = tensor.view(old.dtype) if tensor.dtype == torch.uint8 else tensor.to(old.dtype)
                            _install(owners, name, tensor.to(device), old)
                        else:
                            _install(owners, name, tensor.to(device=device, dtype=torch.float32), old)
                        del tensor
                        continue
                    if name in dequant_at_load:
                        sfile, skey, storage = dequant_at_load[name]
                        with safe_open(str(sfile), framework="pt", device="cpu") as sf2:
                            scale = sf2.get_tensor(skey)
                        tensor = tensor.view(storage) if tensor.dtype == torch.uint8 else tensor
                        tensor = quant.dequantize(tensor.to(device), scale.to(device), torch.float32)
                    tensor = tensor.to(device=device, dtype=_dtype_for(name, tensor, old, dtype, keep_dtype))
                    _install(owners, name, tensor, old)
                    del tensor
        except SafetensorError as e:
            raise CheckpointError(f"{f}: is truncated or not a safetensors file ({e}). Re-download it.") from None

    # 5. Buffers that checkpoints do not carry, then the final check.
    for sub in module.modules():
        hook = getattr(sub, "reset_non_persistent_buffers", None)
        if callable(hook):
            hook(device)
    left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if left and torch.device(device).type != "meta":  # (a meta target: shapes only, e.g. device-placement checks)
        raise CheckpointError(
            f"{what}: after loading, {len(left)} tensors of {type(module).__name__} are still on the meta "
            f"device ({_few(left)}). Weights missing from the checkpoint need strict loading or a real "
            "initialisation; non-persistent buffers must be rebuilt by a "
            "`reset_non_persistent_buffers(device)` method on their module."
        )


# Linear layers whose class may be swapped for QuantLinear (a subclass with its own forward keeps its weights wide).
_PLAIN_LINEAR = (torch.nn.Linear, quant.QuantLinear)


def _plan_quantized(module, owners, plan, file_dtypes, headers, what, quant_layers, store_fp8):
    """Find the quantized layers of ``plan`` (core.quant), turn their Linear owners into QuantLinear layers and
    rename their scales in ``plan`` to the QuantLinear names; mark Linear layers under ``store_fp8`` for
    quantization at load. Returns (dequant_at_load: weight name -> (file, scale key, fp8 dtype),
    store_at_load: the derived ``weight_scale`` names and the weights to quantize)."""
    entries = {n: (file_dtypes[n], shape) for n, (_, _, shape) in plan.items()}

    def read(name: str) -> torch.Tensor:
        f, key, _ = plan[name]
        with safe_open(str(f), framework="pt", device="cpu") as sf:
            return sf.get_tensor(key)

    metadata: dict[str, str] = {}
    if any(is_quantization_key(plan[n][1]) or file_dtypes[n] in ("F8_E4M3", "F8_E5M2") for n in plan):
        for f in dict.fromkeys(f for f, _, _ in plan.values()):
            metadata.update(_read_header(f)[0])
    if "_quantization_metadata" in metadata:  # ComfyUI's per-file layer table names file keys: rename its layers
        try:
            layers = json.loads(metadata["_quantization_metadata"])["layers"]
            by_file_layer = {plan[n][1][: -len(".weight")]: n[: -len(".weight")] for n in plan if n.endswith(".weight")}
            metadata["_quantization_metadata"] = json.dumps(
                {"layers": {by_file_layer[k]: v for k, v in layers.items() if k in by_file_layer}})
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CheckpointError(f"{what}: its _quantization_metadata is not valid JSON; re-download it.") from None
    try:
        qplan = quant.recognise(entries, read, metadata)
    except quant.QuantFormatError as e:
        key = plan[e.key][1] if e.key in plan else e.key
        raise CheckpointError(
            f"{what}: holds quantized weights ('{key}': {e.reason}), which this version does not load. Use the "
            "bf16, fp16 or fp8 (scaled float8_e4m3fn / float8_e5m2) file of this model."
        ) from None
    for name in qplan.drop:
        plan.pop(name, None)
    dequant_at_load: dict[str, tuple[Path, str, torch.dtype]] = {}
    for layer, lq in qplan.layers.items():
        owner = owners.get(layer)
        wshape = plan[lq.weight][2]
        as_linear = (type(owner) in _PLAIN_LINEAR and (quant_layers is None or layer.startswith(tuple(quant_layers)))
                     and tuple(wshape) == (owner.out_features, owner.in_features))
        if as_linear:
            quant.to_quant_linear(owner, lq.storage, lq.scale_shape,
                                  lq.input_scale_shape if lq.input_scale else None, lq.fp8_matmul)
            plan[f"{layer}.weight_scale"] = plan.pop(lq.weight_scale)
            if lq.input_scale:
                plan[f"{layer}.input_scale"] = plan.pop(lq.input_scale)
        else:
            f, key, _ = plan.pop(lq.weight_scale)
            dequant_at_load[lq.weight] = (f, key, lq.storage)
            if lq.input_scale:
                plan.pop(lq.input_scale)
    store_at_load: set[str] = set()
    if store_fp8:
        for name, sub in owners.items():
            if (name.startswith(store_fp8) and type(sub) is torch.nn.Linear
                    and f"{name}.weight" in plan and name not in qplan.layers):
                quant.to_quant_linear(sub, torch.float8_e4m3fn)
                store_at_load.update((f"{name}.weight", f"{name}.weight_scale"))
    return dequant_at_load, store_at_load


# Tensors that only quantized checkpoints carry: ComfyUI's per-layer format (comfy_quant + scales), its older
# scaled-fp8 files, and ModelOpt's quantizer states.
_QUANTIZATION_NAMES = frozenset({"comfy_quant", "weight_scale", "weight_scale_2", "input_scale", "scale_weight",
                                 "scale_input", "scaled_fp8"})


def is_quantization_key(key: str) -> bool:
    """True for a tensor that only quantized checkpoints carry (a scale, ComfyUI's comfy_quant, ...)."""
    return key.rsplit(".", 1)[-1] in _QUANTIZATION_NAMES or "_quantizer." in key


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPE_NAMES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise CheckpointError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPE_NAMES)}.") from None


def _target_name(key: str, strip_prefix: str | None, key_map: KeyMap, ignore: tuple[str, ...]) -> str | None:
    """The module name a file key loads into, or None when the key is not for this module."""
    if strip_prefix:
        if not key.startswith(strip_prefix):
            return None
        key = key[len(strip_prefix):]
    if key.startswith(ignore):
        return None
    if callable(key_map):
        key = key_map(key)
    elif key_map:
        for alias in sorted(key_map, key=len, reverse=True):  # longest alias wins
            if key.startswith(alias):
                key = key_map[alias] + key[len(alias):]
                break
    if key is None or key.startswith(ignore):
        return None
    return key


def _dtype_for(name: str, tensor: torch.Tensor, old: torch.Tensor, dtype: torch.dtype | None,
               keep_dtype: tuple[str, ...]) -> torch.dtype:
    if not tensor.is_floating_point():
        return tensor.dtype
    if dtype is None:
        return tensor.dtype if old.is_meta else old.dtype
    if dtype in _HALF and keep_dtype and name.startswith(keep_dtype):
        return torch.float32
    return dtype


def _install(owners: dict[str, torch.nn.Module], name: str, tensor: torch.Tensor, old: torch.Tensor) -> None:
    """Put ``tensor`` in place of the parameter or buffer ``name`` (replacing it, not copying into it)."""
    owner_name, _, leaf = name.rpartition(".")
    owner = owners[owner_name]
    if isinstance(old, torch.nn.Parameter) or leaf in owner._parameters:
        owner._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=False)
    else:
        owner._buffers[leaf] = tensor


def _few(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def _mismatch_message(what, module, missing, unexpected) -> str:
    cls = type(module).__name__
    parts = [f"{what} does not look like a {cls} checkpoint:"]
    if missing:
        parts.append(f"{len(missing)} missing keys ({_few(missing)});")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_few(unexpected)}).")
    # A common cause is a prefix the loader was not told about: suggest it when one fits.
    for m in missing[:20]:
        for u in unexpected:
            if u.endswith("." + m):
                parts.append(f"The file's keys carry the prefix '{u[: -len(m)]}': pass strip_prefix for it.")
                break
        else:
            continue
        break
    else:
        parts.append("Check that the file matches the selected model and config.")
    return " ".join(parts)
