"""A neuroglancer state that opens registered layers together: EM block, light-sheet, atlas regions, points.

The layers are neuroglancer precomputed datasets (written with
:func:`atlasreg.io.precomputed.write_precomputed` and
:func:`atlasreg.tracings.write_precomputed_points`, or published ones such as
``precomputed://gs://h01-release/...``). Local folders must be served over HTTP
for a browser to open them: give ``base_url`` (where ``root`` is served, e.g.
``npx http-server --cors -p 8000 out/`` or ``python -m http.server`` behind a CORS
proxy) and every source becomes ``precomputed://<base_url>/<path under root>``.

Layer types come from each dataset's ``info`` (``image``, ``segmentation`` —
whose segment properties give region names in the viewer — or annotations).
All volume layers must record the same atlasreg space (one view, one frame):
warp first otherwise. A volume whose exact origin (``info["atlasreg"]``) is
not on its integer ``voxel_offset`` gets a source transform with the remainder,
so every layer sits where atlasreg places it.

The JSON follows neuroglancer's viewer state (``dimensions``, ``position``,
``layers`` with ``type``/``source``/``name``, ``layout``); the tests parse it with
neuroglancer's own ``ViewerState``.

Examples
--------
>>> state = neuroglancer_state([("EM", "out/em"), ("light-sheet", "out/lm"), ("atlas", "out/atlas")],
...                            root="out", base_url="http://localhost:8000")          # doctest: +SKIP
>>> write_neuroglancer_state(state, "out/view.json")                                  # doctest: +SKIP
>>> neuroglancer_url(state)[:40]                                                       # doctest: +SKIP
'https://neuroglancer-demo.appspot.com/#!'
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.precomputed import precomputed_source, read_precomputed_info

__all__ = ["neuroglancer_state", "write_neuroglancer_state", "neuroglancer_url"]

DEFAULT_VIEWER = "https://neuroglancer-demo.appspot.com"
_LAYER_TYPES = ("image", "segmentation", "annotation")


def _layer_source(path, root: Path | None, base_url: str | None):
    """(URL neuroglancer opens, PrecomputedSource atlasreg reads) of one layer."""
    s = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    src = precomputed_source(s)
    if src is None and isinstance(s, str) and Path(s).is_dir() and (Path(s) / "info").is_file():
        src = precomputed_source("precomputed://" + Path(s).absolute().as_uri())
    if src is None:
        raise InputError("not a neuroglancer precomputed dataset (a folder with an 'info' file, or a "
                         "precomputed:// URL)", path=path, field="layers")
    if src.local is None:
        return "precomputed://" + src.url.rstrip("/"), src
    if base_url is None or root is None:
        raise InputError("a local folder needs base_url= and root= (where root is served over HTTP): a browser "
                         "cannot open file:// sources", path=src.local, field="base_url")
    try:
        rel = src.local.resolve().relative_to(Path(root).resolve())
    except ValueError:
        raise InputError(f"is not inside root {root}; the server at {base_url} cannot serve it", path=src.local,
                         field="root") from None
    return f"precomputed://{base_url.rstrip('/')}/{rel.as_posix()}", src


def neuroglancer_state(layers, *, root=None, base_url: str | None = None, position=None,
                       layout: str = "4panel") -> dict:
    """Build a neuroglancer viewer state (a JSON-ready dict) showing precomputed layers in one view.

    Parameters
    ----------
    layers : list
        ``(name, path)`` pairs (or dicts with ``name``, ``source`` and optionally ``type``); ``path`` is a local
        precomputed folder or a ``precomputed://`` URL. The first local volume layer sets the view's voxel
        dimensions and its centre the starting position. A remote layer given with its ``type`` is put in
        as it is (its info is not fetched); without a type, its info is read to find it.
    root : path, optional
        The folder ``base_url`` serves; local layers must lie inside it.
    base_url : str, optional
        HTTP(S) address of ``root`` (required when any layer is a local folder).
    position : 3 floats, optional
        Starting position in nm (default: the centre of the first volume).
    layout : str
        Neuroglancer layout (``"4panel"``, ``"xy"``, ``"3d"``, ...).

    Returns
    -------
    dict
        ``{"dimensions", "position", "layers", "layout", ...}`` as neuroglancer reads it.

    Raises
    ------
    InputError
        No layers, a duplicate name, a folder that is not precomputed or not under ``root``, volume layers in
        different atlasreg spaces.
    """
    if not layers:
        raise InputError("give at least one layer", field="layers")
    out, names, spaces, first = [], set(), {}, None
    for item in layers:
        if isinstance(item, dict):
            name, path, kind = item.get("name"), item.get("source"), item.get("type")
        else:
            try:
                name, path = item
            except (TypeError, ValueError):
                raise InputError(f"each layer is (name, path) or a dict, got {item!r}", field="layers") from None
            kind = None
        if not isinstance(name, str) or not name:
            raise InputError(f"layer name must be a non-empty string, got {name!r}", field="layers")
        if name in names:
            raise InputError(f"two layers are named {name!r}", field="layers")
        names.add(name)
        url, src = _layer_source(path, root, base_url)
        if src.local is None and kind is not None:
            if kind not in _LAYER_TYPES:
                raise InputError(f"layer type must be one of {_LAYER_TYPES}, got {kind!r}", field="layers")
            out.append({"type": kind, "source": url, "name": name})  # a published dataset: not fetched here
            continue
        info = read_precomputed_info(src)
        found = "annotation" if info.get("@type") == "neuroglancer_annotations_v1" else \
            info.get("type") if info.get("type") in ("image", "segmentation") else None
        if found is None:
            raise InputError("its info is neither a volume (type image / segmentation) nor annotations", path=path,
                             field="layers")
        if kind is not None and kind != found:
            raise InputError(f"layer {name!r} was given type {kind!r} but the dataset is {found!r}", path=path,
                             field="layers")
        layer = {"type": found, "source": url, "name": name}
        if found != "annotation":
            note = info.get("atlasreg") if isinstance(info.get("atlasreg"), dict) else {}
            if note.get("space"):
                spaces[name] = (note["space"], note.get("unit"))
            scale = info["scales"][0]
            res = np.asarray(scale["resolution"], float)
            off = np.asarray(scale.get("voxel_offset", [0, 0, 0]), float)
            shift = np.zeros(3)
            exact = note.get("origin_nm")
            if isinstance(exact, list) and len(exact) == 3 and all(isinstance(v, (int, float)) for v in exact):
                shift = (np.asarray(exact, float) - (off + 0.5) * res) / res   # in voxels of the source
                if np.any(np.abs(shift) > 1e-9):
                    layer["source"] = {"url": url, "transform": {
                        "outputDimensions": {a: [float(r) * 1e-9, "m"] for a, r in zip("xyz", res)},
                        "matrix": [[1.0 if i == j else 0.0 for j in range(3)] + [float(shift[i])] for i in range(3)]}}
            if found == "segmentation":
                layer["segments"] = []
            if first is None:
                first = (res, off + shift, np.asarray(scale["size"], float))
        out.append(layer)
    if len({s for s in spaces.values()}) > 1:
        listing = ", ".join(f"{n}: {s[0]} [{s[1]}]" for n, s in spaces.items())
        raise InputError(f"the layers are in different spaces ({listing}); one view needs one frame: warp them "
                         "into one space first", field="layers")
    state = {"layers": out, "layout": layout, "showSlices": True}
    if first is not None:
        res, off, size = first
        state["dimensions"] = {a: [float(r) * 1e-9, "m"] for a, r in zip("xyz", res)}
        if position is None:
            pos = off + size / 2              # the first volume's centre, in its voxels (corner frame)
        else:
            pos = np.asarray(position, float).reshape(3) / res
        state["position"] = [float(v) for v in pos]
        state["crossSectionScale"] = 1.0
        state["projectionScale"] = float(np.max(size * res) / res.min())
    else:
        state["dimensions"] = {a: [1e-9, "m"] for a in "xyz"}
        if position is not None:
            state["position"] = [float(v) for v in np.asarray(position, float).reshape(3)]
    return state


def write_neuroglancer_state(state: dict, path, force: bool = False) -> Path:
    """Write a state as JSON (atomically); open it with neuroglancer's "Upload JSON" or :func:`neuroglancer_url`.

    >>> write_neuroglancer_state(state, "view.json")               # doctest: +SKIP
    PosixPath('view.json')
    """
    from ..io.atomic import atomic_path, check_writable

    if not isinstance(state, dict) or "layers" not in state:
        raise InputError("state must be a dict from neuroglancer_state()", field="state")
    p = check_writable(Path(path).expanduser(), force)
    with atomic_path(p, force, suffix=".json") as tmp:
        tmp.write_text(json.dumps(state, indent=1))
    return p


def neuroglancer_url(state: dict, viewer: str = DEFAULT_VIEWER) -> str:
    """A link that opens the state in a neuroglancer web viewer (the state is in the link's fragment).

    >>> neuroglancer_url({"layers": []}, "https://example.org")
    'https://example.org/#!%7B%22layers%22%3A%5B%5D%7D'
    """
    from urllib.parse import quote

    return viewer.rstrip("/") + "/#!" + quote(json.dumps(state, separators=(",", ":")), safe="")
