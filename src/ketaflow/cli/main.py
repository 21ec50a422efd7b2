"""The ``ketaflow`` command line: a thin layer over the library.

Data goes to stdout, messages to stderr. A user mistake is one readable line on stderr and exit
code 2; a traceback is shown only with ``--debug``. Exit codes come from :data:`EXIT_CODES`.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Final

import click
import typer
import typer.exceptions

from ketaflow.errors import (
    AuthError,
    InputError,
    KetaflowError,
    NotFoundError,
    SafetyError,
    StateError,
    StorageError,
)

#: Exit codes, in one place. 2 is every kind of bad input, as for Unix usage errors.
EXIT_CODES: Final[dict[str, int]] = {
    "ok": 0,
    "failure": 1,
    "bad_input": 2,
    "unsafe": 3,
    "not_found": 4,
    "not_allowed": 5,
    "storage": 6,
    "interrupted": 130,
}

# Typer >= 0.2x vendors its own copy of Click, older versions use Click itself: accept both so
# that a usage mistake is always one line and exit 2, never a traceback.
_EXIT_TYPES: tuple[type[BaseException], ...] = (typer.Exit, click.exceptions.Exit)
_ABORT_TYPES: tuple[type[BaseException], ...] = (typer.Abort, click.exceptions.Abort)
_CLI_ERROR_TYPES: tuple[type[BaseException], ...] = (
    typer.exceptions.TyperException,
    click.ClickException,
)

app = typer.Typer(
    name="ketaflow",
    help="Clinical decision support for supervised ketamine infusions. "
    "Not for unsupervised or recreational use.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks for errors.")
    ] = False,
) -> None:
    if debug:
        os.environ["KETAFLOW_DEBUG"] = "1"


def _register() -> None:
    # Subcommand modules attach themselves to ``app``; imported here, not at module import, so
    # that ``import ketaflow.cli.main`` stays cheap and free of side effects.
    from ketaflow.cli import commands

    commands.register(app)


def _exit_code_for(exc: KetaflowError) -> int:
    if isinstance(exc, InputError):
        return EXIT_CODES["bad_input"]
    if isinstance(exc, SafetyError | StateError):
        return EXIT_CODES["unsafe"]
    if isinstance(exc, NotFoundError):
        return EXIT_CODES["not_found"]
    if isinstance(exc, AuthError):
        return EXIT_CODES["not_allowed"]
    if isinstance(exc, StorageError):
        return EXIT_CODES["storage"]
    return EXIT_CODES["failure"]


def _one_line(message: str) -> str:
    return " ".join(message.split())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code (never raises for user mistakes)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("KETAFLOW_DEBUG") == "1"
    _register()
    try:
        result = app(args=args, prog_name="ketaflow", standalone_mode=False)
    except _EXIT_TYPES as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except _ABORT_TYPES:
        print("ketaflow: interrupted", file=sys.stderr)
        return EXIT_CODES["interrupted"]
    except _CLI_ERROR_TYPES as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                print(ctx.get_help())
            return EXIT_CODES["ok"]
        if debug:
            raise
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"ketaflow: error: {_one_line(message)}", file=sys.stderr)
        is_usage = any(c.__name__ == "UsageError" for c in type(exc).__mro__)
        return EXIT_CODES["bad_input"] if is_usage else EXIT_CODES["failure"]
    except KetaflowError as exc:
        if debug:
            raise
        print(f"ketaflow: error: {_one_line(exc.message)}", file=sys.stderr)
        return _exit_code_for(exc)
    except KeyboardInterrupt:
        print("ketaflow: interrupted", file=sys.stderr)
        return EXIT_CODES["interrupted"]
    return int(result) if isinstance(result, int) else EXIT_CODES["ok"]


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
