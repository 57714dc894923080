"""Model-agnostic LoRA merging for safetensors LoRA files (the LTX convention, usable for any model).

Rule (ltx-core ``fuse_loras``): for every module weight ``W`` with a pair
``<prefix><path>.lora_A.weight`` (A, [r, in, ...]) and ``<prefix><path>.lora_B.weight`` (B, [out, r, 1...])
in the file,

    W' = W + strength * (B @ A)

with no alpha / rank scaling. ``.alpha`` entries, which some trainers write, are therefore ignored.
Here the product and the sum are computed in float32 and the result is rounded once to the weight's
dtype. (ltx-core computes the product and the sum in bfloat16; the results agree to bf16 rounding.)

Changing the strength without reloading the base weights. :func:`merge_lora` returns a
:class:`LoraHandle`; ``handle.set_strength(s)`` gives weights that are **bit-identical to a fresh merge
at strength s onto the original weights**, and ``set_strength(0)`` / ``remove()`` restores the original
weights exactly, for every floating dtype. This is done without a copy of the base weights:

* at merge time the original weight is recovered from the merged one as ``round(W' - strength * dW)``
  and compared bit for bit with the original; the (usually few) elements where rounding lost
  information, those whose merged value moved to a coarser binade, are stored as a sparse correction
  (flat indices + original values). If they are so many that the sparse form would be larger than the
  weight, a dense copy of that one weight is kept instead, so memory never exceeds one copy;
* a strength change un-merges exactly (recovery + correction) and merges again at the new strength.

So repeated strength changes never drift, unlike adding ``(s_new - s_old) * dW`` to the rounded
weight. The cost of a change is one ``B @ A`` product per weight and two elementwise passes; the LoRA
factors stay on the weight's device in the file's dtype.

Several LoRAs on one module: merge them one after the other; each handle can change its strength later
in any order. A change un-merges the handles merged after it on the shared weights, changes this one and
merges them again, which keeps every weight equal to a fresh merge of all of them in merge order.

Key names. ``key_prefix`` (default ``"diffusion_model."``) is stripped from every LoRA key; the remaining
``<path>.lora_A.weight`` names the weight ``<path>.weight``, which ``key_map`` may rename (a dict of
prefix -> replacement prefix, longest first, or a callable returning the new name or None to skip the
key) before it is looked up in ``module.named_parameters()``. A LoRA key that matches no parameter is
an error that names the first unmatched keys; nothing is changed in that case.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Mapping, Union

import torch
from safetensors import SafetensorError, safe_open

from .checkpoint import CheckpointError, resolve_weight_files

__all__ = ["LoraError", "LoraHandle", "load_lora_state", "merge_lora"]

KeyMap = Union[Mapping[str, str], Callable[[str], Union[str, None]], None]
LoraSource = Union[str, os.PathLike, Iterable[Union[str, os.PathLike]], Mapping[str, torch.Tensor]]

_A, _B, _ALPHA = ".lora_A.weight", ".lora_B.weight", ".alpha"
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

_STACK_ATTR = "_merged_lora_handles"  # on the module: its handles in merge order


def _stack(module: torch.nn.Module) -> list:
    """The module's merged handles, kept on the module itself so they live and die with it."""
    return module.__dict__.setdefault(_STACK_ATTR, [])


class LoraError(CheckpointError):
    """A LoRA does not fit the module it is merged into; the message names the keys."""


def load_lora_state(source: LoraSource) -> dict[str, torch.Tensor]:
    """Read a LoRA: a ``.safetensors`` file, a folder / index resolved like checkpoints, several files
    (merged into one state; a key may appear once), or an already loaded state dict (returned as is)."""
    if isinstance(source, Mapping):
        return dict(source)
    paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    files: list[Path] = []
    for p in paths:
        files.extend(resolve_weight_files(p))
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt", device="cpu") as sf:
                for key in sf.keys():
                    if key in state:
                        raise LoraError(f"{f}: LoRA tensor '{key}' appears in more than one of the given files.")
                    state[key] = sf.get_tensor(key)
        except SafetensorError as e:
            raise LoraError(f"{f}: is truncated or not a safetensors file ({e}). Re-download it.") from None
    return state


def _rename(name: str, key_map: KeyMap) -> str | None:
    if callable(key_map):
        return key_map(name)
    if key_map:
        for alias in sorted(key_map, key=len, reverse=True):
            if name.startswith(alias):
                return key_map[alias] + name[len(alias):]
    return name


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _pairs(state: Mapping[str, torch.Tensor], module: torch.nn.Module, key_prefix: str | None,
           key_map: KeyMap, what: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Parameter name -> (A, B), with every key and shape checked first."""
    params = dict(module.named_parameters())
    prefix = key_prefix or ""
    halves: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    unmatched: list[str] = []
    not_lora: list[str] = []
    for key, tensor in state.items():
        if key.endswith(_ALPHA):
            continue
        if not key.startswith(prefix):
            unmatched.append(key)
            continue
        rest = key[len(prefix):]
        if rest.endswith(_A):
            half, base = "A", rest[: -len(_A)]
        elif rest.endswith(_B):
            half, base = "B", rest[: -len(_B)]
        else:
            not_lora.append(key)
            continue
        name = _rename(base + ".weight", key_map)
        if name is None:
            continue
        if name not in params:
            unmatched.append(key)
            continue
        halves.setdefault(name, {})[half] = (key, tensor)
    if not_lora:
        raise LoraError(f"{what}: {len(not_lora)} keys are not LoRA factors (expected '*{_A}' / '*{_B}'): "
                        f"{_few(not_lora)}.")
    if unmatched:
        hint = ""
        if prefix and not any(k.startswith(prefix) for k in unmatched[:1]):
            hint = f" The LoRA keys do not start with key_prefix '{prefix}'; pass the prefix they use."
        raise LoraError(
            f"{what}: {len(unmatched)} LoRA keys match no weight of {type(module).__name__} "
            f"(first: {_few(unmatched)}).{hint} The LoRA belongs to another model, or needs key_prefix / key_map."
        )
    if not halves:
        raise LoraError(f"{what}: the LoRA holds no '*{_A}' / '*{_B}' pairs; nothing to merge.")

    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, pair in halves.items():
        if set(pair) != {"A", "B"}:
            have = next(iter(pair.values()))[0]
            raise LoraError(f"{what}: '{have}' has no matching {'lora_B' if 'A' in pair else 'lora_A'} factor.")
        (ka, a), (kb, b) = pair["A"], pair["B"]
        w = params[name]
        if w.is_meta:
            raise LoraError(f"{what}: {type(module).__name__}.{name} is on the meta device; load the model first.")
        if not w.is_floating_point():
            raise LoraError(f"{what}: {type(module).__name__}.{name} is {w.dtype}, not a floating weight.")
        ok = (a.ndim >= 2 and b.ndim >= 2 and b.shape[0] == w.shape[0] and b.shape[1] == a.shape[0]
              and all(s == 1 for s in b.shape[2:])
              and a[0].numel() * b.shape[0] == w.numel())
        if not ok:
            raise LoraError(
                f"{what}: shapes do not fit: '{ka}' {list(a.shape)} and '{kb}' {list(b.shape)} cannot update "
                f"{type(module).__name__}.{name} {list(w.shape)} (need B [out, r], A [r, in] with out x in = weight)."
            )
        out[name] = (a, b)
    return out


class LoraHandle:
    """One merged LoRA. ``strength`` is the current value; see :meth:`set_strength` and :meth:`remove`."""

    def __init__(self, module: torch.nn.Module, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], what: str):
        self.module = module
        self.source = what
        self.strength = 0.0
        self._factors = factors
        self._fix: dict[str, object] = {}  # name -> None | (flat indices, values) | dense original weight
        self.removed = False

    @property
    def targets(self) -> list[str]:
        """Names of the parameters this LoRA changes."""
        return list(self._factors)

    # -- per-weight primitives ------------------------------------------------------------------------
    def _delta(self, name: str, w: torch.Tensor, strength: float) -> torch.Tensor:
        a, b = self._factors[name]
        d = b.flatten(1).to(w.device, torch.float32) @ a.flatten(1).to(w.device, torch.float32)
        return d.mul_(strength).view(w.shape)

    def _quant_owner(self, name: str):
        """The scaled-fp8 layer (core.quant.QuantLinear) holding weight ``name``, or None."""
        owner = self.module.get_submodule(name.rpartition(".")[0]) if "." in name else self.module
        return owner if name.endswith("weight") and hasattr(owner, "weight_scale") else None

    def _merge_one(self, name: str, strength: float) -> None:
        w = self.module.get_parameter(name)
        self._fix[name] = None
        quant = self._quant_owner(name)
        if quant is not None:  # fp8 codes would round the update away: the LoRA runs beside them instead
            terms = quant.__dict__.setdefault("lora_terms", {})
            if strength == 0:
                terms.pop(id(self), None)
            else:
                a, b = self._factors[name]
                terms[id(self)] = (a.flatten(1), b.flatten(1), float(strength))
            return
        if strength == 0:
            return
        d = self._delta(name, w, strength)
        new = (w.float() + d).to(w.dtype)
        back = (new.float() - d).to(w.dtype)
        iv = _INT_VIEW[w.element_size()]
        bad = back.contiguous().view(iv) != w.data.contiguous().view(iv)
        n = int(bad.sum())
        if n:
            if n * (8 + w.element_size()) < w.numel() * w.element_size():
                idx = bad.flatten().nonzero().squeeze(1)
                self._fix[name] = (idx, w.data.flatten()[idx])
            else:
                self._fix[name] = w.data.clone()
        w.data.copy_(new)

    def _unmerge_one(self, name: str) -> None:
        w = self.module.get_parameter(name)
        fix = self._fix.pop(name, None)
        quant = self._quant_owner(name)
        if quant is not None:
            quant.__dict__.get("lora_terms", {}).pop(id(self), None)
            return
        if self.strength == 0:
            return
        if isinstance(fix, torch.Tensor):
            w.data.copy_(fix)
            return
        back = (w.float() - self._delta(name, w, self.strength)).to(w.dtype).contiguous()
        if fix is not None:
            idx, vals = fix  # (moved along in case the model changed device since the merge)
            back.view(-1)[idx.to(w.device)] = vals.to(w.device)
        w.data.copy_(back)

    # -- public -----------------------------------------------------------------------------------------
    def set_strength(self, strength: float) -> None:
        """Change the strength in place; the weights equal a fresh merge at ``strength`` (0 = original)."""
        if self.removed:
            raise LoraError(f"{self.source}: this LoRA was removed from the model; merge it again.")
        strength = float(strength)
        if strength == self.strength:
            return
        stack = _stack(self.module)
        later = stack[stack.index(self) + 1:] if self in stack else []
        with torch.no_grad():
            for name in self._factors:
                above = [h for h in later if name in h._factors]
                for h in reversed(above):
                    h._unmerge_one(name)
                self._unmerge_one(name)
                self._merge_one(name, strength)
                for h in above:
                    h._merge_one(name, h.strength)
        self.strength = strength

    def remove(self) -> None:
        """Restore the weights this LoRA changed (bit-exact) and forget it."""
        if self.removed:
            return
        self.set_strength(0.0)
        stack = _stack(self.module)
        if self in stack:
            stack.remove(self)
        self._factors, self._fix, self.removed = {}, {}, True

    def __repr__(self) -> str:
        return f"LoraHandle({self.source!r}, strength={self.strength}, {len(self._factors)} weights)"


def merge_lora(
    module: torch.nn.Module,
    lora_files_or_state: LoraSource,
    strength: float = 1.0,
    *,
    key_prefix: str | None = "diffusion_model.",
    key_map: KeyMap = None,
) -> LoraHandle:
    """Merge a LoRA into ``module``'s weights in place: W += strength * (B @ A) (float32 math, one rounding).

    ``lora_files_or_state``: a ``.safetensors`` path, a list of them, or a state dict. Every key is checked
    (names, pairs, shapes) before any weight changes. Returns a :class:`LoraHandle` for later strength
    changes or exact removal.
    """
    if isinstance(lora_files_or_state, Mapping):
        what = "LoRA state dict"
    elif isinstance(lora_files_or_state, (str, os.PathLike)):
        what = str(lora_files_or_state)
    else:
        lora_files_or_state = list(lora_files_or_state)
        what = ", ".join(str(p) for p in lora_files_or_state)
    state = load_lora_state(lora_files_or_state)
    factors = _pairs(state, module, key_prefix, key_map, what)
    for name, (a, b) in factors.items():
        dev = module.get_parameter(name).device
        factors[name] = (a.to(dev), b.to(dev))
    handle = LoraHandle(module, factors, what)
    _stack(module).append(handle)
    handle.set_strength(strength)
    return handle


@contextmanager
def strength_scope(handle: LoraHandle | None):
    """``with strength_scope(handle) as use: use(s1); ...; use(s2); ...`` moves a merged LoRA between
    strengths (``use`` does nothing for ``handle=None``) and sets it back to its strength on entry when the
    block ends, errors and interruptions included."""
    if handle is None:
        yield lambda strength: None
        return
    before = handle.strength
    try:
        yield handle.set_strength
    finally:
        handle.set_strength(before)
