"""The fast reader of NIfTI displacement fields in the layout ITK and ANTs write, and the NIfTI checks.

ITK reads NaN/inf in a NIfTI file as 0 and zero-fills a truncated file without
complaint; the checks here refuse both before ITK sees the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..spaces import Space
from .. import _kernels as K
from .field import DisplacementField


def read_nifti_warp(path: Path, src: Space, dst: Space, outside: str) -> DisplacementField | None:
    """Read a NIfTI warp in the layout ITK and ANTs write (5-D ``(X, Y, Z, 1, 3)`` floats), or None.

    SimpleITK's reader decompresses with zlib and copies the field twice, and
    ITK reads NaN/inf as 0 and zero-fills a truncated file, so it used to take
    two more full passes (nibabel) to check the data first. Here the file is
    decompressed once (ISA-L when installed), the header read by nibabel, the
    geometry by SimpleITK (header only, so it is ITK's reading of qform/sform),
    and one numba sweep puts each node's components together while checking
    every value. Other layouts (scaled data, 4-D, other intents) return None and go
    through SimpleITK.
    """
    import SimpleITK as sitk

    shape, dtype, offset, slope, inter, intent = nifti_layout(path)
    # Intent 1007 (vector) is what ITK writes; other intents (e.g. 1006, displacement) may have their
    # vectors converted by ITK's reader, so they are left to it.
    if (len(shape) != 5 or shape[3] != 1 or shape[4] != 3 or dtype.kind != "f" or intent != 1007
            or dtype.itemsize not in (4, 8) or slope != 1.0 or inter != 0.0):
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    if (reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 3
            or tuple(reader.GetSize()) != shape[:3]):
        return None
    nx, ny, nz = shape[:3]
    count = 3 * nx * ny * nz
    data = _nifti_bytes(path, offset + count * dtype.itemsize)
    planar = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(3, nz, ny, nx)
    if not dtype.isnative:
        planar = planar.astype(dtype.newbyteorder("="))
    nodes = np.empty((nz, ny, nx, 3), planar.dtype)
    if K.interleave_components(planar, nodes):
        raise InputError("the displacement field contains NaN or inf (ITK would read them as 0)", path=path,
                         field="displacement")
    del data, planar
    try:
        return DisplacementField(nodes.transpose(2, 1, 0, 3), spacing=reader.GetSpacing(),
                                 origin=reader.GetOrigin(),
                                 direction=np.asarray(reader.GetDirection()).reshape(3, 3), src=src, dst=dst,
                                 outside=outside, _finite_checked=True)
    except InputError as exc:
        raise InputError(str(exc), path=path, field="displacement") from None


def nifti_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int, float, float, int]:
    """``(shape, dtype, data offset, scl_slope, scl_inter, intent_code)`` of a NIfTI file, from its header."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        proxy = img.dataobj  # (nibabel moves the scaling and data offset from the header to its proxy)
        # Data start: vox_offset, or right after the header and its 4 extension bytes when
        # vox_offset is smaller (0 in some writers).
        offset = max(int(proxy.offset), int(img.header["sizeof_hdr"]) + 4)
        return (tuple(int(v) for v in proxy.shape), np.dtype(proxy.dtype), offset, float(proxy.slope),
                float(proxy.inter), int(img.header["intent_code"]))
    except Exception as exc:  # nibabel raises several types for a broken header
        raise InputError(f"not a readable NIfTI file (corrupt or truncated header): {exc}", path=path) from None


def _nifti_bytes(path: Path, need: int):
    """The (decompressed) bytes of a NIfTI file, checked to hold at least ``need`` bytes and, if
    gzipped, to pass gzip's CRC and length checks."""
    if not str(path).lower().endswith(".gz") or path.stat().st_size == 0:
        data = path.read_bytes()
    else:
        try:  # ISA-L inflates about twice as fast as zlib (the decompression is most of a warp's load)
            from isal import isal_zlib as zlib
        except ImportError:  # pragma: no cover - isal is a dependency; plain zlib is correct too
            import zlib
        import gzip
        import mmap

        try:  # inflating straight from the page cache saves reading a copy of the file
            with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as raw:
                data = zlib.decompress(raw, 31, bufsize=max(need, 1 << 16))
                if len(data) < need:  # a file of several gzip members: the gzip module reads them all
                    data = gzip.decompress(raw)
        except Exception as exc:  # zlib.error / isal's IsalError / EOFError / BadGzipFile
            raise InputError(f"the compressed NIfTI file is corrupt or truncated ({exc})", path=path) from None
    if len(data) < need:
        raise InputError(f"the NIfTI file is truncated: it holds {len(data)} bytes, its header needs {need}",
                         path=path)
    return data


def check_nifti_finite(path: Path) -> None:
    """ITK reads NaN/inf in a NIfTI file as 0 (a silent zero displacement): look with nibabel first."""
    import nibabel as nib

    img = nib.load(str(path))
    if img.get_data_dtype().kind != "f":
        return
    shape = img.shape
    # One vector component (the slowest axis of ANTs' 5-D warps) at a time: memory stays at a third.
    parts = [(Ellipsis, c) for c in range(shape[-1])] if len(shape) == 5 else [(Ellipsis,)]
    for sl in parts:
        try:
            ok = np.all(np.isfinite(np.asanyarray(img.dataobj[sl])))
        except Exception as exc:  # gzip CRC, short data: nibabel/gzip raise several types
            raise InputError(f"the compressed NIfTI data is damaged ({exc})", path=path) from None
        if not ok:
            raise InputError("the displacement field contains NaN or inf (ITK would read them as 0)", path=path,
                             field="displacement")



def check_nifti_complete(path: Path) -> None:
    """ITK zero-fills a truncated NIfTI without complaint: check the data is all there first."""
    import gzip
    import zlib

    shape, dtype, offset, _, _, _ = nifti_layout(path)
    need = offset + int(np.prod(shape)) * dtype.itemsize
    if str(path).lower().endswith(".gz"):
        # A complete gzip stream ends with its uncompressed size (mod 2**32): a cheap check that
        # catches truncation; anything else (e.g. several gzip members) is decompressed to count.
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4))
            tail = fh.read(4)
        if len(tail) == 4 and int.from_bytes(tail, "little") == need % (1 << 32):
            return
        have = 0
        try:
            with gzip.open(path, "rb") as fh:
                while True:
                    chunk = fh.read(1 << 24)
                    if not chunk:
                        break
                    have += len(chunk)
        except (EOFError, OSError, zlib.error) as exc:
            raise InputError(f"the compressed NIfTI file is corrupt or truncated ({exc})", path=path) from None
    else:
        have = path.stat().st_size
    if have < need:
        raise InputError(f"the NIfTI file is truncated: it holds {have} bytes, its header needs {need}",
                         path=path)
