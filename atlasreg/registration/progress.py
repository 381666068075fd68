"""Stage progress of a registration and its save, for a callback and for ``logging`` alike.

Each stage is reported as ``(stage, status)`` with status ``"start"``, ``"done"`` or ``"skip"`` (resumed). Stages
that iterate (the ANTs backend's rigid, affine and SyN) also report ``"level L/N, iteration i/n"`` as they go and
``"level L/N done after i/n iterations"`` when a level ends (it may stop early by convergence). The same events are
logged on the ``atlasreg.registration`` logger at INFO, one line per stage and per finished level (iterations at
DEBUG), so a Python user (``logging.basicConfig(level=logging.INFO)``) and a log file see what a terminal shows.

Example
-------
>>> note = with_logging(None)
>>> note("rigid", "start"); note("rigid", "done")     # logs "registration: rigid done in 0.0 s"
"""
from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("atlasreg.registration")

Progress = Callable[[str, str], None]


def with_logging(progress: Progress | None, logger: logging.Logger = log) -> Progress:
    """A progress callback that logs every stage (start at DEBUG, end with its time at INFO) and then calls
    ``progress`` (if given)."""
    started: dict[str, float] = {}

    def note(stage: str, status: str) -> None:
        if status == "start":
            started[stage] = time.perf_counter()
            logger.debug("registration: %s ...", stage)
        elif status == "skip":
            logger.info("registration: %s resumed (done in an earlier run)", stage)
        elif status.startswith("level "):
            if " done after " in status:
                logger.info("registration: %s %s (%.1f s into the stage)", stage, status,
                            time.perf_counter() - started.get(stage, time.perf_counter()))
            else:
                logger.debug("registration: %s %s", stage, status)
        else:
            t = time.perf_counter() - started.pop(stage, time.perf_counter())
            logger.info("registration: %s done in %.1f s", stage, t)
        if progress is not None:
            progress(stage, status)

    return note
