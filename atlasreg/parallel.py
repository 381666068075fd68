"""Numba's threading layer, chosen explicitly, and the one decorator for atlasreg's parallel kernels.

atlasreg's point, resampling and region kernels are numba ``parallel=True``
functions, and they are launched from many threads at once: dask's threaded
scheduler computes the blocks of a lazy volume in parallel, and the blockwise
jobs in :mod:`atlasreg.distributed` run one task per worker thread. Numba's
``workqueue`` layer is not thread-safe: two concurrent launches abort the
whole process ("Concurrent access has been detected"). So atlasreg does not
leave the choice to chance:

* if ``NUMBA_THREADING_LAYER`` is set, numba's (the user's) choice stands;
* otherwise atlasreg picks a thread-safe layer itself, in numba's own order:
  Intel TBB (``tbb``: thread- and fork-safe; a dependency of atlasreg where
  PyPI has wheels, Linux and Windows on x86-64. pip puts ``libtbb`` in the
  environment's ``lib`` folder, where numba does not look, so atlasreg loads
  it from there first), then OpenMP (``omp``, when the system's OpenMP
  runtime loads), and ``workqueue`` only when neither loads;
* on the ``workqueue`` layer (chosen by the user or the only one there is),
  every kernel made by :func:`njit_parallel` takes a process-wide lock, so
  launches from different threads run one after the other instead of
  aborting; and :func:`task_threads` leaves each (serialised) launch all
  threads rather than one.

Examples
--------
>>> threading_layer() in ("omp", "tbb", "workqueue", "default", "threadsafe", "safe", "forksafe")
True
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
from pathlib import Path

import numba as nb

__all__ = ["njit_parallel", "serial_kernels", "task_threads", "threading_layer", "is_threadsafe"]

_SAFE = {"tbb", "omp", "threadsafe", "safe", "forksafe"}
_lock = threading.RLock()


def _preload_tbb() -> None:
    """Load pip's libtbb from the environment (numba's tbbpool links it by name and would not find it)."""
    names = {"linux": ["libtbb.so.12"], "win32": ["tbb12.dll"], "darwin": ["libtbb.12.dylib"]}
    for name in names.get(sys.platform, []):
        for folder in (Path(sys.prefix) / "lib", Path(sys.prefix) / "Library" / "bin", Path(sys.prefix)):
            p = folder / name
            if p.is_file():
                try:
                    ctypes.CDLL(str(p), mode=getattr(ctypes, "RTLD_GLOBAL", 0))
                    return
                except OSError:
                    continue


def _loads(layer: str) -> bool:
    try:
        if layer == "omp":
            from numba.np.ufunc import omppool  # noqa: F401
        else:
            _preload_tbb()
            from numba.np.ufunc import parallel, tbbpool  # noqa: F401

            parallel._check_tbb_version_compatible()  # numba's own check (TBB >= 2021.6)
        return True
    except Exception:  # noqa: BLE001 - ImportError, OSError, numba's version error
        return False


def _configure() -> str:
    chosen = os.environ.get("NUMBA_THREADING_LAYER", "").strip().lower()
    if chosen and chosen != "default":
        if chosen in ("tbb", "safe", "threadsafe", "forksafe"):
            _preload_tbb()  # so that numba finds pip's TBB for the user's choice too
        return chosen
    for layer in ("tbb", "omp"):
        if _loads(layer):
            nb.config.THREADING_LAYER = layer
            return layer
    nb.config.THREADING_LAYER = "workqueue"
    return "workqueue"


_LAYER = _configure()


def threading_layer() -> str:
    """The threading layer atlasreg asked numba for (``"omp"``, ``"tbb"``, ``"workqueue"``, or the user's setting)."""
    return _LAYER


def is_threadsafe() -> bool:
    """Whether parallel kernels may be launched from several threads at once (not on ``workqueue``)."""
    return _LAYER in _SAFE


def njit_parallel(**options):
    """``numba.njit(parallel=True, cache=True, nogil=True, **options)``, safe to launch from any thread.

    On a thread-safe layer the kernel is called directly; on ``workqueue`` concurrent calls take turns.

    Examples
    --------
    >>> import numpy as np
    >>> @njit_parallel()
    ... def total(a):
    ...     s = 0.0
    ...     for i in nb.prange(a.shape[0]):
    ...         s += a[i]
    ...     return s
    >>> total(np.ones(10))
    10.0
    """
    kw = dict(parallel=True, cache=True, nogil=True)
    kw.update(options)

    def wrap(fn):
        kernel = nb.njit(**kw)(fn)
        if is_threadsafe():
            return kernel

        @functools.wraps(fn)
        def serialised(*args):
            with _lock:
                return kernel(*args)

        serialised.kernel = kernel
        return serialised

    return wrap


def task_threads() -> None:
    """Inside one task of a parallel job: numba kernels on this thread use one thread (dask supplies the rest).

    On ``workqueue``, where launches are serialised anyway, the thread count is left as it is.
    """
    if is_threadsafe():
        nb.set_num_threads(1)


@contextlib.contextmanager
def serial_kernels():
    """Numba kernels launched on this thread inside the block use one thread (restored afterwards).

    For many launches on a few hundred points each, where starting the thread pool costs more than the work.
    """
    n = nb.get_num_threads()
    nb.set_num_threads(1)
    try:
        yield
    finally:
        nb.set_num_threads(n)
