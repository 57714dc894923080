"""LTX-2 / LTX-2.3 audio-video transformer against diffusers' ``LTX2VideoTransformer3DModel`` (test-only
oracle), on tiny random models saved with ``save_pretrained`` and in the official single-file layout.

diffusers takes ``1000 * sigma`` timesteps; ours takes sigmas and scales them itself.
"""

from __future__ import annotations

import json
import types

import pytest
import torch
from safetensors.torch import save_file

from comfyui_cosmos3_ltx2.core.checkpoint import load_into
from comfyui_cosmos3_ltx2.ltx2.transformer import (
    LTX2Transformer,
    load_ltx2_transformer,
    official_to_module_key,
)
from helpers.op_count import OpCount

diffusers = pytest.importorskip("diffusers")
from diffusers import LTX2VideoTransformer3DModel  # noqa: E402
from diffusers.models.transformers.transformer_ltx2 import LTX2AudioVideoAttnProcessor  # noqa: E402

from helpers.ltx2_transformer_ref import CONFIGS, official_config, to_official_key
from helpers.measures import rel

TOL = 1e-5


B, F_, H_, W_, SA, L = 2, 3, 2, 3, 10, 8
S = F_ * H_ * W_


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith(("norm_q.weight", "norm_k.weight")):
            p.copy_(3.0 * (0.75 + 0.5 * torch.rand(p.shape, generator=g)))
        elif "scale_shift_table" in name:
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(torch.randn(p.shape, generator=g) * (p.shape[-1] ** -0.5 if p.ndim > 1 else 0.1))


_CACHE: dict = {}


def _models(variant: str, tmp_path_factory):
    if variant in _CACHE:
        return _CACHE[variant]
    torch.manual_seed(0)
    ref = LTX2VideoTransformer3DModel(**CONFIGS[variant]).eval()
    with torch.no_grad():
        _randomise(ref, 1)
    folder = tmp_path_factory.mktemp(f"ltx2_{variant}") / "transformer"
    ref.save_pretrained(folder)
    with open(folder / "config.json") as f:
        cfg = json.load(f)
    with torch.device("meta"):
        ours = LTX2Transformer(cfg)
    load_into(ours, folder)
    ours.eval()
    _CACHE[variant] = (ref, ours, folder)
    return _CACHE[variant]


def _inputs(variant: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = CONFIGS[variant]
    ctx_dim = cfg["caption_channels"] if cfg["use_prompt_embeddings"] else cfg["cross_attention_dim"]
    actx_dim = cfg["caption_channels"] if cfg["use_prompt_embeddings"] else cfg["audio_cross_attention_dim"]
    mask = torch.ones(B, L)
    mask[1, :3] = 0  # left padding in the second sample
    return dict(
        x=torch.randn(B, S, cfg["in_channels"], generator=g),
        ax=torch.randn(B, SA, cfg["audio_in_channels"], generator=g),
        ctx=torch.randn(B, L, ctx_dim, generator=g),
        actx=torch.randn(B, L, actx_dim, generator=g),
        mask=mask,
    )


def _ref(ref, inp, sigma, audio_sigma, timestep=None, mask=True, **kw):
    coords = ref.rope.prepare_video_coords(B, F_, H_, W_, torch.device("cpu"), fps=24.0)
    acoords = ref.audio_rope.prepare_audio_coords(B, SA, torch.device("cpu"))
    t = (sigma * 1000.0) if timestep is None else timestep * 1000.0
    kw.setdefault("audio_timestep", audio_sigma * 1000.0)
    return ref(
        hidden_states=inp["x"], audio_hidden_states=inp["ax"], encoder_hidden_states=inp["ctx"],
        audio_encoder_hidden_states=inp["actx"], timestep=t,
        sigma=sigma * 1000.0, audio_sigma=audio_sigma * 1000.0,
        encoder_attention_mask=inp["mask"] if mask else None,
        audio_encoder_attention_mask=inp["mask"] if mask else None,
        video_coords=coords, audio_coords=acoords, use_cross_timestep=True, return_dict=False, **kw)


def _ours(ours, inp, sigma, audio_sigma, timestep=None, mask=True, **kw):
    return ours(
        inp["x"], inp["ax"], inp["ctx"], inp["actx"], sigma, audio_sigma, timestep=timestep,
        video_coords=ours.video_coords(B, F_, H_, W_, fps=24.0), audio_coords=ours.audio_coords(B, SA),
        encoder_attention_mask=inp["mask"] if mask else None,
        audio_encoder_attention_mask=inp["mask"] if mask else None, **kw)


def _check(got, want, what=""):
    for g, w, name in zip(got, want, ("video", "audio")):
        assert g.shape == w.shape
        r = rel(g, w)
        assert r < TOL, f"{what} {name}: relative difference {r:.2e}"


VARIANTS = list(CONFIGS)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("sig", [(1.0, 1.0), (0.5, 0.7), (0.05, 0.3)])
def test_forward_matches_diffusers(variant, sig, tmp_path_factory):
    ref, ours, _ = _models(variant, tmp_path_factory)
    inp = _inputs(variant)
    sigma = torch.tensor([sig[0], sig[1]])  # per-sample sigmas differ inside the batch
    audio_sigma = torch.tensor([sig[1], sig[0]])
    _check(_ours(ours, inp, sigma, audio_sigma), _ref(ref, inp, sigma, audio_sigma), variant)


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
def test_per_token_timesteps(variant, tmp_path_factory):
    """Clean conditioning tokens (frame 0) carry timestep 0 while the rest carry sigma."""
    ref, ours, _ = _models(variant, tmp_path_factory)
    inp = _inputs(variant, seed=1)
    sigma = torch.tensor([0.8, 0.4])
    denoise = torch.ones(B, S)
    denoise[:, : H_ * W_] = 0.0
    timestep = sigma[:, None] * denoise
    got = _ours(ours, inp, sigma, sigma, timestep=timestep)
    _check(got, _ref(ref, inp, sigma, sigma, timestep=timestep), variant)
    plain = _ours(ours, inp, sigma, sigma)
    assert rel(got[0], plain[0]) > 1e-3  # the per-token timesteps do matter


def test_per_token_audio_timesteps(tmp_path_factory):
    ref, ours, _ = _models("2.3", tmp_path_factory)
    inp = _inputs("2.3", seed=11)
    sigma = torch.tensor([0.8, 0.4])
    a_tok = sigma[:, None] * torch.linspace(0.0, 1.0, SA)[None]
    got = _ours(ours, inp, sigma, sigma, audio_timestep=a_tok)
    want = _ref(ref, inp, sigma, sigma, audio_timestep=a_tok * 1000.0)
    _check(got, want, "per-token audio")


def test_float_sigma_and_no_mask(tmp_path_factory):
    ref, ours, _ = _models("2.3", tmp_path_factory)
    inp = _inputs("2.3", seed=2)
    got = _ours(ours, inp, 0.6, None, mask=False)
    s = torch.full((B,), 0.6)
    _check(got, _ref(ref, inp, s, s, mask=False), "float sigma")


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
def test_stg_both_streams(variant, tmp_path_factory):
    ref, ours, _ = _models(variant, tmp_path_factory)
    inp = _inputs(variant, seed=3)
    sigma = torch.tensor([0.7, 0.2])
    want = _ref(ref, inp, sigma, sigma, spatio_temporal_guidance_blocks=[1])
    got = _ours(ours, inp, sigma, sigma, skip_video_self_attn_blocks=[1], skip_audio_self_attn_blocks=[1])
    _check(got, want, "stg")
    plain = _ours(ours, inp, sigma, sigma)
    assert rel(got[0], plain[0]) > 1e-3 and rel(got[1], plain[1]) > 1e-3


@pytest.mark.parametrize("stream", ["video", "audio"])
def test_stg_one_stream(stream, tmp_path_factory):
    """Only one stream perturbed: in diffusers, give the other stream's self-attention the plain processor
    (which ignores the perturbation arguments)."""
    ref, ours, _ = _models("2.3", tmp_path_factory)
    inp = _inputs("2.3", seed=4)
    sigma = torch.tensor([0.9, 0.5])
    other = "audio_attn1" if stream == "video" else "attn1"
    blocks = [0, 1]
    saved = [getattr(blk, other).processor for blk in ref.transformer_blocks]
    try:
        for blk in ref.transformer_blocks:
            getattr(blk, other).set_processor(LTX2AudioVideoAttnProcessor())
        import logging
        logging.getLogger("diffusers").setLevel(logging.ERROR)
        want = _ref(ref, inp, sigma, sigma, spatio_temporal_guidance_blocks=blocks)
    finally:
        for blk, p in zip(ref.transformer_blocks, saved):
            getattr(blk, other).set_processor(p)
    kw = {f"skip_{stream}_self_attn_blocks": blocks}
    _check(_ours(ours, inp, sigma, sigma, **kw), want, f"stg {stream}")


def _with_block_overrides(ref, **overrides):
    """Wrap every diffusers block so that the given keyword arguments are forced."""
    originals = []
    for blk in ref.transformer_blocks:
        orig = blk.forward
        originals.append(orig)

        def fwd(self, *a, _orig=orig, **kw):
            kw.update(overrides)
            return _orig(*a, **kw)

        blk.forward = types.MethodType(fwd, blk)
    return originals


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
@pytest.mark.parametrize("which", ["both", "a2v", "v2a"])
def test_modality_pass(variant, which, tmp_path_factory):
    ref, ours, _ = _models(variant, tmp_path_factory)
    inp = _inputs(variant, seed=5)
    sigma = torch.tensor([0.6, 0.35])
    if which == "both":
        want = _ref(ref, inp, sigma, sigma, isolate_modalities=True)
    else:
        force = {"use_a2v_cross_attention": which != "a2v", "use_v2a_cross_attention": which != "v2a"}
        _with_block_overrides(ref, **force)
        try:
            want = _ref(ref, inp, sigma, sigma)
        finally:
            for blk in ref.transformer_blocks:
                del blk.forward
    got = _ours(ours, inp, sigma, sigma, disable_a2v=which in ("both", "a2v"),
                disable_v2a=which in ("both", "v2a"))
    _check(got, want, f"modality {which}")
    plain = _ours(ours, inp, sigma, sigma)
    if which in ("both", "a2v"):
        assert rel(got[0], plain[0]) > 1e-4
    if which in ("both", "v2a"):
        assert rel(got[1], plain[1]) > 1e-4


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
def test_bfloat16_matches_diffusers_bfloat16(variant, tmp_path_factory):
    ref, ours, _ = _models(variant, tmp_path_factory)
    ref_bf = LTX2VideoTransformer3DModel(**CONFIGS[variant]).eval()
    ref_bf.load_state_dict(ref.state_dict())
    ref_bf = ref_bf.to(torch.bfloat16)
    ours_bf = LTX2Transformer(ours.config).eval()
    ours_bf.load_state_dict(ours.state_dict())
    ours_bf = ours_bf.to(torch.bfloat16)
    inp32 = _inputs(variant, seed=10)
    inp = {k: (x if k == "mask" else x.to(torch.bfloat16)) for k, x in inp32.items()}
    sigma = torch.tensor([0.7, 0.2])
    got, want = _ours(ours_bf, inp, sigma, sigma), _ref(ref_bf, inp, sigma, sigma)
    # the float32 reference on the same (bf16-rounded) inputs: our fused multiply-adds round once where
    # diffusers rounds twice, so our bf16 run must land at least as close to it as diffusers' bf16 run
    truth = _ref(ref, {k: (x if k == "mask" else x.to(torch.bfloat16).float()) for k, x in inp32.items()}, sigma, sigma)
    for g, w, t in zip(got, want, truth):
        assert g.dtype == torch.bfloat16
        assert rel(g.float(), w.float()) < 8e-2
        assert rel(g.float(), t) <= 1.1 * rel(w.float(), t), (rel(g.float(), t), rel(w.float(), t))


def test_legacy_cross_timestep(tmp_path_factory):
    ref, ours, _ = _models("2.0", tmp_path_factory)
    inp = _inputs("2.0", seed=6)
    sigma, asig = torch.tensor([0.6, 0.35]), torch.tensor([0.2, 0.9])
    want = ref(
        hidden_states=inp["x"], audio_hidden_states=inp["ax"], encoder_hidden_states=inp["ctx"],
        audio_encoder_hidden_states=inp["actx"], timestep=sigma * 1000.0, audio_timestep=asig * 1000.0,
        sigma=sigma * 1000.0, audio_sigma=asig * 1000.0, encoder_attention_mask=inp["mask"],
        audio_encoder_attention_mask=inp["mask"],
        video_coords=ref.rope.prepare_video_coords(B, F_, H_, W_, torch.device("cpu")),
        audio_coords=ref.audio_rope.prepare_audio_coords(B, SA, torch.device("cpu")),
        use_cross_timestep=False, return_dict=False)
    got = _ours(ours, inp, sigma, asig, use_cross_timestep=False)
    _check(got, want, "legacy cross timestep")


def test_coords_and_rope_reuse(tmp_path_factory):
    ref, ours, _ = _models("2.3", tmp_path_factory)
    cpu = torch.device("cpu")
    for fps in (24.0, 25.0):
        assert torch.equal(ours.video_coords(B, 5, 2, 3, fps=fps), ref.rope.prepare_video_coords(B, 5, 2, 3, cpu, fps=fps))
    assert torch.equal(ours.audio_coords(B, 34), ref.audio_rope.prepare_audio_coords(B, 34, cpu))
    inp = _inputs("2.3", seed=7)
    rope = ours.rope(ours.video_coords(B, F_, H_, W_), ours.audio_coords(B, SA))
    a = ours(inp["x"], inp["ax"], inp["ctx"], inp["actx"], 0.5, rope=rope)
    b = _ours(ours, inp, 0.5, None, mask=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_no_host_syncs(tmp_path_factory):
    _, ours, _ = _models("2.3", tmp_path_factory)
    inp = _inputs("2.3", seed=8)
    sigma = torch.tensor([0.7, 0.3])
    timestep = sigma[:, None] * torch.ones(B, S)
    rope = ours.rope(ours.video_coords(B, F_, H_, W_), ours.audio_coords(B, SA))
    with OpCount() as counter:
        ours(inp["x"], inp["ax"], inp["ctx"], inp["actx"], sigma, timestep=timestep, rope=rope,
             encoder_attention_mask=inp["mask"], audio_encoder_attention_mask=inp["mask"],
             skip_video_self_attn_blocks=[1], disable_v2a=True)
        ours(inp["x"], inp["ax"], inp["ctx"], inp["actx"], 0.4, rope=rope)
    assert counter.host_reads == 0


# --------------------------------------------------------------------------------------------------
# Official single-file layout


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_single_file(variant, tmp_path_factory):
    ref, ours, _ = _models(variant, tmp_path_factory)
    sd = ref.state_dict()
    tensors = {to_official_key(k): v.contiguous() for k, v in sd.items()}
    # keys of other components in the same file: must be ignored
    tensors["model.diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q.weight"] = torch.zeros(2, 2)
    tensors["model.diffusion_model.audio_embeddings_connector.learnable_registers"] = torch.zeros(4, 2)
    tensors["vae.decoder.conv_in.conv.weight"] = torch.zeros(1)
    tensors["audio_vae.decoder.conv_in.conv.weight"] = torch.zeros(1)
    tensors["vocoder.conv_pre.weight"] = torch.zeros(1)
    tensors["text_embedding_projection.aggregate_embed.weight"] = torch.zeros(1)
    # the key map is a bijection onto the module's names
    mapped = {official_to_module_key(k) for k in tensors} - {None}
    assert mapped == set(ours.state_dict())
    assert len(mapped) == len(sd)
    path = tmp_path_factory.mktemp(f"official_{variant}") / "ltx-2-tiny.safetensors"
    save_file(tensors, str(path), metadata={"config": json.dumps(official_config(CONFIGS[variant]))})

    loaded = load_ltx2_transformer(path)
    assert loaded.config["use_prompt_embeddings"] == CONFIGS[variant]["use_prompt_embeddings"]
    for k, v in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    inp = _inputs(variant, seed=9)
    sigma = torch.tensor([0.5, 0.25])
    a, b = _ours(loaded, inp, sigma, sigma), _ours(ours, inp, sigma, sigma)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_diffusers_folder_loader(tmp_path_factory):
    _, ours, folder = _models("2.3", tmp_path_factory)
    loaded = load_ltx2_transformer(folder)
    for k, v in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
