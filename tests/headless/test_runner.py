"""Headless workflow runner: validation before any work, in-process execution, stand-in I/O nodes, server mode."""

import base64
import hashlib
import http.server
import json
import struct
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_cosmos3_ltx2 import headless
from comfyui_cosmos3_ltx2.__main__ import main
from comfyui_cosmos3_ltx2.headless import NodeError, RunInterrupted, ServerError, WorkflowError, media, standins
from comfyui_cosmos3_ltx2.headless import server as client

CALLS = []  # (class name) of every fake node body that ran


class Interrupted(BaseException):
    """Like ComfyUI's InterruptProcessingException: a BaseException, not an Exception."""


class MakeImage:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 32, "min": 8, "max": 256}),
                             "height": ("INT", {"default": 24, "min": 8, "max": 256}),
                             "frames": ("INT", {"default": 1, "min": 1, "max": 16}),
                             "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0})}}

    def make(self, width, height, frames, value):
        CALLS.append("MakeImage")
        ramp = torch.linspace(0, 1, frames).view(frames, 1, 1, 1)
        return (torch.full((frames, height, width, 3), value) * 0.5 + ramp * 0.5,)


class Scale:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "scale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "factor": ("FLOAT", {"default": 1.0, "min": 0.25, "max": 4.0}),
                             "mode": (["nearest", "bilinear"],)},
                "optional": {"label": ("STRING", {"default": ""})}}

    def scale(self, image, factor, mode, label=""):
        CALLS.append("Scale")
        for i in range(3):
            headless.report_progress(i + 1, 3)
        x = torch.nn.functional.interpolate(image.movedim(-1, 1), scale_factor=factor, mode=mode)
        return (x.movedim(1, -1),)


class MakeModel:
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def make(self):
        CALLS.append("MakeModel")
        return (object(),)


class Boom:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def run(self, image):
        CALLS.append("Boom")
        raise ValueError("the sampler exploded")


class Interrupt(Boom):
    def run(self, image):
        CALLS.append("Interrupt")
        raise Interrupted()


class Checked:
    """Has a VALIDATE_INPUTS like ComfyUI nodes: it takes over the checks of the inputs it names."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "frames": ("INT", {"min": 1, "max": 8})}}

    @classmethod
    def VALIDATE_INPUTS(cls, frames):
        return True if frames % 4 == 1 else f"frames must be 4k+1, got {frames}"

    def run(self, image, frames):
        CALLS.append("Checked")
        return (image,)


class _NodeOutput:
    def __init__(self, *result, ui=None):
        self.result, self.ui, self.expand, self.block_execution = result or None, ui, None, None


class _UI:
    def __init__(self, d):
        self.d = d

    def as_dict(self):
        return self.d


class V3Probe:
    """Shaped like a ComfyUI V3 node: hidden values on a class clone, NodeOutput results, UI object."""

    RETURN_TYPES = ()
    FUNCTION = "EXECUTE_NORMALIZED"
    OUTPUT_NODE = True
    hidden = None
    seen = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "mode": ("COMBO", {"options": ["a", "b"]})},
                "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"}}

    @classmethod
    def PREPARE_CLASS_CLONE(cls, v3_data):
        holder = type("Hidden", (), {k.lower(): v for k, v in v3_data["hidden_inputs"].items()})
        return type("V3ProbeClone", (cls,), {"hidden": holder})

    @classmethod
    def EXECUTE_NORMALIZED(cls, image, mode):
        CALLS.append("V3Probe")
        V3Probe.seen = {"unique_id": cls.hidden.unique_id, "has_prompt": cls.hidden.prompt is not None, "mode": mode}
        return _NodeOutput(ui=_UI({"text": [f"{tuple(image.shape)}"]}))


FAKES = {c.__name__: c for c in (MakeImage, Scale, MakeModel, Boom, Interrupt, Checked, V3Probe)}
MAPPINGS = {**FAKES, **standins.STANDIN_CLASS_MAPPINGS}


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    yield


def node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def image_graph(**overrides):
    g = {
        "1": node("MakeImage", width=32, height=24, frames=3, value=0.25),
        "2": node("Scale", image=["1", 0], factor=2.0, mode="nearest"),
        "3": node("SaveImage", images=["2", 0], filename_prefix="img/test"),
    }
    for key, value in overrides.items():
        node_id, name = key.split("__")
        g[node_id]["inputs"][name] = value
    return g


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------- end to end
def test_graph_runs_end_to_end_to_png_and_video(tmp_path):
    g = image_graph()
    g["4"] = node("CreateVideo", images=["2", 0], fps=8.0)
    g["5"] = node("SaveVideo", video=["4", 0], filename_prefix="video/clip", format="auto", codec="auto")
    g["6"] = node("MakeModel")  # leads to no output node: never runs
    events = []
    uis = headless.execute(g, MAPPINGS, output_dir=tmp_path, on_progress=events.append)

    assert CALLS == ["MakeImage", "Scale"]  # each once, MakeModel skipped
    pngs = headless.output_files(uis["3"], tmp_path)
    assert [p.name for p in pngs] == ["test_00001_.png", "test_00002_.png", "test_00003_.png"]
    with Image.open(pngs[0]) as im:
        assert im.size == (64, 48) and json.loads(im.text["prompt"])["1"]["class_type"] == "MakeImage"
    (video,) = headless.output_files(uis["5"], tmp_path)
    assert video.parent == tmp_path / "video" and video.name.startswith("clip_00001_.")
    assert video.stat().st_size > 0
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left

    executing = [(e["node"], e["index"], e["total"]) for e in events if e["event"] == "executing"]
    assert executing == [("1", 1, 5), ("2", 2, 5), ("3", 3, 5), ("4", 4, 5), ("5", 5, 5)]
    assert [(e["node"], e["value"], e["max"]) for e in events if e["event"] == "progress"] == \
        [("2", 1, 3), ("2", 2, 3), ("2", 3, 3)]

    # A second run numbers on instead of overwriting.
    uis = headless.execute(image_graph(), MAPPINGS, output_dir=tmp_path)
    assert headless.output_files(uis["3"], tmp_path)[0].name == "test_00004_.png"


def test_video_falls_back_to_animated_webp_without_pyav(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(media, "have_av", lambda: False)
    g = image_graph()
    g["3"] = node("CreateVideo", images=["2", 0], fps=12.0)
    g["4"] = node("SaveVideo", video=["3", 0], filename_prefix="video/ComfyUI", format="mp4", codec="h264")
    uis = headless.execute(g, MAPPINGS, output_dir=tmp_path)
    assert uis["4"]["animated"] == [True]
    (path,) = headless.output_files(uis["4"], tmp_path)
    assert path.name == "ComfyUI_00001_.webp"
    with Image.open(path) as im:
        assert im.format == "WEBP" and im.n_frames == 3 and im.size == (64, 48)
    assert "PyAV is not installed" in capsys.readouterr().out


def test_video_is_mp4_with_pyav(tmp_path):
    av = pytest.importorskip("av")
    audio = {"waveform": torch.sin(torch.linspace(0, 400, 2 * 16000)).view(1, 1, -1).repeat(1, 2, 1) * 0.1,
             "sample_rate": 16000}
    video = standins.CreateVideo().create_video(torch.rand(5, 33, 47, 3), 10.0, audio)[0]
    with standins.directories(tmp_path):
        ui = standins.SaveVideo().save_video(video, "clip", prompt={"1": {}})["ui"]
    (path,) = headless.output_files(ui, tmp_path)
    assert path.suffix == ".mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (48, 34)
        assert sum(1 for _ in container.decode(stream)) == 5
        assert len(container.streams.audio) == 1


def test_load_image_from_the_input_dir_or_an_absolute_path(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    out = tmp_path / "out"
    for name, input_dir in (("in.png", tmp_path), (str(tmp_path / "in.png"), None)):
        g = {"1": node("LoadImage", image=name), "2": node("SaveImage", images=["1", 0], filename_prefix="x")}
        uis = headless.execute(g, MAPPINGS, output_dir=out, input_dir=input_dir)
        (path,) = headless.output_files(uis["2"], out)
        with Image.open(path) as im:
            assert im.size == (12, 10) and im.getpixel((0, 0)) == (255, 0, 0)
    image, mask = standins.LoadImage().load_image(str(tmp_path / "in.png"))
    assert image.shape == (1, 10, 12, 3) and image.dtype == torch.float32
    assert mask.shape == (1, 10, 12) and torch.allclose(mask, torch.full_like(mask, 1 - 128 / 255))


def test_v3_shaped_nodes_get_hidden_values_and_their_ui(tmp_path):
    g = image_graph()
    g["3"] = node("V3Probe", image=["2", 0], mode="b")
    uis = headless.execute(g, MAPPINGS, output_dir=tmp_path)
    assert uis == {"3": {"text": ["(3, 48, 64, 3)"]}}
    assert V3Probe.seen == {"unique_id": "3", "has_prompt": True, "mode": "b"}
    g["3"]["inputs"]["mode"] = "c"
    with pytest.raises(WorkflowError, match=r"node 3 \(V3Probe\) input 'mode': 'c' is not one of the choices"):
        headless.validate(g, MAPPINGS)


# ---------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("change,expected", [
    (lambda g: g["2"]["inputs"].pop("factor"), r"node 2 \(Scale\) input 'factor': missing required input"),
    (lambda g: g.update({"9": node("MakeModel")}) or g["2"]["inputs"].update(image=["9", 0]),
     r"node 2 \(Scale\) input 'image': expects IMAGE but node 9 \(MakeModel\) output 0 is MODEL"),
    (lambda g: g["2"]["inputs"].update(factor=8.0), r"node 2 \(Scale\) input 'factor': 8.0 is above the maximum 4.0"),
    (lambda g: g["1"]["inputs"].update(frames=0), r"node 1 \(MakeImage\) input 'frames': 0 is below the minimum 1"),
    (lambda g: g["1"]["inputs"].update(width="wide"), r"node 1 \(MakeImage\) input 'width': expects an integer"),
    (lambda g: g["1"]["inputs"].update(width=True), r"node 1 \(MakeImage\) input 'width': expects an integer"),
    (lambda g: g["2"]["inputs"].update(label=3), r"node 2 \(Scale\) input 'label': expects a string"),
    (lambda g: g["2"].update(class_type="Zoom"), r"node class 'Zoom': not this pack's nodes.*--server URL"),
    (lambda g: g["2"]["inputs"].update(mode="cubic"),
     r"node 2 \(Scale\) input 'mode': 'cubic' is not one of the choices \['nearest', 'bilinear'\]"),
    (lambda g: g["2"]["inputs"].update(image=["7", 0]),
     r"node 2 \(Scale\) input 'image': links to node 7, which is not"),
    (lambda g: g["2"]["inputs"].update(image=["1", 1]),
     r"node 2 \(Scale\) input 'image': links to output 1 of node 1 \(MakeImage\), which has 1 output"),
    (lambda g: g["1"]["inputs"].update(value=["2", 0]),
     r"node 1 \(MakeImage\) input 'value': expects FLOAT but node 2 \(Scale\) output 0 is IMAGE"),
    (lambda g: g["2"]["inputs"].update(mode=["1", 0]),
     r"node 2 \(Scale\) input 'mode': expects a combo but node 1 \(MakeImage\) output 0 is IMAGE"),
    (lambda g: g.pop("3"), r"no output node"),
])
def test_bad_workflows_fail_before_any_node_runs(tmp_path, change, expected):
    g = image_graph()
    change(g)
    with pytest.raises(WorkflowError, match=expected):
        headless.execute(g, MAPPINGS, output_dir=tmp_path)
    assert CALLS == []
    assert files_under(tmp_path) == []


def test_all_problems_are_reported_together():
    g = image_graph(**{"1__width": 1000, "2__mode": "cubic"})
    del g["3"]["inputs"]["filename_prefix"]
    with pytest.raises(WorkflowError) as info:
        headless.validate(g, MAPPINGS)
    assert len(info.value.errors) == 3
    text = str(info.value)
    assert text.startswith("3 problems in the workflow")
    for part in ("node 1 (MakeImage) input 'width': 1000 is above the maximum 256",
                 "node 2 (Scale) input 'mode'", "node 3 (SaveImage) input 'filename_prefix': missing"):
        assert part in text


def test_validate_inputs_replaces_the_builtin_checks_of_the_inputs_it_names(tmp_path):
    g = image_graph()
    g["3"] = node("Checked", image=["2", 0], frames=9)  # above max 8, but VALIDATE_INPUTS owns 'frames'
    g["4"] = node("SaveImage", images=["3", 0], filename_prefix="c")
    headless.validate(g, MAPPINGS)
    g["3"]["inputs"]["frames"] = 6
    with pytest.raises(WorkflowError, match=r"node 3 \(Checked\) input 'frames': frames must be 4k\+1, got 6"):
        headless.execute(g, MAPPINGS, output_dir=tmp_path)
    assert CALLS == []
    g["3"]["inputs"]["frames"] = "nine"  # the type is still checked, and the node's validator is not called
    with pytest.raises(WorkflowError) as info:
        headless.validate(g, MAPPINGS)
    assert info.value.errors == ["node 3 (Checked) input 'frames': expects an integer, got 'nine'"]


def test_missing_image_file_is_a_validation_error(tmp_path):
    g = {"1": node("LoadImage", image="nope.png"), "2": node("SaveImage", images=["1", 0], filename_prefix="x")}
    with pytest.raises(WorkflowError, match=r"node 1 \(LoadImage\) input 'image': image file 'nope.png' was not found"):
        headless.validate(g, MAPPINGS, input_dir=tmp_path)


def test_cycles_and_dangling_nodes():
    g = image_graph()
    g["1"] = node("Scale", image=["2", 0], factor=1.0, mode="nearest")
    with pytest.raises(WorkflowError, match="cycle"):
        headless.validate(g, MAPPINGS)
    g = image_graph()
    g["8"] = node("Scale", image=["1", 0], factor=99.0, mode="bad")  # leads nowhere: not checked, not run
    headless.validate(g, MAPPINGS)


# ---------------------------------------------------------------------------------------------- failures
def _two_branch_graph(failing_class):
    g = image_graph()  # branch 1: writes PNGs first
    g["4"] = node(failing_class, image=["1", 0])
    g["5"] = node("SaveImage", images=["4", 0], filename_prefix="late")
    return g


def test_node_errors_name_the_node_and_remove_the_files_of_the_run(tmp_path):
    with pytest.raises(NodeError, match=r"node 4 \(Boom\) failed: ValueError: the sampler exploded") as info:
        headless.execute(_two_branch_graph("Boom"), MAPPINGS, output_dir=tmp_path)
    assert isinstance(info.value.__cause__, ValueError)
    assert (info.value.node_id, info.value.class_type) == ("4", "Boom")
    assert "Boom" in CALLS and "MakeImage" in CALLS
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_an_interrupt_propagates_unchanged_and_leaves_no_output_file(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "test_00001_.png").write_bytes(b"from an earlier run")
    with pytest.raises(Interrupted) as info:
        headless.execute(_two_branch_graph("Interrupt"), MAPPINGS, output_dir=tmp_path)
    assert type(info.value) is Interrupted and info.value.__cause__ is None
    assert CALLS == ["MakeImage", "Scale", "Interrupt"]  # the PNGs of node 3 were written, then removed
    assert files_under(tmp_path) == ["img/test_00001_.png"]  # only the earlier run's file


# ---------------------------------------------------------------------------------------------- loading, overrides
def test_load_workflow_takes_api_format_and_rejects_editor_format(tmp_path):
    api = tmp_path / "api.json"
    api.write_text(json.dumps(image_graph()))
    assert headless.load_workflow(api)["2"]["class_type"] == "Scale"
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"prompt": image_graph(), "client_id": "x"}))
    assert headless.load_workflow(body)["3"]["class_type"] == "SaveImage"
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [{"id": 1, "type": "Scale"}], "links": [], "version": 0.4}))
    with pytest.raises(WorkflowError, match="editor .*API format"):
        headless.load_workflow(ui)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"1": {"inputs": {}}}))
    with pytest.raises(WorkflowError, match="node 1: has no 'class_type'"):
        headless.load_workflow(bad)


def test_overrides():
    g = image_graph()
    out = headless.apply_overrides(g, ["1.width=40", "2.factor=0.5", "2.label=123", "2.mode=bilinear",
                                     "2.image=[\"1\", 0]", "3.filename_prefix=a b/c=d"], MAPPINGS)
    assert g == image_graph()  # the input graph is left alone
    assert out["1"]["inputs"]["width"] == 40 and out["2"]["inputs"]["factor"] == 0.5
    assert out["2"]["inputs"]["label"] == "123"  # STRING inputs keep the text
    assert out["2"]["inputs"]["mode"] == "bilinear" and out["2"]["inputs"]["image"] == ["1", 0]
    assert out["3"]["inputs"]["filename_prefix"] == "a b/c=d"
    with pytest.raises(WorkflowError) as info:
        headless.apply_overrides(g, ["7.seed=1", "2.zoom=3", "nonsense"], MAPPINGS)
    text = str(info.value)
    assert "node 7 is not in the workflow" in text and "has no input 'zoom'" in text and "NODE.INPUT=VALUE" in text
    assert headless.apply_overrides(g, ["2.zoom=3"])["2"]["inputs"]["zoom"] == 3  # unknown classes: anything goes


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_run(tmp_path, capsys):
    Image.new("RGB", (9, 7), (0, 255, 0)).save(tmp_path / "green.png")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"1": node("LoadImage", image="missing.png"),
                              "2": node("SaveImage", images=["1", 0], filename_prefix="cli")}))
    out = tmp_path / "out"
    args = ["run", str(wf), "--standins", "--output-dir", str(out), "--input-dir", str(tmp_path)]
    assert main(args) == 2
    assert "node 1 (LoadImage) input 'image'" in capsys.readouterr().err
    assert main(args + ["--set", "1.image=green.png"]) == 0
    printed = capsys.readouterr().out
    assert "node 2 (SaveImage)" in printed and str(out / "cli_00001_.png") in printed
    assert main(args + ["--set", "1.image=green.png", "--set", "2.filename_prefix=../escape"]) == 1
    assert "outside the output folder" in capsys.readouterr().err
    assert files_under(out) == ["cli_00001_.png"]


# ---------------------------------------------------------------------------------------------- server mode
def _ws_frame(opcode, payload, fin=True):
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([n]) if n < 126 else bytes([126]) + struct.pack(">H", n)
    return head + payload


def _read_client_frame(rfile):
    b0, b1 = rfile.read(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", rfile.read(2))[0]
    assert b1 & 0x80, "client frames must be masked"
    mask = rfile.read(4)
    return b0 & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(rfile.read(n)))


class FakeComfyUI(http.server.ThreadingHTTPServer):
    """A loopback ComfyUI look-alike: /prompt, /ws (progress, then executing null), /history, /view.

    ``mode``: ok, reject (400 at /prompt), error or interrupt (the run fails: on /ws and in its history).
    Like ComfyUI, the history has no entry for the prompt until its run is over (``pending`` answers).
    """

    def __init__(self, mode="ok", pending=0):
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.mode, self.posted, self.prompt, self.client_frames = mode, threading.Event(), None, []
        self.pending, self.history_requests, self.ws_connections = pending, 0, 0
        self.png = tmp_png_bytes()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


def tmp_png_bytes():
    import io

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


FAILURES = {  # how a failed run is reported, on /ws and in the history: ComfyUI's message types
    "error": ("execution_error", {"prompt_id": "p1", "node_id": "2", "node_type": "Scale", "executed": ["1"],
                                  "exception_type": "ValueError", "exception_message": "bad"}),
    "interrupt": ("execution_interrupted", {"prompt_id": "p1", "node_id": "2", "node_type": "Scale",
                                            "executed": ["1"]}),
}


class FakeHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body, ctype="application/json"):
        data = json.dumps(body).encode() if ctype == "application/json" else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.mode == "reject":
            self.server.posted.set()  # the /ws side goes on as usual: the client closes it
            error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"}
            return self.reply(400, {"error": error,
                                    "node_errors": {"2": {"class_type": "Scale", "dependent_outputs": ["3"], "errors": [
                                        {"type": "value_bigger_than_max", "message": "Value 8.0 bigger than max of 4.0",
                                         "details": "factor", "extra_info": {"input_name": "factor"}}]}}})
        self.server.prompt = body
        self.reply(200, {"prompt_id": "p1", "number": 0, "node_errors": {}})
        self.server.posted.set()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/ws":
            assert query["clientId"]
            self.server.ws_connections += 1
            accept = base64.b64encode(hashlib.sha1(self.headers["Sec-WebSocket-Key"].encode()
                                                   + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()
            self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
            self.server.posted.wait(10)
            msgs = [{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}},
                    {"type": "executing", "data": {"node": None, "prompt_id": "someone-else"}},
                    {"type": "execution_start", "data": {"prompt_id": "p1"}},
                    {"type": "execution_cached", "data": {"nodes": ["1"], "prompt_id": "p1"}},
                    {"type": "executing", "data": {"node": "2", "display_node": "2", "prompt_id": "p1"}},
                    {"type": "progress", "data": {"value": 1, "max": 2, "prompt_id": "p1", "node": "2"}}]
            if self.server.mode in FAILURES:
                kind, data = FAILURES[self.server.mode]
                msgs.append({"type": kind, "data": data})
            frames = [_ws_frame(1, json.dumps(m).encode()) for m in msgs]
            frames.insert(3, _ws_frame(0x9, b"ping!"))
            frames.append(_ws_frame(2, struct.pack(">I", 1) + b"preview bytes"))
            last = json.dumps({"type": "progress",
                               "data": {"value": 2, "max": 2, "prompt_id": "p1", "node": "2"}}).encode()
            frames += [_ws_frame(1, last[:10], fin=False), _ws_frame(0, last[10:])]  # a fragmented message
            for m in ({"type": "executed", "data": {"node": "3", "prompt_id": "p1", "output": {"images": []}}},
                      {"type": "execution_success", "data": {"prompt_id": "p1"}},
                      {"type": "executing", "data": {"node": None, "prompt_id": "p1"}}):
                frames.append(_ws_frame(1, json.dumps(m).encode()))
            self.wfile.write(b"".join(frames))
            self.wfile.flush()
            try:
                while True:
                    opcode, payload = _read_client_frame(self.rfile)
                    self.server.client_frames.append((opcode, payload))
                    if opcode == 0x8:
                        break
            except (ValueError, OSError):
                pass
            self.close_connection = True
        elif url.path == "/history/p1":
            self.server.history_requests += 1
            if self.server.history_requests <= self.server.pending:
                return self.reply(200, {})
            messages = [["execution_start", {"prompt_id": "p1"}],
                        ["execution_cached", {"nodes": ["1"], "prompt_id": "p1"}]]
            if self.server.mode in FAILURES:
                messages.append(list(FAILURES[self.server.mode]))
                return self.reply(200, {"p1": {"outputs": {}, "status": {
                    "status_str": "error", "completed": False, "messages": messages}}})
            self.reply(200, {"p1": {"outputs": {"3": {"images": [
                {"filename": "ComfyUI_00001_.png", "subfolder": "sub", "type": "output"},
                {"filename": "preview.png", "subfolder": "", "type": "temp"}]}},
                "status": {"status_str": "success", "completed": True,
                           "messages": messages + [["execution_success", {"prompt_id": "p1"}]]}}})
        elif url.path == "/view":
            assert query == {"filename": "ComfyUI_00001_.png", "subfolder": "sub", "type": "output"}
            self.reply(200, self.server.png, "image/png")
        else:
            self.reply(404, {})


@pytest.fixture
def fake_server():
    servers = []

    def start(mode="ok", pending=0):
        servers.append(FakeComfyUI(mode, pending))
        return servers[-1]

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_server_mode_runs_and_downloads_the_outputs(tmp_path, fake_server):
    pytest.importorskip("websocket")  # websocket-client: progress over ComfyUI's /ws
    server = fake_server()
    events = []
    files = headless.submit(image_graph(), server.url, output_dir=tmp_path, timeout=20, on_progress=events.append)
    assert files == [tmp_path / "sub" / "ComfyUI_00001_.png"]
    assert files[0].read_bytes() == server.png
    assert server.prompt["prompt"] == image_graph() and server.prompt["client_id"]
    assert [e["event"] for e in events] == ["cached", "executing", "progress", "progress", "executed"]
    assert events[1] == {"event": "executing", "node": "2", "class_type": "Scale"}
    assert (events[3]["value"], events[3]["max"]) == (2, 2)
    assert (0xA, b"ping!") in server.client_frames  # the ping was answered with a masked pong
    assert server.client_frames[-1][0] == 0x8  # and the client closed cleanly


@pytest.fixture(params=["websocket", "polling"])
def follow(request, monkeypatch):
    """Both ways of following a server run: over /ws with websocket-client, or by polling /history without it."""
    if request.param == "websocket":
        pytest.importorskip("websocket")
    else:
        monkeypatch.setattr(client, "websocket", None)
    return request.param


def test_server_mode_reports_node_errors_and_execution_errors(tmp_path, fake_server, follow):
    with pytest.raises(WorkflowError, match=r"node 2 \(Scale\) input 'factor': Value 8.0 bigger than max of 4.0"):
        headless.submit(image_graph(), fake_server("reject").url, output_dir=tmp_path, timeout=20)
    with pytest.raises(ServerError, match=r"node 2 \(Scale\) failed on the server: ValueError: bad"):
        headless.submit(image_graph(), fake_server("error").url, output_dir=tmp_path, timeout=20)
    assert files_under(tmp_path) == []


def test_server_mode_reports_an_interrupted_run(tmp_path, fake_server, follow):
    with pytest.raises(RunInterrupted, match=r"interrupted on the server at node 2 \(Scale\)"):
        headless.submit(image_graph(), fake_server("interrupt").url, output_dir=tmp_path, timeout=20)
    assert files_under(tmp_path) == []


def test_server_mode_without_websocket_client_polls_the_history(tmp_path, fake_server, monkeypatch, capsys):
    monkeypatch.setattr(client, "websocket", None)
    server = fake_server(pending=2)  # the run is over at the third look
    events = []
    files = headless.submit(image_graph(), server.url, output_dir=tmp_path, timeout=20, on_progress=events.append)
    assert files == [tmp_path / "sub" / "ComfyUI_00001_.png"]
    assert files[0].read_bytes() == server.png
    assert server.prompt["prompt"] == image_graph() and server.ws_connections == 0
    assert server.history_requests == 3
    assert events == [{"event": "cached", "nodes": ["1"]},
                      {"event": "executed", "node": "3", "output": {"images": [
                          {"filename": "ComfyUI_00001_.png", "subfolder": "sub", "type": "output"},
                          {"filename": "preview.png", "subfolder": "", "type": "temp"}]}}]
    assert capsys.readouterr().out.count("websocket-client is not installed") == 1


def test_integer_node_ids_and_links_work_from_python(tmp_path):
    g = {1: node("MakeImage", width=8, height=8, frames=1, value=1.0),
         2: node("SaveImage", images=[1, 0], filename_prefix="int")}
    uis = headless.execute(g, MAPPINGS, output_dir=tmp_path)
    assert [p.name for p in headless.output_files(uis["2"], tmp_path)] == ["int_00001_.png"]


def test_save_image_writes_all_of_a_batch_or_nothing(tmp_path, monkeypatch):
    calls = []

    def flaky_save(self, fp, format=None, **kw):
        calls.append(fp)
        if len(calls) == 2:
            raise Interrupted()
        Path(fp).write_bytes(b"png")

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    with standins.directories(tmp_path), pytest.raises(Interrupted):
        standins.SaveImage().save_images(torch.zeros(3, 4, 4, 3), "batch")
    assert files_under(tmp_path) == []
