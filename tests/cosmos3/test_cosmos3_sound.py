"""Joint sound for Cosmos3: the sound tokenizer's decoder, the transformer's sound tokens and whole runs against
diffusers (tiny random models saved in the real format)."""

import pytest
import torch

from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError
from comfyui_cosmos3_ltx2.cosmos3.sound import Cosmos3SoundDecoder, load_sound_decoder
from helpers.cosmos3_oracle import reference_sound_tokenizer
from helpers.measures import rel


@pytest.fixture(scope="module")
def sound_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cosmos3_sound") / "sound_tokenizer"
    ref = reference_sound_tokenizer(seed=3)
    ref.save_pretrained(str(folder))
    return folder, ref


def test_sound_decoder_matches_diffusers(sound_dir):
    folder, ref = sound_dir
    dec = load_sound_decoder(folder)
    assert isinstance(dec, Cosmos3SoundDecoder) and dec.sample_rate == 150 and dec.hop == 6
    z = torch.randn(2, 8, 11, generator=torch.Generator().manual_seed(0)) * 2.0
    with torch.no_grad():
        want = ref.decode(z)
    got = dec.decode(z)
    assert got.shape == want.shape == (2, 2, 66)
    err = rel(got, want)
    print("sound decode rel", err)
    assert err < 1e-5
    # the pipeline's form: one latent [C, T] -> waveform [channels, N]
    assert rel(dec.decode(z[0]), got[0]) < 1e-6


def test_sound_decoder_latent_frames(sound_dir):
    dec = load_sound_decoder(sound_dir[0])
    # per diffusers: int(frames / fps * rate) samples, rounded up to whole hops of 6
    assert dec.latent_frames(9, 16.0) == (int(9 / 16 * 150) + 5) // 6 == 14
    assert dec.latent_frames(1, 24.0) == 1  # 6 samples: one hop


def test_sound_decoder_refuses_other_configs(tmp_path):
    with pytest.raises(ValueError, match="dec_final_tanh"):
        Cosmos3SoundDecoder({"dec_final_tanh": True})
    (tmp_path / "config.json").write_text('{"_class_name": "AutoencoderOobleck"}')
    with pytest.raises(CheckpointError, match="not a Cosmos3 sound tokenizer"):
        load_sound_decoder(tmp_path)
