"""ITK transform files: ``.h5`` / ``.tfm`` / ``.txt`` / ``.mat``.

Direction rule (CONVENTIONS): an ITK or ANTs file stores a map of points, the
pull-back used to resample. ``read_itk(path, src, dst)`` returns that map as a
transform ``src -> dst`` (for ANTs output: ``src`` = the FIXED space, ``dst`` =
the MOVING space), and :func:`write_itk` writes a transform's own point map, so
``sitk.ReadTransform(path).TransformPoint(p) == T.map_points(p)``. Used by ITK
or ANTs to resample an image, such a file therefore warps images of ``T.dst``
into grids of ``T.src`` (``T.src`` plays the fixed image).

Units: ITK files carry no unit. Their numbers are taken in the declared spaces'
units (input numbers in ``src.unit``, output numbers in ``dst.unit``; for files
atlasreg wrote, the units it recorded, and a bare space name takes them); ANTs run
on images with µm spacing (``Volume.to_ants``) writes µm. ``file_unit=`` says the
file is in another unit (e.g. ``"mm"`` for a registration run on NIfTI files
from disk); the conversion is inserted as explicit scalings at both ends.

A ``DisplacementFieldTransform`` in a file becomes a
:class:`DisplacementField`; off its grid it applies no displacement, as ITK
does (``outside="zero"``). Displacement-field images are :mod:`.field_image`,
ANTs transform lists :mod:`.ants_lists`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..spaces import Space, normalize_unit, resolve_space
from .base import Affine, LazyTransform, Sequence, Transform, resolved
from .field import DisplacementField
from .fileutil import chain_space, existing_file, itk_error_text, suffix_of, wrap_units
from .bspline import BSplineTransform
from .sitk_bridge import (affine_to_sitk, bspline_from_sitk, bspline_to_sitk, field_from_sitk_image,
                          field_to_sitk_image, linear_matrix)

_META_KEY = "atlasreg"  # HDF5 root attribute / text comment holding the spaces atlasreg wrote
#: Largest text (.tfm/.txt) transform file read.
MAX_TEXT_BYTES = 1 << 30


def transform_types(path: Path) -> list[str]:
    """The ITK transform type of each entry of a ``.tfm``/``.txt``/``.h5`` file, in file order ([] for ``.mat``).

    A file whose first entry is a ``CompositeTransform`` holds one chain (its
    other entries are the chain's parts); otherwise each entry is a transform of
    its own (an ITK transform list, e.g. one head-motion affine per volume).
    """
    suf = suffix_of(path)
    if suf in (".tfm", ".txt"):
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise InputError(f"the text transform file is {size} bytes, more than the {MAX_TEXT_BYTES} atlasreg "
                             "reads (save large fields as .h5 or .nii.gz)", path=path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"not a text ITK transform file ({exc})", path=path) from None
        if lines and lines[0].lstrip().startswith("("):
            raise InputError("an elastix parameter file, not an ITK transform file: read it on its own "
                             "(its initial transforms come with it)", path=path)
        if lines and not lines[0].startswith("#Insight Transform File"):
            raise InputError(f"not an ITK transform file: it starts with {lines[0][:60]!r}, not "
                             "'#Insight Transform File' (a symbolic link checked out as a text file?)",
                             path=path)
        return [ln.partition(":")[2].strip() for ln in lines if ln.partition(":")[0].strip() == "Transform"]
    if suf in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                group = f.get("TransformGroup")
                if not isinstance(group, h5py.Group):
                    return []
                keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
                out = []
                for k in keys:
                    raw = group[k].get("TransformType") if isinstance(group[k], h5py.Group) else None
                    v = raw[()] if isinstance(raw, h5py.Dataset) else b""
                    v = v[0] if isinstance(v, np.ndarray) and v.size else v
                    out.append(v.decode() if isinstance(v, bytes) else str(v))
                return out
        except Exception as exc:
            raise InputError(f"not a readable HDF5 transform file (truncated or damaged): {exc}",
                             path=path) from None
    return []


def count_transforms(path) -> int:
    """How many separate transforms an ITK file holds (1 for one transform or one composite chain)."""
    p = existing_file(path)
    types = transform_types(p)
    if not types or types[0].startswith("CompositeTransform"):
        return 1
    return len(types)


def read_sitk_transform(path: Path):
    import SimpleITK as sitk

    n = count_transforms(path)
    if n > 1:
        raise InputError(f"the file holds a list of {n} separate transforms (an ITK transform list, e.g. one "
                         f"per volume), not one chain: one of them must be chosen, by its position 0 to {n - 1} "
                         "(in Python, load_transforms reads the list)", path=path, field="transforms")
    declared = _precheck_transform_file(path)
    try:
        tx = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read the ITK transform file (corrupt, truncated or not a transform "
                         f"file): {itk_error_text(exc)}", path=path) from None
    flat = flatten_sitk(tx, path)
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

        from ..io.hdf5 import check_self_contained

        try:
            with h5py.File(path, "r") as f:
                f.visit(lambda name: None)  # walks the tree: a truncated file fails here, quietly
                # ITK would read parameters stored in other files (external storage, VDS, external links)
                check_self_contained(f, path)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"not a readable HDF5 transform file (truncated or damaged): {exc}",
                             path=path) from None
    return None


def flatten_sitk(tx, path) -> list:
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
            out.extend(flatten_sitk(t.GetNthTransform(i), path))
        return out
    return [t]


def convert_sitk(t, s: Space, d: Space, outside: str, path) -> Transform:
    import SimpleITK as sitk

    m = linear_matrix(t)
    if m is not None:
        return Affine(m, s, d)
    if isinstance(t, sitk.DisplacementFieldTransform):
        if s.unit != d.unit:
            raise InputError("a displacement field maps within one unit; pass file_unit=", path=path)
        return field_from_sitk_image(t.GetDisplacementField(), s, d, outside, path)
    if isinstance(t, sitk.BSplineTransform):
        if s.unit != d.unit:
            raise InputError("a B-spline maps within one unit: state the file unit (the unit of its numbers)", path=path)
        return bspline_from_sitk(t, s, d, outside, path)
    raise InputError(f"unsupported ITK transform type {t.GetName()!r}: atlasreg reads linear transforms "
                     "(Affine, Euler3D, Similarity3D, VersorRigid3D, Scale, Translation, ...), "
                     "BSplineTransform, DisplacementFieldTransform and composites of them", path=path,
                     field="transform")


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
    p = existing_file(path)
    tx = read_sitk_transform(p)
    parts = flatten_sitk(tx, p)
    meta = _read_meta(p)
    rec_src, rec_dst = _meta_space(meta, "src"), _meta_space(meta, "dst")
    # A bare name takes the unit the file records (resolve_space); a Space in another unit is converted.
    src = resolve_space(src, rec_src, "src", "src")
    dst = resolve_space(dst, rec_dst, "dst", "dst")
    step_units = meta.get("step_units")
    if not (isinstance(step_units, list) and len(step_units) == len(parts) + 1 and file_unit is None):
        step_units = None
    if file_unit is None and meta.get("file_unit"):
        file_unit = meta["file_unit"]
    if step_units is not None:
        step_units = [normalize_unit(u) for u in step_units]
        in_unit, out_unit = step_units[0], step_units[-1]
    else:
        in_unit = normalize_unit(file_unit) if file_unit is not None else (rec_src or src).unit
        out_unit = normalize_unit(file_unit) if file_unit is not None else (rec_dst or dst).unit
    all_linear = all(linear_matrix(t) is not None for t in parts)
    if in_unit != out_unit and not all_linear and step_units is None:
        raise InputError(f"src is in {src.unit} and dst in {dst.unit}, but the file chains non-linear "
                         "transforms, whose numbers must share one unit: pass file_unit= (the unit the "
                         "file was written in)", path=p, field="file_unit")

    def build(s: Space, d: Space) -> Transform:
        if all_linear:
            m = np.eye(4)
            for t in parts:
                m = linear_matrix(t) @ m
            return Affine(m, s, d)
        units = step_units or [s.unit] * (len(parts) + 1)
        spaces = [s] + [chain_space(s, d, i + 1, units[i + 1]) for i in range(len(parts) - 1)] + [d]
        steps = [convert_sitk(t, a, b, outside, p) for t, a, b in zip(parts, spaces[:-1], spaces[1:])]
        return steps[0] if len(steps) == 1 else Sequence(steps)

    result = wrap_units(build, src, dst, in_unit, out_unit, p)
    q = composite_partner(p) if attach_inverse and not all_linear else None
    if q is not None:
        result.with_inverse(LazyTransform(
            lambda: read_itk(q, dst, src, file_unit=file_unit, outside=outside, attach_inverse=False), dst, src,
            f"ANTs inverse composite {q}"))
    return result


def read_itk_list(path, src: Space | str | None = None, dst: Space | str | None = None,
                  file_unit: str | None = None, outside: str = "zero") -> list[Transform]:
    """Every transform of an ITK file, as a list of transforms ``src -> dst`` (one for a single transform).

    ITK transform files may hold a list of separate transforms (fMRIPrep's
    head-motion ``.tfm``: one affine per volume; ``itk.transformwrite`` of a
    list). Each entry is read by ITK's own reader as if it were a file of its
    own, in file order. A file holding one transform or one composite chain
    gives a list of one.

    Examples
    --------
    >>> motion = read_itk_list("sub-01_from-orig_to-boldref_mode-image_xfm.tfm", "bold", "boldref")  # doctest: +SKIP
    >>> motion[3].map_points(p)                                                                # doctest: +SKIP
    """
    import tempfile

    p = existing_file(path)
    n = count_transforms(p)
    if n == 1:
        return [read_itk(p, src, dst, file_unit=file_unit, outside=outside)]
    meta = _read_meta(p)
    src = resolve_space(src, _meta_space(meta, "src"), "src", "src")
    dst = resolve_space(dst, _meta_space(meta, "dst"), "dst", "dst")
    out = []
    with tempfile.TemporaryDirectory(prefix="atlasreg-itk-list-") as tmp:
        for i in range(n):
            part = Path(tmp) / f"entry{i}{suffix_of(p)}"
            _write_entry(p, i, part)
            try:
                out.append(read_itk(part, src, dst, file_unit=file_unit, outside=outside, attach_inverse=False))
            except InputError as exc:
                msg = str(exc).replace(f"{part}: ", "").replace(str(part), "")
                raise InputError(f"transform {i} of {n}: {msg}", path=p, field="transforms") from None
    return out


def _write_entry(path: Path, i: int, out: Path) -> None:
    """Entry ``i`` of an ITK transform list as a file of its own (ITK's reader then reads it as it is)."""
    if suffix_of(path) in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as f, h5py.File(out, "w") as g:
            for k in f.keys():
                if k != "TransformGroup":
                    f.copy(f[k], g, name=k)
            f.copy(f["TransformGroup"][str(i)], g.require_group("TransformGroup"), name="0")
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [j for j, ln in enumerate(lines) if ln.partition(":")[0].strip() == "Transform"]
    end = starts[i + 1] if i + 1 < len(starts) else len(lines)
    body = [ln for ln in lines[starts[i]:end] if not ln.startswith("#")]
    out.write_text("#Insight Transform File V1.0\n#Transform 0\n" + "\n".join(body) + "\n")


def composite_partner(path: Path) -> Path | None:
    """The inverse composite ANTs wrote beside a composite (``PComposite.h5`` <-> ``PInverseComposite.h5``)."""
    name = path.name
    if name.endswith("InverseComposite.h5"):
        q = path.with_name(name[: -len("InverseComposite.h5")] + "Composite.h5")
    elif name.endswith("Composite.h5"):
        q = path.with_name(name[: -len("Composite.h5")] + "InverseComposite.h5")
    else:
        return None
    return q if q.is_file() else None


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
            out.append(sitk.DisplacementFieldTransform(field_to_sitk_image(t, np.float64, path)))
        elif isinstance(t, BSplineTransform):
            out.append(bspline_to_sitk(t))
        else:
            raise InputError(
                f"ITK files hold affines, B-splines and displacement fields, not a {type(t).__name__} (an "
                "inverse solved numerically or a thin-plate spline has no exact ITK form). Save it as .json "
                "(NGFF, exact), or sample it first (InverseDisplacementField.to_field(); where some nodes have no "
                "inverse it needs fill='zero' or a number to be written)", path=path,
                field="transform")
    if len(out) == 1:
        return out[0]
    # sitk.CompositeTransform([a, b]) maps x to a(b(x)): list the steps last-applied first.
    return sitk.CompositeTransform(out[::-1])


def write_itk(T: Transform, path, force: bool = False) -> Path:
    """Write ``T`` as an ITK transform file (``.h5``, ``.tfm``, ``.txt``; ``.mat`` for one affine).

    The file holds ``T``'s point map ``T.src -> T.dst`` (see the module notes
    on direction): ``SimpleITK.ReadTransform(path).TransformPoint(p)`` equals
    ``T.map_points(p)``. A chain becomes an ITK ``CompositeTransform``. In
    ``.h5``/``.tfm``/``.txt`` files atlasreg also records the two spaces (an
    HDF5 attribute / a ``#`` comment that ITK and ANTs ignore), so
    :func:`read_itk` restores them. Units: ITK numbers have none, so each step is
    written in the units of its own spaces — input numbers in ``T.src``'s unit,
    output in ``T.dst``'s, a unit change inside the chain an exact scaling
    affine — which is what makes ``TransformPoint`` equal ``map_points`` for a
    mixed-unit chain (nm in, µm out) too. The unit at every step boundary is
    recorded (``step_units``) so :func:`read_itk` rebuilds the same spaces.
    """
    import SimpleITK as sitk

    from ..io.atomic import atomic_path

    suffix = suffix_of(path)
    T = resolved(T)
    steps = _flat_steps(T)
    tx = _to_sitk(T, path)
    if suffix == ".mat" and not isinstance(tx, (sitk.AffineTransform, sitk.BSplineTransform)):
        raise InputError(f"an ITK .mat file holds one affine or one B-spline, not a {type(T).__name__} with "
                         "fields or several steps; use .h5 for chains", path=path, field="transform")
    meta = json.dumps({
        "src": {"name": T.src.name, "unit": T.src.unit, "orientation": T.src.orientation},
        "dst": {"name": T.dst.name, "unit": T.dst.unit, "orientation": T.dst.orientation},
        "file_unit": None,
        "step_units": [steps[0].src.unit] + [t.dst.unit for t in steps],
    })
    with atomic_path(path, force, suffix=suffix) as tmp:
        try:
            sitk.WriteTransform(tx, str(tmp))
        except RuntimeError as exc:
            raise InputError(f"cannot write the transform: {itk_error_text(exc)}", path=path) from None
        if suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(tmp, "a") as f:
                f.attrs[_META_KEY] = meta
        elif suffix in (".tfm", ".txt"):
            text = Path(tmp).read_text()
            first, _, rest = text.partition("\n")
            Path(tmp).write_text(f"{first}\n# {_META_KEY}: {meta}\n{rest}")
    return Path(path)
