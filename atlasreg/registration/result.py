"""The result of a registration: the transform both ways, warping helpers, metrics, and its output folder.

Folder written by :meth:`RegistrationResult.save` (each file written atomically; ``COMPLETE`` last)::

    transforms/moving_to_fixed.h5   .json     ITK and OME-NGFF, moving -> fixed (points)
    transforms/fixed_to_moving.h5   .json     the inverse (ANTs' inverse warp where ANTs wrote one)
    result.json                               grids, spaces, parameters, backend, metrics
    metrics.json                              the metrics alone
    record.json                               inputs (sha256), parameters, versions, time
    warped_moving.nii.gz                      the sample in the fixed (atlas) grid        (moving given)
    annotation_in_moving.nii.gz               atlas annotation on the sample grid        (atlas given)
    region_volumes.csv                        per-region volumes in the sample (mm³)     (atlas given)
    qc/*.png                                  overlay, checkerboard, Jacobian determinant
    COMPLETE                                  written last: the folder is whole

Examples
--------
>>> res.save("out/")                                            # doctest: +SKIP
>>> again = RegistrationResult.load("out/")                     # doctest: +SKIP
>>> np.allclose(again.transform.map_points(p), res.transform.map_points(p))  # doctest: +SKIP
True
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputExistsError
from ..spaces import Space
from ..transforms.base import LazyTransform, Transform
from ..volume import Grid, Volume, resolve_interpolation, warp

COMPLETE = "COMPLETE"


def _grid_json(g: Grid) -> dict:
    return {"shape": list(map(int, g.shape)), "spacing": list(map(float, g.spacing)),
            "origin": list(map(float, g.origin)), "direction": np.asarray(g.direction, float).ravel().tolist(),
            "space": {"name": g.space.name, "unit": g.space.unit, "orientation": g.space.orientation}}


def _grid_from(d: dict) -> Grid:
    sp = Space(d["space"]["name"], d["space"]["unit"], d["space"]["orientation"])
    return Grid(tuple(d["shape"]), tuple(d["spacing"]), sp, tuple(d["origin"]),
                np.asarray(d["direction"], float).reshape(3, 3))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("atlasreg", "antspyx", "SimpleITK", "numpy", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _write_text(path: Path, text: str) -> None:
    from ..io.atomic import atomic_path

    with atomic_path(path, force=True) as tmp:
        tmp.write_text(text)


def _write_json(path: Path, obj) -> None:
    _write_text(path, json.dumps(_jsonable(obj), indent=2) + "\n")


class RegistrationResult:
    """What :func:`atlasreg.register` returns.

    Attributes
    ----------
    transform : Transform
        MOVING points -> FIXED points (CONVENTIONS); ``transform.inverse()`` maps fixed -> moving (for the
        ANTs backend, ANTs' own inverse warp).
    moving_grid, fixed_grid : Grid
        The full-resolution grids of the two inputs.
    metrics : dict
        Correlation before/after on the working grid, inverse consistency (µm), timings, orientation search.
    params : dict
        The preset row with overrides, as used.
    backend : str
    moving_volume, fixed_volume : Volume or None
        The two volumes :func:`atlasreg.register` was given (kept in memory, not saved): :meth:`save` draws its
        figures and warps the sample from them, so ``res.save("out/")`` writes what ``atlasreg register`` does.
        None after :meth:`load`.
    """

    def __init__(self, transform: Transform, moving_grid: Grid, fixed_grid: Grid, metrics: dict, params: dict,
                 backend: str, info: dict | None = None, qc_images=None, moving_volume: Volume | None = None,
                 fixed_volume: Volume | None = None):
        self.transform = transform
        self.moving_grid = moving_grid
        self.fixed_grid = fixed_grid
        self.metrics = metrics
        self.params = params
        self.backend = backend
        self.info = info or {}
        self._qc_images = qc_images
        self.moving_volume = moving_volume
        self.fixed_volume = fixed_volume

    @property
    def inverse(self) -> Transform:
        """FIXED -> MOVING."""
        return self.transform.inverse()

    def __repr__(self) -> str:
        return (f"RegistrationResult({self.moving_grid.space.name} -> {self.fixed_grid.space.name}, "
                f"backend={self.backend!r}, preset={self.params.get('preset')!r})")

    # -- using it ------------------------------------------------------------------------------------
    def map_points(self, points) -> np.ndarray:
        """Moving points -> fixed points (same as ``transform.map_points``)."""
        return self.transform.map_points(points)

    def warp(self, volume: Volume, interpolation: str = "auto") -> Volume:
        """Resample a volume of the moving space (e.g. the sample, another channel) into the fixed grid.

        ``interpolation="auto"``: nearest for label volumes (32/64-bit integers, bool), linear otherwise.
        """
        self._check_space(volume, self.moving_grid.space, "warp")
        return warp(volume, self.transform, self.fixed_grid, _interp(volume, interpolation))

    def map_table(self, table: str | os.PathLike, out: str | os.PathLike, *, to: str = "fixed",
                  columns=("x", "y", "z"), voxels: bool = False, force: bool = False) -> dict:
        """Map the points of a CSV table file and write the table with its coordinate columns replaced.

        Parameters
        ----------
        table, out : paths of the input and output CSV files; ``out`` appears only once complete.
        to : {"fixed", "moving"}
            ``"fixed"``: the table holds moving (sample) points, mapped to the fixed space (the atlas);
            ``"moving"``: fixed points mapped back to the sample.
        columns : the three coordinate columns, in axis order.
        voxels : the coordinates are voxel indices of the source grid (the output then is in voxels of the
            destination grid); otherwise physical coordinates in the source grid's unit.
        force : replace an existing ``out``.

        Returns
        -------
        dict
            ``{"points": n, "outside": number of points the transform could not map (NaN), "space": name}``.

        Examples
        --------
        >>> res = RegistrationResult.load("reg/")  # doctest: +SKIP
        >>> res.map_table("cells.csv", "cells_in_atlas.csv")  # doctest: +SKIP
        {'points': 1000000, 'outside': 0, 'space': 'ccf'}
        """
        from ..io.atomic import atomic_path, check_writable
        from ..io.csv_tables import read_csv_table, write_csv_table

        if to not in ("fixed", "moving"):
            raise InputError(f"to must be 'fixed' or 'moving', got {to!r}", field="to")
        cols = [str(c).strip() for c in columns]
        if len(cols) != 3:
            raise InputError(f"columns needs three names, got {list(columns)}", field="columns")
        check_writable(out, force)
        df = read_csv_table(table, sep="\t" if Path(table).suffix.lower() == ".tsv" else ",")
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise InputError(f"columns {missing} not in the table (it has {list(df.columns)})", path=table,
                             field="columns")
        try:
            p = df[cols].to_numpy(np.float64)
        except (TypeError, ValueError):
            raise InputError(f"the columns {cols} must hold numbers", path=table, field="columns") from None
        src, dst = (self.moving_grid, self.fixed_grid) if to == "fixed" else (self.fixed_grid, self.moving_grid)
        T = self.transform if to == "fixed" else self.transform.inverse()
        if voxels:
            p = src.index_to_physical(p)
        q = T.map_points(p)
        if voxels:
            q = dst.physical_to_index(q)
        df[cols] = q
        with atomic_path(out, force=force) as tmp:
            write_csv_table(df, tmp)
        return {"points": len(df), "outside": int((~np.isfinite(q).all(axis=1)).sum()), "space": dst.space.name}

    def warp_back(self, volume: Volume, interpolation: str = "auto") -> Volume:
        """Resample a volume of the fixed space (e.g. the atlas annotation) onto the moving grid."""
        self._check_space(volume, self.fixed_grid.space, "warp_back")
        return warp(volume, self.transform, self.moving_grid, _interp(volume, interpolation))

    def read_input(self, path: str | os.PathLike, side: str = "moving", voxel_size=None,
                   orientation: str | None = None) -> Volume:
        """Read a volume file of the moving (sample) or the fixed (atlas) space, on any grid of that space, for
        :meth:`warp` (``side="moving"``) or :meth:`warp_back` (``side="fixed"``).

        ``orientation``: the code of the file's axes as stored (default: the space's); another code is
        reoriented exactly. ``voxel_size`` for files that record none. A volume whose extent does not match the
        space's grid (more than 15 % off on an axis) is an error naming the file: a wrong voxel size or
        orientation would otherwise warp silently wrong.

        Example
        -------
        >>> ann = res.read_input("ABA_25um_2017_annotation.tif", "fixed", voxel_size=25, orientation="ras")  # doctest: +SKIP
        >>> on_sample = res.warp_back(ann)                                                                # doctest: +SKIP
        """
        from ..io.volumes import read_volume
        from ..spaces import validate_orientation

        if side not in ("moving", "fixed"):
            raise InputError("side must be 'moving' or 'fixed'", field="side")
        grid = self.moving_grid if side == "moving" else self.fixed_grid
        sp = grid.space
        code = validate_orientation(orientation) if orientation is not None else sp.orientation
        if code is None or sp.orientation is None or code == sp.orientation:
            vol = read_volume(path, voxel_size=voxel_size, orientation=code, space=sp, override=True)
        else:
            raw = read_volume(path, voxel_size=voxel_size, orientation=code, space=Space(f"{sp.name}__file", sp.unit),
                              override=True)
            vol = raw.reorient(sp.orientation, sp)
        ext_v = np.asarray(vol.shape) * vol.voxel_size
        ext_g = np.asarray(grid.shape) * np.asarray(grid.spacing)
        if np.any(np.abs(ext_v - ext_g) > 0.15 * ext_g):
            def show(v):
                return "x".join(f"{float(x):g}" for x in v)

            raise InputError(f"the volume spans {show(np.round(ext_v, 1))} {sp.unit} (shape {vol.shape}, voxel "
                             f"{show(np.round(vol.voxel_size, 4))}, axes {code}) but the registration's {sp.name} "
                             f"grid spans {show(np.round(ext_g, 1))} {sp.unit}: check its voxel size and "
                             "orientation", path=path, field="shape")
        return vol

    @staticmethod
    def _check_space(volume: Volume, space: Space, what: str) -> None:
        if not isinstance(volume, Volume):
            raise InputError(f"{what} takes a Volume, got {type(volume).__name__}", field="volume")
        if volume.space.name != space.name:
            raise InputError(f"{what} needs a volume in space {space.name!r}; this one is in {volume.space.name!r}",
                             field="volume")

    # -- the output folder ---------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, *, moving: Volume | None = None, fixed: Volume | None = None,
             atlas=None, inputs: dict | None = None, figures: bool = True, force: bool = False,
             progress=None) -> Path:
        """Write the output folder (see the module docstring); returns its path.

        ``moving``: the sample, to write it warped into the fixed grid and draw QC figures (default: the volume
        :func:`atlasreg.register` was given). ``fixed``: the fixed image for the figures (default: likewise).
        ``atlas``: an :class:`atlasreg.Atlas` of the fixed space (any of its grids), to write its annotation on
        the sample, the region boundaries on the sample and per-region volumes (default: the atlas the fixed
        volume came from, e.g. ``Atlas.reference``). ``inputs``: ``{role: path}`` recorded with sha256.
        An existing complete folder needs ``force=True``. From Python and from ``atlasreg register`` the same
        files are written.

        Example
        -------
        >>> res = ar.register(sample, ar.Atlas.load("allen_mouse_200um").reference)   # doctest: +SKIP
        >>> res.save("result/")   # doctest: +SKIP
        >>> # result/ then holds the transforms, the warped sample, the annotation on the sample, region volumes, QC
        """
        from ..transforms.files import save_transform

        out = Path(folder)
        moving = self.moving_volume if moving is None else moving
        fixed = self.fixed_volume if fixed is None else fixed
        if atlas is None:
            atlas = getattr(fixed, "atlas", None)
        if (out / COMPLETE).exists() and not force:
            raise OutputExistsError(f"{out}: holds a complete registration already; choose another folder or "
                                    "pass force=True / --force")
        out.mkdir(parents=True, exist_ok=True)
        (out / COMPLETE).unlink(missing_ok=True)
        from .progress import with_logging

        note = with_logging(progress)
        note("save", "start")
        tdir = out / "transforms"
        tdir.mkdir(exist_ok=True)
        inv = self.transform.inverse()
        for name, T in (("moving_to_fixed", self.transform), ("fixed_to_moving", inv)):
            for suf in (".json", ".h5"):
                from ..io.atomic import atomic_path

                final = tdir / (name + suf)
                if suf == ".json":
                    # NGFF keeps its fields in a sibling store: write straight, the COMPLETE marker guards
                    save_transform(T, final, force=True)
                else:
                    with atomic_path(final, force=True, suffix=suf) as tmp:
                        save_transform(T, tmp)
        doc = {"backend": self.backend, "params": self.params, "metrics": self.metrics, "info": self.info,
               "moving_grid": _grid_json(self.moving_grid), "fixed_grid": _grid_json(self.fixed_grid),
               "transforms": {"moving_to_fixed": "transforms/moving_to_fixed.json",
                              "fixed_to_moving": "transforms/fixed_to_moving.json"}}
        _write_json(out / "result.json", doc)
        _write_json(out / "metrics.json", self.metrics)
        record = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "inputs": {role: {"path": str(p), "sha256": sha256_of(p)} for role, p in (inputs or {}).items()
                             if p is not None and Path(p).is_file()},
                  "params": self.params, "backend": self.backend, "versions": versions()}
        _write_json(out / "record.json", record)
        note("save", "done")
        from ..io.volumes import write_volume

        warped = None
        if moving is not None:
            note("warp sample", "start")
            warped = self.warp(moving, "linear")
            write_volume(warped, out / "warped_moving.nii.gz", force=True)
            note("warp sample", "done")
        on_sample = None
        if atlas is not None:
            note("annotation on sample", "start")
            ann = atlas.annotation
            # the atlas's compact labels as they are: resample samples their uint16 index (no full id copy)
            ann_vol = Volume(ann.data, ann.voxel_size, ann.origin, ann.direction, self.fixed_grid.space)
            on_sample = self.warp_back(ann_vol, "nearest")
            del ann, ann_vol
            write_volume(on_sample, out / "annotation_in_moving.nii.gz", force=True)
            _write_text(out / "region_volumes.csv", region_volumes_csv(on_sample, atlas))
            note("annotation on sample", "done")
        if figures:
            note("qc figures", "start")
            self._figures(out / "qc", warped, fixed, moving, on_sample, getattr(atlas, "ontology", None))
            note("qc figures", "done")
        _write_text(out / COMPLETE, datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds") + "\n")
        return out

    def _figures(self, qdir: Path, warped: Volume | None, fixed: Volume | None, moving: Volume | None = None,
                 labels_on_sample: Volume | None = None, ontology=None) -> None:
        from .. import qc

        qdir.mkdir(exist_ok=True)
        f, m = (fixed, warped) if fixed is not None and warped is not None else (None, None)
        # Jacobian determinant of fixed -> moving on a coarse copy of the fixed grid
        g = self.fixed_grid
        step = max(1, int(np.ceil(max(g.shape) / 96)))
        coarse = Grid(tuple(int(np.ceil(s / step)) for s in g.shape), tuple(np.asarray(g.spacing) * step), g.space,
                      g.origin, g.direction)
        jac = qc.jacobian_determinant(self.transform.inverse(), coarse)
        finite = jac[np.isfinite(jac)]
        if finite.size:
            self.metrics["jacobian_min"] = round(float(finite.min()), 4)
            self.metrics["jacobian_max"] = round(float(finite.max()), 4)
            self.metrics["folding_fraction"] = round(float((finite <= 0).mean()), 6)
        jv = Volume(jac.astype(np.float32), coarse.spacing, coarse.origin, coarse.direction, g.space)
        figs = {"jacobian": qc.jacobian_slices(jv, title="Jacobian determinant (fixed -> moving)")}
        if f is not None and m is not None:
            figs["overlay"] = qc.overlay_slices(f, m, title="overlay", fixed_label="fixed",
                                                moving_label="registered sample")
            figs["checkerboard"] = qc.checkerboard_slices(f, m)
        if moving is not None and labels_on_sample is not None:
            code = moving.orientation or self.moving_grid.space.orientation
            img = Volume(moving.numpy(), moving.voxel_size, space=moving.space.name, orientation=code)
            # one figure per hierarchy level (major divisions first); boundaries.json says which file is which
            # one plane per row, 13 inches wide: side by side, a full-resolution sample got < 2 px per voxel
            levels = qc.boundary_levels(img, labels_on_sample.numpy(), ontology, title="atlas boundaries on the sample",
                                        ncols=1, panel_size=(13.0, 8.0), linewidth=0.8)
            index = {}
            for j, (label, fig) in enumerate(levels.items()):
                name = "boundaries" if j == 0 else f"boundaries_{j}"
                figs[name] = fig
                index[label] = f"{name}.png"
            _write_json(qdir / "boundaries.json", index)
        for name, fig in figs.items():
            from ..io.atomic import atomic_path

            with atomic_path(qdir / f"{name}.png", force=True) as tmp:
                tmp.write_bytes(qc.figure_png(fig))
        _write_json(qdir.parent / "metrics.json", self.metrics)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "RegistrationResult":
        """Reload a saved result; it maps points exactly as the saved one did."""
        from ..transforms.files import load_transform

        d = Path(folder)
        if not (d / "result.json").is_file():
            raise InputError("not a registration result folder (no result.json)", path=d)
        if not (d / COMPLETE).exists():
            raise InputError("this registration folder is incomplete (no COMPLETE marker): the run or the save was "
                             "interrupted; rerun it", path=d)
        doc = json.loads((d / "result.json").read_text())
        mg, fg = _grid_from(doc["moving_grid"]), _grid_from(doc["fixed_grid"])
        fwd = load_transform(d / doc["transforms"]["moving_to_fixed"], mg.space, fg.space)
        # the inverse is read when first used: mapping sample points (atlasreg points) never pays for it
        inv_path = d / doc["transforms"]["fixed_to_moving"]
        inv = LazyTransform(lambda: load_transform(inv_path, fg.space, mg.space), fg.space, mg.space,
                            f"the saved fixed -> moving transform ({inv_path.name})")
        fwd.with_inverse(inv)
        params = doc["params"]
        return cls(fwd, mg, fg, doc.get("metrics", {}), params, doc["backend"], doc.get("info", {}))


def _interp(volume: Volume, interpolation: str) -> str:
    return resolve_interpolation(volume.dtype, interpolation)


def region_volumes_csv(labels_on_sample: Volume, atlas=None) -> str:
    """Per-region volumes (mm³) of a label volume on the sample grid, largest first, with acronyms and names
    exactly as the atlas ontology has them (CSV-quoted where they hold commas, e.g. ``"CUL4, 5"``); volumes to
    3 significant digits, voxel counts exact."""
    import pandas as pd

    from ..spaces import unit_scale

    lab = np.asarray(labels_on_sample.numpy()).ravel()
    ids, counts = np.unique(lab[lab > 0], return_counts=True)
    voxel_mm3 = float(np.prod(labels_on_sample.voxel_size * unit_scale(labels_on_sample.unit, "mm")))
    order = np.lexsort((ids, -counts))  # largest first; ties by id
    ids, counts = ids[order], counts[order]
    df = pd.DataFrame({"id": ids.astype(np.int64), "voxels": counts.astype(np.int64),
                       "volume_mm3": [float(f"{v:.3g}") for v in counts * voxel_mm3]})
    onto = getattr(atlas, "ontology", None)
    if onto is not None:
        acr, names = [], []
        for i in df["id"]:
            try:
                acr.append(onto[int(i)]["acronym"])
                names.append(onto[int(i)]["name"])
            except Exception:  # an id the ontology does not know: keep the row, say so
                acr.append("")
                names.append("(not in ontology)")
        df.insert(1, "acronym", acr)
        df.insert(2, "name", names)
    return df.to_csv(index=False)
