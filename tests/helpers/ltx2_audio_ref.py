"""Tiny LTX-2.0 / LTX-2.3 audio VAE and vocoder configs (the real rates, tiny widths) and the STFT / mel buffers
the references leave uninitialised."""

from __future__ import annotations

import math

import torch

# Audio VAE: ch = z * mel / 4 so the statistics (sized by ch) cover the 2 x 16 packed features.
VAE_23 = dict(base_channels=32, output_channels=2, ch_mult=[1, 2, 4], num_res_blocks=1, latent_channels=2,
              mel_bins=64, norm_type="pixel", causality_axis="height", mid_block_add_attention=False,
              resolution=256, in_channels=2, double_z=True)

VAE_20 = dict(VAE_23, mid_block_add_attention=True)

VOC_20 = dict(in_channels=128, hidden_channels=64, out_channels=2, upsample_kernel_sizes=[16, 15, 8, 4, 4],
              upsample_factors=[6, 5, 2, 2, 2], resnet_kernel_sizes=[3, 7, 11],
              resnet_dilations=[[1, 3, 5]] * 3, act_fn="leaky_relu", final_act_fn="tanh", final_bias=True,
              output_sampling_rate=24000)

VOC_23 = dict(in_channels=128, hidden_channels=128, out_channels=2, upsample_kernel_sizes=[11, 4, 4, 4, 4, 4],
              upsample_factors=[5, 2, 2, 2, 2, 2], resnet_kernel_sizes=[3, 7, 11], resnet_dilations=[[1, 3, 5]] * 3,
              act_fn="snakebeta", antialias=True, final_act_fn=None, final_bias=False,
              bwe_in_channels=128, bwe_hidden_channels=64, bwe_out_channels=2,
              bwe_upsample_kernel_sizes=[12, 11, 4, 4, 4], bwe_upsample_factors=[6, 5, 2, 2, 2],
              bwe_resnet_kernel_sizes=[3, 7, 11], bwe_resnet_dilations=[[1, 3, 5]] * 3, bwe_act_fn="snakebeta",
              bwe_antialias=True, bwe_final_act_fn=None, bwe_final_bias=False, filter_length=512, hop_length=80,
              window_length=512, num_mel_channels=64, input_sampling_rate=16000, output_sampling_rate=48000)


def stft_buffers(mel_stft: torch.nn.Module, n_fft: int, n_mels: int) -> None:
    """A Hann-windowed DFT basis and triangular mel filters (the real checkpoint stores its own)."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / n_fft)
    ang = 2 * math.pi * k * n / n_fft
    basis = torch.cat([window * torch.cos(ang), -window * torch.sin(ang)]).float()[:, None]
    mel_stft.stft_fn.forward_basis.copy_(basis)
    mel_stft.stft_fn.inverse_basis.copy_(basis.flip(-1))
    bins = n_fft // 2 + 1
    edges = torch.linspace(0, bins - 1, n_mels + 2)
    f = torch.arange(bins, dtype=torch.float32)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    mel_stft.mel_basis.copy_(torch.clamp(torch.minimum((f - lo) / (mid - lo), (hi - f) / (hi - mid)), min=0))
