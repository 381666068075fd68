"""MouseLight JSON (Janelia neuron browser export): read and write.

A MouseLight file holds ``{"neurons": [...]}``; each neuron has a ``soma`` and
two trees, ``axon`` and ``dendrite``, each a list of samples
``{sampleNumber, structureIdentifier, x, y, z, radius, parentNumber, allenId}``
rooted at the soma (structure 1 soma, 2 axon, 3 dendrite). atlasreg merges the
two trees into one node table (dendrite ids follow the axon's, the dendrite's
copy of the soma is dropped and its children hang from the axon's soma) and
splits them again on writing: every branch leaving the soma whose first node is
a dendrite (type 3 or 4) goes to ``dendrite``, the rest to ``axon``.

MouseLight coordinates are CCF micrometres. Janelia's exports say which axis is
which in ``annotationSpace.description``: the CCFv3 exports ``Axes> X:
Anterior-Posterior; Y: Superior-Inferior; Z: Left-Right`` (the CCF's own axis
order), the legacy "CCFv2.5 (ML legacy)" exports ``Axes> Z: Anterior-Posterior;
Y: Inferior-Superior; X: Left-Right``. atlasreg reorders ``x, y, z`` into the
CCF's axis order (AP, DV, LR) as the header says, and reads such a file as
``space="ccf", unit="um"`` (MouseLight places CCFv2.5 and CCFv3 neurons in the
same 10 µm CCF frame; the two versions differ in their annotation, not their
axes). The description names axes, not directions: no axis is flipped (the
nodes' own ``allenId`` confirm it for AA1506). An ``annotationSpace`` atlasreg
does not know is an error naming it; a file written by atlasreg records its space
exactly and is read as written.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, OutputExistsError
from ..spaces import Space, anatomical_axis, opposite_side, side_letter
from .neuron import Neuron, NeuronList, make_space, validate_structure

#: CCF versions MouseLight exports in (their coordinates are the CCF's, in µm).
_CCF_VERSIONS = ("ccfv3", "ccfv2.5")

_SAMPLE_KEYS = ("sampleNumber", "structureIdentifier", "x", "y", "z", "radius", "parentNumber")


def ccf_axes(annotation_space, path=None, unknown: str = "raise") -> tuple[int, int, int] | None:
    """Which file axis holds each CCF axis, from a MouseLight ``annotationSpace``.

    Returns ``perm`` with ``ccf_points = file_xyz[:, perm]`` (CCF axes: AP, DV,
    LR); None for a file atlasreg wrote (its coordinates are in its recorded
    space as written), and for a space atlasreg does not know when
    ``unknown="keep"`` (otherwise that is an :class:`InputError` naming it).

    Examples
    --------
    >>> ccf_axes({"version": 2.5, "description": "Annotation Space: CCFv2.5 (ML legacy) Axes> "
    ...           "Z: Anterior-Posterior; Y: Inferior-Superior; X:Left-Right"})
    (2, 1, 0)
    """
    if isinstance(annotation_space, dict) and "space" in annotation_space and "unit" in annotation_space:
        return None  # atlasreg's own record: coordinates are in that space as written
    desc = annotation_space.get("description") if isinstance(annotation_space, dict) else None
    text = str(desc) if desc is not None else json.dumps(annotation_space)
    key = re.sub(r"\s+", "", text.lower())
    if not any(v in key for v in _CCF_VERSIONS):
        if unknown == "keep":
            return None
        raise InputError(f"unknown MouseLight annotationSpace {text!r}: atlasreg reads the CCFv3 and "
                         "'CCFv2.5 (ML legacy)' exports; for other coordinates state the space and unit",
                         path=path, field="annotationSpace")
    _, sep, axes_text = text.partition("Axes>")
    if not sep:
        if "ccfv3" in key:  # the CCFv3 export's order is the CCF's own (X AP, Y DV, Z LR)
            return (0, 1, 2)
        raise InputError(f"MouseLight annotationSpace {text!r} does not say which axis is which "
                         "('Axes> X: ...; Y: ...; Z: ...'), and only CCFv3 exports have a known order",
                         path=path, field="annotationSpace")
    perm = [-1, -1, -1]
    for letter, a, b in re.findall(r"([XYZ])\s*:\s*([A-Za-z]+)\s*-\s*([A-Za-z]+)", axes_text):
        sa, sb = side_letter(a), side_letter(b)
        ccf = anatomical_axis(sa) if sa is not None and sb == opposite_side(sa) else None  # CCF axes: AP, DV, LR
        if ccf is None or perm[ccf] != -1:
            raise InputError(f"MouseLight annotationSpace {text!r}: cannot read axis {letter}: {a}-{b}",
                             path=path, field="annotationSpace")
        perm[ccf] = "XYZ".index(letter)
    if sorted(perm) != [0, 1, 2]:
        raise InputError(f"MouseLight annotationSpace {text!r} does not name all three axes X, Y, Z once each",
                         path=path, field="annotationSpace")
    return tuple(perm)


def _tree_frame(samples, where: str, path) -> pd.DataFrame:
    if not isinstance(samples, list):
        raise InputError(f"{where} must be a list of samples", path=path, field=where)
    if not samples:
        return pd.DataFrame(columns=[*_SAMPLE_KEYS, "allenId"])
    df = pd.DataFrame(samples)
    missing = [k for k in _SAMPLE_KEYS if k not in df.columns]
    if missing:
        raise InputError(f"{where}: samples lack key(s) {missing}", path=path, field=missing[0])
    for k in _SAMPLE_KEYS:
        v = pd.to_numeric(df[k], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(v)
        if k in ("sampleNumber", "structureIdentifier", "parentNumber"):
            bad |= v != np.round(v)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise InputError(f"{where}[{r}] (sampleNumber {samples[r].get('sampleNumber')!r}): {k} = "
                             f"{samples[r].get(k)!r} is not a valid number", path=path, field=k)
        df[k] = v
    return df


def _neuron_from_entry(entry: dict, idx: int, space: Space, path, perm=None) -> Neuron:
    if not isinstance(entry, dict):
        raise InputError(f"neurons[{idx}] is not an object", path=path)
    name = str(entry.get("idString") or entry.get("id") or f"neuron{idx}")
    ax = _tree_frame(entry.get("axon", []), f"neurons[{idx}].axon", path)
    de = _tree_frame(entry.get("dendrite", []), f"neurons[{idx}].dendrite", path)
    parts = []
    soma_id = None
    if len(ax):
        a_ids = ax["sampleNumber"].to_numpy(np.int64)
        a_par = np.where(ax["parentNumber"].to_numpy() < 0, -1, ax["parentNumber"].to_numpy()).astype(np.int64)
        validate_structure(a_ids, a_par, f"{path} neurons[{idx}].axon")
        parts.append(pd.DataFrame({"id": a_ids, "type": ax["structureIdentifier"].to_numpy(np.int64),
                                   "x": ax["x"].to_numpy(), "y": ax["y"].to_numpy(), "z": ax["z"].to_numpy(),
                                   "radius": ax["radius"].to_numpy(), "parent": a_par,
                                   "allen_id": pd.to_numeric(ax.get("allenId", pd.Series([np.nan] * len(ax))),
                                                             errors="coerce").to_numpy(np.float64)}))
        soma = np.flatnonzero((a_par < 0) & (ax["structureIdentifier"].to_numpy() == 1))
        soma_id = int(a_ids[soma[0]]) if soma.size else None
    if len(de):
        d_ids = de["sampleNumber"].to_numpy(np.int64)
        d_par = np.where(de["parentNumber"].to_numpy() < 0, -1, de["parentNumber"].to_numpy()).astype(np.int64)
        validate_structure(d_ids, d_par, f"{path} neurons[{idx}].dendrite")
        d_type = de["structureIdentifier"].to_numpy(np.int64)
        offset = int(parts[0]["id"].max()) if parts else 0
        keep = np.ones(len(de), bool)
        new_par = np.where(d_par >= 0, d_par + offset, -1)
        if soma_id is not None:
            dsoma = np.flatnonzero((d_par < 0) & (d_type == 1))
            if dsoma.size:
                # The dendrite tree repeats the soma: drop it, hang its children from the axon's soma.
                keep[dsoma[0]] = False
                new_par = np.where(d_par == d_ids[dsoma[0]], soma_id, new_par)
        parts.append(pd.DataFrame({"id": d_ids[keep] + offset, "type": d_type[keep],
                                   "x": de["x"].to_numpy()[keep], "y": de["y"].to_numpy()[keep],
                                   "z": de["z"].to_numpy()[keep], "radius": de["radius"].to_numpy()[keep],
                                   "parent": new_par[keep],
                                   "allen_id": pd.to_numeric(de.get("allenId", pd.Series([np.nan] * len(de))),
                                                             errors="coerce").to_numpy(np.float64)[keep]}))
    if not parts:
        s = entry.get("soma")
        if not isinstance(s, dict) or not all(k in s for k in "xyz"):
            raise InputError(f"neurons[{idx}] ({name}) has no axon, dendrite or soma", path=path)
        parts.append(pd.DataFrame({"id": [1], "type": [1], "x": [float(s["x"])], "y": [float(s["y"])],
                                   "z": [float(s["z"])], "radius": [1.0], "parent": [-1],
                                   "allen_id": [float(s.get("allenId") or np.nan)]}))
    nodes = pd.concat(parts, ignore_index=True)
    if perm is not None and tuple(perm) != (0, 1, 2):
        xyz = nodes[["x", "y", "z"]].to_numpy()[:, list(perm)]
        nodes["x"], nodes["y"], nodes["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if nodes["allen_id"].isna().all():
        nodes = nodes.drop(columns="allen_id")
    prov = {"format": "mouselight", "source_file": str(Path(path).resolve()), "source_space": space.name,
            "source_unit": space.unit, "source_orientation": space.orientation, "voxel_size": None,
            "transforms": []}
    if perm is not None:
        prov["source_axes"] = "".join("xyz"[a] for a in perm)  # file axes taken as the space's axes 0, 1, 2
        a_space = entry.get("annotationSpace")
        desc = a_space.get("description") if isinstance(a_space, dict) else a_space
        if isinstance(desc, str):
            prov["annotation_space"] = desc
    for k in ("DOI", "idString"):
        if isinstance(entry.get(k), str):
            prov[k] = entry[k]
    return Neuron(nodes, space, name=name, provenance=prov, source=f"{path} neurons[{idx}]")


def read_mouselight(path, space: Space | str | None = None, unit: str | None = None,
                    orientation: str | None = None) -> NeuronList:
    """Read a MouseLight JSON file into a :class:`NeuronList`.

    Examples
    --------
    >>> nl = read_mouselight("AA0001.json", space="ccf", unit="um", orientation="asr")  # doctest: +SKIP
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("MouseLight JSON file not found", path=p)
    try:
        data = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a JSON file: {exc}", path=p) from None
    if isinstance(data, dict) and "neuron" in data and "neurons" not in data:
        data = {"neurons": [data["neuron"]]}
    if not isinstance(data, dict) or not isinstance(data.get("neurons"), list):
        raise InputError("a MouseLight file is an object with a 'neurons' list", path=p, field="neurons")
    entries = data["neurons"]
    # The header's axes are honoured whatever space is stated; an unknown annotationSpace is an error
    # unless the caller states the space and unit of the numbers.
    stated = space is not None and unit is not None
    perms = [ccf_axes(e["annotationSpace"], p, unknown="keep" if stated else "raise")
             if isinstance(e, dict) and e.get("annotationSpace") is not None else None for e in entries]
    if space is None and unit is None:
        ours = [e["annotationSpace"] for e, q in zip(entries, perms)
                if q is None and isinstance(e, dict) and isinstance(e.get("annotationSpace"), dict)]
        if ours:  # written by atlasreg: the space is recorded exactly
            space, unit = ours[0]["space"], ours[0]["unit"]
            orientation = orientation if orientation is not None else ours[0].get("orientation")
        elif any(q is not None for q in perms):  # Janelia's export: CCF micrometres, axes as the header says
            space, unit = "ccf", "um"
    sp = make_space(space, unit, orientation, what=f"MouseLight file {p.name}")
    return NeuronList(_neuron_from_entry(e, i, sp, p, q) for i, (e, q) in enumerate(zip(entries, perms)))


def _branch_heads(prow: np.ndarray, soma: int) -> np.ndarray:
    """For each row, its ancestor whose parent is the soma (itself if it is one; roots map to themselves)."""
    n = len(prow)
    jump = np.where((prow >= 0) & (prow != soma), prow, np.arange(n))
    for _ in range(int(np.ceil(np.log2(max(n, 2)))) + 1):
        jump = jump[jump]
    return jump


def _samples(nodes: pd.DataFrame, rows: np.ndarray, prow: np.ndarray) -> list[dict]:
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return []
    number = np.full(len(nodes), -1, dtype=np.int64)
    number[rows] = np.arange(1, len(rows) + 1)
    pr = prow[rows]
    pnum = np.where(pr >= 0, number[np.maximum(pr, 0)], -1)
    df = pd.DataFrame({"sampleNumber": number[rows], "structureIdentifier": nodes["type"].to_numpy()[rows],
                       "x": nodes["x"].to_numpy()[rows], "y": nodes["y"].to_numpy()[rows],
                       "z": nodes["z"].to_numpy()[rows], "radius": nodes["radius"].to_numpy()[rows],
                       "parentNumber": pnum})
    out = df.to_dict(orient="records")
    if "allen_id" in nodes.columns:
        aid = nodes["allen_id"].to_numpy(np.float64)[rows]
        for s, a in zip(out, aid):
            if np.isfinite(a):
                s["allenId"] = int(a)
    # Plain Python numbers for json.
    return [{k: (int(v) if k in ("sampleNumber", "structureIdentifier", "parentNumber") else float(v))
             if k != "allenId" else v for k, v in s.items()} for s in out]


def write_mouselight(neurons, path, force: bool = False) -> Path:
    """Write one neuron or a collection as MouseLight JSON (coordinates in the neurons' space and unit)."""
    p = Path(path)
    if p.exists() and not force:
        raise OutputExistsError(f"{p} exists; pass force=True to overwrite")
    items = [neurons] if isinstance(neurons, Neuron) else list(neurons)
    entries = []
    for n in items:
        nodes = n.nodes
        prow = n.parent_index()
        soma = n.soma_row
        heads = _branch_heads(prow, soma)
        htype = nodes["type"].to_numpy()[heads]
        is_d = np.isin(htype, (3, 4)) & (np.arange(len(nodes)) != soma) & (prow[heads] == soma)
        axon_rows = np.concatenate([[soma], np.flatnonzero(~is_d & (np.arange(len(nodes)) != soma))])
        den_rows = np.concatenate([[soma], np.flatnonzero(is_d)]) if is_d.any() else np.array([], np.int64)
        sp = n.points[soma]
        entries.append({"idString": n.name,
                        "annotationSpace": {"space": n.space.name, "unit": n.space.unit,
                                            "orientation": n.space.orientation},
                        "soma": {"x": float(sp[0]), "y": float(sp[1]), "z": float(sp[2])},
                        "axon": _samples(nodes, axon_rows, prow),
                        "dendrite": _samples(nodes, den_rows, prow)})
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"neurons": entries}))
    return p
