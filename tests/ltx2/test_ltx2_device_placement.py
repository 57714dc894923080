"""The GPU paths without a GPU: whole LTX-2.3 runs with every weight and input on the ``meta``
device under ``device_check.OneDevice``, which fails any op that mixes devices and any host read of a
device value (see its docstring). A pass means a CUDA run keeps every tensor on the GPU from the loaded
weights to the decoded frames and never waits on a device value, in the sampling loops and around them.

What runs on the host by design stays there: tokenisation, Gemma's own forward (transformers, given here as
a CPU stand-in that hands meta hidden states over), picture preparation and the starting noise (drawn on the
CPU for seed parity, then moved). Left out: the LoRA merge, which reads the weights back on purpose to keep
its strength changes bit-exact (a few syncs per stage change, outside the loops), and res2s's SDE noise,
whose generator lives on the device (meta has none; the noise is replaced by meta tensors of its shape).
"""

import pytest
import torch

from comfyui_cosmos3_ltx2.core.sampling import res2s
from comfyui_cosmos3_ltx2.ltx2.denoiser import Guidance
from helpers.device_check import OneDevice
from helpers.ltx2_checkpoint_ref import NEGATIVE, PROMPT, hq_files

META = torch.device("meta")


def _meta_gemma(folder):
    from comfyui_cosmos3_ltx2.ltx2.text_encoding import GemmaTextEncoder, load_gemma_text_encoder

    class HostGemma(GemmaTextEncoder):
        """Gemma on the CPU (transformers' masks read values), its hidden states handed over on meta."""

        def encode(self, prompt):
            hidden, mask = super().encode(prompt)
            return tuple(h.to(META) for h in hidden), mask.to(META)

    g = load_gemma_text_encoder(folder, dtype="bf16", device="cpu", max_length=256)
    return HostGemma(g.model, g.tokenizer, max_length=256)


@pytest.mark.parametrize("tiny", ["2.3"], indirect=True)
@pytest.mark.parametrize("pipeline,strategy", [("hq", "split"), ("hq", "batched"), ("distilled", "split"),
                                               ("one-stage", "batched")])


def test_ltx2_generate_stays_on_the_device(pipeline, strategy, hq_ckpt, gemma_folder, tmp_path_factory,
                                           monkeypatch):
    from comfyui_cosmos3_ltx2.ltx2 import generate
    from comfyui_cosmos3_ltx2.ltx2.api import Keyframe

    monkeypatch.setattr(res2s._TwoStreamNoise, "__call__",
                        lambda self, kind, step, x: torch.empty(x.shape, dtype=torch.float64, device=x.device))
    file, _ = hq_ckpt
    files = hq_files(tmp_path_factory)
    kw = dict(width=128, height=128, num_frames=17, seed=1, device=META, dtype="bf16", pipeline=pipeline,
              strategy=strategy, image=torch.from_numpy(files["image"]) / 255.0,
              keyframes=[Keyframe(files["png"], 8, 0.8)])
    if pipeline != "distilled":  # every guidance pass, an STG block included
        kw.update(steps=2, video_guidance=Guidance(cfg=3.0, stg=1.0, stg_blocks=(0,), modality=2.0, rescale=0.5),
                  audio_guidance=Guidance(cfg=5.0, modality=2.0, rescale=1.0))
    if pipeline != "one-stage":
        kw.update(upsampler=files["up_file"])
    gemma = _meta_gemma(gemma_folder[0])
    steps = []
    with OneDevice() as check:
        frames, wave, rate = generate(file, gemma, PROMPT, NEGATIVE, callback=steps.append, **kw)
    assert frames.device == wave.device == META and frames.shape == (17, 128, 128, 3) and wave.shape[0] == 2
    assert len(steps) == {"hq": 2 + 3, "distilled": 8 + 3, "one-stage": 2}[pipeline] and check.ops > 1000
