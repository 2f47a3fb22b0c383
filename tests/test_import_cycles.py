"""The import graph of the installed `adgen` package: no cycles between its modules, the
layer contracts of pyproject.toml kept, and few function-local imports.

The folders only become `adgen.*` through setuptools' package-dir, so the graph is read from
a mirror: each package of pyproject.toml copied from where Python's import system finds it
(the checkout folders under an editable install, site-packages under a wheel) into one
`adgen` tree. grimp (import-linter's graph builder) reads every import statement, including
the ones inside functions.

`make lint` runs this file. `python tests/test_import_cycles.py` prints the cycles and the
function-local imports without pytest.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import re
import textwrap
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Function-local imports are kept only for optional dependencies that are heavy or that
# only some commands need (torch, onnx, onnxruntime, TensorRT, openai, CairoSVG, the Twemoji
# sources) and for the modules that import torch (the CLI, the repository builder and the
# text encoder export load them when they use them); everything else goes to the top.
MAX_LOCAL_IMPORTS = 60


def installed_packages() -> list[str]:
    """The packages the distribution installs (pyproject.toml's [tool.setuptools] packages)."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # 3.10: the one list this needs, read as written
        block = re.search(r"^\[tool\.setuptools\]\s*\npackages\s*=\s*\[(.*?)\]", text, re.M | re.S)
        return re.findall(r'"([^"]+)"', block.group(1))
    return list(tomllib.loads(text)["tool"]["setuptools"]["packages"])


def mirror_package(dest: Path, packages: list[str] | None = None) -> Path:
    """Copy the .py files of every installed adgen package, from where the import system
    finds it, into dest/adgen/... (sub-folders by dotted name); returns dest."""
    for name in packages or installed_packages():
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"{name} is not installed (make venv)")
        src = Path(list(spec.submodule_search_locations)[0])
        target = dest.joinpath(*name.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for py in src.glob("*.py"):
            shutil.copy2(py, target / py.name)
    return dest


def _graph(site: Path, package: str = "adgen") -> grimp.ImportGraph:
    """grimp's graph of `package` as found under site, built in a fresh interpreter with
    site first on the path (ahead of the editable install's finder)."""
    code = textwrap.dedent(f"""
        import json, grimp
        g = grimp.build_graph({package!r}, cache_dir=None)
        assert g.modules, "nothing found"
        print(json.dumps([[m, sorted(g.find_modules_directly_imported_by(m))]
                          for m in sorted(g.modules)]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=site, timeout=120, env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    graph = grimp.ImportGraph()
    for module, imported in json.loads(proc.stdout):
        graph.add_module(module)
        for other in imported:
            graph.add_import(importer=module, imported=other)
    return graph


def find_cycles(graph: grimp.ImportGraph, package: str = "adgen") -> list[tuple[str, ...]]:
    """One shortest cycle per strongly connected group of `package`'s modules (Tarjan),
    as (a, b, ..., a); empty when the graph has none."""
    nodes = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in nodes)
             for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth <= number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges[v]:
                groups.append(sorted(group))

    for v in nodes:
        if v not in index:
            visit(v)
    cycles = []
    for group in sorted(groups):
        start, members = group[0], set(group)
        # breadth-first from start back to start, inside the group: the shortest cycle
        paths = {start: (start,)}
        frontier, cycle = [start], None
        while frontier and cycle is None:
            nxt = []
            for v in frontier:
                for w in edges[v]:
                    if w == start:
                        cycle = paths[v] + (start,)
                        break
                    if w in members and w not in paths:
                        paths[w] = paths[v] + (w,)
                        nxt.append(w)
                if cycle:
                    break
            frontier = nxt
        cycles.append(cycle)
    return cycles


def local_imports(root: Path) -> list[str]:
    """`path:line module` for every import statement inside a function under root."""
    found = []
    for py in sorted(root.rglob("*.py")):
        tree = ast.parse(py.read_text(), filename=str(py))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for body_node in func.body:
                for node in ast.walk(body_node):
                    # nested functions are walked on their own
                    if isinstance(node, ast.Import):
                        names = ", ".join(a.name for a in node.names)
                    elif isinstance(node, ast.ImportFrom):
                        names = "." * node.level + (node.module or "")
                    else:
                        continue
                    if _innermost_function(func, node):
                        found.append(f"{py.relative_to(root)}:{node.lineno} {names}")
    return found


def _innermost_function(func: ast.AST, node: ast.AST) -> bool:
    """True when no function nested inside func also contains node (count each once)."""
    for inner in ast.walk(func):
        if inner is not func and isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if any(n is node for n in ast.walk(inner)):
                return False
    return True


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return mirror_package(tmp_path_factory.mktemp("site"))


def test_no_import_cycles_between_adgen_modules(site):
    cycles = find_cycles(_graph(site))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_a_planted_cycle_is_found(tmp_path):
    pkg = tmp_path / "planted"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "c.py"):
        (pkg / name).write_text("")
    (pkg / "a.py").write_text("from planted.sub import b\n")
    # the way back is hidden in a function, as lazy imports hide cycles
    (pkg / "sub" / "b.py").write_text("def f():\n    from planted import a\n    return a\n")
    assert find_cycles(_graph(tmp_path, "planted"), "planted") == \
        [("planted.a", "planted.sub.b", "planted.a")]


def test_function_local_imports_stay_few(site):
    found = local_imports(site / "adgen")
    assert len(found) <= MAX_LOCAL_IMPORTS, \
        f"{len(found)} function-local imports (at most {MAX_LOCAL_IMPORTS}):\n" + "\n".join(found)


def test_local_import_count_sees_nested_functions_once(tmp_path):
    (tmp_path / "m.py").write_text(textwrap.dedent("""
        import os
        def f():
            import json
            def g():
                from . import x
            class C:
                def h(self):
                    import re
    """))
    assert local_imports(tmp_path) == ["m.py:4 json", "m.py:6 .", "m.py:9 re"]


def _lint_imports(site: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, cwd=site, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(site)})


def test_import_layers_hold(site):
    """pyproject.toml's import-linter contracts, on the package as installed."""
    proc = _lint_imports(site)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_lint_imports_catches_a_layer_violation(site, tmp_path):
    """The contract can fail: a runtime module importing the job layer breaks it."""
    bad_site = tmp_path / "site"
    shutil.copytree(site / "adgen", bad_site / "adgen")
    bad = bad_site / "adgen" / "serving" / "runtime" / "text.py"
    bad.write_text(bad.read_text() + "\nfrom adgen.serving.jobs import job  # noqa\n")
    proc = _lint_imports(bad_site)
    assert proc.returncode != 0
    assert "adgen.serving.runtime.text -> adgen.serving.jobs.job" in proc.stdout


if __name__ == "__main__":  # the figures, without pytest
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        where = mirror_package(Path(tmp))
        for cycle in find_cycles(_graph(where)):
            print("cycle:", " -> ".join(cycle))
        found = local_imports(where / "adgen")
        print("\n".join(found))
        print(f"{len(found)} function-local imports (at most {MAX_LOCAL_IMPORTS})")
