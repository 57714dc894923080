"""Command line: ``python -m comfyui_cosmos3_ltx2 generate ...`` (Cosmos3), ``... ltx-generate ...``
(LTX-2 / LTX-2.3 with sound) and ``... run WORKFLOW.json``. From a clone that is not pip-installed (the pack in
``ComfyUI/custom_nodes/<any name>``), ``python <that folder> ...`` runs the same commands.

Without ``--checkpoint``, ``generate`` runs on the embedded default: a tiny, randomly initialised Cosmos3 checkpoint
in the real on-disk format, written once into a cache folder. Its frames are noise; point
``--checkpoint`` at a real diffusers-format Cosmos3 folder (e.g. a local copy of nvidia/Cosmos3-Nano)
for real videos. Nothing is ever downloaded.

Bad input: every option, the conditioning image and the output file are checked before any model is loaded, and a
problem is one line on stderr naming the option, without a traceback: exit status 2 for a wrong option (found before
any work), 1 for a failure during the work (a checkpoint that cannot be read, frames that are not finite, ...), 130
when interrupted. ``--debug`` (or ``COSMOS3_LTX2_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Small enough to run in seconds on a laptop CPU with the tiny default model.
TINY_DEFAULTS = dict(width=128, height=128, frames=17, steps=8)
# With --checkpoint: the reference pipeline's size; steps None = the checkpoint's (35, or a distilled list's length).
REAL_DEFAULTS = dict(width=1280, height=720, frames=189, steps=None)
DEBUG_ENV = "COSMOS3_LTX2_DEBUG"

# How the command line names the Python API's fields in its messages (others: --field-name).
FLAGS = {"num_frames": "--frames", "distilled_lora": "--lora"}


def flag(field: str) -> str:
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def describe_error(error: Exception) -> tuple[int, str]:
    """``(exit status, one-line message)`` for an exception that ends a command: 2 for a wrong option or workflow
    (found by the checks before any work), 1 for a failure while working; no traceback either way. Exceptions
    of kinds a user's input does not cause (a bug) say how to see the traceback."""
    from .core.checks import OptionError
    from .headless.validation import WorkflowError

    if isinstance(error, OptionError):
        return 2, error.describe({f: flag(f) for f in error.fields})
    if isinstance(error, WorkflowError):
        return 2, str(error)
    if isinstance(error, (ValueError, OSError, ImportError, RuntimeError)):  # RuntimeError: node errors, OOM
        return 1, str(error)
    return 1, f"{type(error).__name__}: {error} (run with --debug or {DEBUG_ENV}=1 for the traceback)"


def cmd_generate(args) -> int:
    import torch

    from .cosmos3.loader import folder_has_sound
    from .cosmos3.options import check_request
    from .cosmos3.pipeline import Cosmos3Video, generate
    from .cosmos3.tiny import default_checkpoint
    from .headless.media import check_output, write_frames

    embedded = args.checkpoint is None
    defaults = TINY_DEFAULTS if embedded else REAL_DEFAULTS
    given = {name: getattr(args, name) for name in ("width", "height", "frames", "steps")}
    width, height, frames, steps = (defaults[k] if v is None else v for k, v in given.items())
    # Everything the user gave is checked before anything is loaded (generate checks the image and the checkpoint's
    # own recipe before loading, too).
    check_request(prompt=args.prompt, negative_prompt=args.negative_prompt, width=width, height=height,
                  num_frames=frames, fps=args.fps, steps=steps, guidance=args.guidance, shift=args.shift,
                  seed=args.seed, sampler="auto", image=args.image, video=args.video, video_keep=args.video_keep,
                  video_latent_frames=args.video_latent_frames)
    # a sound-capable checkpoint makes a sound track too: into the MP4, or a .wav beside other formats
    sound = not embedded and Path(args.checkpoint).is_dir() and folder_has_sound(args.checkpoint)
    out = check_output(args.output or ("cosmos3.png" if frames == 1 else "cosmos3.webp"), frames, sound)
    unset = [flag(n) for n, v in given.items() if v is None and n != "steps"]
    where = "the embedded demo model's defaults" if embedded else "the reference pipeline's defaults for a real checkpoint"
    note = f" ({'/'.join(unset)}: {where})" if unset else ""
    shown_steps = "the checkpoint's" if steps is None else steps
    print(f"[cosmos3] {width}x{height}, {frames} frame(s), {shown_steps} steps{note}")
    if embedded:
        checkpoint = default_checkpoint()
        print(f"[cosmos3] no --checkpoint: using the embedded tiny random model in {checkpoint}")
        print("[cosmos3] its weights are random, so the frames are noise; pass --checkpoint DIR for real output")
    else:
        checkpoint = Path(args.checkpoint)

    def progress(info):
        print(f"\r[cosmos3] step {info['i'] + 1}", end="", flush=True)

    t0 = time.perf_counter()
    video = generate(
        checkpoint, args.prompt, args.negative_prompt, args.image, width=width, height=height, num_frames=frames,
        fps=args.fps, steps=steps, guidance=args.guidance, seed=args.seed, shift=args.shift,
        device=args.device, dtype=args.dtype, callback=progress, vae=args.vae, video=args.video,
        resident_blocks=args.resident_blocks,
        video_keep=args.video_keep, video_latent_frames=args.video_latent_frames,
    )
    print()
    track = ""
    if isinstance(video, Cosmos3Video):
        video, waveform, rate = video
        write_frames(video, out, args.fps, (waveform, rate))
        track = f" + {waveform.shape[-1] / rate:.2f}s of sound at {rate} Hz"
    else:
        write_frames(video, out, args.fps)
    print(f"[cosmos3] {video.shape[0]} frame(s) {video.shape[2]}x{video.shape[1]}{track} -> {out} "
          f"({time.perf_counter() - t0:.1f}s, torch {torch.__version__})")
    return 0


def _keyframe_arg(text: str):
    """IMAGE:FRAME[:STRENGTH] -> Keyframe (the image path may itself hold colons)."""
    from .core.checks import OptionError
    from .ltx2.api import Keyframe

    parts = text.rsplit(":", 2)
    try:
        if len(parts) == 3 and parts[1].lstrip("-").isdigit():
            return Keyframe(parts[0], int(parts[1]), float(parts[2]))
        path, frame = text.rsplit(":", 1)
        return Keyframe(path, int(frame), 1.0)
    except ValueError:
        raise OptionError("keyframe", text, "expected IMAGE:FRAME or IMAGE:FRAME:STRENGTH") from None


def cmd_ltx_generate(args) -> int:
    import torch

    from .core.checks import OptionError
    from .headless.media import check_output, write_frames
    from .ltx2 import generate

    keyframes = [_keyframe_arg(k) for k in args.keyframe]
    out = check_output(args.output, args.frames, sound=True)  # before Gemma and the checkpoint load

    def progress(info):
        stage = f" {info['stage']}" if "stage" in info else ""
        print(f"\r[ltx2]{stage} step {info['i'] + 1}", end="", flush=True)

    guidance = {}
    if args.stg_block is not None:
        if args.pipeline == "distilled":
            raise OptionError("stg_block", args.stg_block, "the distilled pipeline runs without guidance")
        from dataclasses import replace

        from .ltx2.api import DEFAULT_GUIDANCE

        stg = {} if args.stg_block >= 0 else {"stg": 0.0, "stg_blocks": ()}
        presets = DEFAULT_GUIDANCE[args.pipeline]
        guidance = {name: replace(g, **(stg or {"stg_blocks": (args.stg_block,)}))
                    for name, g in zip(("video_guidance", "audio_guidance"), presets)}
    t0 = time.perf_counter()
    frames, waveform, rate = generate(
        args.checkpoint, args.text_encoder, args.prompt, args.negative_prompt, width=args.width,
        height=args.height, num_frames=args.frames, fps=args.fps, steps=args.steps, seed=args.seed,
        pipeline=args.pipeline, image=args.image, image_strength=args.image_strength, image_crf=args.image_crf,
        keyframes=keyframes, upsampler=args.upsampler, distilled_lora=args.lora,
        lora_strengths=tuple(args.lora_strengths), sde_noise=args.sde_noise, device=args.device,
        resident_blocks=args.resident_blocks,
        dtype="bf16" if args.dtype == "fp8_e4m3fn" else args.dtype,
        weight_dtype="fp8_e4m3fn" if args.dtype == "fp8_e4m3fn" else "default", callback=progress, **guidance)
    print()
    write_frames(frames, out, args.fps, (waveform, rate))
    print(f"[ltx2] {frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]} + {waveform.shape[-1] / rate:.2f}s "
          f"of sound at {rate} Hz -> {out} ({time.perf_counter() - t0:.1f}s, torch {torch.__version__})")
    return 0


def cmd_run(args) -> int:
    """Run an API-format workflow in-process on the pack's nodes, or on a ComfyUI server with --server."""
    from . import headless

    graph = headless.load_workflow(args.workflow)
    if args.server:
        graph = headless.apply_overrides(graph, args.set)
        files = headless.submit(graph, args.server, output_dir=args.output_dir, timeout=args.timeout,
                                on_progress=headless.print_progress)
    else:
        import tempfile

        from .core import distributed

        mappings = headless.node_mappings(False if args.standins else None)
        graph = headless.apply_overrides(graph, args.set, mappings)
        if distributed.init_from_env() and not distributed.is_main():
            # under torchrun: every rank runs the graph (sharing the split work); only rank 0 reports and writes
            with tempfile.TemporaryDirectory() as scratch:
                headless.run(graph, output_dir=scratch, input_dir=args.input_dir, mappings=mappings)
            return 0
        files = headless.run(graph, output_dir=args.output_dir, input_dir=args.input_dir, mappings=mappings,
                             on_progress=headless.print_progress)
    print(f"[run] {len(files)} file(s) written:")
    for f in files:
        print(f"  {f}")
    return 0


def cmd_fit_preview(args) -> int:
    from .cosmos3.loader import load_vae
    from .cosmos3.preview import FACTORS_FILE, fit_latent_rgb, write_factors

    path = Path(args.vae)
    if (path / "vae").is_dir():
        path = path / "vae"
    vae = load_vae(path, device=args.device, dtype="fp32")
    factors, bias = fit_latent_rgb(vae)
    out = write_factors(factors, bias, Path(args.output) if args.output else FACTORS_FILE, source=str(path))
    print(f"[cosmos3] latent-to-RGB factors fitted on {path} -> {out}")
    return 0


def _resident(text: str):
    """--resident-blocks: a block count, or auto."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of blocks or auto, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m comfyui_cosmos3_ltx2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also with {DEBUG_ENV}=1)")
    common.add_argument("--attention", choices=("sdpa", "flash", "sage"), default="sdpa",
                        help="attention kernels: PyTorch SDPA (default), FlashAttention (flash-attn) or SageAttention "
                             "(sageattention), when installed")
    common.add_argument("--compile", action="store_true",
                        help="compile each transformer block with torch.compile (regional; slower first step)")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", parents=[common],
                       help="Cosmos3 text-to-video / image-to-video / video-to-video / text-to-image",
                       description="Cosmos3 in one call. Without --checkpoint: the embedded demo model at "
                                   f"{TINY_DEFAULTS['width']}x{TINY_DEFAULTS['height']}, {TINY_DEFAULTS['frames']} "
                                   f"frames, {TINY_DEFAULTS['steps']} steps; with it: the reference pipeline's "
                                   f"{REAL_DEFAULTS['width']}x{REAL_DEFAULTS['height']}, {REAL_DEFAULTS['frames']} "
                                   "frames and the checkpoint's steps. The size used is printed before the work.")
    g.add_argument("--checkpoint", help="diffusers-format Cosmos3 folder (default: the embedded tiny model)")
    g.add_argument("--vae", help="a Wan2.2 VAE folder or file to use instead of the checkpoint's vae/ "
                                 "(e.g. ComfyUI's models/vae/wan2.2_vae.safetensors)")
    g.add_argument("--prompt", default="A robot arm stacks wooden blocks on a table, soft daylight.")
    g.add_argument("--negative-prompt", default="")
    g.add_argument("--image", help="conditioning image for image-to-video")
    g.add_argument("--video", help="video-to-video: the clip to continue, a video file (needs PyAV) or a folder of its "
                                   "frames as pictures")
    g.add_argument("--video-keep", choices=["first", "last"], default="first",
                   help="condition on the clip's first or last frames (default: first)")
    g.add_argument("--video-latent-frames", type=int, default=2,
                   help="latent frames of the clip to keep: k takes 4(k-1)+1 frames of it (default 2: 5 frames)")
    g.add_argument("--width", type=int, help="multiple of 16 (default: 128 for the demo model, 1280 with --checkpoint)")
    g.add_argument("--height", type=int, help="multiple of 16 (default: 128 for the demo model, 720 with --checkpoint)")
    g.add_argument("--frames", type=int, help="4k+1 frames; 1 makes an image (default: 17 for the demo model, 189 with "
                                              "--checkpoint)")
    g.add_argument("--fps", type=float, default=24.0)
    g.add_argument("--steps", type=int, help="default: 8 for the demo model, the checkpoint's (35) with --checkpoint")
    g.add_argument("--guidance", type=float, help="classifier-free guidance (default 6; 1 for distilled checkpoints)")
    g.add_argument("--shift", type=float, help="flow shift (default: the checkpoint's scheduler config)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    g.add_argument("--resident-blocks", type=_resident, default=None, metavar="N",
                   help="keep N transformer blocks on the device and stream the rest from host memory (for a model "
                        "larger than the GPU; same output); auto: as many as the GPU's free memory holds")
    g.add_argument("--dtype", choices=["bf16", "fp16", "fp32", "fp8_e4m3fn"],
                   help="default: bf16 on GPU, fp32 on CPU; fp8_e4m3fn: the layers' weights stored as scaled fp8, "
                        "bf16 compute")
    g.add_argument("--output", help="output file: .webp/.gif (or .mp4 with PyAV) for clips, .png for images")
    g.set_defaults(func=cmd_generate)
    x = sub.add_parser("ltx-generate", parents=[common], help="LTX-2 / LTX-2.3 video with sound (one-stage or HQ two-stage)")
    x.add_argument("--checkpoint", required=True, help="official single file (e.g. ltx-2.3-22b-dev.safetensors) or "
                                                       "a diffusers folder")
    x.add_argument("--text-encoder", required=True,
                   help="Gemma-3 folder, or ComfyUI's single gemma_3_12B_it.safetensors")
    x.add_argument("--prompt", default="A fox trots through fresh snow at dawn; wind, crunching steps.")
    x.add_argument("--negative-prompt", default="")
    x.add_argument("--pipeline", choices=["one-stage", "hq", "distilled"], default="one-stage",
                   help="distilled: the distilled checkpoint's unguided two-stage flow (fixed 8 + 3 sigmas)")
    x.add_argument("--upsampler", help="x2 latent upsampler file (required for --pipeline hq / distilled)")
    x.add_argument("--lora", help="distilled LoRA file (HQ: stage strengths from --lora-strengths)")
    x.add_argument("--lora-strengths", type=float, nargs=2, default=[0.25, 0.5], metavar=("STAGE1", "STAGE2"))
    x.add_argument("--image", help="first-frame image")
    x.add_argument("--image-strength", type=float, default=1.0)
    x.add_argument("--image-crf", type=float, default=33, help="H.264 CRF of the image preparation (0 = none)")
    x.add_argument("--keyframe", action="append", default=[], metavar="IMAGE:FRAME[:STRENGTH]",
                   help="a conditioning image at a pixel frame (repeatable)")
    x.add_argument("--width", type=int, default=768)
    x.add_argument("--height", type=int, default=512)
    x.add_argument("--frames", type=int, default=121, help="8k+1 frames")
    x.add_argument("--fps", type=float, default=24.0)
    x.add_argument("--steps", type=int, help="default 30 (one-stage) / 15 (HQ stage 1)")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--stg-block", type=int, help="block of the STG pass in the one-stage preset (default 28); -1: no STG")
    x.add_argument("--sde-noise", choices=["seeded", "reference"], default="seeded")
    x.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    x.add_argument("--resident-blocks", type=_resident, default=None, metavar="N",
                   help="keep N transformer blocks on the device and stream the rest from host memory (for a model "
                        "larger than the GPU; same output); auto: as many as the GPU's free memory holds")
    x.add_argument("--dtype", choices=["bf16", "fp16", "fp32", "fp8_e4m3fn"], default="bf16",
                   help="fp8_e4m3fn: the transformer blocks' weights stored as scaled fp8, bf16 compute")
    x.add_argument("--output", default="ltx2.mp4", help=".mp4 (needs PyAV), or .webp/.gif plus a .wav beside it")
    x.set_defaults(func=cmd_ltx_generate)
    r = sub.add_parser("run", parents=[common], help="run an API-format workflow headless (in-process, or on a ComfyUI server)")
    r.add_argument("workflow", help="API-format workflow JSON (ComfyUI: Export (API)); e.g. workflows/api/*_api.json")
    r.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="override an input, e.g. --set 3.seed=42 --set '6.text=a cat' (repeatable; VALUE is JSON "
                        "when it parses, else text)")
    r.add_argument("--output-dir", default="output", help="where output files go (default: ./output)")
    r.add_argument("--input-dir", help="where LoadImage looks for files (default: the current directory)")
    r.add_argument("--server", metavar="URL", help="submit to a running ComfyUI, e.g. http://127.0.0.1:8188")
    r.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for a server run (default 3600)")
    r.add_argument("--standins", action="store_true",
                   help="use the pack's stand-in LoadImage/SaveImage/CreateVideo/SaveVideo even when ComfyUI is importable")
    r.set_defaults(func=cmd_run)
    f = sub.add_parser("fit-preview", parents=[common], help="fit the latent-to-RGB preview factors on a real Wan2.2 VAE")
    f.add_argument("--vae", required=True, help="a Cosmos3 checkpoint folder, its vae/ folder, or a VAE file")
    f.add_argument("--output", help="where to write the factors (default: the pack's cosmos3/latent_rgb_factors.json)")
    f.add_argument("--device", default="cpu")
    f.set_defaults(func=cmd_fit_preview)
    return p


def _setup_kernels(args) -> None:
    """--attention and --compile, for every model the command builds."""
    from .core.attention import set_backend
    from .core.checks import OptionError
    from .core.compile import set_regional_compile

    try:
        set_backend(args.attention)
    except ImportError as e:
        raise OptionError("attention", args.attention, str(e).split(": ", 1)[-1]) from None
    set_regional_compile(args.compile)


def main(argv=None) -> int:
    """Run one command; its errors end as one line on stderr and an exit status (see the module's docstring)."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    try:
        _setup_kernels(args)
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted: no output written", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        code, message = describe_error(e)
        print(f"error: {message}", file=sys.stderr)
        return code
    except BaseException as e:  # an interrupt of another kind (e.g. ComfyUI's); SystemExit passes
        if debug or isinstance(e, SystemExit):
            raise
        print(f"interrupted ({type(e).__name__}): no output written", file=sys.stderr)
        return 130


def _as_package() -> None:
    """Run as ``python <pack folder> ...`` (``__package__`` empty, the folder itself on ``sys.path``): import the
    folder as the package ``comfyui_cosmos3_ltx2``, as pip would name it, and hand over to its ``__main__``."""
    import importlib.util

    root = Path(__file__).resolve().parent
    # the folder's subpackages (core, nodes, ...) must not shadow top-level modules of the same names
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != root]
    spec = importlib.util.spec_from_file_location("comfyui_cosmos3_ltx2", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_cosmos3_ltx2"] = package
    spec.loader.exec_module(package)
    from comfyui_cosmos3_ltx2.__main__ import main as package_main

    sys.exit(package_main())


if __name__ == "__main__":
    if not __package__:
        _as_package()
    sys.exit(main())
