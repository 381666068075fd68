"""Neurons against an atlas: region of every node and synapse, soma region, hemisphere, projection matrices.

Everything here is vectorised over all nodes of all neurons at once (one
``atlas.region_of`` call, ``np.bincount`` for the sums), so ten million nodes
take seconds.

How cable is assigned to regions
--------------------------------
Each parent-child edge is a straight segment. With ``method="midpoint"`` (the
default) its whole length goes to the region of the voxel nearest its
midpoint. With ``method="split"`` edges longer than ``max_step`` (default: half
the atlas voxel) are first cut into equal pieces no longer than that, each piece
assigned by its own midpoint — a close approximation of cutting at region
boundaries. Either way every edge's length is counted exactly once, so a row of
the projection matrix sums to the neuron's cable length (up to float rounding);
cable outside any structure is kept in the columns for ``0`` ("no structure",
inside the volume) and ``-1`` ("outside the annotation volume").
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError, SpaceMismatchError
from ..spaces import Space
from .neuron import Neuron

NONE_LABEL = "(none)"      # id 0: inside the volume, no structure
OUTSIDE_LABEL = "(outside)"  # id -1: outside the annotation volume


def _neurons(neurons) -> list[Neuron]:
    if isinstance(neurons, Neuron):
        return [neurons]
    items = list(neurons)
    for n in items:
        if not isinstance(n, Neuron):
            raise InputError(f"expected Neuron objects, got {type(n).__name__}")
    return items


def _check_space(space: Space, atlas, what: str) -> None:
    a = atlas.space
    if space.name != a.name:
        raise SpaceMismatchError(f"{what} is in space {space.name!r}, the atlas in {a.name!r}: move it into the "
                                 f"atlas space first (transform_neuron(n, graph, dst={a.name!r}))")


def _region_ids(atlas, pts: np.ndarray, space: Space | None, nearest_within: float | None = None) -> np.ndarray:
    # Same space name, maybe another unit: region_of rescales (and checks) units itself.
    return np.asarray(atlas.region_of(pts, space=space, on_invalid="warn", nearest_within=nearest_within),
                      dtype=np.int64)


def _labels(onto, ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    out = np.asarray(onto.acronyms(ids), dtype=object)
    out[ids == 0] = NONE_LABEL
    out[ids == -1] = OUTSIDE_LABEL
    return out


def _rolled(onto, ids: np.ndarray, level: int | None, parents) -> np.ndarray:
    if level is not None and parents is not None:
        raise InputError("give level= or parents=, not both", field="level")
    if level is not None:
        return np.asarray(onto.at_level(ids, level), dtype=np.int64)
    if parents is not None:
        return np.asarray(onto.rollup(ids, parents), dtype=np.int64)
    return ids


def annotate_points(points, atlas, space: Space | str | None = None, level: int | None = None,
                    parents=None, graph=None, nearest_within: float | None = None) -> pd.DataFrame:
    """Region and hemisphere of each point.

    Points are in the atlas space (default), in ``space`` (same name, another unit or orientation code:
    converted), or in any space ``graph`` (a :class:`~atlasreg.SpaceGraph`) links to the atlas.
    ``nearest_within``: a point on no structure takes the nearest labelled voxel within this distance
    (atlas unit), as :meth:`atlasreg.Atlas.region_of`.

    Returns a DataFrame with ``region_id`` (0 no structure, -1 outside), ``acronym``,
    ``hemisphere`` (1 left, 2 right, 0 unassigned, -1 outside) and, with ``level`` or ``parents``,
    ``rollup_id`` / ``rollup_acronym`` (the ancestor at that depth, or the deepest of ``parents``).

    Examples
    --------
    >>> annotate_points([[5000.0, 4000.0, 5700.0]], atlas)  # doctest: +SKIP
       region_id acronym  hemisphere
    0        564      MS           1
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"points must be (N, 3), got shape {pts.shape}", field="points")
    sp = None
    if space is not None:
        name = space.name if isinstance(space, Space) else str(space)
        if graph is not None and name != atlas.space.name:
            pts = np.asarray(atlas.to_atlas_points(pts, space=space, graph=graph), dtype=np.float64)
        else:
            sp = space if isinstance(space, Space) else Space(name, atlas.space.unit, atlas.space.orientation)
            _check_space(sp, atlas, "the points")
    ids = _region_ids(atlas, pts, sp, nearest_within)
    onto = atlas.ontology
    inv, u = pd.factorize(ids)  # label the few distinct ids, not every point (hashing, no sort)
    u = np.asarray(u, dtype=np.int64)
    # Acronyms as a Categorical: one string per distinct region, not per point.
    out = pd.DataFrame({"region_id": ids, "acronym": pd.Categorical.from_codes(inv, _labels(onto, u)),
                        "hemisphere": np.asarray(atlas.hemisphere_of(pts, space=sp), dtype=np.int64)})
    if level is not None or parents is not None:
        r = _rolled(onto, u, level, parents)
        out["rollup_id"] = r[inv]
        ru, rinv = np.unique(r, return_inverse=True)
        out["rollup_acronym"] = pd.Categorical.from_codes(rinv[inv], _labels(onto, ru))
    return out


def annotate_neuron(neuron: Neuron, atlas, level: int | None = None, parents=None) -> Neuron:
    """A copy of ``neuron`` whose node (and synapse) tables gain ``region_id``, ``acronym``, ``hemisphere``."""
    _check_space(neuron.space, atlas, f"neuron {neuron.name!r}")
    out = neuron.copy()
    ann = annotate_points(neuron.points, atlas, space=neuron.space, level=level, parents=parents)
    for c in ann.columns:
        out.nodes[c] = ann[c].to_numpy()
    if neuron.synapses is not None and len(neuron.synapses):
        sa = annotate_points(neuron.synapses[["x", "y", "z"]].to_numpy(np.float64), atlas, space=neuron.space,
                             level=level, parents=parents)
        for c in sa.columns:
            out.synapses[c] = sa[c].to_numpy()
    return out


def soma_regions(neurons, atlas, level: int | None = None, parents=None) -> pd.DataFrame:
    """One row per neuron: soma position, ``region_id``, ``acronym``, ``hemisphere`` (and rollup)."""
    items = _neurons(neurons)
    if not items:
        return pd.DataFrame(columns=["name", "x", "y", "z", "region_id", "acronym", "hemisphere"])
    for n in items:
        _check_space(n.space, atlas, f"neuron {n.name!r}")
    units = {n.space.unit for n in items}
    if len(units) > 1:
        raise SpaceMismatchError(f"neurons are in several units {sorted(units)}; convert them to one first")
    pts = np.array([n.soma for n in items])
    ann = annotate_points(pts, atlas, space=items[0].space, level=level, parents=parents)
    df = pd.DataFrame({"name": [n.name for n in items], "x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2]})
    return pd.concat([df, ann], axis=1)


def _check_all(items: list[Neuron], atlas) -> None:
    for n in items:
        _check_space(n.space, atlas, f"neuron {n.name!r}")
    units = {n.space.unit for n in items}
    if len(units) > 1:
        raise SpaceMismatchError(f"neurons are in several units {sorted(units)}; convert them to one first")


def _edges(items: list[Neuron], want_vectors: bool):
    """Per edge of all neurons: owner index, length, midpoint — and (start, vector) if ``want_vectors``.

    Built neuron by neuron so that no node-sized temporaries of the whole collection pile up.
    """
    own, lens, mids, starts, vecs = [], [], [], [], []
    for k, n in enumerate(items):
        c, p = n.segments()
        pts = n.points
        a = pts[c]
        d = pts[p] - a
        lens.append(np.sqrt(np.einsum("ij,ij->i", d, d)))
        own.append(np.full(len(c), k, dtype=np.int64))
        if want_vectors:
            starts.append(a)
            vecs.append(d)
        else:
            d *= 0.5
            d += a
            mids.append(d)
    if not items:
        z = np.zeros((0, 3))
        return np.zeros(0, np.int64), np.zeros(0), z, z, z
    cat = np.concatenate
    if want_vectors:
        return cat(own), cat(lens), None, cat(starts), cat(vecs)
    return cat(own), cat(lens), cat(mids), None, None


def segment_regions(neurons, atlas, method: str = "midpoint", max_step: float | None = None,
                    with_hemisphere: bool = True):
    """Cable pieces with their region: ``(neuron_index, length, region_id, hemisphere)`` arrays.

    ``hemisphere`` is None unless ``with_hemisphere``.
    See the module docstring for ``method``. Lengths are in the neurons' unit.
    """
    items = _neurons(neurons)
    if method not in ("midpoint", "split"):
        raise InputError("method must be 'midpoint' or 'split'", field="method")
    _check_all(items, atlas)
    if not items:
        e = np.zeros(0, np.int64)
        return e, np.zeros(0), e, (e if with_hemisphere else None)
    if method == "split" and max_step is None:
        from ..spaces import unit_scale

        max_step = 0.5 * float(np.min(atlas.voxel_size)) * unit_scale(atlas.space.unit, items[0].space.unit)
    if method == "split" and not (max_step is not None and max_step > 0):
        raise InputError("max_step must be > 0", field="max_step")
    owner, length, mid, a, seg = _edges(items, want_vectors=(method == "split"))
    piece = length
    if method == "split":
        k = np.maximum(1, np.ceil(length / max_step)).astype(np.int64)
        if (k > 1).any():
            rep = np.repeat(np.arange(len(k)), k)
            j = np.arange(len(rep)) - np.repeat(np.cumsum(k) - k, k)
            f = ((j + 0.5) / k[rep])[:, None]
            mid = a[rep] + f * seg[rep]
            piece = (length / k)[rep]
            owner = owner[rep]
        else:
            mid = a + 0.5 * seg
    sp = items[0].space
    region = _region_ids(atlas, mid, sp)
    hemi = None
    if with_hemisphere:
        hemi = np.asarray(atlas.hemisphere_of(mid, space=sp), dtype=np.int64) if len(mid) else np.zeros(0, np.int64)
    return owner, piece, region, hemi


def _matrix(owner: np.ndarray, values: np.ndarray | None, region: np.ndarray, names: list[str], onto,
            level, parents, labels: str) -> pd.DataFrame:
    code, u = pd.factorize(region)  # hashing: no sort of millions of ids
    u = np.asarray(u, dtype=np.int64)
    r = _rolled(onto, u, level, parents) if len(u) else u
    # Collapse the distinct ids onto their rolled-up ids before counting (cheap: few hundred ids).
    ru, rcode = np.unique(r, return_inverse=True)
    col = rcode[code] if len(code) else code
    nr = len(ru)
    flat = owner * nr + col
    w = None if values is None else values
    m = np.bincount(flat, weights=w, minlength=len(names) * nr).reshape(len(names), nr) if nr else \
        np.zeros((len(names), 0))
    if values is None:
        m = m.astype(np.int64)
    if labels == "acronym":
        cols = pd.Index(_labels(onto, ru), name="region")
    elif labels == "id":
        cols = pd.Index(ru, name="region_id")
    else:
        raise InputError("labels must be 'acronym' or 'id'", field="labels")
    return pd.DataFrame(m, index=pd.Index(names, name="neuron"), columns=cols)


def projection_matrix(neurons, atlas, level: int | None = None, parents=None, method: str = "midpoint",
                      max_step: float | None = None, labels: str = "acronym",
                      hemisphere: bool = False) -> pd.DataFrame:
    """Cable length per region per neuron (a neuron x region DataFrame, in the neurons' unit).

    Parameters
    ----------
    neurons : Neuron or iterable of Neuron, in the atlas space
    atlas : Atlas
    level : int, optional
        Roll regions up to their ancestor at this depth of the structure tree (root = 0).
    parents : list of ids / acronyms, optional
        Roll regions up to the deepest of these that contains them (others -> 0).
    method : {"midpoint", "split"}
        How edges are assigned (module docstring). Rows sum to each neuron's cable length.
    labels : {"acronym", "id"}
        Column labels; ids 0 / -1 become ``"(none)"`` / ``"(outside)"`` as acronyms.
    hemisphere : bool
        Split columns by hemisphere: a (hemisphere, region) MultiIndex, 1 left, 2 right.

    Examples
    --------
    >>> M = projection_matrix(fmost, atlas, level=5)          # doctest: +SKIP
    >>> bool(np.allclose(M.sum(1), [n.cable_length for n in fmost]))  # doctest: +SKIP
    True
    """
    items = _neurons(neurons)
    names = [n.name for n in items]
    owner, piece, region, hemi = segment_regions(items, atlas, method=method, max_step=max_step,
                                                 with_hemisphere=hemisphere)
    onto = atlas.ontology
    if not hemisphere:
        return _matrix(owner, piece, region, names, onto, level, parents, labels)
    parts = {}
    for h in np.unique(hemi):
        sel = hemi == h
        parts[int(h)] = _matrix(owner[sel], piece[sel], region[sel], names, onto, level, parents, labels)
    return pd.concat(parts, axis=1, names=["hemisphere"]).fillna(0.0)


def synapse_counts(neurons, atlas, level: int | None = None, parents=None, by: str | None = "type",
                   labels: str = "acronym") -> pd.DataFrame:
    """Synapses per region per neuron (rows: neuron, or (neuron, ``by`` value) when ``by`` names a column).

    Examples
    --------
    >>> synapse_counts(em_in_ccf, atlas, level=6)  # doctest: +SKIP
    """
    items = [n for n in _neurons(neurons) if n.synapses is not None and len(n.synapses)]
    if not items:
        return pd.DataFrame()
    for n in items:
        _check_space(n.space, atlas, f"neuron {n.name!r}")
    pts = np.concatenate([n.synapses[["x", "y", "z"]].to_numpy(np.float64) for n in items])
    region = _region_ids(atlas, pts, items[0].space)
    if by is not None and all(by in n.synapses.columns for n in items):
        keys = pd.Index([f"{n.name}\x00{v}" for n in items for v in n.synapses[by].astype(str)])
        codes, uniq = pd.factorize(keys, sort=False)
        m = _matrix(codes.astype(np.int64), None, region, list(range(len(uniq))), atlas.ontology, level, parents,
                    labels)
        idx = pd.MultiIndex.from_tuples([tuple(s.split("\x00", 1)) for s in uniq], names=["neuron", by])
        m.index = idx
        return m
    owner = np.concatenate([np.full(len(n.synapses), k, np.int64) for k, n in enumerate(items)])
    return _matrix(owner, None, region, [n.name for n in items], atlas.ontology, level, parents, labels)


def rollup_matrix(matrix: pd.DataFrame, atlas_or_ontology, level: int | None = None, parents=None) -> pd.DataFrame:
    """Sum the columns of an id-labelled region matrix (``labels="id"``) up the hierarchy."""
    onto = getattr(atlas_or_ontology, "ontology", atlas_or_ontology)
    ids = np.asarray(matrix.columns, dtype=np.int64)
    r = _rolled(onto, ids, level, parents)
    out = matrix.T.groupby(r).sum().T
    out.columns.name = "region_id"
    return out
