"""Parity of our Wan VAE (cosmos3/vae.py) with diffusers' AutoencoderKLWan on tiny random models.

The reference is saved with save_pretrained (config.json + diffusion_pytorch_model.safetensors) and
our module is built from exactly those files, so the tests also pin the on-disk format.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from comfyui_cosmos3_ltx2.cosmos3.vae import WanVAE
from helpers.measures import rel
from helpers.op_count import OpCount

_stats = torch.Generator().manual_seed(11)
TINY_WAN22 = dict(
    base_dim=8,
    decoder_base_dim=8,
    z_dim=48,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
    latents_mean=(torch.randn(48, generator=_stats) * 0.3).tolist(),
    latents_std=(torch.rand(48, generator=_stats) + 0.3).tolist(),
)
TINY_WAN21 = dict(base_dim=8, z_dim=4, num_res_blocks=1)  # non-residual, no patches, 8x spatial


def reference_vae(config: dict, seed: int = 0):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    ref = AutoencoderKLWan(**config).eval()
    with torch.no_grad():  # move the norms' gains and all biases away from their identity values
        for name, p in ref.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.add_(0.02 * torch.randn_like(p))
    return ref


def load_ours(folder) -> WanVAE:
    config = json.loads((folder / "config.json").read_text())
    vae = WanVAE(config).eval()
    vae.load_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors"), strict=True)
    return vae


def pair(config, folder):
    ref = reference_vae(config)
    ref.save_pretrained(folder)
    return ref, load_ours(folder)


@pytest.fixture(scope="module")
def wan22(tmp_path_factory):
    return pair(TINY_WAN22, tmp_path_factory.mktemp("wan22_vae"))


def video(t, h, w, seed=0):
    return torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def latents(t, h, w, seed=0, c=48):
    return torch.randn(1, c, t, h, w, generator=torch.Generator().manual_seed(seed))


def test_state_dict_keys_equal_diffusers(wan22, tmp_path):
    ref, ours = wan22
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.z_dim == 48 and ours.scale_factor_spatial == 16 and ours.scale_factor_temporal == 4
    assert ours.latents_mean == pytest.approx(TINY_WAN22["latents_mean"])
    assert ours.latents_std == pytest.approx(TINY_WAN22["latents_std"])
    assert ours.config["_class_name"] == "AutoencoderKLWan"  # unknown keys are kept, not used
    from diffusers import AutoencoderKLWan

    for config in (TINY_WAN21, {**TINY_WAN21, "attn_scales": [1.0, 0.5]}, {}):  # {}: all defaults (Wan2.1)
        with torch.device("meta"):
            want = {k: v.shape for k, v in AutoencoderKLWan(**config).state_dict().items()}
            got = {k: v.shape for k, v in WanVAE(config).state_dict().items()}
        assert got == want


@pytest.mark.parametrize("hw", [(32, 64), (48, 64)])
def test_encode_matches_diffusers(wan22, hw):
    ref, ours = wan22
    x = video(9, *hw)
    want = ref.encode(x).latent_dist.mode()
    got = ours.encode(x)
    assert got.shape == want.shape == (1, 48, 3, hw[0] // 16, hw[1] // 16)
    err = rel(got, want)
    print(f"encode {hw}: max|diff| / max|ref| = {err:.2e}")
    assert err < 1e-5


@pytest.mark.parametrize("t,hw", [(3, (32, 64)), (1, (32, 64)), (3, (48, 64))])
def test_decode_matches_diffusers(wan22, t, hw):
    ref, ours = wan22
    z = latents(t, hw[0] // 16, hw[1] // 16, seed=t)
    want = ref.decode(z).sample
    got = ours.decode(z)
    assert got.shape == want.shape == (1, 3, 4 * (t - 1) + 1, *hw)
    assert (want.abs() < 1).float().mean() > 0.5  # the clamp does not hide the comparison
    err = rel(got, want)
    print(f"decode T={t} {hw}: max|diff| / max|ref| = {err:.2e}")
    assert err < 1e-5


def test_batch_of_two_matches_diffusers(wan22):
    ref, ours = wan22
    x = torch.cat([video(5, 32, 64, seed=6), video(5, 32, 64, seed=7)])
    assert rel(ours.encode(x), ref.encode(x).latent_dist.mode()) < 1e-5
    z = torch.cat([latents(2, 2, 4, seed=6), latents(2, 2, 4, seed=7)])
    assert rel(ours.decode(z), ref.decode(z).sample) < 1e-5


def test_iter_decode_streams_chunks(wan22):
    _, ours = wan22
    z = latents(3, 2, 4, seed=5)
    chunks = list(ours.iter_decode(z))
    assert [c.shape[2] for c in chunks] == [1, 4, 4]
    assert all(c.abs().max() <= 1 for c in chunks)
    assert torch.equal(torch.cat(chunks, 2), ours.decode(z))


def test_single_frame_encode_is_first_latent_of_a_still_video(wan22):
    """Image-to-video needs only the one frame encoded: it equals latent 0 of the repeated-frame clip."""
    _, ours = wan22
    image = video(1, 32, 64, seed=3)
    single = ours.encode(image)
    still = ours.encode(image.expand(-1, -1, 9, -1, -1))
    assert single.shape == (1, 48, 1, 2, 4)
    assert torch.equal(single[:, :, 0], still[:, :, 0])


def test_normalize_roundtrip(wan22):
    _, ours = wan22
    z = latents(2, 2, 4, seed=9)
    mean = torch.tensor(TINY_WAN22["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(TINY_WAN22["latents_std"]).view(1, -1, 1, 1, 1)
    n = ours.normalize_latents(z)
    torch.testing.assert_close(n, (z - mean) / std)
    torch.testing.assert_close(ours.denormalize_latents(z), z * std + mean)
    torch.testing.assert_close(ours.denormalize_latents(n), z)
    zb = z.to(torch.bfloat16)
    assert ours.normalize_latents(zb).dtype == torch.bfloat16
    assert ours.denormalize_latents(zb).dtype == torch.bfloat16


def test_decode_callback_and_interrupt(wan22):
    _, ours = wan22
    z = latents(3, 2, 4, seed=1)
    calls = []
    out = ours.decode(z, callback=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert out.shape == (1, 3, 9, 32, 64)

    class Interrupted(Exception):
        pass

    def stop_after_first(i, n):
        if i == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        ours.decode(z, callback=stop_after_first)
    assert ours.decode(z, dtype=torch.float64).dtype == torch.float64


def test_no_scalar_reads_in_encode_or_decode(wan22):
    _, ours = wan22
    x, z = video(9, 32, 64), latents(3, 2, 4)
    with OpCount() as counter:
        ours.encode(x)
        ours.decode(z, callback=lambda i, n: None)
    assert counter.host_reads == 0


def test_bfloat16_matches_diffusers(tmp_path):
    from diffusers import AutoencoderKLWan

    reference_vae(TINY_WAN22).save_pretrained(tmp_path)
    ref = AutoencoderKLWan.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).eval()
    ours = load_ours(tmp_path).to(torch.bfloat16)
    x, z = video(5, 32, 64, seed=2), latents(2, 2, 4, seed=2)
    got, want = ours.encode(x), ref.encode(x.to(torch.bfloat16)).latent_dist.mode()
    assert got.dtype == torch.bfloat16 and rel(got, want) < 2e-2
    got, want = ours.decode(z), ref.decode(z.to(torch.bfloat16)).sample
    assert got.dtype == torch.bfloat16 and rel(got, want) < 2e-2


def test_wan21_matches_diffusers(tmp_path):
    ref, ours = pair(TINY_WAN21, tmp_path)
    x = video(9, 32, 48, seed=4)
    want = ref.encode(x).latent_dist.mode()
    got = ours.encode(x)
    assert got.shape == want.shape == (1, 4, 3, 4, 6)
    assert rel(got, want) < 1e-5
    z = latents(3, 4, 6, seed=4, c=4)
    want = ref.decode(z).sample
    got = ours.decode(z)
    assert got.shape == want.shape == (1, 3, 9, 32, 48)
    assert rel(got, want) < 1e-5


def test_bad_input_is_a_clear_error(wan22):
    _, ours = wan22
    with pytest.raises(ValueError, match="WanVAE.encode"):
        ours.encode(torch.zeros(1, 3, 9, 33, 64))
    with pytest.raises(ValueError, match="WanVAE.decode"):
        ours.decode(torch.zeros(1, 16, 3, 2, 4))
