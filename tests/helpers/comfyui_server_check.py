"""Checks the pack against a real ComfyUI server (not part of the test suite: CI cannot install ComfyUI).

What it checks, on the CPU with tiny random models:

1. ComfyUI's own ``VAE Decode`` and ``VAE Decode (Tiled)`` on the Cosmos3 sampler's LATENT give the frames
   Cosmos3 VAE Decode gives (to float rounding), with one Wan2.2 VAE file in Wan's original layout (the layout of
   ComfyUI's ``wan2.2_vae.safetensors``) loaded by both ``Load VAE`` and ``Cosmos3 VAE Loader``.
2. The other direction: ComfyUI's ``VAE Encode`` and Cosmos3 VAE Encode give the same raw latents, and each
   side decodes the other's.
3. ComfyUI's ``Wan22ImageToVideoLatent`` (start image, noise_mask) feeds the Cosmos3 sampler as the pack's own
   image-to-video latent does; core latent nodes (repeat / pick from batch / cut in time) pass the LATENT on.
4. The websocket carries preview images while the Cosmos3 sampler runs (``preview_method`` latent2rgb).

ComfyUI 0.27 builds its Wan2.2 VAE at the released size whatever the file holds (``comfy/sd.py``: ``dim`` 160),
so a tiny Wan2.2 VAE file does not load there; ``prepare`` first writes such a tiny file (so the failure can be
seen) and then a released-size one with seeded random weights (1.4 GB in bf16), which both sides load.

    python tests/helpers/comfyui_server_check.py prepare WORKDIR      # files, a throwaway output node, extra paths
    # start ComfyUI:  python main.py --cpu --port 8195 --extra-model-paths-config WORKDIR/extra_model_paths.yaml \
    #                 --input-directory WORKDIR/input --output-directory WORKDIR/out ...
    python tests/helpers/comfyui_server_check.py run WORKDIR http://127.0.0.1:8195

``prepare`` runs in the pack's Python; ``run`` needs only the standard library plus torch (to compare the
tensors the throwaway node saves) and ``websocket-client`` (ComfyUI's own test dependency).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
import uuid
from pathlib import Path

PACK = Path(__file__).resolve().parents[2]
VAE_FILE = "wan22_random.safetensors"
TINY_VAE_FILE = "wan22_tiny.safetensors"
CHECKPOINT = "TinyWan22Stats"
SIZE, FRAMES, STEPS = 32, 5, 3

CHECK_NODE = '''
import os, torch

class CheckSaveTensor:
    """Throwaway output node of comfyui_server_check.py: saves an IMAGE or a LATENT's samples as a .pt file."""
    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "x"})},
                "optional": {"images": ("IMAGE",), "latent": ("LATENT",)}}

    def save(self, name, images=None, latent=None):
        value = images if images is not None else latent["samples"]
        torch.save(value.detach().cpu().clone(), os.path.join(OUT, name + ".pt"))
        return {}

OUT = %r
NODE_CLASS_MAPPINGS = {"CheckSaveTensor": CheckSaveTensor}
'''


def prepare(workdir: Path) -> None:
    import torch
    from PIL import Image
    from safetensors import safe_open
    from safetensors.torch import save_file

    sys.path.insert(0, str(PACK / "tests"))
    from comfyui_cosmos3_ltx2.cosmos3.latent_format import WAN22_LATENTS_MEAN, WAN22_LATENTS_STD
    from comfyui_cosmos3_ltx2.cosmos3.tiny import write_tiny_checkpoint
    from helpers.cosmos3_wan_vae_ref import DATA, FIXTURE

    for sub in ("models/vae", "models/cosmos3", "custom_nodes", "input", "out", "tensors"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    with safe_open(str(DATA / "expected.safetensors"), framework="pt") as f:
        tiny = json.loads(f.metadata()["wan22"])["entries"]
        released = json.loads(f.metadata()["released_wan22"])["entries"]
    save_file(FIXTURE.seeded_weights(tiny), str(workdir / "models/vae" / TINY_VAE_FILE))
    weights = FIXTURE.seeded_weights(released)
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, str(workdir / "models/vae" / VAE_FILE))
    del weights
    folder = write_tiny_checkpoint(workdir / "models/cosmos3" / CHECKPOINT)
    cfg = json.loads((folder / "vae/config.json").read_text())
    cfg.update(latents_mean=list(WAN22_LATENTS_MEAN), latents_std=list(WAN22_LATENTS_STD))
    (folder / "vae/config.json").write_text(json.dumps(cfg))
    pixels = (torch.rand(SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    Image.fromarray(pixels.numpy()).save(workdir / "input" / "start.png")
    (workdir / "custom_nodes" / "cosmos3_check_nodes.py").write_text(CHECK_NODE % str(workdir / "tensors"))
    link = workdir / "custom_nodes" / "ComfyUI-Cosmos3-LTX2"
    if not link.exists():
        link.symlink_to(PACK)
    (workdir / "extra_model_paths.yaml").write_text(
        f"check:\n  base_path: {workdir}\n  custom_nodes: custom_nodes\n  vae: models/vae\n  cosmos3: models/cosmos3\n")
    print(f"prepared {workdir}")


# ---------------------------------------------------------------------------------------------- graphs
def node(cls, **inputs):
    return {"class_type": cls, "inputs": inputs}


def cosmos_front(start: int, latent_ref) -> dict:
    """Model loader, text encode and sampler for ``latent_ref`` (ids start, start+1, start+2)."""
    s = str(start)
    return {
        s: node("Cosmos3ModelLoader", checkpoint=CHECKPOINT, weight_dtype="fp32", device="cpu"),
        str(start + 1): node("Cosmos3TextEncode", model=[s, 0], latent=latent_ref, prompt="a red cube",
                             negative_prompt="blurry", fps=24.0, use_system_prompt=True, add_duration_template=True,
                             add_resolution_template=True),
        str(start + 2): node("Cosmos3Sampler", model=[s, 0], conditioning=[str(start + 1), 0], latent=latent_ref,
                             seed=7, steps=STEPS, cfg=3.0, shift=0.0, sampler="auto"),
    }


def graphs() -> dict[str, dict]:
    vaes = {"v1": node("Cosmos3VAELoader", vae=VAE_FILE, dtype="fp32", device="cpu"),
            "v2": node("VAELoader", vae_name=VAE_FILE)}
    save = lambda name, **kw: node("CheckSaveTensor", name=name, **kw)  # noqa: E731
    decode = {
        **vaes, "e": node("Cosmos3EmptyLatent", width=SIZE, height=SIZE, frames=FRAMES, batch_size=1),
        **cosmos_front(10, ["e", 0]),
        "d1": node("Cosmos3VAEDecode", vae=["v1", 0], latent=["12", 0]),
        "d2": node("VAEDecode", samples=["12", 0], vae=["v2", 0]),
        "d3": node("VAEDecodeTiled", samples=["12", 0], vae=["v2", 0], tile_size=512, overlap=64, temporal_size=64,
                   temporal_overlap=8),
        "s0": save("sampled", latent=["12", 0]), "s1": save("decode_ours", images=["d1", 0]),
        "s2": save("decode_core", images=["d2", 0]), "s3": save("decode_core_tiled", images=["d3", 0]),
    }
    encode = {
        **vaes, "img": node("LoadImage", image="start.png"),
        "rep": node("RepeatImageBatch", image=["img", 0], amount=FRAMES),
        "e1": node("Cosmos3VAEEncode", vae=["v1", 0], images=["rep", 0]),
        "e2": node("VAEEncode", pixels=["rep", 0], vae=["v2", 0]),
        "x1": node("Cosmos3VAEDecode", vae=["v1", 0], latent=["e2", 0]),
        "x2": node("VAEDecode", samples=["e1", 0], vae=["v2", 0]),
        "s1": save("encode_ours", latent=["e1", 0]), "s2": save("encode_core", latent=["e2", 0]),
        "s3": save("ours_decodes_core_latent", images=["x1", 0]), "s4": save("core_decodes_our_latent", images=["x2", 0]),
    }
    i2v = {
        **vaes, "img": node("LoadImage", image="start.png"),
        "l1": node("Cosmos3ImageToVideoLatent", vae=["v1", 0], image=["img", 0], width=SIZE, height=SIZE,
                   frames=FRAMES, batch_size=1),
        "l2": node("Wan22ImageToVideoLatent", vae=["v2", 0], width=SIZE, height=SIZE, length=FRAMES, batch_size=1,
                   start_image=["img", 0]),
        **cosmos_front(10, ["l1", 0]), **cosmos_front(20, ["l2", 0]),
        "s1": save("i2v_ours", latent=["12", 0]), "s2": save("i2v_core_latent", latent=["22", 0]),
        "s3": save("i2v_start_ours", latent=["l1", 0]), "s4": save("i2v_start_core", latent=["l2", 0]),
    }
    latent_nodes = {
        **vaes, "e": node("Cosmos3EmptyLatent", width=SIZE, height=SIZE, frames=FRAMES, batch_size=1),
        "r": node("RepeatLatentBatch", samples=["e", 0], amount=2),
        **cosmos_front(10, ["r", 0]),
        "pick": node("LatentFromBatch", samples=["12", 0], batch_index=1, length=1),
        "cut": node("LatentCut", samples=["pick", 0], dim="t", index=0, amount=1),
        "d": node("VAEDecode", samples=["cut", 0], vae=["v2", 0]),
        "s1": save("batch_sampled", latent=["12", 0]), "s2": save("batch_pick_cut_decoded", images=["d", 0]),
    }
    return {"decode": decode, "encode": encode, "i2v": i2v, "latent_nodes": latent_nodes}


# ---------------------------------------------------------------------------------------------- running
def submit(url: str, graph: dict, client_id: str, preview: str | None = None) -> str:
    body = {"prompt": graph, "client_id": client_id}
    if preview:
        body["extra_data"] = {"preview_method": preview}
    req = urllib.request.Request(url + "/prompt", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        return json.loads(urllib.request.urlopen(req).read())["prompt_id"]
    except urllib.error.HTTPError as e:
        raise SystemExit(f"POST /prompt: {e.code} {e.read().decode()[:2000]}") from None


def run_graph(url: str, graph: dict, preview: str | None = None, timeout: float = 900) -> dict:
    """Submit and follow one graph on the websocket: its status, and the binary preview frames seen per node."""
    import websocket

    client_id = str(uuid.uuid4())
    ws = websocket.create_connection(url.replace("http", "ws", 1) + f"/ws?clientId={client_id}", timeout=timeout)
    prompt_id = submit(url, graph, client_id, preview)
    node, previews, sizes, error, started = None, {}, set(), None, time.time()
    while time.time() - started < timeout:
        message = ws.recv()
        if isinstance(message, bytes):
            kind = int.from_bytes(message[:4], "big")
            if kind in (1, 2, 4):  # PREVIEW_IMAGE, UNENCODED_PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA
                previews[node] = previews.get(node, 0) + 1
            if kind == 1:  # then a 4-byte image type and the encoded picture
                import io

                from PIL import Image

                sizes.add(Image.open(io.BytesIO(message[8:])).size)
            continue
        msg = json.loads(message)
        data = msg.get("data", {})
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        if msg["type"] == "executing":
            node = data.get("node")
            if node is None:
                break
        elif msg["type"] == "execution_error":
            error = f"{data.get('node_type')}: {data.get('exception_message')}"
            break
    ws.close()
    return {"error": error, "previews": previews, "preview_sizes": sorted(sizes), "seconds": round(time.time() - started, 1)}


def compare(workdir: Path) -> list[tuple[str, bool, str]]:
    import torch

    def load(name):
        return torch.load(workdir / "tensors" / f"{name}.pt")

    def rel(a, b):
        return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12))

    checks = []

    def close(what, a, b, tol):
        r = rel(a, b) if a.shape == b.shape else float("inf")
        checks.append((what, r <= tol, f"shapes {tuple(a.shape)} / {tuple(b.shape)}, max rel. difference {r:.2e}"))

    close("core VAEDecode == Cosmos3 VAE Decode (sampler LATENT)", load("decode_core"), load("decode_ours"), 1e-4)
    close("core VAEDecodeTiled == Cosmos3 VAE Decode", load("decode_core_tiled"), load("decode_ours"), 1e-4)
    close("core VAEEncode == Cosmos3 VAE Encode (raw latents)", load("encode_core"), load("encode_ours"), 1e-4)
    close("Cosmos3 decode of core latent == core decode of Cosmos3 latent", load("ours_decodes_core_latent"),
          load("core_decodes_our_latent"), 1e-3)
    close("Wan22ImageToVideoLatent start frame == Cosmos3 I2V start frame", load("i2v_start_core")[:, :, :1],
          load("i2v_start_ours")[:, :, :1], 1e-3)
    close("sampler on core Wan22ImageToVideoLatent == on Cosmos3 I2V latent", load("i2v_core_latent"),
          load("i2v_ours"), 1e-2)
    sampled = load("batch_sampled")
    decoded = load("batch_pick_cut_decoded")
    checks.append(("core RepeatLatentBatch -> sampler -> LatentFromBatch -> LatentCut -> VAEDecode",
                   sampled.shape[0] == 2 and decoded.shape == (1, SIZE, SIZE, 3) and bool(torch.isfinite(decoded).all()),
                   f"sampled {tuple(sampled.shape)}, decoded {tuple(decoded.shape)}"))
    return checks


def run(workdir: Path, url: str) -> int:
    ok = True
    for name, graph in graphs().items():
        result = run_graph(url, graph, preview="latent2rgb" if name == "decode" else None)
        print(f"graph {name}: {result}")
        ok &= result["error"] is None
        if name == "decode":
            sampler_previews = result["previews"].get("12", 0)
            sizes = result["preview_sizes"]  # the server scales previews up to its preview size, keeping the shape
            good = sampler_previews >= STEPS and bool(sizes) and all(w == h for w, h in sizes)
            print(f"  {'ok ' if good else 'BAD'} websocket previews during Cosmos3 Sampler: {sampler_previews} "
                  f"(steps {STEPS}), JPEG pictures of {sizes} pixels (square, as the latent)")
            ok &= good
    tiny = {"t": node("VAELoader", vae_name=TINY_VAE_FILE), "d": node("VAEDecode", samples=["l", 0], vae=["t", 0]),
            "l": node("Cosmos3EmptyLatent", width=SIZE, height=SIZE, frames=FRAMES, batch_size=1),
            "s": node("CheckSaveTensor", name="tiny_decode", images=["d", 0])}
    error = run_graph(url, tiny)["error"] or "loaded"
    print(f"tiny Wan2.2 VAE file in ComfyUI's VAELoader: {error.strip().splitlines()[0][:300]}")
    for what, good, detail in compare(workdir):
        print(f"  {'ok ' if good else 'BAD'} {what}: {detail}")
        ok &= good
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]).resolve())
    elif len(sys.argv) >= 4 and sys.argv[1] == "run":
        sys.exit(run(Path(sys.argv[2]).resolve(), sys.argv[3].rstrip("/")))
    else:
        print(__doc__)
        sys.exit(2)
