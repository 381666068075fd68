"""The typer application and the helpers every verb shares (errors -> exit codes, verbosity)."""
from __future__ import annotations

import functools
import inspect
import logging
import sys

import typer

from ..errors import AtlasregError, InputError, NoPathError, OutputExistsError, SpaceMismatchError

app = typer.Typer(
    name="atlasreg",
    help="Multi-scale brain atlas registration: EM, light-sheet and the atlas in one coordinate frame.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_INPUT = 2        # bad input: file, argument, value
EXIT_SPACES = 3       # spaces do not chain / no path
EXIT_EXISTS = 4       # output exists, --force not given
EXIT_FAILED = 1       # anything else atlasreg reports


def _one_line(exc: BaseException) -> str:
    # Library messages quoted inside an error can span lines; scripts read one line.
    return " ".join(str(exc).split())


def run_cli(func):
    """Decorator: turn atlasreg errors into one readable line on stderr and a documented exit code.

    It also gives every verb ``--quiet/-q`` and ``--verbose/-v`` (the same as before the verb), unless the verb
    declares its own (``register --quiet`` also hides its progress display).
    """
    sig = inspect.signature(func)
    own = {n for n in ("quiet", "verbose") if n in sig.parameters}
    added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, f"--{n}", f"-{n[0]}", help="Only warnings and errors." if n == "quiet" else "Debug output."))
        for n in ("quiet", "verbose") if n not in own]

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        flags = {n: bool(kwargs.get(n) if n in own else kwargs.pop(n, False)) for n in ("quiet", "verbose")}
        if flags["quiet"] or flags["verbose"]:
            set_verbosity(**flags)
        try:
            return func(*args, **kwargs)
        except OutputExistsError as exc:
            typer.echo(f"error: {_one_line(exc)} (use --force to overwrite)", err=True)
            raise typer.Exit(EXIT_EXISTS)
        except (NoPathError, SpaceMismatchError) as exc:
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(EXIT_SPACES)
        except InputError as exc:
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(EXIT_INPUT)
        except AtlasregError as exc:
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(EXIT_FAILED)
        except OSError as exc:  # disk full, permission denied, a path that cannot be made: one line, no traceback
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(EXIT_FAILED)

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *added])
    return wrapper


def set_verbosity(quiet: bool = False, verbose: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)


def main() -> None:  # console entry point
    app()


@app.callback()
def _root(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug output."),
) -> None:
    """Multi-scale brain atlas registration: EM, light-sheet and the atlas in one coordinate frame."""
    set_verbosity(quiet, verbose)
