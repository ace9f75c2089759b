"""The export package's error: a model (or one of its operators) that cannot be exported."""

from ..errors import UserError
from ..extras import install_hint

EXECUTORCH_PACKAGES = install_hint("executorch")


class ExportError(UserError, RuntimeError):
    """A model (or one of its operators) cannot be exported; the message names the operator and module."""


class ExportSettingsError(UserError, ValueError):
    """An export asked for something that cannot be done (format, opset, calibration); the message says what to pass."""
