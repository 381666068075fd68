"""``atlasreg register`` (a sample onto an atlas), ``atlasreg warp`` and ``atlasreg points`` (reuse a saved result)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._app import app, is_quiet, output_option, run_cli, say, voxel_list, voxel_size_option


def _parse_overrides(items: Optional[List[str]]) -> dict:
    """``--set key=value`` pairs; values parsed as numbers, tuples (``100,70,20``) or words."""
    from ..errors import InputError

    out = {}
    for it in items or []:
        if "=" not in it:
            raise InputError(f"--set takes key=value, got {it!r}", field="--set")
        k, v = it.split("=", 1)
        v = v.strip()

        def num(x):
            try:
                return int(x)
            except ValueError:
                try:
                    return float(x)
                except ValueError:
                    return {"true": True, "false": False}.get(x.lower(), x)

        out[k.strip()] = tuple(num(x) for x in v.split(",") if x.strip()) if "," in v or v == "" else num(v)
    return out


def _parse_position(value: Optional[str]):
    """``--initial-position 6500,4000,5700`` (or the three numbers quoted, space-separated) -> 3 floats."""
    import re

    if value is None:
        return None
    parts = [t for t in re.split(r"[,\s]+", value.strip()) if t]
    try:
        vals = [float(t) for t in parts]
    except ValueError:
        vals = []
    if len(vals) != 3:
        raise typer.BadParameter(f"{value!r}: give three coordinates in µm, one per axis of the fixed image, e.g. "
                                 "6500,4000,5700", param_hint="--initial-position")
    return vals


class _Stages:
    """Progress of the stages: on a terminal a live display (spinner, elapsed time); otherwise (a log file, a
    pipe) the registration logger's one line per stage on stderr. Nothing with -q."""

    def __init__(self, quiet: bool):
        import logging
        import sys

        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.live = not quiet and sys.stderr.isatty()
        self.logger = logging.getLogger("atlasreg.registration")
        self.p = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=False,
                          disable=not self.live, console=Console(stderr=True))
        self.tasks = {}

    def __enter__(self):
        self._level = self.logger.level
        if self.live:  # the live display says it; the log lines would only break it
            self.logger.setLevel(30)
        self.p.__enter__()
        return self

    def __exit__(self, *exc):
        self.logger.setLevel(self._level)
        self.p.__exit__(*exc)

    def __call__(self, stage: str, status: str) -> None:
        if status == "start":
            self.tasks[stage] = self.p.add_task(stage, total=1)
        elif status == "skip":
            self.p.add_task(f"{stage} (resumed: already done)", total=1, completed=1)
        elif status.startswith("level ") and stage in self.tasks:
            self.p.update(self.tasks[stage], description=f"{stage}: {status}")
        elif stage in self.tasks:
            self.p.update(self.tasks[stage], completed=1)


@app.command()
@run_cli
def register(
    sample: Path = typer.Argument(..., help="The sample volume (TIFF stack, NIfTI, NRRD, HDF5, OME-Zarr)."),
    out: Path = output_option("Output folder (transforms, warped sample, QC, metrics)."),
    voxel_size: Optional[str] = voxel_size_option("Sample voxel size per stored axis in µm, e.g. 50 40 40 or "
                                                  "50,40,40 (needed for TIFF)."),
    orientation: str = typer.Option(..., "--orientation",
                                    help="Sample orientation, BrainGlobe origin code per stored axis (e.g. psl: "
                                         "axis 0 starts posterior, 1 superior, 2 left)."),
    atlas: Optional[str] = typer.Option(None, "--atlas", help="Atlas to register to: manifest name (atlasreg atlas "
                                                               "list), BrainGlobe folder, or Allen-style npz/folder."),
    fixed: Optional[Path] = typer.Option(None, "--fixed", help="A fixed image instead of an atlas."),
    fixed_voxel_size: Optional[str] = voxel_size_option("Voxel size of --fixed (µm).", "--fixed-voxel-size"),
    fixed_orientation: Optional[str] = typer.Option(None, "--fixed-orientation", help="Orientation of --fixed."),
    preset: str = typer.Option("lightsheet-to-atlas", "--preset", help="Parameter preset (a row of the table): "
                               "lightsheet-to-atlas, lightsheet-to-lightsheet (pairs imaged alike), fast, affine."),
    backend: str = typer.Option("ants", "--backend", help="ants (affine + SyN) or sitk (affine + B-spline)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a preset key: --set syn_iterations=50,20 "
                                                                 "(repeatable)."),
    orientation_check: str = typer.Option("error", "--orientation-check",
                                          help="error / warn / off: the 48-orientation search that catches a wrong "
                                               "--orientation."),
    extent: str = typer.Option("whole", "--extent",
                               help="What part of the brain the sample covers: whole, hemisphere-left, "
                                    "hemisphere-right, slab (a coronal slab) or auto (decided from the tissue)."),
    initial_transform: Optional[Path] = typer.Option(
        None, "--initial-transform",
        help="Where the sample lies, as a transform file: ITK/ANTs (.mat .tfm .txt .h5: the fixed -> sample "
             "pull-back, as ITK and ANTs write it; numbers in µm) or OME-NGFF .json (its spaces say the "
             "direction). Replaces the automatic initialisation."),
    initial_position: Optional[str] = typer.Option(
        None, "--initial-position", metavar="X,Y,Z",
        help="Where the centre of the sample image lies in the atlas (or --fixed) image, in µm of its frame, "
             "e.g. 6500,4000,5700: for a piece (--extent) the automatic initialisation cannot place."),
    force: bool = typer.Option(False, "--force", help="Overwrite a complete OUTPUT."),
) -> None:
    """Register a whole-brain sample (or part of one: --extent) to an atlas (or a fixed image) and write the result folder.

    A rerun with the same OUTPUT resumes after the last finished stage (OUTPUT/stages).

    Examples:

      atlasreg register brain.tif --voxel-size 50 40 40 --orientation psl --atlas allen_mouse_25um -o reg/

      atlasreg register brain.tif --voxel-size 50 40 40 --orientation psl --atlas atlas.npz --set working_spacing=100 -o reg/

      atlasreg register left_half.tif --voxel-size 50 40 40 --orientation psl --atlas allen_mouse_25um --extent auto -o reg/

      atlasreg register slab.tif --voxel-size 50 40 40 --orientation psl --atlas allen_mouse_25um --extent slab --initial-position 6500,4000,5700 -o reg/

      atlasreg register brain.nii.gz --orientation psl --fixed template.nii.gz --fixed-orientation asr -o reg/
    """
    from .. import read_volume
    from ..errors import InputError, OutputExistsError
    from ..registration import RegistrationResult, register as run
    from ..registration.result import COMPLETE

    if (out / COMPLETE).exists() and not force:
        raise OutputExistsError(f"{out}: holds a complete registration already")
    if (atlas is None) == (fixed is None):
        raise InputError("give exactly one of --atlas or --fixed", field="--atlas")
    overrides = _parse_overrides(set_)
    overrides.setdefault("orientation_search", orientation_check)
    overrides.setdefault("extent", extent)
    position = _parse_position(initial_position)
    moving = read_volume(sample, voxel_size=voxel_list(voxel_size), orientation=orientation,
                         space="sample")
    atlas_obj = None
    if atlas is not None:
        from .atlas import load_atlas

        atlas_obj = load_atlas(atlas)
        fixed_vol = atlas_obj.reference
        if fixed_vol is None:
            raise InputError("this atlas has no reference image to register to", path=atlas, field="--atlas")
        if fixed_vol.orientation is None:
            from ..volume import Volume
            fixed_vol = Volume(fixed_vol.data, fixed_vol.voxel_size, fixed_vol.origin, fixed_vol.direction,
                               space=fixed_vol.space.name, orientation=atlas_obj.orientation)
        fixed_path = atlas
    else:
        fixed_vol = read_volume(fixed, voxel_size=voxel_list(fixed_voxel_size),
                                orientation=fixed_orientation, space="fixed")
        fixed_path = fixed
    with _Stages(is_quiet()) as progress:
        res = run(moving, fixed_vol, preset=preset, backend=backend, workdir=out / "stages", progress=progress,
                  initial_transform=initial_transform, initial_position=position, **overrides)
        inputs = {"sample": sample, "fixed": fixed_path if Path(str(fixed_path)).is_file() else None}
        if atlas_obj is not None:  # an atlas given by name: record the files it was read from
            meta = atlas_obj.metadata
            inputs.update({f"atlas_{role}": p for role, p in (meta.get("files") or {}).items()})
            if isinstance(meta.get("ontology"), (str, Path)):
                inputs["atlas_ontology"] = meta["ontology"]
        res.save(out, moving=moving, fixed=fixed_vol, atlas=atlas_obj, inputs=inputs, force=True,
                 progress=progress)
    m = res.metrics
    say(f"registered in {m.get('seconds', 0):.0f} s; correlation {m.get('ncc_initial')} -> "
               f"{m.get('ncc_after')}; result in {out}")
    assert isinstance(res, RegistrationResult)


def _load_result(result: Path):
    from ..registration import RegistrationResult

    return RegistrationResult.load(result)


@app.command()
@run_cli
def warp(
    result: Path = typer.Argument(..., help="A folder written by atlasreg register."),
    volume: Path = typer.Argument(..., help="The volume to warp (another channel, a label image, ...)."),
    out: Path = output_option("Output volume (.nii.gz, .tif, .h5, .ome.zarr)."),
    to: str = typer.Option("fixed", "--to", help="fixed: a sample-space volume into the atlas grid; moving: an "
                                                 "atlas-space volume (e.g. annotation, any grid of the atlas) onto "
                                                 "the sample grid."),
    voxel_size: Optional[str] = voxel_size_option("Voxel size of VOLUME (µm) for files without one, e.g. 50 40 40."),
    orientation: Optional[str] = typer.Option(None, "--orientation",
                                              help="Orientation code of VOLUME's axes as stored (default: that of "
                                                   "the registration's sample or atlas space), e.g. ras for the "
                                                   "25 µm annotation TIFF; reoriented exactly."),
    interpolation: str = typer.Option("auto", "--interpolation", help="auto (nearest for labels), linear, nearest."),
    anatomical_direction: bool = typer.Option(False, "--anatomical-direction",
                                              help="Write the direction matrix the orientation code states, so "
                                                   "NIfTI viewers name the axes by anatomy (a frame of its own: "
                                                   "for viewing; the saved transforms keep the plain frame)."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT."),
) -> None:
    """Warp a volume with a saved registration, either way.

    Examples:

      atlasreg warp reg/ cfos.tif --voxel-size 50 40 40 -o cfos_in_atlas.nii.gz

      atlasreg warp reg/ ABA_25um_2017_annotation.tif --to moving --voxel-size 25 --orientation ras -o annotation_on_sample.nii.gz
    """
    from .. import write_volume
    from ..errors import InputError
    from ..io.atomic import check_writable

    check_writable(out, force)
    res = _load_result(result)
    if to not in ("fixed", "moving"):
        raise InputError("--to must be 'fixed' or 'moving'", field="--to")
    vol = res.read_input(volume, "moving" if to == "fixed" else "fixed", voxel_size=voxel_list(voxel_size),
                         orientation=orientation)
    w = res.warp(vol, interpolation) if to == "fixed" else res.warp_back(vol, interpolation)
    if anatomical_direction:
        w = w.with_anatomical_direction()
    write_volume(w, out, force=force)
    say(f"wrote {out}")


@app.command()
@run_cli
def points(
    result: Path = typer.Argument(..., help="A folder written by atlasreg register."),
    table: Path = typer.Argument(..., help="CSV of points, physical coordinates (µm) of the source space."),
    out: Path = output_option("Output CSV (input columns replaced by mapped ones)."),
    to: str = typer.Option("fixed", "--to", help="fixed: sample points -> atlas; moving: atlas points -> sample."),
    columns: str = typer.Option("x,y,z", "--columns", help="The three coordinate columns, in axis order."),
    voxels: bool = typer.Option(False, "--voxels", help="Coordinates are voxel indices of the source grid "
                                                        "(converted explicitly; output in the same convention)."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT."),
) -> None:
    """Map a table of points with a saved registration (sample -> atlas by default).

    Examples:

      atlasreg points reg/ cells.csv -o cells_in_atlas.csv

      atlasreg points reg/ cells_voxels.csv --voxels --columns z,y,x -o cells_in_atlas.csv
    """
    from ..io.atomic import check_writable

    check_writable(out, force)
    res = _load_result(result)
    done = res.map_table(table, out, to=to, columns=columns.split(","), voxels=voxels, force=force)
    say(f"mapped {done['points']} points to {done['space']}"
        + (f" ({done['outside']} fell outside the field)" if done["outside"] else ""))
