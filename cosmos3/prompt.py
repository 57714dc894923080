"""Prompt stage: templates, chat formatting and tokenization of the Cosmos3 prompt.

Cosmos3 has no separate text encoder: the token ids enter the transformer's own embedding, and its
understanding path turns them into per-layer keys/values (see ``Cosmos3Transformer.encode_text``).
This module produces the ids exactly as the reference pipeline does, so both see the same sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The reference's system prompts, verbatim (including "give"): the model was trained with these strings.
SYSTEM_PROMPT_IMAGE = "You are a helpful assistant who will generate images from a give prompt."
SYSTEM_PROMPT_VIDEO = "You are a helpful assistant who will generate videos from a give prompt."

VISION_START = "<|vision_start|>"


@dataclass(frozen=True)
class PromptOptions:
    """The switches of the prompt stage; defaults follow the reference pipeline."""

    use_system_prompt: bool = True
    add_duration_template: bool = True
    add_resolution_template: bool = True


def _join_sentence(text: str, sentence: str) -> str:
    text = text.rstrip(".")
    return f"{text}. {sentence}" if text else sentence


def apply_templates(
    text: str,
    *,
    negative: bool,
    num_frames: int,
    height: int,
    width: int,
    fps: float,
    options: PromptOptions = PromptOptions(),
) -> str:
    """Append the duration / resolution sentences (their negated forms on the negative prompt).

    Images (``num_frames == 1``) get only the resolution sentence.
    """
    is_image = num_frames == 1
    kind = "image" if is_image else "video"
    neg = " not" if negative else ""
    if not is_image and options.add_duration_template:
        seconds = num_frames / fps
        text = _join_sentence(
            text, f"The video is{neg} {seconds:.1f} seconds long and is{neg} of {fps:.0f} FPS."
        )
    if options.add_resolution_template:
        text = _join_sentence(text, f"This {kind} is{neg} of {height}x{width} resolution.")
    return text


def load_tokenizer(folder: str | Path):
    """Load the checkpoint's ``text_tokenizer/`` (local files only) and check it can drive Cosmos3."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"text tokenizer: folder {folder} does not exist")
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # transformers raises many kinds here; give one clear message
        raise ValueError(f"text tokenizer: cannot load a tokenizer from {folder}: {e}") from e
    check_tokenizer(tok, str(folder))
    return tok


def check_tokenizer(tok, where: str = "text tokenizer") -> None:
    vid = tok.convert_tokens_to_ids(VISION_START)
    if vid is None or vid == tok.unk_token_id or VISION_START not in tok.get_vocab():
        raise ValueError(
            f"{where}: the tokenizer has no {VISION_START} token; it is not a Cosmos3 (Qwen) tokenizer"
        )
    if tok.eos_token_id is None:
        raise ValueError(f"{where}: the tokenizer defines no eos token")
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"{where}: the tokenizer has no chat template")


def tokenize(tok, text: str, *, is_image: bool, use_system_prompt: bool) -> list[int]:
    """ChatML ids of one prompt, followed by ``[eos, <|vision_start|>]`` where generation begins."""
    messages = []
    if use_system_prompt:
        messages.append({"role": "system", "content": SYSTEM_PROMPT_IMAGE if is_image else SYSTEM_PROMPT_VIDEO})
    messages.append({"role": "user", "content": text})
    enc = tok.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, add_vision_id=False, return_dict=True
    )
    ids = list(enc["input_ids"])
    return ids + [tok.eos_token_id, tok.convert_tokens_to_ids(VISION_START)]


def prompt_ids(
    tok,
    prompt: str,
    negative_prompt: str | None,
    *,
    num_frames: int,
    height: int,
    width: int,
    fps: float,
    options: PromptOptions = PromptOptions(),
) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the negative prompt, templates applied."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    is_image = num_frames == 1
    kw = dict(num_frames=num_frames, height=height, width=width, fps=fps, options=options)
    cond = apply_templates(prompt, negative=False, **kw)
    uncond = apply_templates(negative_prompt or "", negative=True, **kw)
    sys_on = options.use_system_prompt
    return (
        tokenize(tok, cond, is_image=is_image, use_system_prompt=sys_on),
        tokenize(tok, uncond, is_image=is_image, use_system_prompt=sys_on),
    )
