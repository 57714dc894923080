"""Cosmos3 LATENTs hold raw Wan2.2 VAE latents, ComfyUI's convention; the sampler normalises in and out.

ComfyUI cannot be installed here, so its side is checked through the facts it publishes: the ``Wan22`` latent
format of ``comfy/latent_formats.py`` (v0.27.0: statistics, ``process_in`` / ``process_out`` formulas, RGB
preview factors) and the LATENT dicts its Wan2.2 nodes build (``comfy_extras/nodes_wan.py``
``Wan22ImageToVideoLatent``, ``nodes.py`` ``VAEEncode``). diffusers (a test dependency) is the oracle for the
normalisation of Cosmos3's own pipeline and for the VAE's encode and decode of raw latents. The graph of nodes
must equal ``cosmos3.generate`` bit for bit: both run the same stage functions.
"""

import json

import pytest
import torch

from comfyui_cosmos3_ltx2.cosmos3 import generate
from comfyui_cosmos3_ltx2.cosmos3 import pipeline as P
from comfyui_cosmos3_ltx2.cosmos3.latent_format import (
    WAN22_LATENT_RGB_BIAS,
    WAN22_LATENT_RGB_FACTORS,
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
    Wan22LatentFormat,
    latent_to_rgb,
)
from comfyui_cosmos3_ltx2.cosmos3.tiny import write_tiny_checkpoint
from comfyui_cosmos3_ltx2.nodes import NODE_CLASS_MAPPINGS as M
from helpers.measures import rel


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The tiny checkpoint with Wan2.2's real latent statistics, so raw and normalised latents differ."""
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("cosmos3_wan22_stats") / "ckpt")
    cfg_file = folder / "vae" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.update(latents_mean=list(WAN22_LATENTS_MEAN), latents_std=list(WAN22_LATENTS_STD))
    cfg_file.write_text(json.dumps(cfg))
    return folder


@pytest.fixture(scope="module")
def parts(folder):
    model, = M["Cosmos3ModelLoader"]().load(str(folder), "fp32", "cpu")
    vae, = M["Cosmos3VAELoader"]().load(str(folder), "fp32", "cpu")
    return model, vae


def image():
    return torch.rand(1, 40, 70, 3, generator=torch.Generator().manual_seed(3))


# ---------------------------------------------------------------------------------------------- the latent format
def test_wan22_constants_are_comfyuis_published_ones():
    """Spot values and sizes of ComfyUI 0.27.0's ``comfy/latent_formats.py`` ``Wan22`` (48 channels)."""
    assert len(WAN22_LATENTS_MEAN) == len(WAN22_LATENTS_STD) == len(WAN22_LATENT_RGB_FACTORS) == 48
    assert (WAN22_LATENTS_MEAN[0], WAN22_LATENTS_MEAN[19], WAN22_LATENTS_MEAN[47]) == (-0.2289, 0.5109, -0.0667)
    assert (WAN22_LATENTS_STD[0], WAN22_LATENTS_STD[39], WAN22_LATENTS_STD[47]) == (0.4765, 1.6887, 0.7744)
    assert WAN22_LATENT_RGB_FACTORS[0] == (0.0119, 0.0103, 0.0046)
    assert WAN22_LATENT_RGB_FACTORS[39] == (-0.3441, -0.3543, -0.2008)
    assert WAN22_LATENT_RGB_FACTORS[47] == (-0.0837, 0.0168, 0.0055)
    assert WAN22_LATENT_RGB_BIAS == (0.0317, -0.0878, -0.1388)
    fmt = Wan22LatentFormat()
    assert fmt.latent_channels == 48 and fmt.latent_dimensions == 3 and fmt.scale_factor == 1.0
    assert fmt.taesd_decoder_name == "lighttaew2_2"


def test_process_in_and_out_follow_comfyui_and_diffusers():
    """ComfyUI's Wan22: process_in = (x - mean) * scale / std, process_out = x * std / scale + mean (scale 1).
    Ours uses diffusers' op order (times 1/std): equal to float rounding, and bit-equal to diffusers' pipeline."""
    from diffusers import Cosmos3OmniPipeline

    fmt = Wan22LatentFormat()
    raw = torch.randn(2, 48, 3, 4, 5, generator=torch.Generator().manual_seed(0)) * 0.7
    mean = torch.tensor(WAN22_LATENTS_MEAN).view(1, 48, 1, 1, 1)
    std = torch.tensor(WAN22_LATENTS_STD).view(1, 48, 1, 1, 1)
    comfy_in = (raw - mean) * 1.0 / std
    torch.testing.assert_close(fmt.process_in(raw), comfy_in, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fmt.process_out(comfy_in), comfy_in * std / 1.0 + mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fmt.process_out(fmt.process_in(raw.double())), raw.double(), rtol=0, atol=1e-12)
    assert fmt.process_in(raw.bfloat16()).dtype == torch.bfloat16

    class Encoded:  # what diffusers' VAE.encode returns, holding our raw latents
        class latent_dist:  # noqa: N801 - diffusers' attribute name
            @staticmethod
            def mode():
                return raw

    class Pipe:  # the attributes Cosmos3OmniPipeline.__init__ sets from vae.config, nothing else
        vae = type("V", (), {"dtype": torch.float32, "encode": staticmethod(lambda x: Encoded())})()
        _vae_latents_mean = torch.tensor(WAN22_LATENTS_MEAN, dtype=torch.float32)
        _vae_latents_inv_std = 1.0 / torch.tensor(WAN22_LATENTS_STD, dtype=torch.float32)

    want = Cosmos3OmniPipeline._encode_video(Pipe(), torch.zeros(2, 3, 9, 64, 80))
    assert torch.equal(fmt.process_in(raw), want)


def test_preview_of_a_sampled_tiny_latent(parts):
    """The published factors on a sampled latent of the tiny model: a picture at latent resolution, in 0..255,
    equal to ComfyUI's Latent2RGB rule (first video, first latent frame, x0 @ factors + bias, then to bytes)."""
    model, _ = parts
    latent, = M["Cosmos3EmptyLatent"]().make(96, 64, 9, 1)
    cond, = M["Cosmos3TextEncode"]().encode(model, latent, "a cat", "blurry", 24.0)
    seen = []
    out = P.sample(model.transformer, cond, latent["samples"], P.make_schedule(3, model.settings.scheduler_config),
                   latent_format=model.settings.latent_format, guidance=4.0, seed=1,
                   callback=lambda info: seen.append(info["denoised"]))
    x0 = model.settings.latent_format.process_in(out)  # the normalised latent, what previews read
    picture = latent_to_rgb(x0)
    assert picture.shape == (4, 6, 3) and picture.dtype == torch.uint8
    factors, bias = torch.tensor(WAN22_LATENT_RGB_FACTORS), torch.tensor(WAN22_LATENT_RGB_BIAS)
    rgb = torch.nn.functional.linear(x0[0, :, 0].movedim(0, -1), factors.T, bias)
    assert torch.equal(picture, ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).to(torch.uint8))
    assert len(seen) == 3 and all(latent_to_rgb(d).shape == (4, 6, 3) for d in seen)
    assert int(picture.max()) <= 255 and len(picture.unique()) > 1


# ---------------------------------------------------------------------------------------------- raw LATENTs
def test_encode_and_decode_nodes_use_raw_latents_like_diffusers(folder, parts):
    """Cosmos3 VAE Encode gives the VAE's raw posterior mean and Cosmos3 VAE Decode decodes raw latents (oracle:
    diffusers' AutoencoderKLWan from the same folder); no normalisation on either side."""
    from diffusers import AutoencoderKLWan

    _, vae = parts
    ref = AutoencoderKLWan.from_pretrained(str(folder / "vae")).eval()
    frames = torch.rand(5, 40, 70, 3, generator=torch.Generator().manual_seed(4))  # cropped to 32 x 64
    latent, = M["Cosmos3VAEEncode"]().encode(vae, frames)
    assert set(latent) == {"samples"} and latent["samples"].shape == (1, 48, 2, 2, 4)
    pixels = frames[:, 4:36, 3:67].permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1
    with torch.no_grad():
        want = ref.encode(pixels).latent_dist.mode()
    assert rel(latent["samples"], want) < 1e-5
    images, fps = M["Cosmos3VAEDecode"]().decode(vae, latent)
    with torch.no_grad():
        video = ref.decode(latent["samples"]).sample
    want = ((video.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 3, 0)
    assert images.shape == (5, 32, 64, 3) and fps == 24.0
    assert rel(images, want) < 1e-5


def test_sampler_takes_and_gives_raw_latents(parts):
    """The clean start frame of an image-to-video LATENT is raw and comes out raw (pinned; back from the normalised
    space to float rounding), while the transformer saw it normalised."""
    model, vae = parts
    latent, = M["Cosmos3ImageToVideoLatent"]().make(vae, image(), 64, 32, 9, 1)
    assert latent["noise_mask"].shape == (1, 1, 3, 2, 4) and latent["noise_mask"][0, 0, 0].max() == 0
    raw_first = latent["samples"][:, :, :1].clone()
    want = P.encode_image(vae.vae, P.preprocess_image(image()[0], 32, 64))
    assert torch.equal(raw_first, want)  # raw encoder output, not normalised
    cond, = M["Cosmos3TextEncode"]().encode(model, latent, "a cat", "blurry", 24.0)
    seen = []
    hook = model.transformer.register_forward_pre_hook(lambda mod, args: seen.append(args[0][:, :, :1].clone()))
    try:
        out, = M["Cosmos3Sampler"]().sample(model, cond, latent, 7, 2, 1.0, 0.0)
    finally:
        hook.remove()
    assert rel(out["samples"][:, :, :1], raw_first) < 1e-6
    assert torch.equal(seen[0], model.settings.latent_format.process_in(raw_first))
    assert rel(seen[0], raw_first) > 0.01  # (the statistics are not the identity here)


def test_latents_made_by_comfyuis_nodes(parts):
    """LATENTs as ComfyUI's nodes build them work in the sampler: Wan22ImageToVideoLatent's (raw start frame,
    process_out(0) elsewhere, noise_mask 0 on the start frame) samples as our image-to-video latent does; a bare
    ``{"samples"}`` (VAEEncode, EmptyHunyuanLatentVideo-like) is raw and fully noised; a batch repeated by a latent
    node keeps the mask; a latent cut in time with its old mask is refused with a clear message."""
    model, vae = parts
    ours, = M["Cosmos3ImageToVideoLatent"]().make(vae, image(), 64, 32, 9, 1)
    cond, = M["Cosmos3TextEncode"]().encode(model, ours, "a cat", "blurry", 24.0)
    sampler = M["Cosmos3Sampler"]()
    want, = sampler.sample(model, cond, ours, 7, 2, 3.0, 0.0)
    mask = ours["noise_mask"]
    fmt = Wan22LatentFormat()
    samples = fmt.process_out(torch.zeros_like(ours["samples"])) * mask + ours["samples"] * (1 - mask)
    got, = sampler.sample(model, cond, {"samples": samples, "noise_mask": mask}, 7, 2, 3.0, 0.0)
    assert torch.equal(got["samples"], want["samples"])

    empty, = M["Cosmos3EmptyLatent"]().make(64, 32, 9, 1)
    assert set(empty) == {"samples"}
    want, = sampler.sample(model, cond, empty, 7, 2, 3.0, 0.0)
    got, = sampler.sample(model, cond, {"samples": torch.randn(1, 48, 3, 2, 4)}, 7, 2, 3.0, 0.0)
    assert torch.equal(got["samples"], want["samples"])

    batch = dict(ours, samples=ours["samples"].repeat(2, 1, 1, 1, 1))  # RepeatLatentBatch keeps a batch-1 mask
    out, = sampler.sample(model, cond, batch, 7, 2, 3.0, 0.0)
    assert rel(out["samples"][:, :, :1], batch["samples"][:, :, :1]) < 1e-6
    cut = dict(ours, samples=ours["samples"][:, :, 1:])  # LatentCut on t: the mask is copied unchanged
    short, = M["Cosmos3EmptyLatent"]().make(64, 32, 5, 1)
    cond_short, = M["Cosmos3TextEncode"]().encode(model, short, "a cat", "blurry", 24.0)
    with pytest.raises(ValueError, match="Cosmos3Sampler .*noise_mask"):
        sampler.sample(model, cond_short, cut, 7, 2, 3.0, 0.0)
    partial = dict(ours, noise_mask=mask.clone().index_fill_(3, torch.tensor([0]), 0.5))
    with pytest.raises(ValueError, match="inpainting"):
        sampler.sample(model, cond, partial, 7, 2, 3.0, 0.0)


# ---------------------------------------------------------------------------------------------- one recipe
CASES = {"t2v": dict(frames=9, image=False), "i2v": dict(frames=9, image=True), "t2i": dict(frames=1, image=False)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_graph_equals_generate_bit_for_bit(folder, parts, case):
    model, vae = parts
    frames, with_image = CASES[case]["frames"], CASES[case]["image"]
    if with_image:
        latent, = M["Cosmos3ImageToVideoLatent"]().make(vae, image(), 64, 32, frames, 1)
    else:
        latent, = M["Cosmos3EmptyLatent"]().make(64, 32, frames, 1)
    cond, = M["Cosmos3TextEncode"]().encode(model, latent, "a cat", "blurry", 16.0)
    out, = M["Cosmos3Sampler"]().sample(model, cond, latent, 11, 3, 4.0, 0.0)
    images, fps = M["Cosmos3VAEDecode"]().decode(vae, out)
    ref = generate(folder, "a cat", "blurry", image()[0] if with_image else None, num_frames=frames, height=32,
                   width=64, fps=16.0, steps=3, guidance=4.0, seed=11, device="cpu", dtype="fp32")
    assert fps == 16.0 and images.shape == ref.shape
    assert torch.equal(images, ref)


def test_distilled_checkpoint_one_behaviour(tmp_path):
    """A distilled folder: the sampler node reads its modular_model_index.json as generate does, refuses cfg other
    than 1 and a step count other than its list's (as generate does), and with 4 steps and cfg 1 equals generate."""
    folder = write_tiny_checkpoint(tmp_path / "distilled")
    (folder / "modular_model_index.json").write_text(json.dumps({"distilled_sigmas": [1.0, 0.9, 0.6, 0.25],
                                                                "is_distilled": True}))
    sched = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0, "stochastic_sampling": True}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    model, = M["Cosmos3ModelLoader"]().load(str(folder), "fp32", "cpu")
    vae, = M["Cosmos3VAELoader"]().load(str(folder), "fp32", "cpu")
    latent, = M["Cosmos3EmptyLatent"]().make(32, 32, 5, 1)
    cond, = M["Cosmos3TextEncode"]().encode(model, latent, "a cat", "", 24.0)
    sampler = M["Cosmos3Sampler"]()
    with pytest.raises(ValueError, match="Cosmos3Sampler: cfg=6.0: this distilled"):
        sampler.sample(model, cond, latent, 3, 4, 6.0, 0.0)
    with pytest.raises(ValueError, match="Cosmos3Sampler: steps=35: this distilled"):
        sampler.sample(model, cond, latent, 3, 35, 1.0, 0.0)
    with pytest.raises(ValueError, match="guidance"):
        generate(folder, "a cat", guidance=6.0, num_frames=5, height=32, width=32, device="cpu", dtype="fp32")
    out, = sampler.sample(model, cond, latent, 3, 4, 1.0, 0.0)
    images, _ = M["Cosmos3VAEDecode"]().decode(vae, out)
    ref = generate(folder, "a cat", num_frames=5, height=32, width=32, seed=3, device="cpu", dtype="fp32")
    assert torch.equal(images, ref)
    # Another sampler runs it as an ordinary flow model, in both.
    out, = sampler.sample(model, cond, latent, 3, 2, 3.0, 0.0, sampler="euler")
    images, _ = M["Cosmos3VAEDecode"]().decode(vae, out)
    ref = generate(folder, "a cat", num_frames=5, height=32, width=32, seed=3, steps=2, guidance=3.0, sampler="euler",
                   device="cpu", dtype="fp32")
    assert torch.equal(images, ref)
