"""Registration preprocessing: input checks, working-resolution images, intensity normalisation, brain masks
and the initial alignment (centre of mass / moments).

Everything here is cheap next to the registration itself and runs first, so bad input fails in seconds.

Examples
--------
>>> from atlasreg.registration.preprocess import check_volume, to_working, normalise, auto_mask
>>> check_volume(sample, "moving")                                   # doctest: +SKIP
>>> w = to_working(sample, 80.0)          # smoothed, resampled to 80 µm, same physical frame  # doctest: +SKIP
>>> m = auto_mask(w.numpy(), w.voxel_size, dilate=240.0)             # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..transforms.base import Affine
from ..volume import Volume


def _where(vol: Volume, name: str) -> str:
    return f"{name} volume ({vol.space.name!r}, shape {vol.shape})"


def check_volume(vol: Volume, name: str, path=None) -> None:
    """Reject what cannot be registered: not a Volume, too small, non-finite, empty or constant."""
    if not isinstance(vol, Volume):
        raise InputError(f"{name} must be an atlasreg.Volume (read it with atlasreg.read_volume or wrap an array "
                         f"in Volume(arr, voxel_size=..., orientation=...)), got {type(vol).__name__}",
                         path=path, field=name)
    if min(vol.shape) < 4:
        raise InputError(f"{_where(vol, name)} is too small to register (every axis needs >= 4 voxels)",
                         path=path, field=name)
    arr = vol.numpy()
    if arr.dtype.kind not in "uifb":
        raise InputError(f"{_where(vol, name)} has non-numeric dtype {arr.dtype}", path=path, field=name)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{_where(vol, name)} contains NaN or infinite values; replace them (e.g. with 0)",
                         path=path, field=name)
    lo, hi = arr.min(), arr.max()
    if lo == hi:
        what = "empty (all zero)" if hi == 0 else f"constant (every voxel is {hi})"
        raise InputError(f"{_where(vol, name)} is {what}: there is nothing to register. Check the file and the "
                         "channel you read", path=path, field=name)


def check_voxel_size(vol: Volume, name: str, given: bool | None = None, path=None) -> None:
    """Light-sheet stacks are anisotropic: a default 1.0 spacing almost always means it was forgotten."""
    if given is False or np.allclose(vol.voxel_size, 1.0):
        raise InputError(f"{_where(vol, name)} has no voxel size (spacing {tuple(vol.voxel_size)}): give the "
                         "physical size of a voxel per axis in µm, e.g. voxel_size=(50, 40, 40) / "
                         "--voxel-size 50 40 40", path=path, field="voxel_size")


def to_working(vol: Volume, spacing: float, data: np.ndarray | None = None) -> Volume:
    """Gaussian-smooth (anti-alias) and resample ``vol`` to isotropic ``spacing``, keeping its physical frame.

    Integer block averaging (``BinShrink``) then a Gaussian for the remaining factor, then linear resampling.
    The result covers the same physical box (origin, direction kept), float32; axes already coarser than
    ``spacing`` are only resampled.
    """
    import SimpleITK as sitk

    src = vol if data is None else vol.with_data(data)
    img = sitk.Cast(src.to_sitk(), sitk.sitkFloat32)
    sp = np.asarray(vol.voxel_size, float)
    tgt = float(spacing)
    # integer block averaging first (cheap, and it is the anti-aliasing for most of the way) ...
    shrink = np.maximum(np.floor(tgt / sp + 1e-6), 1).astype(int)
    if np.any(shrink > 1):
        img = sitk.BinShrink(img, [int(v) for v in shrink])
    # ... then a Gaussian for what is left, so the new sampling is (roughly) band-limited
    sp2 = np.asarray(img.GetSpacing(), float)
    sig = np.sqrt(np.maximum((tgt / sp2) ** 2 - 1.0, 0.0)) * sp2 / 2.0
    if np.any(sig > 1e-3 * tgt):
        img = sitk.SmoothingRecursiveGaussian(img, [float(max(v, 1e-3 * tgt)) for v in sig])
    size = [max(2, int(round(n * s / tgt))) for n, s in zip(vol.shape, sp)]
    origin = src.origin  # voxel 0 of the new grid at voxel 0 of the old: same physical frame
    out = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, tuple(float(v) for v in origin),
                        (tgt, tgt, tgt), tuple(float(v) for v in src.direction.ravel()), 0.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(out).transpose(2, 1, 0)
    return Volume(np.ascontiguousarray(arr), tgt, vol.origin, vol.direction, vol.space)


def pad(vol: Volume, margin: float, value: float = 0.0, faces: np.ndarray | None = None) -> Volume:
    """``vol`` with ``ceil(margin / voxel size)`` voxels of ``value`` added on every side (or on the ``faces``
    chosen: a (3, 2) bool array, ``[axis, 0]`` the index-0 face, ``[axis, 1]`` the far one), same physical frame.

    Examples
    --------
    >>> v = pad(Volume(np.ones((4, 4, 4), np.float32), 10.0), 25.0)
    >>> v.shape, v.origin.tolist()
    ((10, 10, 10), [-30.0, -30.0, -30.0])
    >>> pad(Volume(np.ones((4, 4, 4), np.float32), 10.0), 25.0, faces=[[True, False], [False, False], [False, True]]).shape
    (7, 4, 7)
    """
    k = np.ceil(float(margin) / vol.voxel_size - 1e-9).astype(int)
    sides = np.ones((3, 2), bool) if faces is None else np.asarray(faces, bool).reshape(3, 2)
    widths = k[:, None] * sides
    if not widths.any():
        return vol
    arr = np.pad(vol.numpy(), [(int(a), int(b)) for a, b in widths], constant_values=value)
    origin = vol.origin - vol.direction @ (widths[:, 0] * vol.voxel_size)
    return Volume(arr, vol.voxel_size, origin, vol.direction, vol.space)


def occupied_span(mask: np.ndarray, axis: int) -> tuple[int, int] | None:
    """The first and last index along ``axis`` at which ``mask`` holds anything (None for an empty mask).

    Examples
    --------
    >>> m = np.zeros((4, 5, 6), bool); m[1:3, 2, 5] = True
    >>> occupied_span(m, 0), occupied_span(m, 2), occupied_span(m & False, 1)
    ((1, 2), (5, 5), None)
    """
    idx = np.nonzero(np.asarray(mask, bool).any(axis=tuple(a for a in range(3) if a != axis)))[0]
    return (int(idx[0]), int(idx[-1])) if idx.size else None


def faces_reached(mask: np.ndarray, voxel_size, within: float) -> np.ndarray:
    """Which faces of the grid ``mask`` comes within ``within`` µm of: (3, 2) bool, as :func:`pad`'s ``faces``.

    Examples
    --------
    >>> m = np.zeros((10, 10, 10), bool); m[0:5, 3:7, 3:9] = True
    >>> faces_reached(m, 100.0, 150.0).tolist()
    [[True, False], [False, False], [False, True]]
    """
    m = np.asarray(mask, bool)
    out = np.zeros((3, 2), bool)
    vs = np.broadcast_to(np.asarray(voxel_size, float), (3,))
    for ax in range(3):
        span = occupied_span(m, ax)
        if span is None:
            return out
        # voxels between the face's own layer and the first one with tissue, in µm (0: tissue on the border)
        out[ax] = span[0] * vs[ax] < within, (m.shape[ax] - 1 - span[1]) * vs[ax] < within
    return out


def normalise(arr: np.ndarray, low: float = 0.5, high: float = 99.5, mask: np.ndarray | None = None) -> np.ndarray:
    """Map the ``low``..``high`` percentiles (inside ``mask`` if given) to 0..1, clipped; float32."""
    a = np.asarray(arr, np.float32)
    ref = a[mask] if mask is not None and mask.any() else a
    lo, hi = np.percentile(ref, [low, high])
    if hi <= lo:
        hi = lo + max(float(np.abs(lo)) * 1e-6, 1e-6)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def image_interior(shape, margin: int = 1) -> np.ndarray:
    """True on every voxel at least ``margin`` voxels inside the image, False on its outer ``margin`` layers.

    A registration metric given this as the moving mask ignores the fixed points whose counterpart falls outside
    the moving image (or on its last voxel, where interpolation reads the zero beyond it): ANTs otherwise compares
    them with zeros and pulls the field towards tissue the moving image never showed.

    Examples
    --------
    >>> int(image_interior((4, 3, 5)).sum())   # (4 - 2) * (3 - 2) * (5 - 2)
    6
    """
    inside = np.zeros(tuple(int(n) for n in shape), bool)
    inside[tuple(slice(margin, n - margin) for n in inside.shape)] = True
    return inside


def auto_mask(arr: np.ndarray, spacing, dilate: float = 240.0, log_intensity: bool = False) -> np.ndarray:
    """A brain mask: Otsu threshold of the smoothed image, largest connected part, holes filled, dilated by
    ``dilate`` µm (so the metric sees the brain's edge against the background).

    ``log_intensity``: threshold ``log(1 + intensity)`` instead, which separates tissue from background where
    the tissue itself spans a wide range (a light-sheet brain whose dark interior Otsu would call background).
    """
    from scipy import ndimage as ndi
    import SimpleITK as sitk

    sp = np.asarray(np.broadcast_to(spacing, (3,)), float)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(arr, np.float32).transpose(2, 1, 0)))
    img.SetSpacing(tuple(sp))
    sm = sitk.SmoothingRecursiveGaussian(img, float(sp.max()))
    if log_intensity:
        sm = sitk.Log(sitk.Clamp(sm, sitk.sitkFloat32, 0.0) + 1.0)
    fg = sitk.GetArrayFromImage(sitk.OtsuThreshold(sm, 0, 1)).transpose(2, 1, 0).astype(bool)
    lab, n = ndi.label(fg)
    if n == 0:
        return np.ones(arr.shape, bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    mask = ndi.binary_fill_holes(lab == int(sizes.argmax()))
    r = np.maximum(np.round(dilate / sp).astype(int), 0)
    if r.any():
        st = np.zeros(tuple(2 * r + 1), bool)
        zz = np.indices(st.shape) - r[:, None, None, None]
        st[((zz / np.maximum(r, 1)[:, None, None, None]) ** 2).sum(0) <= 1.0] = True
        mask = ndi.binary_dilation(mask, st)
    return mask


def check_mask(mask, vol: Volume, name: str) -> np.ndarray:
    """A user mask must have the volume's shape and overlap its content."""
    m = mask.numpy() if isinstance(mask, Volume) else np.asarray(mask)
    if m.shape != vol.shape:
        raise InputError(f"{name} has shape {m.shape} but its volume has shape {vol.shape}; a mask is given on the "
                         "grid of its volume", field=name)
    m = m.astype(bool)
    if not m.any():
        raise InputError(f"{name} is empty: it selects no voxel", field=name)
    arr = vol.numpy()
    thr = np.percentile(arr, 50)
    inside = arr[m]
    if not (inside > thr).any():
        raise InputError(f"{name} does not overlap the image content: every voxel it selects is background "
                         f"(<= the median intensity {thr:g}). Is it the mask of another image or flipped?",
                         field=name)
    return m


def _weights(arr: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The intensities that place a centre of mass: inside ``mask``, above the median (background does not pull);
    all ones when nothing is left."""
    w = np.asarray(arr, np.float64)
    if mask is not None:
        w = w * mask
    w = np.clip(w - np.percentile(w, 50), 0, None)
    return w if w.sum() > 0 else np.ones_like(w)


def centre_of_mass(vol: Volume, mask: np.ndarray | None = None) -> np.ndarray:
    """The intensity-weighted centre (physical) of ``vol`` inside ``mask``, as :func:`initial_affine` weighs it;
    through one profile per axis (the index → physical map is affine), not a point per voxel.

    Examples
    --------
    >>> a = np.zeros((4, 4, 4)); a[3, 1, 2] = 5.0
    >>> centre_of_mass(Volume(a, voxel_size=10.0)).tolist()
    [30.0, 10.0, 20.0]
    """
    w = _weights(vol.numpy(), mask)
    tot = w.sum()
    mean_index = [float((w.sum(axis=tuple(b for b in range(3) if b != a)) * np.arange(w.shape[a])).sum() / tot)
                  for a in range(3)]
    return vol.index_to_physical(np.array([mean_index]))[0]


def _moments(arr: np.ndarray, vol: Volume, mask: np.ndarray | None):
    ww = _weights(arr, mask).ravel()
    idx = np.indices(arr.shape, dtype=np.float64).reshape(3, -1).T
    tot = ww.sum()
    pts = vol.index_to_physical(idx)
    com = (pts * ww[:, None]).sum(0) / tot
    d = pts - com
    cov = (d * ww[:, None]).T @ d / tot
    return com, cov


def initial_affine(fixed: Volume, moving: Volume, fixed_mask=None, moving_mask=None,
                   method: str = "moments", cut_axis: int | None = None) -> Affine:
    """Initial map of FIXED points to MOVING points (the pull-back an ANTs/ITK initial transform holds).

    ``"com"`` aligns the centres of mass; ``"moments"`` also matches the spread along each (already
    reoriented, so corresponding) axis — a cleared brain is often 10-20 % smaller or larger than the template.
    ``cut_axis``: the axis across which the sample was cut (part of a brain): its spread says nothing of the
    scale there, which is taken as the mean of the other two axes' scales.
    """
    if method == "none":
        return Affine.identity(fixed.space, moving.space)
    cf, Cf = _moments(fixed.numpy(), fixed, fixed_mask)
    cm, Cm = _moments(moving.numpy(), moving, moving_mask)
    S = np.eye(3)
    if method == "moments":
        s = np.sqrt(np.clip(np.diag(Cm), 1e-12, None) / np.clip(np.diag(Cf), 1e-12, None))
        if cut_axis is not None:
            s[cut_axis] = np.mean([s[a] for a in range(3) if a != cut_axis])
        S = np.diag(np.clip(s, 0.5, 2.0))
    m = np.eye(4)
    m[:3, :3] = S
    m[:3, 3] = cm - S @ cf
    return Affine(m, fixed.space, moving.space)
