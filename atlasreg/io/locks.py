"""File locks: one process at a time may fill a cache entry or move an output into place.

Two atlasreg processes fetching the same dataset into one cache, or two runs
writing the same output folder, must not interleave: one finishes, the other
then sees the finished result (or refuses to overwrite it). :func:`locked`
holds an operating-system lock (``flock`` via the ``filelock`` package) on a
small lock file for the duration of a ``with`` block. The OS drops the lock
when its holder dies, so a killed process never leaves a stale lock behind.

Where the lock file lives:

- ``beside=True`` (shared caches): ``<folder>/.<name>.lock`` next to the
  guarded path, so processes on different machines sharing the folder over a
  network file system see the same lock.
- ``beside=False`` (outputs): a per-user folder of lock files
  (``ATLASREG_LOCK_DIR``, default ``<tmp>/atlasreg-locks-<user>``), named by a
  hash of the absolute path, so nothing extra appears next to a user's outputs.

Examples
--------
>>> import tempfile, pathlib
>>> entry = pathlib.Path(tempfile.mkdtemp()) / "atlas.tif"
>>> with locked(entry, beside=True) as lock_file:
...     _ = entry.write_bytes(b"data")
>>> lock_file.name
'.atlas.tif.lock'
"""
from __future__ import annotations

import getpass
import hashlib
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import AtlasregError

__all__ = ["locked", "lock_file_for", "LockTimeoutError"]

log = logging.getLogger(__name__)


class LockTimeoutError(AtlasregError, TimeoutError):
    """Another process held a lock longer than the caller was willing to wait."""


def _lock_dir() -> Path:
    env = os.environ.get("ATLASREG_LOCK_DIR")
    if env:
        return Path(env)
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"atlasreg-locks-{user}"


def lock_file_for(path: str | os.PathLike, beside: bool = False) -> Path:
    """The lock file :func:`locked` uses for ``path``.

    Parameters
    ----------
    path : str or Path
        The guarded file or folder (it need not exist).
    beside : bool
        ``True``: ``<folder>/.<name>.lock``; ``False``: a file in the per-user lock folder.

    Examples
    --------
    >>> lock_file_for("/data/cache/atlas.tif", beside=True).as_posix()
    '/data/cache/.atlas.tif.lock'
    """
    p = Path(os.path.abspath(os.fspath(path)))
    if beside:
        return p.with_name(f".{p.name}.lock")
    digest = hashlib.sha256(str(p).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return _lock_dir() / f"{p.name[:60]}-{digest}.lock"


@contextmanager
def locked(path: str | os.PathLike, timeout: float | None = None, *, beside: bool = False) -> Iterator[Path]:
    """Hold an exclusive inter-process lock on ``path`` for the ``with`` block; yield the lock file.

    Re-entrant within one thread (a nested ``locked`` on the same path does not deadlock);
    other threads and processes wait.

    Parameters
    ----------
    path : str or Path
        What to guard: a cache entry, an output file or folder.
    timeout : float, optional
        Seconds to wait for another holder; default: wait as long as it takes (a holder
        that dies releases the lock at once).
    beside : bool
        Put the lock file next to ``path`` (for caches shared between machines) instead
        of in the per-user lock folder (for outputs; see the module notes).

    Raises
    ------
    LockTimeoutError
        ``timeout`` passed while another process held the lock.
    AtlasregError
        The lock file cannot be created (folder not writable).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "result"
    >>> with locked(out, timeout=10):
    ...     out.mkdir()
    """
    from filelock import FileLock, Timeout

    lf = lock_file_for(path, beside)
    try:
        lf.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lf), is_singleton=True)
    except OSError as exc:
        raise AtlasregError(f"{path}: cannot create the lock file {lf} ({exc}); make its folder writable "
                            "or set ATLASREG_LOCK_DIR") from None
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            # Say why we are idle: a concurrent fetch or run is finishing this very path.
            log.info("waiting for another atlasreg process to release %s (lock %s)", path, lf)
            lock.acquire(timeout=-1 if timeout is None else timeout)
    except Timeout:
        raise LockTimeoutError(f"{path}: another process has held the lock {lf} for more than {timeout:g} s; "
                               "wait for it to finish (if none is running, delete the lock file)") from None
    except OSError as exc:
        raise AtlasregError(f"{path}: cannot lock {lf} ({exc}); make its folder writable or set "
                            "ATLASREG_LOCK_DIR") from None
    try:
        yield lf
    finally:
        lock.release()
