"""What serves images is torch-free: every module of adgen's core, adgen.serving and
adgen.prompting, and the CLI root, import with torch blocked. The layering as a whole is
import-linter's contract (tests/test_packaging.py runs it on the built package)."""
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
import importlib, pkgutil, adgen, adgen.serving, adgen.prompting
names = ["adgen.cli"] + [f"adgen.{m.name}" for m in pkgutil.iter_modules(adgen.__path__)
                         if not m.ispkg and m.name != "__main__"]
for pkg in (adgen.serving, adgen.prompting):
    names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    importlib.import_module(name)
assert "torch" not in sys.modules
print(len(names))
"""


def test_every_serving_module_imports_without_torch():
    proc = subprocess.run([sys.executable, "-c", BLOCK_TORCH], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.strip()) >= 25  # core + runtime + jobs + prompting modules


def test_blocker_really_blocks():
    code = BLOCK_TORCH.split("import importlib, pkgutil")[0] + "import torch\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "torch is blocked" in proc.stderr
