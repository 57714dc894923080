"""The LTX2 graph nodes on the embedded demo: a node graph equals ``generate`` bit for bit on the CPU (one-stage,
HQ and distilled, with a first-frame picture and a keyframe), and bad inputs fail before any model work."""

from __future__ import annotations

import pytest
import torch

from comfyui_cosmos3_ltx2.ltx2 import generate
from comfyui_cosmos3_ltx2.ltx2.api import Keyframe
from comfyui_cosmos3_ltx2.nodes import NODE_CLASS_MAPPINGS as N
from comfyui_cosmos3_ltx2.nodes.ltx2 import EMBEDDED

pytest.importorskip("sentencepiece")
pytest.importorskip("av")

PROMPT, NEGATIVE, SEED = "a cat plays a piano", "blurry", 7


@pytest.fixture(scope="module")
def demo():
    from comfyui_cosmos3_ltx2.ltx2.tiny import default_demo

    return default_demo()


@pytest.fixture(scope="module")
def pictures():
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 96, 160, 3, generator=g), torch.rand(1, 80, 80, 3, generator=g)


@pytest.fixture(scope="module")
def loaded(demo):
    model, vae = N["LTX2CheckpointLoader"]().load(EMBEDDED, "fp32", "cpu")
    te, = N["LTX2TextEncoderLoader"]().load(EMBEDDED, "fp32", "cpu")
    cond, = N["LTX2TextEncode"]().encode(te, model, PROMPT, NEGATIVE)
    return model, vae, cond


def _latent(vae, width, height, pictures):
    latent, = N["LTX2EmptyLatent"]().make(vae, width, height, 17, 24.0, 1)
    latent, = N["LTX2ImageConditioning"]().condition(vae, latent, pictures[0], 0, 0.9, 33)
    latent, = N["LTX2ImageConditioning"]().condition(vae, latent, pictures[1], 16, 0.8, 33)
    return latent


def _reference(demo, pictures, pipeline, **kw):
    frames, wave, rate = generate(demo.checkpoint, demo.text_encoder, PROMPT, NEGATIVE, width=128, height=128,
                                  num_frames=17, fps=24.0, seed=SEED, pipeline=pipeline, image=pictures[0],
                                  image_strength=0.9, keyframes=[Keyframe(pictures[1], 16, 0.8)], dtype="fp32",
                                  device="cpu", **kw)
    return frames, wave, rate


def _same(node_out, ref):
    images, audio, fps = node_out
    frames, wave, rate = ref
    assert fps == 24.0 and audio["sample_rate"] == rate
    assert images.shape == frames.shape and torch.isfinite(images).all()
    assert torch.equal(images, frames)
    assert torch.equal(audio["waveform"][0], wave)


def test_one_stage_graph_equals_generate(demo, loaded, pictures):
    model, vae, cond = loaded
    latent = _latent(vae, 128, 128, pictures)
    guider, = N["LTX2GuiderPreset"]().make("LTX-2.3 one-stage", "split")
    out, = N["LTX2Sampler"]().sample(model, cond, latent, SEED, 3, "ltx2", "euler", 0.5, "seeded", guider=guider)
    _same(N["LTX2Decode"]().decode(vae, out, 4, 0, 64), _reference(demo, pictures, "one-stage", steps=3))


def test_hq_graph_equals_generate(demo, loaded, pictures):
    model, vae, cond = loaded
    lora_model, = N["LTX2LoraLoader"]().apply(model, EMBEDDED, 0.25, 0.5)
    up, = N["LTX2UpsamplerLoader"]().load(EMBEDDED, "fp32", "cpu")
    latent = _latent(vae, 64, 64, pictures)
    guider, = N["LTX2GuiderPreset"]().make("LTX-2.3 HQ", "split")
    s1, = N["LTX2Sampler"]().sample(lora_model, cond, latent, SEED, 3, "ltx2 token-shifted (HQ stage 1)", "res2s",
                                    0.5, "seeded", guider=guider)
    s2, = N["LTX2UpsampleRefine"]().refine(lora_model, cond, s1, up, vae, "res2s", 0.5, "seeded")
    assert tuple(s2["samples"].shape[-2:]) == (4, 4)
    _same(N["LTX2Decode"]().decode(vae, s2, 4, 0, 64),
          _reference(demo, pictures, "hq", steps=3, upsampler=demo.upsampler, distilled_lora=demo.lora))


def test_distilled_graph_equals_generate(demo, loaded, pictures):
    model, vae, cond = loaded
    lora_model, = N["LTX2LoraLoader"]().apply(model, EMBEDDED, 0.25, 0.5)
    up, = N["LTX2UpsamplerLoader"]().load(EMBEDDED, "fp32", "cpu")
    latent = _latent(vae, 64, 64, pictures)
    s1, = N["LTX2Sampler"]().sample(lora_model, cond, latent, SEED, 8, "distilled", "euler", 0.5, "seeded")
    s2, = N["LTX2UpsampleRefine"]().refine(lora_model, cond, s1, up, vae, "euler", 0.5, "seeded")
    _same(N["LTX2Decode"]().decode(vae, s2, 4, 0, 64),
          _reference(demo, pictures, "distilled", upsampler=demo.upsampler, distilled_lora=demo.lora))


# ---------------------------------------------------------------------------------------------- the graph doors
from pathlib import Path  # noqa: E402

from comfyui_cosmos3_ltx2 import headless  # noqa: E402

API = Path(__file__).resolve().parents[2] / "workflows" / "api" / "ltx2_t2v_api.json"
SMALL = ["3.width=64", "3.height=32", "3.frames=9", "5.steps=2"]


def test_bad_size_fails_before_any_model_work(monkeypatch, tmp_path):
    mappings = headless.node_mappings(False)
    calls = []
    monkeypatch.setattr(mappings["LTX2CheckpointLoader"], "load", lambda self, *a, **k: calls.append(1))
    graph = headless.apply_overrides(headless.load_workflow(API), ["3.width=100", "3.frames=20"], mappings)
    with pytest.raises(headless.WorkflowError) as err:
        headless.run(graph, output_dir=tmp_path, mappings=mappings)
    assert "node 3 (LTX2EmptyLatent)" in str(err.value) and "width=100: not a multiple of 32; use 96 or 128" in str(err.value)
    assert calls == [] and not any(tmp_path.iterdir())
    # the node refuses it too when called directly (linked values skip VALIDATE_INPUTS)
    with pytest.raises(ValueError, match="LTX2EmptyLatent: frames=20: not 8k\\+1 frames.*use 17 or 25"):
        N["LTX2EmptyLatent"]().make(None, 64, 32, 20)


@pytest.mark.parametrize("cancel_at, where", [(1, "sampling"), (3, "decoding")])
def test_cancel_writes_no_file(monkeypatch, tmp_path, cancel_at, where):
    """Two sampler steps (one interrupt check each), then the decoder checks: Cancel in either writes nothing."""
    from comfyui_cosmos3_ltx2.nodes import comfy

    class Cancelled(BaseException):
        pass

    checks, decoding = [], []

    def check():
        checks.append(1)
        if len(checks) == cancel_at:
            raise Cancelled()

    monkeypatch.setattr(comfy, "check_interrupt", check)
    real_decode = N["LTX2Decode"].decode
    monkeypatch.setattr(N["LTX2Decode"], "decode", lambda self, *a, **k: decoding.append(1) or real_decode(self, *a, **k))
    mappings = headless.node_mappings(False)
    graph = headless.apply_overrides(headless.load_workflow(API), SMALL, mappings)
    with pytest.raises(Cancelled):
        headless.run(graph, output_dir=tmp_path, mappings=mappings)
    assert bool(decoding) == (where == "decoding")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
