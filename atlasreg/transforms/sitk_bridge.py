"""SimpleITK objects <-> atlasreg transforms: affines, B-splines, displacement-field images, sampled transforms.

Fields: SimpleITK holds a 3-component vector image whose array transposes to
atlasreg's ``(X, Y, Z, 3)`` (kept in ITK's memory order, no copy).
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..spaces import Space
from .bspline import BSplineTransform
from .field import DisplacementField


def field_from_sitk_image(img, src: Space, dst: Space, outside: str, path=None) -> DisplacementField:
    """A SimpleITK vector image (3 components, physical displacements) as a DisplacementField."""
    import SimpleITK as sitk

    if img.GetDimension() != 3:
        raise InputError(f"a displacement field must be a 3-D image, this one is {img.GetDimension()}-D",
                         path=path, field="dimension")
    if img.GetNumberOfComponentsPerPixel() != 3:
        raise InputError(f"a 3-D displacement field needs 3 vector components per voxel, this image has "
                         f"{img.GetNumberOfComponentsPerPixel()}", path=path, field="components")
    # (Z, Y, X, 3) in ITK's memory order; its transpose is atlasreg's (X, Y, Z, 3) without a copy.
    u = sitk.GetArrayFromImage(img).transpose(2, 1, 0, 3)
    if u.dtype not in (np.float32, np.float64):
        u = u.astype(np.float64)
    try:
        return DisplacementField(u, spacing=img.GetSpacing(), origin=img.GetOrigin(),
                                 direction=np.asarray(img.GetDirection()).reshape(3, 3), src=src, dst=dst,
                                 outside=outside)
    except InputError as exc:
        raise InputError(str(exc), path=path, field="displacement") from None


def affine_to_sitk(matrix: np.ndarray):
    """A 4x4 (or 3x4) affine matrix as a ``SimpleITK.AffineTransform`` mapping points the same way."""
    import SimpleITK as sitk

    m = np.asarray(matrix, float)
    a = sitk.AffineTransform(3)
    a.SetMatrix(tuple(float(v) for v in m[:3, :3].ravel()))
    a.SetTranslation(tuple(float(v) for v in m[:3, 3]))
    return a


def sampled_field(tx, reference, src: Space, dst: Space, outside: str = "zero") -> DisplacementField:
    """The SimpleITK transform ``tx`` (e.g. a fitted B-spline) sampled as a float32 displacement field on the
    grid of the SimpleITK image ``reference``."""
    import SimpleITK as sitk

    disp = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat32, reference.GetSize(), reference.GetOrigin(),
                                             reference.GetSpacing(), reference.GetDirection())
    return field_from_sitk_image(disp, src, dst, outside)


def field_to_sitk_image(F: DisplacementField, dtype=None, path=None):
    """The field as a SimpleITK vector image with the same geometry (ITK index = atlasreg index), to write to
    ``path``: a field with unknown (NaN) nodes is refused (ITK would read them as zero displacement)."""
    import SimpleITK as sitk

    F.check_known(path)
    u = F.displacement if dtype is None else F.displacement.astype(dtype)
    img = sitk.GetImageFromArray(np.ascontiguousarray(u.transpose(2, 1, 0, 3)), isVector=True)
    img.SetSpacing(tuple(float(v) for v in F.spacing))
    img.SetOrigin(tuple(float(v) for v in F.origin))
    img.SetDirection(tuple(float(v) for v in F.direction.ravel()))
    return img



def linear_matrix(t) -> np.ndarray | None:
    """4x4 matrix of a linear SimpleITK transform (affine, Euler, versor, similarity, scale, translation)."""
    if not t.IsLinear():
        return None
    m = np.eye(4)
    offset = np.asarray(t.TransformPoint((0.0, 0.0, 0.0)), float)  # = ITK's offset, exactly
    if hasattr(t, "GetMatrix"):
        m[:3, :3] = np.asarray(t.GetMatrix(), float).reshape(3, 3)
    else:
        for a in range(3):
            e = np.zeros(3)
            e[a] = 1.0
            m[:3, a] = np.asarray(t.TransformPoint(tuple(e)), float) - offset
    m[:3, 3] = offset
    return m


def bspline_from_sitk(t, src: Space, dst: Space, outside: str = "zero", path=None) -> BSplineTransform:
    """A SimpleITK ``BSplineTransform`` (cubic) as a :class:`BSplineTransform` mapping points the same way."""
    order = t.GetOrder() if hasattr(t, "GetOrder") else 3
    if order != 3:
        raise InputError(f"atlasreg reads cubic B-splines; this one has order {order}", path=path, field="order")
    fixed = np.asarray(t.GetFixedParameters(), float)
    if fixed.size != 18:
        raise InputError(f"a 3-D BSplineTransform has 18 fixed parameters (grid size, origin, spacing, "
                         f"direction), this one {fixed.size}", path=path, field="FixedParameters")
    size = fixed[:3]
    if np.any(size != np.round(size)) or np.any(size < 4):
        raise InputError(f"B-spline grid size {size.tolist()} is not a whole number >= 4 per axis", path=path,
                         field="FixedParameters")
    size = size.astype(int)
    params = np.asarray(t.GetParameters(), float)
    if params.size != 3 * int(np.prod(size)):
        raise InputError(f"a B-spline grid of {size.tolist()} takes {3 * int(np.prod(size))} coefficients, the "
                         f"file holds {params.size}", path=path, field="Parameters")
    # ITK: all x coefficients, then y, then z; each in index order with x fastest.
    w = params.reshape(3, size[2], size[1], size[0]).transpose(3, 2, 1, 0)
    try:
        return BSplineTransform(w, spacing=fixed[6:9], origin=fixed[3:6], direction=fixed[9:18].reshape(3, 3),
                                src=src, dst=dst, outside=outside)
    except InputError as exc:
        raise InputError(str(exc), path=path, field="transform") from None


def bspline_to_sitk(T: BSplineTransform):
    """A :class:`BSplineTransform` as a SimpleITK ``BSplineTransform`` (``TransformPoint`` == ``map_points``
    for ``outside="zero"``)."""
    import SimpleITK as sitk

    b = sitk.BSplineTransform(3, 3)
    fixed = [*map(float, T.shape), *map(float, T.origin), *map(float, T.spacing), *map(float, T.direction.ravel())]
    b.SetFixedParameters(fixed)
    b.SetParameters(tuple(float(v) for v in T.coefficients.transpose(3, 2, 1, 0).ravel()))
    return b
