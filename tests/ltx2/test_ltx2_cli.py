"""``python -m comfyui_cosmos3_ltx2 ltx-generate`` on a tiny official LTX-2.3 single file and a tiny Gemma-3 folder:
an MP4 with a video and an audio stream, or a WebP plus a WAV."""

import wave

import pytest

from comfyui_cosmos3_ltx2.__main__ import _keyframe_arg, main


def _args(tiny, gemma_folder, out, *extra):  # noqa: F811
    _, _, _, file, _, _ = tiny
    folder, _ = gemma_folder
    return ["ltx-generate", "--checkpoint", str(file), "--text-encoder", str(folder), "--width", "64", "--height",
            "64", "--frames", "9", "--steps", "2", "--stg-block", "1", "--device", "cpu", "--dtype", "fp32", "--output", str(out), *extra]


def test_ltx_generate_writes_mp4_with_sound(tiny, gemma_folder, tmp_path, capsys):  # noqa: F811
    av = pytest.importorskip("av")
    if tiny[0] != "2.3":
        pytest.skip("one release is enough for the command line")
    from PIL import Image

    Image.new("RGB", (80, 60), (200, 40, 40)).save(tmp_path / "first.png")
    out = tmp_path / "clip.mp4"
    assert main(_args(tiny, gemma_folder, out, "--image", str(tmp_path / "first.png"), "--keyframe",
                      f"{tmp_path / 'first.png'}:8:0.5")) == 0
    with av.open(str(out)) as c:
        kinds = sorted(s.type for s in c.streams)
        frames = sum(1 for _ in c.decode(video=0))
    assert kinds == ["audio", "video"] and frames == 9
    assert "9 frames 64x64" in capsys.readouterr().out


def test_ltx_generate_webp_and_wav(tiny, gemma_folder, tmp_path):  # noqa: F811
    if tiny[0] != "2.3":
        pytest.skip("one release is enough for the command line")
    out = tmp_path / "clip.webp"
    assert main(_args(tiny, gemma_folder, out)) == 0
    assert out.is_file()
    with wave.open(str(out.with_suffix(".wav"))) as w:
        assert w.getnchannels() == 2 and w.getnframes() > 0


def test_keyframe_argument():
    k = _keyframe_arg("C:/pics/a:b.png:24:0.5")
    assert (k.image, k.frame_idx, k.strength) == ("C:/pics/a:b.png", 24, 0.5)
    k = _keyframe_arg("x.png:16")
    assert (k.image, k.frame_idx, k.strength) == ("x.png", 16, 1.0)
    with pytest.raises(ValueError, match="keyframe=.x.png.: expected IMAGE:FRAME"):
        _keyframe_arg("x.png")
