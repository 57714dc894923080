"""The command line with a sound-capable Cosmos3 checkpoint: the sound goes into the MP4, or a .wav beside a WebP."""

import wave

import pytest

from comfyui_cosmos3_ltx2.__main__ import main
from comfyui_cosmos3_ltx2.headless import media
from helpers.cosmos3_oracle import reference_pipeline

SOUND_8K = {"sampling_rate": 8000, "dec_c_mults": [1, 2, 2], "dec_strides": [4, 4, 5], "enc_c_mults": [1, 2, 2],
            "enc_strides": [4, 4, 5]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("cosmos3_sound_cli")
    reference_pipeline(path, seed=6, sound=SOUND_8K)
    return path


def args(folder, out):
    return ["generate", "--checkpoint", str(folder), "--prompt", "rain on a tin roof", "--width", "32", "--height",
            "32", "--frames", "5", "--fps", "24", "--steps", "2", "--device", "cpu", "--dtype", "fp32", "--output",
            str(out)]


def test_cli_writes_wav_beside_webp(folder, tmp_path, capsys):
    assert main(args(folder, tmp_path / "clip.webp")) == 0
    assert "of sound at 8000 Hz" in capsys.readouterr().out
    assert (tmp_path / "clip.webp").is_file()
    with wave.open(str(tmp_path / "clip.wav")) as w:
        # 5 frames at 24 fps: int(5 / 24 * 8000) = 1666 samples, rounded up to whole hops of 80
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (8000, 2, 1680)


@pytest.mark.skipif(not media.have_av(), reason="MP4 needs PyAV")
def test_cli_writes_mp4_with_sound(folder, tmp_path):
    import av

    assert main(args(folder, tmp_path / "clip.mp4")) == 0
    with av.open(str(tmp_path / "clip.mp4")) as container:
        assert sorted(s.type for s in container.streams) == ["audio", "video"]
