"""LTX-2 / LTX-2.3 one-stage text-to-video+audio pipeline, as plain stage functions over plain data.

Stages (each a function; the sampler follows k-diffusion's ``sampler(model, x, sigmas, callback)`` shape):

1. :func:`encode_prompt` -- Gemma hidden states -> (video context, audio context, mask), once per prompt.
2. :func:`latent_shape`, :func:`pack_video` / :func:`unpack_video`, :func:`pack_audio` /
   :func:`unpack_audio`, :func:`positions` -- latent geometry, token packing (patch size 1) and the
   rotary tables of one resolution (built once, reused by every step).
3. :class:`LTX2Denoiser` -- the guided model ``model((video_x, audio_x), sigma) -> (video_x0, audio_x0)``:
   runs the passes that the guidance scales need (:func:`core.guidance.needed_passes`), converts each
   velocity to x0 (``x0 = x - sigma * v``) and combines them per modality in x0 space
   (:func:`core.guidance.multipass_guidance`).
4. Sampling: any sampler of :mod:`core.sampling` steps the (video, audio) pair as it is (their contract takes a
   tuple of tensors), e.g. ``sample_euler(model, (video, audio), sigmas)``.
5. :func:`decode` -- latents -> frames [T, H, W, 3] in [0, 1], waveform, sample rate.

Latents between the stages are the diffusion model's *normalised* packed tokens: video [B, F*H*W, C]
(token order f, h, w) and audio [B, T, C*M] (feature c*M + m).

Two ways to run the guidance passes (``strategy``), giving the same numbers up to float32 rounding:

* ``"batched"``: all passes concatenated along the batch and run in one call, each with its own switches
  (the transformer's ``per_item``: STG blocks and cross-modal attention off per sample). Only prompt
  contexts of different lengths (which cannot share a batch) split it into more calls.
* ``"split"``: one transformer call per pass (the official / HQ path; lowest peak memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..core.guidance import multipass_guidance, needed_passes
from .transformer import TokenTimesteps

__all__ = [
    "Guidance",
    "LatentShape",
    "LTX2Denoiser",
    "encode_prompt",
    "latent_shape",
    "pack_video",
    "unpack_video",
    "pack_audio",
    "unpack_audio",
    "positions",
    "decode",
]


# --------------------------------------------------------------------------------------------------
# 1. Prompt


@torch.no_grad()
def encode_prompt(connectors, hidden_states, attention_mask: torch.Tensor, padding_side: str = "left"
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gemma hidden states (list of [B, T, D], [B, T, D, L] or flattened [B, T, D*L]) and their [B, T]
    mask (1 = real token) -> (video context, audio context, context mask [B, T]).

    Run once per prompt (and once for the negative prompt); every denoising step reuses the result.
    """
    if attention_mask.ndim != 2:
        raise ValueError(f"encode_prompt: attention_mask must be [batch, tokens], got shape {tuple(attention_mask.shape)}")
    return connectors(hidden_states, attention_mask, padding_side=padding_side)


# --------------------------------------------------------------------------------------------------
# 2. Latent geometry and packing


@dataclass(frozen=True)
class LatentShape:
    """Latent geometry of one request. ``frames/height/width`` are latent sizes, ``fps`` the video rate."""

    batch: int
    video_channels: int
    frames: int
    height: int
    width: int
    audio_channels: int
    audio_frames: int
    mel_bins: int
    fps: float

    @property
    def video_tokens(self) -> int:
        return self.frames * self.height * self.width

    @property
    def video_packed(self) -> tuple[int, int, int]:
        return (self.batch, self.video_tokens, self.video_channels)

    @property
    def audio_packed(self) -> tuple[int, int, int]:
        return (self.batch, self.audio_frames, self.audio_channels * self.mel_bins)

    @property
    def video_5d(self) -> tuple[int, int, int, int, int]:
        return (self.batch, self.video_channels, self.frames, self.height, self.width)

    @property
    def audio_4d(self) -> tuple[int, int, int, int]:
        return (self.batch, self.audio_channels, self.audio_frames, self.mel_bins)


def latent_shape(frames: int, height: int, width: int, fps: float = 24.0, *, batch: int = 1,
                 video_channels: int = 128, audio_channels: int = 8, mel_bins: int = 16,
                 temporal_compression: int = 8, spatial_compression: int = 32,
                 audio_latents_per_second: float = 25.0) -> LatentShape:
    """Latent sizes for ``frames`` pixel frames of ``height`` x ``width`` at ``fps``.

    ``frames`` must be 8k + 1 and ``height`` / ``width`` multiples of 32 (the VAE's compression); the
    audio latent covers ``frames / fps`` seconds at ``audio_latents_per_second`` (25 for the released
    audio VAE: 16 kHz, hop 160, 4x), rounded to the nearest frame. ``mel_bins`` is the latent mel width
    (64 mel bins / 4).
    """
    for name, value in (("frames", frames), ("height", height), ("width", width), ("batch", batch)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"LTX-2 latent shape: {name} must be a positive integer, got {value!r}")
    if (frames - 1) % temporal_compression:
        lo = (frames - 1) // temporal_compression * temporal_compression + 1
        raise ValueError(f"LTX-2 latent shape: frames must be {temporal_compression}k + 1 (e.g. {lo} or "
                         f"{lo + temporal_compression}), got {frames}")
    for name, value in (("height", height), ("width", width)):
        if value % spatial_compression:
            raise ValueError(f"LTX-2 latent shape: {name} must be a multiple of {spatial_compression}, got {value}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"LTX-2 latent shape: fps must be a positive number, got {fps!r}")
    audio_frames = round(frames / float(fps) * audio_latents_per_second)
    return LatentShape(
        batch=int(batch), video_channels=int(video_channels), frames=(frames - 1) // temporal_compression + 1,
        height=height // spatial_compression, width=width // spatial_compression,
        audio_channels=int(audio_channels), audio_frames=max(int(audio_frames), 1), mel_bins=int(mel_bins),
        fps=float(fps),
    )


def pack_video(z: torch.Tensor) -> torch.Tensor:
    """[B, C, F, H, W] -> [B, F*H*W, C], tokens in (f, h, w) order (patch size 1)."""
    if z.ndim != 5:
        raise ValueError(f"pack_video: expected [B, C, F, H, W], got shape {tuple(z.shape)}")
    return z.flatten(2).transpose(1, 2)


def unpack_video(tokens: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """[B, F*H*W, C] -> [B, C, F, H, W] (latent sizes)."""
    b, s, c = tokens.shape
    if s != frames * height * width:
        raise ValueError(f"unpack_video: {s} tokens do not fill a {frames}x{height}x{width} latent grid")
    return tokens.transpose(1, 2).reshape(b, c, frames, height, width)


def pack_audio(z: torch.Tensor) -> torch.Tensor:
    """[B, C, T, M] -> [B, T, C*M] (feature index c*M + m)."""
    if z.ndim != 4:
        raise ValueError(f"pack_audio: expected [B, C, T, M], got shape {tuple(z.shape)}")
    return z.transpose(1, 2).flatten(2)


def unpack_audio(tokens: torch.Tensor, channels: int) -> torch.Tensor:
    """[B, T, C*M] -> [B, C, T, M]."""
    b, t, f = tokens.shape
    if f % channels:
        raise ValueError(f"unpack_audio: {f} features are not a multiple of {channels} channels")
    return tokens.reshape(b, t, channels, f // channels).transpose(1, 2)


def positions(transformer, shape: LatentShape, device=None, extra_video_coords: torch.Tensor | None = None):
    """The transformer's rotary tables for this latent geometry (batch 1: they broadcast over any batch,
    including the pass-expanded one). Build once per resolution and pass to :class:`LTX2Denoiser`.
    ``extra_video_coords`` ([B, 3, K, 2]) are the positions of tokens appended after the video tokens
    (keyframes; see :mod:`.hq`)."""
    vc = transformer.video_coords(1, shape.frames, shape.height, shape.width, fps=shape.fps, device=device)
    if extra_video_coords is not None:
        vc = torch.cat([vc, extra_video_coords[:1].to(device=vc.device)], dim=2)
    ac = transformer.audio_coords(1, shape.audio_frames, device=device)
    return transformer.rope(vc, ac)


# --------------------------------------------------------------------------------------------------
# 3. Guided denoiser


@dataclass(frozen=True)
class Guidance:
    """Guidance of one modality: ``cfg`` (1 = off), ``stg`` (0 = off) applied with self-attention skipped
    in ``stg_blocks``, ``modality`` (1 = off; isolation of the audio<->video cross-attention) and
    ``rescale`` (0 = off; global-std rescale toward the conditional estimate)."""

    cfg: float = 1.0
    stg: float = 0.0
    stg_blocks: tuple[int, ...] = ()
    modality: float = 1.0
    rescale: float = 0.0


def _check_guidance(g: Guidance, name: str, num_layers: int) -> Guidance:
    for field in ("cfg", "stg", "modality", "rescale"):
        v = getattr(g, field)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"LTX2Denoiser: {name}.{field} must be a finite number, got {v!r}")
    blocks = tuple(int(b) for b in g.stg_blocks)
    bad = [b for b in blocks if not 0 <= b < num_layers]
    if bad:
        raise ValueError(f"LTX2Denoiser: {name}.stg_blocks {bad} out of range for a {num_layers}-block transformer")
    if g.stg != 0 and not blocks:
        raise ValueError(f"LTX2Denoiser: {name}.stg is {g.stg} but {name}.stg_blocks is empty (STG would do nothing)")
    return Guidance(float(g.cfg), float(g.stg), blocks, float(g.modality), float(g.rescale))


class _SharedPrefix(NamedTuple):
    """Call ``target`` (the STG pass) starts at ``block`` from the states call ``source`` (the conditional
    pass) had entering that block; indices into :attr:`LTX2Denoiser.groups`."""

    source: int
    target: int
    block: int


class LTX2Denoiser:
    """``model((video_x, audio_x), sigma) -> (video_x0, audio_x0)``: the guided clean estimates.

    Args:
        transformer: :class:`ltx2.transformer.LTX2Transformer` (takes sigmas, returns velocities).
        video_context, audio_context, mask: positive prompt from :func:`encode_prompt`.
        neg_video_context, neg_audio_context, neg_mask: negative prompt (needed when a cfg is not 1).
        rope: tables from :func:`positions`.
        video, audio: :class:`Guidance` per modality.
        strategy: ``"batched"`` (all passes in one call, per-sample switches) or ``"split"`` (one call per
            pass).
        share_prefix: in ``"split"``, run the STG pass from the conditional pass's states at its first
            perturbed block (identical numbers; saves those blocks' work).

    ``sigma`` is a Python float (one noise level for the whole batch). Inputs are packed normalised
    latents; x0 are returned in float32. No host synchronisation.
    """

    def __init__(self, transformer, video_context: torch.Tensor, audio_context: torch.Tensor,
                 mask: torch.Tensor | None = None, neg_video_context: torch.Tensor | None = None,
                 neg_audio_context: torch.Tensor | None = None, neg_mask: torch.Tensor | None = None, *,
                 rope, video: Guidance = Guidance(), audio: Guidance = Guidance(), strategy: str = "batched",
                 share_prefix: bool = True):
        if strategy not in ("batched", "split"):
            raise ValueError(f"LTX2Denoiser: strategy must be 'batched' or 'split', got {strategy!r}")
        layers = len(transformer.transformer_blocks)
        self.video = _check_guidance(video, "video", layers)
        self.audio = _check_guidance(audio, "audio", layers)
        self.transformer = transformer
        self.rope = rope
        self.strategy = strategy
        v, a = self.video, self.audio
        self.passes = needed_passes((v.cfg, a.cfg), (v.stg, a.stg), (v.modality, a.modality))
        if "neg" in self.passes and (neg_video_context is None or neg_audio_context is None):
            raise ValueError("LTX2Denoiser: a cfg scale is not 1, so the negative prompt contexts are required")
        dtype = next(transformer.parameters()).dtype
        self.dtype = dtype

        def prep(t):
            return None if t is None else t.to(dtype=dtype)

        pos = (prep(video_context), prep(audio_context), mask)
        neg = (prep(neg_video_context), prep(neg_audio_context), neg_mask)
        # (contexts, switches) of each pass; switches are the transformer's per-call keyword arguments
        specs = {
            "cond": (pos, {}),
            "neg": (neg, {}),
            "perturbed": (pos, {
                "skip_video_self_attn_blocks": v.stg_blocks if v.stg != 0 else (),
                "skip_audio_self_attn_blocks": a.stg_blocks if a.stg != 0 else (),
            }),
            "modality": (pos, {"disable_a2v": True, "disable_v2a": True}),
        }
        # groups of passes run in one call: (names, video ctx, audio ctx, mask, switches of each pass)
        groups: list[list] = []
        for name in self.passes:
            ctx, switches = specs[name]
            if strategy == "batched":
                for g in groups:
                    if g[1].shape[1:] == ctx[0].shape[1:] and g[2].shape[1:] == ctx[1].shape[1:]:
                        g[0].append(name)
                        g[1] = torch.cat([g[1], ctx[0]])
                        g[2] = torch.cat([g[2], ctx[1]])
                        g[3] = _cat_masks(g[3], ctx[2], g[1].shape[0] - ctx[0].shape[0], ctx[0])
                        g[4].append(switches)
                        break
                else:
                    groups.append([[name], ctx[0], ctx[1], ctx[2], [switches]])
            else:
                groups.append([[name], ctx[0], ctx[1], ctx[2], [switches]])
        self.groups = [tuple(g) for g in groups]
        # The STG pass equals the conditional pass up to the first block it perturbs: with ``share_prefix`` (split
        # passes, one call each) it starts there from the conditional pass's states. The transformer only runs
        # ranges of blocks; which calls share what is decided here.
        self._share: _SharedPrefix | None = None
        stg_blocks = set(specs["perturbed"][1]["skip_video_self_attn_blocks"]) | set(
            specs["perturbed"][1]["skip_audio_self_attn_blocks"])
        if share_prefix and strategy == "split" and "perturbed" in self.passes and stg_blocks and min(stg_blocks) > 0:
            gc, gp = self.passes.index("cond"), self.passes.index("perturbed")
            if gc < gp:
                self._share = _SharedPrefix(gc, gp, min(stg_blocks))

    def calls(self) -> int:
        """Transformer calls per evaluation."""
        return len(self.groups)

    @torch.no_grad()
    def __call__(self, x: tuple[torch.Tensor, torch.Tensor], sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        vx, ax = x
        return self.guided(vx, ax, float(sigma))

    def guided(self, vx: torch.Tensor, ax: torch.Tensor, sigma: float, timestep: torch.Tensor | None = None,
               video_sigma: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided (video_x0, audio_x0). ``timestep`` ([B, S] per-token video sigmas, or a
        :class:`~ltx2.transformer.TokenTimesteps`) and ``video_sigma``
        ([B, S, 1], the sigma of each video token in ``x0 = x - sigma * v``) serve conditioned tokens."""
        vin, ain = vx.to(self.dtype), ax.to(self.dtype)
        vxf, axf = vx.float(), ax.float()
        est: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        tr = self.transformer
        shared = None  # the conditional pass's states entering the first STG block (share_prefix)
        tables: dict[int, dict] = {}  # the AdaLN tables per call batch: all passes run at the same sigma
        for gi, (names, vctx, actx, mask, switches) in enumerate(self.groups):
            n = len(names)
            if vctx.shape[0] != n * vx.shape[0]:
                raise ValueError(f"{type(self).__name__}: prompt contexts have batch {vctx.shape[0] // n}, "
                                 f"latents {vx.shape[0]}")
            v_in = vin if n == 1 else torch.cat([vin] * n)
            a_in = ain if n == 1 else torch.cat([ain] * n)
            if n not in tables:
                steps = timestep if timestep is None or n == 1 else (
                    timestep.repeat(n) if isinstance(timestep, TokenTimesteps) else timestep.repeat(n, 1))
                tables[n] = tr.time_conditioning(sigma, timestep=steps, batch=v_in.shape[0], device=v_in.device)
            # one set of switches for the whole call, or one per pass (row block)
            switch = switches[0] if all(sw == switches[0] for sw in switches) else {"per_item": switches}
            inputs = tr.prepare(vctx, actx, sigma, batch=v_in.shape[0], device=v_in.device, rope=self.rope,
                                encoder_attention_mask=mask, audio_encoder_attention_mask=mask,
                                conditioning=tables[n], **switch)
            share = self._share
            if share is not None and gi == share.target:  # resume from the conditional pass's states
                states, first = shared, share.block
            else:
                states, first = tr.embed(v_in, a_in), 0
            if share is not None and gi == share.source:  # keep the states entering the shared block
                states = shared = tr.run_blocks(states, inputs, 0, share.block)
                first = share.block
            vel, avel = tr.head(tr.run_blocks(states, inputs, first), inputs)
            for name, v_, a_ in zip(names, vel.chunk(n), avel.chunk(n)):
                # x0 = x - sigma * v, in float32
                v0 = (torch.sub(vxf, v_.float(), alpha=sigma) if video_sigma is None
                      else vxf - v_.float() * video_sigma)
                est[name] = (v0, torch.sub(axf, a_.float(), alpha=sigma))
        out = []
        for i, g in enumerate((self.video, self.audio)):
            def get(name):
                return est[name][i] if name in est else None
            out.append(multipass_guidance(get("cond"), get("neg"), get("perturbed"), get("modality"),
                                          cfg=g.cfg, stg=g.stg, modality=g.modality, rescale=g.rescale))
        return out[0], out[1]


def _cat_masks(a: torch.Tensor | None, b: torch.Tensor | None, rows_a: int, ref: torch.Tensor):
    """Concatenate two optional [B, L] masks (a missing one means all tokens kept)."""
    if a is None and b is None:
        return None
    if a is None:
        a = torch.ones(rows_a, ref.shape[1], dtype=b.dtype, device=b.device)
    if b is None:
        b = torch.ones(ref.shape[0], ref.shape[1], dtype=a.dtype, device=a.device)
    return torch.cat([a, b.to(a.dtype)])


# --------------------------------------------------------------------------------------------------
# 5. Decode


@torch.no_grad()
def decode(video_vae, audio_vae, vocoder, video_latents: torch.Tensor, audio_latents: torch.Tensor,
           shape: LatentShape | None = None, *, temporal_chunk: int | None = None,
           spatial_tile: int | None = None, spatial_overlap: int = 64
           ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Normalised latents -> (frames, waveform, sample_rate).

    ``video_latents``: [B, C, F, H, W], or packed [B, S, C] with ``shape``; ``audio_latents``: [B, C, T, M]
    or packed [B, T, C*M]. Frames are float32 [T, H, W, 3] in [0, 1] (batches are stacked along T:
    [B*T, H, W, 3], ComfyUI's IMAGE layout); the waveform is float32 [B, channels, samples].
    ``temporal_chunk``, ``spatial_tile`` and ``spatial_overlap`` go to the video VAE's decode.
    """
    if video_latents.ndim == 3:
        if shape is None:
            raise ValueError("decode: packed video latents need the LatentShape (`shape`)")
        video_latents = unpack_video(video_latents, shape.frames, shape.height, shape.width)
    if audio_latents.ndim == 3:
        audio_latents = unpack_audio(audio_latents, audio_vae.latent_channels)
    z = video_vae.denormalize_latents(video_latents.to(device=video_vae.device, dtype=torch.float32))
    video = video_vae.decode(z.to(video_vae.dtype), temporal_chunk=temporal_chunk, spatial_tile=spatial_tile,
                             spatial_overlap=spatial_overlap)
    frames = (video.float() / 2 + 0.5).clamp_(0.0, 1.0).permute(0, 2, 3, 4, 1).flatten(0, 1)
    mel = audio_vae.decode(audio_latents, normalized=True)
    wave = vocoder(mel.to(device=vocoder.device, dtype=vocoder.dtype)).float()
    return frames, wave, int(vocoder.sampling_rate)
