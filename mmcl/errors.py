"""Errors meant for users: the CLI prints their message on one line, without a traceback."""


class ConfigError(ValueError):
    """A user error in a recipe, an override or the data it points at; the message says what and how to fix it."""


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. the loss stayed non-finite); the message says why."""


class UnsafeFileError(ConfigError):
    """A weights or checkpoint file that mmcl refuses to load (a pickle with code in it, a file that is
    not what its name says, a model that needs remote code); the message names the file and why."""


class OutputError(ConfigError):
    """The run folder (``train.output_dir``) cannot be written: a full disk, a read-only file system,
    a path below a file. The message names the folder, its free space and what to do. A
    :class:`ConfigError`, so that everything that reports recipe errors in one line reports it too:
    the fix is the same (another ``train.output_dir``, or room on the disk)."""


class Interrupted(KeyboardInterrupt):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM; the message says what was saved and how to
    continue. A :class:`KeyboardInterrupt`, so that ``except Exception`` does not swallow it.

    Attributes:
        signum: the signal that stopped the run.
        exit_code: what a command should exit with (128 + the signal number, as a shell reports it).
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
