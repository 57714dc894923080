"""Wan VAE files in Wan's original key layout (ComfyUI's ``wan2.2_vae.safetensors``) for tests: the stored outputs of
ComfyUI's own Wan VAE code on tiny seeded models, and a writer of our VAE's weights in that layout."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from helpers import ROOT

DATA = ROOT / "tests" / "cosmos3" / "data" / "wan_vae_layout"


def _fixture_module():
    spec = importlib.util.spec_from_file_location("wan_layout_fixture", DATA / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

FIXTURE = _fixture_module()


def _expected(name: str) -> tuple[dict, dict]:
    with safe_open(str(DATA / "expected.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()[name])
        tensors = {k.split(".", 1)[1]: f.get_tensor(k) for k in f.keys() if k.startswith(name + ".")}
    return meta, tensors


def write_original(name: str, folder: Path) -> tuple[Path, dict, dict]:
    """The seeded model of ``name`` saved in Wan's layout, as ComfyUI ran it; plus the fixture's data."""
    meta, expected = _expected(name)
    weights = FIXTURE.seeded_weights([(k, s) for k, s in meta["entries"]])
    got = sum(float(w.double().sum()) for w in weights.values())
    assert got == pytest.approx(meta["sums"]["weights"], rel=1e-9), "torch's seeded random stream changed"
    path = folder / f"{name}_vae.safetensors"
    save_file(weights, str(path))
    return path, meta, expected
