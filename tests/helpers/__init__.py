"""Shared test helpers: oracles (tiny reference models), error measures, the op / host-read counter, the
ComfyUI stand-in, the GPU stand-in. Test modules import from here, never from one another."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (the pack)
