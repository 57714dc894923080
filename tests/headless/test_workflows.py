"""The shipped workflows: every API-format graph runs end to end on the tiny models, and every
editor-format graph fits the node contract (types exist, links join matching types, widget values fit), sits
where ComfyUI looks for a pack's templates (and nothing else does), and opens readable: laid out left to right
without overlaps or links behind nodes, the whole graph in view."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyui_cosmos3_ltx2 import headless
from helpers import ROOT

WORKFLOWS = ROOT / "workflows"
API_DIR = WORKFLOWS / "api"
TEMPLATES = ROOT / "example_workflows"  # the editor graphs, and the example image the I2V graph loads
API_FILES = sorted(API_DIR.glob("*_api.json"))
EDITOR_FILES = sorted(TEMPLATES.glob("*.json"))
MAPPINGS = headless.node_mappings(False)  # the pack's nodes + the labelled I/O stand-ins
# ComfyUI 0.27.0's own nodes that shipped graphs use, as its GET /object_info described them (captured from a real
# 0.27.0 server; the lists of the user's files emptied); the stand-ins must keep their contract.
CORE_SCHEMAS = json.loads((Path(__file__).parent / "data" / "comfyui_0.27_core_nodes.json").read_text())
# graphs with a sound track -> its sample rate (LTX-2.3's vocoder; the Cosmos3 demo's 8 kHz sound tokenizer)
SOUND_RATES = {"ltx2_t2v_api": 48000, "ltx2_i2v_api": 48000, "ltx2_hq_api": 48000, "ltx2_distilled_api": 48000,
               "cosmos3_sound_api": 8000}
# graphs of ComfyUI's own model nodes (LTX-2.3 loaded by ComfyUI): they run only inside ComfyUI with the real files,
# so here their structure is checked against the schemas; see the README for the real-server run
NEEDS_COMFYUI = {"ltx2_native_api"}
SMALL = ["3.width=64", "3.height=32", "5.steps=3"]
LTX_SMALL = ["3.width=64", "3.height=32", "3.frames=9"]
# per graph: overrides that keep the run small, then (frames, (width, height)) of its output
RUNS = {
    "cosmos3_t2i_api": (SMALL, 1, (64, 32)), "cosmos3_t2v_api": (SMALL, 17, (64, 32)),
    "cosmos3_i2v_api": (SMALL, 17, (64, 32)), "cosmos3_sound_api": (SMALL, 17, (64, 32)),
    "ltx2_t2v_api": (LTX_SMALL + ["5.steps=3"], 9, (64, 32)), "ltx2_i2v_api": (LTX_SMALL + ["5.steps=3"], 9, (64, 32)),
    "ltx2_hq_api": (LTX_SMALL + ["5.steps=2"], 9, (128, 64)), "ltx2_distilled_api": (LTX_SMALL, 9, (128, 64)),
}


def test_every_graph_in_both_formats():
    assert [p.name for p in API_FILES] == sorted([f"{name}.json" for name in RUNS] + [f"{n}.json" for n in NEEDS_COMFYUI])
    assert [p.name.replace(".json", "_api.json") for p in EDITOR_FILES] == [p.name for p in API_FILES]


def test_only_editor_graphs_where_comfyui_looks_for_templates():
    """ComfyUI 0.27 (``app/custom_node_manager.py``) lists ``<pack>/<folder>/*.json`` as the pack's templates for
    the folder names example_workflows, example, examples, workflow, workflows; the editor opens each. Only
    editor graphs may be there (an API file opens as an empty graph)."""
    listed = [p for name in ("example_workflows", "example", "examples", "workflow", "workflows")
              for p in (ROOT / name).glob("*.json")]
    assert sorted(listed) == EDITOR_FILES
    for path in listed:
        wf = json.loads(path.read_text())
        assert {"nodes", "links", "version"} <= set(wf) and not any("class_type" in v for v in wf.values()
                                                                     if isinstance(v, dict))


def test_generator_and_files_agree():
    """The committed files are exactly what workflows/make_workflows.py writes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_workflows", WORKFLOWS / "make_workflows.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    for name, build in make.GRAPHS.items():
        assert json.loads((API_DIR / f"{name}_api.json").read_text()) == make.api_format(build())
        assert json.loads((TEMPLATES / f"{name}.json").read_text()) == make.editor_format(build())


@pytest.mark.parametrize("path", [p for p in API_FILES if p.stem not in NEEDS_COMFYUI], ids=lambda p: p.stem)
def test_api_workflow_runs_end_to_end(path, tmp_path):
    overrides, frame_count, frame_size = RUNS[path.stem]
    graph = headless.apply_overrides(headless.load_workflow(path), overrides, MAPPINGS)
    files = headless.run(graph, output_dir=tmp_path, input_dir=TEMPLATES, mappings=MAPPINGS)
    assert len(files) == 1
    frames, size, pixels = read_output(Path(files[0]))
    assert frames == frame_count
    assert size == frame_size
    assert np.isfinite(pixels).all() and pixels.std() > 0
    if path.stem in SOUND_RATES:  # the sound track: the decoder's rate, as long as the clip, not silent
        rate, samples = read_audio(Path(files[0]))
        assert rate == SOUND_RATES[path.stem]
        # (AAC adds up to two 1024-sample frames of priming and padding: 0.04 s at 48 kHz, 0.26 s at 8 kHz)
        assert abs(samples.shape[-1] / rate - frame_count / 24.0) < 0.05 + 2048 / rate
        assert np.isfinite(samples).all() and np.abs(samples).max() > 0


def read_output(path: Path):
    """(frame count, (width, height), first frame as float array) of a PNG / WebP / MP4 output."""
    if path.suffix == ".mp4":
        import av

        with av.open(str(path)) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        return len(decoded), (decoded[0].shape[1], decoded[0].shape[0]), decoded[0].astype(np.float32)
    image = Image.open(path)
    return getattr(image, "n_frames", 1), image.size, np.asarray(image.convert("RGB"), dtype=np.float32)


def read_audio(path: Path):
    """(sample rate, samples [channels, n]) of an MP4's sound track."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [f.to_ndarray() for f in container.decode(audio=0)]
        rate = stream.rate
    samples = np.concatenate([c if c.ndim == 2 else c[None] for c in chunks], axis=-1)
    return rate, samples


def test_bad_workflow_fails_before_any_model_work(monkeypatch, tmp_path):
    calls = []
    loader = MAPPINGS["Cosmos3ModelLoader"]
    monkeypatch.setattr(loader, "load", lambda self, *a, **k: calls.append(1))
    graph = headless.load_workflow(API_DIR / "cosmos3_t2v_api.json")
    del graph["4"]["inputs"]["prompt"]  # missing input
    graph["5"]["inputs"]["latent"] = ["1", 0]  # COSMOS3_MODEL into a LATENT input
    graph["5"]["inputs"]["cfg"] = 99.0  # over the maximum
    with pytest.raises(headless.WorkflowError) as err:
        headless.run(graph, output_dir=tmp_path, input_dir=TEMPLATES, mappings=MAPPINGS)
    message = str(err.value)
    assert "node 4 (Cosmos3TextEncode) input 'prompt'" in message
    assert "node 5 (Cosmos3Sampler) input 'latent'" in message
    assert "node 5 (Cosmos3Sampler) input 'cfg'" in message
    assert calls == [] and not any(tmp_path.iterdir())


def test_interrupted_run_writes_no_output(monkeypatch, tmp_path):
    from comfyui_cosmos3_ltx2.nodes import comfy

    class Cancelled(BaseException):
        pass

    checks = []

    def cancel_on_third_step():
        checks.append(1)
        if len(checks) == 3:
            raise Cancelled()

    monkeypatch.setattr(comfy, "check_interrupt", cancel_on_third_step)
    graph = headless.apply_overrides(headless.load_workflow(API_DIR / "cosmos3_t2v_api.json"), SMALL, MAPPINGS)
    with pytest.raises(Cancelled):
        headless.run(graph, output_dir=tmp_path, input_dir=TEMPLATES, mappings=MAPPINGS)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# ---------------------------------------------------------------------------------------------- editor format
SOCKET = object()
FILES = "FILES"  # a combo of the user's files (which, depends on the machine)


def core_node(name: str):
    """A class with the contract (INPUT_TYPES, RETURN_TYPES) of ComfyUI's own node ``name`` from its schema."""
    info = CORE_SCHEMAS[name]

    def spec(entry):
        typ, opts = entry[0], dict(entry[1]) if len(entry) > 1 else {}
        if typ == "COMBO":
            typ = FILES if opts.get("files") else list(opts["options"])
        return (typ, opts)

    order = info.get("input_order", {})  # the editor's widget order (the file's keys are sorted)
    inputs = {sect: {k: spec(info["input"][sect][k]) for k in order.get(sect, sorted(info["input"].get(sect, {})))}
              for sect in ("required", "optional")}
    return type(name, (), {"INPUT_TYPES": classmethod(lambda cls: inputs), "RETURN_TYPES": tuple(info["output"])})


# what a shipped graph may use: the pack's nodes and stand-ins, and ComfyUI's own nodes by their schemas
CONTRACT = {**{name: core_node(name) for name in CORE_SCHEMAS}, **MAPPINGS}


def widget_inputs(cls):
    """(name, spec) of the inputs the editor shows as widgets, in INPUT_TYPES order."""
    spec = cls.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, (typ, *rest) in spec.get(section, {}).items():
            opts = rest[0] if rest else {}
            if isinstance(typ, list) or typ in ("INT", "FLOAT", "STRING", "BOOLEAN", FILES):
                out.append((name, typ, opts))
    return out


def fits(typ, opts, value):
    if typ == FILES:
        return isinstance(value, str) and value.endswith(".safetensors")
    if isinstance(typ, list):
        return opts.get("image_upload") or value in typ
    if typ == "INT":
        return isinstance(value, int) and opts.get("min", -2**63) <= value <= opts.get("max", 2**64)
    if typ == "FLOAT":
        return isinstance(value, (int, float)) and opts.get("min", -1e300) <= value <= opts.get("max", 1e300)
    if typ == "STRING":
        return isinstance(value, str)
    return isinstance(value, bool)


@pytest.mark.parametrize("path", EDITOR_FILES, ids=lambda p: p.stem)
def test_editor_workflow_fits_the_node_contract(path):
    wf = json.loads(path.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert wf["last_node_id"] == max(nodes) and wf["last_link_id"] == len(wf["links"])
    for link_id, src, src_slot, dst, dst_slot, typ in wf["links"]:
        src_cls, dst_cls = CONTRACT[nodes[src]["type"]], CONTRACT[nodes[dst]["type"]]
        assert src_cls.RETURN_TYPES[src_slot] == typ, (path.name, link_id)
        entry = nodes[dst]["inputs"][dst_slot]
        assert entry["link"] == link_id
        spec = {**dst_cls.INPUT_TYPES().get("required", {}), **dst_cls.INPUT_TYPES().get("optional", {})}
        assert spec[entry["name"]][0] == typ, (path.name, dst, entry["name"])
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
    for n in wf["nodes"]:
        cls = CONTRACT[n["type"]]  # every node type exists
        values = list(n["widgets_values"])
        for name, typ, opts in widget_inputs(cls):
            assert values, f"{path.name} node {n['id']}: no value for widget {name!r}"
            value = values.pop(0)
            assert fits(typ, opts, value), f"{path.name} node {n['id']} widget {name!r}: {value!r}"
            if opts.get("control_after_generate"):
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
            if opts.get("image_upload"):
                assert values.pop(0) == "image"
        assert values == [], f"{path.name} node {n['id']}: extra widget values {values}"
        assert [o["type"] for o in n["outputs"]][: len(cls.RETURN_TYPES)] == list(cls.RETURN_TYPES)[: len(n["outputs"])]


@pytest.mark.parametrize("path", EDITOR_FILES, ids=lambda p: p.stem)
def test_editor_and_api_formats_describe_the_same_graph(path):
    wf = json.loads(path.read_text())
    api = json.loads((API_DIR / f"{path.stem}_api.json").read_text())
    assert {str(n["id"]): n["type"] for n in wf["nodes"]} == {k: v["class_type"] for k, v in api.items()}
    for src_id, src, slot, dst, _, _ in wf["links"]:
        name = next(i["name"] for i in next(n for n in wf["nodes"] if n["id"] == dst)["inputs"] if i["link"] == src_id)
        assert api[str(dst)]["inputs"][name] == [str(src), slot]


def test_loaders_take_absolute_checkpoint_paths(tmp_path):
    """Scripts and API users may name a checkpoint folder by path instead of a listed name."""
    from comfyui_cosmos3_ltx2.nodes import cosmos3

    folder = str(cosmos3.resolve_model_path("cosmos3", cosmos3.EMBEDDED_CHECKPOINT))
    graph = headless.apply_overrides(headless.load_workflow(API_DIR / "cosmos3_t2i_api.json"),
                                   SMALL + [f"1.checkpoint={folder}", f"2.vae={folder}"], MAPPINGS)
    assert len(headless.run(graph, output_dir=tmp_path, mappings=MAPPINGS)) == 1
    graph["1"]["inputs"]["checkpoint"] = str(tmp_path / "missing")
    with pytest.raises(headless.WorkflowError, match="node 1 .*checkpoint"):
        headless.run(graph, output_dir=tmp_path, mappings=MAPPINGS)


# ---------------------------------------------------------------------------------------------- editor layout
TITLE_H, SLOT_H = 30, 20  # litegraph: the title bar above a node's body, one slot row
VIEW, MARGINS = (1280, 720), (48, 80, 0, 0)  # a small editor window; its side bar and top menu cover the canvas


def _boxes(wf):
    """Each node's rectangle with its title bar: (left, top, right, bottom)."""
    return {n["id"]: (n["pos"][0], n["pos"][1] - TITLE_H, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
            for n in wf["nodes"]}


def _curve(a, b, k):
    """Point k/32 of the editor's link curve from output a to input b (control points a quarter length out)."""
    reach = 0.25 * ((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2) ** 0.5
    c1, c2, t = (a[0] + reach, a[1]), (b[0] - reach, b[1]), k / 32
    return tuple((1 - t) ** 3 * p + 3 * (1 - t) ** 2 * t * q + 3 * (1 - t) * t * t * r + t**3 * s
                 for p, q, r, s in zip(a, c1, c2, b))


@pytest.mark.parametrize("path", EDITOR_FILES, ids=lambda p: p.stem)
def test_editor_layout_reads_left_to_right_and_opens_fitted(path):
    wf = json.loads(path.read_text())
    nodes, boxes = {n["id"]: n for n in wf["nodes"]}, _boxes(wf)
    # no two nodes (title bars included) overlap
    ids = sorted(boxes)
    for i in ids:
        for j in ids:
            if i < j:
                a, b = boxes[i], boxes[j]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (path.name, i, j)
    # a node is tall enough for its slot rows and widget rows (20 px per slot, 24 per widget value, at least)
    for n in wf["nodes"]:
        rows = max(len(n["inputs"]), len(n["outputs"]))
        assert n["size"][1] >= SLOT_H * rows + 24 * len(n["widgets_values"]), (path.name, n["id"])
    # every link runs left to right, and passes behind no node other than its two ends
    for _, src, src_slot, dst, dst_slot, _ in wf["links"]:
        assert boxes[src][2] < boxes[dst][0], (path.name, src, dst)
        a = (boxes[src][2], nodes[src]["pos"][1] + (src_slot + 0.7) * SLOT_H)
        b = (boxes[dst][0], nodes[dst]["pos"][1] + (dst_slot + 0.7) * SLOT_H)
        for k in range(33):
            x, y = _curve(a, b, k)
            for other, (left, top, right, bottom) in boxes.items():
                if other not in (src, dst):
                    assert not (left <= x <= right and top <= y <= bottom), (path.name, src, dst, other)
    # the stored view shows the whole graph in a small window, clear of the side bar and the top menu
    ds = wf["extra"]["ds"]
    scale, (ox, oy) = ds["scale"], ds["offset"]
    assert 0.2 <= scale <= 1.0  # the frontend fits a template on opening; this is the drag-and-drop view
    for left, top, right, bottom in boxes.values():
        assert MARGINS[0] <= (left + ox) * scale and (right + ox) * scale <= VIEW[0] - MARGINS[2], path.name
        assert MARGINS[1] <= (top + oy) * scale and (bottom + oy) * scale <= VIEW[1] - MARGINS[3], path.name


# ---------------------------------------------------------------------------------------------- ComfyUI's own nodes
def test_standins_keep_comfyuis_contract():
    """The headless runner's stand-ins of ComfyUI's I/O nodes take the inputs ComfyUI 0.27's nodes take (names,
    types, required or optional) and give the same outputs, so a graph that runs here runs in ComfyUI."""
    from comfyui_cosmos3_ltx2.headless.standins import STANDIN_CLASS_MAPPINGS

    checked = 0
    for name, cls in STANDIN_CLASS_MAPPINGS.items():
        if name not in CORE_SCHEMAS:
            continue
        real, ours = core_node(name).INPUT_TYPES(), cls.INPUT_TYPES()
        for sect in ("required", "optional"):
            want = {k: ("COMBO" if isinstance(t, list) or t == FILES else t) for k, (t, _) in real.get(sect, {}).items()}
            got = {k: ("COMBO" if isinstance(v[0], list) else v[0]) for k, v in ours.get(sect, {}).items()}
            assert got == want, (name, sect)
        assert tuple(cls.RETURN_TYPES) == core_node(name).RETURN_TYPES, name
        checked += 1
    assert checked >= 4  # LoadImage, SaveImage, CreateVideo, SaveVideo


@pytest.mark.parametrize("name", sorted(NEEDS_COMFYUI))
def test_graph_of_comfyuis_own_nodes_fits_their_schemas(name):
    """A graph that only ComfyUI can run: every node exists (ours or ComfyUI 0.27's), every required input is
    given, every link joins an output to an input of its type, every value fits its widget."""
    graph = json.loads((API_DIR / f"{name}.json").read_text())
    for node_id, node in graph.items():
        cls = CONTRACT[node["class_type"]]
        spec = cls.INPUT_TYPES()
        allowed = {**spec.get("required", {}), **spec.get("optional", {})}
        assert set(spec.get("required", {})) <= set(node["inputs"]), (node_id, node["class_type"])
        for key, value in node["inputs"].items():
            typ, opts = allowed[key][0], (allowed[key][1] if len(allowed[key]) > 1 else {})
            if isinstance(value, list):
                src = graph[value[0]]
                assert CONTRACT[src["class_type"]].RETURN_TYPES[value[1]] == typ, (node_id, key)
            else:
                assert fits(typ, opts, value), (node_id, key, value)


@pytest.mark.parametrize("name, overrides", [
    ("cosmos3_t2v_api", SMALL), ("ltx2_t2v_api", LTX_SMALL + ["5.steps=2"]),
])
def test_block_offload_on_the_loader_gives_the_same_video(name, overrides, tmp_path):
    """The loaders' offload_blocks (blocks streamed from system memory) changes where the weights wait, not the
    frames or the sound (the files differ only in the graph they embed)."""
    def run(extra, out):
        graph = headless.apply_overrides(headless.load_workflow(API_DIR / f"{name}.json"), overrides + extra, MAPPINGS)
        path = Path(headless.run(graph, output_dir=out, input_dir=TEMPLATES, mappings=MAPPINGS)[0])
        return read_output(path)[2], (read_audio(path)[1] if name.startswith("ltx2") else None)

    (frames, sound), (want_frames, want_sound) = run(["1.offload_blocks=1"], tmp_path / "a"), run([], tmp_path / "b")
    assert np.array_equal(frames, want_frames) and (sound is None or np.array_equal(sound, want_sound))
