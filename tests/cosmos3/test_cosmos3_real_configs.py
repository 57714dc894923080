"""Structure of the released Cosmos3 transformers (Nano, Edge) against what our loader builds.

No weights are available, so each checkpoint is simulated by its key list: diffusers 0.42.1's
``Cosmos3OmniTransformer`` (the test oracle, whose names are the checkpoint's) built on the ``meta`` device from
the released ``transformer/config.json`` (``tests/cosmos3/data/cosmos3_real_configs``, sources in the README there).

Our side runs the real ``cosmos3.loader.load_transformer`` with only the file lookup and ``load_into`` replaced
by a header-only stand-in that applies our key renaming and ignore list exactly as ``load_into`` does
(``core.checkpoint._target_name``): every checkpoint key must land on one of our tensors with the same shape or
be dropped on purpose (the language head, the sound / action heads), no two keys may land on one name, and every
tensor of ours must be covered. Everything stays on ``meta``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from comfyui_cosmos3_ltx2.cosmos3 import loader
from helpers.header_plan import header_plan

DATA = Path(__file__).parent / "data" / "cosmos3_real_configs"
CONFIGS = ["cosmos3-nano.transformer.config.json", "cosmos3-edge.transformer.config.json"]


def _config(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def _reference_keys(cfg: dict) -> dict[str, tuple[int, ...]]:
    from diffusers import Cosmos3OmniTransformer

    with torch.device("meta"):
        ref = Cosmos3OmniTransformer.from_config(cfg)
    return {k: tuple(v.shape) for k, v in ref.state_dict().items()}


def _load_header_only(monkeypatch, header: dict, cfg: dict):
    """Our load_transformer on a file holding ``header`` (key -> shape); returns (model, plan, problems)."""
    found: dict = {}

    def load_into(module, _files, *, key_map=None, strip_prefix=None, ignore=(), strict=True, **_kw):
        found["plan"], found["problems"] = header_plan(module, header, key_map=key_map, strip_prefix=strip_prefix,
                                                       ignore=ignore)

    monkeypatch.setattr(loader, "resolve_weight_files", lambda p: [Path(p)])
    monkeypatch.setattr(loader, "load_into", load_into)
    model = loader.load_transformer("/nonexistent/transformer", device="meta", config=cfg)
    return model, found["plan"], found["problems"]


@pytest.mark.parametrize("name", CONFIGS)
def test_released_transformer_keys_load_onto_ours(monkeypatch, name):
    cfg = _config(name)
    header = _reference_keys(cfg)
    model, plan, problems = _load_header_only(monkeypatch, header, cfg)
    assert not problems, "\n".join(problems[:20])

    dropped = sorted(set(header) - set(plan.values()))
    allowed = model.unused_checkpoint_keys
    assert all(k.startswith(allowed) for k in dropped), [k for k in dropped if not k.startswith(allowed)]
    # what is dropped is exactly the language head, the UND final norm and the action heads this config has (the
    # sound heads of a sound_gen config are loaded: joint sound generation uses them)
    heads = {k.split(".")[0].rsplit("_", 1)[0] for k in dropped if k.startswith(("audio_", "action_"))}
    assert heads == ({"action_proj", "action_modality"} if cfg["action_gen"] else set())
    loaded = {k.split(".")[0] for k in plan.values() if k.startswith("audio_")}
    assert loaded == ({"audio_proj_in", "audio_proj_out", "audio_modality_embed"} if cfg["sound_gen"] else set())
    assert "lm_head.weight" in dropped and "norm.weight" in dropped


def test_released_configs_read_as_published(monkeypatch):
    nano = loader.Cosmos3Config.from_dict(_config(CONFIGS[0]))
    assert (nano.hidden_size, nano.num_hidden_layers, nano.num_attention_heads, nano.num_key_value_heads) == (
        4096, 36, 32, 8)
    assert nano.hidden_act == "silu" and nano.qk_norm_for_text and not nano.k_norm_und_for_gen
    assert nano.mrope_sections == [24, 20, 20] and nano.rope_theta == 5_000_000
    assert nano.sound_gen and nano.action_gen and nano.vocab_size == 151936
    edge = loader.Cosmos3Config.from_dict(_config(CONFIGS[1]))
    assert (edge.hidden_size, edge.num_hidden_layers, edge.num_attention_heads, edge.num_key_value_heads) == (
        2048, 28, 16, 8)
    assert edge.hidden_act == "relu2" and not edge.qk_norm_for_text and edge.k_norm_und_for_gen
    assert edge.mrope_sections == [24, 20, 20] and edge.rope_theta == 100_000_000 and edge.rms_norm_eps == 1e-5
    assert not edge.sound_gen and edge.action_gen and edge.vocab_size == 131072
