"""LoRA merging (core/lora.py): the formula W + s * (B @ A), agreement with ltx-core's fuse_loras
(apply_loras) when installed, strength changes without reloading (bit-identical to a fresh merge), exact
restore at strength 0, stacking, and clear errors for LoRAs that do not fit."""

import types

import pytest
import torch
from safetensors.torch import save_file

from comfyui_cosmos3_ltx2.core.lora import LoraError, load_lora_state, merge_lora, strength_scope
from helpers.ltx_oracle import ltx_oracles_available


def _ltx_core_fuse():
    if not ltx_oracles_available():
        return None
    try:
        from ltx_core.loader.fuse_loras import apply_loras
        from ltx_core.loader.primitives import LoraStateDictWithStrength, StateDict
    except Exception:  # pragma: no cover - optional oracle
        return None
    return types.SimpleNamespace(apply_loras=apply_loras, LoraSD=LoraStateDictWithStrength, StateDict=StateDict)


REF = _ltx_core_fuse()


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.to_q = torch.nn.Linear(16, 24)
        self.ff = torch.nn.Linear(24, 16)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block() for _ in range(2))
        self.conv = torch.nn.Conv2d(4, 8, 3)
        self.norm = torch.nn.LayerNorm(16)


def tiny(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return Tiny().to(dtype)


TARGETS = {"blocks.0.to_q": ((24, 16), None), "blocks.1.ff": ((16, 24), None), "conv": ((8, 4), (3, 3))}


def make_lora(rank=4, scale=0.5, seed=1, prefix="diffusion_model.", dyadic=False, targets=TARGETS):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for path, ((out, inp), k) in targets.items():
        a_shape = (rank, inp) + (k or ())
        b_shape = (out, rank) + ((1, 1) if k else ())
        if dyadic:  # entries in {-1, 0, 1} / 8: products and sums exact even in bf16
            a = torch.randint(-1, 2, a_shape, generator=g).float() / 8
            b = torch.randint(-1, 2, b_shape, generator=g).float() / 8
        else:
            a = scale * torch.randn(a_shape, generator=g)
            b = scale * torch.randn(b_shape, generator=g)
        sd[f"{prefix}{path}.lora_A.weight"] = a
        sd[f"{prefix}{path}.lora_B.weight"] = b
    return sd


def formula(w, a, b, s):
    return (w.float() + s * (b.flatten(1).float() @ a.flatten(1).float()).view(w.shape)).to(w.dtype)


def snapshot(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def bits_equal(x, y):
    iv = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
    return x.dtype == y.dtype and torch.equal(x.contiguous().view(iv), y.contiguous().view(iv))


def assert_same_bits(m, ref_state):
    for k, v in m.state_dict().items():
        assert bits_equal(v, ref_state[k]), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_merge_equals_formula(dtype):
    m = tiny(dtype)
    before = snapshot(m)
    lora = make_lora()
    h = merge_lora(m, lora, 0.75)
    assert sorted(h.targets) == sorted(p + ".weight" for p in TARGETS)
    after = m.state_dict()
    for k, v in after.items():
        path = k.rsplit(".", 1)[0]
        if k.endswith(".weight") and path in TARGETS:
            a = lora[f"diffusion_model.{path}.lora_A.weight"]
            b = lora[f"diffusion_model.{path}.lora_B.weight"]
            assert bits_equal(v, formula(before[k], a, b, 0.75)), k
        else:
            assert bits_equal(v, before[k]), k  # biases, norm, untouched layers


@pytest.mark.skipif(REF is None, reason="ltx-core 1.0.0 not installed")
@pytest.mark.parametrize("dyadic", [True, False])
def test_matches_ltx_core_apply_loras(dyadic):
    targets = {k: v for k, v in TARGETS.items() if v[1] is None}  # ltx-core fuses linear weights only
    m = tiny(torch.bfloat16)  # ltx-core only fuses bf16 (and fp8) weights
    base = {k: v.clone() for k, v in m.state_dict().items()}
    lora = {k: v.bfloat16() for k, v in make_lora(dyadic=dyadic, targets=targets).items()}
    strength = 0.5
    merge_lora(m, lora, strength)
    core_lora = {k[len("diffusion_model."):]: v for k, v in lora.items()}
    fused = REF.apply_loras(
        REF.StateDict(base, torch.device("cpu"), 0, {torch.bfloat16}),
        [REF.LoraSD(REF.StateDict(core_lora, torch.device("cpu"), 0, {torch.bfloat16}), strength)],
    ).sd
    worst = 0.0
    for k, v in m.state_dict().items():
        if dyadic:
            assert bits_equal(v, fused[k]), k
        else:  # ltx-core rounds the product to bf16 before adding: a bf16 step or two per tensor
            d = (v.float() - fused[k].float()).abs().max() / fused[k].float().abs().max()
            worst = max(worst, d.item())
    assert worst <= 2**-7, worst


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [0.05, 3.0])  # small deltas (sparse fix-ups) and huge ones (dense fallback)
def test_strength_change_is_a_fresh_merge_and_zero_restores(dtype, scale):
    original = snapshot(tiny(dtype))
    lora = make_lora(scale=scale)
    m = tiny(dtype)
    h = merge_lora(m, lora, 1.0)
    for s in (0.3, -2.0, 1.7, 0.7):
        h.set_strength(s)
        fresh = tiny(dtype)
        merge_lora(fresh, lora, s)
        assert_same_bits(m, snapshot(fresh))
    h.set_strength(0.0)
    assert_same_bits(m, original)
    h.set_strength(1.0)
    h.remove()
    assert_same_bits(m, original)
    with pytest.raises(LoraError, match="removed"):
        h.set_strength(1.0)


def test_repeated_changes_do_not_drift():
    dtype = torch.bfloat16
    lora = make_lora(scale=0.3)
    m = tiny(dtype)
    h = merge_lora(m, lora, 1.0)
    for i in range(50):
        h.set_strength(0.37 + 0.01 * (i % 7))
    h.set_strength(1.0)
    fresh = tiny(dtype)
    merge_lora(fresh, lora, 1.0)
    assert_same_bits(m, snapshot(fresh))


def test_strength_scope_moves_then_restores():
    m = tiny()
    h = merge_lora(m, make_lora(), 0.7)
    at_entry = snapshot(m)
    with pytest.raises(KeyboardInterrupt):
        with strength_scope(h) as use:
            use(0.25)
            assert h.strength == 0.25
            use(0.5)
            raise KeyboardInterrupt
    assert h.strength == 0.7
    assert_same_bits(m, at_entry)
    with strength_scope(None) as use:  # no LoRA: nothing to move
        use(0.5)


def test_stacked_loras_change_in_any_order():
    dtype = torch.bfloat16
    original = snapshot(tiny(dtype))
    l1, l2 = make_lora(seed=1), make_lora(seed=2, scale=1.0)
    m = tiny(dtype)
    h1 = merge_lora(m, l1, 1.0)
    h2 = merge_lora(m, l2, 0.5)
    h1.set_strength(0.25)  # the first one, under the second
    fresh = tiny(dtype)
    merge_lora(fresh, l1, 0.25)
    merge_lora(fresh, l2, 0.5)
    assert_same_bits(m, snapshot(fresh))
    h1.remove()
    h2.remove()
    assert_same_bits(m, original)


def test_files_prefix_key_map_and_alpha(tmp_path):
    lora = make_lora(prefix="lora_unet.")
    lora["lora_unet.blocks.0.to_q.alpha"] = torch.tensor(8.0)  # ignored: no alpha scaling
    # the file names the layers as "layers.*" where the module has "blocks.*"
    renamed = {k.replace("lora_unet.blocks.", "lora_unet.layers."): v for k, v in lora.items()}
    half = len(renamed) // 2
    items = sorted(renamed.items())
    f1, f2 = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(dict(items[:half]), str(f1))
    save_file(dict(items[half:]), str(f2))
    m = tiny()
    h = merge_lora(m, [f1, f2], 1.0, key_prefix="lora_unet.", key_map={"layers.": "blocks."})
    ref = tiny()
    merge_lora(ref, make_lora(), 1.0)
    assert_same_bits(m, snapshot(ref))
    assert len(h.targets) == 3
    assert set(load_lora_state(f1)) | set(load_lora_state(f2)) == set(renamed)


def test_unmatched_keys_error_names_them_and_changes_nothing():
    m = tiny()
    before = snapshot(m)
    lora = make_lora()
    lora["diffusion_model.blocks.7.attn2.to_k.lora_A.weight"] = torch.zeros(4, 16)
    lora["diffusion_model.blocks.7.attn2.to_k.lora_B.weight"] = torch.zeros(16, 4)
    with pytest.raises(LoraError, match=r"match no weight.*blocks\.7\.attn2\.to_k\.lora_A\.weight"):
        merge_lora(m, lora, 1.0)
    assert_same_bits(m, before)


def test_wrong_prefix_hint():
    with pytest.raises(LoraError, match="key_prefix 'diffusion_model.'"):
        merge_lora(tiny(), make_lora(prefix="transformer."), 1.0)


def test_shape_and_pair_errors():
    m = tiny()
    before = snapshot(m)
    lora = make_lora()
    lora["diffusion_model.blocks.0.to_q.lora_A.weight"] = torch.zeros(4, 17)  # in 17 != 16
    with pytest.raises(LoraError, match=r"shapes do not fit.*blocks\.0\.to_q\.lora_A\.weight"):
        merge_lora(m, lora, 1.0)
    lora = make_lora()
    del lora["diffusion_model.blocks.1.ff.lora_B.weight"]
    with pytest.raises(LoraError, match="no matching lora_B"):
        merge_lora(m, lora, 1.0)
    lora = make_lora()
    lora["diffusion_model.blocks.0.to_q.weight"] = torch.zeros(24, 16)  # a full weight, not a LoRA factor
    with pytest.raises(LoraError, match="not LoRA factors"):
        merge_lora(m, lora, 1.0)
    with pytest.raises(LoraError, match="no .*pairs"):
        merge_lora(m, {}, 1.0)
    assert_same_bits(m, before)
