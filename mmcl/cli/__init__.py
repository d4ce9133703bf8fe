"""The ``mmcl`` command. Hyperparameters live in recipes; the command line only points at them
and overrides single keys (``section.key=value``). One module per subcommand, each with
``add_parser(subparsers)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from ..errors import ConfigError, TrainingError
from . import data, eval, export, report, train, wise_ft

EPILOG = textwrap.dedent("""\
    examples:
      mmcl train recipes/quickstart.yaml
      mmcl train recipes/quickstart.yaml train.lr=5e-4 train.steps=200
      mmcl train recipes/quickstart.yaml train.resume=latest
      mmcl eval runs/quickstart
      mmcl eval zeroshot --model runs/quickstart --dataset data/shapes/test.csv
      mmcl data make-synthetic data/shapes --n-train 20000
      mmcl report runs/quickstart
      mmcl wise-ft runs/finetune --alphas 0,0.5,1
    """)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmcl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
        description="Multi-modal contrastive learning: train CLIP-like models from YAML recipes and evaluate them.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument(
        "--debug",
        action="store_true",
        help="show the Python traceback of an error (also: MMCL_DEBUG=1); errors are one line otherwise",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in (train, eval, report, data, export, wise_ft):
        command.add_parser(sub)
    return p


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # read by transformers when it is imported: no import here, so a bad recipe fails fast
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


EVAL_COMMANDS = eval.COMMANDS  # from the evaluation-task registry


def normalise_argv(argv: list[str]) -> list[str]:
    """`mmcl eval RUN_DIR` is short for `mmcl eval run RUN_DIR`; `mmcl train R --smoke K=V` works."""
    argv = list(argv)
    if argv[:1] == ["train"] and "--smoke" in argv:  # a flag anywhere among the overrides
        argv.remove("--smoke")
        argv.insert(1, "--smoke")
    if len(argv) >= 2 and argv[0] == "eval" and argv[1] not in EVAL_COMMANDS and not argv[1].startswith("-"):
        argv.insert(1, "run")
    return argv


def _debug_wanted(argv: list[str]) -> bool:
    """``--debug`` anywhere on the line, or MMCL_DEBUG=1: show tracebacks (for developers)."""
    return "--debug" in argv or os.environ.get("MMCL_DEBUG", "").lower() not in ("", "0", "false", "no")


def _os_error_line(e: OSError) -> str:
    """An OSError as one line: what failed, on which file, and the free space where it matters."""
    import errno
    import shutil

    where = e.filename if e.filename is not None else ""
    what = e.strerror or str(e)
    line = f"{what}: {where}" if where else what
    if e.errno in (errno.ENOSPC, errno.EDQUOT) and where:
        folder = Path(where).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            line += (
                f" ({shutil.disk_usage(folder).free / 2**20:.0f} MiB free in {folder}); free space or write elsewhere"
            )
        except OSError:
            pass
    return line


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_wanted(argv)
    argv = [a for a in argv if a != "--debug"]
    parser = _parser()
    args = parser.parse_args(normalise_argv(argv))
    if args.version:
        from .. import __version__

        print(f"mmcl {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    _quiet_libraries()

    try:
        return args.func(args)
    except (ConfigError, TrainingError) as e:
        if debug:
            raise
        print(f"mmcl: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file or disk the user pointed at: missing, unreadable, full, read-only
        if debug:
            raise
        print(f"mmcl: error: {_os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # mmcl.errors.Interrupted says what was saved and sets the exit code
        import signal

        # exiting: one more Ctrl-C ends the process at once, not with a traceback from code run at exit
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        # one write: the ranks of a torchrun job share stderr, and their lines must not interleave
        sys.stderr.write(f"mmcl: {e}\n" if str(e) else "mmcl: interrupted\n")
        return getattr(e, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
