"""Headless runner for API-format ComfyUI workflows, generic over node classes.

In-process: :func:`validate` checks the whole graph before anything runs (unknown classes, missing
inputs, broken links, link types, widget values), then :func:`execute` runs the nodes that lead to an
output node in dependency order through ComfyUI's classic node contract (``INPUT_TYPES``,
``RETURN_TYPES``, ``FUNCTION``, ``OUTPUT_NODE``, ``VALIDATE_INPUTS``; V3 classes through their V1
compatibility surface). A run that ends in an exception or an interrupt removes the files its output
nodes wrote, so a failed run leaves no output behind.

Against a server: :func:`submit` posts the graph to a running ComfyUI (``POST /prompt``), follows the
``/ws`` websocket and downloads the outputs through ``/view``; standard library only.

This module imports no ComfyUI module at import time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import inspect
import json
import os
import re
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from . import comfy, standins

PRIMITIVES = ("INT", "FLOAT", "STRING", "BOOLEAN")


class WorkflowError(ValueError):
    """The workflow is invalid; ``errors`` holds one line per problem, each naming node and input."""

    def __init__(self, errors):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        if len(self.errors) == 1:
            message = self.errors[0]
        else:
            message = f"{len(self.errors)} problems in the workflow:\n" + "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(message)


class NodeError(RuntimeError):
    """A node raised while running; the original exception is ``__cause__``."""

    def __init__(self, node_id: str, class_type: str, message: str):
        self.node_id, self.class_type = node_id, class_type
        super().__init__(f"node {node_id} ({class_type}) failed: {message}")


class ServerError(RuntimeError):
    """The ComfyUI server reported an error, or could not be reached."""


class RunInterrupted(RuntimeError):
    """The ComfyUI server interrupted the run."""


def _label(node_id, class_type) -> str:
    return f"node {node_id} ({class_type})"


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- loading
def load_workflow(path) -> dict:
    """Read an API-format workflow ``{"id": {"class_type", "inputs", "_meta"?}}`` from a JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise WorkflowError(f"cannot read workflow {path}: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise WorkflowError(f"{path} is not valid JSON: {e}") from e
    if isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data:
        raise WorkflowError(
            f"{path} is an editor (UI) workflow; the runner takes the API format. Use the API-format file "
            "shipped next to it (workflows/*_api.json), or in ComfyUI export with 'Export (API)'.")
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]  # a saved POST /prompt body
    _check_shape(data, str(path))
    return data


def _str_ids(graph):
    """Node ids as strings (JSON has no other kind; Python callers may use ints)."""
    if isinstance(graph, dict) and not all(isinstance(k, str) for k in graph):
        return {str(k): v for k, v in graph.items()}
    return graph


def _check_shape(graph, where: str = "workflow") -> None:
    if not isinstance(graph, dict) or not graph:
        raise WorkflowError(f"{where}: expected a JSON object of nodes {{id: {{class_type, inputs}}}}")
    errors = []
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            errors.append(f"node {node_id}: has no 'class_type' (is this an API-format workflow?)")
        elif not isinstance(node.get("inputs", {}), dict):
            errors.append(f"{_label(node_id, node['class_type'])}: 'inputs' must be an object")
    if errors:
        raise WorkflowError(errors)


# ---------------------------------------------------------------------------------------------- overrides
def apply_overrides(graph: dict, assignments, mappings: dict | None = None) -> dict:
    """Return a copy of ``graph`` with ``NODE.INPUT=VALUE`` assignments applied.

    VALUE is JSON-decoded when possible (``42``, ``1.5``, ``true``, ``["4", 0]`` for a link), else kept as a
    string; inputs declared STRING or combo keep the raw text. With ``mappings``, INPUT must be an input the
    node's class declares; without, any name is accepted.
    """
    graph = copy.deepcopy(graph)
    errors = []
    for item in assignments or ():
        key, eq, raw = item.partition("=")
        node_id, dot, name = key.strip().rpartition(".")
        if not eq or not dot or not node_id or not name:
            errors.append(f"--set {item!r}: expected NODE.INPUT=VALUE, e.g. 3.seed=42")
            continue
        if node_id not in graph:
            errors.append(f"--set {item!r}: node {node_id} is not in the workflow "
                          f"(node ids: {', '.join(map(str, graph))})")
            continue
        node = graph[node_id]
        declared = None
        cls = (mappings or {}).get(node.get("class_type"))
        if cls is not None:
            try:
                required, optional, _ = _input_spec(cls)
            except Exception:  # noqa: BLE001 - validate() reports it
                required, optional = {}, {}
            declared = {**required, **optional}
            if name not in declared:
                errors.append(f"--set {item!r}: {_label(node_id, node['class_type'])} has no input {name!r} "
                              f"(inputs: {', '.join(declared)})")
                continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if declared is not None and not isinstance(value, str) and not _is_link(value):
            kind, opts = _type_and_opts(declared[name])
            choices = _combo_choices(kind, opts)
            if kind == "STRING" or (choices is not None and raw in choices):
                value = raw
        node.setdefault("inputs", {})[name] = value
    if errors:
        raise WorkflowError(errors)
    return graph


# ---------------------------------------------------------------------------------------------- schema
def _input_spec(cls):
    spec = cls.INPUT_TYPES() or {}
    return dict(spec.get("required") or {}), dict(spec.get("optional") or {}), dict(spec.get("hidden") or {})


def _type_and_opts(entry):
    if isinstance(entry, (tuple, list)) and entry:
        kind = entry[0]
        opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
        return kind if isinstance(kind, (list, tuple)) else str(kind), opts
    return str(entry), {}


def _is_link(value) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


def _return_types(cls) -> tuple:
    return tuple(getattr(cls, "RETURN_TYPES", ()) or ())


def _is_output(cls) -> bool:
    return bool(getattr(cls, "OUTPUT_NODE", False))


def _is_v3(cls) -> bool:
    return hasattr(cls, "PREPARE_CLASS_CLONE")


def _combo_choices(kind, opts):
    """The allowed values of a combo input (V1 ``[choices]`` or V3 ``"COMBO"`` + options), else None."""
    if isinstance(kind, (list, tuple)):
        return list(kind)
    if kind == "COMBO":
        return list(opts.get("options") or []) or None
    return None


def _types_match(declared, received) -> bool:
    declared_combo = isinstance(declared, (list, tuple)) or declared == "COMBO"
    received_combo = isinstance(received, (list, tuple)) or received == "COMBO"
    if declared == "*" or received == "*":
        return True
    if declared_combo or received_combo:
        return declared_combo and received_combo
    a, b = {t.strip() for t in str(declared).split(",")}, {t.strip() for t in str(received).split(",")}
    return a <= b or b <= a


def _type_name(kind) -> str:
    return "a combo" if isinstance(kind, (list, tuple)) else str(kind)


def _check_primitive(kind: str, value):
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expects an integer, got {_short(value)}"
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expects a number, got {_short(value)}"
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            return f"expects true or false, got {_short(value)}"
    elif kind == "STRING":
        if not isinstance(value, str):
            return f"expects a string, got {_short(value)}"
    return None


def _check_constant(kind, opts: dict, value, full: bool = True):
    """Error text for a widget value that does not fit its declared input, else None.

    ``full=False`` (inputs the node's own VALIDATE_INPUTS takes over) checks only the primitive type, not
    choices, ranges or custom types, like ComfyUI.
    """
    if not full:
        prims = [p.strip() for p in str(kind).split(",") if p.strip() in PRIMITIVES]
        problems = [_check_primitive(p, value) for p in prims]
        return problems[0] if problems and all(problems) else None
    choices = _combo_choices(kind, opts)
    if choices is not None:
        if not any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
            return f"{_short(value)} is not one of the choices {_short(choices, 200)}"
        return None
    if kind == "COMBO" or kind == "*":
        return None
    parts = [p.strip() for p in kind.split(",")]
    prims = [p for p in parts if p in PRIMITIVES]
    if not prims:
        return f"expects a link from a node that outputs {kind}, got the value {_short(value)}"
    problems = [_check_primitive(p, value) for p in prims]
    if all(problems):
        return problems[0]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = opts.get("min"), opts.get("max")
        if low is not None and value < low:
            return f"{value!r} is below the minimum {low!r}"
        if high is not None and value > high:
            return f"{value!r} is above the maximum {high!r}"
    return None


def _hidden_values(graph: dict, node_id: str) -> dict:
    return {"PROMPT": graph, "UNIQUE_ID": node_id, "EXTRA_PNGINFO": None, "DYNPROMPT": None,
            "AUTH_TOKEN_COMFY_ORG": None, "API_KEY_COMFY_ORG": None}


def _v3_clone(cls, graph: dict, node_id: str):
    return cls.PREPARE_CLASS_CLONE({"hidden_inputs": _hidden_values(graph, node_id)})


def _validator(cls, graph: dict, node_id: str):
    """The node's input validator (V1 ``VALIDATE_INPUTS`` / V3 ``validate_inputs``) and its parameter names."""
    if _is_v3(cls):
        owner = next((k for k in cls.__mro__ if "validate_inputs" in vars(k)), None)
        if owner is None or owner.__module__.startswith("comfy_api"):
            return None
        fn = getattr(_v3_clone(cls, graph, node_id), "validate_inputs")
    else:
        fn = getattr(cls, "VALIDATE_INPUTS", None)
    if fn is None:
        return None
    params = inspect.signature(fn).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return fn, names, any(p.kind is p.VAR_KEYWORD for p in params)


# ---------------------------------------------------------------------------------------------- validate
def _links(node: dict, declared: dict):
    for name, value in (node.get("inputs") or {}).items():
        if name in declared and _is_link(value):
            yield name, str(value[0]), value[1]


def _plan(graph: dict, mappings: dict) -> list:
    """Validate ``graph`` (string node ids); return the ids of the nodes to run, in dependency order."""
    _check_shape(graph)
    errors = []
    specs = {}
    for node_id, node in graph.items():
        class_type = node["class_type"]
        cls = mappings.get(class_type)
        if cls is None:
            errors.append(f"{_label(node_id, class_type)}: unknown node class {class_type!r} "
                          "(not one of this pack's nodes nor a supported core node; is a custom node pack missing?)")
            continue
        try:
            required, optional, hidden = _input_spec(cls)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{_label(node_id, class_type)}: INPUT_TYPES() failed: {type(e).__name__}: {e}")
            continue
        specs[str(node_id)] = (cls, required, optional)
    if errors:
        raise WorkflowError(errors)

    outputs = [n for n, (cls, _, _) in specs.items() if _is_output(cls)]
    if not outputs:
        raise WorkflowError("the workflow has no output node (e.g. SaveImage or SaveVideo), so nothing would run")

    # Only what leads to an output node runs (like ComfyUI): walk the links back from the outputs.
    needed, stack = set(), list(outputs)
    while stack:
        node_id = stack.pop()
        if node_id in needed:
            continue
        needed.add(node_id)
        cls, required, optional = specs[node_id]
        stack += [src for _, src, _ in _links(graph[node_id], {**required, **optional}) if src in specs]

    for node_id in (n for n in specs if n in needed):
        errors += _check_node(graph, specs, node_id)

    order = _topological(graph, specs, needed)
    if order is None:
        errors.append("the workflow has a cycle: nodes " + ", ".join(sorted(needed)) + " depend on each other")
    if errors:
        raise WorkflowError(errors)
    return order


def _check_node(graph: dict, specs: dict, node_id: str) -> list:
    cls, required, optional = specs[node_id]
    node = graph[node_id]
    inputs = node.get("inputs") or {}
    label = _label(node_id, node["class_type"])
    errors = []
    if getattr(cls, "INPUT_IS_LIST", False) or any(getattr(cls, "OUTPUT_IS_LIST", None) or ()):
        errors.append(f"{label}: list inputs/outputs (INPUT_IS_LIST / OUTPUT_IS_LIST) are not supported by the "
                      "in-process runner; run it on a ComfyUI server with --server")
    validator = _validator(cls, graph, node_id)
    checked_by_node = set()
    if validator is not None:
        _, names, any_name = validator
        checked_by_node = set(inputs) if any_name else names
    link_types, bad_types = {}, set()
    for name, entry in {**required, **optional}.items():
        value = inputs.get(name)
        if value is None:
            if name in required:
                errors.append(f"{label} input {name!r}: missing required input")
            continue
        kind, opts = _type_and_opts(entry)
        where = f"{label} input {name!r}"
        if _is_link(value):
            src, index = str(value[0]), value[1]
            if src not in graph:
                errors.append(f"{where}: links to node {src}, which is not in the workflow")
                continue
            if src not in specs:
                continue  # its unknown class is already reported
            src_label = _label(src, graph[src]["class_type"])
            returns = _return_types(specs[src][0])
            if not 0 <= index < len(returns):
                errors.append(f"{where}: links to output {index} of {src_label}, which has "
                              f"{len(returns)} output{'s' if len(returns) != 1 else ''}")
                continue
            link_types[name] = returns[index]
            if validator is not None and "input_types" in validator[1]:
                continue
            if not _types_match(kind, returns[index]):
                errors.append(f"{where}: expects {_type_name(kind)} but {src_label} output {index} is "
                              f"{_type_name(returns[index])}")
        else:
            problem = _check_constant(kind, opts, value, full=name not in checked_by_node)
            if problem:
                errors.append(f"{where}: {problem}")
                bad_types.add(name)
    if validator is not None and not bad_types & checked_by_node:
        fn, names, any_name = validator
        kwargs = {k: v for k, v in inputs.items() if not _is_link(v) and (any_name or k in names)}
        shown = [k for k in kwargs]
        if "input_types" in names:
            kwargs["input_types"] = link_types
        try:
            verdict = fn(**kwargs)
        except Exception as e:  # noqa: BLE001
            verdict = f"{type(e).__name__}: {e}"
        if verdict is not True:
            text = verdict if isinstance(verdict, str) else f"input validation returned {verdict!r}"
            mentioned = [k for k in shown if re.search(rf"(?<!\w){re.escape(k)}(?!\w)", text)]
            shown = mentioned if len(mentioned) == 1 else shown
            where = (f"{label} input {shown[0]!r}" if len(shown) == 1 else
                     f"{label} inputs {', '.join(map(repr, shown))}" if shown else label)
            errors.append(f"{where}: {text}")
    return errors


def _topological(graph: dict, specs: dict, needed: set):
    deps = {}
    for node_id in (n for n in graph if str(n) in needed):
        cls, required, optional = specs[str(node_id)]
        deps[str(node_id)] = {src for _, src, _ in _links(graph[node_id], {**required, **optional}) if src in needed}
    order, done = [], set()
    while len(order) < len(deps):
        ready = [n for n in deps if n not in done and deps[n] <= done]
        if not ready:
            return None
        order += ready
        done.update(ready)
    return order


def validate(graph: dict, mappings: dict, *, input_dir=None) -> None:
    """Check ``graph`` against the node classes; raise :class:`WorkflowError` listing every problem.

    ``input_dir`` is where file inputs (``LoadImage``) are looked up (default: the current directory).
    """
    with _directories(None, input_dir):
        _plan(_str_ids(graph), mappings)


# ---------------------------------------------------------------------------------------------- execute
_PROGRESS = {"node": None, "callback": None}


def report_progress(value, total, node_id=None) -> None:
    """Report progress of the running node to the runner's ``on_progress`` (no-op outside a run)."""
    callback = _PROGRESS["callback"]
    if callback is not None:
        callback({"event": "progress", "node": node_id or _PROGRESS["node"], "value": value, "max": total})


@contextlib.contextmanager
def _directories(output_dir, input_dir):
    """Point the stand-ins, and ComfyUI's own folders when ComfyUI is loaded, at the run's folders."""
    with comfy.run_folders(output_dir, input_dir), standins.directories(output_dir, input_dir):
        yield


@contextlib.contextmanager
def _progress_hooks(on_progress):
    _PROGRESS["callback"] = on_progress
    try:
        with comfy.progress_hook(report_progress):
            yield
    finally:
        _PROGRESS.update(node=None, callback=None)


def _call(cls, graph: dict, node_id: str, kwargs: dict):
    target = _v3_clone(cls, graph, node_id) if _is_v3(cls) else cls()
    result = getattr(target, cls.FUNCTION)(**kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


async def _await(awaitable):
    return await awaitable


def _unpack(result):
    """``(values, ui)`` from a node's return: tuple, ``{"ui", "result"}`` dict, or a V3 NodeOutput."""
    ui, expand, blocked = None, None, None
    if result is None:
        values = ()
    elif isinstance(result, dict):
        ui, values, expand = result.get("ui"), result.get("result") or (), result.get("expand")
    elif hasattr(result, "result") and hasattr(result, "ui"):
        ui, values = result.ui, result.result or ()
        expand, blocked = getattr(result, "expand", None), getattr(result, "block_execution", None)
    elif isinstance(result, (tuple, list)):
        values = result
    else:
        raise TypeError(f"returned {type(result).__name__}; a node returns a tuple or {{'ui': ..., 'result': ...}}")
    if expand is not None:
        raise TypeError("returned a graph expansion, which the in-process runner does not support (use --server)")
    if blocked is not None:
        raise TypeError(f"blocked execution: {blocked}")
    if ui is not None and hasattr(ui, "as_dict"):
        ui = ui.as_dict()
    return tuple(values), ui


def _file_entries(ui: dict | None):
    """The ``{"filename", "subfolder", "type": "output"}`` entries of a node's ``ui`` dict."""
    for entries in (ui or {}).values():
        for entry in entries if isinstance(entries, (list, tuple)) else ():
            if isinstance(entry, dict) and entry.get("filename") and entry.get("type", "output") == "output":
                yield str(entry["filename"]), str(entry.get("subfolder") or "")


def output_files(ui: dict | None, output_dir) -> list[Path]:
    """Paths of the output files listed in a node's ``ui`` dict (images, gifs, videos, audio entries)."""
    return [Path(output_dir) / subfolder / name for name, subfolder in _file_entries(ui)]


def execute(graph: dict, mappings: dict, *, output_dir, input_dir=None, on_progress=None) -> dict:
    """Validate, then run every node leading to an output node; return ``{node_id: ui}`` of the output nodes.

    ``on_progress(event)`` receives dicts: ``{"event": "executing", "node", "class_type", "index", "total"}``,
    ``{"event": "progress", "node", "value", "max"}`` (from :func:`report_progress` or ComfyUI's progress
    bar), ``{"event": "executed", "node", "output"}``. A node's exception is re-raised as :class:`NodeError`;
    interrupts (BaseExceptions that are not Exceptions) propagate unchanged. Either way the files written
    by this run are removed.
    """
    output_dir = Path(output_dir)
    graph = _str_ids(graph)
    with _directories(output_dir, input_dir):
        order = _plan(graph, mappings)
        consumers = {n: 0 for n in order}
        for node_id in order:
            cls = mappings[graph[node_id]["class_type"]]
            required, optional, _ = _input_spec(cls)
            for _, src, _ in _links(graph[node_id], {**required, **optional}):
                consumers[src] += 1
        values, uis, written = {}, {}, []
        try:
            with _progress_hooks(on_progress):
                for index, node_id in enumerate(order):
                    uis_entry = _run_node(graph, mappings, node_id, values, consumers, output_dir, written,
                                          on_progress, index, len(order))
                    if uis_entry is not None:
                        uis[node_id] = uis_entry
        except BaseException:
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
    return uis


def _run_node(graph, mappings, node_id, values, consumers, output_dir, written, on_progress, index, total):
    node = graph[node_id]
    class_type = node["class_type"]
    cls = mappings[class_type]
    required, optional, hidden = _input_spec(cls)
    declared = {**required, **optional}
    _PROGRESS["node"] = node_id
    if on_progress is not None:
        on_progress({"event": "executing", "node": node_id, "class_type": class_type,
                     "index": index + 1, "total": total})
    kwargs = {}
    for name, value in (node.get("inputs") or {}).items():
        if name not in declared or value is None:
            continue
        if _is_link(value):
            src = str(value[0])
            produced = values[src]
            if value[1] >= len(produced):
                raise NodeError(src, graph[src]["class_type"],
                                f"returned {len(produced)} value(s) but output {value[1]} is linked")
            kwargs[name] = produced[value[1]]
        else:
            kwargs[name] = value
    if not _is_v3(cls):  # V3 nodes read hidden values from their class clone instead
        special = _hidden_values(graph, node_id)
        kwargs.update({name: special.get(str(kind)) for name, kind in hidden.items()})
    try:
        result, ui = _unpack(_call(cls, graph, node_id, kwargs))
    except NodeError:
        raise
    except Exception as e:
        raise NodeError(node_id, class_type, f"{type(e).__name__}: {e}") from e
    finally:
        kwargs.clear()
    if ui:
        written += output_files(ui, output_dir)
        if on_progress is not None:
            on_progress({"event": "executed", "node": node_id, "output": ui})
    values[node_id] = result
    # Drop upstream results nobody else needs (large tensors, models) as soon as possible.
    for _, src, _ in _links(node, declared):
        consumers[src] -= 1
        if consumers[src] == 0:
            values.pop(src, None)
    return ui if ui else None


def node_mappings(use_comfyui: bool | None = None) -> dict:
    """The pack's node classes plus the core I/O nodes (ComfyUI's when importable, else the stand-ins)."""
    from . import NODE_CLASS_MAPPINGS

    return {**NODE_CLASS_MAPPINGS, **standins.io_node_classes(use_comfyui)}


def run(graph: dict, *, output_dir, input_dir=None, mappings=None, on_progress=None) -> list[Path]:
    """Validate and execute ``graph`` in-process; return the files written."""
    mappings = node_mappings() if mappings is None else mappings
    uis = execute(graph, mappings, output_dir=output_dir, input_dir=input_dir, on_progress=on_progress)
    return [p for ui in uis.values() for p in output_files(ui, output_dir)]


def print_progress(event: dict, stream=None) -> None:
    """A plain console printer for ``on_progress`` events (in-process and server runs alike)."""
    stream = stream or sys.stdout
    kind = event.get("event")
    if kind == "executing":
        count = f"[{event['index']}/{event['total']}] " if event.get("total") else ""
        print(f"[run] {count}node {event['node']} ({event.get('class_type', '?')})", file=stream, flush=True)
    elif kind == "progress":
        print(f"[run]     {event['value']}/{event['max']}", file=stream, flush=True)
    elif kind == "cached" and event.get("nodes"):
        print(f"[run] cached on the server: nodes {', '.join(map(str, event['nodes']))}", file=stream, flush=True)


# ---------------------------------------------------------------------------------------------- server
class _WebSocket:
    """A minimal RFC 6455 client: handshake, masked client frames, text/binary/ping/pong/close."""

    _GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url: str, timeout: float):
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "wss"
        host, port = parts.hostname, parts.port or (443 if secure else 80)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if secure:
            import ssl

            self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=host)
        self.buf = b""
        key = base64.b64encode(os.urandom(16))
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        expected = base64.b64encode(hashlib.sha1(key + self._GUID).digest()).decode()
        status = lines[0].split()
        if len(status) < 2 or status[1] != "101" or headers.get("sec-websocket-accept") != expected:
            self.sock.close()
            raise ServerError(f"websocket handshake with {url} failed: {lines[0]}")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ServerError("the server closed the websocket connection")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def recv(self):
        """The next data message as ``(opcode, payload)`` (1 text, 2 binary), or None once closed."""
        message, message_opcode = b"", None
        while True:
            b0, b1 = self._take(2)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._take(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._take(8))[0]
            mask = self._take(4) if b1 & 0x80 else None  # servers must not mask; accept it anyway
            payload = self._take(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:  # close: answer and stop
                with contextlib.suppress(OSError):
                    self.send(0x8, payload[:2])
                return None
            if opcode == 0x9:
                self.send(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode in (0x1, 0x2):
                message_opcode, message = opcode, payload
            elif opcode == 0x0:
                message += payload
            if fin and message_opcode is not None:
                return message_opcode, message

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send(0x8, struct.pack(">H", 1000))
        with contextlib.suppress(OSError):
            self.sock.close()


_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local server: never via a proxy


def _http(url: str, body=None, timeout: float = 60.0) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with _HTTP.open(request, timeout=timeout) as response:
        return response.read()


def _server_node_errors(body: dict, graph: dict) -> list:
    lines = []
    error = body.get("error") or {}
    if isinstance(error, dict) and error.get("message"):
        lines.append(f"the server rejected the workflow: {error['message']}"
                     + (f" ({error['details']})" if error.get("details") else ""))
    for node_id, info in (body.get("node_errors") or {}).items():
        class_type = info.get("class_type") or graph.get(node_id, {}).get("class_type", "?")
        for err in info.get("errors") or []:
            extra = err.get("extra_info") or {}
            name = extra.get("input_name")
            where = f"{_label(node_id, class_type)}" + (f" input {name!r}" if name else "")
            text = err.get("message") or err.get("type") or "error"
            if err.get("details") and err.get("details") != name:
                text += f": {err['details']}"
            lines.append(f"{where}: {text}")
    return lines or [f"the server rejected the workflow: {json.dumps(body)[:500]}"]


def submit(graph: dict, server_url: str, *, output_dir, client_id=None, timeout: float = 3600.0,
           on_progress=None) -> list[Path]:
    """Run ``graph`` on a ComfyUI server and download its output files into ``output_dir``.

    Raises :class:`WorkflowError` when the server rejects the graph (its node_errors, one line each),
    :class:`ServerError` on an execution error, :class:`RunInterrupted` when the run is interrupted.
    """
    base = server_url if "://" in server_url else "http://" + server_url
    base = base.rstrip("/") + "/"
    client_id = client_id or uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    ws_base = "ws" + base[4:] if base.startswith("http") else base
    try:
        ws = _WebSocket(ws_base + f"ws?clientId={urllib.parse.quote(client_id)}",
                        timeout=min(timeout, 30.0))
    except OSError as e:
        raise ServerError(f"cannot connect to the ComfyUI server at {base}: {e}") from e
    try:
        try:
            reply = json.loads(_http(base + "prompt", {"prompt": graph, "client_id": client_id}))
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if e.code == 400 and isinstance(body, dict):
                raise WorkflowError(_server_node_errors(body, graph)) from None
            raise ServerError(f"POST {base}prompt: HTTP {e.code}: {raw[:500]!r}") from None
        except urllib.error.URLError as e:
            raise ServerError(f"POST {base}prompt failed: {e.reason}") from e
        prompt_id = reply["prompt_id"]
        try:
            _follow(ws, graph, prompt_id, deadline, on_progress)
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                _http(base + "interrupt", {"prompt_id": prompt_id}, timeout=5)
            raise
    finally:
        ws.close()
    return _download(base, prompt_id, Path(output_dir), deadline)


def _follow(ws: _WebSocket, graph: dict, prompt_id: str, deadline: float, on_progress) -> None:
    emit = on_progress or (lambda event: None)
    while True:
        ws.sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            frame = ws.recv()
        except socket.timeout:
            raise ServerError(f"timed out waiting for prompt {prompt_id} to finish") from None
        if frame is None:
            raise ServerError("the server closed the websocket before the run finished")
        opcode, payload = frame
        if opcode != 0x1:
            continue  # binary frames are previews
        message = json.loads(payload)
        kind, data = message.get("type"), message.get("data") or {}
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        if kind == "executing" and data.get("prompt_id") == prompt_id:
            node = data.get("node")
            if node is None:
                return
            emit({"event": "executing", "node": node,
                  "class_type": graph.get(str(node), {}).get("class_type", "?")})
        elif kind == "progress":
            emit({"event": "progress", "node": data.get("node"), "value": data.get("value"), "max": data.get("max")})
        elif kind == "execution_cached":
            emit({"event": "cached", "nodes": data.get("nodes") or []})
        elif kind == "executed":
            emit({"event": "executed", "node": data.get("node"), "output": data.get("output")})
        elif kind == "execution_error":
            where = _label(data.get("node_id"), data.get("node_type"))
            raise ServerError(f"{where} failed on the server: {data.get('exception_type', 'Exception')}: "
                              f"{data.get('exception_message', '')}".rstrip())
        elif kind == "execution_interrupted":
            raise RunInterrupted(f"the run was interrupted on the server at "
                                 f"{_label(data.get('node_id'), data.get('node_type'))}")


def _download(base: str, prompt_id: str, output_dir: Path, deadline: float) -> list[Path]:
    entry = None
    for _ in range(50):  # the history entry can trail the final websocket message by a moment
        history = json.loads(_http(base + f"history/{urllib.parse.quote(prompt_id)}"))
        entry = history.get(prompt_id)
        if entry is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if entry is None:
        raise ServerError(f"the server has no history for prompt {prompt_id}")
    files = []
    for node_output in (entry.get("outputs") or {}).values():
        for name, subfolder in _file_entries(node_output):
            if (".." in Path(subfolder).parts or os.path.isabs(subfolder) or "/" in name or "\\" in name
                    or name in (".", "..")):
                raise ServerError(f"refusing to write the server's file {subfolder}/{name} outside {output_dir}")
            query = urllib.parse.urlencode({"filename": name, "subfolder": subfolder, "type": "output"})
            data = _http(base + "view?" + query)
            target = output_dir / subfolder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{name}.partial")
            tmp.write_bytes(data)
            os.replace(tmp, target)
            files.append(target)
    return files
