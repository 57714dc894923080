"""What ``core.checkpoint.load_into`` would load from a file known only by its header (key -> shape).

The real-config tests simulate released checkpoints that cannot be downloaded: they list the checkpoint's keys
and shapes from the reference implementation and check our loaders against them without any weights.
"""

from __future__ import annotations

from comfyui_cosmos3_ltx2.core import checkpoint as ck


def header_plan(module, header: dict, *, key_map=None, strip_prefix=None, ignore=()) -> tuple[dict, list[str]]:
    """``(plan, problems)``: plan maps each of our tensor names to the file key that loads it (renamed and
    filtered exactly as ``load_into`` does); problems lists keys that land on one name twice, on no tensor of
    ours or with another shape, and tensors of ours that no key covers."""
    plan: dict[str, str] = {}
    problems: list[str] = []
    for key in header:
        target = ck._target_name(key, strip_prefix, key_map, tuple(ignore))
        if target is None:
            continue
        if target in plan:
            problems.append(f"both {plan[target]} and {key} load into {target}")
        plan[target] = key
    ours = module.state_dict(keep_vars=True)
    for name, key in plan.items():
        if name not in ours:
            problems.append(f"checkpoint {key} -> {name}, which the module does not have")
        elif tuple(ours[name].shape) != tuple(header[key]):
            problems.append(f"checkpoint {key} {list(header[key])} -> {name} {list(ours[name].shape)}")
    problems.extend(f"{name} is not covered by any checkpoint key" for name in ours if name not in plan)
    return plan, problems
