"""Out-of-core and cluster verbs: ``atlasreg warp-big``, ``points-big``, ``field invert`` and ``field compose``.

Each runs on dask's local threaded scheduler, or on a dask.distributed cluster
with ``--scheduler tcp://HOST:PORT``. Outputs appear only when complete; an
interrupted run picks up where it stopped (``--restart`` starts afresh).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._app import app, output_option, run_cli, say, voxel_size_option

field_app = typer.Typer(help="Displacement fields larger than memory: invert, compose (blockwise).",
                        no_args_is_help=True)
app.add_typer(field_app, name="field")

_SCHEDULER_HELP = ("Where blocks run: 'threads' (default, this machine), 'sync', 'processes', or a "
                   "dask.distributed scheduler address such as tcp://10.0.0.5:8786 (outputs must then be on "
                   "storage every worker sees).")


_FILL_HELP = ("What nodes get where the result is unknown (e.g. no inverse: the preimage is off the field's grid): "
              "by default they stay NaN, so points near them map to NaN and the field cannot be saved as an ITK "
              "or NIfTI file; 'zero' or a number writes that displacement there knowingly (counted in the "
              "output's metadata).")


def _fill(value: Optional[str]):
    """--fill as the library's ``fill``: None, 'zero' or a number (anything else goes through, to be refused)."""
    if value is None or value == "zero":
        return value
    try:
        return float(value)
    except ValueError:
        return value


def _graph(transforms: List[Path]):
    from ..errors import InputError
    from ..graph import SpaceGraph
    from ..transforms.files import load_transform

    if not transforms:
        raise InputError("give at least one --transform", field="--transform")
    return SpaceGraph([_load_one(p, load_transform) for p in transforms])


def _load_one(path: Path, load_transform):
    if str(path).endswith(".zarr"):
        from ..distributed import open_field

        return open_field(path)
    return load_transform(path)


@app.command("warp-big")
@run_cli
def warp_big(
    moving: str = typer.Argument(..., help="Volume to warp (OME-Zarr, HDF5 and neuroglancer precomputed - a "
                                 "folder or precomputed://... - are read lazily, block by block)."),
    reference: str = typer.Argument(..., help="Volume whose grid the output takes (only its geometry is read)."),
    out: Path = output_option("Output .ome.zarr (multiscale, written blockwise)."),
    transform: List[Path] = typer.Option(..., "--transform", "-t",
                                         help="Transform file(s) linking the two spaces, either direction "
                                              "(repeatable; chained through the spaces they record)."),
    moving_space: Optional[str] = typer.Option(None, "--moving-space", help="Space of MOVING (default: recorded)."),
    reference_space: Optional[str] = typer.Option(None, "--reference-space",
                                                  help="Space of REFERENCE (default: recorded)."),
    voxel_size: Optional[str] = voxel_size_option("Voxel size of MOVING if the file has none."),
    interpolation: str = typer.Option("auto", "--interpolation", help="auto (nearest for labels: bool, 32/64-bit "
                                                                      "integers), linear, nearest."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Output dtype (default: float32 for linear, the "
                                                              "input's for nearest)."),
    chunks: int = typer.Option(128, "--chunks", help="Output chunk edge (voxels, even)."),
    levels: Optional[int] = typer.Option(None, "--levels", help="Pyramid levels (default: until one chunk)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=_SCHEDULER_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", help="Threads for the local scheduler."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    restart: bool = typer.Option(False, "--restart", help="Ignore an interrupted earlier run; start afresh."),
) -> None:
    """Warp a volume larger than memory into a reference grid, writing a multiscale OME-Zarr block by block.

    Examples:

      atlasreg warp-big brain.ome.zarr atlas_25um.nii.gz -t sample_to_ccf.json -o brain_ccf.ome.zarr

      atlasreg warp-big brain.h5 atlas.nii.gz -t reg.h5 -o out.ome.zarr --scheduler tcp://10.0.0.5:8786
    """
    from ..distributed import warp_blockwise
    from ..io.volumes import read_volume

    graph = _graph(transform)
    vol = read_volume(moving, voxel_size=voxel_size, space=moving_space)
    ref = read_volume(reference, space=reference_space)
    res = warp_blockwise(vol, graph, ref.grid, out, interpolation=interpolation, dtype=dtype, chunks=chunks,
                         levels=levels, scheduler=scheduler, num_workers=workers, overwrite=force,
                         resume=not restart)
    say(f"{out}: {res.grid.shape} voxels, {res.levels} levels, {res.computed} blocks computed"
               + (f", {res.skipped} kept from the interrupted run" if res.skipped else "")
               + f" in {res.seconds:.1f} s", err=True)


@app.command("points-big")
@run_cli
def points_big(
    table: Path = typer.Argument(..., help="Points: .parquet, .csv(.gz) or .zarr."),
    out: Path = output_option("Output .parquet, .csv(.gz) or .zarr."),
    transform: List[Path] = typer.Option(..., "--transform", "-t", help="Transform file(s) (repeatable)."),
    src: str = typer.Option(..., "--src", help="Space the points are in."),
    dst: str = typer.Option(..., "--dst", help="Space to map them into."),
    columns: str = typer.Option("x,y,z", "--columns", help="The three coordinate columns."),
    out_columns: Optional[str] = typer.Option(None, "--out-columns",
                                              help="Names for the mapped coordinates (default: replace)."),
    atlas: Optional[str] = typer.Option(None, "--atlas", help="Add the region id of each mapped point from this "
                                                              "atlas (its space must be --dst)."),
    chunk_size: int = typer.Option(1_000_000, "--chunk-size", help="Rows per task (Parquet: per row group)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=_SCHEDULER_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", help="Threads for the local scheduler."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    restart: bool = typer.Option(False, "--restart", help="Ignore an interrupted earlier run; start afresh."),
) -> None:
    """Map (and annotate) hundreds of millions of points, chunk by chunk, in bounded memory.

    Examples:

      atlasreg points-big cells.parquet -t sample_to_ccf.json --src sample --dst ccf --atlas allen_mouse_25um -o cells_ccf.parquet

      atlasreg points-big synapses.csv -t em_to_ccf.json --src em --dst ccf -o out.zarr --scheduler tcp://10.0.0.5:8786
    """
    from ..distributed import map_points_file
    from ..errors import InputError

    cols = [c.strip() for c in columns.split(",") if c.strip()]
    outs = None if out_columns is None else [c.strip() for c in out_columns.split(",") if c.strip()]
    graph = _graph(transform)
    annot = None
    if atlas is not None:
        from .atlas import load_atlas

        annot = load_atlas(atlas)
        if annot.space.name != dst:
            raise InputError(f"the atlas is in space {annot.space.name!r}, the points go to {dst!r}",
                             field="--atlas")
    res = map_points_file(table, out, graph, src=src, dst=dst, columns=cols, out_columns=outs, annotate=annot,
                          chunk_size=chunk_size, scheduler=scheduler, num_workers=workers, overwrite=force,
                          resume=not restart)
    rows = f"{res.rows} points" if res.rows >= 0 else "points"
    say(f"{out}: {rows} mapped in {res.computed} chunks"
               + (f" ({res.skipped} kept from the interrupted run)" if res.skipped else "")
               + f" in {res.seconds:.1f} s", err=True)


@field_app.command("invert")
@run_cli
def field_invert(
    field: Path = typer.Argument(..., help="Displacement field: atlasreg .zarr field, or a transform file "
                                           "holding one (e.g. an ITK .nii.gz warp)."),
    out: Path = output_option("Output .zarr field (the inverse)."),
    chunks: int = typer.Option(64, "--chunks", help="Nodes per block edge."),
    fill: Optional[str] = typer.Option(None, "--fill", help=_FILL_HELP),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=_SCHEDULER_HELP),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    restart: bool = typer.Option(False, "--restart", help="Ignore an interrupted earlier run; start afresh."),
) -> None:
    """Invert a displacement field block by block (Newton's method per node).

    Nodes without an inverse stay NaN unless --fill zero (or a number) is given.

    Example: atlasreg field invert sample_to_ccf_warp.zarr -o ccf_to_sample_warp.zarr
    """
    from ..distributed import ChunkedDisplacementField, invert_field
    from ..errors import InputError
    from ..transforms.field import DisplacementField
    from ..transforms.files import load_transform

    f = _load_one(field, load_transform)
    if not isinstance(f, (DisplacementField, ChunkedDisplacementField)):
        raise InputError(f"holds a {type(f).__name__}, not a displacement field", path=field)
    inv = invert_field(f, out, chunks=chunks, fill=_fill(fill), scheduler=scheduler, overwrite=force,
                       resume=not restart)
    say(f"{out}: inverse field {inv.src.name} -> {inv.dst.name}, {inv.shape} nodes" + _unknown_note(inv), err=True)


@field_app.command("compose")
@run_cli
def field_compose(
    transform: List[Path] = typer.Option(..., "--transform", "-t", help="Transforms in the order applied "
                                                                           "(repeatable)."),
    like: Path = typer.Option(..., "--like", help="Grid of the result: an atlasreg .zarr field or a volume in the "
                                                  "first transform's source space."),
    out: Path = output_option("Output .zarr field."),
    chunks: int = typer.Option(64, "--chunks", help="Nodes per block edge."),
    fill: Optional[str] = typer.Option(None, "--fill", help=_FILL_HELP),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=_SCHEDULER_HELP),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    restart: bool = typer.Option(False, "--restart", help="Ignore an interrupted earlier run; start afresh."),
) -> None:
    """Compose a chain of transforms into ONE displacement field, block by block.

    Example: atlasreg field compose -t em_to_lm.json -t lm_to_ccf_warp.zarr --like em_grid.nii.gz -o em_to_ccf.zarr
    """
    from ..distributed import compose_fields
    from ..spaces import Space
    from ..transforms.files import load_transform
    from ..volume import Grid

    steps = [_load_one(p, load_transform) for p in transform]
    if str(like).endswith(".zarr") and (Path(like) / "displacement").exists():
        from ..distributed import open_field

        g = open_field(like)
        grid = Grid(g.shape, tuple(g.spacing), steps[0].src, tuple(g.origin), g.direction)
    else:
        from ..io.volumes import read_volume

        v = read_volume(like, space=steps[0].src.name, unit=steps[0].src.unit)
        grid = Grid(v.shape, tuple(v.voxel_size), Space(steps[0].src.name, steps[0].src.unit), tuple(v.origin),
                    v.direction)
    res = compose_fields(steps, grid, out, chunks=chunks, fill=_fill(fill), scheduler=scheduler, overwrite=force,
                         resume=not restart)
    say(f"{out}: field {res.src.name} -> {res.dst.name}, {res.shape} nodes" + _unknown_note(res), err=True)


def _unknown_note(F) -> str:
    if F.unknown_nodes:
        return f"; {F.unknown_nodes} unknown (NaN; --fill to write a value there)"
    return f"; {F.filled_nodes} filled with --fill" if F.filled_nodes else ""
