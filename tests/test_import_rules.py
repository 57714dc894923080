"""The pack's import rules, read from the source (every import statement, function-level ones included):

- the layers: core/ imports no model package, nodes/ or headless/; a model package (cosmos3/, ltx2/) imports
  only core/ and itself; nodes/ does not import headless/ (headless/ runs the nodes, not the reverse);
- only the bridge, nodes/comfy.py, imports ComfyUI's modules;
- no two modules of the pack import each other, directly or round a longer loop.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "comfyui_cosmos3_ltx2"  # the name pip installs the pack under (absolute imports may use it)
BRIDGE = "nodes.comfy"
# ComfyUI's top-level modules and packages (its repository root is on sys.path inside ComfyUI; ``nodes`` there
# is ComfyUI's base nodes module, never this pack's relative ``.nodes``).
COMFYUI = {"comfy", "comfy_extras", "comfy_api", "comfy_api_nodes", "comfy_execution", "comfy_config",
           "folder_paths", "latent_preview", "node_helpers", "nodes", "server", "execution", "comfyui_version"}
# What each layer may import from the pack, by top-level folder.
LAYERS = {
    "core": {"core"},
    "cosmos3": {"core", "cosmos3"},
    "ltx2": {"core", "ltx2"},
    "nodes": {"core", "cosmos3", "ltx2", "nodes"},
    "headless": {"core", "cosmos3", "ltx2", "nodes", "headless"},
}


def modules(root: Path) -> dict:
    """``{dotted module name: file}`` of the pack's Python files (tests and hidden folders left out).

    A package is named by its folder (``nodes`` for nodes/__init__.py); the root ``__init__.py`` is ``""``.
    """
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if parts[0] == "tests" or any(p.startswith(".") or p == "__pycache__" for p in parts):
            continue
        names = list(parts[:-1]) + ([] if path.stem == "__init__" else [path.stem])
        found[".".join(names)] = path
    return found


def imports(name: str, path: Path, known: dict):
    """``(line, kind, target)`` of every import in a module: kind "pack" (target: a module of the pack, the
    submodule when a name imported from a package is one) or "external" (target: the top-level name)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top, _, rest = alias.name.partition(".")
                if top == PACKAGE:
                    yield node.lineno, "pack", _nearest(rest.split(".") if rest else [], known)
                else:
                    yield node.lineno, "external", top
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                top, _, rest = (node.module or "").partition(".")
                if top != PACKAGE:
                    yield node.lineno, "external", top
                    continue
                base = rest.split(".") if rest else []
            else:
                if node.level - 1 > len(package):
                    raise AssertionError(f"{path}:{node.lineno}: relative import beyond the pack")
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            for alias in node.names:
                submodule = ".".join(base + [alias.name])
                yield node.lineno, "pack", submodule if submodule in known else _nearest(base, known)


def _nearest(parts: list, known: dict) -> str:
    """The module that ``parts`` names, or its closest enclosing package that is a module of the pack."""
    while parts and ".".join(parts) not in known:
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root: Path):
    """``(edges, external)``: pack module -> {pack modules it imports}, and -> {(line, external top name)}."""
    known = modules(root)
    edges, external = {}, {}
    for name, path in known.items():
        edges[name], external[name] = set(), set()
        for line, kind, target in imports(name, path, known):
            if kind == "pack":
                if target != name:
                    edges[name].add(target)
            else:
                external[name].add((line, target))
    return edges, external


def find_cycle(edges: dict):
    """One import loop as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _label(name: str) -> str:
    return name or "__init__ (the pack's root)"


@pytest.fixture(scope="module")
def graph():
    edges, external = import_graph(ROOT)
    # the reader works: it sees the imports we know are there (relative, from-package, absolute, in functions)
    assert "nodes.comfy" in edges["headless.execution"] and "nodes" in edges["headless.execution"]
    assert "cosmos3.pipeline" in edges["nodes.cosmos3"]
    assert "headless" in edges["__main__"]
    assert any(top == "folder_paths" for _, top in external[BRIDGE])
    return edges, external


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layers_import_only_what_lies_below_them(graph, layer):
    edges, _ = graph
    wrong = sorted(f"{m} imports {_label(t)}" for m, targets in edges.items() if m.split(".")[0] == layer
                   for t in targets if t.split(".")[0] not in LAYERS[layer])
    assert not wrong, f"{layer}/ may import only {sorted(LAYERS[layer])}:\n" + "\n".join(wrong)


def test_only_the_bridge_imports_comfyui(graph):
    _, external = graph
    users = {m: sorted(f"{top} (line {line})" for line, top in uses if top in COMFYUI)
             for m, uses in external.items()}
    users = {m: uses for m, uses in users.items() if uses}
    assert list(users) == [BRIDGE], f"ComfyUI is imported outside {BRIDGE}: {users}"


def test_the_bridge_imports_nothing_of_the_pack(graph):
    """nodes/comfy.py knows no model and no runner: those register themselves with it."""
    edges, _ = graph
    assert edges[BRIDGE] == set()


def test_no_import_cycles(graph):
    edges, _ = graph
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(map(_label, cycle))


def test_the_checker_sees_a_cycle_through_a_function_level_import(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from . import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from .a import g\n    return g\n")
    (tmp_path / "pkg" / "c.py").write_text("from comfyui_cosmos3_ltx2.pkg import a\nimport folder_paths\n")
    edges, external = import_graph(tmp_path)
    assert edges["pkg.a"] == {"pkg.b"} and edges["pkg.b"] == {"pkg.a"} and edges["pkg.c"] == {"pkg.a"}
    assert external["pkg.c"] == {(2, "folder_paths")}
    assert find_cycle(edges) == ["pkg.a", "pkg.b", "pkg.a"]


# --------------------------------------------------------------------------------------------------
# The test suite's own spine: tests grouped by part, shared code only in tests/helpers/

TESTS = ROOT / "tests"
PARTS = {"core", "cosmos3", "ltx2", "nodes", "headless"}


def _top_imports(path: Path) -> set:
    """Top-level module names a file imports (any depth in the file, relative imports left out)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_tests_sit_in_their_part_and_import_no_other_test_module():
    test_files = sorted(TESTS.rglob("test_*.py"))
    names = [p.stem for p in test_files]
    assert len(names) == len(set(names)), "two test modules share a name"  # one flat import namespace
    test_modules = set(names) | {"conftest"}
    for path in test_files + sorted(TESTS.rglob("conftest.py")) + sorted((TESTS / "helpers").rglob("*.py")):
        where = path.relative_to(TESTS).parts
        if path.name.startswith("test_"):
            # package-wide checks (import rules, packaging) at the root, everything else in its part
            assert len(where) == 1 or where[0] in PARTS, f"{path}: not in a part folder {sorted(PARTS)}"
        bad = _top_imports(path) & test_modules
        assert not bad, f"{path.relative_to(ROOT)} imports test module(s) {sorted(bad)}: move shared code to helpers/"
