"""Cosmos3 video-to-video (continuing a clip) against diffusers' Cosmos3OmniPipeline V2V path on tiny random models,
the node graph against ``generate`` bit for bit, and bad input refused at every door before any model loads.

diffusers 0.42.1 (``pipeline_cosmos3_omni.py``, ``prepare_latents``): the clip's first or last
``max(condition_frame_indexes_vision) * 4 + 1`` frames (``condition_video_keep``), resized to H x W by its
``VideoProcessor`` (Pillow bilinear for PIL frames, no crop), placed at the start of the video, the tail repeated;
the whole video is encoded and latent frames ``(0, 1)`` (by default) are kept clean.
"""

from __future__ import annotations

import builtins
import re

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_cosmos3_ltx2 import headless
from comfyui_cosmos3_ltx2.__main__ import main
from comfyui_cosmos3_ltx2.core.checks import OptionError
from comfyui_cosmos3_ltx2.core.videos import frames_of
from comfyui_cosmos3_ltx2.cosmos3 import generate
from comfyui_cosmos3_ltx2.cosmos3 import pipeline as P
from comfyui_cosmos3_ltx2.cosmos3.loader import load_checkpoint
from comfyui_cosmos3_ltx2.cosmos3.tiny import write_tiny_checkpoint
from comfyui_cosmos3_ltx2.nodes import NODE_CLASS_MAPPINGS as M
from comfyui_cosmos3_ltx2.nodes import NODE_DISPLAY_NAME_MAPPINGS as NAMES
from comfyui_cosmos3_ltx2.nodes import cosmos3 as cosmos3_nodes
from helpers import ROOT
from helpers.cosmos3_oracle import reference_pipeline
from helpers.measures import psnr

PROMPT = "A red robot walks through a sunny garden, cinematic lighting."
NEGATIVE = "blurry, low quality"
SIZE = dict(height=32, width=64)


def clip_uint8(frames=12, h=40, w=70, seed=1):
    return np.random.default_rng(seed).integers(0, 255, (frames, h, w, 3), dtype=np.uint8)


def clip_pil(frames=12, h=40, w=70, seed=1):
    return [Image.fromarray(f) for f in clip_uint8(frames, h, w, seed)]


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cosmos3_v2v_ref")
    return folder, reference_pipeline(folder, seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("cosmos3_v2v_tiny") / "ckpt")


# ---------------------------------------------------------------------------------------------- diffusers parity
CASES = {
    "first-k2": dict(keep="first", indexes=(0, 1), num_frames=9),
    "last-k2": dict(keep="last", indexes=(0, 1), num_frames=13),
    "first-k1": dict(keep="first", indexes=(0,), num_frames=9),
    "last-k3": dict(keep="last", indexes=(0, 1, 2), num_frames=13),
}


def reference_video(pipe, video, case, seed=1234):
    c = CASES[case]
    return pipe(
        prompt=PROMPT, negative_prompt=NEGATIVE, video=video, num_frames=c["num_frames"],
        condition_frame_indexes_vision=c["indexes"], condition_video_keep=c["keep"], fps=16.0,
        num_inference_steps=4, guidance_scale=4.0, generator=torch.Generator().manual_seed(seed), output_type="np",
        **SIZE,
    ).video


@pytest.mark.parametrize("case", sorted(CASES))
def test_generate_matches_diffusers_v2v(ref, case):
    """Whole V2V runs from the same seed: a 12-frame 70x40 PIL clip stretched to 64x32, first or last frames, 1, 2
    or 3 kept latent frames. Measured here: PSNR about 125 dB (max |diff| about 4e-6); the bar is the I2V test's 40."""
    folder, pipe = ref
    c = CASES[case]
    clip = clip_pil(12)
    want = reference_video(pipe, clip, case)
    got = generate(folder, PROMPT, NEGATIVE, video=clip, video_keep=c["keep"], video_latent_frames=len(c["indexes"]),
                   num_frames=c["num_frames"], fps=16.0, steps=4, guidance=4.0, seed=1234, device="cpu", dtype="fp32",
                   **SIZE)
    assert got.shape == (c["num_frames"], 32, 64, 3) and torch.isfinite(got).all()
    print(case, "PSNR", psnr(got.numpy(), want))
    assert psnr(got.numpy(), want) >= 40.0
    if case == "first-k2":  # the conditioning matters: the other end of the clip gives another video
        keep_last = generate(folder, PROMPT, NEGATIVE, video=clip, video_keep="last", num_frames=9, fps=16.0, steps=4,
                             guidance=4.0, seed=1234, device="cpu", dtype="fp32", **SIZE)
        print("keep last vs diffusers' keep first: PSNR", psnr(keep_last.numpy(), want))
        assert psnr(keep_last.numpy(), want) < 30.0


def test_tensor_clip_at_the_size_matches_diffusers(ref):
    """A float clip ``[F, H, W, 3]`` (ComfyUI's IMAGE) already at the size needs no resize; diffusers takes it as
    ``[F, 3, H, W]``."""
    folder, pipe = ref
    frames = torch.rand(7, 32, 64, 3, generator=torch.Generator().manual_seed(2))
    want = reference_video(pipe, frames.permute(0, 3, 1, 2), "first-k2")
    got = generate(folder, PROMPT, NEGATIVE, video=frames, num_frames=9, fps=16.0, steps=4, guidance=4.0, seed=1234,
                   device="cpu", dtype="fp32", **SIZE)
    print("tensor PSNR", psnr(got.numpy(), want))
    assert psnr(got.numpy(), want) >= 40.0


@pytest.mark.parametrize("keep", ["first", "last"])
def test_start_latents_and_pixels_match_diffusers(ref, keep):
    """Stage by stage against ``prepare_latents``: the same pixels (Pillow's bilinear resize, bit for bit), the clean
    latent frames 0 and 1 (diffusers encodes the whole padded 9-frame video, we only the 5 clip frames that make
    them: equal to float rounding), and the same mask."""
    folder, pipe = ref
    clip = clip_pil(12)
    pixels = P.preprocess_video(clip, 32, 64, keep=keep)
    full = pipe.video_processor.preprocess_video(clip, height=32, width=64)
    assert pixels.shape == (1, 3, 5, 32, 64)
    assert torch.equal(pixels, full[:, :, :5] if keep == "first" else full[:, :, -5:])

    out = pipe.prepare_latents(video=clip, condition_frame_indexes_vision=(0, 1), condition_video_keep=keep,
                               num_frames=9, generator=torch.Generator().manual_seed(0), device="cpu",
                               dtype=torch.float32, **SIZE)
    want, mask = out[0], out[5]
    ckpt = load_checkpoint(folder, device="cpu", dtype="fp32")
    latents, frames = P.video_latents(ckpt.vae, pixels, 9)
    assert frames == [0, 1] and latents.shape == want.shape == (1, 48, 3, 2, 4)
    assert mask.flatten().tolist() == [1.0, 1.0, 0.0]
    got = ckpt.settings.latent_format.process_in(latents)
    err = float((got[:, :, :2] - want[:, :, :2]).abs().max() / want[:, :, :2].abs().max())
    print(keep, "rel err", err)
    assert err < 1e-5
    assert torch.equal(latents[:, :, 2:], torch.zeros_like(latents[:, :, 2:]))  # noise goes there


def test_v2v_encodes_only_the_kept_frames(ref):
    folder, _ = ref
    ckpt = load_checkpoint(folder, device="cpu", dtype="fp32")
    seen = []
    original = ckpt.vae.encode
    ckpt.vae.encode = lambda x, *a, **k: (seen.append(tuple(x.shape)), original(x, *a, **k))[1]
    try:
        generate(ckpt, PROMPT, video=clip_pil(30), video_keep="last", video_latent_frames=3, num_frames=17, steps=1,
                 guidance=1.0, **SIZE)
    finally:
        del ckpt.vae.encode
    assert seen == [(1, 3, 9, 32, 64)]  # one call: the clip's last 9 frames, not 30 and not the 17 made


def test_clip_forms_condition_alike():
    """PIL frames, uint8 arrays and float tensors of the same pixels: arrays and tensors equal each other bit for
    bit; against Pillow's 8-bit resize they differ by at most one step of 8 bits (the rounding Pillow does)."""
    u8 = clip_uint8(12)
    from_pil = P.preprocess_video([Image.fromarray(f) for f in u8], 32, 64, keep="last")
    from_u8 = P.preprocess_video(u8, 32, 64, keep="last")
    from_float = P.preprocess_video(torch.from_numpy(u8).float() / 255.0, 32, 64, keep="last")
    assert torch.equal(from_u8, from_float)
    step = float((from_pil - from_float).abs().max()) / 2.0 * 255.0
    print("PIL vs tensor, in 8-bit steps:", step)
    assert 0.0 < step <= 1.0 + 1e-4
    # At the size nothing is resized: the pixels are 2x - 1 of the input, bit for bit.
    frames = torch.rand(5, 32, 64, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(P.preprocess_video(frames, 32, 64), (frames * 2.0 - 1.0).permute(3, 0, 1, 2).unsqueeze(0))


def test_folders_and_video_files_read_as_the_clip(tmp_path):
    """A folder of pictures (natural name order: frame2 before frame10) and a lossless video file (PNG in MOV,
    written with PyAV) give the same frames as the PIL list."""
    u8 = clip_uint8(11, 32, 48)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(u8):
        Image.fromarray(f).save(folder / f"frame{i}.png")
    (folder / "notes.txt").write_text("not a frame")
    got = frames_of(folder)
    assert len(got) == 11 and all(np.array_equal(np.asarray(a), b) for a, b in zip(got, u8))
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mov"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("png", rate=24)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "rgb24"
        for f in u8:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    got = frames_of(path)
    assert len(got) == 11 and all(np.array_equal(np.asarray(a), b) for a, b in zip(got, u8))
    assert torch.equal(P.preprocess_video(path, 32, 64, keep="last"), P.preprocess_video(folder, 32, 64, keep="last"))


# ---------------------------------------------------------------------------------------------- one recipe
@pytest.fixture(scope="module")
def parts(tiny):
    model, = M["Cosmos3ModelLoader"]().load(str(tiny), "fp32", "cpu")
    vae, = M["Cosmos3VAELoader"]().load(str(tiny), "fp32", "cpu")
    return model, vae


@pytest.mark.parametrize("keep,k,frames", [("first", 2, 9), ("last", 1, 9), ("last", 2, 13)])
def test_graph_equals_generate_bit_for_bit(tiny, parts, keep, k, frames):
    """Cosmos3 Video To Video Latent -> Text Encode -> Sampler -> VAE Decode equals ``generate(video=...)`` on the
    same IMAGE batch (a 10-frame 70x40 clip, stretched to 64x32)."""
    model, vae = parts
    clip = torch.rand(10, 40, 70, 3, generator=torch.Generator().manual_seed(5))
    latent, = M["Cosmos3VideoToVideoLatent"]().make(vae, clip, 64, 32, frames, keep, k, 1)
    assert cosmos3_nodes._condition_frames(latent) == list(range(k))
    cond, = M["Cosmos3TextEncode"]().encode(model, latent, "a cat", "blurry", 16.0)
    out, = M["Cosmos3Sampler"]().sample(model, cond, latent, 11, 3, 4.0, 0.0)
    images, fps = M["Cosmos3VAEDecode"]().decode(vae, out)
    want = generate(tiny, "a cat", "blurry", video=clip, video_keep=keep, video_latent_frames=k, num_frames=frames,
                    fps=16.0, steps=3, guidance=4.0, seed=11, device="cpu", dtype="fp32", **SIZE)
    assert fps == 16.0 and images.shape == want.shape == (frames, 32, 64, 3)
    assert torch.equal(images, want)
    # The clean frames come out as they went in (raw latents, pinned through sampling).
    err = (out["samples"][:, :, :k] - latent["samples"][:, :, :k]).abs().max() / latent["samples"][:, :, :k].abs().max()
    assert float(err) < 1e-6


def test_node_contract():
    node = M["Cosmos3VideoToVideoLatent"]
    assert NAMES["Cosmos3VideoToVideoLatent"] == "Cosmos3 Video To Video Latent"
    inputs = node.INPUT_TYPES()["required"]
    assert list(inputs) == ["vae", "video", "width", "height", "frames", "keep", "keep_latent_frames", "batch_size"]
    assert all(spec[1].get("tooltip") for spec in inputs.values())
    assert inputs["video"][0] == "IMAGE" and inputs["keep"][0] == ["first", "last"]
    assert inputs["keep_latent_frames"][1]["default"] == 2
    assert node.RETURN_TYPES == ("LATENT",) and node.CATEGORY == "Cosmos3" and node.DESCRIPTION


# ---------------------------------------------------------------------------------------------- bad input
BAD = [
    (dict(image=np.zeros((8, 8, 3), np.uint8)), r"image='<given>', video='<given>': give one: an image"),
    (dict(video_keep="middle"), r"video_keep='middle': not one of first, last"),
    (dict(video_latent_frames=0), r"video_latent_frames=0: must be at least 1"),
    (dict(video_latent_frames=1.5), r"video_latent_frames=1.5: must be a whole number"),
    (dict(num_frames=5), (r"num_frames=5, video_latent_frames=2: keeping 2 latent frame\(s\) of the clip leaves none "
                          r"of the 2 to generate; make at least 9 frames or keep fewer")),
    (dict(num_frames=1), r"num_frames=1, video_latent_frames=2: keeping 2 .* leaves none of the 1"),
    (dict(video=clip_uint8(3)), (r"video='<3 frame\(s\)>': too short: keeping 2 latent frame\(s\) takes 5 frames of "
                                 r"the clip; keep 1 latent frame\(s\) instead")),
    (dict(video=clip_uint8(8), video_latent_frames=3, num_frames=13), r"video='<8 frame\(s\)>': too short: keeping 3 "),
    (dict(video=[]), r"video='\[\]': holds no frames"),
    (dict(video=np.zeros((40, 70, 3), np.uint8)), r"video=\(40, 70, 3\): a clip as one array must be \[frames, H, W"),
    (dict(video=torch.full((5, 8, 8, 3), float("nan"))), r"video=.*holds NaN"),
    (dict(video="/nowhere/clip.mp4"), r"video='/nowhere/clip.mp4': no such file or folder"),
]


@pytest.mark.parametrize("kw,message", BAD, ids=[re.sub(r"\W+", "_", m[:40]) for _, m in BAD])
def test_generate_refuses_bad_video_input_before_loading(tiny, no_loading, kw, message):
    kw = dict(kw)
    args = dict(video=kw.pop("video", clip_uint8(6)), num_frames=9, steps=2, **SIZE) | kw
    with pytest.raises(OptionError, match=message):
        generate(tiny, "a cat", **args)


def test_empty_folder_and_missing_pyav(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptionError, match="this folder holds no pictures"):
        P.preprocess_video(tmp_path / "empty", 32, 64)
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 64)
    real_import = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("No module named 'av'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_av)
    with pytest.raises(OptionError, match=r"reading a video file needs PyAV \(pip install av\); or give a folder"):
        P.preprocess_video(tmp_path / "clip.mp4", 32, 64)


def test_node_validates_and_refuses_naming_node_and_input():
    node = M["Cosmos3VideoToVideoLatent"]
    assert node.VALIDATE_INPUTS(width=64, height=32, frames=9, keep_latent_frames=2) is True
    assert node.VALIDATE_INPUTS(width=64, height=32, frames=9, keep_latent_frames=None) is True  # linked
    message = node.VALIDATE_INPUTS(width=64, height=32, frames=5, keep_latent_frames=2)
    assert message.startswith("frames=5, keep_latent_frames=2: keeping 2 latent frame(s) of the clip leaves none")
    assert node.VALIDATE_INPUTS(width=40, height=32, frames=9, keep_latent_frames=2).startswith("width=40: not a")
    assert node.VALIDATE_INPUTS(width=64, height=32, frames=11, keep_latent_frames=2).startswith("frames=11: not 4k+1")
    assert node.VALIDATE_INPUTS(width=64, height=32, frames=9, keep_latent_frames=0).startswith(
        "keep_latent_frames=0: must be at least 1")
    # At run time (the IMAGE is known only then), before the VAE is touched (vae=None).
    with pytest.raises(ValueError, match=r"^Cosmos3VideoToVideoLatent: video='<3 frame\(s\)>': too short"):
        node().make(None, torch.rand(3, 32, 64, 3), 64, 32, 9, "first", 2)
    with pytest.raises(ValueError, match=r"^Cosmos3VideoToVideoLatent: keep='middle': not one of first, last"):
        node().make(None, torch.rand(9, 32, 64, 3), 64, 32, 9, "middle", 2)
    with pytest.raises(ValueError, match=r"^Cosmos3VideoToVideoLatent: frames=5, keep_latent_frames=2: keeping"):
        node().make(None, torch.rand(9, 32, 64, 3), 64, 32, 5, "first", 2)


def cli(*args):
    return ["generate", "--width", "64", "--height", "32", "--frames", "9", "--steps", "2", *args]


def test_cli_video_errors_exit_2_before_loading(tmp_path, no_loading, capsys):
    out = str(tmp_path / "x.webp")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(clip_uint8(3, 32, 64)):
        Image.fromarray(f).save(frames / f"{i:03d}.png")
    Image.fromarray(clip_uint8(1, 32, 64)[0]).save(tmp_path / "still.png")
    for args, message in [
        (("--video", str(tmp_path / "missing.mp4")), "error: --video=.*missing.mp4.: no such file or folder"),
        (("--video", str(frames)), r"error: --video='<3 frame\(s\)>': too short: keeping 2 latent frame\(s\) takes 5"),
        (("--video", str(frames), "--image", str(tmp_path / "still.png")), "error: --image=.*, --video=.*: give one"),
        (("--video", str(frames), "--video-latent-frames", "0"), "error: --video-latent-frames=0: must be at least 1"),
        (("--video", str(frames), "--frames", "5"), "error: --frames=5, --video-latent-frames=2: keeping 2"),
    ]:
        code = main(cli(*args, "--output", out))
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, err
        assert re.search(message, err), err
    assert not (tmp_path / "x.webp").exists()


def test_cli_continues_a_folder_of_frames(tiny, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(clip_uint8(6, 40, 70)):
        Image.fromarray(f).save(frames / f"f{i}.png")
    out = tmp_path / "v2v.webp"
    assert main(cli("--checkpoint", str(tiny), "--video", str(frames), "--video-keep", "last", "--output",
                    str(out))) == 0
    assert out.is_file()
    with Image.open(out) as im:
        assert im.n_frames == 9 and im.size == (64, 32)


# ---------------------------------------------------------------------------------------------- headless runner
API_T2V = ROOT / "workflows" / "api" / "cosmos3_t2v_api.json"


def v2v_graph(frames=9, keep_latent_frames=2):
    """The shipped T2V API graph with its empty latent replaced by a Video To Video Latent fed by LoadImage (an
    animated picture loads as an IMAGE batch, as in ComfyUI), without the guardrails, tiny and fp32 on the CPU."""
    graph = headless.load_workflow(str(API_T2V))
    graph["1"]["inputs"].update(weight_dtype="fp32", device="cpu")
    graph["2"]["inputs"].update(dtype="fp32", device="cpu")
    graph["3"] = {"class_type": "Cosmos3VideoToVideoLatent", "inputs": {
        "vae": ["2", 0], "video": ["12", 0], "width": 64, "height": 32, "frames": frames, "keep": "last",
        "keep_latent_frames": keep_latent_frames, "batch_size": 1}}
    graph["12"] = {"class_type": "LoadImage", "inputs": {"image": "clip.webp"}}
    graph["4"]["inputs"]["prompt"] = "a cat"
    graph["5"]["inputs"]["steps"] = 2
    graph["7"]["inputs"]["images"] = ["6", 0]
    del graph["10"], graph["11"]
    return graph


def test_runner_continues_an_animated_picture_and_refuses_bad_inputs_first(tmp_path, tiny, monkeypatch):
    frames = [Image.fromarray(f) for f in clip_uint8(6, 40, 70)]
    frames[0].save(tmp_path / "clip.webp", save_all=True, append_images=frames[1:], lossless=True)
    out = tmp_path / "out"
    monkeypatch.setattr(cosmos3_nodes, "resolve_model_path", lambda kind, name: tiny)
    with pytest.raises(headless.WorkflowError) as info:
        headless.run(v2v_graph(frames=5), output_dir=out, input_dir=tmp_path, mappings=headless.node_mappings(False))
    text = str(info.value)
    assert "node 3 (Cosmos3VideoToVideoLatent)" in text and "frames=5, keep_latent_frames=2: keeping 2" in text, text
    assert not out.exists() or not list(out.iterdir())
    written = headless.run(v2v_graph(), output_dir=out, input_dir=tmp_path, mappings=headless.node_mappings(False))
    assert len(written) == 1 and written[0].is_file()
