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

import os

import numpy as np

from ..errors import InputError
from ..spaces import opposite_side, side_name
from ..volume import Volume
from .preprocess import occupied_span

EXTENTS = ("whole", "hemisphere-left", "hemisphere-right", "slab", "auto")


def _axis(code: str, letters: str) -> int:
    for i, c in enumerate(code):
        if c in letters:
            return i
    raise InputError(f"orientation {code!r} has no {letters} axis", field="orientation")


def _extent_um(mask: np.ndarray, axis: int, spacing: float) -> tuple[float, float]:
    span = occupied_span(mask, axis)
    if span is None:
        return 0.0, 0.0
    return float(span[0] * spacing), float((span[1] + 1) * spacing)


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
                 ax: int):
    """Where along the fixed AP axis a slab as long as the moving tissue fits best: (start, stop, correlation,
    initial pull-back). Each placement (one working voxel apart) is initialised by centres of mass inside its
    window and scored by the correlation, over the sample's tissue, of the sample with the fixed image carried
    onto it; the best one is then initialised by moments across the slab, its scale along the slab's axis (which
    a slab does not measure) being the mean of the other two.

    The score looks at the same voxels (the sample's) for every placement. Scored over each window's fixed
    tissue instead, a window holding less of the sample's anatomy could win: on bench_partial's slab the chosen
    window's centre was 650 µm posterior of the true one (now 50 µm); on CCF template slabs turned 10° about the
    left-right axis, up to 460 µm off (now within one 100 µm working voxel). Only the sample's tissue is sampled,
    and its centre of mass is taken once: the search takes seconds, not the half minute of resampling whole grids.
    """
    from ..qc.metrics import ncc
    from ..volume import sample_points
    from .preprocess import centre_of_mass, initial_affine

    nz = np.nonzero(_area_profile(moving_tissue, ax))[0]
    L = int(nz[-1] - nz[0] + 1)
    n = fixed.shape[ax]
    idx = np.arange(n)
    tissue_points = moving.index_to_physical(np.argwhere(moving_tissue))
    tissue_values = moving.numpy()[moving_tissue]
    moving_centre = centre_of_mass(moving, moving_tissue)

    def window(k):
        return _along((idx >= k) & (idx < k + L), ax, fixed.shape)

    best = (-np.inf, 0)
    for k in range(0, max(1, n - L + 1)):
        win = window(k)
        fm = fixed_tissue & win
        if not fm.any():
            continue
        # centres of mass aligned (a translation): the sample's tissue carried back onto the fixed image
        shift = moving_centre - centre_of_mass(fixed, fm)
        score = ncc(tissue_values, sample_points(fixed, tissue_points - shift))
        if np.isfinite(score) and score > best[0]:
            best = (score, k)
    k = best[1]
    win = window(k)
    # the weights are taken inside the mask only, so the fixed image needs no copy cut to the window
    init = initial_affine(fixed, moving, fixed_tissue & win, moving_tissue, "moments", cut_axis=ax)
    return k, min(n, k + L), best[0], init


def resolve_extent(extent: str, fixed: Volume, fixed_tissue: np.ndarray, moving_tissue: np.ndarray) -> tuple[str, str]:
    """``extent`` with ``"auto"`` decided from the tissue extents: (extent, why)."""
    if extent not in EXTENTS:
        raise InputError(f"extent must be one of {', '.join(EXTENTS)}, got {extent!r}", field="extent")
    if not moving_tissue.any():
        raise InputError("the moving image has no tissue to register (its brain mask is empty)", field="extent")
    if extent != "auto":
        return extent, ""
    code, sp = fixed.orientation, float(fixed.voxel_size[0])
    lr, ap = _axis(code, "lr"), _axis(code, "ap")
    f_lr, m_lr = np.diff(_extent_um(fixed_tissue, lr, sp))[0], np.diff(_extent_um(moving_tissue, lr, sp))[0]
    f_ap, m_ap = np.diff(_extent_um(fixed_tissue, ap, sp))[0], np.diff(_extent_um(moving_tissue, ap, sp))[0]
    lr_frac, ap_frac = m_lr / max(f_lr, 1e-9), m_ap / max(f_ap, 1e-9)
    if lr_frac > 0.75 and ap_frac > 0.85:
        extent = "whole"
    elif lr_frac <= 0.75 and ap_frac > 0.6:
        extent = f"hemisphere-{hemisphere_side(moving_tissue, code)}"
    else:
        extent = "slab"
    return extent, (f" (auto: tissue spans {lr_frac:.0%} of the atlas's left-right and {ap_frac:.0%} of its "
                    "anterior-posterior extent)")


def _along(keep: np.ndarray, axis: int, shape) -> np.ndarray:
    shp = [1, 1, 1]
    shp[axis] = -1
    return np.broadcast_to(keep.reshape(shp), shape).copy()


def _hemisphere_region(fixed: Volume, fixed_tissue: np.ndarray, side: str, margin_vox: int) -> np.ndarray:
    """The fixed grid on ``side`` of the midline (the tissue's centre along left-right), plus a margin."""
    code = fixed.orientation
    lr = _axis(code, "lr")
    prof = _area_profile(fixed_tissue, lr)
    idx = np.arange(fixed.shape[lr])
    mid = float((prof * (idx + 0.5)).sum() / prof.sum()) if prof.sum() > 0 else fixed.shape[lr] / 2
    keep = idx + 0.5 < mid + margin_vox if code[lr] == side[0] else idx + 0.5 >= mid - margin_vox
    return _along(keep, lr, fixed.shape)


def cut_faces(tissue: np.ndarray, axis: int, flat: float = 0.35) -> tuple[bool, bool]:
    """Whether each end of the tissue along ``axis`` is a cut face: a flat end whose cross-section is at least
    ``flat`` of the largest one (a natural end of a brain, the bulbs' tip or the cerebellum's back, tapers)."""
    prof = _area_profile(tissue, axis)
    nz = np.nonzero(prof)[0]
    if nz.size < 4:
        return True, True
    n = max(1, nz.size // 25)
    top = prof.max()
    return bool(prof[nz[:n]].mean() >= flat * top), bool(prof[nz[-n:]].mean() >= flat * top)


def clip_at_cut_faces(mask: np.ndarray, tissue: np.ndarray, axis: int) -> np.ndarray:
    """``mask`` (a dilated brain mask) without what lies beyond the tissue's cut faces along ``axis``.

    Beyond a cut face the sample shows background where the atlas has brain: a metric that looked there
    would pull the cut face outwards. The dilation stays where the end is the brain's own surface."""
    nz = np.nonzero(_area_profile(tissue, axis))[0]
    lo_face, hi_face = cut_faces(tissue, axis)
    idx = np.arange(tissue.shape[axis])
    keep = np.ones(tissue.shape[axis], bool)
    if lo_face:
        keep &= idx >= nz[0]
    if hi_face:
        keep &= idx <= nz[-1]
    return mask & _along(keep, axis, mask.shape)


class PartialSetup:
    """How a partial brain is registered: the masks the metrics use, the initial map and what was found.

    Attributes
    ----------
    what : str
        e.g. ``"left hemisphere"``, ``"coronal slab 4800-7800 µm along axis 0 (correlation 0.81 there)"``.
    extent : str
        The extent (``"auto"`` resolved).
    fixed_mask, moving_mask : bool arrays on the working grids
        The fixed mask restricted to the part the sample covers (plus a margin); the moving mask clipped at the
        sample's cut faces. Registration metrics compare the images only where both hold.
    init : Affine or None
        The initial pull-back (fixed working → moving working points) the position search found, or None to
        initialise as for a whole brain inside ``fixed_mask``.
    cut_axis : int or None
        The axis across the cut (left-right for a hemisphere, anterior-posterior for a slab).
    """

    def __init__(self, what, extent, fixed_mask, moving_mask, init, cut_axis):
        self.what, self.extent = what, extent
        self.fixed_mask, self.moving_mask, self.init, self.cut_axis = fixed_mask, moving_mask, init, cut_axis


def _covered(init, fixed: Volume, moving: Volume, moving_tissue: np.ndarray, ax: int) -> tuple[int, int]:
    """The range of fixed indices along ``ax`` that the initial map ``init`` (fixed → moving) puts the moving
    tissue on."""
    idx = np.argwhere(moving_tissue)
    if len(idx) > 20000:
        idx = idx[np.random.default_rng(0).choice(len(idx), 20000, replace=False)]
    q = fixed.physical_to_index(init.inverse().map_points(moving.index_to_physical(idx)))[:, ax]
    return int(np.floor(q.min())), int(np.ceil(q.max())) + 1


def partial_setup(extent: str, fixed: Volume, fixed_tissue: np.ndarray, fixed_mask: np.ndarray | None,
                  moving: Volume, moving_tissue: np.ndarray, moving_mask: np.ndarray | None,
                  margin: float = 400.0, init_method: str = "moments", init=None) -> PartialSetup | None:
    """Masks and initialisation for a sample that covers part of the fixed image (None for a whole brain).

    Parameters
    ----------
    extent : one of :data:`EXTENTS`
    fixed, moving : working images on one isotropic spacing, the moving one already in the fixed orientation
    fixed_tissue, moving_tissue : their brain masks (undilated)
    fixed_mask, moving_mask : the masks the registration would use for a whole brain (dilated), or None
    margin : µm of fixed image kept around the covered part
    init_method : the preset's ``init``: with ``"none"`` nothing is searched (the images' frames are taken as
        they are)
    init : a given initial pull-back (fixed working → moving working points; e.g. from the user's initial
        position): nothing is searched, the covered part is where it puts the sample

    Examples
    --------
    >>> setup = partial_setup("slab", f_w, f_t, f_mask, m_w, m_t, m_mask)          # doctest: +SKIP
    >>> setup.what                                                                  # doctest: +SKIP
    'coronal slab 5160-8040 µm along axis 0 (correlation 0.80 there)'
    """
    from ..transforms.base import Affine
    from .preprocess import initial_affine

    extent, why = resolve_extent(extent, fixed, fixed_tissue, moving_tissue)
    if extent == "whole":
        return None
    if init is None and init_method == "none":
        init = Affine.identity(fixed.space, moving.space)
    code = fixed.orientation
    sp = float(fixed.voxel_size[0])
    m = int(round(margin / sp))
    f_mask = np.ones(fixed.shape, bool) if fixed_mask is None else fixed_mask
    m_mask = np.ones(moving.shape, bool) if moving_mask is None else moving_mask
    if extent.startswith("hemisphere"):
        side = extent.split("-")[1]
        ax = _axis(code, "lr")
        region = _hemisphere_region(fixed, fixed_tissue, side, m)
        if init is None:  # moments of the fixed half (no margin) against the sample
            half = fixed_tissue & _hemisphere_region(fixed, fixed_tissue, side, 0)
            init = initial_affine(fixed.with_data(np.where(half, fixed.numpy(), 0)), moving, half, moving_tissue,
                                  init_method, cut_axis=ax)
        what = f"{side} hemisphere"
    else:
        ax = _axis(code, "ap")
        if init is None:
            a, b, r, init = _slab_window(fixed, fixed_tissue, moving, moving_tissue, ax)
            what = f"coronal slab {a * sp:.0f}-{b * sp:.0f} µm along axis {ax} (correlation {r:.2f} there)"
        else:
            a, b = _covered(init, fixed, moving, moving_tissue, ax)
            what = f"coronal slab {a * sp:.0f}-{b * sp:.0f} µm along axis {ax} (where the initial position puts it)"
        idx = np.arange(fixed.shape[ax])
        region = _along((idx >= a - m) & (idx < b + m), ax, fixed.shape)
    return PartialSetup(what + why, extent, f_mask & region, clip_at_cut_faces(m_mask, moving_tissue, ax), init, ax)


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
        Unknown extent; a sample with no tissue.
    """
    setup = partial_setup(extent, fixed, fixed_tissue, None, moving, moving_tissue, None, margin)
    if setup is None:
        return None, "whole brain" + resolve_extent(extent, fixed, fixed_tissue, moving_tissue)[1]
    return setup.fixed_mask, setup.what


def _read_initial(path, moving: Volume, fixed: Volume):
    """A transform file as the moving → fixed map: ITK/ANTs files hold the pull-back (fixed → moving points,
    CONVENTIONS), NGFF files name their spaces."""
    from ..transforms.files import load_transform

    if str(path).endswith(".json"):
        return load_transform(path)
    return load_transform(path, src=fixed.space, dst=moving.space).inverse()


def user_initial(initial_transform, initial_position, moving: Volume, fixed: Volume, R, C, m_re: Volume,
                 m_tissue_points=None):
    """The user's word on where the sample lies, as the initial pull-back of the working frames
    (fixed canonical → moving reoriented points), or None.

    Parameters
    ----------
    initial_transform : Transform or path, optional
        A moving → fixed map (an :class:`~atlasreg.Affine` or any transform; one that maps fixed → moving, by its
        space names, is inverted), or a transform file (ITK/ANTs: the pull-back fixed → moving, as ITK writes
        it; NGFF ``.json``: the direction its spaces say). A non-linear map is replaced by its least-squares
        affine over the sample's tissue (``m_tissue_points``, moving reoriented µm): it only initialises.
    initial_position : 3 numbers, optional
        Where the centre of the moving image lies in the fixed image (µm, the fixed volume's physical frame).
    moving, fixed : the volumes given to ``register``; R : moving → moving reoriented; C : fixed → fixed
        canonical (None when the fixed frame is canonical already); m_re : the reoriented moving volume.
    """
    from ..transforms.base import Affine

    if initial_transform is None and initial_position is None:
        return None
    if initial_transform is not None and initial_position is not None:
        raise InputError("give either an initial transform or an initial position, not both",
                         field="initial_transform")
    f_space, m_space = (C.dst if C is not None else fixed.space), m_re.space
    to_c = C.matrix if C is not None else np.eye(4)
    if initial_position is not None:
        p = np.asarray(initial_position, float).ravel()
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise InputError(f"the initial position must be 3 finite coordinates (µm in the fixed image), got "
                             f"{initial_position!r}", field="initial_position")
        p_c = (to_c @ np.append(p, 1.0))[:3]
        c_m = m_re.index_to_physical([(np.asarray(m_re.shape, float) - 1) / 2])[0]
        return Affine.from_translation(c_m - p_c, f_space, m_space)
    U = initial_transform
    if isinstance(U, (str, os.PathLike)):
        U = _read_initial(U, moving, fixed)
    names = (U.src.name, U.dst.name)
    if names == (fixed.space.name, moving.space.name):  # fixed -> moving: the other way round
        U = U.inverse()
    elif names != (moving.space.name, fixed.space.name) and (moving.space.name in names or fixed.space.name in names):
        raise InputError(f"the initial transform maps {names[0]!r} -> {names[1]!r}, but the moving volume is in "
                         f"{moving.space.name!r} and the fixed one in {fixed.space.name!r}", field="initial_transform")
    for sp_, v, what in ((U.src, moving, "moving"), (U.dst, fixed, "fixed")):
        if sp_.unit != v.unit:
            raise InputError(f"the initial transform's {what} side is in {sp_.unit}, the {what} volume in {v.unit}",
                             field="initial_transform")
    if isinstance(U, Affine):
        M = R.matrix @ np.linalg.inv(U.matrix) @ np.linalg.inv(to_c)
        return Affine(M, f_space, m_space)
    x_re = np.asarray(m_tissue_points, float)
    x = R.inverse().map_points(x_re)
    y = U.map_points(x)
    ok = np.isfinite(y).all(axis=1)
    if ok.sum() < 10:
        raise InputError("the initial transform maps (almost) none of the sample's tissue to finite points",
                         field="initial_transform")
    y_c = y[ok] @ to_c[:3, :3].T + to_c[:3, 3]
    return Affine.fit(y_c, x_re[ok], "affine", f_space, m_space)


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
                         "part it is (extent hemisphere-left, hemisphere-right, slab or auto) or where it lies "
                         "(an initial transform, or the initial position of its centre in the fixed image); "
                         "check the orientation code too", field="extent")
    return share


def _ball(radius_vox: int) -> np.ndarray:
    r = max(int(radius_vox), 0)
    zz = np.indices((2 * r + 1,) * 3) - r
    return (zz ** 2).sum(0) <= r * r


def missing_parts(pull, fixed: Volume, fixed_tissue: np.ndarray, moving: Volume, moving_tissue: np.ndarray,
                  tolerance: float = 300.0, min_share: float = 0.002) -> np.ndarray:
    """The fixed tissue the sample lacks (a brain without its olfactory bulbs or its cerebellum), on the fixed grid.

    The sample's tissue is carried onto the fixed grid by ``pull`` (fixed → moving points, e.g. the affine
    stage's result); fixed tissue farther than ``tolerance`` µm from it is missing from the sample. Only pieces
    thicker than ``tolerance`` count (an opening removes the thin shells an imperfect alignment leaves along the
    surface) and of at least ``min_share`` of the fixed tissue, so a whole brain has none.

    Parameters
    ----------
    pull : Transform
        Fixed working points → moving working points.
    fixed, moving : Volume
        The working images (one isotropic spacing; the moving one in the fixed orientation).
    fixed_tissue, moving_tissue : bool arrays
        Their brain masks (undilated).
    tolerance : float
        µm of misalignment tolerated before fixed tissue counts as uncovered.
    min_share : float
        Smallest missing piece, as a share of the fixed tissue's volume.

    Returns
    -------
    bool array on the fixed grid (all False for a sample that covers the fixed tissue).

    Examples
    --------
    >>> missing = missing_parts(affine, f_w, f_tissue, m_w, m_tissue)            # doctest: +SKIP
    >>> describe_missing(missing, f_tissue, f_w.orientation)                     # doctest: +SKIP
    'anterior end, posterior-dorsal part'
    """
    from scipy import ndimage as ndi

    from ..volume import resample

    if tolerance < 0 or not 0 <= min_share < 1:
        raise InputError(f"tolerance must be >= 0 µm and min_share in [0, 1), got {tolerance!r} and {min_share!r}",
                         field="missing_parts")
    carried = resample(moving.with_data(moving_tissue.astype(np.float32)), pull, fixed.grid) > 0.5
    tol_vox = int(round(tolerance / float(fixed.voxel_size[0])))
    near = ndi.binary_dilation(carried, _ball(tol_vox)) if tol_vox else carried
    uncovered = fixed_tissue & ~near
    if not uncovered.any():
        return uncovered
    if tol_vox:
        uncovered = ndi.binary_opening(uncovered, _ball(max(1, tol_vox // 2)))
    smallest = min_share * max(int(fixed_tissue.sum()), 1)
    pieces = _large_pieces(uncovered, smallest)
    if tol_vox and pieces.any():
        # grown back through the uncovered fixed tissue (twice the tolerance: the opening and the tolerance took
        # that much): the whole missing piece, up to the sample's cut face, without the crumbs in its folds
        pieces = _large_pieces(ndi.binary_dilation(pieces, iterations=2 * tol_vox, mask=fixed_tissue & ~carried),
                               smallest)
    return pieces


def _large_pieces(mask: np.ndarray, smallest: float) -> np.ndarray:
    """The connected pieces of ``mask`` of at least ``smallest`` voxels."""
    from scipy import ndimage as ndi

    lab, n = ndi.label(mask)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return np.isin(lab, np.nonzero(sizes >= smallest)[0]) & mask


def describe_missing(missing: np.ndarray, fixed_tissue: np.ndarray, code: str) -> str:
    """Where the missing pieces lie, in words: e.g. ``"anterior end, posterior-dorsal part"`` ('' if none).

    Each piece is named by the sides of the fixed tissue its centre lies towards (the outer 40 % of the tissue's
    extent along anterior-posterior; dorsal-ventral and left-right within the piece's coronal planes), as an
    "end" where it reaches the tissue's end along the first of them.

    Examples
    --------
    >>> t = np.ones((10, 4, 4), bool); m = np.zeros_like(t); m[:2] = True
    >>> describe_missing(m, t, "asr")        # asr: index 0 of axis 0 is anterior
    'anterior end'
    """
    from scipy import ndimage as ndi

    lab, n = ndi.label(missing)
    if n == 0:
        return ""
    order = [_axis(code, letters) for letters in ("ap", "si", "lr")]
    words = []
    for k, sl in enumerate(ndi.find_objects(lab), start=1):
        piece = lab[sl] == k
        centre = [sl[a].start + float(np.mean(np.nonzero(_area_profile(piece, a))[0])) for a in range(3)]
        sides, ends = [], []
        # dorsal-ventral and left-right against the tissue in the piece's own coronal planes (a cerebellum
        # is dorsal to the brainstem beside it, not to the whole brain)
        ap_planes = [slice(None)] * 3
        ap_planes[order[0]] = sl[order[0]]
        local = [np.nonzero(_area_profile(fixed_tissue, order[0]))[0]]
        local += [np.nonzero(_area_profile(fixed_tissue[tuple(ap_planes)], a))[0] for a in order[1:]]
        for a, tissue_idx in zip(order, local):
            lo, hi = tissue_idx[0], tissue_idx[-1] + 1
            t = (centre[a] + 0.5 - lo) / max(hi - lo, 1)
            if t < 0.4 or t > 0.6:
                low_side = code[a]  # the side index 0 of this axis lies on
                sides.append(side_name(low_side if t < 0.4 else opposite_side(low_side), dorsal_ventral=True))
                ends.append(sl[a].start <= lo if t < 0.4 else sl[a].stop >= hi)
        if not sides:
            words.append("central part")
        else:
            words.append("-".join(sides) + (" end" if ends[0] else " part"))
    return ", ".join(dict.fromkeys(words))


def missing_masks(pull, fixed: Volume, missing: np.ndarray, moving: Volume,
                  moving_tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the metrics may look when the sample lacks ``missing`` (from :func:`missing_parts`): (fixed, moving).

    The fixed mask leaves out the missing tissue; the moving mask leaves out the sample's background where
    ``pull`` (fixed → moving points) puts the missing tissue, beyond the sample's cut faces, so a metric cannot
    pull the sample's tissue into the gap.
    """
    from ..volume import resample

    on_moving = resample(fixed.with_data(missing.astype(np.float32)), pull.inverse(), moving.grid) > 0.5
    return ~missing, ~(on_moving & ~moving_tissue)
