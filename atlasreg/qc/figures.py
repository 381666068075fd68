"""QC figures (matplotlib, Agg backend; no display needed).

Every function returns a :class:`matplotlib.figure.Figure`; :func:`figure_png`
renders one to PNG bytes (what the HTML report embeds). Volumes may be given as
:class:`atlasreg.Volume` (voxel sizes set the aspect, orientation codes name the
planes) or as plain 3-D arrays. Slices are taken through the middle of each
axis unless ``positions`` (voxel indices, one per axis) says otherwise.

Example
-------
>>> fig = overlay_slices(atlas.reference, warped_sample)      # doctest: +SKIP
>>> open("overlay.png", "wb").write(figure_png(fig))           # doctest: +SKIP
"""
from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np

from ..errors import InputError

# Anatomical axis names from a BrainGlobe origin letter.
_AXIS_NAME = {"a": "AP", "p": "AP", "s": "DV", "i": "DV", "l": "LR", "r": "LR"}
# The plane perpendicular to an anatomical axis.
_PLANE_NAME = {"AP": "coronal", "DV": "horizontal", "LR": "sagittal"}


def _new_figure(nrows: int, ncols: int, size=(4.0, 3.6)):
    from matplotlib.figure import Figure

    # A bare Figure (not pyplot) so nothing accumulates in pyplot's registry.
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def figure_png(fig, dpi: int = 90) -> bytes:
    """PNG bytes of a figure.

    Example
    -------
    >>> png = figure_png(landmark_residuals(pred, truth))       # doctest: +SKIP
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# -- helpers ------------------------------------------------------------------------------------------
def _as_array(vol, name: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(array, voxel size, orientation code) of a Volume or array."""
    if hasattr(vol, "numpy") and hasattr(vol, "voxel_size"):
        arr = vol.numpy()
        vs = np.asarray(vol.voxel_size, float)
        code = getattr(vol, "orientation", None)
    else:
        arr = np.asarray(vol)
        vs = np.ones(3)
        code = None
    if arr.ndim != 3:
        raise InputError(f"{name} must be a 3-D volume, got shape {arr.shape}", field=name)
    return arr, vs, code


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise InputError(f"{names} must share one grid (warp one into the other first); "
                         f"shapes {a.shape} and {b.shape} differ", field=names)


def _positions(shape, positions) -> list[int]:
    if positions is None:
        return [s // 2 for s in shape]
    pos = [int(round(p)) for p in positions]
    if len(pos) != 3 or any(not 0 <= p < s for p, s in zip(pos, shape)):
        raise InputError(f"positions must be 3 voxel indices inside shape {shape}, got {positions}",
                         field="positions")
    return pos


_OPPOSITE = {"a": "p", "p": "a", "s": "i", "i": "s", "l": "r", "r": "l"}


def _plane_axes(axis: int, code: str | None) -> tuple[int, int]:
    """(row axis, column axis) of the slice across ``axis``; dorsoventral runs down the page when known."""
    rows, cols = [a for a in range(3) if a != axis]
    if code and _AXIS_NAME[code[cols]] == "DV":
        rows, cols = cols, rows
    return rows, cols


def _slice(arr: np.ndarray, axis: int, index: int, code: str | None = None) -> np.ndarray:
    s = np.take(arr, index, axis=axis)
    rows, cols = _plane_axes(axis, code)
    return s.T if rows > cols else s


def _plane_title(axis: int, index: int, code: str | None) -> str:
    if code:
        name = _AXIS_NAME[code[axis]]
        return f"{_PLANE_NAME[name]} (axis {axis}={index})"
    return f"axis {axis} = {index}"


def _aspect(vs: np.ndarray, axis: int, code: str | None = None) -> float:
    rows, cols = _plane_axes(axis, code)
    return float(vs[rows] / vs[cols])


def _axis_labels(ax, axis: int, code: str | None) -> None:
    rows, cols = _plane_axes(axis, code)
    if code:
        ax.set_ylabel(f"axis {rows} ({code[rows].upper()}\u2192{_OPPOSITE[code[rows]].upper()})", fontsize=8)
        ax.set_xlabel(f"axis {cols} ({code[cols].upper()}\u2192{_OPPOSITE[code[cols]].upper()})", fontsize=8)
    else:
        ax.set_ylabel(f"axis {rows}", fontsize=8)
        ax.set_xlabel(f"axis {cols}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _float32_slabs(arr, voxels: int = 1 << 22):
    """``arr`` as float32 in slabs along axis 0 of about ``voxels`` voxels (C order when joined)."""
    a = np.asarray(arr)
    if a.ndim == 0 or a.shape[0] == 0:
        yield np.asarray(a, dtype=np.float32).ravel()
        return
    step = max(1, voxels // max(1, a[0].size))
    for i in range(0, a.shape[0], step):
        yield np.asarray(a[i:i + step], dtype=np.float32)


class _Scale:
    """Intensities to [0, 1] between robust percentiles (1st, 99.5th of the finite non-zero voxels) of a whole
    volume, applied to the few slices a figure shows: the percentiles need every voxel once, but the scaled
    copy is only ever made of a slice (a full-volume float copy of a 25 µm atlas grid is 0.3-0.6 GB, and the
    overlay and checkerboard each held two). ``_Scale(vol)(vol[i])`` equals ``_norm(vol)[i]`` exactly."""

    def __init__(self, arr: np.ndarray):
        # the values the percentiles are taken of, gathered slab by slab into one float32 array: no full-size
        # mask or float copy besides it (two passes: count, then fill)
        n_finite = n_nonzero = 0
        for s in _float32_slabs(arr):
            ok = np.isfinite(s)
            n_finite += int(np.count_nonzero(ok))
            n_nonzero += int(np.count_nonzero(ok & (s != 0)))
        nonzero = n_nonzero > 100  # else every finite voxel
        ref = np.empty(n_nonzero if nonzero else n_finite, np.float32)
        at = 0
        for s in _float32_slabs(arr):
            ok = np.isfinite(s)
            if nonzero:
                ok &= s != 0
            v = s[ok]
            ref[at:at + v.size] = v
            at += v.size
        self.empty = ref.size == 0
        if self.empty:
            return
        # ``ref`` is a copy made here: partition it in place (the percentiles are the same numbers)
        lo, hi = np.percentile(ref, [1.0, 99.5], overwrite_input=True)
        if hi <= lo:
            hi = lo + 1.0
        self.lo, self.hi = lo, hi

    def __call__(self, part: np.ndarray) -> np.ndarray:
        a = np.asarray(part, dtype=np.float32)
        if self.empty:
            return np.zeros_like(a)
        out = np.clip((a - self.lo) / (self.hi - self.lo), 0, 1)
        out[~np.isfinite(out)] = 0
        return out


def _norm(arr: np.ndarray) -> np.ndarray:
    """Scale intensities to [0, 1] between robust percentiles (1st, 99.5th of non-zero voxels); for a 3-D volume
    of which only slices are drawn, use :class:`_Scale` on the slices instead (no full-size copy)."""
    return _Scale(arr)(arr)


# -- figures ------------------------------------------------------------------------------------------
def overlay_key(fixed_label: str = "fixed", moving_label: str = "moving") -> str:
    """The colour key of :func:`overlay_slices`, the one place it is said (captions quote it).

    Example
    -------
    >>> overlay_key("atlas", "registered sample")
    'atlas magenta, registered sample green, grey where they agree'
    """
    return f"{fixed_label} magenta, {moving_label} green, grey where they agree"


OVERLAY_KEY = overlay_key()


def overlay_slices(fixed, moving, positions=None, title: str | None = None, fixed_label: str = "fixed",
                   moving_label: str = "moving"):
    """Fixed (magenta) and moving (green) in three planes: grey where they agree, colour where not.

    Parameters
    ----------
    fixed, moving : Volume or array, same grid (warp ``moving`` into ``fixed`` first)
    positions : 3 voxel indices, optional (default: the centre)
    title : str, optional; the colour key (:func:`overlay_key` of the labels) is always added to it
    fixed_label, moving_label : what the two images are, for the key

    Example
    -------
    >>> fig = overlay_slices(atlas.reference, result.warp(sample))   # doctest: +SKIP
    """
    f, vs, code = _as_array(fixed, "fixed")
    m, _, _ = _as_array(moving, "moving")
    _same_shape(f, m, "fixed/moving")
    pos = _positions(f.shape, positions)
    fn, mn = _Scale(f), _Scale(m)
    fig, axes = _new_figure(1, 3)
    for a in range(3):
        fs, ms = fn(_slice(f, a, pos[a], code)), mn(_slice(m, a, pos[a], code))
        rgb = np.stack([fs, ms, fs], axis=-1)
        ax = axes[0, a]
        ax.imshow(rgb, aspect=_aspect(vs, a, code), interpolation="nearest")
        ax.set_title(_plane_title(a, pos[a], code), fontsize=9)
        _axis_labels(ax, a, code)
    key = overlay_key(fixed_label, moving_label)
    fig.suptitle(f"{title}: {key}" if title else f"overlay: {key}", fontsize=10)
    return fig


def checkerboard_slices(fixed, moving, tiles: int = 8, positions=None, title: str | None = None):
    """Alternating tiles of fixed and moving in three planes: edges should run on across tile borders.

    Example
    -------
    >>> fig = checkerboard_slices(atlas.reference, warped, tiles=6)   # doctest: +SKIP
    """
    f, vs, code = _as_array(fixed, "fixed")
    m, _, _ = _as_array(moving, "moving")
    _same_shape(f, m, "fixed/moving")
    if int(tiles) < 2:
        raise InputError(f"tiles must be at least 2, got {tiles}", field="tiles")
    pos = _positions(f.shape, positions)
    fn, mn = _Scale(f), _Scale(m)
    fig, axes = _new_figure(1, 3)
    for a in range(3):
        fs, ms = fn(_slice(f, a, pos[a], code)), mn(_slice(m, a, pos[a], code))
        r = (np.arange(fs.shape[0]) * tiles // max(1, fs.shape[0]))[:, None]
        c = (np.arange(fs.shape[1]) * tiles // max(1, fs.shape[1]))[None, :]
        board = np.where((r + c) % 2 == 0, fs, ms)
        ax = axes[0, a]
        ax.imshow(board, cmap="gray", vmin=0, vmax=1, aspect=_aspect(vs, a, code), interpolation="nearest")
        ax.set_title(_plane_title(a, pos[a], code), fontsize=9)
        _axis_labels(ax, a, code)
    fig.suptitle(title or f"checkerboard ({tiles}\u00d7{tiles}): fixed / moving", fontsize=10)
    return fig


def roll_labels(labels: np.ndarray, ontology=None, level="major") -> np.ndarray:
    """Structure ids rolled up to a hierarchy level, for drawing boundaries at that level.

    ``level``: ``"major"`` (the ontology's major divisions, about a dozen regions: see
    :meth:`atlasreg.atlas.Ontology.major_divisions`), a depth in the tree (``7``), or ``"leaves"`` /
    None (every structure as labelled). Without an ontology the labels are returned as they are.

    Example
    -------
    >>> coarse = roll_labels(labels_on_sample, atlas.ontology, "major")     # doctest: +SKIP
    """
    lab = np.asarray(labels)
    if ontology is None or level in (None, "leaves"):
        return lab
    vals, inv = np.unique(lab, return_inverse=True)
    known = np.array([int(v) in ontology for v in vals]) if hasattr(ontology, "__contains__") else \
        np.ones(len(vals), bool)
    mapped = vals.astype(np.int64).copy()
    ok = known & (vals > 0)
    if ok.any():
        if level == "major":
            mapped[ok] = ontology.rollup(vals[ok].astype(np.int64), ontology.major_divisions())
        elif isinstance(level, (int, np.integer)):
            mapped[ok] = ontology.at_level(vals[ok].astype(np.int64), int(level))
        else:
            raise InputError(f"level is 'major', 'leaves' or a depth in the structure tree, got {level!r}",
                             field="level")
    return mapped[inv].reshape(lab.shape)


def _contours(ax, labels2d: np.ndarray, color, linewidth: float) -> None:
    """Thin lines along every pixel border between two different labels of a 2-D slice (one LineCollection:
    vectorised, so even every leaf structure draws in well under a second)."""
    from matplotlib.collections import LineCollection

    lab = np.asarray(labels2d)
    r, c = np.nonzero(lab[:-1, :] != lab[1:, :])  # between rows r and r+1: a horizontal border
    h = np.stack([np.stack([c - 0.5, r + 0.5], 1), np.stack([c + 0.5, r + 0.5], 1)], 1)
    r2, c2 = np.nonzero(lab[:, :-1] != lab[:, 1:])  # between columns c and c+1: a vertical border
    v = np.stack([np.stack([c2 + 0.5, r2 - 0.5], 1), np.stack([c2 + 0.5, r2 + 0.5], 1)], 1)
    segs = np.concatenate([h, v]).astype(float)
    if len(segs):
        ax.add_collection(LineCollection(segs, colors=[color], linewidths=linewidth, capstyle="butt"))


def boundary_slices(image, annotation, positions=None, title: str | None = None, color=(1.0, 0.85, 0.0), *,
                    ontology=None, level="major", linewidth: float = 0.7, panel_size=(6.0, 5.2), ncols: int = 3):
    """Region boundaries of ``annotation`` drawn over ``image`` (same grid) in three planes, as thin contours.

    Use it with the sample and the atlas annotation warped onto it (or the sample warped into
    the atlas): boundaries should follow the tissue's own edges. With ``ontology``, the regions are
    first rolled up to ``level`` (default ``"major"``: about a dozen major divisions; a depth such as
    7; or ``"leaves"``), see :func:`roll_labels`. Contours are drawn per region with sub-voxel
    ``linewidth`` points wide along the voxel borders between regions, on panels of ``panel_size`` inches,
    ``ncols`` planes per row (1: one plane per row, each as wide as the figure — for a 25 µm atlas on a
    full-resolution sample, where three planes side by side leave under 2 screen pixels per voxel).

    Example
    -------
    >>> fig = boundary_slices(sample, result.warp_back(atlas.annotation, interpolation="nearest"),
    ...                       ontology=atlas.ontology, level="major")          # doctest: +SKIP
    """
    img, vs, code = _as_array(image, "image")
    lab, _, _ = _as_array(annotation, "annotation")
    _same_shape(img, lab, "image/annotation")
    pos = _positions(img.shape, positions)
    im = _Scale(img)
    if ncols not in (1, 2, 3):
        raise InputError(f"ncols must be 1, 2 or 3, got {ncols}", field="ncols")
    nrows = -(-3 // ncols)
    fig, axes = _new_figure(nrows, ncols, size=panel_size)
    for ax in axes.ravel()[3:]:
        ax.set_axis_off()
    for a in range(3):
        s = im(_slice(img, a, pos[a], code))
        ax = axes.ravel()[a]
        ax.imshow(s, cmap="gray", vmin=0, vmax=1, aspect=_aspect(vs, a, code), interpolation="bilinear")
        _contours(ax, roll_labels(_slice(lab, a, pos[a], code), ontology, level), color, linewidth)
        ax.set_xlim(-0.5, s.shape[1] - 0.5)
        ax.set_ylim(s.shape[0] - 0.5, -0.5)
        ax.set_title(_plane_title(a, pos[a], code), fontsize=9)
        _axis_labels(ax, a, code)
    fig.suptitle(title or "atlas region boundaries on the image", fontsize=10)
    return fig


#: Hierarchy levels the QC report offers for atlas boundaries (label, level for :func:`roll_labels`).
BOUNDARY_LEVELS = (("major divisions", "major"), ("depth 7: areas and nuclei", 7), ("every structure", "leaves"))


def boundary_levels(image, annotation, ontology=None, positions=None, title: str | None = None,
                    levels=BOUNDARY_LEVELS, **layout) -> dict:
    """:func:`boundary_slices` at several hierarchy levels: ``{label: figure}`` (first = the default view).
    ``layout``: ``linewidth``, ``panel_size``, ``ncols`` as :func:`boundary_slices` takes them.

    Without an ontology only the labels as they are can be drawn: ``{"every structure": figure}``.

    Example
    -------
    >>> figs = boundary_levels(sample, labels_on_sample, atlas.ontology)        # doctest: +SKIP
    >>> list(figs)                                                              # doctest: +SKIP
    ['major divisions', 'depth 7: areas and nuclei', 'every structure']
    """
    if ontology is None:
        levels = [lv for lv in levels if lv[1] in (None, "leaves")] or [("every structure", "leaves")]
    return {name: boundary_slices(image, annotation, positions, title=f"{title or 'atlas boundaries'}: {name}",
                                  ontology=ontology, level=lv, **layout) for name, lv in levels}


def jacobian_slices(jacobian, positions=None, mask=None, title: str | None = None):
    """Jacobian determinant (log scale colours: blue shrink, red growth) with folding (det <= 0) in black.

    ``positions`` defaults to the slice through the most folded voxel if there is any folding,
    else the centre, so a fold is never missed by the picture.

    Example
    -------
    >>> det = qc.jacobian_determinant(result.transform, atlas.reference.grid)   # doctest: +SKIP
    >>> fig = jacobian_slices(det)                                               # doctest: +SKIP
    """
    from matplotlib.colors import ListedColormap, LogNorm

    det, vs, code = _as_array(jacobian, "jacobian")
    det = det.astype(np.float64)
    inside = np.isfinite(det) if mask is None else (np.isfinite(det) & np.asarray(mask, bool))
    folded = inside & (det <= 0)
    if positions is None and folded.any():
        positions = np.unravel_index(np.argmin(np.where(folded, det, np.inf)), det.shape)
    pos = _positions(det.shape, positions)
    fig, axes = _new_figure(1, 3)
    good = det[inside & ~folded]
    span = float(np.clip(np.percentile(np.abs(np.log(good)), 99.5) if good.size else 1.0, 0.05, 3.0))
    norm = LogNorm(vmin=np.exp(-span), vmax=np.exp(span))
    im = None
    for a in range(3):
        d = _slice(det, a, pos[a], code)
        show = np.where(_slice(inside, a, pos[a], code) & (d > 0), d, np.nan)
        ax = axes[0, a]
        ax.set_facecolor("0.85")
        im = ax.imshow(show, cmap="RdBu_r", norm=norm, aspect=_aspect(vs, a, code), interpolation="nearest")
        fold2d = _slice(folded, a, pos[a], code)
        if fold2d.any():
            ax.imshow(np.ma.masked_where(~fold2d, np.ones(fold2d.shape)), cmap=ListedColormap(["black"]),
                      aspect=_aspect(vs, a, code), interpolation="nearest")
        n_f = int(fold2d.sum())
        ax.set_title(_plane_title(a, pos[a], code) + (f", {n_f} folded" if n_f else ""), fontsize=9)
        _axis_labels(ax, a, code)
    cb = fig.colorbar(im, ax=axes[0, :].tolist(), shrink=0.8, label="det J (volume ratio)")
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

    cb.ax.yaxis.set_major_locator(FixedLocator(np.exp(np.linspace(-span, span, 5))))
    cb.ax.yaxis.set_major_formatter(FormatStrFormatter("%.2f"))
    cb.ax.yaxis.set_minor_locator(NullLocator())
    n_in = int(inside.sum())
    frac = folded.sum() / n_in if n_in else float("nan")
    fig.suptitle(title or f"Jacobian determinant (folding: det \u2264 0, black; {100 * frac:.3f}% of voxels)",
                 fontsize=10)
    return fig


def arrow_scale(points_2d, lengths) -> float:
    """How much to lengthen residual arrows so the median one is about 8 % of the points' extent: 1, 2 or 5
    times a power of ten, never below 1 (arrows are never shortened).

    Example
    -------
    >>> arrow_scale([[0, 0], [1000, 1000]], [2.0, 3.0])
    20.0
    """
    pts = np.asarray(points_2d, float)
    med = float(np.median(np.asarray(lengths, float))) if np.size(lengths) else 0.0
    extent = float(np.max(np.ptp(pts, axis=0))) if len(pts) > 1 else 0.0
    if not (med > 0 and extent > 0):
        return 1.0
    want = 0.08 * extent / med
    if want <= 1:
        return 1.0
    p = 10.0 ** np.floor(np.log10(want))
    return float(max(m * p for m in (1, 2, 5) if m * p <= want))


def landmark_residuals(predicted, truth, labels=None, unit: str = "\u00b5m", title: str | None = None):
    """Residuals of mapped landmarks against their true positions: sorted bar chart + 2-D arrows.

    Parameters
    ----------
    predicted, truth : (N, 3) points in the same space
    labels : N names, optional (shown on the bars when N <= 40)

    Example
    -------
    >>> fig = landmark_residuals(T.map_points(em_pts), ccf_pts, unit="\u00b5m")   # doctest: +SKIP
    """
    p = np.asarray(predicted, float)
    t = np.asarray(truth, float)
    if p.shape != t.shape or p.ndim != 2 or p.shape[1] != 3:
        raise InputError(f"predicted and truth must both be (N, 3); got {p.shape} and {t.shape}",
                         field="predicted")
    r = p - t
    err = np.linalg.norm(r, axis=1)
    ok = np.isfinite(err)
    fig, axes = _new_figure(1, 2, size=(5.0, 3.6))
    ax = axes[0, 0]
    order = np.argsort(np.where(ok, err, np.inf))[::-1]
    shown = order[:60]
    y = np.arange(len(shown))
    ax.barh(y, np.where(ok[shown], err[shown], 0), color=np.where(ok[shown], "tab:blue", "tab:red"))
    if labels is not None and len(shown) <= 40:
        ax.set_yticks(y, [str(labels[i]) for i in shown], fontsize=7)
    else:
        ax.set_yticks([])
    if ok.any():
        med = float(np.median(err[ok]))
        ax.axvline(med, color="k", ls="--", lw=1, label=f"median {med:.3g} {unit}")
        ax.legend(fontsize=8, loc="lower right")
    ax.invert_yaxis()
    ax.set_xlabel(f"residual ({unit})")
    ax.set_title(f"{int(ok.sum())} landmarks" + (f", {int((~ok).sum())} unmapped (red)" if (~ok).any() else ""),
                 fontsize=9)
    ax = axes[0, 1]
    # Arrows in the plane of the two axes with the largest spread: where do residuals point?
    spread = np.nanstd(t, axis=0)
    a0, a1 = sorted(np.argsort(spread)[-2:])
    ax.scatter(t[:, a1], t[:, a0], s=10, c="k", label="true")
    k = arrow_scale(t[ok][:, [a0, a1]], err[ok]) if ok.any() else 1.0
    if ok.any():
        ax.quiver(t[ok, a1], t[ok, a0], r[ok, a1], r[ok, a0], err[ok], cmap="viridis", angles="xy",
                  scale_units="xy", scale=1.0 / k, width=0.006)
    ax.set_xlabel(f"axis {a1} ({unit})")
    ax.set_ylabel(f"axis {a0} ({unit})")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title("residual vectors (true \u2192 mapped)" + (f", arrows \u00d7{k:g}" if k != 1 else ""),
                 fontsize=9)
    fig.arrow_scale = k  # how much the arrows are lengthened (also in the panel's title)
    ax.legend(fontsize=8)
    fig.suptitle(title or "landmark residuals", fontsize=10)
    return fig


def matched_points(src, mapped_src, dst, pairs, confidence=None, src_unit: str = "\u00b5m",
                   unit: str = "\u00b5m", title: str | None = None, truth=None, zoom: float = 200.0):
    """Two matched point clouds: each in its own frame with partners in the same colour, a zoom of the
    destination frame with the mapped source cells and their partners, and the residuals.

    Parameters
    ----------
    src : (N, 3) source points in their own frame (``src_unit``)
    mapped_src : (N, 3) the source points mapped into the destination space (``unit``)
    dst : (M, 3) destination points (``unit``)
    pairs : (K, 2) int rows ``(src_row, dst_row)``
    confidence : (K,) optional: the histogram title counts pairs with confidence >= 0.5
    truth : (T, 2) int rows of known true pairs, optional: in the zoom, found ones are circled green and wrong
        pairs touching a row of ``truth`` red (for checking a result on validation pairs)
    zoom : side of the zoom window (``unit``), centred where pairs are densest

    Example
    -------
    >>> fig = matched_points(em_um, res.transform.map_points(em), lm, res.pairs, res.confidence)   # doctest: +SKIP
    """
    s = np.asarray(src, float)
    m = np.asarray(mapped_src, float)
    d = np.asarray(dst, float)
    pr = np.asarray(pairs, int).reshape(-1, 2)
    if s.shape != m.shape or m.ndim != 2 or m.shape[1] != 3 or d.ndim != 2 or d.shape[1] != 3:
        raise InputError(f"src and mapped_src must both be (N, 3) and dst (M, 3); got {s.shape}, {m.shape}, "
                         f"{d.shape}", field="mapped_src")
    if len(pr) and (pr[:, 0].max() >= len(m) or pr[:, 1].max() >= len(d) or pr.min() < 0):
        raise InputError("pairs index outside the point sets", field="pairs")
    from matplotlib.collections import LineCollection

    fig, axes = _new_figure(1, 4, size=(4.0, 4.0))

    def plane(p):
        o = np.argsort(np.std(p, axis=0))[::-1]
        return int(o[0]), int(o[1])

    # colour of a pair: its destination position along the destination's widest axis
    da, db = plane(d)
    col = np.full(len(d), np.nan)
    if len(pr):
        col[pr[:, 1]] = d[pr[:, 1], da]
    vmin, vmax = (np.nanmin(col), np.nanmax(col)) if len(pr) else (0, 1)
    scol = np.full(len(s), np.nan)
    if len(pr):
        scol[pr[:, 0]] = col[pr[:, 1]]
    for ax, p, c, name, u in ((axes[0, 0], s, scol, "source, own frame", src_unit),
                              (axes[0, 1], d, col, "destination, own frame", unit)):
        a, b = plane(p)
        un = ~np.isfinite(c)
        ax.scatter(p[un, a], p[un, b], s=3, c="0.75", lw=0, label=f"no partner ({int(un.sum())})")
        ax.scatter(p[~un, a], p[~un, b], s=5, c=c[~un], cmap="turbo", vmin=vmin, vmax=vmax, lw=0,
                   label=f"matched ({int((~un).sum())})")
        ax.set_xlabel(f"axis {a} ({u})")
        ax.set_ylabel(f"axis {b} ({u})")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(name + " (partners share a colour)", fontsize=9)
        ax.legend(fontsize=7, loc="upper right", markerscale=2)
    ax = axes[0, 2]
    if len(pr):
        # the zoom window: where matched destination cells are densest (a coarse 2-D histogram)
        q = d[pr[:, 1]][:, [da, db]]
        h, xe, ye = np.histogram2d(q[:, 0], q[:, 1], bins=max(2, int(np.ptp(q[:, 0]) // zoom) + 1))
        i, j = np.unravel_index(np.argmax(h), h.shape)
        cx, cy = (xe[i] + xe[i + 1]) / 2, (ye[j] + ye[j + 1]) / 2
        lo = np.array([cx, cy]) - zoom / 2
        hi = lo + zoom
        inside = lambda p: np.all((p[:, [da, db]] >= lo) & (p[:, [da, db]] <= hi), axis=1)  # noqa: E731
        di, mi = inside(d), inside(m)
        ax.scatter(d[di, da], d[di, db], s=60, facecolors="none", edgecolors="tab:orange", lw=1.0,
                   label="destination cells")
        ax.scatter(m[mi, da], m[mi, db], s=12, c="tab:blue", lw=0, label="source cells, mapped")
        sel = inside(m[pr[:, 0]]) | inside(d[pr[:, 1]])
        seg = np.stack([m[pr[sel, 0]][:, [da, db]], d[pr[sel, 1]][:, [da, db]]], 1)
        ax.add_collection(LineCollection(seg, colors="k", linewidths=0.8, label="pairs"))
        if truth is not None:
            t = np.asarray(truth, int).reshape(-1, 2)
            tset = {tuple(r) for r in t.tolist()}
            s_rows, d_rows = set(t[:, 0].tolist()), set(t[:, 1].tolist())
            good = np.array([tuple(r) in tset for r in pr.tolist()], bool)
            bad = np.array([(not g) and (a_ in s_rows or b_ in d_rows) for g, (a_, b_) in zip(good, pr.tolist())])
            for mask, c, lab in ((good & sel, "tab:green", "validation pair found"), (bad & sel, "tab:red",
                                                                                      "wrong pair")):
                if mask.any():
                    ax.scatter(d[pr[mask, 1], da], d[pr[mask, 1], db], s=140, facecolors="none", edgecolors=c,
                               lw=1.4, label=lab)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel(f"axis {da} ({unit})")
    ax.set_ylabel(f"axis {db} ({unit})")
    ax.set_title(f"zoom, destination frame ({zoom:g} {unit} window)", fontsize=9)
    ax = axes[0, 3]
    res = np.linalg.norm(m[pr[:, 0]] - d[pr[:, 1]], axis=1) if len(pr) else np.zeros(0)
    if len(res):
        ax.hist(res, bins=40, color="tab:blue")
        med = float(np.median(res))
        ax.axvline(med, color="k", ls="--", lw=1, label=f"median {med:.3g} {unit}")
        ax.legend(fontsize=8)
    ax.set_xlabel(f"residual of matched pairs ({unit})")
    ax.set_ylabel("pairs")
    if confidence is not None and len(res):
        c = np.asarray(confidence, float)
        ax.set_title(f"{int((c >= 0.5).sum())} of {len(c)} pairs with confidence >= 0.5", fontsize=9)
    fig.suptitle(title or f"{len(pr)} matched pairs", fontsize=10)
    return fig


def region_counts_bar(counts, ontology=None, top: int = 20, title: str | None = None, xlabel: str = "count"):
    """Horizontal bar chart of the largest per-region counts.

    Parameters
    ----------
    counts : mapping region -> count, a pandas Series, or a DataFrame with a ``count`` column
        (and ``acronym`` or ``name``/``region`` columns used as labels when present).
    ontology : optional; anything with ``acronym(id)`` or ``__getitem__(id).acronym`` turns integer
        ids into acronyms.

    Example
    -------
    >>> fig = region_counts_bar(atlas.count_by_region(cells))     # doctest: +SKIP
    """
    labels, values = _counts_items(counts, ontology)
    if not values:
        raise InputError("no region counts to plot (all points outside the atlas?)", field="counts")
    order = np.argsort(values)[::-1][: int(top)]
    labels = [labels[i] for i in order]
    values = [values[i] for i in order]
    fig, axes = _new_figure(1, 1, size=(6.5, max(2.5, 0.28 * len(values) + 1.0)))
    ax = axes[0, 0]
    y = np.arange(len(values))
    ax.barh(y, values, color="tab:green")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    for yi, v in zip(y, values):
        ax.text(v, yi, f" {v:g}", va="center", fontsize=7)
    fig.suptitle(title or f"per-region counts (top {len(values)})", fontsize=10)
    return fig


def _label_of(region, ontology) -> str:
    if ontology is None or not isinstance(region, (int, np.integer)):
        return str(region)
    for attr in ("acronym",):
        f = getattr(ontology, attr, None)
        if callable(f):
            try:
                return str(f(int(region)))
            except Exception:
                pass
    try:
        item = ontology[int(region)]
        return str(getattr(item, "acronym", item if isinstance(item, str) else region))
    except Exception:
        return str(region)


def _counts_items(counts, ontology) -> tuple[list[str], list[float]]:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(counts, pd.DataFrame):
        col = next((c for c in ("count", "counts", "n", "cells", "value") if c in counts.columns), None)
        if col is None:
            num = counts.select_dtypes("number").columns
            if len(num) == 0:
                raise InputError("counts table has no numeric column", field="counts")
            col = num[-1]
        lab = next((c for c in ("acronym", "name", "region") if c in counts.columns), None)
        labels = (counts[lab].astype(str).tolist() if lab is not None
                  else [_label_of(i, ontology) for i in counts.index])
        return labels, [float(v) for v in counts[col].tolist()]
    if pd is not None and isinstance(counts, pd.Series):
        counts = counts.to_dict()
    if not isinstance(counts, Mapping):
        raise InputError(f"counts must be a mapping, Series or DataFrame, got {type(counts).__name__}",
                         field="counts")
    items = [(k, float(v)) for k, v in counts.items() if float(v) > 0]
    return [_label_of(k, ontology) for k, _ in items], [v for _, v in items]


def registration_figures(fixed, moved, annotation=None, jacobian=None, positions=None) -> dict:
    """The standard set of registration figures, keyed by caption.

    Parameters
    ----------
    fixed : Volume, the target grid
    moved : Volume, the moving image warped into ``fixed``'s grid
    annotation : labels on ``fixed``'s grid, optional (boundaries drawn on ``moved``)
    jacobian : determinant map on ``fixed``'s grid, optional

    Example
    -------
    >>> figs = registration_figures(atlas.reference, result.warp(sample), atlas.annotation)  # doctest: +SKIP
    """
    figs = {
        f"Overlay: {overlay_key('target', 'registered image')}": overlay_slices(
            fixed, moved, positions, fixed_label="target", moving_label="registered image"),
        "Checkerboard of target and registered image": checkerboard_slices(fixed, moved, 8, positions),
    }
    if annotation is not None:
        figs["Atlas region boundaries drawn on the registered sample"] = boundary_slices(moved, annotation,
                                                                                          positions)
    if jacobian is not None:
        figs["Jacobian determinant of the transform (folding marked)"] = jacobian_slices(jacobian)
    return figs


def tracings_projection(reference, neurons=(), neuron_names=None, points=None, box=None, zoom: float = 400.0,
                        title: str | None = None):
    """Neurons, points (e.g. synapses) and an EM block footprint over projections of a reference volume.

    Three panels: the whole brain seen from above and from the side (maximum-intensity projections),
    and a close-up around ``box`` (or the points). Everything is drawn in the reference's physical
    coordinates, so give points in its space.

    Parameters
    ----------
    reference : Volume (identity direction) in the space of the points
    neurons : sequence of (N, 3) node arrays
    points : (M, 3) points, optional
    box : (K, 3) points outlining a region (e.g. ``EMBlock.footprint()``), optional
    zoom : half-width (space units) of the close-up around the box

    Example
    -------
    >>> fig = tracings_projection(atlas.reference, [n.points for n in neurons], points=synapses,
    ...                           box=block.footprint())                              # doctest: +SKIP
    """
    arr, vs, code = _as_array(reference, "reference")
    origin = np.asarray(getattr(reference, "origin", np.zeros(3)), float)
    direction = np.asarray(getattr(reference, "direction", np.eye(3)), float)
    if not np.allclose(direction, np.eye(3)):
        raise InputError("tracings_projection needs a reference with identity direction; reorient it first",
                         field="reference")
    # Project across DV (view from above) and across LR (side view); without a code: axes 1 and 2.
    if code:
        axes_ = [code.index(next(c for c in code if _AXIS_NAME[c] == "DV")),
                 code.index(next(c for c in code if _AXIS_NAME[c] == "LR"))]
    else:
        axes_ = [1, 2]
    focus = None
    if box is not None and len(box):
        focus = np.asarray(box, float)
    elif points is not None and len(points):
        focus = np.asarray(points, float)
    panels = [(axes_[0], None), (axes_[1], None)] + ([(axes_[0], focus)] if focus is not None else [])
    fig, axs = _new_figure(1, len(panels), size=(4.3, 3.8))
    cmap_lines = ["tab:red", "tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                  "tab:cyan"]
    for k, (a, near) in enumerate(panels):
        ax = axs[0, k]
        rows, cols = _plane_axes(a, code)
        proj = _norm(arr.max(axis=a))
        if rows > cols:
            proj = proj.T
        ext = [origin[cols] - vs[cols] / 2, origin[cols] + (arr.shape[cols] - 0.5) * vs[cols],
               origin[rows] + (arr.shape[rows] - 0.5) * vs[rows], origin[rows] - vs[rows] / 2]
        ax.imshow(proj, cmap="gray", extent=ext, interpolation="nearest", vmin=0, vmax=1.3)
        for i, pts in enumerate(neurons):
            p = np.asarray(pts, float)
            lab = neuron_names[i] if neuron_names is not None and k == 0 else None
            ax.plot(p[:, cols], p[:, rows], ".", ms=1.5, color=cmap_lines[i % len(cmap_lines)], label=lab)
        if points is not None and len(points):
            p = np.asarray(points, float)
            ax.plot(p[:, cols], p[:, rows], ".", ms=2 if near is not None else 1, color="yellow",
                    label="points" if k == 0 else None)
        if box is not None and len(box):
            b = np.asarray(box, float)
            ax.plot(b[:, cols], b[:, rows], ".", ms=1, color="cyan", label="EM block" if k == 0 else None)
        if near is not None:
            c = np.nanmean(near, axis=0)
            ax.set_xlim(c[cols] - zoom, c[cols] + zoom)
            ax.set_ylim(c[rows] + zoom, c[rows] - zoom)
            ax.set_title("close-up", fontsize=9)
        else:
            ax.set_title(("view across " + (_AXIS_NAME[code[a]] if code else f"axis {a}")), fontsize=9)
        lab_r = f"axis {rows}" + (f" ({code[rows].upper()}\u2192{_OPPOSITE[code[rows]].upper()})" if code else "")
        lab_c = f"axis {cols}" + (f" ({code[cols].upper()}\u2192{_OPPOSITE[code[cols]].upper()})" if code else "")
        ax.set_ylabel(lab_r, fontsize=8)
        ax.set_xlabel(lab_c, fontsize=8)
        ax.tick_params(labelsize=7)
    if neuron_names is not None or points is not None or box is not None:
        axs[0, 0].legend(fontsize=6, markerscale=4, loc="lower left")
    fig.suptitle(title or "tracings in the reference frame (maximum-intensity projections)", fontsize=10)
    return fig
