"""Writes the shipped Cosmos3 and LTX-2.3 workflows, each in both formats, from one description per graph.

    python workflows/make_workflows.py     # rewrites example_workflows/*.json and workflows/api/*_api.json

* ``example_workflows/<name>.json``: the editor (litegraph) format, where ComfyUI looks for a pack's templates
  (Templates -> Extensions lists every JSON file of that folder, so it holds nothing else): nodes laid out left
  to right in the order data flows, sized for their widgets, with a stored view that shows the whole graph.
* ``workflows/api/<name>_api.json``: the API format that ``POST /prompt`` and ``python -m comfyui_cosmos3_ltx2
  run`` take (outside the template folders: the editor opens an API file as an empty graph).

The graphs use the embedded demo models so they run anywhere (their frames and sound are noise): pick real
files in the loaders (a Cosmos3 folder; the LTX-2.3 checkpoint, Gemma-3, upsampler and distilled LoRA), and raise
the size, for real videos.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
EDITOR_DIR = HERE.parent / "example_workflows"
API_DIR = HERE / "api"
DEMO = "cosmos3-tiny-random (embedded demo: noise)"
SOUND_DEMO = "cosmos3-tiny-random-sound (embedded demo: noise and noise sound)"
FROM_CHECKPOINT = "(from the checkpoint folder)"
PROMPT = ("A robot arm in a bright workshop picks up a red wooden block and places it on top of a blue one. "
          "The camera slowly pushes in; soft daylight from a window.")
NEGATIVE = "blurry, distorted, low quality, flickering, watermark, text"
# The guardrails' face detector with no weight file (RetinaFace needs models/guardrails/Resnet50_Final.pth).
FACE_DETECTOR = "opencv haar cascade (no weights)"

# Each node: id, class, widgets (name -> value, in INPUT_TYPES order), links (input -> (source node, output slot,
# type)), outputs [(name, type)]. Editor-only details: linked_widgets (widget inputs fed by a link, whose value
# the editor keeps), optional_widgets (optional widget values, after the others), sockets (unlinked optional
# inputs), control_after (the seed's "control after generate" value), upload (LoadImage's upload widget).


def t2v():
    return [
        dict(id=1, cls="Cosmos3ModelLoader", widgets=dict(checkpoint=DEMO, weight_dtype="bf16", device="default", tokenizer=FROM_CHECKPOINT,
                                                         offload_blocks=0),
             outputs=[("model", "COSMOS3_MODEL")]),
        dict(id=2, cls="Cosmos3VAELoader", widgets=dict(vae=DEMO, dtype="bf16", device="default"),
             outputs=[("vae", "COSMOS3_VAE")]),
        dict(id=3, cls="Cosmos3EmptyLatent", widgets=dict(width=320, height=192, frames=17, batch_size=1),
             outputs=[("LATENT", "LATENT")]),
        dict(id=10, cls="Cosmos3LTX2TextGuardrail",
             widgets=dict(prompt=PROMPT, blocklist="default (shipped)", guard_model="none", device="default"),
             outputs=[("prompt", "STRING")]),
        dict(id=4, cls="Cosmos3TextEncode",
             links=dict(model=(1, 0, "COSMOS3_MODEL"), latent=(3, 0, "LATENT"), prompt=(10, 0, "STRING")),
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
        dict(id=11, cls="Cosmos3LTX2VideoGuardrail", links=dict(images=(6, 0, "IMAGE")),
             widgets=dict(detector=FACE_DETECTOR, batch_size=4), outputs=[("images", "IMAGE"), ("changed", "BOOLEAN")]),
        dict(id=7, cls="CreateVideo", links=dict(images=(11, 0, "IMAGE"), fps=(6, 1, "FLOAT")), widgets={},
             linked_widgets=dict(fps=24.0), optional_widgets=dict(bit_depth=8), sockets=[("audio", "AUDIO")],
             outputs=[("VIDEO", "VIDEO")]),
        dict(id=8, cls="SaveVideo", links=dict(video=(7, 0, "VIDEO")),
             widgets=dict(filename_prefix="video/cosmos3_t2v", format="auto", codec="auto"),
             outputs=[("video", "VIDEO")]),
    ]


def _node(nodes, node_id: int) -> dict:
    return next(n for n in nodes if n["id"] == node_id)


def _set_prompt(nodes, text: str) -> None:
    """The prompt lives in the text guardrail (10), which feeds the text encoder (4); both keep the words."""
    for node_id in (10, 4):
        _node(nodes, node_id)["widgets"]["prompt"] = text


def i2v():
    nodes = t2v()
    nodes[nodes.index(_node(nodes, 3))] = dict(
        id=3, cls="Cosmos3ImageToVideoLatent", links=dict(vae=(2, 0, "COSMOS3_VAE"), image=(9, 0, "IMAGE")),
        widgets=dict(width=320, height=192, frames=17, batch_size=1), outputs=[("LATENT", "LATENT")])
    nodes.append(dict(id=9, cls="LoadImage", widgets=dict(image="cosmos3_i2v_example.png"), upload="image",
                      outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")]))
    _set_prompt(nodes, "The robot arm from the first frame lifts the block and sets it down gently; "
                       "the camera stays still.")
    _node(nodes, 8)["widgets"]["filename_prefix"] = "video/cosmos3_i2v"
    return nodes


def sound():
    """Text-to-video with a sound track generated jointly (sound-capable checkpoints): Sound Latent adds the sound
    latents to the video latent, the sampler denoises both, Sound Decode gives the AUDIO for Create Video."""
    nodes = t2v()
    _node(nodes, 1)["widgets"]["checkpoint"] = SOUND_DEMO
    _node(nodes, 2)["widgets"]["vae"] = SOUND_DEMO
    nodes.insert(2, dict(id=12, cls="Cosmos3SoundVAELoader", widgets=dict(checkpoint=SOUND_DEMO, dtype="fp32",
                                                                           device="default"),
                         outputs=[("sound_vae", "COSMOS3_SOUND_VAE")]))
    nodes.insert(nodes.index(_node(nodes, 3)) + 1, dict(
        id=13, cls="Cosmos3SoundLatent", links=dict(latent=(3, 0, "LATENT"), sound_vae=(12, 0, "COSMOS3_SOUND_VAE")),
        widgets=dict(fps=24.0), outputs=[("LATENT", "LATENT")]))
    _node(nodes, 4)["links"]["latent"] = (13, 0, "LATENT")
    _node(nodes, 5)["links"]["latent"] = (13, 0, "LATENT")
    nodes.insert(nodes.index(_node(nodes, 6)) + 1, dict(
        id=14, cls="Cosmos3SoundDecode", links=dict(sound_vae=(12, 0, "COSMOS3_SOUND_VAE"), latent=(5, 0, "LATENT")),
        widgets={}, outputs=[("audio", "AUDIO")]))
    create = _node(nodes, 7)
    create["links"]["audio"] = (14, 0, "AUDIO")
    create["sockets"] = []
    _set_prompt(nodes, "A blacksmith hammers a glowing horseshoe on an anvil; sparks fly, the camera holds still. "
                       "Ringing hammer blows, a crackling forge.")
    _node(nodes, 8)["widgets"]["filename_prefix"] = "video/cosmos3_sound"
    return nodes


def t2i():
    nodes = [n for n in t2v() if n["id"] not in (7, 8)]  # no video: the picture is saved as it is
    _node(nodes, 3)["widgets"].update(width=384, height=256, frames=1)
    _set_prompt(nodes, "A red wooden block on a blue one, studio photo, soft light.")
    _node(nodes, 5)["widgets"].update(steps=20, shift=3.0)
    nodes.append(dict(id=7, cls="SaveImage", links=dict(images=(11, 0, "IMAGE")),
                      widgets=dict(filename_prefix="cosmos3_t2i"), outputs=[("images", "IMAGE")]))
    return nodes


LTX_DEMO = "ltx-2.3-tiny-random (embedded demo: noise)"
LTX_PROMPT = ("A jazz pianist plays a slow ballad in a dim club; warm spotlight, the camera drifts around the piano. "
              "Soft piano chords, a brush on a snare, quiet murmur of the audience.")
LTX_NEGATIVE = "blurry, distorted, low quality, flickering, watermark, text, muffled sound, noise"


def ltx2_t2v():
    """One-stage text-to-video with sound (the official LTX-2.3 one-stage recipe: Euler, 30 steps, multi-pass
    guidance)."""
    return [
        dict(id=1, cls="LTX2CheckpointLoader",
             widgets=dict(checkpoint=LTX_DEMO, weight_dtype="bf16", device="default", offload_blocks=0),
             outputs=[("model", "LTX2_MODEL"), ("vae", "LTX2_VAE")]),
        dict(id=2, cls="LTX2TextEncoderLoader", widgets=dict(text_encoder=LTX_DEMO, dtype="bf16", device="default"),
             outputs=[("text_encoder", "LTX2_TEXT_ENCODER")]),
        dict(id=10, cls="Cosmos3LTX2TextGuardrail",
             widgets=dict(prompt=LTX_PROMPT, blocklist="default (shipped)", guard_model="none", device="default"),
             outputs=[("prompt", "STRING")]),
        dict(id=4, cls="LTX2TextEncode",
             links=dict(text_encoder=(2, 0, "LTX2_TEXT_ENCODER"), model=(1, 0, "LTX2_MODEL"), prompt=(10, 0, "STRING")),
             widgets=dict(prompt=LTX_PROMPT, negative_prompt=LTX_NEGATIVE),
             outputs=[("conditioning", "LTX2_CONDITIONING")]),
        dict(id=3, cls="LTX2EmptyLatent", links=dict(vae=(1, 1, "LTX2_VAE")),
             widgets=dict(width=384, height=256, frames=25, fps=24.0, batch_size=1), outputs=[("LATENT", "LATENT")]),
        dict(id=12, cls="LTX2GuiderPreset", widgets=dict(preset="LTX-2.3 one-stage", strategy="split"),
             outputs=[("guider", "LTX2_GUIDER")]),
        dict(id=5, cls="LTX2Sampler",
             links=dict(model=(1, 0, "LTX2_MODEL"), conditioning=(4, 0, "LTX2_CONDITIONING"), latent=(3, 0, "LATENT"),
                        guider=(12, 0, "LTX2_GUIDER")),
             widgets=dict(seed=42, steps=30, schedule="ltx2", sampler="euler", eta=0.5, sde_noise="seeded"),
             control_after=("seed", "fixed"), sockets=[("sigmas", "SIGMAS")], outputs=[("LATENT", "LATENT")]),
        dict(id=6, cls="LTX2Decode", links=dict(vae=(1, 1, "LTX2_VAE"), latent=(5, 0, "LATENT")),
             widgets=dict(temporal_chunk=4, spatial_tile=0, tile_overlap=64),
             outputs=[("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
        dict(id=11, cls="Cosmos3LTX2VideoGuardrail", links=dict(images=(6, 0, "IMAGE")),
             widgets=dict(detector=FACE_DETECTOR, batch_size=4), outputs=[("images", "IMAGE"), ("changed", "BOOLEAN")]),
        dict(id=7, cls="CreateVideo", links=dict(images=(11, 0, "IMAGE"), fps=(6, 2, "FLOAT"), audio=(6, 1, "AUDIO")),
             widgets={}, linked_widgets=dict(fps=24.0), optional_widgets=dict(bit_depth=8), outputs=[("VIDEO", "VIDEO")]),
        dict(id=8, cls="SaveVideo", links=dict(video=(7, 0, "VIDEO")),
             widgets=dict(filename_prefix="video/ltx2_t2v", format="auto", codec="auto"), outputs=[("video", "VIDEO")]),
    ]


def _set_ltx_prompt(nodes, text: str) -> None:
    for node_id in (10, 4):
        _node(nodes, node_id)["widgets"]["prompt"] = text


def ltx2_i2v():
    """One-stage image-to-video with sound: the loaded picture becomes the first frame."""
    nodes = ltx2_t2v()
    nodes.append(dict(id=9, cls="LoadImage", widgets=dict(image="cosmos3_i2v_example.png"), upload="image",
                      outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")]))
    nodes.insert(nodes.index(_node(nodes, 3)) + 1, dict(
        id=13, cls="LTX2ImageConditioning",
        links=dict(vae=(1, 1, "LTX2_VAE"), latent=(3, 0, "LATENT"), image=(9, 0, "IMAGE")),
        widgets=dict(frame_idx=0, strength=1.0, crf=33), outputs=[("LATENT", "LATENT")]))
    _node(nodes, 5)["links"]["latent"] = (13, 0, "LATENT")
    _set_ltx_prompt(nodes, "The robot arm from the first frame lifts the red block and sets it down gently; the camera "
                           "stays still. A soft whir of motors and a wooden clack.")
    _node(nodes, 8)["widgets"]["filename_prefix"] = "video/ltx2_i2v"
    return nodes


def _two_stage(nodes, prefix: str):
    """Stage 1 at half size, then x2 upsample + refine (the LoRA's strengths per stage)."""
    nodes.insert(1, dict(id=14, cls="LTX2LoraLoader", links=dict(model=(1, 0, "LTX2_MODEL")),
                         widgets=dict(lora=LTX_DEMO, strength_stage1=0.25, strength_stage2=0.5),
                         outputs=[("model", "LTX2_MODEL")]))
    nodes.insert(2, dict(id=15, cls="LTX2UpsamplerLoader", widgets=dict(upsampler=LTX_DEMO, dtype="bf16", device="default"),
                         outputs=[("upsampler", "LTX2_UPSAMPLER")]))
    _node(nodes, 3)["widgets"].update(width=192, height=128)  # half of the final 384x256
    _node(nodes, 5)["links"]["model"] = (14, 0, "LTX2_MODEL")
    nodes.insert(nodes.index(_node(nodes, 5)) + 1, dict(
        id=16, cls="LTX2UpsampleRefine",
        links=dict(model=(14, 0, "LTX2_MODEL"), conditioning=(4, 0, "LTX2_CONDITIONING"), latent=(5, 0, "LATENT"),
                   upsampler=(15, 0, "LTX2_UPSAMPLER"), vae=(1, 1, "LTX2_VAE")),
        widgets=dict(sampler="res2s", eta=0.5, sde_noise="seeded"),
        sockets=[("guider", "LTX2_GUIDER"), ("sigmas", "SIGMAS")], outputs=[("LATENT", "LATENT")]))
    _node(nodes, 6)["links"]["latent"] = (16, 0, "LATENT")
    _node(nodes, 8)["widgets"]["filename_prefix"] = f"video/{prefix}"
    return nodes


def ltx2_hq():
    """The HQ two-stage pipeline (official TI2VidTwoStagesHQPipeline): res2s with the HQ guidance at half size, the
    x2 upsampler, three res2s steps at full size; the distilled LoRA at 0.25 then 0.5."""
    nodes = _two_stage(ltx2_t2v(), "ltx2_hq")
    _node(nodes, 12)["widgets"]["preset"] = "LTX-2.3 HQ"
    _node(nodes, 5)["widgets"].update(steps=15, schedule="ltx2 token-shifted (HQ stage 1)", sampler="res2s")
    return nodes


def ltx2_distilled():
    """The distilled two-stage pipeline (official DistilledPipeline, for the distilled checkpoint): Euler over the
    fixed 8 + 3 sigmas, no guidance."""
    nodes = [n for n in _two_stage(ltx2_t2v(), "ltx2_distilled") if n["id"] != 12]
    sampler = _node(nodes, 5)
    del sampler["links"]["guider"]
    sampler["sockets"] = [("guider", "LTX2_GUIDER"), ("sigmas", "SIGMAS")]
    sampler["widgets"].update(steps=8, schedule="distilled", sampler="euler")
    _node(nodes, 16)["widgets"]["sampler"] = "euler"
    _node(nodes, 14)["widgets"].update(strength_stage1=1.0, strength_stage2=1.0)
    return nodes


NATIVE_CHECKPOINT = "ltx-2.3-22b-dev.safetensors"  # the official single file, in models/checkpoints
NATIVE_GEMMA = "gemma_3_12B_it.safetensors"  # ComfyUI's Gemma-3-12B file, in models/text_encoders


def ltx2_native():
    """Our res2s SAMPLER and multi-pass GUIDER on ComfyUI's own LTX-2.3 model and nodes (ComfyUI 0.27 ships neither):
    ComfyUI loads the official checkpoint and Gemma-3-12B, encodes the prompts and makes the audio + video latent;
    SamplerCustomAdvanced samples it with ours. Needs the real files (ComfyUI's Gemma loader takes only the 12B)."""
    return [
        dict(id=1, cls="CheckpointLoaderSimple", widgets=dict(ckpt_name=NATIVE_CHECKPOINT),
             outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
        dict(id=2, cls="LTXAVTextEncoderLoader",
             widgets=dict(text_encoder=NATIVE_GEMMA, ckpt_name=NATIVE_CHECKPOINT, device="default"),
             outputs=[("CLIP", "CLIP")]),
        dict(id=3, cls="LTXVAudioVAELoader", widgets=dict(ckpt_name=NATIVE_CHECKPOINT), outputs=[("Audio VAE", "VAE")]),
        dict(id=21, cls="Cosmos3LTX2TextGuardrail",
             widgets=dict(prompt=LTX_PROMPT, blocklist="default (shipped)", guard_model="none", device="default"),
             outputs=[("prompt", "STRING")]),
        dict(id=4, cls="CLIPTextEncode", links=dict(clip=(2, 0, "CLIP"), text=(21, 0, "STRING")), widgets={},
             linked_widgets=dict(text=LTX_PROMPT), outputs=[("CONDITIONING", "CONDITIONING")]),
        dict(id=5, cls="CLIPTextEncode", links=dict(clip=(2, 0, "CLIP")), widgets=dict(text=LTX_NEGATIVE),
             outputs=[("CONDITIONING", "CONDITIONING")]),
        dict(id=6, cls="LTXVConditioning",
             links=dict(positive=(4, 0, "CONDITIONING"), negative=(5, 0, "CONDITIONING")), widgets=dict(frame_rate=24.0),
             outputs=[("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
        dict(id=7, cls="EmptyLTXVLatentVideo", widgets=dict(width=768, height=512, length=97, batch_size=1),
             outputs=[("LATENT", "LATENT")]),
        dict(id=8, cls="LTXVEmptyLatentAudio", links=dict(audio_vae=(3, 0, "VAE")),
             widgets=dict(frames_number=97, frame_rate=24, batch_size=1), outputs=[("Latent", "LATENT")]),
        dict(id=9, cls="LTXVConcatAVLatent", links=dict(video_latent=(7, 0, "LATENT"), audio_latent=(8, 0, "LATENT")),
             widgets={}, outputs=[("latent", "LATENT")]),
        dict(id=10, cls="LTX2MultipassGuider",
             links=dict(model=(1, 0, "MODEL"), positive=(6, 0, "CONDITIONING"), negative=(6, 1, "CONDITIONING")),
             widgets=dict(preset="LTX-2.3 one-stage", video_cfg=3.0, video_stg=1.0, video_modality=3.0,
                          video_rescale=0.7, audio_cfg=7.0, audio_stg=1.0, audio_modality=3.0, audio_rescale=0.7,
                          stg_blocks="28"),
             outputs=[("GUIDER", "GUIDER")]),
        dict(id=11, cls="LTX2Res2sSampler", widgets=dict(eta=0.5, bongmath=True), outputs=[("SAMPLER", "SAMPLER")]),
        dict(id=12, cls="LTXVScheduler", links=dict(latent=(9, 0, "LATENT")),
             widgets=dict(steps=20, max_shift=2.05, base_shift=0.95, stretch=True, terminal=0.1),
             outputs=[("SIGMAS", "SIGMAS")]),
        dict(id=13, cls="RandomNoise", widgets=dict(noise_seed=42), control_after=("noise_seed", "fixed"),
             outputs=[("NOISE", "NOISE")]),
        dict(id=14, cls="SamplerCustomAdvanced",
             links=dict(noise=(13, 0, "NOISE"), guider=(10, 0, "GUIDER"), sampler=(11, 0, "SAMPLER"),
                        sigmas=(12, 0, "SIGMAS"), latent_image=(9, 0, "LATENT")),
             widgets={}, outputs=[("output", "LATENT"), ("denoised_output", "LATENT")]),
        dict(id=15, cls="LTXVSeparateAVLatent", links=dict(av_latent=(14, 0, "LATENT")), widgets={},
             outputs=[("video_latent", "LATENT"), ("audio_latent", "LATENT")]),
        dict(id=16, cls="VAEDecode", links=dict(samples=(15, 0, "LATENT"), vae=(1, 2, "VAE")), widgets={},
             outputs=[("IMAGE", "IMAGE")]),
        dict(id=17, cls="LTXVAudioVAEDecode", links=dict(samples=(15, 1, "LATENT"), audio_vae=(3, 0, "VAE")),
             widgets={}, outputs=[("Audio", "AUDIO")]),
        dict(id=22, cls="Cosmos3LTX2VideoGuardrail", links=dict(images=(16, 0, "IMAGE")),
             widgets=dict(detector=FACE_DETECTOR, batch_size=4), outputs=[("images", "IMAGE"), ("changed", "BOOLEAN")]),
        dict(id=18, cls="CreateVideo", links=dict(images=(22, 0, "IMAGE"), audio=(17, 0, "AUDIO")),
             widgets=dict(fps=24.0), optional_widgets=dict(bit_depth=8), outputs=[("VIDEO", "VIDEO")]),
        dict(id=19, cls="SaveVideo", links=dict(video=(18, 0, "VIDEO")),
             widgets=dict(filename_prefix="video/ltx2_native", format="auto", codec="auto"), outputs=[("video", "VIDEO")]),
    ]


# Hand placement (column, wanted top) of the LTX graphs' nodes, whose many long links the automatic layout spreads
# too far apart; found by a search for the largest view without links behind nodes (the layout still checks).
PLACES = {
    'ltx2_t2v': {1: (0, 210), 2: (0, 660), 3: (1, 360), 4: (1, 450), 5: (2, 210), 6: (3, 60), 7: (6, 90), 8: (7, 780), 10: (0, 750), 11: (5, 270), 12: (0, 0)},
    'ltx2_i2v': {1: (0, 510), 2: (0, 810), 3: (1, 750), 4: (2, 360), 5: (3, 480), 6: (4, 360), 7: (6, 30), 8: (7, 870), 9: (0, 690), 10: (0, 690), 11: (5, 870), 12: (2, 870), 13: (2, 90)},
    'ltx2_hq': {1: (0, 300), 2: (0, 540), 3: (1, 390), 4: (2, 150), 5: (3, 450), 6: (5, 600), 7: (7, 630), 8: (8, 240), 10: (0, 30), 11: (6, 330), 12: (1, 210), 14: (2, 480), 15: (2, 330), 16: (4, 780)},
    'ltx2_native': {1: (2, 0), 2: (0, 780), 3: (0, 0), 4: (1, 420), 5: (1, 180), 6: (2, 30), 7: (1, 0), 8: (1, 510), 9: (2, 210), 10: (3, 480), 11: (3, 60), 12: (3, 270), 13: (3, 0), 14: (4, 300), 15: (6, 0), 16: (8, 60), 17: (9, 990), 18: (14, 1410), 19: (21, 1500), 21: (0, 330), 22: (9, 1050)},
    'ltx2_distilled': {1: (0, 210), 2: (0, 390), 3: (1, 270), 4: (2, 870), 5: (4, 60), 6: (8, 690), 7: (10, 690), 8: (11, 480), 10: (0, 630), 11: (9, 840), 14: (2, 690), 15: (2, 240), 16: (6, 420)},
}


def _placed(name: str, make):
    return lambda: [dict(n, at=PLACES[name][n["id"]]) for n in make()]


GRAPHS = {"cosmos3_t2v": t2v, "cosmos3_i2v": i2v, "cosmos3_t2i": t2i, "cosmos3_sound": sound,
          **{name: _placed(name, make) for name, make in (("ltx2_t2v", ltx2_t2v), ("ltx2_i2v", ltx2_i2v),
                                                          ("ltx2_hq", ltx2_hq), ("ltx2_distilled", ltx2_distilled))},
          "ltx2_native": _placed("ltx2_native", ltx2_native)}


def api_format(nodes) -> dict:
    graph = {}
    for n in nodes:
        inputs = {**n.get("widgets", {}), **n.get("optional_widgets", {})}  # as the editor's graphToPrompt writes it
        for name, (src, slot, _) in n.get("links", {}).items():
            inputs[name] = [str(src), slot]
        graph[str(n["id"])] = {"class_type": n["cls"], "inputs": inputs, "_meta": {"title": n["cls"]}}
    return graph


# ---------------------------------------------------------------------------------------------- editor layout
# The editor's geometry (litegraph as ComfyUI's frontend draws it): a title bar above each node's body, a row per
# input / output slot, then a row per widget; a link is a cubic curve that leaves an output to the right and
# enters an input from the left, its control points a quarter of the link's length out. Node heights are
# generous (as the frontend sizes its own templates, plus room), so widgets never spill into the next node.
TITLE_H, SLOT_H, WIDGET_H, PAD_H = 30, 20, 24, 24
EXTRA_H = {"Cosmos3TextEncode": 2 * 120, "LTX2TextEncode": 2 * 120, "LoadImage": 240, "SaveVideo": 240, "SaveImage": 240}  # text boxes, pictures
WIDTH = {"Cosmos3TextEncode": 420, "LTX2TextEncode": 420, "SaveVideo": 360, "SaveImage": 360}
DEFAULT_WIDTH = 320
GAP_X, GAP_Y, CLEARANCE = 70, 50, 30
VIEW = (1280, 720)  # the smallest editor window the stored view is made for
VIEW_MARGINS = (64, 100, 32, 40)  # left (side bar), top (menu and tabs), right, bottom


def node_size(n) -> tuple[int, int]:
    slots = max(len(n.get("links", {})) + len(n.get("sockets", [])), len(n["outputs"]), 1)
    widgets = sum(len(n.get(k, {})) for k in ("widgets", "linked_widgets", "optional_widgets"))
    widgets += ("control_after" in n) + ("upload" in n)
    height = SLOT_H * slots + WIDGET_H * widgets + PAD_H + EXTRA_H.get(n["cls"], 0)
    return WIDTH.get(n["cls"], DEFAULT_WIDTH), height


def _columns(nodes) -> dict[int, int]:
    """Column of each node: the longest path from a source; a source sits just left of its first consumer."""
    preds = {n["id"]: [src for src, _, _ in n.get("links", {}).values()] for n in nodes}
    succs = {n["id"]: [m["id"] for m in nodes if n["id"] in preds[m["id"]]] for n in nodes}
    depth: dict[int, int] = {}

    def longest(i):
        if i not in depth:
            depth[i] = 1 + max((longest(p) for p in preds[i]), default=-1)
        return depth[i]

    for n in nodes:
        longest(n["id"])
    for i in depth:
        if not preds[i] and succs[i]:
            depth[i] = min(depth[s] for s in succs[i]) - 1
    return depth


def _input_slot(n, name) -> int:
    names = list(n.get("links", {})) + [s for s, _ in n.get("sockets", [])]
    return names.index(name)


def link_curves(nodes, boxes, samples: int = 24):
    """Per link ``(src, dst, points)``: points along the curve the editor draws from the output to the input."""
    curves = []
    for n in nodes:
        for name, (src, slot, _) in n.get("links", {}).items():
            sx, sy, sw, _ = boxes[src]
            dx, dy, _, _ = boxes[n["id"]]
            a = (sx + sw, sy + (slot + 0.7) * SLOT_H)
            b = (dx, dy + (_input_slot(n, name) + 0.7) * SLOT_H)
            reach = 0.25 * ((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2) ** 0.5
            c1, c2 = (a[0] + reach, a[1]), (b[0] - reach, b[1])
            points = []
            for k in range(samples + 1):
                t = k / samples
                u = 1 - t
                points.append((u**3 * a[0] + 3 * u * u * t * c1[0] + 3 * u * t * t * c2[0] + t**3 * b[0],
                               u**3 * a[1] + 3 * u * u * t * c1[1] + 3 * u * t * t * c2[1] + t**3 * b[1]))
            curves.append((src, n["id"], points))
    return curves


def _inside(point, box, margin) -> bool:
    x, y, w, h = box
    return x - margin <= point[0] <= x + w + margin and y - TITLE_H - margin <= point[1] <= y + h + margin


def layout(nodes) -> dict[int, tuple[int, int, int, int]]:
    """``{node id: (x, y, width, height)}`` of the body (its title bar is above ``y``): columns left to right in the
    order data flows, each column stacked without overlap, and no link passing behind a node it does not join (a
    link that jumps over a column runs below the nodes there; a node beside a link's end moves below the link)."""
    column = _columns(nodes)
    column.update({n["id"]: n["at"][0] for n in nodes if "at" in n})  # placed by hand: (column, top)
    size = {n["id"]: node_size(n) for n in nodes}
    order = sorted(set(column.values()))
    xs, x = {}, 0
    for c in order:
        xs[c] = x
        x += max(size[i][0] for i in column if column[i] == c) + GAP_X
    tops = {n["id"]: float(n["at"][1]) if "at" in n else 0.0 for n in nodes}  # wanted top of each body; stacking
    # pushes it down where needed
    stacks = {c: sorted((n["id"] for n in nodes if column[n["id"]] == c), key=lambda i: tops[i]) for c in order}

    def stack():
        boxes = {}
        for c in order:
            y = TITLE_H
            for i in stacks[c]:
                y = max(y, tops[i])
                boxes[i] = (xs[c], y, *size[i])
                y += size[i][1] + GAP_Y + TITLE_H
        return boxes

    boxes = stack()
    for _ in range(50):
        moved = False
        for src, dst, points in link_curves(nodes, boxes):
            for i, box in boxes.items():
                if i in (src, dst) or not any(_inside(p, box, CLEARANCE) for p in points):
                    continue
                below = box[1] + box[3] + CLEARANCE + TITLE_H + 1
                if column[src] < column[i] < column[dst]:
                    # a link jumping over a column runs below the node in its way: lower both of its ends
                    for end in (src, dst):
                        tops[end] = max(tops[end], below)
                else:  # a node beside one end of the link: it moves below the link
                    tops[i] = max(p[1] for p in points if box[0] - CLEARANCE <= p[0] <= box[0] + box[2] + CLEARANCE) \
                        + CLEARANCE + TITLE_H + 1
                moved = True
        if not moved:
            break
        boxes = stack()
    return {i: tuple(int(round(v)) for v in box) for i, box in boxes.items()}


def fitted_view(boxes) -> dict:
    """The stored view (``extra.ds``: screen = (canvas + offset) x scale) that shows every node, title bars included,
    inside a ``VIEW``-sized editor clear of its side bar and menus, at most at zoom 1."""
    left, top, right, bottom = VIEW_MARGINS
    x0 = min(x for x, _, _, _ in boxes.values())
    y0 = min(y - TITLE_H for _, y, _, _ in boxes.values())
    x1 = max(x + w for x, _, w, _ in boxes.values())
    y1 = max(y + h for _, y, _, h in boxes.values())
    room_w, room_h = VIEW[0] - left - right, VIEW[1] - top - bottom
    scale = min(1.0, room_w / (x1 - x0), room_h / (y1 - y0))
    pad_x, pad_y = (room_w - (x1 - x0) * scale) / 2, (room_h - (y1 - y0) * scale) / 2
    return {"scale": round(scale, 4), "offset": [round((left + pad_x) / scale - x0, 1), round((top + pad_y) / scale - y0, 1)]}


def editor_format(nodes) -> dict:
    boxes = layout(nodes)
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
            if name in n.get("linked_widgets", {}) or name in n.get("widgets", {}):
                entry["widget"] = {"name": name}  # a widget fed by a link keeps its value in its place
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
        x, y, w, h = boxes[n["id"]]
        editor_nodes.append({
            "id": n["id"], "type": n["cls"], "pos": [x, y], "size": [w, h], "flags": {}, "order": order, "mode": 0,
            "inputs": inputs, "outputs": outputs, "properties": {"Node name for S&R": n["cls"]},
            "widgets_values": widgets,
        })
    return {
        "last_node_id": max(n["id"] for n in nodes), "last_link_id": len(link_rows),
        "nodes": editor_nodes, "links": [r[:6] for r in link_rows], "groups": [], "config": {},
        "extra": {"ds": fitted_view(boxes)}, "version": 0.4,
    }


def main() -> None:
    EDITOR_DIR.mkdir(exist_ok=True)
    API_DIR.mkdir(exist_ok=True)
    for name, make in GRAPHS.items():
        nodes = make()
        (EDITOR_DIR / f"{name}.json").write_text(json.dumps(editor_format(nodes), indent=2) + "\n")
        (API_DIR / f"{name}_api.json").write_text(json.dumps(api_format(nodes), indent=2) + "\n")


if __name__ == "__main__":
    main()
