"""Running a validated workflow in-process, node by node, through ComfyUI's classic node contract.

:func:`execute` checks the whole graph first (:mod:`.validation`), then runs the nodes that lead to an output
node in dependency order (``FUNCTION``, ``OUTPUT_NODE``; V3 classes through their V1 compatibility surface),
dropping each intermediate result once nothing else needs it. A run that ends in an exception or an
interrupt removes the files its output nodes wrote, so a failed run leaves no output behind.
:func:`run` does the same on the pack's nodes plus the I/O nodes (ComfyUI's, or the stand-ins), and
:func:`validate` only checks. Both point the I/O nodes at the run's folders first (where ``LoadImage`` looks).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
from pathlib import Path

from ..nodes import NODE_CLASS_MAPPINGS, comfy
from . import standins
from .validation import hidden_values, input_spec, is_link, is_v3, label, links, plan, str_ids, v3_clone


class NodeError(RuntimeError):
    """A node raised while running; the original exception is ``__cause__``."""

    def __init__(self, node_id: str, class_type: str, message: str):
        self.node_id, self.class_type = node_id, class_type
        super().__init__(f"{label(node_id, class_type)} failed: {message}")


_PROGRESS = {"node": None, "callback": None}


def report_progress(value, total, node_id=None) -> None:
    """Report progress of the running node to the runner's ``on_progress`` (no-op outside a run)."""
    callback = _PROGRESS["callback"]
    if callback is not None:
        callback({"event": "progress", "node": node_id or _PROGRESS["node"], "value": value, "max": total})


@contextlib.contextmanager
def _progress_hooks(on_progress):
    """Send the nodes' progress (ComfyUI's bars, or the bridge's plain counters) to ``on_progress``."""
    _PROGRESS["callback"] = on_progress
    try:
        with comfy.progress_hook(report_progress):
            yield
    finally:
        _PROGRESS.update(node=None, callback=None)


def _call(cls, graph: dict, node_id: str, kwargs: dict):
    target = v3_clone(cls, graph, node_id) if is_v3(cls) else cls()
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


def file_entries(ui: dict | None):
    """The ``{"filename", "subfolder", "type": "output"}`` entries of a node's ``ui`` dict."""
    for entries in (ui or {}).values():
        for entry in entries if isinstance(entries, (list, tuple)) else ():
            if isinstance(entry, dict) and entry.get("filename") and entry.get("type", "output") == "output":
                yield str(entry["filename"]), str(entry.get("subfolder") or "")


def output_files(ui: dict | None, output_dir) -> list[Path]:
    """Paths of the output files listed in a node's ``ui`` dict (images, gifs, videos, audio entries)."""
    return [Path(output_dir) / subfolder / name for name, subfolder in file_entries(ui)]


def validate(graph: dict, mappings: dict, *, input_dir=None) -> None:
    """Check ``graph`` against the node classes; raise :class:`WorkflowError` listing every problem.

    ``input_dir`` is where file inputs (``LoadImage``) are looked up (default: the current directory).
    """
    with standins.run_directories(None, input_dir):
        plan(str_ids(graph), mappings)


def execute(graph: dict, mappings: dict, *, output_dir, input_dir=None, on_progress=None) -> dict:
    """Validate, then run every node leading to an output node; return ``{node_id: ui}`` of the output nodes.

    ``on_progress(event)`` receives dicts: ``{"event": "executing", "node", "class_type", "index", "total"}``,
    ``{"event": "progress", "node", "value", "max"}`` (from :func:`report_progress` or ComfyUI's progress
    bar), ``{"event": "executed", "node", "output"}``. A node's exception is re-raised as :class:`NodeError`;
    interrupts (BaseExceptions that are not Exceptions) propagate unchanged. Either way the files written
    by this run are removed.
    """
    output_dir = Path(output_dir)
    graph = str_ids(graph)
    with standins.run_directories(output_dir, input_dir):
        order = plan(graph, mappings)
        consumers = {n: 0 for n in order}
        for node_id in order:
            cls = mappings[graph[node_id]["class_type"]]
            required, optional, _ = input_spec(cls)
            for _, src, _ in links(graph[node_id], {**required, **optional}):
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
    required, optional, hidden = input_spec(cls)
    declared = {**required, **optional}
    _PROGRESS["node"] = node_id
    if on_progress is not None:
        on_progress({"event": "executing", "node": node_id, "class_type": class_type,
                     "index": index + 1, "total": total})
    kwargs = {}
    for name, value in (node.get("inputs") or {}).items():
        if name not in declared or value is None:
            continue
        if is_link(value):
            src = str(value[0])
            produced = values[src]
            if value[1] >= len(produced):
                raise NodeError(src, graph[src]["class_type"],
                                f"returned {len(produced)} value(s) but output {value[1]} is linked")
            kwargs[name] = produced[value[1]]
        else:
            kwargs[name] = value
    if not is_v3(cls):  # V3 nodes read hidden values from their class clone instead
        special = hidden_values(graph, node_id)
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
    for _, src, _ in links(node, declared):
        consumers[src] -= 1
        if consumers[src] == 0:
            values.pop(src, None)
    return ui if ui else None


def node_mappings(use_comfyui: bool | None = None) -> dict:
    """The pack's node classes plus the core I/O nodes (ComfyUI's when importable, else the stand-ins)."""
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

