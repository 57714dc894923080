"""The Cosmos3 mixture-of-transformers: an understanding (UND) path over the prompt tokens and a
generation (GEN) path over patchified video latents, meeting only inside attention.

Attribute names are the checkpoint's keys (``layers.{i}.self_attn.add_q_proj.weight`` ...), so a
diffusers ``transformer/`` folder loads without renaming. ``lm_head`` and the UND final ``norm``
never influence generation and are not built.

The UND path never attends to vision tokens, so its per-layer keys/values depend on the prompt only:
:meth:`Cosmos3Transformer.encode_text` runs it once per prompt, and every denoising step runs just the
GEN path (:meth:`Cosmos3Transformer.forward`) against those cached keys/values.

Sound-capable checkpoints (``sound_gen``) add sound tokens to the GEN path, after the vision tokens: each sound
latent frame ``[sound_dim]`` goes through ``audio_proj_in`` plus ``audio_modality_embed`` plus the same timestep
embedding, attends and is attended to like a vision token, and leaves through ``audio_proj_out`` (per diffusers
``transformer_cosmos3.py``). Its mRoPE time runs on the sound clock (:meth:`Cosmos3Transformer.sound_positions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core import distributed
from ..core.attention import attention
from ..core.compile import compile_blocks
from ..core.norms import RMSNorm
from ..core.rope import apply_rope, interleaved_axis_of_slot, inverse_frequencies, mrope_cos_sin
from .config import Cosmos3Config


class Cosmos3MLP(nn.Module):
    """SwiGLU (``down(silu(gate x) * up x)``) or dense squared ReLU (``down(relu(up x)^2)``)."""

    def __init__(self, hidden: int, intermediate: int, act: str):
        super().__init__()
        self.act = act
        if act == "silu":
            self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act == "relu2":
            h = F.relu(self.up_proj(x), inplace=True).square_()
        else:
            h = F.silu(self.gate_proj(x), inplace=True).mul_(self.up_proj(x))
        return self.down_proj(h)


class Cosmos3Attention(nn.Module):
    """Both paths' projections and per-head q/k norms (``to_*`` = UND, ``add_*`` = GEN)."""

    def __init__(self, cfg: Cosmos3Config):
        super().__init__()
        d, hd, bias = cfg.hidden_size, cfg.head_dim, cfg.attention_bias
        q_dim, kv_dim = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
        nemotron = cfg.hidden_act == "relu2"
        self.to_q = nn.Linear(d, q_dim, bias=bias)
        self.to_k = nn.Linear(d, kv_dim, bias=bias)
        self.to_v = nn.Linear(d, kv_dim, bias=bias)
        self.to_out = nn.Linear(q_dim, d, bias=bias)
        if cfg.qk_norm_for_text:
            self.norm_q = RMSNorm(hd, cfg.rms_norm_eps, nemotron)
            self.norm_k = RMSNorm(hd, cfg.rms_norm_eps, nemotron)
        if cfg.k_norm_und_for_gen:
            self.k_norm_und_for_gen = RMSNorm(hd, cfg.rms_norm_eps, nemotron)
        self.add_q_proj = nn.Linear(d, q_dim, bias=bias)
        self.add_k_proj = nn.Linear(d, kv_dim, bias=bias)
        self.add_v_proj = nn.Linear(d, kv_dim, bias=bias)
        self.to_add_out = nn.Linear(q_dim, d, bias=bias)
        self.norm_added_q = RMSNorm(hd, cfg.rms_norm_eps, nemotron)
        self.norm_added_k = RMSNorm(hd, cfg.rms_norm_eps, nemotron)


class Cosmos3Layer(nn.Module):
    """One layer of both paths. It runs as a module call (``layer(x, ..., path="und" | "gen")``), so what wraps a
    block (block offload's hooks, regional compile) sees every use of its weights."""

    def __init__(self, cfg: Cosmos3Config):
        super().__init__()
        d, eps, nemotron = cfg.hidden_size, cfg.rms_norm_eps, cfg.hidden_act == "relu2"
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.qk_norm_for_text, self.k_norm_und = cfg.qk_norm_for_text, cfg.k_norm_und_for_gen
        self.self_attn = Cosmos3Attention(cfg)
        self.input_layernorm = RMSNorm(d, eps, nemotron)
        self.post_attention_layernorm = RMSNorm(d, eps, nemotron)
        self.mlp = Cosmos3MLP(d, cfg.intermediate_size, cfg.hidden_act)
        self.input_layernorm_moe_gen = RMSNorm(d, eps, nemotron)
        self.post_attention_layernorm_moe_gen = RMSNorm(d, eps, nemotron)
        self.mlp_moe_gen = Cosmos3MLP(d, cfg.intermediate_size, cfg.hidden_act)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, path: str, **kw):
        return self.understand(x, cos, sin, **kw) if path == "und" else self.generate(x, cos, sin, **kw)

    def understand(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, last: bool = False):
        """UND path over one prompt ``x`` [1, L, D] (causal): (the next layer's input, or None after the last
        layer, whose attention output and MLP feed nothing the GEN path reads; the keys the GEN path attends to,
        normalised and rotated; the values), keys and values as ``[1, kv_heads, L, head_dim]``."""
        attn, n = self.self_attn, x.shape[1]
        hq, hkv, hd = self.heads, self.kv_heads, self.head_dim
        h = self.input_layernorm(x)
        k = attn.to_k(h).view(1, n, hkv, hd)
        v = attn.to_v(h).view(1, n, hkv, hd)
        if self.qk_norm_for_text:
            k = attn.norm_k(k)
        k_gen = attn.k_norm_und_for_gen(k) if self.k_norm_und else k
        k_gen = apply_rope(k_gen, cos, sin)
        keys, values = k_gen.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
        if last:
            return None, keys, values
        q = attn.to_q(h).view(1, n, hq, hd)
        if self.qk_norm_for_text:
            q = attn.norm_q(q)
        q = apply_rope(q, cos, sin)
        k = k_gen if not self.k_norm_und else apply_rope(k, cos, sin)
        o = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True)
        x = x + attn.to_out(o.transpose(1, 2).reshape(1, n, hq * hd))
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, keys, values

    def generate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, text_keys, text_values,
                 groups, shard=None) -> torch.Tensor:
        """GEN path over the video tokens ``x`` [B, N, D]: each row group attends to its prompt's UND keys and
        values (``text_keys[j]``, ``text_values[j]``) and to the video tokens; then the GEN MLP, group by group.
        ``shard`` (sequence parallel, :class:`core.distributed.SequenceShard`): ``x`` holds this rank's tokens; the
        attention runs Ulysses-style over the whole sequence, the prompt's keys and values (whole on every rank)
        sliced to the rank's heads."""
        attn = self.self_attn
        b, n = x.shape[:2]
        hq, hkv, hd = self.heads, self.kv_heads, self.head_dim
        h = self.input_layernorm_moe_gen(x)
        q = apply_rope(attn.norm_added_q(attn.add_q_proj(h).view(b, n, hq, hd)), cos, sin)
        k = apply_rope(attn.norm_added_k(attn.add_k_proj(h).view(b, n, hkv, hd)), cos, sin)
        v = attn.add_v_proj(h).view(b, n, hkv, hd)
        del h
        o = q.new_empty(b, n, hq * hd)
        for r0, r1, j in groups:
            rows = r1 - r0
            tk, tv = text_keys[j], text_values[j]
            if shard is not None:
                out = shard.attend(q[r0:r1], k[r0:r1], v[r0:r1], lambda qh, kh, vh, m: attention(qh, kh, vh, mask=m),
                                   prefix=(tk, tv))
                o[r0:r1] = out.reshape(rows, n, hq * hd)
                continue
            keys = torch.cat((tk.expand(rows, -1, -1, -1), k[r0:r1].transpose(1, 2)), dim=2)
            values = torch.cat((tv.expand(rows, -1, -1, -1), v[r0:r1].transpose(1, 2)), dim=2)
            out = attention(q[r0:r1].transpose(1, 2), keys, values)
            o[r0:r1] = out.transpose(1, 2).reshape(rows, n, hq * hd)
        del q, k, v
        keys = values = out = None  # noqa: F841  (the last group's tensors, freed before the output projection)
        x = x + attn.to_add_out(o)
        del o
        for r0, r1, _ in groups:
            x[r0:r1] += self.mlp_moe_gen(self.post_attention_layernorm_moe_gen(x[r0:r1]))
        return x


class TimestepEmbedder(nn.Module):
    """256-channel sinusoid (cos first) of the scaled timestep, then ``linear_2(silu(linear_1 .))``."""

    def __init__(self, hidden: int, channels: int = 256):
        super().__init__()
        self.channels = channels
        self.linear_1 = nn.Linear(channels, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.channels // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None, :]
        emb = torch.cat((torch.cos(args), torch.sin(args)), dim=-1)
        w = self.linear_1.weight
        return self.linear_2(F.silu(self.linear_1(emb.to(w.dtype))))


@dataclass
class TextKV:
    """One prompt's UND keys (normalised, rotated) and values per layer, each ``[1, kv_heads, L, head_dim]``."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int

    def to(self, device) -> "TextKV":
        return TextKV([k.to(device) for k in self.keys], [v.to(device) for v in self.values], self.length)


@dataclass
class GenContext:
    """Everything a denoising step needs that does not change between steps.

    Built once per (prompts, latent shape, fps, conditioning frames) by :meth:`Cosmos3Transformer.prepare`.
    Batch rows conditioned on the same prompt form a group (``groups``: ``(first_row, end_row, prompt)``);
    each group attends to its own prompt's keys/values, so prompts of different lengths need no padding
    or mask, and the MLP runs one group at a time, which bounds its activation memory.
    """

    text_keys: list[list[torch.Tensor]]  # [layer][prompt] -> [1, kv_heads, L_prompt, head_dim]
    text_values: list[list[torch.Tensor]]
    groups: list[tuple[int, int, int]]
    cos: torch.Tensor  # [B, N, 1, head_dim]
    sin: torch.Tensor
    latent_shape: tuple[int, int, int]  # (T, H, W) of the latent
    grid: tuple[int, int, int]  # (T, Hp, Wp) patch grid
    noisy_frames: list[int]  # latent frames that are denoised (the others are clean conditioning)
    noisy_token_index: torch.Tensor | None = None  # token indices of those frames, when not one run
    sound_frames: int = 0  # sound latent frames (tokens after the vision tokens); 0: no sound

    @property
    def batch(self) -> int:
        return self.cos.shape[0]


class Cosmos3Transformer(nn.Module):
    def __init__(self, config: Cosmos3Config | dict):
        super().__init__()
        cfg = config if isinstance(config, Cosmos3Config) else Cosmos3Config.from_dict(config)
        self.config = cfg
        d = cfg.hidden_size
        self.embed_tokens = nn.Embedding(cfg.vocab_size, d)
        self.layers = compile_blocks(nn.ModuleList(Cosmos3Layer(cfg) for _ in range(cfg.num_hidden_layers)))
        self.norm_moe_gen = RMSNorm(d, cfg.rms_norm_eps, cfg.hidden_act == "relu2")
        self.proj_in = nn.Linear(cfg.patch_latent_dim, d)
        self.proj_out = nn.Linear(d, cfg.patch_latent_dim)
        self.time_embedder = TimestepEmbedder(d)
        if cfg.sound_gen:
            self.audio_proj_in = nn.Linear(cfg.sound_dim, d)
            self.audio_proj_out = nn.Linear(d, cfg.sound_dim)
            self.audio_modality_embed = nn.Parameter(torch.zeros(d))
            self.unused_checkpoint_keys = tuple(k for k in self.unused_checkpoint_keys if not k.startswith("audio_"))
        self._axis_of_slot = interleaved_axis_of_slot(cfg.head_dim // 2, cfg.mrope_sections)

    # Keys the checkpoint carries that generation never reads: the language head, the UND final norm, the action
    # heads of action-capable checkpoints, and the sound heads unless the config has ``sound_gen`` (then the
    # instance's tuple leaves them out: they are built and loaded).
    unused_checkpoint_keys = ("lm_head.", "norm.weight", "audio_proj_in.", "audio_proj_out.", "audio_modality_embed",
                              "action_proj_in.", "action_proj_out.", "action_modality_embed")

    @property
    def dtype(self) -> torch.dtype:
        return self.proj_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.proj_in.weight.device

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = inverse_frequencies(self.config.head_dim, self.config.rope_theta)
        cos, sin = mrope_cos_sin(positions, inv_freq, self._axis_of_slot, self.dtype)
        return cos.unsqueeze(-2), sin.unsqueeze(-2)  # head axis for broadcasting

    # ------------------------------------------------------------------ UND path (once per prompt)
    @torch.no_grad()
    def encode_text(self, input_ids: torch.Tensor | list[int]) -> TextKV:
        """Run the understanding path over one prompt's token ids; return its per-layer keys/values.

        Text positions are ``0..L-1`` on all three mRoPE axes. The last layer's attention output and
        MLP feed nothing the GEN path reads, so they are skipped.
        """
        ids = torch.as_tensor(input_ids, dtype=torch.long, device=self.device).reshape(1, -1)
        n = ids.shape[1]
        pos = torch.arange(n, dtype=torch.float32, device=self.device).expand(3, 1, n)
        cos, sin = self._rope(pos)
        x = self.embed_tokens(ids)
        keys, values = [], []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, cos, sin, path="und", last=i == last)
            keys.append(k)
            values.append(v)
        return TextKV(keys, values, n)

    # ------------------------------------------------------------------ static per-run preparation
    def vision_positions(
        self, text_length: int, grid: tuple[int, int, int], fps: float | None, temporal_compression: int = 4
    ) -> torch.Tensor:
        """mRoPE ids ``[3, T*Hp*Wp]`` (float32) of the vision tokens that follow a prompt of ``text_length``.

        Time ids start ``temporal_modality_margin`` after the text; with fps modulation (and more than one
        latent frame) a latent frame advances time by ``base_fps / fps``. Height/width ids restart at 0.
        """
        cfg = self.config
        t, hp, wp = grid
        offset = text_length + cfg.unified_3d_mrope_temporal_modality_margin
        if cfg.enable_fps_modulation and fps is not None and t > 1:
            tps = fps / temporal_compression
            base_tps = float(cfg.base_fps) / temporal_compression
            t_ids = torch.arange(t, dtype=torch.float32) / tps * base_tps + offset
        else:
            t_ids = (torch.arange(t, dtype=torch.long) + offset).float()
        h_ids = torch.arange(hp, dtype=torch.float32)
        w_ids = torch.arange(wp, dtype=torch.float32)
        if not cfg.unified_3d_mrope_reset_spatial_ids:
            h_ids, w_ids = h_ids + offset, w_ids + offset
        return torch.stack(
            (
                t_ids.view(t, 1, 1).expand(t, hp, wp).reshape(-1),
                h_ids.view(1, hp, 1).expand(t, hp, wp).reshape(-1),
                w_ids.view(1, 1, wp).expand(t, hp, wp).reshape(-1),
            )
        )

    def sound_positions(self, text_length: int, frames: int) -> torch.Tensor:
        """mRoPE ids ``[3, frames]`` (float32) of the sound tokens that follow a prompt of ``text_length``.

        Per diffusers ``_prepare_sound_segment``: the same time offset as the vision tokens, then, with fps
        modulation and more than one frame, ``i / sound_latent_fps * base_fps`` (sound time runs at
        ``base_tps = base_fps / 1`` where video uses ``base_fps / 4``: one step per 1/24 s); else ``i``.
        Height and width ids are 0 (the offset when spatial ids are not reset).
        """
        cfg = self.config
        offset = text_length + cfg.unified_3d_mrope_temporal_modality_margin
        if cfg.enable_fps_modulation and frames > 1:
            t_ids = torch.arange(frames, dtype=torch.float32) / float(cfg.sound_latent_fps) * float(cfg.base_fps)
            t_ids = t_ids + offset
        else:
            t_ids = (torch.arange(frames, dtype=torch.long) + offset).float()
        hw = torch.full((frames,), 0.0 if cfg.unified_3d_mrope_reset_spatial_ids else float(offset))
        return torch.stack((t_ids, hw, hw))

    def prepare(
        self,
        texts: list[TextKV],
        latent_shape: tuple[int, int, int],
        fps: float | None,
        condition_frames: list[int] | tuple[int, ...] = (),
        temporal_compression: int = 4,
        sound_frames: int = 0,
    ) -> GenContext:
        """Assemble the step-invariant inputs for a batch whose row ``b`` is conditioned on ``texts[b]``;
        ``sound_frames`` sound tokens follow the vision tokens (sound-capable checkpoints only)."""
        if sound_frames and not self.config.sound_gen:
            raise ValueError("this Cosmos3 checkpoint generates no sound (its transformer config has no sound_gen)")
        p = self.config.latent_patch_size
        t, h, w = latent_shape
        grid = (t, -(-h // p), -(-w // p))
        device = self.device
        prompts: list[TextKV] = []  # distinct prompts, by identity
        groups: list[tuple[int, int, int]] = []
        for row, tx in enumerate(texts):
            index = next((j for j, u in enumerate(prompts) if u is tx), None)
            if index is None:
                prompts.append(tx)
                index = len(prompts) - 1
            if groups and groups[-1][2] == index and groups[-1][1] == row:
                groups[-1] = (groups[-1][0], row + 1, index)
            else:
                groups.append((row, row + 1, index))
        n_layers = len(self.layers)
        text_keys = [[u.keys[i].to(device) for u in prompts] for i in range(n_layers)]
        text_values = [[u.values[i].to(device) for u in prompts] for i in range(n_layers)]
        def positions(tx: TextKV) -> torch.Tensor:
            pos = self.vision_positions(tx.length, grid, fps, temporal_compression)
            return torch.cat((pos, self.sound_positions(tx.length, sound_frames)), dim=1) if sound_frames else pos

        pos = torch.stack([positions(tx) for tx in texts], dim=1).to(device)
        cos, sin = self._rope(pos)
        cond = set(int(f) for f in condition_frames)
        noisy = [f for f in range(t) if f not in cond]
        index = None
        if noisy and noisy != list(range(noisy[0], noisy[-1] + 1)):
            per_frame = grid[1] * grid[2]
            index = torch.tensor([f * per_frame + j for f in noisy for j in range(per_frame)], device=device)
        return GenContext(text_keys, text_values, groups, cos, sin, (t, h, w), grid, noisy, index, int(sound_frames))

    # ------------------------------------------------------------------ GEN path (every step)
    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` -> ``[B, T*Hp*Wp, p*p*C]`` (rows/cols zero-padded to the patch size)."""
        p = self.config.latent_patch_size
        b, c, t, h, w = latents.shape
        ph, pw = (-h) % p, (-w) % p
        if ph or pw:
            latents = F.pad(latents, (0, pw, 0, ph))
        hp, wp = (h + ph) // p, (w + pw) // p
        x = latents.reshape(b, c, t, hp, p, wp, p).permute(0, 2, 3, 5, 4, 6, 1)
        return x.reshape(b, t * hp * wp, p * p * c)

    def unpatchify(self, tokens: torch.Tensor, frames: int, grid_hw: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
        """Inverse of :meth:`patchify` for ``frames`` frames of tokens, cropped to ``hw``."""
        p, c = self.config.latent_patch_size, self.config.latent_channel
        b = tokens.shape[0]
        hp, wp = grid_hw
        x = tokens.reshape(b, frames, hp, wp, p, p, c).permute(0, 6, 1, 2, 4, 3, 5)
        x = x.reshape(b, c, frames, hp * p, wp * p)
        return x[..., : hw[0], : hw[1]]

    def time_embedding(self, timestep: torch.Tensor | float | int, batch: int) -> torch.Tensor:
        """Embedding ``[B, 1, D]`` (model dtype) of the scheduler timestep(s) (integer scale, 0..1000)."""
        if isinstance(timestep, torch.Tensor):
            t = timestep.to(device=self.device, dtype=torch.float32).reshape(-1)
        else:  # a fill on the device: no host-to-device copy (which would wait for the GPU) per step
            t = torch.full((1,), float(timestep), dtype=torch.float32, device=self.device)
        t = t * self.config.timestep_scale
        emb = self.time_embedder(t).to(self.dtype)
        return emb.expand(batch, -1).unsqueeze(1) if emb.shape[0] == 1 else emb.unsqueeze(1)

    def forward(self, latents: torch.Tensor, timestep, ctx: GenContext, sound: torch.Tensor | None = None):
        """Velocity ``[B, C, T, H, W]`` for ``latents`` at ``timestep``; zero at conditioning frames.

        ``timestep`` is the scheduler's timestep (``sigma * 1000`` truncated, as the reference feeds it),
        a number or one per batch row. With a context prepared for sound, ``sound`` (latents ``[B, sound_dim,
        T_s]``, all noisy) is required and the result is the pair ``(video velocity, sound velocity [B,
        sound_dim, T_s])``.
        """
        cfg = self.config
        b = latents.shape[0]
        if b != ctx.batch:
            raise ValueError(f"latent batch {b} does not match the prepared context batch {ctx.batch}")
        t, hp, wp = ctx.grid
        per_frame = hp * wp
        if (sound is None) != (ctx.sound_frames == 0):
            raise ValueError("sound latents are needed exactly when the context was prepared with sound frames")
        x = self.proj_in(self.patchify(latents.to(self.dtype)))
        n_vision = x.shape[1]
        temb = self.time_embedding(timestep, b)
        noisy = ctx.noisy_frames
        contiguous = noisy == list(range(noisy[0], noisy[-1] + 1)) if noisy else True
        if noisy and contiguous:
            x[:, noisy[0] * per_frame : (noisy[-1] + 1) * per_frame] += temb
        elif noisy:
            idx = ctx.noisy_token_index
            x[:, idx] += temb
        if sound is not None:
            if tuple(sound.shape) != (b, cfg.sound_dim, ctx.sound_frames):
                raise ValueError(f"sound latents {list(sound.shape)}: expected {[b, cfg.sound_dim, ctx.sound_frames]}")
            s = self.audio_proj_in(sound.transpose(1, 2).to(self.dtype)) + self.audio_modality_embed
            x = torch.cat((x, s.add_(temb)), dim=1)  # every sound frame is noisy

        cos, sin, shard = ctx.cos, ctx.sin, None
        if distributed.world_size() > 1:  # sequence parallel (torchrun): this rank's share of the video tokens
            shard = distributed.SequenceShard(x.shape[1])
            x, cos, sin = shard.split(x), shard.split(cos.expand(b, -1, -1, -1)), shard.split(sin.expand(b, -1, -1, -1))
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, path="gen", text_keys=ctx.text_keys[i], text_values=ctx.text_values[i],
                      groups=ctx.groups, shard=shard)
        if shard is not None:
            x = shard.gather(x)

        t_lat, h_lat, w_lat = ctx.latent_shape
        out = latents.new_zeros(b, cfg.latent_channel, t_lat, h_lat, w_lat, dtype=self.dtype)
        if sound is not None:
            sound_out = self.audio_proj_out(self.norm_moe_gen(x[:, n_vision:])).transpose(1, 2)
            x = x[:, :n_vision]
        if not noisy:
            return out if sound is None else (out, sound_out)
        if contiguous:
            sel = x[:, noisy[0] * per_frame : (noisy[-1] + 1) * per_frame]
        else:
            sel = x[:, idx]
        v_tokens = self.proj_out(self.norm_moe_gen(sel))
        v_lat = self.unpatchify(v_tokens, len(noisy), (hp, wp), (h_lat, w_lat))
        if contiguous:
            out[:, :, noisy[0] : noisy[-1] + 1] = v_lat
        else:
            out[:, :, noisy] = v_lat
        return out if sound is None else (out, sound_out)
