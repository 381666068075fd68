"""OME-NGFF 0.6 ``coordinateTransformations`` as transform files (``.json``).

A saved transform is a JSON document::

    {"ome": {"version": "0.6",
             "coordinateSystems": [{"name": "em", "axes": [{"name": "x", "type": "space",
                                                            "unit": "nanometer"}, ...]}, ...],
             "coordinateTransformations": [{"type": "sequence", "input": "em", "output": "ccf",
                                            "transformations": [...]}]}}

* Points are column vectors in the order of a coordinate system's axes, which
  atlasreg names ``x, y, z`` = its coordinate order (array axis 0, 1, 2; ITK's
  physical x, y, z). Units are NGFF unit names (``nanometer``, ``micrometer``,
  ``millimeter``); a space's orientation code is written per axis as an RFC-4
  anatomical orientation (``{"type": "anatomical", "value": "posterior-to-anterior"}``).
* ``affine`` / ``scale`` / ``translation`` / ``identity`` / ``rotation`` /
  ``mapAxis`` / ``sequence`` / ``inverseOf`` / ``bijection`` follow the NGFF
  0.6 draft. Every step of a sequence names its ``input``/``output`` so the
  intermediate spaces (and their units) survive.
* ``displacements``: the field is a zarr array of shape ``(X, Y, Z, 3)`` (last
  axis of type ``displacement``) in a zarr store beside the JSON
  (``<name>_fields.zarr``, ``path`` relative to the JSON's folder). The array's
  own ``coordinateTransformations`` (scale + translation, or an affine when the
  grid is rotated) place its voxel centres in the input space.
* A known inverse (the inverse warp ANTs wrote) is kept as a ``bijection``; a
  numerically solved inverse as ``inverseOf``.
* ``thinplatespline`` is an atlasreg extension (NGFF 0.6 has no spline type):
  landmarks, kernel and regularisation, plus the solved coefficients so the
  spline reloads bit-for-bit.

Extra atlasreg keys (``"atlasreg": {...}``, e.g. a field's outside policy) sit
beside the NGFF keys; NGFF readers ignore them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError, SpaceMismatchError
from ..spaces import Space, as_space, validate_orientation
from .base import Affine, Sequence, Transform, resolved
from .field import DisplacementField, InverseDisplacementField
from .tps import InverseThinPlateSpline, ThinPlateSpline

NGFF_VERSION = "0.6"
AXIS_NAMES = ("x", "y", "z")
_UNIT_TO_NGFF = {"nm": "nanometer", "um": "micrometer", "mm": "millimeter"}
_NGFF_TO_UNIT = {v: k for k, v in _UNIT_TO_NGFF.items()}
# BrainGlobe origin letter (side where index 0 lies) -> RFC-4 direction the axis runs.
_ORIGIN_TO_RFC4 = {"a": "anterior-to-posterior", "p": "posterior-to-anterior",
                   "s": "superior-to-inferior", "i": "inferior-to-superior",
                   "l": "left-to-right", "r": "right-to-left"}
_RFC4_TO_ORIGIN = {v: k for k, v in _ORIGIN_TO_RFC4.items()}
_RFC4_TO_ORIGIN.update({"dorsal-to-ventral": "s", "ventral-to-dorsal": "i"})


# ---------------------------------------------------------------------------------------------
# Coordinate systems
# ---------------------------------------------------------------------------------------------
def coordinate_system(space: Space) -> dict:
    """The NGFF coordinate system of a Space (three spatial axes in atlasreg's coordinate order)."""
    axes = []
    for i, name in enumerate(AXIS_NAMES):
        ax = {"name": name, "type": "space", "unit": _UNIT_TO_NGFF[space.unit]}
        if space.orientation:
            ax["orientation"] = {"type": "anatomical", "value": _ORIGIN_TO_RFC4[space.orientation[i]]}
        axes.append(ax)
    return {"name": space.name, "axes": axes}


def space_from_system(cs: dict, path=None) -> Space:
    """A Space from an NGFF coordinate system (three spatial axes with one length unit)."""
    if not isinstance(cs, dict) or not isinstance(cs.get("name"), str) or not isinstance(cs.get("axes"), list):
        raise InputError(f"malformed coordinate system {cs!r}: needs 'name' and 'axes'", path=path,
                         field="coordinateSystems")
    spatial = [a for a in cs["axes"] if isinstance(a, dict) and a.get("type", "space") == "space"]
    if len(spatial) != 3:
        raise InputError(f"coordinate system {cs['name']!r} has {len(spatial)} spatial axes; atlasreg "
                         "transforms are 3-D", path=path, field="axes")
    units = {a.get("unit") for a in spatial}
    if len(units) != 1 or None in units:
        raise InputError(f"coordinate system {cs['name']!r}: all three spatial axes need one length unit, "
                         f"found {sorted(map(str, units))}", path=path, field="unit")
    ngff_unit = units.pop()
    unit = _NGFF_TO_UNIT.get(ngff_unit, ngff_unit)
    orient = None
    vals = [a.get("orientation", {}).get("value") if isinstance(a.get("orientation"), dict) else None
            for a in spatial]
    if all(v in _RFC4_TO_ORIGIN for v in vals):
        try:
            orient = validate_orientation("".join(_RFC4_TO_ORIGIN[v] for v in vals))
        except InputError:
            orient = None
    try:
        return Space(cs["name"], unit, orient)
    except InputError as exc:
        raise InputError(f"coordinate system {cs['name']!r}: {exc}", path=path, field="unit") from None


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
class _Encoder:
    def __init__(self, fields_rel: str, path):
        self.systems: dict[str, dict] = {}
        self.fields: list[tuple[str, DisplacementField]] = []
        self.fields_rel = fields_rel
        self.path = path

    def system(self, space: Space) -> str:
        cs = coordinate_system(space)
        known = self.systems.get(space.name)
        if known is not None and known != cs:
            raise SpaceMismatchError(f"{self.path}: space {space.name!r} appears with two different units or "
                                     "orientations in this transform")
        self.systems[space.name] = cs
        return space.name

    def io(self, obj: dict, T: Transform) -> dict:
        obj["input"] = self.system(T.src)
        obj["output"] = self.system(T.dst)
        return obj

    def encode(self, T: Transform, allow_bijection: bool = True) -> dict:
        T = resolved(T)
        if allow_bijection and _has_own_inverse(T):
            return self.io({"type": "bijection",
                            "forward": self.encode(T, allow_bijection=False),
                            "inverse": self.encode(T.inverse(), allow_bijection=False)}, T)
        if isinstance(T, Affine):
            return self.io(_affine_json(T.matrix), T)
        if isinstance(T, Sequence):
            return self.io({"type": "sequence",
                            "transformations": [self.encode(t) for t in T.steps]}, T)
        if isinstance(T, DisplacementField):
            name = f"field_{len(self.fields)}"
            self.fields.append((name, T))
            return self.io({"type": "displacements", "path": f"{self.fields_rel}/coordinateTransformations/{name}",
                            "interpolation": "linear", "atlasreg": {"outside": T.outside}}, T)
        if isinstance(T, (InverseDisplacementField, InverseThinPlateSpline)):
            return self.io({"type": "inverseOf", "transformation": self.encode(T.forward, False)}, T)
        if isinstance(T, ThinPlateSpline):
            return self.io(_tps_json(T), T)
        raise InputError(f"cannot save a {type(T).__name__} as NGFF JSON", path=self.path, field="transform")


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
    if np.array_equal(L, np.eye(3)):
        return {"type": "translation", "translation": t.tolist()}
    if np.array_equal(L, np.diag(np.diag(L))) and not np.any(t):
        return {"type": "scale", "scale": np.diag(L).tolist()}
    return {"type": "affine", "affine": m[:3].tolist()}


def _tps_json(T: ThinPlateSpline) -> dict:
    extra = {}
    for key, attr in (("frame", "frame"), ("weights", "weights"), ("affine_coeffs", "affine_coeffs")):
        v = getattr(T, attr, None)
        if v is not None:
            extra[key] = np.asarray(v, float).tolist()
    return {"type": "thinplatespline", "kernel": T.kernel, "regularization": T.regularization,
            "source_landmarks": T.src_points.tolist(), "target_landmarks": T.dst_points.tolist(),
            "atlasreg": extra}


def _field_array_meta(name: str, F: DisplacementField) -> dict:
    unit = _UNIT_TO_NGFF[F.src.unit]
    axes = [{"name": n, "type": "space", "unit": unit} for n in AXIS_NAMES]
    axes.append({"name": "d", "type": "displacement", "discrete": True})
    D = F.direction
    if np.array_equal(D, np.eye(3)):
        placement = {"type": "sequence", "input": name + "_array", "output": name, "transformations": [
            {"type": "scale", "scale": [*map(float, F.spacing), 1.0]},
            {"type": "translation", "translation": [*map(float, F.origin), 0.0]}]}
    else:
        m = np.eye(5)
        m[:3, :3] = F.index_to_physical[:3, :3]
        m[:3, 4] = F.index_to_physical[:3, 3]
        placement = {"type": "affine", "input": name + "_array", "output": name, "affine": m[:4].tolist()}
    return {"ome": {"version": NGFF_VERSION, "coordinateSystems": [{"name": name, "axes": axes}],
                    "coordinateTransformations": [placement]}}


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
    p = Path(path)
    stem = p.name[:-5] if p.name.lower().endswith(".json") else p.name
    return f"{stem}_fields.zarr"


def write_ngff(T: Transform, path, force: bool = False) -> Path:
    """Save ``T`` as an OME-NGFF 0.6 coordinateTransformations JSON (fields in a zarr store beside it).

    Examples
    --------
    >>> import tempfile, os
    >>> T = Affine.from_scale(1e-3, src=Space("em", "nm"), dst=Space("lm", "um"))
    >>> p = write_ngff(T, os.path.join(tempfile.mkdtemp(), "em_to_lm.json"))
    >>> read_ngff(p).map_points([[1000.0, 0, 0]])
    array([[1., 0., 0.]])
    """
    from ..io.atomic import atomic_path, check_writable

    path = Path(path)
    check_writable(path, force)
    enc = _Encoder(fields_store_name(path), path)
    doc = {"ome": {"version": NGFF_VERSION, "coordinateSystems": [],
                   "coordinateTransformations": [enc.encode(T)]}}
    doc["ome"]["coordinateSystems"] = list(enc.systems.values())
    if enc.fields:
        import zarr

        with atomic_path(path.parent / enc.fields_rel, force) as tmp:
            g = zarr.open_group(str(tmp), mode="w")
            for name, F in enc.fields:
                u = F.displacement
                chunks = tuple(min(s, 64) for s in u.shape[:3]) + (3,)
                a = g.create_array(f"coordinateTransformations/{name}", shape=u.shape, dtype=u.dtype,
                                   chunks=chunks)
                a[:] = u
                a.attrs.update(_field_array_meta(name, F))
    with atomic_path(path, force) as tmp:
        Path(tmp).write_text(_dumps(doc) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
class _Decoder:
    def __init__(self, systems: dict[str, Space], base: Path, path, outside: str | None,
                 given: dict[str, Space]):
        self.systems = systems
        self.base = base
        self.path = path
        self.outside = outside
        self.given = given

    def space(self, ref, role: str) -> Space:
        name = ref.get("name") if isinstance(ref, dict) else ref
        if not isinstance(name, str):
            raise InputError(f"transform {role} must name a coordinate system, got {ref!r}", path=self.path,
                             field=role)
        if name in self.systems:
            return self.systems[name]
        if name in self.given:
            return self.given[name]
        raise InputError(f"coordinate system {name!r} is not declared in the file (no unit known); "
                         f"pass it as src/dst with its unit", path=self.path, field="coordinateSystems")

    def decode(self, obj: dict, s: Space | None = None, d: Space | None = None) -> Transform:
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise InputError(f"malformed coordinate transformation {str(obj)[:200]!r}", path=self.path,
                             field="coordinateTransformations")
        if "input" in obj and obj["input"] is not None:
            s = self.space(obj["input"], "input")
        if "output" in obj and obj["output"] is not None:
            d = self.space(obj["output"], "output")
        kind = obj["type"]
        if s is None or d is None:
            raise InputError(f"{kind} transformation without input/output spaces", path=self.path, field=kind)
        if kind in ("identity", "translation", "scale", "affine", "rotation", "mapAxis"):
            return Affine(self._matrix(obj, kind), s, d)
        if kind == "sequence":
            items = obj.get("transformations")
            if not isinstance(items, list) or not items:
                raise InputError("sequence needs a non-empty 'transformations' list", path=self.path,
                                 field="transformations")
            steps = []
            cur = s
            for i, item in enumerate(items):
                nxt_out = item.get("output") if isinstance(item, dict) else None
                if i == len(items) - 1:
                    out = d
                elif nxt_out is not None:
                    out = self.space(nxt_out, "output")
                else:
                    out = Space(f"{s.name}->{d.name}#{i + 1}", cur.unit)
                t = self.decode(item, cur, out)
                steps.append(t)
                cur = t.dst
            try:
                return Sequence(steps)
            except SpaceMismatchError as exc:
                raise SpaceMismatchError(f"{self.path}: {exc}") from None
        if kind == "displacements":
            return self._field(obj, s, d)
        if kind == "inverseOf":
            inner = obj.get("transformation")
            if not isinstance(inner, dict):
                raise InputError("inverseOf needs a 'transformation'", path=self.path, field="transformation")
            return self.decode(inner, d, s).inverse()
        if kind == "bijection":
            if not isinstance(obj.get("forward"), dict) or not isinstance(obj.get("inverse"), dict):
                raise InputError("bijection needs 'forward' and 'inverse' transformations", path=self.path,
                                 field="bijection")
            fwd = self.decode(obj["forward"], s, d)
            inv = self.decode(obj["inverse"], d, s)
            return fwd.with_inverse(inv)
        if kind == "thinplatespline":
            return self._tps(obj, s, d)
        raise InputError(f"unsupported coordinate transformation type {kind!r} (atlasreg reads identity, "
                         "translation, scale, affine, rotation, mapAxis, sequence, displacements, inverseOf, "
                         "bijection, thinplatespline)", path=self.path, field="type")

    def _params(self, obj: dict, key: str):
        if obj.get("path") is not None and key not in ("mapAxis",):
            import zarr

            try:
                return np.asarray(zarr.open_array(str(self.base / obj["path"]), mode="r")[...], float)
            except Exception as exc:  # zarr raises many kinds for a missing or broken array
                raise InputError(f"cannot read {key} parameters at {obj['path']!r}: {exc}", path=self.path,
                                 field=key) from None
        if key not in obj:
            raise InputError(f"{obj['type']} transformation without {key!r}", path=self.path, field=key)
        try:
            return np.asarray(obj[key], float)
        except (TypeError, ValueError):
            raise InputError(f"{key} must be numbers, got {obj[key]!r}", path=self.path, field=key) from None

    def _matrix(self, obj: dict, kind: str) -> np.ndarray:
        m = np.eye(4)
        if kind == "identity":
            return m
        if kind == "translation":
            t = self._params(obj, "translation")
            if t.shape != (3,):
                raise InputError(f"translation must have 3 numbers, got shape {t.shape}", path=self.path,
                                 field="translation")
            m[:3, 3] = t
        elif kind == "scale":
            sc = self._params(obj, "scale")
            if sc.shape != (3,):
                raise InputError(f"scale must have 3 numbers, got shape {sc.shape}", path=self.path,
                                 field="scale")
            m[:3, :3] = np.diag(sc)
        elif kind == "affine":
            a = self._params(obj, "affine")
            if a.shape == (12,):
                a = a.reshape(3, 4)
            if a.shape == (4, 4):
                a = a[:3]
            if a.shape != (3, 4):
                raise InputError(f"a 3-D affine is a 3x4 matrix (rows of [matrix | translation]), got shape "
                                 f"{a.shape}", path=self.path, field="affine")
            m[:3] = a
        elif kind == "rotation":
            r = self._params(obj, "rotation")
            if r.shape == (9,):
                r = r.reshape(3, 3)
            if r.shape != (3, 3):
                raise InputError(f"rotation must be 3x3, got shape {r.shape}", path=self.path, field="rotation")
            m[:3, :3] = r
        elif kind == "mapAxis":
            perm = obj.get("mapAxis")
            if not isinstance(perm, list) or sorted(perm) != [0, 1, 2]:
                raise InputError(f"mapAxis must be a permutation of [0, 1, 2], got {perm!r}", path=self.path,
                                 field="mapAxis")
            m[:3, :3] = np.eye(3)[perm]
        if not np.all(np.isfinite(m)):
            raise InputError(f"{kind} parameters contain NaN or inf", path=self.path, field=kind)
        return m

    def _field(self, obj: dict, s: Space, d: Space) -> DisplacementField:
        import zarr

        rel = obj.get("path")
        if not isinstance(rel, str):
            raise InputError("displacements needs a 'path' to its array", path=self.path, field="path")
        where = self.base / rel
        try:
            arr = zarr.open_array(str(where), mode="r")
        except Exception as exc:  # missing store, broken metadata
            raise InputError(f"cannot open the displacement array {rel!r}: {exc}", path=self.path,
                             field="path") from None
        interp = obj.get("interpolation", "linear")
        if interp != "linear":
            raise InputError(f"displacements interpolation {interp!r} is not supported (atlasreg fields are "
                             "linear)", path=self.path, field="interpolation")
        meta = dict(arr.attrs).get("ome", {})
        u, m = _field_layout(arr, meta, where)
        outside = self.outside or (obj.get("atlasreg") or {}).get("outside", "nan")
        if s.unit != d.unit:
            raise InputError(f"displacements map within one unit, but {s.name!r} is in {s.unit} and {d.name!r} "
                             f"in {d.unit}", path=self.path, field="unit")
        sp = np.linalg.norm(m[:3, :3], axis=0)
        try:
            return DisplacementField(u, spacing=sp, origin=m[:3, 3], direction=m[:3, :3] / sp, src=s, dst=d,
                                     outside=outside)
        except InputError as exc:
            raise InputError(str(exc), path=where, field="displacement") from None

    def _tps(self, obj: dict, s: Space, d: Space) -> ThinPlateSpline:
        try:
            sp = np.asarray(obj["source_landmarks"], float)
            dp = np.asarray(obj["target_landmarks"], float)
            kernel = obj.get("kernel", "r")
            lam = float(obj.get("regularization", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"thinplatespline needs numeric source_landmarks and target_landmarks ({exc})",
                             path=self.path, field="thinplatespline") from None
        extra = obj.get("atlasreg") or {}
        try:
            if hasattr(ThinPlateSpline, "from_solution") and all(k in extra for k in
                                                                  ("frame", "weights", "affine_coeffs")):
                return ThinPlateSpline.from_solution(sp, dp, extra["weights"], extra["affine_coeffs"], lam,
                                                     kernel, extra["frame"], src=s, dst=d)
            if "frame" in extra:
                return ThinPlateSpline(sp, dp, regularization=lam, kernel=kernel, src=s, dst=d,
                                       frame=extra["frame"])
            return ThinPlateSpline(sp, dp, regularization=lam, kernel=kernel, src=s, dst=d)
        except InputError as exc:
            raise InputError(str(exc), path=self.path, field="thinplatespline") from None


def _field_layout(arr, meta: dict, where: Path) -> tuple[np.ndarray, np.ndarray]:
    """The ``(X, Y, Z, 3)`` displacements and the 4x4 index -> physical matrix of an NGFF field array."""
    if arr.ndim != 4:
        raise InputError(f"a 3-D displacement field array is 4-D (3 spatial axes + displacement), got shape "
                         f"{arr.shape}", path=where, field="shape")
    disp_axis = arr.ndim - 1
    systems = meta.get("coordinateSystems") or []
    if systems and isinstance(systems[0], dict):
        types = [a.get("type") for a in systems[0].get("axes", [])]
        if "displacement" in types and len(types) == 4:
            disp_axis = types.index("displacement")
    u = np.asarray(arr[...])
    u = np.moveaxis(u, disp_axis, -1)
    if u.shape[-1] != 3:
        raise InputError(f"the displacement axis has {u.shape[-1]} components, a 3-D field needs 3",
                         path=where, field="shape")
    if u.dtype not in (np.float32, np.float64):
        u = u.astype(np.float64)
    full = np.eye(5)  # array index (4-D) -> field coordinates (4-D)
    for ct in meta.get("coordinateTransformations") or []:
        full = _placement(ct, where) @ full
    keep = [i for i in range(4) if i != disp_axis]
    m = np.eye(4)
    m[:3, :3] = full[np.ix_(keep, keep)]
    m[:3, 3] = full[keep, 4]
    return np.ascontiguousarray(u), m


def _placement(ct: dict, where: Path) -> np.ndarray:
    kind = ct.get("type") if isinstance(ct, dict) else None
    m = np.eye(5)
    try:
        if kind == "identity":
            return m
        if kind == "scale":
            m[:4, :4] = np.diag(np.asarray(ct["scale"], float).reshape(4))
        elif kind == "translation":
            m[:4, 4] = np.asarray(ct["translation"], float).reshape(4)
        elif kind == "affine":
            a = np.asarray(ct["affine"], float)
            m[:4] = a.reshape(4, 5)
        elif kind == "sequence":
            for t in ct["transformations"]:
                m = _placement(t, where) @ m
        else:
            raise InputError(f"unsupported placement {kind!r} of a displacement array (scale, translation, "
                             "affine, sequence)", path=where, field="coordinateTransformations")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed {kind} placement of the displacement array: {exc}", path=where,
                         field="coordinateTransformations") from None
    return m


def _load_document(path: Path) -> tuple[dict, Path]:
    if path.is_dir():
        if not (path / "zarr.json").exists():
            raise InputError("folder is not a zarr group (no zarr.json)", path=path)
        base, path = path, path / "zarr.json"
    else:
        base = path.parent
    try:
        doc = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise InputError("not a text JSON file", path=path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON (corrupt or truncated?): {exc}", path=path) from None
    if isinstance(doc, dict) and "attributes" in doc and "ome" in (doc.get("attributes") or {}):
        doc = doc["attributes"]
    return doc, base


def read_ngff(path, src: Space | str | None = None, dst: Space | str | None = None,
              outside: str | None = None) -> Transform:
    """Read an NGFF coordinateTransformations JSON (as :func:`write_ngff` writes it, or a zarr group).

    ``src``/``dst`` pick the transform when the file holds several (the
    reverse of a stored one is its inverse) and must agree with the file's
    spaces. ``outside`` overrides the stored outside policy of fields.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("transform file does not exist", path=path)
    doc, base = _load_document(path)
    ome = doc.get("ome", doc) if isinstance(doc, dict) else None
    if not isinstance(ome, dict):
        raise InputError("expected a JSON object with 'ome' metadata", path=path)
    cts = ome.get("coordinateTransformations")
    if cts is None and isinstance(ome.get("scene"), dict):
        cts = ome["scene"].get("coordinateTransformations")
    if cts is None and "type" in ome:
        cts = [ome]
    if not isinstance(cts, list) or not cts:
        raise InputError("no 'coordinateTransformations' in the file", path=path, field="coordinateTransformations")
    systems = {}
    for cs in ome.get("coordinateSystems") or []:
        sp = space_from_system(cs, path)
        systems[sp.name] = sp
    given = {}
    for sp in (src, dst):
        if sp is not None:
            s = as_space(sp)
            given[s.name] = s
            known = systems.get(s.name)
            if known is not None and isinstance(sp, Space) and known.unit != s.unit:
                raise SpaceMismatchError(f"{path}: space {s.name!r} is in {known.unit} in the file but "
                                         f"{s.unit} was given")
    dec = _Decoder(systems, base, path, outside, given)
    s_name = None if src is None else as_space(src).name
    d_name = None if dst is None else as_space(dst).name

    def ends(ct):
        def nm(r):
            return r.get("name") if isinstance(r, dict) else r
        return (nm(ct.get("input")), nm(ct.get("output"))) if isinstance(ct, dict) else (None, None)

    for ct in cts:
        i, o = ends(ct)
        if (s_name in (None, i)) and (d_name in (None, o)):
            if len(cts) > 1 and s_name is None and d_name is None:
                listing = ", ".join(f"{a} -> {b}" for a, b in map(ends, cts))
                raise InputError(f"the file holds {len(cts)} transforms ({listing}); pass src= and dst= to "
                                 "pick one", path=path)
            return dec.decode(ct)
    for ct in cts:
        i, o = ends(ct)
        if (s_name in (None, o)) and (d_name in (None, i)):
            return dec.decode(ct).inverse()
    listing = ", ".join(f"{a} -> {b}" for a, b in map(ends, cts))
    raise SpaceMismatchError(f"{path}: no transform {s_name} -> {d_name} in the file (it holds {listing})")
