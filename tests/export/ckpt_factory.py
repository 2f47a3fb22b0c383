"""make_checkpoint for the export test modules that import it by name: the one tiny-generator
factory, tests/conftest.py's make_generator (fixtures take it as `generator_factory`)."""
from __future__ import annotations

# pytest (--import-mode=importlib, rootdir at the checkout) registers the root conftest as
# tests.conftest before any test module here is imported, so this finds that same module.
from tests.conftest import make_generator as make_checkpoint

__all__ = ["make_checkpoint"]
