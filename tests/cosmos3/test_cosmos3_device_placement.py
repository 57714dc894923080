"""The GPU paths without a GPU: whole Cosmos3 runs with every weight and input on the ``meta``
device under ``device_check.OneDevice``, which fails any op that mixes devices and any host read of a
device value (see its docstring). A pass means a CUDA run keeps every tensor on the GPU from the loaded
weights to the decoded frames and never waits on a device value, in the sampling loops and around them.

What runs on the host by design stays there: tokenisation, picture preparation and the starting noise (drawn on
the CPU for seed parity, then moved).
"""

import pytest
import torch

from helpers.device_check import OneDevice

META = torch.device("meta")



@pytest.fixture(scope="module")
def cosmos3_folder(tmp_path_factory):
    from comfyui_cosmos3_ltx2.cosmos3.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("cosmos3_meta"), seed=0)


@pytest.mark.parametrize("case", ["t2v", "i2v", "t2i"])
def test_cosmos3_generate_stays_on_the_device(cosmos3_folder, case):
    from PIL import Image

    from comfyui_cosmos3_ltx2.cosmos3 import generate

    image = Image.new("RGB", (70, 40), (200, 30, 90)) if case == "i2v" else None
    frames = 1 if case == "t2i" else 9
    steps = []
    with OneDevice() as check:
        out = generate(cosmos3_folder, "a red robot", "blurry", image, width=64, height=32, num_frames=frames,
                       fps=16.0, steps=3, guidance=4.0, seed=1, device=META, dtype="bf16",
                       callback=steps.append)
    assert out.device == META and out.shape == (frames, 32, 64, 3)
    assert len(steps) == 3 and check.ops > 100
