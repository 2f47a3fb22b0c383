"""The base of every error adgen reports to a user as one line (no traceback)."""


class AdgenError(Exception):
    """An expected failure: bad input, a missing artifact, an unreachable server."""


class ExportError(AdgenError):
    """An export (ONNX, text encoder, TensorRT) that cannot proceed; one line for the user."""
