"""`serving` is the torch-free runtime: prove it imports with torch blocked."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BLOCK_TORCH = """
import importlib.abc, sys
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, BlockTorch())
import importlib, pkgutil, serving
names = sorted(m.name for m in pkgutil.iter_modules(serving.__path__))
for name in names:
    importlib.import_module("serving." + name)
assert "torch" not in sys.modules
print(len(names))
"""


def test_every_serving_module_imports_without_torch():
    proc = subprocess.run([sys.executable, "-c", BLOCK_TORCH], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.strip()) >= 7


def test_blocker_really_blocks():
    code = BLOCK_TORCH.split("import importlib, pkgutil")[0] + "import torch\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "torch is blocked" in proc.stderr
