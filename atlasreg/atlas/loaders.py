"""The parts of an :class:`~atlasreg.atlas.Atlas`, read from files: BrainGlobe folders, Allen-style files, manifests.

Whatever the source, the atlas frame is the one BrainGlobe and Allen use for
atlas coordinates: voxel centre ``i`` at ``i * voxel_size`` (origin 0, identity
direction) in the atlas orientation. A file stored in another axis order
(``file_orientation``) is permuted/flipped exactly into it; ``orientation``
chooses the order the loaded atlas uses (default: the atlas's own, ``asr`` for
the Allen CCF). Volumes are read on first use and kept.

Every loader returns the keyword arguments of the :class:`~atlasreg.atlas.Atlas`
constructor (``annotation``, ``ontology``, ``voxel_size``, ``space``, ...);
:meth:`Atlas.load <atlasreg.atlas.Atlas.load>` builds the atlas from them, so this
module imports nothing from :mod:`atlasreg.atlas.atlas`.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from ..spaces import (Space, as_voxel_size, letter_of_rfc4, nifti_to_origin, normalize_unit, orientation_mapping,
                      unit_scale, validate_orientation)
from ..labels import LabelArray, compact_labels
from .ontology import Ontology

_ITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
_TIFF_SUFFIXES = (".tif", ".tiff")
#: Atlas names whose space is the Allen CCF.
_CCF_PREFIXES = ("allen_mouse", "allen_ccf", "ccf")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


# -- reading arrays -------------------------------------------------------------------------------
class ArrayFile:
    """A volume file and what is known about it; ``read()`` returns the array as stored.

    ``voxel_size`` (µm) and ``orientation`` come from the file where it carries them
    (NIfTI/NRRD spacing and direction) and are None otherwise.
    """

    def __init__(self, path: str | Path, key: str | None = None, level: int = 0):
        self.path = Path(path)
        self.key = key
        self.level = level
        self.voxel_size: np.ndarray | None = None
        self.orientation: str | None = None
        if not self.path.exists():
            raise InputError("volume file not found", path=self.path)
        sfx = _suffix(self.path)
        if sfx not in _ITK_SUFFIXES + _TIFF_SUFFIXES + (".npz", ".npy", ".zarr"):
            raise InputError(f"unsupported volume format {sfx!r}: use NIfTI, NRRD, TIFF, OME-Zarr, .npy or .npz",
                             path=self.path)
        if sfx in _ITK_SUFFIXES:
            self._read_itk_header()
        elif sfx == ".zarr":
            self._read_zarr_header()

    def _read_zarr_header(self) -> None:
        from ..io import read_volume

        vol = read_volume(self.path, level=self.level, unit="um")  # lazy: metadata only
        self.voxel_size = np.asarray(vol.voxel_size, float)
        self.orientation = ngff_anatomical_orientation(self.path)

    def _read_itk_header(self) -> None:
        import SimpleITK as sitk

        r = sitk.ImageFileReader()
        r.SetFileName(str(self.path))
        try:
            r.ReadImageInformation()
        except RuntimeError as exc:
            raise InputError(f"SimpleITK cannot read this file: {str(exc).splitlines()[0]}", path=self.path) from None
        if r.GetDimension() != 3:
            raise InputError(f"expected a 3-D volume, the file is {r.GetDimension()}-D", path=self.path)
        spacing = np.asarray(r.GetSpacing(), float)
        unit = self._itk_unit(r)
        if unit is not None:
            self.voxel_size = spacing * unit_scale(unit, "um")
        d = np.asarray(r.GetDirection(), float)
        if not np.allclose(d, np.eye(3).ravel()):
            # A direction matrix that is not the identity was set on purpose: it names the anatomy.
            code = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(list(d))
            self.orientation = nifti_to_origin(code)

    def _itk_unit(self, reader) -> str | None:
        sfx = _suffix(self.path)
        if sfx in (".nii", ".nii.gz"):
            return "mm"  # ITK converts NIfTI's xyzt_units into mm
        keys = reader.GetMetaDataKeys()
        for k in keys:
            if "units" in k.lower():
                v = reader.GetMetaData(k).lower()
                if "micro" in v or "um" in v or "µm" in v:
                    return "um"
                if "mm" in v or "milli" in v:
                    return "mm"
        return None  # e.g. Allen's NRRDs: spacing 25 with no unit; the caller must say

    def read(self) -> np.ndarray:
        sfx = _suffix(self.path)
        if sfx in _TIFF_SUFFIXES:
            import tifffile

            arr = tifffile.imread(self.path)
        elif sfx == ".npy":
            arr = np.load(self.path, mmap_mode="r")
        elif sfx == ".zarr":
            from ..io import read_volume

            arr = read_volume(self.path, level=self.level, unit="um").numpy()
        elif sfx == ".npz":
            with _open_npz(self.path) as z:
                if self.key is None or self.key not in z.files:
                    raise InputError(f"array {self.key!r} not in the npz (it holds {z.files})", path=self.path,
                                     field="key")
                try:
                    arr = z[self.key]
                except Exception as exc:  # zipfile/zlib/numpy errors of a damaged member (CRC, header)
                    raise InputError(f"array {self.key!r} of the npz is damaged: {exc}", path=self.path,
                                     field=self.key) from None
        else:
            import SimpleITK as sitk

            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(self.path))).transpose(2, 1, 0)
        arr = np.asarray(arr)
        if arr.ndim != 3:
            raise InputError(f"expected a 3-D volume, got shape {arr.shape}", path=self.path)
        return arr


def ngff_anatomical_orientation(path: str | Path) -> str | None:
    """BrainGlobe origin code from an OME-Zarr's anatomical axis orientations (RFC-4), or None.

    Each space axis may carry ``{"orientation": {"type": "anatomical", "value": "anterior-to-posterior"}}``
    (as brainglobe-atlasapi 3 writes); the code takes the side at index 0 of each axis (``"a"``).

    >>> ngff_anatomical_orientation("template.ome.zarr")          # doctest: +SKIP
    'asr'
    """
    p = Path(path)
    meta = None
    for name in ("zarr.json", ".zattrs"):
        if (p / name).is_file():
            meta = _read_json(p / name, name)
            break
    if meta is None:
        return None
    attrs = meta.get("attributes", meta)
    ms = (attrs.get("ome") or {}).get("multiscales") if isinstance(attrs.get("ome"), dict) else attrs.get("multiscales")
    if not isinstance(ms, list) or not ms or not isinstance(ms[0], dict):
        return None
    letters = []
    for ax in ms[0].get("axes") or []:
        if not isinstance(ax, dict) or ax.get("type") != "space":
            continue
        o = ax.get("orientation")
        if not isinstance(o, dict) or o.get("type") != "anatomical":
            return None
        letter = letter_of_rfc4(o.get("value", ""))
        if letter is None:
            raise InputError(f"unknown anatomical orientation {o.get('value')!r} on axis {ax.get('name')!r}",
                             path=p, field="orientation")
        letters.append(letter)
    if len(letters) != 3:
        return None
    return validate_orientation("".join(letters))


def _open_npz(path: Path):
    """``np.load`` of an .npz archive; a damaged, truncated or non-npz file raises InputError."""
    try:
        z = np.load(path)  # never allow_pickle: an npz atlas holds plain arrays
    except Exception as exc:  # zipfile.BadZipFile, EOFError, ValueError (pickle), OSError
        raise InputError(f"not a readable .npz archive (corrupt, truncated or another format): {exc}",
                         path=path) from None
    if not hasattr(z, "files"):
        raise InputError("this is a single .npy array, not an .npz archive of named arrays", path=path)
    return z


def _reorient_array(arr, src: str, dst: str):
    perm, flip = orientation_mapping(src, dst)
    out = arr.transpose(perm)
    return out[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]


# -- hemispheres ------------------------------------------------------------------------------------
LEFT, RIGHT = 1, 2  # BrainGlobe's hemisphere values


def lr_axis(orientation: str) -> tuple[int, str]:
    """(axis, side at index 0) of the left-right axis of an orientation code."""
    code = validate_orientation(orientation)
    ax = next(i for i, c in enumerate(code) if c in "lr")
    return ax, code[ax]


def midline_hemispheres(shape, orientation: str) -> np.ndarray:
    """Hemisphere volume of a symmetric atlas split at the middle of its LR axis (1 left, 2 right).

    For an odd number of LR voxels, the middle plane goes to the side at index 0.
    """
    ax, first = lr_axis(orientation)
    n = shape[ax]
    side = np.where(np.arange(n) < n / 2, LEFT if first == "l" else RIGHT, RIGHT if first == "l" else LEFT)
    shp = [1, 1, 1]
    shp[ax] = n
    return np.broadcast_to(side.astype(np.uint8).reshape(shp), tuple(shape)).copy()


def normalise_hemispheres(arr: np.ndarray, orientation: str, path=None) -> np.ndarray:
    """Convert a hemisphere volume to uint8 with 1 = left, 2 = right, 0 = unassigned.

    Values {1, 2} (with or without 0) are taken as BrainGlobe's convention. Any other
    two-valued mask (e.g. 0/255) is assigned by side: the value filling the half of the LR
    axis at index 0 is the hemisphere the orientation code puts there.
    """
    ax, first = lr_axis(orientation)
    import pandas as pd

    vals = np.sort(pd.unique(np.asarray(arr).ravel(order="K")))
    n = arr.shape[ax]
    # Which value fills which half: a sparse sample of each half is plenty.
    sl_lo = [slice(None, None, 3)] * 3
    sl_hi = [slice(None, None, 3)] * 3
    sl_lo[ax] = slice(0, n // 2, 3)
    sl_hi[ax] = slice((n + 1) // 2, n, 3)
    lo = arr[tuple(sl_lo)]
    hi = arr[tuple(sl_hi)]
    if set(vals.tolist()) <= {0, 1, 2} and {1, 2} <= set(vals.tolist()):
        out = np.asarray(arr, dtype=np.uint8)
        lo_val = np.bincount(lo.ravel().astype(np.int64), minlength=3)[1:3].argmax() + 1
        expected = LEFT if first == "l" else RIGHT
        if lo_val != expected:
            warnings.warn(f"{path or 'hemispheres'}: BrainGlobe values put {'left' if lo_val == 1 else 'right'} "
                          f"at LR index 0, but orientation {orientation!r} says {'left' if first == 'l' else 'right'}; "
                          "check the orientation code", stacklevel=3)
        return out
    if len(vals) != 2:
        raise InputError(f"a hemisphere volume holds two values (or BrainGlobe's 1/2), found {vals[:10].tolist()}",
                         path=path, field="hemispheres")
    a, b = vals
    frac_lo_a = float((lo == a).mean())
    frac_hi_a = float((hi == a).mean())
    if abs(frac_lo_a - frac_hi_a) < 0.5:
        raise InputError(f"hemisphere values {a}/{b} do not split the LR axis (axis {ax} of {orientation!r}) "
                         "into two halves; check file_orientation", path=path, field="hemispheres")
    first_val = a if frac_lo_a > frac_hi_a else b
    first_side = LEFT if first == "l" else RIGHT
    other_side = RIGHT if first_side == LEFT else LEFT
    return np.where(arr == first_val, first_side, other_side).astype(np.uint8)


# -- the loader -----------------------------------------------------------------------------------------
def _default_space_name(name: str | None) -> str:
    if name and name.lower().startswith(_CCF_PREFIXES):
        return "ccf"
    return name or "atlas"


def load_files(annotation, ontology, reference=None, hemispheres=None, *, voxel_size=None,
               file_orientation: str | None = None, orientation: str | None = None, unit: str = "um",
               space: Space | str | None = None, name: str | None = None, keys: dict | None = None,
               metadata: dict | None = None, role_orientations: dict | None = None, levels: dict | None = None):
    """Allen-style files: an annotation volume + a structure tree (+ optional reference and hemispheres).

    Parameters
    ----------
    annotation, reference, hemispheres : path
        NIfTI / NRRD / TIFF / .npy / .npz volumes on one grid (``keys`` names the npz arrays,
        default ``{"annotation": "annotation", "reference": "reference", "hemispheres": "hemispheres"}``).
    ontology : path or Ontology
        Allen structure CSV, Allen nested JSON or BrainGlobe structures.json.
    voxel_size : float or 3 floats, in ``unit``
        Needed where the files don't carry it (TIFF, npz, Allen's unit-less NRRDs); per stored axis.
    file_orientation : str
        BrainGlobe origin code of the arrays as stored (derived from a NIfTI/NRRD direction matrix
        when that is not the identity).
    orientation : str, optional
        Orientation of the loaded atlas (default ``file_orientation``).
    role_orientations : dict, optional
        ``{"reference": "asr"}``: a reference or hemisphere file stored in another axis order than the
        annotation (each is permuted/flipped exactly into ``orientation``).
    levels : dict, optional
        Pyramid level per role for OME-Zarr files (default 0).

    Examples
    --------
    >>> load_files("ABA_25um_2017_annotation.tif", "allen_structure_tree.csv", "allen_mouse_25um_template.tif",
    ...            voxel_size=25, file_orientation="ras", orientation="asr",
    ...            role_orientations={"reference": "asr"})               # doctest: +SKIP
    """
    keys = {"annotation": "annotation", "reference": "reference", "hemispheres": "hemispheres", **(keys or {})}
    unit = normalize_unit(unit)
    levels = levels or {}
    files = {"annotation": ArrayFile(annotation, keys["annotation"], levels.get("annotation", 0))}
    if reference is not None:
        files["reference"] = ArrayFile(reference, keys["reference"], levels.get("reference", 0))
    if hemispheres is not None:
        files["hemispheres"] = ArrayFile(hemispheres, keys["hemispheres"], levels.get("hemispheres", 0))
    ann = files["annotation"]
    fo = file_orientation or ann.orientation
    if fo is None:
        raise InputError("the annotation file does not say how its axes run: pass file_orientation= "
                         "(BrainGlobe origin code of the stored axes, e.g. 'asr' for Allen's CCF arrays)",
                         path=ann.path, field="file_orientation")
    fo = validate_orientation(fo)
    target = validate_orientation(orientation) if orientation else fo
    vs_file = None if voxel_size is None else as_voxel_size(voxel_size, path=ann.path)
    if vs_file is None:
        if ann.voxel_size is None:
            raise InputError("the annotation file carries no voxel size (TIFF, npz or a unit-less NRRD): pass "
                             "voxel_size= (resolution) in µm", path=ann.path, field="voxel_size")
        vs_file = ann.voxel_size * unit_scale("um", unit)
    perm, _ = orientation_mapping(fo, target)
    vs = vs_file[list(perm)]
    onto = ontology if isinstance(ontology, Ontology) else Ontology.read(ontology)

    def load_annotation() -> LabelArray:
        arr = ann.read()
        labels = compact_labels(arr, path=ann.path)
        del arr
        onto.check_ids(labels.table, path=ann.path)
        return _reorient_array(labels, fo, target).contiguous()

    def loader(role: str) -> Callable[[], np.ndarray] | None:
        f = files.get(role)
        if f is None:
            return None

        fo_role = validate_orientation((role_orientations or {}).get(role) or fo)

        def load():
            arr = f.read()
            if role == "hemispheres":
                arr = normalise_hemispheres(arr, fo_role, f.path)
            return np.ascontiguousarray(_reorient_array(arr, fo_role, target))

        return load

    sp = _resolve_space(space, name, unit, target)
    meta = {"file_orientation": fo, "files": {k: str(v.path) for k, v in files.items()},
            **({"role_orientations": dict(role_orientations)} if role_orientations else {}),
            "ontology": onto.source, **(metadata or {})}
    # the Atlas's constructor arguments: atlas.Atlas.load builds it (this module knows nothing of Atlas)
    return {"annotation": load_annotation, "ontology": onto, "voxel_size": vs, "space": sp,
            "reference": loader("reference"), "hemispheres": loader("hemispheres"), "name": name or ann.path.stem,
            "metadata": meta}


def _suffixed_space(space, base: str, native: str, orientation: str | None):
    # An atlas named by manifest or BrainGlobe metadata has a native orientation; loaded in another one
    # its coordinates are a different frame, so the default space name says so ("ccf_psl").
    if space is not None:
        return space
    if orientation and validate_orientation(orientation) != validate_orientation(native):
        return f"{base}_{validate_orientation(orientation)}"
    return base


def _resolve_space(space, name, unit, orientation) -> Space:
    if isinstance(space, Space):
        if space.unit != unit:
            raise InputError(f"space {space.name!r} is in {space.unit} but the atlas voxel size is in {unit}",
                             field="space")
        return Space(space.name, space.unit, orientation)
    return Space(space or _default_space_name(name), unit, orientation)


def load_brainglobe(folder: str | Path, orientation: str | None = None, space: Space | str | None = None,
                    name: str | None = None):
    """A BrainGlobe atlas folder: metadata.json, structures.json, reference/annotation/hemispheres TIFFs."""
    folder = Path(folder)
    meta_path = folder / "metadata.json"
    if not meta_path.is_file():
        raise InputError("not a BrainGlobe atlas folder (no metadata.json)", path=folder)
    meta = _read_json(meta_path, "metadata.json")
    for k in ("resolution", "orientation"):
        if k not in meta:
            raise InputError(f"metadata.json lacks {k!r}", path=meta_path, field=k)

    def pick(stem: str) -> Path | None:
        for sfx in (".tiff", ".tif"):
            p = folder / f"{stem}{sfx}"
            if p.exists():
                return p
        return None

    ann = pick("annotation")
    if ann is None:
        raise InputError("BrainGlobe folder has no annotation.tiff", path=folder)
    structures = folder / "structures.json"
    if not structures.exists():
        raise InputError("BrainGlobe folder has no structures.json", path=folder)
    atlas_name = name or meta.get("name") or folder.name
    space = _suffixed_space(space, _default_space_name(atlas_name), meta["orientation"], orientation)
    return load_files(ann, structures, pick("reference"), pick("hemispheres"),
                      voxel_size=meta["resolution"], file_orientation=meta["orientation"],
                      orientation=orientation, unit="um", space=space, name=atlas_name,
                      metadata={"brainglobe": meta})


# -- BrainGlobe 3 (brainglobe-atlasapi >= 3.0) -----------------------------------------------------------
_BG3_TERMINOLOGY = "terminology.csv"
_BG3_TEMPLATE = "template.ome.zarr"
_BG3_ANNOTATION = "annotations_compressed.ome.zarr"
_BG3_HEMISPHERES = "hemispheres.ome.zarr"


def _read_json(path: Path, what: str) -> dict:
    try:
        if path.stat().st_size > 16 * 2**20:
            raise InputError(f"{what} is {path.stat().st_size} bytes: too large for metadata", path=path)
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{what} not found", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} is not valid JSON: {exc}", path=path) from None
    if not isinstance(data, dict):
        raise InputError(f"{what} must hold a JSON object", path=path)
    return data


def _bg3_location(root: Path, meta: dict, keys: tuple, manifest: Path) -> Path:
    """``root / meta[k1][k2]...["location"]``, which must stay inside the BrainGlobe root."""
    node = meta
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    loc = node.get("location") if isinstance(node, dict) else None
    if not isinstance(loc, str) or not loc.strip("/"):
        raise InputError(f"manifest.json has no {'.'.join(keys)}.location", path=manifest, field=".".join(keys))
    target = (root / loc.lstrip("/")).resolve()
    if not target.is_relative_to(root.resolve()):
        raise InputError(f"{'.'.join(keys)}.location {loc!r} points outside the BrainGlobe folder {root}",
                         path=manifest, field=".".join(keys))
    return target


def _ngff_level(path: Path, resolution_um) -> int:
    """The pyramid level of an OME-Zarr whose voxel size is ``resolution_um`` (how brainglobe-atlasapi picks)."""
    from ..io import read_volume

    k = 0
    while True:
        try:
            vol = read_volume(path, level=k, unit="um")
        except InputError as exc:
            if "does not exist" in str(exc) and k > 0:
                raise InputError(f"no pyramid level has the atlas resolution {list(resolution_um)} µm", path=path,
                                 field="resolution") from None
            raise
        if np.allclose(vol.voxel_size, resolution_um, rtol=1e-6):
            return k
        k += 1


def load_brainglobe_v3(manifest: str | Path, orientation: str | None = None, space: Space | str | None = None,
                       name: str | None = None):
    """A BrainGlobe 3 atlas: ``<root>/atlases/<name>/<version>/manifest.json`` and the components it names.

    The layout brainglobe-atlasapi 3 writes and downloads: the manifest points (``location``, relative
    to the BrainGlobe root three levels above the version folder) at ``templates/…/template.ome.zarr``,
    ``annotation-sets/…/annotations_compressed.ome.zarr`` (+ ``hemispheres.ome.zarr`` unless the atlas
    is symmetric) and ``terminologies/…/terminology.csv``. The pyramid level whose voxel size is the
    manifest's ``resolution`` is read, and, as brainglobe-atlasapi does, voxel ``i`` of that level is at
    ``i * resolution`` (the level's NGFF half-voxel translation of a coarser level is not applied).
    Axis orientations the OME-Zarr records must agree with the manifest's ``orientation``.

    Examples
    --------
    >>> load_brainglobe_v3("~/.brainglobe/brainglobe-atlasapi/atlases/allen_mouse_25um/3_0/manifest.json")
    ... # doctest: +SKIP
    """
    manifest = Path(manifest).expanduser()
    if manifest.is_dir():
        manifest = manifest / "manifest.json"
    meta = _read_json(manifest, "BrainGlobe manifest.json")
    for k in ("resolution", "orientation", "annotation_set", "terminology"):
        if k not in meta:
            raise InputError(f"manifest.json lacks {k!r}: not a BrainGlobe 3 atlas manifest", path=manifest, field=k)
    if len(manifest.parents) < 4:
        raise InputError("a BrainGlobe 3 manifest sits at <root>/atlases/<name>/<version>/manifest.json",
                         path=manifest)
    root = manifest.parents[3]
    fo = validate_orientation(str(meta["orientation"]))
    res = as_voxel_size(meta["resolution"], path=manifest, field="resolution")
    ann_dir = _bg3_location(root, meta, ("annotation_set",), manifest)
    terms = _bg3_location(root, meta, ("terminology",), manifest) / _BG3_TERMINOLOGY
    tmpl_keys = ("annotation_set", "template") if isinstance(meta["annotation_set"].get("template"), dict) \
        else ("template",)
    template = _bg3_location(root, meta, tmpl_keys, manifest) / _BG3_TEMPLATE
    annotation = ann_dir / _BG3_ANNOTATION
    if not annotation.exists():
        raise InputError(f"the BrainGlobe 3 annotation {annotation.relative_to(root)} is missing (a partial "
                         "download?): reinstall the atlas with brainglobe-atlasapi", path=manifest)
    if not terms.exists():
        raise InputError(f"the BrainGlobe 3 terminology {terms.relative_to(root)} is missing", path=manifest)
    hemis = None if meta.get("symmetric") else ann_dir / _BG3_HEMISPHERES
    roles = {"annotation": annotation}
    if template.exists():
        roles["reference"] = template
    if hemis is not None:
        if not hemis.exists():
            raise InputError(f"the atlas is not symmetric but {hemis.relative_to(root)} is missing", path=manifest)
        roles["hemispheres"] = hemis
    levels = {}
    for role, path in roles.items():
        levels[role] = _ngff_level(path, res)
        rec = ngff_anatomical_orientation(path)
        if rec is not None and rec != fo:
            raise InputError(f"the {role} OME-Zarr records axes {rec!r} but the manifest says {fo!r}", path=path,
                             field="orientation")
    atlas_name = name or str(meta.get("name") or manifest.parents[1].name)
    label = manifest.parents[1].name  # e.g. "allen_mouse_25um"
    space = _suffixed_space(space, _default_space_name(label), fo, orientation)
    return load_files(annotation, terms, roles.get("reference"), roles.get("hemispheres"), voxel_size=res,
                     file_orientation=fo, orientation=orientation, unit="um", space=space, name=label or atlas_name,
                     metadata={"brainglobe": meta, "brainglobe_version": 3, "manifest_path": str(manifest)},
                     levels=levels)


# -- atlases installed through BrainGlobe --------------------------------------------------------------------
def brainglobe_dir() -> Path:
    """The folder brainglobe-atlasapi installs atlases into.

    Read, like brainglobe-atlasapi does, from ``bg_config.conf`` (``[default_dirs] brainglobe_dir``) in
    ``$BRAINGLOBE_CONFIG_DIR`` or ``~/.config/brainglobe``; ``~/.brainglobe`` when there is no config file.

    >>> brainglobe_dir()                                              # doctest: +SKIP
    PosixPath('/home/me/.brainglobe')
    """
    import configparser
    import os

    conf_dir = Path(os.environ.get("BRAINGLOBE_CONFIG_DIR") or Path.home() / ".config" / "brainglobe")
    conf = conf_dir / "bg_config.conf"
    if conf.is_file() and conf.stat().st_size < 1_000_000:
        cp = configparser.ConfigParser()
        try:
            cp.read(conf)
            d = cp.get("default_dirs", "brainglobe_dir", fallback=None)
        except configparser.Error as exc:
            raise InputError(f"BrainGlobe's config file cannot be read: {exc}", path=conf) from None
        if d:
            return Path(d).expanduser()
    return Path.home() / ".brainglobe"


def _version_key(v: str) -> tuple:
    return tuple(int(x) if x.isdigit() else -1 for x in v.replace(".", "_").split("_"))


def find_installed_brainglobe(name: str, root: str | Path | None = None) -> Path | None:
    """Where an atlas installed through BrainGlobe is (its newest version), or None.

    BrainGlobe 3: ``<root>/brainglobe-atlasapi/atlases/<name>/<version>/manifest.json`` (returned);
    BrainGlobe 2: ``<root>/<name>_v<version>/`` with ``metadata.json`` (the folder is returned).
    ``root`` defaults to :func:`brainglobe_dir`. Only reads the folder; never downloads.

    >>> find_installed_brainglobe("allen_mouse_25um")                   # doctest: +SKIP
    PosixPath('/home/me/.brainglobe/brainglobe-atlasapi/atlases/allen_mouse_25um/3_0/manifest.json')
    """
    import re

    base = Path(root).expanduser() if root is not None else brainglobe_dir()
    if not base.is_dir() or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        return None
    v3 = base / "brainglobe-atlasapi" / "atlases" / name
    if v3.is_dir():
        found = [d for d in v3.iterdir() if re.fullmatch(r"\d+(?:_\d+)*", d.name) and (d / "manifest.json").is_file()]
        if found:
            return max(found, key=lambda d: _version_key(d.name)) / "manifest.json"
    v2 = [d for d in base.glob(f"{name}_v*") if re.fullmatch(re.escape(name) + r"_v\d+(?:\.\d+)*", d.name)
          and (d / "metadata.json").is_file()]
    if v2:
        return max(v2, key=lambda d: _version_key(d.name.rsplit("_v", 1)[1]))
    return None


def _bg3_manifest_in(folder: Path) -> Path | None:
    """The manifest of a BrainGlobe 3 tree given as its root, its ``brainglobe-atlasapi`` folder, an atlas
    folder or a version folder, when there is exactly one; else None."""
    if (folder / "manifest.json").is_file():
        return folder / "manifest.json"
    for base in (folder, folder / "brainglobe-atlasapi"):
        cands = sorted(base.glob("atlases/*/*/manifest.json"))
        if cands:
            if len(cands) > 1:
                raise InputError(f"this BrainGlobe folder holds several atlases "
                                 f"({sorted({c.parents[1].name for c in cands})}): name one "
                                 f"(e.g. {cands[0].parent})", path=folder)
            return cands[0]
    cands = sorted(folder.glob("*/manifest.json"))  # <root>/atlases/<name>/ given: its versions
    if cands and all((c.parent / "manifest.json").is_file() for c in cands):
        return max(cands, key=lambda c: _version_key(c.parent.name))
    return None


def load_folder(folder: Path, **kw):
    """A folder of Allen-style files, recognised by name (annotation*, reference*/template*/average*,
    hemisphere*, a structure CSV/JSON)."""
    vols = [p for p in folder.iterdir() if _suffix(p) in _ITK_SUFFIXES + _TIFF_SUFFIXES + (".npz", ".npy")]
    tables = [p for p in folder.iterdir() if p.suffix.lower() in (".csv", ".json")]

    def one(cands, what):
        if len(cands) > 1:
            raise InputError(f"several candidate {what} files: {[c.name for c in cands]}; pass {what}= explicitly",
                             path=folder)
        return cands[0] if cands else None

    ann = one([p for p in vols if "annotation" in p.name.lower()], "annotation")
    if ann is None:
        held = sorted(q.name for q in folder.iterdir())[:12]
        bg3 = [q for q in ("atlases", "annotation-sets", "templates", "terminologies", "brainglobe-atlasapi")
               if (folder / q).exists()]
        hint = (f"it looks like part of a BrainGlobe 3 tree ({', '.join(bg3)}) but no "
                "atlases/<name>/<version>/manifest.json was found under it: give the BrainGlobe root or the "
                "atlas's manifest.json" if bg3 else
                "atlasreg reads a BrainGlobe 2 folder (metadata.json), a BrainGlobe 3 tree "
                "(atlases/<name>/<version>/manifest.json) or Allen-style files (a volume named *annotation* "
                "and a structure CSV/JSON)")
        raise InputError(f"not an atlas folder: {hint}; it holds {held}", path=folder)
    ref = one([p for p in vols if any(w in p.name.lower() for w in ("reference", "template", "average"))],
              "reference")
    hemi = one([p for p in vols if "hemisphere" in p.name.lower()], "hemispheres")
    onto = one([p for p in tables if p.suffix.lower() == ".csv"], "ontology") or \
        one([p for p in tables if "structure" in p.name.lower() or "ontology" in p.name.lower()], "ontology")
    if onto is None:
        raise InputError("no structure tree in this folder (a .csv or structures/ontology .json)", path=folder)
    return load_files(kw.pop("annotation", ann), kw.pop("ontology", onto), kw.pop("reference", ref),
                      kw.pop("hemispheres", hemi), **kw)


def load_manifest(name: str, orientation: str | None = None, space=None, download: bool = False):
    """An atlas named by a data manifest (``allen_mouse_25um``), resolved through :mod:`atlasreg.data`
    (mirror or cache; downloads only with ``download=True``)."""
    from .. import data

    spec = data.atlas_files(name, download=download)
    native = spec.get("orientation") or spec["file_orientation"]
    space = _suffixed_space(space, spec.get("space") or _default_space_name(name), native, orientation)
    return load_files(spec["annotation"], spec["ontology"], spec.get("reference"), spec.get("hemispheres"),
                      voxel_size=spec["voxel_size"], file_orientation=spec["file_orientation"],
                      orientation=orientation or native, unit=spec.get("unit", "um"),
                      space=space, name=name, keys=spec.get("keys"),
                      metadata={"manifest": name}, role_orientations=spec.get("role_orientations"))


def load(source=None, *, annotation=None, ontology=None, reference=None, hemispheres=None, voxel_size=None,
         resolution=None, file_orientation=None, orientation=None, unit="um", space=None, name=None, keys=None,
         download=False):
    """Dispatch on what ``source`` is; see :meth:`atlasreg.Atlas.load`."""
    if voxel_size is not None and resolution is not None:
        raise InputError("give voxel_size or resolution, not both", field="resolution")
    voxel_size = voxel_size if voxel_size is not None else resolution
    if isinstance(source, dict):
        return load(**{"annotation": annotation, "ontology": ontology, "reference": reference,
                       "hemispheres": hemispheres, "voxel_size": voxel_size, "file_orientation": file_orientation,
                       "orientation": orientation, "unit": unit, "space": space, "name": name, "keys": keys,
                       **source})
    if source is None:
        if annotation is None or ontology is None:
            raise InputError("Atlas.load needs a source (BrainGlobe folder, folder of Allen files, npz or "
                             "manifest name) or annotation= and ontology=")
        return load_files(annotation, ontology, reference, hemispheres, voxel_size=voxel_size,
                          file_orientation=file_orientation, orientation=orientation, unit=unit, space=space,
                          name=name, keys=keys)
    p = Path(source)
    if p.is_file() and p.name == "manifest.json":
        return load_brainglobe_v3(p, orientation=orientation, space=space, name=name)
    if p.is_dir():
        if (p / "metadata.json").exists():
            return load_brainglobe(p, orientation=orientation, space=space, name=name)
        bg3 = _bg3_manifest_in(p)
        if bg3 is not None:
            return load_brainglobe_v3(bg3, orientation=orientation, space=space, name=name)
        kw = {k: v for k, v in dict(annotation=annotation, ontology=ontology, reference=reference,
                                     hemispheres=hemispheres).items() if v is not None}
        return load_folder(p, voxel_size=voxel_size, file_orientation=file_orientation, orientation=orientation,
                           unit=unit, space=space, name=name or p.name, keys=keys, **kw)
    if p.is_file():
        if _suffix(p) == ".npz":
            with _open_npz(p) as z:
                present = set(z.files)
            if ontology is None:
                raise InputError("an npz atlas needs ontology= (a structure CSV or JSON)", path=p, field="ontology")
            return load_files(p, ontology, p if "reference" in present else reference,
                              p if "hemispheres" in present else hemispheres, voxel_size=voxel_size,
                              file_orientation=file_orientation, orientation=orientation, unit=unit, space=space,
                              name=name or p.stem, keys=keys)
        if ontology is None:
            raise InputError("a single annotation file needs ontology= (a structure CSV or JSON)", path=p,
                             field="ontology")
        return load_files(p, ontology, reference, hemispheres, voxel_size=voxel_size,
                          file_orientation=file_orientation, orientation=orientation, unit=unit, space=space,
                          name=name, keys=keys)
    from .. import data

    if isinstance(source, str) and voxel_size is not None and np.ndim(voxel_size) == 0:
        # "allen_mouse" + resolution=25 -> the manifest "allen_mouse_25um"
        named = f"{source}_{float(voxel_size):g}um"
        if named in data.list_datasets():
            source = named
        elif source in data.list_datasets():
            declared = data.manifest(source).get("voxel_size")
            if declared is not None and not np.allclose(declared, float(voxel_size), rtol=0.02):
                raise InputError(f"atlas {source!r} has voxel size {declared}, not {voxel_size}; choose the "
                                 "manifest of that resolution (atlasreg atlas list)", field="resolution")
    if isinstance(source, str) and source in data.list_datasets() and data.manifest(source).get("kind") == "atlas":
        # Files already here (ATLASREG_DATA mirror or download cache) first, then an atlas installed through
        # BrainGlobe, and only then a download.
        try:
            spec = data.atlas_files(source, download=False)
        except InputError:
            spec = None
        if spec is not None and (spec.get("reference") is not None or find_installed_brainglobe(source) is None):
            return load_manifest(source, orientation=orientation, space=space, download=False)
        installed = find_installed_brainglobe(source)
        if installed is not None:
            return _load_installed(installed, orientation, space, name)
        return load_manifest(source, orientation=orientation, space=space, download=download)
    if isinstance(source, str) and source in data.list_datasets():
        return load_manifest(source, orientation=orientation, space=space, download=download)
    if isinstance(source, str):
        installed = find_installed_brainglobe(source)
        if installed is not None:
            return _load_installed(installed, orientation, space, name)
    known = [n for n in data.list_datasets() if data.manifest(n).get("kind") == "atlas"]
    import difflib

    close = difflib.get_close_matches(str(source), known, n=3)
    raise InputError(f"{source!r} is neither an atlas folder/file nor a known atlas name"
                     f"{'; did you mean ' + ', '.join(close) + '?' if close else ''} (known atlases: {known}; "
                     f"BrainGlobe atlases installed in {brainglobe_dir()} are found by name too)",
                     field="atlas")


def _load_installed(path: Path, orientation, space, name):
    if path.name == "manifest.json":
        return load_brainglobe_v3(path, orientation=orientation, space=space, name=name)
    return load_brainglobe(path, orientation=orientation, space=space, name=name)
