"""Running a workflow on a ComfyUI server: ``POST /prompt``, follow the run, download the outputs.

The run is followed over ComfyUI's ``/ws`` websocket through the maintained ``websocket-client`` package
(optional: ``pip install websocket-client``, the pack's ``server`` extra), which brings per-step progress.
Without it the run is followed by polling ``GET /history/{prompt_id}`` over plain HTTP: the same outputs and
the same errors, but no progress until the run is over. Outputs come through ``GET /view``.

Message types and the history layout are ComfyUI's (``server.py``/``execution.py``, v0.27; see
shared/reference/comfyui.md §1(e)). The server is reached directly, never through a proxy from the
environment: it is normally a local one.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from . import media
from .execution import file_entries
from .validation import WorkflowError, label

try:
    import websocket  # websocket-client
except ImportError:  # optional: the run is followed by polling /history instead
    websocket = None


class ServerError(RuntimeError):
    """The ComfyUI server reported an error, or could not be reached."""


class RunInterrupted(RuntimeError):
    """The ComfyUI server interrupted the run."""


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
            where = f"{label(node_id, class_type)}" + (f" input {name!r}" if name else "")
            text = err.get("message") or err.get("type") or "error"
            if err.get("details") and err.get("details") != name:
                text += f": {err['details']}"
            lines.append(f"{where}: {text}")
    return lines or [f"the server rejected the workflow: {json.dumps(body)[:500]}"]


def submit(graph: dict, server_url: str, *, output_dir, client_id=None, timeout: float = 3600.0,
           on_progress=None) -> list[Path]:
    """Run ``graph`` on a ComfyUI server and download its output files into ``output_dir``.

    ``on_progress`` receives the same events as an in-process run (``executing``, ``progress``, ``cached``,
    ``executed``); without websocket-client only ``cached`` and ``executed``, once the run is over.
    Raises :class:`WorkflowError` when the server rejects the graph (its node_errors, one line each),
    :class:`ServerError` on an execution error, :class:`RunInterrupted` when the run is interrupted.
    """
    base = server_url if "://" in server_url else "http://" + server_url
    base = base.rstrip("/") + "/"
    client_id = client_id or uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    emit = on_progress or (lambda event: None)
    if websocket is None:
        print("[run] websocket-client is not installed: following the run by polling the server's history, "
              "without per-step progress (pip install websocket-client)", flush=True)
        ws = None
    else:
        ws = _connect(base, client_id, min(timeout, 30.0))
    try:
        prompt_id = _post(base, graph, client_id)
        try:
            if ws is not None:
                _follow(ws, graph, prompt_id, deadline, emit)
                # the history entry can trail the final websocket message by a moment
                entry = _history(base, prompt_id, min(deadline, time.monotonic() + 5.0))
                if entry is None:
                    raise ServerError(f"the server has no history for prompt {prompt_id}")
            else:
                entry = _history(base, prompt_id, deadline)
                if entry is None:
                    raise ServerError(f"timed out waiting for prompt {prompt_id} to finish")
                _replay(entry, graph, prompt_id, emit)
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                _http(base + "interrupt", {"prompt_id": prompt_id}, timeout=5)
            raise
    finally:
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
    return _download(base, entry, Path(output_dir))


def _connect(base: str, client_id: str, timeout: float):
    """Open ``/ws?clientId=...`` with websocket-client, on a socket we connect ourselves (so no proxy)."""
    parts = urllib.parse.urlsplit(base)
    secure = parts.scheme == "https"
    url = f"{'wss' if secure else 'ws'}://{parts.netloc}{parts.path}ws?clientId={urllib.parse.quote(client_id)}"
    try:
        sock = socket.create_connection((parts.hostname, parts.port or (443 if secure else 80)), timeout=timeout)
        if secure:
            import ssl

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        return websocket.create_connection(url, timeout=timeout, socket=sock)
    except (OSError, websocket.WebSocketException) as e:
        raise ServerError(f"cannot connect to the ComfyUI server at {base}: {e}") from e


def _post(base: str, graph: dict, client_id: str) -> str:
    """``POST /prompt``; the prompt id, or the server's verdict on the graph as a :class:`WorkflowError`."""
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
    return reply["prompt_id"]


def _on_message(kind, data: dict, graph: dict, prompt_id: str, emit) -> bool:
    """Act on one of the server's messages about a run (websocket or history); True once the run is over."""
    if data.get("prompt_id") not in (None, prompt_id):
        return False
    if kind == "executing" and data.get("prompt_id") == prompt_id:
        node = data.get("node")
        if node is None:
            return True
        emit({"event": "executing", "node": node, "class_type": graph.get(str(node), {}).get("class_type", "?")})
    elif kind == "progress":
        emit({"event": "progress", "node": data.get("node"), "value": data.get("value"), "max": data.get("max")})
    elif kind == "execution_cached":
        emit({"event": "cached", "nodes": data.get("nodes") or []})
    elif kind == "executed":
        emit({"event": "executed", "node": data.get("node"), "output": data.get("output")})
    elif kind == "execution_error":
        where = label(data.get("node_id"), data.get("node_type"))
        raise ServerError(f"{where} failed on the server: {data.get('exception_type', 'Exception')}: "
                          f"{data.get('exception_message', '')}".rstrip())
    elif kind == "execution_interrupted":
        raise RunInterrupted(f"the run was interrupted on the server at "
                             f"{label(data.get('node_id'), data.get('node_type'))}")
    return False


def _follow(ws, graph: dict, prompt_id: str, deadline: float, emit) -> None:
    """Read the websocket's messages until the server says the prompt is done (``executing`` node null)."""
    while True:
        ws.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            opcode, payload = ws.recv_data()
        except websocket.WebSocketTimeoutException:
            raise ServerError(f"timed out waiting for prompt {prompt_id} to finish") from None
        except (websocket.WebSocketConnectionClosedException, OSError):
            opcode = websocket.ABNF.OPCODE_CLOSE
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ServerError("the server closed the websocket before the run finished")
        if opcode != websocket.ABNF.OPCODE_TEXT:
            continue  # binary messages are previews
        message = json.loads(payload)
        if _on_message(message.get("type"), message.get("data") or {}, graph, prompt_id, emit):
            return


def _history(base: str, prompt_id: str, until: float):
    """The server's history entry of a prompt (there once the run is over), asked until ``until``; else None."""
    pause = 0.1
    while True:
        entry = json.loads(_http(base + f"history/{urllib.parse.quote(prompt_id)}")).get(prompt_id)
        if entry is not None or time.monotonic() > until:
            return entry
        time.sleep(min(pause, max(0.0, until - time.monotonic())))
        pause = min(1.0, pause * 1.5)


def _replay(entry: dict, graph: dict, prompt_id: str, emit) -> None:
    """Report a finished run from its history entry: its recorded messages (errors raise), then its outputs."""
    for message in (entry.get("status") or {}).get("messages") or []:
        if isinstance(message, (list, tuple)) and len(message) == 2 and isinstance(message[1], dict):
            _on_message(message[0], message[1], graph, prompt_id, emit)
    if (entry.get("status") or {}).get("status_str") == "error":
        raise ServerError(f"prompt {prompt_id} failed on the server (no error message in its history)")
    for node_id, output in (entry.get("outputs") or {}).items():
        emit({"event": "executed", "node": node_id, "output": output})


def _download(base: str, entry: dict, output_dir: Path) -> list[Path]:
    files = []
    for node_output in (entry.get("outputs") or {}).values():
        for name, subfolder in file_entries(node_output):
            if (".." in Path(subfolder).parts or os.path.isabs(subfolder) or "/" in name or "\\" in name
                    or name in (".", "..")):
                raise ServerError(f"refusing to write the server's file {subfolder}/{name} outside {output_dir}")
            query = urllib.parse.urlencode({"filename": name, "subfolder": subfolder, "type": "output"})
            data = _http(base + "view?" + query)
            target = output_dir / subfolder / name
            with media.atomic(target) as tmp:
                tmp.write_bytes(data)
            files.append(target)
    return files
