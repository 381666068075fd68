"""atlasreg transforms saved as OME-NGFF 0.6 (``0.6rc0``) scenes: :func:`write_ngff`.

A saved transform is a JSON document holding the attributes of an NGFF scene
group (it validates against the specification's ``scene.schema``)::

    {"ome": {"version": "0.6rc0",
             "scene": {"coordinateSystems": [{"name": "ccf", "axes": [{"name": "z", "type": "space",
                                                                      "unit": "micrometer"}, ...]}, ...],
                       "coordinateTransformations": [{"type": "sequence", "input": {"name": "em"},
                                                      "output": {"name": "ccf"}, ...}]}},
     "atlasreg": {"input": "em", "output": "ccf"}}

* Axes are listed in array-axis order, which is atlasreg's coordinate order
  (coordinate 0 = array axis 0), and named ``z, y, x`` as atlasreg's OME-Zarr
  volumes name their array axes; units are NGFF names (``nanometer``, ...); a
  space's orientation is written per axis as RFC-4 ``orientation``.
* A chain becomes one scene edge per step, between the named spaces it passes,
  so every intermediate space is a coordinate system of the scene. A step known
  only as a numerically solved inverse (of a displacement field or a spline) is
  written as its forward transformation, input and output swapped back: the
  specification's way to say "invert this" (readers solve it, as atlasreg does).
* A transform that carries its own inverse (ANTs' inverse warp) is a ``bijection``.
* Displacement fields are multiscales groups in a zarr store beside the JSON
  (``<name>_fields.zarr/coordinateTransformations/field_<k>``), array ``s0`` of
  shape ``(3, X, Y, Z)``: the displacement axis first, components in the order of
  the axes; ``scale``/``translation`` place the grid (a rotated grid adds one
  ``affine`` out of the grid's own system).
* NGFF has no spline types: a thin-plate spline is written as its
  ``displacements`` sampled on a 32-node grid over its landmarks (what other
  readers use), with the exact spline under the extension key
  ``atlasreg.thinplatespline`` (what atlasreg reads; it reloads bit for bit). A
  cubic B-spline (ITK / elastix) likewise: sampled at 8x its control density
  over the grid's inner region, its control grid stored as a second field named
  by ``atlasreg.bspline``.
* ``atlasreg.input``/``atlasreg.output`` record which transform the file is.

Extra keys under ``"atlasreg"`` sit beside NGFF keys; NGFF readers ignore them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import InputError, SpaceMismatchError
from ...spaces import AXIS_NAMES, Space, apply_affine, rfc4_orientation
from ..base import Affine, Sequence, Transform, resolved
from ..bspline import BSplineTransform
from ..field import DisplacementField, InverseDisplacementField
from ..tps import InverseThinPlateSpline, ThinPlateSpline
from .units import ATLASREG_TO_NGFF

NGFF_VERSION = "0.6rc0"
#: Nodes along the longest side of the grid a thin-plate spline is sampled on.
TPS_GRID_NODES = 32
#: Most nodes of the field a B-spline is sampled on.
BSPLINE_MAX_SAMPLES = 2**21


def coordinate_system(space: Space) -> dict:
    """The NGFF coordinate system of a Space: three space axes listed in array-axis order (``z, y, x``).

    >>> coordinate_system(Space("ccf", "um"))["axes"][0]
    {'name': 'z', 'type': 'space', 'unit': 'micrometer'}
    """
    axes = []
    for i, name in enumerate(AXIS_NAMES):
        ax = {"name": name, "type": "space", "unit": ATLASREG_TO_NGFF[space.unit]}
        if space.orientation:
            ax["orientation"] = {"type": "anatomical", "value": rfc4_orientation(space.orientation[i])}
        axes.append(ax)
    return {"name": space.name, "axes": axes}


class _NotInline(Exception):
    """A step the specification can only state as an edge to be inverted."""


class _Writer:
    def __init__(self, fields_rel: str, path: Path):
        self.systems: dict[str, dict] = {}
        self.edges: list[dict] = []
        self.arrays: list[tuple[str, np.ndarray, dict]] = []
        self.fields_rel, self.path = fields_rel, path
        # Arrays already stored, by identity: a bijection's inverse repeats its forward's fields (a saved
        # registration states both directions), and each is written once and referenced twice.
        self.stored: list[tuple[np.ndarray, np.ndarray, str, str, str]] = []

    def system(self, space: Space) -> dict:
        cs = coordinate_system(space)
        known = self.systems.get(space.name)
        if known is not None and known != cs:
            raise SpaceMismatchError(f"{self.path}: space {space.name!r} appears with two different units or "
                                     "orientations in this transform")
        self.systems[space.name] = cs
        return {"name": space.name}

    # -- edges ---------------------------------------------------------------------------------
    def emit(self, T: Transform) -> None:
        T = resolved(T)
        if isinstance(T, Sequence) and not _has_own_inverse(T):
            for t in T.steps:
                self.emit(t)
        elif isinstance(T, (InverseDisplacementField, InverseThinPlateSpline)) and not _has_own_inverse(T):
            self.emit(T.forward)
        else:
            self.edge(T, self.inline(T))

    def edge(self, T: Transform, obj: dict) -> None:
        if T.src.name == T.dst.name:
            raise InputError(f"{T!r} maps space {T.src.name!r} onto itself; give its ends different names",
                             path=self.path, field="transform")
        self.edges.append({**obj, "input": self.system(T.src), "output": self.system(T.dst)})

    def inline(self, T: Transform, allow_bijection: bool = True) -> dict:
        T = resolved(T)
        if allow_bijection and _has_own_inverse(T):
            return {"type": "bijection", "forward": self.inline(T, False),
                    "inverse": self.inline(T.inverse(), False)}
        if isinstance(T, Affine):
            return _affine_json(T.matrix)
        if isinstance(T, Sequence):
            return {"type": "sequence", "transformations": [self.inline(t) for t in T.steps]}
        if isinstance(T, DisplacementField):
            T.check_known(self.path)
            self.system(T.src)
            return {"type": "displacements", "path": self.field(T.displacement, T.index_to_physical, T.src.unit,
                                                                 "displacement"),
                    "interpolation": "linear", "atlasreg": {"outside": T.outside}}
        if isinstance(T, ThinPlateSpline):
            return self.spline(T)
        if isinstance(T, BSplineTransform):
            return self.bspline(T)
        if isinstance(T, (InverseDisplacementField, InverseThinPlateSpline)):
            raise _NotInline(T)
        raise InputError(f"cannot save a {type(T).__name__} as NGFF JSON", path=self.path, field="transform")

    # -- arrays --------------------------------------------------------------------------------
    def field(self, u: np.ndarray, index_to_physical: np.ndarray, unit: str, vector: str) -> str:
        """Store ``u`` (X, Y, Z, 3) as a multiscales group; return its path relative to the JSON's folder."""
        for known, M, known_unit, known_vector, path in self.stored:
            if known is u and np.array_equal(M, index_to_physical) and (known_unit, known_vector) == (unit, vector):
                return path
        name = f"field_{len(self.arrays)}"
        rel = f"coordinateTransformations/{name}"
        axes = [{"name": "d", "type": vector, "discrete": True}] + \
               [{"name": n, "type": "space", "unit": ATLASREG_TO_NGFF[unit]} for n in AXIS_NAMES]
        M = index_to_physical
        sp = np.linalg.norm(M[:3, :3], axis=0)
        D = M[:3, :3] / sp
        systems = [{"name": name, "axes": axes}]
        if np.allclose(D, np.eye(3), rtol=0, atol=1e-15):
            placement = {"type": "sequence", "input": {"path": "s0"}, "output": {"name": name}, "transformations": [
                {"type": "scale", "scale": [1.0, *map(float, sp)]},
                {"type": "translation", "translation": [0.0, *map(float, M[:3, 3])]}]}
            extra = []
        else:
            grid = name + "_grid"
            systems.insert(0, {"name": grid, "axes": axes})
            placement = {"type": "scale", "input": {"path": "s0"}, "output": {"name": grid},
                         "scale": [1.0, *map(float, sp)]}
            a = np.zeros((4, 5))
            a[0, 0] = 1.0
            a[1:, 1:4] = D
            a[1:, 4] = M[:3, 3]
            extra = [{"type": "affine", "input": {"name": grid}, "output": {"name": name}, "affine": a.tolist()}]
        ms = {"name": name, "coordinateSystems": systems,
              "datasets": [{"path": "s0", "coordinateTransformations": [placement]}]}
        if extra:
            ms["coordinateTransformations"] = extra
        self.arrays.append((rel, np.moveaxis(u, -1, 0), {"ome": {"version": NGFF_VERSION, "multiscales": [ms]}}))
        self.stored.append((u, np.array(index_to_physical), unit, vector, f"{self.fields_rel}/{rel}"))
        return f"{self.fields_rel}/{rel}"

    def sampled(self, T: Transform, M: np.ndarray, shape: tuple, outside: str, exact_key: str, exact: dict) -> dict:
        """``T`` sampled on the grid ``M`` (index -> physical) of ``shape``, the exact form under ``exact_key``."""
        idx = np.indices(shape, dtype=np.float64).reshape(3, -1).T
        x = apply_affine(M, idx)
        y = T.map_points(x)
        same_unit = T.src.unit == T.dst.unit
        self.system(T.src)
        vec = (y - x) if same_unit else y
        path = self.field(vec.reshape(tuple(shape) + (3,)), M, T.src.unit,
                          "displacement" if same_unit else "coordinate")
        return {"type": "displacements" if same_unit else "coordinates", "path": path, "interpolation": "linear",
                "atlasreg": {"outside": outside, exact_key: exact}}

    def spline(self, T: ThinPlateSpline) -> dict:
        lo, hi = T.src_points.min(0), T.src_points.max(0)
        pad = 0.1 * max(float((hi - lo).max()), 1e-9)
        lo, hi = lo - pad, hi + pad
        step = float((hi - lo).max()) / (TPS_GRID_NODES - 1)
        shape = tuple(int(np.ceil((h - l) / step - 1e-9)) + 1 for l, h in zip(lo, hi))
        M = np.eye(4)
        M[:3, :3] *= step
        M[:3, 3] = lo
        exact = {"kernel": T.kernel, "regularization": T.regularization,
                 "source_landmarks": T.src_points.tolist(), "target_landmarks": T.dst_points.tolist(),
                 "frame": np.asarray(T.frame, float).tolist(), "weights": np.asarray(T.weights, float).tolist(),
                 "affine_coeffs": np.asarray(T.affine_coeffs, float).tolist()}
        return self.sampled(T, M, shape, "nan", "thinplatespline", exact)

    def bspline(self, T: BSplineTransform) -> dict:
        # Sampled over the grid's inner region (where ITK's image domain lies), 8x the control density
        # (4x, 2x, 1x for grids so large that 8x would pass BSPLINE_MAX_SAMPLES).
        coeffs = self.field(T.coefficients, T.index_to_physical, T.src.unit, "displacement")
        k = next((k for k in (8, 4, 2) if np.prod([k * (n - 3) + 1 for n in T.shape]) <= BSPLINE_MAX_SAMPLES), 1)
        M = T.index_to_physical.copy()
        M[:3, 3] = M[:3, :3] @ np.ones(3) + M[:3, 3]
        M[:3, :3] = M[:3, :3] / k
        shape = tuple(k * (n - 3) + 1 for n in T.shape)
        return self.sampled(T, M, shape, T.outside, "bspline", {"path": coeffs, "outside": T.outside})


def _has_own_inverse(T: Transform) -> bool:
    """True where ``T`` carries an inverse of its own (e.g. ANTs' inverse warp), not a derived one."""
    inv = T._explicit_inverse
    if inv is None or T.exact_inverse:
        return False
    if isinstance(T, (InverseDisplacementField, InverseThinPlateSpline)) and inv is T.forward:
        return False
    if isinstance(inv, (InverseDisplacementField, InverseThinPlateSpline)) and inv.forward is T:
        return False
    return True


def _affine_json(m: np.ndarray) -> dict:
    L, t = m[:3, :3], m[:3, 3]
    if np.array_equal(m, np.eye(4)):
        return {"type": "identity"}
    if np.array_equal(L, np.eye(3)):
        return {"type": "translation", "translation": t.tolist()}
    if np.array_equal(L, np.diag(np.diag(L))) and not np.any(t) and np.all(np.diag(L) > 0):
        return {"type": "scale", "scale": np.diag(L).tolist()}
    return {"type": "affine", "affine": m[:3].tolist()}


def _chain_spaces(T: Transform) -> list[str]:
    T = resolved(T)
    if isinstance(T, Sequence) and not _has_own_inverse(T):
        names = [T.src.name]
        for t in T.steps:
            names += _chain_spaces(t)[1:]
        return names
    return [T.src.name, T.dst.name]


def _dumps(obj, indent: str = "") -> str:
    """JSON with one line per key and number lists (matrix rows, landmarks) kept on one line."""
    inner = indent + "  "
    flat = json.dumps(obj)
    if len(flat) <= 100 or (isinstance(obj, list) and all(isinstance(v, (int, float)) for v in obj)):
        return flat
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, list) and obj:
        return "[\n" + ",\n".join(inner + _dumps(v, inner) for v in obj) + "\n" + indent + "]"
    return flat


def fields_store_name(path) -> str:
    """The zarr store beside an NGFF ``.json`` that holds its arrays (``a_to_b.json`` -> ``a_to_b_fields.zarr``)."""
    p = Path(path)
    stem = p.name[:-5] if p.name.lower().endswith(".json") else p.name
    return f"{stem}_fields.zarr"


def scene_document(T: Transform, path, fields_rel: str | None = None) -> tuple[dict, list]:
    """The NGFF scene attributes for ``T`` and the arrays they refer to (``(relative path, array, attrs)``)."""
    w = _Writer(fields_rel or fields_store_name(path), Path(path))
    names = _chain_spaces(T)
    try:
        if len(set(names)) != len(names):
            raise _NotInline(T)  # a chain through one space twice is a cycle in a graph: one edge holds it
        w.emit(T)
    except _NotInline:
        w = _Writer(w.fields_rel, w.path)
        try:
            w.edge(T, w.inline(T))
        except _NotInline as exc:
            raise InputError(f"cannot save {T!r} as NGFF: it passes through a space twice and holds a numerically "
                             f"inverted step ({type(exc.args[0]).__name__}); save its pieces separately",
                             path=path, field="transform") from None
    systems = dict(w.systems)
    first = systems.pop(T.dst.name)  # the common reference goes first (the specification's recommendation)
    doc = {"ome": {"version": NGFF_VERSION,
                   "scene": {"coordinateSystems": [first, *systems.values()],
                             "coordinateTransformations": w.edges}},
           "atlasreg": {"input": T.src.name, "output": T.dst.name}}
    return doc, w.arrays


def write_ngff(T: Transform, path, force: bool = False) -> Path:
    """Save ``T`` as an OME-NGFF 0.6 scene JSON (arrays in a zarr store beside it).

    Examples
    --------
    >>> import tempfile, os
    >>> from .read import read_ngff
    >>> T = Affine.from_scale(1e-3, src=Space("em", "nm"), dst=Space("lm", "um"))
    >>> p = write_ngff(T, os.path.join(tempfile.mkdtemp(), "em_to_lm.json"))
    >>> read_ngff(p).map_points([[1000.0, 0, 0]])
    array([[1., 0., 0.]])
    """
    from ...io.atomic import atomic_path, check_writable

    path = Path(path)
    check_writable(path, force)
    doc, arrays = scene_document(T, path)
    if arrays:
        import zarr

        with atomic_path(path.parent / fields_store_name(path), force) as tmp:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            for rel, a, attrs in arrays:
                g = root.require_group(rel)
                g.attrs.update(attrs)
                chunks = (a.shape[0],) + tuple(min(s, 64) for s in a.shape[1:])
                arr = g.create_array("s0", shape=a.shape, dtype=a.dtype, chunks=chunks)
                arr[...] = a
    with atomic_path(path, force) as tmp:
        Path(tmp).write_text(_dumps(doc) + "\n")
    return path
