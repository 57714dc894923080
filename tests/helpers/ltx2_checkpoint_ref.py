"""Tiny whole LTX-2 / LTX-2.3 checkpoints in the real on-disk formats (official single file and diffusers
folder), a tiny Gemma-3 folder, and the HQ run's files (a well-conditioned checkpoint, upsampler, LoRA, picture).
The fixtures of tests/ltx2/conftest.py build them; tests read the builders' outputs only through those fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from comfyui_cosmos3_ltx2.ltx2 import loader
from comfyui_cosmos3_ltx2.ltx2.audio_vae import LTX2AudioVAE
from comfyui_cosmos3_ltx2.ltx2.text import LTX2TextConnectors
from comfyui_cosmos3_ltx2.ltx2.transformer import LTX2Transformer
from comfyui_cosmos3_ltx2.ltx2.video_vae import LTX2VideoVAE
from comfyui_cosmos3_ltx2.ltx2.vocoder import build_vocoder

from . import ltx2_audio_ref as t_audio
from . import ltx2_text_ref as t_text
from . import ltx2_transformer_ref as t_tr
from . import ltx2_upsampler_ref as t_up
from . import ltx2_video_vae_ref as t_vae

VERSIONS = ("2.0", "2.3")


def tiny_configs(version: str) -> dict:
    v23 = version == "2.3"
    voc = dict(t_audio.VOC_23 if v23 else t_audio.VOC_20)
    voc["_class_name"] = "LTX2VocoderWithBWE" if v23 else "LTX2Vocoder"
    return {
        "transformer": dict(t_tr.CONFIGS[version]),
        "connectors": dict(t_text.V23 if v23 else t_text.V20),
        "video_vae": dict(t_vae.TINY_23 if v23 else t_vae.TINY_20),
        "audio_vae": dict(t_audio.VAE_23 if v23 else t_audio.VAE_20),
        "vocoder": voc,
    }


def _build(component: str, cfg: dict) -> torch.nn.Module:
    if component == "transformer":
        return LTX2Transformer(cfg)
    if component == "connectors":
        return LTX2TextConnectors(cfg)
    if component == "video_vae":
        return LTX2VideoVAE(cfg)
    if component == "audio_vae":
        return LTX2AudioVAE(cfg)
    return build_vocoder(cfg)


def _random_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random, bf16-representable values for every floating tensor (so bf16 files are lossless)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        if v.is_floating_point():
            v = (torch.randn(v.shape, generator=g) * 0.1).to(torch.bfloat16).float()
        out[k] = v.clone().contiguous()
    module.load_state_dict(out)
    return out


def _off_audio_vae(k: str) -> str:
    if k == "latents_mean":
        return "audio_vae.per_channel_statistics.mean-of-means"
    if k == "latents_std":
        return "audio_vae.per_channel_statistics.std-of-means"
    return "audio_vae." + k


def _off_vocoder(k: str) -> str:
    for head in ("vocoder.", "bwe_generator."):
        if k.startswith(head):
            return "vocoder." + head + _off_vocoder(k[len(head):])[len("vocoder."):]
    if k.startswith("mel_stft."):
        return "vocoder." + k
    for new, old in (("conv_in.", "conv_pre."), ("conv_out.", "conv_post."), ("act_out.", "act_post."),
                     ("upsamplers.", "ups."), ("resnets.", "resblocks.")):
        if k.startswith(new):
            k = old + k[len(new):]
            break
    if k.endswith(".downsample.filter"):
        k = k[: -len(".filter")] + ".lowpass.filter"
    return "vocoder." + k

_TO_OFFICIAL = {
    "transformer": t_tr.to_official_key,
    "connectors": t_text.to_official_key,
    "video_vae": lambda k: t_vae.to_official_key(k, 4),
    "audio_vae": _off_audio_vae,
    "vocoder": _off_vocoder,
}


def _official_config(version: str, cfgs: dict) -> dict:
    v23 = version == "2.3"
    tc = dict(t_tr.official_config(cfgs["transformer"])["transformer"])
    tc.update(t_text.official_config(v23)["transformer"])
    if v23:
        amp = {"resblock": "AMP1", "stereo": True, "activation": "snakebeta", "use_bias_at_final": False}
        vocoder = {"vocoder": dict(amp, upsample_initial_channel=128, upsample_rates=[5, 2, 2, 2, 2, 2],
                                   upsample_kernel_sizes=[11, 4, 4, 4, 4, 4], use_tanh_at_final=False),
                   "bwe": dict(amp, upsample_initial_channel=64, upsample_rates=[6, 5, 2, 2, 2],
                               upsample_kernel_sizes=[12, 11, 4, 4, 4], input_sampling_rate=16000,
                               output_sampling_rate=48000, n_fft=512, hop_length=80, num_mels=64)}
    else:
        vocoder = {"resblock": "1", "stereo": True, "upsample_initial_channel": 64,
                   "upsample_rates": [6, 5, 2, 2, 2], "upsample_kernel_sizes": [16, 15, 8, 4, 4],
                   "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3,
                   "output_sampling_rate": 24000}
    a = cfgs["audio_vae"]
    audio = {"model": {"params": {"sampling_rate": 16000, "ddconfig": {
        "ch": a["base_channels"], "out_ch": 2, "ch_mult": a["ch_mult"], "num_res_blocks": a["num_res_blocks"],
        "z_channels": a["latent_channels"], "resolution": 256, "mel_bins": 64, "norm_type": "pixel",
        "causality_axis": "height", "mid_block_add_attention": a["mid_block_add_attention"],
        "attn_resolutions": [], "dropout": 0.0}}},
        "preprocessing": {"stft": {"hop_length": 160, "causal": True}}}
    return {"transformer": tc, "vae": official_vae(version), "audio_vae": audio, "vocoder": vocoder}


def official_vae(version: str) -> dict:
    """The tiny video VAEs in ltx-core's block-list form (ltx2-oracle.md: decoder_base_channels 8)."""
    res = ["res_x", {"num_layers": 1}]
    enc = [res, ["compress_space_res", {"multiplier": 2}], res, ["compress_time_res", {"multiplier": 2}], res,
           ["compress_all_res", {"multiplier": 2}], res,
           ["compress_all_res", {"multiplier": 1 if version == "2.3" else 2}], res]
    if version == "2.3":
        dec = [res, ["compress_space", {"multiplier": 2}], res, ["compress_time", {"multiplier": 2}], res,
               ["compress_all", {"multiplier": 1}], res, ["compress_all", {"multiplier": 2}], res]
        pad = "zeros"
    else:
        up = ["compress_all", {"residual": True, "multiplier": 2}]
        dec = [res, up, res, up, res, up, res]
        pad = "reflect"
    return {"latent_channels": 16, "patch_size": 4, "encoder_blocks": enc, "decoder_blocks": dec,
            "decoder_base_channels": 8, "norm_layer": "pixel_norm", "latent_log_var": "uniform",
            "encoder_spatial_padding_mode": "zeros", "decoder_spatial_padding_mode": pad,
            "causal_decoder": False, "timestep_conditioning": False}


def write_official(file: Path, tensors: dict, config: dict | None, model_version: str | None) -> Path:
    meta = {}
    if config is not None:
        meta["config"] = json.dumps(config)
    if model_version is not None:
        meta["model_version"] = model_version
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()},
              str(file), metadata=meta)
    return file

_CACHE: dict = {}


def build_tiny_checkpoint(version: str, tmp_path_factory):
    """(version, states per component, diffusers folder, official file, official tensors, official config)."""
    if version in _CACHE:
        return _CACHE[version]
    cfgs = tiny_configs(version)
    root = tmp_path_factory.mktemp(f"ltx2_loader_{version}")
    folder = root / "diffusers"
    states, official = {}, {}
    for i, (comp, cfg) in enumerate(cfgs.items()):
        torch.manual_seed(i)
        module = _build(comp, cfg)
        sd = _random_state(module, 100 + i)
        states[comp] = sd
        sub = folder / loader._SUBFOLDERS[comp]
        sub.mkdir(parents=True)
        (sub / "config.json").write_text(json.dumps(cfg))
        save_file(sd, str(sub / "diffusion_pytorch_model.safetensors"))
        for k, v in sd.items():
            name = _TO_OFFICIAL[comp](k)
            assert name not in official, name
            official[name] = v
    # Unused tensors of the real file, which the loader must skip.
    official["vae.per_channel_statistics.channel"] = torch.arange(16.0)
    official["vae.per_channel_statistics.mean-of-stds"] = torch.ones(16)
    official["audio_vae.per_channel_statistics.mean-of-stds"] = torch.ones(32)
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "LTX2Pipeline", "_diffusers_version": "0.42.1",
        "transformer": ["diffusers", "LTX2VideoTransformer3DModel"], "connectors": ["ltx2", "LTX2TextConnectors"],
        "vae": ["diffusers", "AutoencoderKLLTX2Video"], "audio_vae": ["diffusers", "AutoencoderKLLTX2Audio"],
        "vocoder": ["ltx2", cfgs["vocoder"]["_class_name"]]}))
    ocfg = _official_config(version, cfgs)
    file = write_official(root / f"ltx-{version}-tiny.safetensors", official, ocfg, f"{version}.0")
    _CACHE[version] = (version, states, folder, file, official, ocfg)
    return _CACHE[version]

_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
             "<start_of_image>", "<end_of_image>", "<image_soft_token>"]


def tiny_tokenizer(with_pad: bool = True):
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=512, show_progress=False,
                                  special_tokens=_SPECIALS + [f"<0x{i:02X}>" for i in range(256)])
    corpus = ["a cat walks on the beach at sunset, waves roll in", "the quick brown fox jumps over the lazy dog",
              "a red car drives through the rainy city at night"] * 10
    tok.train_from_iterator(corpus, trainer)
    kw = dict(bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", mask_token="<mask>")
    kw["pad_token"] = "<pad>" if with_pad else None
    return transformers.GemmaTokenizer(tokenizer_object=tok, **kw)


def build_gemma_folder(tmp_path_factory):
    """A tiny random Gemma-3 saved as a Hugging Face folder with its tokenizer: (folder, the model)."""
    import transformers

    text = transformers.Gemma3TextConfig(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=1024, max_position_embeddings=2048,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
        layer_types=["sliding_attention", "full_attention"], pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = transformers.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=28, patch_size=14)
    cfg = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=1,
                                    boi_token_index=7, eoi_token_index=8, image_token_index=9)
    torch.manual_seed(0)
    model = transformers.Gemma3ForConditionalGeneration(cfg).eval()
    folder = tmp_path_factory.mktemp("gemma3_tiny")
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder, model


PROMPT, NEGATIVE = "a cat walks on the beach at sunset", "blurry, low quality"

IMAGE_HW = (80, 112)  # not square: the resize-and-center-crop matters at both stage sizes

_CKPT: dict = {}

# q/k RMSNorm gains. The DiT stays at 1: on top of the fixture's N(0, 0.1) weights a gain of 3 makes the HQ run
# chaotic (a 1e-6 relative change of the prompt context moves the stage-1 latents by 2e-5 at 3 steps and by 2e-4
# at 4; at gain 1 by 1e-6), so fp32 rounding alone would exceed the 1e-4 budget.
QK_GAIN = {"transformer": 1.0, "connectors": 3.0}


def build_hq_checkpoint(tiny, tmp_path_factory):
    """The tiny LTX-2.3 checkpoint of test_ltx2_loader with (a) latent statistics like the real ones (mean
    N(0, 0.5), std U(0.5, 2); the fixture's are N(0, 0.1), down to 0.004 and negative, which blows the
    normalised image / upsampled latents up to ~1e3) and (b) q/k RMSNorm gains ``QK_GAIN`` x U(0.75, 1.25)
    in the DiT and the connectors (the fixture's N(0, 0.1) gains make every attention nearly uniform, so
    RoPE and the prompt would hardly matter). bf16-exact like the rest of the file.
    Returns (official single file, diffusers folder)."""
    if _CKPT:
        return _CKPT["file"], _CKPT["folder"]
    version, states, folder, _, official, ocfg = tiny
    assert version == "2.3"
    g = torch.Generator().manual_seed(2024)
    bf = lambda t: t.to(torch.bfloat16).float()  # noqa: E731
    new = {c: dict(sd) for c, sd in states.items()}
    for comp in ("video_vae", "audio_vae"):
        n = new[comp]["latents_mean"].numel()
        new[comp]["latents_mean"] = bf(torch.randn(n, generator=g) * 0.5)
        new[comp]["latents_std"] = bf(torch.rand(n, generator=g) * 1.5 + 0.5)
    for comp, gain in QK_GAIN.items():
        for k, v in new[comp].items():
            if k.endswith(("norm_q.weight", "norm_k.weight")):
                new[comp][k] = bf(gain * (0.75 + 0.5 * torch.rand(v.shape, generator=g)))
    root = tmp_path_factory.mktemp("ltx2_hq_ckpt")
    out_official = dict(official)
    dst = root / "diffusers"
    shutil.copytree(folder, dst)
    for comp, sd in new.items():
        for k, v in sd.items():
            name = _TO_OFFICIAL[comp](k)
            assert name in out_official, name
            out_official[name] = v
        save_file(sd, str(dst / _SUB[comp] / "diffusion_pytorch_model.safetensors"))
    file = write_official(root / "ltx-2.3-tiny-hq.safetensors", out_official, ocfg, "2.3.0")
    _CKPT.update(file=file, folder=dst, states=new)
    return file, dst

_SUB = {"transformer": "transformer", "connectors": "connectors", "video_vae": "vae", "audio_vae": "audio_vae",
        "vocoder": "vocoder"}


def _lora_state(seed: int = 17, rank: int = 4) -> tuple[dict, dict]:
    """An official-layout LoRA (``diffusion_model.<official name>.lora_A/B.weight``) on every Linear of the
    transformer blocks plus the patchify projections, large enough to move the result visibly (measured
    on this run: no LoRA moves the final latents by 2.5e-1 relative, swapped stage strengths by 1.3e-1,
    0.25 / 0.25 by 1.3e-1; another prompt by 3e-2, seeded instead of reference SDE noise by 6e-1).
    Returns (file state, {our parameter name: (A, B)})."""
    with torch.device("meta"):
        tr = LTX2Transformer(dict(t_tr.CONFIGS["2.3"]))
    g = torch.Generator().manual_seed(seed)
    state, ours = {}, {}
    for name, mod in tr.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        if not (name.startswith("transformer_blocks.") or name in ("proj_in", "audio_proj_in")):
            continue
        out_f, in_f = mod.weight.shape
        a = torch.randn(rank, in_f, generator=g) * 0.2
        b = torch.randn(out_f, rank, generator=g) * 0.2
        off = t_tr.to_official_key(name + ".weight")[len("model."):-len(".weight")]
        state[f"{off}.lora_A.weight"] = a
        state[f"{off}.lora_B.weight"] = b
        ours[name + ".weight"] = (a, b)
    assert len(ours) > 20
    return state, ours

_FILES: dict = {}


def hq_files(tmp_path_factory):
    """Dict: upsampler file + its ltx-core config and state, LoRA file + its factors, PNG path + uint8 image."""
    if _FILES:
        return _FILES
    root = tmp_path_factory.mktemp("ltx2_hq_run")
    kw = t_up.VARIANTS["2.3"]  # LTX-2.3 kind: plain conv + pixel shuffle, 16 latent channels
    ref_up = t_up.build_reference(kw, seed=3)
    up_sd = {k: v.contiguous() for k, v in ref_up.state_dict().items()}
    up_cfg = t_up.official_config(kw)
    up_file = root / "ltx-2.3-spatial-upscaler-x2-tiny.safetensors"
    save_file(up_sd, str(up_file), metadata={"config": json.dumps(up_cfg)})
    lora_sd, factors = _lora_state()
    lora_file = root / "ltx-2.3-tiny-distilled-lora-384.safetensors"
    save_file(lora_sd, str(lora_file))
    g = torch.Generator().manual_seed(5)
    coarse = torch.rand(1, 3, 5, 7, generator=g)
    img = torch.nn.functional.interpolate(coarse, size=IMAGE_HW, mode="bicubic", align_corners=False)
    img = (img + 0.1 * torch.rand(img.shape, generator=g)).clamp(0, 1)
    arr = (img[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    from PIL import Image

    png = root / "first_frame.png"
    Image.fromarray(arr).save(png)
    _FILES.update(up_file=up_file, up_cfg=up_cfg, up_sd=up_sd, lora_file=lora_file, factors=factors, png=png,
                  image=arr)
    return _FILES


def lora_file(path: Path, rank: int = 2, extra: dict | None = None) -> tuple[Path, dict]:
    g = torch.Generator().manual_seed(9)
    targets = {  # official name -> our name, shape (out, in)
        "transformer_blocks.0.attn1.to_q": ("transformer_blocks.0.attn1.to_q", (64, 64)),
        "transformer_blocks.1.audio_attn2.to_out.0": ("transformer_blocks.1.audio_attn2.to_out.0", (32, 32)),
        "patchify_proj": ("proj_in", (64, 16)),
        "adaln_single.linear": ("time_embed.linear", None),
    }
    state, ours = {}, {}
    for off, (name, shape) in targets.items():
        if shape is None:
            continue
        a = torch.randn(rank, shape[1], generator=g) * 0.1
        b = torch.randn(shape[0], rank, generator=g) * 0.1
        state[f"diffusion_model.{off}.lora_A.weight"] = a
        state[f"diffusion_model.{off}.lora_B.weight"] = b
        ours[name + ".weight"] = (a, b)
    state.update(extra or {})
    save_file(state, str(path))
    return path, ours
