"""The neuron data model: a node table (id, parent, type, xyz, radius) in a named space.

A :class:`Neuron` is a tree (or a forest: several roots are allowed) of nodes
held in a pandas DataFrame with the SWC columns ``id, type, x, y, z, radius,
parent`` (``parent == -1`` marks a root). It knows its :class:`~atlasreg.Space`
(name, unit, orientation), a name, a JSON-serialisable provenance record (where
it came from and which transforms moved it) and, optionally, a synapse table
whose ``node_id`` column attaches every synapse to a node.

Structure is validated on construction: duplicate ids, parents that do not
exist and cycles raise :class:`~atlasreg.errors.InputError` naming the file and
line (or the table row) of the offending node.
"""
from __future__ import annotations

import copy as _copy
import json
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from ..errors import InputError, SpaceMismatchError
from ..spaces import Space, normalize_unit

#: Node table columns, in SWC order.
NODE_COLUMNS = ("id", "type", "x", "y", "z", "radius", "parent")
_INT_COLUMNS = ("id", "type", "parent")
_FLOAT_COLUMNS = ("x", "y", "z", "radius")
#: Columns a synapse table must have (coordinates in the neuron's space).
SYNAPSE_COLUMNS = ("node_id", "x", "y", "z")
#: Columns atlas annotation adds; they go stale when coordinates move.
ANNOTATION_COLUMNS = ("region_id", "acronym", "hemisphere", "rollup_id", "rollup_acronym")


def make_space(space: Space | str | None, unit: str | None = None, orientation: str | None = None,
               what: str = "data") -> Space:
    """A Space from a name or Space plus an explicit unit; refuses to guess a missing unit."""
    if isinstance(space, Space):
        if unit is not None and normalize_unit(unit) != space.unit:
            raise InputError(f"space {space.name!r} is in {space.unit}, but unit={unit!r} was given",
                             field="unit")
        if orientation is not None and space.orientation and orientation.lower() != space.orientation:
            raise InputError(f"space {space.name!r} has orientation {space.orientation!r}, but "
                             f"orientation={orientation!r} was given", field="orientation")
        if orientation is not None and not space.orientation:
            return Space(space.name, space.unit, orientation)
        return space
    if space is None or unit is None:
        missing = " and ".join(n for n, v in (("space", space), ("unit", unit)) if v is None)
        raise InputError(f"{what} carries no {missing}: state them, e.g. space='ccf', unit='um'",
                         field="space" if space is None else "unit")
    return Space(str(space), unit, orientation)


def _line_label(lines: np.ndarray | None, row: int) -> str:
    return f"line {int(lines[row])}" if lines is not None else f"row {row}"


def parent_rows(ids: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Row index of each node's parent (-1 for roots, -2 where the parent id does not exist)."""
    ids = np.asarray(ids, dtype=np.int64)
    parents = np.asarray(parents, dtype=np.int64)
    n = len(ids)
    out = np.full(n, -1, dtype=np.int64)
    has = parents >= 0
    if n == 0:
        return out
    # Fast path: ids 1..N in order (most SWC files).
    if ids[0] == 1 and ids[-1] == n and np.array_equal(ids, np.arange(1, n + 1)):
        p = parents[has]
        ok = (p >= 1) & (p <= n)  # parent 0 is not a node here: missing, as on the general path
        r = np.where(ok, p - 1, -2)
        out[has] = r
        return out
    order = np.argsort(ids, kind="stable")
    sid = ids[order]
    p = parents[has]
    pos = np.searchsorted(sid, p)
    pos_c = np.minimum(pos, n - 1)
    found = sid[pos_c] == p
    out[has] = np.where(found, order[pos_c], -2)
    return out


def validate_structure(ids, parents, path=None, lines=None) -> np.ndarray:
    """Check ids are unique, parents exist and there is no cycle; return the parent-row array.

    ``lines`` (file line numbers per row) and ``path`` only shape the error message.
    Cycle detection is vectorised pointer doubling: after ``ceil(log2 N)`` rounds every node
    that can reach a root has, and the rest sit on (or hang from) a cycle.
    """
    ids = np.asarray(ids, dtype=np.int64)
    parents = np.asarray(parents, dtype=np.int64)
    n = len(ids)
    if n == 0:
        raise InputError("the neuron has no nodes", path=path)
    if (ids < 0).any():
        r = int(np.flatnonzero(ids < 0)[0])
        raise InputError(f"{_line_label(lines, r)}: node id {ids[r]} is negative; SWC ids are >= 0",
                         path=path, field="id")
    order = np.argsort(ids, kind="stable")
    sid = ids[order]
    dup = np.flatnonzero(sid[1:] == sid[:-1])
    if dup.size:
        rows = order[np.flatnonzero(sid == sid[dup[0]])]
        first, second = int(rows.min()), int(np.sort(rows)[1])
        raise InputError(
            f"{_line_label(lines, second)}: duplicate node id {ids[second]} (first defined on "
            f"{_line_label(lines, first)}); every node needs its own id", path=path, field="id")
    prow = parent_rows(ids, parents)
    bad = np.flatnonzero(prow == -2)
    if bad.size:
        r = int(bad[0])
        raise InputError(
            f"{_line_label(lines, r)}: node {ids[r]} has parent {parents[r]}, which is not a node of this "
            f"file ({bad.size} node(s) with missing parents); fix the parent or use -1 for a root",
            path=path, field="parent")
    # Pointer doubling: anc[i] = 2^k-th ancestor; roots point to themselves as sinks.
    anc = np.where(prow >= 0, prow, np.arange(n))
    for _ in range(int(np.ceil(np.log2(max(n, 2)))) + 1):
        anc = anc[anc]
    stuck = prow[anc] >= 0  # final ancestor is not a root => a cycle lies on the way up
    if stuck.any():
        # After 2^k >= N steps a stuck node's ancestor lies ON its cycle; report one such node.
        on_cycle = np.unique(anc[stuck])
        r = int(on_cycle.min())
        cyc = [r]
        while len(cyc) < 6:
            nxt = int(prow[cyc[-1]])
            if nxt == r:
                break
            cyc.append(nxt)
        chain = " -> ".join(str(int(ids[c])) for c in cyc) + (" -> ..." if len(cyc) == 6 else f" -> {ids[r]}")
        raise InputError(
            f"{_line_label(lines, r)}: node {ids[r]} is part of a parent cycle ({chain}); a neuron is a tree, "
            "each chain of parents must end at a root (parent -1)", path=path, field="parent")
    return prow


def normalize_roots(ids, parents) -> tuple[np.ndarray, int]:
    """Parents with every root as -1: any negative parent, and parent 0 where no node has id 0 (writers
    that number nodes from 1 use 0 for "no parent"). Returns ``(parents, how many had parent 0)``; the
    rule looks at ids only, so it is the same whatever the order of the rows.

    >>> normalize_roots([1, 2, 3], [0, 1, 1])
    (array([-1,  1,  1]), 1)
    """
    ids = np.asarray(ids, dtype=np.int64)
    parents = np.asarray(parents, dtype=np.int64)
    zero = (parents == 0) & (not (ids == 0).any())
    return np.where((parents < 0) | zero, -1, parents), int(zero.sum())


def _coerce_nodes(df: pd.DataFrame, source=None) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"nodes must be a pandas DataFrame, got {type(df).__name__}", path=source)
    missing = [c for c in ("id", "parent", "x", "y", "z") if c not in df.columns]
    if missing:
        raise InputError(f"node table lacks column(s) {missing}; it needs id, parent, x, y, z "
                         "(type and radius optional)", path=source, field=missing[0])
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for c in NODE_COLUMNS:
        if c not in df.columns:
            col = np.zeros(len(df), np.int64) if c == "type" else np.ones(len(df), np.float64)
        else:
            col = df[c].to_numpy()
        try:
            v = np.asarray(col, dtype=np.float64)
        except (TypeError, ValueError):
            v = pd.to_numeric(pd.Series(col), errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(v)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise InputError(f"row {r}: {c} = {col[r]!r} is not a finite number", path=source, field=c)
        if c in _INT_COLUMNS:
            if (v != np.round(v)).any():
                r = int(np.flatnonzero(v != np.round(v))[0])
                raise InputError(f"row {r}: {c} = {col[r]!r} is not an integer", path=source, field=c)
            out[c] = v.astype(np.int64)
        else:
            out[c] = v
    out["parent"] = normalize_roots(out["id"].to_numpy(), out["parent"].to_numpy())[0]
    extra = [c for c in df.columns if c not in NODE_COLUMNS]
    for c in extra:
        out[c] = df[c].to_numpy()
    return out


class Neuron:
    """A reconstructed neuron: a node table in a named space.

    Parameters
    ----------
    nodes : pandas.DataFrame
        Columns ``id``, ``parent`` (-1 for roots), ``x``, ``y``, ``z`` and optionally ``type``
        (SWC type: 1 soma, 2 axon, 3 dendrite, ...; default 0) and ``radius`` (default 1.0, in the
        space's unit). Further columns (e.g. region annotations) are kept.
    space : Space or str
        The space the coordinates are in. A bare name needs ``unit``.
    unit : str, optional
        ``"nm"``, ``"um"`` or ``"mm"``; required when ``space`` is a name.
    name : str
    provenance : dict, optional
        JSON-serialisable record: ``source_file``, ``source_space``, ``source_unit``, ``voxel_size``,
        ``kind`` (e.g. ``"optical"``, ``"em"``), ``transforms`` (list of steps applied).
    synapses : pandas.DataFrame, optional
        Synapse table with at least ``node_id``, ``x``, ``y``, ``z`` (same space as the nodes).
    source : path, optional
        Only used to name the file in error messages.

    Examples
    --------
    >>> df = pd.DataFrame({"id": [1, 2, 3], "parent": [-1, 1, 2], "x": [0., 3., 3.],
    ...                    "y": [0., 4., 4.], "z": [0., 0., 5.]})
    >>> n = Neuron(df, space="ccf", unit="um", name="toy")
    >>> n.cable_length
    10.0
    >>> n.space
    Space(name='ccf', unit='um', orientation=None)
    """

    def __init__(self, nodes: pd.DataFrame, space: Space | str, unit: str | None = None, name: str = "neuron",
                 provenance: dict | None = None, synapses: pd.DataFrame | None = None,
                 orientation: str | None = None, source=None, _lines=None, _validated: bool = False):
        self.space = make_space(space, unit, orientation, what=f"neuron {name!r}")
        self.name = str(name)
        if _validated:
            self.nodes = nodes
        else:
            self.nodes = _coerce_nodes(nodes, source)
            validate_structure(self.nodes["id"].to_numpy(), self.nodes["parent"].to_numpy(), source, _lines)
        self.provenance = dict(provenance or {})
        try:
            json.dumps(self.provenance)
        except TypeError as exc:
            raise InputError(f"provenance must be JSON-serialisable: {exc}", path=source, field="provenance") from None
        self.synapses = None if synapses is None else _check_synapses(synapses, self.nodes["id"].to_numpy(),
                                                                      source)

    # -- construction / conversion ----------------------------------------------------------
    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, space: Space | str | None = None, unit: str | None = None,
                       name: str | None = None, **kwargs) -> "Neuron":
        """Build a neuron from a node table; ``space``/``unit``/``name`` default to ``df.attrs``.

        >>> n = Neuron.from_dataframe(pd.DataFrame({"id": [1, 2], "parent": [-1, 1], "x": [0., 1.],
        ...                                         "y": [0., 0.], "z": [0., 0.]}), "ccf", "um")
        >>> n.to_dataframe().attrs["space"]
        'ccf'
        """
        a = getattr(df, "attrs", {}) or {}
        space = space if space is not None else a.get("space")
        unit = unit if unit is not None else (None if isinstance(space, Space) else a.get("unit"))
        orientation = kwargs.pop("orientation", None)
        if orientation is None and not isinstance(space, Space):
            orientation = a.get("orientation")
        name = name if name is not None else a.get("name", "neuron")
        kwargs.setdefault("provenance", a.get("provenance"))
        return cls(df, space, unit, name=name, orientation=orientation, **kwargs)

    def to_dataframe(self) -> pd.DataFrame:
        """A copy of the node table; ``attrs`` carry ``space``, ``unit``, ``orientation``, ``name``, ``provenance``."""
        df = self.nodes.copy()
        df.attrs = {"space": self.space.name, "unit": self.space.unit, "orientation": self.space.orientation,
                    "name": self.name, "provenance": _copy.deepcopy(self.provenance)}
        return df

    def copy(self) -> "Neuron":
        return Neuron(self.nodes.copy(), self.space, name=self.name, provenance=_copy.deepcopy(self.provenance),
                      synapses=None if self.synapses is None else self.synapses.copy(), _validated=True)

    def with_coordinates(self, points: np.ndarray, space: Space, radius: np.ndarray | None = None,
                         synapse_points: np.ndarray | None = None, step: str | None = None) -> "Neuron":
        """Same topology and attributes, new coordinates (and radii) in ``space``.

        Region annotations (``region_id``, ``acronym``, ...) describe the old positions and are dropped.
        """
        nodes = self.nodes.drop(columns=[c for c in ANNOTATION_COLUMNS if c in self.nodes.columns])
        pts = np.asarray(points, dtype=np.float64)
        nodes["x"], nodes["y"], nodes["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
        if radius is not None:
            nodes["radius"] = np.asarray(radius, dtype=np.float64)
        syn = None
        if self.synapses is not None:
            syn = self.synapses.drop(columns=[c for c in ANNOTATION_COLUMNS if c in self.synapses.columns])
            if synapse_points is not None:
                sp = np.asarray(synapse_points, dtype=np.float64)
                syn["x"], syn["y"], syn["z"] = sp[:, 0], sp[:, 1], sp[:, 2]
        prov = _copy.deepcopy(self.provenance)
        if step is not None:
            prov.setdefault("transforms", []).append(step)
        return Neuron(nodes, space, name=self.name, provenance=prov, synapses=syn, _validated=True)

    # -- geometry ----------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def points(self) -> np.ndarray:
        """``(N, 3)`` node coordinates in :attr:`space` (a copy)."""
        nd = self.nodes  # column by column: selecting a 3-column frame first costs ~10x more
        return np.column_stack([nd["x"].to_numpy(np.float64), nd["y"].to_numpy(np.float64),
                                nd["z"].to_numpy(np.float64)])

    @property
    def radius(self) -> np.ndarray:
        return self.nodes["radius"].to_numpy(np.float64)

    def parent_index(self) -> np.ndarray:
        """Row of each node's parent, -1 for roots."""
        return parent_rows(self.nodes["id"].to_numpy(), self.nodes["parent"].to_numpy())

    def segments(self) -> tuple[np.ndarray, np.ndarray]:
        """``(child_rows, parent_rows)`` of every parent-child edge."""
        p = self.parent_index()
        child = np.flatnonzero(p >= 0)
        return child, p[child]

    def segment_lengths(self) -> np.ndarray:
        """Length of the edge from each non-root node to its parent (order of :meth:`segments`)."""
        c, p = self.segments()
        pts = self.points
        return np.sqrt(((pts[c] - pts[p]) ** 2).sum(1))

    @property
    def cable_length(self) -> float:
        """Total length of all parent-child edges, in the space's unit."""
        return float(self.segment_lengths().sum())

    @property
    def roots(self) -> np.ndarray:
        return np.flatnonzero(self.nodes["parent"].to_numpy() < 0)

    @property
    def soma_row(self) -> int:
        """Row of the soma: the root of SWC type 1 (the lowest id if several), else the type-1 node of
        lowest id, else the root of lowest id — the same node whatever the order of the rows."""
        ids = self.nodes["id"].to_numpy()
        is_soma = self.nodes["type"].to_numpy() == 1
        is_root = self.nodes["parent"].to_numpy() < 0
        for pick in (is_soma & is_root, is_soma, is_root):
            rows = np.flatnonzero(pick)
            if rows.size:
                return int(rows[np.argmin(ids[rows])])
        raise InputError(f"neuron {self.name!r} has no root (every node has a parent)")

    @property
    def soma(self) -> np.ndarray:
        """Soma position ``(3,)`` in :attr:`space`."""
        return self.points[self.soma_row]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounding box (min, max) of the nodes."""
        pts = self.points
        return pts.min(0), pts.max(0)

    # -- comparison / display -------------------------------------------------------------
    def equals(self, other: "Neuron", atol: float = 0.0) -> bool:
        """Same name, space, provenance, topology and values (coordinates within ``atol``)."""
        if not isinstance(other, Neuron):
            return False
        if (self.name, self.space, self.provenance) != (other.name, other.space, other.provenance):
            return False
        return _frames_equal(self.nodes, other.nodes, atol) and _frames_equal(self.synapses, other.synapses, atol)

    def __eq__(self, other) -> bool:
        return self.equals(other)

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        syn = "" if self.synapses is None else f", {len(self.synapses)} synapses"
        return (f"Neuron({self.name!r}, {self.n_nodes} nodes{syn}, space={self.space}, "
                f"cable={self.cable_length:.6g} {self.space.unit})")


def _frames_equal(a: pd.DataFrame | None, b: pd.DataFrame | None, atol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    for c in a.columns:
        x, y = a[c].to_numpy(), b[c].to_numpy()
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            if x.dtype.kind not in "fiu" or y.dtype.kind not in "fiu":
                return False
            if not np.allclose(x, y, rtol=0, atol=atol, equal_nan=True):
                return False
        elif not a[c].reset_index(drop=True).equals(b[c].reset_index(drop=True)):  # NaN == NaN here
            return False
    return True


def _check_synapses(syn: pd.DataFrame, node_ids: np.ndarray, source=None) -> pd.DataFrame:
    if not isinstance(syn, pd.DataFrame):
        raise InputError(f"synapses must be a pandas DataFrame, got {type(syn).__name__}", path=source)
    missing = [c for c in SYNAPSE_COLUMNS if c not in syn.columns]
    if missing:
        raise InputError(f"synapse table lacks column(s) {missing}; it needs node_id, x, y, z", path=source,
                         field=missing[0])
    syn = syn.reset_index(drop=True).copy()
    nid = pd.to_numeric(syn["node_id"], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(nid) | (nid != np.round(nid))
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise InputError(f"synapse row {r}: node_id {syn['node_id'].iloc[r]!r} is not an integer", path=source,
                         field="node_id")
    syn["node_id"] = nid.astype(np.int64)
    orphan = ~np.isin(syn["node_id"].to_numpy(), node_ids)
    if orphan.any():
        r = int(np.flatnonzero(orphan)[0])
        raise InputError(f"synapse row {r}: node_id {syn['node_id'].iloc[r]} is not a node of the neuron "
                         f"({int(orphan.sum())} synapse(s) unattached); check the synapse table matches "
                         "the skeleton", path=source, field="node_id")
    for c in ("x", "y", "z"):
        v = pd.to_numeric(syn[c], errors="coerce").to_numpy(np.float64)
        if not np.all(np.isfinite(v)):
            r = int(np.flatnonzero(~np.isfinite(v))[0])
            raise InputError(f"synapse row {r}: {c} = {syn[c].iloc[r]!r} is not a finite number", path=source,
                             field=c)
        syn[c] = v
    return syn


class NeuronList:
    """An ordered collection of neurons with unique names (index by position or name).

    Examples
    --------
    >>> df = pd.DataFrame({"id": [1, 2], "parent": [-1, 1], "x": [0., 1.], "y": [0., 0.], "z": [0., 0.]})
    >>> nl = NeuronList([Neuron(df, "ccf", "um", name="a"), Neuron(df, "ccf", "um", name="b")])
    >>> nl["b"].name, len(nl), nl.space.name
    ('b', 2, 'ccf')
    """

    def __init__(self, neurons: Iterable[Neuron] = ()):
        self._items: list[Neuron] = []
        for n in neurons:
            self.append(n)

    def append(self, neuron: Neuron) -> None:
        if not isinstance(neuron, Neuron):
            raise InputError(f"a NeuronList holds Neuron objects, got {type(neuron).__name__}")
        if neuron.name in self.names:
            raise InputError(f"duplicate neuron name {neuron.name!r} in the collection; names must be unique "
                             "(rename one: neuron.name = ...)", field="name")
        self._items.append(neuron)

    def extend(self, neurons: Iterable[Neuron]) -> None:
        for n in neurons:
            self.append(n)

    @property
    def names(self) -> list[str]:
        return [n.name for n in self._items]

    @property
    def space(self) -> Space | None:
        """The common space of all neurons (None when empty); mixed spaces raise."""
        if not self._items:
            return None
        s = self._items[0].space
        for n in self._items[1:]:
            if n.space.name != s.name or n.space.unit != s.unit:
                raise SpaceMismatchError(f"the collection mixes spaces: {s} ({self._items[0].name}) and "
                                         f"{n.space} ({n.name}); transform them into one space first")
        return s

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Neuron]:
        return iter(self._items)

    def __getitem__(self, key):
        if isinstance(key, str):
            for n in self._items:
                if n.name == key:
                    return n
            raise KeyError(f"no neuron named {key!r} (have {self.names[:10]}{'...' if len(self) > 10 else ''})")
        if isinstance(key, slice):
            return NeuronList(self._items[key])
        return self._items[key]

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def equals(self, other: "NeuronList", atol: float = 0.0) -> bool:
        return (isinstance(other, NeuronList) and self.names == other.names
                and all(a.equals(b, atol) for a, b in zip(self, other)))

    def __eq__(self, other) -> bool:
        return self.equals(other)

    __hash__ = None

    def summary(self) -> pd.DataFrame:
        """One row per neuron: name, kind, space, unit, n_nodes, n_synapses, cable_length, source space."""
        rows = []
        for n in self._items:
            p = n.provenance
            rows.append({"name": n.name, "kind": p.get("kind"), "space": n.space.name, "unit": n.space.unit,
                         "n_nodes": n.n_nodes, "n_synapses": 0 if n.synapses is None else len(n.synapses),
                         "cable_length": n.cable_length, "source_space": p.get("source_space"),
                         "source_unit": p.get("source_unit"), "source_file": p.get("source_file")})
        return pd.DataFrame(rows)

    def nodes_table(self) -> pd.DataFrame:
        """All node tables stacked, with a ``neuron`` column (a categorical of names)."""
        if not self._items:
            return pd.DataFrame(columns=["neuron", *NODE_COLUMNS])
        frames = [n.nodes.assign(neuron=n.name) for n in self._items]
        df = pd.concat(frames, ignore_index=True)
        df["neuron"] = pd.Categorical(df["neuron"], categories=self.names)
        return df[["neuron"] + [c for c in df.columns if c != "neuron"]]

    def __repr__(self) -> str:
        return f"NeuronList({len(self)} neurons: {', '.join(self.names[:5])}{', ...' if len(self) > 5 else ''})"
