"""What `adgen repo build` copies into every Triton python model: a closed, minimal runtime."""
from __future__ import annotations

import ast

from adgen.export.repo_files import runtime_files


def _adgen_imports(source: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("adgen"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("adgen")}
    return out


def test_the_copied_runtime_imports_only_what_is_copied():
    files = runtime_files()
    modules = {rel[:-3].replace("/", ".").removesuffix(".__init__") for rel in files}
    for rel, src in files.items():
        missing = _adgen_imports(src.read_text(encoding="utf-8")) - modules
        assert not missing, f"{rel} imports {sorted(missing)}, which Triton models do not get"


def test_nothing_above_the_runtime_layer_is_copied():
    names = set(runtime_files())
    assert not any(n.startswith(("adgen/serving/jobs", "adgen/export", "adgen/training",
                                 "adgen/cli", "adgen/prompting")) for n in names)
    assert "adgen/api.py" not in names and "adgen/__main__.py" not in names
