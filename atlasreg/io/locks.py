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
- ``beside=False`` (outputs): a per-user folder of lock files, named by a
  hash of the absolute path, so nothing extra appears next to a user's outputs.
  It is ``ATLASREG_LOCK_DIR`` if set, else ``$XDG_RUNTIME_DIR/atlasreg-locks``
  (the per-user runtime folder), else ``locks`` in the user's cache folder
  (``~/.cache/atlasreg/locks`` on Linux). Never a predictable name in the shared
  temporary folder: another user could create it first and plant symlinks.
  The folder is created mode 0700; an existing one must be a real folder (not
  a symlink) owned by the user, and the default ones must not be writable by
  anyone else (a too-open folder of our own is tightened to 0700), otherwise
  :class:`atlasreg.errors.AtlasregError` says why.

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

import hashlib
import logging
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import AtlasregError

__all__ = ["locked", "lock_file_for", "private_dir", "LockTimeoutError"]

log = logging.getLogger(__name__)


class LockTimeoutError(AtlasregError, TimeoutError):
    """Another process held a lock longer than the caller was willing to wait."""


def _default_lock_dir() -> Path:
    run = os.environ.get("XDG_RUNTIME_DIR")
    if run and os.path.isabs(run) and os.path.isdir(run):
        return Path(run) / "atlasreg-locks"
    import pooch  # its os_cache is platformdirs' user cache folder (~/.cache, ~/Library/Caches, %LOCALAPPDATA%)

    return Path(pooch.os_cache("atlasreg")) / "locks"


def private_dir(path: Path, strict: bool = True) -> Path:
    """Create ``path`` (mode 0700) or check an existing one is the user's own real folder; return it.

    ``strict``: also refuse a folder others can write (tightening one of the user's own to 0700).

    Examples
    --------
    >>> import tempfile, pathlib, stat
    >>> d = private_dir(pathlib.Path(tempfile.mkdtemp()) / "locks")
    >>> oct(stat.S_IMODE(d.stat().st_mode))
    '0o700'
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)  # never follows a symlink at the name; fails if anything is there
    except FileExistsError:
        pass
    except OSError as exc:
        raise AtlasregError(f"cannot create the lock folder {path} ({exc.strerror or exc}); make its parent "
                            "writable or set ATLASREG_LOCK_DIR") from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise AtlasregError(f"the lock folder {path} is a symlink or not a folder; refusing to use it "
                            "(remove it, or set ATLASREG_LOCK_DIR to a folder of your own)")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise AtlasregError(f"the lock folder {path} belongs to user id {st.st_uid}, not to you; refusing to "
                            "use it (set ATLASREG_LOCK_DIR to a folder of your own)")
    if strict and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def _lock_dir() -> Path:
    env = os.environ.get("ATLASREG_LOCK_DIR")
    if env:  # the user's choice (maybe shared on purpose): created 0700, checked, not tightened
        return private_dir(Path(env).expanduser(), strict=False)
    return private_dir(_default_lock_dir())


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
        if beside:
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
