"""Checking an API-format workflow before anything runs: its shape, every node's inputs, the links.

:func:`load_workflow` reads a workflow file (API format, or a saved ``POST /prompt`` body),
:func:`apply_overrides` applies ``NODE.INPUT=VALUE`` assignments, and :func:`plan` checks the whole graph
against the node classes (unknown classes, missing inputs, broken links, link types, widget values, the
nodes' own ``VALIDATE_INPUTS``) and gives the nodes to run in dependency order. Every problem is reported
at once, each naming the node and the input. ComfyUI's classic node contract is read
(``INPUT_TYPES``, ``RETURN_TYPES``, ``OUTPUT_NODE``, ...); V3 classes through their V1 compatibility surface.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import re
from pathlib import Path

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


def label(node_id, class_type) -> str:
    """How errors name a node: ``node 3 (Cosmos3Sampler)``."""
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
            "shipped in workflows/api/*_api.json, or in ComfyUI export with 'Export (API)'.")
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]  # a saved POST /prompt body
    _check_shape(data, str(path))
    return data


def str_ids(graph):
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
            errors.append(f"{label(node_id, node['class_type'])}: 'inputs' must be an object")
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
                required, optional, _ = input_spec(cls)
            except Exception:  # noqa: BLE001 - validate() reports it
                required, optional = {}, {}
            declared = {**required, **optional}
            if name not in declared:
                errors.append(f"--set {item!r}: {label(node_id, node['class_type'])} has no input {name!r} "
                              f"(inputs: {', '.join(declared)})")
                continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if declared is not None and not isinstance(value, str) and not is_link(value):
            kind, opts = _type_and_opts(declared[name])
            choices = _combo_choices(kind, opts)
            if kind == "STRING" or (choices is not None and raw in choices):
                value = raw
        node.setdefault("inputs", {})[name] = value
    if errors:
        raise WorkflowError(errors)
    return graph


# ---------------------------------------------------------------------------------------------- schema
def input_spec(cls):
    """``(required, optional, hidden)`` input declarations of a node class."""
    spec = cls.INPUT_TYPES() or {}
    return dict(spec.get("required") or {}), dict(spec.get("optional") or {}), dict(spec.get("hidden") or {})


def _type_and_opts(entry):
    if isinstance(entry, (tuple, list)) and entry:
        kind = entry[0]
        opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
        return kind if isinstance(kind, (list, tuple)) else str(kind), opts
    return str(entry), {}


def is_link(value) -> bool:
    """Whether an input value is a link ``[source node id, output index]`` rather than a widget value."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


def _return_types(cls) -> tuple:
    return tuple(getattr(cls, "RETURN_TYPES", ()) or ())


def _is_output(cls) -> bool:
    return bool(getattr(cls, "OUTPUT_NODE", False))


def is_v3(cls) -> bool:
    """A ComfyUI V3 class (``io.ComfyNode``): it runs on a class clone that holds the hidden values."""
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
        if not math.isfinite(value):  # JSON readers accept NaN and Infinity; no node input means them
            return f"expects a finite number, got {_short(value)}"
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


def hidden_values(graph: dict, node_id: str) -> dict:
    """The values of hidden inputs (``PROMPT``, ``UNIQUE_ID``, ...) a headless run can give a node."""
    return {"PROMPT": graph, "UNIQUE_ID": node_id, "EXTRA_PNGINFO": None, "DYNPROMPT": None,
            "AUTH_TOKEN_COMFY_ORG": None, "API_KEY_COMFY_ORG": None}


def v3_clone(cls, graph: dict, node_id: str):
    return cls.PREPARE_CLASS_CLONE({"hidden_inputs": hidden_values(graph, node_id)})


def _validator(cls, graph: dict, node_id: str):
    """The node's input validator (V1 ``VALIDATE_INPUTS`` / V3 ``validate_inputs``) and its parameter names."""
    if is_v3(cls):
        owner = next((k for k in cls.__mro__ if "validate_inputs" in vars(k)), None)
        if owner is None or owner.__module__.startswith("comfy_api"):
            return None
        fn = getattr(v3_clone(cls, graph, node_id), "validate_inputs")
    else:
        fn = getattr(cls, "VALIDATE_INPUTS", None)
    if fn is None:
        return None
    params = inspect.signature(fn).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return fn, names, any(p.kind is p.VAR_KEYWORD for p in params)


# ---------------------------------------------------------------------------------------------- validate
def links(node: dict, declared: dict):
    """``(input name, source node id, output index)`` of each declared input of ``node`` that is a link."""
    for name, value in (node.get("inputs") or {}).items():
        if name in declared and is_link(value):
            yield name, str(value[0]), value[1]


def plan(graph: dict, mappings: dict) -> list:
    """Validate ``graph`` (string node ids); return the ids of the nodes to run, in dependency order."""
    _check_shape(graph)
    errors = []
    specs = {}
    unknown = sorted({node["class_type"] for node in graph.values() if node["class_type"] not in mappings})
    if unknown:  # one message for all: usually a graph of ComfyUI's own (or another pack's) model nodes
        errors.append(f"node class{'es' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: not this pack's "
                      "nodes nor the core I/O nodes the in-process runner stands in for (LoadImage, SaveImage, "
                      "CreateVideo, SaveVideo). Run the workflow in ComfyUI, or on a ComfyUI server with --server URL "
                      "(and install any custom node pack it needs there)")
    for node_id, node in graph.items():
        class_type = node["class_type"]
        cls = mappings.get(class_type)
        if cls is None:
            continue
        try:
            required, optional, hidden = input_spec(cls)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{label(node_id, class_type)}: INPUT_TYPES() failed: {type(e).__name__}: {e}")
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
        stack += [src for _, src, _ in links(graph[node_id], {**required, **optional}) if src in specs]

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
    who = label(node_id, node["class_type"])
    errors = []
    if getattr(cls, "INPUT_IS_LIST", False) or any(getattr(cls, "OUTPUT_IS_LIST", None) or ()):
        errors.append(f"{who}: list inputs/outputs (INPUT_IS_LIST / OUTPUT_IS_LIST) are not supported by the "
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
                errors.append(f"{who} input {name!r}: missing required input")
            continue
        kind, opts = _type_and_opts(entry)
        where = f"{who} input {name!r}"
        if is_link(value):
            src, index = str(value[0]), value[1]
            if src not in graph:
                errors.append(f"{where}: links to node {src}, which is not in the workflow")
                continue
            if src not in specs:
                continue  # its unknown class is already reported
            src_label = label(src, graph[src]["class_type"])
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
        kwargs = {k: v for k, v in inputs.items() if not is_link(v) and (any_name or k in names)}
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
            where = (f"{who} input {shown[0]!r}" if len(shown) == 1 else
                     f"{who} inputs {', '.join(map(repr, shown))}" if shown else who)
            errors.append(f"{where}: {text}")
    return errors


def _topological(graph: dict, specs: dict, needed: set):
    deps = {}
    for node_id in (n for n in graph if str(n) in needed):
        cls, required, optional = specs[str(node_id)]
        deps[str(node_id)] = {src for _, src, _ in links(graph[node_id], {**required, **optional}) if src in needed}
    order, done = [], set()
    while len(order) < len(deps):
        ready = [n for n in deps if n not in done and deps[n] <= done]
        if not ready:
            return None
        order += ready
        done.update(ready)
    return order
