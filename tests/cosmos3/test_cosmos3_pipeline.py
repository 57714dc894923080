"""Whole T2V / I2V / T2I runs against diffusers' Cosmos3OmniPipeline from the same seed (tiny random models)."""

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_cosmos3_ltx2.core.sampling import sample_unipc
from comfyui_cosmos3_ltx2.cosmos3 import generate
from comfyui_cosmos3_ltx2.cosmos3 import pipeline as P
from comfyui_cosmos3_ltx2.cosmos3.loader import load_checkpoint
from helpers.cosmos3_oracle import reference_pipeline
from helpers.measures import psnr
from helpers.op_count import OpCount

PROMPT = "A red robot walks through a sunny garden, cinematic lighting."
NEGATIVE = "blurry, low quality"


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cosmos3_ref")
    return folder, reference_pipeline(folder, seed=0)


def make_image():
    g = np.random.default_rng(0)
    return Image.fromarray(g.integers(0, 255, (40, 70, 3), dtype=np.uint8))


CASES = {
    "t2v": dict(num_frames=9, height=32, width=64),
    "t2v-odd-latent-height": dict(num_frames=5, height=48, width=64),
    "i2v": dict(num_frames=9, height=32, width=64, image=True),
    "t2i": dict(num_frames=1, height=32, width=64),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_generate_matches_diffusers(ckpt_dir, case):
    folder, pipe = ckpt_dir
    kw = dict(CASES[case])
    image = make_image() if kw.pop("image", False) else None
    seed, steps, guidance, fps = 1234, 4, 4.0, 16.0
    want = pipe(
        prompt=PROMPT, negative_prompt=NEGATIVE, image=image, fps=fps, num_inference_steps=steps,
        guidance_scale=guidance, generator=torch.Generator().manual_seed(seed), output_type="np", **kw,
    ).video
    got = generate(folder, PROMPT, NEGATIVE, image, fps=fps, steps=steps, guidance=guidance, seed=seed,
                   device="cpu", dtype="fp32", **kw)
    assert got.shape == (kw["num_frames"], kw["height"], kw["width"], 3)
    assert torch.isfinite(got).all()
    print(case, "PSNR", psnr(got.numpy(), want))
    assert psnr(got.numpy(), want) >= 40.0


def test_no_guidance_and_template_switches(ckpt_dir):
    folder, pipe = ckpt_dir
    kw = dict(num_frames=5, height=32, width=32)
    want = pipe(prompt=PROMPT, guidance_scale=1.0, num_inference_steps=3, use_system_prompt=False,
                add_resolution_template=False, generator=torch.Generator().manual_seed(5), output_type="np", **kw).video
    got = generate(folder, PROMPT, guidance=1.0, steps=3, seed=5, use_system_prompt=False,
                   add_resolution_template=False, device="cpu", dtype="fp32", **kw)
    assert psnr(got.numpy(), want) >= 40.0


class EncodeSpy:
    def __init__(self, vae):
        self.vae, self.inputs = vae, []
        self.original = vae.encode

    def __enter__(self):
        def spy(x, *a, **k):
            self.inputs.append(tuple(x.shape))
            return self.original(x, *a, **k)

        self.vae.encode = spy
        return self

    def __exit__(self, *exc):
        del self.vae.encode


def test_i2v_encodes_one_frame_and_t2i_encodes_nothing(ckpt_dir):
    folder, _ = ckpt_dir
    ckpt = load_checkpoint(folder, device="cpu", dtype="fp32")
    with EncodeSpy(ckpt.vae) as spy:
        generate(ckpt, PROMPT, image=make_image(), num_frames=9, height=32, width=64, steps=2, guidance=3.0)
    assert [s[2] for s in spy.inputs] == [1]  # one call, one pixel frame
    with EncodeSpy(ckpt.vae) as spy:
        generate(ckpt, PROMPT, image=make_image(), num_frames=1, height=32, width=64, steps=2, guidance=3.0)
        generate(ckpt, PROMPT, num_frames=9, height=32, width=64, steps=2, guidance=3.0)
    assert spy.inputs == []


@pytest.mark.parametrize("image", [False, True], ids=["t2v", "i2v"])
def test_denoising_loop_has_no_host_syncs(ckpt_dir, image):
    folder, _ = ckpt_dir
    ckpt = load_checkpoint(folder, device="cpu", dtype="fp32")
    cond = P.encode_prompts(ckpt.transformer, ckpt.tokenizer, PROMPT, NEGATIVE, num_frames=9, height=32, width=64)
    if image:
        lat, frames = P.image_latents(ckpt.vae, make_image(), 9, 32, 64)
    else:
        lat, frames = P.empty_latents(9, 32, 64), []
    x = P.start_latents(lat, P.initial_noise(lat.shape, 0), frames)
    schedule = P.make_schedule(5, ckpt.settings.scheduler_config)
    model = P.FlowDenoiser(ckpt.transformer, cond, 1, tuple(x.shape[2:]), frames, schedule, guidance=5.0)
    with OpCount() as counter:
        out = sample_unipc(model, x, schedule.sigmas, order=2)
    assert counter.host_reads == 0
    assert torch.isfinite(out).all()
    if image:  # the clean frame is pinned through the whole loop
        assert (out[:, :, 0] - lat[:, :, 0]).abs().max() < 1e-5


def test_seed_changes_only_the_noise():
    a = P.initial_noise((1, 48, 3, 2, 4), 7)
    assert torch.equal(a, torch.randn((1, 48, 3, 2, 4), generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(a, P.initial_noise((1, 48, 3, 2, 4), 8))


def test_distilled_checkpoint_uses_its_sigmas_and_renoises(tmp_path):
    """A distilled folder (distilled_sigmas + stochastic Euler) samples its fixed list with guidance 1; the
    seed drives the re-noising too, and an image-to-video run keeps its clean frame."""
    import json
    import shutil

    from comfyui_cosmos3_ltx2.cosmos3.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "distilled")
    (folder / "modular_model_index.json").write_text(json.dumps({"distilled_sigmas": [1.0, 0.9, 0.6, 0.25],
                                                                "is_distilled": True}))
    sched = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0, "stochastic_sampling": True}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    ckpt = load_checkpoint(folder, device="cpu", dtype="fp32")
    seen = []
    kw = dict(num_frames=5, height=32, width=32)
    a = generate(ckpt, PROMPT, callback=lambda d: seen.append(d["sigma"]), seed=3, **kw)
    assert seen == pytest.approx([1.0, 0.9, 0.6, 0.25])
    assert torch.equal(a, generate(ckpt, PROMPT, seed=3, **kw))
    assert not torch.equal(a, generate(ckpt, PROMPT, seed=4, **kw))
    with pytest.raises(ValueError, match="guidance"):
        generate(ckpt, PROMPT, guidance=4.0, **kw)
    with pytest.raises(ValueError, match="steps"):
        generate(ckpt, PROMPT, steps=8, **kw)
    # Image-to-video: the clean frame survives every re-noising step.
    cond = P.encode_prompts(ckpt.transformer, ckpt.tokenizer, PROMPT, None, with_negative=False, **kw)
    lat, frames = P.image_latents(ckpt.vae, make_image(), height=32, width=32, num_frames=5)
    gen = P.noise_generator(0)
    x = P.start_latents(lat, P.initial_noise(lat.shape, gen), frames)
    schedule = P.make_schedule(0, ckpt.settings.scheduler_config, sigmas=ckpt.settings.distilled_sigmas)
    out = P.denoise(ckpt.transformer, cond, x, schedule, guidance=1.0, condition_frames=frames, generator=gen)
    assert torch.equal(out[:, :, 0], lat[:, :, 0])
    shutil.rmtree(folder)


def test_generate_frees_the_transformer_before_decoding(monkeypatch):
    """Given a folder, generate owns the checkpoint: the transformer is gone before the VAE decodes (so the two are
    never on the device together during the decode); a checkpoint the caller loaded is left as it is."""
    import gc
    import weakref

    from comfyui_cosmos3_ltx2.cosmos3 import pipeline
    from comfyui_cosmos3_ltx2.cosmos3.loader import load_checkpoint
    from comfyui_cosmos3_ltx2.cosmos3.tiny import default_checkpoint

    real_decode, real_load, seen = pipeline.decode, load_checkpoint, {}

    def load(*a, **kw):
        ck = real_load(*a, **kw)
        seen["transformer"] = weakref.ref(ck.transformer)
        return ck

    def decode(*a, **kw):
        gc.collect()
        seen["alive at decode"] = seen["transformer"]() is not None
        return real_decode(*a, **kw)

    import comfyui_cosmos3_ltx2.cosmos3.loader as loader_module

    monkeypatch.setattr(loader_module, "load_checkpoint", load)
    monkeypatch.setattr(pipeline, "decode", decode)
    kw = dict(width=64, height=32, num_frames=5, steps=2, seed=1, device="cpu", dtype="fp32")
    frames = pipeline.generate(default_checkpoint(), "a robot", **kw)
    assert seen["alive at decode"] is False and frames.shape == (5, 32, 64, 3)
    mine = real_load(default_checkpoint(), device="cpu", dtype="fp32")
    pipeline.generate(mine, "a robot", **kw)
    assert mine.transformer is not None
