"""Checkpoint layouts the Cosmos3 loader reads, and scheduler options carried through a whole run."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_cosmos3_ltx2.cosmos3 import generate
from comfyui_cosmos3_ltx2.cosmos3.loader import load_transformer, load_vae
from helpers.cosmos3_oracle import reference_pipeline, reference_transformer, reference_vae
from helpers.measures import psnr


def same_weights(ours, ref_sd):
    sd = ours.state_dict()
    for k, v in sd.items():
        assert torch.equal(v.float(), ref_sd[k].float()), k


def test_sharded_transformer_folder(tmp_path):
    ref = reference_transformer(seed=1)
    ref.save_pretrained(tmp_path, max_shard_size="30KB")
    assert (tmp_path / "diffusion_pytorch_model.safetensors.index.json").is_file()
    same_weights(load_transformer(tmp_path, dtype="fp32"), ref.state_dict())


def test_single_file_with_config_in_metadata_and_beside(tmp_path):
    ref = reference_transformer(seed=2)
    ref.save_pretrained(tmp_path / "folder")
    cfg = (tmp_path / "folder" / "config.json").read_text()
    sd = load_file(str(tmp_path / "folder" / "diffusion_pytorch_model.safetensors"))
    single = tmp_path / "cosmos3_transformer.safetensors"
    save_file(sd, str(single), metadata={"config": cfg})
    same_weights(load_transformer(single, dtype="fp32"), ref.state_dict())
    # Config beside the file instead of in the header.
    bare = tmp_path / "beside" / "model.safetensors"
    bare.parent.mkdir()
    save_file(sd, str(bare))
    (bare.parent / "config.json").write_text(cfg)
    same_weights(load_transformer(bare, dtype="fp32"), ref.state_dict())


def test_vae_single_file(tmp_path):
    vae = reference_vae(seed=3)
    vae.save_pretrained(tmp_path / "vae")
    cfg = (tmp_path / "vae" / "config.json").read_text()
    f = tmp_path / "wan2.2_vae.safetensors"
    save_file(load_file(str(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")), str(f),
              metadata={"config": cfg})
    ours = load_vae(f, dtype="fp32")
    same_weights(ours, vae.state_dict())
    assert ours.latents_std == json.loads(cfg)["latents_std"]


def test_bf16_load_keeps_time_embedder_fp32(tmp_path):
    reference_transformer(seed=4).save_pretrained(tmp_path)
    model = load_transformer(tmp_path, dtype="bf16")
    assert model.proj_in.weight.dtype == torch.bfloat16
    assert model.layers[0].mlp_moe_gen.up_proj.weight.dtype == torch.bfloat16
    assert model.time_embedder.linear_1.weight.dtype == torch.float32
    assert not any(p.device.type == "meta" for p in model.parameters())


@pytest.mark.parametrize(
    "sched,index",
    [
        (dict(use_karras_sigmas=True, solver_order=3), {}),
        # (bh1 is covered step by step in test_sampling.py: diffusers' bh1 turns NaN on the final step to
        # sigma 0, so a whole bh1 run has no finite reference.)
        (dict(solver_order=1, flow_shift=3.0), {}),
        ({}, dict(use_native_flow_schedule=True, default_use_system_prompt=False)),
    ],
    ids=["karras-order3", "order1-shift3", "native-no-system-prompt"],
)
def test_scheduler_and_pipeline_options_follow_the_checkpoint(tmp_path, sched, index):
    pipe = reference_pipeline(tmp_path, seed=2, scheduler_overrides=sched, **index)
    kw = dict(num_frames=5, height=32, width=32)
    want = pipe(prompt="a boat", num_inference_steps=5, guidance_scale=3.0,
                generator=torch.Generator().manual_seed(11), output_type="np", **kw).video
    got = generate(tmp_path, "a boat", steps=5, guidance=3.0, seed=11, device="cpu", dtype="fp32", **kw)
    assert psnr(got.numpy(), want) >= 40.0
