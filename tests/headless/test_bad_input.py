"""Bad input at every door: the command line, the Python API, the graph nodes and the headless runner refuse it
before any model is loaded, with one message that names the field as that door's user wrote it; the command line
prints no traceback (exit status 2 for a wrong option, 1 for a failure while working). Also: conditioning pictures
of every kind are read right (16-bit greyscale scaled, transparency refused), frames that are not finite are an
error instead of a black video, and pickled weights get "only safetensors"."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_cosmos3_ltx2 import headless
from comfyui_cosmos3_ltx2.__main__ import main
from comfyui_cosmos3_ltx2.core import checkpoint as core_checkpoint
from comfyui_cosmos3_ltx2.core.checks import NonFiniteError, OptionError
from comfyui_cosmos3_ltx2.core.images import to_rgb255
from comfyui_cosmos3_ltx2.cosmos3 import generate
from comfyui_cosmos3_ltx2.cosmos3 import loader as cosmos3_loader
from comfyui_cosmos3_ltx2.cosmos3 import options as O
from comfyui_cosmos3_ltx2.cosmos3 import pipeline as P
from comfyui_cosmos3_ltx2.cosmos3.tiny import write_tiny_checkpoint
from comfyui_cosmos3_ltx2.headless import media
from comfyui_cosmos3_ltx2.nodes import NODE_CLASS_MAPPINGS as M
from comfyui_cosmos3_ltx2.nodes import cosmos3 as cosmos3_nodes

API_T2V = str(Path(__file__).resolve().parents[2] / "workflows" / "api" / "cosmos3_t2v_api.json")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("bad") / "ckpt")


# One table of bad options, said the Python API's way: (field, keyword arguments, what the message must say).
BAD = [
    ("width", dict(width=0), "width=0: must be at least 16"),
    ("width", dict(width=40), "width=40: not a multiple of 16 .* use 32 or 48"),
    ("height", dict(height=100000), "height=100000: must be at most 8192"),
    ("width", dict(width=64.0), "width=64.0: must be a whole number"),
    ("num_frames", dict(num_frames=0), "num_frames=0: must be at least 1"),
    ("num_frames", dict(num_frames=11), "num_frames=11: not 4k\\+1 .* use 9 or 13"),
    ("steps", dict(steps=0), "steps=0: must be at least 1"),
    ("guidance", dict(guidance=float("nan")), "guidance=nan: must be a finite number"),
    ("guidance", dict(guidance=float("inf")), "guidance=inf: must be a finite number"),
    ("guidance", dict(guidance=-1.0), "guidance=-1.0: must be at least 1 .1 turns guidance off"),
    ("shift", dict(shift=float("nan")), "shift=nan: must be a finite number"),
    ("shift", dict(shift=-2.0), "shift=-2.0: must be above 0"),
    ("fps", dict(fps=0.0), "fps=0.0: must be at least 1"),
    ("seed", dict(seed=-1), "seed=-1: must be at least 0"),
]
SIZE = dict(width=64, height=32, num_frames=5, steps=2, guidance=3.0)


# ---------------------------------------------------------------------------------------------- Python API
@pytest.mark.parametrize("field,kw,message", BAD, ids=[m.split(":")[0] for _, _, m in BAD])
def test_generate_refuses_bad_options_before_loading(tiny, no_loading, field, kw, message):
    with pytest.raises(OptionError, match=message) as info:
        generate(tiny, "a cat", **(SIZE | kw), device="cpu", dtype="fp32")
    assert field in info.value.fields


def test_generate_refuses_absurd_sizes_by_their_token_count(tiny, no_loading):
    """The cap: at most 2^18 transformer tokens per video (each 32x32 pixels of 4 frames)."""
    assert O.video_tokens(1280, 720, 189) == 48 * 23 * 40  # the reference clip: 44,160
    assert O.video_tokens(3840, 2160, 121) <= O.MAX_VIDEO_TOKENS  # 4K, 121 frames still fits
    with pytest.raises(OptionError, match="width=8192, height=8192, num_frames=1025: 16,842,752 transformer tokens") as info:
        generate(tiny, "a cat", width=8192, height=8192, num_frames=1025)
    assert info.value.fields == ("width", "height", "num_frames")


def test_generate_refuses_other_bad_values_before_loading(tiny, no_loading, tmp_path):
    with pytest.raises(OptionError, match="prompt=42: must be text"):
        generate(tiny, 42, **SIZE)
    with pytest.raises(OptionError, match="sampler='bogus': not one of auto"):
        generate(tiny, "a cat", sampler="bogus", **SIZE)
    with pytest.raises(OptionError, match="image=.*missing.png.: no such file"):
        generate(tiny, "a cat", image=str(tmp_path / "missing.png"), **SIZE)
    with pytest.raises(OptionError, match="num_frames=3: must be at least 5 .image-to-video"):
        generate(tiny, "a cat", image=np.zeros((8, 8, 3), np.uint8), **(SIZE | dict(num_frames=3)))
    clear = np.zeros((8, 8, 4), np.uint8)
    with pytest.raises(OptionError, match="image=.*transparent pixels .100.0%"):
        generate(tiny, "a cat", image=clear, **SIZE)
    # The checkpoint's own recipe is read from its JSON files and checked before its weights are.
    distilled = tmp_path / "distilled"
    write_tiny_checkpoint(distilled)
    (distilled / "modular_model_index.json").write_text(json.dumps({"distilled_sigmas": [1.0, 0.9, 0.6, 0.25]}))
    with pytest.raises(OptionError, match="steps=2: this distilled checkpoint samples in exactly 4 steps"):
        generate(distilled, "a cat", **(SIZE | dict(guidance=None)))


# ---------------------------------------------------------------------------------------------- command line
CLI = {"width": "--width", "height": "--height", "num_frames": "--frames", "steps": "--steps", "guidance": "--guidance",
       "shift": "--shift", "fps": "--fps", "seed": "--seed"}


def cli(*args):
    return ["generate", "--width", "64", "--height", "32", "--frames", "5", "--steps", "2", *args]


CLI_BAD = [b for b in BAD if b[1] != dict(width=64.0)]  # (argparse refuses --width 64.0 itself)


@pytest.mark.parametrize("field,kw,message", CLI_BAD, ids=[m.split(":")[0] for _, _, m in CLI_BAD])
def test_cli_generate_names_the_option_and_exits_2_without_traceback(tmp_path, no_loading, capsys, field, kw,
                                                                     message):
    value = next(iter(kw.values()))
    out = tmp_path / "x.webp"
    code = main(cli(CLI[field], str(value), "--output", str(out)))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: {CLI[field]}=") and "Traceback" not in err
    assert f"{field}=" not in err.replace(f"{CLI[field]}=", "")  # said the command line's way
    assert not out.exists()


@pytest.mark.parametrize("output,frames,message", [
    ("x.txt", "5", "--output=.*x.txt.: unknown kind of file '.txt'; use .webp, .gif or .mp4 for a clip"),
    ("x.png", "5", "--output=.*: unknown kind of file '.png'"),
    ("afile/x.webp", "5", "--output=.*afile is a file, so no folder can be made there"),
    ("dir.webp", "5", "--output=.*dir.webp.: is a folder; give a file name"),
])
def test_cli_checks_the_output_before_any_work(tmp_path, no_loading, capsys, output, frames, message):
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "dir.webp").mkdir()
    code = main(cli("--frames", frames, "--output", str(tmp_path / output)))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert re.search(message, err), err


def test_cli_image_errors(tmp_path, no_loading, capsys):
    out = str(tmp_path / "x.webp")
    assert main(cli("--image", str(tmp_path / "missing.png"), "--output", out)) == 2
    assert "error: --image=" in (err := capsys.readouterr().err) and "no such file" in err
    rgba = np.full((20, 20, 4), 200, np.uint8)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "holes.png")
    assert main(cli("--image", str(tmp_path / "holes.png"), "--output", out)) == 2
    assert "transparent pixels" in capsys.readouterr().err
    (tmp_path / "text.png").write_text("no picture")
    assert main(cli("--image", str(tmp_path / "text.png"), "--output", out)) == 2
    assert "is not a picture Pillow can read" in capsys.readouterr().err


def test_cli_failures_exit_1_without_traceback_unless_debug(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "x.webp")
    assert main(cli("--checkpoint", str(tmp_path / "nowhere"), "--output", out)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and "Traceback" not in err
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    assert main(cli("--checkpoint", str(tmp_path / "model.pt"), "--output", out)) == 1
    assert "only .safetensors weights are read" in capsys.readouterr().err
    with pytest.raises(core_checkpoint.CheckpointError):  # --debug: the exception itself, with its traceback
        main(cli("--checkpoint", str(tmp_path / "nowhere"), "--output", out, "--debug"))
    monkeypatch.setenv("COSMOS3_LTX2_DEBUG", "1")
    with pytest.raises(OptionError):
        main(cli("--width", "0", "--output", out))


def _fake_generate(monkeypatch, frames=None):
    """Replace the pipeline's generate; records its arguments and returns ``frames`` (one black frame)."""
    calls = []

    def fake(checkpoint, prompt, negative_prompt="", image=None, **kw):
        calls.append(dict(kw, checkpoint=checkpoint, image=image))
        return torch.zeros(1, 16, 16, 3) if frames is None else frames

    monkeypatch.setattr(P, "generate", fake)
    return calls


def test_cli_defaults_are_explicit(tiny, tmp_path, monkeypatch, capsys):
    """Without --checkpoint the demo size; with one, the reference pipeline's: either way printed before the work,
    and 0 is refused rather than taken for "the default"."""
    calls = _fake_generate(monkeypatch)
    assert main(["generate", "--output", str(tmp_path / "a.webp")]) == 0
    printed = capsys.readouterr().out
    assert "128x128, 17 frame(s), 8 steps (--width/--height/--frames: the embedded demo model's defaults)" in printed
    assert main(["generate", "--checkpoint", str(tiny), "--output", str(tmp_path / "b.webp")]) == 0
    printed = capsys.readouterr().out
    assert ("1280x720, 189 frame(s), the checkpoint's steps (--width/--height/--frames: the reference pipeline's "
            "defaults for a real checkpoint)") in printed
    assert main(["generate", "--checkpoint", str(tiny), "--width", "320", "--output", str(tmp_path / "c.webp")]) == 0
    assert "320x720, 189 frame(s), the checkpoint's steps (--height/--frames:" in capsys.readouterr().out
    got = [(c["width"], c["height"], c["num_frames"], c["steps"]) for c in calls]
    assert got == [(128, 128, 17, 8), (1280, 720, 189, None), (320, 720, 189, None)]
    assert main(["generate", "--checkpoint", str(tiny), "--frames", "0", "--output", str(tmp_path / "d.webp")]) == 2
    assert "--frames=0: must be at least 1" in capsys.readouterr().err


def test_cli_refuses_to_write_frames_that_are_not_finite(tmp_path, monkeypatch, capsys):
    frames = torch.zeros(5, 16, 16, 3)
    frames[2, 3, 3, 1] = float("nan")
    _fake_generate(monkeypatch, frames)
    out = tmp_path / "x.webp"
    assert main(cli("--output", str(out))) == 1
    err = capsys.readouterr().err
    assert "the frames to write hold NaN or infinite values" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_ltx_generate_checks_its_output_before_loading(tmp_path, monkeypatch, capsys):
    import comfyui_cosmos3_ltx2.ltx2 as ltx2

    def refuse(*args, **kwargs):
        raise AssertionError("LTX-2 was loaded before the output was checked")

    monkeypatch.setattr(ltx2, "generate", refuse, raising=False)
    base = ["ltx-generate", "--checkpoint", str(tmp_path / "ltx.safetensors"), "--text-encoder", str(tmp_path / "g")]
    assert main(base + ["--output", str(tmp_path / "clip.txt")]) == 2
    assert "error: --output=" in (err := capsys.readouterr().err) and "'.txt'" in err and "Traceback" not in err
    monkeypatch.setattr(media, "have_av", lambda: False)
    assert main(base + ["--output", str(tmp_path / "clip.mp4")]) == 2
    assert "MP4 needs PyAV (pip install av); or write .webp (the sound goes into a .wav" in capsys.readouterr().err
    assert main(base + ["--keyframe", "last.png", "--output", str(tmp_path / "c.webp")]) == 2
    assert "--keyframe='last.png': expected IMAGE:FRAME" in capsys.readouterr().err
    monkeypatch.undo()
    # A failure while working (here: no such checkpoint) is one line too, exit status 1.
    assert main(base + ["--output", str(tmp_path / "c.webp")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and not list(tmp_path.glob("c.*"))


# ---------------------------------------------------------------------------------------------- nodes
def test_size_nodes_validate_once_on_the_input_that_is_wrong():
    empty, i2v = M["Cosmos3EmptyLatent"], M["Cosmos3ImageToVideoLatent"]
    assert empty.VALIDATE_INPUTS(width=320, height=192, frames=17) is True
    message = empty.VALIDATE_INPUTS(width=40, height=192, frames=17)
    assert message.startswith("width=40: not a multiple of 16") and "height" not in message and "frames" not in message
    message = empty.VALIDATE_INPUTS(width=320, height=192, frames=11)
    assert message.startswith("frames=11: not 4k+1") and "use 9 or 13" in message and "num_frames" not in message
    assert "frames=3: must be at least 5" in i2v.VALIDATE_INPUTS(width=320, height=192, frames=3)
    message = empty.VALIDATE_INPUTS(width=8192, height=8192, frames=1025)
    assert message.startswith("width=8192, height=8192, frames=1025: 16,842,752 transformer tokens")
    # A value ComfyUI cannot convert is its own error, on that input: not repeated here, and no TypeError.
    assert empty.VALIDATE_INPUTS(width="abc", height=192, frames=17) is True
    # Linked inputs are unknown (None): the others are still checked; the cap waits for all three.
    assert empty.VALIDATE_INPUTS(width=None, height=192, frames=11).startswith("frames=11")
    assert empty.VALIDATE_INPUTS(width=None, height=8192, frames=1025) is True


def test_sampler_and_text_encode_refuse_non_finite_numbers():
    """ComfyUI's own range check lets NaN through; these inputs are checked by the nodes (each alone, so ComfyUI
    lists the message once)."""
    sampler, encode = M["Cosmos3Sampler"], M["Cosmos3TextEncode"]
    assert sampler.VALIDATE_INPUTS(cfg=6.0) is True
    assert sampler.VALIDATE_INPUTS(cfg=float("nan")) == "cfg=nan: must be a finite number (1 turns guidance off)"
    assert sampler.VALIDATE_INPUTS(cfg=0.5).startswith("cfg=0.5: must be at least 1")
    assert sampler.VALIDATE_INPUTS(cfg="six") is True  # the conversion error is ComfyUI's, on cfg
    assert encode.VALIDATE_INPUTS(fps=float("nan")) == "fps=nan: must be a finite number"
    assert encode.VALIDATE_INPUTS(fps=None) is True


def test_nodes_refuse_at_run_time_too_naming_node_and_input():
    with pytest.raises(ValueError, match="^Cosmos3EmptyLatent: frames=11: not 4k\\+1"):
        M["Cosmos3EmptyLatent"]().make(64, 32, 11)
    clear = torch.zeros(1, 8, 8, 4)
    with pytest.raises(ValueError, match="^Cosmos3ImageToVideoLatent: image=.*transparent"):
        M["Cosmos3ImageToVideoLatent"]().make(None, clear, 64, 32, 9)  # refused before the VAE is touched


def test_decoded_frames_that_are_not_finite_are_an_error(tiny):
    vae = cosmos3_loader.load_vae(tiny / "vae", dtype="fp32")
    latents = torch.zeros(1, 48, 2, 2, 4)
    assert torch.isfinite(P.decode(vae, latents)).all()
    latents[0, 0, 1, 1, 1] = float("nan")
    with pytest.raises(NonFiniteError, match="the decoded frames hold NaN"):
        P.decode(vae, latents)
    node_vae = cosmos3_nodes.Cosmos3VAE(vae, torch.device("cpu"))
    with pytest.raises(ValueError, match="^Cosmos3VAEDecode \\(latent\\): the decoded frames hold NaN"):
        M["Cosmos3VAEDecode"]().decode(node_vae, {"samples": latents})


# ---------------------------------------------------------------------------------------------- headless runner
@pytest.mark.parametrize("node,name,value,where,message", [
    ("3", "frames", 11, "node 3 (Cosmos3EmptyLatent) input 'frames'", "frames=11: not 4k+1 frames"),
    ("3", "width", 40, "node 3 (Cosmos3EmptyLatent) input 'width'", "width=40: not a multiple of 16"),
    ("3", "width", "abc", "node 3 (Cosmos3EmptyLatent) input 'width'", "expects an integer, got 'abc'"),
    ("5", "cfg", 0.5, "node 5 (Cosmos3Sampler) input 'cfg'", "cfg=0.5: must be at least 1"),
    ("5", "cfg", float("nan"), "node 5 (Cosmos3Sampler) input 'cfg'", "expects a finite number, got nan"),
    ("4", "fps", float("inf"), "node 4 (Cosmos3TextEncode) input 'fps'", "expects a finite number, got inf"),
    ("5", "shift", float("nan"), "node 5 (Cosmos3Sampler) input 'shift'", "expects a finite number, got nan"),
])
def test_runner_refuses_bad_cosmos3_inputs_before_any_node_runs(tmp_path, no_loading, node, name, value, where,
                                                                 message):
    graph = headless.load_workflow(API_T2V)
    graph[node]["inputs"][name] = value
    with pytest.raises(headless.WorkflowError) as info:
        headless.run(graph, output_dir=tmp_path, mappings=headless.node_mappings(False))
    text = str(info.value)
    assert text.startswith(f"{where}: {message}") and text.count("node ") == 1, text  # one problem, said once
    assert not list(tmp_path.iterdir())


def test_cli_run_exits_2_on_bad_cosmos3_inputs(tmp_path, no_loading, capsys):
    code = main(["run", API_T2V, "--standins", "--output-dir", str(tmp_path), "--set", "3.frames=11"])
    err = capsys.readouterr().err
    assert code == 2 and "node 3 (Cosmos3EmptyLatent) input 'frames': frames=11: not 4k+1" in err


# ---------------------------------------------------------------------------------------------- pictures
def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    grey = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 541).astype(np.uint16)  # 0 .. 64379
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    want = torch.from_numpy(grey.astype(np.float32) / 257.0)[..., None].expand(-1, -1, 3)
    got = to_rgb255(tmp_path / "g16.png")
    assert torch.equal(got, want) and got.max() < 255 and got.min() == 0
    assert torch.equal(to_rgb255(grey), want)  # a uint16 array: the same
    # Before, Pillow's convert("RGB") clipped every value above 255: nearly all white.
    assert (np.asarray(Image.open(tmp_path / "g16.png").convert("RGB")) == 255).mean() > 0.9
    # Both models' image preparation read it so.
    from comfyui_cosmos3_ltx2.ltx2.image import source_rgb

    assert torch.equal(source_rgb(tmp_path / "g16.png", crf=0), want)
    assert torch.equal(P.preprocess_image(tmp_path / "g16.png", 16, 16), P.preprocess_image(grey, 16, 16))


def test_alpha_palette_and_other_modes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    opaque = np.concatenate([rgb, np.full((9, 7, 1), 255, np.uint8)], -1)
    Image.fromarray(opaque, "RGBA").save(tmp_path / "opaque.png")
    assert torch.equal(to_rgb255(tmp_path / "opaque.png"), torch.from_numpy(rgb).float())  # nothing lost: dropped
    holes = opaque.copy()
    holes[:3, :, 3] = 128
    Image.fromarray(holes, "RGBA").save(tmp_path / "holes.png")
    with pytest.raises(OptionError, match="image=.*holes.png.: has transparent pixels .33.3% of them.; .*flatten"):
        to_rgb255(tmp_path / "holes.png")
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "pal.png")
    assert torch.equal(to_rgb255(tmp_path / "pal.png"), torch.from_numpy(np.array(pal.convert("RGB"))).float())
    pal.save(tmp_path / "pal_t.png", transparency=int(np.asarray(pal)[0, 0]))
    with pytest.raises(OptionError, match="transparent"):
        to_rgb255(tmp_path / "pal_t.png")
    Image.new("LA", (4, 3), (90, 255)).save(tmp_path / "la.png")
    assert torch.equal(to_rgb255(tmp_path / "la.png"), torch.full((3, 4, 3), 90.0))
    Image.new("I", (4, 3), 70000).save(tmp_path / "i32.tif")
    with pytest.raises(OptionError, match="32-bit integer pictures"):
        to_rgb255(tmp_path / "i32.tif")
    with pytest.raises(OptionError, match="holds NaN"):
        to_rgb255(torch.full((4, 4, 3), float("nan")))


def test_runner_load_image_reads_sixteen_bit_greyscale(tmp_path):
    from comfyui_cosmos3_ltx2.headless.standins import LoadImage

    grey = np.full((6, 5), 32896, np.uint16)  # 32896 / 257 = 128
    Image.fromarray(grey).save(tmp_path / "g16.png")
    image, mask = LoadImage().load_image(str(tmp_path / "g16.png"))
    assert torch.equal(image, torch.full((1, 6, 5, 3), 128 / 255.0)) and not mask.any()


# ---------------------------------------------------------------------------------------------- weights
def test_pickled_weights_get_only_safetensors_at_every_entry(tiny, tmp_path):
    from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError, read_config, safetensors_metadata

    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    (tmp_path / "renamed.safetensors").write_bytes((tmp_path / "model.pt").read_bytes())
    (tmp_path / "old_renamed.safetensors").write_bytes((tmp_path / "legacy.pth").read_bytes())
    calls = [
        lambda f: cosmos3_loader.load_checkpoint(f),  # used to say "checkpoint folder does not exist"
        lambda f: cosmos3_loader.load_model(f, tokenizer=tiny),  # used to say "no config found"
        lambda f: cosmos3_loader.load_transformer(f),
        lambda f: cosmos3_loader.load_vae(f),
        lambda f: read_config(f),
        lambda f: safetensors_metadata(f),
    ]
    for name in ("model.pt", "legacy.pth", "renamed.safetensors", "old_renamed.safetensors"):
        for call in calls:
            with pytest.raises(CheckpointError, match="only .safetensors weights are read .pickle-based"):
                call(tmp_path / name)
    with pytest.raises(CheckpointError, match="is a file, but a Cosmos3 checkpoint folder is needed"):
        cosmos3_loader.load_checkpoint(tiny / "transformer" / "diffusion_pytorch_model.safetensors")


def test_a_real_safetensors_file_that_starts_like_a_pickle_still_loads(tmp_path):
    """A header of 0x0280 = 640 bytes begins with the bytes 80 02, as a pickle does; its '{' tells it apart."""
    body = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                       "__metadata__": {"note": ""}}).encode()
    pad = 640 - len(body)
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                         "__metadata__": {"note": "x" * pad}}).encode()
    assert len(header) == 640
    file = tmp_path / "odd.safetensors"
    file.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<f", 1.5))
    assert file.read_bytes()[:2] == b"\x80\x02"
    assert core_checkpoint.safetensors_metadata(file)["note"] == "x" * pad
    core_checkpoint.refuse_pickle(file)
    assert core_checkpoint.list_keys([file])["w"][1] == (1,)
