"""The life of one blockwise output: temporary location, per-block completion, atomic publish.

Layout while a job runs (``out`` is what the user asked for)::

    out.partial/            work folder (never mistaken for the result)
      job.json              fingerprint of inputs and parameters
      done/<block-key>      one empty file per finished block, written AFTER the block's data
      <out name>            the output being built (a viewer may open it meanwhile)

Publishing renames ``out.partial/<out name>`` to ``out`` in one step, so ``out``
exists only when every block was written. A rerun with the same fingerprint
skips finished blocks; any other rerun starts afresh.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..errors import InputError, OutputExistsError
from ..io.atomic import move_into_place, write_atomic


class Job:
    """Temporary work folder, per-block markers and atomic publishing of one output path."""

    def __init__(self, output, token: str, kind: str, overwrite: bool = False, resume: bool = True):
        self.output = Path(output).expanduser().absolute()
        self.work = self.output.with_name(self.output.name + ".partial")
        self.target = self.work / self.output.name
        self.done_dir = self.work / "done"
        self.token = token
        self.kind = kind
        self.overwrite = overwrite
        self.resume = resume
        self.resumed = False
        self._lock = None

    # -- before any computation ----------------------------------------------------------------
    def check(self) -> None:
        """Fail fast: refuse an existing output without ``overwrite``; check the folder is writable."""
        if self.output.exists() and not self.overwrite:
            raise OutputExistsError(f"{self.output}: output exists; choose another name or pass overwrite=True")
        parent = self.output.parent
        if not parent.is_dir():
            raise InputError("the output's folder does not exist; create it first", path=parent)
        if not os.access(parent, os.W_OK):
            raise InputError("the output's folder is not writable", path=parent)

    def begin(self) -> bool:
        """Lock the output, then resume a matching unfinished job or start clean; True when resuming.

        A fresh start must call :meth:`started` once its empty output exists:
        only then is the work folder resumable.
        """
        from filelock import FileLock, Timeout

        self.check()
        self._lock = FileLock(str(self.work) + ".lock")
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise InputError("another atlasreg job is writing this output right now (lock file "
                             f"{self.work}.lock); wait for it or remove the lock if that job died",
                             path=self.output) from None
        w = self.work
        if w.is_symlink() or (w.exists() and (not w.is_dir() or (hasattr(os, "getuid")
                                                                  and w.stat().st_uid != os.getuid()))):
            self.release()
            raise InputError("the job's work folder is a symlink, not a folder, or belongs to another user; "
                             "not writing through it (remove it if it is yours)", path=w)
        if self.work.exists():
            old = None
            try:
                old = json.loads((self.work / "job.json").read_text())
            except (OSError, ValueError):
                pass
            if self.resume and old is not None and old.get("token") == self.token:
                self.resumed = True
                return True
            shutil.rmtree(self.work)
        self.done_dir.mkdir(parents=True)
        return False

    def started(self) -> None:
        """Record the job's fingerprint: from now on an interrupted run resumes here."""
        meta = self.work / "job.json"
        write_atomic(meta, json.dumps({"token": self.token, "kind": self.kind, "started": time.time()}),
                     force=True, lock=False)

    # -- per block -------------------------------------------------------------------------------
    def done_keys(self) -> set[str]:
        try:
            return {k for k in os.listdir(self.done_dir) if not k.startswith(".")}  # not a marker being written
        except FileNotFoundError:
            return set()

    def done_record(self, key: str) -> str:
        """What the task that finished block ``key`` recorded with :func:`mark_done`."""
        return (self.done_dir / key).read_text()

    # -- the end -----------------------------------------------------------------------------------
    def publish(self) -> Path:
        """Move the finished output into place atomically (replacing an old one if allowed)."""
        if (self.output.exists() or self.output.is_symlink()) and not self.overwrite:
            raise OutputExistsError(f"{self.output} appeared while the job ran; not replacing it")
        move_into_place(self.target, self.output, self.overwrite)
        shutil.rmtree(self.work, ignore_errors=True)
        return self.output

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            try:
                os.unlink(self._lock.lock_file)
            except OSError:
                pass
            self._lock = None


def mark_done(done_dir: str, key: str, record: str = "") -> None:
    """Record that block ``key`` is fully written (called by tasks, possibly on other machines), with the
    block's own ``record`` (e.g. its statistics; :meth:`Job.done_record` reads it back on resume). The marker
    appears complete or not at all (written under a hidden temporary name, then renamed)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=done_dir)
    with os.fdopen(fd, "w") as f:
        f.write(record)
    os.replace(tmp, os.path.join(done_dir, key))
