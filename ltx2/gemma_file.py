"""Gemma-3 (the LTX-2 / LTX-2.3 text encoder) from one ``.safetensors`` file, as ComfyUI users have it.

ComfyUI's repackaged ``models/text_encoders/gemma_3_12B_it.safetensors`` holds:

* the text weights under Hugging Face names with the ``model.`` prefix (``model.embed_tokens.weight``,
  ``model.layers.{i}.self_attn.{q,k,v,o}_proj.weight``, ``...self_attn.{q,k}_norm.weight``,
  ``...{input,post_attention,pre_feedforward,post_feedforward}_layernorm.weight``,
  ``...mlp.{gate,up,down}_proj.weight``, ``model.norm.weight``);
* the vision tower and projector (``vision_model.*``, ``multi_modal_projector.*``), ignored here;
* the SentencePiece tokenizer model as a uint8 tensor ``spiece_model``.

Files saved from ``transformers``' ``Gemma3ForConditionalGeneration`` are read too: their text weights sit
under ``language_model.model.`` (transformers 4) or ``model.language_model.`` (transformers 5).

The architecture comes from the ``config`` JSON in the header metadata when there is one (a Gemma-3 text
config, or a full Gemma-3 config whose ``text_config`` is used); otherwise the sizes are read from the tensor
shapes and everything else takes Gemma-3-12B's values (the text encoder of both LTX releases). The model is
``transformers.Gemma3TextModel`` built on the ``meta`` device and filled by :func:`core.checkpoint.load_into`
(memory-mapped, each tensor straight to its device and dtype); nothing is downloaded.

The tokenizer is the file's ``spiece_model`` read with the ``sentencepiece`` package
(:class:`SentencePieceGemmaTokenizer`, which tokenizes exactly like the Hugging Face Gemma tokenizer the
folder loader uses: BOS first, no EOS, special-token strings kept whole), or one given with ``tokenizer=``
(a Hugging Face tokenizer folder, ``tokenizer.json`` or ``tokenizer.model``), or one found beside the file.

Scaled fp8 files load (ComfyUI's ``gemma_3_12B_it_fp8_scaled.safetensors``: per-layer ``comfy_quant`` +
``weight_scale`` tensors, or the layer table in the ``_quantization_metadata`` header, or the older ``scaled_fp8`` /
``scale_weight`` form; see :mod:`core.quant`): the decoder layers' Linear weights (``q/k/v/o_proj``,
``gate/up/down_proj``) stay fp8 codes in :class:`core.quant.QuantLinear` layers (dequantized per call, or multiplied in
fp8 where the GPU can); any other quantized tensor (e.g. an fp8 ``embed_tokens``) and unscaled float8 weights are
widened at load, and norms and embeddings compute in the high-precision dtype (bf16 unless asked otherwise, never a
float8 type). ``store_fp8=True`` stores the decoder layers' Linear weights of a high-precision file as fp8 (one scale
per weight) at load. Other quantized layouts (nvfp4, mxfp8, int8) are refused with one error naming the file.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import torch

from ..core import quant
from ..core.checkpoint import (
    CheckpointError,
    list_keys,
    load_into,
    metadata_config,
    safetensors_metadata,
)

__all__ = [
    "GEMMA3_12B_DEFAULTS",
    "QUANT_LAYERS",
    "WEIGHT_DTYPES",
    "SentencePieceGemmaTokenizer",
    "find_text_prefix",
    "gemma_text_config",
    "load_gemma_single_file",
    "load_tokenizer",
    "text_key_map",
]

# Prefixes under which a single file may keep the Gemma-3 text model (ComfyUI / Gemma3ForCausalLM first).
TEXT_PREFIXES = ("model.", "model.language_model.", "language_model.model.", "")
_PROBE = "layers.0.self_attn.q_norm.weight"
_MODULE_HEADS = ("embed_tokens.", "layers.", "norm.")
_SPIECE_KEY = "spiece_model"
_FLOAT_DTYPES = {"F32", "F16", "BF16"}

# Gemma-3-12B (google/gemma-3-12b-it text_config; ComfyUI's Gemma3_12B_Config), legacy (transformers 4)
# field names, which transformers 5 converts to ``rope_parameters``. Every 6th layer is full attention.
GEMMA3_12B_DEFAULTS: dict[str, Any] = {
    "model_type": "gemma3_text",
    "vocab_size": 262208,
    "hidden_size": 3840,
    "intermediate_size": 15360,
    "num_hidden_layers": 48,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    "sliding_window": 1024,
    "sliding_window_pattern": 6,
    "attention_bias": False,
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
}
# Ids above the SentencePiece vocabulary that the Hugging Face Gemma-3 tokenizer adds (and ComfyUI too).
_GEMMA3_EXTRA_TOKENS = {"<image_soft_token>": 262144}
_GEMMA3_SPM_SIZE = 262144


# --------------------------------------------------------------------------------------------------
# Reading the header


def find_text_prefix(keys) -> str | None:
    """The prefix of the Gemma-3 text weights in a file's keys, or None if there are none."""
    for p in TEXT_PREFIXES:
        if p + _PROBE in keys and p + "embed_tokens.weight" in keys:
            return p
    for p in TEXT_PREFIXES:
        if p + _PROBE in keys:
            return p
    return None


def text_key_map(prefix: str):
    """File key -> ``Gemma3TextModel`` parameter name (None for the vision tower, projector, tokenizer...)."""

    def key_map(key: str) -> str | None:
        if key == quant.MARKER:
            return key
        if not key.startswith(prefix):
            return None
        name = key[len(prefix):]
        if name == quant.MARKER:  # the older scaled-fp8 files' marker: read by load_into, then dropped
            return name
        return name if name.startswith(_MODULE_HEADS) else None

    return key_map


def _not_gemma(file: Path, keys) -> CheckpointError:
    names = sorted(keys)
    few = ", ".join(names[:3]) or "(no tensors)"
    hint = ""
    if any(k.startswith("model.diffusion_model.") for k in names):
        hint = (" It looks like an LTX-2 model checkpoint; pass it as the checkpoint, and "
                "gemma_3_12B_it.safetensors as the text encoder.")
    elif any(k.endswith("post_feedforward_layernorm.weight") for k in names):
        hint = " It has Gemma layers without q_norm: probably Gemma-2, which LTX-2 does not use."
    elif any(k.startswith(("encoder.block.", "text_model.", "transformer.resblocks.")) for k in names):
        hint = " It looks like a T5 or CLIP text encoder."
    return CheckpointError(
        f"{file}: not a Gemma-3 text encoder (no 'model.layers.0.self_attn.q_norm.weight' or "
        f"'model.language_model.layers.0...' tensor; first keys: {few}).{hint} LTX-2 needs Gemma-3-12B, e.g. "
        "ComfyUI's gemma_3_12B_it.safetensors or the Hugging Face gemma-3-12b-it folder.")


_FP8_DTYPES = {"F8_E4M3", "F8_E5M2"}
# The Linear layers that may hold fp8 codes: those of the decoder layers (Gemma3TextModel names).
QUANT_LAYERS = ("layers.",)
WEIGHT_DTYPES = ("default", "fp8_e4m3fn")


def _refuse_layout(file: Path, key: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"{file}: a quantized Gemma-3 file in a layout this version does not load ('{key}': {reason}). Use the bf16 "
        "gemma_3_12B_it.safetensors or ComfyUI's scaled fp8 gemma_3_12B_it_fp8_scaled.safetensors (or the Hugging "
        "Face folder).")


def _check_quantisation(file: Path, keys, prefix: str, metadata: dict) -> bool:
    """Check the text tensors' dtypes and quantization layout from the header (the small ``comfy_quant`` JSON
    tensors are read); True when the file holds fp8 tensors. Scaled fp8 (core.quant) passes; nvfp4 / mxfp8 / int8
    and other non-float weights are refused with one error naming the file."""
    markers = (quant.MARKER, prefix + quant.MARKER)
    text = {k: (dt, shape) for k, (_, shape, dt) in keys.items()
            if (k.startswith(prefix) and k[len(prefix):].startswith(_MODULE_HEADS)) or k in markers}

    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as sf:  # read: the small comfy_quant JSON tensors
            plan = quant.recognise(text, sf.get_tensor, metadata)
    except quant.QuantFormatError as e:
        raise _refuse_layout(file, e.key, e.reason) from None
    except SafetensorError as e:
        raise CheckpointError(f"{file}: is truncated or not a safetensors file ({e}). Re-download it.") from None
    codes = {lq.weight for lq in plan.layers.values()}
    for k, (dt, _) in text.items():
        ok = (dt in _FLOAT_DTYPES or dt in _FP8_DTYPES or (dt == "U8" and (k in codes or k.endswith(".comfy_quant"))))
        if not ok:
            what = {"F4": "4-bit (fp4)", "I8": "int8", "U8": "uint8"}.get(dt, dt)
            raise _refuse_layout(file, k, f"a {what} tensor without a scaled fp8 layout")
    return any(dt in _FP8_DTYPES or k in codes for k, (dt, _) in text.items() if not k.endswith(quant.MARKER))


def _meta_text_config(file: Path, metadata: dict) -> dict | None:
    cfg = metadata_config(file, metadata)
    if cfg is None:
        return None
    if isinstance(cfg.get("text_config"), dict):
        kind = cfg.get("model_type")
        if kind not in (None, "gemma3"):
            raise CheckpointError(f"{file}: the metadata config describes a {kind!r} model, not Gemma-3.")
        cfg = cfg["text_config"]
    kind = cfg.get("model_type")
    if kind not in (None, "gemma3_text", "gemma3"):
        raise CheckpointError(
            f"{file}: the metadata config describes a {kind!r} model, not Gemma-3; LTX-2 needs Gemma-3.")
    return cfg


def _shape(file: Path, keys, name: str) -> tuple[int, ...]:
    entry = keys.get(name)
    if entry is None:
        raise CheckpointError(
            f"{file}: tensor '{name}' is missing, so the Gemma-3 text encoder is incomplete; re-download the file.")
    return entry[1]


def _dims_from_tensors(file: Path, keys, prefix: str) -> dict:
    vocab, hidden = _shape(file, keys, prefix + "embed_tokens.weight")
    pat = re.compile(re.escape(prefix) + r"layers\.(\d+)\.")
    layers = {int(m.group(1)) for k in keys if (m := pat.match(k))}
    n = max(layers) + 1
    if sorted(layers) != list(range(n)):
        gap = min(set(range(n)) - layers)
        raise CheckpointError(f"{file}: the Gemma-3 layers are not numbered 0..{n - 1} (layer {gap} is missing); "
                              "the file is incomplete, re-download it.")
    l0 = prefix + "layers.0."
    head_dim = _shape(file, keys, l0 + "self_attn.q_norm.weight")[0]
    q = _shape(file, keys, l0 + "self_attn.q_proj.weight")[0]
    kv = _shape(file, keys, l0 + "self_attn.k_proj.weight")[0]
    inter = _shape(file, keys, l0 + "mlp.gate_proj.weight")[0]
    if q % head_dim or kv % head_dim:
        raise CheckpointError(f"{file}: q_proj / k_proj widths {q} / {kv} are not multiples of the head size "
                              f"{head_dim} (from q_norm); this is not a Gemma-3 file.")
    return {"vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": n,
            "num_attention_heads": q // head_dim, "num_key_value_heads": kv // head_dim, "head_dim": head_dim,
            "query_pre_attn_scalar": head_dim, "intermediate_size": inter}


def gemma_text_config(file, keys=None, metadata: dict | None = None):
    """The ``transformers.Gemma3TextConfig`` of a single Gemma-3 file (metadata config, else tensor shapes
    with Gemma-3-12B's other settings)."""
    import transformers

    file = Path(file)
    keys = list_keys([file]) if keys is None else keys
    metadata = safetensors_metadata(file) if metadata is None else metadata
    prefix = find_text_prefix(keys)
    if prefix is None:
        raise _not_gemma(file, keys)
    cfg = _meta_text_config(file, metadata)
    if cfg is None:
        cfg = dict(GEMMA3_12B_DEFAULTS)
        cfg.update(_dims_from_tensors(file, keys, prefix))
        pattern = cfg["sliding_window_pattern"]
        cfg["layer_types"] = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                              for i in range(cfg["num_hidden_layers"])]
    cfg = {k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype", "dtype", "transformers_version")}
    cfg["model_type"] = "gemma3_text"
    try:
        return transformers.Gemma3TextConfig.from_dict(cfg)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{file}: the Gemma-3 config could not be built ({e}).") from None


# --------------------------------------------------------------------------------------------------
# Tokenizer


def _sentencepiece():
    try:
        import sentencepiece
    except ImportError:
        raise CheckpointError(
            "reading the Gemma tokenizer of a single-file text encoder needs the 'sentencepiece' package "
            "(ComfyUI already requires it): pip install sentencepiece") from None
    return sentencepiece


class SentencePieceGemmaTokenizer:
    """A SentencePiece Gemma tokenizer with the calling convention of a Hugging Face tokenizer.

    It gives the ids of the Hugging Face Gemma tokenizer: the text is split at special-token strings
    (control / unknown pieces such as ``<bos>``, kept whole as HF's added tokens are), the rest is encoded
    by SentencePiece (user-defined pieces such as ``<start_of_turn>`` are matched by SentencePiece itself),
    BOS is prepended and no EOS appended. Padding follows ``padding_side`` (LTX-2 pads on the left) with
    ``pad_token_id``; truncation keeps the first ``max_length`` tokens.
    """

    padding_side = "left"
    truncation_side = "right"
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, model_proto: bytes, *, add_bos: bool = True, add_eos: bool = False,
                 extra_special_tokens: dict[str, int] | None = None, name: str = "spiece_model"):
        spm = _sentencepiece()
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(bytes(model_proto))
        except (RuntimeError, OSError, TypeError) as e:
            raise CheckpointError(f"{name}: not a valid SentencePiece model ({e}).") from None
        self.name = name
        self.add_bos, self.add_eos = add_bos, add_eos
        n = self.sp.get_piece_size()
        self._size = n
        specials = {self.sp.id_to_piece(i): i for i in range(n) if self.sp.is_control(i) or self.sp.is_unknown(i)}
        if extra_special_tokens is None and n == _GEMMA3_SPM_SIZE:
            extra_special_tokens = _GEMMA3_EXTRA_TOKENS
        for tok, i in (extra_special_tokens or {}).items():
            specials.setdefault(tok, int(i))
            self._size = max(self._size, int(i) + 1)
        self.special_tokens = {t: i for t, i in specials.items() if t}
        pieces = sorted(self.special_tokens, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(t) for t in pieces) + ")") if pieces else None
        self._pad_id = self._id_or_none(self.sp.pad_id())

    @classmethod
    def from_file(cls, path, **kw) -> "SentencePieceGemmaTokenizer":
        p = Path(path)
        return cls(p.read_bytes(), name=str(p), **kw)

    def _id_or_none(self, i: int) -> int | None:
        return None if i is None or i < 0 else int(i)

    def _piece(self, i: int | None) -> str | None:
        return None if i is None else self.sp.id_to_piece(i)

    # Hugging Face-style attributes --------------------------------------------------------------
    @property
    def bos_token_id(self) -> int | None:
        return self._id_or_none(self.sp.bos_id())

    @property
    def eos_token_id(self) -> int | None:
        return self._id_or_none(self.sp.eos_id())

    @property
    def unk_token_id(self) -> int | None:
        return self._id_or_none(self.sp.unk_id())

    @property
    def pad_token_id(self) -> int | None:
        return self._pad_id

    bos_token = property(lambda self: self._piece(self.bos_token_id))
    eos_token = property(lambda self: self._piece(self.eos_token_id))
    unk_token = property(lambda self: self._piece(self.unk_token_id))

    @property
    def pad_token(self) -> str | None:
        return self._piece(self._pad_id)

    @pad_token.setter
    def pad_token(self, token: str | None) -> None:
        self._pad_id = None if token is None else self.convert_tokens_to_ids(token)

    def __len__(self) -> int:
        return self._size

    @property
    def vocab_size(self) -> int:
        return self._size

    def convert_tokens_to_ids(self, token: str) -> int:
        if token in self.special_tokens:
            return self.special_tokens[token]
        return int(self.sp.piece_to_id(token))

    # Encoding ------------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids: list[int] = []
        parts = self._split.split(text) if self._split is not None else [text]
        for part in parts:
            if not part:
                continue
            if part in self.special_tokens:
                ids.append(self.special_tokens[part])
            else:
                ids.extend(self.sp.encode(part, add_bos=False, add_eos=False))
        if add_special_tokens:
            if self.add_bos and self.bos_token_id is not None:
                ids.insert(0, self.bos_token_id)
            if self.add_eos and self.eos_token_id is not None:
                ids.append(self.eos_token_id)
        return ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        if torch.is_tensor(ids):
            ids = ids.tolist()
        inverse = {i: t for t, i in self.special_tokens.items()}
        out, run = [], []
        for i in ids:
            i = int(i)
            if i in inverse:
                if run:
                    out.append(self.sp.decode(run))
                    run = []
                if not skip_special_tokens:
                    out.append(inverse[i])
            else:
                run.append(i)
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)

    def __call__(self, text: str | Sequence[str], *, padding: bool | str = False, max_length: int | None = None,
                 truncation: bool = False, return_tensors: str | None = None, add_special_tokens: bool = True,
                 return_attention_mask: bool = True, **unused) -> dict:
        single = isinstance(text, str)
        seqs = [self.encode(t, add_special_tokens) for t in ([text] if single else text)]
        if truncation and max_length is not None:
            keep_end = self.truncation_side == "left"
            seqs = [s[max(0, len(s) - max_length):] if keep_end else s[:max_length] for s in seqs]
        if padding in (True, "longest"):
            width = max(len(s) for s in seqs)
        elif padding == "max_length":
            width = max_length if max_length is not None else max(len(s) for s in seqs)
        else:
            width = None
        masks = [[1] * len(s) for s in seqs]
        if width is not None:
            if self.pad_token_id is None:
                raise ValueError(f"{self.name}: the tokenizer has no pad token; set tokenizer.pad_token first.")
            for s, m in zip(seqs, masks):
                fill = width - len(s)
                if fill > 0:
                    if self.padding_side == "left":
                        s[:0], m[:0] = [self.pad_token_id] * fill, [0] * fill
                    else:
                        s.extend([self.pad_token_id] * fill)
                        m.extend([0] * fill)
        if return_tensors == "pt":
            if len({len(s) for s in seqs}) > 1:
                raise ValueError("sequences of different lengths cannot become one tensor; pass padding=True.")
            out = {"input_ids": torch.tensor(seqs, dtype=torch.long),
                   "attention_mask": torch.tensor(masks, dtype=torch.long)}
        elif single:
            out = {"input_ids": seqs[0], "attention_mask": masks[0]}
        else:
            out = {"input_ids": seqs, "attention_mask": masks}
        if not return_attention_mask:
            out.pop("attention_mask")
        return out


def load_tokenizer(spec) -> Any:
    """A Gemma tokenizer from ``spec``: a tokenizer object (returned as is), a Hugging Face tokenizer folder,
    a ``tokenizer.json`` or a SentencePiece ``tokenizer.model`` file. Nothing is downloaded."""
    if not isinstance(spec, (str, Path)):
        if callable(spec):
            return spec
        raise CheckpointError(f"tokenizer={spec!r}: expected a path or a tokenizer object.")
    p = Path(spec).expanduser()
    if not p.exists():
        raise CheckpointError(f"{p}: no such tokenizer file or folder.")
    import transformers

    try:
        if p.is_dir():
            return transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        if p.suffix == ".json":
            if p.name == "tokenizer.json" and (p.parent / "tokenizer_config.json").is_file():
                return transformers.AutoTokenizer.from_pretrained(str(p.parent), local_files_only=True)
            return transformers.PreTrainedTokenizerFast(
                tokenizer_file=str(p), bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{p}: the Gemma tokenizer could not be loaded ({e}).") from None
    if p.suffix == ".model":
        return SentencePieceGemmaTokenizer.from_file(p)
    raise CheckpointError(f"{p}: not a tokenizer (expected a Hugging Face tokenizer folder, tokenizer.json or "
                          "a SentencePiece tokenizer.model).")


def _tokenizer_beside(file: Path) -> Path | None:
    for cand in (file.with_suffix(".tokenizer.json"), file.with_suffix(".tokenizer.model"),
                 file.parent / f"{file.stem}_tokenizer", file.parent / "tokenizer",
                 file.parent / "tokenizer.json", file.parent / "tokenizer.model"):
        names = ("tokenizer.json", "tokenizer.model")
        if cand.is_file() or (cand.is_dir() and any((cand / n).is_file() for n in names)):
            return cand
    return None


def _file_tokenizer(file: Path, keys, tokenizer) -> Any:
    if tokenizer is not None:
        return load_tokenizer(tokenizer)
    entry = keys.get(_SPIECE_KEY)
    if entry is not None:
        if entry[2] not in ("U8", "I8"):
            raise CheckpointError(
                f"{file}: '{_SPIECE_KEY}' is {entry[2]}, not the uint8 bytes of a SentencePiece model.")
        _sentencepiece()  # clear message before anything is read
        from safetensors import safe_open

        with safe_open(str(file), framework="pt", device="cpu") as sf:
            data = sf.get_tensor(_SPIECE_KEY).contiguous().numpy().tobytes()
        return SentencePieceGemmaTokenizer(data, name=f"{file} ({_SPIECE_KEY})")
    beside = _tokenizer_beside(file)
    if beside is not None:
        return load_tokenizer(beside)
    raise CheckpointError(
        f"{file}: no tokenizer: the file has no '{_SPIECE_KEY}' tensor (ComfyUI's gemma_3_12B_it.safetensors has "
        "one) and there is no tokenizer.json / tokenizer.model beside it. Pass tokenizer= (a Gemma tokenizer "
        "folder, tokenizer.json or tokenizer.model), or use ComfyUI's file.")


def _check_tokenizer(file: Path, tok, vocab: int) -> None:
    n = len(tok)
    bos = getattr(tok, "bos_token_id", None)
    if n > vocab or (bos is not None and bos >= vocab):
        raise CheckpointError(
            f"{file}: the tokenizer has {n} tokens but the Gemma-3 embedding only {vocab}; the tokenizer belongs "
            "to another model.")


# --------------------------------------------------------------------------------------------------
# Model


@contextmanager
def _default_dtype(dtype: torch.dtype | None):
    old = torch.get_default_dtype()
    if dtype is not None and dtype.is_floating_point:
        torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _rebuild_buffers(model: torch.nn.Module, config) -> None:
    """Real values for the non-persistent buffers that the meta build left empty (rotary tables, the
    embedding scale), computed as transformers computes them."""
    for name, sub in model.named_modules():
        meta = [b for b in sub._non_persistent_buffers_set
                if sub._buffers.get(b) is not None and sub._buffers[b].is_meta]
        if not meta:
            continue
        if type(sub).__name__.endswith("RotaryEmbedding"):
            with torch.device("cpu"):
                fresh = type(sub)(getattr(sub, "config", config), device="cpu")
            for b in meta:
                sub._buffers[b] = fresh._buffers[b]
            for attr, value in vars(fresh).items():  # e.g. transformers 4's plain original_inv_freq attribute
                if torch.is_tensor(value) and getattr(sub, attr, None) is not None and getattr(sub, attr).is_meta:
                    setattr(sub, attr, value)
        elif meta == ["embed_scale"]:
            with torch.device("cpu"):
                scale = getattr(sub, "scalar_embed_scale", config.hidden_size ** 0.5)
                sub._buffers["embed_scale"] = torch.tensor(scale)
        else:
            raise CheckpointError(
                f"Gemma-3 single file: cannot rebuild buffers {meta} of {name} ({type(sub).__name__}) with this "
                "transformers version; load the Hugging Face folder instead.")


def load_gemma_single_file(path, *, device="cpu", dtype: torch.dtype | None = torch.bfloat16, tokenizer=None,
                           store_fp8: bool = False):
    """(``transformers.Gemma3TextModel``, tokenizer) from one Gemma-3 ``.safetensors`` file (see the module
    docstring). Everything checkable from the header is checked before any tensor is read.

    ``dtype``: the compute dtype of the norms, embeddings and activations (None: the file's
    embedding dtype, bf16 when that is fp8).
    Scaled fp8 Linear weights stay fp8 whatever ``dtype`` is; ``store_fp8=True`` also stores the decoder layers'
    Linear weights of a high-precision file as fp8 (one scale per weight)."""
    import transformers

    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"{file}: no such file. Check the path of the Gemma-3 text encoder.")
    if dtype is not None and (not dtype.is_floating_point or dtype.itemsize < 2):
        raise CheckpointError(f"dtype={dtype}: Gemma-3 computes in bf16, fp16 or fp32; fp8 storage of its linear "
                              "weights is weight_dtype='fp8_e4m3fn' (store_fp8=True).")
    keys = list_keys([file])
    metadata = safetensors_metadata(file)
    prefix = find_text_prefix(keys)
    if prefix is None:
        raise _not_gemma(file, keys)
    has_fp8 = _check_quantisation(file, keys, prefix, metadata)
    config = gemma_text_config(file, keys, metadata)
    tok = _file_tokenizer(file, keys, tokenizer)
    _check_tokenizer(file, tok, int(config.vocab_size))

    # The high-precision dtype the model is built (and, for an fp8 file, loaded) in: never a float8 type.
    build_dtype = dtype if dtype is not None else {"F32": torch.float32, "F16": torch.float16}.get(
        keys[prefix + "embed_tokens.weight"][2], torch.bfloat16)
    load_dtype = build_dtype if (dtype is None and has_fp8) else dtype  # an fp8 file's other tensors are widened
    with _default_dtype(build_dtype), torch.device("meta"):
        model = transformers.Gemma3TextModel(config)
    with _default_dtype(build_dtype):
        _rebuild_buffers(model, config)

    try:
        load_into(model, file, device=device, dtype=load_dtype, key_map=text_key_map(prefix),
                  quant_layers=QUANT_LAYERS, store_fp8=QUANT_LAYERS if store_fp8 else ())
    except CheckpointError as e:
        raise CheckpointError(f"Gemma-3 text encoder from {file}: {e}") from None
    model = model.to(device).eval()  # the rebuilt buffers; the weights are already there (fp8 codes stay fp8)
    model.requires_grad_(False)
    return model, tok
