"""The transform contract: ``T.map_points`` takes points in ``T.src`` and returns points in ``T.dst``.

Everything else (fields, splines, chains, file formats) builds on the two
classes here: the abstract :class:`Transform` and the exact :class:`Affine`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence as _Seq

import numpy as np

from ..errors import InputError, SpaceMismatchError
from ..spaces import Space, apply_affine, as_points, as_space, unit_scale
from .inverse import MAX_ITER, InverseReport, check_on_fail, finish

__all__ = ["Transform", "Affine", "Sequence", "LazyTransform", "as_points", "with_ends", "fusion_plan",
           "resolved"]


class Transform(ABC):
    """A map of physical points from space ``src`` to space ``dst``.

    Subclasses implement :meth:`_map` on validated ``(N, 3)`` float64 arrays and
    :meth:`_inverse`. An explicit inverse (e.g. the inverse warp ANTs wrote) can
    be attached with :meth:`with_inverse` and is then preferred.
    """

    #: True where the map is exactly invertible in closed form (affines).
    exact_inverse: bool = False
    #: True where this map is itself computed by a numerical solver (the inverse of a field or spline).
    is_numerical: bool = False

    def __init__(self, src: Space | str, dst: Space | str):
        self.src = as_space(src, "src")
        self.dst = as_space(dst, "dst")
        self._explicit_inverse: Transform | None = None

    # -- the contract -------------------------------------------------------
    def map_points(self, points) -> np.ndarray:
        """Map ``(N, 3)`` points of ``self.src`` (its unit) into ``self.dst`` (its unit).

        Points that leave the domain of a field come back as NaN rows.
        """
        pts = as_points(points)
        if len(pts) == 0:
            return pts.copy()
        return self._map(pts)

    def inverse(self) -> "Transform":
        """The transform from ``dst`` back to ``src``."""
        if self._explicit_inverse is not None:
            return self._explicit_inverse
        return self._inverse()

    @property
    def numerical_inverse(self) -> bool:
        """True when :meth:`inverse` is solved numerically (no closed form, no attached inverse)."""
        if self._explicit_inverse is not None:
            return self._explicit_inverse.is_numerical
        return not self.exact_inverse

    def with_inverse(self, inverse: "Transform") -> "Transform":
        """Attach a known inverse (checked to run ``dst -> src``); returns ``self``."""
        if inverse.src.name != self.dst.name or inverse.dst.name != self.src.name:
            raise SpaceMismatchError(
                f"an inverse of {self.src.name} -> {self.dst.name} must map {self.dst.name} -> "
                f"{self.src.name}, not {inverse.src.name} -> {inverse.dst.name}"
            )
        self._explicit_inverse = inverse
        inverse._explicit_inverse = self
        return self

    @abstractmethod
    def _map(self, pts: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _inverse(self) -> "Transform": ...

    # -- conveniences ------------------------------------------------------
    def then(self, other: "Transform") -> "Sequence":
        """``self`` followed by ``other`` (a :class:`Sequence`)."""
        return Sequence([self, other])

    def jacobian(self, points, step: float | None = None) -> np.ndarray:
        """Local Jacobian ``(N, 3, 3)`` by central differences (``step`` in src units)."""
        pts = as_points(points)
        h = step if step is not None else 1e-3 * max(1.0, float(np.nanmax(np.abs(pts))) * 1e-3)
        J = np.empty((len(pts), 3, 3))
        for a in range(3):
            d = np.zeros(3)
            d[a] = h
            J[:, :, a] = (self.map_points(pts + d) - self.map_points(pts - d)) / (2 * h)
        return J

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.src.name} -> {self.dst.name})"


class Affine(Transform):
    """An affine map ``y = M[:3, :3] @ x + M[:3, 3]`` from ``src`` to ``dst``.

    Parameters
    ----------
    matrix : array_like, shape (4, 4) or (3, 4)
        Homogeneous matrix acting on column vectors of physical coordinates.
    src, dst : Space or str

    Examples
    --------
    >>> T = Affine.from_scale(1e-3, src=Space("em", "nm"), dst="lm")
    >>> T.map_points([[1000.0, 0, 0]])
    array([[1., 0., 0.]])
    >>> T.inverse().map_points([[1.0, 0, 0]])
    array([[1000.,    0.,    0.]])
    """

    exact_inverse = True

    def __init__(self, matrix, src: Space | str = "src", dst: Space | str = "dst"):
        super().__init__(src, dst)
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape == (3, 4):
            m = np.vstack([m, [0, 0, 0, 1]])
        if m.shape != (4, 4):
            raise InputError(f"affine matrix must be 4x4 or 3x4, got shape {m.shape}", field="matrix")
        if not np.all(np.isfinite(m)):
            raise InputError("affine matrix contains NaN or inf", field="matrix")
        if not np.allclose(m[3], [0, 0, 0, 1]):
            raise InputError(f"last row of a 4x4 affine must be [0, 0, 0, 1], got {m[3]}", field="matrix")
        self.matrix = m

    # constructors ---------------------------------------------------------
    @classmethod
    def identity(cls, src="src", dst="dst") -> "Affine":
        return cls(np.eye(4), src, dst)

    @classmethod
    def from_translation(cls, t, src="src", dst="dst") -> "Affine":
        m = np.eye(4)
        m[:3, 3] = np.asarray(t, float)
        return cls(m, src, dst)

    @classmethod
    def from_scale(cls, s, src="src", dst="dst", center=None) -> "Affine":
        m = np.eye(4)
        m[:3, :3] = np.diag(np.broadcast_to(np.asarray(s, float), (3,)))
        out = cls(m, src, dst)
        return out._about(center) if center is not None else out

    @classmethod
    def from_rotation(cls, angles_deg=None, src="src", dst="dst", center=None, matrix=None) -> "Affine":
        """Rotation by Euler angles (degrees, about axes 0, 1, 2 applied in that order) or a 3x3 matrix."""
        if matrix is None:
            a, b, c = np.deg2rad(np.asarray(angles_deg, float))
            rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
            ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
            rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
            matrix = rz @ ry @ rx
        m = np.eye(4)
        m[:3, :3] = np.asarray(matrix, float)
        out = cls(m, src, dst)
        return out._about(center) if center is not None else out

    @classmethod
    def from_units(cls, src: Space, dst: Space) -> "Affine":
        """Pure unit change between two spaces sharing axes (e.g. EM nm -> EM um)."""
        return cls.from_scale(unit_scale(src.unit, dst.unit), src, dst)

    @classmethod
    def fit(cls, src_points, dst_points, model: str = "affine", src="src", dst="dst",
            weights=None) -> "Affine":
        """Least-squares fit of a ``rigid``, ``similarity`` or ``affine`` map from point pairs."""
        from .fitting import fit_linear

        return cls(fit_linear(src_points, dst_points, model=model, weights=weights), src, dst)

    def _about(self, center) -> "Affine":
        c = np.asarray(center, float)
        m = self.matrix.copy()
        m[:3, 3] = m[:3, 3] + c - m[:3, :3] @ c
        return Affine(m, self.src, self.dst)

    # contract ---------------------------------------------------------------
    def _map(self, pts: np.ndarray) -> np.ndarray:
        return apply_affine(self.matrix, pts)

    def _inverse(self) -> "Affine":
        return Affine(np.linalg.inv(self.matrix), self.dst, self.src)

    def compose(self, after: "Affine") -> "Affine":
        """The single affine equal to ``self`` then ``after``."""
        _check_chain(self, after)
        return Affine(after.matrix @ self.matrix, self.src, after.dst)

    def jacobian(self, points, step=None) -> np.ndarray:
        pts = as_points(points)
        return np.broadcast_to(self.matrix[:3, :3], (len(pts), 3, 3)).copy()


def _check_chain(a: Transform, b: Transform) -> None:
    if a.dst.name != b.src.name:
        raise SpaceMismatchError(
            f"transforms do not chain: {a!r} ends in space {a.dst.name!r} but {b!r} starts in "
            f"{b.src.name!r}"
        )
    if a.dst.unit != b.src.unit:
        raise SpaceMismatchError(
            f"space {a.dst.name!r} is in {a.dst.unit} for {a!r} but in {b.src.unit} for {b!r}; "
            "declare the space with one unit (an Affine.from_units step converts between spaces)"
        )


def with_ends(T: Transform, src: Space, dst: Space) -> Transform:
    """``T`` taking points in ``src`` and returning them in ``dst``: the same spaces, in the units asked for.

    ``src`` must name ``T.src`` and ``dst`` name ``T.dst``; where a unit differs
    the points are converted (an exact :meth:`Affine.from_units` step at that
    end), so a space in nm meets a transform whose end is in µm correctly
    instead of silently off by 1000.

    Examples
    --------
    >>> T = Affine.from_translation([10, 0, 0], src=Space("em", "um"), dst="lm")
    >>> with_ends(T, Space("em", "nm"), T.dst).map_points([[1000.0, 0, 0]])
    array([[11.,  0.,  0.]])
    """
    if src.name != T.src.name or dst.name != T.dst.name:
        raise SpaceMismatchError(f"{T!r} maps {T.src.name!r} -> {T.dst.name!r}, not {src.name!r} -> {dst.name!r}")
    for a, b in ((src, T.src), (dst, T.dst)):
        if a.orientation and b.orientation and a.orientation != b.orientation:
            raise SpaceMismatchError(f"space {a.name!r} has orientation {a.orientation!r} here but "
                                     f"{b.orientation!r} in {T!r}; reorient first")
    steps: list[Transform] = []
    if src.unit != T.src.unit:
        steps.append(Affine.from_units(src, T.src))
    steps.append(T)
    if dst.unit != T.dst.unit:
        steps.append(Affine.from_units(T.dst, dst))
    return T if len(steps) == 1 else Sequence(steps)


def fusion_plan(steps, pre: np.ndarray | None = None, post: np.ndarray | None = None) -> list[tuple]:
    """THE plan for applying a chain in as few passes as possible (used by :class:`Sequence` for points
    and by the blockwise warp's index map for voxels).

    Adjacent affines fold into one matrix, and the affines on either side of a transform that fuses
    affines into its own kernel (``fuses_affines``: a :class:`~atlasreg.transforms.field.DisplacementField`)
    fold into that step, so a chain costs one pass per field. ``pre``/``post`` are extra 4x4 matrices
    applied before/after the chain (the blockwise warp's index <-> physical maps).

    Returns a list of ``("affine", M)``, ``("fused", pre M or None, step, post M or None)`` and
    ``("map", step)`` operations, in order.

    Examples
    --------
    >>> A = Affine.from_scale(2.0, src="a", dst="b"); B = Affine.from_translation([1, 0, 0], src="b", dst="c")
    >>> [(op[0], op[1][0].tolist()) for op in fusion_plan([A, B])]
    [('affine', [2.0, 0.0, 0.0, 1.0])]
    """
    ops: list[list] = []

    def affine(m):
        if ops and ops[-1][0] == "affine":
            ops[-1][1] = m @ ops[-1][1]
        elif ops and ops[-1][0] == "fused":
            ops[-1][3] = m if ops[-1][3] is None else m @ ops[-1][3]
        else:
            ops.append(["affine", m])

    if pre is not None:
        affine(np.asarray(pre, float))
    for t in steps:
        if isinstance(t, Affine):
            affine(t.matrix)
        elif getattr(t, "fuses_affines", False):
            before = ops.pop()[1] if ops and ops[-1][0] == "affine" else None
            ops.append(["fused", before, t, None])
        else:
            ops.append(["map", t])
    if post is not None:
        affine(np.asarray(post, float))
    return [tuple(op) for op in ops]


class Sequence(Transform):
    """Apply transforms in order: ``Sequence([A, B])`` maps with A, then B.

    Adjacent affines are folded into one matrix, and an affine on either side of
    a displacement field is fused into the field's kernel, so a chain costs
    about one pass over the points per field. Points that leave a field's domain
    stay NaN through the rest of the chain.

    Examples
    --------
    >>> A = Affine.from_scale(1e-3, src=Space("em", "nm"), dst=Space("lm"))
    >>> B = Affine.from_translation([10, 0, 0], src="lm", dst="ccf")
    >>> Sequence([A, B]).map_points([[2000.0, 0, 0]])
    array([[12.,  0.,  0.]])
    """

    def __init__(self, transforms: _Seq[Transform]):
        steps: list[Transform] = []
        for t in transforms:
            if not isinstance(t, Transform):
                raise InputError(f"Sequence takes Transform objects, got {type(t).__name__}")
            # A nested chain with an inverse of its own (e.g. ANTs' inverse warp) stays one step,
            # so the whole chain's inverse can still use it.
            own_inverse = isinstance(t, Sequence) and t._explicit_inverse is not None
            steps.extend(t.steps if isinstance(t, Sequence) and not own_inverse else [t])
        if not steps:
            raise InputError("Sequence needs at least one transform")
        for a, b in zip(steps[:-1], steps[1:]):
            _check_chain(a, b)
        super().__init__(steps[0].src, steps[-1].dst)
        self.steps = steps
        self._plan = None

    @property
    def exact_inverse(self) -> bool:  # type: ignore[override]
        return all(t.exact_inverse for t in self.steps)

    @property
    def is_numerical(self) -> bool:  # type: ignore[override]
        return any(t.is_numerical for t in self.steps)

    @property
    def numerical_inverse(self) -> bool:
        if self._explicit_inverse is not None:
            return self._explicit_inverse.is_numerical
        return any(t.numerical_inverse for t in self.steps)

    def simplified(self) -> list[Transform]:
        """Steps with adjacent affines folded into one matrix."""
        out: list[Transform] = []
        for t in self.steps:
            if out and isinstance(t, Affine) and isinstance(out[-1], Affine):
                out[-1] = out[-1].compose(t)
            else:
                out.append(t)
        return out

    def _map(self, pts: np.ndarray) -> np.ndarray:
        if self._plan is None:
            self._plan = fusion_plan(self.steps)
        out = pts
        for op in self._plan:
            if op[0] == "affine":
                m = op[1]
                out = apply_affine(m, out)
            elif op[0] == "fused":
                out = op[2].map_fused(out, op[1], op[3])
            else:
                out = op[1]._map(out)
        return out

    def _inverse(self) -> "Sequence":
        return Sequence([t.inverse() for t in reversed(self.steps)])

    def __repr__(self) -> str:
        names = [self.steps[0].src.name] + [t.dst.name for t in self.steps]
        return "Sequence(" + " -> ".join(names) + ")"


class LazyTransform(Transform):
    """A transform read from disk when first used (e.g. ANTs' inverse warp, attached as an explicit inverse).

    ``loader()`` returns the transform; it is called once, on first use, and
    must map ``src.name -> dst.name``.

    Examples
    --------
    >>> T = LazyTransform(lambda: Affine.from_translation([1, 0, 0], "a", "b"), "a", "b", "a shift")
    >>> T.map_points([[0.0, 0, 0]])
    array([[1., 0., 0.]])
    """

    def __init__(self, loader, src: Space | str, dst: Space | str, what: str):
        super().__init__(src, dst)
        self._loader = loader
        self._loaded: Transform | None = None
        self.what = what

    def load(self) -> Transform:
        """The transform this stands for (read on the first call)."""
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


class NumericalInverse(Transform):
    """What every numerically solved inverse shares: its forward map, ``tol``, ``max_iter``, the
    ``on_fail`` policy, the last :class:`InverseReport` and ``inverse() is forward``.

    ``tol`` defaults to 1e-6 of the forward map's finest grid spacing (``default_tol`` overrides it);
    subclasses implement ``_solve`` with a ``solve_*_inverse`` function; ``_map`` applies the ``on_fail``
    policy (:func:`~atlasreg.transforms.inverse.finish`) and keeps the report.
    """

    is_numerical = True

    def __init__(self, forward: Transform, tol: float | None = None, max_iter: int | None = None,
                 on_fail: str = "nan"):
        super().__init__(forward.dst, forward.src)
        self.forward = forward
        self.tol = float(tol) if tol is not None else self.default_tol(forward)
        self.max_iter = int(MAX_ITER if max_iter is None else max_iter)
        self.on_fail = check_on_fail(on_fail)
        self.last_residual: float = float("nan")
        self.last_report = InverseReport.empty(self.tol)
        self._explicit_inverse = forward

    @staticmethod
    def default_tol(forward) -> float:
        return 1e-6 * float(forward.spacing.min())

    def _inverse(self) -> Transform:
        return self.forward

    def _solve(self, pts: np.ndarray):
        """``(x, residual, status)`` per point, as the ``solve_*_inverse`` kernels return them."""
        raise NotImplementedError

    def _map(self, pts: np.ndarray) -> np.ndarray:
        x, res, status = self._solve(pts)
        out, self.last_report = finish(x, res, status, self.tol, self.on_fail, f"inverse of {self.forward!r}")
        self.last_residual = self.last_report.max_residual
        return out
