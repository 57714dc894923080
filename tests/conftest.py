import os
import sys

import pytest
import torch

# The suite's shared helpers (tests/helpers: oracles, error measures, counters, stand-ins) import as ``helpers``.
# Test parts: core/, cosmos3/, ltx2/, nodes/, headless/, each with its own conftest.py for its fixtures.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to load a Cosmos3 model fails the test: the input checks of every door must come first (the
    Cosmos3 bad-input tests of cosmos3/ and headless/ use it)."""
    from comfyui_cosmos3_ltx2.core import checkpoint as core_checkpoint
    from comfyui_cosmos3_ltx2.cosmos3 import loader as cosmos3_loader
    from comfyui_cosmos3_ltx2.nodes import cosmos3 as cosmos3_nodes

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    for name in ("load_checkpoint", "load_model", "load_vae", "load_transformer"):
        monkeypatch.setattr(cosmos3_loader, name, refuse)
    monkeypatch.setattr(cosmos3_nodes, "load_model", refuse)
    monkeypatch.setattr(cosmos3_nodes, "load_vae", refuse)
    monkeypatch.setattr(core_checkpoint, "load_into", refuse)
    return refuse
