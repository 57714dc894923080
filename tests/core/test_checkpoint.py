"""Tests for core/checkpoint.py: layouts, key handling, dtypes and the errors users see."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from comfyui_cosmos3_ltx2.core import checkpoint as ckpt
from comfyui_cosmos3_ltx2.core.checkpoint import (
    CheckpointError,
    list_keys,
    load_into,
    read_config,
    resolve_weight_files,
    safetensors_metadata,
)

CONFIG = {"_class_name": "Tiny", "width": 16, "layers": 2}


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.attn = nn.Linear(width, width, bias=False)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))


class Tiny(nn.Module):
    def __init__(self, width=16, layers=2):
        super().__init__()
        self.proj_in = nn.Linear(8, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(layers))
        self.time_embedder = nn.Sequential(nn.Linear(4, width), nn.SiLU(), nn.Linear(width, width))
        self.proj_out = nn.Linear(width, 8)
        self.register_buffer("scale", torch.linspace(0.5, 2.0, 8))
        self.register_buffer("steps", torch.arange(4))  # an integer buffer
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    @staticmethod
    def _inv_freq(device=None):
        return 1.0 / (10000 ** (torch.arange(0, 8, 2, dtype=torch.float32, device=device) / 8))

    def reset_non_persistent_buffers(self, device):
        self.inv_freq = self._inv_freq(device)


class NoHook(Tiny):
    reset_non_persistent_buffers = None  # inv_freq cannot be rebuilt


def make_source(seed=0):
    torch.manual_seed(seed)
    return Tiny()


def on_meta(cls=Tiny, **kw):
    with torch.device("meta"):
        return cls(**kw)


def contiguous_sd(module):
    return {k: v.detach().contiguous() for k, v in module.state_dict().items()}


def assert_same(module, reference, dtype_of=lambda name, t: t.dtype):
    ref = reference.state_dict()
    got = module.state_dict()
    assert got.keys() == ref.keys()
    for name, t in got.items():
        assert not t.is_meta, name
        want = ref[name].to(dtype_of(name, ref[name]))
        assert t.dtype == want.dtype, name
        assert torch.equal(t, want), name
    for name, p in module.named_parameters():
        assert not p.requires_grad, name
    assert torch.equal(module.inv_freq, Tiny._inv_freq())


def all_meta(module):
    return all(t.is_meta for t in module.state_dict().values())


def write_shards(folder, sd, n_shards=3, name="diffusion_pytorch_model"):
    """A diffusers-style sharded folder, index written by hand."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(sd)
    weight_map = {}
    files = []
    for i in range(n_shards):
        fname = f"{name}-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: sd[k] for k in keys[i::n_shards]}
        save_file(part, str(folder / fname))
        weight_map.update({k: fname for k in part})
        files.append(folder / fname)
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())},
             "weight_map": weight_map}
    (folder / f"{name}.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return files


# ------------------------------------------------------------------------------------------------
# Layouts


def test_single_file_roundtrip(tmp_path):
    src = make_source()
    f = tmp_path / "model.safetensors"
    save_file(contiguous_sd(src), str(f))
    assert resolve_weight_files(f) == [f]
    assert resolve_weight_files(tmp_path) == [f]  # the only safetensors in the folder

    model = on_meta()
    load_into(model, [f])
    assert_same(model, src)


def test_sharded_folder(tmp_path):
    src = make_source(1)
    files = write_shards(tmp_path / "transformer", contiguous_sd(src))
    folder = tmp_path / "transformer"
    assert resolve_weight_files(folder) == files
    assert resolve_weight_files(folder / "diffusion_pytorch_model.safetensors.index.json") == files
    assert read_config(folder) == CONFIG

    model = on_meta()
    load_into(model, resolve_weight_files(folder))
    assert_same(model, src)

    model = on_meta()
    load_into(model, folder)  # a path is resolved for you
    assert_same(model, src)


def test_transformers_style_index_in_folder(tmp_path):
    src = make_source()
    files = write_shards(tmp_path, contiguous_sd(src), name="model")
    assert resolve_weight_files(tmp_path) == files  # the only index.json in the folder


def test_config_in_metadata(tmp_path):
    src = make_source()
    f = tmp_path / "ltx-style.safetensors"
    save_file(contiguous_sd(src), str(f), metadata={"config": json.dumps(CONFIG), "format": "pt"})
    (tmp_path / "config.json").write_text('{"not": "this one"}')  # metadata wins
    assert safetensors_metadata(f) == {"config": json.dumps(CONFIG), "format": "pt"}
    assert read_config(f) == CONFIG
    model = on_meta()
    load_into(model, f)
    assert_same(model, src)


def test_config_beside_file(tmp_path):
    f = tmp_path / "weights.safetensors"
    save_file({"x": torch.zeros(2)}, str(f))
    assert safetensors_metadata(f) == {}
    with pytest.raises(CheckpointError, match="no config found"):
        read_config(f)
    (tmp_path / "weights.json").write_text(json.dumps({"stem": 1}))
    assert read_config(f) == {"stem": 1}
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    assert read_config(f) == CONFIG
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        read_config(f)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_config(tmp_path)


def test_bad_config_metadata(tmp_path):
    f = tmp_path / "m.safetensors"
    save_file({"x": torch.zeros(2)}, str(f), metadata={"config": "{nope"})
    with pytest.raises(CheckpointError, match="m.safetensors: the 'config' entry"):
        read_config(f)


def test_list_keys_reads_headers(tmp_path):
    src = make_source()
    sd = contiguous_sd(src)
    sd["proj_in.weight"] = sd["proj_in.weight"].to(torch.bfloat16)
    files = write_shards(tmp_path, sd)
    keys = list_keys(files)
    assert keys.keys() == sd.keys()
    path, shape, dt = keys["proj_in.weight"]
    assert path in files and shape == (16, 8) and dt == "BF16"
    assert keys["steps"][1:] == ((4,), "I64")
    assert list_keys(tmp_path) == keys


# ------------------------------------------------------------------------------------------------
# Dtypes, names


def test_bf16_with_keep_dtype(tmp_path):
    src = make_source()
    f = tmp_path / "m.safetensors"
    save_file(contiguous_sd(src), str(f))
    for dtype in (torch.bfloat16, "bf16"):
        model = on_meta()
        load_into(model, f, dtype=dtype, keep_dtype=("time_embedder.",))

        def want(name, t):
            if not t.is_floating_point():
                return t.dtype
            return torch.float32 if name.startswith("time_embedder.") else torch.bfloat16

        assert_same(model, src, want)
        assert model.steps.dtype == torch.int64


def test_keep_dtype_upcasts_half_file(tmp_path):
    src = make_source()
    f = tmp_path / "m.safetensors"
    save_file({k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in contiguous_sd(src).items()},
              str(f))
    model = on_meta()
    load_into(model, f, dtype=torch.bfloat16, keep_dtype=("time_embedder.",))
    assert model.time_embedder[0].weight.dtype == torch.float32
    assert torch.equal(model.time_embedder[0].weight, src.time_embedder[0].weight.to(torch.bfloat16).float())


def test_dtype_none_follows_materialised_module(tmp_path):
    src = make_source()
    f = tmp_path / "m.safetensors"
    save_file(contiguous_sd(src), str(f))
    model = Tiny().to(torch.bfloat16)  # real (not meta) parameters in bf16
    load_into(model, f)
    assert model.proj_in.weight.dtype == torch.bfloat16
    assert torch.equal(model.proj_in.weight, src.proj_in.weight.to(torch.bfloat16))

    model = on_meta()  # meta: the file's dtype is kept
    load_into(model, f)
    assert model.proj_in.weight.dtype == torch.float32


def test_key_map_aliases(tmp_path):
    src = make_source()
    sd = contiguous_sd(src)
    aliased = {k.replace("proj_in.", "vae2llm.").replace("proj_out.", "llm2vae."): v for k, v in sd.items()}
    f = tmp_path / "fp8-names.safetensors"
    save_file(aliased, str(f))

    with pytest.raises(CheckpointError, match="does not look like a Tiny checkpoint"):
        load_into(on_meta(), f)

    model = on_meta()
    load_into(model, f, key_map={"vae2llm.": "proj_in.", "llm2vae.": "proj_out."})
    assert_same(model, src)

    # A callable: rename, and drop a key by returning None.
    save_file({**aliased, "extra.thing": torch.zeros(3)}, str(f))
    renames = {"vae2llm.": "proj_in.", "llm2vae.": "proj_out."}

    def fn(key):
        if key.startswith("extra."):
            return None
        for a, r in renames.items():
            if key.startswith(a):
                return r + key[len(a):]
        return key

    model = on_meta()
    load_into(model, f, key_map=fn)
    assert_same(model, src)


def test_two_keys_onto_one_name(tmp_path):
    sd = contiguous_sd(make_source())
    sd["vae2llm.weight"] = sd["proj_in.weight"].clone()
    f = tmp_path / "m.safetensors"
    save_file(sd, str(f))
    with pytest.raises(CheckpointError, match="both 'proj_in.weight' .* and 'vae2llm.weight' .* load into 'proj_in.weight'"):
        load_into(on_meta(), f, key_map={"vae2llm.": "proj_in."})


def test_strip_prefix(tmp_path):
    src = make_source()
    sd = {"model.diffusion_model." + k: v for k, v in contiguous_sd(src).items()}
    sd["vae.decoder.weight"] = torch.zeros(3)  # other components in the same file
    sd["text_embedding_projection.w"] = torch.zeros(2)
    f = tmp_path / "ltx.safetensors"
    save_file(sd, str(f), metadata={"config": json.dumps({"transformer": CONFIG})})

    with pytest.raises(CheckpointError, match="strip_prefix") as e:
        load_into(on_meta(), f)
    assert "'model.diffusion_model.'" in str(e.value)

    model = on_meta()
    load_into(model, f, strip_prefix="model.diffusion_model.")
    assert_same(model, src)
    assert read_config(f) == {"transformer": CONFIG}


def test_ignore(tmp_path):
    src = make_source()
    sd = {**contiguous_sd(src), "lm_head.weight": torch.zeros(4, 4), "norm.weight": torch.ones(4)}
    f = tmp_path / "m.safetensors"
    save_file(sd, str(f))
    with pytest.raises(CheckpointError, match="2 unexpected keys"):
        load_into(on_meta(), f)
    model = on_meta()
    load_into(model, f, ignore=("lm_head.", "norm.weight"))
    assert_same(model, src)


# ------------------------------------------------------------------------------------------------
# Errors


def test_missing_and_unexpected_keys(tmp_path):
    sd = contiguous_sd(make_source())
    del sd["proj_out.weight"], sd["proj_out.bias"], sd["scale"]
    sd["surprise.a"] = torch.zeros(1)
    f = tmp_path / "other.safetensors"
    save_file(sd, str(f))
    with pytest.raises(CheckpointError) as e:
        load_into(on_meta(), f)
    msg = str(e.value)
    assert "other.safetensors does not look like a Tiny checkpoint" in msg
    assert "3 missing keys" in msg and "proj_out.weight" in msg and "scale" in msg
    assert "1 unexpected keys (surprise.a)" in msg
    assert all_meta(on_meta())

    # Not strict: unexpected keys are skipped, but nothing may stay on meta.
    model = on_meta()
    with pytest.raises(CheckpointError, match="still on the meta device"):
        load_into(model, f, strict=False)
    model = Tiny()
    before = model.proj_out.weight.clone()
    load_into(model, f, strict=False)
    assert torch.equal(model.proj_out.weight, before)


@pytest.mark.parametrize("extra", [
    {"blocks.0.attn.weight_scale": torch.ones(()), "blocks.0.attn.comfy_quant": torch.tensor([123], dtype=torch.uint8)},
    {"blocks.0.attn.weight_scale": torch.ones(()), "blocks.0.attn.weight_scale_2": torch.ones(())},
    {"blocks.0.mlp.0.weight_quantizer._scale": torch.ones(1, 1)},
])
def test_quantized_files_are_named_as_such(tmp_path, extra):
    """Quantized layouts that do not load (a bad comfy_quant entry, NVFP4's second scale, a scale on a weight that is
    not float8) get one clear error, even when not strict: loading their weights without the scales would silently
    give wrong numbers. (The scaled fp8 formats that do load: tests/test_quantized_checkpoints.py.)"""
    sd = contiguous_sd(make_source())
    sd["blocks.0.attn.weight"] = sd["blocks.0.attn.weight"].to(torch.float8_e4m3fn)
    f = tmp_path / "q.safetensors"
    save_file({**sd, **extra}, str(f))
    for strict in (True, False):
        with pytest.raises(CheckpointError, match=r"quantized weights \('(%s)'" % "|".join(extra)):
            load_into(on_meta(), f, strict=strict)


def test_plain_float8_file_loads_by_casting(tmp_path):
    """A float8 file without scales (weights simply stored in float8) loads, cast to the target dtype."""
    sd = contiguous_sd(make_source())
    sd["blocks.0.attn.weight"] = sd["blocks.0.attn.weight"].to(torch.float8_e4m3fn)
    f = tmp_path / "f8.safetensors"
    save_file(sd, str(f))
    model = on_meta()
    load_into(model, f, dtype=torch.float32)
    assert model.blocks[0].attn.weight.dtype == torch.float32
    assert torch.equal(model.blocks[0].attn.weight, sd["blocks.0.attn.weight"].float())


def test_shape_mismatch(tmp_path):
    sd = contiguous_sd(make_source())
    sd["proj_in.weight"] = torch.zeros(16, 9)
    f = tmp_path / "m.safetensors"
    save_file(sd, str(f))
    model = on_meta()
    with pytest.raises(CheckpointError, match=r"'proj_in.weight' has shape \[16, 9\].*expects \[16, 8\]"):
        load_into(model, f)
    assert all_meta(model)  # checked before loading anything


def test_truncated_file(tmp_path):
    f = tmp_path / "m.safetensors"
    save_file(contiguous_sd(make_source()), str(f))
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.truncate(size - 10)
    model = on_meta()
    with pytest.raises(CheckpointError, match=r"m.safetensors: is truncated or not a safetensors file.*10 missing"):
        load_into(model, f)
    assert all_meta(model)
    with pytest.raises(CheckpointError, match="truncated"):
        list_keys([f])


def test_truncated_shard_reported_before_loading(tmp_path):
    files = write_shards(tmp_path, contiguous_sd(make_source()))
    with open(files[-1], "r+b") as fh:
        fh.truncate(files[-1].stat().st_size // 2)
    model = on_meta()
    with pytest.raises(CheckpointError, match=files[-1].name):
        load_into(model, tmp_path)
    assert all_meta(model)  # the first shards were not loaded either


@pytest.mark.parametrize("content", [b"", b"abc", b"\xff" * 64, (5).to_bytes(8, "little") + b"[1,2]"])
def test_not_a_safetensors_file(tmp_path, content):
    f = tmp_path / "junk.safetensors"
    f.write_bytes(content)
    with pytest.raises(CheckpointError, match="junk.safetensors: is truncated or not a safetensors file"):
        load_into(on_meta(), f)
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        safetensors_metadata(f)


def test_pickle_only_folder(tmp_path):
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match=r"only \.safetensors weights are read"):
        resolve_weight_files(tmp_path)
    with pytest.raises(CheckpointError, match="never loaded"):
        resolve_weight_files(tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only .safetensors"):
        load_into(on_meta(), [tmp_path / "diffusion_pytorch_model.bin"])


def test_missing_shard(tmp_path):
    files = write_shards(tmp_path, contiguous_sd(make_source()))
    os.remove(files[1])
    with pytest.raises(CheckpointError, match=f"1 of 3 shard files are missing \\({files[1].name}\\)"):
        resolve_weight_files(tmp_path)


def test_resolve_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        resolve_weight_files(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no weights found"):
        resolve_weight_files(tmp_path)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "a.safetensors"))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(CheckpointError, match="several candidate weight files"):
        resolve_weight_files(tmp_path)
    assert resolve_weight_files(tmp_path, weight_name="b") == [tmp_path / "b.safetensors"]
    (tmp_path / "x.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no 'weight_map'"):
        resolve_weight_files(tmp_path / "x.safetensors.index.json")
    (tmp_path / "x.safetensors.index.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="x.safetensors.index.json: not valid JSON"):
        resolve_weight_files(tmp_path / "x.safetensors.index.json")


def test_non_persistent_buffer_needs_hook(tmp_path):
    f = tmp_path / "m.safetensors"
    save_file(contiguous_sd(make_source()), str(f))
    with pytest.raises(CheckpointError, match="inv_freq.*reset_non_persistent_buffers"):
        load_into(on_meta(NoHook), f)


# ------------------------------------------------------------------------------------------------
# Memory behaviour: tensor by tensor, no extra copies


def test_loads_tensor_by_tensor_without_copies(tmp_path, monkeypatch):
    src = make_source()
    files = write_shards(tmp_path, contiguous_sd(src), n_shards=2)
    model = on_meta()
    read = []  # tensors handed out by safetensors, in order
    real_open = ckpt.safe_open

    class Spy:
        def __init__(self, *a, **kw):
            self.inner = real_open(*a, **kw)

        def __enter__(self):
            self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def get_tensor(self, key):
            # Every tensor read so far is already installed in the module: nothing is accumulated.
            loaded = sum(not t.is_meta for t in model.state_dict().values())
            assert loaded == len(read)
            t = self.inner.get_tensor(key)
            read.append(t)
            return t

    monkeypatch.setattr(ckpt, "safe_open", Spy)
    load_into(model, files)
    assert len(read) == len(model.state_dict())
    # Same device and dtype: the tensor from the file is installed as it is, not cloned.
    ptrs = {t.data_ptr() for t in read}
    assert all(t.data_ptr() in ptrs for t in model.state_dict().values())
    assert_same(model, src)


# ------------------------------------------------------------------------------------------------
# A real diffusers checkpoint


def test_diffusers_sharded_checkpoint(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLWan(
        base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, attn_scales=[],
        temperal_downsample=[True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    )
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    files = resolve_weight_files(tmp_path)
    assert len(files) > 1 and all(f.suffix == ".safetensors" for f in files)

    cfg = read_config(tmp_path)
    assert cfg["_class_name"] == "AutoencoderKLWan" and cfg["z_dim"] == 4
    with torch.device("meta"):
        model = diffusers.AutoencoderKLWan.from_config(cfg)
    load_into(model, files)

    want = ref.state_dict()
    got = model.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
