"""A tiny SentencePiece model trained on the spot (BPE, Gemma's special-token ids: pad 0, eos 1, bos 2, unk 3), for
the Gemma-3 tokenizer tests. Needs the ``sentencepiece`` package (tests importorskip it first)."""

from __future__ import annotations

import io


def train_spm(corpus: list[str], vocab_size: int, **options) -> bytes:
    """The serialized model proto; ``options`` go to the trainer on top of the shared ones."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, model_type="bpe", vocab_size=vocab_size, byte_fallback=True,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", add_dummy_prefix=False, normalization_rule_name="identity", character_coverage=1.0,
        minloglevel=2, **options)
    return buf.getvalue()
