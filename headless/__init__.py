"""Running API-format ComfyUI workflows without the editor, on the pack's own node classes.

``validation`` checks a graph before anything runs, ``execution`` runs it in-process, ``server`` submits it
to a running ComfyUI instead, ``standins`` are look-alikes of ComfyUI's I/O nodes for runs without ComfyUI,
and ``media`` writes the files (for the stand-ins and the command line). No ComfyUI module is imported here:
ComfyUI is reached only through the bridge, ``nodes.comfy``.
"""

from .execution import (NodeError, execute, node_mappings, output_files, print_progress, report_progress, run,
                        validate)
from .server import RunInterrupted, ServerError, submit
from .validation import WorkflowError, apply_overrides, load_workflow

__all__ = ["NodeError", "RunInterrupted", "ServerError", "WorkflowError", "apply_overrides", "execute",
           "load_workflow", "node_mappings", "output_files", "print_progress", "report_progress", "run",
           "submit", "validate"]
