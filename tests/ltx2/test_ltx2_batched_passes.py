"""All guidance passes in one transformer call with per-sample switches (the ``"batched"`` strategy) against
ltx-core's own per-sample perturbations: ``LTXModel`` called once on a batch of four (cond, negative prompt,
STG, modality-isolated) with a ``BatchedPerturbationConfig``, holding exactly our weights (mapped through the
official key names, as ``bench/bench_ltx2.py`` does)."""

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from comfyui_cosmos3_ltx2.ltx2.latents import positions
from helpers.ltx_oracle import ltx_oracles_available
from helpers.measures import rel

pytestmark = pytest.mark.skipif(not ltx_oracles_available(), reason="ltx-core / ltx-pipelines not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

PER_ITEM = [{}, {}, {"skip_video_self_attn_blocks": (1,), "skip_audio_self_attn_blocks": (0, 1)},
            {"disable_a2v": True, "disable_v2a": True}]


@pytest.fixture(scope="module")
def models():
    import bench_ltx2 as B

    B.ltx_imports()
    a = B.parse_args(["--layers", "2", "--heads", "2", "--head-dim", "32", "--audio-head-dim", "16",
                      "--frames", "9", "--height", "128", "--width", "192", "--text-tokens", "12"])
    _, s1 = B.shapes(a)
    ours = B.build_ours(a)
    return a, s1, ours, B.build_reference(ours, a), B.make_inputs(a, s1, ours.config)


def _core_velocities(ref, s1, inputs, sigma, perturbation_configs):
    from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig
    from ltx_core.tools import AudioLatentTools, VideoLatentTools
    from ltx_core.types import AudioLatentShape, VideoLatentShape
    from ltx_pipelines.utils.helpers import modality_from_latent_state

    n = len(perturbation_configs)
    vtools = VideoLatentTools(VideoLatentPatchifier(1), VideoLatentShape(n, s1.video_channels, s1.frames, s1.height,
                                                                         s1.width), s1.fps)
    atools = AudioLatentTools(AudioPatchifier(patch_size=1),
                              AudioLatentShape(n, s1.audio_channels, s1.audio_frames, s1.mel_bins))
    vs = vtools.create_initial_state(torch.device("cpu"), torch.float32)
    as_ = atools.create_initial_state(torch.device("cpu"), torch.float32)
    vs = replace(vs, latent=inputs["video"].repeat(n, 1, 1))
    as_ = replace(as_, latent=inputs["audio"].repeat(n, 1, 1))
    vctx = torch.cat([inputs["neg_vctx"] if i == 1 else inputs["vctx"] for i in range(n)])
    actx = torch.cat([inputs["neg_actx"] if i == 1 else inputs["actx"] for i in range(n)])
    def modality(state, ctx):  # per-sample sigmas ([n]; a batch of one may use a scalar)
        m = modality_from_latent_state(state, ctx, torch.tensor(sigma, dtype=torch.float32))
        return replace(m, sigma=torch.full((n,), sigma, dtype=torch.float32))

    return ref(video=modality(vs, vctx), audio=modality(as_, actx),
               perturbations=BatchedPerturbationConfig(perturbations=perturbation_configs))


def _configs():
    from ltx_core.guidance.perturbations import Perturbation, PerturbationConfig
    from ltx_core.guidance.perturbations import PerturbationType as T

    return [PerturbationConfig.empty(), PerturbationConfig.empty(),
            PerturbationConfig([Perturbation(T.SKIP_VIDEO_SELF_ATTN, [1]), Perturbation(T.SKIP_AUDIO_SELF_ATTN, [0, 1])]),
            PerturbationConfig([Perturbation(T.SKIP_A2V_CROSS_ATTN, None), Perturbation(T.SKIP_V2A_CROSS_ATTN, None)])]


@torch.no_grad()
def test_per_sample_switches_match_ltx_core_in_one_call(models):

    a, s1, ours, ref, inputs = models
    sigma = 0.73
    want_v, want_a = _core_velocities(ref, s1, inputs, sigma, _configs())
    rope = positions(ours, replace(s1, batch=4))
    vctx = torch.cat([inputs["vctx"], inputs["neg_vctx"], inputs["vctx"], inputs["vctx"]])
    actx = torch.cat([inputs["actx"], inputs["neg_actx"], inputs["actx"], inputs["actx"]])
    got_v, got_a = ours(inputs["video"].repeat(4, 1, 1), inputs["audio"].repeat(4, 1, 1), vctx, actx, sigma,
                        rope=rope, per_item=PER_ITEM)
    for i in range(4):
        assert rel(got_v[i], want_v[i]) < 1e-5, (i, rel(got_v[i], want_v[i]))
        assert rel(got_a[i], want_a[i]) < 1e-5, (i, rel(got_a[i], want_a[i]))
    # the rows really differ (each switch does something), and each equals its own single-pass call
    assert min(rel(got_v[i], got_v[0]) for i in (1, 2, 3)) > 1e-3
    rope1 = positions(ours, s1)
    for i, switches in enumerate(PER_ITEM):
        v1, a1 = ours(inputs["video"], inputs["audio"], vctx[i:i + 1], actx[i:i + 1], sigma, rope=rope1, **switches)
        assert rel(got_v[i], v1[0]) < 1e-5 and rel(got_a[i], a1[0]) < 1e-5


def test_per_item_switches_are_checked(models):

    _, s1, ours, _, inputs = models
    rope = positions(ours, replace(s1, batch=2))
    x, ax = inputs["video"].repeat(2, 1, 1), inputs["audio"].repeat(2, 1, 1)
    vctx, actx = inputs["vctx"].repeat(2, 1, 1), inputs["actx"].repeat(2, 1, 1)
    with pytest.raises(ValueError, match="per_item has 3 entries"):
        ours(x, ax, vctx, actx, 0.5, rope=rope, per_item=[{}, {}, {}])
    with pytest.raises(ValueError, match="unknown per_item"):
        ours(x, ax, vctx, actx, 0.5, rope=rope, per_item=[{}, {"skip_blocks": (1,)}])
    with pytest.raises(ValueError, match="not both"):
        ours(x, ax, vctx, actx, 0.5, rope=rope, per_item=[{}, {}], disable_a2v=True)
