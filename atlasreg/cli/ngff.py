"""``atlasreg ngff apply``: map points between coordinate systems of an OME-NGFF 0.6 scene.

It speaks the protocol of the OME-Zarr transformations conformance suite
(``PATH SOURCE TARGET COORDINATES`` in, ``{"coordinates": [...]}`` out).
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from ._app import app, run_cli

ngff_app = typer.Typer(help="OME-NGFF 0.6 coordinate transformations (scenes, multiscales, atlasreg's .json).",
                       no_args_is_help=True)
app.add_typer(ngff_app, name="ngff")


@ngff_app.command("apply")
@run_cli
def apply(
    path: Path = typer.Argument(..., help="OME-Zarr hierarchy (folder), its zarr.json, or an NGFF .json file."),
    source: str = typer.Argument(..., help="Source coordinate system (name, or path/name in a scene)."),
    target: str = typer.Argument(..., help="Target coordinate system."),
    coordinates: str = typer.Argument(..., help="JSON array of points, e.g. '[[1, 2], [3, 4]]'."),
) -> None:
    """Transform points from SOURCE to TARGET and print {"coordinates": [...]} (null where no value exists).

    Example: atlasreg ngff apply scene.ome.zarr tile_1/physical world '[[1, 2]]'
    """
    from ..errors import AtlasregError, InputError
    from ..transforms.ngff import apply_points

    try:
        try:
            pts = json.loads(coordinates)
        except json.JSONDecodeError as exc:
            raise InputError(f"COORDINATES is not JSON: {exc}", field="COORDINATES") from None
        out, note = apply_points(path, source, target, pts)
    except AtlasregError as exc:
        typer.echo(json.dumps({"message": " ".join(str(exc).split())}))
        raise
    reply = {"coordinates": [[None if v != v else v for v in row] for row in out.tolist()]}
    if note:
        reply["message"] = note
    typer.echo(json.dumps(reply))
