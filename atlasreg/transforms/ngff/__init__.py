"""OME-NGFF 0.6 coordinate transformations: scenes read in any dimension, atlasreg transforms read and written.

* :mod:`.nd` — every transformation type of the specification, N-D, applied to points.
* :mod:`.scene` — coordinate systems (with their image ``path``) and the transformations between them.
* :mod:`.read` / :mod:`.write` — atlasreg's 3-D :class:`~atlasreg.transforms.base.Transform` objects from and to
  NGFF (``save_transform(T, "x.json")`` / ``load_transform``).
* :mod:`.units` — the specification's units and atlasreg's nm / µm / mm.
* :mod:`.store` — every ``path`` kept inside its hierarchy; arrays checked before reading.
"""
from __future__ import annotations

import numpy as np

from .nd import Bijection, Field, NDTransform, NotInvertible, parse
from .read import read_ngff, scene_graph, space_from_system
from .scene import Scene, read_scene
from .write import AXIS_NAMES, NGFF_VERSION, coordinate_system, fields_store_name, scene_document, write_ngff


def apply_points(path, source: str, target: str, points) -> tuple[np.ndarray, str | None]:
    """Map ``points`` from coordinate system ``source`` to ``target`` of the NGFF hierarchy at ``path``.

    Returns the mapped points and a note (e.g. a field interpolated other than the file asks), or None.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.json"
    >>> _ = p.write_text(json.dumps({"ome": {"version": "0.6rc0", "scene": {"coordinateTransformations": [
    ...     {"type": "scale", "scale": [10, 20], "input": {"name": "in"}, "output": {"name": "out"}}]}}}))
    >>> apply_points(p, "out", "in", [[10, 40]])[0]
    array([[1., 2.]])
    """
    from ...errors import InputError

    try:
        pts = np.asarray(points, dtype=float)
    except (TypeError, ValueError):
        raise InputError("points must be a list of equal-length lists of numbers", field="coordinates") from None
    if pts.ndim != 2 or pts.shape[1] == 0:
        raise InputError(f"points must be a list of D-length lists, got shape {pts.shape}", field="coordinates")
    scene = read_scene(path)
    T = scene.transform(source, target)
    out = T.apply(pts) if pts.size else np.zeros((0, pts.shape[1]))
    notes = sorted({t.note for t in _leaves(T) if isinstance(t, Field) and t.note})
    return out, ("; ".join(notes) or None)


def _leaves(T):
    for attr in ("items",):
        for it in getattr(T, attr, []) or []:
            yield from _leaves(it[0] if isinstance(it, tuple) else it)
    if isinstance(T, Bijection):
        subs = T.parsed_halves()  # only what was used: looking for notes reads no array
    else:
        subs = [getattr(T, "forward", None)]
    for sub in subs:
        if isinstance(sub, NDTransform):
            yield from _leaves(sub)
    yield T


__all__ = ["apply_points", "read_scene", "Scene", "scene_graph", "read_ngff", "write_ngff", "scene_document",
           "coordinate_system", "space_from_system", "fields_store_name", "parse", "NDTransform", "NotInvertible",
           "NGFF_VERSION", "AXIS_NAMES"]
