"""OME-NGFF 0.6 coordinate transformations in any dimension: parsed from JSON, applied to points, inverted.

Every transformation type of the specification is read: ``identity``,
``mapAxis``, ``projectAxis``, ``translation``, ``scale``, ``affine``,
``rotation``, ``sequence``, ``byDimension``, ``bijection``, ``coordinates`` and
``displacements`` (plus ``inverseOf`` and ``thinplatespline``, which older
atlasreg files hold). Points are rows ``(n, N)`` in the order of the input
coordinate system's axes.

* Matrix types invert in closed form (``rotation`` and ``affine`` by a linear
  solve, so a nearly-orthogonal rotation written with three decimals still
  round-trips).
* ``displacements`` invert numerically (atlasreg's field inverse); ``coordinates``
  and ``projectAxis`` that drops an axis do not invert: asking is an error.
* Fields (up to 3 spatial axes) are interpolated linearly by atlasreg's field
  kernel whatever their ``interpolation`` says (the specification lets a reader
  choose, and :attr:`Field.note` says so); points off the grid become NaN
  unless the file's ``atlasreg.outside`` says ``"zero"``.

Examples
--------
>>> T = parse({"type": "sequence", "transformations": [{"type": "scale", "scale": [10, 20]},
...                                                   {"type": "translation", "translation": [1, 1]}]})
>>> T.apply([[1.0, 2.0]])
array([[11., 41.]])
>>> T.inverse().apply([[11.0, 41.0]])
array([[1., 2.]])
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InputError
from . import store

MATRIX_TYPES = ("identity", "mapAxis", "projectAxis", "translation", "scale", "affine", "rotation")


class NotInvertible(InputError):
    """An NGFF transformation asked for in the direction it cannot be computed."""


class Context:
    """Where a transformation's arrays live: the hierarchy root, the group holding the metadata, the document."""

    def __init__(self, base: Path, group: Path | None = None, doc=None, outside: str | None = None):
        self.base = Path(base)
        self.group = Path(group) if group is not None else self.base
        self.doc = doc
        self.outside = outside

    def error(self, msg: str, field: str | None = None) -> InputError:
        return InputError(msg, path=self.doc, field=field)


# ---------------------------------------------------------------------------------------------
# The transformations
# ---------------------------------------------------------------------------------------------
class NDTransform:
    """One NGFF transformation: ``apply`` maps ``(n, N)`` points to ``(n, M)``."""

    kind = "?"
    #: True where the inverse is closed-form (or given, as in a bijection).
    exact_inverse = True
    io: tuple = (None, None)  # (input, output) references written on the object, if any

    def apply(self, points) -> np.ndarray:
        pts = np.asarray(points, dtype=float)
        if pts.ndim != 2:
            raise InputError(f"points must be an (n, D) array, got shape {pts.shape}", field="coordinates")
        return self._apply(pts)

    def _apply(self, pts: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def invertible(self) -> bool:
        try:
            self.inverse()
            return True
        except NotInvertible:
            return False

    def inverse(self) -> "NDTransform":
        raise NotInvertible(f"an NGFF {self.kind} transformation has no inverse atlasreg can compute")

    def homogeneous(self, n: int) -> np.ndarray | None:
        """The ``(M+1, N+1)`` matrix of a matrix-type transformation on ``n`` inputs, else None."""
        return None


class Matrix(NDTransform):
    """``identity``, ``mapAxis``, ``projectAxis``, ``translation``, ``scale``, ``affine``, ``rotation``."""

    def __init__(self, kind: str, m: np.ndarray | None, params=None):
        self.kind = kind
        self.m = m  # (M+1, N+1), or None when the size comes from the points (identity, projectAxis)
        self.params = params  # projectAxis: (dropped, created)

    def homogeneous(self, n: int) -> np.ndarray:
        if self.m is not None:
            if self.m.shape[1] != n + 1:
                raise InputError(f"{self.kind} transformation takes {self.m.shape[1] - 1}-D points, got {n}-D",
                                 field=self.kind)
            return self.m
        if self.kind == "identity":
            return np.eye(n + 1)
        dropped, created = self.params
        if any(i >= n for i in dropped):
            raise InputError(f"projectAxis drops input axis {max(dropped)} of {n}-D points", field="droppedInputs")
        keep = [i for i in range(n) if i not in dropped]
        m_out = len(keep) + len(created)
        if any(i >= m_out for i in created):
            raise InputError(f"projectAxis creates output axis {max(created)} of {m_out}", field="createdOutputs")
        m = np.zeros((m_out + 1, n + 1))
        rows = [j for j in range(m_out) if j not in created]
        for j, i in zip(rows, keep):
            m[j, i] = 1.0
        m[m_out, n] = 1.0
        return m

    def _apply(self, pts):
        m = self.homogeneous(pts.shape[1])
        return pts @ m[:-1, :-1].T + m[:-1, -1]

    def inverse(self) -> "Matrix":
        if self.kind == "projectAxis":
            dropped, created = self.params
            if dropped:
                raise NotInvertible(f"projectAxis drops input axes {list(dropped)}; the dropped coordinates "
                                    "cannot be recovered")
            inv = Matrix("projectAxis", None, params=(tuple(created), ()))
            if self.m is not None:
                inv.m = inv.homogeneous(self.m.shape[0] - 1)
            return inv
        if self.m is None:
            return self
        if self.m.shape[0] != self.m.shape[1]:
            raise NotInvertible(f"a {self.m.shape[1] - 1}-D -> {self.m.shape[0] - 1}-D {self.kind} has no inverse")
        if not np.all(np.isfinite(self.m)) or abs(np.linalg.det(self.m)) < 1e-300 or \
                np.linalg.cond(self.m) > 1e14:
            raise NotInvertible(f"the {self.kind} matrix is singular; it has no inverse")
        return Matrix(self.kind, np.linalg.solve(self.m, np.eye(len(self.m))))


class SequenceND(NDTransform):
    kind = "sequence"

    def __init__(self, items: list[NDTransform]):
        self.items = items

    @property
    def exact_inverse(self):  # type: ignore[override]
        return all(t.exact_inverse for t in self.items)

    def _apply(self, pts):
        for t in self.items:
            pts = t._apply(pts)
        return pts

    def inverse(self):
        return SequenceND([t.inverse() for t in reversed(self.items)])

    def homogeneous(self, n):
        m = np.eye(n + 1)
        for t in self.items:
            h = t.homogeneous(m.shape[0] - 1)
            if h is None:
                return None
            m = h @ m
        return m


class ByDimension(NDTransform):
    """Lower-dimensional transformations on subsets of the axes."""

    kind = "byDimension"

    def __init__(self, items: list[tuple[NDTransform, list[int], list[int]]], n_in: int | None, n_out: int | None):
        outs = [j for _, _, o in items for j in o]
        n_out = n_out if n_out is not None else (max(outs) + 1 if outs else 0)
        if sorted(outs) != list(range(n_out)):
            raise InputError(f"byDimension: every output axis 0..{n_out - 1} must appear in exactly one "
                             f"'outputAxes', got {outs}", field="outputAxes")
        ins = [i for _, a, _ in items for i in a]
        if n_in is not None and any(i >= n_in or i < 0 for i in ins):
            raise InputError(f"byDimension: input axes {ins} do not all exist in a {n_in}-D input", field="inputAxes")
        self.items, self.n_in, self.n_out = items, n_in, n_out

    @property
    def exact_inverse(self):  # type: ignore[override]
        return all(t.exact_inverse for t, _, _ in self.items)

    def _apply(self, pts):
        out = np.full((len(pts), self.n_out), np.nan)
        for t, a, o in self.items:
            if max(a) >= pts.shape[1]:
                raise InputError(f"byDimension reads input axis {max(a)} of {pts.shape[1]}-D points",
                                 field="inputAxes")
            y = t._apply(pts[:, a])
            if y.shape[1] != len(o):
                raise InputError(f"a byDimension part gives {y.shape[1]} coordinates for outputAxes {o}",
                                 field="outputAxes")
            out[:, o] = y
        return out

    def inverse(self):
        ins = sorted(i for _, a, _ in self.items for i in a)
        n_in = self.n_in if self.n_in is not None else (max(ins) + 1 if ins else 0)
        if ins != list(range(n_in)):
            raise NotInvertible("byDimension reads some input axes twice or not at all; it has no inverse")
        return ByDimension([(t.inverse(), o, a) for t, a, o in self.items], self.n_out, n_in)

    def homogeneous(self, n):
        m = np.zeros((self.n_out + 1, n + 1))
        m[-1, -1] = 1.0
        for t, a, o in self.items:
            h = t.homogeneous(len(a))
            if h is None:
                return None
            if h.shape[0] != len(o) + 1:
                return None
            for r, j in enumerate(o):
                m[j, a] = h[r, :-1]
                m[j, -1] = h[r, -1]
        return m


class ParsedOnUse:
    """One half of a bijection, parsed (its arrays read) when first used: mapping one way never reads the
    fields of the other. ``parse`` is a zero-argument callable returning the :class:`NDTransform`."""

    def __init__(self, parse):
        self._parse, self._value = parse, None

    def get(self) -> NDTransform:
        if self._value is None:
            self._value = self._parse()
        return self._value

    @property
    def parsed(self) -> NDTransform | None:
        """The transformation if it has been parsed already, else None (never parses)."""
        return self._value


class Bijection(NDTransform):
    """A transformation with its inverse given; each half is a :class:`ParsedOnUse` (or an NDTransform)."""

    kind = "bijection"

    def __init__(self, forward, inverse):
        wrap = lambda t: t if isinstance(t, ParsedOnUse) else ParsedOnUse(lambda: t)  # noqa: E731
        self._halves = (wrap(forward), wrap(inverse))

    @property
    def forward(self) -> NDTransform:
        return self._halves[0].get()

    @property
    def given_inverse(self) -> NDTransform:
        """The inverse as the file gives it (parsed now if it was not yet)."""
        return self._halves[1].get()

    def parsed_halves(self) -> list[NDTransform]:
        """The halves parsed so far (reading nothing)."""
        return [t for t in (h.parsed for h in self._halves) if t is not None]

    def _apply(self, pts):
        return self.forward._apply(pts)

    def inverse(self):
        return Bijection(self._halves[1], self._halves[0])

    def homogeneous(self, n):
        return None


class Inverted(NDTransform):
    """The inverse of a field or spline, solved point by point by atlasreg's solvers."""

    exact_inverse = False

    def __init__(self, forward: NDTransform, solver):
        self.forward, self.solver, self.kind = forward, solver, forward.kind + " inverse"

    def _apply(self, pts):
        return self.forward.pad_apply(self.solver, pts)

    def inverse(self):
        return self.forward


class Field(NDTransform):
    """``displacements`` / ``coordinates``: vectors on a regular grid, components on ``values``' first axis.

    ``index_to_input`` is the ``(N+1, N+1)`` matrix from array index (spatial
    axes only) to the input coordinate system. Evaluated by atlasreg's 3-D
    field kernel (up to three spatial axes; fewer are padded).
    """

    def __init__(self, kind: str, values: np.ndarray, index_to_input: np.ndarray, outside: str = "nan",
                 interpolation: str = "linear", unit: str | None = None, where=None):
        self.kind, self.values, self.m = kind, values, index_to_input
        self.outside, self.interpolation, self.unit, self.where = outside, interpolation, unit, where
        self.n = values.ndim - 1
        if self.n > 3:
            raise InputError(f"{kind} field with {self.n} axes; atlasreg evaluates fields of up to 3 spatial axes",
                             path=where, field="shape")
        if kind == "coordinates" and values.shape[0] != self.n:
            raise InputError(f"a coordinates field from {self.n}-D to {values.shape[0]}-D; atlasreg reads "
                             "coordinates fields whose input and output have the same dimension", path=where,
                             field="shape")
        if kind == "displacements" and values.shape[0] != self.n:
            raise InputError(f"a displacements field over {self.n} axes must hold {self.n} components, got "
                             f"{values.shape[0]}", path=where, field="shape")
        self._field = None

    exact_inverse = False

    @property
    def note(self) -> str | None:
        if self.interpolation != "linear":
            return f"{self.kind} interpolated linearly (the file asks for {self.interpolation!r})"
        return None

    def displacement_field(self, src="src", dst="dst"):
        """The field as an atlasreg :class:`~atlasreg.transforms.field.DisplacementField` (3-D, padded)."""
        from ..field import DisplacementField

        n = self.n
        # The file's dtype is kept: DisplacementField takes float32 and float64 as they are (its kernel widens each
        # float32 value exactly as a float64 copy would) and converts anything else, so one copy is made here, not
        # three (a real 25 µm registration's reload: 0.85 -> 0.25 s).
        v = self.values
        if not np.all(np.isfinite(v)):
            raise InputError(f"the {self.kind} array holds NaN or inf", path=self.where, field="values")
        m4 = np.eye(4)
        m4[:n, :n] = self.m[:n, :n]
        m4[:n, 3] = self.m[:n, n]
        u = np.moveaxis(v, 0, -1)  # grid..., components
        if self.kind == "coordinates":
            idx = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in u.shape[:-1]], indexing="ij"), -1)
            u = u - (idx @ self.m[:n, :n].T + self.m[:n, n])
        if n == 3:
            u3 = np.ascontiguousarray(u)  # components last, one copy
        else:
            u3 = np.zeros(u.shape[:-1] + (1,) * (3 - n) + (3,), u.dtype)
            u3[..., :n] = u.reshape(u.shape[:-1] + (1,) * (3 - n) + (n,))
        sp = np.linalg.norm(m4[:3, :3], axis=0)
        if np.any(sp == 0):
            raise InputError("the field's grid transformation is singular", path=self.where, field="scale")
        try:
            return DisplacementField(u3, spacing=sp, origin=m4[:3, 3], direction=m4[:3, :3] / sp, src=src,
                                     dst=dst, outside=self.outside,
                                     # checked above; coordinates minus the grid are new values: checked again
                                     _finite_checked=self.kind == "displacements")
        except InputError as exc:
            raise InputError(str(exc), path=self.where, field="displacement") from None

    def pad_apply(self, transform_of, pts):
        if pts.shape[1] != self.n:
            raise InputError(f"the {self.kind} field is {self.n}-D; got {pts.shape[1]}-D points", field="coordinates")
        if self._field is None:
            self._field = self.displacement_field()
        p3 = np.zeros((len(pts), 3))
        p3[:, :self.n] = pts
        return transform_of(self._field).map_points(p3)[:, :self.n]

    def _apply(self, pts):
        return self.pad_apply(lambda f: f, pts)

    def inverse(self):
        if self.kind == "coordinates":
            raise NotInvertible("a coordinates field has no inverse atlasreg computes (store the inverse "
                                "direction as its own transformation, or as a bijection)")
        return Inverted(self, lambda f: f.inverse())


class Spline(NDTransform):
    """An exact 3-D atlasreg spline (thin-plate or cubic B-spline) stored beside its sampled field.

    Older atlasreg files hold thin-plate splines as their own type; newer ones
    write a ``displacements`` field (what other readers use) with the exact
    spline under the extension key ``atlasreg.thinplatespline`` or ``atlasreg.bspline``.
    """

    exact_inverse = False

    def __init__(self, transform):
        self.transform = transform
        self.kind = type(transform).__name__

    def _apply(self, pts):
        return self.transform.map_points(pts)

    def pad_apply(self, solver, pts):
        return solver(self.transform).map_points(pts)

    def inverse(self):
        try:
            self.transform.inverse()
        except InputError as exc:
            raise NotInvertible(str(exc)) from None
        return Inverted(self, lambda t: t.inverse())


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------
def _numbers(ctx: Context, obj: dict, key: str, ndim: int) -> np.ndarray:
    if obj.get(key) is None and isinstance(obj.get("path"), str):
        where = store.inside(ctx.base, obj["path"], ctx.group, doc=ctx.doc)
        a = store.read_array(where, ctx.base, doc=ctx.doc, ndim=ndim, max_bytes=2**24)
        return np.asarray(a, float)
    if key not in obj:
        raise ctx.error(f"{obj['type']} transformation without {key!r}", key)
    try:
        a = np.asarray(obj[key], dtype=float)
    except (TypeError, ValueError):
        raise ctx.error(f"{key} must be numbers, got {str(obj[key])[:100]!r}", key) from None
    if a.ndim != ndim or a.size == 0:
        raise ctx.error(f"{key} must be a {'list' if ndim == 1 else 'list of rows'} of numbers, got shape "
                        f"{a.shape}", key)
    if not np.all(np.isfinite(a)):
        raise ctx.error(f"{key} parameters contain NaN or inf", key)
    return a


def _axes_list(ctx, v, key) -> list[int]:
    if not isinstance(v, list) or not v or not all(isinstance(i, (int, float)) and float(i).is_integer()
                                                   and i >= 0 for i in v):
        raise ctx.error(f"{key} must be a non-empty list of axis indices, got {v!r}", key)
    return [int(i) for i in v]


def _dim(n, m, kind, ctx):
    if n is not None and m is not None and n != m:
        raise ctx.error(f"{kind} maps {n}-D to {m}-D; it needs equal dimensions", kind)


def parse(obj, n_in: int | None = None, n_out: int | None = None, ctx: Context | None = None) -> NDTransform:
    """An :class:`NDTransform` from one NGFF coordinate transformation object.

    ``n_in``/``n_out`` are the dimensions of the input and output coordinate
    systems where known (they size ``identity`` and check parameters).
    """
    ctx = ctx or Context(Path("."))
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ctx.error(f"malformed coordinate transformation {str(obj)[:200]!r}", "coordinateTransformations")
    kind = obj["type"]
    T = _parse(obj, kind, n_in, n_out, ctx)
    T.io = (obj.get("input"), obj.get("output"))
    return T


def _parse(obj, kind, n_in, n_out, ctx) -> NDTransform:
    if kind == "identity":
        _dim(n_in, n_out, kind, ctx)
        return Matrix(kind, None if n_in is None and n_out is None else np.eye((n_in or n_out) + 1))
    if kind in ("translation", "scale"):
        v = _numbers(ctx, obj, kind, 1)
        for n in (n_in, n_out):
            if n is not None and len(v) != n:
                raise ctx.error(f"{kind} has {len(v)} numbers for {n}-D coordinate systems", kind)
        m = np.eye(len(v) + 1)
        if kind == "translation":
            m[:-1, -1] = v
        else:
            m[:-1, :-1] = np.diag(v)
        return Matrix(kind, m)
    if kind == "mapAxis":
        perm = obj.get("mapAxis")
        if isinstance(perm, dict):  # the 0.5-draft form {"out_axis": "in_axis"} is not in 0.6
            raise ctx.error("mapAxis must be a list of input axis indices (NGFF 0.6)", "mapAxis")
        perm = _axes_list(ctx, perm, "mapAxis")
        if sorted(perm) != list(range(len(perm))) or (n_in is not None and len(perm) != n_in):
            raise ctx.error(f"mapAxis must be a permutation of 0..{(n_in or len(perm)) - 1}, got {perm}", "mapAxis")
        m = np.eye(len(perm) + 1)
        m[:-1, :-1] = np.eye(len(perm))[perm]
        return Matrix(kind, m)
    if kind == "projectAxis":
        dropped = obj.get("droppedInputs") or []
        created = obj.get("createdOutputs") or []
        dropped = _axes_list(ctx, dropped, "droppedInputs") if dropped else []
        created = _axes_list(ctx, created, "createdOutputs") if created else []
        if not dropped and not created:
            raise ctx.error("projectAxis needs droppedInputs or createdOutputs", "projectAxis")
        if len(set(dropped)) != len(dropped) or len(set(created)) != len(created):
            raise ctx.error("projectAxis axis indices must be unique", "projectAxis")
        T = Matrix(kind, None, params=(tuple(dropped), tuple(created)))
        if n_in is not None:
            T.m = T.homogeneous(n_in)
            if n_out is not None and T.m.shape[0] - 1 != n_out:
                raise ctx.error(f"projectAxis gives {T.m.shape[0] - 1}-D points for a {n_out}-D output", kind)
        return T
    if kind == "affine":
        a = _numbers(ctx, obj, "affine", 2)
        if a.shape[0] == a.shape[1] and np.array_equal(a[-1], np.eye(a.shape[1])[-1]):
            a = a[:-1]  # the full (N+1)x(N+1) homogeneous form
        if (n_in is not None and a.shape[1] != n_in + 1) or (n_out is not None and a.shape[0] != n_out):
            raise ctx.error(f"affine of shape {list(a.shape)} does not map {n_in}-D to {n_out}-D (needs "
                            f"{n_out} rows of {None if n_in is None else n_in + 1})", "affine")
        m = np.vstack([a, np.eye(a.shape[1])[-1]])
        return Matrix(kind, m)
    if kind == "rotation":
        r = _numbers(ctx, obj, "rotation", 2)
        if r.shape[0] != r.shape[1] or (n_in is not None and r.shape[0] != n_in):
            raise ctx.error(f"rotation must be an N x N matrix for {n_in}-D points, got shape {list(r.shape)}",
                            "rotation")
        m = np.eye(len(r) + 1)
        m[:-1, :-1] = r
        return Matrix(kind, m)
    if kind == "sequence":
        items = obj.get("transformations")
        if not isinstance(items, list) or not items:
            raise ctx.error("sequence needs a non-empty 'transformations' list", "transformations")
        out = []
        n = n_in
        for i, it in enumerate(items):
            t = parse(it, n, n_out if i == len(items) - 1 else None, ctx)
            if n is not None:
                h = t.homogeneous(n)
                n = h.shape[0] - 1 if h is not None else (n if not isinstance(t, ByDimension) else t.n_out)
            out.append(t)
        return SequenceND(out)
    if kind == "byDimension":
        items = obj.get("transformations")
        if not isinstance(items, list) or not items:
            raise ctx.error("byDimension needs a non-empty 'transformations' list", "transformations")
        parts = []
        for it in items:
            if not isinstance(it, dict):
                raise ctx.error(f"malformed byDimension item {str(it)[:100]!r}", "transformations")
            inner = it.get("transformation", it)  # 0.6: {"transformation", "inputAxes", "outputAxes"}
            a = _axes_list(ctx, it.get("inputAxes", it.get("input_axes")), "inputAxes")
            o = _axes_list(ctx, it.get("outputAxes", it.get("output_axes")), "outputAxes")
            parts.append((parse(inner, len(a), len(o), ctx), a, o))
        return ByDimension(parts, n_in, n_out)
    if kind == "bijection":
        if not isinstance(obj.get("forward"), dict) or not isinstance(obj.get("inverse"), dict):
            raise ctx.error("bijection needs 'forward' and 'inverse' transformations", "bijection")
        _dim(n_in, n_out, kind, ctx)
        # Each half is parsed when first used: a saved registration maps one way without reading the other
        # way's fields (half the reading of every load).
        return Bijection(ParsedOnUse(lambda: parse(obj["forward"], n_in, n_out, ctx)),
                         ParsedOnUse(lambda: parse(obj["inverse"], n_out, n_in, ctx)))
    if kind == "inverseOf":  # atlasreg files before NGFF 0.6rc0
        inner = obj.get("transformation")
        if not isinstance(inner, dict):
            raise ctx.error("inverseOf needs a 'transformation'", "transformation")
        return parse(inner, n_out, n_in, ctx).inverse()
    if kind in ("displacements", "coordinates"):
        ext = obj.get("atlasreg") if isinstance(obj.get("atlasreg"), dict) else {}
        if isinstance(ext.get("thinplatespline"), dict):
            return Spline(tps_from_json(ext["thinplatespline"], ctx))
        if isinstance(ext.get("bspline"), dict):
            return Spline(bspline_from_json(ext["bspline"], ctx))
        return read_field(obj, kind, n_in, n_out, ctx)
    if kind == "thinplatespline":  # atlasreg files before NGFF 0.6rc0
        return Spline(tps_from_json(obj, ctx))
    raise ctx.error(f"unknown coordinate transformation type {kind!r} (NGFF 0.6 has identity, mapAxis, "
                    "projectAxis, translation, scale, affine, rotation, sequence, byDimension, bijection, "
                    "coordinates, displacements)", "type")


def tps_from_json(obj: dict, ctx: Context):
    from ..tps import ThinPlateSpline

    try:
        sp = np.asarray(obj["source_landmarks"], float)
        dp = np.asarray(obj["target_landmarks"], float)
        kernel = obj.get("kernel", "r")
        lam = float(obj.get("regularization", 0.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ctx.error(f"thinplatespline needs numeric source_landmarks and target_landmarks ({exc})",
                        "thinplatespline") from None
    extra = obj["atlasreg"] if isinstance(obj.get("atlasreg"), dict) else obj  # solved system, if stored
    try:
        if all(k in extra for k in ("frame", "weights", "affine_coeffs")):
            return ThinPlateSpline.from_solution(sp, dp, extra["weights"], extra["affine_coeffs"], lam, kernel,
                                                 extra["frame"])
        if "frame" in extra:
            return ThinPlateSpline(sp, dp, regularization=lam, kernel=kernel, frame=extra["frame"])
        return ThinPlateSpline(sp, dp, regularization=lam, kernel=kernel)
    except InputError as exc:
        raise ctx.error(str(exc), "thinplatespline") from None


def bspline_from_json(obj: dict, ctx: Context):
    """A cubic :class:`~atlasreg.transforms.bspline.BSplineTransform` from its stored control grid."""
    from ..bspline import BSplineTransform

    outside = ctx.outside or obj.get("outside", "zero")
    grid = read_field({"path": obj.get("path")}, "displacements", 3, 3, Context(ctx.base, ctx.group, ctx.doc))
    m = grid.m
    sp = np.linalg.norm(m[:3, :3], axis=0)
    try:
        return BSplineTransform(np.moveaxis(grid.values, 0, -1), spacing=sp, origin=m[:3, 3],
                                direction=m[:3, :3] / sp, outside=outside)
    except InputError as exc:
        raise ctx.error(str(exc), "bspline") from None


# ---------------------------------------------------------------------------------------------
# Field arrays: a multiscales group (NGFF 0.6) or a bare array (atlasreg files before 0.6rc0)
# ---------------------------------------------------------------------------------------------
def read_field(obj: dict, kind: str, n_in, n_out, ctx: Context) -> Field:
    rel = obj.get("path")
    if not isinstance(rel, str):
        raise ctx.error(f"{kind} needs a 'path' to its array", "path")
    interp = obj.get("interpolation", "linear")
    if interp not in ("linear", "nearest", "cubic", "bspline-cubic"):
        raise ctx.error(f"unknown interpolation {interp!r}", "interpolation")
    ext = obj.get("atlasreg") if isinstance(obj.get("atlasreg"), dict) else {}
    outside = ctx.outside or ext.get("outside", "nan")
    if outside not in ("nan", "zero"):
        raise ctx.error(f"atlasreg.outside must be 'nan' or 'zero', got {outside!r}", "outside")
    where = store.inside(ctx.base, rel, ctx.group, doc=ctx.doc)
    attrs = store.group_attributes(where)
    ome = (attrs or {}).get("ome") if isinstance(attrs, dict) else None
    ndims = (2, 3, 4) if n_in is None else (n_in + 1,)
    if isinstance(ome, dict) and isinstance(ome.get("multiscales"), list) and ome["multiscales"]:
        values, m, vec_axis, unit = _multiscales_field(ome["multiscales"][0], where, ctx, kind, ndims)
    else:  # a bare array carrying its own placement (atlasreg 0.6-draft files: vector axis last)
        values = store.read_array(where, ctx.base, doc=ctx.doc, ndim=ndims)
        a_attrs = store.group_attributes(where) or {}
        meta = a_attrs.get("ome", {}) if isinstance(a_attrs, dict) else {}
        cs = (meta.get("coordinateSystems") or [{}])[0]
        axes = cs.get("axes", []) if isinstance(cs, dict) else []
        vec_axis = _vector_axis(axes, values.ndim, default=values.ndim - 1)
        m = _placement(meta.get("coordinateTransformations") or [], values.ndim, ctx, where)
        unit = _space_unit(axes)
    values = np.moveaxis(values, vec_axis, 0)
    keep = [i for i in range(m.shape[0] - 1) if i != vec_axis]
    mm = np.eye(len(keep) + 1)
    mm[:-1, :-1] = m[np.ix_(keep, keep)]
    mm[:-1, -1] = m[keep, -1]
    if n_in is not None and values.ndim - 1 != n_in:
        raise InputError(f"{kind} array has {values.ndim - 1} grid axes for a {n_in}-D input", path=where,
                         field="shape")
    return Field(kind, values, mm, outside, interp, unit, where)


def _vector_axis(axes, ndim, default=None) -> int:
    types = [a.get("type") if isinstance(a, dict) else None for a in axes]
    hits = [i for i, t in enumerate(types) if t in ("displacement", "coordinate")]
    if len(types) == ndim and len(hits) == 1:
        return hits[0]
    if default is not None:
        return default
    raise InputError(f"the field's coordinate system needs one axis of type 'displacement' or 'coordinate' "
                     f"among its {ndim}, got types {types}", field="axes")


def _space_unit(axes) -> str | None:
    units = {a.get("unit") for a in axes if isinstance(a, dict) and a.get("type") == "space"}
    return units.pop() if len(units) == 1 else None


def _multiscales_field(ms: dict, where: Path, ctx: Context, kind: str, ndims):
    datasets = ms.get("datasets") if isinstance(ms, dict) else None
    systems = ms.get("coordinateSystems") if isinstance(ms, dict) else None
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict):
        raise InputError("the field's multiscales has no datasets", path=where, field="datasets")
    if not isinstance(systems, list) or not systems:
        raise InputError("the field's multiscales has no coordinateSystems", path=where, field="coordinateSystems")
    ds = datasets[0]
    values = store.read_array(store.inside(ctx.base, str(ds.get("path")), where, doc=where), ctx.base,
                              doc=where, ndim=ndims)
    cts = ds.get("coordinateTransformations") or []
    m = _placement(cts, values.ndim, ctx, where)
    intrinsic = None
    if cts and isinstance(cts[0], dict):
        out = cts[0].get("output")
        intrinsic = out.get("name") if isinstance(out, dict) else out
    by_name = {cs.get("name"): cs for cs in systems if isinstance(cs, dict)}
    cs = by_name.get(intrinsic, systems[0])
    axes = cs.get("axes", [])
    vec_axis = _vector_axis(axes, values.ndim)
    # A grid rotated in its input space: one more matrix transformation out of the intrinsic system.
    for ct in ms.get("coordinateTransformations") or []:
        src = ct.get("input") if isinstance(ct, dict) else None
        if (src.get("name") if isinstance(src, dict) else src) == cs.get("name"):
            m = _placement([ct], values.ndim, ctx, where) @ m
            dst = ct.get("output")
            cs = by_name.get(dst.get("name") if isinstance(dst, dict) else dst, cs)
            break
    return values, m, vec_axis, _space_unit(cs.get("axes", axes))


def _placement(cts: list, n: int, ctx: Context, where: Path) -> np.ndarray:
    """The (n+1, n+1) matrix of the matrix-type transformations placing an array's indices."""
    m = np.eye(n + 1)
    sub = Context(ctx.base, where, where, ctx.outside)
    for ct in cts:
        t = parse(ct, n, n, sub)
        h = t.homogeneous(n)
        if h is None or h.shape != (n + 1, n + 1):
            raise InputError(f"a field's grid is placed by {ct.get('type')!r}; atlasreg reads scale, translation, "
                             "affine and their sequences there", path=where, field="coordinateTransformations")
        m = h @ m
    return m
