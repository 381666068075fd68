"""An OME-NGFF 0.6 scene: coordinate systems as nodes, coordinate transformations as edges.

A coordinate system is referred to by ``{"name": ..., "path": ...}``; the
``path`` names the image group that defines it, so ``tile_0/physical`` and
``tile_1/physical`` are different nodes (their node names carry the path). A
system without ``path`` is the scene's own (or, in older atlasreg files, the
document's). Transformations are read from ``ome.scene``, from
``ome.multiscales[*].coordinateTransformations`` of the root and of every image
group a reference names, and from the top-level ``ome.coordinateTransformations``
of atlasreg files written before NGFF 0.6rc0.

Going from one system to another follows the shortest chain of edges, an edge
backwards only where its transformation can be inverted (a ``bijection``'s
stored inverse, a closed-form inverse, or a numerically solved one for
displacement fields).

Examples
--------
>>> import json, tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp()) / "s.ome.zarr"; root.mkdir()
>>> ome = {"version": "0.6rc0", "scene": {"coordinateTransformations": [
...     {"type": "translation", "translation": [0, 348], "input": {"path": "tile_1", "name": "physical"},
...      "output": {"name": "world"}}]}}
>>> _ = (root / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
...                                                 "attributes": {"ome": ome}}))
>>> s = read_scene(root)
>>> s.map_points([[1.0, 2.0]], "tile_1/physical", "world")
array([[  1., 350.]])
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ...errors import InputError, NoPathError, SpaceMismatchError
from . import store
from .nd import Context, NDTransform, NotInvertible, SequenceND, parse


def _norm_path(p) -> str:
    if p is None:
        return ""
    if not isinstance(p, str):
        raise InputError(f"a coordinate system reference's 'path' must be a string, got {p!r}", field="path")
    parts = [x for x in PurePosixPath(p).parts if x not in ("/", ".")]
    return "/".join(parts)


def node_key(ref, prefix: str = "") -> str:
    """The node name of a coordinate system reference: ``name``, or ``path/name`` when it names a group."""
    if isinstance(ref, str):
        name, path = ref, None
    elif isinstance(ref, dict):
        name, path = ref.get("name"), ref.get("path")
    else:
        raise InputError(f"a transformation's input/output must reference a coordinate system, got {ref!r}",
                         field="input")
    if not isinstance(name, str) or not name:
        raise InputError(f"coordinate system reference {ref!r} has no 'name'", field="name")
    p = _norm_path(path)
    if prefix:
        p = str(PurePosixPath(prefix) / p) if p else prefix
        p = _norm_path(_collapse(p))
    return f"{p}/{name}" if p else name


def _collapse(p: str) -> str:
    out: list[str] = []
    for part in PurePosixPath(p).parts:
        if part == "..":
            if not out:
                raise InputError(f"path {p!r} leads outside the hierarchy", field="path")
            out.pop()
        elif part not in ("/", "."):
            out.append(part)
    return "/".join(out)


@dataclass
class Edge:
    src: str
    dst: str
    obj: dict
    ctx: Context
    name: str | None = None
    #: True for a multiscales level's array index -> intrinsic system (its input is an array, not a space)
    dataset: bool = False
    _t: NDTransform | None = field(default=None, repr=False)


class Scene:
    """Coordinate systems (``systems``: node name -> NGFF coordinate system) and the transformations between them."""

    def __init__(self, root: Path, doc_path: Path, attrs: dict, outside: str | None = None):
        self.root, self.doc_path, self.attrs, self.outside = root, doc_path, attrs, outside
        self.systems: dict[str, dict] = {}
        self.edges: list[Edge] = []
        self._groups_read: set[str] = set()
        ome = attrs.get("ome")
        if not isinstance(ome, dict) and any(k in attrs for k in ("coordinateTransformations", "multiscales", "scene")):
            ome = attrs  # a bare metadata snippet, as the specification's examples are written
        if not isinstance(ome, dict):
            raise InputError("expected OME-Zarr attributes with an 'ome' object", path=doc_path, field="ome")
        self.ome = ome
        ctx = Context(root, root, doc_path, outside)
        scene = ome.get("scene")
        if scene is not None and not isinstance(scene, dict):
            raise InputError("'ome.scene' must be an object", path=doc_path, field="scene")
        for holder in ([scene] if scene else []) + [ome]:
            self._add_systems(holder.get("coordinateSystems"), "")
            self._add_edges(holder.get("coordinateTransformations"), "", ctx)
        self._add_multiscales(ome, "", ctx)
        for e in list(self.edges):
            for key in (e.src, e.dst):
                self._read_group_of(key)
        if not self.edges:
            raise InputError("no coordinate transformations in the file (ome.scene.coordinateTransformations)",
                             path=doc_path, field="coordinateTransformations")

    # -- building ------------------------------------------------------------------------------
    def _add_systems(self, systems, prefix: str) -> None:
        if systems is None:
            return
        if not isinstance(systems, list):
            raise InputError("coordinateSystems must be a list", path=self.doc_path, field="coordinateSystems")
        for cs in systems:
            if not isinstance(cs, dict) or not isinstance(cs.get("name"), str) or not cs["name"] or \
                    not isinstance(cs.get("axes"), list) or not cs["axes"]:
                raise InputError(f"malformed coordinate system {str(cs)[:200]!r}: needs 'name' and 'axes'",
                                 path=self.doc_path, field="coordinateSystems")
            key = f"{prefix}/{cs['name']}" if prefix else cs["name"]
            known = self.systems.get(key)
            if known is not None and known.get("axes") != cs["axes"]:
                raise InputError(f"coordinate system {key!r} is declared twice with different axes",
                                 path=self.doc_path, field="coordinateSystems")
            self.systems[key] = cs

    def _add_edges(self, cts, prefix: str, ctx: Context) -> None:
        if cts is None:
            return
        if not isinstance(cts, list):
            raise InputError("coordinateTransformations must be a list", path=ctx.doc,
                             field="coordinateTransformations")
        for ct in cts:
            if not isinstance(ct, dict) or not isinstance(ct.get("type"), str):
                raise InputError(f"malformed coordinate transformation {str(ct)[:200]!r}", path=ctx.doc,
                                 field="coordinateTransformations")
            if ct.get("input") is None or ct.get("output") is None:
                raise InputError(f"a {ct['type']} transformation without input/output coordinate systems",
                                 path=ctx.doc, field="input")
            self.edges.append(Edge(node_key(ct["input"], prefix), node_key(ct["output"], prefix), ct, ctx,
                                   ct.get("name")))

    def _add_multiscales(self, ome: dict, prefix: str, ctx: Context) -> None:
        for ms in ome.get("multiscales") or []:
            if not isinstance(ms, dict):
                continue
            self._add_systems(ms.get("coordinateSystems"), prefix)
            self._add_edges(ms.get("coordinateTransformations"), prefix, ctx)
            # Each resolution level: its array's index space (node named by the array's path) -> intrinsic system.
            for ds in ms.get("datasets") or []:
                cts = ds.get("coordinateTransformations") if isinstance(ds, dict) else None
                if not isinstance(ds.get("path") if isinstance(ds, dict) else None, str) or not isinstance(cts, list):
                    continue
                for ct in cts:
                    if isinstance(ct, dict) and isinstance(ct.get("type"), str) and ct.get("output") is not None:
                        array = _norm_path(_collapse(f"{prefix}/{ds['path']}" if prefix else ds["path"]))
                        self.edges.append(Edge(array, node_key(ct["output"], prefix), ct, ctx, ct.get("name"),
                                               dataset=True))

    def _read_group_of(self, key: str) -> None:
        if "/" not in key:
            return
        prefix = key.rsplit("/", 1)[0]
        if prefix in self._groups_read:
            return
        self._groups_read.add(prefix)
        where = store.inside(self.root, prefix, doc=self.doc_path)
        attrs = store.group_attributes(where) if where.is_dir() else None
        ome = (attrs or {}).get("ome")
        if isinstance(ome, dict):
            doc = where / ("zarr.json" if (where / "zarr.json").exists() else ".zattrs")
            self._add_multiscales(ome, prefix, Context(self.root, where, doc, self.outside))

    # -- queries -------------------------------------------------------------------------------
    def nodes(self) -> list[str]:
        seen = dict.fromkeys(self.systems)
        for e in self.edges:
            seen.setdefault(e.src)
            seen.setdefault(e.dst)
        return list(seen)

    def resolve(self, name: str) -> str:
        """The node for ``name``: a node name (``path/name``), or a system name that only one node has."""
        nodes = self.nodes()
        if name in nodes:
            return name
        hits = [n for n in nodes if n.rsplit("/", 1)[-1] == name]
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise InputError(f"coordinate system {name!r} exists in {len(hits)} groups ({', '.join(hits)}); "
                             "name one with its path", path=self.doc_path, field="coordinateSystems")
        raise SpaceMismatchError(f"{self.doc_path}: no coordinate system {name!r} in the file (it has "
                                 f"{', '.join(nodes)})")

    def dims(self, key: str) -> int | None:
        cs = self.systems.get(key)
        return len(cs["axes"]) if cs else None

    def edge_transform(self, e: Edge) -> NDTransform:
        if e._t is None:
            e._t = parse(e.obj, self.dims(e.src), self.dims(e.dst), e.ctx)
        return e._t

    def path(self, src: str, dst: str) -> list[tuple[Edge, bool]]:
        """The edges from ``src`` to ``dst`` and whether each is used forward (True) or inverted."""
        s, d = self.resolve(src), self.resolve(dst)
        if s == d:
            return []
        best = {s: 0.0}
        prev: dict[str, tuple[str, Edge, bool]] = {}
        heap = [(0.0, s)]
        while heap:
            cost, n = heapq.heappop(heap)
            if n == d:
                break
            if cost > best.get(n, np.inf):
                continue
            for e in self.edges:
                for a, b, fwd in ((e.src, e.dst, True), (e.dst, e.src, False)):
                    if a != n:
                        continue
                    step = 1.0
                    if not fwd:
                        t = self.edge_transform(e)
                        if not t.invertible:
                            continue
                        step = 1.0 if t.exact_inverse else 1.5
                    c = cost + step
                    if c < best.get(b, np.inf):
                        best[b] = c
                        prev[b] = (n, e, fwd)
                        heapq.heappush(heap, (c, b))
        if d not in prev:
            raise NoPathError(f"{self.doc_path}: no chain of transformations from {s!r} to {d!r} that atlasreg "
                              "can compute")
        out = []
        n = d
        while n != s:
            a, e, fwd = prev[n]
            out.append((e, fwd))
            n = a
        return out[::-1]

    def transform(self, src: str, dst: str) -> NDTransform:
        """The N-D transformation ``src -> dst`` (composed along :meth:`path`)."""
        steps = []
        for e, fwd in self.path(src, dst):
            t = self.edge_transform(e)
            steps.append(t if fwd else t.inverse())
        return SequenceND(steps)

    def map_points(self, points, src: str, dst: str) -> np.ndarray:
        """Points ``(n, D)`` in ``src`` mapped into ``dst`` (NaN where a field has no value)."""
        pts = np.asarray(points, dtype=float)
        if pts.ndim != 2:
            raise InputError(f"points must be an (n, D) array, got shape {pts.shape}", field="coordinates")
        n = self.dims(self.resolve(src))
        if n is not None and pts.shape[1] != n:
            raise InputError(f"{src!r} has {n} axes but the points have {pts.shape[1]} coordinates",
                             field="coordinates")
        return self.transform(src, dst).apply(pts)

    def default_ends(self) -> tuple[str, str]:
        """The transform a file stands for: atlasreg's record of it, or the only edge."""
        rec = self.attrs.get("atlasreg")
        if isinstance(rec, dict) and isinstance(rec.get("input"), str) and isinstance(rec.get("output"), str):
            return rec["input"], rec["output"]
        edges = [e for e in self.edges if not e.dataset] or self.edges
        if len(edges) == 1:
            return edges[0].src, edges[0].dst
        listing = ", ".join(f"{e.src} -> {e.dst}" for e in edges)
        raise InputError(f"the file holds {len(edges)} transformations ({listing}); pass src= and dst= to "
                         "pick one", path=self.doc_path)


def read_scene(path, outside: str | None = None) -> Scene:
    """Read the NGFF scene of a zarr group folder, its ``zarr.json``, or an atlasreg NGFF ``.json`` file.

    Parameters
    ----------
    path : str or Path
        An OME-Zarr hierarchy (folder), or a JSON document holding its attributes.
    outside : {"nan", "zero"}, optional
        What displacement fields give off their grid (default: NaN, or what the file records).
    """
    p = Path(path)
    if not p.exists():
        raise InputError("transform file does not exist", path=p)
    if p.is_dir():
        attrs = store.group_attributes(p)
        if attrs is None:
            raise InputError("folder is not a zarr group (no zarr.json)", path=p)
        doc_path = p / ("zarr.json" if (p / "zarr.json").exists() else ".zattrs")
        root = p
    else:
        doc = store.read_json(p)
        attrs = doc.get("attributes") if isinstance(doc.get("attributes"), dict) else doc
        doc_path, root = p, p.parent
    if isinstance(attrs, dict) and isinstance(attrs.get("type"), str) and "ome" not in attrs:
        attrs = {"coordinateTransformations": [attrs]}  # one bare transformation (the spec's examples)
    if not isinstance(attrs, dict) or not any(k in attrs for k in ("ome", "coordinateTransformations", "multiscales")):
        raise InputError("expected a JSON object with 'ome' metadata", path=doc_path, field="ome")
    return Scene(root, doc_path, attrs, outside)


__all__ = ["Scene", "read_scene", "node_key", "NotInvertible"]
