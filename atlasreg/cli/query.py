"""``atlasreg query``: which atlas region (and hemisphere) each point of a table is in."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._app import app, output_option, run_cli, say, voxel_size_option
from .atlas import load_atlas

_HEMI = {1: "left", 2: "right", 0: "", -1: ""}


@app.command()
@run_cli
def query(
    points: Path = typer.Argument(..., help="CSV of points (one row each)."),
    atlas: str = typer.Option(..., "--atlas", help="Atlas: manifest name (e.g. allen_mouse_25um), BrainGlobe folder, "
                                                   "or Allen-style folder/npz/annotation file."),
    out: Path = output_option("Output CSV: the input plus region columns."),
    columns: str = typer.Option("x,y,z", "--columns", help="The three coordinate columns, in axis order."),
    space: Optional[str] = typer.Option(None, "--space", help="Space the points are in (default: the atlas's)."),
    unit: Optional[str] = typer.Option(None, "--unit", help="Unit of the coordinates: nm, um or mm "
                                                            "(default: the atlas's, µm)."),
    orientation: Optional[str] = typer.Option(None, "--orientation",
                                              help="Orientation code of the point axes if not the atlas's "
                                                   "(e.g. 'psl'); points are flipped across the atlas volume."),
    transform: Optional[List[Path]] = typer.Option(None, "--transform",
                                                   help="Transform file(s) linking --space to the atlas space "
                                                        "(atlasreg .json/.h5 with recorded spaces; repeatable)."),
    level: Optional[int] = typer.Option(None, "--level", help="Report regions rolled up to this depth of the "
                                                              "structure tree (root = 0)."),
    nearest_within: Optional[float] = typer.Option(None, "--nearest-within",
                                                   help="Points on no structure take the nearest labelled voxel "
                                                        "within this distance (atlas unit)."),
    ontology: Optional[Path] = typer.Option(None, "--ontology", help="Structure CSV/JSON (Allen-style files)."),
    voxel_size: Optional[str] = voxel_size_option("Atlas voxel size for files that don't record it."),
    file_orientation: Optional[str] = typer.Option(None, "--file-orientation",
                                                   help="Orientation code of the atlas arrays as stored."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT."),
) -> None:
    """Add region_id, region_acronym, region_name and hemisphere columns to a table of points.

    region_id 0 means inside the atlas volume but on no structure; -1 means outside the volume
    (or a missing coordinate). With --level, region_* are the ancestors at that depth and
    voxel_region_id keeps the structure of the voxel itself.

    Examples:

      atlasreg query cells.csv --atlas allen_mouse_25um -o cells_regions.csv

      atlasreg query cells_mm.csv --atlas allen_mouse_25um --unit mm --columns ap,dv,lr --level 5 -o out.csv

      atlasreg query cells.csv --space sample --transform sample_to_ccf.json --atlas allen_mouse_25um -o out.csv
    """
    import numpy as np
    import pandas as pd

    from ..errors import InputError
    from ..io.atomic import atomic_path, check_writable
    from ..spaces import Space

    check_writable(out, force)
    try:
        table = pd.read_csv(points)
    except FileNotFoundError:
        raise InputError("points file not found", path=points) from None
    except Exception as exc:
        raise InputError(f"cannot read CSV: {exc}", path=points) from None
    cols = [c.strip() for c in columns.split(",") if c.strip()]
    if len(cols) != 3:
        raise InputError(f"--columns needs three names, got {cols}", field="--columns")
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise InputError(f"columns {missing} not in the table (it has {list(table.columns)}); use --columns",
                         path=points, field="--columns")
    try:
        xyz = table[cols].to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"columns {cols} must be numbers", path=points, field="--columns") from None
    a = load_atlas(atlas, ontology, voxel_size, file_orientation)
    graph = None
    if transform:
        from ..graph import SpaceGraph
        from ..transforms.files import load_transform

        graph = SpaceGraph([load_transform(t) for t in transform])
    sp = None
    if space is not None or unit is not None or orientation is not None:
        name = space or a.space.name
        if graph is not None and name in graph.spaces and unit is None:
            sp = graph.spaces[name]
        else:
            sp = Space(name, unit or a.unit, orientation or (a.orientation if name == a.space.name else None))
    ids = a.region_of(xyz, space=sp, graph=graph, nearest_within=nearest_within)
    hemi = a.hemisphere_of(xyz, space=sp, graph=graph)
    onto = a.ontology
    shown = onto.at_level(ids, level) if level is not None else ids
    out_t = table.copy()
    if level is not None:
        out_t["voxel_region_id"] = ids
    out_t["region_id"] = shown
    out_t["region_acronym"] = onto.acronyms(shown)
    out_t["region_name"] = onto.names(shown)
    out_t["hemisphere"] = [_HEMI.get(int(h), "") for h in hemi]
    with atomic_path(out, force, suffix=".csv") as tmp:
        out_t.to_csv(tmp, index=False)
    placed = int(np.sum(ids > 0))
    say(f"{placed} of {len(ids)} points in a structure, {int(np.sum(ids == 0))} on none, "
               f"{int(np.sum(ids == -1))} outside the atlas -> {out}", err=True)
