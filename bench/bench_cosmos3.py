"""Cosmos3 denoising step: our transformer + sampler vs diffusers, same weights, same inputs, same run.

A benchmark, not a test: run it on demand. It builds one random medium-size Cosmos3 transformer,
saves it in the diffusers format and loads it twice:

* diffusers: ``Cosmos3OmniTransformer`` (built from the saved config, strict state dict, float32-kept
  modules as ``from_pretrained`` keeps them) driven exactly as ``Cosmos3OmniPipeline.__call__`` drives it
  per denoising step: a cond and an uncond forward (each re-runs the text/UND path), the
  velocity masking and float32 cast, ``u + g * (c - u)``, then ``UniPCMultistepScheduler.step``. The
  static packing the pipeline hoists out of its loop is built once, with the pipeline's own helpers.
* ours: ``cosmos3.loader.load_transformer``; both prompts are encoded once (``encode_text``) before
  timing, a ``FlowDenoiser`` is built once, and ``core.sampling.sample_unipc`` runs the steps, in both
  CFG modes (``batched_cfg=True``: one B=2 call; ``False``: two B=1 calls).

Both sides run the same number of UniPC steps from the same noise; the printed time is per step (total
/ steps, median over repeats after a warm-up). The final latents of each of our modes are compared with
diffusers' (max |ours - ref| / max |ref|): a timing of different math would be worthless.

Memory: on CUDA the allocator's peak during the run minus the memory allocated before it (and the
absolute peak, weights included). On CPU the process RSS high-water mark (VmHWM, reset through
/proc/self/clear_refs) minus the RSS before the run, after ``gc.collect()`` and ``malloc_trim`` so that
freed heap pages of earlier runs do not hide new allocations; also, on CPU, the exact peak of live tensor
bytes from the profiler's allocation records (deterministic, unlike RSS). ``--isolate`` runs each side in
its own subprocess, so a side's RSS holds only its own model.

    python bench/bench_cosmos3.py                      # medium config, fp32, CPU
    python bench/bench_cosmos3.py --device cuda --dtype bf16 --layers 16 --frames 93 --height 480 --width 832
    python bench/bench_cosmos3.py --profile ours       # + torch.profiler top ops of our two CFG modes
    python bench/bench_cosmos3.py --dtype bf16         # + distance of each bf16 run from the fp32 reference
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (MemProbe, add_report_args, count_ops, finish, med as _med, mem_table,  # noqa: E402
                    ops_table, ratio as _ratio, status_kb as _status_kb, sync, tensor_peak,
                    trim_heap as _trim_heap, weight_bytes)

SIDES = ("ours-batched", "ours-serial", "diffusers")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------- setup
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--rope-axes", type=int, nargs=3, default=[12, 10, 10], help="mRoPE sections (sum = head_dim/2)")
    p.add_argument("--vocab", type=int, default=2048, help="small so the embedding does not dominate the weights")
    p.add_argument("--frames", type=int, default=33, help="pixel frames (4k+1)")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--prompt-tokens", type=int, default=200, help="cond prompt length incl. chat/templates")
    p.add_argument("--negative-tokens", type=int, default=60,
                   help="uncond length (the pipeline's default empty negative prompt + system prompt + "
                        "negated templates is ~60 Qwen tokens); unequal lengths exercise the padded batched CFG")
    p.add_argument("--steps", type=int, default=4, help="UniPC steps per timed run")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per side (after one warm-up run)")
    p.add_argument("--guidance", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    p.add_argument("--isolate", action="store_true", help="run each side in its own subprocess")
    p.add_argument("--profile", choices=("none", "ours", "all"), default="none",
                   help="print torch.profiler top ops of one run (ours = ours-batched and ours-serial)")
    add_report_args(p, "run")
    # internal: one side in a subprocess
    p.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def model_config(a) -> dict:
    return dict(
        hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads, head_dim=a.head_dim, intermediate_size=a.intermediate,
        rope_axes_dim=list(a.rope_axes), vocab_size=a.vocab,
    )


def latent_thw(a) -> tuple[int, int, int]:
    if (a.frames - 1) % 4 or a.height % 16 or a.width % 16:
        raise SystemExit("--frames must be 4k+1 and --height/--width multiples of 16")
    return (a.frames - 1) // 4 + 1, a.height // 16, a.width // 16


def scheduler_config() -> dict:
    from comfyui_cosmos3_ltx2.cosmos3.tiny import SCHEDULER_CONFIG

    return {k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")}


def write_checkpoint(a, folder: Path) -> None:
    """A random diffusers-format transformer folder (fp32), norms and biases moved off their init values."""
    from diffusers import Cosmos3OmniTransformer

    torch.manual_seed(a.seed)
    model = Cosmos3OmniTransformer(**model_config(a)).eval()
    g = torch.Generator().manual_seed(a.seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:  # norm weights (ones) and biases (zeros)
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    model.save_pretrained(str(folder))


def make_inputs(a) -> dict:
    """Random prompt ids (the UND path's cost depends on the length, not on the text) and the start noise."""
    g = torch.Generator().manual_seed(a.seed + 2)
    t, h, w = latent_thw(a)
    return dict(
        cond_ids=torch.randint(0, a.vocab, (a.prompt_tokens,), generator=g),
        uncond_ids=torch.randint(0, a.vocab, (a.negative_tokens,), generator=g),
        noise=torch.randn(1, 48, t, h, w, generator=torch.Generator().manual_seed(a.seed + 3)),
    )


class Diffusers:
    """The per-step work of ``Cosmos3OmniPipeline.__call__`` (vision only, no sound/action)."""

    name = "diffusers"

    def __init__(self, a, ckpt: Path, inputs: dict):
        from diffusers import Cosmos3OmniPipeline, Cosmos3OmniTransformer, UniPCMultistepScheduler

        self.device, self.dtype = torch.device(a.device), DTYPES[a.dtype]
        # from_pretrained refuses to load this model without `accelerate` (_keep_in_fp32_modules); do what it does
        # by hand: config -> model, strict state dict, everything in the dtype but the float32-kept modules.
        from safetensors.torch import load_file

        self.model = Cosmos3OmniTransformer.from_config(Cosmos3OmniTransformer.load_config(str(ckpt))).eval()
        self.model.load_state_dict(load_file(str(ckpt / "diffusion_pytorch_model.safetensors")), strict=True)
        from diffusers.utils import logging as dlogging

        level = dlogging.get_verbosity()
        dlogging.set_verbosity_error()  # the "should be kept in float32" warning: handled just below
        self.model.to(self.device, self.dtype)
        dlogging.set_verbosity(level)
        for name in getattr(self.model, "_keep_in_fp32_modules", None) or ():
            getattr(self.model, name).float()
        self.scheduler = UniPCMultistepScheduler(**scheduler_config())
        self.steps, self.guidance = a.steps, a.guidance
        self.mask_velocity = Cosmos3OmniPipeline._mask_velocity_predictions
        # The static packs, built with the pipeline's own methods (they read only .transformer.config and
        # .vae_scale_factor_temporal from the pipeline).
        shim = types.SimpleNamespace(transformer=self.model, vae_scale_factor_temporal=4)
        probe = inputs["noise"]
        self.packs = []
        for ids in (inputs["cond_ids"], inputs["uncond_ids"]):
            text = Cosmos3OmniPipeline._prepare_text_segment(shim, ids.tolist(), self.device)
            vis = Cosmos3OmniPipeline._prepare_vision_segment(
                shim, input_vision_tokens=probe, has_image_condition=False,
                mrope_offset=text["vision_start_temporal_offset"], vision_fps=a.fps, curr=text["und_len"],
                device=self.device, condition_frame_indexes=[],
            )
            self.packs.append(dict(
                input_ids=text["input_ids"], text_indexes=text["text_indexes"],
                position_ids=torch.cat([text["text_mrope_ids"], vis["vision_mrope_ids"]], dim=1),
                und_len=text["und_len"], sequence_length=text["und_len"] + vis["num_vision_tokens"],
                vision_token_shapes=vis["vision_token_shapes"], vision_sequence_indexes=vis["vision_sequence_indexes"],
                vision_mse_loss_indexes=vis["vision_mse_loss_indexes"],
                vision_noisy_frame_indexes=vis["vision_noisy_frame_indexes"],
            ))
            self.num_noisy = vis["num_noisy_vision_tokens"]
        self.condition_mask = torch.zeros((probe.shape[2], 1, 1), device=self.device, dtype=torch.float32)
        self.weights = weight_bytes(self.model)

    def reset(self) -> None:
        # Before the pipeline's loop (untimed): set_timesteps also clears the multistep history.
        self.scheduler.set_timesteps(self.steps, device=self.device)

    @torch.no_grad()
    def run(self, noise: torch.Tensor) -> torch.Tensor:
        latents = noise.to(self.device, torch.float32)  # sampling dtype of the pipeline
        timesteps = self.scheduler.timesteps
        n = len(timesteps)
        for i, t in enumerate(timesteps):
            sigma = float(self.scheduler.sigmas[i])
            timestep = t.item()
            vision_tokens = latents.to(device=self.device, dtype=self.dtype)
            vision_timesteps = torch.full((self.num_noisy,), timestep, device=self.device)
            velocities = []
            for label, pack in zip(("cond", "uncond"), self.packs):
                with self.model.cache_context(label, step_index=i, sigma=sigma, num_inference_steps=n):
                    preds, _, _ = self.model(**pack, vision_tokens=[vision_tokens], vision_timesteps=vision_timesteps,
                                             return_dict=False)
                v, _, _ = self.mask_velocity(preds, None, vision_condition_mask=[self.condition_mask])
                velocities.append(v)
            cond, uncond = (v.float() for v in velocities)
            velocity = uncond + self.guidance * (cond - uncond)
            latents = self.scheduler.step(velocity.unsqueeze(0), t, latents.unsqueeze(0), return_dict=False)[0]
            latents = latents.squeeze(0)
        return latents


class Ours:
    """Our transformer with cached prompt keys/values, FlowDenoiser (CFG) and sample_unipc."""

    def __init__(self, a, ckpt: Path, inputs: dict, batched: bool):
        from comfyui_cosmos3_ltx2.cosmos3.loader import load_transformer
        from comfyui_cosmos3_ltx2.cosmos3.pipeline import Cosmos3Conditioning, FlowDenoiser, make_schedule

        self.name = "ours-batched" if batched else "ours-serial"
        self.device = torch.device(a.device)
        self.model = load_transformer(ckpt, device=self.device, dtype=a.dtype)
        sched = scheduler_config()
        self.schedule = make_schedule(a.steps, sched)
        self.solver = dict(order=sched["solver_order"], solver_type=sched["solver_type"],
                           lower_order_final=sched["lower_order_final"])
        # Once per prompt, before sampling (the point of the design): UND keys/values.
        cond = self.model.encode_text(inputs["cond_ids"].to(self.device))
        uncond = self.model.encode_text(inputs["uncond_ids"].to(self.device))
        self.denoiser = FlowDenoiser(
            self.model, Cosmos3Conditioning(cond, uncond, a.fps), latent_batch=1, latent_thw=latent_thw(a),
            condition_frames=[], schedule=self.schedule, guidance=a.guidance, batched_cfg=batched,
        )
        self.weights = weight_bytes(self.model)

    def reset(self) -> None:
        pass

    @torch.no_grad()
    def run(self, noise: torch.Tensor) -> torch.Tensor:
        from comfyui_cosmos3_ltx2.core.sampling import sample_unipc

        return sample_unipc(self.denoiser, noise.to(self.device, torch.float32), self.schedule.sigmas, **self.solver)


def build_side(name: str, a, ckpt: Path, inputs: dict):
    if name == "diffusers":
        return Diffusers(a, ckpt, inputs)
    return Ours(a, ckpt, inputs, batched=name == "ours-batched")


# ---------------------------------------------------------------------------------------------- measuring
def measure(sides: list, noise: torch.Tensor, a) -> dict:
    """Warm-up once, then ``repeats`` timed runs per side, interleaved so drift hits every side alike."""
    device = torch.device(a.device)
    probe = MemProbe(device)
    res = {s.name: dict(times=[], act=[], peak=[], weights=s.weights) for s in sides}
    for s in sides:  # warm-up; also the run whose latents are compared, and (CPU) the tensor-level peak
        s.reset()
        if device.type == "cpu" and a.tensor_peak:
            out, res[s.name]["tensor_peak"] = tensor_peak(lambda: s.run(noise))
        else:
            out = s.run(noise)
        res[s.name]["latents"] = out.float().cpu()
        if a.op_count:
            s.reset()
            _, res[s.name]["ops"] = count_ops(lambda: s.run(noise))
    for _ in range(a.repeats):
        for s in sides:
            s.reset()
            probe.start()
            t0 = time.perf_counter()
            s.run(noise)
            sync(device)
            dt = time.perf_counter() - t0
            mem = probe.stop()
            r = res[s.name]
            r["times"].append(dt / a.steps)
            if mem is not None:
                r["act"].append(mem[0])
                r["peak"].append(mem[1])
    _trim_heap()
    return res


def profile_side(side, noise: torch.Tensor, a) -> str:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device.startswith("cuda") else [])
    side.reset()
    with profile(activities=acts, record_shapes=True) as prof:
        side.run(noise)
        sync(torch.device(a.device))
    key = "self_cuda_time_total" if a.device.startswith("cuda") else "self_cpu_time_total"
    by_op = prof.key_averages().table(sort_by=key, row_limit=a.profile_rows, max_name_column_width=40)
    by_shape = prof.key_averages(group_by_input_shape=True).table(
        sort_by=key, row_limit=a.profile_rows, max_name_column_width=40, max_shapes_column_width=64)
    return f"-- by op --\n{by_op}\n-- by op and input shapes --\n{by_shape}"


# ---------------------------------------------------------------------------------------------- isolate
def child_main(a) -> None:
    from safetensors.torch import load_file, save_file

    inputs = load_file(str(a.workdir / "inputs.safetensors"))
    side = build_side(a.child, a, a.workdir / "transformer", inputs)
    gc.collect()
    res = measure([side], inputs["noise"], a)[side.name]
    save_file({"latents": res.pop("latents").contiguous()}, str(a.workdir / f"{a.child}.safetensors"))
    if a.profile == "all" or (a.profile == "ours" and a.child.startswith("ours")):
        res["profile"] = profile_side(side, inputs["noise"], a)
    res["process_hwm"] = _status_kb("VmHWM") * 1024 if not a.device.startswith("cuda") else None
    (a.workdir / f"{a.child}.json").write_text(json.dumps(res))


def run_isolated(a, workdir: Path, argv: list[str]) -> dict:
    from safetensors.torch import load_file

    results = {}
    for name in a.sides:
        cmd = [sys.executable, os.path.abspath(__file__), *argv, "--child", name, "--workdir", str(workdir)]
        subprocess.run(cmd, check=True)
        r = json.loads((workdir / f"{name}.json").read_text())
        r["latents"] = load_file(str(workdir / f"{name}.safetensors"))["latents"]
        results[name] = r
    return results


# ---------------------------------------------------------------------------------------------- report
def report(a, res: dict, info: dict) -> str:
    names = [n for n in a.sides if n in res]
    ref = res.get("diffusers")
    lines = [
        f"Cosmos3 step benchmark | torch {torch.__version__} | device {a.device} | dtype {a.dtype} | "
        f"threads {torch.get_num_threads()} | {'isolated processes' if a.isolate else 'one process'}",
        f"model: {a.layers} layers, hidden {a.hidden}, heads {a.heads}/{a.kv_heads} x {a.head_dim}, "
        f"mlp {a.intermediate}, vocab {a.vocab}",
        f"video: {a.frames} frames {a.height}x{a.width} -> latent {info['latent']} -> {info['vision_tokens']} "
        f"vision tokens; prompt {a.prompt_tokens} / negative {a.negative_tokens} tokens; CFG {a.guidance}",
        f"run: {a.steps} UniPC steps from the same noise, 1 warm-up + {a.repeats} timed runs per side"
        f"{'' if a.isolate else ', interleaved'}; time/step = run time / steps",
    ]
    if info.get("load"):
        lines.append(f"machine: {os.cpu_count()} CPUs, 1-min load average {info['load'][0]:.1f} at start, "
                     f"{info['load'][1]:.1f} at end (other work inflates and scatters CPU times: compare mins)")

    # time
    head = f"{'time/step ms':<13} {'median':>9} {'min':>9} {'max':>9} {'x diff med':>11} {'x diff min':>11}"
    lines += ["", head, "-" * len(head)]
    for n in names:
        ts = [x * 1e3 for x in res[n]["times"]]
        rt = [x * 1e3 for x in ref["times"]] if ref else []
        lines.append(f"{n:<13} {_med(ts):9.1f} {min(ts):9.1f} {max(ts):9.1f} "
                     f"{_ratio(_med(ts), _med(rt) if rt else None):>11} {_ratio(min(ts), min(rt) if rt else None):>11}")

    # memory
    lines += mem_table(a, names, res, ref, "x diff",
                       ("x diff", 7, lambda n: _ratio(res[n]["weights"], ref["weights"] if ref else None)),
                       "a whole run",
                       "this side's own process" if a.isolate else "one process holding every side's model")

    lines += ops_table(names, res, "diffusers", a.steps)

    # parity
    if ref is not None:
        lines.append("")
        for n in names:
            if n != "diffusers":
                d = (res[n]["latents"] - ref["latents"]).abs().max() / ref["latents"].abs().max()
                lines.append(f"parity {n}: max |ours - diffusers| / max |diffusers| of the final latents "
                             f"= {d.item():.2e}")
    ref32 = info.get("fp32_ref")
    if ref32 is not None:
        errs = ", ".join(f"{n} {((res[n]['latents'] - ref32).abs().max() / ref32.abs().max()).item():.2e}"
                         for n in names)
        lines.append(f"{a.dtype} vs the float32 diffusers run (same relative measure): {errs}")
    return "\n".join(lines)


def main(argv=None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    a = parse_args(raw)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.child:
        return child_main(a)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    t, h, w = latent_thw(a)
    info = dict(latent=[1, 48, t, h, w], vision_tokens=t * -(-h // 2) * -(-w // 2))
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="bench_cosmos3_") as tmp:
        tmp = Path(tmp)
        write_checkpoint(a, tmp / "transformer")
        inputs = make_inputs(a)
        gc.collect()
        profiles = {}
        if a.isolate:
            from safetensors.torch import save_file

            save_file(inputs, str(tmp / "inputs.safetensors"))
            res = run_isolated(a, tmp, [x for x in raw if x != "--isolate"])  # children ignore --json
            profiles = {k: r.pop("profile") for k, r in res.items() if "profile" in r}
        else:
            sides = [build_side(name, a, tmp / "transformer", inputs) for name in a.sides]
            res = measure(sides, inputs["noise"], a)
            for s in sides:
                if a.profile == "all" or (a.profile == "ours" and s.name.startswith("ours")):
                    profiles[s.name] = profile_side(s, inputs["noise"], a)
            del sides
        if a.dtype != "fp32":
            # How far is each low-precision run from the float32 reference? (ours should be no further
            # than diffusers' own run in the same dtype)
            gc.collect()
            ref32 = Diffusers(argparse.Namespace(**{**vars(a), "dtype": "fp32"}), tmp / "transformer", inputs)
            ref32.reset()
            info["fp32_ref"] = ref32.run(inputs["noise"]).float().cpu()
            del ref32
    if load0 is not None:
        info["load"] = (load0, os.getloadavg()[0])
    finish(a, res, report(a, res, info), profiles,
           f"torch.profiler, one {a.steps}-step run of {{name}} (top ops by self time)", "latents")


if __name__ == "__main__":
    main()
