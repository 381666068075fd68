"""The typer application and the helpers every verb shares (errors -> exit codes, verbosity)."""
from __future__ import annotations

import functools
import inspect
import logging
import re
import sys
from typing import Optional

import typer
import typer.core

from ..errors import AtlasregError, InputError, NoPathError, OutputExistsError, SpaceMismatchError


# -- option types every verb shares ----------------------------------------------------------------------------
_NUMBER = re.compile(r"^[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


VOXEL_SIZE_METAVAR = "N | Z Y X"
VOXEL_SIZE_FLAGS: set[str] = set()  # every option made by voxel_size_option (normalize_args joins its values)


def parse_voxel_size(value):
    """A voxel size as written on the command line: one number, or three per stored axis (``50 40 40``,
    ``50,40,40`` or ``50x40x40``) -> a float or a tuple of three floats. Anything else is a usage error.

    Example
    -------
    >>> parse_voxel_size("50,40,40"), parse_voxel_size("25")
    ((50.0, 40.0, 40.0), 25.0)
    """
    if value is None or isinstance(value, (float, tuple)):
        return value
    parts = [t for t in re.split(r"[,x\s]+", str(value).strip()) if t]
    try:
        vals = [float(t) for t in parts]
    except ValueError:
        vals = []
    if len(vals) not in (1, 3) or not all(0 < v < float("inf") for v in vals):
        raise typer.BadParameter(f"{value!r}: give one positive size or three, one per stored axis (e.g. 50 40 40 "
                                 "or 50,40,40)")
    return vals[0] if len(vals) == 1 else tuple(vals)


def voxel_size_option(help: str, flag: str = "--voxel-size"):
    """The one ``--voxel-size``-style option: ``50 40 40`` and ``50,40,40`` both work; default None.

    The value reaching the verb is a float (one size for every axis), a tuple of three floats, or None.

    Example
    -------
    >>> def warp(voxel_size: Optional[str] = voxel_size_option("Voxel size (µm)")): ...  # doctest: +SKIP
    """
    VOXEL_SIZE_FLAGS.add(flag)
    return typer.Option(None, flag, parser=parse_voxel_size, metavar=VOXEL_SIZE_METAVAR, help=help)


def output_option(help: str, default=...):
    """``-o/--output`` (``--out`` is accepted as a hidden alias), required unless a default is given."""
    return typer.Option(default, "-o", "--output", help=help)


def voxel_list(value) -> Optional[list]:
    """A :class:`VoxelSize` value as the list the library takes (None stays None)."""
    if value is None:
        return None
    return [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]


def _leaf(group, args: list[str]):
    cmd = group
    for tok in args:
        if tok == "--":
            break
        if tok.startswith("-"):
            continue
        if tok in getattr(cmd, "commands", {}):
            cmd = cmd.commands[tok]
            continue
        break
    return None if hasattr(cmd, "commands") else cmd


def normalize_args(group, args: list[str]) -> list[str]:
    """One spelling for the options every verb shares, before click parses them.

    ``--voxel-size 50 40 40`` becomes ``--voxel-size 50,40,40`` (any option made by :func:`voxel_size_option`), and
    ``--out`` becomes ``--output`` for verbs that have ``--output``.
    """
    leaf = _leaf(group, args)
    if leaf is None:
        return list(args)
    opts = {o: p for p in leaf.params for o in getattr(p, "opts", ())}
    out: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            out.extend(args[i:])
            break
        if "--out" not in opts and "--output" in opts and (tok == "--out" or tok.startswith("--out=")):
            tok = "--output" + tok[len("--out"):]
        out.append(tok)
        i += 1
        if tok in VOXEL_SIZE_FLAGS and tok in opts:
            nums = []
            while i < len(args) and len(nums) < 3 and _NUMBER.match(args[i]):
                nums.append(args[i])
                i += 1
            if nums:
                out.append(",".join(nums))
    return out


def _tidy_help(cmd) -> None:
    """Flags take no value: no ``<bool>`` placeholder in --help (typer shows one otherwise)."""
    for p in cmd.params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
    own = cmd.get_help_option

    def get_help_option(ctx, _own=own):
        opt = _own(ctx)
        if opt is not None and opt.metavar is None:
            opt.metavar = ""
        return opt

    cmd.get_help_option = get_help_option
    for sub in getattr(cmd, "commands", {}).values():
        _tidy_help(sub)


class _RootGroup(typer.core.TyperGroup):
    """The root command: normalises shared option spellings and tidies every verb's help."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        _tidy_help(self)

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, normalize_args(self, list(args)))


app = typer.Typer(
    cls=_RootGroup,
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


# Python argument names whose command-line option has another name.
_OPTION_OF = {"orientation_search": "--orientation-check", "src_columns": "--columns", "columns": "--columns",
              "overwrite": "--force"}
_ARG = re.compile(r"\b([a-z][a-z0-9_]*)=((?:'[^']*'|\"[^\"]*\")(?:/(?:'[^']*'|\"[^\"]*\"))*|\([^)]*\)|True|False|"
                  r"None|\.\.\.|…|[0-9][0-9.]*)?")


def cli_message(text: str, options: dict[str, str]) -> str:
    """A library message as the command line says it: ``pass voxel_size=(a, b, c)`` -> ``use --voxel-size A B C``.

    ``options`` maps the verb's Python argument names to its options. A Python argument the verb has no option
    for is named as such, never as an option that does not exist.

    Example
    -------
    >>> cli_message("no voxel size; pass voxel_size=(axis0, axis1, axis2)", {"voxel_size": "--voxel-size"})
    'no voxel size; use --voxel-size AXIS0 AXIS1 AXIS2'
    """
    def one(m: re.Match) -> str:
        name, value = m.group(1), m.group(2) or ""
        opt = options.get(name) or _OPTION_OF.get(name)
        if opt is None or (opt not in options.values() and name not in options):
            return f"the Python argument '{name}' (no option for it here)"
        if value.startswith("("):
            shown = " ".join(v.strip().upper() for v in value[1:-1].split(",") if v.strip())
        elif value[:1] in "'\"":
            shown = "/".join(v.strip("'\"") for v in value.split("/"))
        else:
            shown = ""
        return f"{opt} {shown}".rstrip()

    out = _ARG.sub(one, text)
    out = re.sub(r"\bpass (--|the Python)", lambda m: ("use " if m.group(1) == "--" else "") + m.group(1), out)
    out = re.sub(r"(--[a-z-]+) / \1\b", r"\1", out)
    return out


def _options_of(sig: inspect.Signature) -> dict[str, str]:
    opts = {}
    for name, prm in sig.parameters.items():
        decls = getattr(prm.default, "param_decls", None) or ()
        longs = [d for d in decls if d.startswith("--")]
        if longs:
            opts[name] = longs[0].split("/")[0]
    return opts


_STATE = {"quiet": False}


def say(message: str, err: bool = False) -> None:
    """Print a verb's status line (stdout, or stderr with ``err``), unless ``-q`` was given (before or after the
    verb)."""
    if not _STATE["quiet"]:
        typer.echo(message, err=err)


def is_quiet() -> bool:
    """Whether ``-q/--quiet`` was given: verbs then show no progress and no status lines."""
    return _STATE["quiet"]


def run_cli(func):
    """Decorator: turn atlasreg errors into one readable line on stderr and a documented exit code.

    It also gives every verb ``--quiet/-q`` and ``--verbose/-v`` (the same as before the verb), and says library
    messages in the verb's options (``pass voxel_size=`` -> ``use --voxel-size``).
    """
    sig = inspect.signature(func)
    own = {n for n in ("quiet", "verbose") if n in sig.parameters}
    added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, f"--{n}", f"-{n[0]}", help="Only warnings and errors." if n == "quiet" else "Debug output."))
        for n in ("quiet", "verbose") if n not in own]
    options = _options_of(sig)

    def fail(exc, code: int, suffix: str = ""):
        text = cli_message(_one_line(exc), options)
        if suffix and suffix.strip("() ").split(" ")[1] not in text:
            text += suffix
        typer.echo(f"error: {text}", err=True)
        raise typer.Exit(code)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        flags = {n: bool(kwargs.get(n) if n in own else kwargs.pop(n, False)) for n in ("quiet", "verbose")}
        if flags["quiet"] or flags["verbose"]:
            set_verbosity(**flags)
        try:
            return func(*args, **kwargs)
        except OutputExistsError as exc:
            fail(exc, EXIT_EXISTS, " (use --force to overwrite)")
        except (NoPathError, SpaceMismatchError) as exc:
            fail(exc, EXIT_SPACES)
        except InputError as exc:
            fail(exc, EXIT_INPUT)
        except AtlasregError as exc:
            fail(exc, EXIT_FAILED)
        except FileNotFoundError as exc:  # an input that is not there: bad input, named
            name = exc.filename if exc.filename is not None else _one_line(exc)
            typer.echo(f"error: {name}: no such file or folder", err=True)
            raise typer.Exit(EXIT_INPUT)
        except OSError as exc:  # disk full, permission denied, a path that cannot be made: one line, no traceback
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(EXIT_FAILED)

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *added])
    return wrapper


def set_verbosity(quiet: bool = False, verbose: bool = False) -> None:
    """Log level for the run: ``-q`` warnings and errors only (and no status lines), ``-v`` debug."""
    _STATE["quiet"] = bool(quiet)
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
