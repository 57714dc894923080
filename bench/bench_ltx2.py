"""LTX-2.3 HQ stage-1 step: our denoiser + res2s vs ltx-core / ltx-pipelines, same weights, same inputs, same run.

A benchmark, not a test: run it on demand. One step of the official HQ pipeline's first stage
(``TI2VidTwoStagesHQPipeline``, ltx-pipelines 1.0.0) is a res2s step over two sigmas of the stage-1
schedule: two guided evaluations (at sigma and at the midpoint), each with the passes cond, negative
(CFG 3 video / 7 audio) and modality-isolated (scale 3), STG off, rescale 0.45 / 1.0; then the res2s
update with SDE noise (and the bong refinement where the step is small).

It builds one random medium-size LTX-2.3 transformer (gated attention, cross-attention AdaLN, prompt
modulation) as our ``LTX2Transformer``, copies the same weights into ltx-core's own ``LTXModel`` through
the official key names (``ltx2.transformer.official_to_module_key``), and times:

* ``ltx-core``: ltx-core's ``LTXModel`` wrapped as ltx-core's ``X0Model``, ``MultiModalGuider`` x 2,
  ``multi_modal_guider_denoising_func`` and ``Res2sDiffusionStep`` inside ltx-pipelines'
  ``res2s_audio_video_denoising_loop`` over the 2 sigmas (states from ltx-core's ``VideoLatentTools`` /
  ``AudioLatentTools``, positions included; the official fixed SDE seeds -1 / 9999).
* ``ours-split`` / ``ours-batched``: ``ltx2.conditioning.ConditionedDenoiser`` with ``HQ_VIDEO_GUIDANCE`` /
  ``HQ_AUDIO_GUIDANCE`` (strategy "split": one call per pass, the HQ default; "batched": all passes in one
  call with per-sample switches, B=3 for cond, negative and modality) stepped by ``ltx2.sampling.stage1`` (``core.sampling.res2s.sample_res2s``) over the same 2 sigmas
  (``ltx2_sigmas``) with ``reference_noise_sampler`` (the official SDE seeds), so all sides compute the
  same numbers: the step outputs (video and audio) are compared with ltx-core's.

Both sides start from the same packed noise and prompt contexts (random, as from the text connectors; the
official flow passes ``context_mask=None``). The denoiser (our rotary tables) and ltx-core's latent states
are built once per stage in both pipelines, so they are built before timing; everything the pipelines do
per step is timed (ltx-core recomputes its rotary tables in every call, that is its own design).

Memory: on CUDA the allocator's peak during the step minus what was allocated before it. On CPU the exact
peak of live tensor bytes above the start (from the profiler's allocation records, warm-up run;
deterministic) and the process RSS high-water mark minus RSS before the step (one process holding both
models, so RSS is the noisier figure).

    python bench/bench_ltx2.py                       # medium random LTX-2.3, fp32, CPU (about 2 min, 2 cores)
    python bench/bench_ltx2.py --threads 1           # steadier on a shared machine
    python bench/bench_ltx2.py --profile ours        # + torch.profiler ops and a per-function profile
    python bench/bench_ltx2.py --device cuda --dtype bf16 --layers 16 --heads 16 \
        --frames 121 --height 1088 --width 1920 --text-tokens 1024
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.machinery
import importlib.util
import io
import os
import pstats
import sys
import time
import types
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # ltx-pipelines' loops draw progress bars (read at tqdm import)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MemProbe, add_report_args, count_ops, finish, mem_table, ops_table, sync, tensor_peak, weight_bytes  # noqa: E402
from common import med as _med
from common import ratio as _ratio
from common import trim_heap as _trim_heap

from comfyui_cosmos3_ltx2.ltx2.conditioning import ConditionedDenoiser, condition_first_frame
from comfyui_cosmos3_ltx2.ltx2.denoiser import HQ_AUDIO_GUIDANCE, HQ_VIDEO_GUIDANCE
from comfyui_cosmos3_ltx2.ltx2.latents import latent_shape, positions
from comfyui_cosmos3_ltx2.ltx2.sampling import half_shape, stage1

SIDES = ("ours-split", "ours-batched", "ltx-core")
REF = "ltx-core"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TARGET_TIME, TARGET_MEM = 0.8, 0.9  # the targets, ours / reference


# ---------------------------------------------------------------------------------------------- setup
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8, help="video and audio heads (LTX-2 needs them equal)")
    p.add_argument("--head-dim", type=int, default=128, help="video head width (video width = heads x this)")
    p.add_argument("--audio-head-dim", type=int, default=64, help="audio head width")
    p.add_argument("--latent-channels", type=int, default=128, help="video latent channels (real: 128)")
    p.add_argument("--audio-channels", type=int, default=8, help="audio latent channels (real: 8)")
    p.add_argument("--mel-bins", type=int, default=16, help="audio latent mel bins (real: 16)")
    p.add_argument("--frames", type=int, default=17, help="pixel frames of the full request (8k+1)")
    p.add_argument("--height", type=int, default=512, help="full-request height (multiple of 64); stage 1 is half")
    p.add_argument("--width", type=int, default=768, help="full-request width (multiple of 64); stage 1 is half")
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--text-tokens", type=int, default=128,
                   help="prompt context length, positive and negative alike (the official connectors give 1024)")
    p.add_argument("--schedule-steps", type=int, default=15, help="stage-1 schedule length (official HQ: 15)")
    p.add_argument("--step-index", type=int, default=0, help="which step of the schedule to run (0 = first)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side (after one warm-up run)")
    p.add_argument("--stg-block", type=int, default=None,
                   help="add the STG pass (scale 1, self-attention skipped in this block, both modalities) to the "
                        "HQ guidance on both sides, as the official one-stage preset does at block 28 of 48")
    p.add_argument("--i2v", action="store_true",
                   help="condition the first latent frame on an image latent (strength 1) on both sides")
    p.add_argument("--no-share-prefix", dest="share_prefix", action="store_false",
                   help="our STG pass recomputes the blocks before its perturbed block")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    p.add_argument("--profile", choices=("none", "ours", "all"), default="none",
                   help="after timing, profile one step (ours = ours-split and ours-batched)")
    add_report_args(p, "step")
    return p.parse_args(argv)


def transformer_config(a) -> dict:
    """diffusers ``LTX2VideoTransformer3DModel`` config of an LTX-2.3-style model (real layout, smaller)."""
    dim, adim = a.heads * a.head_dim, a.heads * a.audio_head_dim
    return dict(
        in_channels=a.latent_channels, out_channels=a.latent_channels, patch_size=1, patch_size_t=1,
        num_attention_heads=a.heads, attention_head_dim=a.head_dim, cross_attention_dim=dim,
        audio_in_channels=a.audio_channels * a.mel_bins, audio_out_channels=a.audio_channels * a.mel_bins,
        audio_num_attention_heads=a.heads, audio_attention_head_dim=a.audio_head_dim, audio_cross_attention_dim=adim,
        num_layers=a.layers, rope_type="split", rope_double_precision=True, rope_theta=10000.0,
        timestep_scale_multiplier=1000, cross_attn_timestep_scale_multiplier=1000, perturbed_attn=True,
        caption_channels=dim, use_prompt_embeddings=False,  # 2.3: the projection lives in the text connectors
        gated_attn=True, audio_gated_attn=True, cross_attn_mod=True, audio_cross_attn_mod=True,
    )


def official_config(cfg: dict) -> dict:
    """The same model as the official single-file config (ltx-core field names)."""
    return {"transformer": {
        "num_attention_heads": cfg["num_attention_heads"], "attention_head_dim": cfg["attention_head_dim"],
        "in_channels": cfg["in_channels"], "out_channels": cfg["out_channels"], "num_layers": cfg["num_layers"],
        "cross_attention_dim": cfg["cross_attention_dim"], "norm_eps": 1e-6,
        "positional_embedding_theta": cfg["rope_theta"], "positional_embedding_max_pos": [20, 2048, 2048],
        "timestep_scale_multiplier": cfg["timestep_scale_multiplier"], "use_middle_indices_grid": True,
        "audio_num_attention_heads": cfg["audio_num_attention_heads"],
        "audio_attention_head_dim": cfg["audio_attention_head_dim"],
        "audio_in_channels": cfg["audio_in_channels"], "audio_out_channels": cfg["audio_out_channels"],
        "audio_cross_attention_dim": cfg["audio_cross_attention_dim"], "audio_positional_embedding_max_pos": [20],
        "av_ca_timestep_scale_multiplier": cfg["cross_attn_timestep_scale_multiplier"],
        "rope_type": cfg["rope_type"], "frequencies_precision": "float64" if cfg["rope_double_precision"] else "float32",
        "apply_gated_attention": cfg["gated_attn"], "cross_attention_adaln": cfg["cross_attn_mod"],
        "caption_proj_before_connector": True,  # LTX-2.3: no caption projection inside the transformer
        # fixed values the official configurator checks (as in the released checkpoints' metadata)
        "dropout": 0.0, "attention_bias": True, "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000,
        "use_linear_projection": False, "only_cross_attention": False, "cross_attention_norm": True,
        "double_self_attention": False, "upcast_attention": False, "standardization_norm": "rms_norm",
        "norm_elementwise_affine": False, "qk_norm": "rms_norm", "positional_embedding_type": "rope",
        "use_audio_video_cross_attention": True, "share_ff": False, "av_cross_ada_norm": True,
    }}


def ltx_imports() -> None:
    """ltx-core / ltx-pipelines 1.0.0 on CPU torch: an empty torchaudio (only their audio encoder front end
    needs it) and a no-op ``torch.cuda.synchronize`` when CUDA is absent (the pipelines call it
    unconditionally; the step loop itself does not, but helpers do)."""
    for mod in ("ltx_core", "ltx_pipelines"):
        if importlib.util.find_spec(mod) is None:
            raise SystemExit(f"{mod} is not installed (pip install --no-deps ltx-core ltx-pipelines==1.0.0)")
    if importlib.util.find_spec("torchaudio") is None and "torchaudio" not in sys.modules:
        stub = types.ModuleType("torchaudio")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stub
    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *args, **kwargs: None


def shapes(a):
    """(full-request LatentShape, stage-1 LatentShape)."""

    if (a.height % 64) or (a.width % 64):
        raise SystemExit("--height/--width must be multiples of 64 (stage 1 runs at half the latent size)")
    full = latent_shape(a.frames, a.height, a.width, a.fps, video_channels=a.latent_channels,
                          audio_channels=a.audio_channels, mel_bins=a.mel_bins)
    return full, half_shape(full)


def build_ours(a):
    """Our transformer with random weights (fp32 on the CPU, then moved)."""
    from comfyui_cosmos3_ltx2.ltx2.transformer import LTX2Transformer

    torch.manual_seed(a.seed)
    model = LTX2Transformer(transformer_config(a)).eval()
    g = torch.Generator().manual_seed(a.seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm_q.weight", "norm_k.weight")):
                p.copy_(0.75 + 0.5 * torch.rand(p.shape, generator=g))
            elif "scale_shift_table" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5)
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def build_reference(ours, a):
    """ltx-core's ``LTXModel`` holding exactly our weights, mapped through the official key names."""
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    from comfyui_cosmos3_ltx2.ltx2.transformer import official_to_module_key

    ref = LTXModelConfigurator.from_config(official_config(ours.config)).eval()
    src = ours.state_dict()
    want = ref.state_dict()
    mapped, used = {}, set()
    for key, t in want.items():
        mk = official_to_module_key("model.diffusion_model." + key)
        if mk is None or mk not in src:
            raise SystemExit(f"weight map: official key {key!r} -> {mk!r} has no tensor in our model")
        if tuple(src[mk].shape) != tuple(t.shape):
            raise SystemExit(f"weight map: {key} {tuple(t.shape)} vs ours {mk} {tuple(src[mk].shape)}")
        mapped[key] = src[mk]
        used.add(mk)
    left = set(src) - used
    if left:
        raise SystemExit(f"weight map: {len(left)} of our tensors have no official key, e.g. {sorted(left)[:3]}")
    ref.load_state_dict(mapped, strict=True)
    return ref


def make_inputs(a, s1, cfg) -> dict:
    """Start noise at stage-1 size (packed, float32, on the CPU) and random prompt contexts."""
    g = torch.Generator().manual_seed(a.seed + 2)
    dim, adim = cfg["cross_attention_dim"], cfg["audio_cross_attention_dim"]
    n = a.text_tokens
    return dict(
        video=torch.randn(s1.video_packed, generator=g), audio=torch.randn(s1.audio_packed, generator=g),
        vctx=torch.randn(1, n, dim, generator=g), actx=torch.randn(1, n, adim, generator=g),
        neg_vctx=torch.randn(1, n, dim, generator=g), neg_actx=torch.randn(1, n, adim, generator=g),
        image=torch.randn(1, s1.video_channels, 1, s1.height, s1.width, generator=g) if a.i2v else None,
    )


def schedule_slice(a, s1) -> list[float]:
    """Two sigmas of the stage-1 schedule (the step ``--step-index``); checked against ltx-core's scheduler."""
    from ltx_core.components.schedulers import LTX2Scheduler

    from comfyui_cosmos3_ltx2.core.sampling.ltx_schedule import ltx2_sigmas

    ours = ltx2_sigmas(a.schedule_steps, tokens=s1.video_tokens)
    ref = LTX2Scheduler().execute(latent=torch.empty(s1.video_5d), steps=a.schedule_steps).to(torch.float32)
    if ref.tolist() != ours:
        raise SystemExit(f"stage-1 schedules differ: ours {ours} vs ltx-core {ref.tolist()}")
    if not 0 <= a.step_index < a.schedule_steps:
        raise SystemExit(f"--step-index must lie in [0, {a.schedule_steps})")
    return ours[a.step_index:a.step_index + 2]


# ---------------------------------------------------------------------------------------------- sides
def guidance(a) -> tuple:
    """HQ guidance per modality, plus the STG pass with ``--stg-block``."""

    gs = (HQ_VIDEO_GUIDANCE, HQ_AUDIO_GUIDANCE)
    if a.stg_block is None:
        return gs
    return tuple(replace(g, stg=1.0, stg_blocks=(a.stg_block,)) for g in gs)


class Ours:
    """``ConditionedDenoiser`` (HQ guidance) + ``hq.stage1`` (res2s) over the 2 sigmas."""

    def __init__(self, a, model, s1, inputs: dict, sigmas: list[float], strategy: str):

        self.name = f"ours-{strategy}"
        self.device = torch.device(a.device)
        self.model = model
        d, dt = self.device, DTYPES[a.dtype]
        self.rope = positions(model, s1, d)  # built once per stage (run_hq does the same)
        self.condition = None
        if inputs["image"] is not None:
            _, self.condition = condition_first_frame(torch.zeros(s1.video_packed, device=d),
                                                         inputs["image"].to(d), s1)
        self.denoiser = ConditionedDenoiser(
            model, inputs["vctx"].to(d, dt), inputs["actx"].to(d, dt), None,
            inputs["neg_vctx"].to(d, dt), inputs["neg_actx"].to(d, dt), None, rope=self.rope,
            video=guidance(a)[0], audio=guidance(a)[1], strategy=strategy, condition=self.condition,
            blend=False, share_prefix=a.share_prefix)
        # run_hq keeps the noise (and so the res2s state between steps) in float32 whatever the model dtype
        self.video, self.audio = inputs["video"].to(d), inputs["audio"].to(d)
        self.sigmas = sigmas
        self.weights = weight_bytes(model)
        self.persistent = sum(t.nbytes for pair in self.rope for t in pair)

    @torch.no_grad()
    def run(self):
        from comfyui_cosmos3_ltx2.core.sampling.res2s import reference_noise_sampler

        return stage1(self.denoiser, self.video, self.audio, self.sigmas,
                         noise_sampler=reference_noise_sampler(self.device), condition=self.condition)


class Reference:
    """ltx-pipelines' ``res2s_audio_video_denoising_loop`` with ``multi_modal_guider_denoising_func`` over
    ltx-core's ``X0Model(LTXModel)``, as ``TI2VidTwoStagesHQPipeline`` runs its first stage."""

    name = REF

    def __init__(self, a, model, s1, inputs: dict, sigmas: list[float]):
        from ltx_core.components.guiders import MultiModalGuiderParams
        from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
        from ltx_core.model.transformer.model import X0Model
        from ltx_core.tools import AudioLatentTools, VideoLatentTools
        from ltx_core.types import AudioLatentShape, VideoLatentShape

        self.device, self.dtype = torch.device(a.device), DTYPES[a.dtype]
        d, dt = self.device, self.dtype
        self.x0 = X0Model(model)
        vtools = VideoLatentTools(VideoLatentPatchifier(1), VideoLatentShape(1, s1.video_channels, s1.frames, s1.height,
                                                                             s1.width), s1.fps)
        atools = AudioLatentTools(AudioPatchifier(patch_size=1),
                                  AudioLatentShape(1, s1.audio_channels, s1.audio_frames, s1.mel_bins))
        # states as the pipeline's noiser leaves them: latent = noise (scale 1), state in the model dtype.
        # Positions stay float32 (the shipped pipeline casts them to its bf16 state dtype, quirk Q10).
        vs = vtools.create_initial_state(d, torch.float32)
        as_ = atools.create_initial_state(d, torch.float32)
        assert vs.latent.shape == inputs["video"].shape and as_.latent.shape == inputs["audio"].shape
        if inputs["image"] is not None:  # frame-0 latent replaced (mask 0 there), then the noiser's blend
            from ltx_core.conditioning import VideoConditionByLatentIndex

            vs = VideoConditionByLatentIndex(latent=inputs["image"].to(d), strength=1.0, latent_idx=0).apply_to(vs, vtools)
            noised = inputs["video"].to(d) * vs.denoise_mask + vs.latent * (1 - vs.denoise_mask)
            self.video_state = replace(vs, latent=noised.to(dt), clean_latent=vs.clean_latent.to(dt))
        else:
            self.video_state = replace(vs, latent=inputs["video"].to(d, dt), clean_latent=vs.clean_latent.to(dt))
        self.audio_state = replace(as_, latent=inputs["audio"].to(d, dt), clean_latent=as_.clean_latent.to(dt))
        self.ctx = tuple(inputs[k].to(d, dt) for k in ("vctx", "actx", "neg_vctx", "neg_actx"))

        def params(g):
            return MultiModalGuiderParams(cfg_scale=g.cfg, stg_scale=g.stg, stg_blocks=list(g.stg_blocks),
                                          rescale_scale=g.rescale, modality_scale=g.modality, skip_step=0)

        self.params = tuple(params(g) for g in guidance(a))
        self.sigmas = torch.tensor(sigmas, dtype=torch.float32).to(d)  # the pipeline's float32 device schedule
        self.weights = weight_bytes(model)
        self.persistent = 0

    @torch.no_grad()
    def run(self):
        from ltx_core.components.diffusion_steps import Res2sDiffusionStep
        from ltx_core.components.guiders import MultiModalGuider
        from ltx_pipelines.utils.helpers import multi_modal_guider_denoising_func
        from ltx_pipelines.utils.samplers import res2s_audio_video_denoising_loop

        vc, ac, nvc, nac = self.ctx
        den = multi_modal_guider_denoising_func(
            video_guider=MultiModalGuider(params=self.params[0], negative_context=nvc),
            audio_guider=MultiModalGuider(params=self.params[1], negative_context=nac),
            v_context=vc, a_context=ac, transformer=self.x0)
        vs, as_ = res2s_audio_video_denoising_loop(
            sigmas=self.sigmas, video_state=self.video_state, audio_state=self.audio_state,
            stepper=Res2sDiffusionStep(), denoise_fn=den, model_dtype=self.dtype)
        return vs.latent, as_.latent


# ---------------------------------------------------------------------------------------------- measuring
def measure(sides: list, a) -> dict:
    """Warm-up once, then ``repeats`` timed steps per side, interleaved so drift hits every side alike."""
    device = torch.device(a.device)
    probe = MemProbe(device)
    res = {s.name: dict(times=[], cpu=[], act=[], peak=[], weights=s.weights, persistent=s.persistent)
           for s in sides}
    for s in sides:  # warm-up; also the run whose outputs are compared, and (CPU) the tensor-level peak
        if device.type == "cpu" and a.tensor_peak:
            out, res[s.name]["tensor_peak"] = tensor_peak(s.run)
        else:
            out = s.run()
        res[s.name]["out"] = tuple(o.float().cpu() for o in out)
        if a.op_count:
            _, res[s.name]["ops"] = count_ops(s.run)
    for _ in range(a.repeats):
        for s in sides:
            probe.start()
            c0, t0 = time.process_time(), time.perf_counter()
            s.run()
            sync(device)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            mem = probe.stop()
            r = res[s.name]
            r["times"].append(dt)
            r["cpu"].append(dc)
            if mem is not None:
                r["act"].append(mem[0])
                r["peak"].append(mem[1])
    _trim_heap()
    return res


def profile_side(side, a) -> str:
    """torch.profiler top ops of one step, and a cProfile view: the Python functions whose own lines
    (and the torch ops they call directly) take the time, with file:line."""
    from torch.profiler import ProfilerActivity, profile

    cuda = a.device.startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    side.run()  # untimed: the allocator's heap in the same (warm) state for every side profiled
    sync(torch.device(a.device))
    with profile(activities=acts, record_shapes=True) as prof:
        side.run()
        sync(torch.device(a.device))
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    by_op = prof.key_averages().table(sort_by=key, row_limit=a.profile_rows, max_name_column_width=40)
    by_shape = prof.key_averages(group_by_input_shape=True).table(
        sort_by=key, row_limit=a.profile_rows, max_name_column_width=40, max_shapes_column_width=70)

    cp = cProfile.Profile()
    cp.enable()
    side.run()
    sync(torch.device(a.device))
    cp.disable()
    st = pstats.Stats(cp, stream=io.StringIO())
    total = max(st.total_tt, 1e-9)
    # own time of each Python function plus the time of the builtins (torch ops) it calls directly
    own: dict = {}
    for func, (_cc, _nc, tt, ct, callers) in st.stats.items():
        if func[0] == "~":  # builtin: charge it to its callers
            for caller, (_c, _n, ctt, _cct) in callers.items():
                own[caller] = own.get(caller, 0.0) + ctt
        else:
            own[func] = own.get(func, 0.0) + tt
    cum = {f: v[3] for f, v in st.stats.items()}

    def where(f):
        path, line, name = f
        for root in ("comfyui_cosmos3_ltx2", "ltx_core", "ltx_pipelines", "torch"):
            i = path.find(os.sep + root + os.sep)
            if i >= 0:
                return f"{path[i + 1:]}:{line} {name}"
        main = str(Path(__file__).resolve().parent.parent)
        if path.startswith(main):
            return f"{os.path.relpath(path, main)}:{line} {name}"
        return f"{os.path.basename(path)}:{line} {name}"

    rows = sorted(own.items(), key=lambda kv: -kv[1])[:a.profile_rows]
    lines = [f"{'own+direct ops s':>16} {'%':>5} {'cumulative s':>12}  function"]
    for f, t in rows:
        lines.append(f"{t:16.3f} {100 * t / total:5.1f} {cum.get(f, 0.0):12.3f}  {where(f)}")
    pkg = str(Path(__file__).resolve().parent.parent) + os.sep  # this checkout (the editable install's root)
    ours = sorted(((f, c) for f, c in cum.items()
                   if f[0] != "~" and (f[0].startswith(pkg) or os.sep + "comfyui_cosmos3_ltx2" + os.sep in f[0])
                   and not f[0].startswith(pkg + "bench" + os.sep)),
                  key=lambda kv: -kv[1])[:a.profile_rows]
    lines += ["", f"{'cumulative s':>12} {'%':>5}  function (our package only)"]
    for f, c in ours:
        lines.append(f"{c:12.3f} {100 * c / total:5.1f}  {where(f)}")
    return (f"-- by op --\n{by_op}\n-- by op and input shapes --\n{by_shape}\n"
            f"-- by Python function (cProfile, one more step; total {total:.2f} s with profiling overhead) --\n"
            + "\n".join(lines))


# ---------------------------------------------------------------------------------------------- report
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def report(a, res: dict, info: dict) -> str:
    mb = 1 / 2**20
    cuda = a.device.startswith("cuda")
    names = [n for n in a.sides if n in res]
    ref = res.get(REF)
    cfg = info["config"]
    s1 = info["s1"]
    lines = [
        f"LTX-2.3 HQ stage-1 step benchmark | torch {torch.__version__} | device {a.device} | dtype {a.dtype} | "
        f"threads {torch.get_num_threads()} | one process",
        f"model: random LTX-2.3 layout, {a.layers} layers, video {a.heads} x {a.head_dim} = "
        f"{cfg['num_attention_heads'] * cfg['attention_head_dim']} wide, audio {a.heads} x {a.audio_head_dim} = "
        f"{cfg['audio_num_attention_heads'] * cfg['audio_attention_head_dim']} wide, gated attention, "
        f"cross-attention AdaLN + prompt modulation; {info['params'] / 1e6:.0f} M parameters",
        f"request {a.frames} f {a.height}x{a.width} @ {a.fps:g} fps -> stage 1 latent {s1.frames}x{s1.height}x"
        f"{s1.width} = {s1.video_tokens} video tokens x {s1.video_channels} ch, {s1.audio_frames} audio tokens x "
        f"{s1.audio_channels * s1.mel_bins}; prompt / negative contexts {a.text_tokens} tokens",
        f"step: res2s step {a.step_index} of the {a.schedule_steps}-step stage-1 schedule, sigma "
        f"{info['sigmas'][0]:.6f} -> {info['sigmas'][1]:.6f} (h {info['h']:.4f}, bong refinement "
        f"{'on' if info['bong'] else 'off'}); "
        + ("2 guided evaluations x 3 passes (cond, negative, modality) = 6 transformer passes"
           if info["sigmas"][1] > 0 else
           "last step: 2 guided evaluations to the terminal sigma, then the final denoise = 9 transformer passes")
        + ("; first latent frame conditioned on an image (per-token timesteps)" if a.i2v else "")
        + ("" if a.stg_block is None else
           f"; plus the STG pass (self-attention skipped in block {a.stg_block}; ours "
           f"{'starts it from the cond pass at that block' if a.share_prefix else 'recomputes every block'})")
        + "; SDE noise with the official seeds",
        f"run: 1 warm-up + {a.repeats} timed steps per side, interleaved; median / min / max",
    ]
    if info.get("load"):
        lines.append(f"machine: {os.cpu_count()} CPUs, 1-min load average {info['load'][0]:.1f} at start, "
                     f"{info['load'][1]:.1f} at end (other work inflates and scatters CPU times: compare mins)")

    head = f"{'time/step s':<13} {'median':>8} {'min':>8} {'max':>8} {'x ref med':>10} {'x ref min':>10}"
    if not cuda:
        head += f" {'CPU s med':>10} {'x ref':>6}"
    lines += ["", head, "-" * len(head)]
    for n in names:
        ts = res[n]["times"]
        rt = ref["times"] if ref else []
        row = (f"{n:<13} {_med(ts):8.3f} {min(ts):8.3f} {max(ts):8.3f} "
               f"{_ratio(_med(ts), _med(rt) if rt else None):>10} {_ratio(min(ts), min(rt) if rt else None):>10}")
        if not cuda:
            rc = ref["cpu"] if ref else []
            row += f" {_med(res[n]['cpu']):10.3f} {_ratio(_med(res[n]['cpu']), _med(rc) if rc else None):>6}"
        lines.append(row)
    if not cuda:
        lines.append("wall-clock per step; CPU s: process CPU time per step (all threads; less sensitive to other "
                     "processes on a shared machine, best with --threads 1)")

    lines += mem_table(a, names, res, ref, "x ref", ("held", 6, lambda n: f"{res[n]['persistent'] * mb:.1f}"),
                       "a step", "one process holding both models")
    lines.append("held: tensors built once per stage before the steps (our rotary tables; ltx-core rebuilds its own "
                 "in every transformer call, inside the step)")
    lines += ops_table(names, res, REF, 1)
    if ref is not None:
        lines.append("")
        for n in names:
            if n == REF:
                continue
            rv = _rel(res[n]["out"][0], ref["out"][0])
            ra = _rel(res[n]["out"][1], ref["out"][1])
            lines.append(f"parity {n}: max |ours - ltx-core| / max |ltx-core| after the step: "
                         f"video {rv:.2e}, audio {ra:.2e}")
        lines.append("")
        for n in names:
            if n == REF or not res[n]["times"]:
                continue
            tr = _med(res[n]["times"]) / _med(ref["times"])
            tm = res[n].get("tensor_peak") if not cuda else _med(res[n]["act"])
            rm = ref.get("tensor_peak") if not cuda else _med(ref["act"])
            mr = tm / rm if tm is not None and rm else None
            cpu_part = ""
            if not cuda and res[n]["cpu"] and ref["cpu"]:
                cr = _med(res[n]["cpu"]) / _med(ref["cpu"])
                cpu_part = f" / CPU time {cr:.3f}x ({'meets' if cr <= TARGET_TIME else 'misses'})"
            lines.append(
                f"target {n}: wall time {tr:.3f}x ({'meets' if tr <= TARGET_TIME else 'misses'} <= {TARGET_TIME}x)"
                f"{cpu_part}, "
                + (f"memory {mr:.3f}x ({'meets' if mr <= TARGET_MEM else 'misses'} <= {TARGET_MEM}x)"
                   if mr is not None else "memory -"))
    return "\n".join(lines)


def main(argv=None) -> None:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    ltx_imports()

    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    _, s1 = shapes(a)
    sigmas = schedule_slice(a, s1)
    device, dtype = torch.device(a.device), DTYPES[a.dtype]
    ours_model = build_ours(a)
    ref_model = build_reference(ours_model, a)
    ours_model.to(device, dtype)
    ref_model.to(device, dtype)
    inputs = make_inputs(a, s1, ours_model.config)
    from comfyui_cosmos3_ltx2.core.sampling.res2s import RES2S_TERMINAL_SIGMA

    target = sigmas[1] if sigmas[1] > 0 else RES2S_TERMINAL_SIGMA  # a schedule's last step runs to the terminal
    h = float(-torch.log(torch.tensor(target, dtype=torch.float64) / sigmas[0]))
    info = dict(config=ours_model.config, s1=s1, sigmas=sigmas, h=h, bong=h < 0.5 and sigmas[0] > 0.03,
                params=sum(p.numel() for p in ours_model.parameters()))
    sides = []
    for name in a.sides:
        if name == REF:
            sides.append(Reference(a, ref_model, s1, inputs, sigmas))
        else:
            sides.append(Ours(a, ours_model, s1, inputs, sigmas, name.split("-", 1)[1]))
    gc.collect()
    res = measure(sides, a)
    profiles = {}
    for s in sides:
        if a.profile == "all" or (a.profile == "ours" and s.name.startswith("ours")):
            profiles[s.name] = profile_side(s, a)
    if load0 is not None:
        info["load"] = (load0, os.getloadavg()[0])
    finish(a, res, report(a, res, info), profiles, "profile of one step of {name}", "out")


if __name__ == "__main__":
    main()
