"""EM and optical tracings in one atlas frame: collections, EM block footprints, export / import.

An :class:`EMBlock` is the box an EM volume covers in its own space plus the
transform that places it in the atlas; its *footprint* is that box carried
through the transform. :func:`find_passing` lists the optical neurons whose
arbors pass through the footprint and how much cable lies inside: each segment
is taken back into the block's space (exactly, through the inverse transform)
and clipped against the box. For an affine placement a straight segment stays
straight, so the clipped fraction is exact; for a nonlinear placement segments
are first cut into pieces no longer than ``max_step``.

:func:`write_collection` / :func:`read_collection` store a combined collection
as SWC files in atlas space (with sidecars), a ``neurons.parquet`` table (one row
per neuron, with the space each came from and the transforms that moved it),
``nodes.parquet`` (every node table, extra annotation columns included) and
``synapses.parquet``; reading gives back an identical collection.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, OutputExistsError, SpaceMismatchError
from ..graph import SpaceGraph
from ..spaces import Space, unit_scale
from ..transforms.base import Affine, Sequence, Transform, as_points
from .neuron import Neuron, NeuronList
from .swc import read_swc, write_swc
from .transform import transform_neuron

COLLECTION_FORMAT = "atlasreg-neuron-collection"


def _as_affine(t: Transform) -> Affine | None:
    if isinstance(t, Affine):
        return t
    if isinstance(t, Sequence):
        s = t.simplified()
        if len(s) == 1 and isinstance(s[0], Affine):
            return s[0]
    return None


@dataclass
class EMBlock:
    """An EM block: a box ``[lo, hi]`` in its own space and the transform that places it in the atlas.

    Parameters
    ----------
    lo, hi : 3 floats
        Opposite corners of the block in ``transform.src`` (its unit).
    transform : Transform
        Block space -> atlas space.
    name : str

    Examples
    --------
    >>> T = Affine.from_scale(1e-3, src=Space("em", "nm"), dst=Space("ccf", "um"))
    >>> b = EMBlock([0, 0, 0], [1e5, 1e5, 1e5], T)
    >>> b.contains([[50., 50., 50.], [150., 0., 0.]]).tolist()
    [True, False]
    """

    lo: np.ndarray
    hi: np.ndarray
    transform: Transform
    name: str = "em_block"

    def __post_init__(self):
        self.lo = np.asarray(self.lo, dtype=np.float64).reshape(3)
        self.hi = np.asarray(self.hi, dtype=np.float64).reshape(3)
        if not (np.all(np.isfinite(self.lo)) and np.all(np.isfinite(self.hi))):
            raise InputError("block bounds must be finite", field="block")
        if np.any(self.hi <= self.lo):
            raise InputError(f"block bounds need lo < hi on every axis, got lo={self.lo.tolist()} "
                             f"hi={self.hi.tolist()}", field="block")
        if not isinstance(self.transform, Transform):
            raise InputError(f"block transform must be a Transform, got {type(self.transform).__name__}",
                             field="block")
        self._inv = None

    @property
    def space(self) -> Space:
        """The block's own space."""
        return self.transform.src

    @property
    def atlas_space(self) -> Space:
        return self.transform.dst

    def _inverse(self) -> Transform:
        if self._inv is None:
            self._inv = self.transform.inverse()
        return self._inv

    def corners(self) -> np.ndarray:
        """The 8 corners of the block in its own space."""
        return np.array([[x, y, z] for x in (self.lo[0], self.hi[0]) for y in (self.lo[1], self.hi[1])
                         for z in (self.lo[2], self.hi[2])])

    def surface_points(self, n: int = 9) -> np.ndarray:
        """Points on the block's faces (an ``n`` x ``n`` grid each), in the block's space."""
        g = np.linspace(0.0, 1.0, n)
        a, b = np.meshgrid(g, g, indexing="ij")
        a, b = a.ravel(), b.ravel()
        faces = []
        for ax in range(3):
            o1, o2 = [k for k in range(3) if k != ax]
            for side in (0.0, 1.0):
                f = np.empty((a.size, 3))
                f[:, ax] = side
                f[:, o1], f[:, o2] = a, b
                faces.append(f)
        u = np.vstack(faces)
        return self.lo + u * (self.hi - self.lo)

    def footprint(self, n: int = 9) -> np.ndarray:
        """The block's faces carried into the atlas: ``(6 n^2, 3)`` points in :attr:`atlas_space`."""
        return self.transform.map_points(self.surface_points(n))

    def atlas_bounds(self, n: int = 9) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned box around the footprint in the atlas (exact for affine placements)."""
        if _as_affine(self.transform) is not None:
            pts = self.footprint(2)
            return np.nanmin(pts, 0), np.nanmax(pts, 0)
        pts = self.footprint(n)
        lo, hi = np.nanmin(pts, 0), np.nanmax(pts, 0)
        pad = 0.05 * (hi - lo)  # faces may bulge between the sampled points
        return lo - pad, hi + pad

    def contains(self, points) -> np.ndarray:
        """Boolean mask: which atlas-space points lie inside the footprint."""
        pts = as_points(points)
        out = np.zeros(len(pts), bool)
        lo, hi = self.atlas_bounds()
        near = np.all((pts >= lo) & (pts <= hi), axis=1)
        if near.any():
            q = self._inverse().map_points(pts[near])
            out[near] = np.all((q >= self.lo) & (q <= self.hi), axis=1)
        return out

    def length_inside(self, neuron: Neuron, max_step: float | None = None) -> float:
        """Cable length (atlas units) of ``neuron`` inside the footprint."""
        return float(_inside_lengths(self, neuron, max_step).sum())

    def __repr__(self) -> str:
        return (f"EMBlock({self.name!r}, {self.space.name} box {self.lo.tolist()}..{self.hi.tolist()} "
                f"-> {self.atlas_space.name})")


def _clip_fraction(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Fraction of each segment a->b inside the box [lo, hi] (Liang-Barsky, vectorised)."""
    d = b - a
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - a) / d
        t2 = (hi - a) / d
    tmin = np.minimum(t1, t2)
    tmax = np.maximum(t1, t2)
    flat = d == 0
    inside_flat = (a >= lo) & (a <= hi)
    # Axis parallel to the segment: no constraint when inside the slab, empty otherwise.
    tmin = np.where(flat, np.where(inside_flat, -np.inf, np.inf), tmin)
    tmax = np.where(flat, np.where(inside_flat, np.inf, -np.inf), tmax)
    t0 = np.maximum(tmin.max(1), 0.0)
    t1_ = np.minimum(tmax.min(1), 1.0)
    frac = np.clip(t1_ - t0, 0.0, 1.0)
    frac[~np.all(np.isfinite(a), 1) | ~np.all(np.isfinite(b), 1)] = 0.0
    return frac


def _inside_lengths(block: EMBlock, neuron: Neuron, max_step: float | None) -> np.ndarray:
    if neuron.space.name != block.atlas_space.name or neuron.space.unit != block.atlas_space.unit:
        raise SpaceMismatchError(f"neuron {neuron.name!r} is in {neuron.space}, the block's footprint in "
                                 f"{block.atlas_space}; move the neuron into the atlas space first")
    c, p = neuron.segments()
    pts = neuron.points
    a, b = pts[c], pts[p]
    seg_len = np.sqrt(((b - a) ** 2).sum(1))
    out = np.zeros(len(c))
    lo, hi = block.atlas_bounds()
    # Cheap rejection: both ends beyond the same face of the footprint's bounding box.
    cand = ~np.any(((a < lo) & (b < lo)) | ((a > hi) & (b > hi)), axis=1)
    if not cand.any():
        return out
    idx = np.flatnonzero(cand)
    a, b, L = a[idx], b[idx], seg_len[idx]
    inv = block._inverse()
    affine = _as_affine(block.transform) is not None
    if affine:
        qa, qb = inv.map_points(a), inv.map_points(b)
        out[idx] = _clip_fraction(qa, qb, block.lo, block.hi) * L
        return out
    if max_step is None:
        max_step = float(np.linalg.norm(hi - lo)) / 200.0
    k = np.maximum(1, np.ceil(L / max_step)).astype(np.int64)
    seg = np.repeat(np.arange(len(idx)), k)
    start = np.concatenate([[0], np.cumsum(k)[:-1]])
    j = np.arange(k.sum()) - np.repeat(start, k)
    f0 = (j / np.repeat(k, k))[:, None]
    f1 = ((j + 1) / np.repeat(k, k))[:, None]
    pa = a[seg] + f0 * (b[seg] - a[seg])
    pb = a[seg] + f1 * (b[seg] - a[seg])
    qa, qb = inv.map_points(pa), inv.map_points(pb)
    piece = _clip_fraction(qa, qb, block.lo, block.hi) * (L[seg] / k[seg])
    out[idx] = np.bincount(seg, weights=piece, minlength=len(idx))
    return out


def bounds_of(neurons) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box (lo, hi) of the nodes and synapses of one or more neurons (all in one space)."""
    items = [neurons] if isinstance(neurons, Neuron) else list(neurons)
    if not items:
        raise InputError("no neurons to bound", field="neurons")
    los, his = [], []
    for n in items:
        if (n.space.name, n.space.unit) != (items[0].space.name, items[0].space.unit):
            raise SpaceMismatchError(f"neurons {items[0].name!r} ({items[0].space}) and {n.name!r} ({n.space}) "
                                     "are in different spaces")
        pts = n.points
        if n.synapses is not None and len(n.synapses):
            pts = np.vstack([pts, n.synapses[["x", "y", "z"]].to_numpy(np.float64)])
        los.append(pts.min(0))
        his.append(pts.max(0))
    return np.min(los, 0), np.max(his, 0)


def block_from_neurons(neurons, transform: Transform, margin: float = 0.0, name: str = "em_block") -> EMBlock:
    """The EM block as the bounding box of its skeletons and synapses (in their space), plus ``margin``."""
    items = [neurons] if isinstance(neurons, Neuron) else list(neurons)
    if not items:
        raise InputError("no EM neurons to bound a block with", field="em")
    for n in items:
        if n.space.name != transform.src.name or n.space.unit != transform.src.unit:
            raise SpaceMismatchError(f"EM neuron {n.name!r} is in {n.space}, the block transform starts in "
                                     f"{transform.src}")
    lo, hi = bounds_of(items)
    return EMBlock(lo - margin, hi + margin, transform, name=name)


def place_block(src: Space, lo, hi, center, dst: Space, rotation_deg=(0.0, 0.0, 0.0)) -> Affine:
    """A synthetic placement of an EM block in an atlas: unit change, rotation, block centre -> ``center``.

    Used where no registration links the EM data to the atlas (e.g. *Drosophila* hemibrain
    skeletons shown in the mouse CCF for testing and demos): the block keeps its physical size.

    Examples
    --------
    >>> T = place_block(Space("em", "nm"), [0, 0, 0], [2e5, 2e5, 2e5], [5000, 4000, 6000], Space("ccf", "um"))
    >>> T.map_points([[1e5, 1e5, 1e5]]).round(6).tolist()
    [[5000.0, 4000.0, 6000.0]]
    """
    s = unit_scale(src.unit, dst.unit)
    c_src = (np.asarray(lo, float) + np.asarray(hi, float)) / 2.0
    R = Affine.from_rotation(rotation_deg).matrix[:3, :3]
    m = np.eye(4)
    m[:3, :3] = R * s
    m[:3, 3] = np.asarray(center, float) - m[:3, :3] @ c_src
    return Affine(m, src, dst)


def _tag(n: Neuron, kind: str) -> Neuron:
    n = n.copy()
    n.provenance.setdefault("kind", kind)
    n.provenance.setdefault("source_space", n.space.name)
    n.provenance.setdefault("source_unit", n.space.unit)
    n.provenance.setdefault("transforms", [])
    return n


def combine(em=(), optical=(), dst: Space | str | None = None, em_transform: Transform | SpaceGraph | None = None,
            optical_transform: Transform | SpaceGraph | None = None) -> NeuronList:
    """One collection in atlas space from EM skeletons and optical reconstructions.

    Each group moves through its transform (or graph, searched for a path to ``dst``); a group
    already in ``dst`` needs none. Provenance records ``kind`` (``"em"``/``"optical"``), the source
    space and every transform applied.

    Examples
    --------
    >>> both = combine(em=em_neurons, optical=fmost, dst="ccf", em_transform=block.transform)  # doctest: +SKIP
    """
    out = NeuronList()
    for group, kind, t in ((em, "em", em_transform), (optical, "optical", optical_transform)):
        items = [group] if isinstance(group, Neuron) else list(group)
        for n in items:
            n = _tag(n, kind)
            target = dst if dst is not None else (t.dst if isinstance(t, Transform) else None)
            tname = target.name if isinstance(target, Space) else target
            if tname is None:
                raise InputError("combine needs dst= (the atlas space) or transforms that end in it", field="dst")
            if n.space.name != tname:
                if t is None:
                    raise SpaceMismatchError(f"{kind} neuron {n.name!r} is in {n.space}, not {tname!r}, and no "
                                             f"{kind}_transform was given")
                n = transform_neuron(n, t, dst=tname)
            out.append(n)
    out.space  # noqa: B018 - raises when units disagree
    return out


def find_passing(optical, block: EMBlock, min_length: float = 0.0, max_step: float | None = None) -> pd.DataFrame:
    """Optical neurons whose arbors pass through the block's footprint, with the cable inside.

    Returns a DataFrame (``name``, ``length_inside`` in atlas units, ``nodes_inside``,
    ``cable_length``, ``fraction_inside``), one row per neuron with more than ``min_length``
    inside (or a node inside), longest first.

    Examples
    --------
    >>> hits = find_passing(fmost_in_ccf, block)  # doctest: +SKIP
    """
    rows = []
    for n in ([optical] if isinstance(optical, Neuron) else optical):
        L = _inside_lengths(block, n, max_step)
        total = float(L.sum())
        k = int(block.contains(n.points).sum())
        if total > min_length or (k > 0 and min_length <= 0):
            cl = n.cable_length
            rows.append({"name": n.name, "length_inside": total, "nodes_inside": k, "cable_length": cl,
                         "fraction_inside": total / cl if cl > 0 else 0.0})
    df = pd.DataFrame(rows, columns=["name", "length_inside", "nodes_inside", "cable_length", "fraction_inside"])
    return df.sort_values("length_inside", ascending=False, kind="stable").reset_index(drop=True)


# -- export / import ---------------------------------------------------------------------------
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "neuron"


def write_collection(neurons, out_dir, force: bool = False) -> Path:
    """Write a collection: ``swc/*.swc`` (+ sidecars) in its space, ``neurons.parquet``, ``nodes.parquet``,
    ``synapses.parquet`` (when any neuron has synapses).

    Examples
    --------
    >>> write_collection(both, "combined/")  # doctest: +SKIP
    >>> read_collection("combined/") == both  # doctest: +SKIP
    True
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    nl = neurons if isinstance(neurons, NeuronList) else NeuronList(neurons)
    space = nl.space
    out = Path(out_dir)
    table_p, nodes_p, syn_p = out / "neurons.parquet", out / "nodes.parquet", out / "synapses.parquet"
    if out.exists() and not force and any(q.exists() for q in (table_p, nodes_p, syn_p, out / "swc")):
        raise OutputExistsError(f"{out} already holds a collection; pass force=True to overwrite")
    (out / "swc").mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    rows = []
    for i, n in enumerate(nl):
        fn = _safe(n.name)
        if fn.lower() in used:
            fn = f"{fn}_{i}"
        used.add(fn.lower())
        rel = f"swc/{fn}.swc"
        write_swc(n, out / rel, force=True)
        p = n.provenance
        rows.append({"name": n.name, "kind": p.get("kind"), "swc_file": rel, "space": n.space.name,
                     "unit": n.space.unit, "orientation": n.space.orientation, "n_nodes": n.n_nodes,
                     "n_synapses": 0 if n.synapses is None else len(n.synapses),
                     "cable_length": n.cable_length, "source_space": p.get("source_space"),
                     "source_unit": p.get("source_unit"), "source_file": p.get("source_file"),
                     "transforms": json.dumps(p.get("transforms", [])), "provenance": json.dumps(p)})
    table = pd.DataFrame(rows)
    meta = {"format": COLLECTION_FORMAT, "version": 1,
            "space": None if space is None else space.name, "unit": None if space is None else space.unit,
            "orientation": None if space is None else space.orientation}
    at = pa.Table.from_pandas(table, preserve_index=False)
    pq.write_table(at.replace_schema_metadata({**(at.schema.metadata or {}), b"atlasreg": json.dumps(meta).encode()}),
                   table_p)
    if len(nl):
        pq.write_table(pa.Table.from_pandas(nl.nodes_table(), preserve_index=False), nodes_p)
    syn = [n.synapses.assign(neuron=n.name) for n in nl if n.synapses is not None]
    if syn:
        sdf = pd.concat(syn, ignore_index=True)
        sdf = sdf[["neuron"] + [c for c in sdf.columns if c != "neuron"]]
        pq.write_table(pa.Table.from_pandas(sdf, preserve_index=False), syn_p)
    elif syn_p.exists():
        syn_p.unlink()
    return out


def read_collection(out_dir, source: str = "swc") -> NeuronList:
    """Read a collection written by :func:`write_collection`.

    ``source="swc"`` rebuilds every neuron from its SWC file and sidecar (checked against the
    table); ``"parquet"`` takes the node tables from ``nodes.parquet`` (keeping extra columns such
    as region annotations).
    """
    import pyarrow.parquet as pq

    d = Path(out_dir)
    tp = d / "neurons.parquet"
    if not tp.is_file():
        raise InputError("not a neuron collection: neurons.parquet is missing", path=d)
    if source not in ("swc", "parquet"):
        raise InputError("source must be 'swc' or 'parquet'", field="source")
    tbl = pq.read_table(tp)
    meta = json.loads((tbl.schema.metadata or {}).get(b"atlasreg", b"{}"))
    if meta.get("format") != COLLECTION_FORMAT:
        raise InputError(f"neurons.parquet is not an atlasreg collection table (format {meta.get('format')!r})",
                         path=tp)
    table = tbl.to_pandas()
    nodes_all = None
    if source == "parquet":
        nodes_all = pd.read_parquet(d / "nodes.parquet")
        groups = {k: g.drop(columns="neuron").reset_index(drop=True)
                  for k, g in nodes_all.groupby("neuron", observed=True, sort=False)}
    syn_groups = {}
    if (d / "synapses.parquet").exists():
        sdf = pd.read_parquet(d / "synapses.parquet")
        syn_groups = {k: g.drop(columns="neuron").reset_index(drop=True)
                      for k, g in sdf.groupby("neuron", sort=False)}
    out = NeuronList()
    for row in table.itertuples(index=False):
        prov = json.loads(row.provenance)
        if source == "swc":
            n = read_swc(d / row.swc_file)
        else:
            n = Neuron(groups[row.name], Space(row.space, row.unit, row.orientation), name=row.name,
                       provenance=prov, source=d / "nodes.parquet")
        if n.name != row.name or n.n_nodes != row.n_nodes or n.provenance != prov:
            raise InputError(f"{row.swc_file} does not match its row in neurons.parquet (name, node count or "
                             "provenance differ); the collection was edited by hand?", path=d / row.swc_file)
        if row.name in syn_groups:
            n.synapses = Neuron(n.nodes, n.space, name=n.name, synapses=syn_groups[row.name],
                                _validated=True).synapses
        out.append(n)
    return out
