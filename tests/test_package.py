"""The repository root imports the way ComfyUI imports a custom node pack, under any folder name; its metadata,
commands and lint hold."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_imports_like_comfyui_under_any_folder_name(tmp_path):
    pack = tmp_path / "custom_nodes" / "ComfyUI-Cosmos3-LTX2 (copy)"
    pack.parent.mkdir()
    os.symlink(ROOT, pack)
    script = textwrap.dedent(
        f"""
        import importlib, importlib.util, sys
        name = {pack.name!r}
        spec = importlib.util.spec_from_file_location(name, {str(pack / "__init__.py")!r})
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        assert isinstance(module.NODE_CLASS_MAPPINGS, dict)
        pipeline = importlib.import_module(name + ".cosmos3.pipeline")
        assert pipeline.latent_shape(9, 32, 64) == (3, 2, 4)
        assert "comfyui_cosmos3_ltx2" not in sys.modules
        assert not any(m == "comfy" or m.startswith("comfy.") for m in sys.modules)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_core_imports_neither_model_nor_test_oracles():
    """core/ sits below both models: it imports neither of them, nor diffusers."""
    for dirpath, _, files in os.walk(os.path.join(ROOT, "core")):
        for f in files:
            if not f.endswith(".py"):
                continue
            for line in open(os.path.join(dirpath, f)):
                line = line.strip()
                if line.startswith(("import ", "from ")):
                    module = line.split()[1]
                    assert not module.startswith(("..cosmos3", "..ltx2", "..nodes", "diffusers", "comfy")), (f, line)


def test_registry_and_manager_metadata():
    """ComfyUI Manager and the Comfy Registry read ``[tool.comfy]`` (publisher, display name, icon; the keys of
    ComfyUI 0.27's ``comfy_config/types.py``) and install ``requirements.txt``: the pack's own dependencies,
    the same as pyproject's less torch, which ComfyUI brings."""
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        meta = tomllib.load(f)
    comfy = meta["tool"]["comfy"]
    assert {"PublisherId", "DisplayName", "Icon"} <= set(comfy) and comfy["DisplayName"]
    assert meta["project"]["name"] and meta["project"]["version"].count(".") == 2
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        required = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert required == [d for d in meta["project"]["dependencies"] if not d.startswith("torch")]


def test_commands_run_from_a_clone_that_is_not_installed(tmp_path):
    """In ComfyUI/custom_nodes the pack is a folder of any name, not an installed package: ``python <folder> ...``
    runs the same commands as ``python -m comfyui_cosmos3_ltx2 ...`` (the folder imported as the package)."""
    pack = tmp_path / "custom_nodes" / "ComfyUI-Cosmos3-LTX2"
    pack.parent.mkdir()
    os.symlink(ROOT, pack)
    out_file = tmp_path / "robot.webp"
    args = [str(pack), "generate", "--prompt", "a robot", "--width", "64", "--height", "32", "--frames", "5",
            "--steps", "1", "--output", str(out_file)]
    out = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out_file.stat().st_size > 0 and "5 frame(s) 64x32" in out.stdout
    # a wrong option: one line, exit status 2, as from the installed command
    out = subprocess.run([sys.executable, str(pack), "generate", "--steps", "0"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and "--steps=0" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_ruff_finds_nothing():
    """The lint rules of pyproject.toml ([tool.ruff]: syntax errors, undefined and unused names, import and statement
    forms) hold over the whole tree."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).is_file():
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    out = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
