"""Displacement-field images (ANTs ``*Warp.nii.gz``, any ITK vector image): read and write.

The vectors are physical displacements ``y = x + u(x)`` in ITK's (LPS) frame.
ANTs writes warps as 5-D vector NIfTI (``(X, Y, Z, 1, 3)``, intent "vector"),
read in one pass by :mod:`.nifti_warp`; other layouts go through SimpleITK. Off
the grid a field read from an ITK/ANTs file applies no displacement, as ITK
does (``outside="zero"``).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..spaces import Space, as_space, normalize_unit
from .base import Sequence, Transform, resolved
from .field import DisplacementField
from .fileutil import existing_file, itk_error_text, suffix_of, wrap_units
from .nifti_warp import check_nifti_complete, check_nifti_finite, read_nifti_warp
from .sitk_bridge import field_from_sitk_image, field_to_sitk_image


def read_field(path: Path, src: Space, dst: Space, outside: str) -> DisplacementField:
    """A displacement-field image as a DisplacementField: ANTs' NIfTI layout in one pass, else via SimpleITK."""
    if suffix_of(path) in (".nii", ".nii.gz"):
        F = read_nifti_warp(path, src, dst, outside)
        if F is not None:
            return F
    return field_from_sitk_image(_read_image(path), src, dst, outside, path)



def _read_image(path: Path):
    import SimpleITK as sitk

    if suffix_of(path) in (".nii", ".nii.gz"):
        check_nifti_complete(path)
        check_nifti_finite(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read the displacement-field image (corrupt, truncated or not an "
                         f"image): {itk_error_text(exc)}", path=path) from None



def read_displacement_field(path, src: Space | str | None = None, dst: Space | str | None = None,
                            file_unit: str | None = None, outside: str = "zero") -> Transform:
    """Read a displacement-field image (ANTs ``*Warp.nii.gz``, any ITK vector image) as ``src -> dst``.

    The vectors are physical displacements ``y = x + u(x)`` in ITK's (LPS)
    frame, as ANTs writes them. ``outside="zero"`` (default) keeps points off
    the grid in place, as ITK and ANTs do; ``"nan"`` marks them.

    Examples
    --------
    >>> F = read_displacement_field("reg_1Warp.nii.gz", src="fixed", dst="moving")  # doctest: +SKIP
    """
    p = existing_file(path)
    src, dst = as_space(src, "src"), as_space(dst, "dst")
    unit = normalize_unit(file_unit) if file_unit is not None else src.unit
    if file_unit is None and src.unit != dst.unit:
        raise InputError(f"a displacement field maps within one unit, but src is in {src.unit} and dst in "
                         f"{dst.unit}; pass file_unit= (the unit of the file's numbers)", path=p,
                         field="file_unit")
    return wrap_units(lambda s, d: read_field(p, s, d, outside), src, dst, unit, unit, p)


def write_displacement_field(F: Transform, path, force: bool = False) -> Path:
    """Write a DisplacementField as a vector image (``.nii.gz`` as ANTs writes its warps).

    Numbers are written in the field's own unit (see module notes); the NIfTI
    header's nominal "mm" is not a conversion.
    """
    import SimpleITK as sitk

    from ..io.atomic import atomic_path

    F = _single_field(resolved(F), path)
    img = field_to_sitk_image(F, path=path)
    suffix = suffix_of(path)
    with atomic_path(path, force, suffix=suffix) as tmp:
        try:
            sitk.WriteImage(img, str(tmp), useCompression=suffix.endswith(".gz"))
        except RuntimeError as exc:
            raise InputError(f"cannot write the displacement field: {itk_error_text(exc)}", path=path) from None
    return Path(path)


def _single_field(T: Transform, path) -> DisplacementField:
    if isinstance(T, Sequence):
        steps = T.simplified()
        if len(steps) == 1:
            T = steps[0]
    if not isinstance(T, DisplacementField):
        raise InputError(f"a {suffix_of(path)} image holds one displacement field, not a {type(T).__name__}; "
                         "save chains as .h5 (ITK composite) or .json (NGFF)", path=path, field="transform")
    return T
