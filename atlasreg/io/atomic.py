"""Atomic outputs: a file or folder appears under its final name only once it is complete.

Every atlasreg writer goes through :func:`atomic_path` (or :func:`write_atomic`
for a small file written in one go). The writer fills a temporary path inside
a private folder that is created exclusively, mode 0700, in the target
folder (``mkdir`` never follows a symlink and fails if the name exists), so
no other user can plant a symlink or a file where the writer writes, and the
final rename never crosses file systems. On success the temporary is renamed
onto the final name with ``os.replace`` (which replaces a symlink at the final
name, never what it points to); on any error the private folder is deleted.
A crash in the middle therefore leaves at most a hidden ``.<name>.tmp-*``
folder, never a half-written file under the name a user or a pipeline looks
for. There are no fixed temporary names (``<out>.part``, ``<out>.tmp``).

Existing outputs are never overwritten unless ``force=True``
(:class:`atlasreg.errors.OutputExistsError` otherwise), checked both before
the writer starts (so no work is wasted) and again just before the rename.

Examples
--------
>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "table.csv"
>>> with atomic_path(out) as tmp:
...     _ = tmp.write_text("a,b\\n1,2\\n")
>>> out.read_text()
'a,b\\n1,2\\n'
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import AtlasregError, InputError, OutputExistsError

__all__ = ["atomic_path", "check_writable", "move_into_place", "remove_path", "write_atomic"]


def remove_path(path: Path) -> None:
    """Delete a file, symlink or folder tree if it exists (no error if it is already gone)."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def check_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``force`` is false; return it as a Path.

    Call this before a long computation whose result goes to ``path`` so a user
    learns about the clash first, not after an hour of work.
    """
    p = Path(path)
    if (p.exists() or p.is_symlink()) and not force:
        raise OutputExistsError(f"{p}: output exists; choose another name or pass force=True to overwrite")
    for parent in p.parents:  # an output below a file can never be made: say so before any work
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{parent} is a file, not a folder; choose another output path", path=p,
                                 field="output")
            break
    return p


@contextmanager
def atomic_path(path: str | os.PathLike, force: bool = False, *, suffix: str = "",
                lock: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling path to write; move it onto ``path`` when the block ends cleanly.

    Works for files and folders alike (an ``.ome.zarr`` store is a folder):
    write whatever you like at the yielded path. Parent folders are created.

    Parameters
    ----------
    path : str or Path
        The final output name.
    force : bool
        Replace an existing ``path``. Without it an existing output raises
        :class:`atlasreg.errors.OutputExistsError` before anything is written.
    suffix : str
        Appended to the temporary name, for libraries that choose the format by
        file ending (SimpleITK: ``suffix=".nii.gz"``).

    Yields
    ------
    Path
        ``<folder>/.<name>.tmp-<pid>-<token><suffix>``; hidden, so globs such
        as ``*.nii.gz`` never pick up a half-written output.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``force`` is false (checked on entry and before the rename).
    AtlasregError
        The block ended without creating anything at the temporary path.

    Notes
    -----
    A file replaces an existing file in one atomic ``os.replace``. A folder
    cannot be swapped atomically on POSIX: an existing folder is first renamed
    aside, the new one renamed in, then the old one deleted, so the final name
    only ever holds a complete old or a complete new output.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.npy") as tmp:
    ...     with open(tmp, "wb") as fh:
    ...         np.save(fh, np.arange(3))
    >>> np.load(d / "a.npy").tolist()
    [0, 1, 2]
    """
    final = check_writable(path, force)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {final.parent}: {exc.strerror or exc}", path=final,
                         field="output") from None
    try:
        # mkdtemp: os.mkdir(name, 0o700) with a random name, retried on a clash; never follows a symlink
        private = Path(tempfile.mkdtemp(prefix=f".{final.name[:100]}.tmp-", dir=final.parent))
    except OSError as exc:
        raise InputError(f"cannot create a temporary folder in {final.parent}: {exc.strerror or exc}", path=final,
                         field="output") from None
    inner = final.name if final.name.lower().endswith(suffix.lower()) else final.name + suffix
    tmp = private / inner
    try:
        yield tmp
        if not (tmp.exists() or tmp.is_symlink()):
            raise AtlasregError(f"{final}: the writer produced no output (nothing at {tmp})")
        if tmp.is_file():
            _fsync_file(tmp)
        if lock:
            from .locks import locked

            # Concurrent writers of one output take turns at the rename: the loser then sees the
            # winner's complete output (OutputExistsError, or a clean replace with force).
            with locked(final):
                move_into_place(tmp, final, force)
        else:
            move_into_place(tmp, final, force)
    finally:
        remove_path(private)


def write_atomic(path: str | os.PathLike, data: bytes | str, force: bool = True, *, lock: bool = True) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; return the path.

    The one way atlasreg writes a small file whole (a report, a fingerprint, a marker): through
    :func:`atomic_path`, so never via a fixed temporary name and never through a symlink.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = write_atomic(pathlib.Path(tempfile.mkdtemp()) / "done", "12.5\\n")
    >>> p.read_text()
    '12.5\\n'
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_path(path, force, lock=lock) as tmp:
        # the private folder is ours alone: O_EXCL | O_NOFOLLOW only make that explicit
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
    return Path(path)


def _fsync_file(p: Path) -> None:
    # Flush file contents to disk before the rename makes them visible, so a power
    # cut cannot leave a complete-looking name over empty blocks.
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def move_into_place(tmp: Path, final: Path, force: bool) -> None:
    """Rename the finished ``tmp`` (file or folder) onto ``final``, replacing an old output only with ``force``.

    A symlink at ``final`` is replaced, never followed. A folder cannot be swapped atomically on POSIX:
    the old output is renamed aside (to a fresh random name), the new one renamed in, then the old deleted.
    """
    exists = final.exists() or final.is_symlink()
    if exists and not force:
        # Someone else created it while we were writing.
        raise OutputExistsError(f"{final}: output appeared while writing; pass force=True to overwrite")
    if not exists:
        os.replace(tmp, final)
        return
    if tmp.is_file() and final.is_file() and not final.is_symlink():
        os.replace(tmp, final)  # atomic swap of one file for another
        return
    # A folder (or a file replacing a folder, or the reverse): move the old one aside first.
    aside_dir = Path(tempfile.mkdtemp(prefix=f".{final.name[:100]}.old-", dir=final.parent))
    aside = aside_dir / "old"
    os.replace(final, aside)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(aside, final)  # put the old output back
        remove_path(aside_dir)
        raise
    remove_path(aside_dir)
