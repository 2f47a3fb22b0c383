"""adgen: text-to-image ad assets, from briefs to PNGs through Triton.

The small core lives here (errors, the tensor contract, captions and palette, latents,
paths, the one atomic writer, the one record reader); the stages are subpackages: adgen.serving.runtime (what runs inside Triton),
adgen.serving.jobs and adgen.prompting (bulk jobs, prompt expansion), adgen.training,
adgen.export, and adgen.cli on top. docs/design.md lists the layers; pyproject.toml's
import-linter contract checks them. Importing this package imports nothing else, because
`adgen repo build` copies the core and the runtime into every Triton python model.
"""
import importlib  # already loaded by the interpreter: costs nothing

__version__ = "0.1.0"

# The Python API (adgen/api.py), loaded on first use so `import adgen` stays this light.
_API = ("Client", "GeneratedImage", "Prompt", "generate", "expand")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        # By name: every module imports this package first, so a static import here would
        # read, to the layers contract, as each layer depending on the API above it.
        return getattr(importlib.import_module("adgen.api"), name)
    raise AttributeError(f"module 'adgen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
