"""Where the blocks run: dask's local threaded scheduler by default, or a dask.distributed cluster.

Every blockwise job in :mod:`atlasreg.distributed` builds a list of independent
dask tasks and hands them to :func:`run_tasks`; the same graph runs on the
local scheduler or on a cluster unchanged (no home-made scheduler).

``scheduler`` accepts:

- ``None`` or ``"threads"``: dask's local threaded scheduler (the default);
- ``"sync"``: one task at a time in this thread (debugging);
- ``"processes"``: dask's local multiprocessing scheduler;
- ``"tcp://HOST:PORT"`` (or any address a ``distributed.Client`` accepts): a
  running dask.distributed scheduler; the client is opened and closed here;
- a ``distributed.Client`` instance: used as is (left open).

Tasks return small summaries only; their bulk output goes straight to storage,
so the driver's memory stays bounded however many blocks there are.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import dask

from ..errors import InputError

_LOCAL = {"threads": "threads", "threading": "threads", "sync": "sync", "synchronous": "sync",
          "single-threaded": "sync", "processes": "processes", "multiprocessing": "processes"}


@dataclass
class Engine:
    """A resolved scheduler: ``kind`` is ``"threads"``, ``"sync"``, ``"processes"`` or ``"distributed"``."""

    kind: str
    client: Any = None
    num_workers: int | None = None

    @property
    def shared_memory(self) -> bool:
        """True when tasks run in this process (inputs need not be shipped or re-opened)."""
        return self.kind in ("threads", "sync")


def _is_client(obj) -> bool:
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    return isinstance(obj, Client)


@contextlib.contextmanager
def open_engine(scheduler=None, num_workers: int | None = None) -> Iterator[Engine]:
    """Resolve ``scheduler`` into an :class:`Engine` for the duration of a ``with`` block.

    Examples
    --------
    >>> with open_engine(None) as eng:
    ...     eng.kind
    'threads'
    """
    if scheduler is None:
        yield Engine("threads", num_workers=num_workers)
        return
    if _is_client(scheduler):
        yield Engine("distributed", client=scheduler)
        return
    if isinstance(scheduler, str):
        key = scheduler.strip().lower()
        if key in _LOCAL:
            yield Engine(_LOCAL[key], num_workers=num_workers)
            return
        if "://" in key or ":" in key:
            from distributed import Client

            try:
                client = Client(scheduler.strip(), timeout="20s", set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise InputError(f"cannot reach the dask scheduler at {scheduler!r}: {exc}. Start one with "
                                 "`dask scheduler` (and `dask worker ADDRESS`) or omit --scheduler to run "
                                 "locally", field="scheduler") from None
            try:
                yield Engine("distributed", client=client)
            finally:
                client.close()
            return
    raise InputError(f"scheduler must be None, 'threads', 'sync', 'processes', a 'tcp://HOST:PORT' address "
                     f"or a distributed.Client; got {scheduler!r}", field="scheduler")


class _Progress:
    """A rich progress bar on stderr counting finished tasks (no-op when disabled)."""

    def __init__(self, total: int, description: str, enabled: bool | None):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.enabled = bool(enabled) and total > 0
        self._bar = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=Console(file=sys.stderr), transient=False)
            self._task = self._bar.add_task(description, total=total)

    def __enter__(self):
        if self._bar is not None:
            self._bar.start()
        return self

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()


def run_tasks(tasks: list, engine: Engine, progress: bool | None = None, description: str = "blocks",
              on_result: Callable[[Any], None] | None = None) -> int:
    """Compute independent dask ``Delayed`` tasks on ``engine``, with a progress bar; returns how many ran.

    ``on_result`` receives each task's (small) return value as it finishes
    (in completion order on a cluster, graph order locally).
    Exceptions raised in a task propagate here unchanged.
    """
    if not tasks:
        return 0
    with _Progress(len(tasks), description, progress) as bar:
        if engine.kind == "distributed":
            from distributed import as_completed

            futures = engine.client.compute(tasks)
            try:
                for fut in as_completed(futures):
                    res = fut.result()  # re-raises the task's exception
                    if on_result is not None:
                        on_result(res)
                    bar.advance()
                    fut.release()
            except BaseException:
                engine.client.cancel(futures)
                raise
            return len(tasks)

        from dask.callbacks import Callback

        keys = {t.key for t in tasks}

        class _Count(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if key in keys:
                    bar.advance()
                    if on_result is not None:
                        on_result(result)

        kwargs = {"scheduler": engine.kind}
        if engine.num_workers and engine.kind in ("threads", "processes"):
            kwargs["num_workers"] = engine.num_workers
        with _Count():
            # optimize_graph=False keeps task keys as built, so the callback can count them.
            dask.compute(*tasks, optimize_graph=False, **kwargs)
        return len(tasks)


def transform_token(t) -> str:
    """A content fingerprint of a transform (stable across processes; ignores cached plans)."""
    from dask.base import tokenize

    from ..transforms.base import Affine, Sequence
    from ..transforms.field import DisplacementField, InverseDisplacementField

    if t is None:
        return "none"
    if isinstance(t, Sequence):
        return tokenize("seq", [transform_token(s) for s in t.steps])
    if isinstance(t, Affine):
        return tokenize("affine", t.matrix, t.src, t.dst)
    if isinstance(t, DisplacementField):
        return tokenize("field", t.displacement, t.index_to_physical, t.outside, t.src, t.dst)
    if isinstance(t, InverseDisplacementField):
        return tokenize("invfield", transform_token(t.forward), t.tol, t.max_iter, t.on_fail)
    tok = getattr(t, "token", None)
    if callable(tok):
        return tokenize(type(t).__name__, tok())
    return tokenize(t)


def check_shippable(obj, what: str) -> None:
    """Raise InputError now if ``obj`` cannot be sent to cluster workers (rather than mid-job)."""
    import cloudpickle

    try:
        cloudpickle.dumps(obj)
    except Exception as exc:  # noqa: BLE001 - pickling fails with many exception types
        raise InputError(f"the {what} ({type(obj).__name__}) cannot be sent to dask workers: {exc}. Use the local "
                         "scheduler, or give an object that pickles (e.g. a function of the points that loads "
                         "what it needs)", field=what) from None
