"""Writes ``expected.safetensors``: tiny Wan VAEs in Wan's original key layout, run by ComfyUI's own modules.

Run by hand with a ComfyUI checkout (``cd ComfyUI && PYTHONPATH=. python PATH/make_fixture.py
PATH/expected.safetensors``). The test suite only reads the file: it draws the same weights again with
:func:`seeded_weights`, loads them through our loader and compares with the outputs stored here.

Per model (``wan22``: ``comfy.ldm.wan.vae2_2.WanVAE``, ``wan21``: ``comfy.ldm.wan.vae.WanVAE``) the file holds
ComfyUI's ``encode`` (posterior mean) and ``decode`` (not clamped) outputs for :func:`inputs`, computed in
float64, and in its metadata the constructor arguments, every state-dict key with its shape (state-dict order)
and the sums of the weights and inputs (so a change in torch's random streams shows as such). For the released
sizes (``RELEASED``) only the key list with shapes is stored.
"""

from __future__ import annotations

import json
import sys

import torch

SEED = 20261124
MODELS = {  # ComfyUI constructor arguments; the video is [1, 3, 5, size, size]
    "wan22": {"module": "comfy.ldm.wan.vae2_2", "size": 32,
              "args": {"dim": 4, "dec_dim": 4, "z_dim": 48, "temperal_downsample": [False, True, True]}},
    "wan21": {"module": "comfy.ldm.wan.vae", "size": 16,
              "args": {"dim": 4, "z_dim": 16, "temperal_downsample": [False, True, True]}},
}


# The released VAEs as ComfyUI's comfy/sd.py builds them for wan2.2_vae.safetensors / wan_2.1_vae.safetensors
# (only their key lists and shapes are stored, built on the meta device).
RELEASED = {
    "released_wan22": {"module": "comfy.ldm.wan.vae2_2", "args": {
        "dim": 160, "z_dim": 48, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
        "temperal_downsample": [False, True, True], "dropout": 0.0}},
    "released_wan21": {"module": "comfy.ldm.wan.vae", "args": {
        "dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
        "temperal_downsample": [False, True, True], "dropout": 0.0}},
}


def seeded_weights(entries: list[tuple[str, list[int]]], seed: int = SEED) -> dict[str, torch.Tensor]:
    """Deterministic float32 weights for ``(key, shape)`` entries, drawn in the given order.

    Convolution / linear weights ~ N(0, 1 / fan_in), norm gains 1 + N(0, 0.1^2), biases N(0, 0.05^2).
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in entries:
        x = torch.randn(shape, generator=g, dtype=torch.float32)
        if key.endswith("gamma"):
            x = 1.0 + 0.1 * x
        elif len(shape) > 1:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            x = x / fan_in**0.5
        else:
            x = 0.05 * x
        out[key] = x
    return out


def inputs(name: str, z_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The video [1, 3, 5, S, S] in [-1, 1] and the latent [1, z_dim, 2, 2, 2] fed to the model."""
    g = torch.Generator().manual_seed(SEED + 1)
    size = MODELS[name]["size"]
    video = torch.rand(1, 3, 5, size, size, generator=g) * 2 - 1
    latent = torch.randn(1, z_dim, 2, 2, 2, generator=g)
    return video, latent


def main(out_path: str) -> None:
    import importlib

    import comfy.options

    comfy.options.enable_args_parsing()
    sys.argv = sys.argv[:1] + ["--cpu"]
    from safetensors.torch import save_file

    tensors, meta = {}, {}
    for name, spec in MODELS.items():
        model = importlib.import_module(spec["module"]).WanVAE(**spec["args"]).eval()
        entries = [(k, list(v.shape)) for k, v in model.state_dict().items()]
        model.load_state_dict(seeded_weights(entries))
        video, latent = inputs(name, spec["args"]["z_dim"])
        with torch.no_grad():  # in float64, so the stored outputs carry no float32 rounding of ComfyUI's op order
            model.double()
            tensors[f"{name}.mean"] = model.encode(video.double()).contiguous()
            tensors[f"{name}.decoded"] = model.decode(latent.double()).contiguous()
        sums = {"weights": sum(float(w.double().sum()) for w in model.state_dict().values()),
                "video": float(video.double().sum()), "latent": float(latent.double().sum())}
        meta[name] = json.dumps({"args": spec["args"], "entries": entries, "sums": sums})
    for name, spec in RELEASED.items():
        with torch.device("meta"):
            model = importlib.import_module(spec["module"]).WanVAE(**spec["args"])
        meta[name] = json.dumps({"args": spec["args"], "entries": [(k, list(v.shape)) for k, v in model.state_dict().items()]})
    meta["torch"] = torch.__version__
    save_file(tensors, out_path, metadata=meta)


if __name__ == "__main__":
    main(sys.argv[1])
