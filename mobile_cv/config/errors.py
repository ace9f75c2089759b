"""The config's errors (a module of their own so the range table can raise them too)."""

from ..errors import UserError


class ConfigError(UserError, ValueError):
    """A config file, override or value is invalid; the message says how to fix it."""


class UnknownConfigKeyError(ConfigError, KeyError):
    """A config key that does not exist (also a ``KeyError``, as yacs raises)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
