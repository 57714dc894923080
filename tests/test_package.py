"""The repository root imports the way ComfyUI imports a custom node pack, under any folder name."""

import os
import subprocess
import sys
import textwrap

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
