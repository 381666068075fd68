"""SWC files: strict reading (errors name the file and line) and exact writing, with a units sidecar.

SWC stores ``id type x y z radius parent`` per line and nothing about units or
space. atlasreg therefore asks the caller to state them, or reads them from a
sidecar JSON next to the file (``<file>.swc.json``) that :func:`write_swc`
writes::

    {"format": "atlasreg-swc-sidecar", "version": 1, "space": "ccf", "unit": "um",
     "orientation": "asr", "voxel_size": null, "name": "...", "provenance": {...}}

MouseLight's SWC exports say their space in the header (``# Annotation Space:
CCFv2.5 (ML legacy) Axes> Z: Anterior-Posterior; ...``): as for their JSON
(:func:`~atlasreg.tracings.read_mouselight`), ``x, y, z`` are reordered into the
CCF's AP, DV, LR as the header says, and the space defaults to ``ccf`` in µm.

Roots have parent -1 (any negative number is read as -1); a file with no node 0
whose roots have parent 0 (some writers number from 1 and use 0 for "none") is
read the same way whatever the order of its lines.

``voxel_size`` (in ``unit`` per voxel, one value or one per axis) converts voxel
coordinates to physical ones; radii scale by the geometric mean of the voxel
size (exact for isotropic voxels; a sphere has no single radius otherwise).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, OutputExistsError
from ..spaces import Space, as_voxel_size, known_space, normalize_unit, validate_orientation
from .mouselight import ccf_axes
from .neuron import Neuron, make_space, normalize_roots, validate_structure

SIDECAR_FORMAT = "atlasreg-swc-sidecar"
_SWC_FIELDS = ("id", "type", "x", "y", "z", "radius", "parent")


def sidecar_path(path) -> Path:
    """``foo.swc`` -> ``foo.swc.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def read_sidecar(path) -> dict:
    """The sidecar of an SWC file as a dict ({} when there is none)."""
    sc = sidecar_path(path)
    if not sc.exists():
        return {}
    try:
        meta = json.loads(sc.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the SWC sidecar: {exc}", path=sc) from None
    if not isinstance(meta, dict):
        raise InputError("an SWC sidecar must hold a JSON object", path=sc)
    return meta


def _resolve(name: str, given, stored, sc_path, same=lambda a, b: a == b):
    if given is None:
        return stored
    if stored is not None and not same(given, stored):
        raise InputError(f"{name}={given!r} was given but the sidecar says {stored!r}; pass the sidecar's value "
                         "or fix/remove the sidecar", path=sc_path, field=name)
    return given


def _parse_swc_text(text: str, path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Return (int columns (N,3) id/type/parent, float columns (N,4) x/y/z/radius, line numbers, header)."""
    rows, lines, header = [], [], []
    for i, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        if not s:
            continue
        if s[0] == "#":
            if not rows:
                header.append(s[1:].strip())
            continue
        if "#" in s:  # trailing comment
            s = s[: s.index("#")]
        tok = s.split()
        if len(tok) < 7:
            raise InputError(f"line {i}: expected 7 fields 'id type x y z radius parent', got {len(tok)}: "
                             f"{raw.strip()[:80]!r}", path=path, field="line")
        rows.append(tok[:7])
        lines.append(i)
    if not rows:
        raise InputError("no nodes: the file has no data lines (only comments or blank lines)", path=path)
    arr = np.array(rows, dtype=object)
    lines_a = np.asarray(lines, dtype=np.int64)
    vals = np.empty((len(rows), 7), dtype=np.float64)
    for j, f in enumerate(_SWC_FIELDS):
        col = pd.to_numeric(pd.Series(arr[:, j]), errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(col)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise InputError(f"line {lines_a[r]}: field '{f}' = {arr[r, j]!r} is not a finite number",
                             path=path, field=f)
        if f in ("id", "type", "parent") and (col != np.round(col)).any():
            r = int(np.flatnonzero(col != np.round(col))[0])
            raise InputError(f"line {lines_a[r]}: field '{f}' = {arr[r, j]!r} must be an integer", path=path,
                             field=f)
        vals[:, j] = col
    ints = vals[:, [0, 1, 6]].astype(np.int64)
    floats = vals[:, 2:6]
    return ints, floats, lines_a, header


def _annotation_space(text: str) -> str | None:
    """The ``Annotation Space:`` line of a MouseLight SWC header (None when the header has none)."""
    for line in text[:65536].splitlines():
        s = line.strip()
        if not s:
            continue
        if not s.startswith("#"):
            return None
        key, sep, rest = s[1:].partition(":")
        if sep and key.strip().lower() == "annotation space":
            return rest.strip()
    return None


def _parse_fast(text: str):
    """C-speed parse of a well-formed SWC; None when anything looks wrong (then the slow path explains)."""
    try:
        # usecols: a long one-line file (JSON, say) would otherwise become a frame of 100 000s of columns.
        df = pd.read_csv(io.StringIO(text), sep=r"\s+", comment="#", header=None, engine="c", usecols=range(7))
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if df.shape[1] < 7 or len(df) == 0:
        return None
    try:
        vals = df.iloc[:, :7].to_numpy(np.float64)
    except (TypeError, ValueError):
        return None
    if not np.all(np.isfinite(vals)):
        return None
    ints = vals[:, [0, 1, 6]]
    if (ints != np.round(ints)).any():
        return None
    return ints.astype(np.int64), vals[:, 2:6].copy()


def read_swc(path, space: Space | str | None = None, unit: str | None = None, voxel_size=None,
             orientation: str | None = None, name: str | None = None, kind: str | None = None) -> Neuron:
    """Read an SWC file into a :class:`Neuron` with physical coordinates in a declared space.

    Parameters
    ----------
    path : str or Path
    space : Space or str
        The space the file's coordinates are in (e.g. ``"ccf"``). Required unless a sidecar
        ``<path>.json`` gives it.
    unit : str
        Physical unit of the space (``"nm"``, ``"um"``, ``"mm"``). Required unless the sidecar or a
        Space gives it.
    voxel_size : float or 3 floats, optional
        When the file is in voxel units: the size of one voxel in ``unit`` (per axis allowed);
        coordinates are multiplied by it, radii by its geometric mean.
    orientation : str, optional
        BrainGlobe origin code of the space's axes (``"asr"`` for the CCF), kept on the Space.
    name : str, optional
        Defaults to the file name without ``.swc``.
    kind : str, optional
        Stored in the provenance (e.g. ``"optical"``, ``"em"``).

    Raises
    ------
    InputError
        Missing space/unit, unparseable fields, duplicate ids, missing parents, cycles — naming the
        file and the line.

    Examples
    --------
    >>> n = read_swc("17302_00002_CP.swc", space="ccf", unit="um", voxel_size=25.0,
    ...              orientation="asr")  # doctest: +SKIP
    >>> n.space  # doctest: +SKIP
    Space(name='ccf', unit='um', orientation='asr')
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("SWC file not found", path=p)
    meta = read_sidecar(p)
    sc = sidecar_path(p)
    s_space = meta.get("space")
    s_unit = meta.get("unit")
    s_or = meta.get("orientation")
    if isinstance(space, Space):
        if unit is None:
            unit = space.unit
        if orientation is None:
            orientation = space.orientation
        space = space.name
    space = _resolve("space", space, s_space, sc)
    unit = _resolve("unit", unit, s_unit, sc, lambda a, b: normalize_unit(a) == normalize_unit(b))
    orientation = _resolve("orientation", orientation, s_or, sc,
                           lambda a, b: validate_orientation(a) == validate_orientation(b))
    known = known_space(space) if isinstance(space, str) else None
    if known is not None:  # e.g. "ccf": the field's agreed unit and axes
        unit = unit if unit is not None else known.unit
        orientation = orientation if orientation is not None else known.orientation
    vs_given = None if voxel_size is None else as_voxel_size(voxel_size, path=p)
    vs_stored = None if meta.get("voxel_size") is None else as_voxel_size(meta["voxel_size"], path=sc)
    if vs_given is not None and vs_stored is not None and not np.allclose(vs_given, vs_stored):
        raise InputError(f"voxel_size={voxel_size!r} was given but the sidecar says {meta.get('voxel_size')!r}",
                         path=sc, field="voxel_size")
    vs = vs_given if vs_given is not None else vs_stored
    try:
        text = p.read_text()
    except UnicodeDecodeError as exc:
        raise InputError(f"not a text SWC file ({exc})", path=p) from None
    ml_space = _annotation_space(text)
    perm = None
    if ml_space is not None:
        stated = space is not None and unit is not None
        perm = ccf_axes({"description": ml_space}, p, unknown="keep" if stated else "raise")
        if perm is not None and space is None and unit is None:
            space, unit = "ccf", "um"  # MouseLight: CCF micrometres
    if space is None or unit is None:
        raise InputError(
            "SWC carries no units or space: pass space= and unit= (and voxel_size= if the coordinates are "
            f"voxel indices), e.g. read_swc({p.name!r}, space='ccf', unit='um', voxel_size=25), or put them in "
            f"a sidecar {sc.name}", path=p, field="space" if space is None else "unit")
    try:
        sp = make_space(space, unit, orientation)
    except InputError as exc:  # a bad unit or orientation: name the file it came with
        raise InputError(str(exc), path=sc if meta else p) from None
    parsed = _parse_fast(text)
    if parsed is None:  # something is off: the careful parser finds and names the line
        parsed = _parse_swc_text(text, p)[:2]
    ints, floats = parsed
    ids, types = ints[:, 0], ints[:, 1]
    parents, zero_roots = normalize_roots(ids, ints[:, 2])  # -1, any negative, or 0 with no node 0
    try:
        validate_structure(ids, parents, p)
    except InputError:
        # Re-run with line numbers so the message points into the file.
        validate_structure(ids, parents, p, _parse_swc_text(text, p)[2])
        raise
    xyz = floats[:, :3] if perm is None else floats[:, list(perm)]
    rad = floats[:, 3]
    if vs is not None:
        xyz = xyz * vs[None, :]
        rad = rad * float(np.prod(vs) ** (1.0 / 3.0))
    nodes = pd.DataFrame({"id": ids, "type": types, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                          "radius": rad, "parent": parents})
    prov = meta.get("provenance")
    if not isinstance(prov, dict):
        prov = {"format": "swc", "source_file": str(p.resolve()), "source_space": sp.name,
                "source_unit": sp.unit, "source_orientation": sp.orientation,
                "voxel_size": None if vs is None else [float(v) for v in vs], "transforms": []}
    if perm is not None and not isinstance(meta.get("provenance"), dict):
        prov["source_axes"] = "".join("xyz"[a] for a in perm)  # file axes taken as the space's axes 0, 1, 2
        prov["annotation_space"] = ml_space
    if zero_roots:
        prov["root_parent"] = 0  # the file marked its roots with parent 0 (written back as -1)
    if kind is not None:
        prov["kind"] = kind
    nm = name if name is not None else meta.get("name", p.name[:-4] if p.name.lower().endswith(".swc") else p.stem)
    return Neuron(nodes, sp, name=nm, provenance=prov, source=p, _validated=True)


def write_swc(neuron: Neuron, path, force: bool = False, sidecar: bool = True) -> Path:
    """Write a neuron as SWC in physical coordinates of its space, plus ``<path>.json`` sidecar.

    Coordinates are written with the shortest decimal that reads back to the same float, so
    ``read_swc(write_swc(n, p))`` equals ``n`` exactly (name, space, provenance from the sidecar).

    Examples
    --------
    >>> write_swc(n, "out/cell.swc")  # doctest: +SKIP
    >>> read_swc("out/cell.swc") == n  # space, unit from the sidecar   # doctest: +SKIP
    True
    """
    if not isinstance(neuron, Neuron):
        raise InputError(f"write_swc takes a Neuron, got {type(neuron).__name__}")
    p = Path(path)
    sc = sidecar_path(p)
    if not force:
        for q in (p, sc) if sidecar else (p,):
            if q.exists():
                raise OutputExistsError(f"{q} exists; pass force=True to overwrite")
    p.parent.mkdir(parents=True, exist_ok=True)
    sp = neuron.space
    head = [f"# atlasreg SWC: neuron {neuron.name}",
            f"# space {sp.name}, unit {sp.unit}" + (f", orientation {sp.orientation}" if sp.orientation else ""),
            "# coordinates and radii are physical (not voxels); metadata in " + sc.name,
            "# id type x y z radius parent"]
    body = neuron.nodes[list(_SWC_FIELDS)].to_csv(sep=" ", header=False, index=False, lineterminator="\n")
    p.write_text("\n".join(head) + "\n" + body)
    if sidecar:
        meta = {"format": SIDECAR_FORMAT, "version": 1, "space": sp.name, "unit": sp.unit,
                "orientation": sp.orientation, "voxel_size": None, "name": neuron.name,
                "provenance": neuron.provenance}
        sc.write_text(json.dumps(meta, indent=1))
    return p
