"""Errors meant for users: the CLI prints their message without a traceback."""


class ConfigError(ValueError):
    """A user error in a recipe, an override or the data it points at; the message says what and how to fix it."""
