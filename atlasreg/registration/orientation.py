"""Which way is the sample? A fast search over the 48 axis orientations that catches a wrong orientation code.

Every orientation code (3 axis permutations × 8 flips = 48, mirror images included) is tried as the
moving volume's code on heavily downsampled copies (400 µm by default, a few thousand voxels): the sample
is reoriented into the fixed volume's orientation, centred and isotropically scaled by its moments, and
scored by normalised cross-correlation with the fixed volume; the best few are refined by a quick
similarity registration. A whole brain is nearly left-right symmetric, so a code differing only in l/r
scores almost the same as the truth: only a candidate better than the given code by ``margin`` is flagged.

Examples
--------
>>> rep = search_orientation(sample, atlas_reference)               # doctest: +SKIP
>>> rep.best, rep.given_score, rep.best_score, rep.flagged          # doctest: +SKIP
('psl', 0.81, 0.81, False)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..spaces import orientation_mapping, validate_orientation
from ..volume import Volume
from .preprocess import normalise, to_working


class OrientationError(InputError):
    """The given orientation code of the moving volume looks wrong (another code fits far better)."""


def all_orientations() -> list[str]:
    """The 48 BrainGlobe origin codes (every axis order, every flip)."""
    out = []
    for perm in itertools.permutations(("ap", "si", "lr")):
        for flips in itertools.product((0, 1), repeat=3):
            out.append("".join(p[f] for p, f in zip(perm, flips)))
    return out


@dataclass
class OrientationReport:
    given: str
    best: str
    given_score: float
    best_score: float
    margin: float
    scores: dict = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        return self.best != self.given and self.best_score - self.given_score > self.margin

    @property
    def candidates(self) -> tuple[str, str]:
        """The best code and its left-right mirror: an image of a nearly symmetric brain cannot tell them apart,
        so both are suggested, the one keeping the given code's l/r letter first."""
        twin = lr_mirror(self.best)
        keep = next((c for c in self.given if c in "lr"), None)
        return (self.best, twin) if keep is None or keep in self.best else (twin, self.best)

    def message(self) -> str:
        top = sorted(self.scores.items(), key=lambda kv: -kv[1])[:4]
        first, second = self.candidates
        return (f"the moving volume's orientation {self.given!r} looks wrong: {first!r} or its left-right mirror "
                f"{second!r} fits the fixed volume far better (correlation {self.best_score:.2f} vs "
                f"{self.given_score:.2f}; best: " + ", ".join(f"{k} {v:.2f}" for k, v in top)
                + "). The image decides the anterior/posterior and superior/inferior letters only: left and right "
                  "cannot be told apart from an image of a nearly symmetric brain, so take the l/r letter from how "
                  f"the sample was mounted ({first!r} keeps the left/right of the code given). Check --orientation "
                  "(BrainGlobe origin code: the side where index 0 of each axis lies), or pass "
                  "orientation_search='warn'/'off' to register anyway")


def lr_mirror(code: str) -> str:
    """The orientation code with left and right swapped (``psl`` -> ``psr``).

    Example
    -------
    >>> lr_mirror("psl")
    'psr'
    """
    return validate_orientation(code).translate(str.maketrans("lr", "rl"))


def _reoriented_array(arr: np.ndarray, code: str, target: str) -> np.ndarray:
    perm, flip = orientation_mapping(code, target)
    out = arr.transpose(perm)
    return out[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]


def _moments(a: np.ndarray):
    w = np.clip(a - np.median(a), 0, None).astype(np.float64)
    tot = w.sum()
    idx = np.indices(a.shape, dtype=np.float64).reshape(3, -1)
    c = (idx * w.ravel()).sum(1) / tot
    d = idx - c[:, None]
    spread = np.sqrt(((d ** 2).sum(0) * w.ravel()).sum() / tot)
    return c, spread


def _resample_to(moving: np.ndarray, fixed_shape, scale: float, cm: np.ndarray, cf: np.ndarray) -> np.ndarray:
    """Moving sampled at ``cm + scale * (i - cf)`` for every fixed index i (a pure centring + scale)."""
    from scipy import ndimage as ndi

    idx = np.indices(fixed_shape, dtype=np.float64).reshape(3, -1)
    q = cm[:, None] + scale * (idx - cf[:, None])
    return ndi.map_coordinates(moving, q, order=1, mode="constant", cval=0.0).reshape(fixed_shape)


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else 0.0


def _refine(f: np.ndarray, m: np.ndarray, spacing: float, iterations: int = 25) -> float:
    """NCC after a quick similarity registration (SimpleITK, tiny images)."""
    import SimpleITK as sitk

    fi = sitk.GetImageFromArray(np.ascontiguousarray(f.transpose(2, 1, 0)).astype(np.float32))
    mi = sitk.GetImageFromArray(np.ascontiguousarray(m.transpose(2, 1, 0)).astype(np.float32))
    for im in (fi, mi):
        im.SetSpacing((spacing,) * 3)
    tx = sitk.CenteredTransformInitializer(fi, mi, sitk.Similarity3DTransform(),
                                           sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=iterations)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(tx, inPlace=True)
    reg.SetNumberOfThreads(1) if hasattr(reg, "SetNumberOfThreads") else None
    try:
        reg.Execute(fi, mi)
    except RuntimeError:
        return -1.0
    out = sitk.GetArrayFromImage(sitk.Resample(mi, fi, tx, sitk.sitkLinear, 0.0)).transpose(2, 1, 0)
    return _ncc(f, out, f > np.percentile(f, 30))


def search_orientation(moving: Volume, fixed: Volume, spacing: float = 400.0, margin: float = 0.05,
                       refine_top: int = 3) -> OrientationReport:
    """Score all 48 orientation codes of ``moving`` against ``fixed``; see the module docstring.

    Both volumes need orientation codes. Takes about a second on a whole brain.
    """
    if moving.orientation is None or fixed.orientation is None:
        raise InputError("the orientation search needs the orientation code of both volumes", field="orientation")
    given = validate_orientation(moving.orientation)
    target = validate_orientation(fixed.orientation)
    f = normalise(to_working(fixed, spacing).numpy())
    m0 = normalise(to_working(moving, spacing).numpy())
    cf, sf = _moments(f)
    fmask = f > np.percentile(f, 30)
    coarse = {}
    for code in all_orientations():
        m = np.ascontiguousarray(_reoriented_array(m0, code, target))
        cm, sm = _moments(m)
        coarse[code] = (_ncc(f, _resample_to(m, f.shape, sm / sf, cm, cf), fmask), m)
    order = sorted(coarse, key=lambda k: -coarse[k][0])
    candidates = list(dict.fromkeys(order[:refine_top] + [given]))
    scores = {k: round(float(v[0]), 4) for k, v in coarse.items()}
    for code in candidates:
        scores[code] = round(max(scores[code], _refine(f, coarse[code][1], spacing)), 4)
    best = max(candidates, key=lambda k: scores[k])
    return OrientationReport(given, best, scores[given], scores[best], margin, scores)
