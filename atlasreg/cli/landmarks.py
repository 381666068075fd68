"""``atlasreg landmarks fit|match|apply|report``: transforms from landmark pairs, chosen and checked by cross-validation."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._app import app, output_option, run_cli, say, voxel_size_option

landmarks_app = typer.Typer(
    help="Landmark transforms (EM ↔ light-sheet ↔ atlas): fit with automatic model choice and outlier "
         "rejection, apply to points, report held-out errors.",
    no_args_is_help=True)
app.add_typer(landmarks_app, name="landmarks")


def _space(name: Optional[str], unit: Optional[str]):
    from ..spaces import Space

    if name is None:
        return None
    return Space(name, unit) if unit is not None else name


def _report_path(output: Path) -> Path:
    from ..errors import InputError

    name = output.name
    if not name:
        raise InputError("give an output file name (e.g. em_to_lm.json)", path=output, field="--output")
    for suf in (".json", ".h5", ".tfm", ".txt", ".mat"):
        if name.endswith(suf):
            name = name[: -len(suf)]
            break
    return output.with_name(name + ".report.json")


@landmarks_app.command("fit")
@run_cli
def fit(
    landmarks: Path = typer.Argument(..., help="Landmark pairs: BigWarp CSV or CSV with named columns "
                                               "(em_x, em_y, em_z, lm_x, ...)."),
    output: Path = output_option("Transform file (.json keeps spaces and units)."),
    src_unit: Optional[str] = typer.Option(None, "--src-unit", help="Unit of the source coordinates: nm, um, mm "
                                           "(unless the column names say it)."),
    dst_unit: Optional[str] = typer.Option(None, "--dst-unit", help="Unit of the destination coordinates."),
    src_space: Optional[str] = typer.Option(None, "--src-space", help="Name of the source space (default: from "
                                            "the columns, e.g. 'em')."),
    dst_space: Optional[str] = typer.Option(None, "--dst-space", help="Name of the destination space."),
    src_voxel_size: Optional[str] = voxel_size_option("Source columns are voxel indices of this size in "
                                                      "--src-unit, e.g. 4 4 40 or 4,4,40.", "--src-voxel-size"),
    dst_voxel_size: Optional[str] = voxel_size_option("Same for the destination.", "--dst-voxel-size"),
    model: str = typer.Option("auto", "--model", help="auto, rigid, similarity, affine or tps."),
    regularization: Optional[float] = typer.Option(None, "--regularization",
                                                   help="Spline λ; default: chosen by cross-validation."),
    kernel: Optional[str] = typer.Option(None, "--kernel", help="Spline kernel r, r2logr or r3; default: "
                                                               "cross-validation chooses r or r2logr."),
    robust: bool = typer.Option(True, "--robust/--no-robust", help="Find and leave out gross outliers."),
    outlier_k: float = typer.Option(6.0, "--outlier-k", help="Outlier threshold: median + k·MAD of held-out "
                                                             "errors."),
    report: Optional[Path] = typer.Option(None, "--report", help="Report JSON (default: <output>.report.json)."),
    file_format: str = typer.Option("auto", "--format", help="auto, bigwarp or csv."),
    force: bool = typer.Option(False, "--force", help="Overwrite outputs."),
) -> None:
    """Fit a transform to landmark pairs; model and smoothing chosen by leave-one-out cross-validation.

    Prints the held-out error (median, p95), the rejected outliers and every model tried;
    writes the transform and a JSON report (held-out and fitted residual per landmark).

    Example:

      atlasreg landmarks fit microns_em_2p_landmarks.csv --src-unit nm --src-voxel-size 4,4,40 --dst-unit mm -o em_to_2p.json
    """
    from ..io.atomic import atomic_path, check_writable
    from ..io.landmarks import read_landmarks
    from ..registration.landmarks import fit_landmarks
    from ..transforms.files import save_transform

    rep = report or _report_path(output)
    check_writable(output, force)
    check_writable(rep, force)
    pairs = read_landmarks(landmarks, _space(src_space, src_unit), _space(dst_space, dst_unit),
                           src_unit=src_unit, dst_unit=dst_unit, src_voxel_size=src_voxel_size,
                           dst_voxel_size=dst_voxel_size, format=file_format)
    T = fit_landmarks(pairs, model=model, regularization=regularization, kernel=kernel, robust=robust,
                      outlier_k=outlier_k)
    save_transform(T, output, force=force)
    doc = {"landmarks": str(landmarks), "src": T.src.name, "dst": T.dst.name, "transform": str(output),
           **T.report.to_dict()}
    with atomic_path(rep, force) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    say(f"{pairs.src} -> {pairs.dst}: {len(pairs)} pairs from {landmarks}")
    say(T.report.summary())
    say(f"wrote {output} and {rep}")


@landmarks_app.command("match")
@run_cli
def match(
    src_points: Path = typer.Argument(..., help="Source points (e.g. EM soma centroids): CSV with x, y, z columns "
                                                "(x_nm, ... names carry the unit)."),
    dst_points: Path = typer.Argument(..., help="Destination points (e.g. light-sheet / two-photon cells)."),
    output: Path = output_option("Transform file (.json keeps spaces and units)."),
    src_unit: Optional[str] = typer.Option(None, "--src-unit", help="Unit of the source coordinates: nm, um, mm "
                                           "(unless the column names say it)."),
    dst_unit: Optional[str] = typer.Option(None, "--dst-unit", help="Unit of the destination coordinates."),
    src_space: str = typer.Option("em", "--src-space", help="Name of the source space."),
    dst_space: str = typer.Option("lm", "--dst-space", help="Name of the destination space."),
    prior: Optional[Path] = typer.Option(None, "--prior", help="An approximate source -> destination transform "
                                                               "file to start from (default: search all "
                                                               "rotations, mirror images included)."),
    max_rotation: Optional[float] = typer.Option(None, "--max-rotation", help="Search only rotations within this "
                                                                              "many degrees of the identity."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="BigWarp CSV of the matched pairs (default: "
                                                              "<output>.pairs.csv)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Report JSON (default: <output>.report.json)."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="PNG of the matches (default: "
                                                                "<output>.matches.png)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the subsamples and random rotations."),
    force: bool = typer.Option(False, "--force", help="Overwrite outputs."),
) -> None:
    """Match two UNPAIRED point clouds (no hand-picked pairs, no starting guess) and fit the transform.

    Writes the transform, the pairs as a BigWarp CSV, a JSON report (rotations tried, pairs, confidence and
    residual per pair, held-out error) and a PNG with the matches drawn. Refuses (exit 1) when the clouds show
    no consistent correspondence.

    Example:

      atlasreg landmarks match em_somata_nm.csv lm_somata_um.csv --src-unit nm --dst-unit um -o em_to_lm.json
    """
    from ..io.landmarks import read_points
    from ..registration.matching import match_landmarks, write_match
    from ..spaces import Space
    from ..transforms.files import load_transform

    s, su = read_points(src_points, src_unit)
    d, du = read_points(dst_points, dst_unit)
    src, dst = Space(src_space, su), Space(dst_space, du)
    pr = load_transform(prior) if prior is not None else (
        {"rotation_deg": max_rotation} if max_rotation is not None else None)
    res = match_landmarks(s, d, src=src, dst=dst, prior=pr, seed=seed)
    paths = write_match(res, s, d, output, pairs_path=pairs, report_path=report, figure_path=figure, force=force)
    say(res.summary())
    say("wrote " + ", ".join(str(p) for p in paths.values()))


@landmarks_app.command("apply")
@run_cli
def apply(
    transform: Path = typer.Argument(..., help="Transform file written by 'atlasreg landmarks fit' (or any "
                                               "atlasreg .json transform)."),
    points: Path = typer.Argument(..., help="CSV of points with x, y, z columns in the transform's source "
                                            "space and unit (other columns are kept)."),
    output: Path = output_option("Output CSV (coordinates replaced)."),
    columns: str = typer.Option("x,y,z", "--columns", help="Names of the coordinate columns."),
    voxel_size: Optional[str] = voxel_size_option("Input coordinates are voxel indices of this size (in the "
                                                  "source unit), e.g. 4 4 40."),
    inverse: bool = typer.Option(False, "--inverse", help="Map destination -> source instead."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output."),
) -> None:
    """Map a table of points through a fitted transform (or its inverse).

    Example:

      atlasreg landmarks apply em_to_2p.json synapses_nm.csv -o synapses_2p.csv
    """
    import numpy as np
    import pandas as pd

    from ..errors import InputError
    from ..io.atomic import atomic_path, check_writable
    from ..transforms.files import load_transform

    check_writable(output, force)
    cols = [c.strip() for c in columns.split(",")]
    if len(cols) != 3:
        raise InputError(f"--columns must name 3 columns, got {columns!r}", field="--columns")
    T = load_transform(transform)
    if inverse:
        T = T.inverse()
    try:
        df = pd.read_csv(points)
    except Exception as exc:  # pandas parser errors
        raise InputError(f"cannot read points CSV: {exc}", path=points) from None
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"no column(s) {missing} (columns: {list(df.columns)}); use --columns", path=points,
                         field=missing[0])
    pts = df[cols].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(pts).all(1))
    if bad.size:
        raise InputError(f"{bad.size} row(s) have missing or non-numeric coordinates (first: row {bad[0] + 1})",
                         path=points, field=cols[0])
    if voxel_size is not None:
        pts = pts * np.broadcast_to(np.asarray(voxel_size, float), (3,))
    out = T.map_points(pts)
    df = df.copy()
    for j, c in enumerate(cols):
        df[c] = out[:, j]
    with atomic_path(output, force) as tmp:
        df.to_csv(tmp, index=False)
    say(f"mapped {len(df)} points {T.src} -> {T.dst}; wrote {output}")


@landmarks_app.command("report")
@run_cli
def report(
    path: Path = typer.Argument(..., help="A fit report (.report.json), or landmark pairs to check a transform "
                                          "against (with --transform)."),
    transform: Optional[Path] = typer.Option(None, "--transform", help="Transform to evaluate on the pairs."),
    src_unit: Optional[str] = typer.Option(None, "--src-unit", help="Unit of the pairs' source coordinates."),
    dst_unit: Optional[str] = typer.Option(None, "--dst-unit", help="Unit of the destination coordinates."),
    src_voxel_size: Optional[str] = voxel_size_option("Source voxel size.", "--src-voxel-size"),
    dst_voxel_size: Optional[str] = voxel_size_option("Destination voxel size.", "--dst-voxel-size"),
    residuals: Optional[Path] = typer.Option(None, "--residuals", help="Write the error per landmark to CSV."),
    force: bool = typer.Option(False, "--force", help="Overwrite --residuals."),
) -> None:
    """Show a saved fit report, or measure a transform's error on (held-out) landmark pairs.

    Examples:

      atlasreg landmarks report em_to_2p.report.json

      atlasreg landmarks report heldout.csv --transform em_to_2p.json --src-unit nm --dst-unit mm
    """
    import numpy as np

    from ..errors import InputError
    from ..io.atomic import atomic_path, check_writable
    from ..registration.landmarks import LandmarkReport
    from ..spaces import unit_scale

    if residuals is not None:
        check_writable(residuals, force)
    if transform is None:
        try:
            doc = json.loads(Path(path).read_text())
            rep = LandmarkReport.from_dict(doc)
        except FileNotFoundError:
            raise InputError("report file not found", path=path) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"not an atlasreg landmark report ({exc}); to check a transform on landmark pairs "
                             "pass --transform", path=path) from None
        typer.echo(rep.summary())
        names = rep.names or [str(i) for i in range(rep.n_pairs)]
        rejected = set(rep.rejected.tolist())
        lines = [f"name,heldout_{rep.dst_unit},residual_{rep.dst_unit},rejected"] + [
            f"{n},{h!r},{r!r},{str(i in rejected).lower()}"
            for i, (n, h, r) in enumerate(zip(names, rep.heldout.tolist(), rep.residuals.tolist()))]
    else:
        from ..io.landmarks import read_landmarks
        from ..transforms.files import load_transform

        T = load_transform(transform)
        pairs = read_landmarks(path, T.src if src_unit is None else T.src.name,
                               T.dst if dst_unit is None else T.dst.name, src_unit=src_unit, dst_unit=dst_unit,
                               src_voxel_size=src_voxel_size, dst_voxel_size=dst_voxel_size)
        # Points are converted into the transform's units (a file in mm for a transform in um is fine).
        s = pairs.src_points * unit_scale(pairs.src.unit, T.src.unit)
        d = pairs.dst_points * unit_scale(pairs.dst.unit, T.dst.unit)
        err = np.linalg.norm(T.map_points(s) - d, axis=1)
        um = unit_scale(T.dst.unit, "um")
        u = T.dst.unit
        typer.echo(f"{transform} on {len(err)} pairs from {path} ({T.src} -> {T.dst}): median {np.median(err):.4g} "
                   f"{u} ({np.median(err) * um:.4g} µm), p95 {np.percentile(err, 95):.4g} {u} "
                   f"({np.percentile(err, 95) * um:.4g} µm), max {err.max():.4g} {u}")
        lines = [f"name,error_{u}"] + [f"{n},{e!r}" for n, e in zip(pairs.names, err.tolist())]
    if residuals is not None:
        with atomic_path(residuals, force) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        say(f"wrote {residuals}")
