"""Writes the shipped Cosmos3 workflows, each in both formats, from one description per graph.

    python workflows/make_workflows.py     # rewrites workflows/*.json

* ``<name>.json``: the editor (litegraph) format to drag into ComfyUI: nodes with positions, links, and
  widget values in ``INPUT_TYPES`` order.
* ``<name>_api.json``: the API format that ``POST /prompt`` and ``python -m comfyui_cosmos3_ltx2 run`` take.

The graphs use the embedded demo checkpoint so they run anywhere (its frames are noise): pick a real
Cosmos3 folder in the two loaders, and raise the size, for real videos.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO = "cosmos3-tiny-random (embedded demo: noise)"
FROM_CHECKPOINT = "(from the checkpoint folder)"
PROMPT = ("A robot arm in a bright workshop picks up a red wooden block and places it on top of a blue one. "
          "The camera slowly pushes in; soft daylight from a window.")
NEGATIVE = "blurry, distorted, low quality, flickering, watermark, text"

# Each node: id, class, widgets (name -> value, in INPUT_TYPES order), links (input -> (source node, output slot,
# type)), outputs [(name, type)]. Editor-only details: linked_widgets (widget inputs fed by a link, whose value
# the editor keeps), optional_widgets (optional widget values, after the others), sockets (unlinked optional
# inputs), control_after (the seed's "control after generate" value), upload (LoadImage's upload widget).


def t2v():
    return [
        dict(id=1, cls="Cosmos3ModelLoader", widgets=dict(checkpoint=DEMO, weight_dtype="bf16", device="default", tokenizer=FROM_CHECKPOINT),
             outputs=[("model", "COSMOS3_MODEL")]),
        dict(id=2, cls="Cosmos3VAELoader", widgets=dict(vae=DEMO, dtype="bf16", device="default"),
             outputs=[("vae", "COSMOS3_VAE")]),
        dict(id=3, cls="Cosmos3EmptyLatent", widgets=dict(width=320, height=192, frames=17, batch_size=1),
             outputs=[("LATENT", "LATENT")]),
        dict(id=4, cls="Cosmos3TextEncode",
             links=dict(model=(1, 0, "COSMOS3_MODEL"), latent=(3, 0, "LATENT")),
             widgets=dict(prompt=PROMPT, negative_prompt=NEGATIVE, fps=24.0, use_system_prompt=True,
                          add_duration_template=True, add_resolution_template=True),
             outputs=[("conditioning", "COSMOS3_CONDITIONING")]),
        dict(id=5, cls="Cosmos3Sampler",
             links=dict(model=(1, 0, "COSMOS3_MODEL"), conditioning=(4, 0, "COSMOS3_CONDITIONING"),
                        latent=(3, 0, "LATENT")),
             widgets=dict(seed=42, steps=20, cfg=6.0, shift=0.0, sampler="auto"), control_after=("seed", "fixed"),
             sockets=[("sigmas", "SIGMAS")], outputs=[("LATENT", "LATENT")]),
        dict(id=6, cls="Cosmos3VAEDecode", links=dict(vae=(2, 0, "COSMOS3_VAE"), latent=(5, 0, "LATENT")),
             outputs=[("images", "IMAGE"), ("fps", "FLOAT")]),
        dict(id=7, cls="CreateVideo", links=dict(images=(6, 0, "IMAGE"), fps=(6, 1, "FLOAT")), widgets={},
             linked_widgets=dict(fps=24.0), optional_widgets=dict(bit_depth=8), sockets=[("audio", "AUDIO")],
             outputs=[("VIDEO", "VIDEO")]),
        dict(id=8, cls="SaveVideo", links=dict(video=(7, 0, "VIDEO")),
             widgets=dict(filename_prefix="video/cosmos3_t2v", format="auto", codec="auto"),
             outputs=[("video", "VIDEO")]),
    ]


def i2v():
    nodes = t2v()
    nodes[2] = dict(id=3, cls="Cosmos3ImageToVideoLatent",
                    links=dict(vae=(2, 0, "COSMOS3_VAE"), image=(9, 0, "IMAGE")),
                    widgets=dict(width=320, height=192, frames=17, batch_size=1), outputs=[("LATENT", "LATENT")])
    nodes.append(dict(id=9, cls="LoadImage", widgets=dict(image="cosmos3_i2v_example.png"), upload="image",
                      outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")]))
    nodes[3]["widgets"]["prompt"] = ("The robot arm from the first frame lifts the block and sets it down gently; "
                                     "the camera stays still.")
    nodes[7]["widgets"]["filename_prefix"] = "video/cosmos3_i2v"
    return nodes


def t2i():
    nodes = t2v()[:6]
    nodes[2]["widgets"].update(width=384, height=256, frames=1)
    nodes[3]["widgets"]["prompt"] = "A red wooden block on a blue one, studio photo, soft light."
    nodes[4]["widgets"].update(steps=20, shift=3.0)
    nodes.append(dict(id=7, cls="SaveImage", links=dict(images=(6, 0, "IMAGE")),
                      widgets=dict(filename_prefix="cosmos3_t2i"), outputs=[("images", "IMAGE")]))
    return nodes


GRAPHS = {"cosmos3_t2v": t2v, "cosmos3_i2v": i2v, "cosmos3_t2i": t2i}


def api_format(nodes) -> dict:
    graph = {}
    for n in nodes:
        inputs = dict(n.get("widgets", {}))
        for name, (src, slot, _) in n.get("links", {}).items():
            inputs[name] = [str(src), slot]
        graph[str(n["id"])] = {"class_type": n["cls"], "inputs": inputs, "_meta": {"title": n["cls"]}}
    return graph


def editor_format(nodes) -> dict:
    link_rows, out_links = [], {}
    for n in nodes:
        for name, (src, slot, typ) in n.get("links", {}).items():
            link_id = len(link_rows) + 1
            link_rows.append([link_id, src, slot, n["id"], None, typ, name])
            out_links.setdefault((src, slot), []).append(link_id)
    editor_nodes = []
    for order, n in enumerate(nodes):
        inputs = []
        for name, (src, slot, typ) in n.get("links", {}).items():
            row = next(r for r in link_rows if r[3] == n["id"] and r[6] == name)
            row[4] = len(inputs)
            entry = {"name": name, "type": typ, "link": row[0]}
            if name in n.get("linked_widgets", {}):
                entry["widget"] = {"name": name}
            inputs.append(entry)
        inputs += [{"name": name, "type": typ, "link": None} for name, typ in n.get("sockets", [])]
        widgets = list(n.get("widgets", {}).values())
        if "control_after" in n:  # the seed widget's "control after generate" value follows it
            name, mode = n["control_after"]
            widgets.insert(list(n["widgets"]).index(name) + 1, mode)
        if "upload" in n:
            widgets.append(n["upload"])
        widgets += list(n.get("linked_widgets", {}).values()) + list(n.get("optional_widgets", {}).values())
        outputs = [{"name": name, "type": t, "links": out_links.get((n["id"], i), []), "slot_index": i}
                   for i, (name, t) in enumerate(n["outputs"])]
        editor_nodes.append({
            "id": n["id"], "type": n["cls"], "pos": [40 + 360 * (order % 4), 60 + 320 * (order // 4)],
            "size": [320, 140 + 26 * len(widgets)], "flags": {}, "order": order, "mode": 0,
            "inputs": inputs, "outputs": outputs, "properties": {"Node name for S&R": n["cls"]},
            "widgets_values": widgets,
        })
    return {
        "last_node_id": max(n["id"] for n in nodes), "last_link_id": len(link_rows),
        "nodes": editor_nodes, "links": [r[:6] for r in link_rows], "groups": [], "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4,
    }


def main() -> None:
    for name, make in GRAPHS.items():
        nodes = make()
        (HERE / f"{name}.json").write_text(json.dumps(editor_format(nodes), indent=2) + "\n")
        (HERE / f"{name}_api.json").write_text(json.dumps(api_format(nodes), indent=2) + "\n")


if __name__ == "__main__":
    main()
