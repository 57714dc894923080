"""The text guardrail: blocklist passes against the reference (cosmos-guardrail 0.3.2's Blocklist and
better-profanity 0.7.0), the guard model's verdicts and its fail-closed paths on a tiny random causal LM,
the node, and a headless run that a blocked prompt stops before anything is written."""

import json
import random
import shutil
import sys
from pathlib import Path

import pytest
import torch

from comfyui_cosmos3_ltx2 import headless as runner
from comfyui_cosmos3_ltx2.core.guardrails import (
    DEFAULT_BLOCKLIST,
    BlocklistError,
    GuardModel,
    PromptBlocked,
    check_prompt,
    load_blocklist,
    parse_verdict,
)
from comfyui_cosmos3_ltx2.core.guardrails.censor import Censor
from comfyui_cosmos3_ltx2.core.guardrails.guard_model import GuardModelError
from comfyui_cosmos3_ltx2.core.guardrails.lemmas import load_lemmatiser
from comfyui_cosmos3_ltx2.nodes import NODE_CLASS_MAPPINGS as M
from helpers import ROOT
from helpers.guardrail_oracle import reference_blocklist, reference_module, write_nltk_data

NOUNS = ["massacre", "bloodbath", "torture", "head", "heading", "ship", "film", "dog", "cat", "fiat", "flat",
         "road", "town", "movie", "harm"]
NODE = M["Cosmos3LTX2TextGuardrail"]
REF = reference_module()
needs_reference = pytest.mark.skipif(
    REF is None, reason="cosmos-guardrail 0.3.2 not in .oracles/ (pip install --no-deps --target .oracles cosmos-guardrail==0.3.2)")


@pytest.fixture(scope="session")
def nltk_data(tmp_path_factory):
    """One tiny NLTK data folder for the whole session (the reference binds NLTK's global WordNet once)."""
    pytest.importorskip("nltk")
    return write_nltk_data(tmp_path_factory.mktemp("guardrail") / "nltk_data", NOUNS)


def copy_default(folder: Path, whitelist: bool = True) -> Path:
    shutil.copytree(DEFAULT_BLOCKLIST, folder, ignore=shutil.ignore_patterns("README.md"))
    if not whitelist:
        shutil.rmtree(folder / "whitelist")
    return folder


def write_lists(folder: Path, **lists) -> Path:
    for name, entries in lists.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "list.txt").write_text("\n".join(entries) + "\n")
    return folder


# ---------------------------------------------------------------------------------------------- prompts
PASS = [
    "A robot arm in a bright workshop picks up a red wooden block and places it on top of a blue one.",
    "The ship will be heading north at dawn.",  # "be heading" joins into "beheading": "heading" is whitelisted
    "The old dog will be head of the pack.",  # "be head" -> "behead"
    "A torturous mountain road at sunset.",  # whole words only: not "torture"
    "A flat road through a quiet town.",
    "Rated 5* by critics, a sunny beach.",  # a '*' alone is no hit (the reference blocks any '*')
]
BLOCK = [  # prompt, check, entry
    ("", "empty prompt", ""),
    ("   \n ", "empty prompt", ""),
    ("a g0re scene", "blocklist censor", "gore"),
    ("T0RTURE chamber, cinematic", "blocklist censor", "torture"),
    ("a decap1tat1on", "blocklist censor", "decapitation"),
    ("p0rn", "blocklist censor", "porn"),
    ("The rebels will be-heading the king", "blocklist censor", "beheading"),
    ("two snuff films at night", "blocklist fuzzy match", "snuff film"),
    ("Self  Harm tutorial", "blocklist exact match", "self harm"),
    ("nsfww clip", "blocklist fuzzy match", "nsfw"),
    ("a sexually explicit scene", "blocklist exact match", "sexually explicit"),
]


@pytest.mark.parametrize("prompt", PASS)
def test_default_blocklist_passes(prompt):
    verdict = check_prompt(prompt)
    assert verdict.allowed, verdict.message


@pytest.mark.parametrize("prompt,check,entry", BLOCK)
def test_default_blocklist_blocks(prompt, check, entry):
    verdict = check_prompt(prompt)
    assert not verdict.allowed and verdict.check == check and verdict.entry == entry
    assert verdict.message.startswith("prompt blocked by the text guardrail: ")
    assert (f"entry {entry!r}" in verdict.message) if entry else "empty" in verdict.message


def test_whitelist_is_what_lets_joined_words_pass(tmp_path):
    without = load_blocklist(copy_default(tmp_path / "bl", whitelist=False))
    verdict = check_prompt("The ship will be heading north at dawn.", without)
    assert verdict.check == "blocklist censor" and verdict.entry == "beheading"
    assert "(as 'be heading')" in verdict.message


def test_whitelist_restores_a_word_censored_as_a_variant(tmp_path):
    bl = load_blocklist(write_lists(tmp_path, custom=["fiat"], whitelist=["flat"]))  # "flat" spells "fiat" (i -> l)
    assert check_prompt("A flat road.", bl).allowed
    assert check_prompt("A FIAT road.", bl).entry == "fiat"
    assert check_prompt("A f1at road.", bl).entry == "fiat"
    assert check_prompt("flat", load_blocklist(write_lists(tmp_path / "b", custom=["fiat"]))).entry == "fiat"


def test_lemmatised_pass(tmp_path, nltk_data):
    folder = copy_default(tmp_path / "bl")
    assert check_prompt("massacres in town", load_blocklist(folder)).allowed  # no NLTK data: pass skipped
    shutil.copytree(nltk_data, folder / "nltk_data")
    bl = load_blocklist(folder)
    assert bl.lemmatiser is not None and bl.notes == []
    verdict = check_prompt("massacres in town", bl)
    assert verdict.check == "blocklist censor (lemmatised)" and verdict.entry == "massacre"
    assert check_prompt("The ships will be heading north.", bl).allowed
    # The shipped list reads its NLTK data from the folders it is given (the node: models/guardrails/nltk_data).
    assert check_prompt("massacres in town", nltk_data=[nltk_data]).check == "blocklist censor (lemmatised)"


def test_missing_nltk_or_data_says_what_is_skipped(tmp_path, monkeypatch):
    bl = load_blocklist(copy_default(tmp_path / "bl"))
    assert bl.lemmatiser is None and len(bl.notes) == 1
    note = bl.notes[0]
    assert "lemmatised blocklist pass is skipped" in note and "wordnet" in note and "punkt_tab" in note
    assert str(tmp_path / "bl" / "nltk_data") in note and "nltk.downloader" in note
    assert check_prompt("a cat", bl).notes == (note,)
    (tmp_path / "nd" / "corpora" / "wordnet").mkdir(parents=True)
    assert "lacks punkt_tab" in load_lemmatiser([tmp_path / "nd"])[1]
    monkeypatch.setitem(sys.modules, "nltk", None)  # NLTK not installed: the rest still works
    lemmatiser, note = load_lemmatiser([tmp_path / "nd"])
    assert lemmatiser is None and "NLTK is not installed" in note and "pip install nltk" in note
    bl = load_blocklist(copy_default(tmp_path / "bl2"))
    assert bl.notes == [note] and check_prompt("a g0re scene", bl).entry == "gore"


def test_guardrail_repository_layout_and_bad_folders(tmp_path):
    write_lists(tmp_path / "Cosmos-1.0-Guardrail" / "blocklist", custom=["zorbex"], exact_match=["glimwort"])
    bl = load_blocklist(tmp_path / "Cosmos-1.0-Guardrail")
    assert check_prompt("a z0rbex", bl).entry == "zorbex" and check_prompt("glimworts", bl).check == "blocklist fuzzy match"
    with pytest.raises(BlocklistError, match="does not exist"):
        load_blocklist(tmp_path / "nowhere")
    (tmp_path / "empty" / "custom").mkdir(parents=True)
    with pytest.raises(BlocklistError, match="no entries"):
        load_blocklist(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------- oracles
def _mask(text, hits):
    out, pos = [], 0
    for h in hits:
        out += [text[pos:h.start], "****"]
        pos = h.end
    return "".join(out) + text[pos:]


def test_censor_matches_better_profanity():
    """Our censor finds exactly the spans better-profanity 0.7.0 censors (as the reference sets it up)."""
    bp = pytest.importorskip("better_profanity")
    entries = ["gore", "beheading", "self harm", "p0rn", "t@ste", "a b c", "kill", "x", "sexually explicit"]
    ref = bp.Profanity()  # the built-in list first, then the custom list, as the reference's shared object
    ref.load_censor_words(custom_words=list(entries))
    ours = Censor(entries)
    words = ["gore", "g0re", "G*RE", "g@r3", "be", "heading", "head", "ing", "self", "harm", "$elf", "p0rn", "porn",
             "kill", "k1ll", "x", "a", "b", "c", "the", "cat", "'gore'", '"porn"', "go", "re", "sexually", "explicit"]
    seps = [" ", "  ", ", ", "-", ".", "!", " (", ") ", "\n", "_", "/"]
    rng = random.Random(0)
    texts = ["", "x", " x", "x ", "gore", "gore!", "be heading", "a  b c"]
    for _ in range(3000):
        text = "".join(rng.choice(words) + rng.choice(seps) for _ in range(rng.randint(1, 8)))
        texts.append(text.rstrip(" ,.!-_/(\n)") if rng.random() < 0.5 else text)
    for _ in range(3000):
        texts.append("".join(rng.choice("gorexbcah-*'\"$0@1 ") for _ in range(rng.randint(0, 14))))
    for text in texts:
        assert _mask(text, ours.find(text)) == ref.censor(text), text


@needs_reference
def test_blocklist_decisions_match_the_reference(tmp_path, nltk_data):
    """Block or pass, as cosmos-guardrail 0.3.2's Blocklist.is_safe decides, on the shipped lists with NLTK data."""
    folder = copy_default(tmp_path / "bl", whitelist=False)
    shutil.copytree(nltk_data, folder / "nltk_data")
    ours = load_blocklist(folder)
    assert ours.lemmatiser is not None
    ref = reference_blocklist(REF, folder)
    words = ["a", "the", "cat", "dog", "ship", "ships", "road", "town", "film", "films", "movie", "snuff", "snufff",
             "self", "harm", "harms", "selfharm", "child", "abuse", "nsfw", "nsfww", "nsf", "gore", "g0re", "gores",
             "torture", "t0rture", "tortures", "torturous", "massacre", "massacres", "m4ssacre", "bloodbath",
             "bloodbaths", "porn", "p0rn", "pornographic", "be", "head", "heading", "mass", "shooting", "school",
             "terrorist", "attack", "sexually", "explicit", "go", "re", "caf\u00e9", "\u00fcber"]
    seps = [" ", " ", " ", ", ", ". ", "  ", "-", "\n"]
    rng = random.Random(1)
    prompts = [p for p in PASS + [b[0] for b in BLOCK]  # less the deliberate differences (tested below)
               if p.strip() and "*" not in p and "heading" not in p and "head of" not in p]
    for _ in range(400):
        prompts.append("".join(rng.choice(words) + rng.choice(seps) for _ in range(rng.randint(1, 6))).strip())
    blocked = 0
    for prompt in prompts:
        safe, message = ref.is_safe(prompt)
        verdict = check_prompt(prompt, ours)
        assert verdict.allowed == safe, (prompt, message, verdict.message)
        blocked += not safe
    assert 0.2 < blocked / len(prompts) < 0.9  # both outcomes are well represented


@needs_reference
def test_whitelist_matches_the_reference_on_single_words(tmp_path, nltk_data):
    folder = write_lists(tmp_path, custom=["fiat", "gore"], whitelist=["flat", "Gore"], exact_match=["zzzz"])
    shutil.copytree(nltk_data, folder / "nltk_data")
    ours, ref = load_blocklist(folder), reference_blocklist(REF, folder)
    for prompt in ["A flat road.", "a fiat road", "f1at", "(flat)", "Al Gore speaks", "g0re", "flat fiat", "FLAT!"]:
        assert check_prompt(prompt, ours).allowed == ref.is_safe(prompt)[0], prompt


@needs_reference
def test_deliberate_differences_from_the_reference(tmp_path, nltk_data):
    """Where we decide otherwise, and why (see core/guardrails/blocklist.py)."""
    folder = copy_default(tmp_path / "bl")
    ours, ref = load_blocklist(folder), reference_blocklist(REF, folder)
    # A '*' in the prompt is no censor hit here; the reference blocks it.
    assert check_prompt("Rated 5* by critics.", ours).allowed and not ref.is_safe("Rated 5* by critics.")[0]
    # A joined hit on a whitelisted word is undone here; the reference's positional restore misses it.
    assert check_prompt("The ship will be heading north.", ours).allowed
    assert not ref.is_safe("The ship will be heading north.")[0]
    # A whitespace-only prompt is empty here; the reference checks only for "".
    assert not check_prompt("  ", ours).allowed and ref.is_safe("  ")[0]


# ---------------------------------------------------------------------------------------------- guard model
@pytest.fixture(scope="module")
def tiny_guard(tmp_path_factory):
    """A tiny random Qwen3 causal LM with a byte-level ChatML tokenizer, saved as a local model folder."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from comfyui_cosmos3_ltx2.cosmos3.tiny import write_tokenizer

    folder = write_tokenizer(tmp_path_factory.mktemp("guard") / "Tiny-Guard")
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    config = Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(str(folder))
    return folder


def _scripted(guard: GuardModel, reply: str, calls: list):
    """Make the model 'write' ``reply`` after the prompt (the tokenizer and decoding path stay real)."""
    reply_ids = guard.tokenizer(reply, return_tensors="pt")["input_ids"]

    def generate(input_ids, attention_mask=None, **kw):
        calls.append(kw)
        return torch.cat([input_ids, reply_ids.to(input_ids.device), torch.tensor([[guard.tokenizer.eos_token_id]])], 1)

    guard.model.generate = generate


@pytest.mark.parametrize("reply,allowed", [
    ("Safety: Unsafe\nCategories: Violent", False),
    ("Safety: Safe\nCategories: None", True),
    ("Safety: Controversial\nCategories: Politically Sensitive Topics", True),
    ("I cannot tell.", False),  # no verdict: blocked (fail closed)
])
def test_guard_model_verdicts(tiny_guard, reply, allowed):
    guard = GuardModel.load(tiny_guard)
    calls = []
    _scripted(guard, reply, calls)
    verdict = check_prompt("A cat walks on a wall.", guard_model=guard)
    assert verdict.allowed == allowed and len(calls) == 1
    assert calls[0]["max_new_tokens"] == 128 and calls[0]["do_sample"] is False
    if "Unsafe" in reply:
        assert verdict.check == "guard model" and verdict.entry == "Safety: Unsafe, Categories: Violent"
        assert "guard model Tiny-Guard: Safety: Unsafe, Categories: Violent" in verdict.message
    elif "Controversial" in reply:
        assert any("Controversial" in n and "only Unsafe blocks" in n for n in verdict.notes)
    elif not allowed:
        assert verdict.check == "guard model (failed)" and "fail closed" in verdict.message
        assert "no 'Safety: Safe|Unsafe|Controversial' verdict" in verdict.message


def test_blocklist_runs_before_the_guard_model(tiny_guard):
    guard = GuardModel.load(tiny_guard)
    calls = []
    _scripted(guard, "Safety: Safe", calls)
    assert check_prompt("a g0re scene", guard_model=guard).check == "blocklist censor" and calls == []
    assert check_prompt("", guard_model=guard).check == "empty prompt" and calls == []


def test_tiny_guard_model_runs_and_fails_closed(tiny_guard):
    """A real load and greedy generation: the random model writes no verdict, so the prompt is blocked."""
    text = GuardModel.load(tiny_guard).generate("A cat walks on a wall.", max_new_tokens=12)
    assert isinstance(text, str) and "Safety:" not in text
    verdict = check_prompt("A cat walks on a wall.", guard_model=tiny_guard)  # loads from the folder
    assert verdict.check == "guard model (failed)" and "fail closed" in verdict.message
    assert "no 'Safety: Safe|Unsafe|Controversial' verdict" in verdict.message


def test_guard_model_that_cannot_load_or_run_blocks(tiny_guard, tmp_path):
    broken = tmp_path / "Broken-Guard"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_guard / "config.json").read_text())  # no weights, no tokenizer
    verdict = check_prompt("A cat.", guard_model=broken)
    assert verdict.check == "guard model (failed)" and "cannot load the guard model" in verdict.message
    verdict = check_prompt("A cat.", guard_model=tmp_path / "nowhere")
    assert verdict.check == "guard model (failed)" and "no config.json" in verdict.message

    guard = GuardModel.load(tiny_guard)

    def crash(**kw):
        raise RuntimeError("out of memory")

    guard.model.generate = crash
    verdict = check_prompt("A cat.", guard_model=guard)
    assert verdict.check == "guard model (failed)" and "RuntimeError: out of memory" in verdict.message


def test_parse_verdict():
    v = parse_verdict("Safety: Unsafe\nCategories: Violent, Jailbreak\n")
    assert v.unsafe and v.categories == "Violent, Jailbreak"
    assert parse_verdict("Safety: Safe").categories == "" and not parse_verdict("Safety: Safe").unsafe
    with pytest.raises(GuardModelError):
        parse_verdict("safety: unsafe")  # the reference's pattern is case-sensitive


# ---------------------------------------------------------------------------------------------- the node
def test_node_contract():
    assert NODE.CATEGORY == "Guardrails" and NODE.RETURN_TYPES == ("STRING",)
    assert len(NODE.OUTPUT_TOOLTIPS) == 1 and hasattr(NODE, NODE.FUNCTION)
    for name, (kind, opts) in NODE.INPUT_TYPES()["required"].items():
        assert opts.get("tooltip"), name
        if isinstance(kind, list):
            assert opts["default"] in kind


def test_node_passes_or_raises_naming_the_check():
    assert NODE().check("A red robot in a garden.") == ("A red robot in a garden.",)
    with pytest.raises(PromptBlocked) as err:
        NODE().check("a t0rture scene")
    assert "blocklist censor: entry 'torture' (as 't0rture')" in str(err.value)
    assert err.value.verdict.entry == "torture"


def test_node_reads_models_guardrails(tmp_path, monkeypatch, nltk_data, tiny_guard):
    models = tmp_path / "models"
    write_lists(models / "guardrails" / "my-list", custom=["zorbex"])
    write_lists(models / "guardrails" / "Cosmos-1.0-Guardrail" / "blocklist", exact_match=["glimwort"])
    (models / "guardrails" / "Tiny-Guard").mkdir(parents=True)  # a config but no weights: it cannot load
    shutil.copy(tiny_guard / "config.json", models / "guardrails" / "Tiny-Guard")
    monkeypatch.setenv("COSMOS3_LTX2_MODELS_DIR", str(models))
    assert NODE().check("massacres in town") == ("massacres in town",)  # no NLTK data yet: pass skipped
    shutil.copytree(nltk_data, models / "guardrails" / "nltk_data")  # picked up without a restart
    spec = NODE.INPUT_TYPES()["required"]
    assert spec["blocklist"][0] == ["default (shipped)", "Cosmos-1.0-Guardrail", "my-list"]
    assert spec["guard_model"][0] == ["none", "Tiny-Guard"]
    assert NODE.VALIDATE_INPUTS(blocklist="my-list", guard_model="Tiny-Guard") is True
    assert "neither a folder" in NODE.VALIDATE_INPUTS(blocklist="missing")
    with pytest.raises(PromptBlocked, match="entry 'zorbex'"):
        NODE().check("a z0rbex", blocklist="my-list")
    with pytest.raises(PromptBlocked, match="fuzzy match: entry 'glimwort'"):
        NODE().check("glimworts", blocklist="Cosmos-1.0-Guardrail")
    with pytest.raises(PromptBlocked, match="lemmatised"):  # the shipped list with models/guardrails/nltk_data
        NODE().check("massacres in town")
    with pytest.raises(PromptBlocked, match="guard model Tiny-Guard failed.*fail closed.*cannot load"):
        NODE().check("A cat.", guard_model="Tiny-Guard", device="cpu")


def test_guardrails_model_folder_is_registered_in_comfyui(tmp_path):
    from helpers.comfy_standin import comfyui_standin


    with comfyui_standin(str(tmp_path)) as rec:
        assert rec.folders["guardrails"] == [str(tmp_path / "guardrails")]
        write_lists(tmp_path / "guardrails" / "my-list", custom=["zorbex"])
        assert NODE.INPUT_TYPES()["required"]["blocklist"][0] == ["default (shipped)", "my-list"]


# ---------------------------------------------------------------------------------------------- headless
def _guarded_graph(prompt: str) -> dict:
    """The shipped text-to-image graph with the guardrail inserted before the text encode node."""
    graph = json.loads((ROOT / "workflows" / "api" / "cosmos3_t2i_api.json").read_text())
    guard = {"class_type": "Cosmos3LTX2TextGuardrail",
             "inputs": {"prompt": prompt, "blocklist": "default (shipped)", "guard_model": "none", "device": "default"}}
    graph["4"]["inputs"]["prompt"] = ["9", 0]
    return {"9": guard, **graph}


def test_blocked_run_stops_before_the_text_encoder_and_writes_nothing(tmp_path, capsys):
    from comfyui_cosmos3_ltx2.__main__ import main

    mappings = runner.node_mappings(False)
    graph = runner.apply_overrides(_guarded_graph("A g0re scene in the rain."), ["3.width=64", "3.height=32",
                                                                                    "5.steps=2"], mappings)
    events = []
    with pytest.raises(runner.NodeError, match=r"node 9 \(Cosmos3LTX2TextGuardrail\).*entry 'gore'"):
        runner.run(graph, output_dir=tmp_path / "out", mappings=mappings, on_progress=events.append)
    ran = [e["class_type"] for e in events if e["event"] == "executing"]
    assert ran[0] == "Cosmos3LTX2TextGuardrail" and "Cosmos3TextEncode" not in ran and "SaveImage" not in ran
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))

    workflow = tmp_path / "guarded_api.json"
    workflow.write_text(json.dumps(graph))
    rc = main(["run", str(workflow), "--output-dir", str(tmp_path / "cli"), "--standins"])
    err = capsys.readouterr().err
    assert rc == 1 and "prompt blocked by the text guardrail: blocklist censor: entry 'gore'" in err
    assert not (tmp_path / "cli").exists() or not any((tmp_path / "cli").rglob("*"))

    graph["9"]["inputs"]["prompt"] = "A robot arm stacks wooden blocks on a table."  # allowed: the run completes
    files = runner.run(graph, output_dir=tmp_path / "ok", mappings=mappings)
    assert len(files) == 1 and Path(files[0]).is_file()
