"""LTX-2 text encoding, one hop: Gemma-3 (folder or ComfyUI's single file) -> hidden states -> the checkpoint's
connectors -> video and audio contexts.

* :class:`GemmaTextEncoder` / :func:`load_gemma_text_encoder`: Gemma-3 and its tokenizer used as LTX-2 does
  (left padding to ``max_length``, every hidden state); the single-file format is :mod:`.gemma_file`.
* :func:`encode_prompt`: hidden states -> (video context, audio context, mask) through the connectors
  (:mod:`.text`), once per prompt.
* :func:`gemma_states` / :func:`connect` / :func:`encode_prompts`: both prompts -> :class:`PromptContexts`, the
  form the sampling stages take (a node can run Gemma, release it, then connect).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..core.checkpoint import (
    CheckpointError,
)
from .loader import dtype_from_name


@torch.no_grad()
def encode_prompt(connectors, hidden_states, attention_mask: torch.Tensor, padding_side: str = "left"
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gemma hidden states (list of [B, T, D], [B, T, D, L] or flattened [B, T, D*L]) and their [B, T]
    mask (1 = real token) -> (video context, audio context, context mask [B, T]).

    Run once per prompt (and once for the negative prompt); every denoising step reuses the result.
    """
    if attention_mask.ndim != 2:
        raise ValueError(f"encode_prompt: attention_mask must be [batch, tokens], got shape {tuple(attention_mask.shape)}")
    return connectors(hidden_states, attention_mask, padding_side=padding_side)


class GemmaTextEncoder:
    """Gemma-3 + its tokenizer, used the way LTX-2 does (ltx2.md 3.1): the prompt is stripped, tokenized
    with left padding to ``max_length`` (1024) with truncation, and the inner model (no LM head) returns
    every hidden state (embeddings + each layer)."""

    def __init__(self, model, tokenizer, *, max_length: int = 1024):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def num_hidden_states(self) -> int:
        cfg = self.model.config
        text = getattr(cfg, "text_config", None) or cfg
        return int(text.num_hidden_layers) + 1

    @property
    def hidden_size(self) -> int:
        cfg = self.model.config
        text = getattr(cfg, "text_config", None) or cfg
        return int(text.hidden_size)

    def tokenize(self, prompt: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        enc = self.tokenizer([p.strip() for p in prompts], padding="max_length", max_length=self.max_length,
                             truncation=True, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    @torch.inference_mode()
    def encode(self, prompt: str | Sequence[str]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """(all hidden states, each [B, max_length, hidden], attention mask [B, max_length])."""
        ids, mask = self.tokenize(prompt)
        ids, mask = ids.to(self.device), mask.to(self.device)
        inner = getattr(self.model, "model", self.model)
        out = inner(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        return tuple(out.hidden_states), mask

    __call__ = encode


def load_gemma_text_encoder(path, *, device="cpu", dtype="bf16", max_length: int = 1024,
                            tokenizer=None, weight_dtype: str = "default") -> GemmaTextEncoder:
    """Gemma-3 (the LTX-2 / LTX-2.3 text encoder) from a Hugging Face folder or from one ``.safetensors`` file.

    * Folder (config.json, safetensors weights, tokenizer files), read with ``local_files_only=True``: a full
      ``Gemma3ForConditionalGeneration`` folder (as LTX-2 ships) and a text-only ``gemma3_text`` folder both
      work.
    * Single file, e.g. ComfyUI's ``models/text_encoders/gemma_3_12B_it.safetensors``: the text weights under
      ``model.`` (or ``model.language_model.`` / ``language_model.model.`` as transformers saves them; vision
      tensors are ignored) and the SentencePiece tokenizer in its ``spiece_model`` tensor (needs the
      ``sentencepiece`` package). The config is the file's ``config`` metadata or, without one, read from the
      tensor shapes with Gemma-3-12B's other settings. See :mod:`.gemma_file`.
    * Scaled fp8 single files (ComfyUI's ``gemma_3_12B_it_fp8_scaled.safetensors``, new ``comfy_quant`` or older
      ``scaled_fp8`` form) load with the decoder layers' Linear weights kept as fp8 codes (``core.quant.QuantLinear``)
      whatever ``weight_dtype`` is; norms and embeddings compute in ``dtype``. nvfp4 / int8 files are refused.

    ``dtype``: compute precision ("bf16", "fp16", "fp32"). ``weight_dtype``: ``"default"`` keeps the file's weights;
    ``"fp8_e4m3fn"`` stores the decoder layers' Linear weights of a high-precision single file as scaled fp8 (one
    scale per weight) at load (embeddings, norms and the vision tower are untouched). A Hugging Face folder loads
    through transformers, so ``weight_dtype="fp8_e4m3fn"`` is refused there.

    ``tokenizer``: a Hugging Face tokenizer folder, ``tokenizer.json`` or ``tokenizer.model`` (or a tokenizer
    object) to use instead of the one in the folder / file; a single file without ``spiece_model`` otherwise
    uses a tokenizer found beside it. Either way the prompt is stripped, BOS prepended (no EOS), truncated to
    ``max_length`` and left-padded with the pad id.
    """
    from .gemma_file import WEIGHT_DTYPES

    p = Path(path).expanduser()
    dt = dtype_from_name(dtype)
    if weight_dtype not in WEIGHT_DTYPES:
        raise CheckpointError(f"weight_dtype={weight_dtype!r} is not one of {list(WEIGHT_DTYPES)}.")
    if p.is_file() and p.suffix == ".safetensors":
        from .gemma_file import load_gemma_single_file

        model, tok = load_gemma_single_file(p, device=device, dtype=dt, tokenizer=tokenizer,
                                            store_fp8=weight_dtype == "fp8_e4m3fn")
        return GemmaTextEncoder(model, tok, max_length=max_length)
    if not p.exists():
        raise CheckpointError(
            f"{p}: no such file or folder. Point it at the Gemma-3 folder (config.json, *.safetensors, "
            "tokenizer files) or at a single gemma_3_12B_it.safetensors file.")
    if not p.is_dir():
        raise CheckpointError(
            f"{p}: expected a Gemma-3 folder (config.json, *.safetensors, tokenizer.json / tokenizer.model) or a "
            "single .safetensors file (e.g. ComfyUI's gemma_3_12B_it.safetensors).")
    if not (p / "config.json").is_file():
        raise CheckpointError(f"{p}: no config.json; this is not a Hugging Face Gemma-3 folder.")
    if weight_dtype != "default":
        raise CheckpointError(
            f"{p}: weight_dtype={weight_dtype!r} applies to a single Gemma-3 .safetensors file only (a Hugging Face "
            "folder loads through transformers in its own dtype); use weight_dtype='default' here, or ComfyUI's "
            "gemma_3_12B_it.safetensors / gemma_3_12B_it_fp8_scaled.safetensors.")
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
    kind = getattr(config, "model_type", "")
    if kind == "gemma3":
        cls = transformers.Gemma3ForConditionalGeneration
    elif kind == "gemma3_text":
        cls = transformers.Gemma3ForCausalLM
    else:
        raise CheckpointError(f"{p}: config.json describes a {kind!r} model, not Gemma-3; LTX-2 needs Gemma-3.")
    if tokenizer is not None:
        from .gemma_file import load_tokenizer

        tok = load_tokenizer(tokenizer)
    else:
        try:
            tok = transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{p}: the Gemma tokenizer could not be loaded ({e}).") from None
    try:
        model = cls.from_pretrained(str(p), local_files_only=True, dtype=dt, use_safetensors=True)
    except OSError as e:
        raise CheckpointError(f"{p}: the Gemma-3 weights could not be loaded ({e}).") from None
    model = model.to(device).eval()
    model.requires_grad_(False)
    return GemmaTextEncoder(model, tok, max_length=max_length)


@dataclass(frozen=True)
class PromptContexts:
    """The encoded prompts: ``positive`` and ``negative`` are (video context, audio context, mask); ``negative``
    is None when only the positive prompt was encoded (unguided runs)."""

    positive: tuple
    negative: tuple | None = None


def gemma_states(text_encoder, prompt: str, negative_prompt: str | None = None) -> list[tuple]:
    """Gemma-3 (hidden states, attention mask) of each prompt, encoded one at a time as the official pipelines
    do. ``negative_prompt=None`` encodes the positive prompt only."""
    texts = (prompt,) if negative_prompt is None else (prompt, negative_prompt)
    return [text_encoder.encode(text) for text in texts]


def connect(connectors, states: Sequence[tuple]) -> PromptContexts:
    """:func:`gemma_states` through the checkpoint's text connectors."""
    contexts = [encode_prompt(connectors, hidden, mask) for hidden, mask in states]
    return PromptContexts(contexts[0], contexts[1] if len(contexts) > 1 else None)


def encode_prompts(text_encoder, connectors, prompt: str, negative_prompt: str | None = None) -> PromptContexts:
    """:func:`gemma_states` then :func:`connect`."""
    return connect(connectors, gemma_states(text_encoder, prompt, negative_prompt))
