"""Move neurons and point tables through a Transform or along a SpaceGraph.

Node coordinates move with the transform; radii scale with the local volume
change, ``r' = r * |det J(x)|^(1/3)`` with ``J`` the transform's Jacobian at
the node (exact for similarity transforms, the isotropic best guess
otherwise); ids, parents and types — the topology — are kept. Synapses move by
their own coordinates and keep their ``node_id``, so they stay attached to the
same nodes.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError, SpaceMismatchError
from ..graph import SpaceGraph
from ..spaces import Space
from ..transforms.base import Affine, Sequence, Transform
from .neuron import Neuron, NeuronList
from .tables import PointTable


def resolve_transform(transform: Transform | SpaceGraph, src: Space, dst: Space | str | None = None) -> Transform:
    """The transform that moves data in ``src`` to ``dst`` (a Transform is checked; a graph is searched)."""
    if isinstance(transform, SpaceGraph):
        if dst is None:
            raise InputError("moving along a SpaceGraph needs the destination space: dst='ccf'", field="dst")
        dname = dst.name if isinstance(dst, Space) else str(dst)
        if src.name not in transform.spaces:
            raise SpaceMismatchError(f"space {src.name!r} of the data is not in the graph "
                                     f"(known: {sorted(transform.spaces)})")
        gsrc = transform.spaces[src.name]
        if gsrc.unit != src.unit:
            raise SpaceMismatchError(f"the data is in {src.name!r} [{src.unit}] but the graph declares "
                                     f"{src.name!r} in {gsrc.unit}; convert units first")
        t = transform.transform(src.name, dname)
    elif isinstance(transform, Transform):
        t = transform
        if t.src.name != src.name:
            raise SpaceMismatchError(f"the transform maps from {t.src.name!r}, but the data is in {src.name!r}; "
                                     "use a transform from the data's space (or a SpaceGraph)")
        if t.src.unit != src.unit:
            raise SpaceMismatchError(f"the transform takes {t.src.name!r} in {t.src.unit} but the data is in "
                                     f"{src.unit}; chain an Affine.from_units step")
        if dst is not None:
            dname = dst.name if isinstance(dst, Space) else str(dst)
            if dname != t.dst.name:
                raise SpaceMismatchError(f"the transform ends in {t.dst.name!r}, not {dname!r}")
    else:
        raise InputError(f"expected a Transform or SpaceGraph, got {type(transform).__name__}", field="transform")
    return t


def _map_checked(t: Transform, pts: np.ndarray, what: str, on_outside: str) -> np.ndarray:
    out = t.map_points(pts)
    bad = ~np.all(np.isfinite(out), axis=1)
    if bad.any() and on_outside == "raise":
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{int(bad.sum())} of {len(pts)} {what} fall outside the domain of {t!r} (first: {pts[i].tolist()} "
            f"in {t.src.name}); extend the transform's grid or pass on_outside='nan' to keep them as NaN",
            field="points")
    return out


def _jacobian_step(pts: np.ndarray) -> float:
    # Finite-difference step: small against the neuron (1e-4 of its extent) but far above the
    # tolerance of numerical inverses, so J stays accurate through iterative solvers.
    ext = float(np.ptp(pts, axis=0).max()) if len(pts) > 1 else 0.0
    return max(1e-4 * ext, 1e-3)


def _numerical_inverse(t: Transform) -> bool:
    from ..transforms.field import InverseDisplacementField
    from ..transforms.tps import InverseThinPlateSpline

    return isinstance(t, (InverseDisplacementField, InverseThinPlateSpline))


def radius_scale(t: Transform, pts: np.ndarray) -> np.ndarray:
    """``|det J|^(1/3)`` of ``t`` at each point (1-D array; NaN where the map is undefined).

    The determinant is accumulated step by step along a Sequence. For steps solved numerically
    (inverse fields and splines) it is ``1 / det`` of the forward step's Jacobian at the mapped
    point: exact, and it avoids differencing an iterative solver.
    """
    steps = t.steps if isinstance(t, Sequence) else [t]
    h = _jacobian_step(pts)
    det = np.ones(len(pts))
    x = pts
    for k, st in enumerate(steps):
        last = k == len(steps) - 1
        if isinstance(st, Affine):
            det *= abs(np.linalg.det(st.matrix[:3, :3]))
            if not last:
                x = st.map_points(x)
                h = _jacobian_step(x[np.all(np.isfinite(x), axis=1)]) if len(x) else h
            continue
        y = st.map_points(x)
        if _numerical_inverse(st):
            J = st.inverse().jacobian(y, step=h)
            inv = True
        else:
            J = st.jacobian(x, step=h)
            inv = False
        ok = np.all(np.isfinite(J), axis=(1, 2))
        d = np.full(len(x), np.nan)
        d[ok] = np.abs(np.linalg.det(J[ok]))
        det *= (1.0 / d) if inv else d
        x = y
        # the step size follows the data through changes of unit (nm -> µm ...) and scale
        h = _jacobian_step(x[np.all(np.isfinite(x), axis=1)]) if len(x) else h
    return np.cbrt(det)


def transform_neuron(neuron: Neuron, transform: Transform | SpaceGraph, dst: Space | str | None = None,
                     radii: str = "jacobian", on_outside: str = "raise") -> Neuron:
    """Move a neuron (and its synapses) into another space.

    Parameters
    ----------
    neuron : Neuron
    transform : Transform or SpaceGraph
        A transform from the neuron's space, or a graph to search for a path to ``dst``.
    dst : Space or str, optional
        Destination space (required with a graph).
    radii : {"jacobian", "keep"}
        Scale radii by ``|det J|^(1/3)`` at each node, or keep them as they are.
    on_outside : {"raise", "nan"}
        What to do when nodes leave a displacement field's grid.

    Examples
    --------
    >>> from atlasreg import Affine, Space
    >>> import pandas as pd
    >>> n = Neuron(pd.DataFrame({"id": [1, 2], "parent": [-1, 1], "x": [0., 1000.], "y": [0., 0.],
    ...                          "z": [0., 0.], "radius": [500., 500.]}), "em", "nm")
    >>> T = Affine.from_scale(1e-3, src=Space("em", "nm"), dst=Space("ccf", "um"))
    >>> m = transform_neuron(n, T)
    >>> m.points[1].tolist(), m.radius.round(9).tolist(), m.space.unit
    ([1.0, 0.0, 0.0], [0.5, 0.5], 'um')
    """
    if not isinstance(neuron, Neuron):
        raise InputError(f"transform_neuron takes a Neuron, got {type(neuron).__name__}")
    if radii not in ("jacobian", "keep"):
        raise InputError("radii must be 'jacobian' or 'keep'", field="radii")
    if on_outside not in ("raise", "nan"):
        raise InputError("on_outside must be 'raise' or 'nan'", field="on_outside")
    t = resolve_transform(transform, neuron.space, dst)
    pts = neuron.points
    new = _map_checked(t, pts, f"nodes of neuron {neuron.name!r}", on_outside)
    radius = None
    if radii == "jacobian":
        radius = neuron.radius * radius_scale(t, pts)
    syn_new = None
    if neuron.synapses is not None and len(neuron.synapses):
        sp = neuron.synapses[["x", "y", "z"]].to_numpy(np.float64)
        syn_new = _map_checked(t, sp, f"synapses of neuron {neuron.name!r}", on_outside)
    return neuron.with_coordinates(new, t.dst, radius=radius, synapse_points=syn_new,
                                   step=f"{t!r} [{t.src.name} {t.src.unit} -> {t.dst.name} {t.dst.unit}]")


def transform_neurons(neurons, transform: Transform | SpaceGraph, dst: Space | str | None = None,
                      **kwargs) -> NeuronList:
    """:func:`transform_neuron` for every neuron of a collection (each from its own space)."""
    return NeuronList(transform_neuron(n, transform, dst, **kwargs) for n in neurons)


def transform_table(table: PointTable, transform: Transform | SpaceGraph, dst: Space | str | None = None,
                    on_outside: str = "raise") -> PointTable:
    """Move a synapse / cell table into another space (other columns untouched)."""
    if not isinstance(table, PointTable):
        raise InputError(f"transform_table takes a PointTable, got {type(table).__name__}")
    t = resolve_transform(transform, table.space, dst)
    new = _map_checked(t, table.points, f"rows of table {table.name!r}", on_outside)
    return table.with_points(new, t.dst, step=f"{t!r} [{t.src.name} {t.src.unit} -> {t.dst.name} {t.dst.unit}]")
