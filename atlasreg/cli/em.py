"""``atlasreg em pyramid|crop``: EM volumes down to light-sheet resolution, and the light-sheet region of an EM block."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from ._app import app, output_option, run_cli, say, voxel_size_option

em_app = typer.Typer(help="The EM side of the bridge: multiscale pyramids of EM volumes larger than memory, and "
                          "the light-sheet crop matching an EM block.", no_args_is_help=True)
app.add_typer(em_app, name="em")


def _lengths(text: Optional[str], flag: str, default_unit: Optional[str] = None):
    """'4,4,33', '4x4x33' or '5um' / '5 um' / '2,2,5 um' -> (values, unit or default_unit)."""
    from ..errors import InputError

    if text is None:
        return None, default_unit
    m = re.fullmatch(r"\s*([0-9eE.+\-,x ]*?)\s*([A-Za-zµμ]+)?\s*", text)
    nums = m.group(1) if m else text
    unit = m.group(2) if m and m.group(2) else default_unit
    try:
        vals = [float(v) for v in re.split(r"[,x ]+", nums.strip()) if v]
    except ValueError:
        raise InputError(f"{text!r} must be one length or three separated by commas (e.g. 40,4,4), optionally "
                         "followed by a unit", field=flag) from None
    if len(vals) not in (1, 3):
        raise InputError(f"{text!r} must be one length or three", field=flag)
    return vals, unit


@em_app.command("pyramid")
@run_cli
def pyramid(
    source: str = typer.Argument(..., help="EM volume: OME-Zarr store, HDF5 file (--dataset), TIFF stack, or "
                                 "neuroglancer precomputed (a folder, or precomputed://file:///..., gs://, https://)."),
    output: Path = output_option("Output OME-Zarr (.ome.zarr)."),
    voxel_size: Optional[str] = voxel_size_option("Voxel size per array axis (z,y,x), e.g. 33 4 4 or 33,4,4; "
                                                  "required where the file records none."),
    unit: Optional[str] = typer.Option(None, "--unit", help="Unit of --voxel-size and of the space: nm, um, mm."),
    target: Optional[str] = typer.Option(None, "--target", help="Stop once voxels reach this size on every axis "
                                         "(the light-sheet voxel), e.g. '5um' or '5,2,2 um' (default unit: --unit)."),
    levels: Optional[int] = typer.Option(None, "--levels", help="Exactly this many levels instead of --target."),
    start_level: int = typer.Option(0, "--start-level", help="First level written (0: full resolution). For a "
                                    "petabyte block, skip copying the finest levels: level k is computed straight "
                                    "from the source."),
    space: Optional[str] = typer.Option(None, "--space", help="Name of the EM space (default: from the file)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="HDF5 dataset / Zarr group inside the file."),
    chunks: str = typer.Option("32,128,128", "--chunks", help="Chunk shape of every level (z,y,x)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output."),
) -> None:
    """Write an anti-aliased multiscale OME-Zarr pyramid of an EM volume, blockwise with bounded memory.

    In-plane axes are halved first until the voxels are about isotropic, then all axes, down to --target.

    Example:

      atlasreg em pyramid h01_block.zarr --voxel-size 33,4,4 --unit nm --target 5um -o h01_pyramid.ome.zarr
    """
    from ..em.pyramid import build_pyramid
    from ..errors import InputError

    vs = voxel_size
    tgt, tunit = _lengths(target, "--target", unit)
    ch, _ = _lengths(chunks, "--chunks")
    if ch is None or any(c < 1 or c != int(c) for c in ch):
        raise InputError(f"--chunks must be positive integers, got {chunks!r}", field="--chunks")
    p = build_pyramid(source, output, voxel_size=vs, unit=unit, space=space, dataset=dataset, target_voxel_size=tgt,
                      target_unit=tunit, levels=levels, chunks=tuple(int(c) for c in ch), start_level=start_level,
                      force=force)
    u = p.space.unit
    for k, lv in enumerate(p.levels):
        say(f"level {k}: shape {lv.shape}, voxel {tuple(round(v, 6) for v in lv.voxel_size)} {u}"
                   + (f" (source level {k + start_level})" if start_level else ""))
    say(f"wrote {output} ({len(p.levels)} levels, space {p.space})")


@em_app.command("crop")
@run_cli
def crop(
    em: str = typer.Argument(..., help="EM volume or pyramid (only its geometry is read); also neuroglancer "
                             "precomputed (a folder or precomputed://...)."),
    lightsheet: str = typer.Argument(..., help="Light-sheet volume (any format read_volume reads)."),
    transform: Path = typer.Option(..., "-t", "--transform", help="Transform EM -> light-sheet (or back), e.g. "
                                   "from 'atlasreg landmarks fit'."),
    output: Path = output_option("Output volume (.nii.gz, .tif, .ome.zarr, ...)."),
    margin: float = typer.Option(0.0, "--margin", help="Border around the mapped block, light-sheet unit."),
    em_voxel_size: Optional[str] = voxel_size_option("EM voxel size z,y,x if the file records none.",
                                                     "--em-voxel-size"),
    em_space: Optional[str] = typer.Option(None, "--em-space", help="EM space name (default: the transform's "
                                           "source)."),
    em_unit: Optional[str] = typer.Option(None, "--em-unit", help="EM unit (default: the transform's)."),
    lm_voxel_size: Optional[str] = voxel_size_option("Light-sheet voxel size if the file records none.",
                                                     "--lm-voxel-size"),
    lm_space: Optional[str] = typer.Option(None, "--lm-space", help="Light-sheet space name (default: the "
                                           "transform's destination)."),
    lm_unit: Optional[str] = typer.Option(None, "--lm-unit", help="Light-sheet unit (default: the transform's)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output."),
) -> None:
    """Cut out the light-sheet region covering an EM block through the current transform (with its geometry).

    Example:

      atlasreg em crop em_pyramid.ome.zarr brain.ome.zarr -t em_to_lm.json --margin 20 -o lm_crop.nii.gz
    """
    from ..em.crop import crop_lm
    from ..io.atomic import check_writable
    from ..io.volumes import read_volume, write_volume
    from ..transforms.files import load_transform

    check_writable(output, force)
    T = load_transform(transform)
    ev = read_volume(em, voxel_size=em_voxel_size, space=em_space or T.src.name, unit=em_unit or T.src.unit)
    lv = read_volume(lightsheet, voxel_size=lm_voxel_size, space=lm_space or T.dst.name, unit=lm_unit or T.dst.unit)
    c = crop_lm(ev, lv, T, margin)
    write_volume(c, output, force=force)
    say(f"crop of {lightsheet}: shape {c.shape}, origin {tuple(round(v, 4) for v in c.origin)} {c.unit}")
    say(f"wrote {output}")


@em_app.command("refine")
@run_cli
def refine(
    em: Path = typer.Argument(..., help="EM pyramid (OME-Zarr from 'atlasreg em pyramid')."),
    lightsheet: Path = typer.Argument(..., help="Light-sheet volume (the whole one: the region is cropped here)."),
    transform: Path = typer.Option(..., "-t", "--transform", help="Landmark fit EM -> light-sheet (.json from "
                                   "'atlasreg landmarks fit')."),
    heldout: Path = typer.Option(..., "--heldout", help="Landmark pairs NOT used in the fit (same CSV layout as for "
                                 "'landmarks fit'), at least 3: they decide whether the refinement is kept."),
    output: Path = output_option("Transform to use from now on (.json): the refined map, or the landmark fit if "
                                 "the refinement made held-out error worse."),
    psf: Optional[str] = typer.Option(None, "--psf", help="Light-sheet PSF sigma per axis (z,y,x) in the "
                                      "light-sheet unit, e.g. '2.5,0.8,0.8'. Recommended."),
    model: str = typer.Option("affine", "--model", help="affine, rigid or bspline."),
    level: Optional[int] = typer.Option(None, "--level", help="Pyramid level to use (default: the last one finer "
                                        "than the light-sheet voxels)."),
    margin: float = typer.Option(0.0, "--margin", help="Border around the block in the crop, light-sheet unit."),
    lm_voxel_size: Optional[str] = voxel_size_option("Light-sheet voxel size if the file records none.",
                                                     "--lm-voxel-size"),
    src_voxel_size: Optional[str] = voxel_size_option("Held-out EM columns are voxel indices of this size "
                                                      "(transform's EM unit).", "--src-voxel-size"),
    report: Optional[Path] = typer.Option(None, "--report", help="Report JSON (default: <output>.report.json)."),
    force: bool = typer.Option(False, "--force", help="Overwrite outputs."),
) -> None:
    """Refine a landmark fit EM -> light-sheet by masked intensity registration, kept only if held-out landmarks agree.

    Prints the held-out landmark error before and after and which transform was kept.

    Example:

      atlasreg em refine em.ome.zarr brain.ome.zarr -t em_to_lm.json --heldout heldout.csv --psf 2.5,0.8,0.8 -o em_to_lm_refined.json
    """
    import json

    from ..em.crop import crop_lm
    from ..em.pyramid import open_pyramid
    from ..em.refine import refine_landmark_fit
    from ..errors import InputError
    from ..io.atomic import atomic_path, check_writable
    from ..io.landmarks import read_landmarks
    from ..io.volumes import read_volume
    from ..spaces import unit_scale
    from ..transforms.files import load_transform, save_transform

    if not output.name:
        raise InputError("give an output file name (e.g. em_to_lm_refined.json)", path=output, field="--output")
    check_writable(output, force)
    rep = report or output.with_name(output.name[:-5] + ".report.json" if output.name.endswith(".json")
                                     else output.name + ".report.json")
    check_writable(rep, force)
    T = load_transform(transform)
    psf_v, _ = _lengths(psf, "--psf")
    l_vs, s_vs = lm_voxel_size, src_voxel_size
    pyr = open_pyramid(em, space=T.src)
    lv = read_volume(lightsheet, voxel_size=l_vs, space=T.dst)
    if level is None:
        k = max(pyr.level_for(lv.voxel_size * unit_scale(lv.unit, pyr.space.unit)) - 1, 0)
    elif not 0 <= level < len(pyr.levels):
        raise InputError(f"level {level} does not exist; the pyramid has levels 0..{len(pyr.levels) - 1}", path=em,
                         field="--level")
    else:
        k = level
    em_level = pyr.level(k)
    crop = crop_lm(em_level, lv, T, margin)
    pairs = read_landmarks(heldout, T.src, T.dst, src_voxel_size=s_vs)
    res = refine_landmark_fit(em_level, crop, T, pairs.src_points, pairs.dst_points, model=model, psf_sigma=psf_v)
    save_transform(res.transform, output, force=force)
    doc = {"em": str(em), "level": k, "lightsheet": str(lightsheet), "landmark_fit": str(transform),
           "heldout": str(heldout), "crop_shape": list(crop.shape), **res.to_dict()}
    with atomic_path(rep, force) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    say(f"EM level {k} {tuple(round(v, 6) for v in em_level.voxel_size)} {em_level.unit}; light-sheet crop "
               f"{crop.shape}")
    say(res.summary())
    say(f"wrote {output} and {rep}")
