"""The fast CSV writer reads back exactly as pandas' own ``to_csv`` does (pandas is the oracle), and the points
verb uses it (a million rows are the case it exists for)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlasreg.errors import InputError
from atlasreg.io import csv_tables
from atlasreg.io.csv_tables import read_csv_table, write_csv_table


def _both(df, tmp_path):
    ours = write_csv_table(df, tmp_path / "ours.csv")
    df.to_csv(tmp_path / "pandas.csv", index=False)
    return pd.read_csv(ours), pd.read_csv(tmp_path / "pandas.csv")


@pytest.mark.parametrize("slices", ["one", "many"])
@pytest.mark.parametrize("case", ["cells", "integral_floats", "text", "booleans", "empty", "odd_names"])
def test_reads_back_as_pandas_writes(tmp_path, monkeypatch, case, slices):
    if slices == "many":  # the rows formatted on several threads, slice by slice, must come back in order
        monkeypatch.setattr(csv_tables, "_SLICE_ROWS", 300)
    rng = np.random.default_rng(0)
    n = 2000
    x = rng.normal(0, 1e4, n)
    x[::97] = np.nan
    x[5], x[6], x[7], x[8] = np.inf, -np.inf, -0.0, 1e-300
    df = {
        "cells": pd.DataFrame({"x": x, "y": rng.uniform(-1, 1, n) * 1e-7, "z": rng.normal(0, 1, n) * 1e18,
                               "id": rng.integers(-2**62, 2**62, n), "u": rng.integers(0, 2**63, n, dtype=np.uint64)}),
        "integral_floats": pd.DataFrame({"x": np.arange(n, dtype=float), "y": x}),
        "text": pd.DataFrame({"x": x, "name": [f'cell "{i}", n\u00b0{i}' if i % 3 else f"c{i}" for i in range(n)]}),
        "booleans": pd.DataFrame({"x": x, "kept": rng.uniform(size=n) > 0.5}),
        "empty": pd.DataFrame({"x": np.zeros(0), "y": np.zeros(0)}),
        "odd_names": pd.DataFrame({"x,1": x, 'say "y"': x * 2}),
    }[case]
    ours, theirs = _both(df, tmp_path)
    pd.testing.assert_frame_equal(ours, theirs)
    assert (tmp_path / "ours.csv").read_text().splitlines()[0] == (tmp_path / "pandas.csv").read_text().splitlines()[0]


def test_floats_keep_every_bit(tmp_path):
    rng = np.random.default_rng(1)
    v = rng.normal(0, 1, 5000) * 10.0 ** rng.integers(-300, 300, 5000)
    lines = write_csv_table(pd.DataFrame({"v": v}), tmp_path / "v.csv").read_text().splitlines()
    assert lines[0] == "v" and np.array_equal(np.array([float(t) for t in lines[1:]]), v)  # Python's exact parser


def test_bad_table_names_the_file(tmp_path):
    p = tmp_path / "broken.csv"
    p.write_bytes(b"x,y\n1,2\n\xff\xfe,\x00\n")
    with pytest.raises(InputError, match="broken.csv"):
        read_csv_table(p)
    with pytest.raises(InputError, match="not found"):
        read_csv_table(tmp_path / "missing.csv")
