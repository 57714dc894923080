"""The Wan VAE as Wan's own code saves it (the layout of ComfyUI's ``wan2.2_vae.safetensors``).

Wan's original modules are ``nn.Sequential`` lists, so its keys are positional
(``decoder.upsamples.1.upsamples.3.resample.1.weight``), where diffusers' ``AutoencoderKLWan`` (the
names :class:`~.vae.WanVAE` uses) has named blocks (``decoder.up_blocks.1.upsampler.resample.1.weight``).
Such a file carries no config either. :func:`read_wan_layout` recognises the layout, reads the
architecture back from the tensor shapes and gives the key renaming, so ``load_vae`` can read the file
as it is: no converted copy is written.

Both generations are handled: Wan2.2 (48 latent channels, 2x2 pixel patches, stages nested as
``downsamples.{stage}.downsamples.{j}``) and Wan2.1 (16 channels, one flat list of blocks per side).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from ..core.checkpoint import CheckpointError

# Inside a residual block: Sequential(norm, SiLU, conv, norm, SiLU, dropout, conv) and the 1x1 shortcut.
_RESIDUAL = {"residual.0.": "norm1.", "residual.2.": "conv1.", "residual.3.": "norm2.", "residual.6.": "conv2.",
             "shortcut.": "conv_shortcut."}
# The middle Sequential(resblock, attention, resblock) and the head Sequential(norm, SiLU, conv).
_MIDDLE = {"0": "mid_block.resnets.0.", "1": "mid_block.attentions.0.", "2": "mid_block.resnets.1."}
_HEAD = {"0": "norm_out.", "2": "conv_out."}
_TOP = {"conv1.": "quant_conv.", "conv2.": "post_quant_conv."}


def is_wan_layout(keys: Mapping[str, object]) -> bool:
    """True for a VAE file in Wan's original key layout."""
    return "encoder.conv1.weight" in keys and "decoder.middle.0.residual.0.gamma" in keys


def _residual_part(rest: str) -> str:
    for old, new in _RESIDUAL.items():
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest  # a resample's own names (resample.1., time_conv.) or an attention's are the same


def _indices(keys, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def read_wan_layout(path, shapes: Mapping[str, tuple[int, ...]], stats: Mapping[int, dict]) -> tuple[dict, Callable]:
    """``(config, key_map)`` for a Wan-layout VAE file whose tensor shapes are ``shapes`` (key -> shape).

    The config is a diffusers ``vae/config.json`` dict built from the shapes; ``stats`` gives the latent
    ``latents_mean`` / ``latents_std`` per latent channel count (the file holds none). ``key_map`` renames a
    file key to the :class:`~.vae.WanVAE` parameter name.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointError(f"{path}: a Wan-layout VAE file should hold '{key}'; it does not (incomplete file?)")
        return tuple(shapes[key])

    keys = list(shapes)
    base, in_channels = shape("encoder.conv1.weight")[:2]
    z_dim = shape("conv2.weight")[0]
    out_channels = shape("decoder.head.2.weight")[0]
    if z_dim not in stats:
        raise CheckpointError(f"{path}: a Wan VAE with {z_dim} latent channels; the latent statistics are known only "
                              f"for {sorted(stats)} (Wan2.1, Wan2.2)")
    if any(re.match(r"(en|de)coder\.(down|up)samples\..*\.to_qkv\.", k) for k in keys):
        raise CheckpointError(f"{path}: a Wan VAE with attention inside its stages is not supported")
    nested = any(k.startswith("encoder.downsamples.0.downsamples.") for k in keys)
    if nested:  # Wan2.2: stage i holds num_res_blocks resblocks, then (not in the last stage) a down resample
        stages = _indices(keys, r"encoder\.downsamples\.(\d+)\.")
        n_res = len(_indices(keys, r"encoder\.downsamples\.0\.downsamples\.(\d+)\.residual\."))
        widths = [shape(f"encoder.downsamples.{i}.downsamples.0.residual.2.weight")[0] for i in stages]
        temporal = [f"encoder.downsamples.{i}.downsamples.{n_res}.time_conv.weight" in shapes for i in stages[:-1]]
    else:  # Wan2.1: one flat list, the resamples split it into stages
        blocks = _indices(keys, r"encoder\.downsamples\.(\d+)\.")
        resamples = [k for k in blocks if f"encoder.downsamples.{k}.resample.1.weight" in shapes]
        n_res = resamples[0] if resamples else len(blocks)
        starts = [0] + [k + 1 for k in resamples]
        widths = [shape(f"encoder.downsamples.{k}.residual.2.weight")[0] for k in starts]
        temporal = [f"encoder.downsamples.{k}.time_conv.weight" in shapes for k in resamples]
    if any(w % base for w in widths):
        raise CheckpointError(f"{path}: stage widths {widths} are not multiples of the first ({base})")
    dim_mult = [w // base for w in widths]
    decoder_base = shape("decoder.head.0.gamma")[0] // dim_mult[0]
    patch = round((in_channels // 3) ** 0.5)
    cfg = {
        "_class_name": "AutoencoderKLWan", "base_dim": base, "decoder_base_dim": decoder_base, "z_dim": z_dim,
        "dim_mult": dim_mult, "num_res_blocks": n_res, "attn_scales": [], "temperal_downsample": temporal,
        "dropout": 0.0, "is_residual": nested, "in_channels": in_channels, "out_channels": out_channels,
        "patch_size": patch if patch > 1 else None, "scale_factor_spatial": patch * 2 ** (len(dim_mult) - 1),
        "scale_factor_temporal": 2 ** sum(temporal), **stats[z_dim],
    }
    per_stage = n_res + 2  # Wan2.1 decoder: n_res + 1 resblocks and one up resample per stage (flat)

    def key_map(key: str) -> str:
        for old, new in _TOP.items():
            if key.startswith(old):
                return new + key[len(old):]
        side, _, rest = key.partition(".")
        part, _, rest = rest.partition(".")
        if side not in ("encoder", "decoder"):
            return key  # unknown: load_into reports it
        if part == "conv1":
            return f"{side}.conv_in.{rest}"
        index, _, rest = rest.partition(".")
        if part == "middle" and index in _MIDDLE:
            return f"{side}.{_MIDDLE[index]}{_residual_part(rest)}"
        if part == "head" and index in _HEAD:
            return f"{side}.{_HEAD[index]}{rest}"
        if part not in ("downsamples", "upsamples") or not index.isdigit():
            return key
        stage, encoder = int(index), side == "encoder"
        if nested:  # "{stage}.{down|up}samples.{j}.<block>": the resblocks, then the resample
            blocks = f"{side}.{'down' if encoder else 'up'}_blocks.{stage}"
            _, _, rest = rest.partition(".")
            j, _, rest = rest.partition(".")
            if int(j) < (n_res if encoder else n_res + 1):
                return f"{blocks}.resnets.{j}.{_residual_part(rest)}"
            return f"{blocks}.{'downsampler' if encoder else 'upsampler'}.{rest}"
        if encoder:  # Wan2.1's flat encoder list is kept as it is
            return f"encoder.down_blocks.{stage}.{_residual_part(rest)}"
        s, j = divmod(stage, per_stage)
        if j < n_res + 1:
            return f"decoder.up_blocks.{s}.resnets.{j}.{_residual_part(rest)}"
        return f"decoder.up_blocks.{s}.upsamplers.0.{rest}"

    return cfg, key_map
