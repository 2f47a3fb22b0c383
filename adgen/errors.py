"""The base of every error adgen reports to a user as one line (no traceback)."""


class AdgenError(Exception):
    """An expected failure: bad input, a missing artifact, an unreachable server."""


class ExportError(AdgenError):
    """An export (ONNX, text encoder, TensorRT) that cannot proceed; one line for the user."""


class APIError(AdgenError):
    """Arguments the Python API (adgen.Client, adgen.generate) cannot use: an unknown engine,
    style or size, a bad prompt or seed; one line for the caller."""
