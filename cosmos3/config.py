"""Cosmos3 transformer configuration, read from the checkpoint's ``transformer/config.json``."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class Cosmos3Config:
    """The architecture switches of a Cosmos3 checkpoint; defaults are the Nano values."""

    hidden_size: int = 4096
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128
    intermediate_size: int = 12288
    hidden_act: str = "silu"  # "silu" -> SwiGLU + RMSNorm (Qwen3); "relu2" -> squared ReLU + Nemotron norm (Edge)
    qk_norm_for_text: bool = True
    use_und_k_norm_for_gen: bool = False
    attention_bias: bool = False
    rms_norm_eps: float = 1e-6
    rope_theta: float = 5_000_000.0
    rope_scaling: dict | None = None
    rope_axes_dim: list[int] | None = None
    vocab_size: int = 151936
    latent_channel: int = 48
    latent_patch_size: int = 2
    patch_latent_dim: int = 192
    timestep_scale: float = 0.001
    base_fps: int = 24
    enable_fps_modulation: bool = True
    unified_3d_mrope_reset_spatial_ids: bool = True
    unified_3d_mrope_temporal_modality_margin: int = 15000
    sound_gen: bool = False
    sound_dim: int | None = None  # sound latent channels (the sound tokenizer's vocoder_input_dim)
    sound_latent_fps: float = 25.0  # sound latent frames a second (sets the sound tokens' mRoPE time scale)
    action_gen: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "Cosmos3Config":
        known = {f.name for f in fields(cls)} - {"extra"}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        cfg.extra = {k: v for k, v in d.items() if k not in known}
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d.update(self.extra)
        return d

    @property
    def mrope_sections(self) -> list[int]:
        if self.rope_axes_dim is not None:
            return list(self.rope_axes_dim)
        if self.rope_scaling is not None and "mrope_section" in self.rope_scaling:
            return list(self.rope_scaling["mrope_section"])
        return [24, 20, 20]

    @property
    def k_norm_und_for_gen(self) -> bool:
        """The extra UND key norm exists only on checkpoints without text q/k norms (Edge)."""
        return self.use_und_k_norm_for_gen and not self.qk_norm_for_text

    def validate(self) -> None:
        if self.sound_gen and not self.sound_dim:
            raise ValueError("transformer config: sound_gen=true needs sound_dim (the sound latent channels)")
        if self.hidden_act not in ("silu", "relu2"):
            raise ValueError(
                f"transformer config: hidden_act={self.hidden_act!r} is not a Cosmos3 activation "
                "(expected 'silu' or 'relu2')"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                "transformer config: num_attention_heads must be a multiple of num_key_value_heads, got "
                f"{self.num_attention_heads} and {self.num_key_value_heads}"
            )
        p = self.latent_patch_size
        if self.patch_latent_dim != p * p * self.latent_channel:
            raise ValueError(
                f"transformer config: patch_latent_dim={self.patch_latent_dim} != latent_patch_size^2 * "
                f"latent_channel = {p * p * self.latent_channel}"
            )
        if sum(self.mrope_sections) * 2 != self.head_dim:
            raise ValueError(
                f"transformer config: mRoPE sections {self.mrope_sections} must sum to head_dim/2 = {self.head_dim // 2}"
            )
