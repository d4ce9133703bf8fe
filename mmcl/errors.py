"""Errors meant for users: the CLI prints their message on one line, without a traceback."""


class ConfigError(ValueError):
    """A user error in a recipe, an override or the data it points at; the message says what and how to fix it."""


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. the loss stayed non-finite); the message says why."""


class UnsafeFileError(ConfigError):
    """A weights or checkpoint file that mmcl refuses to load (a pickle with code in it, a file that is
    not what its name says, a model that needs remote code); the message names the file and why."""
