"""``atlasreg query``: which atlas region (and hemisphere) each point of a table is in."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._app import app, output_option, run_cli, say, voxel_size_option
from .atlas import load_atlas

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
    """Add region_id, acronym and hemisphere columns to a table of points (atlasreg.tracings.annotate_table).

    region_id 0 means inside the atlas volume but on no structure (acronym "(none)"); -1 means
    outside the volume or a missing coordinate ("(outside)"). hemisphere: 1 left, 2 right, 0
    unassigned, -1 outside. With --level, rollup_id and rollup_acronym are the ancestors at that
    depth. The table is the one annotate_table returns from Python.

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
    from ..tracings import annotate_table

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
        table[cols].to_numpy(dtype=float)
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
    out_t = annotate_table(table, a, space=sp, columns=tuple(cols), level=level, graph=graph,
                           nearest_within=nearest_within)
    with atomic_path(out, force, suffix=".csv") as tmp:
        out_t.to_csv(tmp, index=False)
    ids = out_t["region_id"].to_numpy()
    say(f"{int(np.sum(ids > 0))} of {len(ids)} points in a structure, {int(np.sum(ids == 0))} on none, "
        f"{int(np.sum(ids == -1))} outside the atlas -> {out}", err=True)
