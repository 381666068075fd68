"""Saving and loading transforms: one entry point for every file format.

============================  ============================================================
suffix                        format
============================  ============================================================
``.h5`` ``.tfm`` ``.txt``     ITK transform file (affine, B-spline, displacement field, composite;
                              a list of transforms: :func:`load_transforms`)
``.mat``                      ITK/ANTs affine (``0GenericAffine.mat``) or B-spline
``.txt`` ``(Key value)``      elastix ``TransformParameters.*.txt`` (read; with its initial
                              transforms)
``.nii.gz`` ``.nii`` ``.nrrd`` displacement field image (ANTs ``1Warp.nii.gz``)
``.json``                     OME-NGFF 0.6 scene (all transform kinds, spaces and units
                              kept; fields in ``<name>_fields.zarr``); also an OME-Zarr folder
a list of paths               ANTs transform list (``fwdtransforms`` / ``invtransforms``)
============================  ============================================================

Direction (CONVENTIONS): a file holds a point map, and ``load_transform(path,
src, dst)`` returns that map ``src -> dst``. ITK and ANTs files hold the
pull-back used to resample (FIXED points -> MOVING points), so
``load_transform(reg["fwdtransforms"], src=fixed, dst=moving)``. Saving writes
``T``'s own map ``T.src -> T.dst``, so ``load_transform(save_transform(T, p),
T.src, T.dst)`` maps points as ``T`` does, and SimpleITK's ``TransformPoint``
on a saved ITK file equals ``T.map_points`` (for ITK or ANTs resampling the
file warps images of ``T.dst`` into grids of ``T.src``: save ``T.inverse()``
to warp the other way).

Inverses: where ANTs wrote the inverse chain beside the loaded one
(``1InverseWarp.nii.gz`` beside ``1Warp.nii.gz``, ``InverseComposite.h5`` beside
``Composite.h5``), ``T.inverse()`` is that chain, read on first use; otherwise
atlasreg solves the inverse numerically (CONVENTIONS). NGFF files keep a known
inverse as a ``bijection``.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, SpaceMismatchError
from ..spaces import Space, as_space
from .base import Sequence, Transform
from .ants_lists import load_ants_registration, read_ants_list
from .field_image import read_displacement_field, write_displacement_field
from .fileutil import FIELD_SUFFIXES, TRANSFORM_SUFFIXES, suffix_of
from .elastix import is_elastix_file, read_elastix
from .itk import read_itk, read_itk_list, write_itk
from .ngff import read_ngff, write_ngff

__all__ = ["save_transform", "load_transform", "load_transforms", "load_ants_registration"]

_SUPPORTED = ", ".join(TRANSFORM_SUFFIXES + FIELD_SUFFIXES + (".json",))


def save_transform(T: Transform, path: str | os.PathLike, force: bool = False) -> Path:
    """Save a transform; the format follows the suffix of ``path``.

    Parameters
    ----------
    T : Transform
    path : str or Path
        ``.json`` (NGFF, any transform, spaces and units kept), ``.h5`` /
        ``.tfm`` / ``.txt`` (ITK: affines, fields and chains of them), ``.mat``
        (one affine, as ANTs writes it), ``.nii.gz`` / ``.nii`` / ``.nrrd``
        (one displacement field, as ANTs writes its warps).
    force : bool
        Overwrite an existing file (otherwise :class:`OutputExistsError`).

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    An ITK file holds ``T``'s point map ``T.src -> T.dst`` (what
    ``sitk.ReadTransform(path).TransformPoint`` computes), numbers in ``T.src``'s
    unit in and ``T.dst``'s unit out, also for a chain whose units change
    (nm -> µm): each step is written in its own spaces' units, a unit change an
    exact scaling, so ``TransformPoint == T.map_points`` holds. ITK/ANTs resampling
    with it pulls images of ``T.dst`` onto grids of ``T.src``. Numerically
    solved inverses and thin-plate splines have no exact ITK form and are
    refused there; ``.json`` saves them exactly.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from atlasreg import Affine
    >>> T = Affine.from_translation([10, 0, 0], src="a", dst="b")
    >>> p = save_transform(T, os.path.join(tempfile.mkdtemp(), "a_to_b.tfm"))
    >>> load_transform(p).map_points([[0.0, 0, 0]])
    array([[10.,  0.,  0.]])
    """
    if not isinstance(T, Transform):
        raise InputError(f"save_transform takes a Transform, got {type(T).__name__}", path=path, field="T")
    suf = suffix_of(path)
    if suf == ".json":
        return write_ngff(T, path, force)
    if suf in TRANSFORM_SUFFIXES:
        return write_itk(T, path, force)
    if suf in FIELD_SUFFIXES:
        return write_displacement_field(T, path, force)
    raise InputError(f"unknown transform file type {suf!r}; use one of {_SUPPORTED}", path=path, field="suffix")


def load_transform(path_or_list, src: Space | str | None = None, dst: Space | str | None = None, *,
                   file_unit: str | None = None, outside: str | None = None) -> Transform:
    """Load a transform ``src -> dst`` from a file or from an ANTs transform list.

    Parameters
    ----------
    path_or_list : str, Path or list
        A file (see :func:`save_transform` for suffixes) or a list of files
        applied to points in list order (``ants.registration``'s
        ``fwdtransforms``/``invtransforms``, read exactly as
        ``ants.apply_transforms_to_points`` reads them, including its rule that
        a ``[matrix.mat, field]`` pair inverts the matrix). List entries may
        also be ``.json`` files, whose spaces must chain.
    src, dst : Space or str, optional
        The spaces the file maps between. For ITK/ANTs files: ``src`` = the
        FIXED space, ``dst`` = the MOVING space of the registration that wrote
        them. Defaults come from the file where it records them (NGFF, and ITK
        files atlasreg wrote), else ``"src"``/``"dst"`` in µm. A bare name takes
        the unit the file records (:func:`atlasreg.spaces.resolve_space`), never
        a silent µm; a :class:`Space` in another unit is converted (ITK files) or
        refused (NGFF).
    file_unit : str, optional
        ITK/ANTs files carry no unit: their numbers are taken in the spaces'
        units unless ``file_unit`` names the unit they were written in (e.g.
        ``"mm"`` for ANTs run on NIfTI files from disk, while the spaces are
        in µm); the scaling is inserted at both ends.
    outside : {"zero", "nan"}, optional
        What displacement fields do with points off their grid. Default: as
        the format defines (ITK/ANTs: zero displacement; NGFF files written by
        atlasreg: the policy they recorded).

    Returns
    -------
    Transform
        ``src -> dst``.

    Examples
    --------
    >>> import ants                                                          # doctest: +SKIP
    >>> reg = ants.registration(fixed_img, moving_img, "SyN")                # doctest: +SKIP
    >>> T = load_transform(reg["fwdtransforms"], src="ccf", dst="sample")    # doctest: +SKIP
    >>> T.map_points(points_in_ccf)  # == ants.apply_transforms_to_points     # doctest: +SKIP
    """
    if outside is not None and outside not in ("zero", "nan"):
        raise InputError("outside must be 'zero' or 'nan'", field="outside")
    if isinstance(path_or_list, dict):
        raise InputError("got a dict; for the result of ants.registration use "
                         "load_ants_registration(reg, fixed=..., moving=...), or pass "
                         "reg['fwdtransforms'] (fixed -> moving)", field="path_or_list")
    if isinstance(path_or_list, (list, tuple)):
        items = list(path_or_list)
        if len(items) == 1 and isinstance(items[0], (str, os.PathLike)):
            return load_transform(items[0], src, dst, file_unit=file_unit, outside=outside)
        if any(isinstance(it, (str, os.PathLike)) and suffix_of(it) == ".json" for it in items):
            return _load_mixed_list(items, src, dst, file_unit, outside)
        return read_ants_list(items, src, dst, file_unit=file_unit, outside=outside or "zero")
    if not isinstance(path_or_list, (str, os.PathLike)):
        raise InputError(f"expected a file path or a list of them, got {type(path_or_list).__name__}",
                         field="path_or_list")
    p = Path(path_or_list)
    suf = suffix_of(p)
    if suf == ".json" or (p.is_dir() and (p / "zarr.json").exists()):
        if file_unit is not None:
            raise InputError("NGFF files state their units; file_unit= applies to ITK/ANTs files only",
                             path=p, field="file_unit")
        return read_ngff(p, src, dst, outside)
    if suf == ".txt" and p.is_file() and is_elastix_file(p):
        return read_elastix(p, src, dst, file_unit=file_unit, outside=outside or "zero")
    if suf in TRANSFORM_SUFFIXES:
        return read_itk(p, src, dst, file_unit=file_unit, outside=outside or "zero")
    if suf in FIELD_SUFFIXES:
        return read_displacement_field(p, src, dst, file_unit=file_unit, outside=outside or "zero")
    raise InputError(f"unknown transform file type {suf!r}; use one of {_SUPPORTED}", path=p, field="suffix")


def load_transforms(path: str | os.PathLike, src: Space | str | None = None, dst: Space | str | None = None, *,
                    file_unit: str | None = None, outside: str | None = None) -> list[Transform]:
    """Every transform a file holds, as a list of transforms ``src -> dst``.

    An ITK transform file may hold a list of separate transforms rather than one
    chain (fMRIPrep's head-motion ``.tfm``: one affine per volume, each mapping
    the same two spaces). :func:`load_transform` refuses such a file, saying how
    many it holds; this returns them all, in file order. Any other file gives a
    list of the one transform :func:`load_transform` reads.

    Examples
    --------
    >>> motion = load_transforms("sub-01_desc-hmc_xfm.tfm", src="boldref", dst="bold")  # doctest: +SKIP
    >>> len(motion), motion[0].map_points([[0.0, 0, 0]])                                 # doctest: +SKIP
    """
    if outside is not None and outside not in ("zero", "nan"):
        raise InputError("outside must be 'zero' or 'nan'", field="outside")
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"expected a file path, got {type(path).__name__}", field="path")
    p = Path(path)
    suf = suffix_of(p)
    if suf in TRANSFORM_SUFFIXES and not (suf == ".txt" and p.is_file() and is_elastix_file(p)):
        return read_itk_list(p, src, dst, file_unit=file_unit, outside=outside or "zero")
    return [load_transform(p, src, dst, file_unit=file_unit, outside=outside)]


def _load_mixed_list(items, src, dst, file_unit, outside) -> Transform:
    """A list holding NGFF files (spaces in the file) and maybe ITK files (spaces from their neighbours)."""
    loaded: list[Transform | None] = []
    for it in items:
        if isinstance(it, (str, os.PathLike)) and suffix_of(it) == ".json":
            loaded.append(read_ngff(it, outside=outside))
        else:
            loaded.append(None)
    steps: list[Transform] = []
    cur = as_space(src, "src") if src is not None else None
    for k, (it, t) in enumerate(zip(items, loaded)):
        if t is None:
            if not isinstance(it, (str, os.PathLike)):
                raise InputError("a list mixing NGFF and ITK files takes plain paths", path=str(it),
                                 field="transformlist")
            start = cur if cur is not None else as_space(None, "src")
            if k == len(items) - 1:
                end = as_space(dst, "dst")
            elif loaded[k + 1] is not None:
                end = loaded[k + 1].src
            else:
                end = Space(f"{start.name}->list#{k + 1}", start.unit)
            t = load_transform(it, start, end, file_unit=file_unit, outside=outside)
        elif cur is not None and (t.src.name != cur.name or t.src.unit != cur.unit):
            raise SpaceMismatchError(f"{it}: transform list does not chain: this file maps {t.src} -> {t.dst}, "
                                     f"but the previous piece ends in {cur}")
        steps.append(t)
        cur = t.dst
    if dst is not None and steps[-1].dst.name != as_space(dst).name:
        raise SpaceMismatchError(f"{items[-1]}: the list ends in {steps[-1].dst.name!r}, not {as_space(dst).name!r}")
    return steps[0] if len(steps) == 1 else Sequence(steps)
