"""One run of ``atlasreg demo`` (phantom) shared by test_demo and test_browser: it is the slowest
thing these tests do, so it runs once per session, through the real command line entry point."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_RESULT: dict = {}


def demo_run() -> dict:
    """``{"out": folder, "exit_code": int, "output": text}`` of ``atlasreg demo -o <tmp>/demo``."""
    if not _RESULT:
        from typer.testing import CliRunner

        from atlasreg.cli import app

        root = Path(tempfile.mkdtemp(prefix="atlasreg-demo-test-"))
        atexit.register(shutil.rmtree, root, True)
        out = root / "demo"
        res = CliRunner().invoke(app, ["demo", "-o", str(out)])
        _drop_closed_log_handlers()
        _RESULT.update(out=out, exit_code=res.exit_code, output=res.output, exception=res.exception)
    return _RESULT


def _drop_closed_log_handlers() -> None:
    """The CLI logs to the runner's captured stderr, which is closed once the run ends."""
    import logging

    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.StreamHandler) and getattr(h.stream, "closed", False):
            root.removeHandler(h)


def demo_output() -> Path:
    r = demo_run()
    if r["exit_code"] != 0:
        raise AssertionError(f"atlasreg demo failed (exit {r['exit_code']}):\n{r['output']}\n{r['exception']!r}")
    return r["out"]
