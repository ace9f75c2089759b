"""The export package's error: a model (or one of its operators) that cannot be exported."""

from ..errors import UserError

EXECUTORCH_PACKAGES = "pip install executorch==1.5.1 'torchao==0.18.*'  (or: pip install -e '.[test]')"


class ExportError(UserError, RuntimeError):
    """A model (or one of its operators) cannot be exported; the message names the operator and module."""


class ExportSettingsError(UserError, ValueError):
    """An export asked for something that cannot be done (format, opset, calibration); the message says what to pass."""
