"""Cosmos3 joint sound through the graph nodes: Sound VAE Loader -> Sound Latent -> Sampler -> VAE Decode + Sound
Decode, the same numbers as ``generate``; and through the headless runner to an MP4 with sound (CreateVideo with
audio -> SaveVideo)."""

import pytest
import torch

from comfyui_cosmos3_ltx2 import headless
from comfyui_cosmos3_ltx2.cosmos3.pipeline import Cosmos3Video, generate
from comfyui_cosmos3_ltx2.headless import media
from comfyui_cosmos3_ltx2.nodes import NODE_CLASS_MAPPINGS as M
from helpers.cosmos3_oracle import reference_pipeline

PROMPT, NEGATIVE = "Waves crash on a rocky shore.", "blurry"


@pytest.fixture(scope="module")
def sound_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cosmos3_sound_nodes")
    reference_pipeline(folder, seed=4, sound=True)
    return str(folder)


def run_nodes(folder, seed=11, steps=3, cfg=4.0, fps=16.0, frames=9):
    model, = M["Cosmos3ModelLoader"]().load(folder, "fp32", "default")
    vae, = M["Cosmos3VAELoader"]().load(folder, "fp32", "default")
    sound_vae, = M["Cosmos3SoundVAELoader"]().load(folder, "fp32", "default")
    latent, = M["Cosmos3EmptyLatent"]().make(64, 32, frames, 1)
    latent, = M["Cosmos3SoundLatent"]().make(latent, sound_vae, fps)
    cond, = M["Cosmos3TextEncode"]().encode(model, latent, PROMPT, NEGATIVE, fps)
    out, = M["Cosmos3Sampler"]().sample(model, cond, latent, seed, steps, cfg, 0.0)
    images, out_fps = M["Cosmos3VAEDecode"]().decode(vae, out)
    audio, = M["Cosmos3SoundDecode"]().decode(sound_vae, out)
    return latent, images, out_fps, audio


def test_sound_graph_equals_generate(sound_folder):
    latent, images, fps, audio = run_nodes(sound_folder)
    assert latent["cosmos3_sound"].shape == (1, 8, 14) and not latent["cosmos3_sound"].any()
    got = generate(sound_folder, PROMPT, NEGATIVE, num_frames=9, height=32, width=64, fps=16.0, steps=3,
                   guidance=4.0, seed=11, device="cpu", dtype="fp32")
    assert isinstance(got, Cosmos3Video)
    assert fps == 16.0 and audio["sample_rate"] == got.sample_rate == 150
    assert audio["waveform"].shape == (1, 2, 14 * 6)
    assert torch.equal(images, got.frames)  # bit for bit
    assert torch.equal(audio["waveform"][0], got.waveform)


def test_sound_nodes_refuse_mismatches(sound_folder):
    model, = M["Cosmos3ModelLoader"]().load(sound_folder, "fp32", "default")
    sound_vae, = M["Cosmos3SoundVAELoader"]().load(sound_folder, "fp32", "default")
    latent, = M["Cosmos3EmptyLatent"]().make(32, 32, 5, 1)
    with_sound, = M["Cosmos3SoundLatent"]().make(latent, sound_vae, 24.0)
    cond, = M["Cosmos3TextEncode"]().encode(model, with_sound, PROMPT, NEGATIVE, 16.0)
    with pytest.raises(ValueError, match="Cosmos3Sampler .*24.0 fps"):
        M["Cosmos3Sampler"]().sample(model, cond, with_sound, 1, 1, 4.0, 0.0)
    with pytest.raises(ValueError, match="Cosmos3SoundDecode .*no sound"):
        M["Cosmos3SoundDecode"]().decode(sound_vae, latent)
    demo = M["Cosmos3ModelLoader"]().load(M["Cosmos3ModelLoader"].INPUT_TYPES()["required"]["checkpoint"][0][0],
                                          "fp32", "default")[0]
    cond, = M["Cosmos3TextEncode"]().encode(demo, with_sound, PROMPT, NEGATIVE, 24.0)
    with pytest.raises(ValueError, match="generates no sound"):
        M["Cosmos3Sampler"]().sample(demo, cond, with_sound, 1, 1, 4.0, 0.0)
    with pytest.raises(ValueError, match="Cosmos3SoundVAELoader"):
        M["Cosmos3SoundVAELoader"]().load(sound_folder + "/vae", "fp32", "default")


def sound_graph(folder):
    """The API-format graph: the sound nodes feeding the core CreateVideo (with audio) -> SaveVideo."""
    return {
        "1": {"class_type": "Cosmos3ModelLoader", "inputs": {"checkpoint": folder, "weight_dtype": "fp32",
                                                              "device": "default"}},
        "2": {"class_type": "Cosmos3VAELoader", "inputs": {"vae": folder, "dtype": "fp32", "device": "default"}},
        "3": {"class_type": "Cosmos3SoundVAELoader", "inputs": {"checkpoint": folder, "dtype": "fp32",
                                                                 "device": "default"}},
        "4": {"class_type": "Cosmos3EmptyLatent", "inputs": {"width": 32, "height": 32, "frames": 9,
                                                              "batch_size": 1}},
        "5": {"class_type": "Cosmos3SoundLatent", "inputs": {"latent": ["4", 0], "sound_vae": ["3", 0],
                                                              "fps": 24.0}},
        "6": {"class_type": "Cosmos3TextEncode", "inputs": {"model": ["1", 0], "latent": ["5", 0], "prompt": PROMPT,
                                                             "negative_prompt": NEGATIVE, "fps": 24.0,
                                                             "use_system_prompt": True, "add_duration_template": True,
                                                             "add_resolution_template": True}},
        "7": {"class_type": "Cosmos3Sampler", "inputs": {"model": ["1", 0], "conditioning": ["6", 0],
                                                          "latent": ["5", 0], "seed": 3, "steps": 2, "cfg": 4.0,
                                                          "shift": 0.0, "sampler": "auto"}},
        "8": {"class_type": "Cosmos3VAEDecode", "inputs": {"vae": ["2", 0], "latent": ["7", 0]}},
        "9": {"class_type": "Cosmos3SoundDecode", "inputs": {"sound_vae": ["3", 0], "latent": ["7", 0]}},
        "10": {"class_type": "CreateVideo", "inputs": {"images": ["8", 0], "fps": ["8", 1], "audio": ["9", 0]}},
        "11": {"class_type": "SaveVideo", "inputs": {"video": ["10", 0], "filename_prefix": "cosmos3_sound",
                                                     "format": "auto", "codec": "auto"}},
    }


@pytest.mark.skipif(not media.have_av(), reason="MP4 needs PyAV")
def test_headless_graph_writes_mp4_with_sound(tmp_path):
    import av

    # AAC needs a real sample rate: a tiny tokenizer at 8 kHz (hop 4 * 4 * 5 = 80: 100 latent frames a second)
    folder = tmp_path / "ckpt"
    reference_pipeline(folder, seed=5, sound={"sampling_rate": 8000, "dec_c_mults": [1, 2, 2],
                                             "dec_strides": [4, 4, 5], "enc_c_mults": [1, 2, 2],
                                             "enc_strides": [4, 4, 5]})
    mappings = headless.node_mappings(False)
    files = headless.run(sound_graph(str(folder)), output_dir=tmp_path / "out", mappings=mappings)
    assert len(files) == 1 and str(files[0]).endswith(".mp4")
    with av.open(str(files[0])) as container:
        kinds = sorted(s.type for s in container.streams)
        rate = container.streams.audio[0].rate
    assert kinds == ["audio", "video"] and rate == 8000
