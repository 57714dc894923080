"""Tiny Cosmos3 reference models built with diffusers (the test oracle; never imported by the pack)."""

from __future__ import annotations

import torch

TINY_TRANSFORMER = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    intermediate_size=64,
    rope_axes_dim=[4, 2, 2],
    vocab_size=300,
)
EDGE_SWITCHES = dict(hidden_act="relu2", qk_norm_for_text=False, use_und_k_norm_for_gen=True)


def randomize_(module: torch.nn.Module, seed: int, scale: float = 0.2) -> None:
    """Perturb every parameter so that norms and biases are not at their identity values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def reference_transformer(seed: int = 0, **overrides):
    from diffusers import Cosmos3OmniTransformer

    torch.manual_seed(seed)
    model = Cosmos3OmniTransformer(**{**TINY_TRANSFORMER, **overrides}).eval()
    randomize_(model, seed + 1)
    return model


def reference_velocity(ref, input_ids: list[int], latents: torch.Tensor, timestep: int, fps: float,
                       condition_frames: list[int] = (), sound: torch.Tensor | None = None):
    """One diffusers transformer forward laid out exactly as Cosmos3OmniPipeline packs it.

    With ``sound`` (latents ``[sound_dim, T_s]``, all noisy) the sound tokens follow the vision tokens, their
    mRoPE ids made by the pipeline's ``_prepare_sound_segment`` rule, and the result is ``(video, sound)``.
    """
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import (
        get_3d_mrope_ids_text_tokens,
        get_3d_mrope_ids_vae_tokens,
    )

    cfg = ref.config
    L = len(input_ids)
    text_ids, nxt = get_3d_mrope_ids_text_tokens(L, 0, use_float_positions=cfg.enable_fps_modulation)
    _, _, T, H, W = latents.shape
    p = cfg.latent_patch_size
    hp, wp = -(-H // p), -(-W // p)
    vis_ids, _ = get_3d_mrope_ids_vae_tokens(
        T, hp, wp, nxt + cfg.unified_3d_mrope_temporal_modality_margin,
        reset_spatial_indices=cfg.unified_3d_mrope_reset_spatial_ids,
        fps=fps if cfg.enable_fps_modulation else None, base_fps=float(cfg.base_fps), temporal_compression_factor=4,
    )
    noisy = [f for f in range(T) if f not in set(condition_frames)]
    stride = hp * wp
    mse = [L + f * stride + j for f in noisy for j in range(stride)]
    n_vis = T * stride
    sound_kw, ids, n_sound = {}, [text_ids, vis_ids], 0
    if sound is not None:
        n_sound = sound.shape[1]
        snd_ids, _ = get_3d_mrope_ids_vae_tokens(
            n_sound, 1, 1, nxt + cfg.unified_3d_mrope_temporal_modality_margin,
            reset_spatial_indices=cfg.unified_3d_mrope_reset_spatial_ids,
            fps=float(cfg.sound_latent_fps) if cfg.enable_fps_modulation else None, base_fps=float(cfg.base_fps),
            temporal_compression_factor=1,
        )
        ids.append(snd_ids)
        seq = torch.arange(L + n_vis, L + n_vis + n_sound)
        sound_kw = dict(sound_tokens=[sound], sound_token_shapes=[(n_sound, 1, 1)], sound_sequence_indexes=seq,
                        sound_mse_loss_indexes=seq.clone(), sound_timesteps=torch.full((n_sound,), timestep),
                        sound_noisy_frame_indexes=[torch.arange(n_sound)])
    out = ref(
        input_ids=torch.tensor(input_ids),
        text_indexes=torch.arange(L),
        position_ids=torch.cat(ids, dim=1),
        und_len=L,
        sequence_length=L + n_vis + n_sound,
        vision_tokens=[latents],
        vision_token_shapes=[(T, hp, wp)],
        vision_sequence_indexes=torch.arange(L, L + n_vis),
        vision_mse_loss_indexes=torch.tensor(mse, dtype=torch.long),
        vision_timesteps=torch.full((len(noisy) * stride,), timestep),
        vision_noisy_frame_indexes=[torch.tensor(noisy, dtype=torch.long)],
        return_dict=False,
        **sound_kw,
    )
    return out[0][0] if sound is None else (out[0][0], out[1][0])


TINY_VAE = dict(
    base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
    temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
    scale_factor_spatial=16, scale_factor_temporal=4,
)


def reference_vae(seed: int = 0):
    from diffusers import AutoencoderKLWan

    g = torch.Generator().manual_seed(seed + 100)
    mean = (torch.randn(48, generator=g) * 0.2).tolist()
    std = (torch.rand(48, generator=g) * 0.8 + 0.4).tolist()
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**TINY_VAE, latents_mean=mean, latents_std=std).eval()
    randomize_(vae, seed + 1, scale=0.05)
    return vae


def reference_pipeline(folder, seed: int = 0, scheduler_overrides: dict | None = None, sound: bool | dict = False,
                       **model_index):
    """A tiny random Cosmos3OmniPipeline saved with ``save_pretrained`` into ``folder`` (the real layout);
    ``sound``: sound-capable (``sound_gen`` transformer and a ``sound_tokenizer/``; a dict overrides
    :data:`TINY_SOUND`)."""
    from diffusers import Cosmos3OmniPipeline, UniPCMultistepScheduler
    from transformers import AutoTokenizer

    from comfyui_cosmos3_ltx2.cosmos3.tiny import SCHEDULER_CONFIG, write_tokenizer

    tok_dir = write_tokenizer(folder / "_tok")
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    sched = {k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")}
    sched.update(scheduler_overrides or {})
    pipe = Cosmos3OmniPipeline(
        transformer=reference_transformer(seed, vocab_size=272, **(SOUND_TRANSFORMER if sound else {})),
        text_tokenizer=tok,
        vae=reference_vae(seed),
        scheduler=UniPCMultistepScheduler(**sched),
        enable_safety_checker=False,
        **({"sound_tokenizer": reference_sound_tokenizer(seed, **(sound if isinstance(sound, dict) else {}))}
           if sound else {}),
        **model_index,
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(str(folder))
    return pipe


# A tiny sound tokenizer: 8 latent channels, hop 2*3 = 6 samples at 150 Hz, i.e. 25 latent frames a second
# (the released one: 64 channels, hop 1920 at 48 kHz, also 25 a second). The encoder is built and saved too, as
# in a full AVAE checkpoint; our decoder skips it.
TINY_SOUND = dict(
    sampling_rate=150, vocoder_input_dim=8, dec_dim=4, dec_c_mults=[1, 2], dec_strides=[2, 3], dec_out_channels=2,
    enc_dim=4, enc_latent_dim=16, enc_c_mults=[1, 2], enc_strides=[2, 3], enc_n_fft=8, enc_hop_length=2,
)
SOUND_TRANSFORMER = dict(sound_gen=True, sound_dim=8, sound_latent_fps=25.0)


def reference_sound_tokenizer(seed: int = 0, **overrides):
    from diffusers.models.autoencoders.autoencoder_cosmos3_audio import Cosmos3AVAEAudioTokenizer

    torch.manual_seed(seed)
    model = Cosmos3AVAEAudioTokenizer(**{**TINY_SOUND, **overrides}).eval()
    randomize_(model, seed + 1, scale=0.1)
    return model
