"""ITK and ANTs transform files: ``.h5`` / ``.tfm`` / ``.txt`` / ``.mat`` and displacement-field images.

Direction rule (CONVENTIONS): an ITK or ANTs file stores a map of points, the
pull-back used to resample. ``read_itk(path, src, dst)`` returns that map as a
transform ``src -> dst`` (for ANTs output: ``src`` = the FIXED space, ``dst`` =
the MOVING space), and :func:`write_itk` writes a transform's own point map, so
``sitk.ReadTransform(path).TransformPoint(p) == T.map_points(p)``. Used by ITK
or ANTs to resample an image, such a file therefore warps images of ``T.dst``
into grids of ``T.src`` (``T.src`` plays the fixed image).

Units: ITK files carry no unit. Their numbers are taken in the declared spaces'
units (input numbers in ``src.unit``, output numbers in ``dst.unit``); ANTs run
on images with µm spacing (``Volume.to_ants``) writes µm. ``file_unit=`` says the
file is in another unit (e.g. ``"mm"`` for a registration run on NIfTI files
from disk); the conversion is inserted as explicit scalings at both ends.

Fields: ANTs writes warps as 5-D vector NIfTI (``(X, Y, Z, 1, 3)``, intent
"vector") with displacements in ITK's LPS frame; SimpleITK reads them as a
3-component vector image whose array transposes to atlasreg's ``(X, Y, Z, 3)``
(kept in ITK's memory order, no copy). Off the grid a field read from an
ITK/ANTs file applies no displacement, as ITK does (``outside="zero"``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, SpaceMismatchError
from ..spaces import Space, as_space, normalize_unit
from .. import _kernels as K
from .base import Affine, Sequence, Transform
from .field import DisplacementField

#: Suffixes SimpleITK reads and writes as transform files.
TRANSFORM_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt", ".mat")
#: Suffixes read and written as displacement-field images (vectors in physical units).
FIELD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

_META_KEY = "atlasreg"  # HDF5 root attribute / text comment holding the spaces atlasreg wrote


def suffix_of(path) -> str:
    name = Path(path).name.lower()
    for s in FIELD_SUFFIXES + TRANSFORM_SUFFIXES + (".json",):
        if name.endswith(s):
            return s
    return Path(name).suffix


def _exists(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError("transform file does not exist", path=p)
    if p.is_dir():
        raise InputError("expected a transform file, found a folder", path=p)
    return p


def _mid(src: Space, dst: Space, i: int, unit: str) -> Space:
    # Interior spaces of a chain read from one file: named after its ends, never user-visible ends.
    return Space(f"{src.name}->{dst.name}#{i}", unit)


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------
def _wrap_units(build, src: Space, dst: Space, in_unit: str, out_unit: str, path) -> Transform:
    """Build the file's chain in its own units and convert to ``src``/``dst`` units at the ends.

    ``build(s, d)`` returns the file's transform between spaces ``s`` (unit
    ``in_unit``) and ``d`` (unit ``out_unit``) named like ``src``/``dst``.
    """
    s_file = src if src.unit == in_unit else Space(f"{src.name}@{in_unit}", in_unit)
    d_file = dst if dst.unit == out_unit else Space(f"{dst.name}@{out_unit}", out_unit)
    core = build(s_file, d_file)
    steps: list[Transform] = []
    if s_file is not src:
        steps.append(Affine.from_units(src, s_file))
    steps.append(core)
    if d_file is not dst:
        steps.append(Affine.from_units(d_file, dst))
    if len(steps) == 1:
        return core
    seq = Sequence(steps)
    folded = seq.simplified()
    if len(folded) == 1 and isinstance(folded[0], Affine):
        return Affine(folded[0].matrix, src, dst)
    return seq


# ---------------------------------------------------------------------------------------------
# Displacement-field images
# ---------------------------------------------------------------------------------------------
def _read_field(path: Path, src: Space, dst: Space, outside: str) -> DisplacementField:
    """A displacement-field image as a DisplacementField: ANTs' NIfTI layout in one pass, else via SimpleITK."""
    if suffix_of(path) in (".nii", ".nii.gz"):
        F = _read_nifti_warp(path, src, dst, outside)
        if F is not None:
            return F
    return field_from_sitk_image(_read_image(path), src, dst, outside, path)


def _read_nifti_warp(path: Path, src: Space, dst: Space, outside: str) -> DisplacementField | None:
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

    shape, dtype, offset, slope, inter, intent = _nifti_layout(path)
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


def _nifti_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int, float, float, int]:
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


def _read_image(path: Path):
    import SimpleITK as sitk

    if suffix_of(path) in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
        _check_nifti_finite(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read the displacement-field image (corrupt, truncated or not an "
                         f"image): {_first_line(exc)}", path=path) from None


def _check_nifti_finite(path: Path) -> None:
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


def _first_line(exc: Exception) -> str:
    """The informative sentence of an ITK exception (its ``ITK ERROR: Class(0x..): message`` line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "ITK ERROR:" in ln:
            msg = ln.split("ITK ERROR:", 1)[1]
            return msg.split("): ", 1)[1].strip() if "): " in msg else msg.strip()
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__


def _check_nifti_complete(path: Path) -> None:
    """ITK zero-fills a truncated NIfTI without complaint: check the data is all there first."""
    import gzip
    import zlib

    shape, dtype, offset, _, _, _ = _nifti_layout(path)
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


def field_from_sitk_image(img, src: Space, dst: Space, outside: str, path=None) -> DisplacementField:
    """A SimpleITK vector image (3 components, physical displacements) as a DisplacementField."""
    import SimpleITK as sitk

    if img.GetDimension() != 3:
        raise InputError(f"a displacement field must be a 3-D image, this one is {img.GetDimension()}-D",
                         path=path, field="dimension")
    if img.GetNumberOfComponentsPerPixel() != 3:
        raise InputError(f"a 3-D displacement field needs 3 vector components per voxel, this image has "
                         f"{img.GetNumberOfComponentsPerPixel()}", path=path, field="components")
    # (Z, Y, X, 3) in ITK's memory order; its transpose is atlasreg's (X, Y, Z, 3) without a copy.
    u = sitk.GetArrayFromImage(img).transpose(2, 1, 0, 3)
    if u.dtype not in (np.float32, np.float64):
        u = u.astype(np.float64)
    try:
        return DisplacementField(u, spacing=img.GetSpacing(), origin=img.GetOrigin(),
                                 direction=np.asarray(img.GetDirection()).reshape(3, 3), src=src, dst=dst,
                                 outside=outside)
    except InputError as exc:
        raise InputError(str(exc), path=path, field="displacement") from None


def affine_to_sitk(matrix: np.ndarray):
    """A 4x4 (or 3x4) affine matrix as a ``SimpleITK.AffineTransform`` mapping points the same way."""
    import SimpleITK as sitk

    m = np.asarray(matrix, float)
    a = sitk.AffineTransform(3)
    a.SetMatrix(tuple(float(v) for v in m[:3, :3].ravel()))
    a.SetTranslation(tuple(float(v) for v in m[:3, 3]))
    return a


def sampled_field(tx, reference, src: Space, dst: Space, outside: str = "zero") -> DisplacementField:
    """The SimpleITK transform ``tx`` (e.g. a fitted B-spline) sampled as a float32 displacement field on the
    grid of the SimpleITK image ``reference``."""
    import SimpleITK as sitk

    disp = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat32, reference.GetSize(), reference.GetOrigin(),
                                             reference.GetSpacing(), reference.GetDirection())
    return field_from_sitk_image(disp, src, dst, outside)


def field_to_sitk_image(F: DisplacementField, dtype=None):
    """The field as a SimpleITK vector image with the same geometry (ITK index = atlasreg index)."""
    import SimpleITK as sitk

    u = F.displacement if dtype is None else F.displacement.astype(dtype)
    img = sitk.GetImageFromArray(np.ascontiguousarray(u.transpose(2, 1, 0, 3)), isVector=True)
    img.SetSpacing(tuple(float(v) for v in F.spacing))
    img.SetOrigin(tuple(float(v) for v in F.origin))
    img.SetDirection(tuple(float(v) for v in F.direction.ravel()))
    return img


def read_displacement_field(path, src: Space | str | None = None, dst: Space | str | None = None,
                            file_unit: str | None = None, outside: str = "zero") -> Transform:
    """Read a displacement-field image (ANTs ``*Warp.nii.gz``, any ITK vector image) as ``src -> dst``.

    The vectors are physical displacements ``y = x + u(x)`` in ITK's (LPS)
    frame, as ANTs writes them. ``outside="zero"`` (default) keeps points off
    the grid in place, as ITK and ANTs do; ``"nan"`` marks them.

    Examples
    --------
    >>> F = read_displacement_field("reg_1Warp.nii.gz", src="fixed", dst="moving")  # doctest: +SKIP
    """
    p = _exists(path)
    src, dst = as_space(src, "src"), as_space(dst, "dst")
    unit = normalize_unit(file_unit) if file_unit is not None else src.unit
    if file_unit is None and src.unit != dst.unit:
        raise InputError(f"a displacement field maps within one unit, but src is in {src.unit} and dst in "
                         f"{dst.unit}; pass file_unit= (the unit of the file's numbers)", path=p,
                         field="file_unit")
    return _wrap_units(lambda s, d: _read_field(p, s, d, outside), src, dst, unit, unit, p)


def write_displacement_field(F: Transform, path, force: bool = False) -> Path:
    """Write a DisplacementField as a vector image (``.nii.gz`` as ANTs writes its warps).

    Numbers are written in the field's own unit (see module notes); the NIfTI
    header's nominal "mm" is not a conversion.
    """
    import SimpleITK as sitk

    from ..io.atomic import atomic_path

    F = _single_field(resolved(F), path)
    img = field_to_sitk_image(F)
    suffix = suffix_of(path)
    with atomic_path(path, force, suffix=suffix) as tmp:
        try:
            sitk.WriteImage(img, str(tmp), useCompression=suffix.endswith(".gz"))
        except RuntimeError as exc:
            raise InputError(f"cannot write the displacement field: {_first_line(exc)}", path=path) from None
    return Path(path)


def _single_field(T: Transform, path) -> DisplacementField:
    if isinstance(T, Sequence):
        steps = T.simplified()
        if len(steps) == 1:
            T = steps[0]
    if not isinstance(T, DisplacementField):
        raise InputError(f"a {suffix_of(path)} image holds one displacement field, not a {type(T).__name__}; "
                         "save chains as .h5 (ITK composite) or .json (NGFF)", path=path, field="transform")
    return T


# ---------------------------------------------------------------------------------------------
# ITK transform files
# ---------------------------------------------------------------------------------------------
def _read_sitk_transform(path: Path):
    import SimpleITK as sitk

    declared = _precheck_transform_file(path)
    try:
        tx = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read the ITK transform file (corrupt, truncated or not a transform "
                         f"file): {_first_line(exc)}", path=path) from None
    flat = _flatten_sitk(tx, path)
    if declared is not None and sorted(declared) != sorted(len(t.GetParameters()) for t in flat):
        # ITK pads a short parameter list (a file cut short) with defaults instead of failing.
        raise InputError(f"the file lists {declared} parameter(s) but its transform types take "
                         f"{[len(t.GetParameters()) for t in flat]}: it is cut short or damaged", path=path,
                         field="Parameters")
    for t in flat:
        if t.IsLinear() and not np.all(np.isfinite([*t.GetParameters(), *t.GetFixedParameters()])):
            raise InputError("the transform parameters contain NaN or inf", path=path, field="Parameters")
    return tx


def _precheck_transform_file(path: Path) -> list[int] | None:
    """Catch what ITK's transform readers let through or report badly; for text files return the number
    of values on each ``Parameters:`` line.

    Text (.tfm/.txt): ITK reads the numeric prefix of a garbled value ('1.2.3' -> 1.2, .3) and pads a
    cut-short list. MATLAB (.mat): ITK reads a truncated file. HDF5: the library prints its whole error
    stack to stderr for a damaged file, so h5py (which stays quiet) opens it first.
    """
    suf = suffix_of(path)
    if suf in (".tfm", ".txt"):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"not a text ITK transform file ({exc})", path=path) from None
        counts = []
        for i, line in enumerate(lines, start=1):
            key, _, rest = line.partition(":")
            if key.strip() not in ("Parameters", "FixedParameters"):
                continue
            try:
                vals = np.array([float(v) for v in rest.split()])
            except ValueError:
                raise InputError(f"line {i}: {key.strip()} holds a value that is not a number: "
                                 f"{rest.strip()[:80]!r}", path=path, field=key.strip()) from None
            if not np.all(np.isfinite(vals)):
                raise InputError(f"line {i}: {key.strip()} contain NaN or inf", path=path, field=key.strip())
            if key.strip() == "Parameters":
                counts.append(len(vals))
        return counts
    if suf == ".mat":
        import scipy.io

        try:
            scipy.io.loadmat(str(path))
        except Exception as exc:  # scipy raises ValueError/TypeError/EOFError on a short or garbled file
            raise InputError(f"not a complete MATLAB transform file (truncated or damaged): {exc}",
                             path=path) from None
    elif suf in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                f.visit(lambda name: None)  # walks the tree: a truncated file fails here, quietly
        except Exception as exc:
            raise InputError(f"not a readable HDF5 transform file (truncated or damaged): {exc}",
                             path=path) from None
    return None


def _flatten_sitk(tx, path) -> list:
    """The transforms of a (possibly composite) SimpleITK transform in the order they act on points."""
    import SimpleITK as sitk

    if tx.GetDimension() != 3:
        raise InputError(f"expected a 3-D transform, the file holds a {tx.GetDimension()}-D one", path=path,
                         field="dimension")
    t = tx.Downcast()
    if t.IsLinear():
        # One affine, whatever its ITK class; SimpleITK wraps classes it has no Python type for
        # (MatrixOffsetTransformBase, ...) as a composite that contains itself.
        return [t]
    if isinstance(t, sitk.CompositeTransform):
        # ITK applies a composite's transforms from the back of its queue to the front.
        out = []
        for i in reversed(range(t.GetNumberOfTransforms())):
            out.extend(_flatten_sitk(t.GetNthTransform(i), path))
        return out
    return [t]


def linear_matrix(t) -> np.ndarray | None:
    """4x4 matrix of a linear SimpleITK transform (affine, Euler, versor, similarity, scale, translation)."""
    if not t.IsLinear():
        return None
    m = np.eye(4)
    offset = np.asarray(t.TransformPoint((0.0, 0.0, 0.0)), float)  # = ITK's offset, exactly
    if hasattr(t, "GetMatrix"):
        m[:3, :3] = np.asarray(t.GetMatrix(), float).reshape(3, 3)
    else:
        for a in range(3):
            e = np.zeros(3)
            e[a] = 1.0
            m[:3, a] = np.asarray(t.TransformPoint(tuple(e)), float) - offset
    m[:3, 3] = offset
    return m


def _convert_sitk(t, s: Space, d: Space, outside: str, path) -> Transform:
    import SimpleITK as sitk

    m = linear_matrix(t)
    if m is not None:
        return Affine(m, s, d)
    if isinstance(t, sitk.DisplacementFieldTransform):
        if s.unit != d.unit:
            raise InputError("a displacement field maps within one unit; pass file_unit=", path=path)
        return field_from_sitk_image(t.GetDisplacementField(), s, d, outside, path)
    raise InputError(f"unsupported ITK transform type {t.GetName()!r}: atlasreg reads linear transforms "
                     "(Affine, Euler3D, Similarity3D, VersorRigid3D, Scale, Translation, ...), "
                     "DisplacementFieldTransform and composites of them", path=path, field="transform")


def _read_meta(p: Path) -> dict:
    """The spaces atlasreg recorded when it wrote the file (empty for foreign files)."""
    suf = suffix_of(p)
    try:
        if suf in (".h5", ".hdf5"):
            import h5py

            with h5py.File(p, "r") as f:
                raw = f.attrs.get(_META_KEY)
            if raw is None:
                return {}
            return json.loads(raw if isinstance(raw, str) else bytes(raw).decode())
        if suf in (".tfm", ".txt"):
            with open(p, encoding="utf-8", errors="replace") as fh:
                for _, line in zip(range(5), fh):
                    if line.startswith(f"# {_META_KEY}:"):
                        return json.loads(line.split(":", 1)[1])
    except (OSError, ValueError):
        return {}  # unreadable metadata never blocks reading the transform itself
    return {}


def _meta_space(meta: dict, key: str) -> Space | None:
    v = meta.get(key)
    if not isinstance(v, dict) or "name" not in v:
        return None
    try:
        return Space(v["name"], v.get("unit", "um"), v.get("orientation"))
    except InputError:
        return None


def read_itk(path, src: Space | str | None = None, dst: Space | str | None = None,
             file_unit: str | None = None, outside: str = "zero", attach_inverse: bool = True) -> Transform:
    """Read an ITK/ANTs transform file (``.h5``, ``.tfm``, ``.txt``, ``.mat``) as a transform ``src -> dst``.

    Linear ITK transforms of any kind (their centre/fixed parameters included)
    become an :class:`Affine`; a ``DisplacementFieldTransform`` a
    :class:`DisplacementField`; a ``CompositeTransform`` a :class:`Sequence` in
    the order ITK applies it to points.

    Parameters
    ----------
    path : str or Path
    src, dst : Space or str, optional
        The spaces the file maps between (for ANTs: fixed, moving). Defaults:
        what atlasreg recorded when it wrote the file, else ``"src"``/``"dst"`` (µm).
    file_unit : str, optional
        Unit of the file's numbers when it is not the spaces' unit.
    outside : {"zero", "nan"}
        What a displacement field does off its grid (ITK: zero displacement).

    Examples
    --------
    >>> A = read_itk("reg_0GenericAffine.mat", src="fixed", dst="moving")  # doctest: +SKIP
    """
    p = _exists(path)
    tx = _read_sitk_transform(p)
    parts = _flatten_sitk(tx, p)
    meta = _read_meta(p)
    src = as_space(src) if src is not None else (_meta_space(meta, "src") or as_space(None, "src"))
    dst = as_space(dst) if dst is not None else (_meta_space(meta, "dst") or as_space(None, "dst"))
    if file_unit is None and meta.get("file_unit"):
        file_unit = meta["file_unit"]
    in_unit = normalize_unit(file_unit) if file_unit is not None else src.unit
    out_unit = normalize_unit(file_unit) if file_unit is not None else dst.unit
    all_linear = all(linear_matrix(t) is not None for t in parts)
    if in_unit != out_unit and not all_linear:
        raise InputError(f"src is in {src.unit} and dst in {dst.unit}, but the file chains non-linear "
                         "transforms, whose numbers must share one unit: pass file_unit= (the unit the "
                         "file was written in)", path=p, field="file_unit")

    def build(s: Space, d: Space) -> Transform:
        if all_linear:
            m = np.eye(4)
            for t in parts:
                m = linear_matrix(t) @ m
            return Affine(m, s, d)
        spaces = [s] + [_mid(s, d, i + 1, s.unit) for i in range(len(parts) - 1)] + [d]
        steps = [_convert_sitk(t, a, b, outside, p) for t, a, b in zip(parts, spaces[:-1], spaces[1:])]
        return steps[0] if len(steps) == 1 else Sequence(steps)

    result = _wrap_units(build, src, dst, in_unit, out_unit, p)
    partner = _ants_partner([(p, False)]) if attach_inverse and not all_linear else None
    if partner is not None:
        q = partner[0][0]
        result.with_inverse(LazyTransform(
            lambda: read_itk(q, dst, src, file_unit=file_unit, outside=outside, attach_inverse=False), dst, src,
            f"ANTs inverse composite {q}"))
    return result


def _flat_steps(T: Transform) -> list[Transform]:
    """The steps of ``T`` with lazily read pieces resolved and adjacent affines folded."""
    T = resolved(T)
    if not isinstance(T, Sequence):
        return [T]
    flat: list[Transform] = []
    for t in T.steps:
        flat.extend(_flat_steps(t))
    return Sequence(flat).simplified() if len(flat) > 1 else flat


def _to_sitk(T: Transform, path):
    import SimpleITK as sitk

    steps = _flat_steps(T)
    out = []
    for t in steps:
        if isinstance(t, Affine):
            out.append(affine_to_sitk(t.matrix))
        elif isinstance(t, DisplacementField):
            out.append(sitk.DisplacementFieldTransform(field_to_sitk_image(t, np.float64)))
        else:
            raise InputError(
                f"ITK files hold affines and displacement fields, not a {type(t).__name__} (an inverse "
                "solved numerically or a spline has no exact ITK form). Save it as .json (NGFF, exact), "
                "or sample it first (InverseDisplacementField.to_field())", path=path, field="transform")
    if len(out) == 1:
        return out[0]
    # sitk.CompositeTransform([a, b]) maps x to a(b(x)): list the steps last-applied first.
    return sitk.CompositeTransform(out[::-1])


def _one_unit(T: Transform) -> Transform:
    """``T`` with every number in ``T.dst``'s unit when its ends differ and it holds a field."""
    steps = _flat_steps(T)
    if T.src.unit == T.dst.unit or all(isinstance(t, Affine) for t in steps):
        return T
    u = T.dst.unit
    s_u = Space(f"{T.src.name}@{u}", u)
    d_u = Space(f"{T.dst.name}@{u}", u)
    return Sequence([Affine.from_units(s_u, T.src), T, Affine.from_units(T.dst, d_u)])


def write_itk(T: Transform, path, force: bool = False) -> Path:
    """Write ``T`` as an ITK transform file (``.h5``, ``.tfm``, ``.txt``; ``.mat`` for one affine).

    The file holds ``T``'s point map ``T.src -> T.dst`` (see the module notes
    on direction): ``SimpleITK.ReadTransform(path).TransformPoint(p)`` equals
    ``T.map_points(p)``. A chain becomes an ITK ``CompositeTransform``. In
    ``.h5``/``.tfm``/``.txt`` files atlasreg also records the two spaces (an
    HDF5 attribute / a ``#`` comment that ITK and ANTs ignore), so
    :func:`read_itk` restores them. A chain whose ends have different units and
    that holds a field is written with all numbers in ``T.dst``'s unit (recorded
    as ``file_unit``).
    """
    import SimpleITK as sitk

    from ..io.atomic import atomic_path

    suffix = suffix_of(path)
    file_unit = None
    T = resolved(T)
    W = _one_unit(T)
    if W is not T:
        file_unit = T.dst.unit
    tx = _to_sitk(W, path)
    if suffix == ".mat" and not isinstance(tx, sitk.AffineTransform):
        raise InputError(f"an ANTs/ITK .mat file holds one affine, not a {type(T).__name__} with fields; "
                         "use .h5 for chains", path=path, field="transform")
    meta = json.dumps({
        "src": {"name": T.src.name, "unit": T.src.unit, "orientation": T.src.orientation},
        "dst": {"name": T.dst.name, "unit": T.dst.unit, "orientation": T.dst.orientation},
        "file_unit": file_unit,
    })
    with atomic_path(path, force, suffix=suffix) as tmp:
        try:
            sitk.WriteTransform(tx, str(tmp))
        except RuntimeError as exc:
            raise InputError(f"cannot write the transform: {_first_line(exc)}", path=path) from None
        if suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(tmp, "a") as f:
                f.attrs[_META_KEY] = meta
        elif suffix in (".tfm", ".txt"):
            text = Path(tmp).read_text()
            first, _, rest = text.partition("\n")
            Path(tmp).write_text(f"{first}\n# {_META_KEY}: {meta}\n{rest}")
    return Path(path)


# ---------------------------------------------------------------------------------------------
# ANTs transform lists
# ---------------------------------------------------------------------------------------------
def _list_entries(items, where: str) -> list[tuple[Path, bool]]:
    """``(path, invert)`` pairs with ``ants.apply_transforms_to_points``'s default inversion rule."""
    raw = []
    explicit = False
    for it in items:
        if isinstance(it, (tuple, list)) and len(it) == 2 and isinstance(it[1], (bool, np.bool_)):
            raw.append((Path(it[0]), bool(it[1])))
            explicit = True
        elif isinstance(it, (str, os.PathLike)):
            raw.append((Path(it), None))
        else:
            raise InputError(f"a transform list holds file paths (or (path, invert) pairs), got {it!r}",
                             path=where, field="transformlist")
    if not raw:
        raise InputError("the transform list is empty", path=where, field="transformlist")
    if explicit:
        return [(p, bool(inv)) for p, inv in raw]
    # ANTsPy: [matrix, field] means "invert the matrix" (the inverse list ants.registration returns).
    if len(raw) == 2 and ".mat" in raw[0][0].name and ".mat" not in raw[1][0].name:
        return [(raw[0][0], True), (raw[1][0], False)]
    return [(p, False) for p, _ in raw]


def read_ants_list(items, src: Space | str | None = None, dst: Space | str | None = None,
                   file_unit: str | None = None, outside: str = "zero", attach_inverse: bool = True) -> Transform:
    """A list of ANTs/ITK transform files as one transform ``src -> dst``, exactly as ANTs maps points.

    The list is read as ``ants.apply_transforms_to_points`` reads it: its
    first file acts on the points first, and with no explicit flags a
    ``[matrix.mat, field]`` pair (the ``invtransforms`` of ``ants.registration``)
    inverts the matrix. So ``read_ants_list(reg["fwdtransforms"], fixed, moving)``
    is the map ``y = A(x + u(x))`` of fixed points to moving points, and
    ``read_ants_list(reg["invtransforms"], moving, fixed)`` its inverse chain.
    An entry may be a ``(path, invert)`` pair to say explicitly that a matrix
    is to be inverted.

    Where ANTs wrote the inverse chain beside the list (``1InverseWarp.nii.gz``
    beside ``1Warp.nii.gz`` on the same grid, and the reverse), it becomes the
    result's exact inverse, read when first used (``attach_inverse=False`` skips this).
    """
    src, dst = as_space(src, "src"), as_space(dst, "dst")
    entries = _list_entries(items, str(items))
    result = _read_entries(entries, src, dst, file_unit, outside)
    partner = _ants_partner(entries) if attach_inverse else None
    if partner is not None:
        result.with_inverse(LazyTransform(
            lambda: _read_entries(partner, dst, src, file_unit, outside), dst, src,
            f"ANTs inverse chain {[str(p) for p, _ in partner]}"))
    return result


def _read_entries(entries, src: Space, dst: Space, file_unit, outside) -> Transform:
    unit = normalize_unit(file_unit) if file_unit is not None else src.unit
    if file_unit is None and src.unit != dst.unit:
        pieces_linear = all(suffix_of(p) == ".mat" for p, _ in entries)
        if not pieces_linear:
            raise InputError(f"src is in {src.unit} and dst in {dst.unit}: pass file_unit= (the unit of the "
                             "ANTs files' numbers)", path=str(entries[0][0]), field="file_unit")
        unit = None

    def build(s: Space, d: Space) -> Transform:
        n = len(entries)
        spaces = [s] + [_mid(s, d, i + 1, s.unit) for i in range(n - 1)] + [d]
        steps = []
        for (p, inv), a, b in zip(entries, spaces[:-1], spaces[1:]):
            if inv:
                t = load_piece(p, b, a, outside)
                if not t.exact_inverse:
                    raise InputError("only a matrix (.mat) can be inverted in an ANTs transform list; a "
                                     "field's inverse is its own file (InverseWarp)", path=p,
                                     field="whichtoinvert")
                t = t.inverse()
            else:
                t = load_piece(p, a, b, outside)
            steps.append(t)
        if all(isinstance(t, Affine) for t in steps):
            m = np.eye(4)
            for t in steps:
                m = t.matrix @ m
            return Affine(m, s, d)
        return steps[0] if n == 1 else Sequence(steps)

    if unit is None:  # all matrices, ends in different units: numbers taken as they are
        return build(src, dst)
    return _wrap_units(build, src, dst, unit, unit, entries[0][0])


class LazyTransform(Transform):
    """A transform read from disk when first used (ANTs' inverse warp, attached as an explicit inverse)."""

    def __init__(self, loader, src: Space, dst: Space, what: str):
        super().__init__(src, dst)
        self._loader = loader
        self._loaded: Transform | None = None
        self.what = what

    def load(self) -> Transform:
        if self._loaded is None:
            t = self._loader()
            if t.src.name != self.src.name or t.dst.name != self.dst.name:
                raise SpaceMismatchError(f"{self.what} maps {t.src.name} -> {t.dst.name}, expected "
                                         f"{self.src.name} -> {self.dst.name}")
            self._loaded = t
        return self._loaded

    @property
    def exact_inverse(self) -> bool:  # type: ignore[override]
        return self.load().exact_inverse

    def _map(self, pts: np.ndarray) -> np.ndarray:
        return self.load()._map(pts)

    def _inverse(self) -> Transform:
        return self.load().inverse()

    def __repr__(self) -> str:
        return f"LazyTransform({self.src.name} -> {self.dst.name}: {self.what})"


def resolved(T: Transform) -> Transform:
    """``T`` itself, or what a :class:`LazyTransform` stands for (read now)."""
    return T.load() if isinstance(T, LazyTransform) else T


def _same_grid(a: Path, b: Path) -> bool:
    import SimpleITK as sitk

    try:
        infos = []
        for p in (a, b):
            r = sitk.ImageFileReader()
            r.SetFileName(str(p))
            r.ReadImageInformation()
            infos.append((r.GetSize(), np.round(r.GetSpacing(), 6).tolist(), np.round(r.GetOrigin(), 6).tolist(),
                          np.round(r.GetDirection(), 6).tolist(), r.GetNumberOfComponents()))
        return infos[0] == infos[1]
    except RuntimeError:
        return False


def _ants_partner(entries) -> list[tuple[Path, bool]] | None:
    """The inverse chain ANTs wrote beside a standard ANTs list, or None.

    ``[P1Warp.nii.gz, P0GenericAffine.mat]`` <-> ``[(P0GenericAffine.mat, inverted), P1InverseWarp.nii.gz]``
    and ``PComposite.h5`` <-> ``PInverseComposite.h5``.
    """
    if len(entries) == 1 and not entries[0][1]:
        p = entries[0][0]
        name = p.name
        if name.endswith("InverseComposite.h5"):
            q = p.with_name(name[: -len("InverseComposite.h5")] + "Composite.h5")
        elif name.endswith("Composite.h5"):
            q = p.with_name(name[: -len("Composite.h5")] + "InverseComposite.h5")
        else:
            return None
        return [(q, False)] if q.is_file() else None
    if len(entries) != 2:
        return None
    (a, ia), (b, ib) = entries
    if not ia and not ib and suffix_of(b) == ".mat" and a.name.endswith("Warp.nii.gz") \
            and not a.name.endswith("InverseWarp.nii.gz"):
        inv_warp = a.with_name(a.name[: -len("Warp.nii.gz")] + "InverseWarp.nii.gz")
        if inv_warp.is_file() and _same_grid(a, inv_warp):
            return [(b, True), (inv_warp, False)]
    if ia and not ib and suffix_of(a) == ".mat" and b.name.endswith("InverseWarp.nii.gz"):
        warp = b.with_name(b.name[: -len("InverseWarp.nii.gz")] + "Warp.nii.gz")
        if warp.is_file() and _same_grid(b, warp):
            return [(warp, False), (a, False)]
    return None


def load_piece(path: Path, s: Space, d: Space, outside: str) -> Transform:
    """One file of an ANTs list, numbers as they are (units handled by the caller)."""
    suf = suffix_of(path)
    if suf in FIELD_SUFFIXES:
        p = _exists(path)
        if s.unit != d.unit:
            raise InputError("a displacement field maps within one unit; pass file_unit=", path=p)
        return _read_field(p, s, d, outside)
    if suf in TRANSFORM_SUFFIXES:
        p = _exists(path)
        parts = _flatten_sitk(_read_sitk_transform(p), p)
        if len(parts) == 1:
            return _convert_sitk(parts[0], s, d, outside, p)
        spaces = [s] + [_mid(s, d, i + 1, s.unit) for i in range(len(parts) - 1)] + [d]
        return Sequence([_convert_sitk(t, a, b, outside, p) for t, a, b in zip(parts, spaces[:-1], spaces[1:])])
    raise InputError(f"unknown transform file type {suf!r}: expected one of "
                     f"{', '.join(TRANSFORM_SUFFIXES + FIELD_SUFFIXES)}", path=path, field="suffix")


def load_ants_registration(reg, fixed: Space | str, moving: Space | str,
                           file_unit: str | None = None) -> Transform:
    """The result of ``ants.registration`` as the map moving -> fixed with ANTs' exact inverse attached.

    ``reg`` is the dict ``ants.registration`` returns (or any mapping with
    ``fwdtransforms`` and ``invtransforms``), or a pair ``(fwdtransforms,
    invtransforms)``. The returned transform maps MOVING points into the FIXED
    space (the ``invtransforms`` chain, as ``ants.apply_transforms_to_points``
    maps them); its ``.inverse()`` is exactly the ``fwdtransforms`` chain
    ``y = A(x + u(x))`` taking fixed points to moving points, which is also the
    pull-back that warps a moving image into the fixed grid.

    Examples
    --------
    >>> reg = ants.registration(fixed_img, moving_img, "SyN")              # doctest: +SKIP
    >>> T = load_ants_registration(reg, fixed="ccf", moving="sample")      # doctest: +SKIP
    >>> T.map_points(cells_in_sample)            # -> ccf                  # doctest: +SKIP
    """
    if isinstance(reg, dict) or hasattr(reg, "keys"):
        try:
            fwd, inv = reg["fwdtransforms"], reg["invtransforms"]
        except KeyError as exc:
            raise InputError(f"registration result has no {exc.args[0]!r}: pass the dict "
                             "ants.registration returns", field="reg") from None
    elif isinstance(reg, (tuple, list)) and len(reg) == 2 and all(
            isinstance(x, (list, tuple, str, os.PathLike)) for x in reg):
        fwd, inv = reg
    else:
        raise InputError("reg must be the dict ants.registration returns or (fwdtransforms, invtransforms)",
                         field="reg")
    fixed, moving = as_space(fixed, "fixed"), as_space(moving, "moving")
    if isinstance(fwd, (str, os.PathLike)):
        fwd = [fwd]
    if isinstance(inv, (str, os.PathLike)):
        inv = [inv]
    fwd_entries = _list_entries(fwd, str(fwd))
    inv_entries = _list_entries(inv, str(inv))
    # The inverse list of an affine-only run is [affine.mat]: it must be inverted (ANTsPy leaves
    # single matrices alone, so state it explicitly).
    if len(inv_entries) == 1 and suffix_of(inv_entries[0][0]) == ".mat":
        inv_entries = [(inv_entries[0][0], True)]
    forward = read_ants_list(fwd_entries, fixed, moving, file_unit=file_unit, attach_inverse=False)
    backward = read_ants_list(inv_entries, moving, fixed, file_unit=file_unit, attach_inverse=False)
    if backward.src.name != moving.name or backward.dst.name != fixed.name:
        raise SpaceMismatchError("internal: inverse chain does not run moving -> fixed")
    return backward.with_inverse(forward)
