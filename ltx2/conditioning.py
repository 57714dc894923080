"""LTX-2.3 image and keyframe conditioning, and the denoiser that honours it.

* First frame (image-to-video): :func:`condition_first_frame` writes the image's latent tokens over the frame-0
  tokens and returns a :class:`VideoCondition` (denoise mask, 1 = denoise, and the clean latent).
* Keyframes (any other frame): :func:`append_keyframe` appends the image's tokens after the video tokens (official
  ``VideoConditionByKeyframeIndex``): they keep their clean values (mask ``1 - strength``), take rotary positions
  of their own (time moved to the pixel frame index) and are dropped after sampling (:func:`strip_appended`).
  :func:`build_condition` applies a list of :class:`ImageLatent` (frame 0 replaces, others append) and
  :func:`conditioned_positions` gives the rotary tables of the grown sequence.
* :class:`ConditionedDenoiser`: :class:`.denoiser.LTX2Denoiser` giving conditioned tokens their own timestep
  ``sigma * mask`` (0 for a clean frame), converting velocity to x0 with that per-token sigma and blending the
  guided x0 with the clean latent; it works with every sampler of :mod:`core.sampling`.
* :func:`noise_latent`: re-noise to a sigma, ``x = noise*(s*mask) + x*(1 - s*mask)``.
* :func:`prepare_pictures` / :func:`picture_latents`: conditioning pictures read (and passed through the official
  H.264 round trip) once, then encoded at the latent size a stage samples at (:mod:`.image`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .denoiser import LTX2Denoiser
from .image import conditioning_pixels, encode_image, source_rgb
from .latents import LatentShape, pack_video, positions
from .transformer import TokenTimesteps


@dataclass(frozen=True)
class VideoCondition:
    """Per-token denoise mask [B, S + K, 1] (float32, 1 = denoise, 0 = keep) and clean latent [B, S + K, C].

    ``keyframe_coords`` ([B, 3, K, 2], :func:`~ltx2.transformer.keyframe_coords`) are the positions of the K
    tokens appended after the S video tokens by :func:`append_keyframe` (None when nothing is appended);
    ``replaced`` counts the leading tokens that :func:`condition_first_frame` wrote over. ``levels`` are the
    mask's distinct values, ascending, as float32-rounded Python floats, when the builder knows them (so that
    the denoiser need not read the mask back from the device); None = read them from the mask.
    """

    mask: torch.Tensor
    clean: torch.Tensor
    keyframe_coords: torch.Tensor | None = None
    replaced: int = 0  # leading tokens written over by a frame-0 image (whatever its strength)
    levels: tuple[float, ...] | None = None

    @property
    def appended(self) -> int:
        """Number of appended keyframe tokens."""
        return 0 if self.keyframe_coords is None else int(self.keyframe_coords.shape[2])


@dataclass(frozen=True)
class ImageLatent:
    """One conditioning image: its normalised latent [B, C, F, h, w] at a stage's latent resolution, the pixel
    frame it stands for (0 = first frame, replaced in place; others appended) and its strength (1 = kept
    clean)."""

    latent: torch.Tensor
    frame_idx: int = 0
    strength: float = 1.0


def condition_first_frame(latent: torch.Tensor, image_latent: torch.Tensor, shape: LatentShape,
                          strength: float = 1.0) -> tuple[torch.Tensor, VideoCondition]:
    """Replace the frame-0 tokens of packed ``latent`` [B, S, C] by the image latent.

    ``image_latent`` is the normalised VAE latent of one frame, [B, C, 1, H, W] (or packed [B, H*W, C]) at the
    latent's resolution. Returns the new latent and its :class:`VideoCondition` (mask ``1 - strength`` on the
    frame-0 tokens; the clean latent is ``latent`` with the same replacement). The frame-0 tokens come back
    un-noised: with ``strength < 1`` noise them with :func:`noise_latent` (``mask``) as the official noiser does.
    """
    if latent.ndim != 3 or latent.shape[1] != shape.video_tokens:
        raise ValueError(f"condition_first_frame: latent must be packed [B, {shape.video_tokens}, C], "
                         f"got {tuple(latent.shape)}")
    if image_latent.ndim == 5:
        b, c, f, h, w = image_latent.shape
        if f != 1 or (h, w) != (shape.height, shape.width):
            raise ValueError(f"condition_first_frame: image latent must be [B, C, 1, {shape.height}, {shape.width}]"
                             f" (the latent's resolution), got {tuple(image_latent.shape)}")
        tokens = pack_video(image_latent)
    else:
        tokens = image_latent
    n = shape.height * shape.width
    if tokens.shape[1] != n or tokens.shape[2] != latent.shape[2]:
        raise ValueError(f"condition_first_frame: image latent has {tuple(tokens.shape)} tokens, expected "
                         f"[B, {n}, {latent.shape[2]}]")
    strength = _check_strength(strength, "condition_first_frame")
    tokens = tokens.to(device=latent.device, dtype=latent.dtype).expand(latent.shape[0], -1, -1)
    out = latent.clone()
    out[:, :n] = tokens
    mask = torch.ones(latent.shape[0], latent.shape[1], 1, dtype=torch.float32, device=latent.device)
    mask[:, :n] = 1.0 - float(strength)
    levels = _mask_levels([1.0 - float(strength)] + ([1.0] if latent.shape[1] > n else []))
    return out, VideoCondition(mask=mask, clean=out.clone(), replaced=n, levels=levels)


def _mask_levels(values) -> tuple[float, ...]:
    """The distinct float32 roundings of ``values`` (Python floats written into a float32 mask), ascending."""
    return tuple(sorted(set(torch.tensor(list(values), dtype=torch.float32).tolist())))


def _check_strength(strength: float, what: str) -> float:
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"{what}: strength must lie in [0, 1], got {strength!r}")
    return float(strength)


def append_keyframe(latent: torch.Tensor, condition: VideoCondition | None, keyframe: torch.Tensor,
                    frame_idx: int, strength: float, transformer, fps: float
                    ) -> tuple[torch.Tensor, VideoCondition]:
    """Append the tokens of ``keyframe`` (normalised latent [B, C, F, h, w] at the latent's resolution) after
    packed ``latent`` [B, S (+K), C], standing for pixel frame ``frame_idx``.

    The new tokens carry mask ``1 - strength`` and are their own clean latent; their positions come from
    ``transformer.keyframe_coords`` (time moved by ``frame_idx``, in seconds at ``fps``). Returns the longer
    latent and the grown :class:`VideoCondition` (``condition`` None = nothing conditioned yet).
    """
    strength = _check_strength(strength, "append_keyframe")
    if isinstance(frame_idx, bool) or int(frame_idx) != frame_idx or frame_idx < 0:
        raise ValueError(f"append_keyframe: frame_idx must be a non-negative integer, got {frame_idx!r}")
    if keyframe.ndim != 5 or keyframe.shape[1] != latent.shape[2]:
        raise ValueError(f"append_keyframe: keyframe latent must be [B, {latent.shape[2]}, F, h, w], "
                         f"got {tuple(keyframe.shape)}")
    b = latent.shape[0]
    _, _, f, h, w = keyframe.shape
    tokens = pack_video(keyframe).to(device=latent.device, dtype=latent.dtype).expand(b, -1, -1)
    if condition is None:
        condition = VideoCondition(mask=torch.ones(b, latent.shape[1], 1, device=latent.device),
                                   clean=latent.clone(), levels=_mask_levels([1.0] if latent.shape[1] else []))
    mask = torch.full((b, tokens.shape[1], 1), 1.0 - strength, device=latent.device)
    coords = transformer.keyframe_coords(b, f, h, w, int(frame_idx), fps=fps, device=latent.device)
    if condition.keyframe_coords is not None:
        coords = torch.cat([condition.keyframe_coords.to(latent.device), coords], dim=2)
    levels = None if condition.levels is None else _mask_levels(condition.levels + (1.0 - strength,))
    new = VideoCondition(mask=torch.cat([condition.mask, mask], dim=1),
                         clean=torch.cat([condition.clean.to(latent.dtype), tokens], dim=1),
                         keyframe_coords=coords, replaced=condition.replaced, levels=levels)
    return torch.cat([latent, tokens], dim=1), new


def build_condition(shape: LatentShape, images: Sequence[ImageLatent], transformer, device=None,
                    dtype: torch.dtype = torch.float32) -> VideoCondition | None:
    """The :class:`VideoCondition` of ``images`` at latent geometry ``shape`` (None for no images).

    Official ``combined_image_conditionings`` rule: an image at frame 0 replaces the frame-0 tokens, any other
    frame is appended as a keyframe, in the given order. The images' latents must be at ``shape``'s height
    and width.
    """
    if not images:
        return None
    latent = torch.zeros(shape.video_packed, device=device, dtype=dtype)
    cond = None
    for i, img in enumerate(images):
        if img.latent.ndim != 5 or tuple(img.latent.shape[3:]) != (shape.height, shape.width):
            raise ValueError(f"images[{i}]: latent must be [B, C, F, {shape.height}, {shape.width}] (the stage's "
                             f"latent resolution), got {tuple(img.latent.shape)}")
        if img.frame_idx == 0:
            if cond is not None and cond.appended:
                raise ValueError(f"images[{i}]: put the frame-0 image before the keyframes")
            if cond is not None:
                raise ValueError(f"images[{i}]: two images for frame 0")
            latent, cond = condition_first_frame(latent, img.latent, shape, img.strength)
        else:
            latent, cond = append_keyframe(latent, cond, img.latent, img.frame_idx, img.strength, transformer,
                                           shape.fps)
    return cond


def conditioned_positions(transformer, shape: LatentShape, condition: VideoCondition | None, device=None):
    """:func:`.latents.positions` for a sequence grown by appended keyframe tokens."""
    extra = None if condition is None else condition.keyframe_coords
    return positions(transformer, shape, device, extra_video_coords=extra)


def strip_appended(video: torch.Tensor, shape: LatentShape) -> torch.Tensor:
    """Drop appended keyframe tokens: the first ``shape.video_tokens`` tokens of packed ``video``."""
    return video[:, : shape.video_tokens]


def noise_latent(latent: torch.Tensor, noise: torch.Tensor, scale: float,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """``noise * (scale * mask) + latent * (1 - scale * mask)`` (the official noiser; no mask = all ones)."""
    s = float(scale) if mask is None else mask * float(scale)
    return (noise * s + latent * (1 - s)).to(latent.dtype)


class ConditionedDenoiser(LTX2Denoiser):
    """:class:`LTX2Denoiser` with a per-token video denoise mask (image conditioning).

    Same arguments as :class:`LTX2Denoiser` plus ``condition`` (:class:`VideoCondition`, or None for plain
    text-to-video, which then behaves exactly like the parent). Conditioned video tokens get the timestep
    ``sigma * mask``; each pass's video x0 is ``x - (sigma * mask) * v`` (x itself where the mask is 0); with
    ``blend`` (the default) the guided video x0 is blended with the clean latent
    (``x0 * mask + clean * (1 - mask)``). The official loops blend each x0 exactly once: pass ``blend=False``
    when the sampler does it (:func:`core.sampling.res2s.sample_res2s` with ``denoise_mask``), since a second
    blend changes tokens whose strength is below 1.
    """

    def __init__(self, *args, condition: VideoCondition | None = None, blend: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.condition = condition
        self.blend = bool(blend)
        if condition is not None:
            self._mask = condition.mask.float()
            self._clean = condition.clean.float()
            # the mask's few distinct values -> levels and a per-token index, so that the transformer embeds
            # K timesteps instead of one per token (TokenTimesteps). Known from the builder, or read once here.
            token_mask = self._mask.squeeze(-1)  # [B, S]
            if condition.levels is not None:
                levels = torch.tensor(condition.levels, dtype=torch.float32, device=token_mask.device)
            else:
                levels = torch.unique(token_mask)
            self._levels = levels.unsqueeze(0).expand(token_mask.shape[0], -1).contiguous()  # [B, K]
            self._index = torch.searchsorted(levels, token_mask.contiguous())  # [B, S]

    @torch.no_grad()
    def __call__(self, x: tuple[torch.Tensor, torch.Tensor], sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self.condition is None:
            return super().__call__(x, sigma)
        vx, ax = x
        sigma = float(sigma)
        mask = self._mask.to(vx.device)
        if mask.shape[:2] != vx.shape[:2]:
            raise ValueError(f"ConditionedDenoiser: mask {tuple(mask.shape)} does not match latent {tuple(vx.shape)}")
        tok_sigma = mask * sigma  # [B, S, 1]
        ts = TokenTimesteps(self._levels.to(vx.device) * sigma, self._index.to(vx.device))
        out = self.guided(vx, ax, sigma, timestep=ts, video_sigma=tok_sigma)
        if not self.blend:
            return out[0], out[1]
        clean = self._clean.to(vx.device)
        video = out[0] * mask + clean * (1 - mask)
        return video, out[1]


@dataclass(frozen=True)
class Picture:
    """A conditioning picture ready to be encoded at any size: ``rgb`` float32 ``[H, W, 3]`` in 0..255 (after the
    optional H.264 round trip), the pixel frame it stands for and its strength (1 = kept as it is)."""

    rgb: torch.Tensor
    frame_idx: int = 0
    strength: float = 1.0


def prepare_pictures(images: Sequence[tuple], crf: float) -> list[Picture]:
    """``(picture, frame_idx, strength)`` triples -> :class:`Picture` list, frame 0 first then the others in
    the given order (the official rule: the frame-0 picture replaces latent tokens, the others are appended)."""
    out = [Picture(source_rgb(image, crf), int(idx), float(strength)) for image, idx, strength in images]
    return sorted(out, key=lambda p: p.frame_idx != 0)


def picture_latents(vae, pictures: Sequence[Picture], shape: LatentShape) -> list[ImageLatent]:
    """The pictures encoded (normalised latents) at ``shape``'s pixel size (latent size x 32)."""
    h, w = shape.height * 32, shape.width * 32
    return [ImageLatent(encode_image(vae, conditioning_pixels(p.rgb, h, w)), p.frame_idx, p.strength)
            for p in pictures]
