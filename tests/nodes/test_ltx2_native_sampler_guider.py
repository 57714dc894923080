"""res2s SAMPLER and multi-pass GUIDER for ComfyUI's own LTX-2 model (nodes/ltx2_native.py), without ComfyUI.

The sampler function is checked against the core res2s on the same sigmas with a plain model callable, the
guider's per-modality combination on ComfyUI's packed sample against the core guidance applied to each
latent alone, and the STG value pass-through against an attention whose weights are the identity.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from comfyui_cosmos3_ltx2.core.guidance import multipass_guidance
from comfyui_cosmos3_ltx2.core.sampling.ltx_schedule import ltx2_sigmas
from comfyui_cosmos3_ltx2.core.sampling.res2s import sample_res2s, seeded_noise_sampler
from comfyui_cosmos3_ltx2.nodes import NODE_CLASS_MAPPINGS, comfy
from comfyui_cosmos3_ltx2.nodes import ltx2_native as N


def _pack(latents):
    """ComfyUI's comfy.utils.pack_latents: each latent flattened to [B, 1, -1], concatenated."""
    return torch.cat([t.reshape(t.shape[0], 1, -1) for t in latents], dim=-1), [t.shape for t in latents]


def _toy_x0(x, sigma):
    """A deterministic stand-in 'model': an x0 estimate that depends on the sample and on sigma."""
    return torch.tanh(x * (1.5 - sigma)) * 0.8 + 0.1 * sigma


@pytest.mark.parametrize("eta,bongmath", [(0.5, True), (0.0, False), (0.25, True)])
def test_sampler_function_equals_core_res2s(eta, bongmath):
    g = torch.Generator().manual_seed(3)
    x, _ = _pack([torch.randn(1, 8, 2, 3, 4, generator=g), torch.randn(1, 4, 5, 2, generator=g)])
    sigmas = torch.tensor(ltx2_sigmas(6), dtype=torch.float32)
    seen = []

    def comfy_model(sample, sigma, **kw):  # ComfyUI calls with a [B] sigma tensor and extra args
        assert sigma.shape == (sample.shape[0],) and kw["model_options"] == {"m": 1}
        seen.append(float(sigma[0]))
        return _toy_x0(sample, sigma.view(-1, 1, 1))

    steps = []
    ours = N.sample_res2s_comfy(comfy_model, x.clone(), sigmas, {"model_options": {"m": 1}, "seed": 77},
                                callback=lambda d: steps.append((d["i"], d["x"].shape, d["denoised"].shape)),
                                disable=False, eta=eta, bongmath=bongmath)
    # the core calls its model with a Python float; ComfyUI's model gets it as a tensor of the sample's dtype
    core = sample_res2s(lambda s, sigma, **kw: _toy_x0(s, s.new_full((1, 1, 1), sigma)), x.clone(), sigmas.tolist(),
                        {"model_options": {}},
                        eta=eta, noise_sampler=seeded_noise_sampler(77) if eta else None, bongmath=bongmath)
    assert torch.equal(ours, core)
    assert [i for i, *_ in steps] == list(range(6)) and all(s == x.shape for _, s, _ in steps)
    assert len(seen) == 2 * 6 + 1  # two calls per step and the final denoise at the terminal sigma


def test_sampler_noise_follows_the_seed():
    x = torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(0))
    sig = torch.tensor(ltx2_sigmas(3), dtype=torch.float32)
    run = lambda seed: N.sample_res2s_comfy(lambda s, t, **k: _toy_x0(s, t.view(-1, 1, 1)), x, sig, {"seed": seed})
    assert torch.equal(run(5), run(5)) and not torch.equal(run(5), run(6))


def test_sampler_node_returns_a_sampler_with_its_options():
    (sampler,) = NODE_CLASS_MAPPINGS["LTX2Res2sSampler"]().get_sampler(0.3, False)
    assert sampler.sampler_function is N.sample_res2s_comfy
    assert sampler.extra_options == {"eta": 0.3, "bongmath": False}


@pytest.mark.parametrize("skip_reshape", [False, True])
@pytest.mark.parametrize("skip_output_reshape", [False, True])
def test_values_through_is_attention_with_identity_weights(skip_reshape, skip_output_reshape):
    b, n, h, d = 2, 5, 3, 4
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(b, n, h * d, generator=g) for _ in range(3))
    heads = lambda t: t.view(b, n, h, d).transpose(1, 2)  # [B, H, N, D]
    # reference: an attention whose softmax weights are the identity (every query sees only its own key)
    eye = torch.full((n, n), -math.inf).fill_diagonal_(0.0)
    ref = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=eye)  # [B, H, N, D]
    if not skip_output_reshape:
        ref = ref.transpose(1, 2).reshape(b, n, h * d)
    args = (heads(q), heads(k), heads(v)) if skip_reshape else (q, k, v)
    out = N.values_through(None, *args, h, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def _estimates(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    per = {n: [torch.randn(s, generator=g) for s in shapes] for n in ("cond", "neg", "perturbed", "modality")}
    return per, {n: _pack(ts)[0] for n, ts in per.items()}


def test_guided_x0_applies_each_modality_its_own_scales():
    shapes = [torch.Size([2, 8, 3, 2, 2]), torch.Size([2, 4, 6, 2])]  # video, audio (ComfyUI's layouts)
    per, packed = _estimates(shapes)
    video = {"cfg": 3.0, "stg": 1.0, "modality": 3.0, "rescale": 0.7}
    audio = {"cfg": 7.0, "stg": 0.5, "modality": 2.0, "rescale": 0.0}
    out = N.guided_x0(packed, shapes, [video, audio])
    expect = [multipass_guidance(*(per[n][i] for n in ("cond", "neg", "perturbed", "modality")), **s)
              for i, s in enumerate((video, audio))]
    assert torch.equal(out, _pack(expect)[0])


def test_guided_x0_single_latent_uses_the_video_scales():
    per, packed = _estimates([torch.Size([1, 8, 2, 2, 2])], seed=4)
    s = {"cfg": 2.0, "stg": 0.0, "modality": 1.0, "rescale": 0.5}
    out = N.guided_x0({"cond": packed["cond"], "neg": packed["neg"]}, None, [s, {"cfg": 9.0}])
    assert torch.equal(out, multipass_guidance(packed["cond"], packed["neg"], **s))


@pytest.mark.parametrize("video,audio,expected", [
    ((3.0, 1.0, 3.0), (7.0, 1.0, 3.0), [["positive", "negative"], ["positive", "stg"], ["positive", "modality"]]),
    ((3.0, 0.0, 3.0), (7.0, 0.0, 3.0), [["positive", "negative"], ["positive", "modality"]]),
    ((1.0, 0.0, 1.0), (1.0, 0.0, 1.0), [["positive"]]),
    ((1.0, 0.0, 1.0), (1.0, 1.0, 1.0), [["positive"], ["positive", "stg"]]),  # one modality needs the pass
])
def test_multipass_predict_runs_only_the_needed_passes(video, audio, expected):
    shapes = [torch.Size([1, 4, 2, 2, 2]), torch.Size([1, 2, 3, 2])]
    per, packed = _estimates(shapes, seed=2)
    calls = []

    def run(names, **switches):
        tag = ("stg" if switches.get(N.STG_SWITCH) else
               "modality" if switches == {"a2v_cross_attn": False, "v2a_cross_attn": False} else None)
        assert switches == {} or tag is not None
        calls.append(list(names) + ([tag] if tag else []))
        if tag:
            return [packed["perturbed" if tag == "stg" else "modality"]]
        return [packed["cond"], packed["neg"]][: len(names)]

    scales = [dict(zip(("cfg", "stg", "modality"), v), rescale=0.0) for v in (video, audio)]
    out = N.multipass_predict(scales)(run, packed["cond"], shapes)
    assert calls == expected
    assert out.shape == packed["cond"].shape


def test_parse_blocks():
    assert N.parse_blocks("28", "w") == (28,) and N.parse_blocks(" 27, 28 ", "w") == (27, 28)
    assert N.parse_blocks("", "w") == ()
    with pytest.raises(ValueError, match="block numbers separated by commas"):
        N.parse_blocks("28;29", "w")
    with pytest.raises(ValueError, match="start at 0"):
        N.parse_blocks("-1", "w")


def _guider_args(**kw):
    args = dict(model=object(), positive=[], negative=[], preset=N.CUSTOM, video_cfg=3.0, video_stg=1.0,
                video_modality=3.0, video_rescale=0.7, audio_cfg=7.0, audio_stg=1.0, audio_modality=3.0,
                audio_rescale=0.7, stg_blocks="28")
    args.update(kw)
    return args


def test_guider_node_refuses_stg_without_blocks_and_unknown_presets():
    node = NODE_CLASS_MAPPINGS["LTX2MultipassGuider"]()
    with pytest.raises(ValueError, match="video_stg is 1.0 but stg_blocks is empty"):
        node.get_guider(**_guider_args(stg_blocks=""))
    with pytest.raises(ValueError, match="preset must be one of"):
        node.get_guider(**_guider_args(preset="LTX-9"))


def test_guider_node_needs_comfyui_for_its_model():
    if comfy.in_comfyui():
        pytest.skip("ComfyUI is importable here")
    node = NODE_CLASS_MAPPINGS["LTX2MultipassGuider"]()
    with pytest.raises(RuntimeError, match="needs a running ComfyUI"):
        node.get_guider(**_guider_args(video_stg=0.0, audio_stg=0.0))


def test_presets_are_the_official_ones():
    one, hq = N.PRESETS["LTX-2.3 one-stage"], N.PRESETS["LTX-2.3 HQ stage 1"]
    assert (one[0].cfg, one[0].stg, one[0].stg_blocks, one[0].modality, one[0].rescale) == (3.0, 1.0, (28,), 3.0, 0.7)
    assert (one[1].cfg, one[1].rescale) == (7.0, 0.7)
    assert (hq[0].cfg, hq[0].stg, hq[0].modality, hq[0].rescale) == (3.0, 0.0, 3.0, 0.45)
    assert (hq[1].cfg, hq[1].rescale) == (7.0, 1.0)
