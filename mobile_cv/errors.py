"""The one base class of every error a user's input can cause.

Arch defs, configs, data, checkpoints, budgets and the model zoo raise subclasses of
:class:`UserError` whose message names the offending thing and how to fix it; the tools
(``engine.run_main``) print that message on one line instead of a traceback. Anything
else is a bug and keeps its traceback. Each subclass also derives from the built-in
exception it specialises (``ValueError``, ``KeyError``, ...), so ``except ValueError``
keeps working.
"""


class UserError(Exception):
    """An error in what the user gave (a file, a config value, an arch def): the message says what to fix."""


class InvalidArgumentError(UserError, ValueError):
    """A value given to a Python API function that it does not accept (the message names it and what is valid)."""


class InvalidArgumentTypeError(UserError, TypeError):
    """An argument of the wrong kind given to a Python API function."""


class LaunchError(UserError, RuntimeError):
    """The process was started in a way that cannot work (e.g. a torchrun variable missing)."""
