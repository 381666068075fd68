"""Working memory of the steps that touch whole volumes (issue 15: the 25 µm register run stays under 4 GB).

``atlasreg register`` onto the 25 µm CCF (528×320×456 = 77 M voxels) peaked at 4.2 GB in its QC figures: each of
the overlay and checkerboard scaled both whole volumes to float64 (0.6 GB apiece) to draw three slices. These
tests measure, with ``tracemalloc`` (numpy reports its buffers to it), what a resample and a figure allocate
beyond their input and output, on volumes of a few million voxels: seconds, no data files.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from atlasreg import Volume
from atlasreg.qc.figures import _Scale, _slice, checkerboard_slices, overlay_slices
from atlasreg.spaces import Space
from atlasreg.transforms.base import Affine, Sequence
from atlasreg.transforms.field import DisplacementField
from atlasreg.volume import Grid, resample

MB = 1 << 20


def _peak_beyond(fn) -> tuple[object, int]:
    """(result, bytes traced at the peak of ``fn()`` above what was allocated before it)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def _pull(shape):
    """An affine, a smooth displacement field and another affine: the shape of an ANTs pull-back."""
    rng = np.random.default_rng(3)
    u = rng.normal(scale=1.5, size=(12, 12, 12, 3))
    a, f = Space("a"), Space("f")
    pre = Affine.from_translation([0.4, -0.3, 0.2], src="b", dst="f")
    field = DisplacementField(u, spacing=np.asarray(shape) / 11.0, src=f, dst=f, outside="zero")
    post = Affine(np.diag([1.01, 0.99, 1.0, 1.0]), src=f, dst=a)
    return Sequence([pre, field, post])


def test_resample_working_memory_is_a_few_slabs_not_the_volume():
    shape = (160, 160, 160)  # 4.1 M output voxels: one or two slabs before, five now
    vol = Volume(np.random.default_rng(0).random((120, 130, 140), dtype=np.float32), space="a")
    grid = Grid(shape, (0.8, 0.8, 0.85), Space("b"))
    pull = _pull(shape)
    out, peak = _peak_beyond(lambda: resample(vol, pull, grid))
    extra = peak - out.nbytes
    # 4 M-voxel slabs with their index arrays built by repeat, tile and column_stack: 433 MB here; 1 M-voxel
    # slabs written in place: 122 MB (a few 24 MB point arrays)
    assert extra < 200 * MB, f"resample used {extra / MB:.0f} MB beyond its output"


def test_resample_values_do_not_depend_on_the_slab_size():
    shape = (40, 36, 30)
    rng = np.random.default_rng(1)
    vol = Volume(rng.random((30, 32, 34), dtype=np.float32), space="a")
    lab = Volume(rng.integers(0, 5000, (30, 32, 34)).astype(np.uint32), space="a")
    grid = Grid(shape, (0.8, 0.9, 1.1), Space("b"))
    pull = _pull(shape)
    for v, how in ((vol, "linear"), (lab, "nearest")):
        ref = resample(v, pull, grid, how, block_voxels=10 ** 9)  # the whole grid in one slab
        for block in (1, 36 * 30, 5 * 36 * 30 + 7):
            assert np.array_equal(resample(v, pull, grid, how, block_voxels=block), ref), (how, block)


def _old_norm(arr):
    """The full-volume scaling the figures used before (kept here as the reference numbers)."""
    a = np.asarray(arr, dtype=np.float32)
    vals = a[np.isfinite(a)]
    nz = vals[vals != 0]
    ref = nz if nz.size > 100 else vals
    if ref.size == 0:
        return np.zeros_like(a)
    lo, hi = np.percentile(ref, [1.0, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    out = np.clip((a - lo) / (hi - lo), 0, 1)
    out[~np.isfinite(out)] = 0
    return out


@pytest.mark.parametrize("kind", ["uint16", "float32", "float64", "few-nonzero", "all-zero"])
def test_slice_scaling_equals_the_whole_volume_scaling(kind):
    rng = np.random.default_rng(2)
    shape = (170, 150, 180)  # 4.6 M voxels: more than one slab of the percentile gathering
    if kind == "uint16":
        a = rng.integers(0, 60000, shape).astype(np.uint16)
        a[:30] = 0
    elif kind in ("float32", "float64"):
        a = rng.normal(size=shape).astype(kind)
        a[3:7] = 0
        a[100, 4, :9] = np.nan
        a[120, 5, :3] = np.inf
    elif kind == "few-nonzero":
        a = np.zeros(shape, np.float32)
        a[50, 50, :60] = 5.0
    else:
        a = np.zeros(shape, np.uint16)
    whole = _old_norm(a)
    scale = _Scale(a)
    for axis in range(3):
        for i in (0, shape[axis] // 2, shape[axis] - 1):
            got = scale(_slice(a, axis, i, "psl"))
            want = _slice(whole, axis, i, "psl")
            assert got.dtype == want.dtype and np.array_equal(got, want), (kind, axis, i)


def test_overlay_and_checkerboard_scale_slices_not_volumes():
    shape = (200, 200, 200)  # 8 M voxels, 32 MB each as float32
    rng = np.random.default_rng(4)
    f = Volume(rng.integers(1, 4000, shape).astype(np.uint16), 25.0, space="ccf", orientation="asr")
    m = Volume(rng.random(shape, dtype=np.float32), 25.0, space="ccf", orientation="asr")
    for draw in (overlay_slices, checkerboard_slices):
        _, peak = _peak_beyond(lambda: draw(f, m))
        # both volumes scaled whole to float64, then a float64 temporary: 245 MB; the percentile values of one
        # volume at a time (float32, 32 MB here) and 4 M-voxel slabs of it: 81 MB
        assert peak < 130 * MB, f"{draw.__name__} used {peak / MB:.0f} MB for two 8 M-voxel volumes"


def _labels(shape, seed=5):
    from atlasreg.labels import compact_labels

    rng = np.random.default_rng(seed)
    ids = np.array([0, 385, 1_000_000, 614_454_277], np.uint32)[rng.integers(0, 4, shape)]
    return ids, compact_labels(ids)


@pytest.mark.parametrize("dtype, fill", [(None, 0), (np.int64, -1), (np.float32, np.nan), (np.uint32, 7)])
def test_compact_labels_resample_as_their_ids(dtype, fill):
    shape = (30, 32, 34)
    ids, compact = _labels(shape)
    grid = Grid((40, 36, 30), (0.8, 0.9, 1.1), Space("b"))
    pull = _pull(grid.shape)
    want = resample(Volume(ids, space="a"), pull, grid, "nearest", fill=fill, dtype=dtype)
    got = resample(Volume(compact, space="a"), pull, grid, "nearest", fill=fill, dtype=dtype)
    assert got.dtype == want.dtype and got.flags.c_contiguous
    assert np.array_equal(got, want, equal_nan=True)
    assert np.isin(want, [fill]).any() or np.isnan(want).any()  # the fill is exercised


def test_compact_labels_are_not_expanded_to_ids_to_resample():
    _, compact = _labels((200, 160, 160))  # 5.1 M voxels: 20 MB as ids (uint32), 10 MB as the index
    grid = Grid((40, 40, 40), (5.0, 4.0, 4.0), Space("b"))
    out, peak = _peak_beyond(lambda: resample(Volume(compact, space="a"), Affine(np.eye(4), src="b", dst="a"),
                                             grid, "nearest"))
    # the ids expanded first: 26 MB; the index sampled as it is: 4 MB (the points of one slab)
    assert peak - out.nbytes < 10 * MB, f"{(peak - out.nbytes) / MB:.1f} MB"
