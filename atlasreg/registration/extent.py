"""Partial brains: which part of the atlas a moving image covers (a hemisphere, a coronal slab, the whole brain).

A hemisphere or a slab registered against the whole template pulls the initialisation (centres and spreads of
the two images) and the similarity metric towards tissue the sample does not have. :func:`extent_mask` gives
the part of the fixed (atlas) working grid the sample covers; the pipeline registers against the template
restricted to it. Everything works on the working images, after the moving one has been reoriented exactly
into the fixed orientation, so axis ``k`` means the same anatomical axis in both.

* ``"hemisphere-left"`` / ``"hemisphere-right"``: the fixed grid's half on that side of the middle of its
  left-right axis (the atlas midline for a centred atlas such as the CCF), plus ``margin`` µm across it.
* ``"slab"``: a window along the anterior-posterior axis as long as the sample's tissue, placed where the
  sample, initialised by centres of mass inside the window, correlates best with the atlas (a 1-D search,
  one working voxel apart).
* ``"auto"``: whole brain, hemisphere (which side from the sample's flat cut face) or slab, from the
  sample's tissue extent against the atlas's.

Example
-------
>>> mask, why = extent_mask("auto", fixed_w, fixed_tissue, moving_w, moving_tissue)   # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..volume import Volume

EXTENTS = ("whole", "hemisphere-left", "hemisphere-right", "slab", "auto")


def _axis(code: str, letters: str) -> int:
    for i, c in enumerate(code):
        if c in letters:
            return i
    raise InputError(f"orientation {code!r} has no {letters} axis", field="orientation")


def _extent_um(mask: np.ndarray, axis: int, spacing: float) -> tuple[float, float]:
    prof = mask.any(axis=tuple(a for a in range(3) if a != axis))
    idx = np.nonzero(prof)[0]
    if idx.size == 0:
        return 0.0, 0.0
    return float(idx[0] * spacing), float((idx[-1] + 1) * spacing)


def _area_profile(mask: np.ndarray, axis: int) -> np.ndarray:
    return mask.sum(axis=tuple(a for a in range(3) if a != axis)).astype(float)


def hemisphere_side(moving_tissue: np.ndarray, code: str) -> str:
    """``"left"`` or ``"right"``: the side of a hemisphere sample, from its flat cut face.

    The medial face, where the brain was cut at the midline, has the largest cross-section along the
    left-right axis; the lateral end tapers. The face lies at one end of the tissue's LR extent; the tissue
    lies on the other side of it.
    """
    ax = _axis(code, "lr")
    prof = _area_profile(moving_tissue, ax)
    idx = np.nonzero(prof)[0]
    if idx.size < 4:
        raise InputError("the sample's tissue is too thin along the left-right axis to tell which hemisphere it is",
                         field="extent")
    n = max(2, idx.size // 6)
    lo, hi = prof[idx[:n]].mean(), prof[idx[-n:]].mean()
    first = code[ax]  # the side index 0 of this axis points to
    # face at the index-0 end: the tissue lies away from `first`
    face_at_start = lo > hi
    if face_at_start:
        return "left" if first == "r" else "right"
    return "right" if first == "r" else "left"


def _slab_window(fixed: Volume, fixed_tissue: np.ndarray, moving: Volume, moving_tissue: np.ndarray,
                 ax: int) -> tuple[int, int, float]:
    """(start, stop) indices along the fixed AP axis where a slab as long as the moving tissue fits best, and
    the correlation there: each placement (one working voxel apart) is initialised by centres of mass inside
    its window and scored by the correlation of the moving image carried onto the fixed one."""
    from ..qc.metrics import ncc
    from ..volume import resample
    from .preprocess import initial_affine

    nz = np.nonzero(_area_profile(moving_tissue, ax))[0]
    L = int(nz[-1] - nz[0] + 1)
    n = fixed.shape[ax]
    if L >= n:
        return 0, n, 1.0
    idx = np.arange(n)
    shp = [1, 1, 1]
    shp[ax] = -1
    f = fixed.numpy()
    best = (-np.inf, 0)
    for k in range(0, n - L + 1):
        win = np.broadcast_to(((idx >= k) & (idx < k + L)).reshape(shp), fixed.shape)
        fm = fixed_tissue & win
        if not fm.any():
            continue
        init = initial_affine(fixed.with_data(np.where(win, f, 0)), moving, fm, moving_tissue, "com")
        score = float(ncc(f, np.asarray(resample(moving, init, fixed.grid)), fm))
        if np.isfinite(score) and score > best[0]:
            best = (score, k)
    return best[1], best[1] + L, best[0]


def extent_mask(extent: str, fixed: Volume, fixed_tissue: np.ndarray, moving: Volume, moving_tissue: np.ndarray,
                margin: float = 400.0) -> tuple[np.ndarray | None, str]:
    """The part of the fixed working grid the moving image covers: (bool mask or None for the whole grid, what).

    Parameters
    ----------
    extent : one of :data:`EXTENTS`
    fixed, moving : working images on one isotropic spacing, the moving one already in the fixed orientation
    fixed_tissue, moving_tissue : their brain masks
    margin : µm added around the covered part (across the midline; before and after a slab)

    Raises
    ------
    InputError
        Unknown extent; a sample with no tissue; (``"auto"``) a sample that covers too little of the atlas.
    """
    if extent not in EXTENTS:
        raise InputError(f"extent must be one of {', '.join(EXTENTS)}, got {extent!r}", field="extent")
    code = fixed.orientation
    sp = float(fixed.voxel_size[0])
    if not moving_tissue.any():
        raise InputError("the moving image has no tissue to register (its brain mask is empty)", field="extent")
    lr, ap = _axis(code, "lr"), _axis(code, "ap")
    why = ""
    if extent == "auto":
        f_lr, m_lr = np.diff(_extent_um(fixed_tissue, lr, sp))[0], np.diff(_extent_um(moving_tissue, lr, sp))[0]
        f_ap, m_ap = np.diff(_extent_um(fixed_tissue, ap, sp))[0], np.diff(_extent_um(moving_tissue, ap, sp))[0]
        lr_frac, ap_frac = m_lr / max(f_lr, 1e-9), m_ap / max(f_ap, 1e-9)
        if lr_frac > 0.75 and ap_frac > 0.75:
            extent = "whole"
        elif lr_frac <= 0.75 and ap_frac > 0.6:
            extent = f"hemisphere-{hemisphere_side(moving_tissue, code)}"
        else:
            extent = "slab"
        why = f" (auto: tissue spans {lr_frac:.0%} of the atlas's left-right and {ap_frac:.0%} of its " \
              "anterior-posterior extent)"
    if extent == "whole":
        return None, "whole brain" + why
    shape = fixed.shape
    idx = np.arange(shape[lr if extent.startswith("hemisphere") else ap])
    m = int(round(margin / sp))
    if extent.startswith("hemisphere"):
        side = extent.split("-")[1][0]  # "l" / "r"
        n = shape[lr]
        keep = idx < n / 2 + m if code[lr] == side else idx >= n / 2 - m
        what = f"{extent.split('-')[1]} hemisphere"
    else:
        a, b, r = _slab_window(fixed, fixed_tissue, moving, moving_tissue, ap)
        keep = (idx >= a - m) & (idx < b + m)
        what = f"coronal slab {a * sp:.0f}-{b * sp:.0f} µm along axis {ap} (correlation {r:.2f} there)"
    shp = [1, 1, 1]
    shp[lr if extent.startswith("hemisphere") else ap] = -1
    mask = np.broadcast_to(keep.reshape(shp), shape).copy()
    return mask, what + why


def check_overlap(init, fixed: Volume, fixed_tissue: np.ndarray, moving: Volume, moving_tissue: np.ndarray,
                  minimum: float = 0.4, where: str = "atlas") -> float:
    """Share of the moving tissue that the initial map puts on the fixed tissue; too little raises.

    ``init`` maps fixed points to moving points (the pull-back); its inverse carries moving tissue into
    the fixed grid.
    """
    idx = np.argwhere(moving_tissue)
    if len(idx) > 20000:
        idx = idx[np.random.default_rng(0).choice(len(idx), 20000, replace=False)]
    p = init.inverse().map_points(moving.index_to_physical(idx))
    q = np.round(fixed.physical_to_index(p)).astype(int)
    ok = np.all((q >= 0) & (q < np.array(fixed.shape)), axis=1)
    hit = np.zeros(len(q), bool)
    hit[ok] = fixed_tissue[q[ok, 0], q[ok, 1], q[ok, 2]]
    share = float(hit.mean())
    if share < minimum:
        raise InputError(f"after initialisation only {share:.0%} of the sample's tissue lies on the {where}'s "
                         "tissue: too little overlap to register. If the sample is part of a brain, say which "
                         "part (extent: hemisphere-left, hemisphere-right, slab, auto); check the orientation "
                         "code too", field="extent")
    return share
