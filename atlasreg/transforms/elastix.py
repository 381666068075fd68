"""elastix ``TransformParameters.*.txt`` files: affine, Euler, similarity, translation and B-spline, chained.

Direction (CONVENTIONS): like every ITK file, an elastix transform maps FIXED
points to MOVING points (the pull-back transformix resamples the moving image
with), so ``read_elastix(path, src=<fixed space>, dst=<moving space>)``, and
``map_points`` equals transformix's ``OutputPoint`` for the same input points.

A parameter file names the transform it starts from
(``InitialTransformParameterFileName``); with ``HowToCombineTransforms
"Compose"`` (elastix's default) the result is ``T(x) = T_this(T_initial(x))``:
the initial transform acts on the points first. The initial file is read only
from the folder of the file that names it (elastix writes an absolute path; a
folder that was moved keeps working as long as the files stay together under
their names).

Units: elastix works in the images' physical units and records none; the
numbers are taken in the spaces' units unless ``file_unit=`` names them (e.g.
``"mm"`` for a registration of NIfTI files).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..spaces import Space, as_space, normalize_unit
from .base import Affine, Sequence, Transform
from .bspline import BSplineTransform
from .fileutil import chain_space, existing_file, wrap_units
from .sitk_bridge import linear_matrix

#: Largest parameter file read (a B-spline on a fine grid is a few MB of text).
MAX_BYTES = 512 * 1024 * 1024
#: Longest chain of initial transforms followed.
MAX_CHAIN = 64

_ENTRY = re.compile(r"\(\s*([A-Za-z_][A-Za-z0-9_]*)((?:[^()\"]|\"[^\"]*\")*)\)")
_VALUE = re.compile(r"\"([^\"]*)\"|(\S+)")


def is_elastix_file(path) -> bool:
    """True when a text file reads like an elastix parameter file (its first entry is ``(Key ...)``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    for line in head.splitlines():
        s = line.strip()
        if not s or s.startswith("//"):
            continue
        return s.startswith("(")
    return False


def _strip_comment(line: str) -> str:
    """``line`` without its ``//`` comment (a ``//`` inside a quoted string is kept)."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "/" and not quoted and line[i + 1:i + 2] == "/":
            return line[:i]
    return line


def read_parameter_file(path) -> dict[str, list]:
    """The entries of an elastix parameter file: ``{key: [values]}`` (numbers as float, strings as str).

    Examples
    --------
    >>> read_parameter_file("TransformParameters.0.txt")["Transform"]  # doctest: +SKIP
    ['AffineTransform']
    """
    p = existing_file(path)
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise InputError(f"the elastix parameter file is {size} bytes, more than the {MAX_BYTES} atlasreg reads",
                         path=p)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not a text elastix parameter file ({exc})", path=p) from None
    text = "\n".join(_strip_comment(line) for line in text.splitlines())
    out: dict[str, list] = {}
    for m in _ENTRY.finditer(text):
        vals: list = []
        for q, bare in _VALUE.findall(m.group(2)):
            if bare:
                try:
                    vals.append(float(bare))
                except ValueError:
                    raise InputError(f"({m.group(1)} ...) holds {bare[:40]!r}, neither a number nor a quoted "
                                     "string", path=p, field=m.group(1)) from None
            else:
                vals.append(q)
        out[m.group(1)] = vals
    if "Transform" not in out:
        raise InputError("not an elastix transform parameter file: it has no (Transform ...) entry", path=p,
                         field="Transform")
    return out


def _numbers(params: dict, key: str, n: int | None, path, default=None) -> np.ndarray:
    if key not in params:
        if default is not None:
            return np.asarray(default, float)
        raise InputError(f"the elastix file has no ({key} ...) entry", path=path, field=key)
    v = params[key]
    if not all(isinstance(x, float) for x in v):
        raise InputError(f"({key} ...) must hold numbers, got {v[:6]!r}", path=path, field=key)
    a = np.asarray(v, float)
    if n is not None and a.size != n:
        raise InputError(f"({key} ...) holds {a.size} value(s), a 3-D transform needs {n}", path=path, field=key)
    if not np.all(np.isfinite(a)):
        raise InputError(f"({key} ...) contains NaN or inf", path=path, field=key)
    return a


def _word(params: dict, key: str, default: str) -> str:
    v = params.get(key, [default])
    return str(v[0]) if v else default


def _linear(params: dict, kind: str, path) -> np.ndarray:
    """The 4x4 matrix of an elastix linear transform (built as SimpleITK's class of the same parameters)."""
    import SimpleITK as sitk

    center = _numbers(params, "CenterOfRotationPoint", 3, path, default=(0.0, 0.0, 0.0))
    if kind == "TranslationTransform":
        t = sitk.TranslationTransform(3, tuple(_numbers(params, "TransformParameters", 3, path)))
        return linear_matrix(t)
    if kind == "AffineTransform":
        t, n = sitk.AffineTransform(3), 12
    elif kind == "EulerTransform":
        t, n = sitk.Euler3DTransform(), 6
        t.SetComputeZYX(_word(params, "ComputeZYX", "false").lower() == "true")
    elif kind == "SimilarityTransform":
        t, n = sitk.Similarity3DTransform(), 7
    else:  # pragma: no cover - callers pass only the kinds above
        raise AssertionError(kind)
    t.SetCenter(tuple(center))
    t.SetParameters(tuple(_numbers(params, "TransformParameters", n, path)))
    return linear_matrix(t)


def _bspline(params: dict, s: Space, d: Space, outside: str, path) -> BSplineTransform:
    order = int(_numbers(params, "BSplineTransformSplineOrder", 1, path, default=(3,))[0])
    if order != 3:
        raise InputError(f"atlasreg reads cubic elastix B-splines; this one has order {order}", path=path,
                         field="BSplineTransformSplineOrder")
    if _word(params, "UseCyclicTransform", "false").lower() == "true":
        raise InputError("cyclic elastix B-splines (UseCyclicTransform \"true\") are not supported", path=path,
                         field="UseCyclicTransform")
    size = _numbers(params, "GridSize", 3, path)
    if np.any(size != np.round(size)) or np.any(size < 4):
        raise InputError(f"GridSize {size.tolist()} is not a whole number >= 4 per axis", path=path,
                         field="GridSize")
    size = size.astype(int)
    if np.any(_numbers(params, "GridIndex", 3, path, default=(0, 0, 0)) != 0):
        raise InputError("an elastix B-spline grid with a GridIndex other than 0 is not supported", path=path,
                         field="GridIndex")
    spacing = _numbers(params, "GridSpacing", 3, path)
    origin = _numbers(params, "GridOrigin", 3, path)
    direction = _numbers(params, "GridDirection", 9, path, default=np.eye(3).ravel()).reshape(3, 3)
    w = _numbers(params, "TransformParameters", 3 * int(np.prod(size)), path)
    # As ITK: all x coefficients, then y, then z; each in index order with x fastest.
    w = w.reshape(3, size[2], size[1], size[0]).transpose(3, 2, 1, 0)
    try:
        return BSplineTransform(w, spacing=spacing, origin=origin, direction=direction, src=s, dst=d,
                                outside=outside)
    except InputError as exc:
        raise InputError(str(exc), path=path, field="TransformParameters") from None


_LINEAR = ("AffineTransform", "EulerTransform", "SimilarityTransform", "TranslationTransform")
_BSPLINE = ("BSplineTransform", "RecursiveBSplineTransform")


def _initial_file(params: dict, path: Path) -> Path | None:
    name = _word(params, "InitialTransformParameterFileName",
                 _word(params, "InitialTransformParametersFileName", "NoInitialTransform"))
    if name in ("NoInitialTransform", ""):
        return None
    folder = path.parent.resolve()
    q = Path(name)
    q = q if q.is_absolute() else folder / q
    if q.is_symlink() or q.resolve().parent != folder:
        beside = folder / q.name
        hint = (f"; a file of that name lies beside it: set (InitialTransformParameterFileName \"{q.name}\")"
                if beside.is_file() else "")
        raise InputError(f"the initial transform {name!r} is not in the folder of the file that names it; "
                         f"atlasreg reads initial transforms only from there{hint}", path=path,
                         field="InitialTransformParameterFileName")
    if not q.is_file():
        raise InputError(f"the initial transform {name!r} does not exist", path=path,
                         field="InitialTransformParameterFileName")
    return q


def _chain(path: Path) -> list[tuple[Path, dict]]:
    """The files of a chain, the one acting on points first first."""
    chain: list[tuple[Path, dict]] = []
    seen = set()
    p: Path | None = path
    while p is not None:
        key = p.resolve()
        if key in seen:
            raise InputError("the chain of initial transforms loops back to a file already read", path=p,
                             field="InitialTransformParameterFileName")
        if len(chain) >= MAX_CHAIN:
            raise InputError(f"the chain of initial transforms is longer than {MAX_CHAIN} files", path=path,
                             field="InitialTransformParameterFileName")
        seen.add(key)
        params = read_parameter_file(p)
        kind = _word(params, "Transform", "")
        if kind not in _LINEAR + _BSPLINE:
            raise InputError(f"unsupported elastix transform {kind!r}: atlasreg reads "
                             f"{', '.join(_LINEAR + _BSPLINE)}", path=p, field="Transform")
        dims = int(_numbers(params, "FixedImageDimension", 1, p, default=(3,))[0])
        if dims != 3:
            raise InputError(f"atlasreg reads 3-D elastix transforms; this one is {dims}-D", path=p,
                             field="FixedImageDimension")
        how = _word(params, "HowToCombineTransforms", "Compose")
        nxt = _initial_file(params, p)
        if nxt is not None and how != "Compose":
            raise InputError(f"HowToCombineTransforms {how!r} is not supported (only \"Compose\", elastix's "
                             "default: the initial transform, then this one)", path=p,
                             field="HowToCombineTransforms")
        chain.append((p, params))
        p = nxt
    return chain[::-1]


def read_elastix(path, src: Space | str | None = None, dst: Space | str | None = None,
                 file_unit: str | None = None, outside: str = "zero") -> Transform:
    """Read an elastix ``TransformParameters.*.txt`` (and the initial transforms it names) as ``src -> dst``.

    Parameters
    ----------
    path : str or Path
    src, dst : Space or str, optional
        The registration's FIXED and MOVING spaces (defaults ``"src"``/``"dst"``, µm).
    file_unit : str, optional
        The unit of the images elastix registered, when it is not the spaces' unit.
    outside : {"zero", "nan"}
        A B-spline off its control grid: no displacement (elastix, ITK) or NaN.

    Examples
    --------
    >>> T = read_elastix("out/TransformParameters.1.txt", src="fixed", dst="moving")  # doctest: +SKIP
    >>> T.map_points(fixed_points)           # == transformix's OutputPoint          # doctest: +SKIP
    """
    p = existing_file(path)
    src, dst = as_space(src, "src"), as_space(dst, "dst")
    chain = _chain(p)
    unit = normalize_unit(file_unit) if file_unit is not None else src.unit
    all_linear = all(_word(params, "Transform", "") in _LINEAR for _, params in chain)
    if file_unit is None and src.unit != dst.unit and not all_linear:
        raise InputError(f"src is in {src.unit} and dst in {dst.unit}, but the chain holds a B-spline, whose "
                         "numbers share one unit: state the file unit (the unit of the registered images)", path=p,
                         field="file_unit")

    def build(s: Space, d: Space) -> Transform:
        spaces = [s] + [chain_space(s, d, i + 1, s.unit) for i in range(len(chain) - 1)] + [d]
        steps: list[Transform] = []
        for (f, params), a, b in zip(chain, spaces[:-1], spaces[1:]):
            kind = _word(params, "Transform", "")
            if kind in _LINEAR:
                steps.append(Affine(_linear(params, kind, f), a, b))
            else:
                steps.append(_bspline(params, a, b, outside, f))
        if all(isinstance(t, Affine) for t in steps):
            m = np.eye(4)
            for t in steps:
                m = t.matrix @ m
            return Affine(m, s, d)
        return steps[0] if len(steps) == 1 else Sequence(steps)

    if file_unit is None and src.unit != dst.unit:  # all linear, ends in different units: numbers as they are
        return build(src, dst)
    return wrap_units(build, src, dst, unit, unit, p)
