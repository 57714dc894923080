"""The Cosmos3 nodes on the ComfyUI path: progress, interrupt, model management, folders, previews.

ComfyUI cannot be installed in CI, so these run against ``comfy_standin`` (a labelled stand-in of the
ComfyUI modules the pack touches), and the node-contract checks need no ComfyUI at all.
"""

import pytest
import torch

from comfyui_cosmos3_ltx2.nodes import NODE_CLASS_MAPPINGS as M
from comfyui_cosmos3_ltx2.nodes import cosmos3 as cosmos3_nodes
from helpers.comfy_standin import InterruptProcessingException, comfyui_standin

DEMO = cosmos3_nodes.EMBEDDED_CHECKPOINT


def test_node_contract():
    for node_id, cls in M.items():
        assert node_id.startswith(("Cosmos3", "LTX2")), node_id
        assert cls.CATEGORY in ("Cosmos3", "Guardrails") or cls.CATEGORY.split("/")[0] == "LTX2", cls.CATEGORY
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"}
        for section in spec.values():
            for name, (typ, opts) in section.items():
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
                if isinstance(typ, list):
                    assert "default" not in opts or opts["default"] in typ
        assert isinstance(cls.RETURN_TYPES, tuple) and hasattr(cls, cls.FUNCTION)
        assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES)


def run_graph(frames=9, steps=3, image=False, cfg=4.0):
    model, = M["Cosmos3ModelLoader"]().load(DEMO, "fp32", "default")
    vae, = M["Cosmos3VAELoader"]().load(DEMO, "fp32", "default")
    if image:
        latent, = M["Cosmos3ImageToVideoLatent"]().make(vae, torch.rand(1, 40, 70, 3), 64, 32, frames, 1)
    else:
        latent, = M["Cosmos3EmptyLatent"]().make(64, 32, frames, 1)
    cond, = M["Cosmos3TextEncode"]().encode(model, latent, "a cat", "blurry", 24.0)
    return model, vae, latent, cond


def test_progress_previews_and_model_management(tmp_path):
    with comfyui_standin(str(tmp_path)) as rec:
        assert rec.folders["cosmos3"] == [str(tmp_path / "cosmos3")]
        model, vae, latent, cond = run_graph()
        assert model.patcher is not None and model.patcher.model.diffusion_model is model.transformer
        assert cond.cond.keys[0].device.type == "cpu"
        rec.progress.clear()
        out, = M["Cosmos3Sampler"]().sample(model, cond, latent, 1, 5, 4.0, 0.0)
        assert rec.loaded[-1] is model.patcher  # handed to model management before sampling
        assert rec.progress == [("new", 5)] + [("update", i, 5) for i in range(1, 6)]
        assert rec.previews == [0, 1, 2, 3, 4]
        assert rec.preview_shapes == [(2, 4, 3)] * 5  # one latent frame of 64x32 pixels, as RGB
        assert model.patcher.model.latent_format.latent_rgb_factors_bias == [0.0317, -0.0878, -0.1388]
        rec.progress.clear()
        images, fps = M["Cosmos3VAEDecode"]().decode(vae, out)
        assert rec.loaded[-1] is vae.patcher
        assert rec.progress == [("new", 3)] + [("update", i, 3) for i in range(1, 4)]
        assert images.shape == (9, 32, 64, 3) and fps == 24.0


def test_interrupt_stops_sampling_within_one_step(tmp_path):
    with comfyui_standin(str(tmp_path)) as rec:
        model, vae, latent, cond = run_graph()
        calls = []
        forward = model.transformer.forward
        model.transformer.forward = lambda *a, **k: (calls.append(1), forward(*a, **k))[1]
        rec.checks, rec.interrupt_after_checks = 0, 2  # the third check (step 2) sees Cancel
        with pytest.raises(InterruptProcessingException):
            M["Cosmos3Sampler"]().sample(model, cond, latent, 1, 10, 4.0, 0.0)
        assert len(calls) == 2  # steps 0 and 1 ran (one batched CFG call each), nothing after the cancel
        del model.transformer.forward


def test_interrupt_stops_decoding_within_one_latent_frame(tmp_path):
    with comfyui_standin(str(tmp_path)) as rec:
        model, vae, latent, cond = run_graph(frames=13)
        frames = []
        original = vae.vae.iter_decode

        def counting(z):
            for chunk in original(z):
                frames.append(chunk.shape[2])
                yield chunk

        vae.vae.iter_decode = counting
        rec.checks, rec.interrupt_after_checks = 0, 1
        with pytest.raises(InterruptProcessingException):
            M["Cosmos3VAEDecode"]().decode(vae, latent)
        assert len(frames) <= 3  # of 4 latent frames: stopped right after the second


def test_sampler_rejects_conditioning_for_another_size():
    model, vae, latent, cond = run_graph()
    other, = M["Cosmos3EmptyLatent"]().make(64, 64, 9, 1)
    with pytest.raises(ValueError, match="Cosmos3Sampler"):
        M["Cosmos3Sampler"]().sample(model, cond, other, 1, 2, 4.0, 0.0)


def test_fp8_weight_storage_runs():
    model, = M["Cosmos3ModelLoader"]().load(DEMO, "fp8_e4m3fn", "cpu")
    assert model.transformer.layers[0].mlp_moe_gen.up_proj.weight.dtype == torch.float8_e4m3fn
    assert model.transformer.proj_in.weight.dtype == torch.bfloat16
    _, vae, latent, _ = run_graph()
    cond, = M["Cosmos3TextEncode"]().encode(model, latent, "a cat", "", 24.0)
    out, = M["Cosmos3Sampler"]().sample(model, cond, latent, 1, 2, 4.0, 0.0)
    assert torch.isfinite(out["samples"]).all()


def test_latent_rgb_fit_recovers_a_linear_encoder(tmp_path):
    """The preview fit inverts an encoder that is a known linear map of the pooled pixels; a fitted file
    replaces the published Wan2.2 map in the latent format previews use."""
    from comfyui_cosmos3_ltx2.cosmos3.latent_format import WAN22_LATENT_RGB_FACTORS, Wan22LatentFormat
    from comfyui_cosmos3_ltx2.cosmos3.preview import apply_fitted_factors, fit_latent_rgb, write_factors

    g = torch.Generator().manual_seed(0)
    mix = torch.randn(48, 3, generator=g)
    offset = torch.randn(48, generator=g)

    class LinearVAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def encode(self, video):  # [B,3,1,H,W] -> [B,48,1,H/16,W/16]
            pooled = torch.nn.functional.avg_pool2d(video[:, :, 0], 16)
            return (torch.einsum("bchw,kc->bkhw", pooled, mix) + offset[:, None, None]).unsqueeze(2)

        def normalize_latents(self, z):
            return z

    factors, bias = fit_latent_rgb(LinearVAE(), count=8, size=64)
    f = torch.tensor(factors)
    assert torch.allclose(mix.T @ f, torch.eye(3), atol=1e-4)  # rgb -> latent -> rgb is the identity
    fmt = apply_fitted_factors(Wan22LatentFormat(), write_factors(factors, bias, tmp_path / "f.json"))
    assert fmt.latent_rgb_factors == factors and fmt.latent_rgb_factors_bias == bias
    fmt = apply_fitted_factors(Wan22LatentFormat(), tmp_path / "missing.json")
    assert fmt.latent_rgb_factors == [list(r) for r in WAN22_LATENT_RGB_FACTORS]


def test_size_is_checked_before_any_work():
    empty, i2v = M["Cosmos3EmptyLatent"], M["Cosmos3ImageToVideoLatent"]
    assert empty.VALIDATE_INPUTS(width=320, height=192, frames=17) is True
    assert "width=100" in empty.VALIDATE_INPUTS(width=100, height=192, frames=17)
    assert "height" in empty.VALIDATE_INPUTS(width=320, height=8, frames=17)
    assert "frames" in i2v.VALIDATE_INPUTS(width=320, height=192, frames=1)
    assert empty.VALIDATE_INPUTS(width=None, height=None, frames=None) is True  # linked inputs


def test_single_files_without_config(tmp_path):
    """A lone transformer file takes the tokenizer folder's config; a lone diffusers-layout Wan2.2 VAE file
    gets the built-in config, and one in the original Wan layout (ComfyUI's) loads from models/vae."""
    import shutil

    from safetensors.torch import save_file

    from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError
    from comfyui_cosmos3_ltx2.cosmos3.loader import WAN22_VAE_CONFIG, load_vae

    demo = cosmos3_nodes.resolve_model_path("cosmos3", DEMO)
    with comfyui_standin(str(tmp_path)) as rec:
        (tmp_path / "cosmos3").mkdir(exist_ok=True)  # (registering the folder made it)
        shutil.copytree(demo, tmp_path / "cosmos3" / "TinyCopy")
        rec.folders["diffusion_models"] = [str(tmp_path / "dm")]
        (tmp_path / "dm").mkdir()
        shutil.copy(demo / "transformer" / "diffusion_pytorch_model.safetensors", tmp_path / "dm" / "t.safetensors")
        model, = M["Cosmos3ModelLoader"]().load("t.safetensors", "fp32", "cpu", tokenizer="TinyCopy")
        assert model.transformer.config.hidden_size == 32
    bare = tmp_path / "wan.safetensors"
    save_file({"post_quant_conv.weight": torch.zeros(48, 48, 1, 1, 1)}, str(bare))
    with pytest.raises(CheckpointError, match="does not look like"):  # the built-in config was used
        load_vae(bare, dtype="fp32")
    assert WAN22_VAE_CONFIG["z_dim"] == 48 and len(WAN22_VAE_CONFIG["latents_std"]) == 48

    # ComfyUI's own Wan2.2 VAE file (Wan's original key layout) from models/vae, through the node
    from helpers.cosmos3_wan_vae_ref import write_original

    (tmp_path / "vae").mkdir()
    path, meta, expected = write_original("wan22", tmp_path / "vae")
    with comfyui_standin(str(tmp_path)) as rec:
        rec.folders["vae"] = [str(tmp_path / "vae")]
        assert path.name in M["Cosmos3VAELoader"].INPUT_TYPES()["required"]["vae"][0]
        vae, = M["Cosmos3VAELoader"]().load(path.name, "fp32", "cpu")
        model = vae.load()
        assert model.z_dim == 48 and model.config["is_residual"] and model.config["base_dim"] == meta["args"]["dim"]
