"""Bad input gets a clear error that names the field or the file."""

import json
import shutil

import pytest
import torch

from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError
from comfyui_cosmos3_ltx2.core.checks import OptionError
from comfyui_cosmos3_ltx2.cosmos3 import options as O
from comfyui_cosmos3_ltx2.cosmos3.loader import load_checkpoint, load_transformer
from comfyui_cosmos3_ltx2.cosmos3.tiny import write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


def copy(tiny, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny, dst)
    return dst


@pytest.mark.parametrize("field,kw", [("width", dict(width=40)), ("height", dict(height=20)),
                                      ("num_frames", dict(num_frames=0))])
def test_size_errors_name_the_field(field, kw):
    args = dict(width=64, height=32, num_frames=9) | kw
    with pytest.raises(OptionError, match=field) as info:
        O.check_size(**args)
    assert info.value.fields == (field,)


def test_frame_counts_that_are_not_4k_plus_1_are_refused_with_the_nearest_ones():
    """Nothing is rounded behind the user's back (the nodes used to round 11 down to 9 with a server-log warning)."""
    with pytest.raises(OptionError, match="num_frames=11: not 4k\\+1 .* use 9 or 13"):
        O.check_size(64, 32, 11)
    with pytest.raises(OptionError, match="num_frames=3: must be at least 5 .image-to-video"):
        O.check_size(64, 32, 3, min_frames=5)
    for frames in (1, 5, 13, 1025):
        O.check_size(64, 32, frames)


def test_missing_folder_and_missing_weights(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    ckpt = copy(tiny, tmp_path)
    (ckpt / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="vae"):
        load_checkpoint(ckpt, dtype="fp32")


def test_truncated_file(tiny, tmp_path):
    ckpt = copy(tiny, tmp_path)
    f = ckpt / "transformer" / "diffusion_pytorch_model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(ckpt, dtype="fp32")


def test_checkpoint_of_another_model(tiny, tmp_path):
    ckpt = copy(tiny, tmp_path)
    index = json.loads((ckpt / "model_index.json").read_text())
    index["_class_name"] = "LTX2Pipeline"
    (ckpt / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="not a Cosmos3 pipeline"):
        load_checkpoint(ckpt)
    # A transformer folder whose weights belong to another network: named by class, or by its keys.
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "LTX2VideoTransformer3DModel"}))
    with pytest.raises(CheckpointError, match="not a Cosmos3 transformer"):
        load_transformer(other)
    from safetensors.torch import save_file

    (other / "config.json").write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                   "num_key_value_heads": 1, "head_dim": 16,
                                                   "rope_axes_dim": [4, 2, 2], "intermediate_size": 8,
                                                   "vocab_size": 10}))
    save_file({"blocks.0.attn1.to_q.weight": torch.zeros(4, 4)}, str(other / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match="does not look like"):
        load_transformer(other, dtype="fp32")


def test_pickled_weights_are_refused(tiny, tmp_path):
    ckpt = copy(tiny, tmp_path)
    f = ckpt / "vae" / "diffusion_pytorch_model.safetensors"
    f.rename(f.with_suffix(".bin"))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(ckpt, dtype="fp32")


def test_tokenizer_without_vision_start(tiny, tmp_path):
    ckpt = copy(tiny, tmp_path)
    tok_file = ckpt / "text_tokenizer" / "tokenizer.json"
    data = json.loads(tok_file.read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<|vision_start|>"]
    tok_file.write_text(json.dumps(data))
    cfg_file = ckpt / "text_tokenizer" / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    for key in ("added_tokens_decoder",):
        if key in cfg:
            cfg[key] = {k: v for k, v in cfg[key].items() if v.get("content") != "<|vision_start|>"}
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="vision_start"):
        load_checkpoint(ckpt, dtype="fp32")


def test_fp8_aliases_load(tiny, tmp_path):
    """The FP8 export names proj_in/proj_out vae2llm/llm2vae; both spellings load to the same weights."""
    from safetensors.torch import load_file, save_file

    ckpt = copy(tiny, tmp_path)
    f = ckpt / "transformer" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f))
    renamed = {k.replace("proj_in.", "vae2llm.").replace("proj_out.", "llm2vae."): v for k, v in sd.items()}
    save_file(renamed, str(f))
    model = load_transformer(ckpt / "transformer", dtype="fp32")
    assert torch.equal(model.proj_in.weight, sd["proj_in.weight"])
    assert torch.equal(model.proj_out.bias, sd["proj_out.bias"])


def test_quantized_fp8_export_is_named_as_such(tiny, tmp_path):
    """A quantizer scale on a weight that is not float8 is refused with a clear error (ModelOpt FP8 exports
    themselves load: tests/test_quantized_checkpoints.py)."""
    from safetensors.torch import load_file, save_file

    ckpt = copy(tiny, tmp_path)
    f = ckpt / "transformer" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f))
    sd["layers.0.mlp.gate_proj.weight_quantizer._scale"] = torch.ones(1, 1)
    save_file(sd, str(f))
    with pytest.raises(CheckpointError, match="quantized.*weight_quantizer._scale"):
        load_transformer(ckpt / "transformer", dtype="fp32")
