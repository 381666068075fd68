"""Reading boxes of a chunked 3-D (or 4-D field) array, the same way on every worker."""
from __future__ import annotations

import numpy as np


class Source:
    """Reads boxes of an array (numpy, dask, zarr, h5py dataset); picklable for cluster workers.

    h5py datasets cannot be pickled, so they travel as (file, dataset name) and
    are reopened read-only in each process.
    """

    def __init__(self, data):
        self._h5 = None
        self._data = data
        try:
            import h5py

            if isinstance(data, h5py.Dataset):
                self._h5 = (data.file.filename, data.name)
        except ImportError:  # pragma: no cover
            pass
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = np.dtype(data.dtype)

    def __getstate__(self):
        st = dict(self.__dict__)
        if st["_h5"] is not None:
            st["_data"] = None
        return st

    @property
    def data(self):
        if self._data is None:
            import h5py

            self._data = h5py.File(self._h5[0], "r")[self._h5[1]]
        return self._data

    def read(self, lo, hi) -> np.ndarray:
        """The box ``[lo, hi)`` as a numpy array (dask computes it in this thread)."""
        sub = self.data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        if hasattr(sub, "compute"):
            sub = sub.compute(scheduler="sync")
        return np.asarray(sub)

    def token(self) -> str:
        from dask.base import tokenize

        if self._h5 is not None:
            import os

            return tokenize("h5", self._h5, self.shape, str(self.dtype), os.path.getmtime(self._h5[0]))
        return tokenize(self._data)
