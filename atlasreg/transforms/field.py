"""Dense displacement fields: ``y = x + u(x)`` with ``u`` sampled on a grid, trilinear between nodes."""
from __future__ import annotations

import numpy as np

from .. import _kernels as K
from ..errors import InputError
from ..spaces import apply_affine
from .base import Affine, NumericalInverse, Transform, as_points
from .inverse import solve_field_inverse


def grid_affine(spacing, origin=None, direction=None) -> np.ndarray:
    """4x4 index -> physical matrix of a grid (``p = origin + D @ (spacing * i)``)."""
    sp = np.asarray(spacing, float)
    o = np.zeros(3) if origin is None else np.asarray(origin, float)
    D = np.eye(3) if direction is None else np.asarray(direction, float).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = D * sp[None, :]
    m[:3, 3] = o
    return m


def _all_finite(u: np.ndarray) -> bool:
    """True when no value of ``u`` is NaN or inf (one parallel pass for fields in C or ITK order)."""
    for view in (u, u.transpose(2, 1, 0, 3) if u.ndim == 4 else u):
        if view.flags.c_contiguous:
            return K.count_nonfinite(view.reshape(-1)) == 0
    return bool(np.all(np.isfinite(u)))


def fill_value(fill, path=None) -> float | None:
    """The displacement to write at nodes whose value is unknown, from a ``fill`` argument: ``None`` keeps
    them NaN (unknown), ``"zero"`` gives 0.0, a finite number gives that number (on every axis). Anything
    else is an :class:`~atlasreg.errors.InputError` (the one check, for every sampler that takes ``fill``).

    Examples
    --------
    >>> fill_value(None), fill_value("zero"), fill_value(2)
    (None, 0.0, 2.0)
    >>> fill_value("nan")
    Traceback (most recent call last):
    ...
    atlasreg.errors.InputError: field 'fill': fill must be None (keep NaN), 'zero' or a finite number, got 'nan'
    """
    if fill is None:
        return None
    if isinstance(fill, str):
        if fill == "zero":
            return 0.0
    elif (isinstance(fill, (int, float, np.integer, np.floating)) and not isinstance(fill, (bool, np.bool_))
          and np.isfinite(fill)):
        return float(fill)
    raise InputError(f"fill must be None (keep NaN), 'zero' or a finite number, got {fill!r}", path=path,
                     field="fill")


def fill_unknown(u: np.ndarray, value: float | None) -> np.ndarray:
    """Mark the rows of ``u`` (``(N, 3)`` displacements, changed in place) that have no finite value: NaN
    (unknown) when ``value`` is None, else ``value`` (from :func:`fill_value`). Returns which rows they were:
    the one rule of every sampler of a field (:meth:`InverseDisplacementField.to_field`, the blockwise
    ``distributed.sample_field``).

    Examples
    --------
    >>> u = np.array([[1.0, 2, 3], [np.nan, 0, 0]])
    >>> fill_unknown(u, 0.0).tolist(), u[1].tolist()
    ([False, True], [0.0, 0.0, 0.0])
    """
    bad = ~np.isfinite(u).all(axis=1)
    u[bad] = np.nan if value is None else value
    return bad


class GridFrame:
    """Spacing, origin and direction of a sampling grid given by its ``index_to_physical`` 4x4 matrix
    (shared by the in-memory and the chunked displacement fields)."""

    index_to_physical: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.index_to_physical[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        return self.index_to_physical[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        return self.index_to_physical[:3, :3] / self.spacing[None, :]


class DisplacementField(GridFrame, Transform):
    """A displacement field transform ``y = x + u(x)`` from ``src`` to ``dst``.

    Parameters
    ----------
    displacement : array_like, shape (X, Y, Z, 3)
        Displacement vectors in physical units of ``src`` (== those of ``dst``),
        sampled at the voxel centres of a grid in ``src``.
    spacing, origin, direction :
        The grid's geometry (CONVENTIONS: ``p = origin + D @ (spacing * i)``).
    outside : {"nan", "zero"}
        Points outside the grid become NaN (default: nothing silently wrong), or
        keep zero displacement as ITK does.
    allow_nan : bool
        Accept NaN nodes, meaning "displacement unknown here" (as
        :meth:`InverseDisplacementField.to_field` leaves the nodes whose inverse
        could not be computed). Every point that interpolates from such a node maps
        to NaN; ``unknown_nodes`` counts them, and saving the field to a file is
        refused (:meth:`check_known`). Infinite values are always refused.

    Examples
    --------
    >>> u = np.zeros((4, 4, 4, 3)); u[..., 0] = 2.0
    >>> F = DisplacementField(u, spacing=(10, 10, 10), src="a", dst="b")
    >>> F.map_points([[5.0, 5, 5]])
    array([[7., 5., 5.]])
    >>> F.inverse().map_points([[7.0, 5, 5]])
    array([[5., 5., 5.]])
    """

    def __init__(self, displacement, spacing=(1.0, 1.0, 1.0), origin=None, direction=None,
                 src="src", dst="dst", outside: str = "nan", *, allow_nan: bool = False,
                 _finite_checked: bool = False):
        # ``_finite_checked``: the caller (a file reader) has already checked every value.
        super().__init__(src, dst)
        u = np.asarray(displacement)
        if u.ndim != 4 or u.shape[3] != 3:
            raise InputError(f"displacement must have shape (X, Y, Z, 3), got {u.shape}", field="displacement")
        if min(u.shape[:3]) < 1:
            raise InputError("displacement grid is empty", field="displacement")
        if u.dtype not in (np.float32, np.float64):
            u = u.astype(np.float64)
        #: Nodes whose displacement is unknown (NaN; only with ``allow_nan``).
        self.unknown_nodes = 0
        #: Nodes given a chosen value instead of an unknown one (``to_field(fill=...)``); recorded, not used.
        self.filled_nodes = 0
        if not _finite_checked and not _all_finite(u):
            if not allow_nan or np.isinf(u).any():
                raise InputError("displacement field contains NaN or inf", field="displacement")
            self.unknown_nodes = int(np.isnan(u).any(axis=-1).sum())
        if self.src.unit != self.dst.unit:
            raise InputError(
                f"a displacement field maps within one unit, but src is {self.src.unit} and dst "
                f"{self.dst.unit}; chain an Affine.from_units step instead", field="unit")
        if outside not in ("nan", "zero"):
            raise InputError("outside must be 'nan' or 'zero'", field="outside")
        # C order, or ITK's memory order (x fastest, as SimpleITK hands fields over): both keep the
        # three components of a node together; anything else is copied.
        if not (u.flags.c_contiguous or u.transpose(2, 1, 0, 3).flags.c_contiguous):
            u = np.ascontiguousarray(u)
        self.displacement = u
        self.outside = outside
        self.index_to_physical = grid_affine(spacing, origin, direction)
        if abs(np.linalg.det(self.index_to_physical)) < 1e-300:
            raise InputError("displacement grid geometry is singular (zero spacing?)", field="spacing")
        self.physical_to_index = np.linalg.inv(self.index_to_physical)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.displacement.shape[:3])


    #: :func:`~atlasreg.transforms.base.fusion_plan` folds neighbouring affines into this kernel.
    fuses_affines = True

    def _map(self, pts: np.ndarray) -> np.ndarray:
        return self.map_fused(pts, None, None)

    def map_fused(self, pts: np.ndarray, pre: np.ndarray | None, post: np.ndarray | None) -> np.ndarray:
        """``post(field(pre(pts)))`` for 4x4 matrices ``pre``/``post`` (None: identity) in one parallel pass
        (large calls walk the field block by block)."""
        eye = np.eye(4)
        out = np.empty_like(pts)
        K.affine_field_affine_any_order(
            np.ascontiguousarray(pts, dtype=np.float64),
            np.ascontiguousarray((pre if pre is not None else eye)[:3]),
            self.displacement,
            self.physical_to_index[:3].copy(),
            np.ascontiguousarray((post if post is not None else eye)[:3]),
            self.outside == "nan",
            out,
        )
        return out

    def _inverse(self) -> "InverseDisplacementField":
        return InverseDisplacementField(self)

    def max_displacement(self) -> float:
        """Largest ``|u|`` over the nodes whose displacement is known (0 when none is)."""
        norms = np.sqrt((self.displacement.astype(np.float64) ** 2).sum(-1))
        if self.unknown_nodes:
            norms = norms[np.isfinite(norms)]
        return float(norms.max()) if norms.size else 0.0

    def check_known(self, path=None) -> None:
        """Raise :class:`~atlasreg.errors.InputError` when some nodes are unknown (NaN): what every writer
        checks, since no transform file holds "unknown" (ITK and NIfTI readers would take NaN as zero
        displacement, atlasreg refuses NaN on load).

        Examples
        --------
        >>> u = np.zeros((2, 2, 2, 3)); u[0, 0, 0] = np.nan
        >>> DisplacementField(u, allow_nan=True).check_known("warp.nii.gz")
        Traceback (most recent call last):
        ...
        atlasreg.errors.InputError: warp.nii.gz: field 'displacement': 1 of 8 nodes of the displacement field have no known displacement (NaN: e.g. where its inverse could not be computed); no transform file can hold that. Save the exact transform as .json (NGFF: a numerical inverse is stored as its forward field), crop the grid to where the field is known, or sample it with to_field(fill='zero') to write zero displacement there knowingly
        """
        if self.unknown_nodes:
            raise InputError(
                f"{self.unknown_nodes} of {int(np.prod(self.shape))} nodes of the displacement field have no known "
                "displacement (NaN: e.g. where its inverse could not be computed); no transform file can hold "
                "that. Save the exact transform as .json (NGFF: a numerical inverse is stored as its forward "
                "field), crop the grid to where the field is known, or sample it with to_field(fill='zero') to "
                "write zero displacement there knowingly", path=path, field="displacement")

    def grid_points(self) -> np.ndarray:
        """Physical positions of the grid nodes, ``(X*Y*Z, 3)`` in C order."""
        idx = np.indices(self.shape, dtype=np.float64).reshape(3, -1).T
        return apply_affine(self.index_to_physical, idx)


class InverseDisplacementField(NumericalInverse):
    """The inverse of a :class:`DisplacementField`, solved per point by :mod:`atlasreg.transforms.inverse`.

    Damped Newton on the trilinear field's Jacobian: exact to ``tol`` (physical
    units; default 1e-6 of the finest spacing) wherever ``det(I + grad u) > 0``,
    however strong the local stretch. Points whose solution lies off the field's
    grid are NaN (as the forward map is there, with ``outside="nan"``); points
    that do not converge are NaN or raise :class:`~atlasreg.errors.ConvergenceError`,
    by ``on_fail``. ``last_report`` (:class:`~atlasreg.transforms.inverse.InverseReport`)
    counts them and gives the worst residual; ``last_residual`` is the worst
    residual of the points returned (never above ``tol``).

    Examples
    --------
    >>> u = np.zeros((64, 4, 4, 3)); x = np.arange(64.0)
    >>> u[..., 0] = (12 * np.tanh((x - 32) / 8))[:, None, None]   # a 2.5x local stretch
    >>> F = DisplacementField(u, src="a", dst="b")
    >>> y = F.map_points([[30.0, 1, 1]])
    >>> bool(np.allclose(F.inverse().map_points(y), [[30.0, 1, 1]], atol=1e-6))
    True
    """

    def _solve(self, pts: np.ndarray):
        f = self.forward
        return solve_field_inverse(f.displacement, f.physical_to_index, f.outside == "nan", pts, self.tol,
                                   self.max_iter)

    def to_field(self, shape=None, spacing=None, origin=None, direction=None, *, fill=None) -> DisplacementField:
        """Sample this inverse on a grid (by default the forward field's) as a DisplacementField.

        Parameters
        ----------
        shape, spacing, origin, direction : optional
            The grid (nodes in ``self.src``); each defaults to the forward field's.
        fill : None, "zero" or float
            What the nodes whose inverse cannot be computed get (the preimage lies off the forward
            field's grid, or the solve failed, e.g. at a fold). ``None`` (default): they stay NaN, so
            every point that interpolates from one maps to NaN, and the field cannot be saved to a file
            (:meth:`DisplacementField.check_known`). ``"zero"`` (ITK's and ANTs' rule off a field's grid)
            or a number: that displacement on every axis — a value that is not the inverse, so choose it
            knowingly; the field's ``filled_nodes`` counts those nodes (``self.last_report`` says why
            they failed).

        Returns
        -------
        DisplacementField
            ``self.src -> self.dst``, ``unknown_nodes`` (with ``fill=None``) or ``filled_nodes`` set.

        Examples
        --------
        >>> u = np.zeros((8, 4, 4, 3)); u[..., 0] = 1.0           # everything moves +1 along axis 0
        >>> G = DisplacementField(u, src="a", dst="b").inverse().to_field()
        >>> G.unknown_nodes                                        # node x = 0: its preimage -1 is off the grid
        16
        >>> G.map_points([[0.0, 1, 1], [3.0, 1, 1]])
        array([[nan, nan, nan],
               [ 2.,  1.,  1.]])
        >>> G0 = DisplacementField(u, src="a", dst="b").inverse().to_field(fill="zero")
        >>> G0.filled_nodes, G0.map_points([[0.0, 1, 1]])
        (16, array([[0., 1., 1.]]))
        """
        value = fill_value(fill)
        f = self.forward
        shape = f.shape if shape is None else tuple(shape)
        m = grid_affine(f.spacing if spacing is None else spacing,
                        f.origin if origin is None else origin,
                        f.direction if direction is None else direction)
        idx = np.indices(shape, dtype=np.float64).reshape(3, -1).T
        y = apply_affine(m, idx)
        x = self._map(y)
        u = x - y
        n_bad = int(fill_unknown(u, value).sum())
        F = DisplacementField(u.reshape(*shape, 3), spacing=np.linalg.norm(m[:3, :3], axis=0), origin=m[:3, 3],
                              direction=m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0), src=self.src, dst=self.dst,
                              outside=f.outside, allow_nan=value is None)
        if value is not None:
            F.filled_nodes = n_bad
        return F
