"""Damaged input never escapes as a random exception or a silent array: it is always an InputError.

The corpus is made from the real light-sheet TIFF (and small real crops written
in every format): truncations, flipped header bytes, empty files, the wrong
suffix; hypothesis adds garbage bytes and arbitrary prefixes of valid files.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atlasreg as ar
from atlasreg.errors import InputError

BRAIN = "lightsheet/brain_psl_50x40x40um.tif"
VS = (50.0, 40.0, 40.0)
SUFFIXES = [".tif", ".nii", ".nii.gz", ".nrrd", ".h5"]
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def _quiet_tifffile():
    # tifffile logs every damaged page; atlasreg turns those into InputError, the log is noise here.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL + 1)
    yield
    logging.getLogger("tifffile").setLevel(logging.NOTSET)


@pytest.fixture(scope="module")
def tiff_bytes(data_dir) -> bytes:
    return (data_dir / BRAIN).read_bytes()


@pytest.fixture(scope="module")
def brain_array(data_dir) -> np.ndarray:
    return tifffile.imread(data_dir / BRAIN)


@pytest.fixture(scope="module")
def valid_files(brain_array, tmp_path_factory) -> dict[str, "Bytes"]:
    """A real 24x20x16 block written by atlasreg in each file format, as bytes."""
    d = tmp_path_factory.mktemp("valid")
    vol = ar.Volume(np.ascontiguousarray(brain_array[120:144, 80:100, 130:146]), VS, space="sample",
                    orientation="psl")
    return {s: Bytes(ar.write_volume(vol, d / f"v{s}").read_bytes()) for s in SUFFIXES}


class Bytes(bytes):
    """bytes with a short repr, so hypothesis reports stay readable."""

    def __repr__(self):
        return f"<{len(self)} bytes>"


def _must_reject(path: Path, **kw) -> InputError:
    """Reading must raise InputError naming the file (and computing, if it returned lazily, too)."""
    with pytest.raises(InputError) as e:
        v = ar.read_volume(path, **kw)
        v.numpy()
    assert path.name in str(e.value)
    return e.value


def _write(folder: Path, name: str, data: bytes) -> Path:
    p = folder / name
    p.write_bytes(data)
    return p


# -- corpus from the real TIFF --------------------------------------------------------------------------------

@pytest.mark.parametrize("cut", [0, 1, 7, 8, 100, 1000, 0.1, 0.5, 0.9, -1000, -10, -1])
def test_truncated_real_tiff(tiff_bytes, tmp_path, cut):
    n = len(tiff_bytes)
    keep = cut if isinstance(cut, int) and cut >= 0 else (n + cut if isinstance(cut, int) else int(n * cut))
    err = _must_reject(_write(tmp_path, "brain.tif", tiff_bytes[:keep]), voxel_size=VS)
    assert "truncated" in str(err) or "damaged" in str(err) or "corrupt" in str(err)


# byte order mark, version, first-IFD offset, tag count, ImageWidth, ImageLength, BitsPerSample, Compression,
# StripOffsets, RowsPerStrip, StripByteCounts values of page 0
HEADER_BYTES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 18, 30, 42, 54, 90, 114, 126]


@pytest.mark.parametrize("pos", HEADER_BYTES)
def test_flipped_header_byte_real_tiff(tiff_bytes, tmp_path, pos):
    b = bytearray(tiff_bytes)
    b[pos] ^= 0xFF
    _must_reject(_write(tmp_path, "brain.tif", bytes(b)), voxel_size=VS)


def test_any_flipped_header_byte_is_caught_or_harmless(brain_array, tmp_path):
    """Flip each byte of the first 400 bytes of a real stack: an error, or exactly the right array."""
    block = np.ascontiguousarray(brain_array[100:106, 50:90, 60:120])
    tifffile.imwrite(tmp_path / "ok.tif", block, compression="zlib", photometric="minisblack")
    good = (tmp_path / "ok.tif").read_bytes()
    silent_wrong = []
    for pos in range(min(400, len(good))):
        b = bytearray(good)
        b[pos] ^= 0xFF
        p = _write(tmp_path, "f.tif", bytes(b))
        try:
            arr = ar.read_volume(p, voxel_size=VS).numpy()
        except InputError:
            continue
        if arr.shape != block.shape or not np.array_equal(arr, block):
            silent_wrong.append(pos)
    assert silent_wrong == []


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".h5", ".hdf5", ".zarr"])
def test_real_tiff_with_wrong_suffix(tiff_bytes, tmp_path, suffix):
    if suffix == ".zarr":
        with pytest.raises(InputError, match="folder"):
            ar.read_volume(_write(tmp_path, "brain.zarr", tiff_bytes))
        return
    _must_reject(_write(tmp_path, f"brain{suffix}", tiff_bytes), voxel_size=VS)


@pytest.mark.parametrize("src,dst", [(".nii", ".tif"), (".nii.gz", ".nrrd"), (".h5", ".nii"), (".nrrd", ".h5"),
                                     (".tif", ".nii.gz"), (".h5", ".tif")])
def test_other_formats_with_wrong_suffix(valid_files, tmp_path, src, dst):
    _must_reject(_write(tmp_path, f"v{dst}", valid_files[src]), voxel_size=VS)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_zero_length(tmp_path, suffix):
    _must_reject(_write(tmp_path, f"empty{suffix}", b""), voxel_size=VS)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("frac", [0.05, 0.5, 0.95])
def test_truncated_other_formats(valid_files, tmp_path, suffix, frac):
    data = valid_files[suffix]
    _must_reject(_write(tmp_path, f"v{suffix}", data[:int(len(data) * frac)]))


def test_damaged_zarr_stores(valid_files, brain_array, tmp_path):
    vol = ar.Volume(np.ascontiguousarray(brain_array[120:144, 80:100, 130:146]), VS)
    for version, meta in (("0.4", ".zattrs"), ("0.4", ".zgroup"), ("0.5", "zarr.json"), ("0.4", "0/.zarray"),
                          ("0.5", "0/zarr.json")):
        store = ar.write_volume(vol, tmp_path / f"s{version}.ome.zarr", ngff_version=version, levels=1, force=True)
        (store / meta).write_bytes(b"{\x00not json")
        _must_reject(store)
        shutil.rmtree(store)
    empty = tmp_path / "empty.ome.zarr"
    empty.mkdir()
    _must_reject(empty)


# -- hypothesis -------------------------------------------------------------------------------------------------

@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(SUFFIXES + [".hdf5", ".nhdr", ".tiff"]))
def test_garbage_bytes(tmp_path, data, suffix):
    _must_reject(_write(tmp_path, f"g{suffix}", data), voxel_size=VS)


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), frac=st.floats(0.0, 1.0, exclude_max=True))
def test_any_strict_prefix_of_a_valid_file(valid_files, tmp_path, suffix, frac):
    data = valid_files[suffix]
    _must_reject(_write(tmp_path, f"p{suffix}", data[:int(len(data) * frac)]), voxel_size=VS)


@FUZZ
@given(data=st.binary(max_size=512), name=st.sampled_from(["zarr.json", ".zattrs", ".zgroup"]))
def test_garbage_zarr_metadata(tmp_path, data, name):
    store = tmp_path / "g.ome.zarr"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir()
    (store / name).write_bytes(data)
    _must_reject(store)
