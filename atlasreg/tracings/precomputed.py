"""Neuroglancer precomputed skeletons -> :class:`Neuron`, and precomputed annotations <-> point / synapse tables.

Skeletons (``@type: neuroglancer_skeletons``, unsharded or sharded) are fetched
with tensorstore's key-value stores and decoded by cloud-volume's skeleton
codec (osteoid); annotations (``neuroglancer_annotations_v1``) are read with
neuroglancer's own ``AnnotationReader`` and written with its
``AnnotationWriter``. atlasreg decodes no chunk itself; it checks sizes, keys
and structure, and converts units.

Coordinates: precomputed vertices and annotations are positions in nanometres
of the frame neuroglancer draws in, which is the frame
:func:`atlasreg.read_volume` gives a precomputed volume (voxel centre at
``(voxel_offset + i + 0.5) * resolution``; :mod:`atlasreg.io.precomputed`). So
a skeleton read here overlays the EM volume read there without any shift.

* Skeleton vertices go through the info's ``transform`` (3x4, to nm). Radii are
  scaled by it when it is a uniform scale (times a rotation); otherwise they are
  kept as stored and the provenance says so. The edges become parents by a
  breadth-first walk from the lowest-numbered vertex of each connected piece;
  a skeleton with a cycle is refused (a Neuron is a tree). Node ids are vertex
  index + 1; every vertex attribute is kept as a column (``radius`` and
  ``vertex_types`` become ``radius`` and ``type``; a k-component attribute
  ``a`` becomes ``a_0 .. a_{k-1}``).
* Annotations: ``point`` -> one :class:`PointTable`; ``line`` (e.g. synapses,
  pre -> post) -> two tables with the same rows (ends A and B), so both ends move
  with ``transform_table``. Columns: ``id`` (the annotation id), ``x, y, z``
  (nm), one per property (enum properties as their labels); related segments (read from the ``by_id``
  index, one read per annotation; ``relationships=False`` skips them) as one ``<relationship>`` column each:
  the segment id (0 if none), or a tuple of ids where some annotation has several.

Examples
--------
>>> cells = read_precomputed_skeletons("precomputed://gs://h01-release/data/20210601/c3/skeletons",
...                                    ids=[4611487565], space="h01_em")                  # doctest: +SKIP
>>> syn_a, syn_b = read_precomputed_lines("precomputed://file:///data/synapses", space="h01_em")  # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io.precomputed import (PrecomputedSource, check_key, precomputed_source, read_bounded, read_precomputed_info,
                              require)
from ..spaces import Space
from .neuron import Neuron, NeuronList
from .tables import PointTable

__all__ = ["read_precomputed_skeletons", "read_precomputed_skeleton", "read_precomputed_points",
           "read_precomputed_lines", "write_precomputed_points", "write_precomputed_lines"]

#: largest encoded skeleton read (bytes); H01's largest are a few tens of MB
MAX_SKELETON_BYTES = 1 << 30
#: most annotations read from one dataset
MAX_ANNOTATIONS = 50_000_000
_UNIT_NM = {"m": 1e9, "mm": 1e6, "um": 1e3, "µm": 1e3, "nm": 1.0, "pm": 1e-3}


def _source(path, what: str) -> PrecomputedSource:
    src = precomputed_source(path)
    if src is not None:
        return src
    if isinstance(path, (str, os.PathLike)):
        p = Path(path).expanduser()
        if p.is_dir() and (p / "info").is_file():
            p = p.absolute()
            return PrecomputedSource(p.as_uri() + "/", p)
    raise InputError(f"not a neuroglancer precomputed {what} (no precomputed:// URL, and no folder with an 'info' "
                     "file)", path=path)


def _space(space, what: str) -> Space:
    if isinstance(space, Space):
        if space.unit != "nm":
            raise InputError(f"precomputed {what} are in nm, but space {space.name!r} is in {space.unit}; give a "
                             "nm space (and convert with a transform)", field="space")
        return space
    if not isinstance(space, str) or not space:
        raise InputError(f"space must be a name or a Space, got {space!r}", field="space")
    return Space(space, "nm")


# -- skeletons ------------------------------------------------------------------------------------------------

def _skeleton_dir(src: PrecomputedSource) -> tuple[PrecomputedSource, dict]:
    info = read_precomputed_info(src)
    if info.get("@type") == "neuroglancer_skeletons":
        return src, info
    key = info.get("skeletons")
    if isinstance(key, str):
        sub = src.child(key)
        sinfo = read_precomputed_info(sub)
        if sinfo.get("@type") not in (None, "neuroglancer_skeletons"):
            raise InputError(f"its skeletons folder {key!r} holds {sinfo.get('@type')!r}, not skeletons",
                             path=src.display)
        return sub, sinfo
    raise InputError("holds no skeletons: its info has neither '@type': 'neuroglancer_skeletons' nor a "
                     "'skeletons' key", path=src.display)


def _vertex_attributes(info: dict, where: str) -> list[dict]:
    attrs = info.get("vertex_attributes", [])
    if not isinstance(attrs, list) or len(attrs) > 256:
        raise InputError("vertex_attributes must be a list (of at most 256)", path=where, field="vertex_attributes")
    out = []
    for a in attrs:
        ok = isinstance(a, dict) and isinstance(a.get("id"), str) and a["id"] and \
            isinstance(a.get("num_components"), int) and 1 <= a["num_components"] <= 4096
        try:
            dt = np.dtype(a["data_type"]) if ok else None
        except (TypeError, ValueError):
            dt = None
        if dt is None or dt.kind not in "uif" or dt.itemsize > 8:
            raise InputError(f"vertex attribute {a!r} needs an id, a numeric data_type and num_components",
                             path=where, field="vertex_attributes")
        out.append({"id": a["id"], "data_type": dt.newbyteorder("<").str, "num_components": a["num_components"]})
    return out


def _transform(info: dict, where: str) -> np.ndarray:
    t = info.get("transform", [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0])
    try:
        m = np.asarray(t, np.float64).reshape(3, 4)
    except (TypeError, ValueError):
        raise InputError(f"transform must be 12 numbers (a 3x4 matrix, row-major), got {t!r}", path=where,
                         field="transform") from None
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:, :3])) < 1e-300:
        raise InputError("transform must be finite and invertible", path=where, field="transform")
    return m


def _kvstore(sk: PrecomputedSource, info: dict):
    ts = require("tensorstore", "neuroglancer precomputed skeletons")
    if "sharding" in info and info["sharding"] is not None:
        spec = {"driver": "neuroglancer_uint64_sharded", "base": sk.url, "metadata": info["sharding"]}
        return ts.KvStore.open(spec).result(), lambda i: struct.pack(">Q", int(i))
    return ts.KvStore.open(sk.url).result(), lambda i: str(int(i))


def _list_ids(kv, sharded: bool, where: str) -> list[int]:
    try:
        keys = kv.list().result()
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"could not list its skeletons ({str(exc)[:200]}); pass ids=[...]", path=where) from exc
    ids = []
    for k in keys:
        k = bytes(k)
        if sharded and len(k) == 8:
            ids.append(struct.unpack(">Q", k)[0])
        elif not sharded and k.isdigit():
            ids.append(int(k))
    return sorted(ids)


def _edges_to_parents(nv: int, edges: np.ndarray, where: str) -> np.ndarray:
    """Parent row of each vertex (-1 for roots) by breadth-first walks; refuses cycles."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    e = edges[edges[:, 0] != edges[:, 1]]
    e = np.unique(np.sort(e, axis=1), axis=0) if len(e) else e.reshape(0, 2)
    g = coo_matrix((np.ones(len(e), np.int8), (e[:, 0], e[:, 1])), shape=(nv, nv)).tocsr()
    g = g + g.T
    ncomp, comp = connected_components(g, directed=False)
    if len(e) != nv - ncomp:
        raise InputError(f"the skeleton has a cycle ({len(e)} distinct edges for {nv} vertices in {ncomp} "
                         "connected pieces); a Neuron is a tree or forest", path=where)
    parent = np.full(nv, -1, np.int64)
    seen = np.zeros(ncomp, bool)
    for v in range(nv):
        c = comp[v]
        if seen[c]:
            continue
        seen[c] = True
        _, pred = breadth_first_order(g, v, directed=False, return_predecessors=True)
        mask = (pred >= 0)
        parent[mask] = pred[mask]
    return parent


def _decode(buf: bytes, segid: int, attrs: list[dict], where: str):
    osteoid = require("osteoid", "neuroglancer precomputed skeletons")
    if len(buf) < 8:
        raise InputError(f"skeleton {segid}: {len(buf)} bytes, fewer than the 8 of its header", path=where)
    nv, ne = struct.unpack("<II", buf[:8])
    want = 8 + 12 * nv + 8 * ne + sum(nv * a["num_components"] * np.dtype(a["data_type"]).itemsize for a in attrs)
    if len(buf) != want:
        raise InputError(f"skeleton {segid}: {len(buf)} bytes, but {nv} vertices, {ne} edges and the info's vertex "
                         f"attributes make {want}; the file is damaged or the info does not describe it", path=where)
    try:
        sk = osteoid.Skeleton.from_precomputed(buf, segid=segid, vertex_attributes=attrs or [])
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"skeleton {segid} could not be decoded ({str(exc)[:200]})", path=where) from exc
    edges = np.asarray(sk.edges, np.int64).reshape(-1, 2)
    if len(edges) and (edges.min() < 0 or edges.max() >= nv):
        raise InputError(f"skeleton {segid}: an edge names vertex {int(edges.max())} but there are {nv}", path=where)
    verts = np.asarray(sk.vertices, np.float64).reshape(-1, 3)
    values = {a["id"]: np.asarray(getattr(sk, a["id"])) for a in attrs}
    return verts, edges, values


def _to_neuron(segid, verts, edges, values, m, space, where, src_display) -> Neuron:
    nv = len(verts)
    if nv == 0:
        raise InputError(f"skeleton {segid} has no vertices", path=where)
    if not np.all(np.isfinite(verts)):
        raise InputError(f"skeleton {segid} has non-finite vertex positions", path=where)
    pts = verts @ m[:, :3].T + m[:, 3]
    parent = _edges_to_parents(nv, edges, f"{where} skeleton {segid}")
    df = pd.DataFrame({"id": np.arange(1, nv + 1), "parent": np.where(parent >= 0, parent + 1, -1),
                       "x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2]})
    sv = np.linalg.svd(m[:, :3], compute_uv=False)
    uniform = np.allclose(sv, sv[0], rtol=1e-6)
    prov = {"source_file": src_display, "format": "neuroglancer precomputed skeleton", "segment_id": int(segid),
            "kind": "em"}
    for name, v in values.items():
        v = v.reshape(nv, -1)
        if name == "radius" and v.shape[1] == 1:
            r = v[:, 0].astype(np.float64)
            if not np.all(np.isfinite(r)):
                raise InputError(f"skeleton {segid} has non-finite radii", path=where)
            df["radius"] = r * sv[0] if uniform else r
            if not uniform:
                prov["radius"] = "as stored: the info transform is not a uniform scale, so radii were not scaled"
        elif name == "vertex_types" and v.shape[1] == 1:
            df["type"] = v[:, 0].astype(np.int64)
        elif v.shape[1] == 1:
            df[name] = v[:, 0]
        else:
            for j in range(v.shape[1]):
                df[f"{name}_{j}"] = v[:, j]
    return Neuron(df, space, name=str(segid), provenance=prov, source=where)


def read_precomputed_skeletons(path, ids=None, space: Space | str = "em") -> NeuronList:
    """Read precomputed skeletons as neurons (nm), with every vertex attribute kept.

    Parameters
    ----------
    path : str or Path
        A skeleton folder (``info`` with ``@type: neuroglancer_skeletons``) or a segmentation volume whose
        info names one (``"skeletons": "<key>"``): a local folder or ``precomputed://`` URL.
    ids : iterable of int, optional
        Segment ids to read (default: every skeleton the folder lists).
    space : str or Space
        The (nm) space of the EM volume the skeletons belong to.

    Returns
    -------
    NeuronList
        One :class:`Neuron` per id, named by the id, in ``space`` (unit nm).

    Examples
    --------
    >>> ns = read_precomputed_skeletons("seg/", ids=[17, 42], space="em")          # doctest: +SKIP
    >>> ns["17"].nodes.columns.tolist()                                             # doctest: +SKIP
    ['id', 'type', 'x', 'y', 'z', 'radius', 'parent', 'compartment']
    """
    sp = _space(space, "skeletons")
    src = _source(path, "skeleton folder")
    sk, info = _skeleton_dir(src)
    where = sk.display
    attrs = _vertex_attributes(info, where)
    m = _transform(info, where)
    kv, key = _kvstore(sk, info)
    sharded = "sharding" in info and info["sharding"] is not None
    if ids is None:
        ids = _list_ids(kv, sharded, where)
        if not ids:
            raise InputError("the folder holds no skeletons", path=where)
    else:
        try:
            ids = [int(i) for i in ([ids] if np.isscalar(ids) else ids)]
        except (TypeError, ValueError):
            raise InputError(f"ids must be integers, got {ids!r}", field="ids") from None
        if any(i < 0 or i >= 2**64 for i in ids):
            raise InputError("segment ids are unsigned 64-bit integers", field="ids")
    out = NeuronList()
    for i in ids:
        if sk.local is not None and not sharded:
            f = sk.local / str(i)
            if f.is_symlink() and not f.resolve().is_relative_to(sk.local.resolve()):
                raise InputError(f"skeleton {i} is a link to outside the folder; refused", path=where)
            if f.is_file() and f.stat().st_size > MAX_SKELETON_BYTES:
                raise InputError(f"skeleton {i} is {f.stat().st_size} bytes, more than {MAX_SKELETON_BYTES}",
                                 path=where)
        try:
            res = read_bounded(kv, key(i), MAX_SKELETON_BYTES)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"could not read skeleton {i} ({str(exc)[:200]})", path=where) from exc
        if res is None:
            raise InputError(f"skeleton {i} is more than {MAX_SKELETON_BYTES} bytes", path=where)
        if res.state != "value":
            raise InputError(f"there is no skeleton for segment {i}", path=where, field="ids")
        verts, edges, values = _decode(bytes(res.value), i, attrs, where)
        out.append(_to_neuron(i, verts, edges, values, m, sp, where, src.display))
    return out


def read_precomputed_skeleton(path, segment_id: int, space: Space | str = "em") -> Neuron:
    """One skeleton as a :class:`Neuron` (see :func:`read_precomputed_skeletons`).

    >>> n = read_precomputed_skeleton("precomputed://file:///data/seg", 17, space="em")   # doctest: +SKIP
    """
    return read_precomputed_skeletons(path, [segment_id], space)[0]


# -- annotations ----------------------------------------------------------------------------------------------

def _annotation_reader(path, kind: str):
    src = _source(path, "annotation folder")
    info = read_precomputed_info(src)
    where = src.display
    if info.get("@type") != "neuroglancer_annotations_v1":
        raise InputError(f"its info has @type {info.get('@type')!r}, not 'neuroglancer_annotations_v1'", path=where)
    atype = str(info.get("annotation_type", "")).lower()
    if atype != kind:
        other = {"point": "read_precomputed_points", "line": "read_precomputed_lines"}.get(atype)
        raise InputError(f"holds {atype!r} annotations, not {kind!r}" + (f"; read them with {other}" if other else
                                                                           " (only points and lines are read)"),
                         path=where, field="annotation_type")
    dims = info.get("dimensions")
    if not isinstance(dims, dict) or len(dims) != 3:
        raise InputError(f"dimensions must name 3 axes, got {dims!r}", path=where, field="dimensions")
    scale = []
    for name, v in dims.items():
        if not (isinstance(v, list) and len(v) == 2 and isinstance(v[0], (int, float)) and v[0] > 0
                and v[1] in _UNIT_NM):
            raise InputError(f"dimension {name!r} = {v!r} must be [scale, length unit]", path=where,
                             field="dimensions")
        scale.append(float(v[0]) * _UNIT_NM[v[1]])
    for s in info.get("spatial", []) or []:
        if not isinstance(s, dict):
            raise InputError("each spatial index level must be an object", path=where, field="spatial")
        check_key(s.get("key"), where)
        gs = s.get("grid_shape")
        if not (isinstance(gs, list) and len(gs) == 3 and all(isinstance(g, int) and g >= 1 for g in gs)) or \
                math.prod(gs) > 2**32:
            raise InputError(f"grid_shape {gs!r} must be 3 positive integers (at most 2^32 cells)", path=where,
                             field="spatial")
    for k in ("by_id",):
        if isinstance(info.get(k), dict):
            check_key(info[k].get("key"), where)
    for r in info.get("relationships", []) or []:
        if isinstance(r, dict):
            check_key(r.get("key"), where)
    mod = require("neuroglancer.read_precomputed_annotations", "neuroglancer precomputed annotations")
    try:
        reader = mod.AnnotationReader(src.url)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"neuroglancer could not open the annotations ({type(exc).__name__}: {str(exc)[:200]})",
                         path=where) from exc
    return reader, info, np.asarray(scale), where


def _annotations(reader, where: str) -> list:
    seen, out = set(), []
    try:
        for a in reader.get_within_spatial_bounds():
            if a.id in seen:
                continue
            seen.add(a.id)
            out.append(a)
            if len(out) > MAX_ANNOTATIONS:
                raise InputError(f"more than {MAX_ANNOTATIONS} annotations", path=where)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"the annotations could not be read ({type(exc).__name__}: {str(exc)[:200]}); the data is "
                         "damaged or does not match its info", path=where) from exc
    out.sort(key=lambda a: int(a.id))
    return out


def _props_frame(reader, anns: list, info: dict, relationships: bool, where: str) -> pd.DataFrame:
    cols = {"id": np.array([int(a.id) for a in anns], dtype=np.uint64)}
    for j, spec in enumerate(reader.properties):
        vals = np.array([a.props[j] for a in anns]) if anns else np.zeros(0)
        enum = info["properties"][j].get("enum_values") if j < len(info.get("properties", [])) else None
        if enum:
            labels = dict(zip(enum, info["properties"][j].get("enum_labels", [])))
            vals = np.array([labels.get(type(enum[0])(v), str(v)) for v in vals], dtype=object)
        cols[spec.id] = vals
    rels = [r["id"] for r in info.get("relationships", []) or [] if isinstance(r, dict)]
    if rels and relationships:
        # the spatial index carries no related segments: each annotation's by_id entry does
        if not reader.by_id:
            raise InputError("the annotations have related segments but no by_id index to read them from; pass "
                             "relationships=False to read without them", path=where, field="by_id")
        try:
            futures = [reader.by_id.get(int(a.id)) for a in anns]
            full = [f.result() for f in futures]
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"the by_id index could not be read ({type(exc).__name__}: {str(exc)[:200]})",
                             path=where, field="by_id") from exc
        for j, rel in enumerate(rels):
            segs = [tuple(int(v) for v in (a.segments[j] if a is not None and a.segments is not None else ()))
                    for a in full]
            if all(len(t) <= 1 for t in segs):
                cols[rel] = np.array([t[0] if t else 0 for t in segs], dtype=np.uint64)
            else:
                cols[rel] = pd.Series(segs, dtype=object).to_numpy()
    return pd.DataFrame(cols)


def _with_xyz(frame: pd.DataFrame, pts: np.ndarray) -> pd.DataFrame:
    df = frame.copy()
    for j, c in enumerate("xyz"):
        df.insert(1 + j, c, pts[:, j] if len(pts) else np.zeros(0))
    return df


def read_precomputed_points(path, space: Space | str = "em", name: str = "points",
                            relationships: bool = True) -> PointTable:
    """Point annotations (cells, synapse centres) as a :class:`PointTable` in nm.

    Parameters
    ----------
    path : str or Path
        Annotation folder (``@type: neuroglancer_annotations_v1``, ``annotation_type: point``), local or URL.
    space : str or Space
        The nm space the annotations belong to (the EM volume's).

    Examples
    --------
    >>> cells = read_precomputed_points("precomputed://file:///data/somata", space="em")   # doctest: +SKIP
    >>> cells.df.columns.tolist()                                                             # doctest: +SKIP
    ['id', 'x', 'y', 'z', 'score']
    """
    sp = _space(space, "annotations")
    reader, info, scale, where = _annotation_reader(path, "point")
    anns = _annotations(reader, where)
    pts = np.array([np.asarray(a.point, np.float64) for a in anns]).reshape(-1, 3) * scale
    return PointTable(_with_xyz(_props_frame(reader, anns, info, relationships, where), pts), sp, name=name,
                      provenance={"source_file": where, "format": "neuroglancer precomputed annotations"})


def read_precomputed_lines(path, space: Space | str = "em", name: str = "lines",
                           relationships: bool = True) -> tuple[PointTable, PointTable]:
    """Line annotations (e.g. synapses, pre -> post) as two row-aligned tables: end A and end B, in nm.

    >>> pre, post = read_precomputed_lines("synapses/", space="em")        # doctest: +SKIP
    >>> (pre.df["id"] == post.df["id"]).all()                               # doctest: +SKIP
    True
    """
    sp = _space(space, "annotations")
    reader, info, scale, where = _annotation_reader(path, "line")
    anns = _annotations(reader, where)
    a = np.array([np.asarray(x.point_a, np.float64) for x in anns]).reshape(-1, 3) * scale
    b = np.array([np.asarray(x.point_b, np.float64) for x in anns]).reshape(-1, 3) * scale
    frame = _props_frame(reader, anns, info, relationships, where)
    prov = {"source_file": where, "format": "neuroglancer precomputed annotations"}
    return (PointTable(_with_xyz(frame, a), sp, name=f"{name}_a", provenance={**prov, "end": "a"}),
            PointTable(_with_xyz(frame, b), sp, name=f"{name}_b", provenance={**prov, "end": "b"}))


_PROPERTY_TYPES = {"u": {1: "uint8", 2: "uint16", 4: "uint32"}, "i": {1: "int8", 2: "int16", 4: "int32"}}


def _property_specs(df: pd.DataFrame, skip: set, where) -> list[tuple[str, str]]:
    """(column, neuroglancer property type) for every numeric column not in ``skip``."""
    specs = []
    for c in df.columns:
        if c in skip:
            continue
        v = df[c].to_numpy()
        if v.dtype.kind == "b":
            specs.append((c, "uint8"))
        elif v.dtype.kind == "f":
            specs.append((c, "float32"))  # the format's only float type
        elif v.dtype.kind in "ui":
            for kind, size in (("u", 1), ("u", 2), ("u", 4), ("i", 1), ("i", 2), ("i", 4)):
                info = np.iinfo(np.dtype(f"{kind}{size}"))
                if len(v) == 0 or (v.min() >= info.min and v.max() <= info.max):
                    specs.append((c, _PROPERTY_TYPES[kind][size]))
                    break
            else:
                raise InputError(f"column {c!r} has values beyond 32-bit integers, which neuroglancer annotation "
                                 "properties cannot hold; drop it or convert it to float", path=where, field=c)
    return specs


def _write_annotations(kind: str, ends: list, path, force: bool, relationships) -> Path:
    """Point (one table) or line (two row-aligned tables) annotations through neuroglancer's AnnotationWriter."""
    from ..io.atomic import atomic_path, check_writable

    nm = require("neuroglancer", "neuroglancer precomputed annotations")
    from neuroglancer.write_annotations import AnnotationWriter

    first = ends[0]
    df = first.df
    p = check_writable(Path(path).expanduser(), force)
    if "id" in df.columns:
        ids = df["id"].to_numpy()
        if ids.dtype.kind not in "ui" or len(np.unique(ids)) != len(ids) or (len(ids) and ids.min() < 0):
            raise InputError("column 'id' must hold distinct non-negative integers (the annotation ids)", path=p,
                             field="id")
    else:
        ids = np.arange(len(df))
    rels = [] if relationships is None else [relationships] if isinstance(relationships, str) else list(relationships)
    missing = [c for c in rels if c not in df.columns]
    if missing:
        raise InputError(f"relationship column(s) {missing} are not in the table (it has {list(df.columns)[:12]})",
                         path=p, field="relationships")
    segs = {c: [_segment_ids(v, c, p) for v in df[c].to_numpy()] for c in rels}
    specs = _property_specs(df, {*first.columns, "id", *rels}, p)
    cs = nm.CoordinateSpace(names=["x", "y", "z"], units=first.space.unit, scales=[1, 1, 1])
    w = AnnotationWriter(coordinate_space=cs, annotation_type=kind, relationships=rels,
                         properties=[nm.AnnotationPropertySpec(id=_prop_id(c), type=t) for c, t in specs])
    add = w.add_point if kind == "point" else w.add_line
    points = [e.points for e in ends]
    cols = {_prop_id(c): df[c].to_numpy() for c, _ in specs}
    for r in range(len(df)):
        add(*(pt[r] for pt in points), id=int(ids[r]), **{c: v[r].item() for c, v in cols.items()},
            **{c: v[r] for c, v in segs.items()})
    with atomic_path(p, force) as tmp:
        w.write(str(tmp))
        info = json.loads((tmp / "info").read_text())
        info["annotation_type"] = kind.upper()  # the spec's spelling (neuroglancer reads either; others need it)
        (tmp / "info").write_text(json.dumps(info))
    return p


def _segment_ids(value, column: str, where) -> list[int]:
    """The related segment ids of one row: an id (0 = none) or a tuple / list of ids."""
    vals = list(value) if isinstance(value, (tuple, list, np.ndarray)) else [value]
    try:
        out = [int(v) for v in vals]
    except (TypeError, ValueError):
        raise InputError(f"column {column!r} must hold segment ids (integers, or tuples of them), got {value!r}",
                         path=where, field=column) from None
    if any(v < 0 or v >= 2**64 for v in out):
        raise InputError(f"column {column!r}: segment ids are unsigned 64-bit integers, got {value!r}", path=where,
                         field=column)
    return [v for v in out if v != 0]


def write_precomputed_points(table: PointTable, path, force: bool = False, relationships=None) -> Path:
    """Write a point table as precomputed point annotations (coordinates in the table's unit).

    Numeric columns become annotation properties (floats as float32, integers in the smallest 32-bit type
    that holds them); an integer ``id`` column gives the annotation ids (default: the row numbers).
    ``relationships`` names columns of segment ids (an id, 0 for none, or a tuple of ids per row; e.g.
    ``["pre_segment", "post_segment"]``), written as related segments (and so indexed by segment).

    Examples
    --------
    >>> write_precomputed_points(cells_in_em, "cells_ann")                  # doctest: +SKIP
    PosixPath('cells_ann')
    """
    if not isinstance(table, PointTable):
        raise InputError(f"write_precomputed_points takes a PointTable, got {type(table).__name__}", field="table")
    return _write_annotations("point", [table], path, force, relationships)


def write_precomputed_lines(a: PointTable, b: PointTable, path, force: bool = False, relationships=None) -> Path:
    """Write row-aligned end tables (as :func:`read_precomputed_lines` returns) as line annotations.

    Properties and ``relationships`` come from ``a``'s columns (as :func:`write_precomputed_points`).

    >>> write_precomputed_lines(pre, post, "synapses_ann")                  # doctest: +SKIP
    PosixPath('synapses_ann')
    """
    if not isinstance(a, PointTable) or not isinstance(b, PointTable):
        raise InputError("write_precomputed_lines takes two PointTables (the two ends)", field="table")
    if a.space != b.space or len(a) != len(b):
        raise InputError(f"the two ends must be in one space with one row per line (got {a.space} with {len(a)} "
                         f"rows, {b.space} with {len(b)})", field="table")
    return _write_annotations("line", [a, b], path, force, relationships)


def _prop_id(column: str) -> str:
    """A property id neuroglancer accepts (lower-case letter first, then letters, digits, underscores)."""
    import re

    s = re.sub(r"[^a-z0-9_]", "_", str(column).lower())
    return s if re.match(r"^[a-z]", s) else "p_" + s

