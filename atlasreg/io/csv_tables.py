"""CSV tables in and out, fast: the one place atlasreg writes a point table as CSV.

pandas' ``DataFrame.to_csv`` formats floats in Python, about 15 s for a million cells on this project's
machines, more than reading the table, loading a registration and mapping the points together. pyarrow's CSV
writer does the same in C++ (~1 s) with the same text: the shortest decimal that reads back to the same
float64, an empty field for a missing value, a header quoted only where a name needs it. Columns pyarrow cannot
represent as plain CSV values (mixed-type objects, dates, nested data) go through pandas, as before.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = ["read_csv_table", "write_csv_table"]

#: rows formatted per thread at a time when writing (about 15 MB of text for x, y, z columns)
_SLICE_ROWS = 1 << 18


def read_csv_table(path: str | os.PathLike, sep: str = ",") -> pd.DataFrame:
    """A CSV/TSV file as a DataFrame; parser errors become an :class:`~atlasreg.errors.InputError` naming it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "cells.csv"
    >>> _ = p.write_text("x,y,z\\n1,2,3\\n")
    >>> read_csv_table(p)["z"].tolist()
    [3]
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("table file not found", path=p)
    try:
        return pd.read_csv(p, sep=sep)
    except Exception as exc:  # pandas' parser errors, decoding errors
        raise InputError(f"cannot read the table: {exc}", path=p) from None


def _plain(series: pd.Series) -> bool:
    """Whether pyarrow's text for this column reads back as pandas' does: integers; text (pyarrow quotes it,
    which any CSV reader undoes); floats unless every finite value is integral (pyarrow writes 3.0 as ``3``, so
    such a column would read back as integers)."""
    kind = series.dtype.kind
    if kind in "iu":
        return True
    if kind == "f":
        x = series.to_numpy()
        x = x[np.isfinite(x)]
        return x.size == 0 or bool(np.any(x != np.round(x)))
    if kind == "O":
        return bool(series.map(lambda v: isinstance(v, str)).all())
    return False  # booleans (pyarrow writes true/false), dates, categories, mixed objects: pandas' own text


def write_csv_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` (without its index) as CSV at ``path`` exactly as ``df.to_csv(path, index=False)`` would
    read back, an order of magnitude faster for numeric tables. ``path`` is written as given: callers that need
    an atomic output pass the temporary path of :func:`atlasreg.io.atomic.atomic_path`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "out.csv"
    >>> _ = write_csv_table(pd.DataFrame({"x": [0.1, float("nan")], "name": ["a", "b,c"]}), p)
    >>> print(p.read_text().strip())
    x,name
    0.1,"a"
    ,"b,c"
    """
    p = Path(path)
    if len(df) and all(isinstance(c, str) for c in df.columns) and all(_plain(df[c]) for c in df.columns):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        table = pa.Table.from_pandas(df, preserve_index=False)  # NaN -> null -> an empty field, as pandas
        opts = pacsv.WriteOptions(include_header=False, quoting_style="needed")

        def text(rows: pa.Table):
            buf = pa.BufferOutputStream()
            pacsv.write_csv(rows, buf, opts)
            return buf.getvalue()

        # Formatting floats is the cost and pyarrow does it without the GIL: slices of rows are formatted on
        # several threads, a few at a time (memory stays a few slices' text), and written in order.
        threads = max(1, min(4, pa.cpu_count()))  # pyarrow's own count: honours OMP_NUM_THREADS, as its pool does
        slices = [table.slice(i, _SLICE_ROWS) for i in range(0, table.num_rows, _SLICE_ROWS)]
        with open(p, "wb") as f:
            f.write(df.iloc[:0].to_csv(index=False).encode())  # pandas' header: names quoted only if needed
            if threads == 1 or len(slices) == 1:
                for rows in slices:
                    f.write(text(rows))
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(threads) as pool:
                    for i in range(0, len(slices), threads):
                        for chunk in pool.map(text, slices[i:i + threads]):
                            f.write(chunk)
    else:
        df.to_csv(p, index=False)
    return p
