"""Build an :class:`~atlasreg.atlas.Atlas` from files: BrainGlobe folders, Allen-style files, manifests.

Whatever the source, the atlas frame is the one BrainGlobe and Allen use for
atlas coordinates: voxel centre ``i`` at ``i * voxel_size`` (origin 0, identity
direction) in the atlas orientation. A file stored in another axis order
(``file_orientation``) is permuted/flipped exactly into it; ``orientation``
chooses the order the loaded atlas uses (default: the atlas's own, ``asr`` for
the Allen CCF). Volumes are read on first use and kept.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from ..spaces import Space, normalize_unit, nifti_to_origin, orientation_mapping, unit_scale, validate_orientation
from .labels import LabelArray, compact_labels
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

    def __init__(self, path: str | Path, key: str | None = None):
        self.path = Path(path)
        self.key = key
        self.voxel_size: np.ndarray | None = None
        self.orientation: str | None = None
        if not self.path.exists():
            raise InputError("volume file not found", path=self.path)
        sfx = _suffix(self.path)
        if sfx not in _ITK_SUFFIXES + _TIFF_SUFFIXES + (".npz", ".npy"):
            raise InputError(f"unsupported volume format {sfx!r}: use NIfTI, NRRD, TIFF, .npy or .npz",
                             path=self.path)
        if sfx in _ITK_SUFFIXES:
            self._read_itk_header()

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
def _as_voxel_size(v, path=None) -> np.ndarray | None:
    if v is None:
        return None
    vs = np.broadcast_to(np.asarray(v, dtype=float), (3,)).copy()
    if not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel size must be positive, got {v!r}", path=path, field="voxel_size")
    return vs


def _default_space_name(name: str | None) -> str:
    if name and name.lower().startswith(_CCF_PREFIXES):
        return "ccf"
    return name or "atlas"


def load_files(annotation, ontology, reference=None, hemispheres=None, *, voxel_size=None,
               file_orientation: str | None = None, orientation: str | None = None, unit: str = "um",
               space: Space | str | None = None, name: str | None = None, keys: dict | None = None,
               metadata: dict | None = None):
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
    """
    from .atlas import Atlas

    keys = {"annotation": "annotation", "reference": "reference", "hemispheres": "hemispheres", **(keys or {})}
    unit = normalize_unit(unit)
    files = {"annotation": ArrayFile(annotation, keys["annotation"])}
    if reference is not None:
        files["reference"] = ArrayFile(reference, keys["reference"])
    if hemispheres is not None:
        files["hemispheres"] = ArrayFile(hemispheres, keys["hemispheres"])
    ann = files["annotation"]
    fo = file_orientation or ann.orientation
    if fo is None:
        raise InputError("the annotation file does not say how its axes run: pass file_orientation= "
                         "(BrainGlobe origin code of the stored axes, e.g. 'asr' for Allen's CCF arrays)",
                         path=ann.path, field="file_orientation")
    fo = validate_orientation(fo)
    target = validate_orientation(orientation) if orientation else fo
    vs_file = _as_voxel_size(voxel_size, ann.path)
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

        def load():
            arr = f.read()
            if role == "hemispheres":
                arr = normalise_hemispheres(arr, fo, f.path)
            return np.ascontiguousarray(_reorient_array(arr, fo, target))

        return load

    sp = _resolve_space(space, name, unit, target)
    meta = {"file_orientation": fo, "files": {k: str(v.path) for k, v in files.items()},
            "ontology": onto.source, **(metadata or {})}
    return Atlas(load_annotation, onto, voxel_size=vs, space=sp, reference=loader("reference"),
                 hemispheres=loader("hemispheres"), name=name or ann.path.stem, metadata=meta)


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
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise InputError("not a BrainGlobe atlas folder (no metadata.json)", path=folder) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"metadata.json is not valid JSON: {exc}", path=meta_path) from None
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
        raise InputError("no annotation volume in this folder (a file named *annotation*)", path=folder)
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
                      metadata={"manifest": name})


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
    if p.is_dir():
        if (p / "metadata.json").exists():
            return load_brainglobe(p, orientation=orientation, space=space, name=name)
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
    if isinstance(source, str) and source in data.list_datasets():
        return load_manifest(source, orientation=orientation, space=space, download=download)
    known = [n for n in data.list_datasets() if data.manifest(n).get("kind") == "atlas"]
    import difflib

    close = difflib.get_close_matches(str(source), known, n=3)
    raise InputError(f"{source!r} is neither an atlas folder/file nor a known atlas name"
                     f"{'; did you mean ' + ', '.join(close) + '?' if close else ''} (known atlases: {known})",
                     field="atlas")
