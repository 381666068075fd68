"""QC numbers: landmark error, label overlap, transform regularity and image similarity.

Example
-------
>>> from atlasreg.qc import tre, dice, jacobian_determinant, folding_fraction
>>> tre(T.map_points(src_pts), dst_pts)["median"]                     # doctest: +SKIP
>>> det = jacobian_determinant(result.transform, atlas.reference.grid)  # doctest: +SKIP
>>> folding_fraction(det)                                              # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..spaces import as_voxel_size


def _points(p, name: str) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    if a.ndim == 1 and a.shape[0] == 3:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != 3:
        raise InputError(f"{name} must be (N, 3) points, got shape {a.shape}", field=name)
    return a


def point_errors(predicted, truth) -> np.ndarray:
    """Euclidean distance of each predicted point from its true position (NaN where unmapped).

    Example
    -------
    >>> point_errors([[0, 0, 0], [1, 1, 1]], [[3, 4, 0], [1, 1, 1]])
    array([5., 0.])
    """
    p, t = _points(predicted, "predicted"), _points(truth, "truth")
    if p.shape != t.shape:
        raise InputError(f"predicted {p.shape} and truth {t.shape} must pair point for point",
                         field="predicted")
    return np.linalg.norm(p - t, axis=1)


def tre(predicted, truth) -> dict:
    """Target registration error summary: mean, median, p95, max, RMS over mapped points.

    Points a transform could not map (NaN rows) are counted in ``n_unmapped`` and left out of
    the statistics rather than silently turned into numbers.

    Example
    -------
    >>> s = tre([[0, 0, 0], [1, 1, 1]], [[3, 4, 0], [1, 1, 1]])
    >>> s["mean"], s["max"], s["n"]
    (2.5, 5.0, 2)
    """
    e = point_errors(predicted, truth)
    ok = np.isfinite(e)
    out = {"n": int(len(e)), "n_unmapped": int((~ok).sum())}
    v = e[ok]
    if v.size == 0:
        out.update(mean=float("nan"), median=float("nan"), p95=float("nan"), max=float("nan"),
                   rms=float("nan"))
        return out
    out.update(mean=float(v.mean()), median=float(np.median(v)), p95=float(np.percentile(v, 95)),
               max=float(v.max()), rms=float(np.sqrt(np.mean(v ** 2))))
    return out


def _labels(a, name: str) -> np.ndarray:
    arr = a.numpy() if hasattr(a, "numpy") and hasattr(a, "voxel_size") else np.asarray(a)
    if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
        # Labels interpolated linearly are no labels: insist on nearest-neighbour warps.
        if not np.all(np.mod(arr[np.isfinite(arr)], 1) == 0):
            raise InputError(f"{name} holds non-integer values; warp label images with "
                             "interpolation='nearest'", field=name)
    return arr.astype(np.int64, copy=False)


def dice(a, b, labels=None) -> dict:
    """Dice overlap ``2|A∩B| / (|A|+|B|)`` per label of two label images on one grid.

    Parameters
    ----------
    a, b : label arrays or Volumes of the same shape
    labels : labels to score; default every non-zero label present in either image

    Returns
    -------
    dict label -> Dice (NaN for a label absent from both)

    Example
    -------
    >>> a = np.zeros((4, 4, 4), int); a[:2] = 1
    >>> b = np.zeros((4, 4, 4), int); b[:3] = 1
    >>> round(dice(a, b)[1], 3)
    0.8
    """
    x, y = _labels(a, "a").ravel(), _labels(b, "b").ravel()
    if x.shape != y.shape:
        raise InputError(f"label images must share one grid; shapes {np.shape(a)} and {np.shape(b)} differ",
                         field="a")
    ux, cx = np.unique(x, return_counts=True)
    uy, cy = np.unique(y, return_counts=True)
    same = x == y
    ui, ci = np.unique(x[same], return_counts=True)
    size_a = dict(zip(ux.tolist(), cx.tolist()))
    size_b = dict(zip(uy.tolist(), cy.tolist()))
    inter = dict(zip(ui.tolist(), ci.tolist()))
    if labels is None:
        labels = sorted((set(size_a) | set(size_b)) - {0})
    out = {}
    for lab in labels:
        lab = int(lab)
        s = size_a.get(lab, 0) + size_b.get(lab, 0)
        out[lab] = float("nan") if s == 0 else 2.0 * inter.get(lab, 0) / s
    return out


def jacobian_determinant(transform, grid, block_voxels: int = 2_000_000) -> np.ndarray:
    """Determinant of the Jacobian of ``transform`` at every voxel centre of ``grid``.

    ``grid`` (a Grid or Volume) lies in ``transform.src``. The map is evaluated once per voxel and
    differentiated along the grid (central differences inside, one-sided at the faces), so any
    transform works: affine, field, spline or a chain. The value is a pure volume ratio: a unit
    change between ``src`` and ``dst`` (e.g. nm -> µm) is divided out. Voxels that map outside a
    field's domain are NaN. ``det <= 0`` means the transform folds space there.

    Example
    -------
    >>> from atlasreg import Affine, Grid, Space
    >>> det = jacobian_determinant(Affine.from_scale(2.0, "a", "b"), Grid((4, 4, 4), (1, 1, 1), Space("a")))
    >>> round(float(det[1, 1, 1]), 9)
    8.0
    """
    from ..spaces import unit_scale
    from ..volume import as_grid

    g = as_grid(grid)
    if g.space.name != transform.src.name:
        raise InputError(f"grid is in space {g.space.name!r} but the transform starts in "
                         f"{transform.src.name!r}", field="grid")
    shape = tuple(int(s) for s in g.shape)
    if min(shape) < 2:
        raise InputError(f"a Jacobian needs at least 2 voxels per axis, grid shape {shape}", field="grid")
    out = np.empty(shape, dtype=np.float64)
    scale = unit_scale(transform.dst.unit, transform.src.unit) ** 3 / np.linalg.det(g.affine[:3, :3])
    jk = np.indices(shape[1:], dtype=np.float64).reshape(2, -1).T
    per_slab = max(1, block_voxels // (shape[1] * shape[2]))
    for start in range(0, shape[0], per_slab):
        stop = min(shape[0], start + per_slab)
        lo, hi = max(0, start - 1), min(shape[0], stop + 1)  # one halo row each side for the gradient
        i = np.repeat(np.arange(lo, hi, dtype=np.float64), len(jk))
        pts = g.index_to_physical(np.column_stack([i, np.tile(jk, (hi - lo, 1))]))
        y = transform.map_points(pts).reshape((hi - lo,) + shape[1:] + (3,))
        # dY/d(index) per index axis; det(dY/dp) = det(dY/di) / det(di -> dp)
        dydi = np.stack([np.gradient(y, axis=a) for a in range(3)], axis=-1)
        out[start:stop] = np.linalg.det(dydi[start - lo: start - lo + (stop - start)]) * scale
    det = out
    return det


def folding_fraction(jacobian, mask=None) -> float:
    """Fraction of voxels (inside ``mask``, where finite) whose Jacobian determinant is <= 0.

    Example
    -------
    >>> folding_fraction(np.array([1.0, 0.5, -0.1, np.nan]))
    0.3333333333333333
    """
    d = np.asarray(jacobian.numpy() if hasattr(jacobian, "numpy") else jacobian, dtype=np.float64)
    ok = np.isfinite(d)
    if mask is not None:
        m = np.asarray(mask, bool)
        if m.shape != d.shape:
            raise InputError(f"mask shape {m.shape} differs from the Jacobian's {d.shape}", field="mask")
        ok &= m
    n = int(ok.sum())
    return float("nan") if n == 0 else float((d[ok] <= 0).sum() / n)


def _pair(a, b, mask):
    x = np.asarray(a.numpy() if hasattr(a, "voxel_size") else a, dtype=np.float64)
    y = np.asarray(b.numpy() if hasattr(b, "voxel_size") else b, dtype=np.float64)
    if x.shape != y.shape:
        raise InputError(f"images must share one grid; shapes {x.shape} and {y.shape} differ", field="b")
    ok = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        m = np.asarray(mask, bool)
        if m.shape != x.shape:
            raise InputError(f"mask shape {m.shape} differs from the images' {x.shape}", field="mask")
        ok &= m
    return x[ok], y[ok]


def ncc(a, b, mask=None) -> float:
    """Normalised cross-correlation (Pearson's r) of two images on one grid, in [-1, 1].

    Example
    -------
    >>> x = np.random.default_rng(0).random((8, 8, 8))
    >>> round(ncc(x, 3 * x + 1), 6)
    1.0
    """
    x, y = _pair(a, b, mask)
    if x.size < 2:
        return float("nan")
    x = x - x.mean()
    y = y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float("nan") if den == 0 else float((x * y).sum() / den)


def mutual_information(a, b, bins: int = 32, mask=None, normalized: bool = False) -> float:
    """Mutual information (nats) of the joint intensity histogram; ``normalized`` gives
    ``(H(A) + H(B)) / H(A, B)`` (1 = independent, 2 = identical).

    Example
    -------
    >>> x = np.random.default_rng(0).random((16, 16, 16))
    >>> mutual_information(x, x) > mutual_information(x, np.random.default_rng(1).random(x.shape))
    True
    """
    x, y = _pair(a, b, mask)
    if x.size < 2:
        return float("nan")
    h, _, _ = np.histogram2d(x, y, bins=int(bins))
    p = h / h.sum()
    px, py = p.sum(1), p.sum(0)

    def ent(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    hx, hy, hxy = ent(px), ent(py), ent(p.ravel())
    if normalized:
        return float("nan") if hxy == 0 else (hx + hy) / hxy
    return hx + hy - hxy


# -- anatomy without landmarks: symmetry, outline, dark structures, region volumes ------------------------

def _mask(m, name: str) -> np.ndarray:
    arr = np.asarray(m.numpy() if hasattr(m, "voxel_size") else m)
    if arr.ndim != 3:
        raise InputError(f"{name} must be a 3-D mask, got shape {arr.shape}", field=name)
    return arr.astype(bool, copy=False)


def plane_distances(points, normal, offset: float) -> np.ndarray:
    """Distance of each point from the plane ``normal · x = offset`` (``normal`` need not be unit length).

    Example
    -------
    >>> plane_distances([[0, 0, 7.0], [1, 2, 3.0]], [0, 0, 2.0], 10.0)
    array([2., 2.])
    """
    p = _points(points, "points")
    n = np.asarray(normal, dtype=np.float64).reshape(3)
    norm = np.linalg.norm(n)
    if not np.isfinite(norm) or norm == 0:
        raise InputError(f"normal must be a non-zero 3-vector, got {normal}", field="normal")
    return np.abs(p @ (n / norm) - float(offset) / norm)


def label_interface(labels, a: int, b: int, voxel_size, mask=None) -> np.ndarray:
    """Points (µm) where a voxel labelled ``a`` touches a face neighbour labelled ``b``: the midpoints of
    those voxel pairs, in the array frame (voxel centre ``i`` at ``i * voxel_size``).

    With hemisphere labels warped onto a sample (1 left, 2 right) these are the atlas midline in the sample.
    ``mask``: keep only pairs with both voxels inside it (e.g. the brain).

    Example
    -------
    >>> lab = np.ones((2, 1, 4), int); lab[..., 2:] = 2
    >>> label_interface(lab, 1, 2, (10, 10, 10))
    array([[ 0.,  0., 15.],
           [10.,  0., 15.]])
    """
    lab = _labels(labels, "labels")
    if lab.ndim != 3:
        raise InputError(f"labels must be 3-D, got shape {lab.shape}", field="labels")
    vs = as_voxel_size(voxel_size)
    m = None if mask is None else _mask(mask, "mask")
    if m is not None and m.shape != lab.shape:
        raise InputError(f"mask shape {m.shape} differs from the labels' {lab.shape}", field="mask")
    out = []
    for ax in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        x, y = lab[tuple(lo)], lab[tuple(hi)]
        hit = ((x == a) & (y == b)) | ((x == b) & (y == a))
        if m is not None:
            hit &= m[tuple(lo)] & m[tuple(hi)]
        idx = np.argwhere(hit).astype(np.float64)
        idx[:, ax] += 0.5
        out.append(idx * vs)
    return np.concatenate(out) if out else np.zeros((0, 3))


def _boundary(m: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return m & ~ndi.binary_erosion(m, border_value=0)


def surface_distances(mask_a, mask_b, voxel_size) -> dict:
    """Distances (µm) between the boundaries of two masks on one grid, both directions pooled.

    A boundary voxel is a mask voxel with a face neighbour outside the mask; each boundary voxel of one mask
    is scored by its distance to the nearest boundary voxel of the other. Returns ``median``, ``p95``, ``mean``,
    the same per direction (``a_to_b``, ``b_to_a``: medians) and ``dice`` of the two masks.

    Example
    -------
    >>> a = np.zeros((20, 20, 20), bool); a[5:15, 5:15, 5:15] = True
    >>> b = np.zeros_like(a); b[5:15, 5:15, 7:17] = True
    >>> d = surface_distances(a, b, 10.0)
    >>> d["dice"], d["median"]
    (0.8, 0.0)
    """
    from scipy import ndimage as ndi

    a, b = _mask(mask_a, "mask_a"), _mask(mask_b, "mask_b")
    if a.shape != b.shape:
        raise InputError(f"masks must share one grid; shapes {a.shape} and {b.shape} differ", field="mask_b")
    vs = as_voxel_size(voxel_size)
    if not a.any() or not b.any():
        raise InputError("surface_distances needs two non-empty masks", field="mask_a" if not a.any() else "mask_b")
    both = a | b
    # crop to the masks' bounding box (plus a voxel) so that the distance maps stay small
    nz = np.argwhere(both)
    lo = np.maximum(nz.min(0) - 1, 0)
    hi = np.minimum(nz.max(0) + 2, a.shape)
    box = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    a, b = np.pad(a[box], 1), np.pad(b[box], 1)
    ba, bb = _boundary(a), _boundary(b)
    da = ndi.distance_transform_edt(~bb, sampling=vs)[ba]
    db = ndi.distance_transform_edt(~ba, sampling=vs)[bb]
    pooled = np.concatenate([da, db])
    inter = np.count_nonzero(a & b)
    return {"median": float(np.median(pooled)), "p95": float(np.percentile(pooled, 95)),
            "mean": float(pooled.mean()), "a_to_b": float(np.median(da)), "b_to_a": float(np.median(db)),
            "a_to_b_p95": float(np.percentile(da, 95)), "b_to_a_p95": float(np.percentile(db, 95)),
            "dice": float(2.0 * inter / (np.count_nonzero(a) + np.count_nonzero(b)))}


def dark_mask(image, inside, fraction: float, voxel_size=None, smooth_um: float = 0.0) -> np.ndarray:
    """The darkest ``fraction`` of the voxels inside a mask: a threshold segmentation of dark structures
    (e.g. the ventricles in autofluorescence), optionally after a Gaussian smoothing of ``smooth_um`` µm.

    The threshold is the ``fraction`` quantile of the (smoothed) intensities inside ``inside``; ties at the
    threshold are all kept. Returns a boolean mask on the image's grid.

    Example
    -------
    >>> img = np.ones((10, 10, 10)); img[4:6, 4:6, 4:6] = 0.1
    >>> int(dark_mask(img, np.ones(img.shape, bool), 0.008).sum())
    8
    """
    arr = np.asarray(image.numpy() if hasattr(image, "voxel_size") else image, dtype=np.float32)
    m = _mask(inside, "inside")
    if arr.shape != m.shape:
        raise InputError(f"inside has shape {m.shape}, the image {arr.shape}", field="inside")
    if not 0.0 < float(fraction) < 1.0:
        raise InputError(f"fraction must lie in (0, 1), got {fraction}", field="fraction")
    if not m.any():
        raise InputError("inside is empty: no voxel to threshold", field="inside")
    if smooth_um > 0:
        from scipy import ndimage as ndi

        if voxel_size is None:
            raise InputError("smooth_um needs voxel_size", field="voxel_size")
        arr = ndi.gaussian_filter(arr, float(smooth_um) / as_voxel_size(voxel_size))
    thr = np.quantile(arr[m], float(fraction))
    return m & (arr <= thr)


def volume_agreement(volumes, reference, min_volume: float = 0.0) -> dict:
    """How well per-region volumes agree with reference volumes: over the regions in both with a reference
    volume above ``min_volume``, Pearson's r, Spearman's rank correlation, and the median of the relative
    difference ``|v - ref| / ref`` (and its signed median: a systematic over- or under-estimate).

    Example
    -------
    >>> r = volume_agreement({"a": 1.1, "b": 2.0, "c": 3.3}, {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0})
    >>> r["n"], round(r["median_abs_rel_diff"], 3)
    (3, 0.1)
    """
    from scipy import stats

    keys = [k for k in volumes if k in reference and reference[k] > min_volume
            and np.isfinite(volumes[k]) and np.isfinite(reference[k])]
    if len(keys) < 3:
        raise InputError(f"only {len(keys)} regions in common; need at least 3", field="volumes")
    v = np.array([float(volumes[k]) for k in keys])
    r = np.array([float(reference[k]) for k in keys])
    rel = (v - r) / r
    return {"n": len(keys), "pearson": float(np.corrcoef(v, r)[0, 1]),
            "spearman": float(stats.spearmanr(v, r)[0]), "median_abs_rel_diff": float(np.median(np.abs(rel))),
            "median_rel_diff": float(np.median(rel))}
