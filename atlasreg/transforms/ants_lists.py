"""ANTs transform lists (``ants.registration``'s ``fwdtransforms`` / ``invtransforms``) and results.

A list is read as ``ants.apply_transforms_to_points`` reads it (first file
acts first; a ``[matrix.mat, field]`` pair inverts the matrix). Where ANTs
wrote the inverse chain beside the list it is attached as the exact inverse,
read on first use.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError, SpaceMismatchError
from ..spaces import Space, as_space, normalize_unit
from .base import Affine, LazyTransform, Sequence, Transform
from .field_image import read_field
from .fileutil import FIELD_SUFFIXES, TRANSFORM_SUFFIXES, chain_space, existing_file, suffix_of, wrap_units
from .itk import composite_partner, convert_sitk, flatten_sitk, read_sitk_transform


def _list_entries(items, where: str) -> list[tuple[Path, bool]]:
    """``(path, invert)`` pairs with ``ants.apply_transforms_to_points``'s default inversion rule."""
    raw = []
    explicit = False
    for it in items:
        if isinstance(it, (tuple, list)) and len(it) == 2 and isinstance(it[1], (bool, np.bool_)):
            raw.append((Path(it[0]), bool(it[1])))
            explicit = True
        elif isinstance(it, (str, os.PathLike)):
            raw.append((Path(it), None))
        else:
            raise InputError(f"a transform list holds file paths (or (path, invert) pairs), got {it!r}",
                             path=where, field="transformlist")
    if not raw:
        raise InputError("the transform list is empty", path=where, field="transformlist")
    if explicit:
        return [(p, bool(inv)) for p, inv in raw]
    # ANTsPy: [matrix, field] means "invert the matrix" (the inverse list ants.registration returns).
    if len(raw) == 2 and ".mat" in raw[0][0].name and ".mat" not in raw[1][0].name:
        return [(raw[0][0], True), (raw[1][0], False)]
    return [(p, False) for p, _ in raw]


def read_ants_list(items, src: Space | str | None = None, dst: Space | str | None = None,
                   file_unit: str | None = None, outside: str = "zero", attach_inverse: bool = True) -> Transform:
    """A list of ANTs/ITK transform files as one transform ``src -> dst``, exactly as ANTs maps points.

    The list is read as ``ants.apply_transforms_to_points`` reads it: its
    first file acts on the points first, and with no explicit flags a
    ``[matrix.mat, field]`` pair (the ``invtransforms`` of ``ants.registration``)
    inverts the matrix. So ``read_ants_list(reg["fwdtransforms"], fixed, moving)``
    is the map ``y = A(x + u(x))`` of fixed points to moving points, and
    ``read_ants_list(reg["invtransforms"], moving, fixed)`` its inverse chain.
    An entry may be a ``(path, invert)`` pair to say explicitly that a matrix
    is to be inverted.

    Where ANTs wrote the inverse chain beside the list (``1InverseWarp.nii.gz``
    beside ``1Warp.nii.gz`` on the same grid, and the reverse), it becomes the
    result's exact inverse, read when first used (``attach_inverse=False`` skips this).
    """
    src, dst = as_space(src, "src"), as_space(dst, "dst")
    entries = _list_entries(items, str(items))
    result = _read_entries(entries, src, dst, file_unit, outside)
    partner = _ants_partner(entries) if attach_inverse else None
    if partner is not None:
        result.with_inverse(LazyTransform(
            lambda: _read_entries(partner, dst, src, file_unit, outside), dst, src,
            f"ANTs inverse chain {[str(p) for p, _ in partner]}"))
    return result


def _read_entries(entries, src: Space, dst: Space, file_unit, outside) -> Transform:
    unit = normalize_unit(file_unit) if file_unit is not None else src.unit
    if file_unit is None and src.unit != dst.unit:
        pieces_linear = all(suffix_of(p) == ".mat" for p, _ in entries)
        if not pieces_linear:
            raise InputError(f"src is in {src.unit} and dst in {dst.unit}: pass file_unit= (the unit of the "
                             "ANTs files' numbers)", path=str(entries[0][0]), field="file_unit")
        unit = None

    def build(s: Space, d: Space) -> Transform:
        n = len(entries)
        spaces = [s] + [chain_space(s, d, i + 1, s.unit) for i in range(n - 1)] + [d]
        steps = []
        for (p, inv), a, b in zip(entries, spaces[:-1], spaces[1:]):
            if inv:
                t = load_piece(p, b, a, outside)
                if not t.exact_inverse:
                    raise InputError("only a matrix (.mat) can be inverted in an ANTs transform list; a "
                                     "field's inverse is its own file (InverseWarp)", path=p,
                                     field="whichtoinvert")
                t = t.inverse()
            else:
                t = load_piece(p, a, b, outside)
            steps.append(t)
        if all(isinstance(t, Affine) for t in steps):
            m = np.eye(4)
            for t in steps:
                m = t.matrix @ m
            return Affine(m, s, d)
        return steps[0] if n == 1 else Sequence(steps)

    if unit is None:  # all matrices, ends in different units: numbers taken as they are
        return build(src, dst)
    return wrap_units(build, src, dst, unit, unit, entries[0][0])


def _same_grid(a: Path, b: Path) -> bool:
    import SimpleITK as sitk

    try:
        infos = []
        for p in (a, b):
            r = sitk.ImageFileReader()
            r.SetFileName(str(p))
            r.ReadImageInformation()
            infos.append((r.GetSize(), np.round(r.GetSpacing(), 6).tolist(), np.round(r.GetOrigin(), 6).tolist(),
                          np.round(r.GetDirection(), 6).tolist(), r.GetNumberOfComponents()))
        return infos[0] == infos[1]
    except RuntimeError:
        return False


def _ants_partner(entries) -> list[tuple[Path, bool]] | None:
    """The inverse chain ANTs wrote beside a standard ANTs list, or None.

    ``[P1Warp.nii.gz, P0GenericAffine.mat]`` <-> ``[(P0GenericAffine.mat, inverted), P1InverseWarp.nii.gz]``
    and ``PComposite.h5`` <-> ``PInverseComposite.h5``.
    """
    if len(entries) == 1 and not entries[0][1]:
        q = composite_partner(entries[0][0])
        return [(q, False)] if q is not None else None
    if len(entries) != 2:
        return None
    (a, ia), (b, ib) = entries
    if not ia and not ib and suffix_of(b) == ".mat" and a.name.endswith("Warp.nii.gz") \
            and not a.name.endswith("InverseWarp.nii.gz"):
        inv_warp = a.with_name(a.name[: -len("Warp.nii.gz")] + "InverseWarp.nii.gz")
        if inv_warp.is_file() and _same_grid(a, inv_warp):
            return [(b, True), (inv_warp, False)]
    if ia and not ib and suffix_of(a) == ".mat" and b.name.endswith("InverseWarp.nii.gz"):
        warp = b.with_name(b.name[: -len("InverseWarp.nii.gz")] + "Warp.nii.gz")
        if warp.is_file() and _same_grid(b, warp):
            return [(warp, False), (a, False)]
    return None


def load_piece(path: Path, s: Space, d: Space, outside: str) -> Transform:
    """One file of an ANTs list, numbers as they are (units handled by the caller)."""
    suf = suffix_of(path)
    if suf in FIELD_SUFFIXES:
        p = existing_file(path)
        if s.unit != d.unit:
            raise InputError("a displacement field maps within one unit; pass file_unit=", path=p)
        return read_field(p, s, d, outside)
    if suf in TRANSFORM_SUFFIXES:
        p = existing_file(path)
        parts = flatten_sitk(read_sitk_transform(p), p)
        if len(parts) == 1:
            return convert_sitk(parts[0], s, d, outside, p)
        spaces = [s] + [chain_space(s, d, i + 1, s.unit) for i in range(len(parts) - 1)] + [d]
        return Sequence([convert_sitk(t, a, b, outside, p) for t, a, b in zip(parts, spaces[:-1], spaces[1:])])
    raise InputError(f"unknown transform file type {suf!r}: expected one of "
                     f"{', '.join(TRANSFORM_SUFFIXES + FIELD_SUFFIXES)}", path=path, field="suffix")


def load_ants_registration(reg, fixed: Space | str, moving: Space | str,
                           file_unit: str | None = None) -> Transform:
    """The result of ``ants.registration`` as the map moving -> fixed with ANTs' exact inverse attached.

    ``reg`` is the dict ``ants.registration`` returns (or any mapping with
    ``fwdtransforms`` and ``invtransforms``), or a pair ``(fwdtransforms,
    invtransforms)``. The returned transform maps MOVING points into the FIXED
    space (the ``invtransforms`` chain, as ``ants.apply_transforms_to_points``
    maps them); its ``.inverse()`` is exactly the ``fwdtransforms`` chain
    ``y = A(x + u(x))`` taking fixed points to moving points, which is also the
    pull-back that warps a moving image into the fixed grid.

    Examples
    --------
    >>> reg = ants.registration(fixed_img, moving_img, "SyN")              # doctest: +SKIP
    >>> T = load_ants_registration(reg, fixed="ccf", moving="sample")      # doctest: +SKIP
    >>> T.map_points(cells_in_sample)            # -> ccf                  # doctest: +SKIP
    """
    if isinstance(reg, dict) or hasattr(reg, "keys"):
        try:
            fwd, inv = reg["fwdtransforms"], reg["invtransforms"]
        except KeyError as exc:
            raise InputError(f"registration result has no {exc.args[0]!r}: pass the dict "
                             "ants.registration returns", field="reg") from None
    elif isinstance(reg, (tuple, list)) and len(reg) == 2 and all(
            isinstance(x, (list, tuple, str, os.PathLike)) for x in reg):
        fwd, inv = reg
    else:
        raise InputError("reg must be the dict ants.registration returns or (fwdtransforms, invtransforms)",
                         field="reg")
    fixed, moving = as_space(fixed, "fixed"), as_space(moving, "moving")
    if isinstance(fwd, (str, os.PathLike)):
        fwd = [fwd]
    if isinstance(inv, (str, os.PathLike)):
        inv = [inv]
    fwd_entries = _list_entries(fwd, str(fwd))
    inv_entries = _list_entries(inv, str(inv))
    # The inverse list of an affine-only run is [affine.mat]: it must be inverted (ANTsPy leaves
    # single matrices alone, so state it explicitly).
    if len(inv_entries) == 1 and suffix_of(inv_entries[0][0]) == ".mat":
        inv_entries = [(inv_entries[0][0], True)]
    forward = read_ants_list(fwd_entries, fixed, moving, file_unit=file_unit, attach_inverse=False)
    backward = read_ants_list(inv_entries, moving, fixed, file_unit=file_unit, attach_inverse=False)
    if backward.src.name != moving.name or backward.dst.name != fixed.name:
        raise SpaceMismatchError("internal: inverse chain does not run moving -> fixed")
    return backward.with_inverse(forward)
